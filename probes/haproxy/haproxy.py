#!/usr/bin/python3
"""HAProxy probe: reads every HAProxy stats socket on the host (and the ones named in params)
once per period and reports

    |haproxy_info|<instance>|<version>|...|              `show info`, one row per instance
    |haproxy_stat|<instance>|<proxy>|<name>|<type>|...|  `show stat`, one row per frontend,
                                                        backend, server and listener
    |haproxy_link|<client_ip>|<virtual_ip>|<server_ip>|<virtual_port>|<server_port>|<protocol>|<n>|
                                                        `show sess all`: live sessions per
                                                        client -> frontend address -> server
    |haproxy_instance|<instance>|<up>|<scrape_errors>|<scrape_seconds>|

Instances are found each period: running `haproxy` processes, their configuration files (`-f`
files or directories, read through /proc/PID/root) and the `stats socket` lines of the `global`
section (a unix socket path or `ipv4@`/`ipv6@` address). Params `stats_socket` (one unix socket
path) and `stats_addrs` (comma-separated TCP addresses) add explicit instances.

Flags: the upstream ones (-t period), plus -S <socket path> and -A <addr,addr> for the two params
(a run by hand). With `reload = true` the daemon's control lines (stdin) carry every param.
See docs/probes/haproxy.md.
"""

import concurrent.futures
import os
import shlex
import socket
import stat
import sys
import time

sys.path.insert(0, os.environ.get("GALA_GOPHER_SDK_DIR", "/opt/gala-gopher/sdk"))
import gala_probe  # noqa: E402
import gala_middleware as mw  # noqa: E402

COMMS = ("haproxy",)
BIT_STAT = 1
BIT_LINK = 2

MAX_CONFIG_BYTES = 1 << 20
"""Largest configuration file read; the rest of a larger one is ignored."""
MAX_CONFIG_FILES = 64
"""Configuration files read per process (a `-f` directory's *.cfg files included)."""
MAX_SOCKETS_PER_PROCESS = 16
MAX_INSTANCES = 64
MAX_WORKERS = 8
MAX_SESS_BYTES = 16 << 20
"""Largest `show sess all` answer read per instance (about 8000 sessions); sessions after it are
not counted in haproxy_link."""
MAX_STAT_ROWS = 20000

# Sections of haproxy.cfg; `stats socket` is read only in `global`.
SECTIONS = frozenset((
    "global", "defaults", "frontend", "backend", "listen", "peers", "resolvers", "userlist",
    "mailers", "program", "http-errors", "ring", "cache", "fcgi-app", "log-forward",
    "dynamic-update", "crt-store", "traces", "acme",
))

INFO_FIELDS = (
    # (show info key, kind) in haproxy_info order after instance and version.
    ("Uptime_sec", "g"),
    ("Nbthread", "g"),
    ("Maxconn", "g"),
    ("Maxsock", "g"),
    ("Ulimit-n", "g"),
    ("CurrConns", "g"),
    ("CumConns", "c"),
    ("CumReq", "c"),
    ("ConnRate", "g"),
    ("MaxConnRate", "g"),
    ("SessRate", "g"),
    ("MaxSessRate", "g"),
    ("CurrSslConns", "g"),
    ("CumSslConns", "c"),
    ("SslRate", "g"),
    ("Tasks", "g"),
    ("Run_queue", "g"),
    ("Idle_pct", "g"),
    ("Jobs", "g"),
    ("Listeners", "g"),
    ("Stopping", "g"),
    ("PoolAlloc_bytes", "g"),
    ("PoolUsed_bytes", "g"),
    ("PoolFailed", "c"),
    ("TotalBytesOut", "c"),
    ("BytesOutRate", "g"),
    ("DroppedLogs", "c"),
    ("FailedResolutions", "c"),
)

