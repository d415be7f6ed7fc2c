"""Acceptance tests of the nginx probe against a real nginx (Debian's package).

Each nginx runs from a temp prefix on free 127.0.0.1 ports with one worker, a stub_status location
and a proxy_pass (with upstream keep-alive) to a second server block of its own, found through an
`include` glob. The test reads stub_status itself and compares with what the probe reports.
"""

import json
import os
import re
import socket
import subprocess
import threading

import pytest

from conftest import Daemon, ProbeRun, Server, free_port, load_probe, server_binary, wait_port

import gala_middleware as mw  # noqa: E402 (the SDK folder is on sys.path through conftest)
import gala_probe  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(os.path.dirname(HERE), "nginx.py")
META = os.path.join(os.path.dirname(HERE), "nginx.meta")

STATUS_FIELDS = ("active", "accepted", "handled", "requests", "reading", "writing", "waiting")


def load_probe_module():
    return load_probe(SCRIPT, "nginx_probe")


class Nginx:
    """A real nginx: front server (stub_status at /status, /proxy/ to the back server) and a back
    server block in conf.d/ (reached through `include conf.d/*.conf`)."""

    def __init__(self, root, front=None, back=None, unix_status=False):
        self.root = str(root)
        self.front = front or free_port()
        self.back = back or free_port()
        os.makedirs(os.path.join(self.root, "conf.d"), exist_ok=True)
        self.conf = os.path.join(self.root, "nginx.conf")
        r = self.root
        unix = os.path.join(r, "status.sock")
        # With unix_status, stub_status is only in a first server on a unix socket.
        unix_server = ("  server { listen unix:%s;\n"
                       "    location /st { location /st/us { stub_status; } } }\n"
                       % unix) if unix_status else ""
        status_location = "" if unix_status else "    location = /status { stub_status; }\n"
        with open(self.conf, "w") as f:
            f.write(
                "worker_processes 1;\nuser root;\npid %s/nginx.pid;\nerror_log %s/error.log;\n"
                "events { worker_connections 1024; }\n"
                "http {\n  access_log off;\n"
                "  client_body_temp_path %s/body; proxy_temp_path %s/proxy;\n"
                "  fastcgi_temp_path %s/fcgi; uwsgi_temp_path %s/uwsgi; scgi_temp_path %s/scgi;\n"
                "  upstream back { server 127.0.0.1:%d; keepalive 4; }\n"
                "  include conf.d/*.conf;  # the back server\n%s"
                "  server {\n    listen 127.0.0.1:%d;\n    server_name front.test;\n%s"
                "    location /proxy/ { proxy_pass http://back/; proxy_http_version 1.1;\n"
                "                       proxy_set_header Connection \"\"; }\n"
                "    location / { return 200 \"front\\n\"; }\n  }\n}\n"
                % (r, r, r, r, r, r, r, self.back, unix_server, self.front, status_location)
            )
        with open(os.path.join(self.root, "conf.d", "back.conf"), "w") as f:
            f.write("server { listen 127.0.0.1:%d; location / { return 200 \"back\\n\"; } }\n"
                    % self.back)
        self.instance = ("unix:" + unix) if unix_status else "127.0.0.1:%d" % self.front
        self.server = None

    def start(self):
        binary = server_binary("nginx")
        self.server = Server([binary, "-c", self.conf, "-p", self.root + "/", "-g", "daemon off;"])
        wait_port(self.front)
        wait_port(self.back)
        return self

    def stop(self):
        if self.server is not None:
            self.server.stop()
            self.server = None

    def status(self):
        """The stub_status page read by the test itself (one connection, one request)."""
        raw = http_get(self.front, "/status")
        m = re.search(
            rb"Active connections:\s*(\d+)\s*\nserver accepts handled requests\s*\n\s*(\d+)\s+"
            rb"(\d+)\s+(\d+)\s*\nReading:\s*(\d+)\s+Writing:\s*(\d+)\s+Waiting:\s*(\d+)", raw)
        assert m, raw
        return dict(zip(STATUS_FIELDS, (int(g) for g in m.groups())))


def http_get(port, path, sock=None):
    """One request; on `sock` (kept open, keep-alive) or a new connection (closed)."""
    own = sock is None
    s = sock or socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: t\r\n%s\r\n"
                   % (path, "Connection: close\r\n" if own else "")).encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            assert chunk, "connection closed early: %r" % data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        n = int(re.search(rb"Content-Length: (\d+)", head, re.I).group(1))
        while len(body) < n:
            chunk = s.recv(65536)
            assert chunk
            body += chunk
        assert head.startswith(b"HTTP/1.1 200"), head
        return body
    finally:
        if own:
            s.close()


