#!/usr/bin/python3
"""nginx probe: the stub_status page of every nginx on the host, and the TCP connections of its
workers (upstream's nginx_link table).

Each period it:

* finds running nginx masters in /proc (comm `nginx`, title `nginx: master process ...`), reads
  their configuration as they see it (`-c`, default /etc/nginx/nginx.conf, through
  /proc/PID/root, following `include`) and takes the first `server` with a `location` holding
  `stub_status`; its first usable `listen` gives the instance (`host:port` or `unix:/path`);
* adds the instances named in the param status_urls (`HOST:PORT[@SEG[@SEG...]]`, comma
  separated; the path is `/SEG/SEG`, default `/nginx_status`);
* reads each instance's stub_status page (in parallel, one timeout each) and reports
  `nginx_status` and `nginx_instance`;
* for each discovered master, classifies the established TCP sockets of its processes
  (/proc/PID/fd, matched with a netlink sock_diag dump or /proc/PID/net/tcp{,6}): a socket
  whose local end is a listen socket of that nginx is a client connection (client -> virtual),
  any other one an upstream connection (nginx -> server). /proc cannot tell which client a
  given upstream connection serves, so the two sides are reported as separate rows with the
  unknown side written `unknown`.

Flags: -t period, -c 0|1 (report client ports), -u STATUS_URLS, -P bits (1 status, 2 link).
Control lines (reload = true) override them and add `discover` (0: only status_urls).
"""

import concurrent.futures
import glob
import os
import re
import socket
import stat
import struct
import sys
import time

sys.path.insert(0, os.environ.get("GALA_GOPHER_SDK_DIR", "/opt/gala-gopher/sdk"))
import gala_probe  # noqa: E402
import gala_middleware as mw  # noqa: E402

STATUS_BIT = 1
LINK_BIT = 2
DEFAULT_CONF = "/etc/nginx/nginx.conf"
DEFAULT_PREFIX = "/usr/share/nginx/"
DEFAULT_LOCATION = "/nginx_status"
UNKNOWN = "unknown"

MAX_CONF_FILE_BYTES = 1 << 20
MAX_CONF_TOTAL_BYTES = 4 << 20
MAX_CONF_FILES = 128
MAX_INCLUDE_DEPTH = 8
MAX_BLOCK_DEPTH = 64
MAX_STATUS_BYTES = 64 << 10
MAX_EXPLICIT = 64
MAX_LINK_ROWS = 4096
MAX_NET_TCP_BYTES = 64 << 20
CONF_REFRESH_SECONDS = 30.0
MAX_WORKERS = 8


class ConfError(Exception):
    """A configuration that cannot be read or parsed."""


# --- nginx configuration -------------------------------------------------------------------


def tokenize(text):
    """Tokens of nginx configuration text: words (quotes removed) and the specials `{ } ;`.

    Yields (kind, value) with kind "word" or "special". Raises ConfError on an unterminated
    quote."""
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif c in "{};":
            yield ("special", c)
            i += 1
        elif c in "\"'":
            out = []
            i += 1
            while i < n and text[i] != c:
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                    out.append({"n": "\n", "r": "\r", "t": "\t"}.get(text[i], text[i]))
                else:
                    out.append(text[i])
                i += 1
            if i >= n:
                raise ConfError("unterminated quote")
            i += 1
            yield ("word", "".join(out))
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] not in "{};":
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                i += 1
            yield ("word", text[start:i])


class Directive:
    """One directive: `name`, `args` (list of str), `block` (list of Directive or None)."""

    __slots__ = ("name", "args", "block")

    def __init__(self, name, args, block=None):
        self.name = name
        self.args = args
        self.block = block


