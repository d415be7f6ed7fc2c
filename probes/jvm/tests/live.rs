//! The real binary against real JDK 17 JVMs the tests start: what the probe reports is compared
//! with what the JVM's own MXBeans print and with `jcmd PerfCounter.print` (the JDK's reader of
//! the same counters). A missing `java`, `javac`, `jcmd` or `unshare` fails the tests.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{compile_gc_load, jcmd_counters, jdk_tool, workdir, Jvm, KillOnDrop, Probe};
use jvmprobe::hsperf::Builder;
use jvmprobe::tables::{CLASS, GC, INFO, INSTANCE, MEM, MEM_POOL, PROC, THREAD};

const YOUNG_GCS: u32 = 20;
const SERIAL: &[&str] = &["-XX:+UseSerialGC", "-Xmn8m", "-Xmx128m"];

#[test]
fn serial_jvm_matches_its_mxbeans_and_jcmd() {
    let classes = compile_gc_load();
    let jvm = Jvm::gc_load(classes.path(), SERIAL, YOUNG_GCS, 4);
    let mx = jvm.ready();
    let pid = jvm.pid();
    let mut probe = Probe::start(false);
    let p = probe.period_where("the JVM", |p| !p.of(INSTANCE, pid).is_empty());

    let inst = p.one(INSTANCE, pid, None);
    assert_eq!(inst.get("up"), "1");
    assert_eq!(inst.get("scrape_errors"), "0");
    assert_eq!(inst.get("name"), "GcLoad");

    // Collectors: names and counts as the MXBeans say, time within their ms rounding.
    let young = mx.gcs.iter().find(|g| g.0 == "Copy").expect("Copy MXBean");
    assert!(young.1 >= i64::from(YOUNG_GCS), "{mx:?}");
    for (name, count, ms) in &mx.gcs {
        let r = p.one(GC, pid, Some(("gc", name)));
        assert_eq!(r.num("gc_coll_secs_count"), *count as f64, "{name}");
        let secs = r.num("gc_coll_secs_sum");
        let diff_ms = (secs * 1000.0 - *ms as f64).abs();
        assert!(
            diff_ms <= 2.0 + 0.05 * *ms as f64,
            "{name}: probe {secs} s, MXBean {ms} ms"
        );
    }
    assert_eq!(p.of(GC, pid).len(), mx.gcs.len());

    let t = p.one(THREAD, pid, None);
    let got = (
        t.num("threads_current") as i64,
        t.num("threads_daemon") as i64,
        t.num("threads_peak") as i64,
        t.num("threads_started_total") as i64,
    );
    assert_eq!(got, mx.threads);

    let c = p.one(CLASS, pid, None);
    let got = (
        c.num("class_current_loaded") as i64,
        c.num("class_loaded_total") as i64,
        c.num("class_unloaded_total") as i64,
    );
    assert_eq!(got, mx.classes);

    let i = p.one(INFO, pid, None);
    assert_eq!(
        (i.get("runtime"), i.get("vendor"), i.get("version")),
        (mx.vm.0.as_str(), mx.vm.1.as_str(), mx.vm.2.as_str())
    );
    assert_eq!(i.get("info"), "1");
    let pr = p.one(PROC, pid, None);
    assert_eq!(
        (pr.num("proc_start_time_secs") * 1000.0).round() as i64,
        mx.start_ms
    );
    assert!(pr.num("proc_cpu_secs_total") > 0.0);

    // The same counters through the JDK's reader (after the MXBean checks: jcmd attaches and
    // starts a thread). Nothing allocates any more, so no collection happens in between.
    let j = jcmd_counters(pid);
    let long = |k: &str| -> f64 {
        j.get(k)
            .unwrap_or_else(|| panic!("jcmd has no {k}"))
            .parse()
            .unwrap()
    };
    let hz = long("sun.os.hrt.frequency");
    for (n, name) in [(0, "Copy"), (1, "MarkSweepCompact")] {
        let r = p.one(GC, pid, Some(("gc", name)));
        assert_eq!(
            r.num("gc_coll_secs_count"),
            long(&format!("sun.gc.collector.{n}.invocations"))
        );
        assert_eq!(
            r.num("gc_coll_secs_sum"),
            long(&format!("sun.gc.collector.{n}.time")) / hz
        );
    }
    for (pool, counter) in [
        ("eden", "sun.gc.generation.0.space.0"),
        ("s0", "sun.gc.generation.0.space.1"),
        ("s1", "sun.gc.generation.0.space.2"),
        ("old", "sun.gc.generation.1.space.0"),
        ("metaspace", "sun.gc.metaspace"),
        ("compressed_class_space", "sun.gc.compressedclassspace"),
    ] {
        let r = p.one(MEM_POOL, pid, Some(("pool", pool)));
        assert_eq!(
            r.num("mem_pool_bytes_commit"),
            long(&format!("{counter}.capacity")),
            "{pool}"
        );
        assert_eq!(
            r.num("mem_pool_bytes_max"),
            long(&format!("{counter}.maxCapacity")),
            "{pool}"
        );
        if pool != "eden" {
            // Only eden changes without a collection (jcmd's attach allocates).
            assert_eq!(
                r.num("mem_pool_bytes_used"),
                long(&format!("{counter}.used")),
                "{pool}"
            );
        }
    }
    let heap = p.one(MEM, pid, Some(("area", "heap")));
    assert_eq!(
        heap.num("mem_bytes_commit"),
        long("sun.gc.generation.0.capacity") + long("sun.gc.generation.1.capacity")
    );
    assert_eq!(
        heap.num("mem_bytes_max"),
        long("sun.gc.generation.0.maxCapacity") + long("sun.gc.generation.1.maxCapacity")
    );
    assert!(heap.num("mem_bytes_used") >= long("sun.gc.generation.1.space.0.used"));
    let nonheap = p.one(MEM, pid, Some(("area", "nonheap")));
    assert_eq!(nonheap.num("mem_bytes_used"), long("sun.gc.metaspace.used"));
    assert!(
        nonheap.num("mem_bytes_used") > 0.0,
        "metaspace counters are set by the first GC"
    );
    // (Other tests' planted files may be warned about: only this JVM's lines count.)
    let err = probe.stderr();
    assert!(!err.contains(&format!("jvm {pid}:")), "stderr: {err}");
}

