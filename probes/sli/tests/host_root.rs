//! The host root: with `GOPHER_HOST_PATH=<dir>`, the cgroup mounts come from
//! `<dir>/proc/1/mountinfo`, the hierarchies are walked below `<dir>`, and PSI, `/proc/stat`,
//! CPU usage and CPU limits are read there. The fake trees (hybrid v1 + v2, and pure v2) hold
//! one Kubernetes container; the test changes the files between two periods and checks the
//! exact per-period values.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(30);
const ID: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";
const POD: &str = "kubepods/besteffort/pod0a1b2c3d-0000-4000-8000-000000000001";

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn pressure(some_us: u64, full_us: u64) -> String {
    format!(
        "some avg10=0.00 avg60=0.00 avg300=0.00 total={some_us}\n\
         full avg10=0.00 avg60=0.00 avg300=0.00 total={full_us}\n"
    )
}

fn proc_stat(user: u64, idle: u64) -> String {
    format!(
        "cpu  {user} 0 0 {idle} 0 0 0 0 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\ncpu1 0 0 0 0 0 0 0 0 0 0\n\
         cpu2 0 0 0 0 0 0 0 0 0 0\ncpu3 0 0 0 0 0 0 0 0 0 0\nctxt 1\n"
    )
}

/// The fake host: (root, the container's v2 directory, its CPU usage file and the format of
/// that file).
struct Tree {
    root: PathBuf,
    unified: PathBuf,
    usage: PathBuf,
    v2: bool,
}

impl Tree {
    fn usage(&self, ns: u64) -> String {
        if self.v2 {
            format!("usage_usec {}\nuser_usec 0\nsystem_usec 0\n", ns / 1000)
        } else {
            format!("{ns}\n")
        }
    }
}

fn build(dir: &Path, v2: bool) -> Tree {
    let root = dir.join("host");
    let rel = format!("{POD}/{ID}");
    let mountinfo = if v2 {
        "24 18 0:22 / /sys/fs/cgroup rw,relatime shared:9 - cgroup2 cgroup2 rw\n".to_string()
    } else {
        "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
         33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n\
         41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
            .to_string()
    };
    write(&root.join("proc/1/mountinfo"), &mountinfo);
    for r in ["cpu", "memory", "io"] {
        write(&root.join("proc/pressure").join(r), &pressure(1000, 10));
    }
    write(&root.join("proc/stat"), &proc_stat(100, 900));
    let (unified, usage) = if v2 {
        let d = root.join("sys/fs/cgroup").join(&rel);
        write(&d.join("cpu.max"), "50000 100000\n");
        (d.clone(), d.join("cpu.stat"))
    } else {
        let cpu = root.join("sys/fs/cgroup/cpu").join(&rel);
        write(&cpu.join("cpu.cfs_quota_us"), "50000\n");
        write(&cpu.join("cpu.cfs_period_us"), "100000\n");
        // A sub-cgroup of the container belongs to it.
        std::fs::create_dir_all(cpu.join("sub")).unwrap();
        let acct = root.join("sys/fs/cgroup/cpuacct").join(&rel);
        (
            root.join("sys/fs/cgroup/unified").join(&rel),
            acct.join("cpuacct.usage"),
        )
    };
    for r in ["cpu", "memory", "io"] {
        write(&unified.join(format!("{r}.pressure")), &pressure(5000, 0));
    }
    let tree = Tree {
        root,
        unified,
        usage,
        v2,
    };
    write(&tree.usage, &tree.usage(1_000_000_000));
    tree
}

fn files_below_the_host_root(v2: bool) {
    let dir = tempfile::tempdir().unwrap();
    let tree = build(dir.path(), v2);
    let short = &ID[..12];
    let root = tree.root.to_str().unwrap();
    let mut probe = ProbeRun::start_with_env(&["-t", "1"], &[("GOPHER_HOST_PATH", root)]);
    probe.wait_attached(WAIT);
    let first = probe.next_period(WAIT);
    let stat = row(&first, "sli_cpu_container_stat", short)
        .unwrap_or_else(|| panic!("no row for the fake container: {first:#?}"));
    assert_eq!(stat.get("cpu_cores"), "0.5", "quota 50000 / period 100000");
    let node_stat = row(&first, "sli_cpu_node_stat", "sli_node_key").unwrap();
    assert_eq!(
        node_stat.get("cpu_cores"),
        "4",
        "cpuN lines of the fake /proc/stat"
    );
    // Unchanged files: nothing stalled in the period.
    let mem = row(&first, "sli_mem_container_gauge", short).unwrap();
    assert_eq!(mem.get("mem_pressure_some_ns"), "0");
    assert_eq!(mem.get("mem_swapin"), "", "never measured");

    // Between two readings: 2.5 ms more memory stall in the container, 1 ms IO stall on the
    // node, 0.5 s of container CPU time, and the node's CPU 50 % busy.
    write(&tree.unified.join("memory.pressure"), &pressure(7500, 250));
    write(&tree.root.join("proc/pressure/io"), &pressure(2000, 10));
    write(&tree.usage, &tree.usage(1_500_000_000));
    write(&tree.root.join("proc/stat"), &proc_stat(300, 1100));
    let next = probe.period(WAIT);
    let mem = row(&next, "sli_mem_container_gauge", short).unwrap();
    assert_eq!(mem.num("mem_pressure_some_ns"), 2_500_000);
    assert_eq!(mem.num("mem_pressure_full_ns"), 250_000);
    let io = row(&next, "sli_io_node_gauge", "sli_node_key").unwrap();
    assert_eq!(io.num("io_pressure_some_ns"), 1_000_000);
    assert_eq!(io.num("io_pressure_full_ns"), 0);
    let cpu = row(&next, "sli_cpu_container_gauge", short).unwrap();
    assert_eq!(cpu.num("cpu_pressure_some_ns"), 0);
    let node_stat = row(&next, "sli_cpu_node_stat", "sli_node_key").unwrap();
    assert_eq!(node_stat.get("cpu_busy"), "50");
    // 0.5 s of CPU over about one second on 4 CPUs: about 12.5 % (the period is not exact).
    let busy = row(&next, "sli_cpu_container_stat", short)
        .unwrap()
        .float("cpu_busy");
    assert!((8.0..=18.0).contains(&busy), "cpu_busy {busy}");
    probe.stop();
}

#[test]
fn hybrid_tree_below_the_host_root() {
    files_below_the_host_root(false);
}

#[test]
fn pure_v2_tree_below_the_host_root() {
    files_below_the_host_root(true);
}
