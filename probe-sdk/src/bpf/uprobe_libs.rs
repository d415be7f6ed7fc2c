//! Which shared library a set of uprobes is attached to: the library each traced process maps
//! (libssl for l7probe's TLS hooks, libc for taskprobe's DNS hooks), found in
//! `/proc/<pid>/maps` and opened through `/proc/<pid>/root` (so a container's own library is
//! the one probed). With a process list (include snooper) each process gets its own uprobes
//! (filtered by pid: other processes of the same library pay nothing); otherwise every distinct
//! library file gets one set for all its processes, and the kernel's process filter decides.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use libbpf_rs::Link;

use crate::decl::{Snoop, SnoopMode};

/// Most uprobe sets attached at once (an include snooper of many processes gets one set per
/// process).
pub const MAX_TARGETS: usize = 1024;

/// A library file: device and inode, as `/proc/<pid>/maps` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LibId {
    dev: u64,
    ino: u64,
}

/// What one set of uprobes is attached for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Target {
    /// One process and its library.
    Process(u32, LibId),
    /// Every process mapping the library.
    Library(LibId),
}

/// Attaches each `(program, function, retprobe)` of `hooks` to the library at `path` (for
/// process `pid`, or every process mapping it when `pid` is -1). A function the library lacks
/// is skipped; none attached at all is the last error.
pub fn attach_functions(
    hooks: &[(&libbpf_rs::ProgramMut<'_>, &str, bool)],
    pid: i32,
    path: &std::path::Path,
) -> Result<Vec<Link>, libbpf_rs::Error> {
    let mut links = Vec::new();
    let mut last = None;
    for &(prog, func, retprobe) in hooks {
        let opts = libbpf_rs::UprobeOpts {
            retprobe,
            func_name: Some(func.to_string()),
            ..Default::default()
        };
        match prog.attach_uprobe_with_opts(pid, path, 0, opts) {
            Ok(l) => links.push(l),
            Err(e) => last = Some(e),
        }
    }
    match (links.is_empty(), last) {
        (true, Some(e)) => Err(e),
        _ => Ok(links),
    }
}

/// Which library a [`LibHooks`] attaches to: true for the file name (last path component) of
/// the library, e.g. `libssl.so.3`.
pub type LibMatcher = fn(&str) -> bool;

/// The library `matches` selects among those process `pid` maps: its id and the path to open
/// it with (the host's /proc, `GOPHER_HOST_PATH`).
pub fn lib_of(pid: u32, matches: LibMatcher) -> Option<(LibId, PathBuf)> {
    let maps = std::fs::read_to_string(crate::host::path(format!("/proc/{pid}/maps"))).ok()?;
    lib_in_maps(&maps, matches)
        .map(|(id, path)| (id, crate::host::path(format!("/proc/{pid}/root{path}"))))
}

/// The first line of a maps text whose file `matches`: id and the library's path in the
/// process's root.
pub fn lib_in_maps(maps: &str, matches: LibMatcher) -> Option<(LibId, String)> {
    for line in maps.lines() {
        let mut it = line.split_whitespace();
        let (Some(_), Some(_), Some(_), Some(dev), Some(ino), Some(path)) = (
            it.next(),
            it.next(),
            it.next(),
            it.next(),
            it.next(),
            it.next(),
        ) else {
            continue;
        };
        let name = path.rsplit('/').next().unwrap_or(path);
        if !matches(name) || !path.starts_with('/') {
            continue;
        }
        let (maj, min) = dev.split_once(':')?;
        let dev = (u64::from_str_radix(maj, 16).ok()? << 20) | u64::from_str_radix(min, 16).ok()?;
        let ino = ino.parse().ok()?;
        return Some((LibId { dev, ino }, path.to_string()));
    }
    None
}

/// The attached uprobes and the processes already looked at.
pub struct LibHooks {
    matches: LibMatcher,
    /// What the library is, for messages (`libssl`).
    what: &'static str,
    attached: HashMap<Target, Vec<Link>>,
    /// Processes whose maps were read (pid -> its library), so a scan reads new ones only.
    seen: HashMap<u32, Option<(LibId, PathBuf)>>,
    /// Targets that failed to attach (not retried until their process is gone).
    failed: HashSet<Target>,
}

impl std::fmt::Debug for LibHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibHooks")
            .field("what", &self.what)
            .field("attached", &self.attached.len())
            .finish_non_exhaustive()
    }
}

