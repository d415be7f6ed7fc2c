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

A probe declared with `reload = true` (the `probe` group of its .meta) gets its run-time state from
the daemon on stdin, one JSON object per line (probe-sdk/probe-decl/vectors/control_lines.json):

    control = gala_probe.Control()
    while control.sleep(args["period"]):      # params.report_period, once sent, wins
        if control.selects(pid): ...
"""

import atexit
import bisect
import json
import math
from decimal import Decimal, localcontext
import os
import select
import signal
import sys
import time

__all__ = [
    "ArgsError",
    "Control",
    "ControlLineError",
    "MAX_CONTROL_LINE_BYTES",
    "RecordLineError",
    "control_period",
    "control_selects",
    "event",
    "flush",
    "format_field",
    "format_record",
    "log_error",
    "log_info",
    "log_warn",
    "parse_args",
    "parse_control_line",
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
    """True once SIGTERM/SIGINT/SIGHUP arrived (after period_loop() or Control.sleep() started)
    or stdout broke."""
    return _terminated


def _trap_termination():
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)


def period_loop(period):
    """Yields once per `period` seconds (first after one period) until SIGTERM/SIGINT/SIGHUP.

    Buffered records are flushed before each wait, so records made in the loop body reach the
    daemon at the end of each period. Sleeps in slices of 0.1 s so termination is prompt.
    A probe with `reload = true` uses Control.sleep() instead, which also reads control lines.
    """
    _trap_termination()
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


# The control channel (crate probe-decl, src/channel.rs; specified by
# probe-sdk/probe-decl/vectors/control_lines.json): the daemon writes one JSON object per line on
# the stdin of a probe declared with `reload = true`, the complete run-time state each time.

MAX_CONTROL_LINE_BYTES = 1 << 20
"""Longest control line, newline included."""

_U32_MAX = 2**32 - 1
_SNOOP_MODES = ("all", "include", "exclude")
# Containers nested in all, the line's own object included: the daemon's reader (serde_json)
# refuses deeper values in the fields it reads.
_MAX_DEPTH = 127
# What Rust's str::trim_end strips (Unicode White_Space), as the daemon's reader does.
_TRAILING_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_READ_CHUNK = 65536
# Bytes one poll reads at most; the rest waits for the next poll.
_READ_PER_POLL = 4 * MAX_CONTROL_LINE_BYTES


class ControlLineError(ValueError):
    """A control line a probe skips; `reason` is `too_long` or `invalid`."""

    def __init__(self, reason, message):
        ValueError.__init__(self, message)
        self.reason = reason


class _Object(dict):
    """A JSON object that remembers which keys it was given more than once."""

    __slots__ = ("repeated",)


def _json_object(pairs):
    obj = _Object()
    obj.repeated = set()
    for key, value in pairs:
        if key in obj:
            obj.repeated.add(key)
        obj[key] = value
    return obj


def _json_int(text):
    # As the daemon's reader: -0 and integers beyond 64 bits are floats (inf when out of range,
    # refused below where it matters).
    if text == "-0":
        return -0.0
    if len(text) <= 20:
        n = int(text)
        if -(2**63) <= n <= 2**64 - 1:
            return n
    return float(text)


def _json_constant(name):
    raise ValueError("%s is not JSON" % name)


def _invalid(message):
    return ControlLineError("invalid", "control line: " + message)


def _check_text(text, what):
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid("%s: lone surrogate in a string" % what)


def _check_value(value, depth, what):
    """A param value: finite numbers, no lone surrogates, not nested too deep."""
    if isinstance(value, float):
        if math.isinf(value):
            raise _invalid("%s: number out of range" % what)
    elif isinstance(value, str):
        _check_text(value, what)
    elif isinstance(value, (list, dict)):
        if depth >= _MAX_DEPTH:
            raise _invalid("%s: nested too deep" % what)
        if isinstance(value, dict):
            for key, item in value.items():
                _check_text(key, what)
                _check_value(item, depth + 1, what)
        else:
            for item in value:
                _check_value(item, depth + 1, what)


def _u32(obj, key, default):
    value = obj.get(key, default)
    if type(value) is not int or not 0 <= value <= _U32_MAX:
        raise _invalid("%s must be an integer in 0..=%d" % (key, _U32_MAX))
    return value


def _fields(obj, known, what):
    """Checks an object's keys: no lone surrogates, no known key given twice."""
    if not isinstance(obj, dict):
        raise _invalid("%s must be an object" % what)
    for key in obj:
        _check_text(key, what)
    twice = sorted(k for k in getattr(obj, "repeated", ()) if k in known)
    if twice:
        raise _invalid("%s: duplicate field %s" % (what, twice[0]))


