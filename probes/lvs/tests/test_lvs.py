"""Tests of the lvs probe (probes/lvs/lvs.py).

This machine's kernel has no IPVS, so no real virtual service can be set up here. What is tested:

* the unsupported path for real: the probe exits 3 with `[ERROR] unsupported: IPVS`, and the real
  daemon shows it as failed/unsupported without restarting it in a loop;
* the real kernel's generic netlink: the probe's socket code resolves the always-present
  "nlctrl" family and finds no "IPVS" family;
* the parsers, on text written with the kernel's own seq_printf formats (copied below from
  net/netfilter/ipvs/ip_vs_ctl.c and ip_vs_conn.c) and on netlink messages built as bytes with
  the attribute nesting of ip_vs_genl_fill_service()/ip_vs_genl_fill_dest();
* the netlink request/answer loop against a fake kernel on a socketpair (multi-part dumps,
  NLMSG_DONE, NLMSG_ERROR, stale sequence numbers);
* the whole probe and the daemon on a fixture /proc/net directory (param proc_net_dir): records,
  services appearing and disappearing, garbage and a FIFO (up 0, scrape_errors growing, recovery).
"""

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PROBE_DIR = os.path.dirname(HERE)
SCRIPT = os.path.join(PROBE_DIR, "lvs.py")
META = os.path.join(PROBE_DIR, "lvs.meta")
sys.path.insert(0, os.path.dirname(PROBE_DIR))
from conftest import Daemon, ProbeRun, load_probe  # noqa: E402

import gala_middleware  # noqa: E402  (conftest put the SDK on sys.path)
import gala_probe  # noqa: E402


def _load_probe():
    return load_probe(SCRIPT, "lvs_probe")


lvs = _load_probe()


# --- Fixture text in the kernel's formats -------------------------------------------------------

def pi6(addr):
    """%pI6: eight groups of four hex digits, never compressed."""
    raw = socket.inet_pton(socket.AF_INET6, addr)
    return ":".join(raw[i : i + 2].hex() for i in range(0, 16, 2))


def hex4(addr):
    """%08X of ntohl(addr)."""
    return "%08X" % struct.unpack("!I", socket.inet_aton(addr))[0]


def ip_vs_text(services):
    """/proc/net/ip_vs as ip_vs_info_seq_show() prints it.

    services: list of (proto, vip, vport, sched, ops, persistent, [(rip, rport, fwd, w, act, inact)]),
    proto "FWM" with vip an int mark.
    """
    out = "IP Virtual Server version %d.%d.%d (size=%d)\n" % (1, 2, 1, 4096)
    out += "Prot LocalAddress:Port Scheduler Flags\n"
    out += "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n"
    for proto, vip, vport, sched, ops, persistent, dests in services:
        if proto == "FWM":
            out += "FWM  %08X %s %s" % (vip, sched, "ops " if ops else "")
        elif ":" in vip:
            out += "%s  [%s]:%04X %s " % (proto, pi6(vip), vport, sched)
        else:
            out += "%s  %s:%04X %s %s " % (proto, hex4(vip), vport, sched, "ops " if ops else "")
        if persistent:
            out += "persistent %d %08X\n" % (persistent, 0xFFFFFFFF)
        else:
            out += "\n"
        for rip, rport, fwd, weight, act, inact in dests:
            if ":" in rip:
                out += "  -> [%s]:%04X      %-7s %-6d %-10d %-10d\n" % (pi6(rip), rport, fwd, weight, act, inact)
            else:
                out += "  -> %s:%04X      %-7s %-6d %-10d %-10d\n" % (hex4(rip), rport, fwd, weight, act, inact)
    return out


def ip_vs_stats_text(tot, rates):
    """/proc/net/ip_vs_stats as ip_vs_stats_show() prints it (%8LX ... %16LX)."""
    out = "   Total Incoming Outgoing         Incoming         Outgoing\n"
    out += "   Conns  Packets  Packets            Bytes            Bytes\n"
    out += "%8X %8X %8X %16X %16X\n\n" % tuple(tot)
    out += " Conns/s   Pkts/s   Pkts/s          Bytes/s          Bytes/s\n"
    out += "%8X %8X %8X %16X %16X\n" % tuple(rates)
    return out