class ConfReader:
    """Reads an nginx configuration as process `pid` sees it (inside /proc/PID/root, symlinks
    never leading out of it: gala_middleware.read_in_root), with bounded includes; `root`
    replaces /proc/PID/root (tests)."""

    def __init__(self, pid=None, root=None):
        self.root = root if root is not None else (mw.root_of(pid) if pid is not None else "/")
        self.files = 0
        self.total = 0

    def read(self, path):
        self.files += 1
        if self.files > MAX_CONF_FILES:
            raise ConfError("more than %d configuration files" % MAX_CONF_FILES)
        try:
            data = mw.read_in_root(self.root, path, MAX_CONF_FILE_BYTES)
        except OSError as e:
            raise ConfError("%s: %s" % (path, e.strerror or e)) from None
        self.total += len(data)
        if self.total > MAX_CONF_TOTAL_BYTES:
            raise ConfError("configuration larger than %d bytes" % MAX_CONF_TOTAL_BYTES)
        return data.decode("utf-8", "replace")

    def parse_file(self, path, conf_dir, depth=0):
        """Directives of file `path`, includes spliced in (relative ones from `conf_dir`)."""
        tokens = tokenize(self.read(path))
        return self._block(tokens, conf_dir, depth, 0, path, top=True)

    def _include(self, pattern, conf_dir, depth, path):
        if depth >= MAX_INCLUDE_DEPTH:
            raise ConfError("%s: includes nested deeper than %d" % (path, MAX_INCLUDE_DEPTH))
        if not pattern.startswith("/"):
            pattern = os.path.join(conf_dir, pattern)
        out = []
        if glob.has_magic(pattern):
            names = mw.glob_in_root(self.root, pattern, MAX_CONF_FILES)
        else:
            names = [pattern]
        for name in names:
            try:
                if stat.S_ISDIR(mw.stat_in_root(self.root, name).st_mode):
                    continue
            except OSError:
                pass  # read() names the error
            out.extend(self.parse_file(name, conf_dir, depth + 1))
        return out

    def _block(self, tokens, conf_dir, depth, level, path, top=False):
        if level > MAX_BLOCK_DEPTH:
            raise ConfError("%s: blocks nested deeper than %d" % (path, MAX_BLOCK_DEPTH))
        out = []
        words = []
        for kind, value in tokens:
            if kind == "word":
                words.append(value)
            elif value == ";":
                if words:
                    if words[0] == "include" and len(words) == 2:
                        out.extend(self._include(words[1], conf_dir, depth, path))
                    else:
                        out.append(Directive(words[0], words[1:]))
                words = []
            elif value == "{":
                if not words:
                    raise ConfError("%s: block without a name" % path)
                block = self._block(tokens, conf_dir, depth, level + 1, path)
                out.append(Directive(words[0], words[1:], block))
                words = []
            else:  # "}"
                if top:
                    raise ConfError("%s: unexpected }" % path)
                return out
        if not top:
            raise ConfError("%s: missing }" % path)
        return out


def main_conf_path(argv):
    """(config path, prefix) from a master's title `nginx: master process CMD ARGS...`."""
    title = " ".join(argv)
    marker = "master process"
    pos = title.find(marker)
    words = title[pos + len(marker):].split() if pos >= 0 else []
    conf = None
    prefix = None
    i = 1  # words[0] is the binary
    while i < len(words):
        w = words[i]
        i += 1
        for flag in ("-c", "-p"):
            if w.startswith(flag):
                value = w[2:]
                if not value and i < len(words):
                    value = words[i]
                    i += 1
                if flag == "-c":
                    conf = value
                else:
                    prefix = value
    if prefix is None:
        prefix = DEFAULT_PREFIX
    elif not prefix.endswith("/"):
        prefix += "/"
    if not conf:
        conf = DEFAULT_CONF
    elif not conf.startswith("/"):
        conf = prefix + conf
    return conf, prefix


def _printable(text):
    """No blank, control or non-ASCII character: safe in a request line or a Host header."""
    return bool(text) and all("!" <= c <= "~" for c in text)


def _plain_name(name):
    return _printable(name) and name != "_" and not any(c in name for c in "*~$/")


def parse_listen(args):
    """(address, instance) of a `listen` directive's arguments, or None when it cannot be read
    with plain HTTP (ssl, quic, http2, a host name)."""
    if not args or any(a in ("ssl", "quic", "http2") for a in args[1:]):
        return None
    spec = args[0]
    if spec.startswith("unix:"):
        path = spec[5:]
        return (path, "unix:" + path) if path.startswith("/") and len(path) < 108 else None
    host, port = None, "80"
    if spec.startswith("["):
        end = spec.find("]")
        if end < 0:
            return None
        host = spec[1:end]
        rest = spec[end + 1:]
        if rest.startswith(":"):
            port = rest[1:]
        elif rest:
            return None
    elif spec.isdigit():
        port = spec
    elif ":" in spec:
        host, port = spec.rsplit(":", 1)
    else:
        host = spec
    if not port.isdigit() or not 0 < int(port) < 65536:
        return None
    if host in (None, "*", "0.0.0.0", "localhost"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    else:
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        except OSError:
            return None
    return (host, int(port)), format_address(host, int(port))


def format_address(host, port):
    return ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)


