//! The bounded output directory (`flame_dir`).
//!
//! Threat model: anyone who can create files, directories and symlinks inside flame_dir, while
//! the probe writes as root. Guarantees:
//!
//! * flame_dir itself must be an existing directory, opened once `O_DIRECTORY | O_NOFOLLOW`
//!   (a symlink there is refused). Everything else happens relative to that descriptor.
//! * `<kind>` and `<kind>/<date>` are created (0750) and opened `O_DIRECTORY | O_NOFOLLOW`: a
//!   symlink planted there (`oncpu -> /etc`) is refused with an error, nothing is written.
//! * Files are written to a new temporary name (`O_CREAT | O_EXCL | O_NOFOLLOW`, 0640) and
//!   renamed over the final name: readers never see half a file, and a symlink or hard link
//!   planted at the final name is replaced, not written through. A failed write removes its
//!   temporary file.
//! * Only names of the layout ([`crate::layout`]) are ever removed, always `unlinkat` relative
//!   to a directory opened without following symlinks; foreign files stay untouched.
//!
//! Bounds:
//!
//! * Bytes: the output files tracked (this run's and those found at open) stay within
//!   `max_bytes` (default 512 MiB): before writing a profile's three files, the oldest profiles
//!   (by the time in their names) are removed until the new ones fit. A profile whose three files
//!   alone exceed the bound is refused ([`OutputError::TooLarge`]). index.json is not counted
//!   (at most [`crate::index::MAX_INDEX_ENTRIES`] entries).
//! * Age: profiles whose period ended more than `max_age` (default 7 days, upstream's horizon)
//!   before `now` are removed at the next write (or [`FlameDir::enforce_retention`]).
//! * Scan at open: at most `max_scan_entries` (default 100 000) directory entries are visited;
//!   files beyond are not tracked (and [`FlameDirStats::scan_truncated`] is set). Temporary files
//!   of a crashed writer older than 10 minutes are removed at open.
//! * Empty date directories are removed with their last profile.
//!
//! Files are not fsync'ed: a crash can lose the latest period, never leave a torn file under a
//! final name that a reader trusts.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

use crate::dirfd::{self, AtError};
use crate::index::{Index, IndexEntry, INDEX_VERSION, MAX_INDEX_BYTES, MAX_INDEX_ENTRIES};
use crate::layout::{self, Output, SetKey};
use crate::model::{epoch_ms, since_epoch, Kind, Profile};
use crate::sanitize::{self, Target};
use crate::{folded, pprof, svg};

/// The shipped default flame_dir (the only one [`FlameDir::open_or_create_default`] creates).
pub const DEFAULT_FLAME_DIR: &str = "/var/log/gala-gopher/flamegraph";
/// Default bound on the bytes of output files.
pub const DEFAULT_MAX_BYTES: u64 = 512 << 20;
/// Default age bound (upstream keeps a week of graphs).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default bound on directory entries visited by the scan at open.
pub const DEFAULT_MAX_SCAN_ENTRIES: usize = 100_000;

const INDEX_FILE: &str = "index.json";
const STALE_TEMP_AGE: Duration = Duration::from_secs(600);

/// The bounds of a flame_dir.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of output files kept.
    pub max_bytes: u64,
    /// Oldest profile kept (by the end of its period).
    pub max_age: Duration,
    /// Most directory entries visited by the scan at open.
    pub max_scan_entries: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_bytes: DEFAULT_MAX_BYTES,
            max_age: DEFAULT_MAX_AGE,
            max_scan_entries: DEFAULT_MAX_SCAN_ENTRIES,
        }
    }
}

