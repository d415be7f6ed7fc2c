//! `ioprobe`: per-disk block I/O latency, bytes, request counts and errors (see `ioprobe.meta`).
//!
//! Flags (upstream): `-t <secs>` period, `-P <bits>` tables (1 `io_latency`, 2 `io_err`,
//! 4 `io_count`; default all), `-d <name>` report only this disk, `-T <ms>` emit a
//! `latency_req_max` event above this request latency, `-b <file>` custom BTF.
//! The control channel on stdin changes period, tables, disk and threshold without a restart
//! ([`ioprobe::settings`]); each applied change logs one `[INFO]` line.
//! `ioprobe --print-meta` prints the `.meta` file (tables and run-time control).
//! Hidden test hooks: env `IOPROBE_EXTRA_HOOK=<category>:<name>` (or `raw:<name>`) adds a
//! required hook, to exercise the "unsupported" path with a tracepoint that does not exist;
//! env `IOPROBE_COMPLETION_HOOK=raw_tp` skips the preferred `tp_btf` completion program.

use std::mem::MaybeUninit;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use ioprobe::disk::DiskNames;
use ioprobe::loader::{required_hooks, CompletionHook, IoBpf};
use ioprobe::report::{self, DiskReport};
use ioprobe::settings::Settings;
use probe_sdk::args::ProbeArgs;
use probe_sdk::bpf::{self, Hook};
use probe_sdk::control::Control;
use probe_sdk::record::{is_broken_pipe, RecordWriter};
use probe_sdk::run::{self, PeriodLoop};
use probe_sdk::{error, info, warn};

const EXTRA_HOOK_ENV: &str = "IOPROBE_EXTRA_HOOK";
const COMPLETION_HOOK_ENV: &str = "IOPROBE_COMPLETION_HOOK";
/// Longest sleep between termination and control checks.
const POLL_SLICE: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--print-meta") {
        print!("{}", ioprobe::tables::meta_text());
        return ExitCode::SUCCESS;
    }
    let args = ProbeArgs::from_env();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn hooks() -> Vec<Hook> {
    let mut hooks = required_hooks();
    match Hook::from_env(EXTRA_HOOK_ENV) {
        Some(Ok(h)) => hooks.push(h),
        Some(Err(spec)) => {
            error!("ignoring {EXTRA_HOOK_ENV}={spec:?}: expected <category>:<name>")
        }
        None => {}
    }
    hooks
}

/// Attaches or detaches the page-cache programs; the first time they go on, names the
/// tracepoints this kernel lacks (their part of `io_pagecache` stays 0). An attach the kernel
/// refuses leaves the sub-probe without counts (warned about), not the probe stopped.
fn set_page_cache(probe: &mut IoBpf<'_>, on: bool) {
    static SAID: std::sync::Once = std::sync::Once::new();
    if let Err(e) = probe.set_page_cache(on) {
        warn!("page_cache: {e}; io_pagecache is not counted");
        return;
    }
    let missing = probe.pagecache_missing();
    if on && !missing.is_empty() {
        SAID.call_once(|| {
            warn!(
                "page_cache: this kernel has no tracepoint {}; their counts stay 0",
                missing.join(", ")
            )
        });
    }
}

/// The page-cache counts of block devices summed per whole disk (partitions into their disk);
/// devices sysfs does not know are left out.
fn per_disk(
    names: &DiskNames,
    devs: Vec<(u32, report::PageCache)>,
) -> Vec<(ioprobe::stats::DiskId, report::PageCache)> {
    let mut disks: std::collections::BTreeMap<ioprobe::stats::DiskId, report::PageCache> =
        std::collections::BTreeMap::new();
    for (dev, pc) in devs {
        let Some(disk) = names.whole_disk(dev) else {
            continue;
        };
        disks.entry(disk).or_default().add(&pc);
    }
    disks.into_iter().collect()
}

