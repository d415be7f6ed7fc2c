"""Acceptance tests of pg_stat_probe against real PostgreSQL 15 servers started on loopback.

The servers run as the `postgres` user (the server refuses root) from copies of one data folder
made by initdb in a temp dir: roles `mon` (SCRAM-SHA-256), `monmd5` (md5) and `monclear`
(cleartext `password` method) for TCP, trust for the test's own admin on the unix socket.
"""

import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import gala_middleware as mw
import pytest
from conftest import Daemon, ProbeRun, Server, free_port, server_binary, wait_for, wait_port

HERE = os.path.dirname(os.path.abspath(__file__))
PROBE_DIR = os.path.dirname(HERE)
SCRIPT = os.path.join(PROBE_DIR, "pg_stat_probe.py")
META = os.path.join(PROBE_DIR, "pg_stat_probe.meta")
sys.path.insert(0, PROBE_DIR)
import pg_stat_probe  # noqa: E402

PASSWORDS = {"mon": "mon-Secret:1", "monmd5": "md5-secret", "monclear": "clear-secret"}
HBA = """\
local all all trust
host all mon 127.0.0.1/32 scram-sha-256
host all monmd5 127.0.0.1/32 md5
host all monclear 127.0.0.1/32 password
"""
STATES = set(pg_stat_probe.KNOWN_STATES)


def _run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, timeout=60, **kw)


class Pg:
    """A PostgreSQL server on 127.0.0.1:`port` from a copy of the template data folder."""

    def __init__(self, template, root, port=None):
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="pg-", dir=root)
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, "data")
        _run(["cp", "-a", template, self.data])
        self.sock = self.dir
        shutil.chown(self.dir, "postgres")
        postgres = server_binary("postgres")
        self.server = Server(
            [postgres, "-D", self.data, "-p", str(self.port), "-k", self.sock,
             "-c", "listen_addresses=127.0.0.1", "-c", "autovacuum=off", "-c", "fsync=off"],
            cwd=self.data, user="postgres",
        )
        wait_port(self.port, 30)
        assert wait_for(self._ready, 30), "postgres did not accept queries:\n" + self.server.log_text()

    @property
    def instance(self):
        return "127.0.0.1:%d" % self.port

    def _ready(self):
        try:
            return self.psql("SELECT 1") == "1"
        except subprocess.CalledProcessError:
            return False

    def psql(self, sql, db="postgres", stdin=None):
        cmd = [server_binary("psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", self.sock,
               "-p", str(self.port), "-U", "postgres", "-d", db]
        cmd += ["-f", "-"] if stdin is not None else ["-c", sql]
        out = _run(cmd, input=stdin.encode() if stdin is not None else None)
        return out.stdout.decode().strip()

    def db_stats(self, datname):
        """(xact_commit, xact_rollback) read by the test itself, from another database."""
        row = self.psql("SELECT xact_commit, xact_rollback FROM pg_stat_database"
                        " WHERE datname = '%s'" % datname)
        commit, rollback = row.split("|")
        return int(commit), int(rollback)

    def stop(self):
        self.server.stop(sig=signal.SIGINT)  # fast shutdown: the probe's session must not hold it


@pytest.fixture(scope="module")
def pg_root():
    root = tempfile.mkdtemp(prefix="gg-pgstat-")
    os.chmod(root, 0o755)
    template = os.path.join(root, "template")
    os.mkdir(template, 0o700)
    shutil.chown(template, "postgres")
    initdb = server_binary("initdb")
    _run(["runuser", "-u", "postgres", "--", initdb, "-D", template, "-A", "trust", "-U", "postgres",
          "--no-sync", "--no-instructions"])
    with open(os.path.join(template, "pg_hba.conf"), "w") as f:
        f.write(HBA)
    # TLS on (the probe's default sslmode=prefer uses it), with a throw-away self-signed key.
    openssl = shutil.which("openssl") or pytest.fail("openssl is not installed")
    _run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
          "-nodes", "-days", "2", "-subj", "/CN=localhost",
          "-keyout", os.path.join(template, "server.key"),
          "-out", os.path.join(template, "server.crt")])
    with open(os.path.join(template, "postgresql.conf"), "a") as f:
        f.write("ssl = on\n")
    for name in ("pg_hba.conf", "server.key", "server.crt"):
        shutil.chown(os.path.join(template, name), "postgres")
    os.chmod(os.path.join(template, "server.key"), 0o600)
    setup = Pg(template, root)
    try:
        setup.psql("CREATE ROLE mon LOGIN PASSWORD '%s' IN ROLE pg_monitor" % PASSWORDS["mon"])
        setup.psql("SET password_encryption = 'md5';"
                   " CREATE ROLE monmd5 LOGIN PASSWORD '%s' IN ROLE pg_monitor" % PASSWORDS["monmd5"])
        setup.psql("CREATE ROLE monclear LOGIN PASSWORD '%s' IN ROLE pg_monitor" % PASSWORDS["monclear"])
        setup.psql("CREATE DATABASE loaddb")
    finally:
        setup.stop()
    shutil.rmtree(template)
    shutil.copytree(setup.data, template, symlinks=True)
    _run(["chown", "-R", "postgres:", template])
    yield root, template
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def pg(pg_root):
    server = Pg(pg_root[1], pg_root[0])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def secrets(pg_root):
    """Root-only credential files: `cred` (user mon) and a writer for pgpass files."""
    folder = tempfile.mkdtemp(prefix="secrets-", dir=pg_root[0])

    def write(name, text):
        path = os.path.join(folder, name)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(text)
        return path

    write("cred", "# monitoring role\nuser=mon\npassword=%s\n" % PASSWORDS["mon"])
    return folder, write


