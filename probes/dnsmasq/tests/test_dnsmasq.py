"""Acceptance tests of the dnsmasq probe against real dnsmasq and named (Debian's packages).

A named is authoritative for `test.` on a free loopback port; dnsmasq instances with known cache
sizes forward to it. The test makes a known pattern of lookups (distinct names miss, repeated
names hit), then reads dnsmasq's own CHAOS statistics with `dig` and named's query counters from
its statistics channel, and compares them with what the probe reports and with the pattern.
"""

import json
import os
import random
import re
import socket
import struct
import subprocess
import threading
import urllib.request

import pytest

from conftest import Daemon, ProbeRun, Server, free_port, load_probe, server_binary, wait_port

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(os.path.dirname(HERE), "dnsmasq.py")
META = os.path.join(os.path.dirname(HERE), "dnsmasq.meta")

NAMES = ["b%d" % i for i in range(1, 6)]
REPEATS = ["b1", "b1", "b1", "b2", "b5", "b5", "b5"]
# dnsmasq counts every CHAOS query it answers as a hit: the probe asks this many per scrape.
QUERIES_PER_SCRAPE = 8


def load_probe_module():
    return load_probe(SCRIPT, "dnsmasq_probe")


def meta_fields(path):
    """{table: [field names]} of a .meta file."""
    text = open(path).read().split("probe =")[0]
    out = {}
    for block in text.split("table_name:")[1:]:
        table = re.match(r'\s*"(\w+)"', block).group(1)
        out[table] = re.findall(r'type: "\w+", name: "(\w+)"', block)
    return out


def free_udp_and_tcp_port():
    """A port free for both UDP and TCP on 127.0.0.1 (dnsmasq and named need both)."""
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    pytest.fail("no free UDP+TCP port")


class Named:
    """A real named, authoritative for test. (b1..b5 and a few more), stats channel on a port."""

    def __init__(self, root):
        self.root = str(root)
        os.makedirs(self.root, exist_ok=True)
        self.port = free_udp_and_tcp_port()
        self.stats_port = free_port()
        self.conf = os.path.join(self.root, "named.conf")
        records = "".join("b%d IN A 10.0.1.%d\n" % (i, i) for i in range(1, 10))
        with open(os.path.join(self.root, "test.zone"), "w") as f:
            f.write("$TTL 3600\n@ IN SOA ns.test. admin.test. 1 3600 600 86400 300\n@ IN NS ns.test.\n"
                    "ns IN A 127.0.0.1\n" + records)
        r = self.root
        with open(self.conf, "w") as f:
            f.write(
                'options { directory "%s"; pid-file "%s/named.pid"; session-keyfile "%s/session.key";\n'
                "  listen-on port %d { 127.0.0.1; }; listen-on-v6 { none; }; recursion no; notify no;\n"
                "  dnssec-validation no; };\ncontrols { };\n"
                "statistics-channels { inet 127.0.0.1 port %d allow { 127.0.0.1; }; };\n"
                'zone "test." { type primary; file "%s/test.zone"; };\n'
                % (r, r, r, self.port, self.stats_port, r)
            )
        self.server = Server([server_binary("named"), "-g", "-c", self.conf], log=os.path.join(r, "named.log"))
        wait_port(self.port)
        wait_port(self.stats_port)

    def stats(self):
        url = "http://127.0.0.1:%d/json/v1/server" % self.stats_port
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())

    def stop(self):
        self.server.stop()


