//! The real binary against the real `/proc` and `/sys`: every line matches the `.meta`, and
//! the values agree with readings this test takes itself.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_system_infos");

/// Runs `system_infos -t 1 --once <args>` and returns its stdout; panics on failure.
fn run_once(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["-t", "1", "--once"])
        .args(args)
        .output()
        .expect("run system_infos");
    assert!(
        out.status.success(),
        "exit {:?}, stderr {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn meminfo_kb(key: &str) -> String {
    read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or_else(|| panic!("{key} missing"))
        .to_string()
}

/// A copy of `sleep` named `name`, so the child's comm is `name`.
fn named_sleep(dir: &Path, name: &str) -> PathBuf {
    let target = dir.join(name);
    std::fs::copy("/bin/sleep", &target).expect("copy /bin/sleep");
    target
}

struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn host_tables_agree_with_independent_readings() {
    let out = run_once(&[]);
    let recs = common::check_against_meta(&out);
    let meta = common::meta_tables();
    for t in [
        "system_cpu",
        "system_cpu_util",
        "system_meminfo",
        "system_dentry",
        "system_tcp",
        "system_udp",
        "nic",
        "system_df",
        "system_os",
        "system_infos_stats",
    ] {
        assert!(recs.contains_key(t), "no {t} record in:\n{out}");
    }

    // Memory totals are exact: they do not move while the host is up.
    let mem = &recs["system_meminfo"][0];
    assert_eq!(
        common::field(&meta, "system_meminfo", mem, "total_kB"),
        meminfo_kb("MemTotal")
    );
    assert_eq!(
        common::field(&meta, "system_meminfo", mem, "swap_total_kB"),
        meminfo_kb("SwapTotal")
    );

    // One row per online CPU plus the all-CPU row.
    // SAFETY: sysconf has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } as usize;
    let configured = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    let cpus: Vec<&str> = recs["system_cpu"].iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        cpus.iter().filter(|c| c.parse::<u32>().is_ok()).count(),
        online,
        "{cpus:?}"
    );
    assert_eq!(cpus.last(), Some(&"cpu"));
    for r in &recs["system_cpu"] {
        let util: f64 = common::field(&meta, "system_cpu", r, "util_per")
            .parse()
            .unwrap();
        assert!((0.0..=100.0).contains(&util), "{r:?}");
    }

    // Host facts.
    let os = &recs["system_os"][0];
    let uts = nix::sys::utsname::uname().unwrap();
    assert_eq!(
        common::field(&meta, "system_os", os, "kversion"),
        uts.release().to_str().unwrap()
    );
    assert_eq!(
        common::field(&meta, "system_os", os, "hostname"),
        uts.nodename().to_str().unwrap()
    );
    assert_eq!(
        common::field(&meta, "system_os", os, "cpu_num"),
        configured.to_string()
    );
    let btime = read("/proc/stat")
        .lines()
        .find_map(|l| l.strip_prefix("btime ").map(str::to_string))
        .unwrap();
    assert_eq!(common::field(&meta, "system_os", os, "os_btime"), btime);
    let mem_mb = meminfo_kb("MemTotal").parse::<u64>().unwrap() / 1024;
    assert_eq!(
        common::field(&meta, "system_os", os, "memory_MB"),
        mem_mb.to_string()
    );

    // Interfaces: everything in /sys/class/net but lo.
    let nics: BTreeSet<String> = recs["nic"].iter().map(|r| r[0].clone()).collect();
    let sys_nics: BTreeSet<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lo")
        .collect();
    assert_eq!(nics, sys_nics);
    for r in &recs["nic"] {
        let state = read(&format!("/sys/class/net/{}/operstate", r[0]));
        let want = if state.trim() == "up" { "UP" } else { "DOWN" };
        assert_eq!(common::field(&meta, "nic", r, "status"), want, "{r:?}");
    }

    // Filesystems: each reported one is mounted, disk-backed ones are all there, and the root
    // filesystem's size is what statvfs says.
    let mounts = read("/proc/self/mounts");
    let mount_points: HashMap<String, String> = mounts
        .lines()
        .map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            (c[1].replace("\\040", " "), c[2].to_string())
        })
        .collect();
    let df: HashMap<String, &Vec<String>> = recs["system_df"]
        .iter()
        .map(|r| (r[0].clone(), r))
        .collect();
    for m in df.keys() {
        assert!(mount_points.contains_key(m), "{m} is not mounted");
    }
    for (m, fstype) in &mount_points {
        if ["ext2", "ext3", "ext4", "xfs", "btrfs", "vfat"].contains(&fstype.as_str()) {
            assert!(df.contains_key(m), "{fstype} filesystem {m} not reported");
        }
    }
    let root = df.get("/").expect("/ reported");
    let st = nix::sys::statvfs::statvfs("/").unwrap();
    #[allow(clippy::useless_conversion)]
    let blocks_kb = u64::from(st.blocks()) * u64::from(st.fragment_size()) / 1024;
    assert_eq!(
        common::field(&meta, "system_df", root, "Blocks"),
        blocks_kb.to_string()
    );
    #[allow(clippy::useless_conversion)]
    let inodes = u64::from(st.files());
    assert_eq!(
        common::field(&meta, "system_df", root, "Inodes"),
        inodes.to_string()
    );

    // Disks: whole devices only.
    for r in recs.get("system_iostat").into_iter().flatten() {
        assert!(
            Path::new("/sys/block").join(&r[0]).exists(),
            "{} is not a whole disk",
            r[0]
        );
    }

    let stats = &recs["system_infos_stats"][0];
    assert_eq!(
        common::field(&meta, "system_infos_stats", stats, "cycles_total"),
        "2"
    );
    assert_eq!(
        common::field(&meta, "system_infos_stats", stats, "read_errors_total"),
        "0",
        "{out}"
    );
}

