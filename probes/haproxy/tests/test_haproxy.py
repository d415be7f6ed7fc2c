"""Acceptance tests of the haproxy probe against a real HAProxy (Debian's package, 2.6).

Each HAProxy runs in the foreground (`-db`) from a temp dir: a stats socket (unix, level admin,
plus a TCP one of level operator), an HTTP frontend proxying to a python HTTP server run by the
test, and a TCP frontend proxying to a server of the test that holds connections open. The test
reads `show stat`, `show info` and `show sess` itself through the socket and compares with what the
probe reports.
"""

import http.client
import http.server
import json
import os
import socket
import threading
import time

import pytest

from conftest import Daemon, ProbeRun, Server, free_port, load_probe, server_binary, wait_for, wait_port
import gala_middleware as mw  # noqa: E402 (the SDK folder is on sys.path through conftest)

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(os.path.dirname(HERE), "haproxy.py")
META = os.path.join(os.path.dirname(HERE), "haproxy.meta")


def load_probe_module():
    return load_probe(SCRIPT, "haproxy_probe")


PROBE = load_probe_module()
INFO_COLS = ["instance", "version"] + [k for k, _ in PROBE.INFO_FIELDS]
STAT_COLS = ["instance", "proxy", "name", "type", "status", "mode", "status_up"] + list(
    PROBE.STAT_FIELDS)
STAT_COUNTERS = ("stot", "bin", "bout", "dreq", "dresp", "ereq", "econ", "eresp", "wretr",
                 "wredis", "chkfail", "chkdown", "lbtot", "hrsp_1xx", "hrsp_2xx", "hrsp_3xx",
                 "hrsp_4xx", "hrsp_5xx", "hrsp_other", "req_tot", "cli_abrt", "srv_abrt",
                 "conn_tot", "dcon", "dses", "wrew", "eint")


def cli(address, command, timeout=5.0):
    """The answer of one stats socket command, read by the test itself."""
    if isinstance(address, str):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(address)
    s.sendall(command.encode() + b"\n")
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    return out.decode()


def server_stat(address):
    """{(proxy, svname): {column: text}} of `show stat`, read by the test."""
    lines = cli(address, "show stat").splitlines()
    cols = lines[0][2:].split(",")
    return {(r[0], r[1]): dict(zip(cols, r)) for r in (l.split(",") for l in lines[1:] if l)}


class Backend:
    """A python HTTP server: /ok answers 200, anything else 404 (HTTP/1.0: one request per
    connection)."""

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                code = 200 if self.path == "/ok" else 404
                body = b"ok\n" if code == 200 else b"no\n"
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class Holder:
    """A TCP server on 127.0.0.3 that accepts connections and keeps them open until the peer
    closes."""

    def __init__(self, host="127.0.0.3"):
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held = []
        self.stopped = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(c)
            threading.Thread(target=self._drain, args=(c,), daemon=True).start()

    @staticmethod
    def _drain(c):
        try:
            while c.recv(4096):
                pass
        except OSError:
            pass
        c.close()

    def close(self):
        self.stopped = True
        self.sock.close()
        for c in self.held:
            c.close()


class BadServer:
    """`slow`: accepts and never answers; `garbage`: answers bytes that are no stats answer."""

    def __init__(self, kind, path=None):
        if path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(path)
            self.name = path
        else:
            self.sock = socket.socket()
            self.sock.bind(("127.0.0.1", 0))
            self.name = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.sock.listen(16)
        self.kind = kind
        self.held = []
        self.stopped = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            if self.kind == "slow":
                self.held.append(c)
            else:
                try:
                    c.recv(100)
                    c.sendall(b"\x00\xffHELLO|garbage\nVersion\n" * 50)
                except OSError:
                    pass
                c.close()

    def close(self):
        self.stopped = True
        self.sock.close()
        for c in self.held:
            c.close()