def ip_vs_conn_text(conns):
    """/proc/net/ip_vs_conn as ip_vs_conn_seq_show() prints it.

    conns: list of (proto, cip, cport, vip, vport, dip, dport, state, expires, pe_data).
    """
    out = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n"
    for proto, cip, cport, vip, vport, dip, dport, state, expires, pe in conns:
        dbuf = pi6(dip) if ":" in dip else hex4(dip)
        if ":" in cip:
            out += "%-3s %s %04X %s %04X %s %04X %-11s %7u%s\n" % (
                proto, pi6(cip), cport, pi6(vip), vport, dbuf, dport, state, expires, pe)
        else:
            out += "%-3s %s %04X %s %04X %s %04X %-11s %7u%s\n" % (
                proto, hex4(cip), cport, hex4(vip), vport, dbuf, dport, state, expires, pe)
    return out


SERVICES = [
    ("TCP", "10.0.0.1", 80, "rr", False, 0,
     [("192.168.1.10", 8080, "Masq", 1, 3, 5), ("192.168.1.11", 8080, "Route", 2, 0, 7)]),
    ("UDP", "10.0.0.1", 53, "wlc", True, 0, [("192.168.1.12", 53, "Tunnel", 0, 1, 0)]),
    ("TCP", "2001:db8::1", 443, "sh", False, 300, [("2001:db8::10", 443, "Masq", 100, 12345, 67890)]),
    ("FWM", 0x2A, 0, "rr", False, 0, [("192.168.1.13", 0, "Route", 1, 2, 3)]),
    ("SCTP", "10.0.0.2", 3868, "rr", False, 0, []),
]

CONNS = [
    ("TCP", "172.16.0.5", 40001, "10.0.0.1", 80, "192.168.1.10", 8080, "ESTABLISHED", 899, ""),
    ("TCP", "172.16.0.5", 40002, "10.0.0.1", 80, "192.168.1.10", 8080, "FIN_WAIT", 100, ""),
    ("TCP", "172.16.0.6", 40003, "10.0.0.1", 80, "192.168.1.11", 8080, "ESTABLISHED", 899, ""),
    ("UDP", "172.16.0.7", 5353, "10.0.0.1", 53, "192.168.1.12", 53, "UDP", 299, ""),
    # a persistence template (client port 0, template state): not a connection
    ("UDP", "172.16.0.7", 0, "10.0.0.1", 53, "192.168.1.12", 53, "NONE", 360, ""),
    ("TCP", "2001:db8::99", 50000, "2001:db8::1", 443, "2001:db8::10", 443, "SYN_RECV", 59, ""),
    # persistence engine data after the expiry (" <pe name> <pe data>")
    ("UDP", "172.16.0.8", 5060, "10.0.0.1", 5060, "192.168.1.20", 5060, "UDP", 10, " sip abc@host"),
]


# --- Parsers on fixture text --------------------------------------------------------------------

def test_parse_ip_vs_kernel_format():
    services = lvs.parse_ip_vs(ip_vs_text(SERVICES))
    by_key = {s["key"]: s for s in services}
    assert list(by_key) == [
        ("TCP", "10.0.0.1", 80), ("UDP", "10.0.0.1", 53), ("TCP", "2001:db8::1", 443),
        ("FWM", "fwmark:42", 0), ("SCTP", "10.0.0.2", 3868)]
    tcp = by_key[("TCP", "10.0.0.1", 80)]
    assert tcp["scheduler"] == "rr" and tcp["persistent"] is False
    assert tcp["servers"] == [
        {"ip": "192.168.1.10", "port": 8080, "forward": "Masq", "weight": 1, "active_conns": 3, "inact_conns": 5},
        {"ip": "192.168.1.11", "port": 8080, "forward": "Route", "weight": 2, "active_conns": 0, "inact_conns": 7},
    ]
    assert by_key[("TCP", "2001:db8::1", 443)]["persistent"] is True
    assert by_key[("TCP", "2001:db8::1", 443)]["servers"][0]["ip"] == "2001:db8::10"
    assert by_key[("TCP", "2001:db8::1", 443)]["servers"][0]["inact_conns"] == 67890
    assert by_key[("FWM", "fwmark:42", 0)]["servers"][0]["port"] == 0
    assert by_key[("SCTP", "10.0.0.2", 3868)]["servers"] == []


def test_parse_ip_vs_empty_table_and_garbage():
    assert lvs.parse_ip_vs(ip_vs_text([])) == []
    for bad in ("", "hello\n", ip_vs_text([]) + "TCP  ZZZZ:0050 rr\n",
                ip_vs_text([]) + "  -> 0A000001:0050 Masq 1 0 0\n",  # server without a service
                ip_vs_text(SERVICES).replace(":1F90", ":1F9G")):
        with pytest.raises(lvs.ParseError):
            lvs.parse_ip_vs(bad)


