//! Cgroup ids → containers.
//!
//! The BPF programs key their statistics by a cgroup id: the `kernfs_node` id of the task's
//! cgroup in one hierarchy ([`Mode`]), which is also the inode number of that cgroup's directory.
//! User space walks the same hierarchy ([`walk`]) to learn every cgroup's id and path, and names
//! the container a path belongs to with `container_info::cgroup::parse` (the parser of
//! `/proc/<pid>/cgroup` lines, given the path as a line of its own). A sub-cgroup of a container
//! (`…/libpod-<id>/init.scope`) belongs to it; the innermost container of a nested path wins.
//!
//! Which hierarchy ([`Layout::from_mountinfo`]): the v1 hierarchy of the `cpu` controller when
//! there is one (v1 and hybrid hosts: every runtime puts its containers there), else the v2
//! (unified) hierarchy. The other files read per container — PSI (v2 only), `cpuacct.usage` /
//! `cpu.stat`, the CFS quota — are looked up at the same cgroup path in their own hierarchy.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use container_info::host::unescape_octal as unescape;
use container_info::info::SHORT_ID_LEN;
use probe_sdk::decl::{Snoop, SnoopMode};

use crate::read;
use crate::skel::types::sli_cgrp_mode;

/// Cgroup directories walked per period; further ones are not looked at (counted).
pub const MAX_CGROUPS: usize = 65_536;
/// Deepest cgroup looked at below the mount point.
pub const MAX_DEPTH: usize = 32;
/// Cgroup mounts looked at in a mount table (a host has about 15).
const MAX_MOUNTS: usize = 64;
/// Containers reported (the first by id); further ones are counted.
pub const MAX_CONTAINERS: usize = 4096;

/// Which hierarchy's cgroup ids the BPF side reads (`enum sli_cgrp_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The task's cgroup in the v2 (unified) hierarchy.
    Dfl,
    /// The task's cgroup in the v1 hierarchy of the `cpu` controller.
    V1Cpu,
}

impl Mode {
    /// The value of `cgrp_mode` in `.rodata`.
    pub fn bpf_value(self) -> u32 {
        match self {
            Mode::Dfl => sli_cgrp_mode::SLI_CGRP_DFL.0,
            Mode::V1Cpu => sli_cgrp_mode::SLI_CGRP_V1_CPU.0,
        }
    }

    /// For the log.
    pub fn describe(self) -> &'static str {
        match self {
            Mode::Dfl => "cgroup v2 (unified) ids",
            Mode::V1Cpu => "cgroup v1 cpu ids",
        }
    }
}

/// One mounted hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted, as this process sees it (the host root prefix applied).
    pub dir: PathBuf,
    /// The cgroup shown at the mount point (`/` unless the mount is of a sub-cgroup).
    pub root: String,
}

impl Mount {
    /// The directory of the cgroup at `path` (a cgroup path such as `/docker/<id>`), or None
    /// when it is not under this mount's root or has `.` or `..` components.
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

    /// The cgroup path of directory `rel` below the mount point.
    fn cgroup_path(&self, rel: &str) -> String {
        let root = self.root.trim_end_matches('/');
        if rel.is_empty() {
            if root.is_empty() {
                "/".to_string()
            } else {
                root.to_string()
            }
        } else {
            format!("{root}/{rel}")
        }
    }
}

/// Where the hierarchies the probe reads are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Which ids the BPF side reads.
    pub mode: Mode,
    /// The hierarchy of those ids (walked every period).
    pub ids: Mount,
    /// The v2 hierarchy (PSI files; `cpu.stat` and `cpu.max` where no v1 hierarchy has them).
    pub unified: Option<Mount>,
    /// The v1 hierarchy of `cpuacct` (`cpuacct.usage`).
    pub cpuacct_v1: Option<Mount>,
    /// The v1 hierarchy of `cpu` (`cpu.cfs_quota_us`, `cpu.cfs_period_us`).
    pub cpu_v1: Option<Mount>,
}

impl Layout {
    /// The layout a `mountinfo` text describes; mount points are put under `host_root` (`/` on
    /// a host install). The first mount of a hierarchy wins (later ones are bind mounts). None
    /// when no cgroup hierarchy is mounted.
    pub fn from_mountinfo(text: &str, host_root: &Path) -> Option<Layout> {
        let mut unified: Option<Mount> = None;
        let mut v1: Vec<(Vec<String>, Mount)> = Vec::new();
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
            let mount = Mount {
                dir: container_info::host::join(host_root, Path::new(&unescape(point))),
                root: unescape(root),
            };
            if fstype == "cgroup2" {
                unified.get_or_insert(mount);
                continue;
            }
            let opts: Vec<String> = super_opts.split(',').map(str::to_string).collect();
            if !v1.iter().any(|(o, _)| *o == opts) {
                v1.push((opts, mount));
            }
        }
        let v1_of = |controller: &str| {
            v1.iter()
                .find(|(opts, _)| opts.iter().any(|o| o == controller))
                .map(|(_, m)| m.clone())
        };
        let cpu_v1 = v1_of("cpu");
        let cpuacct_v1 = v1_of("cpuacct");
        let (mode, ids) = match (&cpu_v1, &unified) {
            (Some(m), _) => (Mode::V1Cpu, m.clone()),
            (None, Some(u)) => (Mode::Dfl, u.clone()),
            (None, None) => return None,
        };
        Some(Layout {
            mode,
            ids,
            unified,
            cpuacct_v1,
            cpu_v1,
        })
    }

    /// The layout of the running host: on a host install this process's own mount table
    /// (`/proc/self/mountinfo`), under a host root prefix the host init's
    /// (`<root>/proc/1/mountinfo`), its mount points put under the prefix.
    pub fn of_host() -> Option<Layout> {
        use container_info::host;
        let mountinfo = if host::is_identity() {
            PathBuf::from("/proc/self/mountinfo")
        } else {
            host::path("/proc/1/mountinfo")
        };
        let text = read::bounded(&mountinfo, read::LARGE).ok()?;
        Layout::from_mountinfo(&text, host::root())
    }
}

