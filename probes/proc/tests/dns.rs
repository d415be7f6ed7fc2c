//! `proc_dns` (sub-probe `proc_dns`, `-P 512`) on the real kernel: a child resolves names
//! through a dnsmasq the test starts on its own loopback address (127.0.0.77 or .78, port 53),
//! its own `/etc/resolv.conf` (a private mount namespace) pointing there. Root and `/usr/sbin/dnsmasq` needed.
//!
//! Fields after tgid, domain and comm: delay_avg(3) max_delay(4) error_ratio(5) count(6)
//! error_count(7).

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Probe, Record, Workload, WORKLOAD};
use container_info::podman::Podman;

const ATTACH: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(15);
const DNSMASQ: &str = "/usr/sbin/dnsmasq";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// dnsmasq answering `h<i>.gg.test` with 10.9.0.<i> (i < 9) and NXDOMAIN for everything under
/// `nx.gg.test`; killed on drop.
struct Dnsmasq {
    child: Child,
}

impl Dnsmasq {
    fn start(dir: &Path, server: &str) -> Dnsmasq {
        let mut cmd = Command::new(DNSMASQ);
        cmd.args([
            "-k",
            "--conf-file=/dev/null",
            "--port=53",
            &format!("--listen-address={server}"),
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--address=/nx.gg.test/",
            "--user=root",
        ])
        .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        for i in 0..9 {
            cmd.arg(format!("--host-record=h{i}.gg.test,10.9.0.{i}"));
        }
        let child = cmd.spawn().expect("start dnsmasq");
        let d = Dnsmasq { child };
        // Ready once it answers (a lookup over UDP from this process).
        for _ in 0..100 {
            if answers(server) {
                return d;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("dnsmasq does not answer on {server}:53");
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the server answers a query for h0.gg.test (a minimal hand-made DNS query).
fn answers(server: &str) -> bool {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["h0", "gg", "test"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    if sock.send_to(&q, (server, 53)).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    matches!(sock.recv(&mut buf), Ok(n) if n > 12 && buf[..2] == [0x12, 0x34])
}

/// The workload resolving `names`, in a private mount namespace whose `/etc/resolv.conf` names
/// only the test's server.
fn resolver(names: &[String], resolv: &Path) -> Workload {
    let mut cmd = Command::new(WORKLOAD);
    cmd.arg("resolve").args(names);
    let resolv = std::ffi::CString::new(resolv.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: only async-signal-safe calls (unshare, mount) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let none = std::ptr::null();
            if libc::mount(
                none,
                c"/".as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
                || libc::mount(
                    resolv.as_ptr(),
                    c"/etc/resolv.conf".as_ptr(),
                    none,
                    libc::MS_BIND,
                    std::ptr::null(),
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Workload::spawn(cmd)
}

/// The latest `proc_dns` row of `pid` per domain.
fn rows(seen: &[Record], pid: u32) -> BTreeMap<String, Record> {
    let mut out = BTreeMap::new();
    for r in seen {
        if r.table == "proc_dns" && r.tgid() == Some(pid) {
            out.insert(r.fields[1].clone(), r.clone());
        }
    }
    out
}

/// Runs the resolver on `names` under a probe tracking it; returns its pid, its `resolved`
/// line and every record seen.
fn run(server: &str, names: &[String]) -> (u32, String, Vec<Record>) {
    run_with(server, |resolv| resolver(names, resolv))
}

/// [`run`], with the resolver `start` starts given the resolv.conf to use.
fn run_with(server: &str, start: impl FnOnce(&Path) -> Workload) -> (u32, String, Vec<Record>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        format!("nameserver {server}\noptions timeout:1 attempts:1\n"),
    )
    .unwrap();
    let _server = Dnsmasq::start(dir.path(), server);
    let mut w = start(&resolv);
    let pid = w.pid;
    let mut probe = Probe::start(&["-t", "1", "-P", "512", "-f", &pid.to_string()], &[]);
    probe.wait_attached(ATTACH);
    probe.wait_stderr("DNS uprobes attached to 1 target(s)", 1, WAIT);
    w.go();
    let resolved = w.read_line();
    probe.next_period(WAIT);
    probe.next_period(WAIT);
    assert!(w.finish().success());
    let (status, stderr, seen) = probe.stop();
    assert!(status.success(), "{stderr}");
    (pid, resolved, seen)
}

/// Ten lookups, one NXDOMAIN: ten rows of one lookup each, the NXDOMAIN one failed, every
/// lookup timed.
#[test]
fn lookups_failures_and_latency_per_domain() {
    if !is_root() || !Path::new(DNSMASQ).exists() {
        eprintln!("skipped: needs root and {DNSMASQ}");
        return;
    }
    let mut names: Vec<String> = (0..9).map(|i| format!("h{i}.gg.test")).collect();
    names.push("missing.nx.gg.test".into());
    let (pid, resolved, seen) = run("127.0.0.77", &names);
    assert_eq!(resolved, "resolved 9 1");
    let rows = rows(&seen, pid);
    assert_eq!(
        rows.keys().cloned().collect::<Vec<_>>(),
        {
            let mut n = names.clone();
            n.sort();
            n
        },
        "{seen:?}"
    );
    let longest = |domain: &str| {
        seen.iter()
            .filter(|r| r.table == "proc_dns" && r.fields[1] == domain)
            .map(|r| r.num(4))
            .max()
            .unwrap_or(0)
    };
    for (domain, r) in &rows {
        let failed = domain.ends_with(".nx.gg.test");
        assert_eq!(r.fields[2], "taskprobe-workl");
        assert_eq!(
            (r.num(6), r.num(7)),
            (1, u64::from(failed)),
            "{domain}: count, error_count: {r:?}"
        );
        assert!(longest(domain) > 0, "{domain}: max_delay");
    }
    // delay_avg and error_ratio are the period's: the period with the lookup shows them.
    let nx = seen
        .iter()
        .find(|r| r.table == "proc_dns" && r.fields[1] == "missing.nx.gg.test" && r.num(6) == 1)
        .expect("the NXDOMAIN row");
    assert!(nx.num(3) > 0 && nx.fields[5] == "100.00", "{nx:?}");
}

/// 300 distinct names (all NXDOMAIN) and one with the record separator in it: 256 domains get
/// rows, the other 45 lookups count under `(other)`, and the odd name is one escaped field.
#[test]
fn domains_past_the_cap_count_under_other() {
    if !is_root() || !Path::new(DNSMASQ).exists() {
        eprintln!("skipped: needs root and {DNSMASQ}");
        return;
    }
    let mut names: Vec<String> = (0..300).map(|i| format!("x{i}.nx.gg.test")).collect();
    names.insert(0, "a|b.nx.gg.test".into());
    let (pid, resolved, seen) = run("127.0.0.78", &names);
    assert_eq!(resolved, "resolved 0 301");
    let rows = rows(&seen, pid);
    assert_eq!(
        rows.len(),
        257,
        "256 domains and (other): {:?}",
        rows.keys()
    );
    assert!(rows.contains_key("a|b.nx.gg.test"), "{:?}", rows.keys());
    let other = &rows["(other)"];
    assert_eq!((other.num(6), other.num(7)), (45, 45), "{other:?}");
    let total: u64 = rows.values().map(|r| r.num(6)).sum();
    assert_eq!(total, 301, "every lookup counted once");
}

/// A root filesystem holding the workload and copies of the libraries it links (new files, so
/// the container's libc is another inode than the host's).
fn workload_rootfs(root: &Path) {
    let copy = |from: &Path| {
        let to = root.join(from.strip_prefix("/").unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    };
    copy(Path::new(WORKLOAD));
    let ldd = Command::new("ldd").arg(WORKLOAD).output().expect("ldd");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let path = line
            .split("=>")
            .last()
            .and_then(|r| r.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(p) = path {
            copy(Path::new(p));
        }
    }
    // glibc's resolver loads these at run time (nsswitch "files dns").
    for lib in ["libnss_dns.so.2", "libnss_files.so.2", "libresolv.so.2"] {
        for dir in [
            "/lib/x86_64-linux-gnu",
            "/lib/aarch64-linux-gnu",
            "/usr/lib64",
        ] {
            let p = Path::new(dir).join(lib);
            if p.exists() {
                copy(&p);
            }
        }
    }
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/nsswitch.conf"), "hosts: files dns\n").unwrap();
    std::fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
}

/// The resolver in a podman container with its own copy of libc (the host's pid and network
/// namespaces, so its pid is the one tracked and the server is reachable): the uprobes go on the
/// container's libc, through `/proc/<pid>/root`, and its lookups are counted as on the host.
#[test]
fn a_containers_own_libc_is_probed() {
    if !is_root() || !Path::new(DNSMASQ).exists() {
        eprintln!("skipped: needs root and {DNSMASQ}");
        return;
    }
    assert!(
        Podman::available(),
        "podman and runc are needed (./build.sh --check installs them)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let podman = Podman::new(&dir.path().join("podman")).expect("podman dirs");
    let root = dir.path().join("rootfs");
    workload_rootfs(&root);
    podman
        .import_dir(&root, "localhost/gg-dns:1")
        .expect("import the rootfs");
    let names: Vec<String> = ["h1.gg.test", "h2.gg.test", "gone.nx.gg.test"]
        .map(String::from)
        .to_vec();
    let (pid, resolved, seen) = run_with("127.0.0.79", |resolv| {
        let mut cmd = podman.cmd();
        cmd.args([
            "run",
            "-i",
            "--rm",
            "--network",
            "host",
            "--pid",
            "host",
            "-v",
        ])
        .arg(format!("{}:/etc/resolv.conf:ro", resolv.display()))
        .args(["localhost/gg-dns:1", WORKLOAD, "resolve"])
        .args(&names);
        Workload::spawn(cmd)
    });
    assert_eq!(resolved, "resolved 2 1");
    let own = std::fs::metadata(format!("/proc/{pid}/root/lib/x86_64-linux-gnu/libc.so.6"))
        .or_else(|_| {
            std::fs::metadata(format!("/proc/{pid}/root/lib/aarch64-linux-gnu/libc.so.6"))
        });
    drop(own);
    let rows = rows(&seen, pid);
    assert_eq!(rows.len(), 3, "{seen:?}");
    assert_eq!(
        rows.values()
            .map(|r| (r.num(6), r.num(7)))
            .collect::<Vec<_>>(),
        [(1, 1), (1, 0), (1, 0)],
        "gone.nx (failed), h1, h2: {rows:?}"
    );
}
