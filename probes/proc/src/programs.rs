//! Which BPF programs are loaded and which are attached. Every program whose hook exists is
//! loaded at start (loading costs nothing per event); the plan decides which are attached, and
//! a new plan from the control channel attaches and detaches programs without reloading, so
//! the `sys_exit` toll is paid only while syscall counts are asked for. `sched_process_hang` is
//! optional: a kernel without it (no hung-task detector) runs the plans that want it without it,
//! and `hang_count` stays 0; so are the page-cache and reclaim programs of `proc_page` (a field
//! whose tracepoint the kernel lacks stays 0).

use libbpf_rs::{Link, OpenProgramMut, ProgramMut};

use crate::hooks::{BlockStart, Plan};
use crate::knobs::Knobs;
use crate::skel::{OpenProcProgs, ProcProgs};

/// One program of `proc.bpf.c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prog {
    /// `sched_process_fork`
    Fork,
    /// `sched_process_exec`
    Exec,
    /// `sched_process_exit`
    Exit,
    /// `sys_enter`
    SysEnter,
    /// `sys_exit`
    SysExit,
    /// `sched_switch`
    SchedSwitch,
    /// `block_io_start`
    IoStart,
    /// `block_rq_issue`
    RqIssue,
    /// `block_rq_complete`
    RqComplete,
    /// `sched_process_hang` (optional)
    Hang,
    /// `sched_migrate_task` (`thread_cpu`)
    Migrate,
    /// `mm_filemap_add_to_page_cache` (optional, `proc_page`)
    PcLoad,
    /// `writeback_dirty_folio` (optional, `proc_page`)
    PcPageDirty,
    /// `block_dirty_buffer` (optional, `proc_page`)
    PcBufferDirty,
    /// `mm_filemap_get_pages` (optional, `proc_page`)
    PcGetPages,
    /// `mm_filemap_map_pages` (optional, `proc_page`)
    PcMapPages,
    /// `mm_filemap_fault` (optional, `proc_page`)
    PcFault,
    /// `mm_vmscan_direct_reclaim_begin` (optional, `proc_page`)
    ReclaimBegin,
    /// `mm_vmscan_direct_reclaim_end` (optional, `proc_page`)
    ReclaimEnd,
    /// `mm_vmscan_memcg_reclaim_begin` (optional, `proc_page`)
    MemcgReclaimBegin,
    /// `mm_vmscan_memcg_reclaim_end` (optional, `proc_page`)
    MemcgReclaimEnd,
}

/// Number of programs.
const NR: usize = 21;

impl Prog {
    /// Every program, in attach order.
    pub const ALL: [Prog; NR] = [
        Prog::Fork,
        Prog::Exec,
        Prog::Exit,
        Prog::SysEnter,
        Prog::SysExit,
        Prog::SchedSwitch,
        Prog::IoStart,
        Prog::RqIssue,
        Prog::RqComplete,
        Prog::Hang,
        Prog::Migrate,
        Prog::PcLoad,
        Prog::PcPageDirty,
        Prog::PcBufferDirty,
        Prog::PcGetPages,
        Prog::PcMapPages,
        Prog::PcFault,
        Prog::ReclaimBegin,
        Prog::ReclaimEnd,
        Prog::MemcgReclaimBegin,
        Prog::MemcgReclaimEnd,
    ];

