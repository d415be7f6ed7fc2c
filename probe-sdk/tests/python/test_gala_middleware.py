"""Tests of gala_middleware.py, the middleware probes' shared helpers (standard library only)."""

import os
import socket
import stat
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
import gala_middleware as mw  # noqa: E402


def serve_once(answer, delay=0.0, listener=None):
    """A loopback TCP server answering one connection with `answer` after `delay` seconds."""
    s = listener or socket.socket()
    if listener is None:
        s.bind(("127.0.0.1", 0))
        s.listen()

    def run():
        conn, _ = s.accept()
        with conn:
            conn.recv(65536)
            time.sleep(delay)
            try:
                conn.sendall(answer)
            except OSError:
                pass
        s.close()

    threading.Thread(target=run, daemon=True).start()
    return s.getsockname()


class Discovery(unittest.TestCase):
    def test_listening_sockets_of_this_process(self):
        v4 = socket.socket()
        v4.bind(("127.0.0.1", 0))
        v4.listen()
        v6 = socket.socket(socket.AF_INET6)
        v6.bind(("::1", 0))
        v6.listen()
        port = v4.getsockname()[1]
        connected = socket.create_connection(v4.getsockname())
        d = tempfile.mkdtemp()
        path = os.path.join(d, "s.sock")
        u = socket.socket(socket.AF_UNIX)
        u.bind(path)
        u.listen()
        try:
            tcp = mw.listening_tcp(os.getpid())
            self.assertIn(("127.0.0.1", v4.getsockname()[1]), tcp)
            self.assertIn(("::1", v6.getsockname()[1]), tcp)
            # The connected (not listening) socket's local port is not a listener.
            self.assertNotIn(("127.0.0.1", connected.getsockname()[1]), tcp)
            self.assertIn(path, mw.listening_unix(os.getpid()))
        finally:
            for s in (v4, v6, connected, u):
                s.close()
            os.unlink(path)
            os.rmdir(d)
        # Closed, it is no longer listed.
        self.assertNotIn(("127.0.0.1", port), mw.listening_tcp(os.getpid()))

    def test_proc_net_tcp_text(self):
        text = (
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
            "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1\n"
            "   1: 0100007F:1F91 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 112 1\n"
            "   2: garbage\n"
        )
        self.assertEqual(mw.parse_proc_net_tcp(text), [("127.0.0.1", 8080)])
        self.assertEqual(mw.parse_proc_net_tcp(text, {"999"}), [])
        v6 = (
            "header\n"
            "   0: 0000000000000000FFFF00000100007F:0050 00000000000000000000000000000000:0000 0A "
            "00000000:00000000 00:00000000 00000000 0 0 7 1\n"
            "   1: 00000000000000000000000001000000:0051 00000000000000000000000000000000:0000 0A "
            "00000000:00000000 00:00000000 00000000 0 0 8 1\n"
        )
        self.assertEqual(mw.parse_proc_net_tcp(v6), [("127.0.0.1", 80), ("::1", 81)])

    def test_processes_by_comm(self):
        with open("/proc/self/comm") as f:
            comm = f.read().strip()
        found = mw.processes([comm])
        self.assertIn(os.getpid(), [p.pid for p in found])
        me = next(p for p in found if p.pid == os.getpid())
        self.assertTrue(me.argv)
        self.assertEqual(mw.processes(["no-such-comm-xyz"]), [])

    def test_ppid_and_start_time(self):
        self.assertEqual(mw.ppid(os.getpid()), os.getppid())
        start = mw.start_time(os.getpid())
        self.assertIsInstance(start, int)
        self.assertGreaterEqual(start, mw.start_time(os.getppid()))
        self.assertIsNone(mw.ppid(2**22 + 12345))
        self.assertIsNone(mw.start_time(2**22 + 12345))

    def test_in_root(self):
        self.assertEqual(mw.in_root(42, "/etc/nginx/nginx.conf"), "/proc/42/root/etc/nginx/nginx.conf")