def _location_path(args):
    path = None
    if len(args) == 2 and args[0] in ("=", "^~"):
        path = args[1]
    elif len(args) == 1:
        path = args[0]
    return path if path and path.startswith("/") and _printable(path) else None


def _find_status(block, path=None):
    """Path of the first location in `block` (nested ones too) that holds stub_status."""
    for d in block:
        if d.name == "stub_status" and path is not None:
            return path
        if d.name == "location" and d.block is not None:
            p = _location_path(d.args)
            if p is not None:
                found = _find_status(d.block, p)
                if found:
                    return found
    return None


class ConfInfo:
    """What the probe takes from one nginx configuration."""

    def __init__(self):
        self.targets = []  # [(address, instance, location, host header)] in config order
        self.http_ports = set()
        self.stream_ports = set()


def _listen_ports(server):
    ports = set()
    for d in server:
        if d.name == "listen" and d.args:
            parsed = parse_listen(d.args[:1])
            if parsed and not isinstance(parsed[0], str):
                ports.add(parsed[0][1])
    return ports


def analyse(directives):
    """ConfInfo of a parsed configuration."""
    info = ConfInfo()
    for top in directives:
        if top.block is None or top.name not in ("http", "stream"):
            continue
        for server in top.block:
            if server.name != "server" or server.block is None:
                continue
            ports = _listen_ports(server.block)
            if top.name == "stream":
                info.stream_ports |= ports
                continue
            listens = [d.args for d in server.block if d.name == "listen"]
            info.http_ports |= ports if listens else {80}
            location = _find_status(server.block)
            if location is None:
                continue
            names = [n for d in server.block if d.name == "server_name" for n in d.args]
            name = next((n for n in names if _plain_name(n)), None)
            for args in listens or [["80"]]:
                parsed = parse_listen(args)
                if parsed is None:
                    continue
                address, instance = parsed
                host = name or ("localhost" if isinstance(address, str) else instance)
                info.targets.append((address, instance, location, host))
    return info


# --- explicit instances --------------------------------------------------------------------

_SEGMENT = re.compile(r"^[A-Za-z0-9_.:-]+$")


def parse_status_urls(text):
    """[(address, instance, location)] from `HOST:PORT[@SEG...]` entries, comma separated.

    Invalid entries are skipped and returned in the second element."""
    out, bad = [], []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        hostport, _, path = entry.partition("@")
        host, sep, port = hostport.rpartition(":")
        segments = path.split("@") if path else []
        ok = sep and port.isdigit() and 0 < int(port) < 65536 and host
        ok = ok and all(s and _SEGMENT.match(s) and s not in (".", "..") for s in segments)
        if ok:
            try:
                socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
            except OSError:
                ok = host == "localhost"
        if not ok or len(out) >= MAX_EXPLICIT:
            bad.append(entry)
            continue
        if host == "localhost":
            host = "127.0.0.1"
        location = "/" + "/".join(segments) if segments else DEFAULT_LOCATION
        out.append(((host, int(port)), format_address(host, int(port)), location))
    return out, bad


# --- stub_status ---------------------------------------------------------------------------

_STATUS = re.compile(
    rb"^Active connections:\s*(\d+)\s*\n"
    rb"server accepts handled requests\s*\n"
    rb"\s*(\d+)\s+(\d+)\s+(\d+)\s*\n"
    rb"Reading:\s*(\d+)\s+Writing:\s*(\d+)\s+Waiting:\s*(\d+)\s*$"
)


class StatusError(Exception):
    """An answer that is not a stub_status page."""


def parse_status(body):
    """(active, accepted, handled, requests, reading, writing, waiting) of a stub_status page."""
    m = _STATUS.match(body.replace(b"\r\n", b"\n"))
    if not m:
        raise StatusError("not a stub_status page: %r" % body[:60])
    return tuple(int(g) for g in m.groups())


