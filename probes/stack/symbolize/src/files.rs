//! Mapped files shared by the processes that map them, identified by (device, inode) as
//! `/proc/<pid>/maps` lists them (deleted files too): the one path blazesym knows each file by,
//! the processes that use it, and the results of lookups in it by file offset.
//!
//! blazesym caches a parsed file under what `stat` says through the path it was given, so two
//! processes' `map_files` entries for one libc already share one parse; but each path is an entry
//! of its own that holds the parse until evicted. Here a file is handed to blazesym through one
//! `/proc/<pid>/map_files/<range>` entry, that of the process that first needed it (its owner).
//! Another process uses that path once a `stat` through it shows the file blazesym parsed (same
//! device, inode, size and modification time). When it does not (the owner exited, its pid or
//! range was reused) or the owner is known to be gone, the caller's own entry replaces it:
//! blazesym finds what it parsed under the same identity, and the old path is evicted after, so
//! nothing is parsed again.
//!
//! A file offset means the same function whichever process maps the file, so lookup results are
//! kept per (file, offset) for all processes: a hot libc address is resolved once on the host.
//! They are dropped with the file, when the file's `stat` identity changes (rewritten in place),
//! and all at once past the bound.
//!
//! Architecture Invariant: a file is in the table exactly as long as some process's state lists
//! it as used ([`Files::add_user`], [`Files::release`]). Meanwhile its (device, inode) names no
//! other file: those processes map it, and blazesym holds it open. (Only if the last of them
//! exited within the period, after blazesym was recreated, and a new file got the inode and
//! was mapped and sampled before the next `retain`, would that file get its results.)

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use crate::engine::FileStat;
use crate::Resolved;

/// Device and inode of a mapped file, from `/proc/<pid>/maps`.
pub(crate) type FileKey = (u64, u64);

/// What a lookup at one offset of a file gave.
#[derive(Clone, Debug)]
pub(crate) enum FileResult {
    /// The function and its inlined callees.
    Found(Resolved),
    /// No symbol covers the offset (each process then tries its perf map and names the miss).
    NoSymbol,
}

/// The path a file is known to blazesym by.
#[derive(Debug)]
struct Registration {
    path: PathBuf,
    owner: u32,
    /// The owner was dropped: its path does not lead to the file any more.
    owner_gone: bool,
    /// `stat` through the path when it was registered.
    stat: FileStat,
    /// Engine generation that was given the path.
    generation: u64,
}

#[derive(Debug, Default)]
struct SharedFile {
    users: HashSet<u32>,
    registration: Option<Registration>,
    /// The identity the results were made under.
    stat: Option<FileStat>,
    results: HashMap<u64, FileResult>,
}

/// Where to look a file up.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Route {
    pub path: PathBuf,
    /// Look up only if `stat` through `path` says this (a path of another process, or of
    /// another mapping).
    pub expect: Option<FileStat>,
}

/// What registering a path changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Registered {
    /// blazesym had no path to the file: it opened (and will parse) it.
    pub opened: bool,
    /// The path it replaces, to evict from blazesym.
    pub evict: Option<PathBuf>,
}

/// The mapped files of all processes.
#[derive(Debug)]
pub(crate) struct Files {
    files: HashMap<FileKey, SharedFile>,
    /// Sum of the files' results.
    results: usize,
    max_results: usize,
    /// Files registered with the current engine generation.
    registered: usize,
    generation: Option<u64>,
}

impl Files {
    pub fn new(max_results: usize) -> Self {
        Files {
            files: HashMap::new(),
            results: 0,
            max_results: max_results.max(1),
            registered: 0,
            generation: None,
        }
    }

    /// Follows the engine to `generation` (`None`: no worker); a new one knows no path.
    pub fn sync(&mut self, generation: Option<u64>) {
        if generation != self.generation {
            self.generation = generation;
            self.registered = 0;
        }
    }

    /// Files blazesym holds now (one path each).
    pub fn open_files(&self) -> usize {
        self.registered
    }

    /// Results held.
    pub fn results(&self) -> usize {
        self.results
    }

    /// Files in the table.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Notes that `pid` uses the file; true if it did not before.
    pub fn add_user(&mut self, key: FileKey, pid: u32) -> bool {
        self.files.entry(key).or_default().users.insert(pid)
    }

