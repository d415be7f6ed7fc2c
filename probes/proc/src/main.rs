//! taskprobe: per-process syscall counts and failures, time in slow syscalls, fork/exec/exit,
//! off-CPU time and block IO, from eBPF tracepoints aggregated in maps and printed once per
//! period as upstream `proc_*` records. See docs/probes/proc.md.
//! `taskprobe --print-meta` prints the `.meta` file (tables and run-time control).
//!
//! Run-time control (the daemon's control channel on stdin, see [`tables::declaration`]):
//! `report_period` changes the period; `probe_bits` changes the plan, attaching and detaching
//! programs and switching the BPF knobs without reloading; `snoop` include/exclude replaces
//! the `-f`/`-w` selection (and `all` goes back to it), updating the BPF filter so untracked
//! processes cost nothing and stop being reported. Each applied change logs one `[INFO]` line.

mod decode;
mod dns;
mod events;
mod hooks;
mod knobs;
mod programs;
mod pygc;
mod report;
mod selection;
mod skel;
mod syscalls;
mod tables;
mod threads;
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
use libbpf_rs::MapCore;
use probe_sdk::args::ProbeArgs;
use probe_sdk::bpf::uprobe_libs::LibHooks;
use probe_sdk::bpf::{self, Hook, RingPoller};
use probe_sdk::control::{Control, ControlMsg};
use probe_sdk::decl::{Declaration, Snoop, SnoopMode};
use probe_sdk::record::{self, RecordWriter};
use probe_sdk::run::{self, PeriodLoop};
use probe_sdk::whitelist::Whitelist;

use hooks::{Plan, SyscallTiming, DEFAULT_BITS, REQUIRE_HOOK_ENV};
use knobs::{KnobVars, Knobs};
use programs::{Attached, Loaded};
use selection::{Active, FilterMode, Selection};
use skel::{types, OpenProcSkel, ProcProgs, ProcSkelBuilder};
use tables::{STATS_PROBE, STATS_TABLE};
use tracker::{FilterMem, Tracker};

/// Bound on processes counted at once (entries of `proc_stats`); further ones count as
/// `map_full` in `proc_bpf_stats`.
const MAX_TRACKED: u32 = 10240;
/// Longest wait between ring-buffer drains / termination and control checks.
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
    // The thresholds' declared ranges hold on the command line too.
    let decl = tables::declaration();
    for (name, v) in [
        ("latency_thr", args.latency_thr_ms),
        ("offline_thr", args.offline_thr_ms),
    ] {
        if let Some(Err(e)) = decl.param(name).map(|p| p.check(&v.into())) {
            probe_sdk::error!("{e}");
            return ExitCode::from(2);
        }
    }
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
    if let Some(parsed) = Hook::from_env(REQUIRE_HOOK_ENV) {
        hooks.push(
            parsed.map_err(|spec| anyhow::anyhow!("{REQUIRE_HOOK_ENV}: bad hook spec {spec:?}"))?,
        );
    }
    Ok(hooks)
}

fn configure(open: &mut OpenProcSkel<'_>, loaded: &Loaded) -> Result<()> {
    let ro = open
        .maps
        .rodata_data
        .as_deref_mut()
        .context("BPF object has no .rodata")?;
    ro.noop_hooks = u8::from(std::env::var_os(NOOP_ENV).is_some());
    open.maps.proc_stats.set_max_entries(MAX_TRACKED)?;
    open.maps.tracked_overflow.set_max_entries(MAX_TRACKED)?;
    loaded.set_autoload(&mut open.progs);
    Ok(())
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

/// Makes the tracked set follow the selection (listed mode): new matches are tracked,
/// processes that no longer match are dropped. Exited processes are left for their final
/// report. `wanted` is called after the entries are read: a child that BPF starts tracking in
/// between is then not listed in them, so it cannot be dropped for missing from an older scan.
fn resync(
    tracker: &Tracker<'_>,
    wanted: impl FnOnce() -> BTreeSet<u32>,
    proc_root: &Path,
    loss: &mut UserLoss,
) {
    let entries = tracker.entries();
    let wanted = wanted();
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
        if let Some(id) = selection::identity(proc_root, *tgid) {
            track_logged(tracker, loss, *tgid, &id.comm);
        }
    }
}

