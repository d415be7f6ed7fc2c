#!/bin/sh
# gala-gopher's container entrypoint (docs/container.md). Upstream's container settings
# (GOPHER_* variables, HEAD build/entrypoint.sh) become the daemon's own overrides,
# GALA_GOPHER_<SECTION>__<KEY> (docs/configuration.md, "Environment overrides"); the config file
# is never rewritten. GOPHER_PROBES_INIT is written to the probes.init file. Then the daemon is
# exec'd: it is the container's process, gets its signals and its exit status is the container's.
#
# The variables' values are data: they are only expanded inside double quotes, exported or
# written to a file, never evaluated (no eval, no sh -c). The daemon checks every value's type
# and range itself; this script checks what it must compute with (ports, the Kafka list) and
# fails with exit status 2 (the daemon's status for an invalid configuration).
set -eu
umask 027

DAEMON=/usr/bin/gala-gopher
DEFAULT_PROBES_INIT=/etc/gala-gopher/probes.init

die() {
    printf 'gala-gopher entrypoint: %s\n' "$*" >&2
    exit 2
}

note() {
    printf 'gala-gopher entrypoint: %s\n' "$*" >&2
}

# override TARGET CURRENT VALUE SOURCE: export TARGET=VALUE (SOURCE is the upstream variable it
# came from). CURRENT is TARGET's value now: set to something else, the two settings disagree and
# neither is picked.
override() {
    if [ -n "$2" ] && [ "$2" != "$3" ]; then
        die "$4 and $1 are both set, to different values; set only one of them"
    fi
    export "$1=$3"
    note "$4 -> $1"
}

# port NAME VALUE: VALUE is a TCP port (decimal, 1..65535, no sign, no leading zero).
port() {
    case $2 in
        '' | *[!0-9]* | 0*) die "$1=\"$2\": not a port number (1..65535)" ;;
    esac
    if [ ${#2} -gt 5 ] || [ "$2" -gt 65535 ]; then
        die "$1=\"$2\": not a port number (1..65535)"
    fi
}

# kafka_brokers NAME LIST: LIST (comma-separated host[:port], IPv6 as [addr][:port]) with
# upstream's default port 9092 added to each broker that names none; printed on stdout.
kafka_brokers() {
    out=''
    set -f
    old_ifs=$IFS
    IFS=,
    for broker in $2; do
        case $broker in
            '') die "$1=\"$2\": empty broker in the list" ;;
            \[*\]:*) port "$1 (broker $broker)" "${broker##*\]:}" ;;
            \[*\]) broker="$broker:9092" ;;
            *:*:*) die "$1: broker \"$broker\": write an IPv6 address as [address]:port" ;;
            *:*) port "$1 (broker $broker)" "${broker##*:}" ;;
            *) broker="$broker:9092" ;;
        esac
        out="${out:+$out,}$broker"
    done
    IFS=$old_ifs
    set +f
    [ -n "$out" ] || die "$1=\"$2\": no broker"
    printf '%s' "$out"
}

if [ -n "${GOPHER_LOG_LEVEL:-}" ]; then
    override GALA_GOPHER_GLOBAL__LOG_LEVEL "${GALA_GOPHER_GLOBAL__LOG_LEVEL:-}" "$GOPHER_LOG_LEVEL" GOPHER_LOG_LEVEL
fi
if [ -n "${GOPHER_EVENT_CHANNEL:-}" ]; then
    override GALA_GOPHER_EVENT__OUT_CHANNEL "${GALA_GOPHER_EVENT__OUT_CHANNEL:-}" "$GOPHER_EVENT_CHANNEL" GOPHER_EVENT_CHANNEL
fi
if [ -n "${GOPHER_META_CHANNEL:-}" ]; then
    override GALA_GOPHER_META__OUT_CHANNEL "${GALA_GOPHER_META__OUT_CHANNEL:-}" "$GOPHER_META_CHANNEL" GOPHER_META_CHANNEL
fi

# Upstream spells it GOPHER_KAKFA_SERVER; the corrected spelling is accepted too.
kafka_var='' kafka=''
if [ -n "${GOPHER_KAKFA_SERVER:-}" ] && [ -n "${GOPHER_KAFKA_SERVER:-}" ] &&
    [ "$GOPHER_KAKFA_SERVER" != "$GOPHER_KAFKA_SERVER" ]; then
    die "GOPHER_KAKFA_SERVER and GOPHER_KAFKA_SERVER are both set, to different values; set only one of them"
fi
if [ -n "${GOPHER_KAFKA_SERVER:-}" ]; then
    kafka_var=GOPHER_KAFKA_SERVER kafka=$GOPHER_KAFKA_SERVER
elif [ -n "${GOPHER_KAKFA_SERVER:-}" ]; then
    kafka_var=GOPHER_KAKFA_SERVER kafka=$GOPHER_KAKFA_SERVER
fi
if [ -n "$kafka_var" ]; then
    # Not in $(…): die must end the script, not a subshell.
    kafka_brokers "$kafka_var" "$kafka" >/dev/null
    override GALA_GOPHER_KAFKA__KAFKA_BROKER "${GALA_GOPHER_KAFKA__KAFKA_BROKER:-}" "$(kafka_brokers "$kafka_var" "$kafka")" "$kafka_var"
fi

if [ -n "${GOPHER_METRIC_ADDR:-}" ]; then
    override GALA_GOPHER_WEB_SERVER__BIND_ADDR "${GALA_GOPHER_WEB_SERVER__BIND_ADDR:-}" "$GOPHER_METRIC_ADDR" GOPHER_METRIC_ADDR
