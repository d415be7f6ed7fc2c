#!/usr/bin/python3
"""dnsmasq probe: cache and upstream-server statistics of every dnsmasq on the host.

Each period it asks every instance dnsmasq's CHAOS-class TXT statistics names (the queries
`dig @host -p port chaos txt hits.bind` makes) and reports

    |dnsmasq_cache|<instance>|<version>|<cachesize>|<insertions>|<evictions>|<misses>|<hits>|<auth>|
    |dnsmasq_server|<instance>|<server>|<queries>|<failed>|
    |dnsmasq_instance|<instance>|<up>|<scrape_errors>|<scrape_seconds>|

Instances: running processes named `dnsmasq` and the TCP port they listen on (dnsmasq answers
DNS on the same port over UDP and TCP), plus the `host:port` list of param `instances` (`-a`).
The DNS packets are built and checked here with `struct`; all queries of a period go out at once
over UDP and are awaited together, so a silent instance costs one timeout, not one per query.

docs/probes/dnsmasq.md describes the tables, params and limits.
"""

import os
import random
import selectors
import socket
import struct
import sys
import time

sys.path.insert(0, os.environ.get("GALA_GOPHER_SDK_DIR", "/opt/gala-gopher/sdk"))
import gala_middleware as mw  # noqa: E402
import gala_probe  # noqa: E402

DNS_PORT = 53
TYPE_TXT = 16
CLASS_CH = 3
FLAG_QR = 0x8000
FLAG_TC = 0x0200
MAX_UDP_ANSWER = 65535
MAX_SERVERS = 1024
MAX_INSTANCES = 256
MAX_NAME_JUMPS = 32
MAX_INT_DIGITS = 20

# hits.bind first: dnsmasq counts every CHAOS query it answers as a cache hit, and answers in
# arrival order, so the hits reported never include this scrape's own queries.
STAT_NAMES = (
    "hits.bind",
    "cachesize.bind",
    "insertions.bind",
    "evictions.bind",
    "misses.bind",
    "auth.bind",
    "servers.bind",
    "version.bind",
)
REQUIRED = ("hits.bind", "cachesize.bind", "insertions.bind", "evictions.bind", "misses.bind")



class DnsError(ValueError):
    """An answer that is not a valid answer to the query sent."""


class RcodeError(DnsError):
    """A well-formed answer with a non-zero RCODE (the name is not answered)."""

    def __init__(self, rcode):
        DnsError.__init__(self, "answered with rcode %d" % rcode)
        self.rcode = rcode


class Truncated(DnsError):
    """A UDP answer with the TC bit: ask again over TCP."""


# --- DNS messages ------------------------------------------------------------------------------


def encode_name(name):
    """Wire form of a dotted name (no compression)."""
    out = bytearray()
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError("bad label in %r" % name)
        out.append(len(raw))
        out += raw
    out.append(0)
    if len(out) > 255:
        raise ValueError("name too long: %r" % name)
    return bytes(out)


def build_query(qid, name):
    """A CHAOS TXT query for `name` with id `qid` (no recursion wanted)."""
    header = struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 0)
    return header + encode_name(name) + struct.pack(">HH", TYPE_TXT, CLASS_CH)


def read_name(msg, pos):
    """(lower-case dotted name, position after it) at `pos`, following compression pointers."""
    labels = []
    end = None
    jumps = 0
    total = 0
    while True:
        if pos >= len(msg):
            raise DnsError("name runs past the end of the message")
        length = msg[pos]
        if length & 0xC0 == 0xC0:
            if pos + 1 >= len(msg):
                raise DnsError("truncated compression pointer")
            jumps += 1
            if jumps > MAX_NAME_JUMPS:
                raise DnsError("compression pointer loop")
            if end is None:
                end = pos + 2
            pos = ((length & 0x3F) << 8) | msg[pos + 1]
            continue
        if length & 0xC0:
            raise DnsError("bad label type")
        pos += 1
        if length == 0:
            break
        if pos + length > len(msg):
            raise DnsError("label runs past the end of the message")
        total += length + 1
        if total > 255:
            raise DnsError("name longer than 255 bytes")
        labels.append(msg[pos : pos + length].decode("ascii", "replace").lower())
        pos += length
    return ".".join(labels), (pos if end is None else end)