class NetworkNamespaces(unittest.TestCase):
    def test_in_netns_reaches_a_server_only_inside_its_namespace(self):
        import subprocess

        # A listener on loopback in its own network namespace (unshare needs root: CI is root).
        code = (
            "import socket,sys,time\n"
            "s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen()\n"
            "print(s.getsockname()[1], flush=True)\n"
            "c,_=s.accept(); c.sendall(b'inside'); c.close(); time.sleep(30)\n"
        )
        p = subprocess.Popen(["unshare", "-n", "sh", "-c", "ip link set lo up && exec python3 -c \"$0\"", code],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            line = p.stdout.readline()
            if not line.strip().isdigit():
                p.kill()
                self.fail("unshare -n failed: %r" % p.stderr.read(500))
            port = int(line)
            self.assertFalse(mw.same_netns(p.pid))
            self.assertTrue(mw.same_netns(os.getpid()))
            ok, why = mw.trusted_server(p.pid)
            self.assertFalse(ok)
            self.assertIn("another network namespace", why)
            before = mw.netns("self")
            with mw.in_netns(p.pid):
                answer = mw.exchange(("127.0.0.1", port), b"", 5.0)
            self.assertEqual(answer, b"inside")
            self.assertEqual(mw.netns("thread-self"), before)
            with self.assertRaises(OSError):
                with mw.in_netns(2**22 + 12345):
                    pass
        finally:
            p.kill()
            p.wait()
            p.stdout.close()
            p.stderr.close()


class FilesInARoot(unittest.TestCase):
    """A server's files are read as a chroot would see them: what its owner planted (symlinks
    out, FIFOs, huge files) cannot make the root probe read the host's files or hang."""

    def setUp(self):
        self.root = tempfile.mkdtemp()
        self.outside = tempfile.mkdtemp()
        os.makedirs(os.path.join(self.root, "etc/app/conf.d"))
        with open(os.path.join(self.outside, "secret"), "w") as f:
            f.write("host secret")
        with open(os.path.join(self.root, "etc/app/app.conf"), "w") as f:
            f.write("inside")
        for n in ("a.conf", "b.conf", ".hidden.conf", "c.txt"):
            with open(os.path.join(self.root, "etc/app/conf.d", n), "w") as f:
                f.write(n)

    def tearDown(self):
        import shutil

        shutil.rmtree(self.root)
        shutil.rmtree(self.outside)

    def link(self, target, name):
        os.symlink(target, os.path.join(self.root, name))

    def test_plain_and_relative_paths(self):
        self.assertEqual(mw.read_in_root(self.root, "/etc/app/app.conf"), b"inside")
        self.assertEqual(mw.read_in_root(self.root, "etc/./app/../app/app.conf"), b"inside")

    def test_symlinks_stay_inside_the_root(self):
        # An absolute target is the root's own path, not the host's.
        self.link(os.path.join(self.outside, "secret"), "etc/app/abs.conf")
        with self.assertRaises(OSError):
            mw.read_in_root(self.root, "/etc/app/abs.conf")
        # `..` never climbs above the root.
        self.link("../../../../../../" + self.outside.lstrip("/") + "/secret", "etc/app/up.conf")
        with self.assertRaises(OSError):
            mw.read_in_root(self.root, "/etc/app/up.conf")
        with self.assertRaises(OSError):
            mw.read_in_root(self.root, "/../../" + self.outside.lstrip("/") + "/secret")
        # A link inside the root works, absolute or relative.
        self.link("/etc/app/app.conf", "etc/app/ok.conf")
        self.link("app.conf", "etc/app/rel.conf")
        self.assertEqual(mw.read_in_root(self.root, "/etc/app/ok.conf"), b"inside")
        self.assertEqual(mw.read_in_root(self.root, "/etc/app/rel.conf"), b"inside")
        # A directory link too.
        self.link("/etc/app", "cfg")
        self.assertEqual(mw.read_in_root(self.root, "/cfg/app.conf"), b"inside")

    def test_loops_fifos_and_size(self):
        self.link("loop2", "loop1")
        self.link("loop1", "loop2")
        with self.assertRaises(OSError):
            mw.read_in_root(self.root, "/loop1")
        os.mkfifo(os.path.join(self.root, "etc/app/fifo.conf"))
        start = time.monotonic()
        with self.assertRaises(mw.RootPathError):
            mw.read_in_root(self.root, "/etc/app/fifo.conf")
        self.assertLess(time.monotonic() - start, 1.0)
        with self.assertRaises(mw.RootPathError):
            mw.read_in_root(self.root, "/etc/app/app.conf", limit=3)
        with self.assertRaises(mw.RootPathError):
            mw.read_in_root(self.root, "/etc/app")

    def test_listdir_stat_and_glob(self):
        self.assertEqual(mw.listdir_in_root(self.root, "/etc/app/conf.d"),
                         [".hidden.conf", "a.conf", "b.conf", "c.txt"])
        self.assertTrue(stat.S_ISDIR(mw.stat_in_root(self.root, "/etc/app").st_mode))
        self.assertEqual(mw.glob_in_root(self.root, "/etc/app/conf.d/*.conf"),
                         ["/etc/app/conf.d/a.conf", "/etc/app/conf.d/b.conf"])
        self.assertEqual(mw.glob_in_root(self.root, "/etc/*/conf.d/[ab].conf"),
                         ["/etc/app/conf.d/a.conf", "/etc/app/conf.d/b.conf"])
        self.assertEqual(mw.glob_in_root(self.root, "/etc/app/app.conf"), ["/etc/app/app.conf"])
        self.assertEqual(mw.glob_in_root(self.root, "/nothing/*"), [])
        self.assertEqual(len(mw.glob_in_root(self.root, "/etc/app/conf.d/*", limit=2)), 2)

    def test_a_real_process_root(self):
        self.assertEqual(mw.root_of(1), "/proc/1/root")
        with open("/etc/hostname", "rb") as f:
            expected = f.read()
        self.assertEqual(mw.read_in_root(mw.root_of(os.getpid()), "/etc/hostname"), expected)


class TrustedServers(unittest.TestCase):
    def test_system_accounts_in_the_host_namespaces_only(self):
        import subprocess

        self.assertEqual(os.getuid(), 0, "the suite runs as root")
        self.assertEqual(mw.trusted_server(os.getpid()), (True, ""))
        p = subprocess.Popen(["sleep", "30"], user=65534)
        try:
            ok, why = mw.trusted_server(p.pid)
            self.assertFalse(ok)
            self.assertIn("uid 65534", why)
        finally:
            p.kill()
            p.wait()
        self.assertFalse(mw.trusted_server(2**22 + 12345)[0])


class Secrets(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.path = os.path.join(self.dir, "secret")
        with open(self.path, "w") as f:
            f.write("s3cret\n")

    def tearDown(self):
        for name in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, name))
        os.rmdir(self.dir)

    def test_root_only_file_is_read(self):
        os.chmod(self.path, 0o600)
        if os.getuid() != 0:
            self.skipTest("ownership rule needs root")  # the suite runs as root in CI
        self.assertEqual(mw.read_secret(self.path), "s3cret")

    def test_readable_by_others_is_refused(self):
        os.chmod(self.path, 0o644)
        with self.assertRaisesRegex(mw.SecretError, "group or others"):
            mw.read_secret(self.path)

    def test_symlink_and_missing_are_refused(self):
        os.chmod(self.path, 0o600)
        link = os.path.join(self.dir, "link")
        os.symlink(self.path, link)
        with self.assertRaises(mw.SecretError):
            mw.read_secret(link)
        with self.assertRaises(mw.SecretError):
            mw.read_secret(os.path.join(self.dir, "missing"))


