//! `system_df`: mounted filesystems from the mount table, sizes from `statvfs(2)` (what `df`
//! and `df -i` print).
//!
//! The mount table is the host's: `/proc/1/mountinfo`, PID 1's mount namespace, with each
//! mount point queried through `/proc/1/root`. A hardened service unit (`ProtectSystem=`,
//! `ProtectHome=`, `PrivateTmp=`) gives the probe a private namespace with read-only bind
//! remounts and extra tmpfs mounts, which users do not want to see. When those files cannot be
//! read (no `CAP_SYS_PTRACE`, another user), the probe says so once and describes its own
//! namespace (`/proc/self/mounts`, paths as they are) from then on ([`MountView`]).
//!
//! Skipped: kernel pseudo filesystems ([`PSEUDO_FS`]), read-only images that are always full
//! (squashfs, iso9660), filesystems reporting 0 blocks (as `df` does), and, unless
//! `--df-remote` is given, network and FUSE filesystems ([`REMOTE_FS`]) whose `statvfs` can
//! block for minutes when the server is gone. With `--df-remote` they are queried on a helper
//! thread with a timeout; a mount whose call hangs is skipped until that call returns.
//! A mount point mounted several times is reported once (the last, visible mount).

use crate::events::Events;
use crate::schema;
use crate::source::{HostPaths, Reader};
use crate::value::{percent, Fixed2};
use probe_sdk::record::RecordWriter;
use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use container_info::host::unescape_octal;

/// Kernel interfaces and images that hold no user data.
pub const PSEUDO_FS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nsfs",
    "proc",
    "pstore",
    "ramfs",
    "rootfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tracefs",
];

/// Filesystems whose `statvfs` may block on a remote server or a user-space daemon.
pub const REMOTE_FS: &[&str] = &[
    "9p",
    "afs",
    "ceph",
    "cifs",
    "fuse",
    "glusterfs",
    "gpfs",
    "lustre",
    "ncpfs",
    "nfs",
    "nfs4",
    "smb3",
    "smbfs",
    "sshfs",
];

fn is_remote(fstype: &str) -> bool {
    REMOTE_FS.contains(&fstype) || fstype.starts_with("fuse.")
}

/// One line of the mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Device or source.
    pub source: String,
    /// Mount point, octal escapes decoded.
    pub target: String,
    /// Filesystem type.
    pub fstype: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Largest mount table read, in bytes; lines past it are left out (and counted as a read
/// error). Mount table lines are 100 to 300 bytes: this is tens of thousands of mounts.
pub const MAX_MOUNT_TABLE_BYTES: usize = 8 << 20;

/// Parses a `/proc/<pid>/mountinfo` mount table:
/// `id parent major:minor root mount-point mount-options [optional fields…] - fstype source
/// super-options`. Read-only when the mount or its filesystem is (`ro` in either options
/// field), as `/proc/self/mounts` shows it. Malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            let mut m = mount.split_ascii_whitespace().skip(4);
            let (target, mount_opts) = (m.next()?, m.next()?);
            let mut f = fs.split_ascii_whitespace();
            let (fstype, source) = (f.next()?, f.next()?);
            let super_opts = f.next().unwrap_or("");
            let ro = |opts: &str| opts.split(',').any(|o| o == "ro");
            Some(Mount {
                source: unescape_octal(source),
                target: unescape_octal(target),
                fstype: unescape_octal(fstype),
                read_only: ro(mount_opts) || ro(super_opts),
            })
        })
        .collect()
}

/// Where to `statvfs` the mount point `target` of the namespace whose root is `root`
/// (`/proc/<pid>/root`). `None` when `target` is not absolute or has a `..` component, which
/// could lead out of `root`.
pub fn path_in_root(root: &Path, target: &str) -> Option<PathBuf> {
    let mut comps = Path::new(target).components();
    if comps.next() != Some(Component::RootDir) {
        return None;
    }
    let mut path = root.to_path_buf();
    for c in comps {
        match c {
            Component::Normal(name) => path.push(name),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) | Component::ParentDir => return None,
        }
    }
    Some(path)
}

/// Which mount namespace `system_df` describes: another process's (`HostPaths::mount_ns`,
/// PID 1's) while it can be read, else, after one warning, the probe's own for good.
#[derive(Debug, Default)]
pub struct MountView {
    /// The other namespace was read once: later failures are ordinary read errors.
    checked: bool,
    /// It could not be read at first: the probe's own namespace is described.
    own: bool,
}

/// The mounts of one cycle, and the root their mount points are relative to.
struct MountTable {
    mounts: Vec<Mount>,
    /// `/proc/<pid>/root` of another namespace; `None`: the probe's own.
    root: Option<PathBuf>,
}