/// Why flame_dir could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No such path.
    #[error("flame_dir {0} does not exist")]
    NotFound(PathBuf),
    /// The path is a symbolic link.
    #[error("flame_dir {0} is a symlink, refusing")]
    Symlink(PathBuf),
    /// The path is not a directory.
    #[error("flame_dir {0} is not a directory")]
    NotADirectory(PathBuf),
    /// Creating the default directory failed.
    #[error("flame_dir {path}: cannot create it: {source}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Any other failure (e.g. permission denied).
    #[error("flame_dir {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// Why a profile's outputs or the index were not (fully) written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// A symlink or non-directory where a directory of the layout belongs.
    #[error("{0} is a symlink or not a directory, refusing to write through it")]
    UnsafeDir(PathBuf),
    /// A file-system operation failed (disk full, permission denied …).
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation (`mkdir`, `create`, `write`, `rename` …).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Rendering an output failed.
    #[error("rendering the {what} of pid {pid}: {source}")]
    Render {
        /// `svg` or `pprof`.
        what: &'static str,
        /// The profile's pid.
        pid: u32,
        /// The error.
        source: io::Error,
    },
    /// The profile's files alone are larger than the byte bound.
    #[error(
        "{kind} profile of pid {pid} needs {bytes} bytes, more than flame_dir's bound of {max}"
    )]
    TooLarge {
        /// The profile's kind.
        kind: Kind,
        /// The profile's pid.
        pid: u32,
        /// Bytes of its three files.
        bytes: u64,
        /// The bound.
        max: u64,
    },
}

/// Counters for the probe's self-metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlameDirStats {
    /// Output files written (index.json not counted).
    pub files_written: u64,
    /// Bytes of those files.
    pub bytes_written: u64,
    /// Output files removed by retention (age or bytes).
    pub files_removed: u64,
    /// Failed writes: outputs and index.json (I/O, unsafe directory, render).
    pub write_errors: u64,
    /// Profiles refused because their files alone exceed the byte bound.
    pub too_large: u64,
    /// Removals that failed (the file is no longer tracked).
    pub remove_errors: u64,
    /// Output files tracked now.
    pub tracked_files: u64,
    /// Bytes of the files tracked now.
    pub tracked_bytes: u64,
    /// The scan at open hit its entry bound.
    pub scan_truncated: bool,
}

/// What [`FlameDir::write`] wrote (paths relative to flame_dir).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The SVG.
    pub svg: String,
    /// The folded stacks.
    pub folded: String,
    /// The gzip-compressed pprof.
    pub pprof: String,
    /// Bytes of the three files.
    pub bytes: u64,
    /// Files retention removed to make room.
    pub removed_files: u64,
}

#[derive(Clone, Debug)]
struct EntryMeta {
    comm: String,
    start_ms: u64,
    end_ms: u64,
    samples: u64,
    value: u64,
}

#[derive(Clone, Debug, Default)]
struct Tracked {
    sizes: [Option<u64>; 3],
    meta: Option<EntryMeta>,
}

impl Tracked {
    fn bytes(&self) -> u64 {
        self.sizes.iter().flatten().sum()
    }
}

/// flame_dir, held open, with the outputs it tracks.
#[derive(Debug)]
pub struct FlameDir {
    dir: OwnedFd,
    path: PathBuf,
    limits: Limits,
    sets: BTreeMap<SetKey, Tracked>,
    bytes: u64,
    stats: FlameDirStats,
}

