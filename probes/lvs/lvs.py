#!/usr/bin/python3
"""lvs: Linux IPVS (LVS) virtual services, real servers and connections.

Reads the host's IPVS table each period:

* the IPVS generic-netlink family ("IPVS", include/uapi/linux/ip_vs.h): IPVS_CMD_GET_SERVICE and
  IPVS_CMD_GET_DEST dumps give, per virtual service and per real server, the kernel's counters
  (IPVS_*_ATTR_STATS64, else IPVS_*_ATTR_STATS) and rate estimates, plus weights and connection
  counts;
* /proc/net/ip_vs (services, real servers, weights, ActiveConn, InActConn) when netlink cannot be
  used (no CAP_NET_ADMIN, or a `proc_net_dir` is given);
* /proc/net/ip_vs_stats (totals of the whole table) and /proc/net/ip_vs_conn (one line per
  connection: the `ipvs_link` table counts them per client, virtual and real server).

Tables (lvs.meta): ipvs_service, ipvs_server, ipvs_link (upstream's), lvs_total and lvs_instance
(the health of the one instance, "ipvs": the IPVS table of the probe's network namespace).

When the kernel has no IPVS (neither /proc/net/ip_vs nor the "IPVS" family) the probe prints
`[ERROR] unsupported: IPVS` and exits with status 3: the daemon then shows it as unsupported and
tries again only every 60 s.

The readers below take text or bytes and return plain dicts, so tests call them with fixture data
(see probes/lvs/tests/test_lvs.py).
"""

import errno
import os
import socket
import stat
import struct
import sys
import time

sys.path.insert(0, os.environ.get("GALA_GOPHER_SDK_DIR", "/opt/gala-gopher/sdk"))
import gala_probe  # noqa: E402
import gala_middleware as mw  # noqa: E402

EXIT_UNSUPPORTED = 3
INSTANCE = "ipvs"
PROCESS_NAME = "ipvs"  # upstream trace_lvs prints this constant as process_name

MAX_PROC_BYTES = 16 << 20  # /proc/net/ip_vs and ip_vs_stats: far more than any real table
MAX_CONN_BYTES = 64 << 20  # /proc/net/ip_vs_conn: about 600 000 connections (~110 bytes each)
MAX_SERVICES = 10000
MAX_SERVERS = 100000
DEFAULT_MAX_LINKS = 10000

# --- Names the kernel prints ------------------------------------------------------------------

