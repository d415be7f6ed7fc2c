//! Issue target: a new container's labels are available within 1 s (p99) of its first lookup.
//!
//! Real runtime: an isolated podman (runc, cgroupfs) with its Docker-compatible API service
//! (`podman system service`) on a unix socket; the resolver follows its events on a
//! current-thread tokio runtime in its own thread (whose CPU is measured too). 30 busybox
//! containers with ten labels each are started one by one with `podman run -d`.
//!
//! A watcher thread plays the daemon's ingest: every 2 ms it lists `/proc` and calls `of_pid`
//! for every process not yet known to be in a container (a cache hit for most), so the first
//! `of_pid` of a container's process comes within ~2 ms of the process appearing; then it
//! polls `labels_of_pid(pid, &[])` until `container_name` is there. Printed: the time from
//! `podman run` returning, and from the first `of_pid` for the container's pid, until then.
//!
//! Needs podman, runc and busybox-static (`./build.sh --check` installs them).
//!
//! `cargo bench -p container-info --bench label_latency`

use container_info::docker::DockerClient;
use container_info::podman::Podman;
use container_info::resolver::{Config, Containers, SocketState};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

mod support;

const STARTS: usize = 30;
const IMAGE: &str = "localhost/busy:1";
const TARGET: Duration = Duration::from_secs(1);
/// How often the watcher lists `/proc`.
const SCAN: Duration = Duration::from_millis(2);

/// The podman API service; killed when dropped.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_service(p: &Podman, sock: &Path) -> Service {
    let svc = Service(p.service(sock).expect("start podman system service"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = DockerClient::new(sock, Duration::from_secs(2));
    let t = Instant::now();
    while !(sock.exists() && rt.block_on(client.list()).is_ok()) {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "podman service on {} did not answer",
            sock.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    svc
}

/// What the watcher saw of one container.
#[derive(Debug, Clone)]
struct Seen {
    pid: u32,
    /// The first `of_pid` call for `pid` (whatever it answered).
    first_lookup: Instant,
    /// Whether that first answer was "host process" (the pid not yet in the container's
    /// cgroup, an answer then trusted for `pid_ttl`).
    first_was_host: bool,
    /// When `labels_of_pid` first had `container_name`.
    labels: Option<Instant>,
}

/// Every `SCAN`: `of_pid` for each process not known to be in a container, and
/// `labels_of_pid` for each container process whose labels are not there yet.
fn watch(c: Arc<Containers>, seen: Arc<Mutex<HashMap<String, Seen>>>, stop: Arc<AtomicBool>) {
    // pid → (first of_pid, whether it answered "host") for processes not (yet) in a container.
    let mut first: HashMap<u32, (Instant, bool)> = HashMap::new();
    let mut in_container: HashSet<u32> = HashSet::new();
    while !stop.load(Ordering::Relaxed) {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            panic!("cannot list /proc");
        };
        let mut live = HashSet::new();
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            live.insert(pid);
            if in_container.contains(&pid) {
                continue;
            }
            let now = Instant::now();
            let r = c.of_pid(pid);
            let (t, was_host) = *first.entry(pid).or_insert((now, r.is_none()));
            if let Some(r) = r {
                in_container.insert(pid);
                seen.lock().unwrap().entry(r.id.clone()).or_insert(Seen {
                    pid,
                    first_lookup: t,
                    first_was_host: was_host,
                    labels: None,
                });
            }
        }
        first.retain(|p, _| live.contains(p));
        in_container.retain(|p| live.contains(p));
        for s in seen.lock().unwrap().values_mut() {
            if s.labels.is_none()
                && c.labels_of_pid(s.pid, &[])
                    .iter()
                    .any(|(k, _)| k == "container_name")
            {
                s.labels = Some(Instant::now());
            }
        }
        std::thread::sleep(SCAN);
    }
}

