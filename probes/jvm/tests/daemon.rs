//! jvmprobe as a drop-in of the real daemon: the built binary and its `.meta` copied into a
//! temp probes folder, a `probes` entry switching it on, and a real JVM whose collector count
//! must show up on the daemon's `/metrics` page as `gala_gopher_jvm_*`.
//!
//! The daemon binary: `GG_DAEMON`, else `gala-gopher` next to this test's target folder (built
//! by `cargo test --workspace`); neither present fails the test.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{compile_gc_load, free_port, http_get, Jvm, PROBE};

fn daemon_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("GG_DAEMON") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let sibling = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("gala-gopher"))
        .filter(|p| p.is_file());
    sibling.unwrap_or_else(|| {
        panic!("no daemon binary: set GG_DAEMON (e.g. /work/tgt/daemon-bin/gala-gopher) or build the workspace")
    })
}

struct Daemon {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn start_daemon() -> Daemon {
    let daemon = daemon_binary();
    assert!(daemon.is_file(), "{} missing", daemon.display());
    let dir = common::workdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let probes = dir.path().join("probes");
    let meta = dir.path().join("meta");
    for d in [&probes, &meta] {
        std::fs::create_dir(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::copy(PROBE, probes.join("jvmprobe")).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/jvmprobe.meta"),
        probes.join("jvmprobe.meta"),
    )
    .unwrap();
    std::fs::set_permissions(
        probes.join("jvmprobe"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(
        probes.join("jvmprobe.meta"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let port = free_port();
    let conf = format!(
        "global = {{ log_level = \"info\"; probes_dir = \"{p}\"; meta_dir = \"{m}\"; \
         cmd_socket = \"{d}/cmd.sock\"; probes_init = \"{d}/probes.init\"; }};\n\
         imdb = {{ record_timeout = 60; }};\n\
         web_server = {{ bind_addr = \"127.0.0.1\"; port = {port}; }};\n\
         probes = ( {{ name = \"jvmprobe\"; param = \"-t 1\"; switch = \"on\"; }} );\n",
        p = probes.display(),
        m = meta.display(),
        d = dir.path().display(),
    );
    std::fs::write(dir.path().join("gala-gopher.conf"), conf).unwrap();
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let mut cmd = Command::new(daemon);
    cmd.arg("-c")
        .arg(dir.path().join("gala-gopher.conf"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    // Tests never set GALA_GOPHER_* themselves; do not pass the caller's either.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("GALA_GOPHER_") {
            cmd.env_remove(k);
        }
    }
    let child = cmd.spawn().expect("spawn gala-gopher");
    Daemon { dir, port, child }
}

/// `name{…labels…} value` lines of a scrape for metric `name` whose labels contain `needle`.
fn samples<'a>(page: &'a str, name: &str, needle: &str) -> Vec<&'a str> {
    page.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(needle))
        .collect()
}

#[test]
fn drop_in_of_the_real_daemon_exports_gala_gopher_jvm_metrics() {
    let classes = compile_gc_load();
    let jvm = Jvm::gc_load(
        classes.path(),
        &["-XX:+UseSerialGC", "-Xmn8m", "-Xmx128m"],
        5,
        0,
    );
    let mx = jvm.ready();
    let copy = mx.gcs.iter().find(|g| g.0 == "Copy").expect("Copy MXBean");
    let d = start_daemon();
    let tgid = format!("tgid=\"{}\"", jvm.pid());
    let deadline = Instant::now() + Duration::from_secs(40);
    let page = loop {
        let page = http_get(d.port, "/metrics")
            .map(|r| r.1)
            .unwrap_or_default();
        let ready = samples(&page, "gala_gopher_jvm_gc_coll_secs_count", &tgid)
            .iter()
            .any(|l| l.contains("gc=\"Copy\""));
        if ready {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "no gala_gopher_jvm_gc_coll_secs_count for {tgid}; log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let line = samples(&page, "gala_gopher_jvm_gc_coll_secs_count", &tgid)
        .into_iter()
        .find(|l| l.contains("gc=\"Copy\""))
        .unwrap();
    let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(value, copy.1 as f64, "{line}");
    assert!(line.contains("name=\"GcLoad\""), "{line}");
    for metric in [
        "gala_gopher_jvm_info",
        "gala_gopher_jvm_threads_current",
        "gala_gopher_jvm_class_current_loaded",
        "gala_gopher_jvm_mem_bytes_used",
        "gala_gopher_jvm_mem_pool_bytes_used",
        "gala_gopher_jvm_proc_cpu_secs_total",
        "gala_gopher_jvm_up",
    ] {
        assert!(
            !samples(&page, metric, &tgid).is_empty(),
            "{metric} for {tgid} missing:\n{page}"
        );
    }
    let threads = samples(&page, "gala_gopher_jvm_threads_current", &tgid)[0];
    assert!(
        threads.ends_with(&format!(" {}", mx.threads.0)),
        "{threads} vs {:?}",
        mx.threads
    );
}