impl FlameDir {
    /// Opens the existing directory `path` (not a symlink) and scans it for outputs of a
    /// previous run.
    pub fn open(path: &Path, limits: Limits) -> Result<FlameDir, OpenError> {
        let dir = open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| open_error(path, e))?;
        let mut flame_dir = FlameDir {
            dir,
            path: path.to_path_buf(),
            limits,
            sets: BTreeMap::new(),
            bytes: 0,
            stats: FlameDirStats::default(),
        };
        flame_dir.scan();
        flame_dir.load_index();
        Ok(flame_dir)
    }

    /// Like [`FlameDir::open`], but first creates `path` (mode 0750, parents too) when it is
    /// the shipped default [`DEFAULT_FLAME_DIR`]; any other path must exist.
    pub fn open_or_create_default(path: &Path, limits: Limits) -> Result<FlameDir, OpenError> {
        if path == Path::new(DEFAULT_FLAME_DIR) {
            FlameDir::open_creating(path, limits)
        } else {
            FlameDir::open(path, limits)
        }
    }

    fn open_creating(path: &Path, limits: Limits) -> Result<FlameDir, OpenError> {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(dirfd::DIR_MODE)
            .create(path)
            .map_err(|source| OpenError::Create {
                path: path.to_path_buf(),
                source,
            })?;
        FlameDir::open(path, limits)
    }

    /// The directory's path (as given).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bounds.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The counters.
    pub fn stats(&self) -> FlameDirStats {
        FlameDirStats {
            tracked_files: self
                .sets
                .values()
                .map(|t| t.sizes.iter().flatten().count() as u64)
                .sum(),
            tracked_bytes: self.bytes,
            ..self.stats
        }
    }

    /// Writes the folded stacks, SVG and pprof of `profile` (nothing for an empty profile:
    /// `Ok(None)`), removing the oldest outputs first as the bounds require. `now` is the
    /// reference for the age bound. Errors are counted in [`FlameDirStats`].
    pub fn write(
        &mut self,
        profile: &Profile,
        now: SystemTime,
    ) -> Result<Option<Written>, OutputError> {
        if profile.is_empty() {
            return Ok(None);
        }
        let result = self.write_profile(profile, now);
        match &result {
            Err(OutputError::TooLarge { .. }) => self.stats.too_large += 1,
            Err(_) => self.stats.write_errors += 1,
            Ok(_) => {}
        }
        result.map(Some)
    }

    fn write_profile(
        &mut self,
        profile: &Profile,
        now: SystemTime,
    ) -> Result<Written, OutputError> {
        let folded_text = folded::render(profile);
        let svg =
            svg::render_folded(profile, &folded_text).map_err(|source| OutputError::Render {
                what: "svg",
                pid: profile.pid,
                source,
            })?;
        let pprof = pprof::pprof_gz(profile).map_err(|source| OutputError::Render {
            what: "pprof",
            pid: profile.pid,
            source,
        })?;
        let bodies: [(Output, &[u8]); 3] = [
            (Output::Svg, &svg),
            (Output::Folded, folded_text.as_bytes()),
            (Output::Pprof, &pprof),
        ];
        let bytes: u64 = bodies.iter().map(|(_, b)| b.len() as u64).sum();
        if bytes > self.limits.max_bytes {
            return Err(OutputError::TooLarge {
                kind: profile.kind,
                pid: profile.pid,
                bytes,
                max: self.limits.max_bytes,
            });
        }

        let key = SetKey::of(profile);
        let removed_files = self.retain(now, Some((key, bytes)));

        let kind_dir = self.ensure_dir(None, key.kind.name())?;
        let date = key.date();
        let date_dir = self.ensure_dir(Some((&kind_dir, key.kind.name())), &date)?;
        for (out, body) in bodies {
            let name = key.file_name(out);
            dirfd::write_atomic(&date_dir, &name, body)
                .map_err(|e| self.output_error(e, &key.rel_path(out)))?;
            let len = body.len() as u64;
            let tracked = self.sets.entry(key).or_default();
            let old = tracked.sizes[out.slot()].replace(len).unwrap_or(0);
            self.bytes = self.bytes.saturating_sub(old).saturating_add(len);
            self.stats.files_written += 1;
            self.stats.bytes_written = self.stats.bytes_written.saturating_add(len);
        }
        if let Some(tracked) = self.sets.get_mut(&key) {
            tracked.meta = Some(EntryMeta {
                comm: sanitize::name(&profile.comm, Target::Plain).into_owned(),
                start_ms: epoch_ms(profile.start),
                end_ms: epoch_ms(profile.end),
                samples: profile.total_count(),
                value: profile.total_value(),
            });
        }
        Ok(Written {
            svg: key.rel_path(Output::Svg),
            folded: key.rel_path(Output::Folded),
            pprof: key.rel_path(Output::Pprof),
            bytes,
            removed_files,
        })
    }

    /// Applies the age and byte bounds now (the writes do it too); returns the files removed.
    pub fn enforce_retention(&mut self, now: SystemTime) -> u64 {
        self.retain(now, None)
    }

    /// Removes profiles older than the age bound, then the oldest ones until `incoming`'s bytes
    /// fit (the incoming profile's own earlier files, if any, are replaced, not removed).
    fn retain(&mut self, now: SystemTime, incoming: Option<(SetKey, u64)>) -> u64 {
        let cutoff = since_epoch(now)
            .as_secs()
            .saturating_sub(self.limits.max_age.as_secs());
        let keep = incoming.map(|(k, _)| k);
        let mut removed = 0;
        while let Some(&key) = self.sets.keys().find(|k| Some(**k) != keep) {
            if key.end_secs >= cutoff {
                break;
            }
            removed += self.remove_set(key);
        }
        if let Some((key, new_bytes)) = incoming {
            let replaced = self.sets.get(&key).map_or(0, Tracked::bytes);
            while self
                .bytes
                .saturating_sub(replaced)
                .saturating_add(new_bytes)
                > self.limits.max_bytes
            {
                let Some(&oldest) = self.sets.keys().find(|k| **k != key) else {
                    break;
                };
                removed += self.remove_set(oldest);
            }
        }
        removed
    }

    /// Removes the files of one profile (and its date directory once empty of ours).
    fn remove_set(&mut self, key: SetKey) -> u64 {
        let Some(tracked) = self.sets.remove(&key) else {
            return 0;
        };
        self.bytes = self.bytes.saturating_sub(tracked.bytes());
        let Ok(kind_dir) = dirfd::open_dir(&self.dir, key.kind.name()) else {
            return 0;
        };
        let date = key.date();
        let Ok(date_dir) = dirfd::open_dir(&kind_dir, &date) else {
            return 0;
        };
        let mut removed = 0;
        for out in Output::ALL {
            if tracked.sizes[out.slot()].is_none() {
                continue;
            }
            match dirfd::remove_file(&date_dir, &key.file_name(out)) {
                Ok(true) => removed += 1,
                Ok(false) => {}
                Err(_) => self.stats.remove_errors += 1,
            }
        }
        self.stats.files_removed += removed;
        let day = key.day();
        if !self
            .sets
            .keys()
            .any(|k| k.kind == key.kind && k.day() == day)
        {
            drop(date_dir);
            dirfd::remove_empty_dir(&kind_dir, &date);
        }
        removed
    }

    /// Rewrites index.json atomically: the latest outputs of each (pid, kind) on disk, newest
    /// first, at most [`MAX_INDEX_ENTRIES`]. Returns the number of entries.
    pub fn write_index(&mut self, now: SystemTime) -> Result<usize, OutputError> {
        let index = self.index(now);
        let n = index.profiles.len();
        let result = dirfd::write_atomic(&self.dir, INDEX_FILE, &index.to_json())
            .map_err(|e| self.output_error(e, INDEX_FILE));
        if result.is_err() {
            self.stats.write_errors += 1;
        }
        result.map(|()| n)
    }

    /// The index as [`FlameDir::write_index`] would write it.
    pub fn index(&self, now: SystemTime) -> Index {
        let mut seen = HashSet::new();
        let mut profiles = Vec::new();
        for (key, tracked) in self.sets.iter().rev() {
            if profiles.len() >= MAX_INDEX_ENTRIES {
                break;
            }
            if !seen.insert((key.pid, key.kind)) {
                continue;
            }
            let end_ms = key.end_secs.saturating_mul(1000);
            let meta = tracked.meta.clone().unwrap_or(EntryMeta {
                comm: String::new(),
                start_ms: end_ms,
                end_ms,
                samples: 0,
                value: 0,
            });
            let path = |out: Output| tracked.sizes[out.slot()].map(|_| key.rel_path(out));
            profiles.push(IndexEntry {
                pid: key.pid,
                comm: meta.comm,
                kind: key.kind,
                start_ms: meta.start_ms,
                end_ms: meta.end_ms,
                samples: meta.samples,
                value: meta.value,
                svg: path(Output::Svg),
                folded: path(Output::Folded),
                pprof: path(Output::Pprof),
            });
        }
        Index {
            version: INDEX_VERSION,
            updated_ms: epoch_ms(now),
            profiles,
        }
    }

    /// Tracks the outputs already in flame_dir (bounded), removing stale temporary files.
    fn scan(&mut self) {
        let mut budget = self.limits.max_scan_entries;
        for name in dirfd::list(&self.dir, &mut budget) {
            if layout::temp_target(&name) == Some(INDEX_FILE) {
                remove_stale_temp(&self.dir, &name);
            }
        }
        for kind in Kind::ALL {
            let Ok(kind_dir) = dirfd::open_dir(&self.dir, kind.name()) else {
                continue;
            };
            for date in dirfd::list(&kind_dir, &mut budget) {
                if !layout::is_date_dir(&date) {
                    continue;
                }
                let Ok(date_dir) = dirfd::open_dir(&kind_dir, &date) else {
                    continue;
                };
                for name in dirfd::list(&date_dir, &mut budget) {
                    if let Some((key, out)) = layout::parse_file(kind, &date, &name) {
                        if let Some((size, _)) = dirfd::regular_file(&date_dir, &name) {
                            let tracked = self.sets.entry(key).or_default();
                            let old = tracked.sizes[out.slot()].replace(size).unwrap_or(0);
                            self.bytes = self.bytes.saturating_sub(old).saturating_add(size);
                        }
                    } else if layout::temp_target(&name)
                        .is_some_and(|t| layout::parse_file(kind, &date, t).is_some())
                    {
                        remove_stale_temp(&date_dir, &name);
                    }
                }
            }
        }
        self.stats.scan_truncated = budget == 0;
    }

    /// Takes comm, period and totals of the files found at open from the previous index.json.
    fn load_index(&mut self) {
        let Some(index) = dirfd::read_small(&self.dir, INDEX_FILE, MAX_INDEX_BYTES)
            .and_then(|body| Index::from_json(&body))
        else {
            return;
        };
        for entry in index.profiles {
            let key = SetKey {
                end_secs: entry.end_ms / 1000,
                kind: entry.kind,
                pid: entry.pid,
            };
            if let Some(tracked) = self.sets.get_mut(&key) {
                tracked.meta = Some(EntryMeta {
                    comm: sanitize::name(&entry.comm, Target::Plain).into_owned(),
                    start_ms: entry.start_ms,
                    end_ms: entry.end_ms,
                    samples: entry.samples,
                    value: entry.value,
                });
            }
        }
    }

    /// Creates and opens `name` under flame_dir (`parent` None) or under `parent` (its fd and
    /// its path relative to flame_dir).
    fn ensure_dir(
        &self,
        parent: Option<(&OwnedFd, &str)>,
        name: &str,
    ) -> Result<OwnedFd, OutputError> {
        let (fd, rel) = match parent {
            Some((fd, parent_rel)) => (fd, format!("{parent_rel}/{name}")),
            None => (&self.dir, name.to_string()),
        };
        dirfd::ensure_dir(fd, name).map_err(|e| self.output_error(e, &rel))
    }

    fn output_error(&self, e: AtError, rel: &str) -> OutputError {
        let path = self.path.join(rel);
        match e {
            AtError::NotADirectory => OutputError::UnsafeDir(path),
            AtError::Io(op, source) => OutputError::Io { op, path, source },
        }
    }
}