    /// The raw tracepoint the program attaches to.
    pub fn hook(self) -> &'static str {
        match self {
            Prog::Fork => "sched_process_fork",
            Prog::Exec => "sched_process_exec",
            Prog::Exit => "sched_process_exit",
            Prog::SysEnter => "sys_enter",
            Prog::SysExit => "sys_exit",
            Prog::SchedSwitch => "sched_switch",
            Prog::IoStart => "block_io_start",
            Prog::RqIssue => "block_rq_issue",
            Prog::RqComplete => "block_rq_complete",
            Prog::Hang => "sched_process_hang",
            Prog::Migrate => "sched_migrate_task",
            Prog::PcLoad => "mm_filemap_add_to_page_cache",
            Prog::PcPageDirty => "writeback_dirty_folio",
            Prog::PcBufferDirty => "block_dirty_buffer",
            Prog::PcGetPages => "mm_filemap_get_pages",
            Prog::PcMapPages => "mm_filemap_map_pages",
            Prog::PcFault => "mm_filemap_fault",
            Prog::ReclaimBegin => "mm_vmscan_direct_reclaim_begin",
            Prog::ReclaimEnd => "mm_vmscan_direct_reclaim_end",
            Prog::MemcgReclaimBegin => "mm_vmscan_memcg_reclaim_begin",
            Prog::MemcgReclaimEnd => "mm_vmscan_memcg_reclaim_end",
        }
    }

    /// Whether a plan that wants the program runs without it when the kernel lacks its hook.
    pub fn optional(self) -> bool {
        self == Prog::Hang || self.page_cache()
    }

    /// A program of `proc_page`.
    fn page_cache(self) -> bool {
        self as usize >= Prog::PcLoad as usize
    }

    /// Whether `plan` attaches the program.
    pub fn wanted(self, plan: &Plan) -> bool {
        match self {
            Prog::Fork | Prog::Exec | Prog::Exit => true,
            Prog::SysEnter => plan.sys_enter,
            Prog::SysExit => plan.sys_exit,
            Prog::SchedSwitch => plan.sched_switch,
            Prog::IoStart => plan.block == Some(BlockStart::IoStart),
            Prog::RqIssue => plan.block == Some(BlockStart::RqIssue),
            Prog::RqComplete | Prog::Hang => plan.block.is_some(),
            Prog::Migrate => plan.threads,
            _ => plan.page_cache,
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The loaded program.
    pub fn of<'a, 'obj>(self, p: &'a ProcProgs<'obj>) -> &'a ProgramMut<'obj> {
        match self {
            Prog::Fork => &p.on_fork,
            Prog::Exec => &p.on_exec,
            Prog::Exit => &p.on_exit,
            Prog::SysEnter => &p.on_sys_enter,
            Prog::SysExit => &p.on_sys_exit,
            Prog::SchedSwitch => &p.on_sched_switch,
            Prog::IoStart => &p.on_io_start,
            Prog::RqIssue => &p.on_rq_issue,
            Prog::RqComplete => &p.on_rq_complete,
            Prog::Hang => &p.on_hang,
            Prog::Migrate => &p.on_migrate,
            Prog::PcLoad => &p.on_pc_load,
            Prog::PcPageDirty => &p.on_pc_page_dirty,
            Prog::PcBufferDirty => &p.on_pc_buffer_dirty,
            Prog::PcGetPages => &p.on_pc_get_pages,
            Prog::PcMapPages => &p.on_pc_map_pages,
            Prog::PcFault => &p.on_pc_fault,
            Prog::ReclaimBegin => &p.on_reclaim_begin,
            Prog::ReclaimEnd => &p.on_reclaim_end,
            Prog::MemcgReclaimBegin => &p.on_memcg_reclaim_begin,
            Prog::MemcgReclaimEnd => &p.on_memcg_reclaim_end,
        }
    }

    fn of_open<'a, 'obj>(self, p: &'a mut OpenProcProgs<'obj>) -> &'a mut OpenProgramMut<'obj> {
        match self {
            Prog::Fork => &mut p.on_fork,
            Prog::Exec => &mut p.on_exec,
            Prog::Exit => &mut p.on_exit,
            Prog::SysEnter => &mut p.on_sys_enter,
            Prog::SysExit => &mut p.on_sys_exit,
            Prog::SchedSwitch => &mut p.on_sched_switch,
            Prog::IoStart => &mut p.on_io_start,
            Prog::RqIssue => &mut p.on_rq_issue,
            Prog::RqComplete => &mut p.on_rq_complete,
            Prog::Hang => &mut p.on_hang,
            Prog::Migrate => &mut p.on_migrate,
            Prog::PcLoad => &mut p.on_pc_load,
            Prog::PcPageDirty => &mut p.on_pc_page_dirty,
            Prog::PcBufferDirty => &mut p.on_pc_buffer_dirty,
            Prog::PcGetPages => &mut p.on_pc_get_pages,
            Prog::PcMapPages => &mut p.on_pc_map_pages,
            Prog::PcFault => &mut p.on_pc_fault,
            Prog::ReclaimBegin => &mut p.on_reclaim_begin,
            Prog::ReclaimEnd => &mut p.on_reclaim_end,
            Prog::MemcgReclaimBegin => &mut p.on_memcg_reclaim_begin,
            Prog::MemcgReclaimEnd => &mut p.on_memcg_reclaim_end,
        }
    }
}

/// Which programs are loaded: those whose hook exists (`exists`), and of the two block-start
/// programs only the one the plans use (`block_io_start` when the kernel has it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loaded([bool; NR]);

impl Loaded {
    /// Decides from `exists(hook)`.
    pub fn new(exists: impl Fn(&str) -> bool) -> Loaded {
        let io_start = exists(Prog::IoStart.hook());
        let mut out = [false; NR];
        for p in Prog::ALL {
            out[p.index()] = match p {
                Prog::IoStart => io_start,
                Prog::RqIssue => !io_start && exists(p.hook()),
                _ => exists(p.hook()),
            };
        }
        Loaded(out)
    }

    /// Whether `p` is loaded.
    pub fn has(&self, p: Prog) -> bool {
        self.0[p.index()]
    }

    /// Sets the autoload flags of the opened object.
    pub fn set_autoload(&self, open: &mut OpenProcProgs<'_>) {
        for p in Prog::ALL {
            p.of_open(open).set_autoload(self.has(p));
        }
    }

    /// The hooks `plan` needs whose program is not loaded (the kernel lacks them); optional
    /// programs are not needed.
    pub fn missing(&self, plan: &Plan) -> Vec<&'static str> {
        Prog::ALL
            .into_iter()
            .filter(|p| p.wanted(plan) && !p.optional() && !self.has(*p))
            .map(Prog::hook)
            .collect()
    }

    /// The loaded programs.
    pub fn programs<'a, 'obj>(&self, p: &'a ProcProgs<'obj>) -> Vec<&'a ProgramMut<'obj>> {
        Prog::ALL
            .into_iter()
            .filter(|x| self.has(*x))
            .map(|x| x.of(p))
            .collect()
    }
}