@pytest.fixture(scope="module")
def nginx(tmp_path_factory):
    n = Nginx(tmp_path_factory.mktemp("nginx")).start()
    yield n
    n.stop()


def status_records(run, instance):
    return [dict(zip(STATUS_FIELDS, (int(x) for x in v[1:])))
            for _, v in run.records("nginx_status") if v[0] == instance]


def instance_records(run, instance):
    return [(int(v[1]), int(v[2])) for _, v in run.records("nginx_instance") if v[0] == instance]


def link_batches(run):
    """nginx_link rows per period: {keys tuple: count}, only periods that are complete."""
    batches, current, in_links = [], None, False
    for line in run.lines:
        if line.startswith("|nginx_link|"):
            if not in_links:
                current, in_links = {}, True
            _, v = run_split(line)
            current[tuple(v[:7])] = int(v[7])
        else:
            if in_links:
                batches.append(current)
            in_links = False
    return batches


def run_split(line):
    return gala_probe.split_line(line.rstrip("\n"))


def test_config_reader_follows_includes_and_listen_forms(tmp_path):
    mod = load_probe_module()
    (tmp_path / "etc/ng/sites").mkdir(parents=True)
    (tmp_path / "etc/ng/nginx.conf").write_text(
        "events {}\nhttp {\n include sites/*.conf; # glob\n"
        " server { listen 443 ssl; location /s { stub_status; } }\n}\n"
        "stream { server { listen 9000; proxy_pass 10.0.0.1:9; } }\n")
    (tmp_path / "etc/ng/sites/a.conf").write_text(
        "server { listen [::1]:8081; listen 8082 default_server; listen unix:/run/n.sock;\n"
        "  server_name *.x 'st\\'at.test';\n"
        "  location / { location = /basic_status { stub_status on; } }\n}\n")
    reader = mod.ConfReader(root=str(tmp_path))
    info = mod.analyse(reader.parse_file("/etc/ng/nginx.conf", "/etc/ng"))
    assert info.targets == [
        (("::1", 8081), "[::1]:8081", "/basic_status", "st'at.test"),
        (("127.0.0.1", 8082), "127.0.0.1:8082", "/basic_status", "st'at.test"),
        ("/run/n.sock", "unix:/run/n.sock", "/basic_status", "st'at.test"),
    ]
    assert info.http_ports == {8081, 8082, 443} and info.stream_ports == {9000}
    # Bounded: an include loop stops at the depth limit instead of recursing for ever.
    (tmp_path / "etc/ng/loop.conf").write_text("include loop.conf;\n")
    with pytest.raises(mod.ConfError):
        mod.ConfReader(root=str(tmp_path)).parse_file("/etc/ng/loop.conf", "/etc/ng")
    # What the server's owner plants cannot lead the root probe out of the server's root: an
    # absolute symlink resolves inside it, a FIFO is refused at once instead of blocking.
    outside = tmp_path.parent / (tmp_path.name + "-host")
    outside.mkdir()
    (outside / "secret.conf").write_text("http { server { listen 7777; location /s { stub_status; } } }\n")
    os.symlink(str(outside / "secret.conf"), str(tmp_path / "etc/ng/evil.conf"))
    (tmp_path / "etc/ng/evil-main.conf").write_text("include evil.conf;\n")
    with pytest.raises(mod.ConfError):
        mod.ConfReader(root=str(tmp_path)).parse_file("/etc/ng/evil-main.conf", "/etc/ng")
    os.mkfifo(str(tmp_path / "etc/ng/fifo.conf"))
    (tmp_path / "etc/ng/fifo-main.conf").write_text("include fifo.conf;\n")
    with pytest.raises(mod.ConfError, match="not a regular file"):
        mod.ConfReader(root=str(tmp_path)).parse_file("/etc/ng/fifo-main.conf", "/etc/ng")
    for bad in ("http {", "http { } }", "a 'b;"):
        (tmp_path / "bad.conf").write_text(bad)
        with pytest.raises(mod.ConfError):
            mod.ConfReader(root=str(tmp_path)).parse_file("/bad.conf", "/")
    assert mod.main_conf_path(["nginx: master process /usr/sbin/nginx -p /x -c n.conf"]) == \
        ("/x/n.conf", "/x/")
    assert mod.main_conf_path(["nginx: master process nginx"])[0] == "/etc/nginx/nginx.conf"
    ok, bad = mod.parse_status_urls(
        "127.0.0.1:80@a@b,::1:81,localhost:82,x:1,1.2.3.4:0,1.2.3.4:5@..")
    assert ok == [(("127.0.0.1", 80), "127.0.0.1:80", "/a/b"), (("::1", 81), "[::1]:81",
                   "/nginx_status"), (("127.0.0.1", 82), "127.0.0.1:82", "/nginx_status")]
    assert bad == ["x:1", "1.2.3.4:0", "1.2.3.4:5@.."]


