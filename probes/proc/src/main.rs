//! taskprobe: per-process syscall counts and failures, time in slow syscalls, fork/exec/exit,
//! off-CPU time and block IO, from eBPF tracepoints aggregated in maps and printed once per
//! period as upstream `proc_*` records. See docs/probes/proc.md.
//! `taskprobe --print-meta` prints the `.meta` file.

mod decode;
mod hooks;
mod report;
mod selection;
mod skel;
mod syscalls;
mod tables;
mod tracker;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::Write;
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, ProgramMut};
use probe_sdk::args::ProbeArgs;
use probe_sdk::bpf::{self, Hook, RingPoller};
use probe_sdk::record::{self, RecordWriter};
use probe_sdk::run::{self, PeriodLoop};
use probe_sdk::whitelist::Whitelist;

use hooks::{BlockStart, Plan, SyscallTiming, DEFAULT_BITS, REQUIRE_HOOK_ENV};
use selection::Selection;
use skel::{OpenProcSkel, ProcProgs, ProcSkelBuilder};
use tables::{STATS_PROBE, STATS_TABLE};
use tracker::Tracker;

const PROC_ROOT: &str = "/proc";
/// Bound on processes counted at once (entries of `proc_stats`); further ones count as
/// `map_full` in `proc_bpf_stats`.
const MAX_TRACKED: u32 = 10240;
/// Longest wait between ring-buffer drains / termination checks.
const POLL_SLICE: Duration = Duration::from_millis(100);
/// Benchmark knob: load the syscall programs as no-ops, to measure what the hooks alone cost.
/// The verifier prunes the check (frozen .rodata), so it costs nothing when unset.
const NOOP_ENV: &str = "TASKPROBE_NOOP";

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--print-meta") {
        print!("{}", tables::meta_text());
        return ExitCode::SUCCESS;
    }
    let args = ProbeArgs::from_env();
    // A bad flag value exits with 2, as ProbeArgs does for the common flags.
    let timing = match SyscallTiming::from_flags(&args.extra) {
        Ok(t) => t,
        Err(e) => {
            probe_sdk::error!("{e}");
            return ExitCode::from(2);
        }
    };
    match run_probe(&args, timing) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            probe_sdk::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Kernel hooks this run needs, plus the test-only one from the environment.
fn hooks_to_check(plan: &Plan) -> Result<Vec<Hook>> {
    let mut hooks = plan.required_hooks();
    if let Ok(spec) = std::env::var(REQUIRE_HOOK_ENV) {
        let hook = Hook::parse(&spec)
            .with_context(|| format!("{REQUIRE_HOOK_ENV}: bad hook spec {spec:?}"))?;
        hooks.push(hook);
    }
    Ok(hooks)
}

fn configure(open: &mut OpenProcSkel<'_>, plan: &Plan, sel: &Selection) -> Result<()> {
    let ro = open
        .maps
        .rodata_data
        .as_deref_mut()
        .context("BPF object has no .rodata")?;
    ro.track_all = u8::from(sel.is_all());
    // Children of a whitelisted process share its comm and cmdline until they exec (which
    // sends a notice and is re-checked), so they are tracked from their first syscall.
    ro.inherit_forks = u8::from(sel.has_whitelist());
    ro.notify_exec = u8::from(sel.has_whitelist());
    ro.slow_col = plan.syscall_table;
    ro.account_offcpu = u8::from(plan.offcpu);
    ro.exact_sys_time = u8::from(plan.sys_enter);
    ro.blocked_sys_time = u8::from(plan.blocked_timing);
    ro.noop_hooks = u8::from(std::env::var_os(NOOP_ENV).is_some());
    open.maps.proc_stats.set_max_entries(MAX_TRACKED)?;
    open.maps.tracked_overflow.set_max_entries(MAX_TRACKED)?;
    let progs = &mut open.progs;
    progs.on_sys_enter.set_autoload(plan.sys_enter);
    progs.on_sys_exit.set_autoload(plan.sys_exit);
    progs.on_sched_switch.set_autoload(plan.sched_switch);
    progs
        .on_io_start
        .set_autoload(plan.block == Some(BlockStart::IoStart));
    progs
        .on_rq_issue
        .set_autoload(plan.block == Some(BlockStart::RqIssue));
    progs.on_rq_complete.set_autoload(plan.block.is_some());
    Ok(())
}