class HAProxy:
    """A real haproxy in the foreground, config and sockets in `root`."""

    def __init__(self, root, stats_port=None, with_proxies=True):
        self.root = str(root)
        os.makedirs(self.root, exist_ok=True)
        self.sock = os.path.join(self.root, "admin.sock")
        self.stats_port = stats_port or free_port()
        self.http_port = free_port()
        self.tcp_port = free_port()
        self.backend = Backend() if with_proxies else None
        self.holder = Holder() if with_proxies else None
        self.conf = os.path.join(self.root, "haproxy.cfg")
        text = (
            "global\n"
            "    maxconn 200  # the limit\n"
            "    stats socket %s mode 600 level admin\n"
            "    stats socket ipv4@127.0.0.1:%d level operator\n"
            "defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n"
            "    timeout server 30s\n"
            % (self.sock, self.stats_port)
        )
        if with_proxies:
            text += (
                "frontend fe_http\n    bind 127.0.0.1:%d\n    default_backend be_http\n"
                "backend be_http\n    server web 127.0.0.1:%d\n"
                "frontend fe_tcp\n    mode tcp\n    bind 127.0.0.1:%d\n    default_backend be_tcp\n"
                "backend be_tcp\n    mode tcp\n    server hold 127.0.0.3:%d\n"
                % (self.http_port, self.backend.port, self.tcp_port, self.holder.port)
            )
        with open(self.conf, "w") as f:
            f.write(text)
        self.server = None

    def start(self):
        self.server = Server([server_binary("haproxy"), "-f", self.conf, "-db"])
        wait_port(self.stats_port, 20)
        assert wait_for(lambda: os.path.exists(self.sock), 10), self.server.log_text()
        return self

    def stop(self):
        if self.server:
            self.server.stop()
            self.server = None

    def close(self):
        self.stop()
        if self.backend:
            self.backend.close()
            self.holder.close()


@pytest.fixture(scope="module")
def haproxy(tmp_path_factory):
    h = HAProxy(tmp_path_factory.mktemp("haproxy")).start()
    yield h
    h.close()


def rows(run, table, cols):
    return [dict(zip(cols, v)) for _, v in run.records(table)]


def instance_records(run, name):
    return [(int(v[1]), int(v[2])) for _, v in run.records("haproxy_instance") if v[0] == name]


def stat_row(run, instance, proxy, name):
    found = [r for r in rows(run, "haproxy_stat", STAT_COLS)
             if r["instance"] == instance and r["proxy"] == proxy and r["name"] == name]
    return found[-1] if found else None


def info_rows(run, instance):
    return [r for r in rows(run, "haproxy_info", INFO_COLS) if r["instance"] == instance]


# --- Parsers on odd input ------------------------------------------------------------------------


def test_parsers_on_odd_input():
    cfg = (
        "# comment\nglobal\n  stats socket /run/a.sock mode 600 level admin # trailing\n"
        "  stats socket 'ipv4@0.0.0.0:9100' level user\n  stats socket abns@hidden\n"
        "  stats socket \"${SOCK}\"\n  stats socket 'unbalanced\n  # stats socket /no.sock\n"
        "  stats timeout 30s\n"
        "defaults\n  mode http\nlisten stats\n  stats socket /not-global.sock\n"
        "global\n  stats socket ipv6@[::]:9101\n"
    )
    assert PROBE.stats_sockets(cfg) == ["/run/a.sock", "ipv4@0.0.0.0:9100", "abns@hidden",
                                        "ipv6@[::]:9101"]
    assert PROBE.parse_socket_spec("/run/a.sock") == ("/run/a.sock", "/run/a.sock")
    assert PROBE.parse_socket_spec("unix@/run/a.sock") == ("/run/a.sock", "/run/a.sock")
    assert PROBE.parse_socket_spec("ipv4@0.0.0.0:9100") == ("127.0.0.1:9100", ("127.0.0.1", 9100))
    assert PROBE.parse_socket_spec("ipv6@[::]:9101") == ("[::1]:9101", ("::1", 9101))
    assert PROBE.parse_socket_spec("ipv6@::1:9101") == ("[::1]:9101", ("::1", 9101))
    assert PROBE.parse_socket_spec("10.0.0.1:80") == ("10.0.0.1:80", ("10.0.0.1", 80))
    for bad in ("abns@hidden", "fd@3", "ipv4@host.example:80", "1.2.3.4:99999", "", "x", ":"):
        assert PROBE.parse_socket_spec(bad) is None, bad
    assert PROBE.config_args(["haproxy", "-Ws", "-f", "a.cfg", "-C", "/etc/hx", "-p", "p",
                              "-f", "/d", "--", "b.cfg"]) == (["a.cfg", "/d", "b.cfg"], "/etc/hx")
    for status, up in (("UP", 1), ("UP 1/3", 1), ("OPEN", 1), ("no check", 1), ("DRAIN", 1),
                       ("DOWN", 0), ("DOWN 1/2", 0), ("MAINT", 0), ("MAINT(via)", 0),
                       ("STOP", 0), ("", None)):
        assert PROBE.status_up(status) == up, status
    with pytest.raises(PROBE.ScrapeError):
        PROBE.parse_info("HTTP/1.0 200 OK\r\n\r\nhello")
    with pytest.raises(PROBE.ScrapeError):
        PROBE.parse_stat("Unknown command\n")
    assert PROBE.parse_stat("# pxname,svname,scur\nfe,FRONTEND,1\nbroken\n\n") == [
        {"pxname": "fe", "svname": "FRONTEND", "scur": "1"}]
    p = PROBE.SessionParser()
    text = (
        "0x1: [04/Dec/2026:17:35:23.629157] id=0 proto=tcpv4 source=10.1.1.1:34186\n"
        "  frontend=fe2 (id=4 mode=tcp), listener=? (id=1) addr=10.0.0.1:443\n"
        "  backend=be2 (id=5 mode=tcp) addr=10.0.0.1:40162\n"
        "  server=s2 (id=1) addr=10.2.2.2:8443\n"
        "0x2: [..] id=1 proto=tcpv6 source=::1:5555\n"
        "  frontend=fe6 (id=4 mode=http), listener=? (id=1) addr=::1:80\n"
        "  server=s6 (id=1) addr=::1:8080\n"
        "0x3: [..] id=2 proto=tcpv4 source=10.1.1.1:1\n"
        "  frontend=fe2 (id=4 mode=tcp), listener=? (id=1) addr=10.0.0.1:443\n"
        "  server=<NONE> (id=-1)\n"
        "0x4: [..] id=3 proto=unix_stream source=unix:1\n"
        "  frontend=GLOBAL (id=0 mode=tcp), listener=? (id=1) addr=unix:1\n"
        "0x5: [..] id=4 proto=tcpv4 source=10.1.1.1:34187\n"
        "  frontend=fe2 (id=4 mode=tcp), listener=? (id=1) addr=10.0.0.1:443\n"
        "  server=s2 (id=1) addr=10.2.2.2:8443\n"
        "garbage line \xff\n"
    )
    for line in text.splitlines():
        p.line(line)
    assert p.finish() == {("10.1.1.1", "10.0.0.1", "10.2.2.2", 443, 8443, "tcp"): 2,
                          ("::1", "::1", "::1", 80, 8080, "http"): 1}