#[test]
fn jvms_appear_disappear_follow_snoopers_and_perfdata_off_is_silent() {
    let classes = compile_gc_load();
    let mut probe = Probe::start(true);
    probe.fresh_period();
    // Started after the probe.
    let a = Jvm::gc_load(classes.path(), SERIAL, 1, 0);
    let b = Jvm::gc_load(classes.path(), SERIAL, 1, 0);
    let off = Jvm::gc_load(
        classes.path(),
        &["-XX:+UseSerialGC", "-XX:-UsePerfData"],
        1,
        0,
    );
    a.ready();
    b.ready();
    off.ready();
    let (pa, pb, poff) = (a.pid(), b.pid(), off.pid());
    probe.period_where("both JVMs", |p| {
        let pids = p.pids();
        pids.contains(&pa) && pids.contains(&pb)
    });

    probe.send(&format!(
        r#"{{"v":1,"params":{{"report_period":1}},"snoop":{{"mode":"include","pids":[{pa}]}}}}"#
    ));
    let p = probe.period_where("only A", |p| p.pids() == [pa]);
    assert_eq!(p.stats().get("jvms"), "1");
    probe.send(r#"{"v":1,"snoop":{"mode":"exclude","pids":[]}}"#);
    probe.period_where("both again", |p| {
        let pids = p.pids();
        pids.contains(&pa) && pids.contains(&pb)
    });

    // SIGKILL: its file stays, its pid is gone.
    let left = a.kill_hard();
    assert!(left.exists(), "{} left by the killed JVM", left.display());
    let p = probe.period_where("A gone", |p| !p.pids().contains(&pa));
    let _ = std::fs::remove_file(&left);
    assert!(p.pids().contains(&pb));
    assert!(!p.pids().contains(&poff), "-XX:-UsePerfData has no file");
    let err = probe.stderr();
    for pid in [pa, pb, poff] {
        assert!(
            !err.contains(&format!("jvm {pid}:")),
            "no warnings for exited or perf-data-less JVMs: {err}"
        );
    }
    assert!(!err.contains("ERROR"), "{err}");
}

/// Host pid of the only child of `parent` (unshare --fork's child).
fn only_child(parent: u32) -> u32 {
    let path = format!("/proc/{parent}/task/{parent}/children");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some(pid) = text.split_whitespace().next() {
            return pid.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "no child of {parent}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn unshare() -> std::path::PathBuf {
    let p = std::path::Path::new("/usr/bin/unshare");
    assert!(p.is_file(), "unshare (util-linux) is needed for this test");
    p.to_path_buf()
}

/// A JVM in its own pid and mount namespace with a private /tmp (as in a container): its file
/// is `/tmp/hsperfdata_root/1` in its namespace, invisible on the host's /tmp.
#[test]
fn jvm_in_its_own_pid_and_mount_namespace() {
    let classes = compile_gc_load();
    let script = format!(
        // The classes are reached through fd 3, opened before the new /tmp hides them (the
        // checkout, and so the target folder, may itself be under /tmp).
        "exec 3<{} && mount -t tmpfs tmpfs /tmp && exec {} {} -cp /proc/self/fd/3 GcLoad 3 0",
        classes.path().display(),
        jdk_tool("java").display(),
        SERIAL.join(" "),
    );
    let mut cmd = Command::new(unshare());
    cmd.args([
        "--pid",
        "--fork",
        "--kill-child",
        "--mount",
        "--mount-proc",
        "sh",
        "-c",
    ])
    .arg(&script);
    let jvm = Jvm::spawn(cmd);
    let mx = jvm.ready();
    let pid = only_child(jvm.pid());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("NSpid:") && l.ends_with("\t1")),
        "{status}"
    );
    assert!(!std::path::Path::new(&format!("/tmp/hsperfdata_root/{pid}")).exists());

    let mut probe = Probe::start(false);
    let p = probe.period_where("the namespaced JVM", |p| !p.of(INSTANCE, pid).is_empty());
    assert_eq!(p.one(INSTANCE, pid, None).get("up"), "1");
    let copy = mx.gcs.iter().find(|g| g.0 == "Copy").unwrap();
    assert_eq!(
        p.one(GC, pid, Some(("gc", "Copy")))
            .num("gc_coll_secs_count"),
        copy.1 as f64
    );
    assert_eq!(
        p.one(THREAD, pid, None).num("threads_current") as i64,
        mx.threads.0
    );
}