impl LibHooks {
    /// Nothing attached yet; `matches` picks the library (`what` names it in messages).
    pub fn new(what: &'static str, matches: LibMatcher) -> LibHooks {
        LibHooks {
            matches,
            what,
            attached: HashMap::new(),
            seen: HashMap::new(),
            failed: HashSet::new(),
        }
    }

    /// Number of uprobe sets attached.
    pub fn attached(&self) -> usize {
        self.attached.len()
    }

    /// Whether process `pid` maps the library, as of the last [`LibHooks::sync`] that looked at
    /// it.
    pub fn maps_lib(&self, pid: u32) -> bool {
        matches!(self.seen.get(&pid), Some(Some(_)))
    }

    /// Detaches everything.
    pub fn clear(&mut self) {
        self.attached.clear();
        self.seen.clear();
        self.failed.clear();
    }

    /// Makes the attachments match `snoop`; `attach` attaches one set (pid -1: all
    /// processes). Returns the errors of new attachments (each reported once).
    pub fn sync(
        &mut self,
        snoop: &Snoop,
        mut attach: impl FnMut(i32, &std::path::Path) -> Result<Vec<Link>, String>,
    ) -> Vec<String> {
        let pids: Vec<u32> = match snoop.mode {
            SnoopMode::Include => snoop.pids.clone(),
            SnoopMode::All | SnoopMode::Exclude => all_pids(),
        };
        let alive: HashSet<u32> = pids.iter().copied().collect();
        self.seen.retain(|pid, _| alive.contains(pid));
        let mut want: HashMap<Target, (i32, PathBuf)> = HashMap::new();
        for pid in pids {
            if snoop.mode == SnoopMode::Exclude && !snoop.selects(pid) {
                continue;
            }
            let matches = self.matches;
            let lib = self.seen.entry(pid).or_insert_with(|| lib_of(pid, matches));
            let Some((id, path)) = lib else { continue };
            let target = match snoop.mode {
                SnoopMode::Include => Target::Process(pid, *id),
                _ => Target::Library(*id),
            };
            let pid_arg = match target {
                Target::Process(p, _) => i32::try_from(p).unwrap_or(-1),
                Target::Library(_) => -1,
            };
            want.entry(target).or_insert((pid_arg, path.clone()));
        }
        self.attached.retain(|t, _| want.contains_key(t));
        self.failed.retain(|t| want.contains_key(t));
        let mut errors = Vec::new();
        for (target, (pid, path)) in want {
            if self.attached.contains_key(&target) || self.failed.contains(&target) {
                continue;
            }
            if self.attached.len() >= MAX_TARGETS {
                errors.push(format!(
                    "{}: not probed, {MAX_TARGETS} {} targets already are",
                    path.display(),
                    self.what
                ));
                self.failed.insert(target);
                continue;
            }
            match attach(pid, &path) {
                Ok(links) => {
                    self.attached.insert(target, links);
                }
                Err(e) => {
                    errors.push(format!("{}: {e}", path.display()));
                    self.failed.insert(target);
                }
            }
        }
        errors
    }
}

/// Every process id in /proc.
fn all_pids() -> Vec<u32> {
    std::fs::read_dir(crate::host::path("/proc"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_libssl_in_maps() {
        let maps = "\
55d0c0a00000-55d0c0a2e000 r--p 00000000 08:01 1234 /usr/sbin/nginx
7f3a0cf6c000-7f3a0cf8a000 r--p 00000000 fd:01 5678 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f3a0cf8a000-7f3a0cfe8000 r-xp 0001e000 fd:01 5678 /usr/lib/x86_64-linux-gnu/libssl.so.3
7ffd1c3f0000-7ffd1c411000 rw-p 00000000 00:00 0 [stack]
";
        let libssl: LibMatcher = |n| n.starts_with("libssl.so");
        let (id, path) = lib_in_maps(maps, libssl).unwrap();
        assert_eq!(path, "/usr/lib/x86_64-linux-gnu/libssl.so.3");
        assert_eq!(
            id,
            LibId {
                dev: (0xfd << 20) | 1,
                ino: 5678
            }
        );
        assert_eq!(
            lib_in_maps("7f-8f r--p 0 08:01 1 /usr/lib/libcrypto.so.3\n", libssl),
            None
        );
        assert_eq!(lib_in_maps("garbage\n\n", libssl), None);
    }

    #[test]
    fn the_test_process_libssl_is_found_or_absent_cleanly() {
        // This test binary does not link libssl: nothing found, no error.
        let libssl: LibMatcher = |n| n.starts_with("libssl.so");
        assert!(lib_of(std::process::id(), libssl).is_none());
        assert!(lib_of(u32::MAX, libssl).is_none());
    }
}
