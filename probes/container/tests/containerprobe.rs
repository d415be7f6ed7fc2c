//! The real binary against real podman containers (runc, cgroupfs manager; root needed, as in
//! CI): every value checked here is produced by the kernel for a container the test started,
//! and compared with what the test reads or knows itself. The tests take a lock so that one
//! container's CPU load does not skew another test's measurement.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use container_info::podman::Podman;
use containerprobe::tables::{
    BLKIO, BLKIO_FIELDS, CONTAINER, CONTAINER_FIELDS, POD, POD_FIELDS, STATS, STATS_TABLE,
};

const PROBE: &str = env!("CARGO_BIN_EXE_containerprobe");
const IMAGE: &str = "localhost/busy:1";
const WAIT: Duration = Duration::from_secs(20);
const MIB: f64 = 1024.0 * 1024.0;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// One record: table and unescaped values.
#[derive(Debug, Clone)]
struct Rec {
    table: String,
    values: Vec<String>,
}

impl Rec {
    fn get(&self, field: &str) -> &str {
        let fields = match self.table.as_str() {
            CONTAINER => CONTAINER_FIELDS,
            BLKIO => BLKIO_FIELDS,
            POD => POD_FIELDS,
            STATS => &STATS_TABLE.fields,
            t => panic!("no field list for {t}"),
        };
        let i = fields
            .iter()
            .position(|f| f.name == field)
            .unwrap_or_else(|| panic!("no field {field} in {}", self.table));
        &self.values[i]
    }

    fn num(&self, field: &str) -> f64 {
        let v = self.get(field);
        v.parse()
            .unwrap_or_else(|_| panic!("{field} = {v:?} is not a number in {self:?}"))
    }
}

/// One period's records and when they arrived.
#[derive(Debug)]
struct Period {
    at: Instant,
    recs: Vec<Rec>,
}

impl Period {
    fn container(&self, id: &str) -> Option<&Rec> {
        self.recs
            .iter()
            .find(|r| r.table == CONTAINER && r.values[0] == id[..12])
    }

    fn blkio(&self, id: &str) -> Vec<&Rec> {
        self.recs
            .iter()
            .filter(|r| r.table == BLKIO && r.values[0] == id[..12])
            .collect()
    }

    fn pod(&self, uid: &str) -> Vec<&Rec> {
        self.recs
            .iter()
            .filter(|r| r.table == POD && r.values[0] == uid)
            .collect()
    }

    fn stats(&self) -> &Rec {
        self.recs
            .last()
            .expect("a period ends with its stats record")
    }
}

