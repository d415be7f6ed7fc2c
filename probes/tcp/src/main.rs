//! tcpprobe: per-connection TCP metrics (bytes, segments, RTT, windows, retransmits, resets,
//! opens and closes by kind, establish latency, zero windows), one record per connection key
//! and table each period.
//!
//! Flags: the upstream ones (`-t` period, `-c 0|1` client ports, `-P` table bits, `-b` BTF,
//! `-l` events, `-T` latency and `-D` drops thresholds; `-w` and `-F` are refused at start),
//! plus `-M <n>`: most connections (sockets) and keys tracked, default 16384; the excess is
//! counted in `tcp_bpf_stats.map_full`. `tcpprobe --print-meta` prints the `.meta` file.
//!
//! Control channel (stdin, [`probe_sdk::control`]): `report_period`, `report_cport`,
//! `latency_thr`, `drops_thr`, `report_event` (`cluster_ip_backend` accepts only 0), the tables
//! (`probe_bits`) and the process selection (`snoop`) change without a restart, checked every
//! drain (100 ms). Every hook but the per-segment zero-window one stays attached whatever the
//! tables, so tables and process selection filter at output (connections of unselected
//! processes are still tracked and count towards `-M`); the zero-window hook is attached while
//! the windows table is on and detached otherwise.
//! Hidden, for tests: `TCPPROBE_REQUIRE_HOOK=<category:name|raw:name>` makes the probe require
//! one more hook, so the "unsupported" path (exit code 3) can be exercised.

mod collector;
mod conn_key;
mod conn_table;
mod decode;
mod events;
mod hz;
mod runtime;
mod skel;
mod tables;
mod tracker;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use probe_sdk::args::ProbeArgs;
use probe_sdk::bpf::{self, Hook, RingPoller};
use probe_sdk::control::Control;
use probe_sdk::record::{is_broken_pipe, RecordWriter};
use probe_sdk::run::{terminated, PeriodLoop};
use probe_sdk::{info, warn};

use crate::collector::{Collector, Optional, Options};
use crate::conn_table::ConnTable;
use crate::decode::Record;
use crate::hz::HzEstimate;
use crate::runtime::Settings;
use crate::tables::{Ctx, BIT_WINDOWS, DEFAULT_RING_MIB, STATS_TABLE};
use crate::tracker::Tracker;
use probe_sdk::sockets::{self, Owner};

/// Default for `-M`.
const DEFAULT_MAX_CONNS: u32 = 16384;
/// Idle keys are remembered (and reported, with unchanged totals) this long, so their totals
/// continue if they come back.
const RETAIN_SECS: u64 = 60;
/// Longest wait between ring-buffer drains (records are submitted without wake-ups).
const DRAIN_EVERY: Duration = Duration::from_millis(100);
/// Environment variable naming an extra hook to require (tests of the unsupported path).
const REQUIRE_HOOK_ENV: &str = "TCPPROBE_REQUIRE_HOOK";

fn max_conns(args: &ProbeArgs) -> Result<u32> {
    args.extra_u32('M', DEFAULT_MAX_CONNS, 1..=1_000_000)
        .map_err(anyhow::Error::msg)
}

fn required_hooks() -> Vec<Hook> {
    let mut hooks = vec![
        Hook::raw_tracepoint("inet_sock_set_state"),
        Hook::raw_tracepoint("tcp_send_reset"),
        Hook::raw_tracepoint("tcp_receive_reset"),
    ];
    match Hook::from_env(REQUIRE_HOOK_ENV) {
        Some(Ok(h)) => hooks.push(h),
        Some(Err(spec)) => warn!("{REQUIRE_HOOK_ENV}: cannot parse \"{spec}\", ignored"),
        None => {}
    }
    hooks
}