class Requests(unittest.TestCase):
    def test_http_content_length_and_chunked(self):
        addr = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello")
        status, headers, body = mw.http_request(addr, "/x", 2.0)
        self.assertEqual((status, headers["x-a"], body), (200, "b", b"hello"))
        addr = serve_once(b"HTTP/1.1 404 NF\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        self.assertEqual(mw.http_request(addr, "/", 2.0)[::2], (404, b"abcde"))

    def test_garbage_and_truncation_are_errors(self):
        for answer in (b"SSH-2.0-OpenSSH\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", b""):
            addr = serve_once(answer)
            with self.assertRaises((mw.HttpError, OSError)):
                mw.http_request(addr, "/", 2.0)

    def test_slow_server_costs_at_most_the_timeout(self):
        addr = serve_once(b"HTTP/1.1 200 OK\r\n\r\n", delay=3.0)
        start = time.monotonic()
        with self.assertRaises(OSError):
            mw.http_request(addr, "/", 0.3)
        self.assertLess(time.monotonic() - start, 1.5)

    def test_answer_size_is_bounded(self):
        addr = serve_once(b"x" * 5000)
        with self.assertRaises(mw.HttpError):
            mw.exchange(addr, b"q", 2.0, limit=1000)

    def test_exchange_stops_when_done(self):
        addr = serve_once(b"+PONG\r\n", delay=0.0)
        self.assertEqual(mw.exchange(addr, b"PING\r\n", 2.0, done=lambda a: a.endswith(b"\r\n")), b"+PONG\r\n")

    def test_host_header_is_the_address_or_the_given_name(self):
        for host, expected in ((None, None), ("status.example", b"Host: status.example\r\n")):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            s.listen()
            seen = []

            def run(s=s, seen=seen):
                conn, _ = s.accept()
                with conn:
                    seen.append(conn.recv(65536))
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                s.close()

            t = threading.Thread(target=run, daemon=True)
            t.start()
            port = s.getsockname()[1]
            self.assertEqual(mw.http_request(("127.0.0.1", port), "/", 2.0, host=host)[0], 200)
            t.join(2)
            want = expected or b"Host: 127.0.0.1:%d\r\n" % port
            self.assertIn(want, seen[0])
        with self.assertRaises(mw.HttpError):
            mw.http_request(("127.0.0.1", 1), "/", 1.0, host="a\r\nEvil: 1")

    def test_header_injection_is_refused(self):
        with self.assertRaises(mw.HttpError):
            mw.http_request(("127.0.0.1", 1), "/", 1.0, headers={"A": "b\r\nEvil: 1"})

    def test_request_timeout_is_below_the_period(self):
        self.assertEqual(mw.request_timeout(60), 5.0)
        self.assertEqual(mw.request_timeout(1), 0.5)
        self.assertEqual(mw.request_timeout(0.1), 0.2)


class InstanceParams(unittest.TestCase):
    def test_flags_then_control_lines(self):
        class Control:
            def __init__(self, params):
                self.params = params

            def param(self, name, default=None):
                return self.params.get(name, default)

        args = {"extra": [("a", "10.0.0.1:53"), ("x", "0")]}
        self.assertEqual(mw.instance_params(args, Control({})), {"instances": "10.0.0.1:53", "discover": 0})
        self.assertEqual(mw.instance_params(args, Control({"discover": 1, "instances": ""})),
                         {"instances": "", "discover": 1})
        bad = {"extra": [("x", "maybe"), ("a", None)]}
        self.assertEqual(mw.instance_params(bad, Control({})), {"instances": "", "discover": 1})


class InstanceHealth(unittest.TestCase):
    def test_up_down_errors_and_forgetting(self):
        rows, logs = [], []
        inst = mw.Instances("x_instance", lambda m: logs.append(("warn", m)), lambda m: logs.append(("info", m)),
                            lambda *r: rows.append(r))
        inst.begin()
        inst.ok("a", 0.01)
        inst.failed("b", "refused", 0.02)
        inst.report()
        self.assertEqual(rows, [("x_instance", "a", 1, 0, 0.01), ("x_instance", "b", 0, 1, 0.02)])
        rows.clear()
        inst.begin()
        inst.failed("b", "refused")
        inst.report()
        self.assertEqual(rows, [("x_instance", "b", 0, 2, 0.0)])
        # Logged once when it went down, not every period.
        self.assertEqual([k for k, _ in logs], ["warn"])
        inst.begin()
        inst.ok("b")
        inst.report()
        self.assertEqual(logs[-1][0], "info")
        self.assertEqual(inst.errors("b"), 2)
        self.assertEqual(inst.errors("a"), 0)  # forgotten: not seen in the last periods


if __name__ == "__main__":
    unittest.main()
