"""The packages as users install them (issue 12).

Run by `./build.sh --test` right after `--release` made the packages in GG_PACKAGE_DIR (root:
`rpm --root`, `dpkg --root`, mount and network namespaces). Each install goes into an empty root
with a static busybox as its /bin/sh and a `systemctl` that records its arguments, so the
packages' real scriptlets run; the packaged daemon then runs from that root (overlaid on the host
in private namespaces, run_in_root.sh) with the packaged config.
"""

import os
import re
import shutil
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PKG = Path(os.environ.get("GG_PACKAGE_DIR", REPO / "target" / "packages"))
RUN_IN_ROOT = Path(__file__).with_name("run_in_root.sh")
SHIPPED = [
    line.split()
    for line in (REPO / "probes" / "shipped.list").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]


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


def one(pattern, folder=PKG):
    found = sorted(folder.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {folder}, found {found}"
    return found[0]


def rpm_file(folder=PKG, release=1):
    return one(f"gala-gopher-{version()}-{release}*.x86_64.rpm", folder)


def deb_file(folder=PKG, release=1):
    return one(f"gala-gopher_{version()}-{release}_*.deb", folder)


def build(*flags, package_dir):
    """`./build.sh --release FLAGS` into package_dir (the user's command)."""
    p = subprocess.run(
        ["./build.sh", "--release", f"--package-dir={package_dir}", *flags],
        cwd=REPO, capture_output=True, text=True,
    )
    assert p.returncode == 0, f"build.sh {flags} failed:\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
    return p


def installed_tree(prefix):
    """{path: permission string} of the files and symlinks under prefix (dirs left out)."""
    out = {}
    for dirpath, _, files in os.walk(prefix):
        for f in files:
            full = Path(dirpath, f)
            st = full.lstat()
            out["/" + str(full.relative_to(prefix))] = oct(st.st_mode & 0o7777)
    return out


def install_sh_tree(tmp_path):
    prefix = tmp_path / "install-sh"
    run(REPO / "install.sh", "--prefix", prefix)
    return prefix, installed_tree(prefix)


def rpm_tree(rpm):
    """{path: mode} of the rpm's files (dirs left out), and its config files."""
    q = run("rpm", "-qp", "--qf", "[%{FILENAMES}\t%{FILEMODES}\t%{FILEFLAGS}\n]", rpm).stdout
    files, configs = {}, set()
    for line in q.splitlines():
        name, mode, flags = line.split("\t")
        mode = int(mode)
        if (mode & 0o170000) == 0o040000:
            continue
        files[name] = oct(mode & 0o7777)
        if int(flags) & 1:  # RPMFILE_CONFIG
            configs.add(name)
    return files, configs


def fake_system(root):
    """An empty install root with just enough for the scriptlets: a static busybox as /bin/sh,
    a `systemctl` logging its arguments to /systemctl.log, /run/systemd/system and /dev/null."""
    (root / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    (root / "usr" / "bin").mkdir(parents=True)
    ctl = root / "usr" / "bin" / "systemctl"
    ctl.write_text('#!/bin/sh\necho "$@" >> /systemctl.log\n')
    ctl.chmod(0o755)
    (root / "run" / "systemd" / "system").mkdir(parents=True)
    (root / "dev").mkdir()
    os.mknod(root / "dev" / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    return root


def systemctl_calls(root):
    log = root / "systemctl.log"
    return log.read_text().splitlines() if log.exists() else []


class Daemon:
    """The packaged daemon run from an install root, as the unit runs it."""

    def __init__(self, root):
        self.root = root
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--net", "--propagation", "private", str(RUN_IN_ROOT), str(root),
             "/usr/bin/gala-gopher", "-c", "/etc/gala-gopher/gala-gopher.conf"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )

    def curl(self, *args):
        return run("nsenter", "-t", self.proc.pid, "-n", "curl", "-sS", "--max-time", "5", *args, check=False)

    def wait_for(self, what, pred, timeout=30):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.proc.stdout.read()}")
            last = pred()
            if last:
                return last
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}")

    def metrics(self):
        p = self.curl("http://127.0.0.1:8888/metrics")
        return p.stdout if p.returncode == 0 else ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