/// The optional hooks the kernel has; each missing one gets a `[WARN]` naming the fields it
/// leaves absent.
fn optional_hooks() -> Optional {
    let has = |name: &str, fields: &str| {
        let ok = bpf::raw_tracepoint_exists(name);
        if !ok {
            warn!("raw tracepoint {name} missing: {fields} absent");
        }
        ok
    };
    Optional {
        // Its receive-side drops name the socket only since Linux 6.13 (`rx_sk`).
        kfree_skb: {
            let ok = bpf::raw_tracepoint_exists("kfree_skb")
                && bpf::trace_event_has_field("kfree_skb", "rx_sk");
            if !ok {
                warn!(
                    "tracepoint skb:kfree_skb without rx_sk: tcp_abn.backlog_drops, \
                     filter_drops and rmem_scheduls absent"
                );
            }
            ok
        },
        exceed_buf: has("sock_exceed_buf_limit", "tcp_abn.tcp_oom"),
        error_report: has("inet_sk_error_report", "tcp_abn.tmout_count and sk_err"),
        send_length: has("sock_send_length", "tcp_abn.snd_buf_limit_count"),
    }
}

/// Runs the tcp iterator once into the tracker; `owners` names sockets older than the probe.
/// The pass's first record also samples the kernel's jiffies for `hz`.
fn pass(
    collector: &mut Collector<'_>,
    tracker: &RefCell<Tracker>,
    owners: Option<&HashMap<u64, Owner>>,
    hz: &mut HzEstimate,
) -> Result<()> {
    let mut t = tracker.borrow_mut();
    t.begin_pass();
    let at = Instant::now();
    let mut sampled = false;
    collector.pass(|bytes| {
        if let Some(Record::Live {
            id,
            counters,
            windows,
            ino,
            extra,
        }) = decode::decode(bytes)
        {
            if !sampled {
                hz.sample(extra.jiffies, at);
                sampled = true;
            }
            t.live(&id, &counters, &windows, &extra, ino, owners);
        }
    })?;
    t.end_pass();
    Ok(())
}

/// Idle keys are remembered for [`RETAIN_SECS`], at least two periods.
fn retain_periods(period_secs: u32) -> u64 {
    (RETAIN_SECS / u64::from(period_secs.max(1))).max(2)
}