/// The programs the plan attaches, in attach order.
fn planned<'a, 'obj>(p: &'a ProcProgs<'obj>, plan: &Plan) -> Vec<&'a ProgramMut<'obj>> {
    let mut progs = vec![&p.on_fork, &p.on_exec, &p.on_exit];
    if plan.sys_enter {
        progs.push(&p.on_sys_enter);
    }
    if plan.sys_exit {
        progs.push(&p.on_sys_exit);
    }
    if plan.sched_switch {
        progs.push(&p.on_sched_switch);
    }
    match plan.block {
        Some(BlockStart::IoStart) => progs.push(&p.on_io_start),
        Some(BlockStart::RqIssue) => progs.push(&p.on_rq_issue),
        None => {}
    }
    if plan.block.is_some() {
        progs.push(&p.on_rq_complete);
    }
    progs
}

fn attach(p: &ProcProgs<'_>, plan: &Plan) -> Result<Vec<Link>> {
    Ok(planned(p, plan)
        .into_iter()
        .map(ProgramMut::attach)
        .collect::<Result<_, _>>()?)
}

/// Calls of the attached programs that the kernel skipped because the same program was already
/// running on that CPU (e.g. a block completion interrupting one): events not accounted.
fn recursion_misses(p: &ProcProgs<'_>, plan: &Plan) -> u64 {
    bpf::recursion_misses(planned(p, plan).into_iter().map(AsFd::as_fd))
}

/// Counters the user-space side adds to `proc_bpf_stats`.
#[derive(Debug, Default)]
struct UserLoss {
    map_full: u64,
}

fn track_logged(tracker: &Tracker<'_>, loss: &mut UserLoss, tgid: u32, comm: &str) {
    match tracker.track(tgid, comm) {
        Ok(()) => {}
        Err(tracker::TrackError::Full) => loss.map_full += 1,
        Err(e) => probe_sdk::warn!("cannot track {tgid}: {e}"),
    }
}

/// Makes the tracked set follow the selection: new matches are tracked, processes that no
/// longer match are dropped. Exited processes are left for their final report.
fn resync(tracker: &Tracker<'_>, sel: &Selection, loss: &mut UserLoss) {
    // Entries before the scan: a child that BPF starts tracking in between is then not yet
    // listed here, so it cannot be dropped for missing from an older scan.
    let entries = tracker.entries();
    let wanted = sel.scan();
    let mut have = BTreeSet::new();
    for (tgid, c) in entries {
        if c.exited {
            continue;
        }
        if wanted.contains(&tgid) {
            have.insert(tgid);
            // Repairs a filter slot lost to a BPF/user-space race (see tracker.rs).
            if let Err(e) = tracker.ensure_filtered(tgid) {
                probe_sdk::warn!("cannot re-add {tgid} to the filter: {e}");
            }
        } else {
            tracker.untrack(tgid);
        }
    }
    for tgid in wanted.difference(&have) {
        if let Some(id) = selection::identity(sel.proc_root(), *tgid) {
            track_logged(tracker, loss, *tgid, &id.comm);
        }
    }
}

/// Track-all mode, after the start-up scan: drops entries of processes that are gone without an
/// exit having been seen, so they are not reported forever.
fn prune_vanished(tracker: &Tracker<'_>, proc_root: &Path) {
    for (tgid, c) in tracker.entries() {
        // Re-read after the /proc check: an exit between the snapshot and the check has set
        // `exited`, and that process still gets its final row.
        if !c.exited && !proc_root.join(tgid.to_string()).exists() && !tracker.has_exited(tgid) {
            tracker.untrack(tgid);
        }
    }
}

/// Re-evaluates a process that just exec'd (whitelist mode).
fn on_exec_notice(tracker: &Tracker<'_>, sel: &Selection, loss: &mut UserLoss, tgid: u32) {
    match selection::identity(sel.proc_root(), tgid) {
        Some(id) if sel.selects(tgid, &id) => track_logged(tracker, loss, tgid, &id.comm),
        Some(_) if tracker.is_tracked(tgid) => tracker.untrack(tgid),
        // Not selected and not tracked, or already gone (its exit is handled by BPF).
        _ => {}
    }
}

/// Prints every process once and the loss counters; exited processes are then forgotten.
fn report<W: Write>(
    out: &mut RecordWriter<W>,
    tracker: &Tracker<'_>,
    sel: &mut Selection,
    plan: &Plan,
    gg_stats: &dyn MapCore,
    loss: &UserLoss,
    misses: u64,
) -> std::io::Result<()> {
    for (tgid, c) in tracker.entries() {
        report::write_process(out, tgid, &c, &plan.tables)?;
        if c.exited {
            tracker.untrack(tgid);
            sel.forget_pid(tgid);
        }
    }
    let mut counters = bpf::read_loss_counters(gg_stats);
    counters.map_full += loss.map_full;
    counters.lost = counters.lost.saturating_add(misses);
    bpf::write_loss_record(out, STATS_TABLE, STATS_PROBE, &counters)?;
    out.flush()
}

