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

# ---------------------------------------------------------------------------------------------
# The control channel. A probe declared with `reload = true` (the `probe` group of its .meta)
# gets its run-time state from the daemon on stdin: one JSON object per line, each the complete
# state (probe-sdk/probe-decl/vectors/control_lines.json is the specification):
#
#   while gg_control_wait_next; do              # a new report_period applies at once
#       dev=$(gg_control_param dev_name)        # a param of the newest line
#       gg_record ...
#   done
#
# POSIX sh cannot read stdin without blocking (`read -t` is not POSIX), so the first
# gg_control_poll starts a background reader: a subshell blocked in `read` on the probe's stdin
# that checks each line (length, then JSON and field types, with awk) and renames the newest
# good one into a private folder (mkdir -m 700 under $TMPDIR, default /tmp). gg_control_poll
# only reads that file: it never blocks, and the rename makes each take atomic. Lines are data:
# they are only ever read with `read -r` and passed to awk on stdin, never evaluated. The reader
# holds a line whole before checking its length (POSIX read has no bound; the daemon never
# writes more than 1 MiB); a longer line is dropped. The first poll also sets an EXIT trap
# running gg_control_stop (stop the reader, remove the folder): a probe that sets its own EXIT
# trap calls gg_control_stop in it. The reader briefly uses file descriptor 9 when it starts.

GG_CONTROL_LINE=
GG_CONTROL_CLOSED=0
_gg_ctl_started=
_gg_ctl_dir=
_gg_ctl_pid=
_gg_ctl_seq=0