fn run() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("--print-meta") {
        print!("{}", tables::meta_text());
        return Ok(());
    }
    let args = ProbeArgs::from_env();
    let max_conns = max_conns(&args)?;
    for (flag, _) in args.extra.iter().filter(|(f, _)| *f != 'M') {
        warn!("-{flag} is not used by tcpprobe, ignored");
    }
    if args.whitelist.is_some() {
        bail!(
            "-w (process whitelist file) is not supported by tcpprobe; select processes with the control channel's snoopers instead"
        );
    }
    if args.filter.is_some() {
        bail!(
            "-F (process filter) is not supported by tcpprobe; select processes with the control channel's snoopers instead"
        );
    }
    let control = Control::from_stdin();
    let declaration = tables::declaration();
    let mut settings = Settings::from_args(&args);
    if let Some(e) = settings.check_args(&declaration).first() {
        bail!("{e}");
    }
    bpf::require_hooks(&required_hooks());
    let zero_window_hook = bpf::raw_tracepoint_exists("tcp_probe");
    if !zero_window_hook {
        warn!("raw tracepoint tcp_probe missing: zero-window counts disabled");
    }
    let optional = optional_hooks();

    // The ring buffer is sized before the load: from the daemon's first control line.
    let ring_bytes = bpf::ring_bytes_at_start(&control, DEFAULT_RING_MIB);
    let opts = Options {
        ring_bytes,
        zero_window: zero_window_hook,
        btf_path: args.btf_path.clone(),
        optional,
    };
    let mut object = MaybeUninit::uninit();
    let mut collector = Collector::start(&mut object, &opts)?;
    let attached = collector.attached();
    let mut hz = HzEstimate::default();
    let zero_window = collector.set_zero_window(settings.probe_bits & BIT_WINDOWS != 0)?;
    // Before the first drain, so no record is missed between attach and the loop.
    let _signals = PeriodLoop::new(settings.period()).context("installing signal handlers")?;

    let tracker = Rc::new(RefCell::new(Tracker::new(
        max_conns as usize,
        settings.report_cport,
    )));
    let undecodable = Rc::new(Cell::new(0u64));
    let poller = {
        let tracker = Rc::clone(&tracker);
        let undecodable = Rc::clone(&undecodable);
        RingPoller::new(collector.events(), move |bytes| {
            match decode::decode(bytes) {
                Some(r) => tracker.borrow_mut().record(r),
                None => undecodable.set(undecodable.get() + 1),
            }
            0
        })?
    };

    // Sockets older than the probe: their owners from the host's /proc, then a first pass
    // adopts them.
    let proc_root = probe_sdk::host::path("/proc");
    let owners = sockets::socket_owners(&proc_root, &sockets::tcp_socket_inodes(&proc_root));
    poller.poll(Duration::ZERO)?;
    pass(&mut collector, &tracker, Some(&owners), &mut hz)?;
    info!(
        "attached (zero-window hook: {}, client ports: {}, ring buffer: {} MiB, max connections: {max_conns}, older sockets named: {})",
        if zero_window { "on" } else { "off" },
        if settings.report_cport { "on" } else { "off" },
        ring_bytes >> 20,
        owners.len(),
    );
    drop(owners);

    let mut table = ConnTable::new(max_conns as usize, retain_periods(settings.period_secs));
    let mut out = RecordWriter::stdout();
    let mut next = Instant::now() + settings.period();
    while !terminated() {
        if let Some(msg) = control.take() {
            if let Some(note) = bpf::ring_change_note(&msg, ring_bytes, DEFAULT_RING_MIB) {
                warn!("{note}");
            }
            let (new, refused) = settings.updated(&declaration, &msg);
            for r in refused {
                warn!("{r}");
            }
            if let Some(line) = settings.describe_change(&new) {
                if new.period_secs != settings.period_secs {
                    next = probe_sdk::run::rebase(
                        next,
                        settings.period(),
                        new.period(),
                        Instant::now(),
                    );
                    table.set_retain(retain_periods(new.period_secs));
                }
                if new.report_cport != settings.report_cport {
                    tracker.borrow_mut().set_report_cport(new.report_cport);
                }
                let windows = new.probe_bits & BIT_WINDOWS != 0;
                if windows != (settings.probe_bits & BIT_WINDOWS != 0) {
                    if let Err(e) = collector.set_zero_window(windows) {
                        warn!("zero-window counts stay off: {e}");
                    }
                }
                info!("{line}");
                settings = new;
            }
        }
        let now = Instant::now();
        if now < next {
            poller.poll((next - now).min(DRAIN_EVERY))?;
            continue;
        }
        // Skip boundaries missed while busy rather than firing them back to back.
        next += settings.period();
        if next <= now {
            next = now + settings.period();
        }
        poller.poll(Duration::ZERO)?;
        pass(&mut collector, &tracker, None, &mut hz)?;
        let (deltas, tracked_overflow) = {
            let mut t = tracker.borrow_mut();
            (t.take_period(), t.overflow())
        };
        table.apply(deltas);
        let mut loss = collector.loss();
        loss.lost = loss.lost.saturating_add(undecodable.get());
        loss.map_full = loss
            .map_full
            .saturating_add(table.overflow())
            .saturating_add(tracked_overflow);
        // Every remembered key, idle ones included: a per-period field must show 0 change
        // rather than keep its last change visible.
        let ctx = Ctx {
            hz: hz.hz(),
            drops: attached.kfree_skb,
            exceed_buf: attached.exceed_buf,
            error_report: attached.error_report,
            send_length: attached.send_length,
        };
        let written = table
            .rows()
            .into_iter()
            .filter(|(k, _)| settings.snoop.selects(k.tgid))
            .try_for_each(|(k, e)| {
                tables::write_entry(&mut out, settings.probe_bits, k, e, &ctx)?;
                if settings.report_event {
                    events::write_events(&mut out, k, e, &settings.thresholds)?;
                }
                Ok(())
            })
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