    /// `pid` no longer uses the file. Returns the path to evict from blazesym when nobody does
    /// (the file and its results are dropped).
    pub fn release(&mut self, key: FileKey, pid: u32) -> Option<PathBuf> {
        let file = self.files.get_mut(&key)?;
        file.users.remove(&pid);
        if !file.users.is_empty() {
            if let Some(reg) = file.registration.as_mut().filter(|r| r.owner == pid) {
                reg.owner_gone = true;
            }
            return None;
        }
        let file = self.files.remove(&key)?;
        self.results -= file.results.len();
        let reg = file.registration?;
        if Some(reg.generation) != self.generation {
            return None;
        }
        self.registered -= 1;
        Some(reg.path)
    }

    /// The result cached for `offset` of the file.
    pub fn result(&self, key: FileKey, offset: u64) -> Option<&FileResult> {
        self.files.get(&key)?.results.get(&offset)
    }

    /// Caches a result of a file in the table. Returns true if the bound was reached and all
    /// results were dropped first.
    pub fn insert_result(&mut self, key: FileKey, offset: u64, result: FileResult) -> bool {
        let Some(file) = self.files.get(&key) else {
            return false;
        };
        let reset = self.results >= self.max_results && !file.results.contains_key(&offset);
        if reset {
            for file in self.files.values_mut() {
                file.results.clear();
            }
            self.results = 0;
        }
        if let Some(file) = self.files.get_mut(&key) {
            if file.results.insert(offset, result).is_none() {
                self.results += 1;
            }
        }
        reset
    }

    /// The path to look the file up through, for a caller whose own `map_files` entry for it
    /// is `own`.
    pub fn route(&self, key: FileKey, own: PathBuf) -> Route {
        match self.live_registration(key) {
            Some(reg) if !reg.owner_gone && reg.path != own => Route {
                path: reg.path.clone(),
                expect: Some(reg.stat),
            },
            _ => Route {
                path: own,
                expect: None,
            },
        }
    }

    /// Records that blazesym was given the file through `path`, where `stat` said `stat`: the
    /// path it knows the file by, or else the `map_files` entry of `pid`, which replaces it.
    /// Results made under another identity (the file was rewritten in place) are dropped.
    pub fn registered(
        &mut self,
        key: FileKey,
        path: PathBuf,
        pid: u32,
        stat: Option<FileStat>,
    ) -> Registered {
        // Without a stat blazesym failed before it took the path.
        let (Some(stat), Some(generation)) = (stat, self.generation) else {
            return Registered::default();
        };
        let Some(file) = self.files.get_mut(&key) else {
            return Registered::default();
        };
        if file.stat.is_some_and(|was| was != stat) {
            self.results -= file.results.len();
            file.results.clear();
        }
        file.stat = Some(stat);
        let new = Registration {
            path,
            owner: pid,
            owner_gone: false,
            stat,
            generation,
        };
        match file.registration.as_mut() {
            Some(reg) if reg.generation == generation && reg.path == new.path => {
                reg.stat = stat;
                Registered::default()
            }
            Some(reg) if reg.generation == generation => {
                let old = std::mem::replace(reg, new);
                Registered {
                    opened: false,
                    evict: Some(old.path),
                }
            }
            _ => {
                file.registration = Some(new);
                self.registered += 1;
                Registered {
                    opened: true,
                    evict: None,
                }
            }
        }
    }