impl MountView {
    /// Reads the mount table this cycle describes; `None` (counted) when it cannot be read.
    fn read(&mut self, paths: &HostPaths, r: &mut Reader) -> Option<MountTable> {
        if let (Some(ns), false) = (&paths.mount_ns, self.own) {
            let (info, root) = (ns.join("mountinfo"), ns.join("root"));
            if self.checked {
                let mounts = parse_mountinfo(r.read_bounded(&info, MAX_MOUNT_TABLE_BYTES)?);
                return Some(MountTable {
                    mounts,
                    root: Some(root),
                });
            }
            let usable = crate::source::read_bounded_into(&info, &mut r.buf, MAX_MOUNT_TABLE_BYTES)
                .and_then(|_| std::fs::metadata(&root).map(|_| ()));
            match usable {
                Ok(()) => {
                    self.checked = true;
                    // Read again through the counting path (a cut table is reported there).
                    return self.read(paths, r);
                }
                Err(e) => {
                    probe_sdk::warn!(
                        "system_df: cannot read the mount namespace of {} ({e}); reporting the \
                         probe's own mounts ({}) instead, which a service's private namespace \
                         changes",
                        ns.display(),
                        paths.mounts.display()
                    );
                    self.own = true;
                }
            }
        }
        let mounts = parse_mounts(r.read_bounded(&paths.mounts, MAX_MOUNT_TABLE_BYTES)?);
        Some(MountTable { mounts, root: None })
    }
}

/// Parses a `/proc/self/mounts` (fstab-format) mount table.
pub fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut cols = line.split_ascii_whitespace();
            let (source, target, fstype, opts) =
                (cols.next()?, cols.next()?, cols.next()?, cols.next()?);
            Some(Mount {
                source: unescape_octal(source),
                target: unescape_octal(target),
                fstype: fstype.to_string(),
                read_only: opts.split(',').any(|o| o == "ro"),
            })
        })
        .collect()
}

/// Mounts worth reporting, in mount-table order, one per mount point (the last one wins).
pub fn select_mounts(mounts: Vec<Mount>, include_remote: bool) -> Vec<Mount> {
    let mut last: HashMap<String, usize> = HashMap::new();
    for (i, m) in mounts.iter().enumerate() {
        last.insert(m.target.clone(), i);
    }
    mounts
        .into_iter()
        .enumerate()
        .filter(|(i, m)| last.get(&m.target) == Some(i))
        .map(|(_, m)| m)
        .filter(|m| !PSEUDO_FS.contains(&m.fstype.as_str()))
        .filter(|m| include_remote || !is_remote(&m.fstype))
        .collect()
}

/// The `statvfs` figures used, in bytes-per-unit `frsize` blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FsUsage {
    /// Fragment size (the unit of the block counts).
    pub frsize: u64,
    /// Total blocks.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Blocks available to unprivileged users.
    pub bavail: u64,
    /// Total inodes.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
}

/// Where filesystem sizes come from: `statvfs(2)` live, a captured table in fixture tests.
pub trait StatFs {
    /// Sizes of the filesystem mounted at `mount`, reached at `path` (its mount point, or
    /// that under another namespace's root); `Ok(None)` when the call timed out.
    fn statvfs(&mut self, mount: &Mount, path: &Path) -> io::Result<Option<FsUsage>>;
}

fn statvfs_now(path: &Path) -> io::Result<FsUsage> {
    let s = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    // The libc field widths differ between targets; these conversions are lossless widenings.
    #[allow(clippy::useless_conversion)]
    let frsize = u64::from(s.fragment_size());
    #[allow(clippy::useless_conversion)]
    let bsize = u64::from(s.block_size());
    #[allow(clippy::useless_conversion)]
    Ok(FsUsage {
        frsize: if frsize > 0 { frsize } else { bsize },
        blocks: u64::from(s.blocks()),
        bfree: u64::from(s.blocks_free()),
        bavail: u64::from(s.blocks_available()),
        files: u64::from(s.files()),
        ffree: u64::from(s.files_free()),
    })
}

/// Live `statvfs(2)`; remote filesystems go through a helper thread with a timeout.
#[derive(Debug)]
pub struct SyscallStatFs {
    timeout: Duration,
    /// Mount points whose call has not returned yet, with the channel it will answer on.
    hung: HashMap<String, mpsc::Receiver<io::Result<FsUsage>>>,
}

impl SyscallStatFs {
    /// A source whose remote calls give up after `timeout`.
    pub fn new(timeout: Duration) -> SyscallStatFs {
        SyscallStatFs {
            timeout,
            hung: HashMap::new(),
        }
    }
}

