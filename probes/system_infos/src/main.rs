//! `system_infos` binary: parse flags, then prime, and every period collect and write.

use anyhow::Context;
use probe_sdk::event::CivilTime;
use probe_sdk::record::{is_broken_pipe, RecordWriter};
use probe_sdk::run::PeriodLoop;
use std::process::ExitCode;
use std::time::Duration;
use system_infos::collector::{Collector, Config, WhitelistFile};
use system_infos::events::Thresholds;
use system_infos::fs::SyscallStatFs;
use system_infos::options::{self, Options, USAGE};
use system_infos::schema;

/// How long `statvfs` of a network filesystem may take before it is skipped (`--df-remote`).
const REMOTE_STATVFS_TIMEOUT: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let opts = match options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("[ERROR] {e}");
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if opts.help {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if opts.print_meta {
        print!("{}", schema::render_meta());
        return ExitCode::SUCCESS;
    }
    match run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            probe_sdk::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config(opts: &Options) -> Config {
    let a = &opts.args;
    for (flag, _) in &a.extra {
        probe_sdk::warn!("flag -{flag} is not used by system_infos; ignored");
    }
    Config {
        paths: opts.paths.clone(),
        tables: a.probe_bits,
        thresholds: Thresholds {
            enabled: a.report_events,
            upper_pct: a.res_upper_pct,
            drops: a.drops_thr,
        },
        nics: a
            .dev
            .as_deref()
            .map(|d| {
                d.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        df_remote: opts.df_remote,
        qdisc: opts.live,
        whitelist: a.whitelist.clone().map(WhitelistFile::new),
        pids: a.pids.clone(),
        ticks_per_sec: ticks_per_sec(),
        measure_cpu: true,
    }
}

/// USER_HZ: the unit of the tick counters in `/proc`.
fn ticks_per_sec() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(100)
}

fn now() -> CivilTime {
    CivilTime::local_now().unwrap_or(CivilTime {
        year: 1970,
        month: 1,
        day: 1,
        hour: 0,
        minute: 0,
        second: 0,
        weekday: 4,
    })
}

fn run(opts: Options) -> anyhow::Result<()> {
    let period = opts.args.period();
    probe_sdk::info!(
        "system_infos: period {}s, tables 0x{:x}, events {}, whitelist {}",
        period.as_secs(),
        opts.args.probe_bits,
        if opts.args.report_events { "on" } else { "off" },
        opts.args
            .whitelist
            .as_ref()
            .map_or("none".into(), |p| p.display().to_string()),
    );
    let mut collector = Collector::new(
        config(&opts),
        Box::new(SyscallStatFs::new(REMOTE_STATVFS_TIMEOUT)),
    );
    let mut out = RecordWriter::stdout();
    let mut lp = PeriodLoop::new(period).context("installing signal handlers")?;

    collector.cycle(&mut out, &now()).context("priming")?;
    while lp.wait_next() {
        let written = collector.cycle(&mut out, &now()).and_then(|_| out.flush());
        match written {
            Ok(()) => {}
            // The daemon closed our stdout: it is stopping us, nothing to report.
            Err(e) if is_broken_pipe(&e) => return Ok(()),
            Err(e) => return Err(e).context("writing records"),
        }
        if opts.once {
            break;
        }
    }
    Ok(())
}