def up(run, instance):
    """The `up` value of `instance`'s newest pg_instance record, or None."""
    return (last(run, "pg_instance", instance=instance) or {}).get("up")


def newer(run, mark, table, cond, **match):
    """A predicate for run.wait(): the newest record of `table` (matching `match`) printed after
    line `mark`, when cond(row) holds."""

    def pred(r):
        if len(r.lines) <= mark:
            return None
        row = last(r, table, **match)
        return row if row is not None and cond(row) else None

    return pred


def psql_cmd(pg, *args):
    return [server_binary("psql"), "-X", "-q", "-h", pg.sock, "-p", str(pg.port), "-U", "postgres",
            "-d", "postgres", *args]


def last(run, table, **match):
    """The newest record of `table` whose named fields equal `match` (field names of the .meta)."""
    names = FIELDS[table]
    for t, values in reversed(run.records(table)):
        row = dict(zip(names, values))
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def _meta_fields():
    out, table = {}, None
    with open(META) as f:
        for line in f:
            if "table_name:" in line:
                table = line.split('"')[1]
                out[table] = []
            elif "name:" in line and "type:" in line and table:
                out[table].append(line.rsplit('name: "', 1)[1].split('"')[0])
    return out


FIELDS = _meta_fields()


def probe_args(*extra):
    return ["-t", "1", *extra]


