//! The snooper resolver against real processes: python sleepers with distinct argv markers are
//! started and killed, and each probe's published pid set must follow within 2 s.
//!
//! The test process is the parent of every sleeper, so a resolver rooted at the test process
//! (the default) counts them as its own; the other tests root their resolver at a separate
//! `sleep` process instead.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use gala_gopher::control::snooper::{
    Mode, ProcName, Resolved, Resolver, ResolverOpts, Selector, SOURCE_CONNECTOR, SOURCE_SCAN,
};
use tokio::sync::watch;

const WITHIN: Duration = Duration::from_secs(2);

/// The python interpreter itself (not a pyenv shim, whose exec chain would show up as extra
/// short-lived matches).
fn python() -> &'static str {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 on PATH");
        String::from_utf8(out.stdout)
            .expect("utf-8 path")
            .trim()
            .to_string()
    })
}

/// A process group killed (and reaped) on drop.
struct Proc(Child);

impl Proc {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) of the group we created.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

fn spawn(program: &str, args: &[&str]) -> Proc {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn");
    Proc(child)
}

/// `python3 -c 'import time; time.sleep(60)' MARKER`
fn sleeper(marker: &str) -> Proc {
    spawn(python(), &["-c", "import time; time.sleep(60)", marker])
}

/// A process outside the test's own tree to root a resolver at.
fn resolver_rooted_elsewhere(opts: ResolverOpts) -> (Resolver, Proc) {
    let root = spawn("sleep", &["60"]);
    let r = Resolver::start(ResolverOpts {
        root_pid: root.pid(),
        ..opts
    })
    .expect("start resolver");
    (r, root)
}

fn by_marker(marker: &str, label: Option<(&str, &str)>) -> Selector {
    Selector {
        proc_name: vec![ProcName {
            comm: regex::Regex::new("^python").unwrap(),
            cmdline: marker.to_string(),
            label: label.map(|(k, v)| (k.to_string(), v.to_string())),
        }],
        ..Selector::default()
    }
}

fn set(pids: &[u32]) -> BTreeSet<u32> {
    pids.iter().copied().collect()
}