def test_link_rows_zeroed_only_when_known_gone(monkeypatch):
    out = []
    monkeypatch.setattr(PROBE.gala_probe, "record", lambda *v: out.append(v))
    probe = PROBE.Probe()
    a = ("10.0.0.1", "10.0.0.2", "10.0.0.3", 80, 8080, "http")
    b = ("10.0.0.9", "10.0.0.2", "10.0.0.3", 80, 8080, "http")
    script = []
    probe.targets = lambda *args: {"/a.sock": ["/a.sock"]}
    probe.fetch = lambda *args: None  # no server: account() below plays the answers
    probe.account = lambda *args: script.pop(0)

    def period(result):
        script.append(result)
        del out[:]
        probe.period("", "", True, 3, 1.0)
        return sorted(v[1:] for v in out if v[0] == "haproxy_link")

    assert period((("n", "1", "t"), {a: 2, b: 1})) == [a + (2,), b + (1,)]
    assert period((("n", "1", "t"), {a: 1})) == [a + (1,), b + (0,)]  # b went: 0 once
    assert period((("n", "1", "t"), {a: 1})) == [a + (1,)]
    assert period((("n", "1", "t"), None)) == []  # show sess failed: nothing known, no zero
    assert period((("n", "1", "t"), {a: 3})) == [a + (3,)]
    assert period(None) == [a + (0,)]  # the instance is down: its sessions are gone


# --- Against the real server ---------------------------------------------------------------------