def parse_control_line(line):
    """Reads one control line (bytes or str, with or without its newline) as the daemon's own
    reader does and returns it as a dict with every key filled in:

        {"v": 1, "probe": [...], "probe_bits": N, "params": {...},
         "snoop": {"mode": "all" | "include" | "exclude", "pids": [sorted, distinct]}}

    Raises ControlLineError (`reason` too_long or invalid). Keys it does not know are ignored.
    """
    if isinstance(line, str):
        try:
            line = line.encode("utf-8")
        except UnicodeEncodeError:
            raise _invalid("not UTF-8")
    if len(line) > MAX_CONTROL_LINE_BYTES:
        raise ControlLineError(
            "too_long", "control line longer than %d bytes" % MAX_CONTROL_LINE_BYTES)
    try:
        text = bytes(line).decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid("not UTF-8")
    try:
        obj = json.loads(text.rstrip(_TRAILING_SPACE), object_pairs_hook=_json_object,
                         parse_int=_json_int, parse_constant=_json_constant)
    except (ValueError, RecursionError) as e:
        raise _invalid(str(e))
    _fields(obj, ("v", "probe", "probe_bits", "params", "snoop"), "the line")
    probe = obj.get("probe", [])
    if not isinstance(probe, list) or not all(isinstance(p, str) for p in probe):
        raise _invalid("probe must be an array of strings")
    for p in probe:
        _check_text(p, "probe")
    params = obj.get("params", {})
    _fields(params, (), "params")
    for name, value in params.items():
        _check_value(value, 2, "params." + name)
    snoop = obj.get("snoop", {})
    _fields(snoop, ("mode", "pids"), "snoop")
    mode = snoop.get("mode", "all")
    if not isinstance(mode, str) or mode not in _SNOOP_MODES:
        raise _invalid("snoop.mode must be all, include or exclude")
    pids = snoop.get("pids", [])
    if not isinstance(pids, list) or not all(
            type(p) is int and 0 <= p <= _U32_MAX for p in pids):
        raise _invalid("snoop.pids must be an array of integers in 0..=%d" % _U32_MAX)
    return {
        "v": _u32(obj, "v", 1),
        "probe": list(probe),
        "probe_bits": _u32(obj, "probe_bits", 0),
        "params": dict(params),
        "snoop": {"mode": mode, "pids": sorted(set(pids))},
    }


def control_selects(msg, pid):
    """Whether process `pid` is observed by the state `msg` (a parsed control line; None, before
    any line arrived, observes every process)."""
    if msg is None:
        return True
    snoop = msg["snoop"]
    if snoop["mode"] == "all":
        return True
    pids = snoop["pids"]
    i = bisect.bisect_left(pids, pid)
    listed = i < len(pids) and pids[i] == pid
    return listed if snoop["mode"] == "include" else not listed


def control_period(msg, default, name="report_period"):
    """Param `name` of `msg` when it is an integer of at least 1 (a period in seconds), else
    `default`."""
    if msg is not None:
        value = msg["params"].get(name)
        if type(value) is int and value >= 1:
            return value
    return default


