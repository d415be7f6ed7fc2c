//! Where the probe reads host state: every path goes through the host root
//! (`container_info::host`, upstream's `GOPHER_HOST_PATH`); tests point them at fixture trees.

use std::path::{Path, PathBuf};

use crate::cgroup_files::DevNum;

/// Roots of the files the probe reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    /// The host's `/` as this process sees it: mount points of `mountinfo` and `/sys` go under it.
    pub root: PathBuf,
    /// The host's procfs.
    pub proc: PathBuf,
    /// The mount table naming the cgroup mounts.
    pub mountinfo: PathBuf,
    /// Network namespaces that stand for the host's, first readable wins: the host's init
    /// (`/proc/1/ns/net`), else this process's own (the probe runs in the host netns; reading
    /// init's link needs ptrace rights over it, which a root without every capability lacks).
    pub host_netns: Vec<PathBuf>,
}

impl HostPaths {
    /// The real host. On a host install (root `/`) the mount table is this process's own
    /// (`/proc/self/mountinfo`: its mount points are the paths it can open); under a host root
    /// prefix it is the host init's (`<root>/proc/1/mountinfo`), its mount points put under the
    /// prefix.
    pub fn host() -> HostPaths {
        use container_info::host;
        let mountinfo = if host::is_identity() {
            PathBuf::from("/proc/self/mountinfo")
        } else {
            host::path("/proc/1/mountinfo")
        };
        HostPaths {
            root: host::root().to_path_buf(),
            proc: host::path("/proc"),
            mountinfo,
            host_netns: vec![
                host::path("/proc/1/ns/net"),
                PathBuf::from("/proc/self/ns/net"),
            ],
        }
    }

    /// A captured tree under `dir`: `proc/`, `proc/self/mountinfo` (mount points under `dir`),
    /// `sys/`, and `proc/1/ns/net` as the host's netns (a file: same inode = same netns).
    pub fn fixture(dir: &Path) -> HostPaths {
        HostPaths {
            root: dir.to_path_buf(),
            proc: dir.join("proc"),
            mountinfo: dir.join("proc/self/mountinfo"),
            host_netns: vec![dir.join("proc/1/ns/net")],
        }
    }

    /// `<proc>/<pid>/<name>`.
    pub fn pid_file(&self, pid: u32, name: &str) -> PathBuf {
        self.proc.join(pid.to_string()).join(name)
    }

    /// `/proc/stat`.
    pub fn proc_stat(&self) -> PathBuf {
        self.proc.join("stat")
    }

    /// `/sys/dev/block/<major:minor>/uevent`.
    pub fn block_uevent(&self, dev: DevNum) -> PathBuf {
        container_info::host::join(&self.root, Path::new("/sys/dev/block"))
            .join(dev.to_string())
            .join("uevent")
    }
}
