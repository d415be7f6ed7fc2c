//! Binaries the probe cannot open by their path: one in a real podman container, one on a tmpfs
//! mounted only in the process's own mount namespace (a container's view), and one deleted after
//! it started. All must still be symbolized, through `/proc/<pid>/map_files` (or
//! `/proc/<pid>/root`).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// The name the assertions look for (a wrong one here makes the tests fail).
const HOT: &str = "gg_ns_hot_4721";
const CALLER: &str = "gg_ns_caller_4721";

fn params(dir: &Path) -> String {
    format!(
        r#""flame_dir":"{}","svg_period":180,"perf_sample_period":10"#,
        dir.display()
    )
}

/// The path `/proc/<pid>/exe` points to (as the process's namespace names it).
fn exe(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Profiles `pid` for ~4 s and checks its samples are in the hot function under its caller.
fn profile_and_check(flame: &Path, pid: u32) {
    let mut probe = Probe::start(&["-P", "1"], &control_line(1, &params(flame), Some(&[pid])));
    probe.wait_log("stackprobe running", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(4));
    let log = probe.stop();

    let stacks = folded(flame, "oncpu", pid);
    let (frac, _, example) = share_of(&stacks, HOT);
    assert!(
        frac >= 0.8,
        "{frac:.2} of {} samples in {HOT}: {stacks:?}\n{log}",
        total(&stacks)
    );
    let example = example.unwrap();
    let pos = |n: &str| example.iter().position(|f| f == n);
    assert!(
        pos("main").is_some() && pos("main") < pos(CALLER) && pos(CALLER) < pos(HOT),
        "main -> {CALLER} -> {HOT} in {example:?}"
    );
}

#[test]
fn binary_on_a_tmpfs_of_another_mount_namespace_is_symbolized() {
    let tmp = tempfile::tempdir().unwrap();
    let flame = tmp.path().join("flame");
    std::fs::create_dir(&flame).unwrap();
    let bin = compile(tmp.path(), "gg_ns_prog", &hot_src(HOT, CALLER), CFLAGS);
    // An empty directory here; in the child's namespace a tmpfs holding the binary.
    let mnt = tmp.path().join("private_mnt");
    std::fs::create_dir(&mnt).unwrap();
    let inner = mnt.join("gg_ns_p");
    let script = format!(
        "mount -t tmpfs gg_ns_tmpfs '{m}' && cp '{b}' '{i}' && exec '{i}' 30",
        m = mnt.display(),
        b = bin.display(),
        i = inner.display()
    );
    // unshare execs sh without forking, and sh execs the program: one pid throughout.
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn unshare");
    let pid = child.id();
    let ready = wait_until(Duration::from_secs(10), || {
        exe(pid) == inner.display().to_string()
    });
    let exe_now = exe(pid);
    if !ready {
        let _ = child.kill();
        let st = child.wait();
        panic!("the program did not start in its namespace: exe {exe_now:?}, {st:?}");
    }
    // The premise: this namespace cannot open the binary by the path its maps name.
    assert!(
        !inner.exists(),
        "{} must be visible only in the child's mount namespace",
        inner.display()
    );
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(maps.contains(&inner.display().to_string()), "{maps}");

    profile_and_check(&flame, pid);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn deleted_binary_is_symbolized() {
    let tmp = tempfile::tempdir().unwrap();
    let flame = tmp.path().join("flame");
    std::fs::create_dir(&flame).unwrap();
    let bin = compile(tmp.path(), "gg_ns_deleted", &hot_src(HOT, CALLER), CFLAGS);
    let work = Workload::start(&bin, &["30"]);
    let pid = work.pid();
    assert!(
        wait_until(Duration::from_secs(10), || exe(pid)
            == bin.display().to_string()),
        "program started: exe {:?}",
        exe(pid)
    );
    std::fs::remove_file(&bin).unwrap();
    std::fs::remove_file(tmp.path().join("gg_ns_deleted.c")).unwrap();
    assert!(
        exe(pid).ends_with(" (deleted)"),
        "exe after unlink: {:?}",
        exe(pid)
    );

    profile_and_check(&flame, pid);
    drop(work);
}

/// A process in a real podman container (its binary exists only in the container's image, a
/// static build so the image needs nothing else) is symbolized through `/proc/<pid>/root` and
/// `map_files`.
#[test]
fn process_in_a_podman_container_is_symbolized() {
    use container_info::podman::Podman;
    if !Podman::available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "podman and runc are needed (./build.sh --check installs them)"
        );
        eprintln!("NOTICE: podman or runc missing; container test skipped");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let mut flags = CFLAGS.to_vec();
    flags.push("-static");
    let bin = compile(tmp.path(), "gg_in_container", &hot_src(HOT, CALLER), &flags);
    std::fs::copy(&bin, rootfs.join("gg_in_container")).unwrap();
    let podman = Podman::new(&tmp.path().join("podman")).expect("podman dirs");
    podman
        .import_dir(&rootfs, "localhost/gg-stack:1")
        .expect("import the image");
    podman
        .run_detached(
            "gg-stack",
            &[],
            "localhost/gg-stack:1",
            &["/gg_in_container", "60"],
        )
        .expect("run the container");
    let pid = podman.pid("gg-stack").expect("container pid");
    // The binary is not in the host's file system: only the container's root holds it.
    assert!(!Path::new("/gg_in_container").exists());

    let flame = tmp.path().join("flame");
    std::fs::create_dir(&flame).unwrap();
    let mut probe = Probe::start(
        &["-P", "1"],
        &control_line(
            1,
            &format!(r#""flame_dir":"{}""#, flame.display()),
            Some(&[pid]),
        ),
    );
    probe.wait_log("stackprobe running", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(4));
    let log = probe.stop();
    let _ = podman.rm("gg-stack");

    let stacks = folded(&flame, "oncpu", pid);
    let hot: u64 = stacks
        .iter()
        .filter(|(f, _)| f.iter().any(|n| n == HOT))
        .map(|(_, v)| v)
        .sum();
    let total: u64 = stacks.iter().map(|(_, v)| v).sum();
    assert!(
        total > 0 && hot * 10 >= total * 8,
        "{hot} of {total} samples in {HOT}: {stacks:?}\n{log}"
    );
}
