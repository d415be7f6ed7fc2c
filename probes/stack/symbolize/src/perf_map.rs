//! JIT symbols from a process's perf map (`/tmp/perf-<pid>.map`, written by the JVM on
//! `jcmd <pid> Compiler.perfmap`, by Node with `--perf-basic-prof`, ...).
//!
//! The file is read as the process sees it, `/proc/<pid>/root/tmp/perf-<nspid>.map`, and it is
//! controlled by the profiled process while we run as root, so: `tmp` and the file are opened with
//! `O_NOFOLLOW` one component at a time from the process's root (a symbolic link is never
//! followed, not even one inside the process's root), the file must be a regular file owned by
//! one of the process's uids, and the bytes, lines and line length read are bounded. Lines are
//! `START SIZE name` (hex, `0x` optional); invalid lines are skipped and counted. A later line
//! overrides the part of an earlier one it overlaps (code-cache reuse), as perf does. Writers
//! append, so a changed file whose already-read bytes are unchanged is read from where we
//! stopped.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{open, openat, OFlag};
use nix::sys::stat::Mode;

use crate::error::{PerfMapRefusal, ReadError};

/// Longest line kept; a longer one is skipped as invalid.
const MAX_LINE_BYTES: usize = 4096;
/// Read chunk.
const CHUNK_BYTES: usize = 64 * 1024;
/// Bytes before the read position remembered to recognise an append.
const TAIL_BYTES: u64 = 64;

/// Bounds on one perf map.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub max_bytes: u64,
    pub max_entries: usize,
}

/// One refresh's outcome.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Refreshed {
    /// The entries changed (new lines, or a new file): names cached from the old ones are stale.
    pub changed: bool,
    /// Bytes were read (a load or an append).
    pub read: bool,
    pub invalid_lines: u64,
    /// The file or its entries reached a bound; the rest is ignored.
    pub truncated: bool,
}

/// Where reading stopped in the file last read.
#[derive(Debug)]
struct Position {
    dev: u64,
    ino: u64,
    /// File size when last looked at.
    size: u64,
    /// Bytes consumed: up to and including the last complete line.
    consumed: u64,
    /// The bytes just before `consumed`.
    tail: Vec<u8>,
}

/// A process's perf map: non-overlapping `[start, end) → name`.
#[derive(Debug, Default)]
pub(crate) struct PerfMap {
    entries: BTreeMap<u64, (u64, Arc<str>)>,
    position: Option<Position>,
    /// A bound was reached for this file: nothing more is read until it is replaced.
    full: bool,
}