def serves_probe(daemon, probe):
    """The packaged daemon serves /metrics with the probe running and its records accepted."""
    up = re.compile(r'^gala_gopher_self_probe_up\{probe="%s"[^}]*\} 1$' % re.escape(probe), re.M)
    records = re.compile(r'^gala_gopher_self_probe_records_total\{probe="%s"[^}]*\} [1-9]' % re.escape(probe), re.M)

    def reporting():
        m = daemon.metrics()
        return m if up.search(m) and records.search(m) else None

    return daemon.wait_for(f"{probe} up and reporting in /metrics", reporting)


# ---------------------------------------------------------------------------------------------


def test_release_writes_rpm_srpm_deb_and_vendored_tarball():
    v = version()
    rpm_file()
    one(f"gala-gopher-{v}-1*.src.rpm")
    deb_file()
    tarball = one(f"gala-gopher-{v}.tar.gz")
    with tarfile.open(tarball) as t:
        names = set(t.getnames())
    top = f"gala-gopher-{v}"
    for must in ("Cargo.toml", "Cargo.lock", "build.sh", "install.sh", "conf/rpm/gala-gopher.spec",
                 ".cargo/config.toml", "vendor"):
        assert f"{top}/{must}" in names, f"{must} missing from {tarball.name}"
    assert not any(n.startswith(f"{top}/target/") for n in names), "build outputs in the tarball"
    with tarfile.open(tarball) as t:
        config = t.extractfile(f"{top}/.cargo/config.toml").read().decode()
    assert 'replace-with = "vendored-sources"' in config and 'directory = "vendor"' in config, config
    # Every locked registry crate is vendored.
    lock = (REPO / "Cargo.lock").read_text()
    crates = re.findall(r'name = "([^"]+)"\nversion = "([^"]+)"\nsource = "registry', lock)
    assert crates
    missing = [f"{n}-{ver}" for n, ver in crates if f"{top}/vendor/{n}-{ver}" not in names]
    assert not missing, f"not vendored: {missing[:10]}"


def test_rpmlint_reports_no_errors():
    targets = [rpm_file(), one(f"gala-gopher-{version()}-1*.src.rpm"), REPO / "conf/rpm/gala-gopher.spec"]
    p = run("rpmlint", "-r", REPO / "conf/rpm/gala-gopher.rpmlintrc", *targets, check=False)
    print(p.stdout)
    m = re.search(r"(\d+) errors?, (\d+) warnings?", p.stdout)
    assert m, f"no rpmlint summary:\n{p.stdout}\n{p.stderr}"
    assert m.group(1) == "0", f"rpmlint errors:\n{p.stdout}"


def test_rpm_has_exactly_the_install_sh_layout(tmp_path):
    _, expected = install_sh_tree(tmp_path)
    files, configs = rpm_tree(rpm_file())
    assert files == expected
    assert configs == {f"/etc/gala-gopher/{c}" for c in ("gala-gopher.conf", "gala-gopher-app.conf", "probes.init")}
    # Every shipped probe is in the full build's package.
    for name, _dir, source in SHIPPED:
        assert f"/opt/gala-gopher/probes/{name if source == 'cargo' else source}" in files
        assert f"/opt/gala-gopher/probes/{name}.meta" in files


def test_deb_has_exactly_the_install_sh_layout(tmp_path):
    _, expected = install_sh_tree(tmp_path)
    x = tmp_path / "deb"
    run("dpkg-deb", "-x", deb_file(), x)
    assert installed_tree(x) == expected
    conffiles = run("dpkg-deb", "-I", deb_file(), "conffiles").stdout.split()
    assert sorted(conffiles) == sorted(f"/etc/gala-gopher/{c}" for c in ("gala-gopher.conf", "gala-gopher-app.conf", "probes.init"))
    listing = run("dpkg", "-c", deb_file()).stdout
    assert "root/root" in listing and f"./usr/bin/gala-gopher" in listing


def elf_needed(tree):
    """Sonames the ELF files under tree link (DT_NEEDED), plus their interpreter."""
    needed = set()
    for dirpath, _, files in os.walk(tree):
        for f in files:
            path = Path(dirpath, f)
            if path.is_symlink() or path.read_bytes()[:4] != b"\x7fELF":
                continue
            dyn = run("readelf", "-d", "-l", path).stdout
            needed.update(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn))
            needed.update(Path(i).name for i in re.findall(r"Requesting program interpreter: ([^\]]+)\]", dyn))
    return needed


