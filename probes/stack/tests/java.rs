//! stackprobe against a real JVM: JIT-compiled Java methods are named from the perf map the JVM
//! writes on `jcmd <pid> Compiler.perfmap` (`/tmp/perf-<pid>.map`), in the folded stacks and in
//! the SVG, whether the map exists before the probe first sees the process or is written while
//! the probe already profiles it; the JVM's own frames (libjvm.so) are shown one by one only
//! with upstream's `native_stack` = 1.
//!
//! The JVM runs with `-XX:+PreserveFramePointer`: the probe unwinds user stacks by frame
//! pointers, and JIT-compiled code uses rbp as a general register unless told to keep the frame
//! chain, so without it the walk stops (or goes astray) at the first JIT frame. The hot method
//! is kept out of its caller (`CompileCommand=dontinline`): C2 would otherwise inline it into
//! `main`'s on-stack-replacement compilation and the perf map would only name `main`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const HOT_JAVA: &str = r#"
public class GgHot {
    static long sink;

    static long ggHotMethod4713(long n) {
        long s = 0;
        for (long i = 0; i < n; i++) {
            s += (i * 7) ^ (s >>> 3);
        }
        return s;
    }

    public static void main(String[] args) {
        long end = System.nanoTime() + Long.parseLong(args[0]) * 1_000_000_000L;
        while (System.nanoTime() < end) {
            sink += ggHotMethod4713(1_000_000);
        }
    }
}
"#;

/// The name every assertion looks for (a wrong one here makes the tests fail).
const HOT_METHOD: &str = "ggHotMethod4713";

/// A JVM running `GgHot`; killed, and its perf map removed, on drop.
struct Jvm {
    child: Child,
}

