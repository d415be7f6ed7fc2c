//! `jvmprobe` binary: parse flags, then every period collect and write.
//!
//! Control channel (stdin, [`probe_sdk::control`]): `report_period` changes the period and
//! `snoop` (the daemon's resolved snoopers) selects the JVMs; both apply without a restart.
//! Stdin at EOF (run by hand) changes nothing.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use jvmprobe::collect::Collector;
use jvmprobe::{report, tables};
use probe_sdk::args::ProbeArgs;
use probe_sdk::control::{Control, ControlMsg};
use probe_sdk::decl::{Declaration, ParamValue, Snoop};
use probe_sdk::record::{is_broken_pipe, RecordWriter};
use probe_sdk::run::{self, PeriodLoop};

/// Longest sleep between two looks at the control channel and the termination flag.
const SLICE: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--print-meta") {
        print!("{}", tables::meta_text());
        return ExitCode::SUCCESS;
    }
    let args = ProbeArgs::from_env(); // exits 2 on a bad flag
    match run_probe(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            probe_sdk::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What the control channel sets.
struct Runtime {
    decl: Declaration,
    period: Duration,
    next: Instant,
    snoop: Snoop,
}

impl Runtime {
    fn apply(&mut self, msg: &ControlMsg) {
        match msg.checked(&self.decl, "report_period") {
            Some(Ok(ParamValue::Int(secs))) => {
                let period = Duration::from_secs(secs.unsigned_abs());
                if period != self.period && !period.is_zero() {
                    self.next = run::rebase(self.next, self.period, period, Instant::now());
                    self.period = period;
                    probe_sdk::info!("control: report_period {} s", period.as_secs());
                }
            }
            Some(Err(e)) => probe_sdk::warn!("control: {e}; kept the current value"),
            _ => {}
        }
        if msg.snoop != self.snoop {
            self.snoop = msg.snoop.clone();
            probe_sdk::info!("control: snoop {}", self.snoop);
        }
    }
}

fn run_probe(args: &ProbeArgs) -> anyhow::Result<()> {
    // Only for its signal handlers: the loop below keeps its own clock, which control re-times.
    let _signals = PeriodLoop::new(args.period()).context("installing signal handlers")?;
    let control = Control::from_stdin();
    let mut collector = Collector::new(probe_sdk::host::path("/proc"));
    let mut rt = Runtime {
        decl: tables::declaration(),
        period: args.period(),
        next: Instant::now(),
        snoop: Snoop::default(),
    };
    let mut out = RecordWriter::stdout();
    probe_sdk::info!("jvmprobe started, period {} s", args.period_secs);
    while !run::terminated() {
        if let Some(msg) = control.take() {
            rt.apply(&msg);
        }
        let now = Instant::now();
        if now < rt.next {
            std::thread::sleep((rt.next - now).min(SLICE));
            continue;
        }
        let cycle = collector.collect(&rt.snoop);
        let written =
            report::write_cycle(&mut out, &cycle, &collector.counters()).and_then(|()| out.flush());
        match written {
            Ok(()) => {}
            // The daemon closed our stdout: it is stopping us.
            Err(e) if is_broken_pipe(&e) => return Ok(()),
            Err(e) => return Err(e).context("writing records"),
        }
        rt.next += rt.period;
        if rt.next <= Instant::now() {
            rt.next = Instant::now() + rt.period;
        }
    }
    Ok(())
}