def test_known_load_counts_tps_connections_and_ages(pg, secrets):
    cred = os.path.join(secrets[0], "cred")
    with ProbeRun(SCRIPT, probe_args("-x", "0", "-a", pg.instance, "-r", cred)) as run:
        run.wait(lambda r: up(r, pg.instance) == "1", 20)
        base = pg.db_stats("loaddb")
        loaddb = {"instance": pg.instance, "datname": "loaddb"}
        run.wait(newer(run, 0, "pg_database", lambda x: x["xact_commit"] == str(base[0]), **loaddb), 20)

        # Known load in one session: N commits, M rollbacks. PostgreSQL also counts the session's
        # start-up transaction as one commit (its own accounting, same as psql's reads see).
        n, m = 40, 7
        pg.psql(None, db="loaddb", stdin="SELECT 1;\n" * n + "BEGIN;\nSELECT 1;\nROLLBACK;\n" * m)
        after = pg.db_stats("loaddb")
        assert after == (base[0] + n + 1, base[1] + m)

        row = run.wait(newer(run, 0, "pg_database", lambda x: x["xact_commit"] == str(after[0]),
                             **loaddb), 20)
        assert (int(row["xact_commit"]), int(row["xact_rollback"])) == after
        # Nothing else touches loaddb: the probe's numbers equal the server's, read again.
        assert pg.db_stats("loaddb") == after

        # tps of each period = that period's change of xact_commit / its length (about 1 s).
        datid = row["datid"]
        pairs, prev, cur = [], None, None
        for t, values in run.records():
            if t == "pg_database" and values[0] == pg.instance and values[1] == "loaddb":
                prev, cur = cur, int(values[4])
            elif t == "pg_tps" and values[1] == datid and values[0] == "0":
                assert values[2:7] == ["POSTGRE", "0", "127.0.0.1", str(pg.port), "loaddb"]
                if prev is not None:
                    pairs.append((cur - prev, float(values[7])))
        assert sum(d for d, _ in pairs) >= n + 1, pairs
        for delta, tps in pairs:
            if delta == 0:
                assert tps == 0
            else:
                assert abs(tps - delta) <= 0.25 * delta + 0.5, (delta, tps, pairs)

        # A transaction held open for a known time, and a running query of known age.
        held = subprocess.Popen(psql_cmd(pg), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            held.stdin.write(b"BEGIN;\nSELECT 1;\n")
            held.stdin.flush()
            t0 = time.monotonic()
            sleeper = subprocess.Popen(psql_cmd(pg, "-c", "SELECT pg_sleep(5)"),
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            t1 = time.monotonic()
            srv = run.wait(newer(run, len(run.lines), "pg_server",
                                 lambda x: float(x["oldest_xact_seconds"]) >= 2.5
                                 and float(x["longest_query_seconds"]) >= 1.0,
                                 instance=pg.instance), 15)
            age, query_age = time.monotonic() - t0, time.monotonic() - t1
            assert float(srv["oldest_xact_seconds"]) <= age + 0.2, (srv, age)
            assert float(srv["longest_query_seconds"]) <= query_age + 0.2, (srv, query_age)
            assert srv["backends"] == "2" and srv["lock_waits"] == "0"
            assert srv["max_connections"] == "100"
            assert srv["tgid"] == "0" and srv["version"].startswith("15.")
            # pg_connections of the same period (printed just before pg_server).
            conns = {s: last(run, "pg_connections", instance=pg.instance, state=s)["connections"]
                     for s in STATES}
            assert conns == dict.fromkeys(STATES, "0") | {"idle in transaction": "1", "active": "1"}
            sleeper.wait(10)
            held.stdin.write(b"COMMIT;\n")
            held.stdin.flush()
            srv = run.wait(newer(run, len(run.lines), "pg_server", lambda x: x["backends"] == "1",
                                 instance=pg.instance), 10)
            assert float(srv["oldest_xact_seconds"]) == 0 and float(srv["longest_query_seconds"]) == 0
            assert last(run, "pg_connections", instance=pg.instance, state="idle")["connections"] == "1"
        finally:
            held.stdin.close()
            held.wait(10)
        states = {v[1] for _, v in run.records("pg_connections")}
        assert STATES <= states
        assert run.stop() == 0


def test_authentication_methods(pg, secrets):
    deadline = lambda: time.monotonic() + 5  # noqa: E731
    addr = ("127.0.0.1", pg.port)
    for user in ("mon", "monmd5", "monclear"):
        conn = pg_stat_probe.Connection(addr, user, PASSWORDS[user], "loaddb", deadline())
        try:
            got = conn.query("SELECT current_user, NULL::text", deadline())
            assert got == [(["current_user", "text"], [[user, None]])]
            assert conn.server_version_num // 10000 == 15
        finally:
            conn.close()
    unix = os.path.join(pg.sock, ".s.PGSQL.%d" % pg.port)
    conn = pg_stat_probe.Connection(unix, "postgres", None, "postgres", deadline())
    try:
        with pytest.raises(pg_stat_probe.ServerError) as err:
            conn.query("SELECT 1/0", deadline())
        assert err.value.sqlstate == "22012"
        assert conn.query("SELECT 2", deadline()) == [(["?column?"], [["2"]])]  # usable after an error
    finally:
        conn.close()
    with pytest.raises(pg_stat_probe.ServerError) as err:
        pg_stat_probe.Connection(addr, "mon", "wrong", "postgres", deadline())
    assert err.value.sqlstate == "28P01"
    assert 'password authentication failed for user "mon"' in str(err.value)
    with pytest.raises(pg_stat_probe.AuthError):
        pg_stat_probe.Connection(addr, "mon", None, "postgres", deadline())
    # TLS: sslmode prefer (the default) and require use it, disable does not; the server agrees.
    ssl_sql = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
    for mode, tls in (("require", True), ("prefer", True), ("disable", False)):
        conn = pg_stat_probe.Connection(addr, "mon", PASSWORDS["mon"], "postgres", deadline(), mode)
        try:
            assert conn.tls is tls
            assert conn.query(ssl_sql, deadline())[0][1] == [["t" if tls else "f"]]
        finally:
            conn.close()
    # pgpass: escapes and wildcards, first match wins.
    text = "# c\nother\\:host:*:*:mon:x\n127.0.0.1:%d:*:mon:a\\:b\n*:*:*:*:z\n" % pg.port
    assert pg_stat_probe.pgpass_lookup(text, ("127.0.0.1",), pg.port, "postgres", "mon") == "a:b"
    assert pg_stat_probe.pgpass_lookup(text, ("10.0.0.1",), 1, "x", "y") == "z"
    assert pg_stat_probe.pgpass_lookup("h:1:d:u:p\n", ("h",), 2, "d", "u") is None


def test_scram_rfc7677_vector():
    client = pg_stat_probe.ScramClient("pencil", nonce="rOprNGfwEbeRWgbNEkqO", user="user")
    assert client.first() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    final = client.final(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                         b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    assert final == (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                     b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client.verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    assert client.verified
    with pytest.raises(pg_stat_probe.ProtocolError):
        client.verify(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    inner = hashlib.md5(b"secretmon").hexdigest().encode()
    assert pg_stat_probe.md5_password("mon", "secret", b"abcd") == \
        "md5" + hashlib.md5(inner + b"abcd").hexdigest()


def _answers(*chunks):
    """A one-shot fake server sending `chunks` after each request it reads; returns its port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)

    def serve():
        sock.settimeout(5)
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        with conn, sock:
            conn.settimeout(2)
            for chunk in chunks:
                try:
                    conn.recv(65536)
                    conn.sendall(chunk)
                except OSError:
                    return
            time.sleep(0.2)

    threading.Thread(target=serve, daemon=True).start()
    return sock.getsockname()[1]


def _msg(kind, payload):
    return kind + (len(payload) + 4).to_bytes(4, "big") + payload


def test_hostile_answers_are_protocol_errors():
    """Garbage, truncated and oversized answers, unsupported or dishonest authentication: each
    ends in a clear error of the protocol classes (or a timeout), never another exception."""
    auth = lambda code, rest=b"": _msg(b"R", code.to_bytes(4, "big") + rest)  # noqa: E731
    ok_then_ready = auth(0) + _msg(b"Z", b"I")
    cases = [
        [b"garbage that is not postgres at all"],
        [b"S" + b"\x00" * 3],
        [b"N", b"R\xff\xff\xff\xff"],  # a 4 GiB message announced
        [b"N", _msg(b"R", b"\x00")],  # too short
        [b"N", auth(7)],  # GSS
        [b"N", auth(10, b"SCRAM-SHA-256-PLUS\0\0")],
        [b"N", auth(10, b"SCRAM-SHA-256\0\0"), auth(11, b"r=someone-else,s=QUJD,i=4096")],
        [b"N", auth(10, b"SCRAM-SHA-256\0\0"), ok_then_ready],  # never proves the password
        [b"N", auth(5, b"ab")],  # md5 without a 4-byte salt
        [b"N", ok_then_ready + _msg(b"T", b"\x00\x01col\0")],  # RowDescription cut short
        [b"N", ok_then_ready + _msg(b"D", b"\x00\x01\x00\x00\x00\x09ab")],  # DataRow before it
    ]
    for seed in range(40):
        rnd = random.Random(seed)
        cases.append([b"N", bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 200)))])
    for chunks in cases:
        port = _answers(*chunks)
        try:
            conn = pg_stat_probe.Connection(("127.0.0.1", port), "mon", "pw", "postgres",
                                            time.monotonic() + 1)
            conn.query("SELECT 1", time.monotonic() + 1)
            conn.close()
        except (pg_stat_probe.ProtocolError, pg_stat_probe.ServerError, OSError):
            continue
        pytest.fail("no error for %r" % chunks)
    # sslmode=require against a server without TLS is refused, not silently downgraded.
    port = _answers(b"N")
    with pytest.raises(pg_stat_probe.AuthError, match="require"):
        pg_stat_probe.Connection(("127.0.0.1", port), "mon", "pw", "postgres", time.monotonic() + 1,
                                 "require")


class Listener:
    """A TCP listener on a free port that either never answers (`slow`) or answers garbage."""

    def __init__(self, garbage):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.garbage = garbage
        self.held = []
        self.stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            if self.garbage:
                try:
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" + os.urandom(64))
                except OSError:
                    pass
                conn.close()
            else:
                self.held.append(conn)

    def close(self):
        self.stop = True
        for c in self.held:
            c.close()
        self.sock.close()


def test_down_slow_garbage_wrong_password_and_recovery(pg, pg_root, secrets):
    wrong = Pg(pg_root[1], pg_root[0])
    down_port = free_port()
    slow, garbage = Listener(False), Listener(True)
    lines = ((pg.port, PASSWORDS["mon"]), (wrong.port, "not-the-password"),
             (down_port, PASSWORDS["mon"]))
    pgpass = secrets[1]("pgpass", "".join("127.0.0.1:%d:*:mon:%s\n" % line for line in lines))
    bad = {"down": "127.0.0.1:%d" % down_port, "slow": "127.0.0.1:%d" % slow.port,
           "garbage": "127.0.0.1:%d" % garbage.port, "wrong": wrong.instance}
    instances = ",".join([pg.instance] + list(bad.values()))
    revived = None
    try:
        with ProbeRun(SCRIPT, probe_args("-x", "0", "-u", "mon", "-g", pgpass, "-a", instances)) as run:
            def all_failing(r):
                rows = {k: last(r, "pg_instance", instance=v) for k, v in bad.items()}
                failing = all(x and x["up"] == "0" and int(x["scrape_errors"]) >= 3
                              for x in rows.values())
                return failing and rows

            rows = run.wait(all_failing, 30)
            assert float(rows["slow"]["scrape_seconds"]) >= 0.45  # the whole timeout (half the period)
            good = last(run, "pg_instance", instance=pg.instance)
            assert good["up"] == "1" and good["scrape_errors"] == "0"
            assert last(run, "pg_database", instance=pg.instance, datname="loaddb") is not None
            log = run.stderr_text()
            assert log.count("%s is down" % bad["wrong"]) == 1, log
            assert ('%s is down: authentication failed: FATAL 28P01 password authentication failed'
                    ' for user "mon"' % bad["wrong"]) in log, log
            assert "%s is down: connection refused" % bad["down"] in log, log
            assert "%s is down: no answer within 0.5 s" % bad["slow"] in log, log
            assert "%s is down: protocol error" % bad["garbage"] in log, log
            assert log.count("is down") == 4, log

            # The down instance's server starts: it is up at the next period.
            revived = Pg(pg_root[1], pg_root[0], port=down_port)
            run.wait(lambda r: up(r, bad["down"]) == "1", 15)
            assert "%s is up again" % bad["down"] in run.stderr_text()
            assert last(run, "pg_database", instance=bad["down"], datname="loaddb") is not None
            assert run.stop() == 0
    finally:
        slow.close()
        garbage.close()
        wrong.stop()
        if revived is not None:
            revived.stop()


def test_discovery_appear_and_disappear(pg, pg_root, secrets):
    cred = os.path.join(secrets[0], "cred")
    with ProbeRun(SCRIPT, probe_args("-r", cred)) as run:
        run.wait(lambda r: up(r, pg.instance) == "1", 20)
        # Discovered servers carry their postmaster's pid (upstream's tgid).
        assert last(run, "pg_server", instance=pg.instance)["tgid"] == str(pg.server.pid)
        late = Pg(pg_root[1], pg_root[0])
        try:
            run.wait(lambda r: up(r, late.instance) == "1", 15)
            assert last(run, "pg_server", instance=late.instance)["tgid"] == str(late.server.pid)
            run.wait(lambda r: last(r, "pg_tps", tgid=str(late.server.pid), datname="loaddb"), 10)
        finally:
            late.stop()
        mark = len(run.lines)

        def gone(r):
            rows = [v[0] for t, v in map(gala_split, r.lines[mark:]) if t == "pg_instance"]
            ours = [i for i, inst in enumerate(rows) if inst == pg.instance]
            # Two periods of the first server after the stop, and the late one in neither.
            return len(ours) >= 2 and late.instance not in rows[ours[-2]:]

        run.wait(gone, 15)
        assert run.stop() == 0


def gala_split(line):
    try:
        return pg_stat_probe.gala_probe.split_line(line)
    except pg_stat_probe.gala_probe.RecordLineError:
        return None, []


def test_daemon_drop_in(pg, secrets):
    cred = os.path.join(secrets[0], "cred")
    conf = ('probes = ({ name = "pg_stat_probe"; param = "-t 1 -x 0 -a %s -r %s"; switch = "on"; });'
            % (pg.instance, cred))
    with Daemon([SCRIPT, META], conf) as d:
        d.wait_metric("gala_gopher_postgresql_up", 30,
                      lambda l, v: 'instance="%s"' % pg.instance in l and v == 1)
        commits, rollbacks = pg.db_stats("loaddb")
        d.wait_metric("gala_gopher_postgresql_xact_commit", 20,
                      lambda l, v: 'datname="loaddb"' in l and v == commits)
        d.wait_metric("gala_gopher_postgresql_xact_rollback", 20,
                      lambda l, v: 'datname="loaddb"' in l and v == rollbacks)
        d.wait_metric("gala_gopher_postgresql_connections", 20,
                      lambda l, v: 'state="idle in transaction"' in l)
        d.wait_metric("gala_gopher_postgresql_oldest_xact_seconds", 20)
        d.wait_metric("gala_gopher_sli_tps", 20,
                      lambda l, v: 'datname="loaddb"' in l and 'app="POSTGRE"' in l
                      and 'server_port="%d"' % pg.port in l)

        # Run-time control by upstream's REST name: a new instance list reaches the running probe
        # on its control channel (reload = true), without a restart.
        def probe_pid():
            status, _, body = mw.http_request(os.path.join(d.dir, "cmd.sock"), "/probes", 5)
            assert status == 200, body
            entry = [p for p in json.loads(body) if p["name"] == "pg_stat_probe"]
            return entry[0]["pid"] if entry else None

        pid = wait_for(probe_pid, 10)
        assert isinstance(pid, int) and pid > 0, pid
        down = "127.0.0.1:%d" % free_port()
        doc = {"params": {"instances": "%s,%s" % (pg.instance, down)}}
        status, _, body = mw.http_request(os.path.join(d.dir, "cmd.sock"), "/opengauss_sli", 5,
                                          method="PUT", body=b"json=" + json.dumps(doc).encode())
        assert status == 200, body
        d.wait_metric("gala_gopher_postgresql_up", 20,
                      lambda l, v: 'instance="%s"' % down in l and v == 0)
        assert probe_pid() == pid


FAKE_POSTMASTER = r'''
import ctypes, socket, struct, sys
ctypes.CDLL(None).prctl(15, b"postgres", 0, 0, 0)  # PR_SET_NAME: what discovery looks for
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
while True:
    c, _ = s.accept()
    c.settimeout(5)
    try:
        n = struct.unpack(">I", c.recv(4))[0]
        c.recv(n - 4)  # the startup packet (an SSLRequest is refused, then the startup)
        if n == 8:
            c.sendall(b"N")
            n = struct.unpack(">I", c.recv(4))[0]
            c.recv(n - 4)
        c.sendall(b"R" + struct.pack(">II", 8, 3))  # AuthenticationCleartextPassword
        got = c.recv(4096)
        with open(sys.argv[2], "ab") as f:
            f.write(got + b"\n")
    except (OSError, struct.error):
        pass  # e.g. the test's own port check
    c.close()
'''


def test_password_not_sent_to_an_untrusted_discovered_server(secrets):
    """Any user can start a program named postgres that asks for a cleartext password: a
    discovered server running as an ordinary user gets none (named explicitly, it does)."""
    cred = os.path.join(secrets[0], "cred")
    work = tempfile.mkdtemp(prefix="gg-fake-pg-")
    os.chmod(work, 0o777)
    script, got = os.path.join(work, "fake.py"), os.path.join(work, "got")
    with open(script, "w") as f:
        f.write(FAKE_POSTMASTER)
    port = free_port()
    fake = Server([sys.executable if sys.executable.startswith("/usr/") else "/usr/bin/python3", script,
                   str(port), got], user=65534)
    try:
        wait_port(port, 20)
        inst = "127.0.0.1:%d" % port
        with ProbeRun(SCRIPT, probe_args("-r", cred)) as run:
            run.wait(lambda r: "%s: password not sent: it runs as uid 65534" % inst in r.stderr_text(), 30)
            run.stop()
        secret = PASSWORDS["mon"].encode()

        def answers():
            try:
                with open(got, "rb") as f:
                    return f.read()
            except FileNotFoundError:
                return b""

        assert secret not in answers()
        # Named explicitly, it is trusted: the password goes (the check above can fail).
        with ProbeRun(SCRIPT, probe_args("-x", "0", "-a", inst, "-r", cred)) as run:
            assert wait_for(lambda: secret in answers(), 30), answers()
            run.stop()
    finally:
        fake.stop()
        shutil.rmtree(work, ignore_errors=True)
