"""Acceptance tests of the bind probe against real named processes (Debian's bind9).

Named A is primary for `test.` and `fwd.`; named B is a secondary for `test.` (one zone transfer
from A at start) and forwards `fwd.` to A. The test sends a known set of queries with `dig`,
reads each statistics channel itself (`/json/v1/server`) and compares with what the probe
reports and with the load it made.
"""

import http.server
import json
import os
import re
import socket
import subprocess
import threading
import urllib.request

import pytest

from conftest import Daemon, ProbeRun, Server, free_port, load_probe, server_binary, wait_for, wait_port

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(os.path.dirname(HERE), "bind.py")
META = os.path.join(os.path.dirname(HERE), "bind.meta")


def load_probe_module():
    return load_probe(SCRIPT, "bind_probe")


def meta_fields(path):
    """{table: [field names]} of a .meta file."""
    text = open(path).read().split("probe =")[0]
    out = {}
    for block in text.split("table_name:")[1:]:
        table = re.match(r'\s*"(\w+)"', block).group(1)
        out[table] = re.findall(r'type: "\w+", name: "(\w+)"', block)
    return out


def free_udp_and_tcp_port():
    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    pytest.fail("no free UDP+TCP port")


ZONE = "$TTL 3600\n@ IN SOA ns.%s. admin.%s. 1 3600 600 86400 300\n@ IN NS ns.%s.\nns IN A 127.0.0.1\n"


class Named:
    """A real named in `root`: `zones` is the text of its zone statements (%(root)s and
    %(primary)d are filled in); the statistics channel is on its own port (none when
    stats=False)."""

    def __init__(self, root, zones, primary=0, stats=True, stats_port=None, include=False, netns=False):
        self.root = str(root)
        os.makedirs(self.root, exist_ok=True)
        self.port = free_udp_and_tcp_port()
        self.stats_port = stats_port or free_port()
        self.key = "127.0.0.1:%d" % self.stats_port
        self.conf = os.path.join(self.root, "named.conf")
        for zone, records in (("test", "".join("b%d IN A 10.0.1.%d\n" % (i, i) for i in range(1, 10))),
                              ("fwd", "f1 IN A 10.2.0.1\nf2 IN A 10.2.0.2\n")):
            with open(os.path.join(self.root, zone + ".zone"), "w") as f:
                f.write(ZONE % (zone, zone, zone) + records)
        r = self.root
        channel = (
            "/* the statistics channel */ statistics-channels {\n"
            "  inet 127.0.0.1 port %d allow { 127.0.0.1; }; # loopback only\n};\n" % self.stats_port
        )
        if include:  # the channel in an included file, as Debian's named.conf.local would be
            with open(os.path.join(r, "named.conf.local"), "w") as f:
                f.write(channel)
            channel = 'include "%s/named.conf.local";\n' % r
        with open(self.conf, "w") as f:
            f.write(
                'options { directory "%s"; pid-file "%s/named.pid"; session-keyfile "%s/session.key";\n'
                "  listen-on port %d { 127.0.0.1; }; listen-on-v6 { none; }; recursion yes;\n"
                "  notify no; dnssec-validation no; };\ncontrols { };\n%s%s\n"
                % (r, r, r, self.port, channel if stats else "", zones % {"root": r, "primary": primary})
            )
        prefix = []
        if netns:  # a network namespace of its own, as in a container
            prefix = [server_binary("unshare"), "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"']
        cmd = prefix + [server_binary("named"), "-g", "-c", self.conf]
        self.server = Server(cmd, log=os.path.join(r, "named.log"))
        if netns:
            self.key = "127.0.0.1:%d@pid%d" % (self.stats_port, self.server.pid)
            return
        wait_port(self.port)
        if stats:
            wait_port(self.stats_port)

    def stats(self):
        url = "http://127.0.0.1:%d/json/v1/server" % self.stats_port
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())

    def dig(self, name, qtype="A"):
        cmd = [server_binary("dig"), "+short", "+tries=1", "+time=3", "@127.0.0.1", "-p", str(self.port), name, qtype]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=15, check=True).stdout.strip()

    def stop(self):
        self.server.stop()


