//! A failed folder scan keeps the previous probe set (issue 9, class 3). This is its own test
//! binary because it exhausts the process's file descriptors, which would break tests running
//! beside it in the same process.

mod supervisor_support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use gala_gopher::supervisor::discovery::{spawn_discovery_loop, DiscoveryInputs};
use gala_gopher::supervisor::Supervisor;
use gala_gopher::telemetry::{ProbeState, Telemetry};
use supervisor_support::*;
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(20);
const META: &str = "version = \"1.0.0\";\nmeasurements: ();\n";

fn nofile() -> libc::rlimit {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim
}

fn set_nofile(lim: &libc::rlimit) {
    // SAFETY: setrlimit only reads the struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, lim) }, 0);
}

/// Open `/dev/null` until the process hits EMFILE (with the soft limit lowered so this is quick).
fn exhaust_fds() -> Vec<std::fs::File> {
    let mut held = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => held.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => return held,
            Err(e) => panic!("unexpected error while exhausting fds: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emfile_during_a_scan_keeps_running_drop_ins() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    write_file(p, "steady.meta", META, false);
    write_script(p, "steady.sh", "echo up\nexec sleep 1000");
    let sink = TestSink::new();
    let telemetry = Arc::new(Telemetry::default());
    let sup = Supervisor::new(sink.clone(), telemetry.clone(), fast_options());
    let (_config, rx) = watch::channel(Vec::new());
    let inputs = DiscoveryInputs {
        probes_dir: p.to_path_buf(),
        meta_dir: p.join("no-meta-dir"),
        sdk_dir: p.join("sdk"),
        configured: rx,
    };
    let handle = spawn_discovery_loop(sup.clone(), inputs, Duration::from_millis(50));
    assert!(eventually(WAIT, || sink.lines("steady") == ["up"]).await);
    let stats = telemetry.probe("steady");
    let pid = stats.pid.load(Ordering::Relaxed) as i32;
    assert!(pid > 0);

    // Every fd taken: opendir(probes_dir) fails with EMFILE, like the daemon at `ulimit -n 256`
    // with 300 idle HTTP connections.
    let saved = nofile();
    let open_now = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    set_nofile(&libc::rlimit {
        rlim_cur: (open_now + 64).min(saved.rlim_cur),
        rlim_max: saved.rlim_max,
    });
    let held = exhaust_fds();
    let errors = || telemetry.discovery.scan_error_count();
    let seen = eventually(WAIT, || errors() >= 5).await;
    let after = (
        sup.names(),
        stats.state(),
        stats.pid.load(Ordering::Relaxed) as i32,
        sink.retired("steady"),
    );
    drop(held);
    set_nofile(&saved);

    assert_eq!(after.0, ["steady"], "drop-in removed after a failed scan");
    assert_eq!(after.1, ProbeState::Running);
    assert_eq!(after.2, pid, "drop-in restarted after a failed scan");
    assert!(!after.3, "drop-in retired after a failed scan");
    assert!(seen, "no failed scans counted ({})", errors());
    assert!(pid_exists(pid));

    // Once scans succeed again nothing changes either.
    let count = errors();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(errors(), count, "scans still failing");
    assert_eq!(stats.pid.load(Ordering::Relaxed) as i32, pid);
    assert_eq!(sink.lines("steady"), ["up"]);

    handle.abort();
    sup.shutdown().await;
}