/// Unlisted modes (all, exclude): drops entries of processes that are gone without an exit
/// having been seen, so they are not reported forever.
fn prune_vanished(tracker: &Tracker<'_>, proc_root: &Path) {
    for (tgid, c) in tracker.entries() {
        // Re-read after the /proc check: an exit between the snapshot and the check has set
        // `exited`, and that process still gets its final row.
        if !c.exited && !proc_root.join(tgid.to_string()).exists() && !tracker.has_exited(tgid) {
            tracker.untrack(tgid);
        }
    }
}

/// Unlisted modes, right after the mode is set: processes that already exist (BPF adds new ones
/// at fork, and any it missed at their next context switch or syscall). One prune afterwards
/// closes the scan's race: the exit hook is attached, so only a process that exited before its
/// entry was inserted can be gone without `exited`.
fn track_existing(
    tracker: &Tracker<'_>,
    proc_root: &Path,
    excluded: &BTreeSet<u32>,
    loss: &mut UserLoss,
) {
    for (tgid, comm) in selection::user_processes(proc_root) {
        if !excluded.contains(&tgid) {
            track_logged(tracker, loss, tgid, &comm);
        }
    }
    prune_vanished(tracker, proc_root);
}

/// What one run keeps between wake-ups: the BPF side, the selection and the plan in force.
struct Runtime<'a, 'obj> {
    tracker: &'a Tracker<'a>,
    knobs: &'a Knobs<'a>,
    progs: &'a ProcProgs<'obj>,
    gg_stats: &'a dyn MapCore,
    dns_stats: &'a dyn MapCore,
    dns_calls: &'a dyn MapCore,
    thread_stats: &'a dyn MapCore,
    /// The DNS uprobes, on the C library of the tracked processes (`proc_dns`).
    dns_hooks: LibHooks,
    /// The Python GC USDT probes, on the tracked processes' Python (`proc_pygc`).
    pygc_hooks: LibHooks,
    dns_report: dns::DnsReport,
    events: events::ProcEvents,
    event_settings: events::EventSettings,
    loaded: Loaded,
    attached: Attached,
    decl: Declaration,
    /// The command line's selection.
    sel: Selection,
    active: Active,
    timing: SyscallTiming,
    io_start: bool,
    bits: u32,
    /// Bits a control message asked for that could not be applied (warned about once).
    refused_bits: Option<u32>,
    plan: Plan,
    period: Duration,
    next: Instant,
    loss: UserLoss,
}

impl Runtime<'_, '_> {
    fn proc_root(&self) -> &Path {
        self.sel.proc_root()
    }

    /// The periodic update of a listed selection (`-f`/`-w` or snoop include).
    fn resync(&mut self) {
        if self.active.filter_mode(&self.sel) != FilterMode::Include {
            return;
        }
        let (active, sel) = (&self.active, &self.sel);
        let wanted = || active.wanted(sel).unwrap_or_default();
        resync(self.tracker, wanted, sel.proc_root(), &mut self.loss);
    }

    /// Re-evaluates a process that just exec'd (command-line whitelist in force).
    fn on_exec_notice(&mut self, tgid: u32) {
        if !self.active.uses_whitelist(&self.sel) {
            return;
        }
        let tracker = self.tracker;
        match selection::identity(self.proc_root(), tgid) {
            Some(id) if self.sel.selects(tgid, &id) => {
                track_logged(tracker, &mut self.loss, tgid, &id.comm)
            }
            Some(_) if tracker.is_tracked(tgid) => tracker.untrack(tgid),
            // Not selected and not tracked, or already gone (its exit is handled by BPF).
            _ => {}
        }
    }