/// Wait (at most [`WITHIN`]) until the published value satisfies `pred`.
async fn wait_until(
    rx: &mut watch::Receiver<Arc<Resolved>>,
    what: &str,
    pred: impl Fn(&Resolved) -> bool,
) -> Arc<Resolved> {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let cur = Arc::clone(&rx.borrow_and_update());
        if pred(&cur) {
            return cur;
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("{what}: channel closed; last value {cur:?}"),
            Err(_) => panic!("{what}: not within {WITHIN:?}; last value {cur:?}"),
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whitelist_follows_processes() {
    let (r, _root) = resolver_rooted_elsewhere(ResolverOpts::default());
    if is_root() {
        assert_eq!(r.source(), SOURCE_CONNECTOR);
    }
    let mut rx = r.subscribe("proc");
    r.set(
        "proc",
        Mode::Whitelist(by_marker("gg-snoop-wl-match", Some(("app", "wl")))),
    )
    .unwrap();
    let a = sleeper("gg-snoop-wl-match-a");
    let b = sleeper("gg-snoop-wl-match-b");
    let _other = sleeper("gg-snoop-wl-other");
    let v = wait_until(&mut rx, "two matching sleepers", |v| {
        v.pids == set(&[a.pid(), b.pid()])
    })
    .await;
    assert_eq!(v.labels.len(), 2);
    assert_eq!(v.labels[&a.pid()], ("app".to_string(), "wl".to_string()));

    let c = sleeper("gg-snoop-wl-match-c");
    wait_until(&mut rx, "a later match", |v| {
        v.pids == set(&[a.pid(), b.pid(), c.pid()])
    })
    .await;

    let gone = a.pid();
    drop(a);
    wait_until(&mut rx, "a killed match", |v| {
        v.pids == set(&[b.pid(), c.pid()])
    })
    .await;
    assert!(!rx.borrow().pids.contains(&gone));

    let counters = r.counters();
    if r.source() == SOURCE_CONNECTOR {
        assert!(counters.events.load(Ordering::Relaxed) >= 6);
    }
    assert!(counters.pushes.load(Ordering::Relaxed) >= 3);
    assert!(counters.rescans.load(Ordering::Relaxed) >= 1);
    assert!(r.cpu_time() > Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proc_id_selector_and_remove() {
    let (r, _root) = resolver_rooted_elsewhere(ResolverOpts::default());
    let p = sleeper("gg-snoop-pid");
    let q = sleeper("gg-snoop-pid-unlisted");
    let mut rx = r.subscribe("io");
    let sel = Selector {
        proc_id: vec![p.pid()],
        container_id: vec!["0123456789ab".into()],
        ..Selector::default()
    };
    r.set("io", Mode::Whitelist(sel)).unwrap();
    let v = wait_until(&mut rx, "the listed pid", |v| v.pids == set(&[p.pid()])).await;
    assert!(v.labels.is_empty());
    assert!(!v.pids.contains(&q.pid()));

    drop(p);
    wait_until(&mut rx, "the listed pid exits", |v| v.pids.is_empty()).await;

    // A new selector replaces the old one; mode all lists nothing.
    r.set(
        "io",
        Mode::Whitelist(Selector {
            proc_id: vec![q.pid()],
            ..Selector::default()
        }),
    )
    .unwrap();
    wait_until(&mut rx, "the new pid", |v| v.pids == set(&[q.pid()])).await;
    r.set("io", Mode::All).unwrap();
    wait_until(&mut rx, "mode all", |v| v.pids.is_empty()).await;

    r.remove("io");
    let closed = tokio::time::timeout(WITHIN, rx.changed()).await;
    assert!(matches!(closed, Ok(Err(_))), "channel closed on remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blacklist_lists_matches_and_own_processes() {
    let (r, root) = resolver_rooted_elsewhere(ResolverOpts::default());
    let mut rx = r.subscribe("tcp");
    r.set("tcp", Mode::Blacklist(by_marker("gg-snoop-bl-match", None)))
        .unwrap();
    let m = sleeper("gg-snoop-bl-match");
    let o = sleeper("gg-snoop-bl-other");
    let v = wait_until(&mut rx, "excluded: the match and the root", |v| {
        v.pids == set(&[root.pid(), m.pid()])
    })
    .await;
    assert!(!v.pids.contains(&o.pid()));
    assert!(v.labels.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_descendants_are_never_matched() {
    // `own` is rooted at the test process (the default): the sleeper and its child are its own.
    let own = Resolver::start(ResolverOpts::default()).unwrap();
    let (other, _root) = resolver_rooted_elsewhere(ResolverOpts::default());
    let sel = || by_marker("gg-snoop-own", None);
    let mut own_wl = own.subscribe("w");
    let mut own_bl = own.subscribe("b");
    let mut other_wl = other.subscribe("w");
    own.set("w", Mode::Whitelist(sel())).unwrap();
    own.set("b", Mode::Blacklist(sel())).unwrap();
    other.set("w", Mode::Whitelist(sel())).unwrap();

    let parent = spawn(
        python(),
        &[
            "-c",
            "import subprocess, sys, time\n\
             subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', \
             'gg-snoop-own-grandchild'])\n\
             time.sleep(60)",
            "gg-snoop-own-parent",
        ],
    );
    // The selector does match both: a resolver rooted elsewhere lists them.
    let seen = wait_until(&mut other_wl, "child and grandchild elsewhere", |v| {
        v.pids.len() == 2 && v.pids.contains(&parent.pid())
    })
    .await;
    let both = seen.pids.clone();
    let me = std::process::id();
    wait_until(&mut own_bl, "own blacklist excludes the tree", |v| {
        v.pids.contains(&me) && both.is_subset(&v.pids)
    })
    .await;
    // The whitelist stayed empty all along (no value was ever published).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(own_wl.borrow_and_update().pids.is_empty());
    assert!(!own_wl.has_changed().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_pids_are_capped() {
    let (r, _root) = resolver_rooted_elsewhere(ResolverOpts {
        max_pids: 3,
        ..ResolverOpts::default()
    });
    let mut rx = r.subscribe("cap");
    r.set("cap", Mode::Whitelist(by_marker("gg-snoop-cap", None)))
        .unwrap();
    let mut procs: Vec<Proc> = (0..5)
        .map(|i| sleeper(&format!("gg-snoop-cap-{i}")))
        .collect();
    let all: BTreeSet<u32> = procs.iter().map(Proc::pid).collect();
    // Wait until every sleeper has exec'd python (the cap fills with the first three seen).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let v = wait_until(&mut rx, "three of five", |v| v.pids.len() == 3).await;
    assert!(v.pids.is_subset(&all));
    let counters = r.counters();
    let deadline = std::time::Instant::now() + WITHIN;
    while counters.truncations.load(Ordering::Relaxed) == 0 && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counters.truncations.load(Ordering::Relaxed), 1);

    // Kill a published one: an unpublished match takes its place, the others stay.
    let victim = *v.pids.iter().next().unwrap();
    let kept: BTreeSet<u32> = v.pids.iter().copied().filter(|p| *p != victim).collect();
    procs.retain(|p| p.pid() != victim);
    let w = wait_until(&mut rx, "refilled after an exit", |w| {
        w.pids.len() == 3 && !w.pids.contains(&victim)
    })
    .await;
    assert!(kept.is_subset(&w.pids));
    assert!(w.pids.is_subset(&all));
    // Still over the cap: no second truncation.
    assert_eq!(counters.truncations.load(Ordering::Relaxed), 1);
    drop(procs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_scan_without_connector() {
    let (r, _root) = resolver_rooted_elsewhere(ResolverOpts {
        use_connector: false,
        ..ResolverOpts::default()
    });
    assert_eq!(r.source(), SOURCE_SCAN);
    let mut rx = r.subscribe("scan");
    r.set("scan", Mode::Whitelist(by_marker("gg-snoop-scan", None)))
        .unwrap();
    let p = sleeper("gg-snoop-scan");
    wait_until(&mut rx, "found by a rescan", |v| v.pids == set(&[p.pid()])).await;
    drop(p);
    wait_until(&mut rx, "gone at the next rescan", |v| v.pids.is_empty()).await;
    assert!(r.counters().rescans.load(Ordering::Relaxed) >= 2);
    assert_eq!(r.counters().events.load(Ordering::Relaxed), 0);
}
