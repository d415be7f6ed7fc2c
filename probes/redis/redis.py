#!/usr/bin/python3
"""redis: reports what `INFO all` of every Redis server on the host says, one row per instance.

Instances are the running `redis-server` processes (their TCP listening port, or their unix
socket when they listen in another network namespace or only there) plus the `host:port` list
of param `instances`. Each period the probe sends, on one connection, `AUTH` (when param
`password_file` names a root-only file) and `INFO all` with its own small RESP client, all
within gala_middleware.request_timeout(period) seconds. Tables: see redis.meta and
docs/probes/redis.md.

Flags (besides the upstream ones, -t period): -a HOST:PORT,... (instances), -x 0|1 (discover
running servers, default 1), -W PATH (password file), -u USER (ACL user). With `reload = true`
the same params arrive on stdin as control lines and apply without a restart.
"""

import concurrent.futures
import os
import sys
import time

sys.path.insert(0, os.environ.get("GALA_GOPHER_SDK_DIR", "/opt/gala-gopher/sdk"))
import gala_middleware as mw  # noqa: E402
import gala_probe  # noqa: E402

COMMS = ("redis-server",)
MAX_INFO_BYTES = 1 << 20
"""Largest answer read from one server (INFO all of a busy server is some tens of KiB)."""
MAX_INFO_LINES = 20000
MAX_ROWS = 256
"""Most rows of one per-instance table (databases, replicas, commands) reported per period."""
MAX_ARRAY = 64
MAX_WORKERS = 8
REDISCOVER_SECONDS = 30.0

# Errors a server gives to AUTH when it has no password: the probe's password is not needed there.
_NO_PASSWORD_SET = ("without any password configured", "no password is set")


# --- RESP ----------------------------------------------------------------------------------------


class ProtocolError(ValueError):
    """An answer that is not RESP (garbage, a wrong server on that port)."""


class Incomplete(Exception):
    """More bytes are needed to finish the reply."""


class ErrorReply(str):
    """A RESP error reply (`-ERR ...`), its text without the `-`."""


def encode_command(*args):
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        raw = a if isinstance(a, bytes) else str(a).encode("utf-8")
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


def _resp_int(raw):
    digits = raw[1:] if raw[:1] == b"-" else raw
    if not digits or not digits.isdigit() or len(digits) > 19:
        raise ProtocolError("bad RESP number %r" % raw[:32])
    return int(raw)


def parse_reply(buf, pos=0, depth=0):
    """(reply, next position) of the RESP2 reply at ``buf[pos:]``; raises Incomplete when the
    reply is not whole yet and ProtocolError when it is not RESP. Simple strings are str, errors
    ErrorReply, integers int, bulk strings bytes (None for a null), arrays lists."""
    if pos >= len(buf):
        raise Incomplete()
    kind = buf[pos : pos + 1]
    if kind not in (b"+", b"-", b":", b"$", b"*"):
        raise ProtocolError("not a RESP reply: %r" % bytes(buf[pos : pos + 24]))
    end = buf.find(b"\r\n", pos)
    if end < 0:
        if len(buf) - pos > 4096:
            raise ProtocolError("RESP header line longer than 4096 bytes")
        raise Incomplete()
    line = bytes(buf[pos + 1 : end])
    after = end + 2
    if kind == b"+":
        return line.decode("utf-8", "replace"), after
    if kind == b"-":
        return ErrorReply(line.decode("utf-8", "replace")), after
    n = _resp_int(line)
    if kind == b":":
        return n, after
    if kind == b"$":
        if n == -1:
            return None, after
        if n < 0 or n > MAX_INFO_BYTES:
            raise ProtocolError("bulk string of %d bytes" % n)
        if len(buf) < after + n + 2:
            raise Incomplete()
        if buf[after + n : after + n + 2] != b"\r\n":
            raise ProtocolError("bulk string not followed by CRLF")
        return bytes(buf[after : after + n]), after + n + 2
    if n == -1:
        return None, after
    if n < 0 or n > MAX_ARRAY or depth >= 4:
        raise ProtocolError("array of %d elements at depth %d" % (n, depth))
    items = []
    for _ in range(n):
        item, after = parse_reply(buf, after, depth + 1)
        items.append(item)
    return items, after