    /// Applies a control message: period, tables (plan), process selection.
    fn apply(&mut self, msg: &ControlMsg) -> Result<()> {
        if let Some(v) = msg.params.get("report_period") {
            match self.decl.param("report_period").map(|p| p.check(v)) {
                Some(Ok(probe_sdk::decl::ParamValue::Int(secs))) => {
                    self.set_period(Duration::from_secs(secs.unsigned_abs()))
                }
                Some(Err(e)) => probe_sdk::warn!("control: {e}"),
                _ => {}
            }
        }
        self.apply_event_params(msg);
        if msg.probe_bits != 0 {
            self.set_bits(msg.probe_bits)?;
        }
        self.set_active(Active::from_snoop(&msg.snoop));
        Ok(())
    }

    /// `report_event`, `latency_thr`, `offline_thr` of a control message (a refused value keeps
    /// the old one and is logged).
    fn apply_event_params(&mut self, msg: &ControlMsg) {
        let mut next = self.event_settings;
        for name in ["report_event", "latency_thr", "offline_thr"] {
            let v = match msg.checked(&self.decl, name) {
                None => continue,
                Some(Err(e)) => {
                    probe_sdk::warn!("control: {e}");
                    continue;
                }
                Some(Ok(probe_sdk::decl::ParamValue::Int(v))) => v.unsigned_abs(),
                Some(Ok(_)) => continue,
            };
            match name {
                "report_event" => next.on = v != 0,
                "latency_thr" => next.latency_ms = v,
                _ => next.offline_ms = v,
            }
        }
        if next != self.event_settings {
            self.event_settings = next;
            probe_sdk::info!(
                "control: events {}, latency_thr {} ms, offline_thr {} ms",
                if next.on { "on" } else { "off" },
                next.latency_ms,
                next.offline_ms
            );
        }
    }

    /// Next boundary one new period after the previous one, or now if that has passed.
    fn set_period(&mut self, period: Duration) {
        if period == self.period || period.is_zero() {
            return;
        }
        self.next = probe_sdk::run::rebase(self.next, self.period, period, Instant::now());
        self.period = period;
        probe_sdk::info!("control: report_period {} s", period.as_secs());
    }

    fn set_bits(&mut self, bits: u32) -> Result<()> {
        if bits == self.bits || Some(bits) == self.refused_bits {
            return Ok(());
        }
        let plan = Plan::new(bits, self.timing, self.io_start);
        let missing = self.loaded.missing(&plan);
        if !missing.is_empty() {
            self.refused_bits = Some(bits);
            probe_sdk::warn!(
                "control: -P {bits:#x} not applied: the kernel lacks {}",
                missing.join(", ")
            );
            return Ok(());
        }
        self.attached
            .apply(self.progs, &self.loaded, &plan, self.knobs)
            .context("attaching BPF programs for the new plan")?;
        self.bits = bits;
        self.refused_bits = None;
        self.plan = plan;
        probe_sdk::info!(
            "control: -P {bits:#x}: tables {}; hooks {}",
            self.plan.tables.names().join(", "),
            self.attached.hooks().join(", ")
        );
        Ok(())
    }

    fn set_active(&mut self, active: Active) {
        if active == self.active {
            return;
        }
        let old_mode = self.tracker.mode();
        let mode = active.filter_mode(&self.sel);
        self.active = active;
        self.knobs
            .set_whitelist_helpers(self.active.uses_whitelist(&self.sel));
        let excluded = self.active.excluded();
        let tracker = self.tracker;
        if mode != old_mode {
            // From scratch: no entry of one mode lives on in another.
            let failed = tracker.reset(mode, &excluded);
            self.loss.map_full += failed;
            // Threads switched out before are not measured into the new entries.
            self.knobs.bump_gen();
            match mode {
                FilterMode::Include => self.resync(),
                FilterMode::All | FilterMode::Exclude => {
                    track_existing(tracker, self.sel.proc_root(), &excluded, &mut self.loss)
                }
            }
        } else {
            match mode {
                FilterMode::Include => self.resync(),
                FilterMode::Exclude => self.update_exclusions(&excluded),
                FilterMode::All => {}
            }
        }
        probe_sdk::info!(
            "control: snoop {}: {} processes tracked",
            self.active.describe(),
            tracker.entries().len()
        );
    }

