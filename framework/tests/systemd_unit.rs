//! The systemd unit (`conf/gala-gopher.service`) and its legacy-kernel drop-in
//! (`conf/gala-gopher-legacy-kernel.conf`):
//!
//! * `systemd-analyze verify` is clean for the unit, with and without the drop-in;
//! * `systemd-analyze security --offline=true` rates the unit at most 4.0 (the drop-in variant's
//!   score is printed);
//! * the daemon with the four shipped probes works under exactly the unit's
//!   `CapabilityBoundingSet=` (read from the unit file) and `NoNewPrivileges=`, in a cgroup of its
//!   own as with `Delegate=yes`; without `CAP_BPF` the eBPF probes cannot load.
//!
//! PID 1 need not be systemd: both tools work offline. Without `systemd-analyze` (apt systemd) or
//! `setpriv` (apt util-linux) a test prints why and returns. The probe binaries are built next to
//! this test (`cargo test --workspace`), and the capability tests need root, as every eBPF test.

mod daemon_support;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use daemon_support::*;

/// The unit's name, as installed.
const UNIT: &str = "gala-gopher.service";
/// Highest exposure `systemd-analyze security` may give the unit (on kernels with CAP_BPF).
const MAX_EXPOSURE: f64 = 4.0;
/// Units the unit pulls in: its own `After=`/`Wants=`/`WantedBy=` and the default dependencies
/// of a service. `verify --root` needs them in the root; empty stubs are enough.
const STUB_UNITS: [&str; 5] = [
    "sysinit.target",
    "basic.target",
    "shutdown.target",
    "network-online.target",
    "multi-user.target",
];
/// uid/gid of the workload whose `/proc` files the probes read (`nobody` on Debian and Fedora).
const OTHER_ID: &str = "65534";

/// Capability names by number (`include/uapi/linux/capability.h`).
const CAP_NAMES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

fn unit_file() -> PathBuf {
    workspace().join("conf/gala-gopher.service")
}

fn legacy_dropin() -> PathBuf {
    workspace().join("conf/gala-gopher-legacy-kernel.conf")
}

/// `name` found in PATH (or the sbin directories a non-login root shell may lack), else `None`
/// after printing why `test` is skipped.
fn tool(name: &str, apt: &str, test: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        eprintln!("{test}: skipped: {name} not found (apt install {apt})");
    }
    found
}