# The JSON reader, in awk (run with LC_ALL=C: it works on bytes). ARGV: MODE [NAME]; stdin: one
# line. MODE check: exit 0 when the line is a control message (the rules of
# probe_decl::ControlMsg::parse_line: an object; v, probe_bits and pids integers in 0..2^32-1;
# probe an array of strings; params an object; snoop.mode all, include or exclude; known keys
# once; valid UTF-8 and no lone surrogates where it is read; param values finite and at most 127
# levels deep). MODE param: print params.NAME (a number as written, a string decoded) and a
# newline; exit 1 when absent or not a number or string. MODE int: the same for an integer that
# fits 64 bits.
_gg_json_awk='
function isdigit(c) { return c != "" && index("0123456789", c) > 0 }
function ws(   c) {
    while (p <= n) {
        c = substr(s, p, 1)
        if (c != " " && c != "\t" && c != "\n" && c != "\r") return
        p++
    }
}
function hex4(q,   i, c, d, v) {
    v = 0
    for (i = 0; i < 4; i++) {
        c = substr(s, q + i, 1)
        d = (c == "") ? 0 : index("0123456789abcdef", tolower(c))
        if (d == 0) return -1
        v = v * 16 + d - 1
    }
    return v
}
function utf8len(q,   b, k, lo, hi, i) {
    b = ord[substr(s, q, 1)]
    if (b >= 194 && b <= 223) k = 1
    else if (b >= 224 && b <= 239) k = 2
    else if (b >= 240 && b <= 244) k = 3
    else return 0
    lo = 128; hi = 191
    if (b == 224) lo = 160
    else if (b == 237) hi = 159
    else if (b == 240) lo = 144
    else if (b == 244) hi = 143
    i = ord[substr(s, q + 1, 1)]
    if (i < lo || i > hi) return 0
    for (i = 2; i <= k; i++) {
        b = ord[substr(s, q + i, 1)]
        if (b < 128 || b > 191) return 0
    }
    return k + 1
}
function utf8(cp) {
    if (cp < 128) return sprintf("%c", cp)
    if (cp < 2048) return sprintf("%c%c", 192 + int(cp / 64), 128 + cp % 64)
    if (cp < 65536)
        return sprintf("%c%c%c", 224 + int(cp / 4096), 128 + int(cp / 64) % 64, 128 + cp % 64)
    return sprintf("%c%c%c%c", 240 + int(cp / 262144), 128 + int(cp / 4096) % 64,
        128 + int(cp / 64) % 64, 128 + cp % 64)
}
# A string at p: sets sval (decoded), slone (a lone surrogate), snul (a NUL character).
function str(   c, b, q, cp, lo) {
    p++
    sval = ""; slone = 0; snul = 0; q = p
    while (p <= n) {
        c = substr(s, p, 1)
        if (c == "\"") {
            sval = sval substr(s, q, p - q)
            p++
            return 1
        }
        if (c == "\\") {
            sval = sval substr(s, q, p - q)
            c = substr(s, p + 1, 1)
            p += 2
            if (c == "u") {
                cp = hex4(p)
                if (cp < 0) return 0
                p += 4
                if (cp >= 55296 && cp <= 56319 && substr(s, p, 2) == "\\u") {
                    lo = hex4(p + 2)
                    if (lo >= 56320 && lo <= 57343) {
                        cp = 65536 + (cp - 55296) * 1024 + lo - 56320
                        p += 6
                    }
                }
                if (cp >= 55296 && cp <= 57343) slone = 1
                else if (cp == 0) snul = 1
                else sval = sval utf8(cp)
            } else if (c == "\"" || c == "\\" || c == "/") sval = sval c
            else if (c == "b") sval = sval "\b"
            else if (c == "f") sval = sval "\f"
            else if (c == "n") sval = sval "\n"
            else if (c == "r") sval = sval "\r"
            else if (c == "t") sval = sval "\t"
            else return 0
            q = p
            continue
        }
        b = ord[c]
        if (b < 32) return 0
        if (b < 128) p++
        else {
            b = utf8len(p)
            if (!b) return 0
            p += b
        }
    }
    return 0
}
# A number at p: sets ntext and nint (integer form, as JSON readers take it: -0 is not).
function num(   q, c) {
    q = p
    if (substr(s, p, 1) == "-") p++
    c = substr(s, p, 1)
    if (c == "0") p++
    else if (isdigit(c)) { while (isdigit(substr(s, p, 1))) p++ }
    else return 0
    nint = 1
    if (substr(s, p, 1) == ".") {
        p++
        if (!isdigit(substr(s, p, 1))) return 0
        while (isdigit(substr(s, p, 1))) p++
        nint = 0
    }
    c = substr(s, p, 1)
    if (c == "e" || c == "E") {
        p++
        c = substr(s, p, 1)
        if (c == "+" || c == "-") p++
        if (!isdigit(substr(s, p, 1))) return 0
        while (isdigit(substr(s, p, 1))) p++
        nint = 0
    }
    ntext = substr(s, q, p - q)
    if (ntext == "-0") nint = 0
    return 1
}
function fits_i64(   d) {
    if (!nint) return 0
    d = ntext
    if (substr(d, 1, 1) == "-") {
        d = substr(d, 2)
        return length(d) < 19 || (length(d) == 19 && d <= "9223372036854775808")
    }
    return length(d) < 19 || (length(d) == 19 && d <= "9223372036854775807")
}
function u32() {
    if (!isdigit(substr(s, p, 1)) || !num() || !nint) return 0
    return length(ntext) < 10 || (length(ntext) == 10 && ntext <= "4294967295")
}
# Any value at p, nested depth levels deep; checked: the reader reads it (a param value).
# Sets vkind (s n { [ t f z) and, for a string or number, vtext, vok (no NUL) and vint.
function val(depth, checked,   c, end, d) {
    c = substr(s, p, 1)
    if (c == "\"") {
        if (!str() || (checked && slone)) return 0
        vkind = "s"; vtext = sval; vok = !snul
        return 1
    }
    if (c == "-" || isdigit(c)) {
        if (!num()) return 0
        if (checked && (ntext + 0 > 1.7976931348623157e308 || ntext + 0 < -1.7976931348623157e308))
            return 0
        vkind = "n"; vtext = ntext; vok = 1; vint = fits_i64()
        return 1
    }
    if (c == "{" || c == "[") {
        if ((checked && depth > 127) || depth > 1000) return 0
        end = (c == "{") ? "}" : "]"
        p++
        ws()
        if (substr(s, p, 1) == end) { p++; vkind = c; return 1 }
        while (1) {
            ws()
            if (c == "{") {
                if (substr(s, p, 1) != "\"" || !str() || (checked && slone)) return 0
                ws()
                if (substr(s, p, 1) != ":") return 0
                p++
                ws()
            }
            if (!val(depth + 1, checked)) return 0
            ws()
            d = substr(s, p, 1)
            p++
            if (d == end) { vkind = c; return 1 }
            if (d != ",") return 0
        }
    }
    if (substr(s, p, 4) == "true") { p += 4; vkind = "t"; return 1 }
    if (substr(s, p, 5) == "false") { p += 5; vkind = "f"; return 1 }
    if (substr(s, p, 4) == "null") { p += 4; vkind = "z"; return 1 }
    return 0
}
# "{" key ":" value ("," ...)* "}" at p; each key and value go to field(what, key).
function object(what,   key, d) {
    if (substr(s, p, 1) != "{") return 0
    p++
    ws()
    if (substr(s, p, 1) == "}") { p++; return 1 }
    while (1) {
        ws()
        if (substr(s, p, 1) != "\"" || !str() || slone) return 0
        key = sval
        ws()
        if (substr(s, p, 1) != ":") return 0
        p++
        ws()
        if (!field(what, key)) return 0
        ws()
        d = substr(s, p, 1)
        p++
        if (d == "}") return 1
        if (d != ",") return 0
    }
}
function array(what,   d) {
    if (substr(s, p, 1) != "[") return 0
    p++
    ws()
    if (substr(s, p, 1) == "]") { p++; return 1 }
    while (1) {
        ws()
        if (what == "pids") { if (!u32()) return 0 }
        else if (substr(s, p, 1) != "\"" || !str() || slone) return 0
        ws()
        d = substr(s, p, 1)
        p++
        if (d == "]") return 1
        if (d != ",") return 0
    }
}
function field(what, key) {
    if (what == "top" && (key == "v" || key == "probe_bits" || key == "probe" || key == "params" || key == "snoop") || what == "snoop" && (key == "mode" || key == "pids")) {
        if ((what, key) in seen) return 0
        seen[what, key] = 1
        if (key == "v" || key == "probe_bits") return u32()
        if (key == "probe" || key == "pids") return array(key)
        if (key == "params" || key == "snoop") return object(key)
        if (substr(s, p, 1) != "\"" || !str() || slone) return 0
        return sval == "all" || sval == "include" || sval == "exclude"
    }
    if (what != "params") return val(what == "top" ? 2 : 3, 0)
    if (!val(3, 1)) return 0
    if (key == want) { found = 1; fkind = vkind; ftext = vtext; fok = vok; fint = vint }
    return 1
}
BEGIN {
    mode = ARGV[1]; want = ARGV[2]; ARGV[1] = ""; ARGV[2] = ""
    for (i = 1; i < 256; i++) ord[sprintf("%c", i)] = i
    if ((getline s) <= 0) exit 1
    n = length(s); p = 1
    ws()
    if (!object("top")) exit 1
    ws()
    if (p <= n) exit 1
    if (mode == "check") exit 0
    if (!found || !(fkind == "n" || fkind == "s") || !fok) exit 1
    if (mode == "int" && !(fkind == "n" && fint)) exit 1
    printf "%s\n", ftext
    exit 0
}
'

