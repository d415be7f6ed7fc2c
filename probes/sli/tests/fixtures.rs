//! Parsers and the cgroup directory on fixtures: captured PSI files and mount tables
//! (`tests/fixtures/`), and a cgroup tree of every runtime's path shapes built in a temp dir,
//! whose directory inodes stand for the cgroup ids the BPF side reads.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sliprobe::cgroups::{self, Directory, Layout, Mode, Mount};
use sliprobe::psi;

fn fixture(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn pressure_files() {
    let p = psi::parse(&fixture("pressure/node_io.pressure")).unwrap();
    assert_eq!((p.some_us, p.full_us), (29_987_062, Some(23_850_107)));
    let idle = psi::parse(&fixture("pressure/cgroup_memory_idle.pressure")).unwrap();
    assert_eq!((idle.some_us, idle.full_us), (0, Some(0)));
    let old = psi::parse(&fixture("pressure/cpu_before_5.13.pressure")).unwrap();
    assert_eq!((old.some_us, old.full_us), (123_945_979, None));
    assert_eq!(psi::parse(&fixture("pressure/broken.pressure")), None);
    let stall = p.since(&idle).unwrap();
    assert_eq!(stall.some_ns, 29_987_062_000);
}

#[test]
fn mount_tables() {
    let hybrid =
        Layout::from_mountinfo(&fixture("mountinfo/hybrid_this_machine"), Path::new("/")).unwrap();
    assert_eq!(hybrid.mode, Mode::V1Cpu);
    assert_eq!(hybrid.ids.dir, PathBuf::from("/sys/fs/cgroup/cpu"));
    assert_eq!(
        hybrid.unified.as_ref().map(|m| m.dir.clone()),
        Some(PathBuf::from("/sys/fs/cgroup/unified"))
    );
    let v1 = Layout::from_mountinfo(&fixture("mountinfo/v1_systemd"), Path::new("/")).unwrap();
    assert_eq!(v1.mode, Mode::V1Cpu);
    assert_eq!(v1.ids.dir, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
    assert!(v1.unified.is_none(), "no PSI per container on pure v1");
    let v2 = Layout::from_mountinfo(&fixture("mountinfo/v2_systemd"), Path::new("/")).unwrap();
    assert_eq!(v2.mode, Mode::Dfl);
    // A cgroup namespace shows a sub-cgroup at the mount point: paths keep the full prefix.
    let ns =
        Layout::from_mountinfo(&fixture("mountinfo/cgroupns_container"), Path::new("/")).unwrap();
    assert_eq!(ns.ids.root, "/kubepods/burstable/pod0a1b2c3d");
    assert_eq!(
        ns.ids.dir_of("/kubepods/burstable/pod0a1b2c3d/abc"),
        Some(PathBuf::from("/sys/fs/cgroup/abc"))
    );
}

const DOCKER: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const PODMAN: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const CRI: &str = "3333333333333333333333333333333333333333333333333333333333333333";
const INNER: &str = "4444444444444444444444444444444444444444444444444444444444444444";

#[test]
fn cgroup_tree_maps_ids_to_containers() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let paths = [
        "system.slice/sshd.service".to_string(),
        format!("system.slice/docker-{DOCKER}.scope"),
        format!("libpod_parent/libpod-{PODMAN}"),
        format!("libpod_parent/libpod-{PODMAN}/init.scope"),
        format!("libpod_parent/libpod-conmon-{PODMAN}"),
        format!("kubepods/burstable/pod0a1b2c3d-0000-4000-8000-000000000001/{CRI}"),
        // docker in docker: the innermost container wins.
        format!("system.slice/docker-{DOCKER}.scope/docker/{INNER}"),
    ];
    for p in &paths {
        std::fs::create_dir_all(root.join(p)).unwrap();
    }
    // Files are not cgroups.
    std::fs::write(root.join("cgroup.procs"), "1\n").unwrap();
    let mount = Mount {
        dir: root.to_path_buf(),
        root: "/".into(),
    };
    let walk = cgroups::walk(&mount);
    assert!(!walk.truncated && walk.errors == 0);
    let ino = |p: &str| std::fs::metadata(root.join(p)).unwrap().ino();
    let by_path: BTreeMap<&str, u64> = walk
        .cgroups
        .iter()
        .map(|c| (c.path.as_str(), c.id))
        .collect();
    assert_eq!(by_path["/"], std::fs::metadata(root).unwrap().ino());
    assert_eq!(
        by_path[format!("/libpod_parent/libpod-{PODMAN}").as_str()],
        ino(&paths[2])
    );
    // Every directory: the root, the 7 paths and the 6 parents they add (system.slice,
    // libpod_parent, kubepods, burstable, pod…, docker-….scope/docker).
    assert_eq!(walk.cgroups.len(), 1 + paths.len() + 6);

    let d = Directory::from_walk(&walk);
    let ids: Vec<&str> = d.containers.keys().map(String::as_str).collect();
    assert_eq!(
        ids,
        [
            "111111111111",
            "222222222222",
            "333333333333",
            "444444444444"
        ]
    );
    assert_eq!(d.container_of(ino(&paths[0])), None, "a host service");
    assert_eq!(d.container_of(ino(&paths[1])), Some("111111111111"));
    assert_eq!(
        d.container_of(ino(&paths[3])),
        Some("222222222222"),
        "sub-cgroup"
    );
    assert_eq!(
        d.container_of(ino(&paths[4])),
        None,
        "conmon is not the container"
    );
    assert_eq!(d.container_of(ino(&paths[5])), Some("333333333333"));
    assert_eq!(d.container_of(ino(&paths[6])), Some("444444444444"));
    let podman = &d.containers["222222222222"];
    assert_eq!(podman.path, format!("/libpod_parent/libpod-{PODMAN}"));
    assert_eq!(
        podman.cgroups,
        [
            format!("/libpod_parent/libpod-{PODMAN}"),
            format!("/libpod_parent/libpod-{PODMAN}/init.scope")
        ]
    );
    assert!(!d.is_gone(ino(&paths[0])));
    assert!(d.is_gone(u64::MAX), "a complete walk did not see it");
}
