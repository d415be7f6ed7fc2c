//! `sliprobe`: CPU, memory and IO latencies of the node and of each container (see
//! `sliprobe.meta` and docs/probes/sli.md).
//!
//! Flags (upstream): `-t <secs>` period, `-P <bits>` sub-probes (1 `cpu`, 2 `mem`, 4 `io`,
//! 8 `node`, 16 `container`, 32 `histogram`; default 31, `-P 0` every one), `-b <file>` custom
//! BTF. The control channel on stdin changes period, sub-probes and snoopers without a restart
//! ([`sliprobe::settings`]); each applied change logs one `[INFO]` line.
//! `sliprobe --print-meta` prints the `.meta` file (tables and run-time control).
//! Hidden test hook: env `SLIPROBE_EXTRA_HOOK=<category>:<name>` (or `raw:<name>`) adds a
//! required hook, to exercise the "unsupported" path with a tracepoint that does not exist.

use std::mem::MaybeUninit;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use probe_sdk::args::ProbeArgs;
use probe_sdk::bpf::{self, Hook};
use probe_sdk::control::Control;
use probe_sdk::record::{is_broken_pipe, RecordWriter};
use probe_sdk::run::{self, PeriodLoop};
use probe_sdk::{error, info, warn};
use sliprobe::aggregate::Aggregator;
use sliprobe::cgroups::{self, Directory, Layout, Mode};
use sliprobe::files::{FileRow, Files};
use sliprobe::loader::{required_hooks, Loaded, SliBpf};
use sliprobe::report::{self, RowReport};
use sliprobe::settings::Settings;
use sliprobe::stats::{Source, LAT_BOUNDS_NS};
use sliprobe::tables::{self, Scope, NODE_KEY};

const EXTRA_HOOK_ENV: &str = "SLIPROBE_EXTRA_HOOK";
/// Longest sleep between termination and control checks.
const POLL_SLICE: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--print-meta") {
        print!("{}", tables::meta_text());
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

/// The cgroup directory of this period (empty without cgroup mounts).
fn directory(layout: Option<&Layout>, warned: &mut bool) -> Directory {
    let Some(layout) = layout else {
        return Directory::default();
    };
    let walk = cgroups::walk(&layout.ids);
    if (walk.truncated || walk.errors > 0) && !*warned {
        *warned = true;
        warn!(
            "cgroup walk of {} incomplete (truncated: {}, unreadable: {}); no map element is deleted while it is",
            layout.ids.dir.display(),
            walk.truncated,
            walk.errors
        );
    }
    Directory::from_walk(&walk)
}

fn run(args: &ProbeArgs) -> anyhow::Result<()> {
    // Exits with "[ERROR] unsupported: …" (code 3) when a hook is missing.
    bpf::require_hooks(&hooks());

    let layout = Layout::of_host();
    let mode = layout.as_ref().map_or(Mode::Dfl, |l| l.mode);
    if layout.is_none() {
        warn!("no cgroup hierarchy mounted: node rows only");
    }
    let loaded = Loaded::new(bpf::raw_tracepoint_exists);
    let missing = loaded.missing();
    if !missing.is_empty() {
        warn!(
            "hooks missing, their latencies are reported empty: {}",
            missing.join(", ")
        );
    }
    let mut storage = MaybeUninit::uninit();
    let mut probe = SliBpf::load(&mut storage, args.btf_path.as_deref(), mode, loaded)
        .context("cannot load the sli BPF programs")?;
    if probe.lat_bounds_ns() != Some(LAT_BOUNDS_NS) {
        anyhow::bail!("latency buckets of the BPF object differ from the probe's (build mismatch)");
    }
    let measured = loaded.measures();
    let _signals = PeriodLoop::new(args.period()).context("cannot install signal handlers")?;
    // Stdin closed or /dev/null (run by hand): no message ever arrives.
    let control = Control::from_stdin();
    let decl = tables::declaration();
    let mut settings = Settings::from_args(args);
    probe
        .attach(settings.groups())
        .context("cannot attach the sli BPF programs")?;
    info!(
        "sliprobe attached to {} ({}); sub-probes {}; period {} s",
        probe.attached_hooks().join(", "),
        mode.describe(),
        settings.tables.names().join(", "),
        settings.period.as_secs()
    );

    let mut walk_warned = false;
    let mut files = Files::new(layout.clone(), container_info::host::path("/proc"));
    // First readings, so that the first period already has file values.
    files.node();
    let start = Instant::now();
    for c in directory(layout.as_ref(), &mut walk_warned)
        .containers
        .values()
    {
        files.container(c, start);
    }
    let mut agg = Aggregator::default();
    let mut out = RecordWriter::stdout();
    let mut next = Instant::now() + settings.period;
    while !run::terminated() {
        std::thread::sleep(
            next.saturating_duration_since(Instant::now())
                .min(POLL_SLICE),
        );
        if let Some(msg) = control.take() {
            let old_period = settings.period;
            let old_groups = settings.groups();
            let applied = settings.apply(&msg, &decl);
            for refused in &applied.refused {
                warn!("control: {refused}");
            }
            for change in &applied.changes {
                info!("control: {change}");
            }
            if applied.period_changed {
                next = run::rebase(next, old_period, settings.period, Instant::now());
            }
            if settings.groups() != old_groups {
                probe
                    .attach(settings.groups())
                    .context("cannot attach the sli BPF programs")?;
                info!("control: attached {}", probe.attached_hooks().join(", "));
            }
        }
        let now = Instant::now();
        if now < next {
            continue;
        }
        let collected = probe.collect().context("cannot read the sli maps")?;
        let dir = directory(layout.as_ref(), &mut walk_warned);
        let gone = agg.fold(&collected, &dir);
        for source in [Source::Cpu, Source::MemIo] {
            probe.forget(source, gone.of(source));
        }
        let node_files = files.node();
        let at = Instant::now();
        let t = settings.tables;
        let mut write = || -> std::io::Result<()> {
            let node = RowReport {
                key: NODE_KEY,
                lat: &agg.node,
                files: &node_files,
            };
            report::write_row(&mut out, Scope::Node, t, measured, &node)?;
            if t.container {
                for (id, row) in &agg.containers {
                    let Some(c) = dir.containers.get(id) else {
                        continue;
                    };
                    let selected = layout
                        .as_ref()
                        .is_some_and(|l| cgroups::snoop_selects(&settings.snoop, &l.ids, c));
                    if !selected {
                        continue;
                    }
                    let file_row: FileRow = files.container(c, at);
                    let rr = RowReport {
                        key: id,
                        lat: row,
                        files: &file_row,
                    };
                    report::write_row(&mut out, Scope::Container, t, measured, &rr)?;
                }
            }
            report::write_bpf_stats(&mut out, &probe.loss_counters())?;
            out.flush()
        };
        let written = write();
        files.retain(|k| dir.containers.contains_key(k));
        match written {
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
