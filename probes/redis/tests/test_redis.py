"""Acceptance tests of probes/redis/redis.py against real redis-server 7 processes started on
loopback (free ports, temp dirs), by itself (ProbeRun) and through the daemon as a drop-in.

The test reads the servers' own counters with its own small RESP client (not the probe's).
"""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import Daemon, ProbeRun, Server, free_port, load_probe, server_binary, wait_for, wait_port

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(os.path.dirname(HERE), "redis.py")
META = os.path.join(os.path.dirname(HERE), "redis.meta")

STATS = [
    "instance", "total_connections_received", "rejected_connections", "total_commands_processed",
    "instantaneous_ops_per_sec", "total_net_input_bytes", "total_net_output_bytes",
    "instantaneous_input_kbps", "instantaneous_output_kbps", "keyspace_hits", "keyspace_misses",
    "expired_keys", "evicted_keys", "total_error_replies",
]
REPL = [
    "instance", "role", "master", "connected_slaves", "master_repl_offset", "slave_repl_offset",
    "master_link_up", "master_last_io_seconds_ago", "master_sync_in_progress",
]
SLAVE = ["instance", "slave", "state", "offset", "lag", "offset_lag"]
INSTANCE = ["instance", "up", "scrape_errors", "scrape_seconds"]
COMMAND = ["instance", "command", "calls", "usec", "rejected_calls", "failed_calls"]


def load_probe_module():
    return load_probe(SCRIPT, "redis_probe_under_test")


# --- the test's own RESP client ------------------------------------------------------------------