def test_status_matches_server_counters(nginx):
    """N requests over M keep-alive connections: the probe's values equal stub_status as the
    test reads it, plus exactly the probe's own request."""
    held = [socket.create_connection(("127.0.0.1", nginx.front), timeout=5) for _ in range(3)]
    run = ProbeRun(SCRIPT, ["-t", "1"])
    try:
        for s in held:  # idle keep-alive connections: waiting = 3
            http_get(nginx.front, "/", s)
        n_conns, per_conn = 5, 4
        for attempt in range(4):
            seen = len(status_records(run, nginx.instance))
            run.wait(lambda r: len(status_records(r, nginx.instance)) > seen, 15)
            before = nginx.status()
            for _ in range(n_conns):
                with socket.create_connection(("127.0.0.1", nginx.front), timeout=5) as s:
                    for _ in range(per_conn):
                        http_get(nginx.front, "/", s)
            after = nginx.status()
            seen = len(status_records(run, nginx.instance))
            probe = run.wait(lambda r: status_records(r, nginx.instance)[seen:], 15)[0]
            if probe["requests"] <= after["requests"]:
                continue  # the probe read the page while the test's load ran: measure again
            # The server's own counters, read by the test: N requests, M connections (+ its read).
            assert after["requests"] - before["requests"] == n_conns * per_conn + 1
            assert after["accepted"] - before["accepted"] == n_conns + 1
            # The probe's values: the same counters plus its own one request on one connection.
            for f in ("accepted", "handled", "requests"):
                assert probe[f] == after[f] + 1, (f, probe, after)
            # Gauges: the same quiet state (3 idle connections + the reader's own one).
            for f in ("active", "reading", "writing", "waiting"):
                assert probe[f] == after[f], (f, probe, after)
            assert probe["waiting"] == 3 and probe["active"] == 4
            break
        else:
            pytest.fail("the probe's read never fell outside the test's load window")
        assert instance_records(run, nginx.instance)[-1] == (1, 0)
        assert run.stop() == 0
    finally:
        for s in held:
            s.close()
        run.stop()


def test_links_match_worker_sockets(nginx):
    """nginx_link rows: one per client connection (with -c 1) and the upstream keep-alive
    connection to the back server, checked against `ss`; then report_cport=0 sent as a control
    line aggregates client ports without a restart."""
    held = [socket.create_connection(("127.0.0.1", nginx.front), timeout=5) for _ in range(3)]
    run = ProbeRun(SCRIPT, ["-t", "1", "-c", "1"], stdin=subprocess.PIPE)
    try:
        for s in held:  # sequential proxied requests: one upstream keep-alive connection
            assert http_get(nginx.front, "/proxy/x", s) == b"back\n"
        ports = sorted(str(s.getsockname()[1]) for s in held)
        ss = subprocess.run(["ss", "-Htn", "state", "established", "( dport = :%d )" % nginx.back],
                            capture_output=True, text=True, check=True).stdout.split()
        # ss columns without the state: Recv-Q Send-Q Local Peer; nginx's side to the back server
        upstream_locals = [ss[i + 2].rsplit(":", 1)[1] for i in range(0, len(ss), 4)]
        assert len(upstream_locals) == 1, ss
        front, back = str(nginx.front), str(nginx.back)
        ours = lambda k: front in (k[4], k[5]) or back in (k[4], k[5])  # noqa: E731
        expected = {("127.0.0.1", "127.0.0.1", "unknown", p, front, "unknown", "1"): 1
                    for p in ports}
        expected[("127.0.0.1", "127.0.0.1", "unknown", upstream_locals[0], back, "unknown",
                  "1")] = 1
        expected[("unknown", "unknown", "127.0.0.1", "0", "unknown", back, "1")] = 1
        seen = len(link_batches(run))
        batch = run.wait(lambda r: link_batches(r)[seen + 1:], 15)[0]
        assert {k: v for k, v in batch.items() if ours(k)} == expected
        run.proc.stdin.write(b'{"params":{"report_cport":0,"report_period":1}}\n')
        run.proc.stdin.flush()
        expected = {("127.0.0.1", "127.0.0.1", "unknown", "0", front, "unknown", "1"): 3,
                    ("127.0.0.1", "127.0.0.1", "unknown", "0", back, "unknown", "1"): 1,
                    ("unknown", "unknown", "127.0.0.1", "0", "unknown", back, "1"): 1}
        run.wait(lambda r: any({k: v for k, v in b.items() if ours(k)} == expected
                               for b in link_batches(r)[seen + 2:]), 15)
        assert run.stop() == 0
    finally:
        for s in held:
            s.close()
        run.stop()


