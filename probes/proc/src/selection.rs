//! Which processes to track: a pid list (`-f`), a whitelist (`-w`), both, or every process.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use probe_sdk::whitelist::{cmdline_text, Whitelist};

/// The user's process selection.
#[derive(Debug)]
pub struct Selection {
    /// Fixed at start: forgetting the last listed pid must not turn the probe into "track all".
    all: bool,
    pids: BTreeSet<u32>,
    whitelist: Option<Whitelist>,
    proc_root: PathBuf,
}

/// A process's identity as the whitelist sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcIdentity {
    /// `/proc/<pid>/comm` without the newline.
    pub comm: String,
    /// `/proc/<pid>/cmdline` as the whitelist matches it (arguments joined by spaces).
    pub cmdline: String,
}

/// Reads `<proc_root>/<pid>/comm` and `cmdline`; None if the process is gone.
pub fn identity(proc_root: &Path, pid: u32) -> Option<ProcIdentity> {
    let dir = proc_root.join(pid.to_string());
    let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
    let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
    Some(ProcIdentity {
        comm: comm.trim_end_matches('\n').to_string(),
        cmdline: cmdline_text(&cmdline),
    })
}

/// Every user-space process under `proc_root` with its comm (kernel threads, whose
/// `/proc/<pid>/stat` flags carry `PF_KTHREAD`, and processes gone meanwhile are left out).
pub fn user_processes(proc_root: &Path) -> Vec<(u32, String)> {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let Ok(dir) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut out: Vec<(u32, String)> = dir
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != 0)
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(proc_root.join(format!("{pid}/stat"))).ok()?;
            // Fields after the last ')' (comm may hold anything): state ppid pgrp session
            // tty_nr tpgid flags ...
            let (head, rest) = stat.rsplit_once(')')?;
            let flags: u64 = rest.split_whitespace().nth(6)?.parse().ok()?;
            if flags & PF_KTHREAD != 0 {
                return None;
            }
            let comm = head.split_once('(')?.1.to_string();
            Some((pid, comm))
        })
        .collect();
    out.sort_unstable();
    out
}

impl Selection {
    /// Builds the selection; `proc_root` is normally `/proc`.
    pub fn new(pids: &[u32], whitelist: Option<Whitelist>, proc_root: &Path) -> Selection {
        let pids: BTreeSet<u32> = pids.iter().copied().filter(|&p| p != 0).collect();
        Selection {
            all: pids.is_empty() && whitelist.is_none(),
            pids,
            whitelist,
            proc_root: proc_root.to_path_buf(),
        }
    }

    /// Neither pids nor a whitelist: every process is tracked (BPF filters nothing).
    pub fn is_all(&self) -> bool {
        self.all
    }

    /// Whether a whitelist is in use (exec notices and periodic rescans are needed).
    pub fn has_whitelist(&self) -> bool {
        self.whitelist.is_some()
    }

    /// The /proc tree this selection reads.
    pub fn proc_root(&self) -> &Path {
        &self.proc_root
    }

    /// Processes selected right now: listed pids that are alive, plus whitelist matches.
    pub fn scan(&self) -> BTreeSet<u32> {
        let mut out: BTreeSet<u32> = self
            .pids
            .iter()
            .copied()
            .filter(|p| self.proc_root.join(p.to_string()).is_dir())
            .collect();
        if let Some(wl) = &self.whitelist {
            out.extend(wl.scan(&self.proc_root));
        }
        out
    }

    /// Whether the process `pid` with identity `id` is selected.
    pub fn selects(&self, pid: u32, id: &ProcIdentity) -> bool {
        self.pids.contains(&pid)
            || self
                .whitelist
                .as_ref()
                .is_some_and(|wl| wl.selects(&id.comm, &id.cmdline))
    }

    /// A listed pid exited: it is not tracked again even if the number is reused.
    pub fn forget_pid(&mut self, pid: u32) {
        self.pids.remove(&pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_proc(dir: &Path, pid: u32, comm: &str, cmdline: &[u8]) {
        let p = dir.join(pid.to_string());
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("comm"), format!("{comm}\n")).unwrap();
        std::fs::write(p.join("cmdline"), cmdline).unwrap();
    }

    #[test]
    fn identity_reads_comm_and_cmdline() {
        let dir = tempfile::tempdir().unwrap();
        fake_proc(dir.path(), 10, "nginx", b"nginx\0-g\0daemon off;\0");
        let id = identity(dir.path(), 10).unwrap();
        assert_eq!(id.comm, "nginx");
        assert_eq!(id.cmdline, "nginx -g daemon off;");
        assert!(identity(dir.path(), 11).is_none());
    }

    #[test]
    fn pids_and_whitelist_combine() {
        let dir = tempfile::tempdir().unwrap();
        fake_proc(dir.path(), 10, "nginx", b"nginx\0");
        fake_proc(dir.path(), 20, "redis-server", b"redis-server\0*:6379\0");
        fake_proc(dir.path(), 30, "bash", b"bash\0");
        let wl = Whitelist::parse_str(
            r#"application = ( { comm = "^redis"; cmdline = ""; } );"#,
            "test",
        )
        .unwrap();
        let sel = Selection::new(&[10, 99], Some(wl), dir.path());
        assert!(!sel.is_all());
        // 99 is listed but not alive.
        assert_eq!(sel.scan().into_iter().collect::<Vec<_>>(), vec![10, 20]);
        let bash = identity(dir.path(), 30).unwrap();
        assert!(!sel.selects(30, &bash));
        assert!(
            sel.selects(10, &bash),
            "listed pids are selected whatever their name"
        );
    }

    #[test]
    fn user_processes_skip_kernel_threads_and_odd_comms() {
        let dir = tempfile::tempdir().unwrap();
        let put = |pid: u32, stat: &str| {
            let p = dir.path().join(pid.to_string());
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("stat"), stat).unwrap();
        };
        put(1, "1 (systemd) S 0 1 1 0 -1 4194560 100 0");
        put(2, "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0");
        put(77, "77 (a) b (c)) R 1 77 77 0 -1 4194304 0 0");
        put(78, "78 (broken");
        std::fs::create_dir_all(dir.path().join("self")).unwrap();
        assert_eq!(
            user_processes(dir.path()),
            vec![(1, "systemd".to_string()), (77, "a) b (c)".to_string())]
        );
    }

    #[test]
    fn nothing_given_means_all() {
        let sel = Selection::new(&[], None, Path::new("/proc"));
        assert!(sel.is_all());
        assert!(!sel.has_whitelist());
    }

    #[test]
    fn forgotten_pid_is_not_rescanned() {
        let dir = tempfile::tempdir().unwrap();
        fake_proc(dir.path(), 10, "a", b"a\0");
        let mut sel = Selection::new(&[10], None, dir.path());
        assert_eq!(sel.scan().len(), 1);
        sel.forget_pid(10);
        assert!(sel.scan().is_empty());
        assert!(!sel.is_all(), "still a pid selection, now empty");
    }
}