fn run_probe(args: &ProbeArgs, timing: SyscallTiming) -> Result<()> {
    let bits = if args.probe_bits_given {
        args.probe_bits
    } else {
        DEFAULT_BITS
    };
    let plan = Plan::new(bits, timing, bpf::raw_tracepoint_exists("block_io_start"));
    bpf::require_hooks(&hooks_to_check(&plan)?);
    let hooks: Vec<String> = plan
        .required_hooks()
        .iter()
        .map(|h| h.to_string())
        .collect();
    probe_sdk::info!(
        "taskprobe plan: -P {bits:#x}, slow-syscall timing {timing:?}, hooks: {}",
        hooks.join(", ")
    );
    if !plan.tables.syscall {
        probe_sdk::info!(
            "proc_syscall (syscall counts) is off: it needs the sys_exit tracepoint, which slows \
             every syscall on the host; add bit 1 to -P to enable it"
        );
    }
    let whitelist = args
        .whitelist
        .as_deref()
        .map(Whitelist::load)
        .transpose()
        .context("loading the whitelist (-w)")?;
    let mut sel = Selection::new(&args.pids, whitelist, Path::new(PROC_ROOT));
    let _signals = PeriodLoop::new(args.period()).context("installing signal handlers")?;

    let builder = ProcSkelBuilder {
        obj_builder: bpf::object_builder(args.btf_path.as_deref())?,
    };
    let mut storage = MaybeUninit::uninit();
    let mut open = builder.open(&mut storage).context("opening BPF object")?;
    configure(&mut open, &plan, &sel)?;
    let mut skel = open.load().context("loading BPF programs")?;

    let mut loss = UserLoss::default();
    let bss = skel
        .maps
        .bss_data
        .as_deref_mut()
        .context("BPF object has no .bss")?;
    let tracker = Tracker::new(
        bss,
        &skel.maps.tracked_overflow,
        &skel.maps.proc_stats,
        sel.is_all(),
    );
    if !sel.is_all() {
        resync(&tracker, &sel, &mut loss);
    }
    let _links = attach(&skel.progs, &plan).context("attaching BPF programs")?;
    if sel.is_all() {
        // Processes that existed before the probe: BPF adds new ones at fork, and any it
        // missed at their next context switch or syscall.
        for (tgid, comm) in selection::user_processes(sel.proc_root()) {
            track_logged(&tracker, &mut loss, tgid, &comm);
        }
        // One pass closes the scan's race: the exit hook is attached by now, so only a process
        // that exited before its entry was inserted can be gone without `exited`.
        prune_vanished(&tracker, sel.proc_root());
    }

    let notices: Rc<RefCell<Vec<u32>>> = Rc::default();
    let poller = if sel.has_whitelist() {
        let sink = Rc::clone(&notices);
        Some(RingPoller::new(
            &skel.maps.exec_events,
            move |data: &[u8]| {
                if let Some(tgid) = decode::exec_notice_tgid(data) {
                    sink.borrow_mut().push(tgid);
                }
                0
            },
        )?)
    } else {
        None
    };
    probe_sdk::info!(
        "taskprobe attached: {} processes tracked ({}), period {} s",
        tracker.entries().len(),
        if sel.is_all() {
            "all processes"
        } else {
            "selected processes"
        },
        args.period_secs
    );

    let period = args.period();
    let mut out = RecordWriter::stdout();
    let mut next = Instant::now() + period;
    while !run::terminated() {
        let wait = next
            .saturating_duration_since(Instant::now())
            .min(POLL_SLICE);
        match &poller {
            Some(p) => {
                p.poll(wait).context("polling exec notices")?;
            }
            None => std::thread::sleep(wait),
        }
        let pending: Vec<u32> = notices.borrow_mut().drain(..).collect();
        for tgid in pending {
            on_exec_notice(&tracker, &sel, &mut loss, tgid);
        }
        let now = Instant::now();
        if now < next {
            continue;
        }
        if !sel.is_all() {
            resync(&tracker, &sel, &mut loss);
        }
        if let Err(e) = report(
            &mut out,
            &tracker,
            &mut sel,
            &plan,
            &skel.maps.gg_stats,
            &loss,
            recursion_misses(&skel.progs, &plan),
        ) {
            if record::is_broken_pipe(&e) {
                return Ok(());
            }
            return Err(e).context("writing records");
        }
        while next <= now {
            next += period;
        }
    }
    Ok(())
}