def test_sock_diag_and_proc_net_tcp_agree(nginx):
    """The two socket readers (netlink sock_diag, the default; /proc/PID/net/tcp, for another
    network namespace or without netlink) give the same sockets of the nginx processes."""
    mod = load_probe_module()
    held = [socket.create_connection(("127.0.0.1", nginx.front), timeout=5) for _ in range(4)]
    try:
        for s in held:
            http_get(nginx.front, "/proxy/y", s)
        master = nginx.server.pid
        pids = [master] + [p.pid for p in mod.mw.processes(["nginx"]) if mod.mw.ppid(p.pid) == master]
        assert len(pids) == 2, pids  # the master and its one worker
        inodes = mod.socket_inodes(pids)
        diag = sorted(mod.diag_tcp_sockets(inodes))
        text = sorted(mod.tcp_sockets(mod.read_net_tcp(master), inodes))
        assert diag == text
        listens = {local for state, local, _ in diag if state == "0A"}
        assert listens == {("127.0.0.1", nginx.front), ("127.0.0.1", nginx.back)}
        mine = {("127.0.0.1", s.getsockname()[1]) for s in held}
        assert mine <= {remote for state, _, remote in diag if state == "01"}
    finally:
        for s in held:
            s.close()


class BadServer:
    """A TCP server on 127.0.0.1 that either never answers ("slow") or answers garbage."""

    def __init__(self, mode):
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held = []
        self.stopped = False
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            if self.mode == "slow":
                self.held.append(c)  # accepted, never answered
                continue
            try:
                c.recv(4096)
                if self.mode == "garbage-http":
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nnot a status")
                else:
                    c.sendall(b"\x00\xff\xfe garbage \x01\n" * 10)
            except OSError:
                pass
            c.close()

    def close(self):
        self.stopped = True
        self.sock.close()
        for c in self.held:
            c.close()


def test_down_slow_garbage_instances_and_recovery(nginx, tmp_path):
    down = free_port()
    bad = [BadServer("slow"), BadServer("garbage-http"), BadServer("garbage")]
    urls = ",".join(["127.0.0.1:%d@status" % down] + ["127.0.0.1:%d" % b.port for b in bad])
    names = ["127.0.0.1:%d" % down] + ["127.0.0.1:%d" % b.port for b in bad]
    run = ProbeRun(SCRIPT, ["-t", "1", "-u", urls])
    revived = None
    try:
        # Every bad instance: up 0 with errors counted, each period; the real nginx keeps up=1.
        run.wait(lambda r: all(instance_records(r, n)[2:] for n in names), 20)
        for n in names:
            recs = instance_records(run, n)
            assert all(up == 0 for up, _ in recs), (n, recs)
            assert [e for _, e in recs] == list(range(1, len(recs) + 1)), (n, recs)
            assert n not in [v[0] for _, v in run.records("nginx_status")]
        assert instance_records(run, nginx.instance)[-1][0] == 1
        # The slow server costs one timeout (0.5 s at -t 1), never a stalled probe.
        slow = [float(v[3]) for _, v in run.records("nginx_instance") if v[0] == names[1]]
        assert all(0.4 <= t < 0.9 for t in slow), slow
        assert run.stderr_text().count("127.0.0.1:%d is down" % bad[0].port) == 1
        # The down instance comes back: a real nginx on that port.
        revived = Nginx(tmp_path, front=down).start()
        n = "127.0.0.1:%d" % down
        run.wait(lambda r: instance_records(r, n)[-1][0] == 1 and status_records(r, n), 20)
        assert "is up again" in run.stderr_text()
        assert run.proc.poll() is None
        assert run.stop() == 0
    finally:
        run.stop()
        for b in bad:
            b.close()
        if revived:
            revived.stop()