def parse_answer(msg, qid, name):
    """The TXT character-strings answering query `qid` for `name`, in order.

    Raises Truncated (TC set), RcodeError (non-zero RCODE) or DnsError (anything malformed or not
    an answer to this query)."""
    if len(msg) < 12:
        raise DnsError("answer shorter than a DNS header (%d bytes)" % len(msg))
    rid, flags, qd, an, _ns, _ar = struct.unpack(">HHHHHH", msg[:12])
    if rid != qid:
        raise DnsError("answer id %d does not match query id %d" % (rid, qid))
    if not flags & FLAG_QR:
        raise DnsError("not a response (QR bit clear)")
    if (flags >> 11) & 0xF:
        raise DnsError("unexpected opcode %d" % ((flags >> 11) & 0xF))
    if flags & FLAG_TC:
        raise Truncated("truncated answer")
    if flags & 0xF:
        raise RcodeError(flags & 0xF)
    if qd != 1:
        raise DnsError("answer has %d questions, expected 1" % qd)
    qname, pos = read_name(msg, 12)
    if pos + 4 > len(msg):
        raise DnsError("truncated question")
    qtype, qclass = struct.unpack(">HH", msg[pos : pos + 4])
    pos += 4
    if qname != name.rstrip(".").lower() or qtype != TYPE_TXT or qclass != CLASS_CH:
        raise DnsError("answer is for another question (%s)" % qname)
    strings = []
    for _ in range(an):
        owner, pos = read_name(msg, pos)
        if pos + 10 > len(msg):
            raise DnsError("truncated resource record")
        rtype, rclass, _ttl, rdlen = struct.unpack(">HHIH", msg[pos : pos + 10])
        pos += 10
        if pos + rdlen > len(msg):
            raise DnsError("record data runs past the end of the message")
        rdata = msg[pos : pos + rdlen]
        pos += rdlen
        if rtype != TYPE_TXT or owner != qname:
            continue
        i = 0
        while i < len(rdata):
            n = rdata[i]
            if i + 1 + n > len(rdata):
                raise DnsError("TXT string runs past its record")
            strings.append(rdata[i + 1 : i + 1 + n].decode("utf-8", "replace"))
            i += 1 + n
    if pos > len(msg):
        raise DnsError("truncated answer")
    return strings


def parse_count(strings, name):
    """The number in a one-string statistics answer (hits.bind and the like)."""
    if not strings:
        raise DnsError("%s: empty answer" % name)
    text = strings[0].strip()
    if not text.isdigit() or len(text) > MAX_INT_DIGITS:
        raise DnsError("%s: not a count: %r" % (name, text[:40]))
    return int(text)


def parse_servers(strings):
    """[(server, queries, failed)] from servers.bind: one string `ADDR#PORT QUERIES FAILED` per
    upstream server (later versions may append fields, which are ignored)."""
    out = {}
    for s in strings[:MAX_SERVERS]:
        parts = s.split()
        if len(parts) < 3 or not parts[1].isdigit() or not parts[2].isdigit():
            raise DnsError("servers.bind: unexpected entry %r" % s[:80])
        if len(parts[1]) > MAX_INT_DIGITS or len(parts[2]) > MAX_INT_DIGITS:
            raise DnsError("servers.bind: count too long")
        q, f = int(parts[1]), int(parts[2])
        # The same server may be listed twice (e.g. for two domains): add its counts up.
        prev = out.get(parts[0], (0, 0))
        out[parts[0]] = (prev[0] + q, prev[1] + f)
    return [(k, v[0], v[1]) for k, v in sorted(out.items())]


# --- Instances ---------------------------------------------------------------------------------


def format_instance(host, port):
    """The instance name of an address: `host:port`, `[v6]:port`."""
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def parse_instances(text):
    """[(key, host, port, None)] from a comma-separated list of `host:port` (IPv6: `[addr]:port` or
    `addr:port`, the last colon separates the port); entries without a port get 53.
    Raises ValueError naming the bad entry."""
    out = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        host, port = entry, DNS_PORT
        if entry.startswith("["):
            close = entry.find("]")
            if close < 0:
                raise ValueError("bad instance %r" % entry)
            host, rest = entry[1:close], entry[close + 1 :]
            if rest:
                if not rest.startswith(":") or not rest[1:].isdigit():
                    raise ValueError("bad instance %r" % entry)
                port = int(rest[1:])
        elif ":" in entry:
            host, _, p = entry.rpartition(":")
            if not p.isdigit():
                raise ValueError("bad instance %r" % entry)
            port = int(p)
        if not host or not 0 < port < 65536:
            raise ValueError("bad instance %r" % entry)
        out.append((format_instance(host, port), host, port, None))
    return out[:MAX_INSTANCES]


_LOOPBACK_PREF = {"127.0.0.1": 0, "0.0.0.0": 1, "::1": 2, "::": 3}


def pick_address(listeners):
    """{port: host to query} for one dnsmasq's TCP listeners: loopback first, a wildcard address
    is reached over loopback, else the first address."""
    by_port = {}
    for ip, port in listeners:
        by_port.setdefault(port, []).append(ip)
    out = {}
    for port, ips in sorted(by_port.items()):
        best = sorted(ips, key=lambda ip: (_LOOPBACK_PREF.get(ip, 9), ip))[0]
        out[port] = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(best, best)
    return out


