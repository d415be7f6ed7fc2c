# Helpers for gala-gopher probes written in POSIX sh. Source it:
#
#   . "${GALA_GOPHER_SDK_DIR:-/opt/gala-gopher/sdk}/gala_probe.sh"
#   gg_parse_args "$@"
#   gg_trap_term
#   while gg_wait_next; do
#       gg_record my_table key 12.5 3
#   done
#
# Lines match the Rust probe-sdk writer byte for byte: |table|v1|...|vn| with '|', '\', newline and
# carriage return escaped as \|, \\, \n, \r. An empty argument is an empty (absent) value. The rules
# are the record-line contract (docs/writing-a-probe.md), tested against
# probe-sdk/record-line/vectors/record_lines.json.
# Every name this file defines starts with gg_ / GG_ (private ones with gg__ / _gg_).

_gg_nl='
'
_gg_cr=$(printf '\r')

# gg__replace STRING CHAR REPLACEMENT: sets _gg_r to STRING with every CHAR replaced.
gg__replace() {
    _gg_s=$1
    _gg_r=
    while :; do
        case $_gg_s in
            *"$2"*)
                _gg_r=$_gg_r${_gg_s%%"$2"*}$3
                _gg_s=${_gg_s#*"$2"}
                ;;
            *)
                _gg_r=$_gg_r$_gg_s
                return 0
                ;;
        esac
    done
}

# gg_escape VALUE: sets GG_ESCAPED to VALUE with the record escapes applied.
gg_escape() {
    GG_ESCAPED=$1
    case $GG_ESCAPED in
        *[\\\|]* | *"$_gg_nl"* | *"$_gg_cr"*) ;;
        *) return 0 ;;
    esac
    # Backslash first, so the backslashes added by the other escapes are not doubled.
    gg__replace "$GG_ESCAPED" '\' '\\'
    gg__replace "$_gg_r" '|' '\|'
    gg__replace "$_gg_r" "$_gg_nl" '\n'
    gg__replace "$_gg_r" "$_gg_cr" '\r'
    GG_ESCAPED=$_gg_r
}

# gg_record TABLE VALUE...: writes one record line to stdout (one write per line).
gg_record() {
    gg_escape "$1"
    shift
    _gg_line="|$GG_ESCAPED|"
    for _gg_v in "$@"; do
        gg_escape "$_gg_v"
        _gg_line="$_gg_line$GG_ESCAPED|"
    done
    printf '%s\n' "$_gg_line"
}

# gg__log PREFIX MESSAGE...: one line on stderr, inner newlines written as \n.
gg__log() {
    _gg_p=$1
    shift
    gg__replace "$*" "$_gg_nl" '\n'
    gg__replace "$_gg_r" "$_gg_cr" '\r'
    printf '%s %s\n' "$_gg_p" "$_gg_r" >&2
}

gg_log_info() { gg__log '[INFO]' "$@"; }
gg_log_warn() { gg__log '[WARN]' "$@"; }
gg_log_error() { gg__log '[ERROR]' "$@"; }

# gg_event ENTITY_NAME ENTITY_ID METRIC SEVERITY MESSAGE: writes an abnormal-event line
# |event|name|id|metric|SEV|num|<asctime> SEV Entity(id) message| (body cut to 512 bytes).
gg_event() {
    case $4 in
        INFO) _gg_sevnum=9 ;;
        WARN) _gg_sevnum=13 ;;
        ERROR) _gg_sevnum=17 ;;
        FATAL) _gg_sevnum=21 ;;
        *)
            gg_log_error "gg_event: severity must be INFO, WARN, ERROR or FATAL, not \"$4\""
            return 1
            ;;
    esac
    _gg_body="$(LC_ALL=C date '+%a %b %e %H:%M:%S %Y') $4 Entity($2) $5"
    if [ "$(printf '%s' "$_gg_body" | LC_ALL=C wc -c)" -gt 512 ]; then
        _gg_body=$(printf '%s' "$_gg_body" | head -c 512)
    fi
    gg_record event "$1" "$2" "$3" "$4" "$_gg_sevnum" "$_gg_body"
}

