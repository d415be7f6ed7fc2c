//! Shipped probes started by the real daemon (the binaries are built by `cargo test --workspace`).

mod daemon_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use daemon_support::*;

/// Upstream metric names (camelCase, `_kB`, counters without `_total`) draw promtool *lint*
/// warnings; the exposition must still parse (exit 1 would be a format error).
fn promtool_format_ok(scrape: &str) {
    let (code, report) = promtool_check(scrape);
    assert!(
        matches!(code, Some(0) | Some(3)),
        "promtool failed: {report}"
    );
    const NAMING_LINTS: [&str; 5] = [
        "should have \"_total\" suffix",
        "should not contain abbreviated units",
        "should be written in 'snake_case' not 'camelCase'",
        "should not have \"_count\" suffix",
        "should not have \"_sum\" suffix",
    ];
    for line in report.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            NAMING_LINTS.iter().any(|lint| line.contains(lint)),
            "promtool reported more than a naming lint: {line}"
        );
    }
}

#[test]
fn system_infos_through_daemon() {
    let d = Daemon::start(
        60,
        "probes = ( { name = \"system_infos\"; param = \"-t 1\"; switch = \"on\"; } );",
        |probes| install_probe(probes, "system_infos", "probes/system_infos"),
    );
    let scrape = d.wait_scrape("gala_gopher_cpu_total_used_per", Duration::from_secs(20));
    // Every family has HELP and TYPE; memory total equals /proc/meminfo exactly.
    for family in ["gala_gopher_cpu_total_used_per", "gala_gopher_mem_total_kB"] {
        assert!(
            scrape.contains(&format!("# HELP {family} ")),
            "{family} HELP"
        );
        assert!(
            scrape.contains(&format!("# TYPE {family} gauge")),
            "{family} TYPE"
        );
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kb: f64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap();
    let got = sample(&scrape, "gala_gopher_mem_total_kB{").expect("mem total series");
    assert_eq!(got, total_kb);
    let up = sample(&scrape, "gala_gopher_self_probe_up{probe=\"system_infos\"");
    assert_eq!(up, Some(1.0));
    promtool_format_ok(&scrape);
}

/// Value of the first sample of `metric` whose label set contains every `needle`.
fn sample_with(scrape: &str, metric: &str, needles: &[&str]) -> Option<f64> {
    scrape
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// tcpprobe started by the daemon sees a loopback connection with exact byte counts.
#[test]
fn tcpprobe_through_daemon_counts_loopback_bytes() {
    use std::io::{Read, Write};
    let d = Daemon::start(
        60,
        // Running totals (`*_total`): exact whatever the period boundaries; the per-period
        // derivation itself is tested in aops_dropin.rs.
        "metric = { counter_mode = \"prometheus\"; };\n\
         probes = ( { name = \"tcpprobe\"; param = \"-t 1\"; switch = \"on\"; } );",
        |probes| install_probe(probes, "tcpprobe", "probes/tcp"),
    );
    d.wait_scrape("gala_gopher_bpf_probe_events", Duration::from_secs(30));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 100_000];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&[7u8; 30_000]).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
    });
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(&[1u8; 100_000]).unwrap();
    let mut back = vec![0u8; 30_000];
    c.read_exact(&mut back).unwrap();
    drop(c);
    server.join().unwrap();
    let port_label = format!("server_port=\"{port}\"");
    let got = wait_for(Duration::from_secs(20), || {
        let s = d.scrape();
        let srv_rx = sample_with(
            &s,
            "gala_gopher_tcp_link_rx_bytes_total",
            &[&port_label, "role=\"server\""],
        )?;
        let cli_rx = sample_with(
            &s,
            "gala_gopher_tcp_link_rx_bytes_total",
            &[&port_label, "role=\"client\""],
        )?;
        (srv_rx == 100_000.0 && cli_rx == 30_000.0).then_some(s)
    });
    assert!(
        got.is_some(),
        "exact byte counts not seen; last scrape:\n{}",
        d.scrape()
    );
}

/// The block device (disk, not partition) holding `path`, as (major, first_minor).
fn disk_of(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).unwrap().dev();
    let (maj, min) = (libc::major(dev), libc::minor(dev));
    let sys = PathBuf::from(format!("/sys/dev/block/{maj}:{min}"));
    let disk = if sys.join("partition").exists() {
        std::fs::read_to_string(sys.join("../dev")).unwrap()
    } else {
        format!("{maj}:{min}")
    };
    let (a, b) = disk.trim().split_once(':').unwrap();
    (a.parse().unwrap(), b.parse().unwrap())
}

