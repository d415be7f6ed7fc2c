//! tcpprobe: per-connection TCP metrics (bytes, segments, RTT, windows, retransmits, resets,
//! state changes, establish latency), one record per connection key and table each period.
//!
//! Flags: the upstream ones (`-t` period, `-c 0|1` client ports, `-P` table bits, `-b` BTF), plus
//! `-M <n>`: most connection keys tracked (default 4096; the excess is counted in
//! `tcp_bpf_stats.map_full`). `tcpprobe --print-meta` prints the `.meta` file.
//! Hidden, for tests: `TCPPROBE_REQUIRE_HOOK=<category:name|raw:name>` makes the probe require
//! one more hook, so the "unsupported" path (exit code 3) can be exercised.

mod collector;
mod conn_key;
mod conn_table;
mod histogram;
mod owners;
mod skel;
mod tables;

use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::path::Path;

use anyhow::{bail, Context, Result};
use probe_sdk::args::ProbeArgs;
use probe_sdk::bpf::{self, Hook};
use probe_sdk::record::{is_broken_pipe, RecordWriter};
use probe_sdk::run::PeriodLoop;
use probe_sdk::{info, warn};

use crate::collector::{Collector, Options};
use crate::conn_table::ConnTable;
use crate::tables::{BIT_WINDOWS, STATS_TABLE};

/// Default for `-M`.
const DEFAULT_MAX_KEYS: u32 = 4096;
/// Idle keys are remembered this long (so their counters continue if they come back).
const RETAIN_SECS: u64 = 60;
/// Environment variable naming an extra hook to require (tests of the unsupported path).
const REQUIRE_HOOK_ENV: &str = "TCPPROBE_REQUIRE_HOOK";

fn max_keys(args: &ProbeArgs) -> Result<u32> {
    match args.extra_value('M') {
        None => Ok(DEFAULT_MAX_KEYS),
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
            _ => bail!("-M: invalid value \"{v}\", expected 1..=1000000"),
        },
    }
}

fn required_hooks() -> Vec<Hook> {
    let mut hooks = vec![
        Hook::raw_tracepoint("inet_sock_set_state"),
        Hook::raw_tracepoint("tcp_send_reset"),
        Hook::raw_tracepoint("tcp_receive_reset"),
    ];
    if let Ok(spec) = std::env::var(REQUIRE_HOOK_ENV) {
        match Hook::parse(&spec) {
            Some(h) => hooks.push(h),
            None => warn!("{REQUIRE_HOOK_ENV}: cannot parse \"{spec}\", ignored"),
        }
    }
    hooks
}

fn run() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("--print-meta") {
        print!("{}", tables::meta_text());
        return Ok(());
    }
    let args = ProbeArgs::from_env();
    let max_keys = max_keys(&args)?;
    for (flag, _) in args.extra.iter().filter(|(f, _)| *f != 'M') {
        warn!("-{flag} is not used by tcpprobe, ignored");
    }
    bpf::require_hooks(&required_hooks());
    let mut zero_window = args.probe_bits & BIT_WINDOWS != 0;
    if zero_window && !bpf::raw_tracepoint_exists("tcp_probe") {
        warn!("raw tracepoint tcp_probe missing: zero-window counts disabled");
        zero_window = false;
    }

    let opts = Options {
        report_cport: args.report_cport,
        max_keys,
        zero_window,
        btf_path: args.btf_path.clone(),
    };
    let mut object = MaybeUninit::uninit();
    let mut collector = Collector::start(&mut object, &opts)?;

    // Sockets older than the probe: name their owners before the first pass uses them.
    let proc_root = Path::new("/proc");
    let owners = owners::socket_owners(proc_root, &owners::tcp_socket_inodes(proc_root));
    let seeded = collector.seed_owners(&owners);
    collector.pass()?;
    collector.clear_owners();
    info!(
        "attached (zero-window hook: {}, client ports: {}, max keys: {max_keys}, pre-existing sockets named: {seeded})",
        if zero_window { "on" } else { "off" },
        if args.report_cport { "on" } else { "off" },
    );

    let retain = (RETAIN_SECS / u64::from(args.period_secs)).max(2);
    let mut table = ConnTable::new(max_keys as usize, retain);
    let mut out = RecordWriter::stdout();
    let mut period = PeriodLoop::new(args.period()).context("installing signal handlers")?;
    while period.wait_next() {
        collector.pass()?;
        table.apply(collector.flip_and_drain());
        let mut loss = collector.loss();
        loss.map_full = loss.map_full.saturating_add(table.overflow());
        let written = table
            .active()
            .into_iter()
            .try_for_each(|(k, e)| tables::write_entry(&mut out, args.probe_bits, k, e))
            .and_then(|()| bpf::write_loss_record(&mut out, STATS_TABLE, "tcp", &loss))
            .and_then(|()| out.flush());
        match written {
            Ok(()) => {}
            // The daemon went away: nothing left to report to.
            Err(e) if is_broken_pipe(&e) => return Ok(()),
            Err(e) => return Err(e).context("writing records"),
        }
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        probe_sdk::error!("{e:#}");
        // stdout may be a closed pipe; nothing useful to do if the flush fails.
        let _ = io::stdout().flush();
        std::process::exit(1);
    }
}