def test_discovery_appear_and_disappear(tmp_path):
    marker = "127.0.0.1:%d" % free_port()  # down: one nginx_instance row every period
    run = ProbeRun(SCRIPT, ["-t", "1", "-u", marker])
    late = Nginx(tmp_path)
    try:
        run.wait(lambda r: instance_records(r, marker), 15)
        assert not instance_records(run, late.instance)
        late.start()
        rec = run.wait(lambda r: status_records(r, late.instance), 15)[0]
        assert rec["requests"] >= 1
        assert instance_records(run, late.instance)[-1][0] == 1
        late.stop()
        mark = len(run.lines)

        def gone(r):
            after = r.lines[mark:]
            prefix = "|nginx_instance|%s|" % marker
            markers = [i for i, l in enumerate(after) if l.startswith(prefix)]
            if len(markers) < 3:
                return False
            return not any("|%s|" % late.instance in l for l in after[markers[1]:])

        run.wait(gone, 15)
        assert run.stop() == 0
    finally:
        run.stop()
        late.stop()


def test_unix_socket_status_is_discovered(tmp_path):
    """stub_status only on `listen unix:` (in a nested location): found and read through
    /proc/PID/root; the counters move by exactly the test's and the probe's requests."""
    run = ProbeRun(SCRIPT, ["-t", "1"])
    ngx = Nginx(tmp_path, unix_status=True).start()
    try:
        first = run.wait(lambda r: status_records(r, ngx.instance), 15)[0]
        for _ in range(7):
            http_get(ngx.front, "/")
        seen = len(status_records(run, ngx.instance))
        run.wait(lambda r: status_records(r, ngx.instance)[seen:], 15)
        records = status_records(run, ngx.instance)
        # Every record is one read of the probe: one connection, one request. Between the first
        # and the last record, the server counted the test's 7 and the probe's len - 1.
        reads = len(records) - 1
        for f in ("accepted", "handled", "requests"):
            assert records[-1][f] - first[f] == 7 + reads, (f, records)
        assert instance_records(run, ngx.instance)[-1] == (1, 0)
        assert run.stop() == 0
    finally:
        run.stop()
        ngx.stop()


def test_daemon_drop_in(nginx):
    conf = 'probes = ({ name = "nginx"; param = "-t 1"; switch = "on"; });'
    with Daemon([SCRIPT, META], conf) as d:
        where = lambda labels, v: 'instance="%s"' % nginx.instance in labels  # noqa: E731
        _, requests = d.wait_metric("gala_gopher_nginx_requests", 60, where)
        _, up = d.wait_metric("gala_gopher_nginx_up", 30, where)
        assert up == 1 and requests >= 1
        truth = nginx.status()
        # Counters only grow: the daemon's later value is at least the test's read + its own.
        d.wait_metric("gala_gopher_nginx_requests", 30,
                      lambda l, v: where(l, v) and v >= truth["requests"] + 1)
        d.wait_metric("gala_gopher_nginx_waiting", 30, where)
        d.wait_metric("gala_gopher_nginx_scrape_errors", 30, lambda l, v: where(l, v) and v == 0)
        back = str(nginx.back)
        _, links = d.wait_metric(
            "gala_gopher_nginx_link_link_count", 30,
            lambda l, v: 'virtual_port="%s"' % back in l and 'is_l7="1"' in l)
        assert links >= 1
        # REST (over the daemon's command socket): a new status_urls reaches the running probe
        # as a control line; the process stays the same.
        sock = os.path.join(d.dir, "cmd.sock")
        before = json.loads(mw.http_request(sock, "/nginx", 5)[2])
        assert before["reload"] is True and before["params"]["status_urls"] == ""
        down = "127.0.0.1:%d" % free_port()
        body = json.dumps({"params": {"status_urls": down + "@status"}}).encode()
        status, _, answer = mw.http_request(sock, "/nginx", 5, method="PUT", body=body)
        assert status == 200, answer
        d.wait_metric("gala_gopher_nginx_up", 30,
                      lambda l, v: 'instance="%s"' % down in l and v == 0)
        d.wait_metric("gala_gopher_nginx_up", 30, lambda l, v: where(l, v) and v == 1)
        after = json.loads(mw.http_request(sock, "/nginx", 5)[2])
        assert after["pid"] == before["pid"] and after["restarts"] == 0
