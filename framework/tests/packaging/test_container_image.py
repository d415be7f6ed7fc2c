"""The agent in a container (docs/container.md) and its Kubernetes manifests (conf/k8s).

Run by `./build.sh --test` after the release build (root: podman with --privileged and the
host's pid and network namespaces). The image is the one `./build.sh --image` saved in
GG_PACKAGE_DIR when it is newer than the release daemon, else the test runs `./build.sh --image`
into a folder of its own. The saved archive is loaded into a podman whose storage lives in the
test's temp folder, and run the way docs/container.md says:

    podman run --privileged --pid=host --network=host -v /:/host:ro -v /sys:/sys \
        -e GOPHER_HOST_PATH=/host -e GOPHER_METRIC_PORT=… -e GOPHER_REST_PORT=… IMAGE

The manifests are checked with kubernetes-validate (PyPI, its bundled schemas: no network) in
strict mode, which must also refuse a broken copy.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
PKG = Path(os.environ.get("GG_PACKAGE_DIR", REPO / "target" / "packages"))
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
if not TARGET.is_absolute():
    TARGET = REPO / TARGET
DAEMON = TARGET / "release" / "gala-gopher"
ENTRYPOINT = REPO / "conf" / "container" / "entrypoint.sh"
K8S = REPO / "conf" / "k8s"
# kubernetes-validate's schemas: the newest it bundles, and the oldest that knows
# securityContext.appArmorProfile (which the DaemonSet sets).
K8S_VERSIONS = ("1.37.0", "1.30.0")
STARTUP_SECS = 60


def run(*args, check=True, **kw):
    """Runs a command; its output is returned and shown when it fails."""
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def version():
    m = re.search(r'\[workspace\.package\][^\[]*?version\s*=\s*"([^"]+)"', (REPO / "Cargo.toml").read_text())
    assert m, "no workspace version"
    return m.group(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, path, timeout=5):
    """(status, body) of GET http://127.0.0.1:PORT/PATH; (None, error) when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)


class Podman:
    """podman with its storage, run root and containers.conf in `root` (as build.sh's
    image_podman and framework/container/src/podman.rs: runc, cgroupfs, no default ulimits)."""

    def __init__(self, root):
        for tool in ("podman", "runc"):
            assert shutil.which(tool), f"{tool} is not installed (./build.sh --check installs it)"
        self.root = Path(root)
        (self.root / "run").mkdir(parents=True, exist_ok=True)
        self.conf = self.root / "containers.conf"
        self.conf.write_text('[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n'
                             'cgroup_manager = "cgroupfs"\n')

    def __call__(self, *args, check=True, timeout=120):
        env = dict(os.environ, CONTAINERS_CONF=str(self.conf))
        return run("podman", "--root", self.root / "storage", "--runroot", self.root / "run",
                   "--runtime", "runc", "--cgroup-manager=cgroupfs", *args,
                   check=check, env=env, timeout=timeout, stdin=subprocess.DEVNULL)

    def logs(self, name):
        p = self("logs", name, check=False)
        return p.stdout + p.stderr


# --- The image ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_tar(tmp_path_factory):
    """The saved image: `--image`'s in GG_PACKAGE_DIR when newer than the daemon, else built now."""
    name = f"gala-gopher-image-{version()}.tar"
    saved = PKG / name
    if saved.exists() and DAEMON.exists() and saved.stat().st_mtime >= DAEMON.stat().st_mtime:
        print(f"image: {saved} (made by ./build.sh --image)")
        return saved
    out = tmp_path_factory.mktemp("image")
    started = time.monotonic()
    p = subprocess.run(["./build.sh", "--image", f"--package-dir={out}"], cwd=REPO,
                       capture_output=True, text=True)
    assert p.returncode == 0, f"build.sh --image failed:\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
    print(f"./build.sh --image: {time.monotonic() - started:.1f} s")
    assert (out / name).is_file(), f"build.sh --image wrote no {name}: {sorted(out.iterdir())}"
    return out / name


@pytest.fixture(scope="module")
def podman(tmp_path_factory):
    p = Podman(tmp_path_factory.mktemp("podman"))
    yield p
    p("rm", "-a", "-f", "-t", "0", check=False)


@pytest.fixture(scope="module")
def image(podman, image_tar):
    """The image loaded from the archive into the test's own podman storage."""
    tag = f"localhost/gala-gopher:{version()}"
    out = podman("load", "-i", image_tar).stdout
    assert tag in out, out
    return tag