# `show stat` columns reported in haproxy_stat, in order after instance, proxy, name, type,
# status, mode and status_up. The names are HAProxy's own (management guide, section 9.1).
STAT_FIELDS = (
    "qcur", "qmax", "scur", "smax", "slim", "stot", "bin", "bout", "dreq", "dresp", "ereq",
    "econ", "eresp", "wretr", "wredis", "weight", "act", "bck", "chkfail", "chkdown", "lastchg",
    "downtime", "lbtot", "rate", "rate_max", "hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx",
    "hrsp_5xx", "hrsp_other", "req_rate", "req_rate_max", "req_tot", "cli_abrt", "srv_abrt",
    "lastsess", "qtime", "ctime", "rtime", "ttime", "qtime_max", "ctime_max", "rtime_max",
    "ttime_max", "conn_rate", "conn_tot", "dcon", "dses", "wrew", "eint",
)

STAT_TYPES = {"0": "frontend", "1": "backend", "2": "server", "3": "listener"}


class ScrapeError(Exception):
    """An answer that is not what a HAProxy stats socket gives."""


# --- Addresses ---------------------------------------------------------------------------------


def parse_socket_spec(spec):
    """(instance name, address) of a `stats socket` address, or None when it is not one the
    probe can reach (abstract namespace, inherited fd, ...).

    `address` is a unix socket path (str) or (host, port); wildcard hosts become loopback.
    """
    spec = spec.strip()
    if not spec:
        return None
    if spec.startswith("unix@"):
        spec = spec[5:]
    if spec.startswith("/"):
        return spec, spec
    family = None
    if "@" in spec:
        prefix, spec = spec.split("@", 1)
        if prefix in ("ipv4", "tcp4"):
            family = socket.AF_INET
        elif prefix in ("ipv6", "tcp6"):
            family = socket.AF_INET6
        elif prefix != "tcp":
            return None
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    host = host.strip("[]")
    if host in ("", "*", "0.0.0.0"):
        host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    elif host == "::":
        host = "::1"
    try:
        info = socket.getaddrinfo(host, None, family or socket.AF_UNSPEC, socket.SOCK_STREAM, 0,
                                  socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError):
        return None
    ip = info[0][4][0]
    name = ("[%s]:%s" if ":" in ip else "%s:%s") % (ip, port)
    return name, (ip, int(port))


# --- Discovery ---------------------------------------------------------------------------------


def config_args(argv):
    """(config paths, -C directory) from a haproxy command line."""
    paths = []
    chdir = None
    i = 1
    while i < len(argv):
        a = argv[i]
        if a == "--":
            paths.extend(x for x in argv[i + 1 :] if x)
            break
        if a in ("-f", "-C") and i + 1 < len(argv):
            if a == "-f":
                paths.append(argv[i + 1])
            else:
                chdir = argv[i + 1]
            i += 2
            continue
        i += 1
    return paths, chdir


def stats_sockets(text):
    """The addresses of the `stats socket` lines of the `global` section(s) of a config text."""
    out = []
    section = None
    for raw in text.splitlines():
        if raw.lstrip().startswith("#"):
            continue
        try:
            lex = shlex.shlex(raw, posix=True)
            lex.whitespace_split = True
            lex.commenters = "#"
            words = list(lex)
        except ValueError:
            continue
        if not words:
            continue
        if words[0] in SECTIONS:
            section = words[0]
            continue
        if section == "global" and len(words) >= 3 and words[0] == "stats" and words[1] == "socket":
            if "$" not in words[2]:
                out.append(words[2])
    return out


def _resolve(base, path):
    return path if path.startswith("/") else os.path.normpath(os.path.join(base, path))