# ip_vs_proto_name() in net/netfilter/ipvs/ip_vs_core.c (what /proc/net/ip_vs* prints).
_PROTO_NAMES = {0: "IP", 1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP"}
# ip_vs_fwd_name() in net/netfilter/ipvs/ip_vs_ctl.c, by IP_VS_CONN_F_FWD_MASK value.
_FWD_NAMES = {0: "Masq", 1: "Local", 2: "Tunnel", 3: "Route", 4: "Bypass"}


def proto_name(number):
    """The kernel's name of IP protocol `number` (ip_vs_proto_name)."""
    return _PROTO_NAMES.get(number, "IP_%d" % number)


# --- Address helpers --------------------------------------------------------------------------


class ParseError(ValueError):
    """A line or message that is not in the kernel's format."""


def _hex_ipv4(text):
    """`%08X` of ntohl(addr): big-endian hex, e.g. 0A000001 -> 10.0.0.1."""
    if len(text) != 8:
        raise ParseError("bad IPv4 address %r" % text[:40])
    try:
        return socket.inet_ntop(socket.AF_INET, bytes.fromhex(text))
    except ValueError:
        raise ParseError("bad IPv4 address %r" % text[:40]) from None


def _pi6(text):
    """`%pI6`: eight groups of four hex digits, e.g. 2001:0db8:0000:...:0001."""
    raw = text.replace(":", "")
    if len(raw) != 32 or text.count(":") != 7:
        raise ParseError("bad IPv6 address %r" % text[:60])
    try:
        return socket.inet_ntop(socket.AF_INET6, bytes.fromhex(raw))
    except ValueError:
        raise ParseError("bad IPv6 address %r" % text[:60]) from None


def _addr_token(text):
    """An address as /proc/net/ip_vs_conn prints it: %08X (IPv4) or %pI6 (IPv6)."""
    return _pi6(text) if ":" in text else _hex_ipv4(text)


def _hex_port(text):
    try:
        port = int(text, 16)
    except ValueError:
        raise ParseError("bad port %r" % text[:20]) from None
    if not 0 <= port <= 0xFFFF or len(text) > 4:
        raise ParseError("bad port %r" % text[:20])
    return port


def _addr_port(text):
    """`%08X:%04X` or `[%pI6]:%04X` (ip_vs_info_seq_show) -> (ip, port)."""
    if text.startswith("["):
        end = text.find("]:")
        if end < 0:
            raise ParseError("bad address %r" % text[:60])
        return _pi6(text[1:end]), _hex_port(text[end + 2 :])
    addr, sep, port = text.partition(":")
    if not sep:
        raise ParseError("bad address %r" % text[:60])
    return _hex_ipv4(addr), _hex_port(port)


def _int(text):
    try:
        return int(text)
    except ValueError:
        raise ParseError("bad number %r" % text[:20]) from None


# --- /proc/net/ip_vs --------------------------------------------------------------------------


def service_key(protocol, virtual_ip, virtual_port):
    """The identity of a virtual service: (protocol, virtual_ip, virtual_port) as reported.

    A firewall-mark service has protocol "FWM", virtual_ip "fwmark:<mark>" and port 0.
    """
    return (protocol, virtual_ip, virtual_port)


def _fwmark_service(mark):
    return service_key("FWM", "fwmark:%d" % mark, 0)


def parse_ip_vs(text):
    """Services and real servers of /proc/net/ip_vs.

    Format: ip_vs_info_seq_show() in net/netfilter/ipvs/ip_vs_ctl.c:
      "%s  %08X:%04X %s %s " proto, addr, port, scheduler, "ops " or ""   (IPv4 service)
      "%s  [%pI6]:%04X %s "  proto, addr, port, scheduler                 (IPv6 service)
      "FWM  %08X %s %s"      fwmark, scheduler, "ops " or ""
      then "persistent %d %08X" (timeout, netmask) or nothing, and a newline; per real server
      "  -> %08X:%04X      %-7s %-6d %-10d %-10d" (or "  -> [%pI6]:%04X      ...")
      addr, port, forward method, weight, ActiveConn, InActConn.

    Returns a list of services, each a dict: key, scheduler, persistent (bool), servers (list
    of dicts: ip, port, forward, weight, active_conns, inact_conns). Lines that do not parse
    raise ParseError (the whole text is refused: a half-read table would report wrong sums).
    """
    services = []
    current = None
    lines = text.splitlines()
    if not lines or not lines[0].startswith("IP Virtual Server version"):
        raise ParseError("not /proc/net/ip_vs: %r" % (lines[0][:60] if lines else ""))
    for line in lines[3:]:
        if not line.strip():
            continue
        cols = line.split()
        if cols[0] == "->":
            if current is None or len(cols) < 6:
                raise ParseError("bad real server line %r" % line[:120])
            ip, port = _addr_port(cols[1])
            if len(current["servers"]) >= MAX_SERVERS:
                continue
            current["servers"].append(
                {
                    "ip": ip,
                    "port": port,
                    "forward": cols[2],
                    "weight": _int(cols[3]),
                    "active_conns": _int(cols[4]),
                    "inact_conns": _int(cols[5]),
                }
            )
            continue
        if len(cols) < 3:
            raise ParseError("bad service line %r" % line[:120])
        if cols[0] == "FWM":
            try:
                mark = int(cols[1], 16)
            except ValueError:
                raise ParseError("bad fwmark %r" % cols[1][:20]) from None
            key = _fwmark_service(mark)
        else:
            ip, port = _addr_port(cols[1])
            key = service_key(cols[0], ip, port)
        current = {
            "key": key,
            "scheduler": cols[2],
            "persistent": "persistent" in cols[3:],
            "servers": [],
        }
        if len(services) < MAX_SERVICES:
            services.append(current)
    return services


# --- /proc/net/ip_vs_stats --------------------------------------------------------------------

STAT_NAMES = ("conns", "inpkts", "outpkts", "inbytes", "outbytes")
RATE_NAMES = ("cps", "inpps", "outpps", "inbps", "outbps")


def parse_ip_vs_stats(text):
    """Totals of /proc/net/ip_vs_stats: dict of STAT_NAMES and RATE_NAMES.

    Format: ip_vs_stats_show() in net/netfilter/ipvs/ip_vs_ctl.c: two header lines, then
    "%8LX %8LX %8LX %16LX %16LX" (conns, inpkts, outpkts, inbytes, outbytes), a blank line, one
    header line, then the same format with the rates (cps, inpps, outpps, inbps, outbps). All
    numbers are hexadecimal.
    """
    rows = []
    for line in text.splitlines():
        cols = line.split()
        if len(cols) != 5:
            continue
        try:
            rows.append([int(c, 16) for c in cols])
        except ValueError:
            continue  # a header line
    if len(rows) != 2:
        raise ParseError("not /proc/net/ip_vs_stats (%d number rows)" % len(rows))
    out = dict(zip(STAT_NAMES, rows[0]))
    out.update(zip(RATE_NAMES, rows[1]))
    return out


# --- /proc/net/ip_vs_conn ---------------------------------------------------------------------


def parse_ip_vs_conn(text, max_links=DEFAULT_MAX_LINKS):
    """Connections of /proc/net/ip_vs_conn counted per ipvs_link key.

    Format: ip_vs_conn_seq_show() in net/netfilter/ipvs/ip_vs_conn.c: a header line, then per
    connection "%-3s %08X %04X %08X %04X %s %04X %-11s %7u%s" (IPv4) or
    "%-3s %pI6 %04X %pI6 %04X %s %04X %-11s %7u%s" (IPv6): protocol, client address and port,
    virtual address and port, real server address ("%08X" or "%pI6", by its own family) and port,
    state, expiry in seconds, and " <pe name> <pe data>" for a persistence engine.

    Persistence templates (client port 0 and template state NONE or ASSURED) are not
    connections and are skipped. Returns (links, skipped): links maps (client_ip, virtual_ip,
    local_ip, server_ip, server_port, virtual_port, protocol) to a count, at most `max_links`
    keys; `skipped` counts connections left out because that limit was reached. Malformed lines
    are skipped too (counted in skipped).

    local_ip: IPVS as in the mainline kernel never changes the client address, so the
    director's side of a connection is the virtual address (upstream trace_lvs reports the
    virtual address there too, except for the out-of-tree FULLNAT mode).
    """
    # Count the raw tokens first and decode each distinct key once: a table has far fewer keys
    # than connections (client ports are not part of the key).
    raw = {}
    skipped = 0
    for i, line in enumerate(text.splitlines()):
        cols = line.split()
        if i == 0 and cols[:1] == ["Pro"]:
            continue
        if len(cols) < 9:
            if cols:
                skipped += 1
            continue
        if cols[2] == "0000" and cols[7] in ("NONE", "ASSURED"):
            continue
        key = (cols[1], cols[3], cols[5], cols[6], cols[4], cols[0])
        if key in raw:
            raw[key] += 1
        elif len(raw) < max_links:
            raw[key] = 1
        else:
            skipped += 1
    links = {}
    for (client, virtual, server, server_port, virtual_port, proto), count in raw.items():
        try:
            vip = _addr_token(virtual)
            key = (_addr_token(client), vip, vip, _addr_token(server), _hex_port(server_port),
                   _hex_port(virtual_port), proto)
        except ParseError:
            skipped += count
            continue
        links[key] = links.get(key, 0) + count
    return links, skipped


# --- Generic netlink --------------------------------------------------------------------------

NETLINK_GENERIC = 16
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLMSG_ERROR = 0x2
NLMSG_DONE = 0x3
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
NLA_TYPE_MASK = 0x3FFF

# include/uapi/linux/ip_vs.h
IPVS_GENL_NAME = "IPVS"
IPVS_GENL_VERSION = 1
IPVS_CMD_NEW_SERVICE = 1
IPVS_CMD_GET_SERVICE = 4
IPVS_CMD_NEW_DEST = 5
IPVS_CMD_GET_DEST = 8
IPVS_CMD_ATTR_SERVICE = 1
IPVS_CMD_ATTR_DEST = 2
IPVS_SVC_ATTR_AF = 1
IPVS_SVC_ATTR_PROTOCOL = 2
IPVS_SVC_ATTR_ADDR = 3
IPVS_SVC_ATTR_PORT = 4
IPVS_SVC_ATTR_FWMARK = 5
IPVS_SVC_ATTR_SCHED_NAME = 6
IPVS_SVC_ATTR_FLAGS = 7
IPVS_SVC_ATTR_STATS = 10
IPVS_SVC_ATTR_STATS64 = 12
IPVS_DEST_ATTR_ADDR = 1
IPVS_DEST_ATTR_PORT = 2
IPVS_DEST_ATTR_FWD_METHOD = 3
IPVS_DEST_ATTR_WEIGHT = 4
IPVS_DEST_ATTR_ACTIVE_CONNS = 7
IPVS_DEST_ATTR_INACT_CONNS = 8
IPVS_DEST_ATTR_PERSIST_CONNS = 9
IPVS_DEST_ATTR_STATS = 10
IPVS_DEST_ATTR_ADDR_FAMILY = 11
IPVS_DEST_ATTR_STATS64 = 12
IP_VS_SVC_F_PERSISTENT = 0x1
IP_VS_CONN_F_FWD_MASK = 0x7
# IPVS_STATS_ATTR_CONNS .. IPVS_STATS_ATTR_OUTBPS are 1..10 in STAT_NAMES + RATE_NAMES order;
# 11 is IPVS_STATS_ATTR_PAD (alignment filler of nla_put_u64_64bit), ignored like any unknown.
_STATS_ATTRS = dict(enumerate(STAT_NAMES + RATE_NAMES, start=1))

NL_RECV_BYTES = 1 << 16
MAX_DUMP_MESSAGES = MAX_SERVERS + MAX_SERVICES + 16


class NetlinkError(OSError):
    """A netlink request the kernel refused (errno set) or an answer that is not netlink."""


def nla(attr_type, payload):
    """One netlink attribute (header, payload, padding to 4 bytes)."""
    length = 4 + len(payload)
    return struct.pack("=HH", length, attr_type) + payload + b"\0" * ((4 - length % 4) % 4)


def parse_attrs(data):
    """{type: payload} of a run of netlink attributes (the nested flag is masked off; a later
    attribute of the same type wins). Raises ParseError on a truncated attribute."""
    out = {}
    pos = 0
    while pos + 4 <= len(data):
        length, attr_type = struct.unpack_from("=HH", data, pos)
        if length < 4 or pos + length > len(data):
            raise ParseError("truncated netlink attribute")
        out[attr_type & NLA_TYPE_MASK] = data[pos + 4 : pos + length]
        pos += (length + 3) & ~3
    return out


def genl_message(family, cmd, flags, seq, attrs=b"", version=IPVS_GENL_VERSION):
    """A complete generic-netlink request: nlmsghdr, genlmsghdr, attributes."""
    body = struct.pack("=BBH", cmd, version, 0) + attrs
    return struct.pack("=IHHII", 16 + len(body), family, flags, seq, 0) + body


def split_messages(data):
    """(type, flags, seq, payload) of each netlink message in one datagram."""
    out = []
    pos = 0
    while pos + 16 <= len(data):
        length, msg_type, flags, seq, _pid = struct.unpack_from("=IHHII", data, pos)
        if length < 16 or pos + length > len(data):
            raise ParseError("truncated netlink message")
        out.append((msg_type, flags, seq, data[pos + 16 : pos + length]))
        pos += (length + 3) & ~3
    return out


def _u16(b):
    if len(b) < 2:
        raise ParseError("short u16 attribute")
    return struct.unpack_from("=H", b)[0]


def _u32(b):
    if len(b) < 4:
        raise ParseError("short u32 attribute")
    return struct.unpack_from("=I", b)[0]


def _be16(b):
    if len(b) < 2:
        raise ParseError("short be16 attribute")
    return struct.unpack_from("!H", b)[0]


def _inet(af, raw):
    """An address of `union nf_inet_addr` (16 bytes; IPv4 in the first 4)."""
    if af == socket.AF_INET and len(raw) >= 4:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if af == socket.AF_INET6 and len(raw) >= 16:
        return socket.inet_ntop(socket.AF_INET6, raw[:16])
    raise ParseError("address family %d with a %d-byte address" % (af, len(raw)))


def parse_stats(attrs_by_type, stats_attr, stats64_attr):
    """Counters and rates of a service or destination: STATS64 (u64 values, kernel 4.x+) when
    present, else STATS (u32 counters except the u64 byte counts). Returns a dict (may be empty)."""
    raw = attrs_by_type.get(stats64_attr)
    if raw is None:
        raw = attrs_by_type.get(stats_attr)
    if raw is None:
        return {}
    out = {}
    for t, payload in parse_attrs(raw).items():
        name = _STATS_ATTRS.get(t)
        if name is None:
            continue
        if len(payload) >= 8:
            out[name] = struct.unpack_from("=Q", payload)[0]
        elif len(payload) >= 4:
            out[name] = struct.unpack_from("=I", payload)[0]
    return out


def parse_service_message(payload):
    """A service of an IPVS_CMD_NEW_SERVICE dump message (genlmsghdr + attributes), as built by
    ip_vs_genl_fill_service() in net/netfilter/ipvs/ip_vs_ctl.c: IPVS_CMD_ATTR_SERVICE nests AF,
    FWMARK or (PROTOCOL, ADDR, PORT), SCHED_NAME, FLAGS, TIMEOUT, NETMASK, STATS, STATS64.

    Returns a dict: key, scheduler, persistent, stats, request (the nested attributes that
    identify the service in an IPVS_CMD_GET_DEST request), af.
    """
    if len(payload) < 4:
        raise ParseError("short generic netlink message")
    top = parse_attrs(payload[4:])
    nested = top.get(IPVS_CMD_ATTR_SERVICE)
    if nested is None:
        raise ParseError("service message without IPVS_CMD_ATTR_SERVICE")
    a = parse_attrs(nested)
    if IPVS_SVC_ATTR_AF not in a:
        raise ParseError("service without address family")
    af = _u16(a[IPVS_SVC_ATTR_AF])
    request = nla(IPVS_SVC_ATTR_AF, struct.pack("=H", af))
    if IPVS_SVC_ATTR_FWMARK in a:
        mark = _u32(a[IPVS_SVC_ATTR_FWMARK])
        key = _fwmark_service(mark)
        request += nla(IPVS_SVC_ATTR_FWMARK, struct.pack("=I", mark))
    else:
        for need in (IPVS_SVC_ATTR_PROTOCOL, IPVS_SVC_ATTR_ADDR, IPVS_SVC_ATTR_PORT):
            if need not in a:
                raise ParseError("service without attribute %d" % need)
        proto = _u16(a[IPVS_SVC_ATTR_PROTOCOL])
        key = service_key(proto_name(proto), _inet(af, a[IPVS_SVC_ATTR_ADDR]), _be16(a[IPVS_SVC_ATTR_PORT]))
        request += nla(IPVS_SVC_ATTR_PROTOCOL, struct.pack("=H", proto))
        request += nla(IPVS_SVC_ATTR_ADDR, a[IPVS_SVC_ATTR_ADDR])
        request += nla(IPVS_SVC_ATTR_PORT, a[IPVS_SVC_ATTR_PORT][:2])
    sched = a.get(IPVS_SVC_ATTR_SCHED_NAME, b"").split(b"\0", 1)[0].decode("ascii", "replace")
    flags = a.get(IPVS_SVC_ATTR_FLAGS, b"")
    persistent = len(flags) >= 4 and bool(_u32(flags) & IP_VS_SVC_F_PERSISTENT)
    return {
        "key": key,
        "af": af,
        "scheduler": sched,
        "persistent": persistent,
        "stats": parse_stats(a, IPVS_SVC_ATTR_STATS, IPVS_SVC_ATTR_STATS64),
        "request": request,
        "servers": [],
    }


def parse_dest_message(payload, service_af):
    """A real server of an IPVS_CMD_NEW_DEST dump message, as built by ip_vs_genl_fill_dest():
    IPVS_CMD_ATTR_DEST nests ADDR, PORT, FWD_METHOD, WEIGHT, U/L_THRESH, ACTIVE/INACT/PERSIST
    _CONNS, ADDR_FAMILY (kernels >= 4.3; else the service's family), STATS, STATS64."""
    if len(payload) < 4:
        raise ParseError("short generic netlink message")
    nested = parse_attrs(payload[4:]).get(IPVS_CMD_ATTR_DEST)
    if nested is None:
        raise ParseError("destination message without IPVS_CMD_ATTR_DEST")
    a = parse_attrs(nested)
    for need in (IPVS_DEST_ATTR_ADDR, IPVS_DEST_ATTR_PORT):
        if need not in a:
            raise ParseError("destination without attribute %d" % need)
    af = _u16(a[IPVS_DEST_ATTR_ADDR_FAMILY]) if IPVS_DEST_ATTR_ADDR_FAMILY in a else service_af

    def u32(t):
        return _u32(a[t]) if t in a else None

    fwd = u32(IPVS_DEST_ATTR_FWD_METHOD)
    return {
        "ip": _inet(af, a[IPVS_DEST_ATTR_ADDR]),
        "port": _be16(a[IPVS_DEST_ATTR_PORT]),
        "forward": _FWD_NAMES.get(fwd & IP_VS_CONN_F_FWD_MASK, "") if fwd is not None else "",
        "weight": u32(IPVS_DEST_ATTR_WEIGHT),
        "active_conns": u32(IPVS_DEST_ATTR_ACTIVE_CONNS),
        "inact_conns": u32(IPVS_DEST_ATTR_INACT_CONNS),
        "persist_conns": u32(IPVS_DEST_ATTR_PERSIST_CONNS),
        "stats": parse_stats(a, IPVS_DEST_ATTR_STATS, IPVS_DEST_ATTR_STATS64),
    }


class GenlSocket:
    """A NETLINK_GENERIC socket with one deadline per request and bounded answers."""

    def __init__(self, timeout):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        try:
            self.sock.bind((0, 0))
        except OSError:
            self.sock.close()
            raise
        self.timeout = timeout
        self.seq = int(time.time()) & 0xFFFF

    def close(self):
        self.sock.close()

    def request(self, family, cmd, flags, attrs=b"", version=IPVS_GENL_VERSION):
        """Payloads of the answers to one request (a dump: until NLMSG_DONE)."""
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        seq = self.seq
        self.sock.sendall(genl_message(family, cmd, flags | NLM_F_REQUEST, seq, attrs, version))
        deadline = time.monotonic() + self.timeout
        out = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("netlink answer timed out")
            self.sock.settimeout(left)
            data, _anc, msg_flags, _addr = self.sock.recvmsg(NL_RECV_BYTES)
            if msg_flags & socket.MSG_TRUNC:
                raise NetlinkError(errno.EMSGSIZE, "netlink answer truncated")
            for msg_type, mflags, mseq, payload in split_messages(data):
                if mseq != seq:
                    continue  # left over from an earlier request that timed out
                if msg_type == NLMSG_DONE:
                    return out
                if msg_type == NLMSG_ERROR:
                    err = struct.unpack_from("=i", payload)[0] if len(payload) >= 4 else -errno.EIO
                    if err == 0:
                        return out
                    raise NetlinkError(-err, os.strerror(-err))
                if msg_type != family:
                    continue
                out.append(payload)
                if len(out) > MAX_DUMP_MESSAGES:
                    raise NetlinkError(errno.E2BIG, "more than %d netlink messages" % MAX_DUMP_MESSAGES)
                if not mflags & NLM_F_MULTI:
                    return out

    def family_id(self, name):
        """The id of generic-netlink family `name`, or None when the kernel has none."""
        attrs = nla(CTRL_ATTR_FAMILY_NAME, name.encode("ascii") + b"\0")
        try:
            answers = self.request(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 0, attrs, version=1)
        except NetlinkError as e:
            if e.errno == errno.ENOENT:
                return None
            raise
        for payload in answers:
            a = parse_attrs(payload[4:])
            if CTRL_ATTR_FAMILY_ID in a:
                return _u16(a[CTRL_ATTR_FAMILY_ID])
        return None


def read_netlink(genl, family):
    """Services with their real servers and stats from the IPVS family (dumps)."""
    services = []
    for payload in genl.request(family, IPVS_CMD_GET_SERVICE, NLM_F_DUMP):
        if len(services) >= MAX_SERVICES:
            break
        services.append(parse_service_message(payload))
    total = 0
    for svc in services:
        attrs = nla(IPVS_CMD_ATTR_SERVICE, svc["request"])
        for payload in genl.request(family, IPVS_CMD_GET_DEST, NLM_F_DUMP, attrs):
            if total >= MAX_SERVERS:
                break
            svc["servers"].append(parse_dest_message(payload, svc["af"]))
            total += 1
    return services


# --- Reporting --------------------------------------------------------------------------------


def _stats_values(stats):
    return [stats.get(n) for n in STAT_NAMES + RATE_NAMES]


def _sum(values):
    values = [v for v in values if v is not None]
    return sum(values) if values else None


def records(snapshot):
    """(table, values) of one period's snapshot (dict: services, totals, links, source)."""
    out = []
    services = snapshot.get("services") or []
    servers_total = 0
    for svc in services:
        proto, vip, vport = svc["key"]
        servers = svc["servers"]
        servers_total += len(servers)
        out.append(
            (
                "ipvs_service",
                [vip, vport, proto, svc.get("scheduler") or None, int(bool(svc.get("persistent"))),
                 len(servers), _sum(s.get("active_conns") for s in servers),
                 _sum(s.get("inact_conns") for s in servers)]
                + _stats_values(svc.get("stats") or {}),
            )
        )
        for s in servers:
            out.append(
                (
                    "ipvs_server",
                    [vip, vport, proto, s["ip"], s["port"], s.get("forward") or None, s.get("weight"),
                     s.get("active_conns"), s.get("inact_conns"), s.get("persist_conns")]
                    + _stats_values(s.get("stats") or {}),
                )
            )
    links = snapshot.get("links")
    if links is not None:
        for key, count in sorted(links.items()):
            client_ip, vip, lip, sip, sport, vport, proto = key
            out.append(("ipvs_link", [PROCESS_NAME, client_ip, vip, lip, sip, sport, vport, proto, count]))
    if snapshot.get("up"):
        totals = snapshot.get("totals") or {}
        out.append(
            (
                "lvs_total",
                [INSTANCE, snapshot.get("source"), len(services), servers_total,
                 snapshot.get("connections"), snapshot.get("links_skipped")]
                + _stats_values(totals),
            )
        )
    return out


def _read_bounded(path, limit):
    """At most limit + 1 bytes of regular file `path`. Opened non-blocking and checked: a FIFO or
    device at that path (a `proc_net_dir` is a param) is refused instead of blocking the probe."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ParseError("%s: not a regular file" % path)
        chunks = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _read_file(path, limit):
    data = _read_bounded(path, limit)
    if len(data) > limit:
        raise ParseError("%s: larger than %d bytes" % (path, limit))
    return data.decode("ascii", "replace")


def _read_conn(path, limit):
    """ip_vs_conn, at most `limit` bytes (cut at the last whole line: a table this large is
    reported partially, counted in links_skipped by the caller)."""
    data = _read_bounded(path, limit)
    truncated = len(data) > limit
    if truncated:
        data = data[: data.rfind(b"\n", 0, limit) + 1]
    return data.decode("ascii", "replace"), truncated


class Collector:
    """Reads the IPVS table each period; keeps the netlink socket between periods."""

    def __init__(self, proc_net_dir="", timeout=2.0):
        self.proc_net_dir = proc_net_dir
        self.timeout = timeout
        self.genl = None
        self.family = None
        self.netlink_error = None

    def proc_dir(self):
        return self.proc_net_dir or "/proc/net"

    def close(self):
        if self.genl is not None:
            self.genl.close()
            self.genl = None
        self.family = None

    def _netlink(self):
        """The IPVS family id (socket opened on demand), or None without one."""
        if self.proc_net_dir:
            return None  # another network namespace's files: this socket sees only our own
        if self.genl is None:
            self.genl = GenlSocket(self.timeout)
        self.genl.timeout = self.timeout
        if self.family is None:
            self.family = self.genl.family_id(IPVS_GENL_NAME)
        return self.family

    def supported(self):
        """False when neither /proc/net/ip_vs nor the IPVS netlink family exists."""
        if os.path.exists(os.path.join(self.proc_dir(), "ip_vs")):
            return True
        try:
            return self._netlink() is not None
        except OSError:
            self.close()
            return False

    def collect(self, max_links):
        """One period's snapshot: dict with up, error, source, services, totals, links."""
        snap = {"up": 0, "error": None, "source": None, "services": [], "totals": None, "links": None}
        services = None
        try:
            family = self._netlink()
            if family is not None:
                services = read_netlink(self.genl, family)
                snap["source"] = "netlink"
                self.netlink_error = None
        except (OSError, ParseError) as e:
            # EPERM without CAP_NET_ADMIN, ENOENT when the module went away, a timeout: fall back
            # to /proc; the next period re-resolves the family.
            if str(e) != self.netlink_error:
                self.netlink_error = str(e)
                gala_probe.log_warn("IPVS netlink: %s; reading %s/ip_vs instead" % (e, self.proc_dir()))
            self.close()
        d = self.proc_dir()
        if services is None:
            try:
                services = parse_ip_vs(_read_file(os.path.join(d, "ip_vs"), MAX_PROC_BYTES))
                snap["source"] = "proc"
            except (OSError, ParseError) as e:
                snap["error"] = "%s/ip_vs: %s" % (d, e)
                return snap
        snap["services"] = services
        snap["up"] = 1
        try:
            snap["totals"] = parse_ip_vs_stats(_read_file(os.path.join(d, "ip_vs_stats"), MAX_PROC_BYTES))
        except (OSError, ParseError):
            snap["totals"] = None
        if max_links > 0:
            try:
                text, truncated = _read_conn(os.path.join(d, "ip_vs_conn"), MAX_CONN_BYTES)
                links, skipped = parse_ip_vs_conn(text, max_links)
                snap["links"] = links
                snap["connections"] = sum(links.values()) + skipped
                snap["links_skipped"] = skipped + (1 if truncated else 0)
            except (OSError, ParseError):
                snap["links"] = None
        return snap


def main():
    args = gala_probe.parse_args()
    proc_net_dir = ""
    max_links = DEFAULT_MAX_LINKS
    for flag, value in args["extra"]:
        if flag == "R" and value:
            proc_net_dir = value
        elif flag == "N" and value is not None:
            try:
                max_links = max(0, min(100000, int(value)))
            except ValueError:
                gala_probe.log_error('-N: invalid value "%s", expected 0..=100000' % value)
                return 2
    collector = Collector(proc_net_dir, mw.request_timeout(args["period"]))
    if not collector.supported():
        # A directory given with -R that has no ip_vs is named, so a typo is not taken for the kernel.
        gala_probe.log_error("unsupported: IPVS" + (" (no %s/ip_vs)" % proc_net_dir if proc_net_dir else ""))
        return EXIT_UNSUPPORTED
    health = mw.Instances("lvs_instance", gala_probe.log_warn, gala_probe.log_info, gala_probe.record)
    gala_probe.log_info("lvs started, period %ss, reading %s" % (args["period"], proc_net_dir or "netlink and /proc/net"))
    control = gala_probe.Control()
    warned_skip = False
    while control.sleep(args["period"]):
        period = control.period(args["period"])
        value = control.param("max_links", max_links)
        if type(value) is int and 0 <= value <= 100000:
            max_links = value
        value = control.param("proc_net_dir", proc_net_dir)
        if isinstance(value, str) and value != proc_net_dir:
            gala_probe.log_info("reading %s" % (value or "netlink and /proc/net"))
            proc_net_dir = value
            collector.close()
            collector.proc_net_dir = value
        collector.timeout = mw.request_timeout(period)
        health.begin()
        start = time.monotonic()
        snap = collector.collect(max_links)
        took = time.monotonic() - start
        if snap["up"]:
            health.ok(INSTANCE, took)
        else:
            health.failed(INSTANCE, snap["error"], took)
        if snap.get("links_skipped") and not warned_skip:
            warned_skip = True
            gala_probe.log_warn("ipvs_link: %d connections not reported (more than max_links=%d keys)"
                                % (snap["links_skipped"], max_links))
        for table, values in records(snap):
            gala_probe.record(table, *values)
        health.report()
    collector.close()
    gala_probe.log_info("lvs stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