def fetch_status(address, location, host, timeout):
    """The parsed stub_status page at `address` (host, port) or unix path, asked for virtual
    host `host`; raises OSError, mw.HttpError or StatusError."""
    status, _headers, body = mw.http_request(
        address, location, timeout, headers={"User-Agent": "gala-gopher-nginx"}, host=host,
        limit=MAX_STATUS_BYTES)
    if status != 200:
        raise StatusError("HTTP status %d" % status)
    return parse_status(body)


# --- /proc: processes and sockets ----------------------------------------------------------


def socket_inodes(pids):
    inodes = set()
    for pid in pids:
        fd_dir = "/proc/%d/fd" % pid
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink("%s/%s" % (fd_dir, fd))
            except OSError:
                continue
            if target.startswith("socket:[") and target.endswith("]"):
                inodes.add(target[8:-1])
    return inodes


def tcp_sockets(text, inodes):
    """[(state, (local ip, port), (remote ip, port))] of a /proc/net/tcp{,6} text, only the
    sockets whose inode is in `inodes`, in states LISTEN (0A) and ESTABLISHED (01)."""
    out = []
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 10 or cols[3] not in ("01", "0A") or cols[9] not in inodes:
            continue
        try:
            laddr, lport = cols[1].rsplit(":", 1)
            raddr, rport = cols[2].rsplit(":", 1)
            out.append((cols[3], (mw.hex_ip(laddr), int(lport, 16)),
                        (mw.hex_ip(raddr), int(rport, 16))))
        except (ValueError, OSError):
            continue
    return out


def classify_links(sockets, info, report_cport):
    """{key tuple: count} of nginx_link rows from the sockets of one nginx (see module doc)."""
    listens = {local for state, local, _ in sockets if state == "0A"}
    listen_ports = {port for _, port in listens}
    if info is None:
        l7_any = UNKNOWN
    elif info.http_ports and not info.stream_ports:
        l7_any = "1"
    elif info.stream_ports and not info.http_ports:
        l7_any = "0"
    else:
        l7_any = UNKNOWN
    rows = {}
    for state, local, remote in sockets:
        if state != "01":
            continue
        ip, port = local
        is_client = port in listen_ports and (
            local in listens or ("0.0.0.0", port) in listens or ("::", port) in listens)
        if is_client:
            if info is not None and port in info.http_ports and port not in info.stream_ports:
                l7 = "1"
            elif info is not None and port in info.stream_ports and port not in info.http_ports:
                l7 = "0"
            else:
                l7 = UNKNOWN
            cport = str(remote[1]) if report_cport else "0"
            key = (remote[0], ip, UNKNOWN, cport, str(port), UNKNOWN, l7)
        else:
            key = (UNKNOWN, UNKNOWN, remote[0], "0", UNKNOWN, str(remote[1]), l7_any)
        rows[key] = rows.get(key, 0) + 1
    return rows


def read_net_tcp(pid):
    text = []
    for table in ("tcp", "tcp6"):
        try:
            with open("/proc/%d/net/%s" % (pid, table), "rb") as f:
                text.append(f.read(MAX_NET_TCP_BYTES).decode("ascii", "replace"))
        except OSError:
            continue
    return "\n".join(text)


# sock_diag (linux/inet_diag.h): the kernel filters by state, so the TIME_WAIT sockets a busy
# host has by the thousand cost nothing, unlike /proc/net/tcp, which lists and formats them all.
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_DUMP_REQUEST = 0x1 | 0x300
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_STATES = (1 << 1) | (1 << 10)  # TCP_ESTABLISHED, TCP_LISTEN
_DIAG_MSG = struct.Struct("=BBBB2s2s16s16sI8sIIIII")
_MAX_DIAG_BYTES = 64 << 20


def _diag_ip(family, raw):
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if raw[:12] == b"\0" * 10 + b"\xff\xff":
        return socket.inet_ntop(socket.AF_INET, raw[12:16])
    return socket.inet_ntop(socket.AF_INET6, raw)


