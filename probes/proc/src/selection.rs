//! Which processes to track: a pid list (`-f`), a whitelist (`-w`), both, or every process
//! ([`Selection`], from the command line); or, while the daemon's snoopers say so over the
//! control channel, exactly some pids or all but some pids ([`Active`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use probe_sdk::control::{Snoop, SnoopMode};
use probe_sdk::whitelist::{cmdline_text, Whitelist};

/// How the BPF side reads its filter of tgids (`enum filter_mode` in `src/bpf/intf.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterMode {
    /// Every process is tracked; the filter is unused.
    All,
    /// The filter lists the tracked processes.
    Include,
    /// The filter lists the processes not tracked.
    Exclude,
}

/// The selection in force.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Active {
    /// The command line's ([`Selection`]).
    #[default]
    CmdLine,
    /// The daemon's snoopers: exactly these processes.
    Include(BTreeSet<u32>),
    /// The daemon's snoopers: every process but these.
    Exclude(BTreeSet<u32>),
}

impl Active {
    /// The selection a control message's `snoop` asks for (`all`: back to the command line).
    pub fn from_snoop(snoop: &Snoop) -> Active {
        let pids = || snoop.pids.iter().copied().filter(|&p| p != 0).collect();
        match snoop.mode {
            SnoopMode::All => Active::CmdLine,
            SnoopMode::Include => Active::Include(pids()),
            SnoopMode::Exclude => Active::Exclude(pids()),
        }
    }

    /// How BPF reads its filter under this selection (`cmdline` is the command line's).
    pub fn filter_mode(&self, cmdline: &Selection) -> FilterMode {
        match self {
            Active::CmdLine if cmdline.is_all() => FilterMode::All,
            Active::CmdLine | Active::Include(_) => FilterMode::Include,
            Active::Exclude(_) => FilterMode::Exclude,
        }
    }

    /// The processes to track right now when they are listed (`Include` filter mode): the
    /// command line's scan, or the included pids that are alive. None in the other modes.
    pub fn wanted(&self, cmdline: &Selection) -> Option<BTreeSet<u32>> {
        match self {
            Active::CmdLine if cmdline.is_all() => None,
            Active::CmdLine => Some(cmdline.scan()),
            Active::Include(pids) => Some(
                pids.iter()
                    .copied()
                    .filter(|p| cmdline.proc_root().join(p.to_string()).is_dir())
                    .collect(),
            ),
            Active::Exclude(_) => None,
        }
    }

    /// The excluded pids (empty unless `Exclude`).
    pub fn excluded(&self) -> BTreeSet<u32> {
        match self {
            Active::Exclude(pids) => pids.clone(),
            _ => BTreeSet::new(),
        }
    }

    /// Whether the command line's whitelist decides (exec notices, inherited forks).
    pub fn uses_whitelist(&self, cmdline: &Selection) -> bool {
        *self == Active::CmdLine && cmdline.has_whitelist()
    }

    /// A listed process exited: it is not tracked again even if its number is reused.
    pub fn forget_pid(&mut self, cmdline: &mut Selection, pid: u32) {
        match self {
            Active::CmdLine => cmdline.forget_pid(pid),
            Active::Include(pids) => {
                pids.remove(&pid);
            }
            Active::Exclude(_) => {}
        }
    }

    /// For the log: `command-line selection`, `include 2 pids`, `exclude 1 pid`.
    pub fn describe(&self) -> String {
        let n = |pids: &BTreeSet<u32>| {
            let s = if pids.len() == 1 { "" } else { "s" };
            format!("{} pid{s}", pids.len())
        };
        match self {
            Active::CmdLine => "command-line selection".to_string(),
            Active::Include(p) => format!("include {}", n(p)),
            Active::Exclude(p) => format!("exclude {}", n(p)),
        }
    }
}

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
    /// Builds the selection; `proc_root` is the host's procfs, `probe_sdk::host::path("/proc")`.
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
    fn snoop_modes_map_to_filter_modes() {
        let dir = tempfile::tempdir().unwrap();
        fake_proc(dir.path(), 10, "a", b"a\0");
        fake_proc(dir.path(), 20, "b", b"b\0");
        let all = Selection::new(&[], None, dir.path());
        let listed = Selection::new(&[20], None, dir.path());
        let snoop = |mode, pids: &[u32]| Snoop {
            mode,
            pids: pids.to_vec(),
        };

        let cmd = Active::from_snoop(&snoop(SnoopMode::All, &[10]));
        assert_eq!(cmd, Active::CmdLine);
        assert_eq!(cmd.filter_mode(&all), FilterMode::All);
        assert_eq!(cmd.wanted(&all), None);
        assert_eq!(cmd.filter_mode(&listed), FilterMode::Include);
        assert_eq!(cmd.wanted(&listed), Some(BTreeSet::from([20])));

        // Include replaces the command line's pids; dead and zero pids are not wanted.
        let inc = Active::from_snoop(&snoop(SnoopMode::Include, &[0, 10, 99]));
        assert_eq!(inc, Active::Include(BTreeSet::from([10, 99])));
        assert_eq!(inc.filter_mode(&all), FilterMode::Include);
        assert_eq!(inc.wanted(&listed), Some(BTreeSet::from([10])));
        assert_eq!(inc.describe(), "include 2 pids");
        assert!(inc.excluded().is_empty());

        let exc = Active::from_snoop(&snoop(SnoopMode::Exclude, &[10]));
        assert_eq!(exc.filter_mode(&listed), FilterMode::Exclude);
        assert_eq!(exc.wanted(&listed), None);
        assert_eq!(exc.excluded(), BTreeSet::from([10]));
        assert_eq!(exc.describe(), "exclude 1 pid");
    }

    #[test]
    fn exited_pids_leave_the_active_selection() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmdline = Selection::new(&[5], None, dir.path());
        let mut inc = Active::Include(BTreeSet::from([5, 6]));
        inc.forget_pid(&mut cmdline, 6);
        assert_eq!(inc, Active::Include(BTreeSet::from([5])));
        assert!(
            cmdline.pids.contains(&5),
            "the command line keeps its own pids"
        );
        let mut cmd = Active::CmdLine;
        cmd.forget_pid(&mut cmdline, 5);
        assert!(cmdline.pids.is_empty());
        let wl = Whitelist::parse_str(r#"application = ( { comm = "x"; cmdline = ""; } );"#, "t")
            .unwrap();
        let with_wl = Selection::new(&[], Some(wl), dir.path());
        assert!(Active::CmdLine.uses_whitelist(&with_wl));
        assert!(!Active::Include(BTreeSet::new()).uses_whitelist(&with_wl));
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
