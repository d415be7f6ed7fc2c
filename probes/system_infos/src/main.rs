//! `system_infos` binary: parse flags, then prime, and every period collect and write.
//!
//! Control channel (stdin, [`probe_sdk::control`]): the report period, the tables, the event
//! thresholds, the NIC list and the processes of `system_proc` change without a restart; the
//! channel is read every 100 ms. Stdin at EOF (run by hand) changes nothing.

use anyhow::Context;
use probe_sdk::control::Control;
use probe_sdk::decl::Declaration;
use probe_sdk::event::CivilTime;
use probe_sdk::record::{is_broken_pipe, RecordWriter};
use probe_sdk::run::{terminated, PeriodLoop};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use system_infos::collector::Collector;
use system_infos::fs::SyscallStatFs;
use system_infos::options::{self, Options, USAGE};
use system_infos::runtime::{Settings, Tick, Ticker};
use system_infos::schema;

/// How long `statvfs` of a network filesystem may take before it is skipped (`--df-remote`).
const REMOTE_STATVFS_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest sleep between two looks at the control channel and the termination flag.
const SLICE: Duration = Duration::from_millis(100);

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

/// Applies a control message: logs one line for what changed (and one per refused value).
fn apply(
    msg: &probe_sdk::control::ControlMsg,
    decl: &Declaration,
    settings: &mut Settings,
    collector: &mut Collector,
    ticker: &mut Ticker,
) {
    let (new, refused) = settings.updated(decl, msg);
    for r in refused {
        probe_sdk::warn!("{r}");
    }
    let Some(line) = settings.describe_change(&new) else {
        return;
    };
    ticker.set_period(new.period(), Instant::now());
    collector.set_tables(new.tables);
    collector.set_thresholds(new.thresholds);
    collector.set_nics(options::parse_nics(&new.dev));
    collector.set_snoop(&new.snoop);
    probe_sdk::info!("{line}");
    *settings = new;
}

fn run(opts: Options) -> anyhow::Result<()> {
    let control = Control::from_stdin();
    let decl = schema::declaration();
    let mut settings = Settings::from_options(&opts);
    let period = settings.period();
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
    // Only for its signal handlers: the period clock is `Ticker`, which a control message re-times.
    let _signals = PeriodLoop::new(period).context("installing signal handlers")?;
    let mut ticker = Ticker::new(period, Instant::now());

    collector.cycle(&mut out, &now()).context("priming")?;
    while !terminated() {
        if let Some(msg) = control.take() {
            apply(&msg, &decl, &mut settings, &mut collector, &mut ticker);
        }
        if let Tick::Wait(left) = ticker.poll(Instant::now()) {
            std::thread::sleep(left.min(SLICE));
            continue;
        }
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