def test_runtime_requires_are_exactly_the_linked_libraries(tmp_path):
    prefix, _ = install_sh_tree(tmp_path)
    needed = elf_needed(prefix)
    assert "libelf.so.1" in needed, needed  # the eBPF probes' libbpf
    reqs = run("rpm", "-qp", "--requires", rpm_file()).stdout.splitlines()
    sonames = {m.group(1) for r in reqs if (m := re.match(r"^(\S+\.so[.\d]*)\(", r))}
    assert sonames == needed
    # Nothing else but the scriptlets' and scripts' interpreters and rpm's own features.
    others = [r for r in reqs if not re.match(r"^(\S+\.so[.\d]*)\(|^rpmlib\(|^/bin/sh$|^/usr/bin/env$|^/usr/bin/python3$|^/bin/bash$|^rtld\(|^config\(gala-gopher\)", r)]
    assert not others, others
    depends = run("dpkg-deb", "-f", deb_file(), "Depends").stdout
    for pkg in ("libc6", "libelf1", "zlib1g"):
        assert pkg in depends, depends


@pytest.fixture(scope="module")
def rel2(tmp_path_factory):
    """The packages rebuilt with release 2 (the user's upgrade)."""
    out = tmp_path_factory.mktemp("rel2")
    build("--pkg-release=2", package_dir=out)
    return out


def test_rpm_install_upgrade_remove_in_an_empty_root(tmp_path, rel2):
    root = fake_system(tmp_path / "root")
    rpm1 = rpm_file()
    run("rpm", "--root", root, "--nodeps", "-i", rpm1)
    assert "--no-reload preset gala-gopher.service" in systemctl_calls(root)
    conf = root / "etc/gala-gopher/gala-gopher.conf"
    assert oct(conf.stat().st_mode & 0o777) == "0o640"
    assert oct((root / "etc/gala-gopher").stat().st_mode & 0o777) == "0o750"
    unit = root / "usr/lib/systemd/system/gala-gopher.service"
    assert unit.exists()
    # The installed unit as the host would load it (the root overlaid on the host: its binaries
    # and the host's targets).
    p = run("unshare", "--mount", "--net", "--propagation", "private", RUN_IN_ROOT, root,
            "systemd-analyze", "verify", "/usr/lib/systemd/system/gala-gopher.service")
    assert p.stdout.strip() == "" and p.stderr.strip() == "", (p.stdout, p.stderr)

    # The packaged daemon starts with the packaged config and serves /metrics.
    daemon = Daemon(root)
    try:
        metrics = serves_probe(daemon, "system_infos")
        assert re.search(r"^gala_gopher_cpu_idle_msec\{cpu=\"cpu\"", metrics, re.M), metrics[:2000]
    finally:
        daemon.stop()

    # The user edits the config; logs exist.
    edited = conf.read_text().replace("interval = 5;", "interval = 7;", 1)
    assert edited != conf.read_text()
    conf.write_text(edited)
    (root / "var/log/gala-gopher").mkdir(parents=True, exist_ok=True)
    (root / "var/log/gala-gopher/gopher.log").write_text("kept\n")

    # Upgrade to a rebuilt package with a higher release: the edit stays, a running service restarts.
    run("rpm", "--root", root, "--nodeps", "-U", rpm_file(rel2, release=2))
    assert run("rpm", "--root", root, "-q", "gala-gopher").stdout.strip() == f"gala-gopher-{version()}-2.x86_64"
    assert conf.read_text() == edited
    assert not Path(f"{conf}.rpmnew").exists()
    assert "try-restart gala-gopher.service" in systemctl_calls(root)

    # Removal stops the service, keeps the edited config as .rpmsave and the logs.
    run("rpm", "--root", root, "--nodeps", "-e", "gala-gopher")
    assert "--no-reload disable --now gala-gopher.service" in systemctl_calls(root)
    assert not (root / "usr/bin/gala-gopher").exists()
    assert not (root / "opt/gala-gopher/probes").exists()
    assert Path(f"{conf}.rpmsave").read_text() == edited
    assert not (root / "etc/gala-gopher/gala-gopher-app.conf").exists()
    assert (root / "var/log/gala-gopher/gopher.log").read_text() == "kept\n"