    /// Exclude mode, new list: newly excluded processes stop being counted, processes no longer
    /// excluded are counted again.
    fn update_exclusions(&mut self, excluded: &BTreeSet<u32>) {
        let tracker = self.tracker;
        let current = tracker.filter_members();
        for &tgid in excluded.difference(&current) {
            if tracker.exclude(tgid).is_err() {
                self.loss.map_full += 1;
            }
        }
        for &tgid in current.difference(excluded) {
            tracker.unexclude(tgid);
            if let Some(id) = selection::identity(self.sel.proc_root(), tgid) {
                track_logged(tracker, &mut self.loss, tgid, &id.comm);
            }
        }
    }

    /// Prints every process once (every tracked process, every period, so the daemon's
    /// per-period changes and the maxima fall back to 0 when it is idle) and the loss counters;
    /// exited processes are then forgotten.
    fn report<W: Write>(&mut self, out: &mut RecordWriter<W>) -> std::io::Result<()> {
        let tracker = self.tracker;
        // Closed before the maps are read: maxima taken from now on are the next period's.
        let period = self.knobs.close_period();
        let entries = tracker.entries();
        for (tgid, c) in &entries {
            // proc_pygc only for processes running a Python.
            let tables = report::Tables {
                pygc: self.plan.tables.pygc && self.pygc_hooks.maps_lib(*tgid),
                ..self.plan.tables
            };
            report::write_process(out, *tgid, c, &tables, period)?;
        }
        self.events
            .write(out, &entries, &self.plan.tables, &self.event_settings)?;
        self.report_dns(out, &entries, period)?;
        // Without the table, nothing is kept (threads exiting meanwhile would not be seen).
        let tracked = if self.plan.tables.threads {
            entries.iter().map(|(t, _)| *t).collect()
        } else {
            Default::default()
        };
        threads::report(out, self.thread_stats, &tracked)?;
        for (tgid, c) in &entries {
            if c.exited {
                tracker.untrack(*tgid);
                self.active.forget_pid(&mut self.sel, *tgid);
            }
        }
        let mut counters = bpf::read_loss_counters(self.gg_stats);
        counters.map_full += self.loss.map_full;
        // Programs that are not attached now keep the misses of their attached time.
        // The uprobe programs (DNS, Python GC) are skipped too while another tracing program
        // runs on their CPU.
        let p = self.progs;
        let uprobes = [
            &p.dns_enter,
            &p.dns_ret_int,
            &p.dns_ret_ptr,
            &p.pygc_begin,
            &p.pygc_end,
        ];
        let misses = bpf::recursion_misses(
            self.loaded
                .programs(self.progs)
                .into_iter()
                .chain(uprobes)
                .map(AsFd::as_fd),
        );
        counters.lost = counters.lost.saturating_add(misses);
        bpf::write_loss_record(out, STATS_TABLE, STATS_PROBE, &counters)?;
        out.flush()
    }
}