fi
if [ -n "${GOPHER_METRIC_PORT:-}" ]; then
    port GOPHER_METRIC_PORT "$GOPHER_METRIC_PORT"
    override GALA_GOPHER_WEB_SERVER__PORT "${GALA_GOPHER_WEB_SERVER__PORT:-}" "$GOPHER_METRIC_PORT" GOPHER_METRIC_PORT
fi
if [ -n "${GOPHER_REST_ADDR:-}" ]; then
    override GALA_GOPHER_REST_API_SERVER__BIND_ADDR "${GALA_GOPHER_REST_API_SERVER__BIND_ADDR:-}" "$GOPHER_REST_ADDR" GOPHER_REST_ADDR
fi
if [ -n "${GOPHER_REST_PORT:-}" ]; then
    port GOPHER_REST_PORT "$GOPHER_REST_PORT"
    override GALA_GOPHER_REST_API_SERVER__PORT "${GALA_GOPHER_REST_API_SERVER__PORT:-}" "$GOPHER_REST_PORT" GOPHER_REST_PORT
fi

case ${GOPHER_REST_AUTH:-} in
    '' | no) ;;
    yes)
        [ -n "${GOPHER_REST_PRIVATE_KEY:-}" ] || die "GOPHER_REST_AUTH=yes needs GOPHER_REST_PRIVATE_KEY (a PEM key file)"
        [ -n "${GOPHER_REST_CERT:-}" ] || die "GOPHER_REST_AUTH=yes needs GOPHER_REST_CERT (a PEM certificate file)"
        override GALA_GOPHER_REST_API_SERVER__SSL_AUTH "${GALA_GOPHER_REST_API_SERVER__SSL_AUTH:-}" on GOPHER_REST_AUTH
        override GALA_GOPHER_REST_API_SERVER__PRIVATE_KEY "${GALA_GOPHER_REST_API_SERVER__PRIVATE_KEY:-}" "$GOPHER_REST_PRIVATE_KEY" GOPHER_REST_PRIVATE_KEY
        override GALA_GOPHER_REST_API_SERVER__CERT_FILE "${GALA_GOPHER_REST_API_SERVER__CERT_FILE:-}" "$GOPHER_REST_CERT" GOPHER_REST_CERT
        if [ -n "${GOPHER_REST_CAFILE:-}" ]; then
            override GALA_GOPHER_REST_API_SERVER__CA_FILE "${GALA_GOPHER_REST_API_SERVER__CA_FILE:-}" "$GOPHER_REST_CAFILE" GOPHER_REST_CAFILE
        fi
        ;;
    *) die "GOPHER_REST_AUTH=\"$GOPHER_REST_AUTH\": expected yes or no" ;;
esac

if [ -n "${GOPHER_METRIC_LOGS_TOTAL_SIZE:-}" ]; then
    case $GOPHER_METRIC_LOGS_TOTAL_SIZE in
        *[!0-9]* | 0*) die "GOPHER_METRIC_LOGS_TOTAL_SIZE=\"$GOPHER_METRIC_LOGS_TOTAL_SIZE\": not a size in MB (1..1048576)" ;;
    esac
    override GALA_GOPHER_LOGS__METRIC_TOTAL_SIZE "${GALA_GOPHER_LOGS__METRIC_TOTAL_SIZE:-}" "$GOPHER_METRIC_LOGS_TOTAL_SIZE" GOPHER_METRIC_LOGS_TOTAL_SIZE
fi

# GOPHER_HOST_PATH is read by the daemon itself (global.host_root, docs/configuration.md) and
# handed to the probes; checked here only so that a missing mount fails with a clear message.
if [ -n "${GOPHER_HOST_PATH:-}" ]; then
    case $GOPHER_HOST_PATH in
        /*) ;;
        *) die "GOPHER_HOST_PATH=\"$GOPHER_HOST_PATH\": not an absolute path" ;;
    esac
    [ -d "$GOPHER_HOST_PATH" ] ||
        die "GOPHER_HOST_PATH=$GOPHER_HOST_PATH: no such directory; mount the host's / there (-v /:$GOPHER_HOST_PATH:ro)"
fi

# GOPHER_PROBES_INIT: the probes.init text (one `<probe> <json>` line per probe), written as is
# to the file the daemon replays — global.probes_init, pinned to the default path when the
# environment does not name another (a config file of one's own might name a third).
if [ -n "${GOPHER_PROBES_INIT:-}" ]; then
    if [ "${GALA_GOPHER_GLOBAL__PROBES_INIT+set}" = set ]; then
        init=$GALA_GOPHER_GLOBAL__PROBES_INIT
        [ -n "$init" ] || die "GOPHER_PROBES_INIT is set but GALA_GOPHER_GLOBAL__PROBES_INIT=\"\" switches probes.init off"
    else
        init=$DEFAULT_PROBES_INIT
        export GALA_GOPHER_GLOBAL__PROBES_INIT="$init"
    fi
    # The daemon refuses a symlinked probes.init; a write through one would land elsewhere.
    [ ! -L "$init" ] || die "$init is a symlink; GOPHER_PROBES_INIT is not written through it"
    printf '%s\n' "$GOPHER_PROBES_INIT" >"$init" || die "cannot write GOPHER_PROBES_INIT to $init"
    note "GOPHER_PROBES_INIT -> $init"
fi

exec "$DAEMON" "$@"
