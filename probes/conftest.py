"""Shared pytest fixtures for the script probes' tests (probes/*/tests/test_*.py).

Run by `./build.sh --test` (after `cargo test`, which builds the daemon) with the test venv's
python:  target/test-venv/bin/python3 -m pytest -q probes

* `ProbeRun(script, args)` runs a probe by itself (with the system python for .py files: the
  probes may use the standard library only) and reads its records back exactly as the daemon does.
* `Daemon(files, conf)` runs the real daemon (`target/debug/gala-gopher`, or `GG_DAEMON`) with the
  probe as a drop-in and scrapes its Prometheus page.
* `free_port()`, `wait_for(f, timeout)`, `server_binary(name)` (fails, never skips, when a
  server from the test dependencies is missing).
"""

import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

WORKSPACE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SDK_DIR = os.path.join(WORKSPACE, "probe-sdk", "scripts")
sys.path.insert(0, SDK_DIR)
import gala_probe  # noqa: E402

SYSTEM_PYTHON = "/usr/bin/python3"


def load_probe(script, name):
    """A probe script imported as module `name` (its main() not run), to test its functions."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def free_port():
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(f, timeout=20.0, interval=0.05):
    """Calls f() until it returns something truthy (returned) or `timeout` passes (None)."""
    end = time.monotonic() + timeout
    while True:
        v = f()
        if v:
            return v
        if time.monotonic() >= end:
            return None
        time.sleep(interval)


def wait_port(port, timeout=30.0, host="127.0.0.1"):
    """Waits until something accepts TCP connections on host:port; fails the test if not."""

    def up():
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    assert wait_for(up, timeout), "nothing listens on %s:%d after %.0f s" % (host, port, timeout)


def server_binary(name, *candidates):
    """Path of a server binary from the test dependencies (build.sh --check installs them)."""
    for c in (name,) + candidates:
        p = shutil.which(c, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/lib/postgresql/15/bin")
        if p:
            return p
    pytest.fail("%s is not installed (run ./build.sh --check)" % name)


def probe_env(extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GALA_GOPHER_")}
    env["GALA_GOPHER_SDK_DIR"] = SDK_DIR
    env["PYTHONPATH"] = SDK_DIR
    env.update(extra or {})
    return env


class ProbeRun:
    """A probe process started by the test; `records()` reads what it printed."""

    def __init__(self, script, args=(), env=None, stdin=subprocess.DEVNULL):
        cmd = [script, *args]
        if script.endswith(".py"):
            cmd = [SYSTEM_PYTHON, *cmd]
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            cmd,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=probe_env(env),
            start_new_session=True,
        )
        self._buf = b""
        self.lines = []

    def _pump(self, timeout):
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            return False
        chunk = os.read(self.proc.stdout.fileno(), 65536)
        if not chunk:
            return None
        self._buf += chunk
        *done, self._buf = self._buf.split(b"\n")
        self.lines.extend(line.decode("utf-8") + "\n" for line in done)
        return True

    def records(self, table=None):
        """Every record read so far as (table, [values]), only `table`'s when given."""
        out = []
        for line in self.lines:
            try:
                t, values = gala_probe.split_line(line.rstrip("\n"))
            except gala_probe.RecordLineError:
                continue
            if table is None or t == table:
                out.append((t, values))
        return out

    def wait(self, pred, timeout=30.0):
        """Reads output until pred(self) is truthy (returned); fails the test after `timeout`."""
        end = time.monotonic() + timeout
        while True:
            v = pred(self)
            if v:
                return v
            left = end - time.monotonic()
            if left <= 0:
                break
            if self._pump(min(left, 0.2)) is None:
                v = pred(self)
                if v:
                    return v
                break
        pytest.fail(
            "probe output did not match within %.0f s (exit %r)\nstdout:\n%s\nstderr:\n%s"
            % (timeout, self.proc.poll(), "".join(self.lines[-40:]), self.stderr_text()[-4000:])
        )

    def wait_records(self, table, count=1, timeout=30.0):
        """Waits until `table` has at least `count` records; returns them."""
        return self.wait(lambda p: (lambda r: r if len(r) >= count else None)(p.records(table)), timeout)

    def stderr_text(self):
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace")

    def stop(self, timeout=5.0):
        """SIGTERM (as the daemon does); returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        while self._pump(0) is True:
            pass
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()


def daemon_binary():
    p = os.environ.get("GG_DAEMON")
    if not p:
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(WORKSPACE, "target"))
        p = os.path.join(target, "debug", "gala-gopher")
    if not os.access(p, os.X_OK):
        pytest.fail("%s missing: build the daemon first (cargo build -p gala-gopher)" % p)
    return p


class Daemon:
    """The real daemon with `files` (paths: a probe script and its .meta, ...) dropped into its
    probes folder. `conf` is appended to the generated gala-gopher.conf (e.g. a `probes` entry
    with the drop-in's name and `param`)."""

    def __init__(self, files, conf=""):
        self.dir = tempfile.mkdtemp(prefix="gg-probe-test-")
        os.chmod(self.dir, 0o755)
        self.probes = os.path.join(self.dir, "probes")
        meta = os.path.join(self.dir, "meta")
        os.mkdir(self.probes, 0o755)
        os.mkdir(meta, 0o755)
        self.port = free_port()
        with open(os.path.join(self.dir, "gala-gopher.conf"), "w") as f:
            f.write(
                'global = { log_level = "info"; probes_dir = "%s"; meta_dir = "%s"; sdk_dir = "%s"; '
                'cmd_socket = "%s/cmd.sock"; probes_init = "%s/probes.init"; };\n'
                "imdb = { record_timeout = 60; };\n"
                'web_server = { bind_addr = "127.0.0.1"; port = %d; };\n%s\n'
                % (self.probes, meta, SDK_DIR, self.dir, self.dir, self.port, conf)
            )
        for src in files:
            dst = os.path.join(self.probes, os.path.basename(src))
            shutil.copyfile(src, dst)
            os.chmod(dst, 0o644 if src.endswith(".meta") else 0o755)
        self.log = open(os.path.join(self.dir, "daemon.log"), "wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("GALA_GOPHER_")}
        self.proc = subprocess.Popen(
            [daemon_binary(), "-c", os.path.join(self.dir, "gala-gopher.conf")],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        wait_port(self.port, 20)

    def scrape(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.port, timeout=5) as r:
            return r.read().decode("utf-8")

    def samples(self, name):
        """{label text: value} of metric `name` on one scrape."""
        out = {}
        for line in self.scrape().splitlines():
            m = re.match(r"^%s(\{[^}]*\})? (\S+)" % re.escape(name), line)
            if m:
                out[m.group(1) or ""] = float(m.group(2))
        return out

    def wait_metric(self, name, timeout=60.0, where=lambda labels, value: True):
        """Waits for a sample of `name` for which where(labels, value) holds; returns
        (labels, value) or fails the test with the daemon's log."""
        found = wait_for(
            lambda: next(((l, v) for l, v in self.samples(name).items() if where(l, v)), None),
            timeout,
            0.25,
        )
        if not found:
            pytest.fail("no %s sample after %.0f s; log:\n%s" % (name, timeout, self.log_text()[-6000:]))
        return found

    def log_text(self):
        with open(os.path.join(self.dir, "daemon.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


_SERVERS = []
"""Servers started and not stopped yet: what a failing test left is stopped at the session's end."""


@pytest.fixture(scope="session", autouse=True)
def _stop_leftover_servers():
    yield
    for server in list(_SERVERS):
        server.stop()


class Server:
    """A server process started by a test (own session, killed with its group at the end; one
    a failing test did not stop is stopped when the test session ends)."""

    def __init__(self, cmd, env=None, cwd=None, user=None, log=None):
        self.log_path = log or tempfile.mktemp(prefix="gg-server-", suffix=".log")
        self._log = open(self.log_path, "wb")
        kwargs = {}
        if user is not None:
            kwargs["user"] = user
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            **kwargs,
        )
        _SERVERS.append(self)

    @property
    def pid(self):
        return self.proc.pid

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        if self in _SERVERS:
            _SERVERS.remove(self)
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


@pytest.fixture
def tmpdir_755(tmp_path):
    """A temp dir servers running as another user can enter."""
    os.chmod(tmp_path, 0o755)
    p = tmp_path
    while str(p) != "/":
        p = p.parent
        try:
            os.chmod(p, os.stat(p).st_mode | 0o005) if str(p).startswith(tempfile.gettempdir() + "/") else None
        except OSError:
            pass
    return tmp_path