impl Runtime<'_, '_> {
    /// `proc_dns`: brings the uprobes in line with the tracked processes, then writes a row per
    /// (process, domain) and forgets the rows of processes that exited or are no longer
    /// tracked. Without the sub-probe: detaches the uprobes.
    fn report_dns<W: Write>(
        &mut self,
        out: &mut RecordWriter<W>,
        entries: &[(u32, report::ProcCounters)],
        period: u32,
    ) -> std::io::Result<()> {
        if !self.sync_uprobe_targets(entries) {
            return Ok(());
        }
        let comms: std::collections::HashMap<u32, (String, bool)> = entries
            .iter()
            .map(|(t, c)| (*t, (c.comm.clone(), c.exited)))
            .collect();
        let rows = dns::read_rows(self.dns_stats);
        self.dns_report.write(
            out,
            rows.iter().map(|(_, r)| r),
            |t| comms.get(&t).map(|(c, _)| c.clone()),
            period,
        )?;
        for (key, r) in &rows {
            if comms.get(&r.tgid).is_none_or(|(_, exited)| *exited) {
                // Gone already (a race with the delete) is fine.
                let _ = self.dns_stats.delete(key);
            }
        }
        dns::purge_stale_calls(self.dns_calls, bpf::ktime_ns());
        Ok(())
    }

    /// Attaches the DNS uprobes (`proc_dns`) and the Python GC probes (`proc_pygc`) to the
    /// libc and Python of processes tracked since the last call, and drops those of processes
    /// gone (`entries`: the tracked processes); detaches a set whose table is off. Returns
    /// whether `proc_dns` is on.
    fn sync_uprobe_targets(&mut self, entries: &[(u32, report::ProcCounters)]) -> bool {
        let snoop = match self.tracker.mode() {
            FilterMode::All => Snoop::default(),
            FilterMode::Include => Snoop {
                mode: SnoopMode::Include,
                pids: entries
                    .iter()
                    .map(|(t, _)| *t)
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
            },
            FilterMode::Exclude => Snoop {
                mode: SnoopMode::Exclude,
                pids: self.active.excluded().into_iter().collect(),
            },
        };
        let progs = self.progs;
        sync_uprobes(
            &mut self.pygc_hooks,
            self.plan.tables.pygc,
            &snoop,
            "Python GC probes",
            |pid, path| pygc::attach(progs, pid, path),
        );
        sync_uprobes(
            &mut self.dns_hooks,
            self.plan.tables.dns,
            &snoop,
            "DNS uprobes",
            |pid, path| dns::attach(progs, pid, path),
        )
    }
}

/// Brings one set of uprobe targets in line with `snoop` (`on`), or detaches it all; logs the
/// changes as `what`. Returns `on`.
fn sync_uprobes(
    hooks: &mut LibHooks,
    on: bool,
    snoop: &Snoop,
    what: &str,
    attach: impl FnMut(i32, &Path) -> Result<Vec<libbpf_rs::Link>, String>,
) -> bool {
    if !on {
        if hooks.attached() > 0 {
            hooks.clear();
            probe_sdk::info!("{what} detached");
        }
        return false;
    }
    let before = hooks.attached();
    for e in hooks.sync(snoop, attach) {
        probe_sdk::warn!("{what}: {e}");
    }
    if hooks.attached() != before {
        probe_sdk::info!("{what} attached to {} target(s)", hooks.attached());
    }
    true
}

