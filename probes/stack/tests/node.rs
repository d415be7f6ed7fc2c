//! stackprobe against a real Node.js: functions V8 compiled are named from the perf map node
//! writes with `--perf-basic-prof` (`/tmp/perf-<pid>.map`), marked as JIT frames, with the
//! callers down to node's own C++ entry (V8 keeps frame pointers in its JIT code on x86-64).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const HOT_JS: &str = r#"
function ggNodeHotFunction4714(n) {
    let s = 0;
    for (let i = 0; i < n; i++) {
        s = (s + i * 7) ^ (s >>> 3);
    }
    return s;
}
let sink = 0;
const end = Date.now() + Number(process.argv[2]) * 1000;
while (Date.now() < end) {
    sink += ggNodeHotFunction4714(1000000);
}
if (sink === 0.5) console.log(sink);
"#;

/// The name every assertion looks for (a wrong one here makes the test fail).
const HOT_FUNCTION: &str = "ggNodeHotFunction4714";

/// node running the hot script; killed, and its perf map removed, on drop.
struct Node {
    child: Child,
}

impl Node {
    fn start(dir: &Path, secs: u32) -> Node {
        let script = dir.join("gg_hot.js");
        std::fs::write(&script, HOT_JS).unwrap();
        // In the temp dir: with a perf map, node also writes its isolate log into the
        // working directory.
        let child = Command::new("node")
            .current_dir(dir)
            .arg("--perf-basic-prof")
            .arg(&script)
            .arg(secs.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn node");
        Node { child }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(format!("/tmp/perf-{}.map", self.child.id()));
    }
}

#[test]
fn node_jit_functions_are_named_from_its_perf_map() {
    if !tool_available("node", "--version") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let flame = tmp.path().join("flame");
    std::fs::create_dir(&flame).unwrap();
    let node = Node::start(tmp.path(), 20);
    let pid = node.child.id();
    // Optimised by TurboFan within the first second.
    std::thread::sleep(Duration::from_secs(2));

    let log = profile_oncpu(&flame, pid, "", 5);

    let stacks = folded(&flame, "oncpu", pid);
    let (frac, _, example) = share_of(&stacks, HOT_FUNCTION);
    assert!(
        frac >= 0.8,
        "{frac:.2} of {} samples in {HOT_FUNCTION}: {stacks:?}\n{log}",
        total(&stacks)
    );
    let example = example.unwrap();
    assert!(
        example[0].starts_with(&format!("[{pid}]")),
        "process frame first: {example:?}"
    );
    let jit = example
        .iter()
        .position(|f| f.contains(HOT_FUNCTION))
        .unwrap();
    assert!(
        example[jit].ends_with("_[j]"),
        "a JIT frame is marked: {example:?}"
    );
    let start = example.iter().position(|f| f.starts_with("node::Start"));
    assert!(
        start.is_some_and(|s| s < jit),
        "callers of {HOT_FUNCTION} down to node's entry unwound: {example:?}"
    );
    let svg = outputs(&flame, "oncpu", pid, "svg");
    let svg = std::fs::read_to_string(svg.last().expect("an SVG")).unwrap();
    assert!(svg.contains(HOT_FUNCTION), "{HOT_FUNCTION} in the SVG");
}
