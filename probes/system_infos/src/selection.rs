//! Which processes `system_proc` reports: the whitelist decision per process, remembered between
//! cycles so that a host with hundreds of processes is not re-read every period.
//!
//! Every cycle lists `/proc` (one `getdents` pass). A process is identified by its pid and the
//! inode number of its `/proc/<pid>` directory, which a new process with a reused pid does not
//! share. Known processes keep their decision; new ones are judged by the whitelist
//! (`comm`, then `cmdline`). Every [`FULL_SCAN_EVERY`] cycles all processes are judged again
//! with `Whitelist::scan`, which catches a process that `exec`ed into a whitelisted program
//! after it was judged (its pid and directory stay the same) within that many periods.

use crate::source::{read_bytes_into, read_into, Reader};
use probe_sdk::whitelist::{cmdline_text, Whitelist};
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::DirEntryExt;
use std::path::Path;

/// Cycles between two full re-evaluations of every process.
pub const FULL_SCAN_EVERY: u64 = 6;

#[derive(Debug, Clone, Copy)]
struct Known {
    ino: u64,
    selected: bool,
}

/// Remembered whitelist decisions.
#[derive(Debug, Default)]
pub struct ProcSelection {
    known: HashMap<u32, Known>,
    cycle: u64,
}

impl ProcSelection {
    /// Forgets every decision (the whitelist changed): the next cycle judges all processes.
    pub fn reset(&mut self) {
        self.known.clear();
        self.cycle = 0;
    }

    /// The selected pids under `proc_root`, ascending.
    pub fn select(&mut self, wl: &Whitelist, proc_root: &Path, r: &mut Reader) -> Vec<u32> {
        let Ok(dir) = std::fs::read_dir(proc_root) else {
            r.errors.failed(proc_root, &"cannot list");
            return Vec::new();
        };
        let listing: Vec<(u32, u64)> = dir
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name();
                let name = name.to_str()?;
                // Upstream's rule: process directories start with 1-9.
                (!name.starts_with('0')).then_some(())?;
                Some((name.parse::<u32>().ok()?, e.ino()))
            })
            .collect();
        // The full scan lists /proc again; a process born in between is not in `listing` and is
        // judged next cycle, one that exited in between is simply gone.
        let full: Option<HashSet<u32>> = self
            .cycle
            .is_multiple_of(FULL_SCAN_EVERY)
            .then(|| wl.scan(proc_root).into_iter().collect());
        self.cycle += 1;

        let mut next = HashMap::with_capacity(listing.len());
        let mut selected = Vec::new();
        for (pid, ino) in listing {
            let decision = match (&full, self.known.get(&pid)) {
                (Some(set), _) => set.contains(&pid),
                (None, Some(k)) if k.ino == ino => k.selected,
                (None, _) => judge(wl, proc_root, pid, r),
            };
            next.insert(
                pid,
                Known {
                    ino,
                    selected: decision,
                },
            );
            if decision {
                selected.push(pid);
            }
        }
        self.known = next;
        selected.sort_unstable();
        selected
    }
}

/// The whitelist decision for one process (not selected if it vanished meanwhile).
fn judge(wl: &Whitelist, proc_root: &Path, pid: u32, r: &mut Reader) -> bool {
    let dir = proc_root.join(pid.to_string());
    if read_into(&dir.join("comm"), &mut r.buf).is_err() {
        return false;
    }
    let comm = r.buf.trim_end_matches('\n').to_string();
    if read_bytes_into(&dir.join("cmdline"), &mut r.bytes).is_err() {
        return false;
    }
    wl.selects(&comm, &cmdline_text(&r.bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_proc(root: &Path, pid: u32, comm: &str, cmdline: &[u8]) {
        let d = root.join(pid.to_string());
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("comm"), format!("{comm}\n")).unwrap();
        std::fs::write(d.join("cmdline"), cmdline).unwrap();
    }

    #[test]
    fn decisions_are_remembered_until_the_next_full_scan() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let wl = Whitelist::parse_str(
            "application = ( { comm = \"^app$\"; cmdline = \"--serve\"; } );",
            "test",
        )
        .unwrap();
        fake_proc(root, 10, "app", b"app\0--serve\0");
        fake_proc(root, 11, "app", b"app\0--other\0");
        std::fs::create_dir_all(root.join("0bogus")).unwrap();
        let mut sel = ProcSelection::default();
        let mut r = Reader::default();
        assert_eq!(sel.select(&wl, root, &mut r), vec![10]);

        // A new process is judged at once.
        fake_proc(root, 12, "app", b"app\0--serve\0");
        assert_eq!(sel.select(&wl, root, &mut r), vec![10, 12]);

        // 11 exec()s into a selected command line: same pid, same directory, remembered
        // decision until the next full scan.
        std::fs::write(root.join("11/cmdline"), b"app\0--serve\0").unwrap();
        for _ in 2..FULL_SCAN_EVERY {
            assert_eq!(sel.select(&wl, root, &mut r), vec![10, 12]);
        }
        assert_eq!(sel.select(&wl, root, &mut r), vec![10, 11, 12]);

        // A pid reused by another process has a new directory: judged again at once.
        // (Built beside the old one and renamed, so the file system cannot recycle the inode.)
        fake_proc(root, 99, "app", b"app\0--other\0");
        std::fs::remove_dir_all(root.join("10")).unwrap();
        std::fs::rename(root.join("99"), root.join("10")).unwrap();
        assert_eq!(sel.select(&wl, root, &mut r), vec![11, 12]);

        // Exited processes disappear; a reset judges everything again.
        std::fs::remove_dir_all(root.join("12")).unwrap();
        sel.reset();
        assert_eq!(sel.select(&wl, root, &mut r), vec![11]);
    }
}