/// One cgroup of the walked hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    /// Its id (`kernfs_node.id`, the directory's inode number).
    pub id: u64,
    /// Its cgroup path, e.g. `/libpod_parent/libpod-<id>`.
    pub path: String,
}

/// What one walk found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Walk {
    /// Every cgroup found, the root first.
    pub cgroups: Vec<Cgroup>,
    /// Directories left out by [`MAX_CGROUPS`] or [`MAX_DEPTH`]: the walk is incomplete.
    pub truncated: bool,
    /// Directories that could not be read (a cgroup removed meanwhile is not counted).
    pub errors: u64,
}

/// Walks the hierarchy mounted at `mount` (depth first, bounded by [`MAX_CGROUPS`] and
/// [`MAX_DEPTH`]); ids come from the directory entries (`d_ino`), no `stat` per cgroup.
pub fn walk(mount: &Mount) -> Walk {
    let mut w = Walk::default();
    match std::fs::metadata(&mount.dir) {
        Ok(m) => w.cgroups.push(Cgroup {
            id: m.ino(),
            path: mount.cgroup_path(""),
        }),
        Err(_) => {
            w.errors += 1;
            return w;
        }
    }
    // (relative path, depth)
    let mut stack: Vec<(String, usize)> = vec![(String::new(), 0)];
    while let Some((rel, depth)) = stack.pop() {
        let dir = if rel.is_empty() {
            mount.dir.clone()
        } else {
            mount.dir.join(&rel)
        };
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    w.errors += 1;
                }
                continue;
            }
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if depth + 1 > MAX_DEPTH || w.cgroups.len() >= MAX_CGROUPS {
                w.truncated = true;
                continue;
            }
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            w.cgroups.push(Cgroup {
                id: entry.ino(),
                path: mount.cgroup_path(&child),
            });
            stack.push((child, depth + 1));
        }
    }
    w
}

/// A container found in the hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Full id (64 hex digits).
    pub id: String,
    /// The first 12 hex digits: the `container_id` key.
    pub short_id: String,
    /// Its own cgroup: the path cut after the component that names it.
    pub path: String,
    /// Every cgroup path of the walked hierarchy that belongs to it, its own first if present.
    pub cgroups: Vec<String>,
}

/// The containers of one walk and which cgroup id belongs to which.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    /// By short id, at most [`MAX_CONTAINERS`].
    pub containers: BTreeMap<String, Container>,
    /// Containers left out by [`MAX_CONTAINERS`].
    pub over_cap: u64,
    owner: HashMap<u64, Option<String>>,
    /// Whether the walk saw every cgroup (only then can a missing id be called gone).
    complete: bool,
}

/// `path` up to the end of the component that holds `id`, or None if no component does.
pub fn cut_at_id<'a>(path: &'a str, id: &str) -> Option<&'a str> {
    let at = path.find(id)?;
    let end = path[at..].find('/').map_or(path.len(), |i| at + i);
    Some(&path[..end])
}

/// The container a cgroup path names, if any (`container_info::cgroup::parse` on the path as
/// a `/proc/<pid>/cgroup` line).
pub fn container_of_path(path: &str) -> Option<(String, String)> {
    let found = container_info::cgroup::parse(&format!("0::{path}\n"))?;
    let own = cut_at_id(path, &found.id)?.to_string();
    Some((found.id, own))
}

impl Directory {
    /// The directory of one walk.
    pub fn from_walk(walk: &Walk) -> Directory {
        let mut all: BTreeMap<String, Container> = BTreeMap::new();
        let mut owner = HashMap::with_capacity(walk.cgroups.len());
        for cg in &walk.cgroups {
            let Some((id, own)) = container_of_path(&cg.path) else {
                owner.insert(cg.id, None);
                continue;
            };
            let short: String = id.chars().take(SHORT_ID_LEN).collect();
            let c = all.entry(short.clone()).or_insert_with(|| Container {
                id: id.clone(),
                short_id: short.clone(),
                path: own.clone(),
                cgroups: Vec::new(),
            });
            if cg.path == c.path {
                c.cgroups.insert(0, cg.path.clone());
            } else {
                c.cgroups.push(cg.path.clone());
            }
            owner.insert(cg.id, Some(short));
        }
        let mut dir = Directory {
            complete: !walk.truncated && walk.errors == 0,
            ..Directory::default()
        };
        for (short, c) in all {
            if dir.containers.len() == MAX_CONTAINERS {
                dir.over_cap += 1;
                // Its cgroups still count for the node.
                continue;
            }
            dir.containers.insert(short, c);
        }
        dir.owner = owner
            .into_iter()
            .map(|(id, o)| (id, o.filter(|s| dir.containers.contains_key(s))))
            .collect();
        dir
    }