impl PerfMap {
    /// The JIT symbol containing `addr`.
    pub fn lookup(&self, addr: u64) -> Option<&Arc<str>> {
        let (_, (end, name)) = self.entries.range(..=addr).next_back()?;
        (addr < *end).then_some(name)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Brings the map up to date with `<root>/tmp/perf-<ns_pid>.map` (`root` is the process's
    /// `/proc/<pid>/root`). A missing or refused file empties the map.
    pub fn refresh(
        &mut self,
        root: &Path,
        ns_pid: u32,
        uids: &[u32],
        limits: Limits,
    ) -> Result<Refreshed, PerfMapRefusal> {
        let file = match open_beneath(root, ns_pid, uids) {
            Ok(file) => file,
            Err(err) => {
                let changed = self.clear();
                let missing = matches!(&err, PerfMapRefusal::Read(ReadError::Io { source, .. })
                    if source.kind() == io::ErrorKind::NotFound);
                return if missing {
                    Ok(Refreshed {
                        changed,
                        ..Refreshed::default()
                    })
                } else {
                    Err(err)
                };
            }
        };
        let path = display_path(ns_pid);
        let io = |source| ReadError::Io {
            path: path.clone(),
            source,
        };
        let meta = file.metadata().map_err(io)?;
        let size = meta.size();
        let appended = match &self.position {
            Some(pos) if pos.dev == meta.dev() && pos.ino == meta.ino() => {
                if size == pos.size {
                    // Unchanged (a rewrite to the very same size is taken as unchanged until
                    // the size moves).
                    return Ok(Refreshed::default());
                }
                size >= pos.consumed && tail_matches(&file, pos).map_err(io)?
            }
            _ => false,
        };
        let mut refreshed = Refreshed::default();
        let from = match (&self.position, appended) {
            (Some(pos), true) => pos.consumed,
            _ => {
                refreshed.changed = self.clear();
                0
            }
        };
        let mut consumed = from;
        let until = size.min(limits.max_bytes);
        if !self.full && from < until {
            refreshed.read = true;
            consumed = self
                .ingest(&file, from, until, limits, &mut refreshed)
                .map_err(io)?;
            if size > limits.max_bytes {
                self.full = true;
                refreshed.truncated = true;
            }
        }
        // New lines add entries or replace older ones.
        refreshed.changed |= consumed > from;
        let tail_start = consumed.saturating_sub(TAIL_BYTES);
        let mut tail = vec![0; (consumed - tail_start) as usize];
        file.read_exact_at(&mut tail, tail_start).map_err(io)?;
        self.position = Some(Position {
            dev: meta.dev(),
            ino: meta.ino(),
            size,
            consumed,
            tail,
        });
        Ok(refreshed)
    }

    /// Drops every entry; true if there were any.
    fn clear(&mut self) -> bool {
        let had = !self.entries.is_empty();
        self.entries.clear();
        self.position = None;
        self.full = false;
        had
    }

    /// Reads the complete lines of `[from, until)`; returns the offset after the last one (an
    /// unfinished last line is read again next time).
    fn ingest(
        &mut self,
        mut file: &File,
        from: u64,
        until: u64,
        limits: Limits,
        refreshed: &mut Refreshed,
    ) -> io::Result<u64> {
        file.seek(SeekFrom::Start(from))?;
        let mut reader = file.take(until - from);
        let mut chunk = vec![0; CHUNK_BYTES];
        let mut line: Vec<u8> = Vec::new();
        let mut overlong = false;
        let mut offset = from;
        let mut consumed = from;
        loop {
            let n = match reader.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            let data = &chunk[..n];
            let mut start = 0;
            for (i, _) in data.iter().enumerate().filter(|(_, &b)| b == b'\n') {
                let piece = &data[start..i];
                start = i + 1;
                consumed = offset + start as u64;
                if overlong || line.len() + piece.len() > MAX_LINE_BYTES {
                    refreshed.invalid_lines += 1;
                } else {
                    line.extend_from_slice(piece);
                    if !self.add_line(&line, limits, refreshed) {
                        return Ok(consumed);
                    }
                }
                line.clear();
                overlong = false;
            }
            let rest = &data[start..];
            if !overlong {
                if line.len() + rest.len() > MAX_LINE_BYTES {
                    overlong = true;
                    line.clear();
                } else {
                    line.extend_from_slice(rest);
                }
            }
            offset += n as u64;
        }
        Ok(consumed)
    }

    /// Adds one line; false once the entry bound is reached.
    fn add_line(&mut self, line: &[u8], limits: Limits, refreshed: &mut Refreshed) -> bool {
        if line.trim_ascii().is_empty() {
            return true;
        }
        let Some((start, end, name)) = parse_line(line) else {
            refreshed.invalid_lines += 1;
            return true;
        };
        if self.entries.len() >= limits.max_entries {
            refreshed.truncated = true;
            self.full = true;
            return false;
        }
        self.insert(start, end, String::from_utf8_lossy(name).into());
        true
    }

    /// Inserts `[start, end)`, cutting what it overlaps out of older entries.
    fn insert(&mut self, start: u64, end: u64, name: Arc<str>) {
        let before = self
            .entries
            .range(..start)
            .next_back()
            .map(|(&s, (e, n))| (s, *e, n.clone()));
        if let Some((s, e, n)) = before {
            if e > start {
                self.entries.insert(s, (start, n.clone()));
                if e > end {
                    self.entries.insert(end, (e, n));
                }
            }
        }
        let inside: Vec<u64> = self.entries.range(start..end).map(|(&s, _)| s).collect();
        for s in inside {
            if let Some((e, n)) = self.entries.remove(&s) {
                if e > end {
                    self.entries.insert(end, (e, n));
                }
            }
        }
        self.entries.insert(start, (end, name));
    }
}

/// Parses `START SIZE name` (hex, optional `0x`); `None` for an invalid or empty line.
fn parse_line(line: &[u8]) -> Option<(u64, u64, &[u8])> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let (start, rest) = split_field(line)?;
    let (size, name) = split_field(rest)?;
    let name = name.trim_ascii();
    let start = parse_hex(start)?;
    let size = parse_hex(size)?;
    if size == 0 || name.is_empty() {
        return None;
    }
    Some((start, start.checked_add(size)?, name))
}

/// Splits off the first whitespace-separated field.
fn split_field(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let s = s.trim_ascii_start();
    let end = s.iter().position(u8::is_ascii_whitespace)?;
    Some((&s[..end], &s[end..]))
}

fn parse_hex(field: &[u8]) -> Option<u64> {
    let digits = field
        .strip_prefix(b"0x")
        .or_else(|| field.strip_prefix(b"0X"))
        .unwrap_or(field);
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// Whether the bytes before `pos.consumed` are still what was read: the file was appended to,
/// not rewritten.
fn tail_matches(file: &File, pos: &Position) -> io::Result<bool> {
    let start = pos.consumed - pos.tail.len() as u64;
    let mut now = vec![0; pos.tail.len()];
    match file.read_exact_at(&mut now, start) {
        Ok(()) => Ok(now == pos.tail),
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(err) => Err(err),
    }
}

/// The path as the process sees it, for messages.
fn display_path(ns_pid: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/perf-{ns_pid}.map"))
}

/// Opens `<root>/tmp/perf-<ns_pid>.map` without following any symbolic link below `root`.
fn open_beneath(root: &Path, ns_pid: u32, uids: &[u32]) -> Result<File, PerfMapRefusal> {
    let path = display_path(ns_pid);
    let refuse = |errno: Errno, path: &Path| -> PerfMapRefusal {
        if errno == Errno::ELOOP || errno == Errno::ENOTDIR {
            PerfMapRefusal::Symlink {
                path: path.to_path_buf(),
            }
        } else {
            PerfMapRefusal::Read(ReadError::Io {
                path: path.to_path_buf(),
                source: io::Error::from(errno),
            })
        }
    };
    // Following `/proc/<pid>/root` itself is the point: it is the process's root directory.
    let root_fd: OwnedFd = open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| refuse(e, root))?;
    let tmp_fd: OwnedFd = openat(
        &root_fd,
        "tmp",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| refuse(e, Path::new("/tmp")))?;
    let name = format!("perf-{ns_pid}.map");
    // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below).
    let fd: OwnedFd = openat(
        &tmp_fd,
        name.as_str(),
        OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| refuse(e, &path))?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(|source| ReadError::Io {
        path: path.clone(),
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(PerfMapRefusal::NotRegular { path });
    }
    if !uids.contains(&meta.uid()) {
        return Err(PerfMapRefusal::Owner {
            path,
            uid: meta.uid(),
        });
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write;
    use std::os::unix::fs::symlink;

    const LIMITS: Limits = Limits {
        max_bytes: 1 << 20,
        max_entries: 1000,
    };

    fn root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("tmp")).expect("tmp");
        dir
    }

    fn me() -> Vec<u32> {
        // The tests' files are created by this process, so owned by its effective uid.
        crate::proc::read_status(std::process::id())
            .expect("own status")
            .uids
    }

    fn write(dir: &Path, pid: u32, text: impl AsRef<[u8]>) {
        fs::write(dir.join(format!("tmp/perf-{pid}.map")), text).expect("write map");
    }

    fn append(dir: &Path, pid: u32, text: &str) {
        fs::OpenOptions::new()
            .append(true)
            .open(dir.join(format!("tmp/perf-{pid}.map")))
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .expect("append");
    }

    fn name(map: &PerfMap, addr: u64) -> Option<&str> {
        map.lookup(addr).map(|n| &**n)
    }

    #[test]
    fn lines_with_and_without_0x_and_invalid_ones() {
        let dir = root();
        write(
            dir.path(),
            7,
            b"1000 10 plain\n0x2000 0x20 Lfoo/Bar;::baz (with) spaces\r\n\
             zz 10 bad_start\n3000 zz bad_size\n4000 10\n5000 0 zero_size\n\
             ffffffffffffffff 10 wraps\n\n6000 10 \xff\xfe lossy\n",
        );
        let mut map = PerfMap::default();
        let r = map.refresh(dir.path(), 7, &me(), LIMITS).expect("read");
        assert!(r.changed && r.read && !r.truncated);
        assert_eq!(r.invalid_lines, 5, "{r:?}");
        assert_eq!(name(&map, 0x1000), Some("plain"));
        assert_eq!(name(&map, 0x100f), Some("plain"));
        assert_eq!(name(&map, 0x1010), None);
        assert_eq!(name(&map, 0xfff), None);
        assert_eq!(name(&map, 0x201f), Some("Lfoo/Bar;::baz (with) spaces"));
        assert_eq!(name(&map, 0x6001), Some("\u{fffd}\u{fffd} lossy"));
        assert_eq!(map.len(), 3);
    }

    #[test]
    fn later_lines_override_what_they_overlap() {
        let dir = root();
        write(
            dir.path(),
            7,
            "1000 100 old\n1040 10 new_inside\n10f0 20 new_tail\n0f00 108 new_head\n",
        );
        let mut map = PerfMap::default();
        map.refresh(dir.path(), 7, &me(), LIMITS).expect("read");
        assert_eq!(name(&map, 0x0f00), Some("new_head"));
        assert_eq!(name(&map, 0x1007), Some("new_head"));
        assert_eq!(name(&map, 0x1008), Some("old"));
        assert_eq!(name(&map, 0x1040), Some("new_inside"));
        assert_eq!(name(&map, 0x1050), Some("old"));
        assert_eq!(name(&map, 0x10ef), Some("old"));
        assert_eq!(name(&map, 0x10f0), Some("new_tail"));
        assert_eq!(name(&map, 0x110f), Some("new_tail"));
        assert_eq!(name(&map, 0x1110), None);
    }

    #[test]
    fn appends_are_read_incrementally_and_partial_lines_wait() {
        let dir = root();
        write(dir.path(), 9, "1000 10 first\n2000 10 sec");
        let mut map = PerfMap::default();
        let r = map.refresh(dir.path(), 9, &me(), LIMITS).expect("read");
        assert!(r.changed);
        assert_eq!(name(&map, 0x2000), None, "unfinished line is not used yet");

        let r = map.refresh(dir.path(), 9, &me(), LIMITS).expect("again");
        assert_eq!(r, Refreshed::default(), "unchanged file is not read");

        append(dir.path(), 9, "ond\n1000 10 replaced\n");
        let r = map.refresh(dir.path(), 9, &me(), LIMITS).expect("append");
        assert!(r.changed && r.read);
        assert_eq!(name(&map, 0x2000), Some("second"));
        assert_eq!(name(&map, 0x1000), Some("replaced"));

        // A rewrite (different bytes before the read position) is read from the start.
        write(dir.path(), 9, "3000 10 rewritten\n");
        let r = map.refresh(dir.path(), 9, &me(), LIMITS).expect("rewrite");
        assert!(r.changed);
        assert_eq!(name(&map, 0x1000), None);
        assert_eq!(name(&map, 0x3000), Some("rewritten"));

        fs::remove_file(dir.path().join("tmp/perf-9.map")).expect("rm");
        let r = map
            .refresh(dir.path(), 9, &me(), LIMITS)
            .expect("missing is not an error");
        assert!(r.changed);
        assert_eq!(map.len(), 0);
    }

    #[test]
    fn bytes_entries_and_line_length_are_bounded() {
        let dir = root();
        let mut text = String::new();
        for i in 0..100u64 {
            text.push_str(&format!("{:x} 10 f{i}\n", 0x1000 + i * 0x10));
        }
        write(dir.path(), 5, &text);
        let mut map = PerfMap::default();
        let few = Limits {
            max_bytes: 1 << 20,
            max_entries: 10,
        };
        let r = map.refresh(dir.path(), 5, &me(), few).expect("read");
        assert!(r.truncated);
        assert_eq!(map.len(), 10);
        assert_eq!(name(&map, 0x1000 + 9 * 0x10), Some("f9"));
        assert_eq!(name(&map, 0x1000 + 10 * 0x10), None);

        let mut map = PerfMap::default();
        let small = Limits {
            max_bytes: 100,
            max_entries: 1000,
        };
        let r = map.refresh(dir.path(), 5, &me(), small).expect("read");
        assert!(r.truncated);
        assert!(map.len() < 10 && map.len() > 0, "{}", map.len());

        let long = format!(
            "1000 10 {}\n2000 10 after_long\n",
            "x".repeat(MAX_LINE_BYTES + 10)
        );
        write(dir.path(), 6, &long);
        let mut map = PerfMap::default();
        let r = map.refresh(dir.path(), 6, &me(), LIMITS).expect("read");
        assert_eq!(r.invalid_lines, 1);
        assert_eq!(name(&map, 0x1000), None);
        assert_eq!(name(&map, 0x2000), Some("after_long"));

        // A line longer than a read chunk, split across chunks.
        let long = format!("{}\n2000 10 after_huge\n", "y".repeat(CHUNK_BYTES * 2 + 5));
        write(dir.path(), 8, &long);
        let mut map = PerfMap::default();
        let r = map.refresh(dir.path(), 8, &me(), LIMITS).expect("read");
        assert_eq!(r.invalid_lines, 1);
        assert_eq!(name(&map, 0x2000), Some("after_huge"));
    }

    #[test]
    fn symlinks_are_never_followed() {
        let dir = root();
        let secret = dir.path().join("secret.map");
        fs::write(&secret, "1000 10 leaked_secret\n").expect("secret");
        symlink(&secret, dir.path().join("tmp/perf-3.map")).expect("file link");
        let mut map = PerfMap::default();
        let err = map
            .refresh(dir.path(), 3, &me(), LIMITS)
            .expect_err("file link");
        assert!(matches!(err, PerfMapRefusal::Symlink { .. }), "{err:?}");
        assert_eq!(map.len(), 0);

        // `tmp` itself a link to a directory holding a valid map.
        let other = tempfile::tempdir().expect("other");
        fs::create_dir(other.path().join("real")).expect("real");
        fs::write(other.path().join("real/perf-3.map"), "1000 10 leaked_dir\n").expect("map");
        symlink(other.path().join("real"), other.path().join("tmp")).expect("dir link");
        let err = map
            .refresh(other.path(), 3, &me(), LIMITS)
            .expect_err("dir link");
        assert!(matches!(err, PerfMapRefusal::Symlink { .. }), "{err:?}");
        assert_eq!(map.lookup(0x1000), None);
    }

    #[test]
    fn special_files_and_foreign_owners_are_refused() {
        let dir = root();
        let fifo = dir.path().join("tmp/perf-4.map");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).expect("fifo");
        let mut map = PerfMap::default();
        let err = map.refresh(dir.path(), 4, &me(), LIMITS).expect_err("fifo");
        assert!(matches!(err, PerfMapRefusal::NotRegular { .. }), "{err:?}");

        write(dir.path(), 2, "1000 10 not_yours\n");
        let stranger = [u32::MAX - 7];
        let err = map
            .refresh(dir.path(), 2, &stranger, LIMITS)
            .expect_err("owner");
        assert!(matches!(err, PerfMapRefusal::Owner { .. }), "{err:?}");
        assert_eq!(map.lookup(0x1000), None);
    }
}
