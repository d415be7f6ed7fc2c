//! The Rust example of docs/writing-a-probe.md, kept compiling: reports upstream's `example`
//! table every period and an event when CPU usage passes `-U` (with `-l`).

use std::process::ExitCode;

use probe_sdk::args::ProbeArgs;
use probe_sdk::event::Severity;
use probe_sdk::record::{is_broken_pipe, RecordWriter};
use probe_sdk::run::PeriodLoop;

fn main() -> ExitCode {
    let args = ProbeArgs::from_env(); // exits 2 on a bad flag
    let Ok(mut period) = PeriodLoop::new(args.period()) else {
        return ExitCode::FAILURE;
    };
    let mut out = RecordWriter::stdout();
    probe_sdk::info!("started, period {}s", args.period_secs);
    // false once SIGTERM/SIGINT/SIGHUP arrived
    while period.wait_next() {
        let cpu: f64 = 12.5;
        let mut res = out
            .record("example")
            .field("system")
            .field(&cpu)
            .field(&43.1f64)
            .field(&17u64)
            .end();
        if args.report_events && cpu > f64::from(args.res_upper_pct) {
            let msg = format!("Too high cpu utilization({cpu:.2}%).");
            res =
                res.and_then(|()| out.event("cpu", "cpu", "total_used_per", Severity::Warn, &msg));
        }
        // one write per period
        if let Err(e) = res.and_then(|()| out.flush()) {
            if is_broken_pipe(&e) {
                break;
            }
            probe_sdk::error!("write: {e}");
        }
    }
    ExitCode::SUCCESS
}