class Discovery:
    """Running dnsmasq processes and the address each one answers DNS on (a process in another
    network namespace, a container, is asked from inside that namespace: `ADDR:PORT@pidPID`).

    A dnsmasq binds its port at start, so the sockets of a process (reading them means reading
    the whole /proc/PID/net/tcp table) are looked up again only after LISTEN_RECHECK seconds, or
    every NO_LISTEN_RECHECK seconds while none is found (a dnsmasq still starting)."""

    LISTEN_RECHECK = 60.0
    NO_LISTEN_RECHECK = 5.0

    def __init__(self):
        self._own_ns = mw.netns("self")
        self._told = set()
        self._listeners = {}  # pid -> (start time, {port: host}, checked at)

    def _addresses(self, pid):
        start = mw.start_time(pid)
        now = time.monotonic()
        cached = self._listeners.get(pid)
        if cached is not None and cached[0] == start:
            age = now - cached[2]
            if age < (self.LISTEN_RECHECK if cached[1] else self.NO_LISTEN_RECHECK):
                return cached[1]
        found = pick_address(mw.listening_tcp(pid))
        self._listeners[pid] = (start, found, now)
        # Told once, when a second look still finds nothing: not for a dnsmasq still starting.
        if not found and cached is not None and cached[0] == start and pid not in self._told:
            self._told.add(pid)
            gala_probe.log_info("dnsmasq pid %d listens on no TCP port (DNS off, --port=0?)" % pid)
        return found

    def instances(self):
        """[(key, host, port, pid or None)] of the instances running now."""
        out = []
        procs = mw.processes(["dnsmasq"])
        live = {p.pid for p in procs}
        self._told &= live
        for pid in [pid for pid in self._listeners if pid not in live]:
            del self._listeners[pid]
        for p in procs:
            ns = mw.netns(p.pid)
            if ns is None:
                continue  # gone, or not ours to read
            other_ns = self._own_ns is not None and ns != self._own_ns
            found = self._addresses(p.pid)
            for port, host in found.items():
                if other_ns:
                    out.append(("%s@pid%d" % (format_instance(host, port), p.pid), host, port, p.pid))
                else:
                    out.append((format_instance(host, port), host, port, None))
        return out


# --- Scraping ----------------------------------------------------------------------------------


def _resolve(host, port):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    infos = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM)
    if not infos:
        raise OSError("cannot resolve %s" % host)
    return infos[0][0], infos[0][4]


