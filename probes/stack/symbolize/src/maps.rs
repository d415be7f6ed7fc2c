//! The executable mappings of a process from `/proc/<pid>/maps`: which file (and which offset in
//! it) an address belongs to, read once per batch of uncached addresses. Bounded in bytes and
//! lines; the parser takes the text so tests feed it fixtures.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::ReadError;

/// Bound on the bytes of `/proc/<pid>/maps` read. `vm.max_map_count` (65530 by default) lines of
/// typical length are ~7 MiB; a process with longer paths loses its last mappings (counted).
pub const MAPS_MAX_BYTES: u64 = 32 * 1024 * 1024;

/// What backs an executable mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backing {
    /// A file; `path` is as the process sees it, without ` (deleted)`.
    File { path: Arc<str> },
    /// The kernel's vDSO.
    Vdso,
    /// Anonymous memory (JIT code) or another pseudo-path (`[anon:...]`, `[vsyscall]`, ...).
    Other,
}

/// One executable mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    /// Device (major << 32 | minor) and inode of the mapped file, as the kernel lists them: an
    /// identity that needs no access to the file (which may sit on a stalled FUSE mount).
    pub file_id: (u64, u64),
    pub backing: Backing,
}

impl Mapping {
    /// The file offset of `addr`, which must lie in the mapping.
    pub fn file_offset(&self, addr: u64) -> u64 {
        addr - self.start + self.offset
    }

    /// The file's base name, for a miss's `<module>+0x<offset>` name.
    pub fn module(&self) -> Option<&str> {
        match &self.backing {
            Backing::File { path } => Some(path.rsplit('/').next().unwrap_or(path)),
            Backing::Vdso => Some("[vdso]"),
            Backing::Other => None,
        }
    }
}

/// A process's executable mappings, sorted by start address.
#[derive(Debug, Default)]
pub struct Maps {
    mappings: Vec<Mapping>,
    /// Lines that did not parse (should stay 0: the kernel writes the file).
    pub invalid_lines: u64,
    /// The file was longer than [`MAPS_MAX_BYTES`].
    pub truncated: bool,
}

impl Maps {
    /// Parses the text of a maps file; a last line without newline (cut by the bound) is dropped.
    pub fn parse(text: &[u8]) -> Maps {
        let mut maps = Maps::default();
        let complete = match text.iter().rposition(|&b| b == b'\n') {
            Some(last) => &text[..=last],
            None => &[][..],
        };
        for line in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            match parse_line(line) {
                Some(Some(mapping)) => maps.mappings.push(mapping),
                Some(None) => {}
                None => maps.invalid_lines += 1,
            }
        }
        // The kernel lists mappings in address order; sort anyway so a lookup never depends on it.
        maps.mappings.sort_by_key(|m| m.start);
        maps
    }

    /// The mapping containing `addr`.
    pub fn find(&self, addr: u64) -> Option<&Mapping> {
        let idx = self.mappings.partition_point(|m| m.start <= addr);
        let mapping = self.mappings.get(idx.checked_sub(1)?)?;
        (addr < mapping.end).then_some(mapping)
    }

    /// Executable mappings held.
    pub fn len(&self) -> usize {
        self.mappings.len()
    }

    /// No executable mapping.
    pub fn is_empty(&self) -> bool {
        self.mappings.is_empty()
    }
}

/// Parses one line: `Some(None)` for a valid line of a non-executable mapping.
fn parse_line(line: &[u8]) -> Option<Option<Mapping>> {
    let line = std::str::from_utf8(line).ok()?;
    // start-end perms offset dev inode [path]; the path may contain spaces.
    let mut rest = line;
    let mut next = || {
        let trimmed = rest.trim_start_matches(' ');
        let end = trimmed.find(' ').unwrap_or(trimmed.len());
        let (field, tail) = trimmed.split_at(end);
        rest = tail;
        (!field.is_empty()).then_some(field)
    };
    let range = next()?;
    let perms = next()?;
    let offset = next()?;
    let dev = next()?;
    let inode = next()?;
    let path = rest.trim_start_matches(' ');
    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    let offset = u64::from_str_radix(offset, 16).ok()?;
    let (major, minor) = dev.split_once(':')?;
    let dev = (u64::from_str_radix(major, 16).ok()? << 32) | u64::from_str_radix(minor, 16).ok()?;
    let inode = inode.parse::<u64>().ok()?;
    if start >= end || perms.len() < 4 {
        return None;
    }
    if perms.as_bytes()[2] != b'x' {
        return Some(None);
    }
    let backing = if path.starts_with('/') {
        let path = path.strip_suffix(" (deleted)").unwrap_or(path);
        Backing::File { path: path.into() }
    } else if path == "[vdso]" {
        Backing::Vdso
    } else {
        Backing::Other
    };
    Some(Some(Mapping {
        start,
        end,
        offset,
        file_id: (dev, inode),
        backing,
    }))
}