def test_parse_ip_vs_stats_hex():
    tot = [0x12345, 0xABCDEF, 0x1234, 0x1234567890AB, 0xFEDCBA987654]
    rates = [3, 400, 300, 51200, 0x7FFFFFFF]
    got = lvs.parse_ip_vs_stats(ip_vs_stats_text(tot, rates))
    assert got == dict(zip(lvs.STAT_NAMES + lvs.RATE_NAMES, tot + rates))
    with pytest.raises(lvs.ParseError):
        lvs.parse_ip_vs_stats("   Total Incoming\n")


def test_parse_ip_vs_conn_counts_links():
    links, skipped = lvs.parse_ip_vs_conn(ip_vs_conn_text(CONNS))
    assert skipped == 0
    assert links == {
        ("172.16.0.5", "10.0.0.1", "10.0.0.1", "192.168.1.10", 8080, 80, "TCP"): 2,
        ("172.16.0.6", "10.0.0.1", "10.0.0.1", "192.168.1.11", 8080, 80, "TCP"): 1,
        ("172.16.0.7", "10.0.0.1", "10.0.0.1", "192.168.1.12", 53, 53, "UDP"): 1,
        ("2001:db8::99", "2001:db8::1", "2001:db8::1", "2001:db8::10", 443, 443, "TCP"): 1,
        ("172.16.0.8", "10.0.0.1", "10.0.0.1", "192.168.1.20", 5060, 5060, "UDP"): 1,
    }