def test_deb_install_upgrade_remove_in_an_empty_root(tmp_path, rel2):
    root = fake_system(tmp_path / "root")
    for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates"):
        (root / d).mkdir(parents=True)
    (root / "var/lib/dpkg/status").touch()
    run("dpkg", f"--root={root}", "--force-depends", "-i", deb_file())
    assert "--system daemon-reload" in systemctl_calls(root)
    assert not any("try-restart" in c for c in systemctl_calls(root)), "a first install is not started"
    conf = root / "etc/gala-gopher/gala-gopher.conf"

    daemon = Daemon(root)
    try:
        serves_probe(daemon, "system_infos")
    finally:
        daemon.stop()

    edited = conf.read_text().replace("interval = 5;", "interval = 7;", 1)
    conf.write_text(edited)
    run("dpkg", f"--root={root}", "--force-depends", "--force-confold", "-i", deb_file(rel2, release=2))
    status = run("dpkg-query", f"--root={root}", "-W", "-f=${Version}", "gala-gopher").stdout
    assert status == f"{version()}-2"
    assert conf.read_text() == edited
    assert "try-restart gala-gopher.service" in systemctl_calls(root)

    run("dpkg", f"--root={root}", "--force-depends", "-r", "gala-gopher")
    assert "--no-reload disable --now gala-gopher.service" in systemctl_calls(root)
    assert not (root / "usr/bin/gala-gopher").exists()
    assert conf.read_text() == edited, "remove keeps the conffiles"


def test_install_sh_uninstall_keeps_edited_config(tmp_path):
    prefix, _ = install_sh_tree(tmp_path)
    conf = prefix / "etc/gala-gopher/gala-gopher.conf"
    conf.write_text(conf.read_text() + "\n# mine\n")
    mine = prefix / "opt/gala-gopher/probes/mine.sh"
    mine.write_text("#!/bin/sh\n")
    run(REPO / "install.sh", "--uninstall", "--prefix", prefix)
    left = installed_tree(prefix)
    assert set(left) == {"/etc/gala-gopher/gala-gopher.conf", "/opt/gala-gopher/probes/mine.sh"}, left