impl StatFs for SyscallStatFs {
    fn statvfs(&mut self, m: &Mount, path: &Path) -> io::Result<Option<FsUsage>> {
        if !is_remote(&m.fstype) {
            return statvfs_now(path).map(Some);
        }
        if let Some(rx) = self.hung.get(&m.target) {
            match rx.try_recv() {
                Err(mpsc::TryRecvError::Empty) => return Ok(None),
                // The stuck call finished: forget it and ask afresh below.
                _ => {
                    self.hung.remove(&m.target);
                }
            }
        }
        let (tx, rx) = mpsc::channel();
        let path = path.to_path_buf();
        std::thread::Builder::new()
            .name("statvfs".into())
            .spawn(move || {
                let _ = tx.send(statvfs_now(&path));
            })?;
        match rx.recv_timeout(self.timeout) {
            Ok(res) => res.map(Some),
            Err(_) => {
                probe_sdk::warn!(
                    "statvfs({}) did not return within {:?}; skipping it",
                    m.target,
                    self.timeout
                );
                self.hung.insert(m.target.clone(), rx);
                Ok(None)
            }
        }
    }
}

/// Sizes captured from a real machine, one line per mount point:
/// `<mount point> <frsize> <blocks> <bfree> <bavail> <files> <ffree>`.
#[derive(Debug, Default, Clone)]
pub struct TableStatFs(pub HashMap<String, FsUsage>);

impl TableStatFs {
    /// Parses the captured table.
    pub fn parse(text: &str) -> TableStatFs {
        let mut map = HashMap::new();
        for line in text.lines() {
            let cols: Vec<&str> = line.split_ascii_whitespace().collect();
            let nums: Vec<u64> = cols.iter().skip(1).filter_map(|c| c.parse().ok()).collect();
            if let (Some(target), [frsize, blocks, bfree, bavail, files, ffree]) =
                (cols.first(), nums.as_slice())
            {
                map.insert(
                    unescape_octal(target),
                    FsUsage {
                        frsize: *frsize,
                        blocks: *blocks,
                        bfree: *bfree,
                        bavail: *bavail,
                        files: *files,
                        ffree: *ffree,
                    },
                );
            }
        }
        TableStatFs(map)
    }
}

impl StatFs for TableStatFs {
    /// Looks the mount point up; `path` is not used.
    fn statvfs(&mut self, m: &Mount, _path: &Path) -> io::Result<Option<FsUsage>> {
        self.0
            .get(&m.target)
            .copied()
            .map(Some)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
}

/// `df` figures in kB and percent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DfFigures {
    /// Total size, 1K blocks.
    pub blocks_kb: u64,
    /// Used, kB.
    pub used_kb: u64,
    /// Available to unprivileged users, kB.
    pub avail_kb: u64,
    /// Used / (Used + Avail) × 100.
    pub use_pct: f64,
    /// Inodes in use.
    pub iused: u64,
    /// Inode use percentage.
    pub iuse_pct: f64,
}

/// Computes what `df` and `df -i` print.
pub fn df(u: &FsUsage) -> DfFigures {
    let kb = |blocks: u64| (u128::from(blocks) * u128::from(u.frsize) / 1024) as u64;
    let used_kb = kb(u.blocks.saturating_sub(u.bfree));
    let avail_kb = kb(u.bavail);
    let iused = u.files.saturating_sub(u.ffree);
    DfFigures {
        blocks_kb: kb(u.blocks),
        used_kb,
        avail_kb,
        use_pct: percent(used_kb as f64, (used_kb + avail_kb) as f64),
        iused,
        iuse_pct: percent(iused as f64, u.files as f64),
    }
}

