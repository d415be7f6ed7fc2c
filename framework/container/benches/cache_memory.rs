//! Issue target: memory per cached container.
//!
//! The cache is filled the way the daemon fills it — a full list from a runtime that really
//! speaks its protocol over a unix socket, through [`Containers::resync_now`] — with 4096
//! containers with realistic labels (ten each; Kubernetes pods with five labels), at the
//! default cache limit (`max_containers` = 4096). Heap bytes are counted by this binary's
//! global allocator (live bytes before and after; the runtime's data is built before the
//! baseline and moved in without allocating, its transient answers are freed again), and
//! cross-checked with the resident set (`/proc/self/statm`).
//!
//! Three caches: CRI (4096 containers in 1024 pods, fake gRPC server; the 1024 ready sandboxes
//! it lists too are "containers" of the cache but do not fit under the limit), Docker Engine API
//! (4096 compose-style containers, fake HTTP server), and the pid cache (`of_pid` of 4096
//! container processes under a fake host root).
//!
//! `cargo bench -p container-info --bench cache_memory`

use container_info::host;
use container_info::info::ContainerInfo;
use container_info::resolver::{Config, Containers};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

mod support;
use support::{fake_cri, fake_docker};

const CONTAINERS: usize = 4096;
const PODS: usize = 1024;

/// Counts live heap bytes: as asked for, and as malloc hands them out (usable size + its
/// 8-byte chunk header), and the peak of the latter.
struct Counting;

static REQUESTED: AtomicUsize = AtomicUsize::new(0);
static HEAP: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static BLOCKS: AtomicU64 = AtomicU64::new(0);

/// glibc's per-chunk header.
const CHUNK_HEADER: usize = 8;

fn usable(p: *mut u8) -> usize {
    // SAFETY: `p` is a live block of the system allocator (malloc, posix_memalign).
    unsafe { libc::malloc_usable_size(p.cast()) + CHUNK_HEADER }
}

