//! Where the cgroup hierarchies are mounted (from a `mountinfo` file), and which directory holds
//! a container's files for each controller: the v1 hierarchy a controller is bound to when it
//! is bound to one (v1 and hybrid hosts), else the v2 (unified) hierarchy.

use std::path::{Component, Path, PathBuf};

use container_info::host::unescape_octal as unescape;

use crate::proc_files::CgroupLine;

/// Cgroup mounts looked at (a host has about 15; bind mounts of them are skipped).
const MAX_MOUNTS: usize = 64;

/// One mounted hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted, as this process sees it (the host root prefix applied).
    pub dir: PathBuf,
    /// The cgroup shown at the mount point (`/` unless the mount is of a sub-cgroup, as in a
    /// cgroup namespace).
    pub root: String,
}

impl Mount {
    /// The directory of the cgroup at `path` (a path of a `/proc/<pid>/cgroup` line), or None
    /// when the cgroup is not under this mount's root or the path has `.` or `..` components.
    pub fn dir_of(&self, path: &str) -> Option<PathBuf> {
        let rel = if self.root == "/" {
            path
        } else if path == self.root {
            ""
        } else {
            path.strip_prefix(self.root.as_str())?.strip_prefix('/')?
        };
        let rel = Path::new(rel.trim_start_matches('/'));
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return None;
        }
        Some(self.dir.join(rel))
    }
}

/// The cgroup hierarchies of a host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hierarchies {
    /// The v2 (unified) hierarchy: `/sys/fs/cgroup` on v2 hosts, `/sys/fs/cgroup/unified` on
    /// hybrid ones.
    pub unified: Option<Mount>,
    /// The v1 hierarchies with their mount options (controllers among them).
    pub v1: Vec<(Vec<String>, Mount)>,
}

impl Hierarchies {
    /// The cgroup mounts of a `mountinfo` text; mount points are put under `host_root` (`/` on a
    /// host install). The first mount of a hierarchy wins (later ones are bind mounts).
    pub fn from_mountinfo(text: &str, host_root: &Path) -> Hierarchies {
        let mut h = Hierarchies::default();
        let mut seen = 0;
        for line in text.lines() {
            // id parent major:minor root mount-point options [optional…] - fstype source super-options
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mut right = right.split_ascii_whitespace();
            let (Some(fstype), Some(_source), Some(super_opts)) =
                (right.next(), right.next(), right.next())
            else {
                continue;
            };
            if fstype != "cgroup" && fstype != "cgroup2" {
                continue;
            }
            let left: Vec<&str> = left.split_ascii_whitespace().collect();
            let (Some(root), Some(point)) = (left.get(3), left.get(4)) else {
                continue;
            };
            seen += 1;
            if seen > MAX_MOUNTS {
                break;
            }
            let point = unescape(point);
            let mount = Mount {
                dir: container_info::host::join(host_root, Path::new(&point)),
                root: unescape(root),
            };
            if fstype == "cgroup2" {
                if h.unified.is_none() {
                    h.unified = Some(mount);
                }
                continue;
            }
            let opts: Vec<String> = super_opts.split(',').map(str::to_string).collect();
            if !h.v1.iter().any(|(o, _)| *o == opts) {
                h.v1.push((opts, mount));
            }
        }
        h
    }

    /// The v1 hierarchy `controller` is bound to, if any.
    pub fn v1_mount(&self, controller: &str) -> Option<&Mount> {
        self.v1
            .iter()
            .find(|(opts, _)| opts.iter().any(|o| o == controller))
            .map(|(_, m)| m)
    }