/// Reads the mount table `view` describes and writes one `system_df` record per selected
/// filesystem.
pub fn write<W: Write>(
    paths: &HostPaths,
    view: &mut MountView,
    r: &mut Reader,
    statfs: &mut dyn StatFs,
    include_remote: bool,
    out: &mut RecordWriter<W>,
    events: &mut Events,
) -> io::Result<()> {
    let Some(table) = view.read(paths, r) else {
        return Ok(());
    };
    for m in select_mounts(table.mounts, include_remote) {
        let path = match &table.root {
            None => PathBuf::from(&m.target),
            Some(root) => match path_in_root(root, &m.target) {
                Some(p) => p,
                None => {
                    let what = "mount point is not a plain absolute path";
                    r.errors.failed(Path::new(&m.target), &what);
                    continue;
                }
            },
        };
        let usage = match statfs.statvfs(&m, &path) {
            Ok(Some(u)) => u,
            Ok(None) => continue,
            // Unmounted between reading the table and the call: not an error.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                r.errors.failed(std::path::Path::new(&m.target), &e);
                continue;
            }
        };
        if usage.blocks == 0 {
            continue;
        }
        let f = df(&usage);
        events.check_pct("fs", &m.target, "IUsePer", f.iuse_pct, |p| {
            format!("Too many Inodes consumed({p:.2}%).")
        });
        events.check_pct("fs", &m.target, "UsePer", f.use_pct, |p| {
            format!("Too many Blocks used({p:.2}%).")
        });
        out.record(schema::SYSTEM_DF.name)
            .field(m.target.as_str())
            .field(if m.read_only { "RO" } else { "RW" })
            .field(m.source.as_str())
            .field(m.fstype.as_str())
            .field(&usage.files)
            .field(&f.blocks_kb)
            .field(&f.iused)
            .field(&usage.ffree)
            .field(&Fixed2(f.iuse_pct))
            .field(&f.used_kb)
            .field(&f.avail_kb)
            .field(&Fixed2(f.use_pct))
            .end()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_table_escapes_and_selection() {
        let text = "proc /proc proc rw 0 0\n\
                    /dev/vda / ext4 rw,relatime 0 0\n\
                    tmpfs /dev/shm tmpfs rw 0 0\n\
                    tmpfs /dev/shm tmpfs ro,nosuid 0 0\n\
                    srv:/x /mnt/my\\040share nfs4 rw 0 0\n\
                    cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n";
        let all = parse_mounts(text);
        assert_eq!(all[4].target, "/mnt/my share");
        let sel = select_mounts(all.clone(), false);
        let targets: Vec<_> = sel.iter().map(|m| m.target.as_str()).collect();
        assert_eq!(targets, vec!["/", "/dev/shm"]);
        assert!(sel[1].read_only, "the last mount on a mount point wins");
        let with_remote = select_mounts(all, true);
        assert_eq!(with_remote.len(), 3);
    }

    /// PID 1's view on a host whose service unit remounted things in its own namespace: the
    /// fields after ` - ` are fstype, source, super options; optional fields come before it.
    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
30 27 0:26 / /dev/shm rw,nosuid shared:4 master:2 - tmpfs tmpfs rw
31 27 254:1 / /mnt/my\\040share\\134x ro,relatime shared:5 - ext4 /dev/my\\040disk rw
32 27 254:2 / /data rw,relatime - xfs /dev/vdb ro,attr2
33 27 254:2 /sub /srv/bind rw - xfs /dev/vdb rw
34 27 0:40 / /mnt/nfs rw - nfs4 srv:/x rw,vers=4.2
35 30 0:27 / /dev/shm rw - tmpfs tmpfs ro
this line has no separator
36 27 0:41 / /short rw -
";

    #[test]
    fn mountinfo_fields_escapes_and_read_only() {
        let all = parse_mountinfo(MOUNTINFO);
        let by: HashMap<&str, &Mount> = all.iter().map(|m| (m.target.as_str(), m)).collect();
        assert_eq!(all.len(), 8, "the malformed lines are skipped: {all:?}");
        let root = by["/"];
        assert_eq!(
            (root.source.as_str(), root.fstype.as_str(), root.read_only),
            ("/dev/vda", "ext4", false),
            "optional fields (shared:1) are not the fstype"
        );
        let share = by["/mnt/my share\\x"];
        assert_eq!(share.source, "/dev/my disk");
        assert!(share.read_only, "per-mount ro");
        assert!(
            by["/data"].read_only,
            "ro in the super options: the filesystem is read-only"
        );
        assert!(!by["/srv/bind"].read_only);
        assert_eq!(
            by["/srv/bind"].source, "/dev/vdb",
            "a bind mount names its device"
        );
        let sel = select_mounts(all, false);
        let targets: Vec<_> = sel.iter().map(|m| m.target.as_str()).collect();
        assert_eq!(
            targets,
            vec!["/", "/mnt/my share\\x", "/data", "/srv/bind", "/dev/shm"],
            "pseudo and remote filesystems left out, the last mount on /dev/shm kept"
        );
        assert!(sel[4].read_only);
    }

    #[test]
    fn mount_points_stay_inside_the_root() {
        let root = Path::new("/proc/1/root");
        assert_eq!(path_in_root(root, "/"), Some(root.to_path_buf()));
        assert_eq!(
            path_in_root(root, "/mnt/my share/./x/"),
            Some(PathBuf::from("/proc/1/root/mnt/my share/x"))
        );
        assert_eq!(
            path_in_root(root, "/mnt/a..b"),
            Some(PathBuf::from("/proc/1/root/mnt/a..b"))
        );
        assert_eq!(path_in_root(root, "/mnt/../../etc"), None);
        assert_eq!(path_in_root(root, "/.."), None);
        assert_eq!(path_in_root(root, "relative"), None);
        assert_eq!(path_in_root(root, ""), None);
    }

    /// Records the paths asked for; every filesystem is 1000 blocks of 4 KiB.
    #[derive(Default)]
    struct Recorder(Vec<PathBuf>);

    impl StatFs for Recorder {
        fn statvfs(&mut self, _m: &Mount, path: &Path) -> io::Result<Option<FsUsage>> {
            self.0.push(path.to_path_buf());
            Ok(Some(FsUsage {
                frsize: 4096,
                blocks: 1000,
                bfree: 500,
                bavail: 400,
                files: 10,
                ffree: 5,
            }))
        }
    }

    /// Runs [`write`] once; returns the records and the paths `statvfs` was asked for.
    fn df_rows(paths: &HostPaths, view: &mut MountView, r: &mut Reader) -> (String, Vec<PathBuf>) {
        let mut statfs = Recorder::default();
        let mut out = RecordWriter::new(Vec::new());
        let mut events = Events::new(crate::events::Thresholds::default());
        write(paths, view, r, &mut statfs, false, &mut out, &mut events).unwrap();
        out.flush().unwrap();
        (String::from_utf8(out.into_inner()).unwrap(), statfs.0)
    }

    #[test]
    fn another_namespace_is_read_through_its_root_else_ours_after_one_warning() {
        let dir = tempfile::tempdir().unwrap();
        let ns = dir.path().join("1");
        std::fs::create_dir_all(ns.join("root")).unwrap();
        std::fs::write(
            ns.join("mountinfo"),
            "27 1 254:0 / / rw - ext4 /dev/vda rw\n\
             40 27 254:0 / /mnt/../../etc rw - ext4 /dev/vda rw\n",
        )
        .unwrap();
        let own = dir.path().join("mounts");
        std::fs::write(&own, "/dev/vda / ext4 ro 0 0\ntmpfs /tmp tmpfs rw 0 0\n").unwrap();
        let mut paths = HostPaths {
            mounts: own,
            mount_ns: Some(ns.clone()),
            ..HostPaths::default()
        };
        let (mut view, mut r) = (MountView::default(), Reader::default());

        let (rows, asked) = df_rows(&paths, &mut view, &mut r);
        assert!(rows.starts_with("|system_df|/|RW|/dev/vda|ext4|"), "{rows}");
        assert_eq!(
            rows.lines().count(),
            1,
            "the `..` mount point is skipped: {rows}"
        );
        assert_eq!(asked, vec![ns.join("root")]);
        assert_eq!(r.errors.read_errors, 1, "the `..` mount point is counted");

        // A namespace that cannot be read: the probe's own table, direct paths, for good.
        paths.mount_ns = Some(dir.path().join("gone"));
        let mut view = MountView::default();
        let mut r = Reader::default();
        let (rows, asked) = df_rows(&paths, &mut view, &mut r);
        assert!(rows.starts_with("|system_df|/|RO|/dev/vda|ext4|"), "{rows}");
        assert_eq!(asked, vec![PathBuf::from("/"), PathBuf::from("/tmp")]);
        assert_eq!(
            r.errors.read_errors, 0,
            "the fallback is a warning, not a read error"
        );
        paths.mount_ns = Some(ns);
        let (_, asked) = df_rows(&paths, &mut view, &mut r);
        assert_eq!(asked[0], PathBuf::from("/"), "the fallback is not retried");
    }

    #[test]
    fn df_arithmetic_matches_df() {
        let u = FsUsage {
            frsize: 4096,
            blocks: 100,
            bfree: 40,
            bavail: 30,
            files: 10,
            ffree: 0,
        };
        let f = df(&u);
        assert_eq!(f.blocks_kb, 400);
        assert_eq!(f.used_kb, 240);
        assert_eq!(f.avail_kb, 120);
        assert!((f.use_pct - 66.666).abs() < 0.01);
        assert_eq!(f.iuse_pct, 100.0);
        let no_inodes = df(&FsUsage { files: 0, ..u });
        assert_eq!(no_inodes.iuse_pct, 0.0);
    }

    #[test]
    fn unescape_only_valid_octal() {
        assert_eq!(unescape_octal("a\\134b"), "a\\b");
        assert_eq!(unescape_octal("a\\9"), "a\\9");
        assert_eq!(unescape_octal("end\\04"), "end\\04");
    }
}