@pytest.mark.parametrize("flags, message", [
    (["--probes", "system_infos,nosuch"], 'no probe "nosuch"'),
    (["--probes", ", ,"], "leaves no probe"),
    (["-DENABLE_NOSUCH=0"], "unknown probe"),
    (["-DENABLE_TCP=maybe"], "unknown option"),
    (["--pkg-release=1;rm"], "must be a number"),
    (["--frobnicate"], "unknown option"),
])
def test_bad_build_options_fail_before_building(flags, message):
    p = subprocess.run(["./build.sh", "--release", *flags], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert message in p.stderr, p.stderr
    assert "Compiling" not in p.stderr


@pytest.fixture(scope="module")
def tailored(tmp_path_factory):
    """`--probes system_infos,tcp`: the packages, then the full release build restored."""
    out = tmp_path_factory.mktemp("tailored")
    try:
        build("--probes", "system_infos,tcp", package_dir=out)
        version_line = run(REPO / "target/release/gala-gopher", "--version").stdout
        # Upstream's form selects the same build (nothing recompiled: the same selection).
        p = build("-DENABLE_SOCKET=0", "-DENABLE_L7=0", "-DENABLE_KAFKA=0", "-DENABLE_PROC=0", "-DENABLE_IO=0", "-DENABLE_CONTAINER=0", "-DENABLE_SLI=0",
                  "-DENABLE_NGINX=0", "-DENABLE_HAPROXY=0", "-DENABLE_LVS=0", "-DENABLE_DNSMASQ=0",
                  "-DENABLE_BIND=0", "-DENABLE_RABBITMQ=0", "-DENABLE_REDIS=0",
                  "-DENABLE_OPENGAUSS_SLI=0", "-DENABLE_JVM=0", "-DENABLE_FLAMEGRAPH=0",
                  "-DENABLE_EXAMPLE=0", "-DENABLE_EXAMPLE_PY=0", "--no-packages", package_dir=out)
        assert "Compiling" not in p.stderr, p.stderr
        upstream_form = run(REPO / "target/release/gala-gopher", "--version").stdout
        yield out, version_line, upstream_form
    finally:
        build("--no-packages", package_dir=out)


# The probes --probes system_infos,tcp leaves out, as the packaged config and docs would name them
# (the example probes' sources are still cited by writing-a-probe.md as templates to copy; the
# middleware probes by their distinctive names: "redis" or "bind" are everyday words in the docs).
LEFT_OUT = ("endpoint.md", "endpoint_tcp", "l7probe", "l7_rpc", "kafkaprobe", "taskprobe", "ioprobe", "containerprobe", "sliprobe", "haproxy", "dnsmasq",
            "rabbitmq", "pg_stat_probe", "jvmprobe", "stackprobe", "stack.md", "middleware.md")


def test_tailored_package_has_only_the_chosen_probes(tailored, tmp_path):
    out, version_line, upstream_form = tailored
    assert "probes: system_infos tcpprobe" in version_line, version_line
    assert upstream_form == version_line
    files, _ = rpm_tree(rpm_file(out))
    probes = {Path(f).name for f in files if f.startswith("/opt/gala-gopher/probes/")}
    assert probes == {"system_infos", "system_infos.meta", "tcpprobe", "tcpprobe.meta"}
    x = tmp_path / "deb"
    run("dpkg-deb", "-x", deb_file(out), x)
    assert set(installed_tree(x)) == set(files)
    # Config and docs name no left-out probe; the config still loads.
    for f in files:
        if f.startswith(("/etc/", "/usr/share/doc/")):
            text = (x / f.lstrip("/")).read_text()
            for gone in LEFT_OUT + ("proc.md", "io.md", "sli.md"):
                assert gone not in text, f"{f} mentions {gone}"
    assert "/usr/share/doc/gala-gopher/probes/tcp.md" in files
    assert "/usr/share/doc/gala-gopher/probes/proc.md" not in files
    run(x / "usr/bin/gala-gopher", "--check-config", "-c", x / "etc/gala-gopher/gala-gopher.conf")


def test_tailored_daemon_answers_not_supported_for_left_out_probes(tailored, tmp_path):
    out, _, _ = tailored
    root = fake_system(tmp_path / "root")
    run("rpm", "--root", root, "--nodeps", "-i", rpm_file(out))
    daemon = Daemon(root)
    try:
        serves_probe(daemon, "system_infos")
        for name in ("socket", "l7", "kafka", "proc", "io", "container", "sli", "taskprobe", "nginx", "jvm", "opengauss_sli",
                     "redis", "pg_stat_probe"):
            p = daemon.curl("-X", "PUT", f"http://127.0.0.1:9999/{name}",
                            "-d", 'json={"state":"running"}')
            assert "not supported in the current version" in p.stdout, (name, p.stdout)
        p = daemon.curl("http://127.0.0.1:9999/tcp")
        assert p.returncode == 0 and "tcp_rtt" in p.stdout, p.stdout
    finally:
        daemon.stop()


def test_vendored_source_builds_offline(tmp_path):
    """`rpmbuild --rebuild` of the source rpm with no network namespace link, a fresh CARGO_HOME
    and CARGO_NET_OFFLINE: the vendored crates are all it needs (and %check runs)."""
    top = tmp_path / "rpmbuild"
    # What is checked is that the vendored source builds offline, not the release's code
    # generation: without fat LTO and with parallel codegen the rebuild takes half the time.
    env = dict(os.environ, CARGO_HOME=str(tmp_path / "cargo-home"), CARGO_NET_OFFLINE="true",
               CARGO_PROFILE_RELEASE_LTO="off", CARGO_PROFILE_RELEASE_CODEGEN_UNITS="16")
    env.pop("CARGO_TARGET_DIR", None)
    env.pop("GG_PROBES", None)
    started = time.monotonic()
    run("unshare", "--net", "rpmbuild", "--rebuild", "--nodeps", "--define", f"_topdir {top}",
        one(f"gala-gopher-{version()}-1*.src.rpm"), env=env)
    print(f"offline rpmbuild --rebuild: {time.monotonic() - started:.0f} s")
    rebuilt = one(f"RPMS/x86_64/gala-gopher-{version()}-1*.x86_64.rpm", top)
    assert set(rpm_tree(rebuilt)[0]) == set(rpm_tree(rpm_file())[0])