/// `KEY=VALUE` assignments of `[section]`, in order (comments and blank lines skipped).
fn assignments(text: &str, section: &str) -> Vec<(String, String)> {
    let header = format!("[{section}]");
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            inside = line == header;
            continue;
        }
        if let (true, Some((k, v))) = (inside, line.split_once('=')) {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// The unit's `CapabilityBoundingSet=` as setpriv names (`bpf`, `sys_ptrace`, ...).
fn bounding_set(unit: &str) -> Vec<String> {
    let mut caps: Vec<String> = Vec::new();
    for (_, value) in assignments(unit, "Service")
        .into_iter()
        .filter(|(k, _)| k == "CapabilityBoundingSet")
    {
        if value.is_empty() {
            caps.clear();
            continue;
        }
        assert!(
            !value.starts_with('~'),
            "this test reads only positive CapabilityBoundingSet= lists: {value}"
        );
        for cap in value.split_whitespace() {
            let name = cap
                .strip_prefix("CAP_")
                .unwrap_or_else(|| panic!("not a capability: {cap}"))
                .to_ascii_lowercase();
            assert!(
                CAP_NAMES.contains(&name.as_str()),
                "unknown capability {cap}"
            );
            if !caps.contains(&name) {
                caps.push(name);
            }
        }
    }
    assert!(!caps.is_empty(), "the unit sets no CapabilityBoundingSet=");
    caps
}

fn cap_mask(caps: &[String]) -> u64 {
    caps.iter()
        .map(|c| CAP_NAMES.iter().position(|n| n == c).expect("known cap"))
        .fold(0, |m, bit| m | 1 << bit)
}

/// A field of `/proc/<pid>/status` (`CapBnd`, `NoNewPrivs`, ...).
fn proc_status(pid: &str, field: &str) -> String {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// A file system root for `systemd-analyze --root`: the unit (and with `dropin`, the legacy
/// drop-in) in `/etc/systemd/system`, the programs its `Exec*=` lines name, and stub units.
fn unit_root(dropin: bool) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let units = r.join("etc/systemd/system");
    fs::create_dir_all(&units).unwrap();
    fs::copy(unit_file(), units.join(UNIT)).unwrap();
    if dropin {
        let dir = units.join(format!("{UNIT}.d"));
        fs::create_dir_all(&dir).unwrap();
        fs::copy(legacy_dropin(), dir.join("legacy-kernel.conf")).unwrap();
    }
    let lib = r.join("usr/lib/systemd/system");
    fs::create_dir_all(&lib).unwrap();
    for stub in STUB_UNITS {
        fs::write(lib.join(stub), "[Unit]\nDescription=stub\n").unwrap();
    }
    // A merged-/usr layout: /bin/kill (ExecReload=) is /usr/bin/kill.
    let bin = r.join("usr/bin");
    fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink("usr/bin", r.join("bin")).unwrap();
    let daemon = Path::new(env!("CARGO_BIN_EXE_gala-gopher"));
    if fs::hard_link(daemon, bin.join("gala-gopher")).is_err() {
        fs::copy(daemon, bin.join("gala-gopher")).unwrap();
    }
    // verify only checks that the file is executable; the host's kill if there is one.
    match ["/bin/kill", "/usr/bin/kill"]
        .iter()
        .find(|p| Path::new(p).is_file())
    {
        Some(kill) => {
            fs::copy(kill, bin.join("kill")).unwrap();
        }
        None => write_script(&bin.join("kill"), "#!/bin/sh\nexit 0\n"),
    }
    root
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn verify(analyze: &Path, dropin: bool) {
    let root = unit_root(dropin);
    let out = run(Command::new(analyze)
        .arg("verify")
        .arg("--recursive-errors=yes")
        .arg(format!("--root={}", root.path().display()))
        .arg(UNIT));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stderr.trim().is_empty() && stdout.trim().is_empty(),
        "systemd-analyze verify (legacy drop-in: {dropin}): {}\n{stdout}{stderr}",
        out.status
    );
}

/// `systemd-analyze security --offline=true` of the unit: (overall exposure, full report).
fn exposure(analyze: &Path, dropin: bool) -> (f64, String) {
    let root = unit_root(dropin);
    let out = run(Command::new(analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(format!("--root={}", root.path().display()))
        .arg(UNIT));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let marker = format!("Overall exposure level for {UNIT}:");
    let score = report
        .lines()
        .find_map(|l| l.split_once(&marker))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no exposure level in the report ({}):\n{report}",
                out.status
            )
        });
    (score, report)
}

#[test]
fn unit_verifies_clean_with_and_without_legacy_dropin() {
    let Some(analyze) = tool(
        "systemd-analyze",
        "systemd",
        "unit_verifies_clean_with_and_without_legacy_dropin",
    ) else {
        return;
    };
    verify(&analyze, false);
    verify(&analyze, true);
}

#[test]
fn unit_exposure_is_at_most_four() {
    let Some(analyze) = tool(
        "systemd-analyze",
        "systemd",
        "unit_exposure_is_at_most_four",
    ) else {
        return;
    };
    let (score, report) = exposure(&analyze, false);
    println!("systemd-analyze security: {UNIT} exposure {score}");
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}:\n{report}"
    );
    let (legacy, _) = exposure(&analyze, true);
    println!("systemd-analyze security: {UNIT} with legacy-kernel.conf exposure {legacy}");
    assert!(legacy >= score, "the drop-in only adds privileges");
}

#[test]
fn bounding_set_parser_reads_merges_and_resets() {
    let unit = "[Unit]\nCapabilityBoundingSet=CAP_SYS_ADMIN\n[Service]\n# CapabilityBoundingSet=CAP_KILL\n\
                CapabilityBoundingSet=CAP_CHOWN\nCapabilityBoundingSet=\nCapabilityBoundingSet=CAP_BPF CAP_PERFMON\n\
                CapabilityBoundingSet=CAP_BPF\n";
    assert_eq!(bounding_set(unit), ["bpf", "perfmon"]);
    assert_eq!(cap_mask(&bounding_set(unit)), 3 << 38);
}

/// The unit's own cgroup as systemd would hand it over with `Delegate=yes`: a root-owned
/// directory (mode 0755) below the test's cgroup that the daemon is started in. Removed (with
/// whatever the daemon left) when dropped.
struct DelegatedCgroup {
    dir: PathBuf,
}

