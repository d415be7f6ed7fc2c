//! `ioprobe`: per-disk block I/O latency, bytes, request counts and errors (see `ioprobe.meta`).
//!
//! Flags (upstream): `-t <secs>` period, `-d <name>` report only this disk, `-T <ms>` emit a
//! `latency_req_max` event above this request latency, `-b <file>` custom BTF.
//! `ioprobe --print-meta` prints the `.meta` file.
//! Hidden test hooks: env `IOPROBE_EXTRA_HOOK=<category>:<name>` (or `raw:<name>`) adds a
//! required hook, to exercise the "unsupported" path with a tracepoint that does not exist;
//! env `IOPROBE_COMPLETION_HOOK=raw_tp` skips the preferred `tp_btf` completion program.

use std::mem::MaybeUninit;
use std::process::ExitCode;

use anyhow::Context;
use ioprobe::disk::DiskNames;
use ioprobe::loader::{required_hooks, CompletionHook, IoBpf};
use ioprobe::report::{self, DiskReport};
use probe_sdk::args::ProbeArgs;
use probe_sdk::bpf::{self, Hook};
use probe_sdk::record::{is_broken_pipe, RecordWriter};
use probe_sdk::run::PeriodLoop;
use probe_sdk::{error, info, warn};

const EXTRA_HOOK_ENV: &str = "IOPROBE_EXTRA_HOOK";
const COMPLETION_HOOK_ENV: &str = "IOPROBE_COMPLETION_HOOK";

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
    if let Ok(spec) = std::env::var(EXTRA_HOOK_ENV) {
        match Hook::parse(&spec) {
            Some(h) => hooks.push(h),
            None => error!("ignoring {EXTRA_HOOK_ENV}={spec:?}: expected <category>:<name>"),
        }
    }
    hooks
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
    let mut period = PeriodLoop::new(args.period()).context("cannot install signal handlers")?;
    info!(
        "ioprobe attached to raw tracepoints {} (completion via {}); period {} s",
        ioprobe::loader::RAW_TRACEPOINTS.join(", "),
        completion.name(),
        args.period_secs
    );

    let names = DiskNames::default();
    let latency_thr_us = args.latency_thr_ms.saturating_mul(1000);
    let mut out = RecordWriter::stdout();
    while period.wait_next() {
        let samples = probe.collect().context("cannot read the io maps")?;
        let mut write = || -> std::io::Result<()> {
            for sample in &samples {
                let labels = names.labels(sample.id);
                if let Some(only) = args.dev.as_deref() {
                    if labels.as_ref().map(|l| l.blk_name.as_str()) != Some(only) {
                        continue;
                    }
                }
                let disk = DiskReport {
                    sample,
                    labels: labels.as_ref(),
                };
                report::write_disk(&mut out, &disk)?;
                report::write_latency_event(&mut out, &disk, latency_thr_us)?;
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
    }
    Ok(())
}
