"""Acceptance tests of the rabbitmq probe against a real rabbitmq-server (Debian's 3.10, with the
management plugin) started once for the module on free loopback ports, in a temp dir.

Known load: N messages published through the management API, M fetched through the API
(ackmode ack_requeue_false, counted by RabbitMQ as get_no_ack), K fetched and acknowledged over
AMQP 0-9-1 (a minimal client below: the management API cannot produce acks), plus one AMQP
consumer on an idle queue. The probe's values are compared with the known load and with the
management API read by the test itself.
"""

import base64
import json
import os
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import urllib.request

import pytest

from conftest import SDK_DIR, Daemon, ProbeRun, Server, free_port, load_probe, server_binary, wait_for

sys.path.insert(0, SDK_DIR)
import gala_middleware as mw  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PROBE_DIR = os.path.dirname(HERE)
SCRIPT = os.path.join(PROBE_DIR, "rabbitmq.py")
META = os.path.join(PROBE_DIR, "rabbitmq.meta")
RABBIT_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"

N_PUBLISHED = 20
M_API_GETS = 5
K_AMQP_ACKS = 3


def load_probe_module():
    return load_probe(SCRIPT, "rabbitmq_probe_module")


# --- The real server ---------------------------------------------------------------------------


class Rabbit:
    """A rabbitmq-server node with the management plugin on free loopback ports."""

    def __init__(self):
        server_binary(RABBIT_SERVER)
        epmd = server_binary("epmd", "/usr/lib/erlang/bin/epmd")
        self.dir = tempfile.mkdtemp(prefix="gg-rabbitmq-")
        self.amqp_port, self.dist_port, self.epmd_port, self.mgmt_port = (
            free_port(), free_port(), free_port(), free_port())
        conf = os.path.join(self.dir, "rabbitmq.conf")
        with open(conf, "w") as f:
            f.write("listeners.tcp.default = 127.0.0.1:%d\n" % self.amqp_port)
            f.write("management.tcp.port = %d\nmanagement.tcp.ip = 127.0.0.1\n" % self.mgmt_port)
            f.write("collect_statistics_interval = 1000\n")
        plugins = os.path.join(self.dir, "enabled_plugins")
        with open(plugins, "w") as f:
            f.write("[rabbitmq_management].\n")
        self.node = "rabbit-gg%d@localhost" % self.amqp_port
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin",
            "HOME": self.dir,
            "LANG": "C.UTF-8",
            "RABBITMQ_MNESIA_BASE": os.path.join(self.dir, "mnesia"),
            "RABBITMQ_LOG_BASE": os.path.join(self.dir, "log"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_ENABLED_PLUGINS_FILE": plugins,
            "RABBITMQ_CONFIG_FILE": conf,
        }
        # Our own epmd in the foreground on a free port: rabbit's would daemonize and outlive us.
        self.epmd = Server([epmd, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                           env=env, log=os.path.join(self.dir, "epmd.log"))
        self.server = Server([RABBIT_SERVER], env=env, cwd=self.dir,
                             log=os.path.join(self.dir, "server.log"))
        self.addr = "127.0.0.1:%d" % self.mgmt_port

    def wait_ready(self, timeout=90.0):
        ok = wait_for(lambda: self._answers(), timeout, 0.25)
        assert ok, "rabbitmq management API not up after %.0f s; log:\n%s" % (
            timeout, self.server.log_text()[-4000:])

    def _answers(self):
        try:
            return isinstance(self.api("GET", "/api/overview"), dict)
        except OSError:
            return False

    def api(self, method, path, body=None, user="guest", password="guest"):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request("http://%s%s" % (self.addr, path), data=data, method=method)
        token = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
        req.add_header("Authorization", "Basic " + token)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read().decode()
        return json.loads(text) if text else None

    def stop(self, sig=signal.SIGTERM):
        self.server.stop(sig, timeout=30)
        self.epmd.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def rabbit():
    r = Rabbit()
    try:
        r.wait_ready()
        yield r
    finally:
        r.stop(signal.SIGKILL)  # a throw-away node: no need for its graceful shutdown


# --- A minimal AMQP 0-9-1 client (for acks and a consumer) -------------------------------------


def _shortstr(s):
    b = s.encode()
    return struct.pack("B", len(b)) + b


def _longstr(b):
    return struct.pack(">I", len(b)) + b


class Amqp:
    """Just enough AMQP 0-9-1 to get-with-ack and to hold a consumer."""

    def __init__(self, port, user="guest", password="guest"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self.sock.sendall(b"AMQP\x00\x00\x09\x01")
        self._expect(10, 10)  # Connection.Start
        self._method(0, 10, 11, struct.pack(">I", 0) + _shortstr("PLAIN")
                     + _longstr(("\0%s\0%s" % (user, password)).encode()) + _shortstr("en_US"))
        _, args = self._expect(10, 30)  # Tune
        channel_max, frame_max, _ = struct.unpack(">HIH", args[:8])
        self._method(0, 10, 31, struct.pack(">HIH", channel_max, frame_max, 0))
        self._method(0, 10, 40, _shortstr("/") + _shortstr("") + b"\0")
        self._expect(10, 41)
        self._method(1, 20, 10, _shortstr(""))
        self._expect(20, 11)

    def _frame(self):
        while True:
            if len(self.buf) >= 7:
                ftype, channel, size = struct.unpack(">BHI", self.buf[:7])
                if len(self.buf) >= 8 + size:
                    payload = self.buf[7:7 + size]
                    self.buf = self.buf[8 + size:]
                    return ftype, channel, payload
            chunk = self.sock.recv(65536)
            assert chunk, "AMQP connection closed"
            self.buf += chunk

    def _expect(self, cls, meth):
        while True:
            ftype, _, payload = self._frame()
            if ftype != 1:
                continue
            c, m = struct.unpack(">HH", payload[:4])
            assert (c, m) == (cls, meth), "AMQP: expected %d.%d, got %d.%d %r" % (
                cls, meth, c, m, payload[4:80])
            return (c, m), payload[4:]

    def _method(self, channel, cls, meth, args):
        payload = struct.pack(">HH", cls, meth) + args
        self.sock.sendall(struct.pack(">BHI", 1, channel, len(payload)) + payload + b"\xce")

    def get_and_ack(self, queue):
        """basic.get (no_ack false) then basic.ack: one message fetched and acknowledged."""
        self._method(1, 60, 70, struct.pack(">H", 0) + _shortstr(queue) + b"\0")
        _, args = self._expect(60, 71)  # Get-Ok (Get-Empty would fail the assertion)
        tag = struct.unpack(">Q", args[:8])[0]
        _, _, header = self._frame()  # content header
        body_size = struct.unpack(">Q", header[4:12])[0]
        got = 0
        while got < body_size:
            _, _, body = self._frame()
            got += len(body)
        self._method(1, 60, 80, struct.pack(">Q", tag) + b"\0")

    def consume(self, queue, tag="gg-consumer"):
        self._method(1, 60, 20, struct.pack(">H", 0) + _shortstr(queue) + _shortstr(tag)
                     + b"\0" + struct.pack(">I", 0))
        self._expect(60, 21)

    def close(self):
        self.sock.close()


# --- Fake management APIs for the failure paths ------------------------------------------------


class FakeApi:
    """A TCP server on a free loopback port that, per `mode`, never answers ("silent"), answers
    garbage ("garbage") or forwards to the real management API ("proxy")."""

    def __init__(self, mode, target_port):
        self.mode = mode
        self.target_port = target_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.held = []
        self.stopped = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        if self.mode == "silent":
            self.held.append(conn)  # accepted, read, never answered
            return
        conn.settimeout(5)
        try:
            req = b""
            while b"\r\n\r\n" not in req:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                req += chunk
            if self.mode == "garbage":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n{\"items\": [1, 2,")
                return
            with socket.create_connection(("127.0.0.1", self.target_port), timeout=5) as up:
                up.sendall(req)
                while True:
                    chunk = up.recv(65536)
                    if not chunk:
                        break
                    conn.sendall(chunk)
        except OSError:
            pass
        finally:
            if self.mode != "silent":
                conn.close()

    def close(self):
        self.stopped = True
        self.sock.close()
        for c in self.held:
            c.close()


# --- Helpers -----------------------------------------------------------------------------------


def cred_file(tmp_path, text="guest:guest", mode=0o600):
    p = tmp_path / "rabbitmq.cred"
    p.write_text(text + "\n")
    os.chmod(p, mode)
    return str(p)


def latest(run, table, *keys):
    """The newest record of `table` whose first values equal `keys`."""
    for t, values in reversed(run.records(table)):
        if values[: len(keys)] == list(keys):
            return values
    return None


def up_of(run, instance):
    rec = latest(run, "rabbitmq_instance", instance)
    return None if rec is None else (int(rec[1]), int(rec[2]))


def wait_up(run, instance, up, timeout=30.0, min_errors=0):
    return run.wait(lambda r: (lambda v: v if v and v[0] == up and v[1] >= min_errors else None)(
        up_of(r, instance)), timeout)


def queue_counters(rabbit, queue):
    q = rabbit.api("GET", "/api/queues/%%2F/%s" % queue)
    ms = q.get("message_stats", {})
    return q, ms


# --- Tests ---------------------------------------------------------------------------------------


def test_parsers():
    mod = load_probe_module()
    assert mod.parse_instances("127.0.0.1:15672, [::1]:15673,bad,host:0,h:99999,:1") == (
        [("127.0.0.1", 15672), ("::1", 15673)], ["bad", "host:0", "h:99999", ":1"])
    assert mod.instance_name(("::1", 15672)) == "[::1]:15672"
    conf = "# c\nmanagement.tcp.port = 15999 # x\nlisteners.tcp.default=5672\n"
    assert mod.management_port(conf) == 15999
    assert mod.management_port("management.listener.port=16000\n") == 16000
    assert mod.management_port("management.tcp.port = none\n") is None
    assert mod.is_rabbit_node(["beam.smp", "--", "-s", "rabbit", "boot"])
    assert not mod.is_rabbit_node(["beam.smp", "-s", "other", "rabbit"])
    assert mod.config_paths({}) == ["/etc/rabbitmq/rabbitmq.conf"]
    assert mod.config_paths({"RABBITMQ_CONFIG_FILE": "/x/r"}) == ["/x/r.conf"]
    assert mod.config_paths({"RABBITMQ_CONFIG_FILE": "/x/advanced.config"}) == []
    env_file = mod.env_file_settings("# x\nNODENAME=rabbit@h\nexport CONFIG_FILE='/etc/r/main'\n")
    assert env_file == {"NODENAME": "rabbit@h", "CONFIG_FILE": "/etc/r/main"}
    assert mod.config_paths({}, env_file) == ["/etc/r/main.conf"]
    assert mod.config_paths({"RABBITMQ_CONFIG_FILE": "/a.conf"}, env_file) == ["/a.conf"]


class PagedApi(threading.Thread):
    """An in-process management API with `count` queues, paginated as RabbitMQ does
    (page, page_size -> items[(page-1)*page_size : page*page_size])."""

    def __init__(self, count):
        import http.server
        import urllib.parse

        queues = [{"name": "q%05d" % i, "vhost": "/", "messages_ready": i} for i in range(count)]
        self.sizes = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                url = urllib.parse.urlparse(self.path)
                qs = urllib.parse.parse_qs(url.query)
                if url.path == "/api/overview":
                    doc = {"object_totals": {"queues": count}}
                elif url.path == "/api/nodes":
                    doc = [{"name": "n@h", "fd_used": 3}]
                elif url.path in ("/api/queues", "/api/channels"):
                    items = queues if url.path == "/api/queues" else []
                    page, size = int(qs["page"][0]), int(qs["page_size"][0])
                    outer.sizes.append(size)
                    doc = {"items": items[(page - 1) * size: page * size], "page": page,
                           "page_size": size, "total_count": len(items)}
                else:
                    doc = {}
                body = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread.__init__(self, target=self.httpd.serve_forever, daemon=True)
        self.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_queue_pages_are_consistent_and_capped():
    mod = load_probe_module()
    api = PagedApi(1234)
    try:
        addr = ("127.0.0.1", api.port)
        deadline = time.monotonic() + 10
        s = mod.scrape(addr, "Basic x", deadline, 1100)
        names = [q["name"] for q in s.queues]
        assert names == ["q%05d" % i for i in range(1100)]
        assert s.queues_total == 1234
        assert set(api.sizes) == {500}  # every page of one size, else offsets would skip
        s = mod.scrape(addr, "Basic x", time.monotonic() + 10, 100000)
        assert len(s.queues) == 1234 and len({q["name"] for q in s.queues}) == 1234
        s = mod.scrape(addr, "Basic x", time.monotonic() + 10, 0)
        assert s.queues == [] and s.queues_total == 1234
    finally:
        api.close()


@pytest.fixture(scope="module")
def loaded(rabbit):
    """The known load, applied once: N published, M fetched over the API, K fetched and acked
    over AMQP; an AMQP consumer stays on gg_idle. Yields the API's own view of gg_load once its
    stats have settled."""
    rabbit.api("PUT", "/api/queues/%2F/gg_load", {"durable": False})
    rabbit.api("PUT", "/api/queues/%2F/gg_idle", {"durable": False})
    for i in range(N_PUBLISHED):
        r = rabbit.api("POST", "/api/exchanges/%2F/amq.default/publish",
                       {"properties": {}, "routing_key": "gg_load", "payload": "m%d" % i,
                        "payload_encoding": "string"})
        assert r == {"routed": True}
    got = rabbit.api("POST", "/api/queues/%2F/gg_load/get",
                     {"count": M_API_GETS, "ackmode": "ack_requeue_false", "encoding": "auto"})
    assert len(got) == M_API_GETS
    amqp = Amqp(rabbit.amqp_port)
    try:
        for _ in range(K_AMQP_ACKS):
            amqp.get_and_ack("gg_load")
        amqp.consume("gg_idle")
        # Stats settle after a collection interval (1 s here): wait for the API's own counters.
        settled = wait_for(lambda: (lambda q_ms: q_ms[1].get("publish") == N_PUBLISHED
                                    and q_ms[1].get("ack") == K_AMQP_ACKS
                                    and q_ms[0].get("messages_ready") is not None)(
            queue_counters(rabbit, "gg_load")), 20, 0.25)
        assert settled, "server stats did not settle: %r" % (queue_counters(rabbit, "gg_load"),)
        yield queue_counters(rabbit, "gg_load")
    finally:
        amqp.close()


def test_known_load_matches_server(rabbit, loaded, tmp_path):
    q, ms = loaded
    ready = N_PUBLISHED - M_API_GETS - K_AMQP_ACKS
    assert q["messages_ready"] == ready
    assert ms["deliver_get"] == M_API_GETS + K_AMQP_ACKS
    cred = cred_file(tmp_path)
    with ProbeRun(SCRIPT, ["-t", "1", "-x", "0", "-a", rabbit.addr, "-r", cred]) as run:
        def queue_row(r):
            v = latest(r, "rabbitmq_queue", rabbit.addr, "/", "gg_load")
            return v if v and v[10] == str(N_PUBLISHED) and v[12] == str(K_AMQP_ACKS) else None
        row = run.wait(queue_row, 20)
        # instance vhost queue node type ready unacked messages consumers memory
        # publish deliver_get ack redeliver publish_rate deliver_get_rate ack_rate
        assert row[3] == rabbit.node and row[4] == "classic"
        assert int(row[5]) == ready == q["messages_ready"]
        assert int(row[6]) == 0 == q["messages_unacknowledged"]
        assert int(row[7]) == ready == q["messages"]
        assert int(row[8]) == 0
        assert int(row[10]) == N_PUBLISHED == ms["publish"]
        assert int(row[11]) == M_API_GETS + K_AMQP_ACKS == ms["deliver_get"]
        assert int(row[12]) == K_AMQP_ACKS == ms["ack"]
        assert float(row[14]) >= 0 and float(row[16]) >= 0

        idle = run.wait(lambda r: (lambda v: v if v and v[8] == "1" else None)(
            latest(r, "rabbitmq_queue", rabbit.addr, "/", "gg_idle")), 20)
        assert int(idle[5]) == 0

        api_nodes = {n["name"]: n for n in rabbit.api("GET", "/api/nodes")}
        node = run.wait(lambda r: latest(r, "rabbitmq_node", rabbit.addr, rabbit.node), 10)
        n = api_nodes[rabbit.node]
        assert node[2] == "1"
        for i, key in ((4, "mem_limit"), (7, "fd_total"), (9, "sockets_total"),
                       (11, "proc_total"), (13, "disk_free_limit")):
            assert int(node[i]) == n[key], key
        assert node[5] == "0" and node[14] == "0"  # no alarms
        assert 0 < int(node[3]) <= int(node[4])
        assert 0 < int(node[6]) <= int(node[7]) and 0 < int(node[10]) <= int(node[11])
        assert float(node[15]) > 0

        ov_api = rabbit.api("GET", "/api/overview")
        ov = run.wait(lambda r: (lambda v: v if v and v[12] == str(
            ov_api["message_stats"]["publish"]) and v[14] == str(
            ov_api["message_stats"]["ack"]) else None)(
            latest(r, "rabbitmq_overview", rabbit.addr)), 10)
        assert ov[1] == ov_api["cluster_name"] and ov[2] == "3.10.8" and ov[3] == rabbit.node
        assert int(ov[12]) == ov_api["message_stats"]["publish"] >= N_PUBLISHED
        assert int(ov[14]) == ov_api["message_stats"]["ack"] >= K_AMQP_ACKS
        assert int(ov[7]) >= 1 and int(ov[9]) >= 1  # our AMQP connection and consumer
        assert int(ov[10]) == ov_api["object_totals"]["queues"] == int(ov[18])
        assert ov[19] == "0"

        # upstream's rabbitmq_probe: our AMQP channel has a consumer -> consumer host
        probe_row = latest(run, "rabbitmq_probe", rabbit.addr)
        assert probe_row[2] == "127.0.0.1", probe_row
        assert up_of(run, rabbit.addr) == (1, 0)
        assert run.stop() == 0


def test_queue_cap_counts_truncation(rabbit):
    for i in range(3):
        rabbit.api("PUT", "/api/queues/%%2F/gg_cap%d" % i, {"durable": False})
    total = len(rabbit.api("GET", "/api/queues"))
    assert total >= 3
    with ProbeRun(SCRIPT, ["-t", "1", "-x", "0", "-a", rabbit.addr, "-q", "2"]) as run:
        ov = run.wait(lambda r: latest(r, "rabbitmq_overview", rabbit.addr), 20)
        assert int(ov[18]) == 2 and int(ov[19]) == total - 2
        run.wait(lambda r: len(r.records("rabbitmq_instance")) >= 2, 10)
        first_period = []
        for t, v in run.records():
            if t == "rabbitmq_instance":
                break
            if t == "rabbitmq_queue":
                first_period.append(v)
        assert len(first_period) == 2
        assert run.stop() == 0


def test_down_slow_garbage_recover(rabbit, loaded):
    silent = FakeApi("silent", rabbit.mgmt_port)
    garbage = FakeApi("garbage", rabbit.mgmt_port)
    refused = "127.0.0.1:%d" % free_port()
    addrs = ",".join([rabbit.addr, silent.addr, garbage.addr, refused])
    try:
        with ProbeRun(SCRIPT, ["-t", "1", "-x", "0", "-a", addrs]) as run:
            for a in (silent.addr, garbage.addr, refused):
                wait_up(run, a, 0, 20, min_errors=2)
            assert up_of(run, rabbit.addr)[0] == 1
            # the slow one costs at most the request timeout (period / 2)
            slow = latest(run, "rabbitmq_instance", silent.addr)
            assert 0.4 <= float(slow[3]) < 0.9, slow
            # the good instance keeps reporting while the others fail
            assert latest(run, "rabbitmq_queue", rabbit.addr, "/", "gg_load") is not None
            silent.mode = garbage.mode = "proxy"
            wait_up(run, garbage.addr, 1, 20)
            wait_up(run, silent.addr, 1, 20)
            row = run.wait(lambda r: latest(r, "rabbitmq_queue", garbage.addr, "/", "gg_load"), 10)
            assert int(row[10]) == N_PUBLISHED
            errors_before = up_of(run, refused)[1]
            assert errors_before >= 2
            err = run.stderr_text()
            assert err.count("%s is down" % garbage.addr) == 1, err
            assert "%s is up again" % garbage.addr in err
            assert run.stop() == 0
    finally:
        silent.close()
        garbage.close()


def test_credentials_file(rabbit, tmp_path):
    cred = cred_file(tmp_path, "guest:guest", 0o644)
    with ProbeRun(SCRIPT, ["-t", "1", "-x", "0", "-a", rabbit.addr, "-r", cred]) as run:
        wait_up(run, rabbit.addr, 0, 20, min_errors=2)
        assert "group or others" in run.stderr_text()
        assert not run.records("rabbitmq_overview")
        with open(cred, "w") as f:
            f.write("guest:wrong\n")
        os.chmod(cred, 0o600)
        # refused by the server now: still down, scrape_errors keeps growing
        errors = up_of(run, rabbit.addr)[1]
        wait_up(run, rabbit.addr, 0, 20, min_errors=errors + 2)
        with open(cred, "w") as f:
            f.write("guest:guest\n")
        wait_up(run, rabbit.addr, 1, 20)
        run.wait(lambda r: latest(r, "rabbitmq_overview", rabbit.addr), 10)
        assert "guest:wrong" not in run.stderr_text()
        assert run.stop() == 0


def test_discovery_appear_disappear(rabbit):
    with ProbeRun(SCRIPT, ["-t", "1"]) as run:
        # the module's node is found from its process, config and listening socket
        wait_up(run, rabbit.addr, 1, 20)
        second = Rabbit()
        try:
            second.wait_ready()
            wait_up(run, second.addr, 1, 30)
            node = run.wait(lambda r: latest(r, "rabbitmq_node", second.addr, second.node), 10)
            assert node[2] == "1"
        finally:
            second.stop()
        gone_at = len(run.lines)

        def gone(r):
            later = r.lines[gone_at:]
            periods = [l for l in later if l.startswith("|rabbitmq_instance|%s|" % rabbit.addr)]
            return len(periods) >= 2 and not any(second.addr in l for l in later[-20:])
        run.wait(gone, 20)
        assert run.stop() == 0


def test_daemon_drop_in(rabbit, loaded):
    conf = ('probes = ({ name = "rabbitmq"; param = "-t 1 -x 0 -a %s"; switch = "on"; });'
            % rabbit.addr)
    with Daemon([SCRIPT, META], conf) as d:
        d.wait_metric("gala_gopher_rabbitmq_up", 60,
                      lambda l, v: 'instance="%s"' % rabbit.addr in l and v == 1)
        q, ms = loaded
        d.wait_metric("gala_gopher_rabbitmq_queue_messages_ready", 30,
                      lambda l, v: 'queue="gg_load"' in l and v == q["messages_ready"])
        d.wait_metric("gala_gopher_rabbitmq_queue_publish", 30,
                      lambda l, v: 'queue="gg_load"' in l and v == ms["publish"])
        d.wait_metric("gala_gopher_rabbitmq_node_fd_used", 30,
                      lambda l, v: 'node="%s"' % rabbit.node in l and v > 0)
        here = lambda l, v: 'instance="%s"' % rabbit.addr in l  # noqa: E731
        d.wait_metric("gala_gopher_rabbitmq_queues_truncated", 30,
                      lambda l, v: here(l, v) and v == 0)
        # A param set through the API reaches the running probe on its control channel.
        cmd = os.path.join(d.dir, "cmd.sock")
        pid = json.loads(mw.http_request(cmd, "/rabbitmq", 5)[2])["pid"]
        body = json.dumps({"params": {"max_queues": 1}}).encode()
        status, _, answer = mw.http_request(cmd, "/rabbitmq", 5, method="PUT", body=body,
                                            headers={"Content-Type": "application/json"})
        assert status == 200, answer
        total = len(rabbit.api("GET", "/api/queues"))
        d.wait_metric("gala_gopher_rabbitmq_queues_truncated", 30,
                      lambda l, v: here(l, v) and v == total - 1)
        d.wait_metric("gala_gopher_rabbitmq_queues_reported", 30,
                      lambda l, v: here(l, v) and v == 1)
        assert json.loads(mw.http_request(cmd, "/rabbitmq", 5)[2])["pid"] == pid


FAKE_NODE = r'''
import ctypes, http.server, sys
ctypes.CDLL(None).prctl(15, b"beam.smp", 0, 0, 0)  # PR_SET_NAME: what discovery looks for


class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(sys.argv[2], "a") as f:
            f.write("%s\n" % self.headers.get("Authorization"))
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
'''


def test_credentials_not_sent_to_an_untrusted_discovered_node(tmp_path):
    """Any user can start a program that looks like a RabbitMQ node (its name, `-s rabbit`, a
    config naming its port): a discovered node running as an ordinary user gets no credentials;
    named explicitly, it does."""
    work = tempfile.mkdtemp(prefix="gg-fake-rabbit-")
    os.chmod(work, 0o777)
    script, got, conf = (os.path.join(work, n) for n in ("fake.py", "got", "rabbitmq.conf"))
    port = free_port()
    with open(script, "w") as f:
        f.write(FAKE_NODE)
    with open(conf, "w") as f:
        f.write("management.tcp.port = %d\n" % port)
    cred = tmp_path / "cred"
    cred.write_text("admin:very-secret\n")
    os.chmod(cred, 0o600)
    env = dict(os.environ, RABBITMQ_CONFIG_FILE=conf)
    fake = Server(["/usr/bin/python3", script, str(port), got, "-s", "rabbit", "boot"], env=env, user=65534)
    secret = base64.b64encode(b"admin:very-secret").decode()

    def answers():
        try:
            with open(got) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    inst = "127.0.0.1:%d" % port
    try:
        assert wait_for(lambda: mw.listening_tcp(fake.pid), 20), fake.log_text()
        with ProbeRun(SCRIPT, ["-t", "1", "-r", str(cred)]) as run:
            run.wait(lambda r: "credentials not sent: it runs as uid 65534" in r.stderr_text(), 30)
            run.stop()
        assert secret not in answers()
        with ProbeRun(SCRIPT, ["-t", "1", "-x", "0", "-a", inst, "-r", str(cred)]) as run:
            assert wait_for(lambda: secret in answers(), 30), answers()
            run.stop()
    finally:
        fake.stop()
        shutil.rmtree(work, ignore_errors=True)