/// Reads the executable mappings of process `pid`.
pub(crate) fn read(pid: u32) -> Result<Maps, ReadError> {
    read_from(PathBuf::from(format!("/proc/{pid}/maps")))
}

/// Reads the executable mappings listed in `path` (a `/proc/<pid>/maps`, e.g. under a host
/// root), at most [`MAPS_MAX_BYTES`] of it.
pub fn read_from(path: PathBuf) -> Result<Maps, ReadError> {
    let io = |source| ReadError::Io {
        path: path.clone(),
        source,
    };
    let mut text = Vec::new();
    File::open(&path)
        .map_err(io)?
        .take(MAPS_MAX_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(io)?;
    let truncated = text.len() as u64 > MAPS_MAX_BYTES;
    text.truncate(MAPS_MAX_BYTES as usize);
    let mut maps = Maps::parse(&text);
    maps.truncated = truncated;
    Ok(maps)
}

/// The `/proc/<pid>/map_files/` entry of a mapping: the mapped file itself, whatever mount
/// namespace or root the process has and even after the file was deleted or replaced.
pub(crate) fn map_files_path(pid: u32, mapping: &Mapping) -> PathBuf {
    PathBuf::from(format!(
        "/proc/{pid}/map_files/{:x}-{:x}",
        mapping.start, mapping.end
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 1234    /usr/bin/prog with space
55d0c0a01000-55d0c0a02000 r-xp 00001000 08:01 1234    /usr/bin/prog with space
7f0000000000-7f0000001000 rwxp 00000000 00:00 0 
7f1000000000-7f1000028000 r--p 00000000 08:01 99      /usr/lib/x86_64-linux-gnu/libc.so.6
7f1000028000-7f10001bd000 r-xp 00028000 08:01 99      /usr/lib/x86_64-linux-gnu/libc.so.6
7f2000000000-7f2000001000 r-xp 00000000 00:05 7       /memfd:jit (deleted)
7f3000000000-7f3000001000 r-xp 00000000 08:01 5       /tmp/gone (deleted)
7f4000000000-7f4000001000 r-xp 00000000 00:00 0       [anon:v8 code]
7ffd0000a000-7ffd0000c000 r-xp 00000000 00:00 0       [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]
garbage line
7f5000000000-7f5000001000 r-xp 00000000 08:01 5       /cut/by/the/bound";

    #[test]
    fn keeps_executable_mappings_with_their_backing() {
        let maps = Maps::parse(MAPS.as_bytes());
        assert_eq!(maps.invalid_lines, 1);
        assert_eq!(maps.len(), 8, "{maps:?}");

        let prog = maps.find(0x55d0c0a01010).expect("prog text");
        assert_eq!(prog.module(), Some("prog with space"));
        assert_eq!(prog.file_offset(0x55d0c0a01010), 0x1010);
        assert_eq!(
            maps.find(0x55d0c0a00010),
            None,
            "read-only part is not kept"
        );

        let libc = maps.find(0x7f1000029000).expect("libc");
        assert_eq!(libc.module(), Some("libc.so.6"));
        assert_eq!(libc.file_id, ((8 << 32) | 1, 99));
        assert_eq!(libc.file_offset(0x7f1000029000), 0x29000);

        assert_eq!(
            maps.find(0x7f0000000010).map(|m| &m.backing),
            Some(&Backing::Other)
        );
        assert_eq!(
            maps.find(0x7f3000000010).and_then(Mapping::module),
            Some("gone")
        );
        assert_eq!(
            maps.find(0x7f4000000010).map(|m| &m.backing),
            Some(&Backing::Other)
        );
        assert_eq!(
            maps.find(0x7ffd0000a010).map(|m| &m.backing),
            Some(&Backing::Vdso)
        );
        assert_eq!(
            maps.find(0x7f5000000010),
            None,
            "line without newline is dropped"
        );
        assert_eq!(maps.find(0x10), None);
        assert_eq!(maps.find(u64::MAX), None);
    }

    #[test]
    fn own_maps_are_readable() {
        let maps = read(std::process::id()).expect("own maps");
        let here = own_maps_are_readable as *const () as usize as u64;
        assert!(
            matches!(
                maps.find(here).map(|m| &m.backing),
                Some(Backing::File { .. })
            ),
            "{maps:?}"
        );
        assert!(!maps.truncated);
    }
}