/// Files planted in a /tmp: a symlink named after a process, a symlinked hsperfdata directory,
/// a file owned by another uid, garbage, and a real JVM's file older than the process (a reused
/// pid). None is followed or used; the garbage and refused
/// files give `up` 0 with growing `scrape_errors` and one warning each, and a well-formed
/// regular file next to them is read.
#[test]
fn planted_files_are_refused() {
    let dir = workdir();
    let good = Builder::new()
        .long("java.threads.live", 42)
        .string("sun.rt.javaCommand", "Planted")
        .build(4096);
    let good_path = dir.path().join("good");
    std::fs::write(&good_path, &good).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = format!(
        r#"set -e
exec 3<{good} 4<{real}
mount -t tmpfs tmpfs /tmp
mkdir /tmp/hsperfdata_root /tmp/elsewhere
sleep 600 & a=$!
sleep 600 & b=$!
sleep 600 & c=$!
sleep 600 & d=$!
sleep 600 & e=$!
sleep 600 & f=$!
cat <&3 > /tmp/good && ln -s /tmp/good /tmp/hsperfdata_root/$a
cp /tmp/good /tmp/hsperfdata_root/$b && chown 65534 /tmp/hsperfdata_root/$b
head -c 5000 /dev/urandom > /tmp/hsperfdata_root/$c
cp /tmp/good /tmp/elsewhere/$d && ln -s /tmp/elsewhere /tmp/hsperfdata_evil
cp /tmp/good /tmp/hsperfdata_root/$e
cat <&4 > /tmp/hsperfdata_root/$f
echo "$a $b $c $d $e $f"
echo ready
wait
"#,
        good = good_path.display(),
        real = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/jdk17-serial.hsperf"
        ),
    );
    let mut cmd = Command::new(unshare());
    cmd.args(["--mount", "--kill-child", "sh", "-c"])
        .arg(&script);
    let procs = Jvm::spawn(cmd);
    let pids: Vec<u32> = procs
        .lines
        .recv_timeout(Duration::from_secs(10))
        .expect("pids")
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let [a, b, c, d, e, f] = pids[..] else {
        panic!("{pids:?}")
    };
    let _sleepers = KillOnDrop(pids.clone());
    let mut probe = Probe::start(false);
    let first = probe.period_where("the good file", |p| !p.of(INSTANCE, e).is_empty());
    let later = probe.period_where("two more periods", |p| {
        p.of(INSTANCE, c)
            .first()
            .is_some_and(|r| r.num("scrape_errors") >= 3.0)
    });
    for p in [&first, &later] {
        assert_eq!(p.one(INSTANCE, e, None).get("up"), "1");
        assert_eq!(p.one(THREAD, e, None).get("threads_current"), "42");
        assert_eq!(p.one(INSTANCE, e, None).get("name"), "Planted");
        for bad in [a, b, c] {
            assert_eq!(p.one(INSTANCE, bad, None).get("up"), "0", "pid {bad}");
            assert!(p.of(THREAD, bad).is_empty());
        }
        assert!(p.of(INSTANCE, d).is_empty(), "symlinked directory followed");
        assert!(
            p.of(INSTANCE, f).is_empty(),
            "a JVM file older than its process"
        );
    }
    assert!(later.one(INSTANCE, a, None).num("scrape_errors") >= 3.0);
    assert!(later.stats().num("files_refused_total") >= 4.0);
    assert!(later.stats().num("stale_files_total") >= 2.0);
    let err = probe.stderr();
    for bad in [a, b, c] {
        let n = err.matches(&format!("jvm {bad}:")).count();
        assert_eq!(n, 1, "one warning for {bad}: {err}");
    }
    assert!(err.contains("not a regular file"), "{err}");
    assert!(err.contains("owned by uid 65534"), "{err}");
}
