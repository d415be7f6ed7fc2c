//! The podman test helper itself: an isolated podman runs a container whose pid is a host pid.
#![cfg(feature = "podman")]

use container_info::podman::Podman;

#[test]
fn runs_a_container_in_its_own_storage() {
    assert!(
        Podman::available(),
        "podman and runc are needed (./build.sh --check installs them)"
    );
    let dir = tempfile::tempdir().unwrap();
    let p = Podman::new(dir.path()).unwrap();
    p.import_busybox("localhost/busy:1").unwrap();
    let id = p
        .run_detached("smoke", &[], "localhost/busy:1", &["/bin/sleep", "60"])
        .unwrap();
    assert_eq!(id.len(), 64, "{id}");
    let pid = p.pid("smoke").unwrap();
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(cg.contains(&id), "{cg}");
    p.rm("smoke").unwrap();
}