def test_counts_match_server(haproxy):
    run = ProbeRun(SCRIPT, ["-t", "1"])
    inst = haproxy.sock  # discovered: the first stats socket of the config
    try:
        run.wait(lambda r: info_rows(r, inst) and stat_row(r, inst, "fe_http", "FRONTEND"), 20)
        # Known load: 4 client connections, 7 requests answered 200 and 4 answered 404.
        before = len(info_rows(run, inst))
        first = info_rows(run, inst)[-1]
        conns = ([("/ok",) * 3, ("/ok",) * 2, ("/ok",) * 2, ("/missing",) * 4])
        for paths in conns:
            c = http.client.HTTPConnection("127.0.0.1", haproxy.http_port, timeout=10)
            for path in paths:
                c.request("GET", path)
                resp = c.getresponse()
                resp.read()
                assert resp.status == (200 if path == "/ok" else 404)
            c.close()
        # The first record after the load is complete and nothing moves after it.
        run.wait(lambda r: len(info_rows(r, inst)) >= before + 2, 10)
        run.wait(lambda r: (stat_row(r, inst, "fe_http", "FRONTEND") or {}).get("req_tot") == "11",
                 10)
        mark = len(info_rows(run, inst))
        run.wait(lambda r: len(info_rows(r, inst)) > mark, 10)
        last = info_rows(run, inst)[-1]
        periods = len(info_rows(run, inst)) - before
        truth = server_stat(haproxy.sock)  # after `last`: stat counters do not move without traffic
        fe = stat_row(run, inst, "fe_http", "FRONTEND")
        be = stat_row(run, inst, "be_http", "BACKEND")
        web = stat_row(run, inst, "be_http", "web")
        # Known load.
        assert (fe["type"], be["type"], web["type"]) == ("frontend", "backend", "server")
        assert fe["req_tot"] == "11" and fe["stot"] == "4" and fe["conn_tot"] == "4"
        assert fe["hrsp_2xx"] == "7" and fe["hrsp_4xx"] == "4" and fe["hrsp_5xx"] == "0"
        assert web["hrsp_2xx"] == "7" and web["hrsp_4xx"] == "4" and web["lbtot"] == "11"
        assert fe["status"] == "OPEN" and fe["status_up"] == "1" and fe["mode"] == "http"
        assert be["status"] == "UP" and web["status"] == "no check" and web["status_up"] == "1"
        assert int(fe["bin"]) > 0 and int(fe["bout"]) > 0
        # Exactly the server's own counters.
        for key, row in ((("fe_http", "FRONTEND"), fe), (("be_http", "BACKEND"), be),
                         (("be_http", "web"), web)):
            for col in STAT_COUNTERS:
                assert row[col] == truth[key].get(col, ""), (key, col, row[col], truth[key][col])
            assert row["slim"] == truth[key]["slim"]
        assert fe["slim"] == "200"
        # show info: CumReq counts the 11 requests and every stats socket session; the probe opens
        # three per period (show info, show stat, show sess).
        assert int(last["CumReq"]) - int(first["CumReq"]) == 11 + 3 * periods
        assert int(last["CumConns"]) - int(first["CumConns"]) == 4 + 3 * periods
        answer = cli(haproxy.sock, "show info")
        info = dict(l.split(": ", 1) for l in answer.splitlines() if ": " in l)
        assert last["version"] == info["Version"]
        assert last["Maxconn"] == info["Maxconn"] == "200"
        assert last["Nbthread"] == info["Nbthread"]
        assert abs(int(last["Uptime_sec"]) - int(info["Uptime_sec"])) <= 2
        assert instance_records(run, inst)[-1] == (1, 0)
        assert run.stop() == 0
    finally:
        run.stop()


def test_links_from_sessions(haproxy):
    run = ProbeRun(SCRIPT, ["-t", "1"])
    clients = []
    key = ["127.0.0.2", "127.0.0.1", "127.0.0.3", str(haproxy.tcp_port), str(haproxy.holder.port),
           "tcp"]

    def links(r):
        return [int(v[6]) for _, v in r.records("haproxy_link") if v[:6] == key]

    try:
        for _ in range(2):
            c = socket.create_connection(("127.0.0.1", haproxy.tcp_port), 5,
                                         source_address=("127.0.0.2", 0))
            clients.append(c)
        # The server's own view: two sessions 127.0.0.2 -> fe_tcp -> hold.
        assert wait_for(lambda: sum(
            1 for l in cli(haproxy.sock, "show sess").splitlines()
            if " src=127.0.0.2:" in l and " fe=fe_tcp " in l and " srv=hold " in l) == 2, 10)
        run.wait(lambda r: links(r) and links(r)[-1] == 2, 15)
        clients.pop().close()
        run.wait(lambda r: links(r)[-1] == 1, 15)
        clients.pop().close()
        run.wait(lambda r: links(r)[-1] == 0, 15)  # written once with 0 when the link goes
        mark = len(run.lines)
        run.wait(lambda r: len([l for l in r.lines[mark:] if l.startswith("|haproxy_info|")]) >= 2,
                 10)
        assert not any(l.startswith("|haproxy_link|127.0.0.2|") for l in run.lines[mark + 1 :])
        assert run.stop() == 0
    finally:
        for c in clients:
            c.close()
        run.stop()