/// The probe binary with its stdout lines and stderr collected by threads.
struct Probe {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Probe {
    fn start(controlled: bool) -> Probe {
        let mut child = Command::new(PROBE)
            .args(["-t", "1"])
            .stdin(if controlled {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn containerprobe");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let mut err = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Probe {
            child,
            stdin,
            lines: rx,
            stderr,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("started controlled");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn recv(&self, timeout: Duration) -> Option<Rec> {
        let line = match self.lines.recv_timeout(timeout) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => return None,
            Err(RecvTimeoutError::Disconnected) => {
                panic!("containerprobe exited:\n{}", self.stderr())
            }
        };
        let (table, values) = probe_sdk::record::split_line(line.as_bytes())
            .unwrap_or_else(|| panic!("not a record line: {line:?}"));
        Some(Rec {
            table: String::from_utf8(table).unwrap(),
            values: values
                .into_iter()
                .map(|v| String::from_utf8(v).unwrap())
                .collect(),
        })
    }

    /// A period collected after this call: pending lines are dropped (a period cut in two is
    /// read to its end and dropped too), then the next whole period is returned.
    fn fresh_period(&mut self) -> Period {
        let mut at_boundary = true;
        while let Ok(line) = self.lines.try_recv() {
            at_boundary = line.starts_with(&format!("|{STATS}|"));
        }
        if !at_boundary {
            while self.recv(WAIT).expect("end of a period").table != STATS {}
        }
        let mut recs = Vec::new();
        loop {
            let r = self
                .recv(WAIT)
                .unwrap_or_else(|| panic!("no period within {WAIT:?}; stderr:\n{}", self.stderr()));
            let end = r.table == STATS;
            recs.push(r);
            if end {
                return Period {
                    at: Instant::now(),
                    recs,
                };
            }
        }
    }

    /// The first fresh period for which `pred` holds; panics after `timeout`.
    fn period_where(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Period) -> bool,
    ) -> Period {
        let deadline = Instant::now() + timeout;
        loop {
            let p = self.fresh_period();
            if pred(&p) {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not seen within {timeout:?}; last period: {:#?}\nstderr:\n{}",
                p.recs,
                self.stderr()
            );
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn podman(dir: &Path) -> Podman {
    assert!(
        Podman::available(),
        "podman and runc are needed (./build.sh --check installs them)"
    );
    let p = Podman::new(dir).expect("podman dirs");
    p.import_busybox(IMAGE).expect("import busybox image");
    p
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// utime + stime of process `pid`, seconds (`/proc/<pid>/stat`, 100 ticks per second).
fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    let f: Vec<u64> = rest
        .split_ascii_whitespace()
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap())
        .collect();
    (f[0] + f[1]) as f64 / 100.0
}

/// The container's memory usage as the kernel reports it, read by the test itself.
fn memory_usage_file(pid: u32) -> u64 {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let mut candidates: Vec<PathBuf> = Vec::new();
    for line in cg.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctl, path) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        if ctl.split(',').any(|c| c == "memory") {
            candidates.push(format!("/sys/fs/cgroup/memory{path}/memory.usage_in_bytes").into());
        } else if ctl.is_empty() {
            candidates.push(format!("/sys/fs/cgroup{path}/memory.current").into());
        }
    }
    let file = candidates
        .iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no memory file among {candidates:?}"));
    std::fs::read_to_string(file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn memory_cpu_pids_and_start_time_of_real_containers() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let p = podman(dir.path());
    let tmpfs = ["--tmpfs", "/data:size=300m"];
    let idle = p
        .run_detached("idle", &tmpfs, IMAGE, &["sleep", "300"])
        .unwrap();
    let mem = p
        .run_detached(
            "mem",
            &tmpfs,
            IMAGE,
            &[
                "sh",
                "-c",
                "dd if=/dev/zero of=/data/f bs=1M count=128 2>/dev/null && sleep 300",
            ],
        )
        .unwrap();
    let before = unix_now();
    let limited = p
        .run_detached(
            "limited",
            &["--pids-limit", "50"],
            IMAGE,
            &["sh", "-c", "sleep 300 & sleep 300 & wait"],
        )
        .unwrap();
    let after = unix_now();
    let mem_pid = p.pid("mem").unwrap();
    let mut probe = Probe::start(false);

    // (a) 128 MiB in a tmpfs: usage = the idle container's + 128 MiB (5 %), and equal to the
    // cgroup file read right after the record (the container is idle by then).
    let period = probe.period_where("the 128 MiB charge", WAIT, |p| {
        p.container(&mem)
            .is_some_and(|r| r.num("memory_usage_bytes") >= 128.0 * MIB)
            && p.container(&idle).is_some()
    });
    let baseline = period.container(&idle).unwrap().num("memory_usage_bytes");
    let mut matched = None;
    for _ in 0..10 {
        let period = probe.fresh_period();
        let rec = period.container(&mem).expect("mem row").clone();
        let file = memory_usage_file(mem_pid) as f64;
        if rec.num("memory_usage_bytes") == file {
            matched = Some(rec);
            break;
        }
    }
    let rec = matched.expect("memory_usage_bytes never equal to the cgroup file's value");
    let usage = rec.num("memory_usage_bytes");
    let expected = 128.0 * MIB + baseline;
    assert!(
        (usage - expected).abs() <= 0.05 * expected,
        "usage {usage} vs 128 MiB + baseline {baseline}"
    );
    assert!(rec.num("memory_cache") >= 128.0 * MIB, "{rec:?}");
    assert!(rec.num("memory_working_set_bytes") <= usage, "{rec:?}");
    assert!(rec.num("memory_rss") > 0.0, "{rec:?}");

    // (c) processes and start time; (d) the pids limit.
    let rec = probe
        .period_where("limited with 3 tasks", WAIT, |p| {
            p.container(&limited)
                .is_some_and(|r| r.get("processes") == "3")
        })
        .container(&limited)
        .unwrap()
        .clone();
    assert_eq!(rec.get("spec_pids_max"), "50");
    let start = rec.num("start_time_seconds");
    // btime is whole seconds (its fraction cut off), starttime has 10 ms ticks.
    assert!(
        start >= before - 2.0 && start <= after + 1.0,
        "start {start} outside [{before}, {after}]"
    );

    // (b) a busy container uses one CPU, less what the machine's other load takes from it:
    // its cgroup's CPU time grows like its one process's own (utime + stime, read by the test)
    // and at most 1 s per second.
    let busy = p
        .run_detached("busy", &[], IMAGE, &["sh", "-c", "exec yes > /dev/null"])
        .unwrap();
    let busy_pid = p.pid("busy").unwrap();
    let first = probe.period_where("busy", WAIT, |p| p.container(&busy).is_some());
    let own0 = process_cpu_seconds(busy_pid);
    let cpu0 = first
        .container(&busy)
        .unwrap()
        .num("cpu_usage_seconds_total");
    std::thread::sleep(Duration::from_secs(3));
    let last = probe.fresh_period();
    let own1 = process_cpu_seconds(busy_pid);
    let cpu1 = last
        .container(&busy)
        .unwrap()
        .num("cpu_usage_seconds_total");
    let wall = (last.at - first.at).as_secs_f64();
    let (cg, own) = (cpu1 - cpu0, own1 - own0);
    let rate = cg / wall;
    eprintln!(
        "busy container: {cg:.3} s of CPU in {wall:.3} s ({rate:.3}/s); its process: {own:.3} s"
    );
    assert!(
        (cg - own).abs() <= 0.1 * own + 0.05,
        "cgroup {cg:.3} s vs process {own:.3} s over {wall:.3} s"
    );
    assert!(
        (0.1..=1.1).contains(&rate),
        "busy container: {cg:.3} s of CPU in {wall:.3} s ({rate:.3}/s)"
    );
    let rec = last.container(&busy).unwrap();
    let (user, system) = (
        rec.num("cpu_user_seconds_total"),
        rec.num("cpu_system_seconds_total"),
    );
    assert!(
        user + system > 0.5 * cpu1 && user + system < 1.5 * cpu1 + 0.1,
        "{rec:?}"
    );
    p.rm("busy").unwrap();

    let stats = last.stats();
    assert_eq!(stats.get("probe"), "container");
    let errors = stats.get("read_errors_total");
    assert_eq!(
        errors,
        "0",
        "read_errors_total; stderr:\n{}",
        probe.stderr()
    );
}

/// The whole disk holding `path`: (`major:minor`, name).
fn disk_of(path: &Path) -> (String, String) {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).unwrap().dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let mut sys = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).unwrap();
    if sys.join("partition").exists() {
        sys.pop();
    }
    let uevent = std::fs::read_to_string(sys.join("uevent")).unwrap();
    let field = |k: &str| {
        uevent
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap()
            .to_string()
    };
    (
        format!("{}:{}", field("MAJOR="), field("MINOR=")),
        field("DEVNAME="),
    )
}

#[test]
fn blkio_rows_for_direct_writes_to_a_volume() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let p = podman(dir.path());
    let vol = dir.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    let (devno, name) = disk_of(&vol);
    // On recent kernels (6.18 here) the v1 blkio.throttle counters only count on a disk where
    // throttling is active (some cgroup has a limit on it): the writer sets a limit far above
    // what it writes.
    let volume = format!("{}:/vol", vol.display());
    let bps = format!("/dev/{name}:1gb");
    let writer = p
        .run_detached(
            "writer",
            &["-v", &volume, "--device-write-bps", &bps],
            IMAGE,
            &[
                "sh",
                "-c",
                "dd if=/dev/zero of=/vol/f bs=1M count=8 oflag=direct && sleep 300",
            ],
        )
        .unwrap();
    let mut probe = Probe::start(false);
    let period = probe.period_where("8 MiB written", WAIT, |p| {
        p.blkio(&writer)
            .iter()
            .any(|r| r.get("major_minor") == devno && r.num("fs_writes_bytes_total") >= 8.0 * MIB)
    });
    let rows = period.blkio(&writer);
    let row = rows.iter().find(|r| r.get("major_minor") == devno).unwrap();
    assert_eq!(row.get("device"), name);
    assert!(row.num("fs_writes_total") >= 1.0, "{row:?}");
    // Direct writes of 1 MiB: at most a few requests per MiB beyond the 8 MiB.
    assert!(row.num("fs_writes_bytes_total") < 64.0 * MIB, "{row:?}");
    let v = |f: &str| row.num(f);
    assert!(v("fs_reads_bytes_total") >= 0.0 && v("fs_reads_total") >= 0.0);
}

#[test]
fn network_of_own_empty_and_host_namespaces() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let p = podman(dir.path());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = Vec::new();
        conn.read_to_end(&mut buf).unwrap();
        buf.len()
    });
    const SENT: usize = 100_000;
    // slirp4netns: a tap0 in the container's own netns; 10.0.2.2 is the host's loopback.
    let send = format!("head -c {SENT} /dev/zero | nc 10.0.2.2 {port}; sleep 300");
    let slirp = p
        .run_args(&[
            "run",
            "-d",
            "--name",
            "slirp",
            "--network",
            "slirp4netns:allow_host_loopback=true",
            IMAGE,
            "sh",
            "-c",
            &send,
        ])
        .unwrap();
    let none = p
        .run_detached("none", &[], IMAGE, &["sleep", "300"])
        .unwrap();
    let host = p
        .run_args(&[
            "run",
            "-d",
            "--name",
            "hostnet",
            "--network",
            "host",
            IMAGE,
            "sleep",
            "300",
        ])
        .unwrap();
    assert_eq!(server.join().unwrap(), SENT, "the host got the bytes");
    let mut probe = Probe::start(false);
    let period = probe.period_where("slirp's traffic", WAIT, |p| {
        p.container(&slirp)
            .is_some_and(|r| r.num("network_transmit_bytes_total") >= SENT as f64)
            && p.container(&none).is_some()
            && p.container(&host).is_some()
    });
    let rec = period.container(&slirp).unwrap();
    let tx = rec.num("network_transmit_bytes_total");
    assert!(tx < SENT as f64 + 20_000.0, "headers only on top: {rec:?}");
    assert!(rec.num("network_transmit_packets_total") >= 2.0, "{rec:?}");
    assert!(
        rec.num("network_receive_packets_total") >= 1.0,
        "acks: {rec:?}"
    );
    assert!(rec.num("network_receive_bytes_total") > 0.0, "{rec:?}");
    // --network none: its own netns with only lo, so every network value is 0.
    let rec = period.container(&none).unwrap();
    for f in CONTAINER_FIELDS
        .iter()
        .filter(|f| f.name.starts_with("network_"))
    {
        assert_eq!(rec.get(f.name), "0", "{}: {rec:?}", f.name);
    }
    // --network host: the host's netns, every network value absent.
    let rec = period.container(&host).unwrap();
    for f in CONTAINER_FIELDS
        .iter()
        .filter(|f| f.name.starts_with("network_"))
    {
        assert_eq!(rec.get(f.name), "", "{}: {rec:?}", f.name);
    }
    assert!(rec.num("memory_usage_bytes") > 0.0, "{rec:?}");
}

