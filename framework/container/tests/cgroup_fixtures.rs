//! Data-driven: every `tests/fixtures/cgroup/<name>.cgroup` (a `/proc/<pid>/cgroup` text) parses
//! to what `<name>.expected` says (`none`, or `id=`, `runtime=`, `pod_uid=`, `cgroup_path=`
//! lines; `#` lines are comments).

use container_info::cgroup::{self, ContainerRef};
use std::path::Path;

fn render(r: Option<&ContainerRef>) -> String {
    match r {
        None => "none\n".to_string(),
        Some(r) => format!(
            "id={}\nruntime={:?}\npod_uid={}\ncgroup_path={}\n",
            r.id,
            r.runtime,
            r.pod_uid.as_deref().unwrap_or(""),
            r.cgroup_path
        ),
    }
}

fn expected(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn every_fixture_parses_as_expected() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cgroup");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".cgroup").map(str::to_string)
        })
        .collect();
    names.sort();
    // Every shape the parser promises has a fixture.
    for must in [
        "podman_cgroupfs_hybrid_this_machine",
        "host_hybrid_this_machine",
        "docker_cgroupfs_v1",
        "docker_systemd_v2",
        "docker_systemd_hybrid",
        "k8s_containerd_systemd_v2_burstable",
        "k8s_cgroupfs_v1_burstable",
        "k8s_crio_systemd_v2",
        "k8s_crio_conmon_v2",
        "podman_systemd_v2_container",
        "podman_cgroupfs_v2",
        "isulad_cgroupfs_v1",
    ] {
        assert!(names.iter().any(|n| n == must), "fixture {must} missing");
    }
    let mut failures = Vec::new();
    for name in &names {
        let text = std::fs::read_to_string(dir.join(format!("{name}.cgroup"))).unwrap();
        let want = std::fs::read_to_string(dir.join(format!("{name}.expected")))
            .unwrap_or_else(|_| panic!("{name}.expected missing"));
        let got = render(cgroup::parse(&text).as_ref());
        if got != expected(&want) {
            failures.push(format!(
                "{name}:\n--- want\n{}--- got\n{got}",
                expected(&want)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_real_podman_line_names_the_podman_runtime_in_every_hierarchy() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cgroup");
    let text =
        std::fs::read_to_string(dir.join("podman_cgroupfs_hybrid_this_machine.cgroup")).unwrap();
    let r = cgroup::parse(&text).unwrap();
    // Each line alone names the same container.
    for line in text.lines() {
        let one = cgroup::parse(line).unwrap_or_else(|| panic!("{line}"));
        assert_eq!(one.id, r.id);
        assert_eq!(one.runtime, cgroup::Runtime::Podman);
    }
}

#[test]
fn read_pid_of_this_test_is_a_host_process_and_a_gone_pid_is_an_error() {
    // The test runs on the host (not in a container): its own cgroup names no container.
    let own = cgroup::read_pid(std::process::id()).unwrap();
    assert_eq!(
        own,
        None,
        "{:?}",
        std::fs::read_to_string("/proc/self/cgroup")
    );
    // pid_max is at most 2^22: this pid never exists.
    assert!(cgroup::read_pid(u32::MAX - 1).is_err());
}