def parse_replies(buf, count):
    """The first ``count`` replies in ``buf`` (Incomplete / ProtocolError as parse_reply)."""
    out = []
    pos = 0
    for _ in range(count):
        reply, pos = parse_reply(buf, pos)
        out.append(reply)
    return out


def _complete(count):
    def done(answer):
        try:
            parse_replies(answer, count)
        except Incomplete:
            return False
        return True

    return done


class ScrapeError(Exception):
    """Why one instance could not be read (logged once when it goes down)."""


def query(address, commands, timeout):
    """Sends ``commands`` (encoded) pipelined on one connection, returns their replies."""
    try:
        answer = mw.exchange(
            address, b"".join(commands), timeout, done=_complete(len(commands)), limit=MAX_INFO_BYTES
        )
        return parse_replies(answer, len(commands))
    except Incomplete:
        raise ScrapeError("connection closed before the whole answer") from None
    except ProtocolError as e:
        raise ScrapeError("garbage answer: %s" % e) from None
    except mw.HttpError as e:
        raise ScrapeError(str(e)) from None
    except OSError as e:
        raise ScrapeError(str(e) or type(e).__name__) from None


def fetch_info(address, timeout, auth=None):
    """The fields of ``INFO all`` (a dict of str), after AUTH when ``auth`` = (user, password)."""
    commands = []
    if auth is not None:
        user, password = auth
        commands.append(encode_command("AUTH", user, password) if user else encode_command("AUTH", password))
    commands.append(encode_command("INFO", "all"))
    replies = query(address, commands, timeout)
    if auth is not None:
        r = replies[0]
        if isinstance(r, ErrorReply) and not any(s in r for s in _NO_PASSWORD_SET):
            raise ScrapeError("AUTH refused: %s" % r[:200])
    info = replies[-1]
    if isinstance(info, ErrorReply):
        raise ScrapeError("INFO refused: %s" % info[:200])
    if not isinstance(info, bytes):
        raise ScrapeError("INFO answered %s, not a bulk string" % type(info).__name__)
    fields = parse_info(info.decode("utf-8", "replace"))
    if "redis_version" not in fields:
        raise ScrapeError("INFO answer has no redis_version: not a Redis server")
    return fields


# --- INFO ----------------------------------------------------------------------------------------


def parse_info(text):
    """``key:value`` lines of an INFO answer as a dict (section headers and blanks skipped)."""
    fields = {}
    for line in text.splitlines()[:MAX_INFO_LINES]:
        if not line or line[0] == "#":
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields[key] = value.strip()
    return fields


def sub_fields(value):
    """``a=1,b=2`` (keyspace, replica, commandstats lines) as a dict."""
    out = {}
    for part in value.split(","):
        k, sep, v = part.partition("=")
        if sep:
            out[k] = v
    return out