def test_down_slow_garbage_instances_and_recovery(haproxy, tmp_path):
    down = free_port()
    slow = BadServer("slow", path=str(tmp_path / "slow.sock"))
    garbage = BadServer("garbage")
    names = [slow.name, garbage.name, "127.0.0.1:%d" % down]
    run = ProbeRun(SCRIPT, ["-t", "1", "-S", slow.name,
                            "-A", "%s,ipv4@127.0.0.1:%d" % (garbage.name, down)])
    revived = None
    try:
        start = time.monotonic()
        run.wait(lambda r: all(instance_records(r, n)[2:] for n in names), 20)
        for n in names:
            recs = instance_records(run, n)
            assert all(up == 0 for up, _ in recs), (n, recs)
            assert [e for _, e in recs] == list(range(1, len(recs) + 1)), (n, recs)
            assert not info_rows(run, n)
            assert run.stderr_text().count("%s is down" % n) == 1
        # The real haproxy keeps being reported every period; the slow one costs one timeout.
        assert instance_records(run, haproxy.sock)[-1] == (1, 0)
        periods = len(instance_records(run, haproxy.sock))
        assert periods >= (time.monotonic() - start) - 2, periods
        # The down instance comes back: a real haproxy with its stats socket on that port.
        revived = HAProxy(tmp_path / "revived", stats_port=down, with_proxies=False).start()
        n = "127.0.0.1:%d" % down
        run.wait(lambda r: instance_records(r, n)[-1][0] == 1 and info_rows(r, n), 20)
        assert "is up again" in run.stderr_text()
        assert run.proc.poll() is None
        assert run.stop() == 0
    finally:
        run.stop()
        slow.close()
        garbage.close()
        if revived:
            revived.close()


def test_discovery_appear_and_disappear(haproxy, tmp_path):
    run = ProbeRun(SCRIPT, ["-t", "1"])
    late = HAProxy(tmp_path / "late", with_proxies=False)
    try:
        run.wait(lambda r: instance_records(r, haproxy.sock), 15)
        assert not instance_records(run, late.sock)
        late.start()
        run.wait(lambda r: info_rows(r, late.sock) and instance_records(r, late.sock)[-1][0] == 1,
                 15)
        # One instance per process: its second (TCP) socket is not another instance.
        assert not instance_records(run, "127.0.0.1:%d" % late.stats_port)
        late.stop()
        mark = len(run.lines)

        def gone(r):
            after = r.lines[mark:]
            marks = [i for i, l in enumerate(after)
                     if l.startswith("|haproxy_instance|%s|" % haproxy.sock)]
            return len(marks) >= 3 and not any(late.sock in l for l in after[marks[1]:])

        run.wait(gone, 15)
        assert run.stop() == 0
    finally:
        run.stop()
        late.close()


def test_daemon_drop_in(haproxy):
    conf = 'probes = ({ name = "haproxy"; param = "-t 1"; switch = "on"; });'
    with Daemon([SCRIPT, META], conf) as d:
        where = lambda labels, v: 'instance="%s"' % haproxy.sock in labels  # noqa: E731
        _, up = d.wait_metric("gala_gopher_haproxy_up", 60, where)
        assert up == 1
        truth = server_stat(haproxy.sock)[("fe_http", "FRONTEND")]
        d.wait_metric("gala_gopher_haproxy_stat_req_tot", 30,
                      lambda l, v: where(l, v) and 'proxy="fe_http"' in l
                      and 'name="FRONTEND"' in l and v == int(truth["req_tot"]))
        d.wait_metric("gala_gopher_haproxy_cum_req", 30, where)
        d.wait_metric("gala_gopher_haproxy_scrape_errors", 30, lambda l, v: where(l, v) and v == 0)
        # A param set through the API (gopher-ctl's socket) reaches the running probe on its
        # control channel: the new instance appears and the probe keeps its pid.
        cmd = os.path.join(d.dir, "cmd.sock")
        extra = "127.0.0.1:%d" % haproxy.stats_port
        pid = json.loads(mw.http_request(cmd, "/haproxy", 5)[2])["pid"]
        body = json.dumps({"params": {"stats_addrs": extra}}).encode()
        status, _, answer = mw.http_request(cmd, "/haproxy", 5, method="PUT", body=body,
                                            headers={"Content-Type": "application/json"})
        assert status == 200, answer
        d.wait_metric("gala_gopher_haproxy_up", 30,
                      lambda l, v: 'instance="%s"' % extra in l and v == 1)
        assert json.loads(mw.http_request(cmd, "/haproxy", 5)[2])["pid"] == pid
