//! `system_df`: mounted filesystems from the mount table, sizes from `statvfs(2)` (what `df`
//! and `df -i` print).
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
use std::sync::mpsc;
use std::time::Duration;

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

/// Decodes the `\040`-style octal escapes the kernel uses for spaces, tabs, newlines and `\`.
fn unescape_octal(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
    /// Sizes of the filesystem mounted at `mount`; `Ok(None)` when the call timed out.
    fn statvfs(&mut self, mount: &Mount) -> io::Result<Option<FsUsage>>;
}

fn statvfs_now(path: &str) -> io::Result<FsUsage> {
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
    fn statvfs(&mut self, m: &Mount) -> io::Result<Option<FsUsage>> {
        if !is_remote(&m.fstype) {
            return statvfs_now(&m.target).map(Some);
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
        let path = m.target.clone();
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
    fn statvfs(&mut self, m: &Mount) -> io::Result<Option<FsUsage>> {
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

/// Reads the mount table and writes one `system_df` record per selected filesystem.
pub fn write<W: Write>(
    paths: &HostPaths,
    r: &mut Reader,
    statfs: &mut dyn StatFs,
    include_remote: bool,
    out: &mut RecordWriter<W>,
    events: &mut Events,
) -> io::Result<()> {
    let Some(text) = r.read(&paths.mounts) else {
        return Ok(());
    };
    let mounts = select_mounts(parse_mounts(text), include_remote);
    for m in mounts {
        let usage = match statfs.statvfs(&m) {
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