def test_parse_ip_vs_conn_bounded_and_robust():
    many = [("TCP", "172.16.%d.%d" % (i // 250, i % 250 + 1), 1000 + i, "10.0.0.1", 80, "192.168.1.10", 80,
             "ESTABLISHED", 1, "") for i in range(50)]
    links, skipped = lvs.parse_ip_vs_conn(ip_vs_conn_text(many), max_links=10)
    assert len(links) == 10 and skipped == 40
    text = ip_vs_conn_text(CONNS[:1]) + "TCP XXXXXXXX 0050 0A000001 0050 0A000002 0050 ESTABLISHED 1\n\x00\xff\n"
    links, skipped = lvs.parse_ip_vs_conn(text)
    assert sum(links.values()) == 1 and skipped == 2


# --- Netlink messages built as the kernel builds them ---------------------------------------------

def nla(t, payload):
    n = 4 + len(payload)
    return struct.pack("=HH", n, t) + payload + b"\0" * ((4 - n % 4) % 4)


def stats_nest(values, wide):
    """ip_vs_genl_fill_stats(): u32 conns/inpkts/outpkts, u64 in/outbytes, u32 rates; or
    ip_vs_genl_fill_stats64(): every value u64. A PAD attribute (type 11) in between, as
    nla_put_u64_64bit() adds on architectures that need alignment."""
    out = b""
    for i, v in enumerate(values, start=1):
        if i == 4:
            out += nla(11, b"")
        if wide or i in (4, 5):
            out += nla(i, struct.pack("=Q", v))
        else:
            out += nla(i, struct.pack("=I", v & 0xFFFFFFFF))
    return out


def genl(cmd, attrs):
    return struct.pack("=BBH", cmd, 1, 0) + attrs


def service_payload(af, proto, addr, port, sched, flags, values, with64=True, fwmark=None):
    raw = socket.inet_pton(af, addr) if addr else b""
    inner = nla(1, struct.pack("=H", af))
    if fwmark is not None:
        inner += nla(5, struct.pack("=I", fwmark))
    else:
        inner += nla(2, struct.pack("=H", proto)) + nla(3, raw.ljust(16, b"\0")) + nla(4, struct.pack("!H", port))
    inner += nla(6, sched.encode() + b"\0") + nla(7, struct.pack("=II", flags, 0xFFFFFFFF))
    inner += nla(8, struct.pack("=I", 0)) + nla(9, struct.pack("!I", 0xFFFFFFFF))
    inner += nla(10, stats_nest(values, False))
    if with64:
        inner += nla(12, stats_nest(values, True))
    return genl(1, nla(1, inner))


def dest_payload(af, addr, port, fwd, weight, act, inact, persist, values, family_attr=True):
    inner = nla(1, socket.inet_pton(af, addr).ljust(16, b"\0")) + nla(2, struct.pack("!H", port))
    inner += nla(3, struct.pack("=I", fwd)) + nla(4, struct.pack("=I", weight))
    inner += nla(13, struct.pack("=B", 0)) + nla(14, struct.pack("!H", 0)) + nla(15, struct.pack("=H", 0))
    inner += nla(5, struct.pack("=I", 0)) + nla(6, struct.pack("=I", 0))
    inner += nla(7, struct.pack("=I", act)) + nla(8, struct.pack("=I", inact)) + nla(9, struct.pack("=I", persist))
    if family_attr:
        inner += nla(11, struct.pack("=H", af))
    inner += nla(10, stats_nest(values, False)) + nla(12, stats_nest(values, True))
    return genl(5, nla(2, inner))


BIG = [5 * 2**32 + 7, 2**33 + 1, 99, 2**40 + 5, 2**41 + 6, 12, 3400, 1200, 2**33, 987654]


def test_service_message_prefers_stats64():
    svc = lvs.parse_service_message(service_payload(socket.AF_INET, 6, "10.0.0.1", 80, "wrr", 0x1, BIG))
    assert svc["key"] == ("TCP", "10.0.0.1", 80)
    assert svc["scheduler"] == "wrr" and svc["persistent"] is True
    assert svc["stats"] == dict(zip(lvs.STAT_NAMES + lvs.RATE_NAMES, BIG))
    # an old kernel without STATS64: the 32-bit counters (wrapped, as the kernel sends them)
    old = lvs.parse_service_message(service_payload(socket.AF_INET, 17, "10.0.0.1", 53, "rr", 0, BIG, with64=False))
    assert old["key"] == ("UDP", "10.0.0.1", 53) and old["persistent"] is False
    assert old["stats"]["conns"] == 7 and old["stats"]["inbytes"] == 2**40 + 5
    assert old["stats"]["inbps"] == 0  # 2**33 truncated to u32


def test_service_message_ipv6_and_fwmark_and_request():
    svc = lvs.parse_service_message(service_payload(socket.AF_INET6, 132, "2001:db8::1", 3868, "rr", 0, BIG))
    assert svc["key"] == ("SCTP", "2001:db8::1", 3868)
    # the GET_DEST request identifies the service as ip_vs_genl_parse_service() wants it
    a = lvs.parse_attrs(svc["request"])
    assert struct.unpack("=H", a[1])[0] == socket.AF_INET6 and struct.unpack("=H", a[2])[0] == 132
    assert a[3] == socket.inet_pton(socket.AF_INET6, "2001:db8::1") and struct.unpack("!H", a[4])[0] == 3868
    fwm = lvs.parse_service_message(service_payload(socket.AF_INET, 0, None, 0, "rr", 0, BIG, fwmark=42))
    assert fwm["key"] == ("FWM", "fwmark:42", 0)
    a = lvs.parse_attrs(fwm["request"])
    assert set(a) == {1, 5} and struct.unpack("=I", a[5])[0] == 42


def test_dest_message():
    d = lvs.parse_dest_message(dest_payload(socket.AF_INET, "192.168.1.10", 8080, 0, 3, 4, 5, 6, BIG), socket.AF_INET)
    assert d == {"ip": "192.168.1.10", "port": 8080, "forward": "Masq", "weight": 3, "active_conns": 4,
                 "inact_conns": 5, "persist_conns": 6, "stats": dict(zip(lvs.STAT_NAMES + lvs.RATE_NAMES, BIG))}
    # an IPv6 real server of an IPv4 service (heterogeneous, kernels >= 4.3 say so in ADDR_FAMILY)
    d6 = lvs.parse_dest_message(dest_payload(socket.AF_INET6, "2001:db8::10", 80, 3, 1, 0, 0, 0, BIG), socket.AF_INET)
    assert d6["ip"] == "2001:db8::10" and d6["forward"] == "Route"
    # before 4.3: no ADDR_FAMILY, the service's family applies
    d4 = lvs.parse_dest_message(dest_payload(socket.AF_INET, "10.1.1.1", 80, 2, 1, 0, 0, 0, BIG, family_attr=False),
                                socket.AF_INET)
    assert d4["ip"] == "10.1.1.1" and d4["forward"] == "Tunnel"


def test_messages_garbage_raise_parse_error():
    good = service_payload(socket.AF_INET, 6, "10.0.0.1", 80, "rr", 0, BIG)
    for bad in (b"", b"\x01\x01\x00\x00", good[:-3], genl(1, nla(1, nla(2, b"\x06\x00"))),
                genl(1, nla(2, b"")), genl(1, nla(1, nla(1, struct.pack("=H", 99)) + nla(2, b"\6\0"))),
                b"xxxx"):
        with pytest.raises(lvs.ParseError):
            lvs.parse_service_message(bad)
    with pytest.raises(lvs.ParseError):
        lvs.parse_dest_message(genl(5, nla(2, nla(2, b"\0\x50"))), socket.AF_INET)


class FakeGenl:
    """Answers read_netlink()'s requests like the kernel: GET_DEST only for a request that
    identifies a known service."""

    def __init__(self, services):
        self.services = services  # list of (service payload, identity attrs, [dest payloads])
        self.dest_requests = []

    def request(self, family, cmd, flags, attrs=b""):
        assert family == 0x2A and flags & lvs.NLM_F_DUMP == lvs.NLM_F_DUMP
        if cmd == lvs.IPVS_CMD_GET_SERVICE:
            return [s for s, _, _ in self.services]
        assert cmd == lvs.IPVS_CMD_GET_DEST
        nested = lvs.parse_attrs(attrs)[lvs.IPVS_CMD_ATTR_SERVICE]
        self.dest_requests.append(lvs.parse_attrs(nested))
        for _, ident, dests in self.services:
            if lvs.parse_attrs(nested) == ident:
                return dests
        raise lvs.NetlinkError(3, "no such service")  # ESRCH


def test_read_netlink_and_records():
    s1 = service_payload(socket.AF_INET, 6, "10.0.0.1", 80, "rr", 0, BIG)
    id1 = {1: struct.pack("=H", socket.AF_INET), 2: struct.pack("=H", 6),
           3: socket.inet_aton("10.0.0.1").ljust(16, b"\0"), 4: struct.pack("!H", 80)}
    d1 = [dest_payload(socket.AF_INET, "192.168.1.10", 8080, 0, 1, 3, 5, 0, [1] * 10),
          dest_payload(socket.AF_INET, "192.168.1.11", 8080, 0, 2, 4, 6, 0, [2] * 10)]
    s2 = service_payload(socket.AF_INET, 0, None, 0, "rr", 0, BIG, fwmark=7)
    id2 = {1: struct.pack("=H", socket.AF_INET), 5: struct.pack("=I", 7)}
    fake = FakeGenl([(s1, id1, d1), (s2, id2, [])])
    services = lvs.read_netlink(fake, 0x2A)
    assert len(fake.dest_requests) == 2
    snap = {"up": 1, "source": "netlink", "services": services, "links": {}, "totals": None,
            "connections": 0, "links_skipped": 0}
    recs = lvs.records(snap)
    svc = [v for t, v in recs if t == "ipvs_service"]
    assert svc[0][:8] == ["10.0.0.1", 80, "TCP", "rr", 0, 2, 7, 11]
    assert svc[0][8:] == BIG
    assert svc[1][:6] == ["fwmark:7", 0, "FWM", "rr", 0, 0] and svc[1][6:8] == [None, None]
    srv = [v for t, v in recs if t == "ipvs_server"]
    assert srv == [["10.0.0.1", 80, "TCP", "192.168.1.10", 8080, "Masq", 1, 3, 5, 0] + [1] * 10,
                   ["10.0.0.1", 80, "TCP", "192.168.1.11", 8080, "Masq", 2, 4, 6, 0] + [2] * 10]
    total = [v for t, v in recs if t == "lvs_total"]
    assert total == [["ipvs", "netlink", 2, 2, 0, 0] + [None] * 10]
    _check_against_meta(recs)


def _meta_fields():
    """{table: number of fields} of lvs.meta (read the simple way: one field per line)."""
    tables, current = {}, None
    for line in open(META):
        line = line.strip()
        if line.startswith("table_name:"):
            current = line.split('"')[1]
            tables[current] = 0
        elif line.startswith("{ description:") and current:
            tables[current] += 1
    return tables


def _check_against_meta(recs):
    fields = _meta_fields()
    for table, values in recs:
        assert len(values) == fields[table], table


# --- The netlink request loop against a fake kernel --------------------------------------------

def _fake_kernel(sock, script):
    """Reads requests and answers each with the datagrams `script(header, attrs)` returns."""
    while True:
        try:
            req = sock.recv(65536)
        except OSError:
            return
        if not req:
            return
        length, family, flags, seq, _pid = struct.unpack_from("=IHHII", req)
        cmd = req[16]
        for dgram in script(family, cmd, flags, seq, req[20:length]):
            sock.send(dgram)


def nlmsg(msg_type, flags, seq, payload):
    return struct.pack("=IHHII", 16 + len(payload), msg_type, flags, seq, 0) + payload


def _genl_over_pair(script, timeout=1.0):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    g = lvs.GenlSocket.__new__(lvs.GenlSocket)
    g.sock, g.timeout, g.seq = a, timeout, 100
    t = threading.Thread(target=_fake_kernel, args=(b, script), daemon=True)
    t.start()
    return g, b


def test_genl_request_dump_done_error_and_stale():
    s1 = service_payload(socket.AF_INET, 6, "10.0.0.1", 80, "rr", 0, BIG)
    s2 = service_payload(socket.AF_INET, 17, "10.0.0.1", 53, "rr", 0, BIG)

    def script(family, cmd, flags, seq, attrs):
        if family == lvs.GENL_ID_CTRL:
            name = lvs.parse_attrs(attrs)[lvs.CTRL_ATTR_FAMILY_NAME]
            if name == b"IPVS\0":
                return [nlmsg(2, 0, seq, struct.pack("=i", -2) + b"\0" * 16)]
            return [nlmsg(0x10, 0, seq, genl(1, nla(2, name) + nla(1, struct.pack("=H", 0x2A))))]
        if cmd == lvs.IPVS_CMD_GET_SERVICE:
            # a stale answer of an older request, then two messages in one datagram, then DONE alone
            return [nlmsg(0x2A, 2, seq - 1, s2),
                    nlmsg(0x2A, 2, seq, s1) + nlmsg(0x2A, 2, seq, s2),
                    nlmsg(3, 2, seq, struct.pack("=i", 0))]
        if cmd == lvs.IPVS_CMD_GET_DEST:
            return [nlmsg(2, 0, seq, struct.pack("=i", -3) + b"\0" * 16)]  # ESRCH
        return []

    g, peer = _genl_over_pair(script)
    try:
        assert g.family_id("IPVS") is None
        assert g.family_id("OTHER") == 0x2A
        answers = g.request(0x2A, lvs.IPVS_CMD_GET_SERVICE, lvs.NLM_F_DUMP)
        keys = [lvs.parse_service_message(p)["key"] for p in answers]
        assert keys == [("TCP", "10.0.0.1", 80), ("UDP", "10.0.0.1", 53)]
        with pytest.raises(lvs.NetlinkError) as e:
            g.request(0x2A, lvs.IPVS_CMD_GET_DEST, lvs.NLM_F_DUMP)
        assert e.value.errno == 3
        g.timeout = 0.3
        start = time.monotonic()
        with pytest.raises(socket.timeout):
            g.request(0x2A, 99, lvs.NLM_F_DUMP)  # never answered
        assert time.monotonic() - start < 1.0
    finally:
        g.close()
        peer.close()


def test_real_kernel_generic_netlink_has_no_ipvs():
    g = lvs.GenlSocket(2.0)
    try:
        assert g.family_id("nlctrl") == lvs.GENL_ID_CTRL  # the real kernel answered our request
        assert g.family_id("IPVS") is None, "this kernel has IPVS: extend the tests with a real service"
    finally:
        g.close()
    assert not os.path.exists("/proc/net/ip_vs")


# --- The whole probe -----------------------------------------------------------------------------

def _require_no_ipvs():
    if os.path.exists("/proc/net/ip_vs"):
        pytest.fail("this kernel has IPVS: the unsupported-path tests assume a kernel without it "
                    "(the test machine's); on an IPVS host test against a real service instead")


def test_unsupported_exits_3():
    _require_no_ipvs()
    with ProbeRun(SCRIPT, ["-t", "1"]) as p:
        p.proc.wait(20)
        assert p.proc.returncode == 3, p.stderr_text()
        assert "[ERROR] unsupported: IPVS" in p.stderr_text().splitlines()


def _write(d, name, text):
    tmp = os.path.join(d, name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, os.path.join(d, name))


def _fixture_dir(tmp_path, services=SERVICES):
    d = tmp_path / "net"
    d.mkdir()
    _write(str(d), "ip_vs", ip_vs_text(services))
    _write(str(d), "ip_vs_stats", ip_vs_stats_text([100, 2000, 1500, 300000, 2000000], [1, 20, 15, 3000, 20000]))
    _write(str(d), "ip_vs_conn", ip_vs_conn_text(CONNS))
    return str(d)


def records_of(run, table=None):
    """Records of a ProbeRun as (table, values). Not ProbeRun.records(): it hands each line to
    split_line() with its newline, which then reads as one more value."""
    out = []
    for line in run.lines:
        try:
            t, values = gala_probe.split_line(line.rstrip("\n"))
        except gala_probe.RecordLineError:
            continue
        if table is None or t == table:
            out.append((t, values))
    return out


def _last(p, table, pred=lambda v: True):
    recs = [v for t, v in records_of(p, table) if pred(v)]
    return recs[-1] if recs else None


def test_probe_on_fixture_dir(tmp_path):
    d = _fixture_dir(tmp_path)
    with ProbeRun(SCRIPT, ["-t", "1", "-R", d]) as p:
        p.wait_records("lvs_instance", 1, 15)
        recs = records_of(p)
        _check_against_meta(recs)
        assert _last(p, "lvs_instance") == ["ipvs", "1", "0", _last(p, "lvs_instance")[3]]
        total = _last(p, "lvs_total")
        assert total[:6] == ["ipvs", "proc", "5", "5", "6", "0"]
        assert total[6:] == ["100", "2000", "1500", "300000", "2000000", "1", "20", "15", "3000", "20000"]
        svc = {tuple(v[:3]): v for t, v in recs if t == "ipvs_service"}
        assert svc[("10.0.0.1", "80", "TCP")][3:8] == ["rr", "0", "2", "3", "12"]
        assert svc[("2001:db8::1", "443", "TCP")][3:8] == ["sh", "1", "1", "12345", "67890"]
        assert svc[("10.0.0.2", "3868", "SCTP")][5:8] == ["0", "", ""]
        assert svc[("10.0.0.1", "80", "TCP")][8:] == [""] * 10  # /proc has no per-service stats
        srv = {tuple(v[:5]): v for t, v in recs if t == "ipvs_server"}
        assert srv[("fwmark:42", "0", "FWM", "192.168.1.13", "0")][5:10] == ["Route", "1", "2", "3", ""]
        links = {tuple(v[:8]): v[8] for t, v in recs if t == "ipvs_link"}
        assert links[("ipvs", "172.16.0.5", "10.0.0.1", "10.0.0.1", "192.168.1.10", "8080", "80", "TCP")] == "2"
        assert len(links) == 5

        # a new service appears, one disappears: the next period says so
        grown = SERVICES[:1] + [("TCP", "10.0.0.9", 8443, "lc", False, 0, [("192.168.1.99", 443, "Masq", 5, 9, 1)])]
        _write(d, "ip_vs", ip_vs_text(grown))
        n = len(p.lines)
        p.wait(lambda q: any(t == "ipvs_server" and v[3] == "192.168.1.99" for t, v in records_of(q)), 15)
        period = _records_of_last_period(p)
        assert {tuple(v[:3]) for t, v in period if t == "ipvs_service"} == {("10.0.0.1", "80", "TCP"),
                                                                            ("10.0.0.9", "8443", "TCP")}
        assert len(p.lines) > n

        # garbage: up 0, errors grow, the probe keeps running; then it recovers
        _write(d, "ip_vs", "garbage\x00\xff\n")
        p.wait(lambda q: (lambda v: v and v[1] == "0" and int(v[2]) >= 2)(_last(q, "lvs_instance")), 15)
        os.remove(os.path.join(d, "ip_vs"))
        os.mkfifo(os.path.join(d, "ip_vs"))  # must not block the probe
        errors = int(_last(p, "lvs_instance")[2])
        p.wait(lambda q: (lambda v: v and int(v[2]) >= errors + 2)(_last(q, "lvs_instance")), 15)
        os.remove(os.path.join(d, "ip_vs"))
        _write(d, "ip_vs", ip_vs_text(SERVICES))
        p.wait(lambda q: (lambda v: v and v[1] == "1")(_last(q, "lvs_instance")), 15)
        assert p.proc.poll() is None
        assert p.stop() == 0
        err = p.stderr_text()
        assert err.count("is down") == 1 and err.count("is up again") == 1, err


def _records_of_last_period(p):
    """Records between the last two lvs_instance records (one period)."""
    recs = records_of(p)
    idx = [i for i, (t, _) in enumerate(recs) if t == "lvs_instance"]
    return recs[idx[-2] + 1 : idx[-1]] if len(idx) >= 2 else recs


def test_max_links_bounds_and_zero_disables(tmp_path):
    d = _fixture_dir(tmp_path)
    with ProbeRun(SCRIPT, ["-t", "1", "-R", d, "-N", "2"]) as p:
        p.wait_records("lvs_total", 1, 15)
        assert len({tuple(v) for _, v in records_of(p, "ipvs_link")}) == 2
        assert _last(p, "lvs_total")[4:6] == ["6", "3"]
        assert "not reported" in p.stderr_text()
    with ProbeRun(SCRIPT, ["-t", "1", "-R", d, "-N", "0"]) as p:
        p.wait_records("lvs_total", 1, 15)
        assert records_of(p, "ipvs_link") == [] and _last(p, "lvs_total")[4:6] == ["", ""]


def test_sigterm_exit_0_and_period_change_without_restart(tmp_path):
    d = _fixture_dir(tmp_path)
    with ProbeRun(SCRIPT, ["-t", "5", "-R", d], stdin=subprocess.PIPE) as p:
        line = {"v": 1, "params": {"report_period": 1, "max_links": 0, "proc_net_dir": d}}
        p.proc.stdin.write((json.dumps(line) + "\n").encode())
        p.proc.stdin.flush()
        start = time.monotonic()
        p.wait_records("lvs_instance", 3, 10)
        assert time.monotonic() - start < 8  # 1 s periods, not 5 s
        assert records_of(p, "ipvs_link") == []
        assert p.stop() == 0


# --- Through the real daemon --------------------------------------------------------------------

def _cmd_get(daemon, path):
    status, _, body = gala_middleware.http_request(os.path.join(daemon.dir, "cmd.sock"), path, 5.0)
    assert status == 200, body
    return json.loads(body)


def test_daemon_shows_unsupported_without_restart_loop():
    _require_no_ipvs()
    conf = 'probes = ({ name = "lvs"; param = "-t 1"; switch = "on"; });'
    with Daemon([SCRIPT, META], conf) as gg:
        gg.wait_metric("gala_gopher_self_probe_state", 30,
                       lambda l, v: 'probe="lvs"' in l and 'state="failed"' in l and v == 1)
        doc = _cmd_get(gg, "/lvs")
        assert doc["status"] == "failed" and "unsupported: IPVS" in (doc["last_error"] or ""), doc
        restarts = doc["restarts"]
        time.sleep(4)
        doc = _cmd_get(gg, "/lvs")
        assert doc["status"] == "failed" and doc["restarts"] == restarts, doc
        restarts_metric = [v for l, v in gg.samples("gala_gopher_self_probe_restarts_total").items() if 'probe="lvs"' in l]
        assert restarts_metric == [restarts]
        status = json.loads(urllib_get(gg, "/status"))
        lvs_status = [p for p in status["probes"] if p["name"] == "lvs"][0]
        assert lvs_status["state"] == "failed" and "unsupported: IPVS" in lvs_status["last_error"]


def urllib_get(daemon, path):
    import urllib.request
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (daemon.port, path), timeout=5) as r:
        return r.read().decode()