    /// The short id of the container cgroup `cgid` belongs to.
    pub fn container_of(&self, cgid: u64) -> Option<&str> {
        self.owner.get(&cgid)?.as_deref()
    }

    /// Whether cgroup `cgid` is known not to exist any more (the walk was complete and did not
    /// see it).
    pub fn is_gone(&self, cgid: u64) -> bool {
        self.complete && !self.owner.contains_key(&cgid)
    }
}

/// Whether `snoop` selects container `c`: one of the processes in its cgroups (read from
/// `cgroup.procs` under `ids`) is selected. Every container is selected without snoopers.
pub fn snoop_selects(snoop: &Snoop, ids: &Mount, c: &Container) -> bool {
    if snoop.mode == SnoopMode::All {
        return true;
    }
    for path in &c.cgroups {
        let Some(dir) = ids.dir_of(path) else {
            continue;
        };
        let Ok(text) = read::bounded(&dir.join("cgroup.procs"), read::LARGE) else {
            continue;
        };
        if text
            .lines()
            .filter_map(|l| l.trim().parse::<u32>().ok())
            .any(|pid| snoop.selects(pid))
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine kind: hybrid, cpu and cpuacct mounted apart, v2 at /sys/fs/cgroup/unified.
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    /// A systemd v1 host: combined cpu,cpuacct, no unified mount, a bind mount of it.
    const V1: &str = "\
25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct
30 25 0:27 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,memory
99 25 0:26 / /mnt/again rw,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct
";
    /// A pure v2 host.
    const V2: &str = "\
24 18 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn hybrid_reads_v1_cpu_ids_and_keeps_unified_for_psi() {
        let l = Layout::from_mountinfo(HYBRID, Path::new("/")).unwrap();
        assert_eq!(l.mode, Mode::V1Cpu);
        assert_eq!(l.ids.dir, PathBuf::from("/sys/fs/cgroup/cpu"));
        assert_eq!(
            l.unified.unwrap().dir,
            PathBuf::from("/sys/fs/cgroup/unified")
        );
        assert_eq!(
            l.cpuacct_v1.unwrap().dir,
            PathBuf::from("/sys/fs/cgroup/cpuacct")
        );
    }

    #[test]
    fn v1_combined_mount_under_a_host_root() {
        let l = Layout::from_mountinfo(V1, Path::new("/host")).unwrap();
        assert_eq!(l.mode, Mode::V1Cpu);
        assert_eq!(l.ids.dir, PathBuf::from("/host/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(l.cpuacct_v1, l.cpu_v1);
        assert!(l.unified.is_none());
    }

    #[test]
    fn pure_v2_reads_unified_ids() {
        let l = Layout::from_mountinfo(V2, Path::new("/")).unwrap();
        assert_eq!(l.mode, Mode::Dfl);
        assert_eq!(l.ids.dir, PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(l.unified.as_ref(), Some(&l.ids));
        assert!(l.cpu_v1.is_none() && l.cpuacct_v1.is_none());
        assert!(Layout::from_mountinfo("garbage\n", Path::new("/")).is_none());
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
        assert_eq!(m.dir_of("/kubepods/pod10/abc"), None);
        assert_eq!(m.cgroup_path(""), "/kubepods/pod1");
        assert_eq!(m.cgroup_path("x/y"), "/kubepods/pod1/x/y");
        let root = Mount {
            dir: "/sys/fs/cgroup".into(),
            root: "/".into(),
        };
        assert_eq!(root.dir_of("/../../etc"), None);
        assert_eq!(root.cgroup_path(""), "/");
        assert_eq!(root.cgroup_path("a"), "/a");
        assert_eq!(unescape(r"/mnt/my\040cgroup\134x"), "/mnt/my cgroup\\x");
        assert_eq!(unescape(r"\04"), r"\04");
    }

    #[test]
    fn paths_name_their_container() {
        let id = "0123456789abcdef".repeat(4);
        let (full, own) =
            container_of_path(&format!("/libpod_parent/libpod-{id}/init.scope")).unwrap();
        assert_eq!(full, id);
        assert_eq!(own, format!("/libpod_parent/libpod-{id}"));
        let (_, own) = container_of_path(&format!("/system.slice/docker-{id}.scope")).unwrap();
        assert_eq!(own, format!("/system.slice/docker-{id}.scope"));
        assert!(container_of_path("/system.slice/sshd.service").is_none());
        assert!(container_of_path("/").is_none());
        assert!(container_of_path(&format!("/libpod_parent/libpod-conmon-{id}")).is_none());
    }
}