def diag_tcp_sockets(inodes, timeout=2.0):
    """The same list as tcp_sockets(), from a sock_diag dump of this process's network
    namespace. Raises OSError when netlink is not available."""
    out = []
    total = 0
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_SOCK_DIAG) as s:
        s.settimeout(timeout)
        for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), 1):
            req = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, _STATES) + b"\0" * 48
            s.send(struct.pack("=IHHII", 16 + len(req), _SOCK_DIAG_BY_FAMILY,
                               _NLM_F_DUMP_REQUEST, seq, 0) + req)
            done = False
            while not done:
                data = s.recv(1 << 16)
                total += len(data)
                if not data or total > _MAX_DIAG_BYTES:
                    raise OSError("sock_diag: no answer or too large")
                pos = 0
                while pos + 16 <= len(data):
                    length, kind, _flags, rseq, _pid = struct.unpack_from("=IHHII", data, pos)
                    if length < 16 or pos + length > len(data):
                        raise OSError("sock_diag: bad message")
                    if rseq == seq and kind == _NLMSG_DONE:
                        done = True
                        break
                    if kind == _NLMSG_ERROR:
                        raise OSError("sock_diag: error answer")
                    if rseq == seq and kind == _SOCK_DIAG_BY_FAMILY and \
                            length >= 16 + _DIAG_MSG.size:
                        (fam, state, _t, _r, sport, dport, src, dst, _if, _c, _e, _rq, _wq,
                         _uid, inode) = _DIAG_MSG.unpack_from(data, pos + 16)
                        if str(inode) in inodes and state in (1, 10):
                            out.append(("01" if state == 1 else "0A",
                                        (_diag_ip(fam, src), int.from_bytes(sport, "big")),
                                        (_diag_ip(fam, dst), int.from_bytes(dport, "big"))))
                    pos += (length + 3) & ~3
    return out


# --- the probe -----------------------------------------------------------------------------


class Master:
    """A discovered nginx master: its workers and what its configuration says."""

    def __init__(self, pid):
        self.pid = pid
        self.start = mw.start_time(pid)
        self.workers = []
        self.info = None
        self.error = None
        self.read_at = None