def test_daemon_reports_fixture_tables(tmp_path):
    d = _fixture_dir(tmp_path)
    os.chmod(tmp_path, 0o755)
    conf = 'probes = ({ name = "lvs"; param = "-t 1 -R %s"; switch = "on"; });' % d
    with Daemon([SCRIPT, META], conf) as gg:
        gg.wait_metric("gala_gopher_lvs_up", 30, lambda l, v: 'instance="ipvs"' in l and v == 1)
        labels, value = gg.wait_metric(
            "gala_gopher_ipvs_server_inact_conns", 30,
            lambda l, v: 'server_ip="2001:db8::10"' in l and 'virtual_port="443"' in l)
        assert value == 67890 and 'forward="Masq"' in labels and 'protocol="TCP"' in labels
        _, value = gg.wait_metric("gala_gopher_ipvs_service_active_conns", 30,
                                  lambda l, v: 'virtual_ip="10.0.0.1"' in l and 'virtual_port="80"' in l)
        assert value == 3
        _, value = gg.wait_metric("gala_gopher_ipvs_link_link_count", 30,
                                  lambda l, v: 'client_ip="172.16.0.5"' in l)
        assert value == 2
        _, value = gg.wait_metric("gala_gopher_lvs_inbytes", 30, lambda l, v: 'instance="ipvs"' in l)
        assert value == 300000
        # run-time control: a new proc_net_dir reaches the running probe without a restart
        pid = _cmd_get(gg, "/lvs")["pid"]
        body = json.dumps({"params": {"proc_net_dir": "/nonexistent/net"}}).encode()
        status, _, answer = gala_middleware.http_request(os.path.join(gg.dir, "cmd.sock"), "/lvs", 10.0,
                                                         method="PUT", body=body,
                                                         headers={"Content-Type": "application/json"})
        assert status == 200, answer
        gg.wait_metric("gala_gopher_lvs_up", 30, lambda l, v: 'instance="ipvs"' in l and v == 0)
        doc = _cmd_get(gg, "/lvs")
        assert doc["pid"] == pid and doc["params"]["proc_net_dir"] == "/nonexistent/net"