class Discovery:
    """Stats sockets of the running haproxy processes, re-read when a process or one of its
    configuration files changes."""

    def __init__(self, proc="/proc"):
        self.proc = proc
        self._cache = {}  # pid -> (signature, [(name, address)])
        try:
            st = os.stat("/")
            self._root = (st.st_dev, st.st_ino)
        except OSError:
            self._root = None

    def _root_dir(self, pid):
        return "%s/%d/root" % (self.proc, pid)

    def _files(self, pid, argv):
        """Paths (as haproxy sees them) of the process's configuration files, read inside its
        root (gala_middleware.read_in_root: no symlink leads out of it, no FIFO hangs us)."""
        paths, chdir = config_args(argv)
        try:
            cwd = os.readlink("%s/%d/cwd" % (self.proc, pid))
        except OSError:
            cwd = "/"
        # -C is where haproxy went before reading its files, so usually its cwd already.
        base = chdir if chdir and chdir.startswith("/") else cwd
        files = []
        root = self._root_dir(pid)
        for p in paths:
            seen = _resolve(base, p)
            try:
                is_dir = stat.S_ISDIR(mw.stat_in_root(root, seen).st_mode)
            except OSError:
                is_dir = False
            if is_dir:
                try:
                    names = [n for n in mw.listdir_in_root(root, seen) if n.endswith(".cfg")]
                except OSError:
                    continue
                files.extend(seen.rstrip("/") + "/" + n for n in names)
            else:
                files.append(seen)
            if len(files) >= MAX_CONFIG_FILES:
                break
        return files[:MAX_CONFIG_FILES]

    def _same_root(self, pid):
        try:
            st = os.stat("%s/%d/root" % (self.proc, pid))
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._root

    def sockets(self):
        """{instance name: [address, ...]}: one instance per haproxy process (a master-worker
        pair counts once), named by its first stats socket; the others are alternates."""
        found = {}
        alive = set()
        procs = mw.processes(COMMS, self.proc)
        pids = set(p.pid for p in procs)
        for p in procs:
            alive.add(p.pid)
            if mw.ppid(p.pid, self.proc) in pids:
                # A master-worker worker: same config as its master, maybe chrooted.
                continue
            files = self._files(p.pid, p.argv)
            sig = []
            for path in files:
                try:
                    st = mw.stat_in_root(self._root_dir(p.pid), path)
                    sig.append((path, st.st_ino, st.st_mtime_ns, st.st_size))
                except OSError:
                    sig.append((path, None, None, None))
            sig = (tuple(p.argv), tuple(sig))
            cached = self._cache.get(p.pid)
            if cached is None or cached[0] != sig:
                cached = (sig, self._sockets_of(p.pid, files))
                self._cache[p.pid] = cached
            socks = cached[1]
            if socks and socks[0][0] not in found:
                found[socks[0][0]] = [addr for _, addr in socks]
        for pid in list(self._cache):
            if pid not in alive:
                del self._cache[pid]
        return found

    def _sockets_of(self, pid, files):
        out = []
        same_root = self._same_root(pid)
        try:
            cwd = os.readlink("%s/%d/cwd" % (self.proc, pid))
        except OSError:
            cwd = "/"
        for path in files:
            try:
                text = mw.read_in_root(self._root_dir(pid), path, MAX_CONFIG_BYTES).decode("utf-8", "replace")
            except OSError:
                continue
            for spec in stats_sockets(text):
                if not spec.startswith("/") and "@" not in spec and ":" not in spec:
                    spec = _resolve(cwd, spec)  # a relative unix socket path
                parsed = parse_socket_spec(spec)
                if parsed is None:
                    continue
                name, addr = parsed
                if isinstance(addr, str) and not same_root:
                    addr = mw.in_root(pid, addr)
                out.append((name, addr))
                if len(out) >= MAX_SOCKETS_PER_PROCESS:
                    return out
        return out


# --- Parsing answers ---------------------------------------------------------------------------


def _int(text):
    text = text.strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return None


def parse_info(text):
    """{key: value text} of a `show info` answer; ScrapeError when it is not one."""
    info = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    if _int(info.get("Uptime_sec", "")) is None or "Version" not in info:
        raise ScrapeError("not a HAProxy `show info` answer: %r" % text[:60])
    return info