# gg__die MESSAGE: the SDK's argument error: "[ERROR] MESSAGE" on stderr, exit status 2.
gg__die() {
    gg_log_error "$1"
    exit 2
}

# gg__uint FLAG VALUE MAXDIGITS MIN MAX EXPECTED: validates a decimal number in MIN..MAX.
gg__uint() {
    case $2 in
        '' | *[!0-9]*) gg__die "-$1: invalid value \"$2\", expected $6" ;;
    esac
    # Strip leading zeros so the shell does not read the number as octal, and bound the length
    # before arithmetic so it cannot overflow.
    _gg_n=${2#"${2%%[!0]*}"}
    _gg_n=${_gg_n:-0}
    if [ ${#_gg_n} -gt "$3" ] || [ "$_gg_n" -lt "$4" ] || [ "$_gg_n" -gt "$5" ]; then
        gg__die "-$1: invalid value \"$2\", expected $6"
    fi
    _gg_uint=$_gg_n
}

# gg_parse_args "$@": parses the upstream probe flags (same rules and messages as the Rust SDK)
# and sets GG_PERIOD (default 5), GG_SAMPLE_PERIOD_MS, GG_REPORT_EVENTS (0/1), GG_RES_UPPER,
# GG_RES_LOWER, GG_FILTER, GG_REPORT_CPORT, GG_ELF_PATH, GG_WHITELIST, GG_DEV, GG_PROBE_BITS,
# GG_CONTINUOUS, GG_LATENCY_THR, GG_JITTER_THR, GG_OFFLINE_THR, GG_DROPS_THR, GG_HOST_IPS,
# GG_PIDS, GG_BTF_PATH, GG_KAFKA_PORT, GG_METRICS_FLAGS, GG_ENV_FLAGS, and GG_EXTRA (unknown
# flags, as "-x value" words). Exits 2 on error.
gg_parse_args() {
    GG_PERIOD=5 GG_SAMPLE_PERIOD_MS=100 GG_REPORT_EVENTS=0 GG_RES_UPPER=0 GG_RES_LOWER=0
    GG_FILTER= GG_REPORT_CPORT=0 GG_ELF_PATH= GG_WHITELIST= GG_DEV= GG_PROBE_BITS=4294967295
    GG_CONTINUOUS=0 GG_LATENCY_THR=0 GG_JITTER_THR=0 GG_OFFLINE_THR=0 GG_DROPS_THR=0
    GG_HOST_IPS= GG_PIDS= GG_BTF_PATH= GG_EXTRA= GG_KAFKA_PORT=9092 GG_METRICS_FLAGS=3
    GG_ENV_FLAGS=1
    while [ $# -gt 0 ]; do
        case $1 in
            --)
                [ $# -gt 1 ] && gg__die "unexpected argument \"$2\""
                return 0
                ;;
            -?*) ;;
            *) gg__die "unexpected argument \"$1\"" ;;
        esac
        _gg_rest=${1#-?}
        _gg_flag=${1#-}
        _gg_flag=${_gg_flag%"$_gg_rest"}
        shift
        if [ "$_gg_flag" = C ]; then
            GG_CONTINUOUS=1
            [ -n "$_gg_rest" ] && set -- "-$_gg_rest" "$@"
            continue
        fi
        case $_gg_flag in
            [tsTJODlULFcpwdPkimefb])
                if [ -n "$_gg_rest" ]; then
                    _gg_val=$_gg_rest
                elif [ $# -gt 0 ]; then
                    _gg_val=$1
                    shift
                else
                    gg__die "-$_gg_flag: missing value"
                fi
                ;;
            *)
                if [ -n "$_gg_rest" ]; then
                    GG_EXTRA="$GG_EXTRA -$_gg_flag $_gg_rest"
                elif [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
                    GG_EXTRA="$GG_EXTRA -$_gg_flag $1"
                    shift
                else
                    GG_EXTRA="$GG_EXTRA -$_gg_flag"
                fi
                continue
                ;;
        esac
        case $_gg_flag in
            t) gg__uint t "$_gg_val" 4 1 3600 '1..=3600' && GG_PERIOD=$_gg_uint ;;
            s)
                gg__uint s "$_gg_val" 10 1 4294967295 'a positive number of milliseconds'
                GG_SAMPLE_PERIOD_MS=$_gg_uint
                ;;
            T) gg__uint T "$_gg_val" 18 0 999999999999999999 '0 or more' && GG_LATENCY_THR=$_gg_uint ;;
            J) gg__uint J "$_gg_val" 18 0 999999999999999999 '0 or more' && GG_JITTER_THR=$_gg_uint ;;
            O) gg__uint O "$_gg_val" 18 0 999999999999999999 '0 or more' && GG_OFFLINE_THR=$_gg_uint ;;
            D) gg__uint D "$_gg_val" 18 0 999999999999999999 '0 or more' && GG_DROPS_THR=$_gg_uint ;;
            l) GG_REPORT_EVENTS=1 ;;
            U) gg__uint U "$_gg_val" 3 0 100 '0..=100' && GG_RES_UPPER=$_gg_uint ;;
            L) gg__uint L "$_gg_val" 3 0 100 '0..=100' && GG_RES_LOWER=$_gg_uint ;;
            c)
                case $_gg_val in
                    0 | 1) GG_REPORT_CPORT=$_gg_val ;;
                    *) gg__die "-c: invalid value \"$_gg_val\", expected 0 or 1" ;;
                esac
                ;;
            F)
                [ -n "$_gg_val" ] || gg__die "-F: invalid value \"\", expected task, a pid or a comm"
                GG_FILTER=$_gg_val
                ;;
            p | w | b)
                [ -n "$_gg_val" ] || gg__die "-$_gg_flag: invalid value \"\", expected a path"
                case $_gg_flag in
                    p) GG_ELF_PATH=$_gg_val ;;
                    w) GG_WHITELIST=$_gg_val ;;
                    b) GG_BTF_PATH=$_gg_val ;;
                esac
                ;;
            d)
                [ -n "$_gg_val" ] || gg__die "-d: invalid value \"\", expected a device name"
                GG_DEV=$_gg_val
                ;;
            P)
                gg__uint P "$_gg_val" 10 0 4294967295 'a 32-bit mask'
                GG_PROBE_BITS=$_gg_uint
                [ "$GG_PROBE_BITS" -eq 0 ] && GG_PROBE_BITS=4294967295
                ;;
            k) gg__uint k "$_gg_val" 5 1 65535 '1..=65535' && GG_KAFKA_PORT=$_gg_uint ;;
            m)
                gg__uint m "$_gg_val" 1 0 3 '0..=3'
                GG_METRICS_FLAGS=$_gg_uint
                [ "$_gg_uint" = 0 ] && GG_METRICS_FLAGS=3
                ;;
            e)
                gg__uint e "$_gg_val" 1 0 7 '0..=7'
                GG_ENV_FLAGS=$_gg_uint
                [ "$_gg_uint" = 0 ] && GG_ENV_FLAGS=1
                ;;
            i) GG_HOST_IPS=$_gg_val ;;
            f) GG_PIDS=$_gg_val ;;
        esac
    done
    return 0
}

# gg_trap_term: on SIGTERM/SIGINT/SIGHUP set GG_TERMINATED=1 (checked by gg_wait_next).
gg_trap_term() {
    GG_TERMINATED=0
    trap 'GG_TERMINATED=1' TERM INT HUP
}

# gg_wait_next: sleeps one period (GG_PERIOD seconds); returns 1 once the probe should exit.
# The sleep runs in the background so a trapped signal interrupts `wait` at once.
gg_wait_next() {
    [ "${GG_TERMINATED:-0}" = 1 ] && return 1
    sleep "${GG_PERIOD:-5}" &
    _gg_sleep=$!
    wait "$_gg_sleep"
    if [ "${GG_TERMINATED:-0}" = 1 ]; then
        kill "$_gg_sleep" 2>/dev/null
        return 1
    fi
    return 0
}