PRIMARY_ZONES = (
    'zone "test." { type primary; file "%(root)s/test.zone"; };\n'
    'zone "fwd." { type primary; file "%(root)s/fwd.zone"; };\n'
)
SECONDARY_ZONES = (
    'zone "test." { type secondary; primaries { 127.0.0.1 port %(primary)d; }; file "%(root)s/test.bk"; };\n'
    'zone "fwd." { type forward; forward only; forwarders { 127.0.0.1 port %(primary)d; }; };\n'
)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    a = Named(tmp_path_factory.mktemp("named-a"), PRIMARY_ZONES, include=True)
    b = Named(tmp_path_factory.mktemp("named-b"), SECONDARY_ZONES, primary=a.port)
    try:
        # B's transfer of test. from A (asked without sending B any query, so that its counters
        # only hold what the tests send).
        done = wait_for(lambda: b.stats().get("zonestats", {}).get("XfrSuccess") == 1, 20)
        assert done, b.server.log_text()[-3000:]
        yield a, b
    finally:
        b.stop()
        a.stop()


def records(probe, table=None):
    """probe.records() without the newline conftest's ProbeRun leaves as a last value."""
    return [(t, v[:-1] if v and v[-1] == "\n" else v) for t, v in probe.records(table)]


def last(recs, table, *keys):
    found = [v for t, v in recs if t == table and v[: len(keys)] == list(keys)]
    return found[-1] if found else None


def by_key(recs, table, instance):
    """{second key: value} of the newest period's records of a (instance, key) -> count table."""
    out = {}
    for t, v in recs:
        if t == table and v[0] == instance:
            out[v[1]] = int(v[2])
    return out


def test_meta_matches_probe_and_parsers(tmp_path):
    mod = load_probe_module()
    fields = meta_fields(META)
    assert fields["bind"][3:] == [f for f, _, _ in mod.SERVER_FIELDS + mod.SERVER_GAUGES]
    assert fields["bind_resolver"][2:] == [f for f, _, _ in mod.RESOLVER_FIELDS + mod.RESOLVER_GAUGES]
    for t in ("bind_qtype", "bind_rcode", "bind_opcode", "bind_instance"):
        assert fields[t][0] == "instance"
    # named.conf: comments, strings, includes (relative too), several channels, `port *`.
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "named.conf").write_text(
        '// statistics-channels { inet 10.9.9.9 port 1; };\n# also a comment\n'
        'options { directory "/var/cache/bind"; };\n/* statistics-channels {\n inet 10.8.8.8; }; */\n'
        'include "/etc/sub.conf";\ninclude "rel.conf";\n'
    )
    (tmp_path / "etc" / "sub.conf").write_text(
        'statistics-channels { inet 192.0.2.1 port 8053 allow { 10/8; 127.0.0.1; }; inet * port *; };\n'
    )
    (tmp_path / "etc" / "rel.conf").write_text('statistics-channels{inet ::1 port 8054;inet 198.51.100.7;};')
    root = str(tmp_path)
    channels, files = mod.read_config(root, "/etc/named.conf")
    assert channels == [("192.0.2.1", 8053), ("::1", 8054), ("198.51.100.7", 80)]
    assert len(files) == 3
    assert mod.pick_channel(channels) == ("::1", 8054)
    assert mod.pick_channel([("0.0.0.0", 8080), ("192.0.2.1", 1)]) == ("127.0.0.1", 8080)
    (tmp_path / "etc" / "loop.conf").write_text('include "/etc/loop.conf";')
    with pytest.raises(mod.ConfigError):
        mod.read_config(root, "/etc/loop.conf")
    with pytest.raises(mod.ConfigError):
        mod.read_config(root, "/etc/missing.conf")
    os.mkfifo(str(tmp_path / "etc" / "fifo.conf"))  # never opened for a blocking read
    (tmp_path / "etc" / "to-fifo.conf").write_text('include "/etc/fifo.conf";')
    with pytest.raises(mod.ConfigError, match="not a regular file"):
        mod.read_config(root, "/etc/to-fifo.conf")
    (tmp_path / "etc" / "open.conf").write_text('statistics-channels { inet "127.0.0.1 };')
    with pytest.raises(mod.ConfigError, match="unterminated"):
        mod.read_config(root, "/etc/open.conf")
    assert mod.config_path(["named", "-g", "-c", "/x.conf"]) == "/x.conf"
    assert mod.config_path(["named", "-u", "bind", "-c/y.conf"]) == "/y.conf"
    assert mod.config_path(["named", "-f", "-u", "bind"]) is None
    # Statistics documents that are not BIND's are errors.
    for body in (b"", b"<html>", b"[]", b'{"json-stats-version":"2.0"}', b'{"json-stats-version":"1.7","nsstats":[]}',
                 b'{"json-stats-version":"1.7","nsstats":{"Requestv4":"12"}}',
                 b'{"json-stats-version":"1.7","qtypes":{"A":-1}}', b"[" * 100000):
        with pytest.raises(mod.StatsError):
            mod.parse_stats(body)
    rows = mod.parse_stats(b'{"json-stats-version":"1.7","nsstats":{"Requestv4":3,"Requestv6":2}}')
    assert rows[0][3] == 5 and len(rows[0]) == len(fields["bind"])