impl Jvm {
    fn start(dir: &Path, secs: u32) -> Jvm {
        std::fs::write(dir.join("GgHot.java"), HOT_JAVA).unwrap();
        let out = Command::new("javac")
            .arg("-d")
            .arg(dir)
            .arg(dir.join("GgHot.java"))
            .output()
            .expect("run javac");
        assert!(
            out.status.success(),
            "javac: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let child = Command::new("java")
            .args([
                "-XX:+PreserveFramePointer",
                "-XX:CompileCommand=quiet",
                "-XX:CompileCommand=dontinline,GgHot::ggHotMethod4713",
                "-Xss1m",
                "-cp",
            ])
            .arg(dir)
            .arg("GgHot")
            .arg(secs.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn java");
        Jvm { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn perf_map(&self) -> PathBuf {
        PathBuf::from(format!("/tmp/perf-{}.map", self.pid()))
    }

    /// `jcmd <pid> Compiler.perfmap`: the JVM writes its code cache into the perf map.
    fn write_perf_map(&self) {
        let out = Command::new("jcmd")
            .arg(self.pid().to_string())
            .arg("Compiler.perfmap")
            .output()
            .expect("run jcmd");
        assert!(
            out.status.success(),
            "jcmd Compiler.perfmap: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let map = std::fs::read_to_string(self.perf_map()).expect("perf map written");
        assert!(
            map.contains(HOT_METHOD),
            "the JVM compiled {HOT_METHOD} by now; its perf map:\n{map}"
        );
    }
}

impl Drop for Jvm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.perf_map());
    }
}

fn params(dir: &Path) -> String {
    format!(
        r#""flame_dir":"{}","svg_period":180,"perf_sample_period":10"#,
        dir.display()
    )
}

/// The JIT frames of the folded on-CPU stacks of `pid` name the hot method, and so does the SVG.
fn assert_hot_method_named(flame: &Path, pid: u32, min_share: f64, log: &str) {
    let stacks = folded(flame, "oncpu", pid);
    let total = total(&stacks);
    let (frac, _, example) = share_of(&stacks, HOT_METHOD);
    assert!(
        frac >= min_share,
        "{frac:.2} of {total} samples in {HOT_METHOD}: {stacks:?}\n{log}"
    );
    let example = example.unwrap();
    assert!(
        example[0].starts_with(&format!("[{pid}]")),
        "process frame first: {example:?}"
    );
    let jit = example.iter().find(|f| f.contains(HOT_METHOD)).unwrap();
    assert!(jit.ends_with("_[j]"), "a JIT frame is marked: {example:?}");

    let svg = outputs(flame, "oncpu", pid, "svg");
    let svg = std::fs::read_to_string(svg.last().expect("an SVG")).unwrap();
    assert!(svg.contains(HOT_METHOD), "{HOT_METHOD} in the SVG");
}

#[test]
fn jit_frames_are_named_from_the_jvm_perf_map() {
    if !tool_available("java", "-version") || !tool_available("jcmd", "-h") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let flame = tmp.path().join("flame");
    std::fs::create_dir(&flame).unwrap();
    let jvm = Jvm::start(tmp.path(), 30);
    let pid = jvm.pid();
    // Hot: compiled by C1 then C2 after a few hundred calls.
    std::thread::sleep(Duration::from_secs(3));
    jvm.write_perf_map();

    // upstream's native_stack = 1: the JVM's own frames one by one.
    let log = profile_oncpu(&flame, pid, r#","native_stack":1"#, 5);

    assert_hot_method_named(&flame, pid, 0.8, &log);
    // The frame-pointer walk went through the JIT frame and the frames that called Java
    // (interpreter, call stub: JIT code too) into libjvm.so: what PreserveFramePointer buys
    // (without it the stack is the process and the hot method, nothing else).
    let stacks = folded(&flame, "oncpu", pid);
    let (_, _, example) = share_of(&stacks, HOT_METHOD);
    let example = example.unwrap();
    let hot = example.iter().position(|f| f.contains(HOT_METHOD)).unwrap();
    let helper = example
        .iter()
        .position(|f| f.starts_with("JavaCalls::call_helper"));
    assert!(
        helper.is_some_and(|h| h < hot) && example.iter().any(|f| f == "start_thread"),
        "callers of {HOT_METHOD} down to the thread's start unwound: {example:?}"
    );

    // The default, native_stack = 0 (upstream's): each run of libjvm.so's frames is one
    // `[jvm]`; the Java frames, the launcher's and libc's stay.
    let flame0 = tmp.path().join("flame0");
    std::fs::create_dir(&flame0).unwrap();
    let log = profile_oncpu(&flame0, pid, "", 4);
    assert_hot_method_named(&flame0, pid, 0.8, &log);
    let stacks = folded(&flame0, "oncpu", pid);
    let (_, _, example) = share_of(&stacks, HOT_METHOD);
    let example = example.unwrap();
    let hot = example.iter().position(|f| f.contains(HOT_METHOD)).unwrap();
    let jvm = example.iter().position(|f| f == "[jvm]");
    assert!(
        jvm.is_some_and(|j| j < hot) && example.iter().any(|f| f == "start_thread"),
        "the JVM's frames under {HOT_METHOD} are one [jvm]: {example:?}"
    );
    for (frames, _) in &stacks {
        assert!(
            !frames.iter().any(|f| f.starts_with("JavaCalls::")
                || f.starts_with("JavaThread::")
                || f.starts_with("Thread::call_run")),
            "no libjvm.so frame with native_stack 0: {frames:?}"
        );
        assert!(
            !frames
                .windows(2)
                .any(|w| w[0] == "[jvm]" && w[1] == "[jvm]"),
            "a run of JVM frames is one [jvm]: {frames:?}"
        );
    }
}

#[test]
fn a_perf_map_written_while_profiling_is_read() {
    if !tool_available("java", "-version") || !tool_available("jcmd", "-h") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let flame = tmp.path().join("flame");
    std::fs::create_dir(&flame).unwrap();
    let jvm = Jvm::start(tmp.path(), 30);
    let pid = jvm.pid();
    std::thread::sleep(Duration::from_secs(3));
    assert!(!jvm.perf_map().exists(), "no perf map before jcmd");

    let mut probe = Probe::start(
        &["-P", "1"],
        &control_line(1, &params(&flame), Some(&[pid])),
    );
    probe.wait_log("stackprobe running", Duration::from_secs(20));
    // At least one drain (every second) symbolizes the JIT addresses without a perf map.
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(2600));
    jvm.write_perf_map();
    let written = started.elapsed();
    // Two more drains with the map in place.
    std::thread::sleep(Duration::from_secs(4));
    let log = probe.stop();
    assert!(written < Duration::from_secs(4), "jcmd took {written:?}");

    // The samples of the first drain (~2.6 s of ~7) had no perf map to be named from; those of
    // the drains after jcmd have.
    assert_hot_method_named(&flame, pid, 0.4, &log);
}