def parse_stat(text):
    """[{column: value text}] of a `show stat` CSV answer; ScrapeError when it is not one."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# pxname,svname,"):
        raise ScrapeError("not a HAProxy `show stat` answer: %r" % text[:60])
    cols = lines[0][2:].split(",")
    rows = []
    for line in lines[1:]:
        if not line:
            continue
        values = line.split(",")
        if len(values) < 2:
            continue
        rows.append(dict(zip(cols, values)))
        if len(rows) >= MAX_STAT_ROWS:
            break
    return rows


def status_up(status):
    """1 when a `show stat` status means serving (UP, UP n/m, OPEN, no check, NOLB, DRAIN, FULL),
    0 when DOWN, DOWN n/m, MAINT..., STOP; None when empty."""
    status = status.strip()
    if not status:
        return None
    return 0 if status.split(" ")[0].split("(")[0] in ("DOWN", "MAINT", "STOP") else 1


def _addr(text):
    """(ip, port) of `IP:PORT` as HAProxy prints it, or None."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


class SessionParser:
    """Reads `show sess all` line by line and counts live proxied TCP sessions per link
    (client ip, frontend address, server address, proxy mode)."""

    def __init__(self):
        self.links = {}
        self._cur = None
        self.sessions = 0

    def _close(self):
        cur, self._cur = self._cur, None
        if not cur or not cur.get("client") or not cur.get("vip") or not cur.get("sip"):
            return
        key = (cur["client"], cur["vip"][0], cur["sip"][0], cur["vip"][1], cur["sip"][1],
               cur.get("mode") or "")
        self.links[key] = self.links.get(key, 0) + 1

    def line(self, line):
        if line.startswith("0x"):
            self._close()
            self.sessions += 1
            cur = {}
            words = line.split()
            proto = next((w[6:] for w in words if w.startswith("proto=")), "")
            src = next((w[7:] for w in words if w.startswith("source=")), "")
            if proto.startswith("tcp"):
                a = _addr(src)
                if a:
                    cur["client"] = a[0]
            self._cur = cur
            return
        if self._cur is None:
            return
        s = line.strip()
        if s.startswith("frontend="):
            if s.startswith("frontend=GLOBAL "):
                self._cur = {}
                return
            i = s.find("mode=")
            if i >= 0:
                self._cur["mode"] = s[i + 5 :].split(")")[0].split()[0]
            a = _addr(s.rsplit(" addr=", 1)[1]) if " addr=" in s else None
            if a:
                self._cur["vip"] = a
        elif s.startswith("server="):
            if not s.startswith("server=<NONE>") and " addr=" in s:
                a = _addr(s.rsplit(" addr=", 1)[1])
                if a:
                    self._cur["sip"] = a

    def finish(self):
        self._close()
        return self.links