fn main() {
    support::exit_unless_bench("label_latency");
    assert!(
        Podman::available(),
        "podman and runc are needed (./build.sh --check installs them)"
    );
    println!("load before: {}", support::loadavg());
    let dir = tempfile::tempdir().expect("temp dir");
    let p = Podman::new(dir.path()).expect("podman dir");
    p.import_busybox(IMAGE).expect("import the busybox image");
    let sock = dir.path().join("podman.sock");
    let _svc = start_service(&p, &sock);

    let c = Containers::new(Config {
        docker_sockets: vec![sock.clone()],
        cri_sockets: vec![],
        ..Config::default()
    });
    let (ready_tx, ready_rx) = std_mpsc::channel();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let resolver = {
        let c = c.clone();
        std::thread::Builder::new()
            .name("resolver".to_string())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("resolver runtime");
                rt.block_on(async move {
                    let task = c.start();
                    let t = Instant::now();
                    while c.socket_state(&sock) != Some(SocketState::Ok)
                        || c.counters().resyncs == 0
                    {
                        assert!(t.elapsed() < Duration::from_secs(10), "{}", c.status());
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    ready_tx.send(()).expect("main waits");
                    let (cpu0, t0) = (support::thread_cpu(), Instant::now());
                    let _ = done_rx.await;
                    let r = (support::thread_cpu() - cpu0, t0.elapsed());
                    task.abort();
                    r
                })
            })
            .expect("spawn the resolver thread")
    };
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("resolver ready");

    let seen: Arc<Mutex<HashMap<String, Seen>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (c, seen, stop) = (c.clone(), seen.clone(), stop.clone());
        std::thread::spawn(move || watch(c, seen, stop))
    };

    let before = c.counters();
    let mut runs = Vec::new();
    for n in 0..STARTS {
        let name = format!("lat{n}");
        let labels: Vec<String> = support::docker_container(n, 0)
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut extra = Vec::new();
        for l in &labels {
            extra.extend(["--label", l.as_str()]);
        }
        let t0 = Instant::now();
        let id = p
            .run_detached(&name, &extra, IMAGE, &["/bin/sleep", "600"])
            .expect("podman run");
        let t1 = Instant::now();
        // One by one: the next start once this one's labels are there.
        loop {
            if seen
                .lock()
                .unwrap()
                .get(&id)
                .is_some_and(|s| s.labels.is_some())
            {
                break;
            }
            assert!(
                t1.elapsed() < Duration::from_secs(20),
                "container {n} ({id}) has no labels 20 s after podman run: seen {:?}, {}",
                seen.lock().unwrap().get(&id),
                c.status()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        runs.push((id, t0, t1));
    }
    stop.store(true, Ordering::Relaxed);
    watcher.join().expect("watcher");
    done_tx.send(()).expect("resolver waits");
    let (cpu, wall) = resolver.join().expect("resolver thread");
    let after = c.counters();

    let seen = seen.lock().unwrap();
    let (mut from_run, mut from_lookup, mut from_start, mut run_time) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut before_return, mut host_first) = (0, 0);
    for (id, t0, t1) in &runs {
        let s = &seen[id];
        let labels = s.labels.expect("labels seen");
        if labels <= *t1 {
            before_return += 1;
        }
        if s.first_was_host {
            host_first += 1;
        }
        from_run.push(labels.saturating_duration_since(*t1));
        from_lookup.push(labels.saturating_duration_since(s.first_lookup));
        from_start.push(labels.saturating_duration_since(*t0));
        run_time.push(t1.saturating_duration_since(*t0));
    }
    let p99 = support::percentile(&mut from_lookup.clone(), 0.99);
    println!(
        "== {STARTS} busybox containers (10 labels each) started one by one, podman API service ==\n\
         labels after the first of_pid for the pid:  {}\n\
         labels after `podman run` returned:          {} ({before_return} of {STARTS} already \
         there when it returned)\n\
         labels after `podman run` was started:       {}\n\
         `podman run -d` itself:                      {}\n\
         target p99 ≤ {TARGET:?} from the first lookup: {}\n\
         first of_pid answered \"host\" (pid not yet in its cgroup) for {host_first} containers\n\
         resolver thread CPU: {cpu:.1?} over {wall:.1?} ({:.2} ms per start, starts one at a \
         time: each pays its own wake-ups and requests; the CPU under churn is resolver_cpu's)\n\
         resolver: events {}, runtime requests {}, queued {}, errors {}",
        support::summary(&mut from_lookup),
        support::summary(&mut from_run),
        support::summary(&mut from_start),
        support::summary(&mut run_time),
        if p99 <= TARGET { "met" } else { "MISSED" },
        cpu.as_secs_f64() * 1e3 / STARTS as f64,
        after.events - before.events,
        after.runtime_requests - before.runtime_requests,
        after.queued - before.queued,
        (after.errors_timeout + after.errors_connect + after.errors_protocol)
            - (before.errors_timeout + before.errors_connect + before.errors_protocol),
    );
    println!("load after: {}", support::loadavg());
}
