//! `system_infos` binary: parse flags, then prime, and every period collect and write.

use anyhow::Context;
use probe_sdk::event::CivilTime;
use probe_sdk::record::{is_broken_pipe, RecordWriter};
use probe_sdk::run::PeriodLoop;
use std::process::ExitCode;
use std::time::Duration;
use system_infos::collector::Collector;
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
        opts.collector_config(),
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