class Client:
    """A blocking RESP2 client: enough for SET/GET/INFO/ACL/CONFIG."""

    def __init__(self, port, password=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.f = self.sock.makefile("rb")
        if password:
            assert self.call("AUTH", password) == "OK"

    def send(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)

    def read(self):
        line = self.f.readline()[:-2]
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.f.read(n + 2)[:-2]
        if kind == b"*":
            return [self.read() for _ in range(int(rest))]
        raise RuntimeError("bad reply %r" % line)

    def call(self, *args):
        self.send(*args)
        return self.read()

    def info(self):
        text = self.call("INFO", "all").decode()
        return dict(line.split(":", 1) for line in text.split("\r\n") if line and not line.startswith("#"))

    def close(self):
        self.f.close()
        self.sock.close()


def start_redis(tmp_path, name, port, *extra):
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    cmd = [server_binary("redis-server"), "--port", str(port), "--save", "", "--appendonly", "no",
           "--dir", str(d), "--bind", "127.0.0.1", *extra]
    srv = Server(cmd, log=str(d / "redis.log"))
    if port:
        wait_port(port, 20)
    return srv


def rows(run, table, names):
    return [dict(zip(names, v)) for _, v in run.records(table)]


def latest(run, table, names, instance):
    found = [r for r in rows(run, table, names) if r["instance"] == instance]
    return found[-1] if found else None


def wait_row(run, table, names, pred, timeout=20.0, since=0):
    """The first row of ``table`` at index >= ``since`` for which pred holds, with its index:
    (index, row). Waits for it (fails the test after ``timeout``)."""

    def find(p):
        found = [(i, r) for i, r in enumerate(rows(p, table, names)) if i >= since and pred(r)]
        return found[0] if found else None

    return run.wait(find, timeout)


# --- parsers (fast, no server) -------------------------------------------------------------------


def test_resp_parser_and_instance_parsing():
    m = load_probe_module()
    raw = b"+OK\r\n$13\r\n# Server\r\na:1\r\n"
    assert m.parse_replies(raw, 2) == ["OK", b"# Server\r\na:1"]
    for cut in range(len(raw)):
        with pytest.raises(m.Incomplete):
            m.parse_replies(raw[:cut], 2)
    for garbage in (b"HTTP/1.1 200 OK\r\n", b"$abc\r\n", b"$99999999999\r\n", b"*100000\r\n", b"x" * 5000,
                    b"$3\r\nabcXY", b":1_0\r\n"):
        with pytest.raises(m.ProtocolError):
            m.parse_replies(garbage, 1)
    assert m.parse_replies(b"-NOAUTH Authentication required.\r\n:-3\r\n*-1\r\n", 3) == [
        "NOAUTH Authentication required.", -3, None]
    assert isinstance(m.parse_replies(b"-ERR x\r\n", 1)[0], m.ErrorReply)
    ok, bad = m.parse_instances("127.0.0.1:6400, ::1:6401,[fe80::1]:7,host,x:0,y:99999,:5")
    assert ok == {"127.0.0.1:6400": ("127.0.0.1", 6400), "[::1]:6401": ("::1", 6401),
                  "[fe80::1]:7": ("fe80::1", 7)}
    assert bad == ["host", "x:0", "y:99999", ":5"]
    # The cluster bus (port + 10000) is not RESP; a wildcard listener is reached on loopback.
    assert m.tcp_target([("0.0.0.0", 7000), ("0.0.0.0", 17000), ("::", 7000)]) == ("127.0.0.1:7000", ("127.0.0.1", 7000))
    assert m.tcp_target([("::", 7001)]) == ("[::1]:7001", ("::1", 7001))
    assert m.tcp_target([("10.1.2.3", 7002)]) == ("10.1.2.3:7002", ("10.1.2.3", 7002))
    assert m.tcp_target([]) is None
    assert m.number("1.5") == 1.5 and m.number("12") == 12 and m.number("nan") is None and m.number("inf") is None and m.number("x") is None


# --- known load: exact counters ------------------------------------------------------------------


def test_known_load_counters_match_server(tmp_path):
    port = free_port()
    srv = start_redis(tmp_path, "a", port)
    inst = "127.0.0.1:%d" % port
    c = Client(port)
    try:
        for i in range(10):
            c.call("SET", "key%d" % i, "v" * i)
        c.call("SET", "gone", "x", "PX", "1")
        time.sleep(0.05)
        assert c.call("EXISTS", "gone") == 0  # lazily expired: expired_keys = 1
        with ProbeRun(SCRIPT, ["-t", "1", "-x", "0", "-a", inst]) as run:
            run.wait_records("redis_stats", 1, 15)
            base_index = len(run.records("redis_stats")) - 1
            base = rows(run, "redis_stats", STATS)[base_index]
            base_get = next((r for r in reversed(rows(run, "redis_command", COMMAND)) if r["command"] == "get"), None)
            hits, misses = 37, 23
            for i in range(hits):
                c.send("GET", "key%d" % (i % 10))
            for i in range(misses):
                c.send("GET", "missing%d" % i)
            replies = [c.read() for _ in range(hits + misses)]
            assert sum(r is None for r in replies) == misses
            # A record printed after the load may hold a snapshot taken during it; the one after
            # that was taken after the load.
            done_index = len(run.records("redis_stats"))
            run.wait_records("redis_stats", done_index + 2, 15)
            stats = rows(run, "redis_stats", STATS)
            after = stats[done_index + 1]
            assert int(after["keyspace_hits"]) - int(base["keyspace_hits"]) == hits
            assert int(after["keyspace_misses"]) - int(base["keyspace_misses"]) == misses
            # Between the two snapshots: the load and one INFO per probe period.
            periods = done_index + 1 - base_index
            assert int(after["total_commands_processed"]) - int(base["total_commands_processed"]) == hits + misses + periods
            gets = [r for r in rows(run, "redis_command", COMMAND) if r["command"] == "get"]
            assert int(gets[-1]["calls"]) - int(base_get["calls"] if base_get else 0) == hits + misses
            n = len(run.records("redis_stats"))
            run.wait_records("redis_stats", n + 1, 15)
            # The server's own INFO, read after the probe's last record: the only commands since
            # are INFOs (the probe's and this one's), so the difference is exactly theirs.
            info = c.info()
            last = rows(run, "redis_stats", STATS)[-1]
            last_info = [r for r in rows(run, "redis_command", COMMAND) if r["command"] == "info"][-1]
            server_infos = int(info["cmdstat_info"].split("calls=")[1].split(",")[0])
            assert int(info["total_commands_processed"]) - int(last["total_commands_processed"]) == server_infos - int(last_info["calls"])
            for k in ("keyspace_hits", "keyspace_misses", "expired_keys", "evicted_keys", "rejected_connections"):
                assert last[k] == info[k], k
            assert last["expired_keys"] == "1"
            ks = latest(run, "redis_keyspace", ["instance", "db", "keys", "expires", "avg_ttl"], inst)
            assert ks["db"] == "db0" and int(ks["keys"]) == c.call("DBSIZE") == 10
            clients = latest(run, "redis_clients", ["instance", "connected", "cluster", "blocked", "maxclients"], inst)
            assert clients["maxclients"] == info["maxclients"] and int(clients["connected"]) >= 1
            mem = latest(run, "redis_memory", ["instance", "policy", "used", "rss", "peak", "frag", "max"], inst)
            assert mem["policy"] == "noeviction" and int(mem["used"]) > 0 and mem["max"] == "0"
            server = latest(run, "redis_server", ["instance", "version", "mode", "port"], inst)
            assert server["version"] == info["redis_version"] and server["port"] == str(port)
            lat = latest(run, "redis_latency", ["instance", "command", "p50", "p99", "p999"], inst)
            assert lat is not None and float(lat["p50"]) > 0
            up = latest(run, "redis_instance", INSTANCE, inst)
            assert up["up"] == "1" and up["scrape_errors"] == "0"
            assert run.stop() == 0
    finally:
        c.close()
        srv.stop()


# --- replication ---------------------------------------------------------------------------------


def test_replication_fields(tmp_path):
    mport, rport = free_port(), free_port()
    master = start_redis(tmp_path, "m", mport, "--repl-ping-replica-period", "3600")
    replica = start_redis(tmp_path, "r", rport, "--replicaof", "127.0.0.1", str(mport))
    mi, ri = "127.0.0.1:%d" % mport, "127.0.0.1:%d" % rport
    mc, rc = Client(mport), Client(rport)
    try:
        assert wait_for(lambda: rc.info().get("master_link_status") == "up", 20), "replica never synced"
        for i in range(20):
            mc.call("SET", "r%d" % i, i)
        assert mc.call("WAIT", 1, 5000) == 1
        with ProbeRun(SCRIPT, ["-t", "1", "-x", "0", "-a", "%s,%s" % (mi, ri)]) as run:
            def settled(p):
                m = latest(p, "redis_replication", REPL, mi)
                s = latest(p, "redis_slave", SLAVE, mi)
                return m and s and s["offset"] == m["master_repl_offset"] and s["offset_lag"] == "0"
            run.wait(settled, 20)
            m = latest(run, "redis_replication", REPL, mi)
            s = latest(run, "redis_slave", SLAVE, mi)
            r = latest(run, "redis_replication", REPL, ri)
            minfo = mc.info()
            assert m["role"] == "master" and m["master"] == "" and m["connected_slaves"] == "1"
            assert m["master_repl_offset"] == minfo["master_repl_offset"]
            assert m["master_link_up"] == ""  # not a replica
            assert s["slave"] == "127.0.0.1:%d" % rport and s["state"] == "online"
            assert int(s["lag"]) >= 0
            assert r["role"] == "slave" and r["master"] == mi and r["master_link_up"] == "1"
            assert r["connected_slaves"] == "0" and r["master_sync_in_progress"] == "0"
            assert r["slave_repl_offset"] == rc.info()["slave_repl_offset"] == m["master_repl_offset"]
            # The master goes away: the replica reports its link down, the master up=0.
            master.stop()
            wait_row(run, "redis_replication", REPL, lambda x: x["instance"] == ri and x["master_link_up"] == "0")
            wait_row(run, "redis_instance", INSTANCE, lambda x: x["instance"] == mi and x["up"] == "0")
            assert latest(run, "redis_instance", INSTANCE, ri)["up"] == "1"
            assert run.stop() == 0
    finally:
        mc.close()
        rc.close()
        master.stop()
        replica.stop()


# --- credentials ---------------------------------------------------------------------------------


def test_password_file_root_only(tmp_path):
    port, plain_port = free_port(), free_port()
    srv = start_redis(tmp_path, "p", port, "--requirepass", "s3cret pass")
    plain = start_redis(tmp_path, "plain", plain_port)
    inst, plain_inst = "127.0.0.1:%d" % port, "127.0.0.1:%d" % plain_port
    secret = tmp_path / "redis.pass"
    secret.write_text("s3cret pass\n")
    os.chmod(secret, 0o600)
    assert os.stat(secret).st_uid == 0, "the test runs as root (the probe requires a root-owned file)"
    try:
        # Without a password: NOAUTH, the instance is down.
        with ProbeRun(SCRIPT, ["-t", "1", "-x", "0", "-a", inst]) as run:
            wait_row(run, "redis_instance", INSTANCE, lambda r: r["instance"] == inst and r["up"] == "0")
            run.stop()
            assert "NOAUTH" in run.stderr_text()
        with ProbeRun(SCRIPT, ["-t", "1", "-x", "0", "-a", "%s,%s" % (inst, plain_inst), "-W", str(secret)]) as run:
            wait_row(run, "redis_instance", INSTANCE, lambda r: r["instance"] == inst and r["up"] == "1")
            # A server without a password is read too (its AUTH error is not fatal).
            wait_row(run, "redis_instance", INSTANCE, lambda r: r["instance"] == plain_inst and r["up"] == "1")
            assert latest(run, "redis_stats", STATS, inst) is not None
            os.chmod(secret, 0o644)
            at, down = wait_row(run, "redis_instance", INSTANCE, lambda r: r["instance"] == inst and r["up"] == "0")
            n = int(down["scrape_errors"])
            at, _ = wait_row(run, "redis_instance", INSTANCE,
                             lambda r: r["instance"] == inst and r["up"] == "0" and int(r["scrape_errors"]) > n)
            assert "readable or writable by group or others (chmod 600)" in run.stderr_text()
            os.chmod(secret, 0o600)
            wait_row(run, "redis_instance", INSTANCE, lambda r: r["instance"] == inst and r["up"] == "1", since=at)
            assert run.stop() == 0
            err = run.stderr_text()
            assert err.count("[WARN] password file refused: %s: readable" % secret) == 1, err
            assert err.count("%s is down: password file refused" % inst) == 1, err
            assert "s3cret" not in err and "s3cret" not in "".join(run.lines)
        # An ACL user: -u names it, the file holds its password.
        c = Client(port, "s3cret pass")
        assert c.call("ACL", "SETUSER", "gala", "on", ">probe-pw", "+info", "+auth") == "OK"
        c.close()
        user_secret = tmp_path / "user.pass"
        user_secret.write_text("probe-pw")
        os.chmod(user_secret, 0o400)
        with ProbeRun(SCRIPT, ["-t", "1", "-x", "0", "-a", inst, "-u", "gala", "-W", str(user_secret)]) as run:
            wait_row(run, "redis_instance", INSTANCE, lambda r: r["instance"] == inst and r["up"] == "1")
            run.stop()
    finally:
        srv.stop()
        plain.stop()


def test_password_goes_only_to_trusted_servers(tmp_path):
    """A discovered server gets the password only if it runs as a system account in the host's
    own namespaces: any user can start a program named redis-server and wait for it."""
    root_port, user_port = free_port(), free_port()
    trusted = start_redis(tmp_path, "root", root_port, "--requirepass", "pw-123")
    # Its own dir in /tmp: pytest's tmp_path is under a root-only folder.
    d = tempfile.mkdtemp(prefix="gg-redis-nobody-")
    os.chown(d, 65534, 65534)
    log = os.path.join(d, "redis.log")
    untrusted = Server([server_binary("redis-server"), "--port", str(user_port), "--save", "", "--appendonly",
                        "no", "--dir", d, "--bind", "127.0.0.1", "--requirepass", "pw-123"],
                       user=65534, log=log)
    wait_port(user_port, 20)
    secret = tmp_path / "redis.pass"
    secret.write_text("pw-123\n")
    os.chmod(secret, 0o600)
    root_inst, user_inst = "127.0.0.1:%d" % root_port, "127.0.0.1:%d" % user_port
    try:
        with ProbeRun(SCRIPT, ["-t", "1", "-W", str(secret)]) as run:
            wait_row(run, "redis_instance", INSTANCE, lambda r: r["instance"] == root_inst and r["up"] == "1")
            wait_row(run, "redis_instance", INSTANCE, lambda r: r["instance"] == user_inst and r["up"] == "0")
            run.stop()
            err = run.stderr_text()
            assert "%s: password not sent: it runs as uid 65534" % user_inst in err, err
            assert "NOAUTH" in err
        # Named explicitly, the same server is trusted.
        with ProbeRun(SCRIPT, ["-t", "1", "-x", "0", "-a", user_inst, "-W", str(secret)]) as run:
            wait_row(run, "redis_instance", INSTANCE, lambda r: r["instance"] == user_inst and r["up"] == "1")
            run.stop()
    finally:
        trusted.stop()
        untrusted.stop()
        shutil.rmtree(d, ignore_errors=True)


# --- down, slow, garbage -------------------------------------------------------------------------


class FakeServer:
    """A TCP listener that accepts and either never answers (slow) or answers garbage."""

    def __init__(self, answer=None):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.answer = answer
        self.conns = []
        self.stopped = False
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.answer is None:
                self.conns.append(conn)  # held open, never answered
                continue
            try:
                conn.settimeout(2)
                conn.recv(4096)
                conn.sendall(self.answer)
            except OSError:
                pass
            conn.close()

    def close(self):
        self.stopped = True
        self.sock.close()
        for c in self.conns:
            c.close()


def test_down_slow_garbage_and_recovery(tmp_path):
    port = free_port()
    srv = start_redis(tmp_path, "d", port)
    slow = FakeServer()
    garbage = FakeServer(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    fake_redis = FakeServer(b"$5\r\nhello\r\n")  # RESP, but no INFO in it
    dead = free_port()
    good, names = "127.0.0.1:%d" % port, {}
    for key, p in (("slow", slow.port), ("garbage", garbage.port), ("fake", fake_redis.port), ("dead", dead)):
        names[key] = "127.0.0.1:%d" % p
    try:
        with ProbeRun(SCRIPT, ["-t", "1", "-x", "0", "-a", ",".join([good, *names.values()])]) as run:
            def all_counted(p, at_least):
                last = {r["instance"]: r for r in rows(p, "redis_instance", INSTANCE)}
                return all(n in last and last[n]["up"] == "0" and int(last[n]["scrape_errors"]) >= at_least
                           for n in names.values()) and last.get(good, {}).get("up") == "1"
            run.wait(lambda p: all_counted(p, 3), 20)
            # The slow one costs at most the request timeout: the period stays ~1 s.
            goods = [r for r in rows(run, "redis_instance", INSTANCE) if r["instance"] == good]
            assert len(goods) >= 3
            slow_row = latest(run, "redis_instance", INSTANCE, names["slow"])
            assert 0.4 < float(slow_row["scrape_seconds"]) < 1.5
            # The good server goes down and comes back on the same port.
            srv.stop()
            at, _ = wait_row(run, "redis_instance", INSTANCE, lambda r: r["instance"] == good and r["up"] == "0")
            srv = start_redis(tmp_path, "d", port)
            wait_row(run, "redis_instance", INSTANCE, lambda r: r["instance"] == good and r["up"] == "1", since=at)
            assert latest(run, "redis_stats", STATS, good) is not None
            assert run.stop() == 0
            err = run.stderr_text()
            for n in names.values():
                assert err.count("%s is down" % n) == 1, err  # logged once, not every period
            assert "garbage answer" in err and "no redis_version" in err and "timed out" in err
            assert "%s is up again" % good in err
    finally:
        slow.close()
        garbage.close()
        fake_redis.close()
        srv.stop()


# --- discovery and control -----------------------------------------------------------------------


def test_discovery_appear_disappear_and_control(tmp_path):
    marker = "127.0.0.1:%d" % free_port()  # never up: one redis_instance row per period
    port = free_port()
    sock = str(tmp_path / "u" / "redis.sock")
    (tmp_path / "u").mkdir()
    with ProbeRun(SCRIPT, ["-t", "1", "-a", marker], stdin=subprocess.PIPE) as run:
        run.wait_records("redis_instance", 1, 15)
        srv = start_redis(tmp_path, "disc", port)
        usrv = start_redis(tmp_path, "unix", 0, "--unixsocket", sock, "--unixsocketperm", "700")
        # A server in a network namespace of its own (as in a container), TCP only: read from
        # inside that namespace.
        (tmp_path / "ns").mkdir()
        nport = free_port()
        nsrv = Server([server_binary("unshare"), "-n", "sh", "-c",
                       'ip link set lo up && exec "$0" --port %d --save "" --appendonly no --dir %s --bind 127.0.0.1'
                       % (nport, tmp_path / "ns"), server_binary("redis-server")])
        inst, ns_inst = "127.0.0.1:%d" % port, "127.0.0.1:%d@pid%d" % (nport, nsrv.pid)
        try:
            wait_row(run, "redis_instance", INSTANCE, lambda r: r["instance"] == inst and r["up"] == "1")
            wait_row(run, "redis_instance", INSTANCE, lambda r: r["instance"] == sock and r["up"] == "1")
            wait_row(run, "redis_instance", INSTANCE, lambda r: r["instance"] == ns_inst and r["up"] == "1")
            assert latest(run, "redis_server", ["instance", "v", "m", "port"], sock)["port"] == "0"
            assert latest(run, "redis_server", ["instance", "v", "m", "port"], ns_inst)["port"] == str(nport)
        finally:
            srv.stop()
            usrv.stop()
            nsrv.stop()
        n = len(run.records("redis_instance"))
        # Gone: after the server exits, a few periods pass without its row.
        run.wait(lambda p: len([r for r in rows(p, "redis_instance", INSTANCE)[n:] if r["instance"] == marker]) >= 3, 15)
        tail = rows(run, "redis_instance", INSTANCE)[n:]
        second = [i for i, r in enumerate(tail) if r["instance"] == marker][1]
        later = {r["instance"] for r in tail[second:]}
        assert marker in later and not later & {inst, sock, ns_inst}, later
        # A control line (as the daemon sends on a PUT) switches discovery off and names another
        # instance, without a restart.
        other = "127.0.0.1:%d" % free_port()
        line = {"v": 1, "params": {"report_period": 1, "instances": other, "discover": 0, "password_file": "", "user": ""}}
        run.proc.stdin.write((json.dumps(line) + "\n").encode())
        run.proc.stdin.flush()
        wait_row(run, "redis_instance", INSTANCE, lambda r: r["instance"] == other)
        assert run.stop() == 0


# --- through the daemon --------------------------------------------------------------------------


def test_daemon_drop_in(tmp_path):
    port = free_port()
    srv = start_redis(tmp_path, "dd", port)
    c = Client(port)
    try:
        c.call("SET", "k", "v")
        for _ in range(5):
            c.call("GET", "k")
        for _ in range(3):
            c.call("GET", "nope")
        conf = 'probes = ({ name = "redis"; param = "-t 1 -x 0 -a 127.0.0.1:%d"; switch = "on"; });' % port
        with Daemon([SCRIPT, META], conf) as d:
            inst = 'instance="127.0.0.1:%d"' % port
            d.wait_metric("gala_gopher_redis_server_up", 30, lambda l, v: inst in l and v == 1)
            d.wait_metric("gala_gopher_redis_stats_keyspace_hits", 10, lambda l, v: inst in l and v == 5)
            d.wait_metric("gala_gopher_redis_stats_keyspace_misses", 10, lambda l, v: inst in l and v == 3)
            d.wait_metric("gala_gopher_redis_keyspace_keys", 10, lambda l, v: inst in l and 'db="db0"' in l and v == 1)
            d.wait_metric("gala_gopher_redis_command_calls", 10, lambda l, v: inst in l and 'command="get"' in l and v == 8)
            page = d.scrape()
            assert "# TYPE gala_gopher_redis_stats_total_commands_processed counter" in page
            assert "gala_gopher_redis_memory_used_memory{" in page
            assert "gala_gopher_redis_replication_connected_slaves{" in page
    finally:
        c.close()
        srv.stop()