class Scrape:
    """One instance's queries in flight: a connected UDP socket and the pending ids."""

    def __init__(self, key, host, port, pid=None):
        self.key = key
        self.host = host
        self.port = port
        self.pid = pid
        self.sock = None
        self.pending = {}  # qid -> name
        self.answers = {}  # name -> list of strings, or an exception
        self.error = None
        self.started = time.monotonic()
        self.seconds = 0.0

    def start(self):
        """Sends all the statistics queries (a failure to send fails the scrape)."""
        try:
            family, addr = _resolve(self.host, self.port)
            with mw.in_netns(self.pid):
                self.sock = socket.socket(family, socket.SOCK_DGRAM)
            self.sock.setblocking(False)
            self.sock.connect(addr)
            ids = random.sample(range(1, 65536), len(STAT_NAMES))
            for qid, name in zip(ids, STAT_NAMES):
                self.sock.send(build_query(qid, name))
                self.pending[qid] = name
        except OSError as e:
            self.fail("cannot query: %s" % e)

    def fail(self, error):
        """Ends the scrape with `error` (the first one is kept)."""
        if self.error is None:
            self.error = error
        self.close()

    def close(self):
        """Closes the socket and notes how long the scrape took."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.seconds = time.monotonic() - self.started

    def readable(self):
        """Reads every datagram waiting; a datagram that answers nothing pending is garbage."""
        while self.sock is not None:
            try:
                data = self.sock.recv(MAX_UDP_ANSWER)
            except BlockingIOError:
                return
            except OSError as e:
                self.fail("no answer: %s" % e)
                return
            qid = struct.unpack(">H", data[:2])[0] if len(data) >= 2 else None
            name = self.pending.pop(qid, None)
            if name is None:
                self.fail("malformed answer (%d bytes, unknown id)" % len(data))
                return
            try:
                self.answers[name] = parse_answer(data, qid, name)
            except DnsError as e:
                if not isinstance(e, (Truncated, RcodeError)):
                    self.fail("malformed answer to %s: %s" % (name, e))
                    return
                self.answers[name] = e
            if not self.pending:
                self.close()


def _tcp_query(host, port, name, timeout):
    """The TXT strings answering `name`, asked over TCP (2-byte length prefix)."""
    qid = random.randrange(1, 65536)
    q = build_query(qid, name)

    def done(a):
        return len(a) >= 2 and len(a) >= 2 + struct.unpack(">H", a[:2])[0]

    data = mw.exchange((host, port), struct.pack(">H", len(q)) + q, timeout, done=done, limit=65537)
    if not done(data):
        raise DnsError("TCP answer truncated")
    n = struct.unpack(">H", data[:2])[0]
    return parse_answer(data[2 : 2 + n], qid, name)


def scrape_all(targets, timeout):
    """Queries every (key, host, port, pid) at once; returns the finished Scrape objects."""
    scrapes = [Scrape(*t) for t in targets]
    for s in scrapes:
        s.start()
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        for s in scrapes:
            if s.sock is not None:
                sel.register(s.sock, selectors.EVENT_READ, s)
        while any(s.sock is not None for s in scrapes):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _ in sel.select(left):
                s = key.data
                if s.sock is not None:
                    sock = s.sock
                    s.readable()
                    if s.sock is None:
                        sel.unregister(sock)
    for s in scrapes:
        if s.sock is not None:
            s.fail(
                "no answer within %.1f s (%d of %d queries unanswered)"
                % (timeout, len(s.pending), len(STAT_NAMES))
            )
    # Rare: servers.bind too large for UDP. Ask again over TCP within what is left.
    for s in scrapes:
        if s.error is not None:
            continue
        for name, ans in list(s.answers.items()):
            if isinstance(ans, Truncated):
                left = max(0.05, deadline - time.monotonic())
                try:
                    with mw.in_netns(s.pid):
                        s.answers[name] = _tcp_query(s.host, s.port, name, left)
                except (OSError, mw.HttpError, DnsError) as e:
                    s.answers[name] = e
        s.seconds = time.monotonic() - s.started
    return scrapes


def report(scrape, health):
    """Records of one finished scrape; health bookkeeping."""
    if scrape.error is not None:
        health.failed(scrape.key, scrape.error, scrape.seconds)
        return
    try:
        values = {}
        for name in REQUIRED:
            ans = scrape.answers.get(name)
            if isinstance(ans, Exception) or ans is None:
                raise DnsError(
                    "%s not answered (%s): dnsmasq started with --no-ident?" % (name, ans or "no answer")
                )
            values[name] = parse_count(ans, name)
        auth = scrape.answers.get("auth.bind")
        auth = parse_count(auth, "auth.bind") if isinstance(auth, list) and auth else None
        version = scrape.answers.get("version.bind")
        version = version[0][:128] if isinstance(version, list) and version else None
        servers = scrape.answers.get("servers.bind")
        servers = parse_servers(servers) if isinstance(servers, list) else []
    except DnsError as e:
        health.failed(scrape.key, str(e), scrape.seconds)
        return
    health.ok(scrape.key, scrape.seconds)
    gala_probe.record(
        "dnsmasq_cache",
        scrape.key,
        version,
        values["cachesize.bind"],
        values["insertions.bind"],
        values["evictions.bind"],
        values["misses.bind"],
        values["hits.bind"],
        auth,
    )
    for server, queries, failed in servers:
        gala_probe.record("dnsmasq_server", scrape.key, server, queries, failed)


def main():
    args = gala_probe.parse_args()
    control = gala_probe.Control()
    discovery = Discovery()
    health = mw.Instances("dnsmasq_instance", gala_probe.log_warn, gala_probe.log_info, gala_probe.record)
    bad_instances = None
    gala_probe.log_info("dnsmasq probe started, period %ss" % args["period"])
    while control.sleep(args["period"]):
        period = control.period(args["period"])
        params = mw.instance_params(args, control)
        try:
            explicit = parse_instances(str(params["instances"]))
            bad_instances = None
        except ValueError as e:
            if bad_instances != str(e):
                bad_instances = str(e)
                gala_probe.log_warn("param instances: %s; the list is ignored" % e)
            explicit = []
        targets = {}
        for target in explicit + (discovery.instances() if params["discover"] else []):
            targets.setdefault(target[0], target)
        health.begin()
        for scrape in scrape_all(list(targets.values())[:MAX_INSTANCES], mw.request_timeout(period)):
            try:
                report(scrape, health)
            except Exception as e:  # noqa: BLE001 - odd input must never stop the probe
                health.failed(scrape.key, "unexpected answer: %s: %s" % (type(e).__name__, e), scrape.seconds)
        health.report()
    gala_probe.log_info("dnsmasq probe stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