def test_image_is_one_layer_from_scratch_and_runs_the_daemon(podman, image):
    info = json.loads(podman("image", "inspect", image).stdout)[0]
    # FROM scratch + one COPY of the root filesystem tree: one layer, no base image's.
    assert len(info["RootFS"]["Layers"]) == 1, info["RootFS"]
    assert info["Config"]["Entrypoint"] == ["/usr/bin/gala-gopher-entrypoint"], info["Config"]
    assert info["Config"]["Labels"]["org.opencontainers.image.version"] == version()
    assert info["Config"].get("StopSignal") in ("SIGTERM", "15"), info["Config"]
    # The dynamic loader and libraries copied in work: the daemon and every probe binary start.
    in_image = podman("run", "--rm", "--network", "none", image, "--version").stdout
    assert in_image == run(DAEMON, "--version").stdout
    listing = podman("run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", image, "-c",
                     "for f in /opt/gala-gopher/probes/*; do if [ -x \"$f\" ]; then echo \"$f\"; fi; done").stdout
    probes = listing.split()
    assert "/opt/gala-gopher/probes/system_infos" in probes, listing
    elf_probes = [p for p in probes if not p.endswith((".sh", ".py"))]
    for probe in elf_probes:
        p = podman("run", "--rm", "--network", "none", "--entrypoint", probe, image, "--print-meta",
                   check=False)
        assert "error while loading shared libraries" not in p.stderr, (probe, p.stderr)
    # The account files and the shell the entrypoint needs.
    passwd = podman("run", "--rm", "--network", "none", "--entrypoint", "/bin/cat", image,
                    "/etc/passwd").stdout
    assert passwd.startswith("root:x:0:0:"), passwd


# --- The entrypoint, on its own (busybox sh, as in the image) --------------------------------