fn run_probe(args: &ProbeArgs, timing: SyscallTiming) -> Result<()> {
    let bits = if args.probe_bits_given {
        args.probe_bits
    } else {
        DEFAULT_BITS
    };
    let io_start = bpf::raw_tracepoint_exists("block_io_start");
    let plan = Plan::new(bits, timing, io_start);
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
    if plan.tables.bio && !bpf::raw_tracepoint_exists("sched_process_hang") {
        probe_sdk::info!(
            "proc_io.hang_count stays 0: the kernel has no sched_process_hang tracepoint (no \
             hung-task detector)"
        );
    }
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
    let sel = Selection::new(&args.pids, whitelist, &probe_sdk::host::path("/proc"));
    let _signals = PeriodLoop::new(args.period()).context("installing signal handlers")?;
    // Stdin closed or /dev/null (run by hand): no message ever arrives.
    let control = Control::from_stdin();

    let loaded = Loaded::new(bpf::raw_tracepoint_exists);
    let builder = ProcSkelBuilder {
        obj_builder: bpf::object_builder(args.btf_path.as_deref())?,
    };
    let mut storage = MaybeUninit::uninit();
    let mut open = builder.open(&mut storage).context("opening BPF object")?;
    configure(&mut open, &loaded)?;
    let mut skel = open.load().context("loading BPF programs")?;

    let bss = skel
        .maps
        .bss_data
        .as_deref_mut()
        .context("BPF object has no .bss")?;
    let types::bss {
        tracked_slots,
        hot_slots,
        overflow_used,
        filter_mode,
        inherit_forks,
        notify_exec,
        account_offcpu,
        account_threads,
        exact_sys_time,
        blocked_sys_time,
        slow_col,
        fs_op,
        fs_mask,
        dns_domain_cap,
        knob_gen,
        period_gen,
        ..
    } = bss;
    *dns_domain_cap = dns::DOMAIN_CAP;
    let knobs = Knobs::new(KnobVars {
        inherit_forks,
        notify_exec,
        account_offcpu,
        account_threads,
        exact_sys_time,
        blocked_sys_time,
        slow_col,
        fs_op,
        fs_mask,
        knob_gen,
        period_gen,
    });
    let active = Active::CmdLine;
    let mode = active.filter_mode(&sel);
    let tracker = Tracker::new(
        FilterMem::new(tracked_slots, hot_slots, overflow_used, filter_mode),
        &skel.maps.tracked_overflow,
        &skel.maps.proc_stats,
        mode,
    );
    // Children of a whitelisted process share its comm and cmdline until they exec (which
    // sends a notice and is re-checked), so they are tracked from their first syscall.
    knobs.set_whitelist_helpers(active.uses_whitelist(&sel));
    let period = args.period();
    let mut rt = Runtime {
        tracker: &tracker,
        knobs: &knobs,
        progs: &skel.progs,
        gg_stats: &skel.maps.gg_stats,
        dns_stats: &skel.maps.dns_stats,
        dns_calls: &skel.maps.dns_calls,
        thread_stats: &skel.maps.thread_stats,
        dns_hooks: dns::libc_hooks(),
        pygc_hooks: pygc::python_hooks(),
        dns_report: dns::DnsReport::default(),
        events: events::ProcEvents::default(),
        event_settings: events::EventSettings {
            on: args.report_events,
            latency_ms: args.latency_thr_ms,
            offline_ms: args.offline_thr_ms,
        },
        loaded,
        attached: Attached::default(),
        decl: tables::declaration(),
        sel,
        active,
        timing,
        io_start,
        bits,
        refused_bits: None,
        plan,
        period,
        next: Instant::now() + period,
        loss: UserLoss::default(),
    };
    rt.resync();
    let progs = rt.progs;
    rt.attached
        .apply(progs, &rt.loaded, &rt.plan, &knobs)
        .context("attaching BPF programs")?;
    if mode != FilterMode::Include {
        track_existing(&tracker, rt.sel.proc_root(), &BTreeSet::new(), &mut rt.loss);
    }
    rt.sync_uprobe_targets(&tracker.entries());

    let notices: Rc<RefCell<Vec<u32>>> = Rc::default();
    // Exec notices exist only while the command line's whitelist is in force.
    let poller = if rt.sel.has_whitelist() {
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
        if mode == FilterMode::All {
            "all processes"
        } else {
            "selected processes"
        },
        args.period_secs
    );

    let mut out = RecordWriter::stdout();
    rt.next = Instant::now() + rt.period;
    while !run::terminated() {
        let wait = rt
            .next
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
            rt.on_exec_notice(tgid);
        }
        if let Some(msg) = control.take() {
            rt.apply(&msg)?;
        }
        let now = Instant::now();
        if now < rt.next {
            continue;
        }
        rt.resync();
        if let Err(e) = rt.report(&mut out) {
            if record::is_broken_pipe(&e) {
                return Ok(());
            }
            return Err(e).context("writing records");
        }
        while rt.next <= now {
            rt.next += rt.period;
        }
    }
    Ok(())
}