#[test]
fn snoopers_select_the_containers_holding_their_pids() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let p = podman(dir.path());
    let a = p.run_detached("a", &[], IMAGE, &["sleep", "300"]).unwrap();
    let b = p.run_detached("b", &[], IMAGE, &["sleep", "300"]).unwrap();
    let (pid_a, pid_b) = (p.pid("a").unwrap(), p.pid("b").unwrap());
    let mut probe = Probe::start(true);
    probe.period_where("both", WAIT, |p| {
        p.container(&a).is_some() && p.container(&b).is_some()
    });
    probe.send(&format!(
        r#"{{"v":1,"params":{{"report_period":1}},"snoop":{{"mode":"include","pids":[{pid_a}]}}}}"#
    ));
    probe.period_where("only a", WAIT, |p| {
        p.container(&a).is_some() && p.container(&b).is_none()
    });
    // The pids the daemon sends are sorted; pid 1 is no container's.
    let mut pids = [1, pid_b];
    pids.sort_unstable();
    probe.send(&format!(
        r#"{{"v":1,"snoop":{{"mode":"include","pids":[{},{}]}}}}"#,
        pids[0], pids[1]
    ));
    let only_b = probe.period_where("only b", WAIT, |p| {
        p.container(&b).is_some() && p.container(&a).is_none()
    });
    assert_eq!(
        only_b.stats().get("containers"),
        "1",
        "containers gauge: {:?}",
        only_b.stats()
    );
    probe.send(r#"{"v":1}"#);
    probe.period_where("both again", WAIT, |p| {
        p.container(&a).is_some() && p.container(&b).is_some()
    });
    let err = probe.stderr();
    assert!(err.contains("[INFO] control: snoop include 1 pid"), "{err}");
    assert!(err.contains("[INFO] control: snoop all"), "{err}");
}