class Control:
    """The control channel, read from stdin (`fd`) without blocking and without a thread.

        control = gala_probe.Control()
        while control.sleep(args["period"]):     # reads control lines while it waits
            bits = control.probe_bits            # None until the first line
            dev = control.param("dev_name", "")
            if control.selects(pid): ...

    poll() reads what has arrived and returns the newest message not returned yet (a dict, see
    parse_control_line) or None; `message` is the newest one so far. A line that is not a control
    message is skipped (one warning on stderr for the first); a line longer than
    MAX_CONTROL_LINE_BYTES is dropped whole. Stdin at end of file, /dev/null or closed (a probe
    run by hand, or without `reload = true`) never yields a message.
    """

    def __init__(self, fd=0):
        self.message = None
        self.received = 0
        self.refused = 0
        self.closed = False
        self._fd = fd
        self._buf = bytearray()
        self._skipping = False
        self._new = None
        self._warned = False
        self._period = None
        self._next = None

    def poll(self, timeout=0.0):
        """Reads the control lines that have arrived (waiting at most `timeout` seconds for the
        first bytes) and returns the newest message not returned yet, or None."""
        self._read(timeout)
        msg, self._new = self._new, None
        return msg

    def param(self, name, default=None):
        """Param `name` of the newest message (its effective value), or `default`."""
        if self.message is None:
            return default
        return self.message["params"].get(name, default)

    @property
    def probe_bits(self):
        """`-P` bits of the sub-probes on, or None before the first message."""
        return None if self.message is None else self.message["probe_bits"]

    @property
    def probe(self):
        """Names of the sub-probes on (empty before the first message)."""
        return [] if self.message is None else self.message["probe"]

    def selects(self, pid):
        """Whether process `pid` is to be observed (every process before the first message)."""
        return control_selects(self.message, pid)

    def period(self, default, name="report_period"):
        """The period in seconds: param `name` when it is an integer >= 1, else `default`."""
        return control_period(self.message, default, name)

    def sleep(self, period, name="report_period"):
        """Waits for the next period boundary while reading control lines; returns True there and
        False once the probe should stop (SIGTERM, SIGINT, SIGHUP, or stdout gone).

        The period is param `name` of the newest message when that is an integer >= 1, else
        `period` seconds. A change applies at once: the next boundary becomes one new period after
        the previous one, or now if that has passed (as probe_sdk::run::PeriodLoop::set_period).
        The first boundary is one period after the first call. Buffered records are flushed
        before waiting, as period_loop() does.
        """
        if not period > 0:
            raise ValueError("period must be positive")
        _trap_termination()
        flush()
        now = time.monotonic()
        if self._next is None:
            self._period = self.period(period, name)
            self._next = now + self._period
        while not _terminated:
            current = self.period(period, name)
            if current != self._period:
                last = self._next - self._period
                self._period = current
                self._next = max(last + current, now)
            if now >= self._next:
                self._next += self._period
                if self._next <= now:
                    self._next = now + self._period
                return True
            wait = min(0.1, self._next - now)
            if self.closed:
                time.sleep(wait)
            else:
                self._read(wait)
            now = time.monotonic()
        flush()
        return False

    def _read(self, timeout):
        budget = _READ_PER_POLL
        while not self.closed and budget > 0:
            try:
                ready = select.select([self._fd], [], [], timeout)[0]
            except (OSError, ValueError):
                self._end()
                return
            if not ready:
                return
            timeout = 0
            try:
                data = os.read(self._fd, _READ_CHUNK)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._end()
                return
            budget -= len(data)
            self._split(data)

    def _split(self, data):
        start = 0
        while start < len(data):
            nl = data.find(b"\n", start)
            end = len(data) if nl < 0 else nl + 1
            piece = data[start:end]
            start = end
            if self._skipping:
                if nl >= 0:
                    self._skipping = False
                    self._refuse(ControlLineError(
                        "too_long", "control line longer than %d bytes" % MAX_CONTROL_LINE_BYTES))
                continue
            if len(self._buf) + len(piece) > MAX_CONTROL_LINE_BYTES:
                # Dropped whole: never buffered beyond the limit.
                del self._buf[:]
                if nl < 0:
                    self._skipping = True
                else:
                    self._refuse(ControlLineError(
                        "too_long", "control line longer than %d bytes" % MAX_CONTROL_LINE_BYTES))
                continue
            self._buf += piece
            if nl >= 0:
                line = bytes(self._buf)
                del self._buf[:]
                self._line(line)

    def _end(self):
        # The last line needs no newline; an overlong one just ends.
        self.closed = True
        if self._buf and not self._skipping:
            line = bytes(self._buf)
            del self._buf[:]
            self._line(line)

    def _line(self, line):
        try:
            msg = parse_control_line(line)
        except ControlLineError as e:
            self._refuse(e)
            return
        self.received += 1
        self.message = self._new = msg

    def _refuse(self, error):
        self.refused += 1
        if not self._warned:
            self._warned = True
            log_warn("control channel: line skipped: %s" % error)