def read_sessions(address, deadline):
    """Counted links of `show sess all` (streamed; at most MAX_SESS_BYTES read): (links,
    truncated)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise socket.timeout("timed out")
    if isinstance(address, str):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        s = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET,
                          socket.SOCK_STREAM)
    parser = SessionParser()
    truncated = False
    try:
        s.settimeout(left)
        s.connect(address)
        s.sendall(b"show sess all\n")
        buf = b""
        total = 0
        first = True
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out")
            s.settimeout(left)
            chunk = s.recv(65536)
            if not chunk:
                break
            total += len(chunk)
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace")
                if first and line.strip():
                    first = False
                    if not line.startswith("0x"):
                        raise ScrapeError("show sess refused: %s" % line.strip()[:80])
                parser.line(line)
            if total > MAX_SESS_BYTES:
                truncated = True
                break
            if len(buf) > 65536:
                buf = b""
    finally:
        s.close()
    return parser.finish(), truncated


# --- The probe ---------------------------------------------------------------------------------


def _explicit(socket_path, addrs):
    out = {}
    for spec in [socket_path] + addrs.split(","):
        parsed = parse_socket_spec(spec)
        if parsed is not None:
            out.setdefault(parsed[0], [parsed[1]])
    return out


class Probe:
    """One scrape per period of every instance; keeps what must outlive a period."""

    def __init__(self):
        self.discovery = Discovery()
        self.health = mw.Instances("haproxy_instance", gala_probe.log_warn, gala_probe.log_info,
                                   gala_probe.record)
        self.prev_links = {}  # HAProxy process -> link keys written last period
        self.link_warned = set()
        self.bad_specs = set()
        self.link_addr = {}  # instance -> the address that answered show sess last time

    def targets(self, socket_path, addrs, discover):
        found = _explicit(socket_path, addrs)
        for spec in [socket_path] + addrs.split(","):
            if spec.strip() and parse_socket_spec(spec) is None and spec not in self.bad_specs:
                self.bad_specs.add(spec)
                gala_probe.log_warn("haproxy: not a stats socket address: %r" % spec)
        if discover:
            for name, addrs in self.discovery.sockets().items():
                found.setdefault(name, addrs)
        if len(found) > MAX_INSTANCES:
            found = dict(sorted(found.items())[:MAX_INSTANCES])
        return found

    @staticmethod
    def fetch(name, addrs, timeout, bits, link_first=None):
        """The requests to one instance (run in a worker thread; no shared state touched):
        `show info` and `show stat` through the first of `addrs` that answers, then `show sess
        all` (for links) through the first that answers it, `link_first` tried first. Returns
        (name, info or None, rows, links or None, the address links came from, link error or
        truncation flag, error, seconds)."""
        start = time.monotonic()
        deadline = start + timeout

        def left():
            return max(0.001, deadline - time.monotonic())

        error = ScrapeError("no stats socket address")
        info = rows = None
        for i, addr in enumerate(addrs):
            try:
                answer = mw.exchange(addr, b"show info\n", left())
                info = parse_info(answer.decode("utf-8", "replace"))
                if bits & BIT_STAT:
                    answer = mw.exchange(addr, b"show stat\n", left())
                    rows = parse_stat(answer.decode("utf-8", "replace"))
                break
            except (OSError, mw.HttpError, ScrapeError) as e:
                info = None
                if i == 0:
                    error = e
                if time.monotonic() >= deadline:
                    break
        links = link_addr = link_error = None
        truncated = False
        if info is not None and bits & BIT_LINK:
            for addr in sorted(addrs, key=lambda a: a != link_first):
                try:
                    links, truncated = read_sessions(addr, deadline)
                    link_addr = addr
                    break
                except (OSError, ScrapeError) as e:
                    link_error = link_error or e
                    if time.monotonic() >= deadline:
                        break
        return (name, info, rows, links, link_addr, link_error if links is None else truncated,
                error, time.monotonic() - start)

    def account(self, fetched, bits):
        """Bookkeeping and records of one instance's fetch() (main thread): its health, its
        tables, and (identity of the HAProxy process, links or None), or None when it is down."""
        name, info, rows, links, link_addr, link_note, error, seconds = fetched
        if info is None:
            self.health.failed(name, error, seconds)
            return None
        if bits & BIT_LINK:
            links = self._links(name, links, link_addr, link_note)
        self.health.ok(name, seconds)
        self._report(name, info, rows)
        ident = (info.get("node"), info.get("Pid"), info.get("Start_time_sec"))
        return ident, links

    def _links(self, name, links, link_addr, link_note):
        """Warnings (once) about `show sess` of instance `name`; its links or None."""
        if links is not None:
            self.link_addr[name] = link_addr
            self.link_warned.discard(name)
            if link_note is True and (name, "trunc") not in self.link_warned:
                self.link_warned.add((name, "trunc"))
                gala_probe.log_warn("haproxy: %s: show sess answer above %d bytes, later "
                                    "sessions not counted" % (name, MAX_SESS_BYTES))
            return links
        if name not in self.link_warned:
            self.link_warned.add(name)
            hint = " (show sess needs a stats socket of level operator or admin)" if isinstance(
                link_note, ScrapeError) else ""
            gala_probe.log_warn("haproxy: %s: no haproxy_link%s: %s" % (name, hint, link_note))
        return None

    @staticmethod
    def _report(name, info, rows):
        gala_probe.record("haproxy_info", name, info.get("Version") or None,
                          *[_int(info.get(k, "")) for k, _ in INFO_FIELDS])
        for row in rows or ():
            proxy = row.get("pxname", "")
            svname = row.get("svname", "")
            if not proxy or not svname:
                continue
            kind = STAT_TYPES.get(row.get("type", ""), row.get("type") or None)
            status = row.get("status", "")
            gala_probe.record("haproxy_stat", name, proxy, svname, kind, status or None,
                              row.get("mode") or None, status_up(status),
                              *[_int(row.get(c, "")) for c in STAT_FIELDS])

    def period(self, socket_path, addrs, discover, bits, timeout):
        """One period: scrape every instance, then write the links and the instances' health."""
        self.health.begin()
        targets = self.targets(socket_path, addrs, discover)
        by_ident = {}  # HAProxy process -> its links (one process behind two sockets: once)
        carried = {}  # processes up whose `show sess` failed: their links are not zeroed
        # Instances are asked in parallel: one that hangs costs its own timeout, not the others'.
        jobs = sorted(targets.items())
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(MAX_WORKERS, len(jobs)))) as pool:
            fetched = list(pool.map(
                lambda job: self.fetch(job[0], job[1], timeout, bits, self.link_addr.get(job[0])), jobs))
        for one in fetched:
            got = self.account(one, bits)
            if got is None or got[0] in by_ident:
                continue
            ident, links = got
            if links is None:
                carried[ident] = self.prev_links.get(ident, set())
            else:
                by_ident[ident] = links
        total = {}
        for links in by_ident.values():
            for key, n in links.items():
                total[key] = total.get(key, 0) + n
        for key, n in sorted(total.items()):
            gala_probe.record("haproxy_link", *key, n)
        # A link that went away is written once with 0 (its process is down, gone, or no longer
        # has it); the links of a process whose `show sess` failed are left to expire unchanged.
        keep = set(total).union(*carried.values())
        gone = set().union(*self.prev_links.values()) - keep
        for key in sorted(gone):
            gala_probe.record("haproxy_link", *key, 0)
        self.prev_links = {i: set(v) for i, v in by_ident.items()}
        self.prev_links.update((i, v) for i, v in carried.items() if v)
        # Forget instances that are gone.
        for name in [n for n in self.link_addr if n not in targets]:
            del self.link_addr[name]
        self.link_warned = set(
            w for w in self.link_warned if (w if isinstance(w, str) else w[0]) in targets)
        if len(self.bad_specs) > 64:
            self.bad_specs.clear()
        self.health.report()


def _flag(args, letter):
    for flag, value in args["extra"]:
        if flag == letter and value:
            return value
    return ""


def main():
    args = gala_probe.parse_args()
    control = gala_probe.Control()
    probe = Probe()
    gala_probe.log_info("haproxy started, period %ss" % args["period"])
    while control.sleep(args["period"]):
        period = control.period(args["period"])
        socket_path = control.param("stats_socket", _flag(args, "S"))
        addrs = control.param("stats_addrs", _flag(args, "A"))
        discover = control.param("discover", 1)
        bits = control.probe_bits
        if bits is None:
            bits = args["probe_bits"]
        if not isinstance(socket_path, str):
            socket_path = ""
        if not isinstance(addrs, str):
            addrs = ""
        probe.period(socket_path, addrs, discover != 0, bits, mw.request_timeout(period))
    gala_probe.log_info("haproxy stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