fn remove_stale_temp(dir: &OwnedFd, name: &str) {
    let stale = dirfd::regular_file(dir, name).is_some_and(|(_, mtime)| {
        SystemTime::now()
            .duration_since(mtime)
            .is_ok_and(|age| age > STALE_TEMP_AGE)
    });
    if stale {
        let _ = dirfd::remove_file(dir, name);
    }
}

fn open_error(path: &Path, e: Errno) -> OpenError {
    let is_symlink = || {
        path.symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
    };
    match e {
        Errno::ENOENT => OpenError::NotFound(path.to_path_buf()),
        Errno::ELOOP => OpenError::Symlink(path.to_path_buf()),
        Errno::ENOTDIR if is_symlink() => OpenError::Symlink(path.to_path_buf()),
        Errno::ENOTDIR => OpenError::NotADirectory(path.to_path_buf()),
        e => OpenError::Io {
            path: path.to_path_buf(),
            source: io::Error::from(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creating_open_makes_parents_with_mode_0750() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let path = tmp.path().join("a/b/flamegraph");
        let dir = FlameDir::open_creating(&path, Limits::default());
        assert!(dir.is_ok(), "{dir:?}");
        let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777);
        // The umask may only take bits away.
        assert!(mode.is_ok_and(|m| m & !0o750 == 0 && m & 0o700 == 0o700));
        // A path other than the default is never created.
        let other = tmp.path().join("x/y");
        assert!(matches!(
            FlameDir::open_or_create_default(&other, Limits::default()),
            Err(OpenError::NotFound(_))
        ));
        assert!(!other.exists());
    }
}
