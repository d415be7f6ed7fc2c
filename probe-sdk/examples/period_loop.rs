//! A minimal probe loop used by the integration tests: prints one record per period until
//! SIGTERM/SIGINT/SIGHUP, then logs and exits 0.

use std::process::ExitCode;

use probe_sdk::args::ProbeArgs;
use probe_sdk::record::{is_broken_pipe, RecordWriter};
use probe_sdk::run::PeriodLoop;

fn main() -> ExitCode {
    let args = ProbeArgs::from_env();
    let Ok(mut lp) = PeriodLoop::new(args.period()) else {
        probe_sdk::error!("cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    let mut out = RecordWriter::stdout();
    probe_sdk::info!("started, period {}s", args.period_secs);
    let mut n: u64 = 0;
    // Report once right away so a test can see the probe is up before signalling it.
    loop {
        n += 1;
        let res = out
            .record("period_loop")
            .field("tick")
            .field(&n)
            .end()
            .and_then(|()| out.flush());
        if let Err(e) = res {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            probe_sdk::error!("write failed: {e}");
            return ExitCode::FAILURE;
        }
        if !lp.wait_next() {
            break;
        }
    }
    probe_sdk::info!("terminated after {n} periods");
    ExitCode::SUCCESS
}