class Dnsmasq:
    """A real dnsmasq on 127.0.0.1:<port> forwarding to `upstream` (a port on 127.0.0.1); with
    netns=True in a network namespace of its own (as in a container)."""

    def __init__(self, root, upstream, cache_size, port=None, netns=False):
        self.root = str(root)
        os.makedirs(self.root, exist_ok=True)
        self.port = port or free_udp_and_tcp_port()
        self.upstream = upstream
        self.key = "127.0.0.1:%d" % self.port
        prefix = []
        if netns:
            prefix = [server_binary("unshare"), "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"']
        self.server = Server(
            prefix + [
                server_binary("dnsmasq"),
                "-k",
                "--conf-file=/dev/null",
                "--port=%d" % self.port,
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--server=127.0.0.1#%d" % upstream,
                "--cache-size=%d" % cache_size,
                "--pid-file=%s/dnsmasq-%d.pid" % (self.root, self.port),
                "--user=root",
            ],
            log=os.path.join(self.root, "dnsmasq-%d.log" % self.port),
        )
        if netns:
            self.key = "127.0.0.1:%d@pid%d" % (self.port, self.server.pid)
        else:
            wait_port(self.port)

    def lookup(self, name):
        out = dig(self.port, name + ".test", "A")
        assert out.startswith("10.0.1."), "lookup of %s through dnsmasq: %r" % (name, out)

    def chaos(self, name):
        """The TXT strings dnsmasq answers for CHAOS `name`, read with dig."""
        out = dig(self.port, "-c", "chaos", "-t", "txt", name)
        return re.findall(r'"([^"]*)"', out)

    def stat(self, name):
        return int(self.chaos(name + ".bind")[0])

    def stop(self):
        self.server.stop()


def dig(port, *args):
    cmd = [server_binary("dig"), "+short", "+tries=1", "+time=3", "@127.0.0.1", "-p", str(port), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=15, check=True).stdout.strip()


@pytest.fixture(scope="module")
def named(tmp_path_factory):
    n = Named(tmp_path_factory.mktemp("named"))
    yield n
    n.stop()


@pytest.fixture(scope="module")
def other(named, tmp_path_factory):
    """A dnsmasq that stays up for the whole module (the 'other instance' of the failure tests)."""
    d = Dnsmasq(tmp_path_factory.mktemp("dnsmasq-other"), named.port, 50)
    d.lookup("b9")
    yield d
    d.stop()


def records(probe, table=None):
    """probe.records() without the newline conftest's ProbeRun leaves as a last value."""
    return [(t, v[:-1] if v and v[-1] == "\n" else v) for t, v in probe.records(table)]


def last(records, table, *keys):
    found = [v for t, v in records if t == table and v[: len(keys)] == list(keys)]
    return found[-1] if found else None


def test_meta_matches_records_and_parsers():
    mod = load_probe_module()
    fields = meta_fields(META)
    assert fields["dnsmasq_cache"][:2] == ["instance", "version"]
    assert len(fields["dnsmasq_server"]) == 4 and len(fields["dnsmasq_instance"]) == 4
    # Packet parsing: a good answer, then garbage of each kind is an error, never a crash.
    q = mod.build_query(0x1234, "hits.bind")
    good = bytearray(q)
    good[2:4] = struct.pack(">H", 0x8400)
    good[6:8] = struct.pack(">H", 1)
    good += b"\xc0\x0c" + struct.pack(">HHIH", 16, 3, 0, 3) + b"\x0242"
    assert mod.parse_answer(bytes(good), 0x1234, "hits.bind") == ["42"]
    assert mod.parse_answer(bytes(good), 0x1234, "HITS.bind.") == ["42"]
    with pytest.raises(mod.DnsError):
        mod.parse_answer(bytes(good), 0x1235, "hits.bind")  # wrong id
    with pytest.raises(mod.DnsError):
        mod.parse_answer(bytes(good), 0x1234, "misses.bind")  # another question
    with pytest.raises(mod.DnsError):
        mod.parse_answer(q, 0x1234, "hits.bind")  # QR clear
    for cut in range(0, len(good) - 1):
        with pytest.raises(mod.DnsError):
            mod.parse_answer(bytes(good[:cut]), 0x1234, "hits.bind")
    loop = bytearray(good[:12]) + b"\xc0\x0c"
    with pytest.raises(mod.DnsError):
        mod.parse_answer(bytes(loop), 0x1234, "hits.bind")  # compression pointer to itself
    tc = bytearray(good)
    tc[2:4] = struct.pack(">H", 0x8600)
    with pytest.raises(mod.Truncated):
        mod.parse_answer(bytes(tc), 0x1234, "hits.bind")
    refused = bytearray(good)
    refused[2:4] = struct.pack(">H", 0x8405)
    with pytest.raises(mod.RcodeError):
        mod.parse_answer(bytes(refused), 0x1234, "hits.bind")
    rnd = random.Random(7)
    for _ in range(2000):
        junk = bytes(rnd.randrange(256) for _ in range(rnd.randrange(80)))
        try:
            mod.parse_answer(junk, 0x1234, "hits.bind")
        except mod.DnsError:
            pass
    with pytest.raises(mod.DnsError):
        mod.parse_count(["12x"], "hits.bind")
    assert mod.parse_servers(["1.2.3.4#53 10 2", "::1#5353 3 0 extra", "1.2.3.4#53 1 1"]) == [
        ("1.2.3.4#53", 11, 3),
        ("::1#5353", 3, 0),
    ]
    with pytest.raises(mod.DnsError):
        mod.parse_servers(["1.2.3.4#53 ten 2"])
    assert mod.parse_instances("127.0.0.1:5353, [::1]:54,::1:55,host") == [
        ("127.0.0.1:5353", "127.0.0.1", 5353, None),
        ("[::1]:54", "::1", 54, None),
        ("[::1]:55", "::1", 55, None),
        ("host:53", "host", 53, None),
    ]
    for bad in ("1.2.3.4:x", "[::1", "1.2.3.4:0", ":53"):
        with pytest.raises(ValueError):
            mod.parse_instances(bad)
    assert mod.pick_address([("10.0.0.5", 53), ("0.0.0.0", 53), ("::", 53)]) == {53: "127.0.0.1"}
    assert mod.pick_address([("10.0.0.5", 53)]) == {53: "10.0.0.5"}


def txt_answer(query, strings, flags=0x8400):
    """An answer to `query` (one question) with one TXT record holding `strings`."""
    rdata = b"".join(bytes([len(x)]) + x.encode() for x in strings)
    header = query[:2] + struct.pack(">HHHHH", flags, 1, 1, 0, 0)
    return header + query[12:] + b"\xc0\x0c" + struct.pack(">HHIH", 16, 3, 0, len(rdata)) + rdata


def test_truncated_answer_is_asked_again_over_tcp():
    """servers.bind too large for UDP: the TC answer is followed by the same query over TCP."""
    mod = load_probe_module()
    servers = ["10.0.%d.%d#53 %d 1" % (i // 250, i % 250, i) for i in range(100)]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    port = udp.getsockname()[1]
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", port))
    tcp.listen(4)
    stop = threading.Event()

    def serve_udp():
        udp.settimeout(0.1)
        while not stop.is_set():
            try:
                q, addr = udp.recvfrom(512)
            except socket.timeout:
                continue
            if b"\x07servers" in q:
                udp.sendto(txt_answer(q, servers[:3], 0x8600), addr)  # TC set
            else:
                udp.sendto(txt_answer(q, ["5"]), addr)

    def serve_tcp():
        tcp.settimeout(0.1)
        while not stop.is_set():
            try:
                c, _ = tcp.accept()
            except socket.timeout:
                continue
            with c:
                c.settimeout(2)
                data = c.recv(4096)
                a = txt_answer(data[2:], servers)
                c.sendall(struct.pack(">H", len(a)) + a)

    threads = [threading.Thread(target=f, daemon=True) for f in (serve_udp, serve_tcp)]
    for t in threads:
        t.start()
    try:
        (s,) = mod.scrape_all([("k", "127.0.0.1", port, None)], 2.0)
        assert s.error is None, s.error
        assert mod.parse_servers(s.answers["servers.bind"]) == [
            tuple([x.split()[0], int(x.split()[1]), 1]) for x in sorted(servers, key=lambda x: x.split()[0])
        ]
        assert s.answers["hits.bind"] == ["5"]
    finally:
        stop.set()
        for t in threads:
            t.join(2)
        udp.close()
        tcp.close()


def test_counters_match_dnsmasq_and_named(named, tmp_path):
    big = Dnsmasq(tmp_path, named.port, 100)
    small = Dnsmasq(tmp_path, named.port, 2)
    queries_before = named.stats()["opcodes"]["QUERY"]
    try:
        for d in (big, small):
            for n in NAMES + REPEATS:
                d.lookup(n)
        # Known pattern. Cache of 100: every distinct name misses once, every repeat hits.
        # Cache of 2 (LRU): b4, b5 stay; b1 misses, b1 b1 hit, b2 misses, b5 misses, b5 b5 hit.
        expect = {
            big.key: dict(cache_size=100, insertions=5, evictions=0, misses=5, hits=7),
            small.key: dict(cache_size=2, insertions=8, evictions=6, misses=8, hits=4),
        }
        with ProbeRun(SCRIPT, ["-t", "1", "-a", "%s,%s" % (big.key, small.key)]) as probe:
            probe.wait(lambda p: all(len([1 for t, v in records(p, "dnsmasq_cache") if v[0] == k]) >= 3 for k in expect))
            assert probe.stop() == 0
        recs = records(probe)
        for d in (big, small):
            mine = [v for t, v in recs if t == "dnsmasq_cache" and v[0] == d.key]
            health = [v for t, v in recs if t == "dnsmasq_instance" and v[0] == d.key]
            assert health and all(h[1:3] == ["1", "0"] for h in health), health
            assert len(mine) == len(health)
            e = expect[d.key]
            # The first scrape asks hits.bind first: no CHAOS query was counted before it. (More
            # means something else asks dnsmasq's statistics: another dnsmasq probe on the host.)
            assert int(mine[0][6]) == e["hits"], "hits: another CHAOS querier on this host?"
            for i, v in enumerate(mine):
                assert v[1] == "dnsmasq-2.90" or v[1].startswith("dnsmasq-"), v
                got = dict(zip(("cache_size", "insertions", "evictions", "misses", "hits"), map(int, v[2:7])))
                assert got == dict(e, hits=e["hits"] + QUERIES_PER_SCRAPE * i), (d.key, i, v)
                assert v[7] == "0"  # auth.bind: not an authoritative server
            # dnsmasq's own answers, read independently after the probe stopped (hits.bind first:
            # it counts the probe's CHAOS queries, QUERIES_PER_SCRAPE per scrape, and no others).
            own_hits = d.stat("hits")
            assert own_hits == e["hits"] + QUERIES_PER_SCRAPE * len(mine)
            own = {k: d.stat(k.replace("_", "")) for k in ("cache_size", "insertions", "evictions", "misses")}
            assert own == {k: int(mine[-1][2 + i]) for i, k in enumerate(own)}
            assert own == {k: e[k] for k in own}
            servers = [s.split() for s in d.chaos("servers.bind")]
            assert servers == [["127.0.0.1#%d" % named.port, str(e["misses"]), "0"]]
            assert last(recs, "dnsmasq_server", d.key) == [d.key, "127.0.0.1#%d" % named.port, str(e["misses"]), "0"]
        # named saw exactly the queries the two dnsmasq forwarded.
        assert named.stats()["opcodes"]["QUERY"] - queries_before == 5 + 8
    finally:
        big.stop()
        small.stop()


def test_down_slow_garbage_and_recovery(named, other, tmp_path):
    slow = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers
    slow.bind(("127.0.0.1", 0))
    garbage = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    garbage.bind(("127.0.0.1", 0))
    stop = threading.Event()

    def answer_garbage():
        garbage.settimeout(0.1)
        n = 0
        while not stop.is_set():
            try:
                data, addr = garbage.recvfrom(4096)
            except socket.timeout:
                continue
            n += 1
            kind = n % 3
            if kind == 0:
                reply = os.urandom(random.randrange(0, 60))
            elif kind == 1:  # right id, QR set, 5 answers announced, none there
                reply = data[:2] + struct.pack(">HHHHH", 0x8400, 1, 5, 0, 0) + data[12:]
            else:  # right id, TXT answer that is not a number
                reply = (data[:2] + struct.pack(">HHHHH", 0x8400, 1, 1, 0, 0) + data[12:]
                         + b"\xc0\x0c" + struct.pack(">HHIH", 16, 3, 0, 4) + b"\x03abc")
            garbage.sendto(reply, addr)

    thread = threading.Thread(target=answer_garbage, daemon=True)
    thread.start()
    down_port = free_udp_and_tcp_port()
    keys = {
        "slow": "127.0.0.1:%d" % slow.getsockname()[1],
        "garbage": "127.0.0.1:%d" % garbage.getsockname()[1],
        "down": "127.0.0.1:%d" % down_port,
    }
    revived = None
    try:
        args = ["-t", "1", "-a", ",".join(list(keys.values()) + [other.key])]
        with ProbeRun(SCRIPT, args) as probe:

            def errors(p, key):
                h = last(records(p), "dnsmasq_instance", key)
                return int(h[2]) if h and h[1] == "0" else 0

            probe.wait(lambda p: all(errors(p, k) >= 3 for k in keys.values()), 30)
            # The other instance kept being reported, up, every period.
            assert last(records(probe), "dnsmasq_instance", other.key)[1:3] == ["1", "0"]
            n_other = len([1 for t, v in records(probe, "dnsmasq_cache") if v[0] == other.key])
            n_periods = len([1 for t, v in records(probe, "dnsmasq_instance") if v[0] == other.key])
            assert n_other == n_periods >= 3
            # A slow instance costs at most the request timeout (period 1 s: 0.5 s).
            h = last(records(probe), "dnsmasq_instance", keys["slow"])
            assert 0.4 <= float(h[3]) < 1.0, h
            assert probe.proc.poll() is None
            # The down instance comes up: reported again, errors kept.
            revived = Dnsmasq(tmp_path, named.port, 10, port=down_port)
            probe.wait(lambda p: last(records(p), "dnsmasq_cache", keys["down"]), 15)
            h = last(records(probe), "dnsmasq_instance", keys["down"])
            assert h[1] == "1" and int(h[2]) >= 3
            # And goes down again.
            before = errors(probe, keys["down"]) or int(h[2])
            revived.stop()
            probe.wait(lambda p: errors(p, keys["down"]) > before, 15)
            assert probe.stop() == 0
        err = probe.stderr_text()
        for k in keys.values():
            assert err.count("%s is down" % k) == (2 if k == keys["down"] else 1), err
        assert err.count("%s is up again" % keys["down"]) == 1
    finally:
        stop.set()
        thread.join(2)
        slow.close()
        garbage.close()
        if revived:
            revived.stop()


def test_discovery_appear_disappear(named, other, tmp_path):
    with ProbeRun(SCRIPT, ["-t", "1"]) as probe:
        probe.wait(lambda p: last(records(p), "dnsmasq_cache", other.key), 15)
        late = Dnsmasq(tmp_path, named.port, 20)
        # One in a network namespace of its own: reached from inside it, named ADDR:PORT@pidPID.
        contained = Dnsmasq(tmp_path / "ns", named.port, 30, netns=True)
        try:
            late.lookup("b3")
            rec = probe.wait(lambda p: last(records(p), "dnsmasq_cache", late.key), 15)
            assert rec[2:6] == ["20", "1", "0", "1"]
            server = probe.wait(lambda p: last(records(p), "dnsmasq_server", late.key), 5)
            assert server[1:] == ["127.0.0.1#%d" % named.port, "1", "0"]
            rec = probe.wait(lambda p: last(records(p), "dnsmasq_cache", contained.key), 15)
            assert rec[2:6] == ["30", "0", "0", "0"] and int(rec[6]) % QUERIES_PER_SCRAPE == 0, rec
            assert last(records(probe), "dnsmasq_instance", contained.key)[1] == "1"
        finally:
            late.stop()
            contained.stop()
        mark = len(probe.lines)

        def periods_after(p):
            return [i for i, line in enumerate(p.lines) if i >= mark and line.startswith("|dnsmasq_instance|%s|" % other.key)]

        probe.wait(lambda p: len(periods_after(p)) >= 3, 15)
        first_clean = periods_after(probe)[1]
        gone = [l for l in probe.lines[first_clean:] if "|%s|" % late.key in l or contained.key in l]
        assert gone == [], gone
        assert probe.stop() == 0


def test_control_channel_changes_instances_without_restart(named, other):
    probe = ProbeRun(SCRIPT, ["-t", "1"], stdin=subprocess.PIPE)
    with probe:
        probe.wait(lambda p: last(records(p), "dnsmasq_cache", other.key), 15)
        pid = probe.proc.pid
        fake = "127.0.0.1:%d" % free_udp_and_tcp_port()
        line = {"v": 1, "params": {"report_period": 1, "instances": fake, "discover": 0}}
        probe.proc.stdin.write((json.dumps(line) + "\n").encode())
        probe.proc.stdin.flush()
        mark = len(probe.lines)
        probe.wait(lambda p: any(l.startswith("|dnsmasq_instance|%s|0|" % fake) for l in p.lines[mark:]), 10)
        idx = max(i for i, l in enumerate(probe.lines) if l.startswith("|dnsmasq_instance|%s|" % fake))
        probe.wait(lambda p: len([l for l in p.lines[idx + 1 :] if l.startswith("|dnsmasq_instance|")]) >= 2, 10)
        after = [l for l in probe.lines[idx + 1 :] if l.startswith("|dnsmasq")]
        assert after and all(l.startswith("|dnsmasq_instance|%s|0|" % fake) for l in after), after
        assert probe.proc.pid == pid and probe.proc.poll() is None
        probe.proc.stdin.close()
        assert probe.stop() == 0


def test_daemon_dropin(named, other):
    misses = other.stat("misses")
    conf = 'probes = ({ name = "dnsmasq"; param = "-t 1"; switch = "on"; });'
    with Daemon([SCRIPT, META], conf) as d:
        label = 'instance="%s"' % other.key
        _, v = d.wait_metric("gala_gopher_dnsmasq_misses", 40, lambda l, v: label in l)
        assert v == misses
        _, v = d.wait_metric("gala_gopher_dnsmasq_cache_size", 10, lambda l, v: label in l)
        assert v == 50
        d.wait_metric("gala_gopher_dnsmasq_up", 10, lambda l, v: label in l and v == 1)
        labels, v = d.wait_metric("gala_gopher_dnsmasq_server_queries", 10, lambda l, v: label in l)
        assert 'server="127.0.0.1#%d"' % named.port in labels and v == misses
        labels, v = d.wait_metric("gala_gopher_dnsmasq_hits", 10, lambda l, v: label in l)
        assert 'version="dnsmasq-' in labels