    /// Where a container's files of `controller` are, given the cgroup lines of one of its
    /// processes (each cut to the container's own cgroup).
    pub fn source(&self, controller: &str, lines: &[CgroupLine<'_>]) -> Option<Source> {
        if let Some(m) = self.v1_mount(controller) {
            let line = lines.iter().find(|l| l.has(controller))?;
            return m.dir_of(line.path).map(Source::V1);
        }
        self.unified_dir(lines).map(Source::V2)
    }

    /// The container's directory in the v2 hierarchy (PSI files live there on hybrid hosts too).
    pub fn unified_dir(&self, lines: &[CgroupLine<'_>]) -> Option<PathBuf> {
        let m = self.unified.as_ref()?;
        let line = lines.iter().find(|l| l.is_unified())?;
        m.dir_of(line.path)
    }
}

/// The directory holding a controller's files, and which version's files they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A v1 hierarchy's directory.
    V1(PathBuf),
    /// The v2 hierarchy's directory.
    V2(PathBuf),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proc_files::cgroup_lines;

    /// This machine kind: hybrid, cpu and cpuacct mounted apart, v2 at /sys/fs/cgroup/unified.
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    /// A systemd v1 host: combined cpu,cpuacct with symlinks, no unified mount.
    const V1: &str = "\
25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct
30 25 0:27 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,memory
31 25 0:28 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,pids
32 25 0:29 / /sys/fs/cgroup/blkio rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,blkio
99 25 0:26 / /mnt/again rw,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct
";
    /// A pure v2 host.
    const V2: &str = "\
24 18 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn hybrid_binds_controllers_to_v1_and_keeps_unified() {
        let h = Hierarchies::from_mountinfo(HYBRID, Path::new("/"));
        assert_eq!(
            h.unified.as_ref().unwrap().dir,
            PathBuf::from("/sys/fs/cgroup/unified")
        );
        assert_eq!(
            h.v1_mount("cpuacct").unwrap().dir,
            PathBuf::from("/sys/fs/cgroup/cpuacct")
        );
        assert!(h.v1_mount("systemd").is_none());
        let text = "2:cpuacct:/libpod_parent/libpod-1\n1:cpu:/libpod_parent/libpod-1\n\
                    4:memory:/libpod_parent/libpod-1\n0::/libpod_parent/libpod-1\n";
        let lines = cgroup_lines(text);
        assert_eq!(
            h.source("memory", &lines),
            Some(Source::V1(
                "/sys/fs/cgroup/memory/libpod_parent/libpod-1".into()
            ))
        );
        // pids is bound to v1 but this process has no pids line: no source, not the v2 dir.
        assert_eq!(h.source("pids", &lines), None);
        assert_eq!(
            h.unified_dir(&lines),
            Some("/sys/fs/cgroup/unified/libpod_parent/libpod-1".into())
        );
    }

    #[test]
    fn v1_combined_mounts_and_host_root() {
        let h = Hierarchies::from_mountinfo(V1, Path::new("/host"));
        assert!(h.unified.is_none());
        assert_eq!(h.v1.len(), 4, "the bind mount of cpu,cpuacct is skipped");
        let lines = cgroup_lines("3:cpu,cpuacct:/docker/abc\n");
        assert_eq!(
            h.source("cpu", &lines),
            Some(Source::V1(
                "/host/sys/fs/cgroup/cpu,cpuacct/docker/abc".into()
            ))
        );
        assert_eq!(h.source("cpuacct", &lines), h.source("cpu", &lines));
        assert_eq!(h.unified_dir(&lines), None);
    }

    #[test]
    fn pure_v2_uses_the_unified_dir_for_everything() {
        let h = Hierarchies::from_mountinfo(V2, Path::new("/"));
        let lines = cgroup_lines("0::/system.slice/docker-abc.scope\n");
        for c in ["cpu", "cpuacct", "memory", "pids", "blkio", "io"] {
            assert_eq!(
                h.source(c, &lines),
                Some(Source::V2(
                    "/sys/fs/cgroup/system.slice/docker-abc.scope".into()
                )),
                "{c}"
            );
        }
    }

    #[test]
    fn mount_roots_and_hostile_paths() {
        let m = Mount {
            dir: "/sys/fs/cgroup".into(),
            root: "/kubepods/pod1".into(),
        };
        assert_eq!(
            m.dir_of("/kubepods/pod1/abc"),
            Some("/sys/fs/cgroup/abc".into())
        );
        assert_eq!(m.dir_of("/kubepods/pod1"), Some("/sys/fs/cgroup".into()));
        assert_eq!(m.dir_of("/kubepods/pod10/abc"), None);
        assert_eq!(m.dir_of("/other"), None);
        let root = Mount {
            dir: "/sys/fs/cgroup".into(),
            root: "/".into(),
        };
        assert_eq!(root.dir_of("/../../etc"), None);
        assert_eq!(root.dir_of("/a/./b"), Some("/sys/fs/cgroup/a/b".into()));
        assert_eq!(unescape(r"/mnt/my\040cgroup\134x"), "/mnt/my cgroup\\x");
        assert_eq!(unescape(r"\04"), r"\04");
    }
}
