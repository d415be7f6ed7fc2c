//! Cost of the snooper resolver on a host that forks and exits about 1000 processes a second
//! (`/bin/true`, spawned from two threads for 5 s) while one whitelist selector is set. Prints
//! the resolver thread's CPU time as % of one core and the events per second it received,
//! for a selector that matches none of the churn (`^java$`) and one that matches all of it
//! (`^true$`, so the published set changes at every push). Target: at most 2 % of a core.
//! A third run shows the fallback (a `/proc` rescan every second) for comparison.
//!
//! Run (as root, for the proc connector): `cargo bench -p gala-gopher --bench snooper_resolver`.

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use gala_gopher::control::snooper::{Mode, ProcName, Resolver, ResolverOpts, Selector};

const RATE_PER_SEC: u64 = 1000;
const SPAWNERS: u64 = 2;
const RUN: Duration = Duration::from_secs(5);

/// Spawn `/bin/true` at `RATE_PER_SEC` in total for `RUN`; the number spawned.
fn churn() -> u64 {
    let t0 = Instant::now();
    let threads: Vec<_> = (0..SPAWNERS)
        .map(|_| {
            std::thread::spawn(move || {
                let period = Duration::from_micros(1_000_000 * SPAWNERS / RATE_PER_SEC);
                let mut n = 0u64;
                let mut next = t0;
                while t0.elapsed() < RUN {
                    let ok = Command::new("/bin/true")
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success());
                    n += u64::from(ok);
                    next += period;
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
                n
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap_or(0)).sum()
}

fn phase(title: &str, comm: &str, use_connector: bool) {
    let r = Resolver::start(ResolverOpts {
        // The churn descends from this process: root the resolver elsewhere so it is matched
        // like any other process.
        root_pid: u32::MAX,
        use_connector,
        ..ResolverOpts::default()
    })
    .expect("start resolver");
    let _rx = r.subscribe("bench");
    let sel = Selector {
        proc_name: vec![ProcName {
            comm: regex::Regex::new(comm).expect("regex"),
            cmdline: String::new(),
            label: None,
        }],
        ..Selector::default()
    };
    r.set("bench", Mode::Whitelist(sel)).expect("set");
    // Let the initial scan finish.
    std::thread::sleep(Duration::from_millis(300));
    let c = r.counters();

    let idle_cpu = r.cpu_time();
    let idle_ev = c.events.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(1));
    let idle = r.cpu_time().saturating_sub(idle_cpu);
    let idle_events = c.events.load(Ordering::Relaxed) - idle_ev;

    let cpu0 = r.cpu_time();
    let ev0 = c.events.load(Ordering::Relaxed);
    let push0 = c.pushes.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let spawned = churn();
    // The last batch and push.
    std::thread::sleep(Duration::from_millis(200));
    let wall = t0.elapsed().as_secs_f64();
    let cpu = r.cpu_time().saturating_sub(cpu0).as_secs_f64();
    let events = c.events.load(Ordering::Relaxed) - ev0;
    println!("{title} (source {}):", r.source());
    println!(
        "  spawned {:.0} processes/s, events seen {:.0}/s, pushes {}, lost {}, rescans {}",
        spawned as f64 / wall,
        events as f64 / wall,
        c.pushes.load(Ordering::Relaxed) - push0,
        c.events_lost.load(Ordering::Relaxed),
        c.rescans.load(Ordering::Relaxed),
    );
    println!(
        "  resolver thread CPU: {:.2} % of one core ({:.1} ms over {:.1} s)",
        100.0 * cpu / wall,
        cpu * 1e3,
        wall,
    );
    println!(
        "  before the churn (1 s, other activity on the host): {:.3} ms CPU, {idle_events} events",
        idle.as_secs_f64() * 1e3,
    );
}

fn main() {
    phase(
        "whitelist matching none of the churn (^java$)",
        "^java$",
        true,
    );
    phase(
        "whitelist matching all of the churn (^true$)",
        "^true$",
        true,
    );
    phase("periodic /proc scan instead (^java$)", "^java$", false);
}