def test_counters_match_stats_channel_and_load(pair):
    a, b = pair
    # Known load. To A: 4 A queries that exist, one name that does not, one MX with no MX record.
    for n in ("b1", "b2", "b3", "b4"):
        assert a.dig(n + ".test") == "10.0.1." + n[1:]
    assert a.dig("nope.test") == ""
    assert a.dig("b1.test", "MX") == ""
    # To B: fwd. names forwarded to A, 2 distinct of 4 (2 cache misses, 2 hits).
    for n in ("f1", "f2", "f1", "f1"):
        assert b.dig(n + ".fwd").startswith("10.2.0.")
    with ProbeRun(SCRIPT, ["-t", "1"]) as probe:  # discovery only
        probe.wait(lambda p: last(records(p), "bind_instance", a.key) and last(records(p), "bind_instance", b.key), 20)
        assert probe.stop() == 0
    recs = records(probe)
    fields = meta_fields(META)
    got_a, got_b = last(recs, "bind", a.key), last(recs, "bind", b.key)
    assert got_a and got_b and len(got_a) == len(fields["bind"])
    server_a = dict(zip(fields["bind"], got_a))
    server_b = dict(zip(fields["bind"], got_b))
    stats_a, stats_b = a.stats(), b.stats()  # read independently, after the probe stopped
    ns_a, zs_b = stats_a["nsstats"], stats_b.get("zonestats", {})
    # Equal to the server's own counters.
    for field, key in (("requests", "Requestv4"), ("responses", "Response"), ("qry_success", "QrySuccess"),
                       ("qry_nxdomain", "QryNXDOMAIN"), ("qry_nxrrset", "QryNxrrset"), ("xfr_req_done", "XfrReqDone"),
                       ("qry_auth_ans", "QryAuthAns"), ("qry_udp", "QryUDP")):
        assert int(server_a[field]) == ns_a.get(key, 0), field
    assert server_a["version"] == stats_a["version"]
    assert by_key(recs, "bind_qtype", a.key) == stats_a["qtypes"]
    assert by_key(recs, "bind_opcode", a.key)["QUERY"] == stats_a["opcodes"]["QUERY"]
    rcodes = by_key(recs, "bind_rcode", a.key)
    assert {k: v for k, v in rcodes.items() if v} == {k: v for k, v in stats_a["rcodes"].items() if v}
    assert int(server_b["xfr_success"]) == zs_b["XfrSuccess"] and int(server_b["axfr_requested"]) == zs_b["AXFRReqv4"]
    # And equal to the load: A got our 6 queries, B's SOA query and AXFR, and B's 2 forwarded.
    assert by_key(recs, "bind_qtype", a.key) == {"A": 4 + 1 + 2, "MX": 1, "SOA": 1, "AXFR": 1}
    assert int(server_a["requests"]) == 6 + 2 + 2
    assert by_key(recs, "bind_opcode", a.key)["QUERY"] == 10
    assert rcodes["NXDOMAIN"] == 1 and int(server_a["qry_nxdomain"]) == 1 and int(server_a["qry_nxrrset"]) == 1
    assert int(server_a["xfr_req_done"]) == 1 and int(server_a["xfr_fail"]) == 0
    assert (int(server_b["xfr_success"]), int(server_b["axfr_requested"]), int(server_b["xfr_fail"])) == (1, 1, 0)
    assert int(server_b["requests"]) == 4
    res = dict(zip(fields["bind_resolver"], last(recs, "bind_resolver", b.key, "_default")))
    view = stats_b["views"]["_default"]["resolver"]
    assert int(res["res_queries"]) == view["stats"].get("Queryv4", 0) == 2
    assert int(res["res_responses"]) == view["stats"].get("Responsev4", 0) == 2
    assert int(res["cache_query_hits"]) == view["cachestats"]["QueryHits"] == 2
    assert int(res["cache_query_misses"]) == view["cachestats"]["QueryMisses"] == 2
    assert int(res["cache_hits"]) == view["cachestats"]["CacheHits"]
    assert int(res["cache_misses"]) == view["cachestats"]["CacheMisses"]
    assert int(res["res_timeouts"]) == int(res["res_servfail"]) == 0
    h = last(recs, "bind_instance", a.key)
    assert h[1:3] == ["1", "0"]