fn run(args: &ProbeArgs) -> anyhow::Result<()> {
    // Exits with "[ERROR] unsupported: …" (code 3) when a hook is missing.
    bpf::require_hooks(&hooks());

    let btf = args.btf_path.as_deref();
    let force_raw = std::env::var(COMPLETION_HOOK_ENV).is_ok_and(|v| v == "raw_tp");
    let (mut preferred, mut fallback) = (MaybeUninit::uninit(), MaybeUninit::uninit());
    let first = if force_raw {
        None
    } else {
        match IoBpf::load_and_attach(&mut preferred, btf, CompletionHook::TpBtf) {
            Ok(p) => Some(p),
            Err(e) => {
                warn!("tp_btf/block_rq_complete unavailable ({e}); using raw_tp");
                None
            }
        }
    };
    let (mut probe, completion) = match first {
        Some(p) => (p, CompletionHook::TpBtf),
        None => (
            IoBpf::load_and_attach(&mut fallback, btf, CompletionHook::RawTp)
                .context("cannot start the io BPF programs")?,
            CompletionHook::RawTp,
        ),
    };
    let _signals = PeriodLoop::new(args.period()).context("cannot install signal handlers")?;
    // Stdin closed or /dev/null (run by hand): no message ever arrives.
    let control = Control::from_stdin();
    let decl = ioprobe::tables::declaration();
    let mut settings = Settings::from_args(args);
    info!(
        "ioprobe attached to raw tracepoints {} (completion via {}); period {} s",
        ioprobe::loader::RAW_TRACEPOINTS.join(", "),
        completion.name(),
        args.period_secs
    );

    let names = DiskNames::default();
    // Failed requests per disk at the last report: the error event names the period's.
    let mut errors_seen: std::collections::HashMap<ioprobe::stats::DiskId, u64> =
        std::collections::HashMap::new();
    set_page_cache(&mut probe, settings.tables.page_cache);
    let mut out = RecordWriter::stdout();
    let mut next = Instant::now() + settings.period;
    while !run::terminated() {
        std::thread::sleep(
            next.saturating_duration_since(Instant::now())
                .min(POLL_SLICE),
        );
        if let Some(msg) = control.take() {
            let old_period = settings.period;
            let applied = settings.apply(&msg, &decl);
            for refused in &applied.refused {
                warn!("control: {refused}");
            }
            for change in &applied.changes {
                info!("control: {change}");
            }
            set_page_cache(&mut probe, settings.tables.page_cache);
            if applied.period_changed {
                next = probe_sdk::run::rebase(next, old_period, settings.period, Instant::now());
            }
        }
        let now = Instant::now();
        if now < next {
            continue;
        }
        let samples = probe.collect().context("cannot read the io maps")?;
        let page_cache = if settings.tables.page_cache {
            per_disk(
                &names,
                probe.collect_pagecache().context("cannot read io_pc")?,
            )
        } else {
            Vec::new()
        };
        let latency_thr_us = settings.latency_thr_ms.saturating_mul(1000);
        let mut write = || -> std::io::Result<()> {
            for sample in &samples {
                let labels = names.labels(sample.id);
                if !settings.selects(labels.as_ref().map(|l| l.blk_name.as_str())) {
                    continue;
                }
                let disk = DiskReport {
                    sample,
                    labels: labels.as_ref(),
                };
                report::write_disk(&mut out, &disk, settings.tables)?;
                if settings.tables.latency {
                    report::write_latency_event(&mut out, &disk, latency_thr_us)?;
                }
                let errors = sample.stats.errors;
                let before = errors_seen.insert(sample.id, errors).unwrap_or(0);
                if settings.tables.err {
                    report::write_error_event(&mut out, &disk, errors.saturating_sub(before))?;
                }
            }
            for (id, pc) in &page_cache {
                let labels = names.labels(*id);
                if settings.selects(labels.as_ref().map(|l| l.blk_name.as_str())) {
                    report::write_pagecache(&mut out, *id, labels.as_ref(), pc)?;
                }
            }
            report::write_bpf_stats(&mut out, &probe.loss_counters())?;
            out.flush()
        };
        match write() {
            Ok(()) => {}
            // The daemon is gone: nobody reads us any more.
            Err(e) if is_broken_pipe(&e) => break,
            Err(e) => return Err(e).context("cannot write records"),
        }
        while next <= now {
            next += settings.period;
        }
    }
    Ok(())
}