def number(value):
    """An INFO value as int or float, None when absent or not a number."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        pass
    try:
        f = float(value)
    except ValueError:
        return None
    return f if f == f and abs(f) != float("inf") else None


def rows(fields, prefix, numbered=False):
    """(suffix, sub-fields) of the fields named ``prefix<suffix>`` (at most MAX_ROWS, sorted);
    with ``numbered``, only suffixes of digits (``slave0``, not ``slave_repl_offset``)."""
    n = len(prefix)
    found = sorted(
        k for k in fields if k.startswith(prefix) and len(k) > n and (not numbered or k[n:].isdigit())
    )
    return [(k[len(prefix) :], sub_fields(fields[k])) for k in found[:MAX_ROWS]]


def report_info(instance, f):
    """Buffers the records of one instance from its INFO fields."""
    rec = gala_probe.record
    n = lambda key: number(f.get(key))  # noqa: E731
    rec(
        "redis_server", instance, f.get("redis_version"), f.get("redis_mode"), f.get("tcp_port"),
        n("uptime_in_seconds"), n("hz"), n("io_threads_active"), n("used_cpu_sys"), n("used_cpu_user"),
    )
    rec(
        "redis_clients", instance, n("connected_clients"), n("cluster_connections"),
        n("blocked_clients"), n("maxclients"),
    )
    rec(
        "redis_memory", instance, f.get("maxmemory_policy"), n("used_memory"), n("used_memory_rss"),
        n("used_memory_peak"), n("mem_fragmentation_ratio"), n("maxmemory"),
    )
    rec(
        "redis_stats", instance, n("total_connections_received"), n("rejected_connections"),
        n("total_commands_processed"), n("instantaneous_ops_per_sec"), n("total_net_input_bytes"),
        n("total_net_output_bytes"), n("instantaneous_input_kbps"), n("instantaneous_output_kbps"),
        n("keyspace_hits"), n("keyspace_misses"), n("expired_keys"), n("evicted_keys"),
        n("total_error_replies"),
    )
    role = f.get("role")
    link = f.get("master_link_status")
    master = None
    if role == "slave" and f.get("master_host"):
        master = "%s:%s" % (f.get("master_host"), f.get("master_port", ""))
    master_offset = n("master_repl_offset")
    rec(
        "redis_replication", instance, role, master, n("connected_slaves"), master_offset,
        n("slave_repl_offset"), None if link is None else int(link == "up"),
        n("master_last_io_seconds_ago"), n("master_sync_in_progress"),
    )
    for _, s in rows(f, "slave", numbered=True):
        if "ip" not in s or "port" not in s:
            continue
        offset = number(s.get("offset"))
        behind = None
        if isinstance(offset, int) and isinstance(master_offset, int):
            behind = max(0, master_offset - offset)
        rec(
            "redis_slave", instance, "%s:%s" % (s["ip"], s["port"]), s.get("state"), offset,
            number(s.get("lag")), behind,
        )
    for db, s in rows(f, "db", numbered=True):
        rec(
            "redis_keyspace", instance, "db" + db, number(s.get("keys")), number(s.get("expires")),
            number(s.get("avg_ttl")),
        )
    for cmd, s in rows(f, "cmdstat_"):
        rec(
            "redis_command", instance, cmd, number(s.get("calls")), number(s.get("usec")),
            number(s.get("rejected_calls")), number(s.get("failed_calls")),
        )
    for cmd, s in rows(f, "latency_percentiles_usec_"):
        rec(
            "redis_latency", instance, cmd, number(s.get("p50")), number(s.get("p99")),
            number(s.get("p99.9")),
        )


# --- Instances -----------------------------------------------------------------------------------


def parse_instances(text):
    """(valid {name: (host, port)}, invalid items) of a comma-separated ``host:port`` list."""
    out = {}
    bad = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            bad.append(item)
            continue
        name = "[%s]:%s" % (host, int(port)) if ":" in host else "%s:%d" % (host, int(port))
        out[name] = (host, int(port))
    return out, bad


class NetnsAddress:
    """A TCP ``address`` (host, port) inside the network namespace of process ``pid``."""

    __slots__ = ("pid", "address")

    def __init__(self, pid, address):
        self.pid = pid
        self.address = address

    def __eq__(self, other):
        return isinstance(other, NetnsAddress) and (self.pid, self.address) == (other.pid, other.address)

    def __repr__(self):
        return "NetnsAddress(%d, %r)" % (self.pid, self.address)


def fetch_info_in_netns(target, timeout, auth=None):
    """fetch_info() from inside the network namespace of ``target.pid``: only the calling
    (worker) thread enters it, for the exchange, and returns before this returns."""
    try:
        with mw.in_netns(target.pid):
            return fetch_info(target.address, timeout, auth)
    except OSError as e:
        raise ScrapeError("network namespace of pid %d: %s" % (target.pid, e.strerror or e)) from None


def tcp_target(listening):
    """(name, address) to reach a server listening on ``listening`` [(ip, port)], or None.

    The cluster bus (port + 10000 beside port) is not RESP; of the other ports the lowest is
    taken. A wildcard listener is reached on loopback."""
    ports = {p for _, p in listening}
    main = sorted(p for p in ports if p - 10000 not in ports)
    if not main:
        return None
    port = main[0]
    ips = {ip for ip, p in listening if p == port}
    if ips & {"0.0.0.0", "127.0.0.1"}:
        ip = "127.0.0.1"
    elif ips & {"::", "::1"}:
        ip = "::1"
    else:
        ip = sorted(ips)[0]
    name = "[%s]:%d" % (ip, port) if ":" in ip else "%s:%d" % (ip, port)
    return name, (ip, port)


def discover(pid):
    """(name, address) of redis-server ``pid``, or None when it cannot be reached.

    In the probe's network namespace: its TCP port, else its unix socket. In another one (a
    container): its unix socket through /proc/PID/root, else its TCP port from inside that
    namespace (NetnsAddress); such names end in ``@pidPID``."""
    same = mw.same_netns(pid)
    if same:
        found = tcp_target(mw.listening_tcp(pid))
        if found:
            return found
    for path in mw.listening_unix(pid):
        rooted = mw.in_root(pid, path)
        via = rooted if len(rooted.encode()) < 108 else path
        name = path if same else "%s@pid%d" % (path, pid)
        return name, via
    if not same:
        found = tcp_target(mw.listening_tcp(pid))
        if found:
            return "%s@pid%d" % (found[0], pid), NetnsAddress(pid, found[1])
    return None


class Discovery:
    """The reachable redis-server processes, re-read when new, every REDISCOVER_SECONDS, or
    when their last scrape failed."""

    def __init__(self):
        self._cache = {}  # pid -> (monotonic time, (name, address) or None)
        self._unreachable = set()
        self.pids = {}  # name -> pid of the instances of the last targets()

    def targets(self, failed_names):
        now = time.monotonic()
        out = {}
        alive = set()
        for p in mw.processes(COMMS):
            alive.add(p.pid)
            cached = self._cache.get(p.pid)
            if (
                cached is None
                or cached[1] is None
                or now - cached[0] > REDISCOVER_SECONDS
                or cached[1][0] in failed_names
            ):
                cached = (now, discover(p.pid))
                self._cache[p.pid] = cached
            if cached[1] is None:
                if p.pid not in self._unreachable:
                    self._unreachable.add(p.pid)
                    gala_probe.log_warn("redis-server pid %d: no listening TCP or unix socket found" % p.pid)
                continue
            self._unreachable.discard(p.pid)
            out[cached[1][0]] = cached[1][1]
            self.pids[cached[1][0]] = p.pid
        for pid in list(self._cache):
            if pid not in alive:
                del self._cache[pid]
        self._unreachable &= alive
        self.pids = {name: pid for name, pid in self.pids.items() if name in out}
        return out


# --- Main loop -----------------------------------------------------------------------------------


def flag_params(args):
    """The params given as flags on the command line (the daemon's `param`, or by hand)."""
    names = {"a": "instances", "x": "discover", "W": "password_file", "u": "user"}
    out = {}
    for flag, value in args["extra"]:
        if flag not in names or value is None:
            gala_probe.log_error("unknown flag -%s (expected -a, -x, -W, -u)" % flag)
            sys.exit(2)
        out[names[flag]] = value
    if "discover" in out:
        if out["discover"] not in ("0", "1"):
            gala_probe.log_error('-x: invalid value "%s", expected 0 or 1' % out["discover"])
            sys.exit(2)
        out["discover"] = int(out["discover"])
    return out


class Probe:
    """One period's work: credentials, targets, parallel scrapes, records."""

    def __init__(self, flags):
        self.flags = flags
        self.health = mw.Instances("redis_instance", gala_probe.log_warn, gala_probe.log_info, gala_probe.record)
        self.discovery = Discovery()
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=MAX_WORKERS)
        self.failed = set()
        self.logged = {}
        self.explicit = set()

    def param(self, control, name, default):
        """Param ``name``: the newest control line's, else the command line's, else ``default``."""
        return control.param(name, self.flags.get(name, default))

    def once(self, name, message):
        """Logs ``message`` when it differs from the last one under ``name``."""
        if self.logged.get(name) != message:
            self.logged[name] = message
            if message:
                gala_probe.log_warn(message)

    def credentials(self, control):
        """(user, password), None without a password file, or a ScrapeError for a bad file."""
        path = self.param(control, "password_file", "")
        if not path:
            self.once("secret", None)
            return None
        try:
            password = mw.read_secret(path)
        except (mw.SecretError, UnicodeDecodeError) as e:
            err = ScrapeError("password file refused: %s" % e)
            self.once("secret", str(err))
            return err
        self.once("secret", None)
        return (self.param(control, "user", ""), password)

    def targets(self, control):
        explicit, bad = parse_instances(self.param(control, "instances", ""))
        self.once("instances", "param instances: not host:port: %s" % ", ".join(bad) if bad else None)
        targets = {}
        if self.param(control, "discover", 1):
            targets.update(self.discovery.targets(self.failed))
        targets.update(explicit)
        self.explicit = set(explicit)
        return targets

    def auth_for(self, name, auth):
        """The credentials for instance ``name``: explicit instances and trusted discovered
        servers get them (gala_middleware.trusted_server), others are asked without."""
        if auth is None or name in self.explicit:
            return auth
        pid = self.discovery.pids.get(name)
        ok, why = mw.trusted_server(pid) if pid is not None else (False, "unknown process")
        self.once("trust:%s" % name, None if ok else
                  "%s: password not sent: %s; name it in param instances to send it" % (name, why))
        return auth if ok else None

    def scrape(self, address, timeout, auth):
        start = time.monotonic()
        try:
            if isinstance(address, NetnsAddress):
                return fetch_info_in_netns(address, timeout, auth), None, time.monotonic() - start
            return fetch_info(address, timeout, auth), None, time.monotonic() - start
        except ScrapeError as e:
            return None, str(e), time.monotonic() - start
        except Exception as e:  # noqa: BLE001 -- odd input never stops the probe
            return None, "unexpected %s: %s" % (type(e).__name__, e), time.monotonic() - start

    def period(self, control, period):
        timeout = mw.request_timeout(period)
        auth = self.credentials(control)
        targets = self.targets(control)
        self.health.begin()
        self.failed = set()
        if isinstance(auth, ScrapeError):
            for name in sorted(targets):
                self.health.failed(name, str(auth), 0.0)
                self.failed.add(name)
            self.health.report()
            return
        futures = {
            name: self.pool.submit(self.scrape, address, timeout, self.auth_for(name, auth))
            for name, address in targets.items()
        }
        # The socket timeout bounds each exchange; this bounds what it does not (a host name
        # that takes long to resolve), so one period never waits much longer than the timeout.
        concurrent.futures.wait(futures.values(), timeout=timeout + 0.5)
        for name in sorted(futures):
            future = futures[name]
            if not future.done():
                fields, error, seconds = None, "timed out (name resolution?)", timeout
            else:
                fields, error, seconds = future.result()
            if fields is not None:
                try:
                    report_info(name, fields)
                except Exception as e:  # noqa: BLE001 -- odd input never stops the probe
                    fields, error = None, "unexpected %s in its INFO: %s" % (type(e).__name__, e)
            if fields is None:
                self.health.failed(name, error, seconds)
                self.failed.add(name)
            else:
                self.health.ok(name, seconds)
        self.health.report()


def main():
    args = gala_probe.parse_args()
    flags = flag_params(args)
    control = gala_probe.Control()
    probe = Probe(flags)
    gala_probe.log_info("redis started, period %ss" % args["period"])
    while control.sleep(args["period"]):
        probe.period(control, control.period(args["period"]))
    probe.pool.shutdown(wait=False)
    gala_probe.log_info("redis stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