    fn live_registration(&self, key: FileKey) -> Option<&Registration> {
        let reg = self.files.get(&key)?.registration.as_ref()?;
        (Some(reg.generation) == self.generation).then_some(reg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ResolvedFrame;

    const LIBC: FileKey = (8, 99);

    fn stat(size: u64) -> FileStat {
        FileStat::for_test(size)
    }

    fn found(name: &str) -> FileResult {
        FileResult::Found(Resolved {
            frames: vec![ResolvedFrame {
                name: name.into(),
                inlined: false,
                jit: false,
            }],
            found: true,
            module: None,
        })
    }

    fn path(pid: u32) -> PathBuf {
        PathBuf::from(format!("/proc/{pid}/map_files/1000-2000"))
    }

    #[test]
    fn one_path_per_file_until_its_owner_goes() {
        let mut files = Files::new(16);
        files.sync(Some(1));
        assert!(files.add_user(LIBC, 10));
        assert!(!files.add_user(LIBC, 10));
        let route = files.route(LIBC, path(10));
        assert_eq!(route.expect, None, "the caller's own path needs no check");
        let reg = files.registered(LIBC, route.path, 10, Some(stat(1)));
        assert_eq!((reg.opened, reg.evict), (true, None));
        assert_eq!(files.open_files(), 1);

        // Another process goes through the owner's path, checked.
        files.add_user(LIBC, 11);
        assert_eq!(
            files.route(LIBC, path(11)),
            Route {
                path: path(10),
                expect: Some(stat(1))
            }
        );

        let reg = files.registered(LIBC, path(10), 11, Some(stat(1)));
        assert_eq!(reg, Registered::default(), "through the owner's path");

        // The owner goes: the next caller registers its own path and the old one is evicted.
        assert_eq!(files.release(LIBC, 10), None, "11 still uses it");
        assert_eq!(files.route(LIBC, path(11)).path, path(11));
        let reg = files.registered(LIBC, path(11), 11, Some(stat(1)));
        assert_eq!((reg.opened, reg.evict), (false, Some(path(10))));
        assert_eq!(files.open_files(), 1);

        // The last user goes: its path is evicted, the file dropped.
        assert_eq!(files.release(LIBC, 11), Some(path(11)));
        assert_eq!((files.len(), files.open_files()), (0, 0));
        assert_eq!(files.release(LIBC, 11), None);
    }

    #[test]
    fn a_new_engine_generation_knows_no_path() {
        let mut files = Files::new(16);
        files.sync(Some(1));
        files.add_user(LIBC, 10);
        files.registered(LIBC, path(10), 10, Some(stat(1)));
        files.add_user(LIBC, 11);
        files.sync(None);
        assert_eq!(files.open_files(), 0);
        files.sync(Some(2));
        assert_eq!(
            files.route(LIBC, path(11)).path,
            path(11),
            "not the old path"
        );
        let reg = files.registered(LIBC, path(11), 11, Some(stat(1)));
        assert_eq!((reg.opened, reg.evict), (true, None));
        assert_eq!(files.release(LIBC, 10), None);
        assert_eq!(files.release(LIBC, 11), Some(path(11)));

        // A path of an older generation is not evicted from the new worker.
        files.add_user(LIBC, 12);
        files.registered(LIBC, path(12), 12, Some(stat(1)));
        files.sync(Some(3));
        assert_eq!(files.release(LIBC, 12), None);
        assert_eq!(files.open_files(), 0);
    }

    #[test]
    fn results_are_shared_bounded_and_follow_the_file() {
        let mut files = Files::new(2);
        files.sync(Some(1));
        assert!(
            !files.insert_result(LIBC, 1, found("a")),
            "unknown file: ignored"
        );
        assert_eq!(files.results(), 0);
        files.add_user(LIBC, 10);
        files.registered(LIBC, path(10), 10, Some(stat(1)));
        assert!(!files.insert_result(LIBC, 1, found("a")));
        assert!(!files.insert_result(LIBC, 2, FileResult::NoSymbol));
        assert!(
            !files.insert_result(LIBC, 2, FileResult::NoSymbol),
            "same key"
        );
        assert!(files.insert_result(LIBC, 3, found("c")), "bound reached");
        assert_eq!(files.results(), 1);
        assert!(files.result(LIBC, 1).is_none());
        assert!(matches!(files.result(LIBC, 3), Some(FileResult::Found(_))));

        // Rewritten in place: what was resolved before is stale.
        files.registered(LIBC, path(10), 10, Some(stat(2)));
        assert_eq!(files.results(), 0);
        files.insert_result(LIBC, 3, found("c"));
        files.add_user(LIBC, 11);
        files.release(LIBC, 10);
        assert!(files.result(LIBC, 3).is_some(), "11 still maps it");
        files.release(LIBC, 11);
        assert_eq!(files.results(), 0);
        assert!(files.result(LIBC, 3).is_none());
    }

    #[test]
    fn a_failed_stat_registers_nothing() {
        let mut files = Files::new(4);
        files.sync(Some(1));
        files.add_user(LIBC, 10);
        assert_eq!(
            files.registered(LIBC, path(10), 10, None),
            Registered::default()
        );
        assert_eq!(files.open_files(), 0);
        assert_eq!(files.release(LIBC, 10), None);
    }
}