fn grew(requested: usize, heap: usize) {
    REQUESTED.fetch_add(requested, Ordering::Relaxed);
    let now = HEAP.fetch_add(heap, Ordering::Relaxed) + heap;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrank(requested: usize, heap: usize) {
    REQUESTED.fetch_sub(requested, Ordering::Relaxed);
    HEAP.fetch_sub(heap, Ordering::Relaxed);
}

// SAFETY: every call is passed on to `System` unchanged; only counters are updated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is System's.
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            BLOCKS.fetch_add(1, Ordering::Relaxed);
            grew(l.size(), usable(p));
        }
        p
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is System's.
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            BLOCKS.fetch_add(1, Ordering::Relaxed);
            grew(l.size(), usable(p));
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        BLOCKS.fetch_sub(1, Ordering::Relaxed);
        shrank(l.size(), usable(p));
        // SAFETY: the caller's contract is System's.
        unsafe { System.dealloc(p, l) }
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        let old = usable(p);
        // SAFETY: the caller's contract is System's.
        let q = unsafe { System.realloc(p, l, new_size) };
        if !q.is_null() {
            shrank(l.size(), old);
            grew(new_size, usable(q));
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[derive(Clone, Copy)]
struct Snap {
    requested: usize,
    heap: usize,
    blocks: u64,
    rss: usize,
}

fn snap() -> Snap {
    let pages: usize = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
    Snap {
        requested: REQUESTED.load(Ordering::Relaxed),
        heap: HEAP.load(Ordering::Relaxed),
        blocks: BLOCKS.load(Ordering::Relaxed),
        rss: pages * page,
    }
}

fn per(a: usize, b: usize, n: usize) -> f64 {
    (b as f64 - a as f64) / n as f64
}

/// The strings a container entry holds (id, name, image, labels, its pod's), in bytes.
fn payload(i: &ContainerInfo) -> usize {
    let labels = |m: &std::collections::BTreeMap<String, String>| {
        m.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
    };
    i.id.len()
        + i.name.len()
        + i.image.len()
        + labels(&i.labels)
        + i.pod.as_ref().map_or(0, |p| {
            p.uid.len() + p.name.len() + p.namespace.len() + labels(&p.labels)
        })
}

/// Measure the cache of `c` filled by one resync after `swap()` put the runtime's full data in
/// place (without allocating; a second `swap()` takes it out again).
fn report(
    what: &str,
    listed: usize,
    c: &Arc<Containers>,
    rt: &tokio::runtime::Runtime,
    swap: &mut dyn FnMut(),
) {
    // A first (empty) resync sets up the connection, the maps and the runtime's buffers.
    rt.block_on(c.resync_now());
    rt.block_on(c.resync_now());
    assert_eq!(c.counters().containers_cached, 0, "{}", c.status());
    let base = snap();
    PEAK.store(base.heap, Ordering::Relaxed);
    swap();
    rt.block_on(c.resync_now());
    let filled = snap();
    let peak = PEAK.load(Ordering::Relaxed);
    // A second resync of the same list changes nothing (the steady state).
    rt.block_on(c.resync_now());
    let steady = snap();
    let n = c.counters();
    assert_eq!(
        n.errors_timeout + n.errors_connect + n.errors_protocol,
        0,
        "{}",
        c.status()
    );
    let entries = n.containers_cached as usize;
    assert!(entries > 0, "nothing cached: {}", c.status());
    let all = c.all();
    let with_pod = all.iter().filter(|i| i.pod.is_some()).count();
    let payload: usize = all.iter().map(|i| payload(i)).sum();
    drop(all);
    // Empty it again: what stays is the maps' capacity and connection buffers, not entries.
    swap();
    rt.block_on(c.resync_now());
    let emptied = snap();
    assert_eq!(c.counters().containers_cached, 0);
    println!(
        "== {what} ==\n\
         listed: {listed} entries; cached: {entries} ({with_pod} with a pod); counted as over \
         the limit: {}\n\
         per cached container: {:.0} B as malloc hands it out ({:.0} B asked for, {:.1} heap \
         blocks); RSS {:.0} B\n\
         whole cache: {:.2} MiB heap (RSS +{:.2} MiB); resync peak +{:.2} MiB over the baseline\n\
         strings held (ids, names, images, labels, pods): {:.0} B per entry → {:.1}× overhead\n\
         after a second resync of the same list: {:+} B heap; after emptying: {:.2} MiB stays \
         (map capacity, buffers)",
        n.containers_over_limit,
        per(base.heap, steady.heap, entries),
        per(base.requested, steady.requested, entries),
        (steady.blocks as f64 - base.blocks as f64) / entries as f64,
        per(base.rss, steady.rss, entries),
        (steady.heap as f64 - base.heap as f64) / 1048576.0,
        (steady.rss as f64 - base.rss as f64) / 1048576.0,
        (peak as f64 - base.heap as f64) / 1048576.0,
        payload as f64 / entries as f64,
        (steady.heap as f64 - base.heap as f64) / payload as f64,
        steady.heap as i64 - filled.heap as i64,
        (emptied.heap as f64 - base.heap as f64) / 1048576.0,
    );
}

fn main() {
    support::exit_unless_bench("cache_memory");
    println!("load before: {}", support::loadavg());
    let root = tempfile::tempdir().expect("temp dir");
    host::set_root(root.path().to_path_buf()).expect("fake host root");
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("fake-runtime")
        .enable_all()
        .build()
        .expect("server runtime");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("resolver runtime");

    // CRI: 4096 containers in 1024 pods (4 each).
    let cri_sock = root.path().join("cri.sock");
    let cri: fake_cri::Shared = Arc::new(Mutex::new(fake_cri::Data::default()));
    {
        let _g = server_rt.enter();
        fake_cri::serve(&cri_sock, cri.clone());
    }
    let c = Containers::new(Config {
        docker_sockets: vec![],
        cri_sockets: vec![cri_sock],
        ..Config::default()
    });
    assert_eq!(c.config().max_containers, CONTAINERS);
    // Built before the baseline; moved into the server without allocating.
    let mut full = fake_cri::Data {
        containers: (0..CONTAINERS)
            .map(|n| support::cri_container(n, n % PODS))
            .collect(),
        sandboxes: (0..PODS).map(support::cri_sandbox).collect(),
        ..Default::default()
    };
    report(
        &format!(
            "CRI: {CONTAINERS} containers (10 labels) in {PODS} pods (5 labels), default limit {}",
            c.config().max_containers
        ),
        CONTAINERS + PODS,
        &c,
        &rt,
        &mut || {
            let mut g = cri.lock().unwrap();
            std::mem::swap(&mut g.containers, &mut full.containers);
            std::mem::swap(&mut g.sandboxes, &mut full.sandboxes);
        },
    );

    // The pid cache: 4096 container processes (their cgroup files written first).
    for n in 0..CONTAINERS {
        let id = support::container_id(n);
        let text = support::k8s_cgroup(&support::pod_uid(n % PODS), &id);
        support::write_cgroup(root.path(), 1_000_000 + n as u32, &text);
    }
    let before = snap();
    for n in 0..CONTAINERS {
        c.of_pid(1_000_000 + n as u32).expect("a container pid");
    }
    let after = snap();
    assert_eq!(c.counters().pids_cached as usize, CONTAINERS);
    println!(
        "== pid cache: {CONTAINERS} container processes ==\n\
         per cached pid: {:.0} B as malloc hands it out ({:.0} B asked for); at the default \
         limit of {} pids: {:.1} MiB",
        per(before.heap, after.heap, CONTAINERS),
        per(before.requested, after.requested, CONTAINERS),
        c.config().max_pids,
        per(before.heap, after.heap, CONTAINERS) * c.config().max_pids as f64 / 1048576.0,
    );
    drop(c);

    // Docker Engine API: 4096 compose-style containers.
    let docker_sock = root.path().join("docker.sock");
    let docker: fake_docker::Shared = Arc::new(Mutex::new(fake_docker::Data::default()));
    {
        let _g = server_rt.enter();
        fake_docker::serve(&docker_sock, docker.clone());
    }
    let c = Containers::new(Config {
        docker_sockets: vec![docker_sock],
        cri_sockets: vec![],
        ..Config::default()
    });
    let mut full: Vec<fake_docker::Container> = (0..CONTAINERS)
        .map(|n| support::docker_container(n, 2_000_000 + n as u32))
        .collect();
    report(
        &format!("Docker Engine API: {CONTAINERS} compose containers (10 labels, no pod)"),
        CONTAINERS,
        &c,
        &rt,
        &mut || std::mem::swap(&mut docker.lock().unwrap().containers, &mut full),
    );
    println!("load after: {}", support::loadavg());
}