#[test]
fn whitelist_selects_the_test_process_and_ignores_others() {
    let dir = tempfile::tempdir().unwrap();
    // sleep adds up its arguments, so the marker must be a valid (tiny) interval.
    let marker = format!("0.0{}1", std::process::id());
    let bin = named_sleep(dir.path(), "ggtestproc");
    // Same comm, wrong cmdline: the first entry matches its comm and decides "no", even though
    // the second entry alone would select it (upstream's first-match rule).
    let wanted = Reaped(Command::new(&bin).args(["1000", &marker]).spawn().unwrap());
    let decoy = Reaped(Command::new(&bin).args(["1000", "0.5"]).spawn().unwrap());
    let conf = dir.path().join("app.conf");
    std::fs::write(
        &conf,
        format!(
            "application =\n(\n    {{ comm = \"^ggtest\"; cmdline = \"{marker}\"; }},\n    {{ comm = \"proc$\"; cmdline = \"\"; }}\n);\n"
        ),
    )
    .unwrap();
    // Let both children exec before the probe scans.
    let deadline = Instant::now() + Duration::from_secs(10);
    for pid in [wanted.0.id(), decoy.0.id()] {
        while read(&format!("/proc/{pid}/comm")).trim() != "ggtestproc" {
            assert!(Instant::now() < deadline, "child {pid} did not exec");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    let out = run_once(&["-P", "64", "-w", conf.to_str().unwrap()]);
    let (mut wanted, mut decoy) = (wanted, decoy);
    for child in [&mut wanted.0, &mut decoy.0] {
        assert!(
            child.try_wait().unwrap().is_none(),
            "a child exited during the run: the check is void"
        );
    }
    let recs = common::check_against_meta(&out);
    let meta = common::meta_tables();
    let procs = recs.get("system_proc").cloned().unwrap_or_default();
    let pids: Vec<&str> = procs.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(pids, vec![wanted.0.id().to_string()], "{out}");
    let r = &procs[0];
    assert_eq!(common::field(&meta, "system_proc", r, "comm"), "ggtestproc");
    assert_eq!(
        common::field(&meta, "system_proc", r, "cmdline"),
        format!("{} 1000 {marker}", bin.display())
    );
    assert_eq!(
        common::field(&meta, "system_proc", r, "ppid"),
        std::process::id().to_string()
    );
    assert_eq!(common::field(&meta, "system_proc", r, "num_threads"), "1");
    let fds = std::fs::read_dir(format!("/proc/{}/fd", wanted.0.id()))
        .unwrap()
        .count();
    assert_eq!(
        common::field(&meta, "system_proc", r, "fd_count"),
        fds.to_string()
    );
    // A sleeping process's resident size does not move: compare with its stat file now.
    let stat = read(&format!("/proc/{}/stat", wanted.0.id()));
    let rss_pages: u64 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(21)
        .unwrap()
        .parse()
        .unwrap();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    assert_eq!(
        common::field(&meta, "system_proc", r, "pm_size"),
        (rss_pages * page).to_string()
    );
    assert_eq!(
        common::field(&meta, "system_proc", r, "minor_pagefault_count"),
        "0"
    );
    drop(decoy);
}

#[test]
fn sub_probe_bits_select_tables() {
    let out = run_once(&["-P", "2"]);
    let tables: BTreeSet<String> = common::check_against_meta(&out).into_keys().collect();
    let want: BTreeSet<String> = ["system_meminfo", "system_dentry", "system_infos_stats"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(tables, want);
}

#[test]
fn events_are_written_when_a_threshold_is_crossed() {
    // -U 0 means "off", so use the smallest threshold: any filesystem with a used block is over.
    let out = run_once(&["-P", "32", "-l", "warn", "-U", "1"]);
    let recs = common::check_against_meta(&out);
    let events = recs.get("event").cloned().unwrap_or_default();
    let root = events
        .iter()
        .find(|e| e[0] == "fs" && e[1] == "/" && e[2] == "UsePer")
        .unwrap_or_else(|| panic!("no UsePer event for /: {out}"));
    assert_eq!((root[3].as_str(), root[4].as_str()), ("WARN", "13"));
    assert!(
        root[5].contains(" WARN Entity(/) Too many Blocks used("),
        "{}",
        root[5]
    );
    // Without -l, no events.
    let quiet = run_once(&["-P", "32", "-U", "1"]);
    assert!(!quiet.contains("|event|"), "{quiet}");
}

#[test]
fn bad_flags_exit_2_with_an_error() {
    for args in [
        &["-t", "0"][..],
        &["-t", "3601"],
        &["--nope"],
        &["-U", "200"],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("[ERROR] "), "{args:?}: {err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn meta_is_printed_on_request() {
    let out = Command::new(BIN).arg("--print-meta").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        read(
            common::crate_dir()
                .join("system_infos.meta")
                .to_str()
                .unwrap()
        )
    );
}

/// Waits for `child` to exit, killing it if it takes longer than `limit` (a hang guard, not a
/// performance check).
fn wait_with_guard(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("system_infos did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_and_a_closed_pipe_end_the_probe_cleanly() {
    let mut child = Command::new(BIN)
        .args(["-t", "1", "-P", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("|system_meminfo|"), "{first}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_with_guard(&mut child, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");

    // The daemon going away closes our stdout: the next write fails with EPIPE → exit 0.
    let mut child = Command::new(BIN)
        .args(["-t", "1", "-P", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let status = wait_with_guard(&mut child, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
}

/// One cycle's records by table, and when its last record (`system_infos_stats`) arrived.
struct Cycle {
    at: Instant,
    tables: HashMap<String, Vec<Vec<String>>>,
}

impl Cycle {
    fn table_names(&self) -> BTreeSet<String> {
        self.tables.keys().cloned().collect()
    }

    /// The pids of `system_proc`.
    fn procs(&self) -> BTreeSet<u32> {
        self.tables
            .get("system_proc")
            .map(|rows| rows.iter().map(|r| r[0].parse().unwrap()).collect())
            .unwrap_or_default()
    }
}

/// The probe running with its stdin as the control channel; its cycles arrive on a channel.
struct Controlled {
    child: Child,
    cycles: Receiver<Cycle>,
    stderr: Arc<Mutex<String>>,
    stdin: ChildStdin,
}

impl Controlled {
    fn start(args: &[&str]) -> Controlled {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn system_infos");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, cycles) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tables: HashMap<String, Vec<Vec<String>>> = HashMap::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let (table, values) = common::split_record(&line)
                    .unwrap_or_else(|| panic!("not a record line: {line:?}"));
                let end = table == "system_infos_stats";
                tables.entry(table).or_default().push(values);
                if end {
                    let cycle = Cycle {
                        at: Instant::now(),
                        tables: std::mem::take(&mut tables),
                    };
                    if tx.send(cycle).is_err() {
                        break;
                    }
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let buf = Arc::clone(&stderr);
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let mut b = buf.lock().unwrap();
                b.push_str(&line);
                b.push('\n');
            }
        });
        Controlled {
            child,
            cycles,
            stderr,
            stdin,
        }
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("write the control line");
        self.stdin.flush().unwrap();
    }

    /// The next `n` cycles.
    fn cycles(&self, n: usize) -> Vec<Cycle> {
        (0..n)
            .map(|_| {
                self.cycles
                    .recv_timeout(Duration::from_secs(10))
                    .unwrap_or_else(|_| {
                        panic!("no cycle; stderr:\n{}", self.stderr.lock().unwrap())
                    })
            })
            .collect()
    }

    /// Waits until stderr contains `needle`, then drops the cycles read so far (they may
    /// predate the change).
    fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.stderr.lock().unwrap().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} on stderr:\n{}",
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        while self.cycles.try_recv().is_ok() {}
    }

    /// The probe started by this test is still running: no restart, same pid.
    fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the probe exited; stderr:\n{}",
            self.stderr.lock().unwrap()
        );
        assert_eq!(
            read(&format!("/proc/{}/comm", self.child.id())).trim_end(),
            "system_infos"
        );
    }
}

impl Drop for Controlled {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn control_channel_changes_period_and_tables_without_restart() {
    let mut probe = Controlled::start(&["-t", "1", "-P", "2"]);
    let before = probe.cycles(3);
    for w in before.windows(2) {
        let gap = w[1].at - w[0].at;
        assert!(gap < Duration::from_millis(1900), "{gap:?}");
    }
    let mem = names(&["system_meminfo", "system_dentry", "system_infos_stats"]);
    assert_eq!(before[2].table_names(), mem);

    // Period 1 s -> 3 s.
    probe.send(r#"{"v":1,"probe":["mem"],"probe_bits":2,"params":{"report_period":3}}"#);
    probe.wait_log("[INFO] control: period 1s -> 3s");
    let after = probe.cycles(2);
    let gap = after[1].at - after[0].at;
    assert!(
        gap > Duration::from_millis(2500) && gap < Duration::from_millis(4500),
        "{gap:?}"
    );
    probe.assert_alive();

    // A line that is not a control message changes nothing.
    probe.send("{not json");
    probe.wait_log("[WARN] control channel: line skipped");
    assert_eq!(probe.cycles(1)[0].table_names(), mem);
    probe.assert_alive();

    // Only the cpu tables, back to 1 s. The first cycle after the change primes them.
    probe.send(r#"{"probe":["cpu"],"probe_bits":1,"params":{"report_period":1}}"#);
    probe.wait_log("[INFO] control: period 3s -> 1s, tables 0x2 -> 0x1");
    let cpu = names(&["system_cpu", "system_cpu_util", "system_infos_stats"]);
    let cycles = probe.cycles(3);
    assert!(
        cycles[0].table_names().is_subset(&cpu),
        "{:?}",
        cycles[0].table_names()
    );
    for c in &cycles[1..] {
        assert_eq!(c.table_names(), cpu);
    }
    probe.assert_alive();
}

#[test]
fn control_channel_snoop_selects_the_processes() {
    let a = Reaped(Command::new("/bin/sleep").arg("1000").spawn().unwrap());
    let b = Reaped(Command::new("/bin/sleep").arg("1000").spawn().unwrap());
    let (pa, pb) = (a.0.id(), b.0.id());
    let both: BTreeSet<u32> = [pa, pb].into();
    let pids = format!("{pa},{pb}");
    let mut probe = Controlled::start(&["-t", "1", "-P", "64", "-f", &pids]);
    // The command line selects both.
    assert_eq!(probe.cycles(1)[0].procs(), both);

    probe.send(&format!(
        r#"{{"snoop":{{"mode":"include","pids":[{pa}]}}}}"#
    ));
    probe.wait_log("[INFO] control: snoop include 1 pid");
    for c in probe.cycles(2) {
        assert_eq!(c.procs(), [pa].into());
    }

    // Everything but a; processes new to the selection report from their second reading.
    probe.send(&format!(
        r#"{{"snoop":{{"mode":"exclude","pids":[{pa}]}}}}"#
    ));
    probe.wait_log("[INFO] control: snoop exclude 1 pid");
    let cycles = probe.cycles(3);
    assert!(cycles.iter().all(|c| !c.procs().contains(&pa)));
    let last = cycles[2].procs();
    assert!(last.contains(&pb), "{last:?}");
    assert!(last.contains(&probe.child.id()), "{last:?}");
    assert!(last.contains(&std::process::id()), "{last:?}");

    // Back to the command line's selection.
    probe.send(r#"{"snoop":{"mode":"all","pids":[]}}"#);
    probe.wait_log("[INFO] control: snoop all (command line)");
    let cycles = probe.cycles(3);
    assert!(cycles.iter().all(|c| c.procs().is_subset(&both)));
    assert_eq!(cycles[2].procs(), both);
    probe.assert_alive();
    drop((a, b));
}