# gg__control_valid LINE: whether LINE is a control message.
gg__control_valid() {
    printf '%s\n' "$1" | LC_ALL=C awk "$_gg_json_awk" check
}

# gg__control_reader DIR: the background reader (stdin: the control channel). Publishes each good
# line as DIR/line ("SEQ\nLINE\n", renamed into place); DIR/eof marks the end of the channel.
gg__control_reader() {
    # Bytes, not characters: for ${#var} and awk (this subshell only).
    LC_ALL=C
    _gg_n=0
    _gg_warned=0
    while :; do
        _gg_nl=1
        IFS= read -r _gg_l || {
            _gg_nl=0
            [ -n "$_gg_l" ] || break
        }
        if [ $((${#_gg_l} + _gg_nl)) -gt 1048576 ]; then
            _gg_why="control line longer than 1048576 bytes"
        elif gg__control_valid "$_gg_l"; then
            _gg_n=$((_gg_n + 1))
            printf '%s\n%s\n' "$_gg_n" "$_gg_l" >"$1/next" && mv -f "$1/next" "$1/line"
            [ "$_gg_nl" = 1 ] || break
            continue
        else
            _gg_why="control line: not a control message"
        fi
        if [ "$_gg_warned" = 0 ]; then
            _gg_warned=1
            gg_log_warn "control channel: line skipped: $_gg_why"
        fi
        [ "$_gg_nl" = 1 ] || break
    done
    : >"$1/eof"
}

# gg__control_start: starts the reader (once); without a usable stdin or folder, the channel
# stays closed.
gg__control_start() {
    _gg_ctl_started=1
    if ! (exec 9<&0) 2>/dev/null; then
        GG_CONTROL_CLOSED=1
        return 1
    fi
    _gg_i=0
    until mkdir -m 700 "${TMPDIR:-/tmp}/gala_probe_control.$$.$_gg_i" 2>/dev/null; do
        _gg_i=$((_gg_i + 1))
        if [ "$_gg_i" -ge 20 ]; then
            gg_log_warn "control channel: cannot create a folder in ${TMPDIR:-/tmp}"
            GG_CONTROL_CLOSED=1
            return 1
        fi
    done
    _gg_ctl_dir="${TMPDIR:-/tmp}/gala_probe_control.$$.$_gg_i"
    trap gg_control_stop EXIT
    # An asynchronous command's stdin is /dev/null unless redirected, and dash applies that
    # before the command's own redirections: hand the channel over through fd 9. The reader
    # writes no records: it does not hold the probe's stdout open.
    exec 9<&0
    gg__control_reader "$_gg_ctl_dir" <&9 9<&- >/dev/null &
    _gg_ctl_pid=$!
    exec 9<&-
}

# gg_control_poll: takes the newest control line that arrived since the last call, without
# blocking. Returns 0 and sets GG_CONTROL_LINE when there is one, else returns 1 (and sets
# GG_CONTROL_CLOSED=1 once the channel has ended: stdin at end of file, /dev/null or closed).
gg_control_poll() {
    [ -n "$_gg_ctl_started" ] || gg__control_start
    [ -n "$_gg_ctl_dir" ] || return 1
    _gg_closed=0
    [ -e "$_gg_ctl_dir/eof" ] && _gg_closed=1
    if [ -f "$_gg_ctl_dir/line" ] &&
        { IFS= read -r _gg_s && [ "$_gg_s" != "$_gg_ctl_seq" ] && IFS= read -r _gg_new; } \
            <"$_gg_ctl_dir/line"; then
        _gg_ctl_seq=$_gg_s
        GG_CONTROL_LINE=$_gg_new
        return 0
    fi
    GG_CONTROL_CLOSED=$_gg_closed
    return 1
}

# gg_control_stop: stops the reader and removes its folder (run at exit by the EXIT trap).
gg_control_stop() {
    if [ -n "$_gg_ctl_pid" ]; then
        kill "$_gg_ctl_pid" 2>/dev/null
        _gg_ctl_pid=
    fi
    if [ -n "$_gg_ctl_dir" ]; then
        rm -rf "$_gg_ctl_dir"
        _gg_ctl_dir=
    fi
}

# gg_control_param NAME: prints param NAME of GG_CONTROL_LINE (a number as written, a string
# decoded) and a newline; returns 1 when there is no line, no such param, or its value is not a
# number or string (a list, object, boolean or null).
gg_control_param() {
    case $1 in
        '' | *[!a-z0-9_]*) return 1 ;;
    esac
    [ -n "$GG_CONTROL_LINE" ] || return 1
    printf '%s\n' "$GG_CONTROL_LINE" | LC_ALL=C awk "$_gg_json_awk" param "$1"
}

# gg_control_period [NAME]: prints param NAME (default report_period) of GG_CONTROL_LINE when it
# is an integer in 1..999999999 (a period in seconds); returns 1 otherwise.
gg_control_period() {
    set -- "${1:-report_period}"
    case $1 in
        *[!a-z0-9_]*) return 1 ;;
    esac
    [ -n "$GG_CONTROL_LINE" ] || return 1
    _gg_p=$(printf '%s\n' "$GG_CONTROL_LINE" | LC_ALL=C awk "$_gg_json_awk" int "$1") || return 1
    case $_gg_p in
        '' | 0* | *[!0-9]* | ??????????*) return 1 ;;
    esac
    printf '%s\n' "$_gg_p"
}

# gg_control_wait_next [NAME]: gg_wait_next for a probe with `reload = true`: waits in steps of
# one second, taking control lines between them. When a new line's param NAME (default
# report_period) is an integer in 1..999999999 it becomes GG_PERIOD at once: the wait ends one
# new period after the previous boundary, or now if that has passed. Returns 1 once the probe
# should exit (gg_trap_term).
gg_control_wait_next() {
    _gg_waited=0
    while [ "${GG_TERMINATED:-0}" != 1 ]; do
        if gg_control_poll && _gg_p=$(gg_control_period "$1"); then
            GG_PERIOD=$_gg_p
        fi
        [ "$_gg_waited" -ge "${GG_PERIOD:-5}" ] && return 0
        sleep 1 &
        _gg_sleep=$!
        wait "$_gg_sleep"
        _gg_waited=$((_gg_waited + 1))
    done
    kill "$_gg_sleep" 2>/dev/null
    return 1
}