class Probe:
    """The probe's state across periods: masters seen, instance health, warnings given."""

    def __init__(self):
        self.masters = {}
        self.warned = set()
        self.instances = mw.Instances("nginx_instance", gala_probe.log_warn,
                                      gala_probe.log_info, gala_probe.record)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=MAX_WORKERS)
        self.self_ns = mw.netns("self")
        self.bad_urls = None
        self.use_diag = True

    def warn_once(self, key, msg, log=None):
        if key not in self.warned and len(self.warned) < 4096:
            self.warned.add(key)
            (log or gala_probe.log_warn)(msg)

    def discover(self):
        """{pid: Master} of the nginx masters running now, configs read when due."""
        found = {}
        now = time.monotonic()
        running = mw.processes(["nginx"])
        for p in running:
            if not p.argv or not p.argv[0].startswith("nginx: master process"):
                continue
            m = self.masters.get(p.pid)
            if m is None or m.start != mw.start_time(p.pid):
                m = Master(p.pid)
            if m.read_at is None or now - m.read_at >= CONF_REFRESH_SECONDS:
                m.read_at = now
                conf, _prefix = main_conf_path(p.argv)
                try:
                    reader = ConfReader(p.pid)
                    m.info = analyse(reader.parse_file(conf, os.path.dirname(conf)))
                    m.error = None
                    if not m.info.targets:
                        self.warn_once(("nostatus", p.pid),
                                       "nginx %d: no stub_status location in %s" % (p.pid, conf),
                                       gala_probe.log_info)
                except (ConfError, RecursionError) as e:
                    m.info, m.error = None, str(e)
                    self.warn_once(("conf", p.pid), "nginx %d: cannot read its configuration: %s"
                                   % (p.pid, e))
            found[p.pid] = m
        for m in found.values():
            m.workers = []
        for p in running:
            parent = found.get(mw.ppid(p.pid)) if p.pid not in found else None
            if parent is not None:
                parent.workers.append(p.pid)
        self.masters = found
        return found

    def links(self, masters, report_cport):
        rows = {}
        for m in masters.values():
            inodes = socket_inodes([m.pid] + m.workers)
            if not inodes:
                continue
            sockets = None
            if self.use_diag and self.self_ns is not None and mw.netns(m.pid) == self.self_ns:
                try:
                    sockets = diag_tcp_sockets(inodes)
                except OSError as e:
                    self.use_diag = False
                    gala_probe.log_warn("sock_diag unavailable (%s): reading /proc/net/tcp" % e)
            if sockets is None:
                sockets = tcp_sockets(read_net_tcp(m.pid), inodes)
            for key, n in classify_links(sockets, m.info, report_cport).items():
                rows[key] = rows.get(key, 0) + n
        if len(rows) > MAX_LINK_ROWS:
            self.warn_once("links", "more than %d nginx_link rows: the rest is left out"
                           % MAX_LINK_ROWS)
        for key in sorted(rows)[:MAX_LINK_ROWS]:
            gala_probe.record("nginx_link", *key, rows[key])

    def targets(self, masters, status_urls, discover):
        """{instance: (address, location, host)}: explicit ones, then discovered ones."""
        explicit, bad = parse_status_urls(status_urls)
        if bad != self.bad_urls:
            self.bad_urls = bad
            if bad:
                gala_probe.log_warn("status_urls: entries skipped (not HOST:PORT[@SEG...]): %s"
                                    % ", ".join(bad[:8]))
        out = {}
        for address, instance, location in explicit:
            out.setdefault(instance, (address, location, instance))
        if discover:
            for m in masters.values():
                if m.info is None or not m.info.targets:
                    continue
                address, instance, location, host = m.info.targets[0]
                if isinstance(address, str):
                    # A unix socket is reached through the master's root: containers too.
                    address = mw.in_root(m.pid, address)
                elif self.self_ns is not None and mw.netns(m.pid) != self.self_ns:
                    self.warn_once(("netns", m.pid), "nginx %d runs in another network namespace:"
                                   " its stub_status at %s is not reachable from here"
                                   % (m.pid, instance))
                    continue
                out.setdefault(instance, (address, location, host))
        return out

    def scrape(self, targets, timeout):
        # One deadline for the period: instances waiting for a free thread get what is left.
        deadline = time.monotonic() + timeout

        def one(item):
            instance, (address, location, host) = item
            start = time.monotonic()
            try:
                left = deadline - start
                if left <= 0.01:
                    raise socket.timeout("no time left in this period")
                return instance, fetch_status(address, location, host, left), None, \
                    time.monotonic() - start
            except (OSError, mw.HttpError, StatusError, ValueError) as e:
                return instance, None, e, time.monotonic() - start

        self.instances.begin()
        results = list(self.pool.map(one, sorted(targets.items())))
        for instance, values, error, seconds in results:
            if values is None:
                self.instances.failed(instance, error or "failed", seconds)
            else:
                self.instances.ok(instance, seconds)
                gala_probe.record("nginx_status", instance, *values)
        self.instances.report()


def main():
    args = gala_probe.parse_args()
    flag_urls = ""
    for flag, value in args["extra"]:
        if flag == "u" and value is not None:
            flag_urls = value
    control = gala_probe.Control()
    probe = Probe()
    gala_probe.log_info("nginx probe started, period %ss" % args["period"])
    while control.sleep(args["period"]):
        # As upstream's -P: no bits (0) means every sub-probe.
        bits = control.probe_bits or args["probe_bits"] or STATUS_BIT | LINK_BIT
        report_cport = control.param("report_cport", 1 if args["report_cport"] else 0) == 1
        status_urls = control.param("status_urls", flag_urls)
        if not isinstance(status_urls, str):
            status_urls = flag_urls
        discover = control.param("discover", 1) != 0
        period = control.period(args["period"])
        try:
            masters = probe.discover() if discover else {}
            # Sockets first: the probe's own stub_status connections are not yet open.
            if bits & LINK_BIT:
                probe.links(masters, report_cport)
            if bits & STATUS_BIT:
                targets = probe.targets(masters, status_urls, discover)
                probe.scrape(targets, mw.request_timeout(period))
        except Exception as e:  # noqa: BLE001 - a bug or odd input must not stop the probe
            probe.warn_once(("bug", type(e).__name__, str(e)[:200]),
                            "period failed: %s: %s" % (type(e).__name__, e))
    probe.pool.shutdown(wait=False)
    gala_probe.log_info("nginx probe stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