/// Cgroups podman leaves under a `--cgroup-parent` (the parent and its `conmon` child, in every
/// hierarchy): removed when the test ends, after its containers.
struct CgroupParent(String);

impl Drop for CgroupParent {
    fn drop(&mut self) {
        let Ok(mounts) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        let dirs: Vec<PathBuf> = mounts
            .flatten()
            .map(|m| m.path().join(self.0.trim_start_matches('/')))
            .filter(|d| d.is_dir())
            .collect();
        // conmon may still be exiting when `podman rm` returns: its cgroup stays busy a moment.
        let busy = |d: &Path| std::fs::remove_dir(d).is_err() && d.exists();
        let deadline = Instant::now() + Duration::from_secs(10);
        for dir in dirs {
            while busy(&dir.join("conmon")) || busy(&dir) {
                if Instant::now() > deadline {
                    eprintln!("cannot remove {}", dir.display());
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[test]
fn pod_row_for_two_containers_under_a_kubepods_pod_cgroup() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // A pod uid of this run only, so that parallel runs and real pods never share it.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let uid = format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        std::process::id(),
        (nanos >> 48) & 0xffff,
        (nanos >> 36) & 0xfff,
        (nanos >> 24) & 0xfff,
        nanos & 0xffff_ffff_ffff
    );
    // kubelet's cgroupfs driver layout: the containers' cgroups are children of the pod's.
    let parent = CgroupParent(format!("/kubepods/besteffort/pod{uid}"));
    let p = podman(dir.path());
    let in_pod = ["--cgroup-parent", parent.0.as_str()];
    let a = p
        .run_detached(
            "pod_a",
            &in_pod,
            IMAGE,
            &["sh", "-c", "sleep 300 & sleep 300 & wait"],
        )
        .unwrap();
    let b = p
        .run_detached("pod_b", &in_pod, IMAGE, &["sleep", "300"])
        .unwrap();
    let plain = p
        .run_detached("plain", &[], IMAGE, &["sleep", "300"])
        .unwrap();
    let mut probe = Probe::start(false);
    let period = probe.period_where("both pod containers with their tasks", WAIT, |p| {
        p.container(&a).is_some_and(|r| r.get("processes") == "3")
            && p.container(&b).is_some_and(|r| r.get("processes") == "1")
            && p.container(&plain).is_some()
            && !p.pod(&uid).is_empty()
    });
    let pods = period.pod(&uid);
    assert_eq!(pods.len(), 1, "{:#?}", period.recs);
    let pod = pods[0];
    assert_eq!(pod.get("containers"), "2", "{pod:?}");
    assert_eq!(pod.get("processes"), "4", "{pod:?}");
    let (ra, rb) = (period.container(&a).unwrap(), period.container(&b).unwrap());
    for f in ["cpu_usage_seconds_total", "memory_working_set_bytes"] {
        assert_eq!(
            pod.num(f),
            ra.num(f) + rb.num(f),
            "{f}: {pod:?} {ra:?} {rb:?}"
        );
    }
    assert!(pod.num("memory_working_set_bytes") > 0.0, "{pod:?}");
    // The plain container is in no pod: the pod rows of this period are other pods' only
    // (another test's pod may run at the same time), each with a pod uid.
    let stats = period.stats();
    let pod_rows = period.recs.iter().filter(|r| r.table == POD).count();
    assert_eq!(stats.get("pods"), pod_rows.to_string(), "{stats:?}");
}