def entrypoint(tmp_path, env):
    """Runs conf/container/entrypoint.sh with busybox sh and `env` only, exec'ing `env` instead
    of the daemon and writing probes.init into tmp_path: (returncode, {var: value}, stderr)."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    assert Path(busybox).exists(), "busybox is not installed (./build.sh --check installs busybox-static)"
    script = ENTRYPOINT.read_text()
    assert script.count("\nDAEMON=/usr/bin/gala-gopher\n") == 1
    assert script.count("\nDEFAULT_PROBES_INIT=/etc/gala-gopher/probes.init\n") == 1
    script = script.replace("\nDAEMON=/usr/bin/gala-gopher\n", f"\nDAEMON={busybox}\n")
    script = script.replace("\nDEFAULT_PROBES_INIT=/etc/gala-gopher/probes.init\n",
                            f"\nDEFAULT_PROBES_INIT={tmp_path}/probes.init\n")
    copy = tmp_path / "entrypoint.sh"
    copy.write_text(script)
    # `busybox env -0`: one NUL-terminated VAR=value per variable (values may hold newlines).
    p = subprocess.run([busybox, "sh", str(copy), "env", "-0"], capture_output=True,
                       env={"PATH": "/usr/bin:/bin", **env}, cwd=tmp_path, timeout=30)
    out = {}
    for item in p.stdout.decode().split("\0"):
        if "=" in item:
            k, v = item.split("=", 1)
            out[k] = v
    return p.returncode, out, p.stderr.decode()


# Every upstream variable, and the override the entrypoint must turn it into.
MAPPING = [
    ({"GOPHER_LOG_LEVEL": "debug"}, {"GALA_GOPHER_GLOBAL__LOG_LEVEL": "debug"}),
    ({"GOPHER_EVENT_CHANNEL": "kafka"}, {"GALA_GOPHER_EVENT__OUT_CHANNEL": "kafka"}),
    ({"GOPHER_META_CHANNEL": "kafka,logs"}, {"GALA_GOPHER_META__OUT_CHANNEL": "kafka,logs"}),
    ({"GOPHER_KAKFA_SERVER": "kafka.svc"}, {"GALA_GOPHER_KAFKA__KAFKA_BROKER": "kafka.svc:9092"}),
    ({"GOPHER_KAFKA_SERVER": "k1:9093,k2,[fd00::1],[fd00::2]:19092"},
     {"GALA_GOPHER_KAFKA__KAFKA_BROKER": "k1:9093,k2:9092,[fd00::1]:9092,[fd00::2]:19092"}),
    ({"GOPHER_KAKFA_SERVER": "k1", "GOPHER_KAFKA_SERVER": "k1"},
     {"GALA_GOPHER_KAFKA__KAFKA_BROKER": "k1:9092"}),
    ({"GOPHER_METRIC_ADDR": "0.0.0.0"}, {"GALA_GOPHER_WEB_SERVER__BIND_ADDR": "0.0.0.0"}),
    ({"GOPHER_METRIC_PORT": "9100"}, {"GALA_GOPHER_WEB_SERVER__PORT": "9100"}),
    ({"GOPHER_REST_ADDR": "::1"}, {"GALA_GOPHER_REST_API_SERVER__BIND_ADDR": "::1"}),
    ({"GOPHER_REST_PORT": "65535"}, {"GALA_GOPHER_REST_API_SERVER__PORT": "65535"}),
    ({"GOPHER_REST_AUTH": "yes", "GOPHER_REST_PRIVATE_KEY": "/k/key.pem", "GOPHER_REST_CERT": "/k/cert.pem",
      "GOPHER_REST_CAFILE": "/k/ca.pem"},
     {"GALA_GOPHER_REST_API_SERVER__SSL_AUTH": "on", "GALA_GOPHER_REST_API_SERVER__PRIVATE_KEY": "/k/key.pem",
      "GALA_GOPHER_REST_API_SERVER__CERT_FILE": "/k/cert.pem", "GALA_GOPHER_REST_API_SERVER__CA_FILE": "/k/ca.pem"}),
    ({"GOPHER_REST_AUTH": "no"}, {}),
    ({"GOPHER_METRIC_LOGS_TOTAL_SIZE": "200"}, {"GALA_GOPHER_LOGS__METRIC_TOTAL_SIZE": "200"}),
    # Empty = unset, as upstream's `[ -n … ]`.
    ({"GOPHER_METRIC_PORT": "", "GOPHER_LOG_LEVEL": ""}, {}),
    # The same value set both ways is no conflict.
    ({"GOPHER_METRIC_PORT": "9100", "GALA_GOPHER_WEB_SERVER__PORT": "9100"}, {"GALA_GOPHER_WEB_SERVER__PORT": "9100"}),
]


@pytest.mark.parametrize("given,expected", MAPPING, ids=[",".join(g) or "none" for g, _ in MAPPING])
def test_entrypoint_maps_upstream_variables_to_overrides(tmp_path, given, expected):
    rc, env, err = entrypoint(tmp_path, given)
    assert rc == 0, err
    made = {k: v for k, v in env.items() if k.startswith("GALA_GOPHER_")}
    assert made == expected, err
    # The upstream variables stay as they were (the daemon reads GOPHER_HOST_PATH itself).
    for k, v in given.items():
        assert env.get(k) == v


def test_every_override_the_entrypoint_makes_is_a_daemon_key(tmp_path):
    """The override names come from the daemon's config model: its --check-config warns
    `GALA_GOPHER_X: unknown key` for any other (checked on a made-up one first)."""
    every = {"GOPHER_REST_AUTH": "yes", "GOPHER_PROBES_INIT": "# none"}
    for given, _ in MAPPING:
        every.update({k: v for k, v in given.items() if k.startswith("GOPHER_") and v and k not in every})
    every.pop("GOPHER_KAKFA_SERVER")
    rc, env, err = entrypoint(tmp_path, every)
    assert rc == 0, err
    made = sorted(k for k in env if k.startswith("GALA_GOPHER_"))
    assert len(made) == 14, made
    # Values of the right type for each key, and no file or TLS the check would look for.
    benign = {"LOG_LEVEL": "info", "OUT_CHANNEL": "logs", "KAFKA_BROKER": "k:9092", "BIND_ADDR": "127.0.0.1",
              "PORT": "9100", "SSL_AUTH": "off", "PRIVATE_KEY": "", "CERT_FILE": "", "CA_FILE": "",
              "METRIC_TOTAL_SIZE": "100", "PROBES_INIT": ""}
    conf = tmp_path / "empty.conf"
    conf.write_text("")

    def unknown_keys(names):
        child = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        child.update({n: benign[n.split("__", 1)[1]] for n in names if n.split("__", 1)[1] in benign})
        child.update({n: "x" for n in names if n.split("__", 1)[1] not in benign})
        p = run(DAEMON, "--check-config", "-c", conf, env=child, check=False)
        return p, [line for line in (p.stdout + p.stderr).splitlines() if "unknown key" in line]

    p, warned = unknown_keys(["GALA_GOPHER_WEB_SERVER__NO_SUCH_KEY"])
    assert warned, f"--check-config did not warn about a made-up key:\n{p.stdout}\n{p.stderr}"
    p, warned = unknown_keys(made)
    assert p.returncode == 0, p.stdout + p.stderr
    assert not warned, warned


def test_entrypoint_writes_probes_init_as_data(tmp_path):
    text = ('baseinfo {"params":{"report_period":2},"snoopers":{"custom_labels":{"a":"$(touch pwned) `touch pwned2` \\"q\\""}}}\n'
            "# a comment; $HOME * ?")
    rc, env, err = entrypoint(tmp_path, {"GOPHER_PROBES_INIT": text, "GOPHER_LOG_LEVEL": "$(touch pwned3)"})
    assert rc == 0, err
    init = tmp_path / "probes.init"
    assert init.read_text() == text + "\n"
    assert env["GALA_GOPHER_GLOBAL__PROBES_INIT"] == str(init)
    assert env["GALA_GOPHER_GLOBAL__LOG_LEVEL"] == "$(touch pwned3)"
    assert not list(tmp_path.glob("pwned*")), "the entrypoint ran a command from a variable's value"
    # Not group- or world-writable (the daemon refuses such a probes.init).
    assert init.stat().st_mode & 0o022 == 0, oct(init.stat().st_mode)


REFUSED = [
    ({"GOPHER_METRIC_PORT": "70000"}, "GOPHER_METRIC_PORT=\"70000\": not a port number"),
    ({"GOPHER_METRIC_PORT": "0"}, "not a port number"),
    ({"GOPHER_REST_PORT": "08080"}, "GOPHER_REST_PORT=\"08080\": not a port number"),
    ({"GOPHER_REST_PORT": "-1"}, "not a port number"),
    ({"GOPHER_REST_PORT": "1e3"}, "not a port number"),
    ({"GOPHER_REST_PORT": "123456"}, "not a port number"),
    ({"GOPHER_METRIC_PORT": "9100; rm -rf /"}, "not a port number"),
    ({"GOPHER_KAKFA_SERVER": "k1:99999"}, "GOPHER_KAKFA_SERVER (broker k1:99999)=\"99999\": not a port number"),
    ({"GOPHER_KAFKA_SERVER": "k1,,k2"}, "empty broker"),
    ({"GOPHER_KAFKA_SERVER": "fd00::1"}, "write an IPv6 address as [address]:port"),
    ({"GOPHER_KAKFA_SERVER": "k1", "GOPHER_KAFKA_SERVER": "k2"}, "both set, to different values"),
    ({"GOPHER_METRIC_PORT": "9100", "GALA_GOPHER_WEB_SERVER__PORT": "9200"},
     "GOPHER_METRIC_PORT and GALA_GOPHER_WEB_SERVER__PORT are both set"),
    ({"GOPHER_REST_AUTH": "true"}, "GOPHER_REST_AUTH=\"true\": expected yes or no"),
    ({"GOPHER_REST_AUTH": "yes", "GOPHER_REST_CERT": "/c.pem"}, "needs GOPHER_REST_PRIVATE_KEY"),
    ({"GOPHER_METRIC_LOGS_TOTAL_SIZE": "1G"}, "not a size in MB"),
    ({"GOPHER_HOST_PATH": "host"}, "not an absolute path"),
    ({"GOPHER_HOST_PATH": "/no/such/dir"}, "mount the host's / there"),
    ({"GOPHER_PROBES_INIT": "x {}", "GALA_GOPHER_GLOBAL__PROBES_INIT": ""}, "switches probes.init off"),
]


@pytest.mark.parametrize("given,message", REFUSED, ids=[m for _, m in REFUSED])
def test_entrypoint_refuses_bad_values_before_the_daemon_starts(tmp_path, given, message):
    rc, env, err = entrypoint(tmp_path, given)
    assert rc == 2, (rc, env, err)
    assert message in err, err
    assert not env, "the daemon was started"


def test_entrypoint_refusal_in_the_image(podman, image):
    p = podman("run", "--rm", "--network", "none", "-e", "GOPHER_METRIC_PORT=65536", image, check=False)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert 'GOPHER_METRIC_PORT="65536": not a port number (1..65535)' in p.stderr, p.stderr


# --- The agent running as docs/container.md says ---------------------------------------------


@pytest.fixture(scope="module")
def sleeper(podman, tmp_path_factory):
    """Another container (busybox `sleep`): its full id and its host pid."""
    root = tmp_path_factory.mktemp("busybox-rootfs")
    (root / "bin").mkdir()
    (root / "tmp").mkdir()
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    for applet in ("sh", "sleep"):
        (root / "bin" / applet).symlink_to("busybox")
    tar = root.parent / "busybox.tar"
    run("tar", "-C", root, "-cf", tar, ".")
    podman("import", tar, "localhost/gg-busybox:1")
    cid = podman("run", "-d", "--network", "none", "--name", "gg-sleeper", "localhost/gg-busybox:1",
                 "/bin/sleep", "600").stdout.strip()
    pid = int(podman("inspect", "-f", "{{.State.Pid}}", "gg-sleeper").stdout)
    assert re.fullmatch(r"[0-9a-f]{64}", cid), cid
    return cid, pid


@pytest.fixture(scope="module")
def api_socket(podman, tmp_path_factory):
    """podman's Docker-compatible API for the test's podman storage, on a host socket the agent
    reaches through its host root (`/host` + this path)."""
    sock = tmp_path_factory.mktemp("api") / "podman.sock"
    env = dict(os.environ, CONTAINERS_CONF=str(podman.conf))
    proc = subprocess.Popen(
        ["podman", "--root", str(podman.root / "storage"), "--runroot", str(podman.root / "run"),
         "--runtime", "runc", "--cgroup-manager=cgroupfs", "system", "service", "--time=0",
         f"unix://{sock}"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(sock))
            break
        except OSError:
            assert time.monotonic() < deadline, "podman's API socket never accepted"
            assert proc.poll() is None, "podman system service exited"
            time.sleep(0.1)
    yield sock
    proc.kill()
    proc.wait()


class Agent:
    name = "gg-agent"

    def __init__(self, podman, metric_port, rest_port, started):
        self.podman, self.metric_port, self.rest_port, self.started = podman, metric_port, rest_port, started

    def metrics(self):
        status, body = http_get(self.metric_port, "/metrics")
        assert status == 200, (status, body[:2000], self.podman.logs(self.name)[-4000:])
        return body

    def wait_for(self, what, probe, timeout=STARTUP_SECS):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = probe()
            if got:
                return got
            state = self.podman("inspect", "-f", "{{.State.Status}}", self.name, check=False).stdout.strip()
            assert state == "running", f"the agent container is {state}:\n{self.podman.logs(self.name)[-6000:]}"
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}\n{self.podman.logs(self.name)[-6000:]}")


@pytest.fixture(scope="module")
def agent(podman, image, sleeper, api_socket):
    """The agent with docs/container.md's flags; its probes.init (GOPHER_PROBES_INIT) points
    system_infos' process table at this test's process and the sleeper, every 2 s, with a
    custom label that can only come from that file."""
    metric_port, rest_port = free_port(), free_port()
    while rest_port == metric_port:
        rest_port = free_port()
    _, sleeper_pid = sleeper
    init = ("baseinfo " + json.dumps({
        "params": {"report_period": 2},
        "snoopers": {"proc_id": [os.getpid(), sleeper_pid], "custom_labels": {"via": "gopher_probes_init"}},
        "state": "running",
    }))
    started = time.monotonic()
    podman("run", "-d", "--name", Agent.name, "--privileged", "--pid=host", "--network=host",
           "-v", "/:/host:ro", "-v", "/sys:/sys", "-e", "GOPHER_HOST_PATH=/host",
           "-e", f"GOPHER_METRIC_PORT={metric_port}", "-e", f"GOPHER_REST_PORT={rest_port}",
           "-e", f"GOPHER_PROBES_INIT={init}",
           # The runtime API socket as the host sees it; the daemon reads it under /host.
           "-e", f"GALA_GOPHER_CONTAINER__DOCKER_SOCKETS={api_socket}", image)
    yield Agent(podman, metric_port, rest_port, started)
    podman("rm", "-f", "-t", "0", Agent.name, check=False)


def proc_series(metrics, pid):
    """The process-table series of host pid `pid`: [(name, {label: value})]."""
    out = []
    for line in metrics.splitlines():
        m = re.match(r'(gala_gopher_proc_\w+)\{(.*)\} ', line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2)))
        if labels.get("tgid") == str(pid):
            out.append((m.group(1), labels))
    return out


def test_agent_reports_host_processes_on_the_mapped_metric_port(agent):
    me = os.getpid()
    series = agent.wait_for(f"process series of the test's own pid {me}",
                            lambda: proc_series(http_get(agent.metric_port, "/metrics")[1], me))
    print(f"agent: first series of the host pid after {time.monotonic() - agent.started:.1f} s")
    comm = Path(f"/proc/{me}/comm").read_text().strip()
    names = {n for n, _ in series}
    assert "gala_gopher_proc_fd_count" in names, names
    for _, labels in series:
        assert labels["comm"] == comm, labels
        # GOPHER_PROBES_INIT was written to probes.init and replayed: its custom label is there.
        assert labels["via"] == "gopher_probes_init", labels
        assert labels.get("container_id", "") == "", labels
    # Host-wide tables too: the host's own view, not the container's.
    metrics = agent.metrics()
    assert re.search(r"^gala_gopher_cpu_\w+\{", metrics, re.M), metrics[:2000]


def test_env_mapping_took_effect_on_both_servers(agent):
    logs = agent.podman.logs(agent.name)
    assert "GOPHER_METRIC_PORT -> GALA_GOPHER_WEB_SERVER__PORT" in logs, logs
    assert f"addr=127.0.0.1:{agent.metric_port}" in logs, logs
    assert f"addr=127.0.0.1:{agent.rest_port}" in logs, logs
    # The REST API on GOPHER_REST_PORT answers with probes.init's settings.
    doc = agent.wait_for("GET /baseinfo on the REST port", lambda: (
        lambda r: json.loads(r[1]) if r[0] == 200 else None)(http_get(agent.rest_port, "/baseinfo")))
    assert doc["params"]["report_period"] == 2, doc
    assert os.getpid() in doc["snoopers"]["proc_id"], doc
    assert doc["state"] == "running", doc


def test_status_answers_on_the_metric_port(agent):
    status, body = http_get(agent.metric_port, "/status")
    assert status == 200, (status, body)
    doc = json.loads(body)
    probes = {p["name"]: p for p in doc["probes"]}
    assert probes["system_infos"]["state"] == "running", probes["system_infos"]
    assert probes["system_infos"]["records"] > 0, probes["system_infos"]


def test_another_containers_process_carries_its_container_labels(agent, sleeper):
    """The agent in its container labels another container's process: the id from the host's
    /proc/<pid>/cgroup (through /host), name and image from the runtime's API socket (through
    /host as well)."""
    cid, pid = sleeper

    def named():
        series = proc_series(http_get(agent.metric_port, "/metrics")[1], pid)
        return series if series and all("container_name" in l for _, l in series) else None

    series = agent.wait_for(f"labeled process series of the sleeper (host pid {pid})", named)
    for name, labels in series:
        assert labels.get("comm") == "sleep", labels
        assert labels.get("container_id") == cid[:12], (name, labels, cid)
        assert labels.get("container_name") == "gg-sleeper", (name, labels)
        assert labels.get("container_image") == "localhost/gg-busybox:1", (name, labels)


def test_podman_stop_stops_the_agent_cleanly(agent):
    grace = 15
    started = time.monotonic()
    agent.podman("stop", "-t", str(grace), agent.name, timeout=grace + 30)
    took = time.monotonic() - started
    state = json.loads(agent.podman("inspect", agent.name).stdout)[0]["State"]
    logs = agent.podman.logs(agent.name)
    assert state["ExitCode"] == 0, (state, logs[-4000:])
    assert took < grace, f"podman stop took {took:.1f} s: the agent ignored SIGTERM\n{logs[-4000:]}"
    assert "stopped" in logs.splitlines()[-1], logs[-2000:]
    print(f"podman stop: {took:.1f} s")


# --- Kubernetes ------------------------------------------------------------------------------


def manifests():
    files = sorted(K8S.glob("*.yaml"))
    assert files, f"no manifests in {K8S}"
    return files


def kubernetes_validate(*args):
    p = run(sys.executable, "-m", "kubernetes_validate", *args, check=False)
    assert "No module named kubernetes_validate" not in p.stderr, (
        f"kubernetes-validate is not installed for {sys.executable}: "
        "run with the test venv (./build.sh --test installs framework/tests/requirements.txt)")
    return p


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
def test_manifests_pass_strict_schema_validation(k8s_version):
    p = kubernetes_validate("--strict", "-k", k8s_version, *manifests())
    assert p.returncode == 0, p.stdout + p.stderr
    kinds = re.findall(r"passed for resource (\w+)/", p.stdout + p.stderr)
    assert sorted(kinds) == ["configmap", "daemonset", "serviceaccount"], p.stdout + p.stderr


@pytest.mark.parametrize("edit,error", [
    (("      hostPID: true", "      hostPid: true"), "'hostPid' was unexpected"),
    (("failureThreshold: 6", 'failureThreshold: "six"'), "'six' is not of type 'integer'"),
    (("              readOnly: true", '              readOnly: "yes"'), "'yes' is not of type 'boolean'"),
])
def test_schema_validation_refuses_a_broken_copy(tmp_path, edit, error):
    text = (K8S / "daemonset.yaml").read_text()
    assert text.count(edit[0]) == 1, edit
    broken = tmp_path / "daemonset.yaml"
    broken.write_text(text.replace(edit[0], edit[1]))
    p = kubernetes_validate("--strict", "-k", K8S_VERSIONS[0], broken)
    assert p.returncode != 0, p.stdout + p.stderr
    assert error in p.stdout + p.stderr, p.stdout + p.stderr


def k8s_objects():
    return {d["kind"]: d for f in manifests() for d in yaml.safe_load_all(f.read_text()) if d}


def test_daemonset_references_resolve_and_match_the_image():
    objs = k8s_objects()
    ds, cm, sa = objs["DaemonSet"], objs["ConfigMap"], objs["ServiceAccount"]
    for o in objs.values():
        assert "namespace" not in o["metadata"], o["metadata"]
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostPID"] is True and pod["hostNetwork"] is True
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert sa["automountServiceAccountToken"] is False and pod["automountServiceAccountToken"] is False
    (c,) = pod["containers"]
    assert c["image"] == f"localhost/gala-gopher:{version()}"
    env = {e["name"]: e for e in c["env"]}
    assert env["GOPHER_HOST_PATH"]["value"] == "/host"
    ref = env["GOPHER_PROBES_INIT"]["valueFrom"]["configMapKeyRef"]
    assert ref["name"] == cm["metadata"]["name"] and ref["key"] in cm["data"]
    # Every variable the DaemonSet sets is one the entrypoint reads.
    script = ENTRYPOINT.read_text()
    for name in env:
        assert f"${{{name}" in script or f"${name}" in script, name
    # The kubelet's probes reach /status on the metric port.
    port = int(env["GOPHER_METRIC_PORT"]["value"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] == "/status" and ports[get["port"]] == port, c[probe]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for m in mounts.values():
        assert m["name"] in volumes, m
    assert mounts["/host"]["readOnly"] is True
    assert volumes[mounts["/host"]["name"]]["hostPath"]["path"] == "/"
    for path in ("/sys", "/sys/kernel/tracing", "/sys/kernel/debug", "/sys/fs/bpf"):
        assert volumes[mounts[path]["name"]]["hostPath"]["path"] == path
    # The capabilities are the systemd unit's bounding set.
    unit = (REPO / "conf" / "gala-gopher.service").read_text()
    bounding = re.search(r"^CapabilityBoundingSet=(.*)$", unit, re.M).group(1).split()
    caps = c["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"]
    assert sorted("CAP_" + a for a in caps["add"]) == sorted(bounding)


def test_configmap_probes_init_is_accepted_by_the_daemon(podman, image):
    """The ConfigMap's probes.init, given as the DaemonSet gives it, replays without a refusal."""
    text = k8s_objects()["ConfigMap"]["data"]["probes.init"]
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert lines
    name = "gg-configmap"
    podman("run", "-d", "--name", name, "--privileged", "--pid=host", "--network=none",
           "-v", "/:/host:ro", "-v", "/sys:/sys", "-e", "GOPHER_HOST_PATH=/host",
           "-e", f"GOPHER_PROBES_INIT={text}", image)
    try:
        deadline = time.monotonic() + STARTUP_SECS
        while "replayed" not in (logs := podman.logs(name)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert f"replayed applied={len(lines)} refused=0" in logs, logs[-4000:]
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)