class GarbageHandler(http.server.BaseHTTPRequestHandler):
    """Each request gets another kind of wrong answer."""

    answers = [
        (200, b"<html>not json</html>"),
        (200, b'{"json-stats-version":"1.7","nsstats":{"Requestv4":"many"}}'),
        (404, b"not found"),
        (200, b'{"json-stats-version":"1.7","views":{"_default":[1]}}'),
    ]
    count = 0

    def do_GET(self):
        GarbageHandler.count += 1
        status, body = self.answers[GarbageHandler.count % len(self.answers)]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_down_slow_garbage_and_recovery(pair, tmp_path):
    a, _b = pair
    slow = socket.socket()  # accepts (backlog), never answers
    slow.bind(("127.0.0.1", 0))
    slow.listen(16)
    garbage = http.server.ThreadingHTTPServer(("127.0.0.1", 0), GarbageHandler)
    thread = threading.Thread(target=garbage.serve_forever, daemon=True)
    thread.start()
    down_port = free_port()
    keys = {
        "slow": "127.0.0.1:%d" % slow.getsockname()[1],
        "garbage": "127.0.0.1:%d" % garbage.server_address[1],
        "down": "127.0.0.1:%d" % down_port,
    }
    revived = None
    try:
        args = ["-t", "1", "-a", ",".join(keys.values())]
        with ProbeRun(SCRIPT, args) as probe:

            def errors(p, key):
                h = last(records(p), "bind_instance", key)
                return int(h[2]) if h and h[1] == "0" else 0

            probe.wait(lambda p: all(errors(p, k) >= 4 for k in keys.values()), 30)
            # The discovered instance kept being reported every period, up.
            n_a = len([1 for t, v in records(probe, "bind") if v[0] == a.key])
            n_health = len([1 for t, v in records(probe, "bind_instance") if v[0] == a.key])
            assert n_a == n_health >= 4 and last(records(probe), "bind_instance", a.key)[1:3] == ["1", "0"]
            h = last(records(probe), "bind_instance", keys["slow"])
            assert 0.4 <= float(h[3]) < 1.0, h  # the request timeout of a 1 s period
            # The down instance comes up (a named with its statistics channel on that port).
            revived = Named(tmp_path, PRIMARY_ZONES, stats_port=down_port)
            probe.wait(lambda p: last(records(p), "bind", keys["down"]), 15)
            h = last(records(probe), "bind_instance", keys["down"])
            assert h[1] == "1" and int(h[2]) >= 4
            before = int(h[2])
            revived.stop()
            probe.wait(lambda p: errors(p, keys["down"]) > before, 15)
            assert probe.stop() == 0
        err = probe.stderr_text()
        for k in keys.values():
            assert err.count("%s is down" % k) == (2 if k == keys["down"] else 1), err
        assert err.count("%s is up again" % keys["down"]) == 1
    finally:
        garbage.shutdown()
        garbage.server_close()
        slow.close()
        if revived:
            revived.stop()


