#!/bin/sh
# Example drop-in probe (upstream's "example" table): every period prints
#   |example|system|<cpu %>|<memory %>|<established tcp connections>|
# with values read from /proc. Flags: the upstream ones (-t period, ...), see gala_probe.sh.
# example.meta declares `reload = true` and the param report_period: the daemon sends changes as
# control lines on stdin, and gg_control_wait_next applies a new period without a restart.

. "${GALA_GOPHER_SDK_DIR:-/opt/gala-gopher/sdk}/gala_probe.sh" || exit 1

# cpu_sample: sets _busy and _total (jiffies) from the aggregate line of /proc/stat.
cpu_sample() {
    read -r _label _user _nice _system _idle _iowait _irq _softirq _steal _rest </proc/stat
    _idle_all=$((_idle + ${_iowait:-0}))
    _total=$((_user + _nice + _system + _idle_all + ${_irq:-0} + ${_softirq:-0} + ${_steal:-0}))
    _busy=$((_total - _idle_all))
}

# percent NUM DEN: sets _pct to 100*NUM/DEN with two decimals (integer arithmetic only).
percent() {
    if [ "$2" -le 0 ]; then
        _pct=0.00
        return
    fi
    _hundredths=$(($1 * 10000 / $2))
    _frac=$((_hundredths % 100))
    [ "$_frac" -lt 10 ] && _frac="0$_frac"
    _pct="$((_hundredths / 100)).$_frac"
}

# mem_usage: sets _mem_pct from /proc/meminfo.
mem_usage() {
    _mem_total=0
    _mem_avail=0
    while read -r _key _val _unit; do
        case $_key in
            MemTotal:) _mem_total=$_val ;;
            MemAvailable:) _mem_avail=$_val ;;
        esac
    done </proc/meminfo
    percent $((_mem_total - _mem_avail)) "$_mem_total"
    _mem_pct=$_pct
}

# tcp_established: sets _tcp_n to the ESTABLISHED (state 01) sockets in /proc/net/tcp and tcp6.
tcp_established() {
    _tcp_n=0
    for _f in /proc/net/tcp /proc/net/tcp6; do
        [ -r "$_f" ] || continue
        while read -r _sl _local _remote _state _rest; do
            [ "$_state" = 01 ] && _tcp_n=$((_tcp_n + 1))
        done <"$_f"
    done
}

gg_parse_args "$@"
gg_trap_term
gg_log_info "example probe started, period ${GG_PERIOD}s"

cpu_sample
_prev_busy=$_busy
_prev_total=$_total
while gg_control_wait_next; do
    cpu_sample
    percent $((_busy - _prev_busy)) $((_total - _prev_total))
    _cpu_pct=$_pct
    _prev_busy=$_busy
    _prev_total=$_total
    mem_usage
    tcp_established
    gg_record example system "$_cpu_pct" "$_mem_pct" "$_tcp_n" || exit 0
done
gg_log_info "example probe stopped"
exit 0