/// ioprobe started by the daemon counts O_DIRECT writes on the disk holding a temp file.
#[test]
fn ioprobe_through_daemon_counts_direct_writes() {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let d = Daemon::start(
        60,
        "metric = { counter_mode = \"prometheus\"; };\n\
         probes = ( { name = \"ioprobe\"; param = \"-t 1\"; switch = \"on\"; } );",
        |probes| install_probe(probes, "ioprobe", "probes/io"),
    );
    d.wait_scrape("gala_gopher_bpf_probe_events", Duration::from_secs(30));
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let path = dir.path().join("direct.bin");
    let (maj, min) = disk_of(dir.path());
    let labels = [format!("major=\"{maj}\""), format!("first_minor=\"{min}\"")];
    let needles: Vec<&str> = labels.iter().map(String::as_str).collect();
    let before =
        sample_with(&d.scrape(), "gala_gopher_block_write_bytes_total", &needles).unwrap_or(0.0);

    const BLOCK: usize = 4096;
    const WRITES: usize = 64;
    let layout = std::alloc::Layout::from_size_align(BLOCK, BLOCK).unwrap();
    // SAFETY: non-zero size, valid alignment; freed below.
    let buf = unsafe { std::alloc::alloc_zeroed(layout) };
    let slice = unsafe { std::slice::from_raw_parts(buf, BLOCK) };
    let f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .unwrap();
    for i in 0..WRITES {
        f.write_all_at(slice, (i * BLOCK) as u64).unwrap();
    }
    f.sync_all().unwrap();
    unsafe { std::alloc::dealloc(buf, layout) };

    let want = before + (BLOCK * WRITES) as f64;
    let seen = wait_for(Duration::from_secs(20), || {
        let v = sample_with(&d.scrape(), "gala_gopher_block_write_bytes_total", &needles)?;
        (v >= want).then_some(v)
    });
    assert!(
        seen.is_some(),
        "write_bytes_total for {maj}:{min} did not grow by {} bytes; last scrape:\n{}",
        BLOCK * WRITES,
        d.scrape()
    );
}

/// taskprobe started by the daemon with a pid filter and syscall counts (`-P 1`, opt-in) sees a
/// child's failing syscalls.
#[test]
fn taskprobe_through_daemon_counts_failed_syscalls() {
    const FAILS: u32 = 1000;
    let work = tempfile::tempdir().unwrap();
    let go = work.path().join("go");
    let child = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import os, sys, time\n\
             while not os.path.exists(sys.argv[1]): time.sleep(0.05)\n\
             for _ in range({FAILS}):\n    try: os.open('/nonexistent/gala-gopher-test', os.O_RDONLY)\n    except OSError: pass\n\
             time.sleep(1000)\n"
        ))
        .arg(&go)
        .spawn()
        .unwrap();
    // Killed on drop, so a failing assertion never leaves the workload running.
    let mut child = KillOnDrop(child);
    let pid = child.0.id();
    let d = Daemon::start(
        60,
        &format!(
            "probes = ( {{ name = \"taskprobe\"; param = \"-t 1 -P 1 -f {pid}\"; switch = \"on\"; }} );"
        ),
        |probes| install_probe(probes, "taskprobe", "probes/proc"),
    );
    d.wait_scrape("gala_gopher_bpf_probe_events", Duration::from_secs(30));
    std::fs::write(&go, "").unwrap();
    let tgid = format!("tgid=\"{pid}\"");
    let seen = wait_for(Duration::from_secs(20), || {
        let v = sample_with(&d.scrape(), "gala_gopher_proc_syscall_failed", &[&tgid])?;
        (v >= f64::from(FAILS)).then_some(v)
    });
    child.kill();
    assert!(
        seen.is_some(),
        "failed syscalls of {pid} not counted; last scrape:\n{}",
        d.scrape()
    );
    // The filter holds: no series for another process (the daemon's own pid, say).
    let other = format!("tgid=\"{}\"", d.pid());
    assert!(sample_with(&d.scrape(), "gala_gopher_proc_syscall_failed", &[&other]).is_none());
}

/// An eBPF probe whose tracepoint is missing reports "unsupported" and the daemon keeps running.
#[test]
fn unsupported_probe_is_failed_and_daemon_keeps_serving() {
    let d = Daemon::start_env(
        60,
        "probes = ( { name = \"tcpprobe\"; param = \"-t 1\"; switch = \"on\"; } );",
        &[("TCPPROBE_REQUIRE_HOOK", "tcp:no_such_tracepoint")],
        |probes| install_probe(probes, "tcpprobe", "probes/tcp"),
    );
    let err = wait_for(Duration::from_secs(20), || {
        let st = d.status();
        let p = st["probes"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == "tcpprobe")?
            .clone();
        (p["state"] == "failed").then(|| p["last_error"].as_str().unwrap_or("").to_string())
    })
    .expect("tcpprobe shown as failed");
    assert!(
        err.contains("unsupported") && err.contains("no_such_tracepoint"),
        "{err}"
    );
    let scrape = d.scrape();
    assert!(scrape.contains("gala_gopher_self_probe_state{probe=\"tcpprobe\",state=\"failed\""));
}

/// Kills and reaps a test workload process when dropped.
struct KillOnDrop(std::process::Child);

impl KillOnDrop {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}