def test_discovery_appear_disappear(pair, tmp_path):
    a, _b = pair
    with ProbeRun(SCRIPT, ["-t", "1"]) as probe:
        probe.wait(lambda p: last(records(p), "bind", a.key), 15)
        late = Named(tmp_path / "late", PRIMARY_ZONES)
        hidden = Named(tmp_path / "hidden", PRIMARY_ZONES, stats=False)
        contained = Named(tmp_path / "ns", PRIMARY_ZONES, netns=True)
        try:
            rec = probe.wait(lambda p: last(records(p), "bind", late.key), 15)
            assert rec[1] == a.stats()["version"]
            probe.wait(lambda p: "named pid %d not watched" % hidden.server.pid in p.stderr_text(), 10)
            # Reached from inside its namespace (only the probe's worker thread enters it).
            rec = probe.wait(lambda p: last(records(p), "bind", contained.key), 15)
            assert rec[1] == a.stats()["version"] and rec[3] == "0"  # nobody queried it
            assert last(records(probe), "bind_instance", contained.key)[1] == "1"
        finally:
            late.stop()
            hidden.stop()
            contained.stop()
        mark = len(probe.lines)

        def periods_after(p):
            return [i for i, l in enumerate(p.lines) if i >= mark and l.startswith("|bind_instance|%s|" % a.key)]

        probe.wait(lambda p: len(periods_after(p)) >= 3, 15)
        gone = [l for l in probe.lines[periods_after(probe)[1] :] if "|%s|" % late.key in l or contained.key in l]
        assert gone == [], gone
        assert probe.stop() == 0
    assert probe.stderr_text().count("named pid %d not watched" % hidden.server.pid) == 1


def test_control_channel_changes_instances_without_restart(pair):
    a, _b = pair
    probe = ProbeRun(SCRIPT, ["-t", "1"], stdin=subprocess.PIPE)
    with probe:
        probe.wait(lambda p: last(records(p), "bind", a.key), 15)
        pid = probe.proc.pid
        fake = "127.0.0.1:%d" % free_port()
        line = {"v": 1, "params": {"report_period": 1, "instances": fake, "discover": 0}}
        probe.proc.stdin.write((json.dumps(line) + "\n").encode())
        probe.proc.stdin.flush()
        probe.wait(lambda p: any(l.startswith("|bind_instance|%s|0|" % fake) for l in p.lines), 10)
        idx = max(i for i, l in enumerate(probe.lines) if l.startswith("|bind_instance|%s|" % fake))
        probe.wait(lambda p: len([l for l in p.lines[idx + 1 :] if l.startswith("|bind_instance|")]) >= 2, 10)
        after = [l for l in probe.lines[idx + 1 :] if l.startswith("|bind")]
        assert after and all(l.startswith("|bind_instance|%s|0|" % fake) for l in after), after
        assert probe.proc.pid == pid and probe.proc.poll() is None
        probe.proc.stdin.close()
        assert probe.stop() == 0


def test_daemon_dropin(pair):
    a, _b = pair
    conf = 'probes = ({ name = "bind"; param = "-t 1"; switch = "on"; });'
    with Daemon([SCRIPT, META], conf) as d:
        label = 'instance="%s"' % a.key
        d.wait_metric("gala_gopher_bind_up", 40, lambda l, v: label in l and v == 1)
        stats = a.stats()  # A gets no DNS traffic during this test
        _, v = d.wait_metric("gala_gopher_bind_requests", 10, lambda l, v: label in l)
        assert v == stats["nsstats"]["Requestv4"]
        _, v = d.wait_metric("gala_gopher_bind_qtype_queries", 10, lambda l, v: label in l and 'qtype="A"' in l)
        assert v == stats["qtypes"]["A"]
        d.wait_metric("gala_gopher_bind_rcode_responses", 10, lambda l, v: label in l and 'rcode="NOERROR"' in l)
        d.wait_metric("gala_gopher_bind_res_queries", 10, lambda l, v: label in l and 'view="_default"' in l)