/// The links of the attached programs (dropping a link detaches its program).
#[derive(Default)]
pub struct Attached {
    links: [Option<Link>; NR],
}

impl std::fmt::Debug for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let on: Vec<&str> = Prog::ALL
            .into_iter()
            .filter(|p| self.links[p.index()].is_some())
            .map(Prog::hook)
            .collect();
        f.debug_struct("Attached").field("hooks", &on).finish()
    }
}

impl Attached {
    /// Moves to `plan`: detaches the programs it does not use, sets its knobs (a new
    /// generation), then attaches the loaded programs it adds. The caller has checked with
    /// [`Loaded::missing`] that every program it needs is loaded.
    pub fn apply(
        &mut self,
        progs: &ProcProgs<'_>,
        loaded: &Loaded,
        plan: &Plan,
        knobs: &Knobs<'_>,
    ) -> Result<(), libbpf_rs::Error> {
        for p in Prog::ALL {
            if !p.wanted(plan) {
                self.links[p.index()] = None;
            }
        }
        knobs.set_plan(plan);
        for p in Prog::ALL {
            if p.wanted(plan) && loaded.has(p) && self.links[p.index()].is_none() {
                self.links[p.index()] = Some(p.of(progs).attach()?);
            }
        }
        Ok(())
    }

    /// The hooks attached now.
    pub fn hooks(&self) -> Vec<&'static str> {
        Prog::ALL
            .into_iter()
            .filter(|p| self.links[p.index()].is_some())
            .map(Prog::hook)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::{SyscallTiming, BIT_IO, BIT_SYSCALL, DEFAULT_BITS};

    #[test]
    fn the_plan_decides_what_is_attached() {
        let all = Plan::new(u32::MAX, SyscallTiming::Exact, true);
        assert!(Prog::ALL
            .into_iter()
            .filter(|p| *p != Prog::RqIssue)
            .all(|p| p.wanted(&all)));
        assert!(!Prog::Hang.wanted(&Plan::new(BIT_SYSCALL, SyscallTiming::Blocked, true)));
        let default = Plan::new(DEFAULT_BITS, SyscallTiming::Blocked, false);
        assert!(!Prog::SysExit.wanted(&default) && !Prog::SysEnter.wanted(&default));
        assert!(Prog::RqIssue.wanted(&default) && !Prog::IoStart.wanted(&default));
        let counts = Plan::new(BIT_SYSCALL, SyscallTiming::Blocked, true);
        assert!(Prog::SysExit.wanted(&counts) && !Prog::SchedSwitch.wanted(&counts));
    }

    #[test]
    fn only_existing_hooks_load() {
        let with_io_start = Loaded::new(|_| true);
        assert!(with_io_start.has(Prog::IoStart) && !with_io_start.has(Prog::RqIssue));
        let old = Loaded::new(|h| h != "block_io_start");
        assert!(!old.has(Prog::IoStart) && old.has(Prog::RqIssue));
        let no_block = Loaded::new(|h| !h.starts_with("block_"));
        let plan = Plan::new(BIT_IO, SyscallTiming::Blocked, false);
        assert_eq!(
            no_block.missing(&plan),
            ["block_rq_issue", "block_rq_complete"]
        );
        assert!(old.missing(&plan).is_empty());
        // No hung-task detector: proc_io runs without hang_count.
        let no_hang = Loaded::new(|h| h != "sched_process_hang");
        assert!(!no_hang.has(Prog::Hang));
        let io = Plan::new(BIT_IO, SyscallTiming::Blocked, true);
        assert!(no_hang.missing(&io).is_empty());
        assert!(Loaded::new(|_| true).has(Prog::Hang));
    }
}
