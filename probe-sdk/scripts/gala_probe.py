"""Helpers for gala-gopher probes written in Python (standard library only).

A probe finds this module through the directory the daemon exports:

    import os, sys
    sys.path.insert(0, os.environ.get("GALA_GOPHER_SDK_DIR", "/opt/gala-gopher/sdk"))
    import gala_probe

    args = gala_probe.parse_args()
    for _ in gala_probe.period_loop(args["period"]):
        gala_probe.record("my_table", "key", 12.5, 3)

Lines are formatted exactly like the Rust probe-sdk writer, by the record-line contract (see
docs/writing-a-probe.md and probe-sdk/record-line/vectors/record_lines.json): `|table|v1|...|vn|`,
with `|`, `\\`, newline and carriage return escaped as `\\|`, `\\\\`, `\\n`, `\\r`; None is an
empty (absent) value; floats print like Rust's `{}` (no exponent, `1.0` -> `1`, NaN -> `NaN`,
inf -> `+Inf`). Records are buffered and written with one write per flush(); period_loop()
flushes every period. split_line() reads a line back exactly as the daemon does (for tests).
"""

import atexit
import math
from decimal import Decimal, localcontext
import os
import signal
import sys
import time

__all__ = [
    "ArgsError",
    "RecordLineError",
    "event",
    "flush",
    "format_field",
    "format_record",
    "log_error",
    "log_info",
    "log_warn",
    "parse_args",
    "period_loop",
    "record",
    "split_line",
    "terminated",
    "try_parse_args",
]

_ESCAPES = str.maketrans({"|": "\\|", "\\": "\\\\", "\n": "\\n", "\r": "\\r"})
_pending = []
_terminated = False

MAX_BODY_BYTES = 512
_SEVERITIES = {"INFO": 9, "WARN": 13, "ERROR": 17, "FATAL": 21}