impl DelegatedCgroup {
    fn create() -> Result<DelegatedCgroup, String> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
        let mount = mountinfo
            .lines()
            .find_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                (right.split_whitespace().next()? == "cgroup2")
                    .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
            })
            .ok_or("no cgroup2 mount")?;
        let own = fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
        let own = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .filter(|p| !p.contains(".."))
            .ok_or("no reachable unified cgroup")?
            .trim_start_matches('/')
            .to_string();
        let dir = mount
            .join(own)
            .join(format!("gg-systemd-unit-test.{}", std::process::id()));
        fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
        Ok(DelegatedCgroup { dir })
    }
}

impl Drop for DelegatedCgroup {
    fn drop(&mut self) {
        // Leaves first; the daemon is gone by now, its probe runs may take a moment to end.
        let _ = wait_for(Duration::from_secs(5), || {
            let mut dirs = Vec::new();
            let mut stack = vec![self.dir.clone()];
            while let Some(d) = stack.pop() {
                if let Ok(rd) = fs::read_dir(&d) {
                    stack.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
                }
                dirs.push(d);
            }
            for d in dirs.iter().rev() {
                let _ = fs::remove_dir(d);
            }
            (!self.dir.exists()).then_some(())
        });
    }
}

/// The daemon under `setpriv` with bounding set `caps` (and no_new_privs when `nnp`) on a config
/// in a temp dir with `probes_conf` (a `probes = (...)` list) and the probes `install` puts into
/// its probes folder; started in `cgroup` when given.
fn start_confined(
    setpriv: &Path,
    caps: &[String],
    nnp: bool,
    probes_conf: &str,
    install: impl FnOnce(&Path),
    cgroup: Option<&DelegatedCgroup>,
) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let probes = dir.path().join("probes");
    let meta = dir.path().join("meta");
    fs::create_dir_all(&probes).unwrap();
    fs::create_dir_all(&meta).unwrap();
    install(&probes);
    let port = free_port();
    let conf = format!(
        "global = {{ log_level = \"info\"; probes_dir = \"{p}\"; meta_dir = \"{m}\"; sdk_dir = \"{s}\"; \
         cmd_socket = \"{d}/cmd.sock\"; probes_init = \"{d}/probes.init\"; }};\n\
         web_server = {{ bind_addr = \"127.0.0.1\"; port = {port}; }};\n\
         event = {{ out_channel = \"\"; }};\nmeta = {{ out_channel = \"\"; }};\n{probes_conf}\n",
        p = probes.display(),
        m = meta.display(),
        s = workspace().join("probe-sdk/scripts").display(),
        d = dir.path().display(),
    );
    fs::write(dir.path().join("gala-gopher.conf"), conf).unwrap();
    let log = fs::File::create(dir.path().join("daemon.log")).unwrap();
    let bounding = caps
        .iter()
        .fold(String::from("-all"), |s, c| format!("{s},+{c}"));
    let mut cmd = Command::new(setpriv);
    cmd.arg(format!("--bounding-set={bounding}"))
        .args(["--inh-caps=-all", "--ambient-caps=-all"]);
    if nnp {
        cmd.arg("--no-new-privs");
    }
    cmd.arg("--")
        .arg(env!("CARGO_BIN_EXE_gala-gopher"))
        .arg("-c")
        .arg(dir.path().join("gala-gopher.conf"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let procs = cgroup.map(|cg| {
        fs::OpenOptions::new()
            .write(true)
            .open(cg.dir.join("cgroup.procs"))
            .unwrap()
    });
    if let Some(fd) = procs.as_ref().map(|f| f.as_raw_fd()) {
        // SAFETY: only write(2) on an fd opened before the fork: async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if libc::write(fd, b"0".as_ptr().cast(), 1) == 1 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    let child = cmd.spawn().expect("spawn setpriv gala-gopher");
    drop(procs);
    let d = Daemon { dir, port, child };
    d.wait_up();
    d
}

/// State and last error of probe `name` in `GET /status`.
fn probe_state(d: &Daemon, name: &str) -> Option<(String, String)> {
    let st = d.status();
    let p = st["probes"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)?;
    Some((
        p["state"].as_str().unwrap_or("").to_string(),
        p["last_error"].as_str().unwrap_or("").to_string(),
    ))
}

fn install_shipped(probes: &Path) {
    install_probe(probes, "system_infos", "probes/system_infos");
    install_probe(probes, "tcpprobe", "probes/tcp");
    install_probe(probes, "taskprobe", "probes/proc");
    install_probe(probes, "ioprobe", "probes/io");
}

/// Listens on loopback (port on stdout), and after each connection closes forks and execs
/// `/bin/true`. Runs as another user, so its `/proc` files need the unit's capabilities.
const WORKLOAD: &str = "import os, socket\n\
    l = socket.socket()\nl.bind(('127.0.0.1', 0))\nl.listen(8)\n\
    print(l.getsockname()[1], flush=True)\n\
    while True:\n    c, _ = l.accept()\n    while c.recv(65536):\n        pass\n    c.close()\n    \
    os.spawnv(os.P_WAIT, '/bin/true', ['true'])\n";
/// Argument that makes the workload's command line unique (the probes' whitelist matches it).
const WORKLOAD_MARK: &str = "gg-systemd-unit-workload";

#[test]
fn shipped_probes_work_under_the_units_capabilities() {
    let Some(setpriv) = tool(
        "setpriv",
        "util-linux",
        "shipped_probes_work_under_the_units_capabilities",
    ) else {
        return;
    };
    let unit = fs::read_to_string(unit_file()).unwrap();
    let caps = bounding_set(&unit);
    let nnp = assignments(&unit, "Service")
        .iter()
        .any(|(k, v)| k == "NoNewPrivileges" && v == "yes");
    assert!(nnp, "the unit sets NoNewPrivileges=yes");

    // Started before the daemon: tcpprobe names the owner of its older listener from /proc.
    let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .unwrap_or("python3");
    let mut workload = KillOnDrop(
        Command::new(&setpriv)
            .args([
                &format!("--reuid={OTHER_ID}"),
                &format!("--regid={OTHER_ID}"),
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                python,
                "-c",
                WORKLOAD,
                WORKLOAD_MARK,
            ])
            .current_dir("/")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the workload"),
    );
    let mut line = String::new();
    BufReader::new(workload.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let server_port: u16 = line.trim().parse().expect("workload port");
    let wpid = workload.0.id();

    let cgroup = match DelegatedCgroup::create() {
        Ok(cg) => Some(cg),
        Err(e) => {
            println!("no delegated cgroup for the daemon ({e}): containment not checked");
            None
        }
    };
    let whitelist = tempfile::NamedTempFile::new().unwrap();
    fs::write(
        whitelist.path(),
        format!("application = ( {{ comm = \"^python3\"; cmdline = \"{WORKLOAD_MARK}\"; }} );\n"),
    )
    .unwrap();
    let w = whitelist.path().display();
    let probes_conf = format!(
        "probes = (\n\
         {{ name = \"system_infos\"; param = \"-t 1 -w {w}\"; switch = \"on\"; }},\n\
         {{ name = \"tcpprobe\"; param = \"-t 1\"; switch = \"on\"; }},\n\
         {{ name = \"taskprobe\"; param = \"-t 1 -w {w}\"; switch = \"on\"; }},\n\
         {{ name = \"ioprobe\"; param = \"-t 1\"; switch = \"on\"; }}\n);"
    );
    let d = start_confined(
        &setpriv,
        &caps,
        nnp,
        &probes_conf,
        install_shipped,
        cgroup.as_ref(),
    );
    let pid = d.pid().to_string();
    let host_bnd = u64::from_str_radix(&proc_status("self", "CapBnd"), 16).unwrap();
    let want = cap_mask(&caps) & host_bnd;
    assert_eq!(
        u64::from_str_radix(&proc_status(&pid, "CapBnd"), 16).ok(),
        Some(want),
        "the daemon's bounding set is the unit's"
    );
    assert_eq!(proc_status(&pid, "NoNewPrivs"), "1");

    // Attached: every eBPF probe has written its stats table.
    for probe in ["tcp", "proc", "io"] {
        d.wait_scrape(
            &format!("gala_gopher_bpf_probe_events{{probe=\"{probe}\""),
            Duration::from_secs(30),
        );
    }
    // Activity: loopback connections to the workload (each followed by a fork + exec there), and
    // a file written and synced on a disk.
    for _ in 0..3 {
        use std::io::Write;
        let mut c = std::net::TcpStream::connect(("127.0.0.1", server_port)).unwrap();
        c.write_all(&[1u8; 100_000]).unwrap();
    }
    let scratch = tempfile::tempdir_in("/var/tmp").unwrap();
    {
        use std::io::Write;
        let mut f = fs::File::create(scratch.path().join("data")).unwrap();
        f.write_all(&vec![7u8; 1 << 20]).unwrap();
        f.sync_all().unwrap();
    }

    let w = format!("tgid=\"{wpid}\"");
    let wanted: [(&str, Vec<String>); 7] = [
        (
            "system_infos: system_cpu",
            vec!["gala_gopher_cpu_total_used_per{".into()],
        ),
        (
            "system_infos: system_meminfo",
            vec!["gala_gopher_mem_total_kB{".into()],
        ),
        (
            "system_infos: system_proc fd_count (/proc/PID/fd of another user)",
            vec![format!("gala_gopher_proc_fd_count{{{w}")],
        ),
        (
            "system_infos: system_proc rchar_bytes (/proc/PID/io of another user)",
            vec![format!("gala_gopher_proc_rchar_bytes{{{w}")],
        ),
        (
            "tcpprobe: tcp_link of the workload's older listener",
            vec![
                format!("gala_gopher_tcp_link_link_count{{{w},"),
                "role=\"server\"".into(),
                format!("server_port=\"{server_port}\""),
            ],
        ),
        (
            "taskprobe: proc_lifecycle of the workload",
            vec![format!("gala_gopher_proc_fork_count{{{w}")],
        ),
        (
            "ioprobe: io_count",
            vec!["gala_gopher_block_write_bytes{".into()],
        ),
    ];
    let has = |scrape: &str, needles: &[String]| {
        scrape
            .lines()
            .any(|l| needles.iter().all(|n| l.contains(n.as_str())))
    };
    let seen = wait_for(Duration::from_secs(20), || {
        let s = d.scrape();
        wanted.iter().all(|(_, n)| has(&s, n)).then_some(())
    });
    if seen.is_none() {
        let s = d.scrape();
        let missing: Vec<&str> = wanted
            .iter()
            .filter(|(_, n)| !has(&s, n))
            .map(|(what, _)| *what)
            .collect();
        panic!(
            "missing under the unit's capabilities {caps:?}: {missing:?}\nlog:\n{}",
            d.log()
        );
    }
    for name in ["system_infos", "tcpprobe", "taskprobe", "ioprobe"] {
        let (state, err) = probe_state(&d, name).expect("probe in /status");
        assert_eq!(state, "running", "{name}: {err}");
    }
    let log = d.log();
    assert!(
        log.contains("source=\"proc_connector\""),
        "the snoopers' proc connector is usable; log:\n{log}"
    );
    if cgroup.is_some() {
        assert!(
            log.contains("one cgroup v2 per probe run"),
            "probe runs get their cgroups in the delegated subtree; log:\n{log}"
        );
    }
    let (status, _, log) = d.stop();
    assert!(status.success(), "{status}; log:\n{log}");
    drop(workload);
    drop(cgroup);
}

/// The negative check: the same test fails when the set lacks what the probes need.
#[test]
fn without_cap_bpf_tcpprobe_cannot_load() {
    let Some(setpriv) = tool(
        "setpriv",
        "util-linux",
        "without_cap_bpf_tcpprobe_cannot_load",
    ) else {
        return;
    };
    let unit = fs::read_to_string(unit_file()).unwrap();
    let caps: Vec<String> = bounding_set(&unit)
        .into_iter()
        .filter(|c| c != "bpf")
        .collect();
    let d = start_confined(
        &setpriv,
        &caps,
        true,
        "probes = ( { name = \"tcpprobe\"; param = \"-t 1\"; switch = \"on\"; } );",
        |probes| install_probe(probes, "tcpprobe", "probes/tcp"),
        None,
    );
    let err = wait_for(Duration::from_secs(20), || {
        probe_state(&d, "tcpprobe")
            .filter(|(state, err)| state != "running" && !err.is_empty())
            .map(|(_, err)| err)
    })
    .unwrap_or_else(|| panic!("tcpprobe kept running without CAP_BPF; log:\n{}", d.log()));
    assert!(err.contains("Operation not permitted"), "{err}");
    assert!(!d
        .scrape()
        .contains("gala_gopher_bpf_probe_events{probe=\"tcp\""));
}