def _format_float(x):
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    # repr() gives the shortest digits that round-trip, as Rust's Display does. They differ only
    # on an exact tie between two shortest candidates: repr rounds half to even, Rust away from
    # zero. Detect that case exactly with Decimal and take the larger-magnitude candidate.
    x = float(x)
    digits = Decimal(repr(x))
    exact = Decimal(x)
    if digits != exact:
        # A double has at most 767 significant digits: with this precision nothing rounds.
        with localcontext() as ctx:
            ctx.prec = 2000
            unit = Decimal(1).scaleb(digits.as_tuple().exponent)
            diff = exact - digits
            if abs(diff) * 2 == unit and (diff > 0) == (x > 0):
                other = digits + (unit if x > 0 else -unit)
                if float(other) == x:
                    digits = other
    text = format(digits, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def format_field(value):
    """Text of one field value, escaped (without the `|` separator)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _format_float(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    return str(value).translate(_ESCAPES)


def format_record(table, *values):
    """The complete line `|table|v1|...|vn|\\n` for these values."""
    parts = [format_field(table)]
    parts.extend(format_field(v) for v in values)
    return "|" + "|".join(parts) + "|\n"


class RecordLineError(ValueError):
    """A line the daemon does not take as a record; `reason` says why (`not_record` for a log
    line, else `empty_table`, `escape_in_table`, `no_separator` or `dangling_escape`)."""

    def __init__(self, reason):
        ValueError.__init__(self, reason)
        self.reason = reason


_UNESCAPES = {"n": "\n", "r": "\r", "t": "\t"}


def _unescape(raw):
    if "\\" not in raw:
        return raw
    out = []
    chars = iter(raw)
    for c in chars:
        if c == "\\":
            c = next(chars, "\\")
            c = _UNESCAPES.get(c, c)
        out.append(c)
    return "".join(out)


def split_line(line):
    """Reads one record line (without its newline) as the daemon does: returns (table, values)
    with the values unescaped, or raises RecordLineError. Meant for tests of probes.

    The final `|` is optional and one trailing carriage return is ignored; `\\t` reads as a tab
    and any other escaped character as itself.
    """
    if line.endswith("\r"):
        line = line[:-1]
    if not line.startswith("|"):
        raise RecordLineError("not_record")
    body = line[1:]
    end = 0
    while end < len(body) and body[end] not in "|\\":
        end += 1
    if end == 0:
        raise RecordLineError("escape_in_table" if body.startswith("\\") else "empty_table")
    if end == len(body):
        raise RecordLineError("no_separator")
    if body[end] == "\\":
        raise RecordLineError("escape_in_table")
    values = []
    start = i = end + 1
    while i < len(body):
        if body[i] == "|":
            values.append(_unescape(body[start:i]))
            start = i + 1
        elif body[i] == "\\":
            if i + 1 == len(body):
                raise RecordLineError("dangling_escape")
            i += 1
        i += 1
    if start < len(body):
        values.append(_unescape(body[start:]))
    return body[:end], values


def record(table, *values):
    """Buffers one record line; it is written at the next flush()."""
    _pending.append(format_record(table, *values))


def flush():
    """Writes all buffered lines with one write and flushes stdout.

    If the daemon has gone away (broken pipe), marks the probe terminated so period_loop() ends.
    """
    global _terminated
    data = "".join(_pending).encode("utf-8", "surrogateescape")
    del _pending[:]
    try:
        sys.stdout.flush()
        if data:
            sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        _terminated = True
        # Point stdout at /dev/null so the interpreter's own flush at exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


atexit.register(flush)


def _log(prefix, msg):
    text = str(msg).replace("\n", "\\n").replace("\r", "\\r")
    try:
        sys.stderr.write(prefix + " " + text + "\n")
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass


def log_info(msg):
    """Writes `[INFO] msg` to stderr (the daemon logs it under the probe's name)."""
    _log("[INFO]", msg)


def log_warn(msg):
    """Writes `[WARN] msg` to stderr."""
    _log("[WARN]", msg)


def log_error(msg):
    """Writes `[ERROR] msg` to stderr."""
    _log("[ERROR]", msg)


def event_body(when, severity, entity_id, message):
    """`<asctime> <SEV> Entity(<id>) <message>`, cut to 512 bytes; `when` is a struct_time."""
    body = "%s %s Entity(%s) %s" % (time.asctime(when), severity, entity_id, message)
    raw = body.encode("utf-8", "surrogateescape")
    if len(raw) > MAX_BODY_BYTES:
        body = raw[:MAX_BODY_BYTES].decode("utf-8", "ignore")
    return body


def event(entity_name, entity_id, metric, severity, message, when=None):
    """Buffers an abnormal-event line `|event|name|id|metric|SEV|num|body|`.

    `severity` is INFO, WARN, ERROR or FATAL; `when` is seconds since the epoch (default now).
    """
    sev = str(severity).upper()
    if sev not in _SEVERITIES:
        raise ValueError("severity must be one of INFO, WARN, ERROR, FATAL")
    t = time.localtime(when)
    body = event_body(t, sev, entity_id, message)
    record("event", entity_name, entity_id, metric, sev, _SEVERITIES[sev], body)


class ArgsError(ValueError):
    """A command-line problem; str() is the message printed after `[ERROR] `."""


_VALUE_FLAGS = "tsTJODlULFcpwdPkimefb"


def _digits(v):
    return v != "" and all("0" <= c <= "9" for c in v)


def _num(flag, v, lo, hi, expected):
    if not _digits(v) or not lo <= int(v) <= hi:
        raise ArgsError('-%s: invalid value "%s", expected %s' % (flag, v, expected))
    return int(v)


def _split_list(v):
    return [p.strip() for p in v.split(",") if p.strip()]


def _default_args():
    return {
        "period": 5,
        "sample_period_ms": 100,
        "latency_thr_ms": 0,
        "jitter_thr_ms": 0,
        "offline_thr_ms": 0,
        "drops_thr": 0,
        "report_events": False,
        "res_upper_pct": 0,
        "res_lower_pct": 0,
        "filter": None,
        "report_cport": False,
        "elf_path": None,
        "whitelist": None,
        "dev": None,
        "probe_bits": 0xFFFFFFFF,
        "continuous": False,
        "kafka_port": 9092,
        "host_ips": [],
        "metrics_flags": 3,
        "env_flags": 1,
        "pids": [],
        "btf_path": None,
        "extra": [],
    }


def _apply(a, flag, v):
    u64 = 2**64 - 1
    if flag == "t":
        a["period"] = _num(flag, v, 1, 3600, "1..=3600")
    elif flag == "s":
        a["sample_period_ms"] = _num(flag, v, 1, 2**32 - 1, "a positive number of milliseconds")
    elif flag in "TJOD":
        key = {"T": "latency_thr_ms", "J": "jitter_thr_ms", "O": "offline_thr_ms", "D": "drops_thr"}
        a[key[flag]] = _num(flag, v, 0, u64, "0 or more")
    elif flag == "l":
        a["report_events"] = True
    elif flag in "UL":
        a["res_upper_pct" if flag == "U" else "res_lower_pct"] = _num(flag, v, 0, 100, "0..=100")
    elif flag == "c":
        if v not in ("0", "1"):
            raise ArgsError('-c: invalid value "%s", expected 0 or 1' % v)
        a["report_cport"] = v == "1"
    elif flag in "Fpwdb":
        key = {"F": "filter", "p": "elf_path", "w": "whitelist", "d": "dev", "b": "btf_path"}
        expected = {"F": "task, a pid or a comm", "d": "a device name"}.get(flag, "a path")
        if v == "":
            raise ArgsError('-%s: invalid value "", expected %s' % (flag, expected))
        a[key[flag]] = v
    elif flag == "P":
        if v[:2] in ("0x", "0X") and len(v) > 2 and all(c in "0123456789abcdefABCDEF" for c in v[2:]):
            bits = int(v[2:], 16)
        elif _digits(v):
            bits = int(v)
        else:
            bits = -1
        if not 0 <= bits <= 0xFFFFFFFF:
            raise ArgsError('-P: invalid value "%s", expected a 32-bit mask' % v)
        a["probe_bits"] = bits or 0xFFFFFFFF
    elif flag == "k":
        a["kafka_port"] = _num(flag, v, 1, 65535, "1..=65535")
    elif flag == "i":
        ips = _split_list(v)
        if not ips:
            raise ArgsError('-i: invalid value "%s", expected a comma-separated list of IPs' % v)
        a["host_ips"] = ips
    elif flag == "m":
        a["metrics_flags"] = _num(flag, v, 0, 3, "0..=3") or 3
    elif flag == "e":
        a["env_flags"] = _num(flag, v, 0, 7, "0..=7") or 1
    elif flag == "f":
        pids = _split_list(v)
        if not pids or not all(_digits(p) and 0 < int(p) < 2**32 for p in pids):
            raise ArgsError('-f: invalid value "%s", expected a comma-separated list of pids' % v)
        a["pids"] = [int(p) for p in pids]


def try_parse_args(argv=None):
    """Parses probe flags getopt-style (same rules and messages as the Rust SDK).

    `argv` excludes the program name (default sys.argv[1:]). Raises ArgsError.
    Unknown flags are kept in order in `extra` as (letter, value-or-None).
    """
    tokens = list(sys.argv[1:] if argv is None else argv)
    a = _default_args()
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        i += 1
        if tok == "--":
            if i < len(tokens):
                raise ArgsError('unexpected argument "%s"' % tokens[i])
            break
        if not tok.startswith("-") or tok == "-":
            raise ArgsError('unexpected argument "%s"' % tok)
        cluster = tok[1:]
        for pos, flag in enumerate(cluster):
            attached = cluster[pos + 1:]
            if flag == "C":
                a["continuous"] = True
                continue
            known = flag in _VALUE_FLAGS
            if attached:
                value = attached
            elif known:
                if i >= len(tokens):
                    raise ArgsError("-%s: missing value" % flag)
                value = tokens[i]
                i += 1
            elif i < len(tokens) and not tokens[i].startswith("-"):
                value = tokens[i]
                i += 1
            else:
                value = None
            if known:
                _apply(a, flag, value)
            else:
                a["extra"].append((flag, value))
            break
    return a


def parse_args(argv=None):
    """Like try_parse_args(), but prints `[ERROR] <msg>` and exits with status 2 on error."""
    try:
        return try_parse_args(argv)
    except ArgsError as e:
        log_error(str(e))
        sys.exit(2)


def _on_signal(_signum, _frame):
    global _terminated
    _terminated = True


def terminated():
    """True once SIGTERM/SIGINT/SIGHUP arrived (after period_loop() started) or stdout broke."""
    return _terminated


def period_loop(period):
    """Yields once per `period` seconds (first after one period) until SIGTERM/SIGINT/SIGHUP.

    Buffered records are flushed before each wait, so records made in the loop body reach the
    daemon at the end of each period. Sleeps in slices of 0.1 s so termination is prompt.
    """
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    period = float(period)
    deadline = time.monotonic() + period
    while True:
        flush()
        while not _terminated:
            now = time.monotonic()
            if now >= deadline:
                break
            time.sleep(min(0.1, deadline - now))
        if _terminated:
            flush()
            return
        deadline += period
        if deadline <= now:
            deadline = now + period
        yield
