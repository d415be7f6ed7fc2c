//! endpoint: TCP listen and connect endpoints (listen drops, accept-queue overflows, passive and
//! active opens and their failures by reason, SYN and SYN-ACK retransmits, establish latency,
//! accept-queue depth) and UDP sockets (receive drops, bytes and datagrams each way, buffer
//! errors), one record per endpoint key and table each period.
//!
//! Flags: the upstream ones (`-t` period, `-P` table bits, `-b` BTF), plus `-M <n>`: most
//! listen addresses, UDP sockets, pending connects and rows per table tracked, default 16384;
//! the excess is counted in `endpoint_bpf_stats.map_full`. `-w`/`-F` are refused (the control
//! channel's snoopers select processes). `endpoint --print-meta` prints the `.meta` file.
//!
//! Control channel (stdin, [`probe_sdk::control`]): `report_period`, the tables (`probe_bits`)
//! and the process selection (`snoop`) change without a restart, checked every drain (100 ms);
//! they filter at output.
//! Hidden, for tests: `ENDPOINT_REQUIRE_HOOK=<category:name|raw:name>` makes the probe require
//! one more hook, so the "unsupported" path (exit code 3) can be exercised.

mod collector;
mod decode;
mod runtime;
mod skel;
mod state;
mod tables;

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
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

use crate::collector::{Collector, Options};
use crate::decode::{Listener, Record, UdpLive};
use crate::runtime::Settings;
use crate::state::State;
use crate::tables::{BIT_TCP, BIT_UDP, DEFAULT_RING_MIB, STATS_TABLE};

/// Default for `-M`.
const DEFAULT_MAX: u32 = 16384;
/// Idle rows are remembered (and reported, with unchanged totals) this long.
const RETAIN_SECS: u64 = 60;
/// Longest wait between ring-buffer drains.
const DRAIN_EVERY: Duration = Duration::from_millis(100);
/// Environment variable naming an extra hook to require (tests of the unsupported path).
const REQUIRE_HOOK_ENV: &str = "ENDPOINT_REQUIRE_HOOK";

fn max_entries(args: &ProbeArgs) -> Result<u32> {
    args.extra_u32('M', DEFAULT_MAX, 1..=1_000_000)
        .map_err(anyhow::Error::msg)
}

fn required_hooks() -> Vec<Hook> {
    let mut hooks: Vec<Hook> = [
        "inet_sock_set_state",
        "tcp_retransmit_synack",
        "tcp_retransmit_skb",
        "sock_send_length",
        "sock_recv_length",
        "udp_fail_queue_rcv_skb",
    ]
    .into_iter()
    .map(Hook::raw_tracepoint)
    .collect();
    match Hook::from_env(REQUIRE_HOOK_ENV) {
        Some(Ok(h)) => hooks.push(h),
        Some(Err(spec)) => warn!("{REQUIRE_HOOK_ENV}: cannot parse \"{spec}\", ignored"),
        None => {}
    }
    hooks
}

/// Whether the kfree_skb tracepoint passes the receiving socket (`rx_sk`, Linux 6.13+); read
/// from the kernel BTF, so it holds with or without tracefs mounted.
fn kfree_skb_has_rx_sk() -> bool {
    bpf::raw_tracepoint_exists("kfree_skb") && bpf::trace_event_has_field("kfree_skb", "rx_sk")
}

/// One pass over both iterators and the UDP map into `state`; `baseline` at start-up.
fn pass(collector: &mut Collector<'_>, state: &RefCell<State>, baseline: bool) -> Result<()> {
    let mut listeners: Vec<Listener> = Vec::new();
    collector.tcp_pass(|b| {
        if let Some(Record::Listener(l)) = decode::decode(b) {
            listeners.push(l);
        }
    })?;
    // Listeners the iterator does not list: those of other network namespaces (containers),
    // known from their map entry only.
    let listed: HashSet<u64> = listeners.iter().map(|l| l.id.cookie).collect();
    listeners.extend(
        collector
            .listen_entries()
            .into_iter()
            .filter(|l| !listed.contains(&l.id.cookie)),
    );
    let mut udp: Vec<UdpLive> = Vec::new();
    collector.udp_pass(|b| {
        if let Some(u) = decode::decode_udp_live(b) {
            udp.push(u);
        }
    })?;
    let counters = collector.udp_counters();
    // Owners the kernel side did not see: from the host's /proc, once per socket.
    let wanted: HashSet<u64> = {
        let st = state.borrow();
        let inos: Vec<u64> = listeners
            .iter()
            .filter(|l| l.ino != 0 && !st.listener_owner_known(l.id.cookie))
            .map(|l| l.ino)
            .chain(
                udp.iter()
                    .filter(|u| counters.get(&u.id.cookie).is_none_or(|c| c.tgid == 0))
                    .map(|u| u.ino),
            )
            .collect();
        st.unresolved(inos.iter())
    };
    if !wanted.is_empty() {
        let found = probe_sdk::sockets::socket_owners(&probe_sdk::host::path("/proc"), &wanted);
        state.borrow_mut().resolved(&wanted, &found);
    }
    let mut st = state.borrow_mut();
    st.begin_pass();
    for l in &listeners {
        st.listener(l, baseline);
    }
    let gone = st.udp_pass(&udp, &counters, baseline);
    collector.forget_udp(&gone);
    Ok(())
}

fn retain_periods(period_secs: u32) -> u64 {
    (RETAIN_SECS / u64::from(period_secs.max(1))).max(2)
}

fn run() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("--print-meta") {
        print!("{}", tables::meta_text());
        return Ok(());
    }
    let args = ProbeArgs::from_env();
    let max = max_entries(&args)?;
    for (flag, _) in args.extra.iter().filter(|(f, _)| *f != 'M') {
        warn!("-{flag} is not used by endpoint, ignored");
    }
    if args.whitelist.is_some() || args.filter.is_some() {
        bail!(
            "-w/-F process filtering is not supported by endpoint: select processes with the control channel's snoopers"
        );
    }
    let control = Control::from_stdin();
    let declaration = tables::declaration();
    let mut settings = Settings::from_args(&args);
    bpf::require_hooks(&required_hooks());
    let conn_range = if bpf::raw_tracepoint_exists("consume_skb") {
        let r = collector::conn_request_range();
        if r.is_none() {
            warn!("tcp_rcv_state_process not in /proc/kallsyms: accept_overflow, syn_overflow and synack_sent count only what other hooks see");
        }
        r
    } else {
        warn!("raw tracepoint consume_skb missing: accept_overflow, syn_overflow and synack_sent count only what other hooks see");
        None
    };
    let drop_reasons = kfree_skb_has_rx_sk();
    if !drop_reasons {
        warn!(
            "tracepoint skb:kfree_skb without rx_sk: listen drops by reason and syn_drop disabled"
        );
    }
    // The ring buffer is sized before the load: from the daemon's first control line.
    let ring_bytes = bpf::ring_bytes_at_start(&control, DEFAULT_RING_MIB);
    let opts = Options {
        conn_range,
        drop_reasons,
        max_entries: max,
        btf_path: args.btf_path.clone(),
        udp_hooks: settings.probe_bits & BIT_UDP != 0,
        ring_bytes,
        retransmit_err: bpf::trace_event_has_field("tcp_retransmit_skb", "err"),
    };
    let mut object = MaybeUninit::uninit();
    let mut collector = Collector::start(&mut object, &opts)?;
    let _signals = PeriodLoop::new(settings.period()).context("installing signal handlers")?;

    let state = Rc::new(RefCell::new(State::new(
        max as usize,
        retain_periods(settings.period_secs),
    )));
    let undecodable = Rc::new(Cell::new(0u64));
    let poller = {
        let state = Rc::clone(&state);
        let undecodable = Rc::clone(&undecodable);
        RingPoller::new(collector.events(), move |bytes| {
            match decode::decode(bytes) {
                Some(r) => state.borrow_mut().record(r),
                None => undecodable.set(undecodable.get() + 1),
            }
            0
        })?
    };
    poller.poll(Duration::ZERO)?;
    pass(&mut collector, &state, true)?;
    info!(
        "attached (SYN drop classification: {}, drop reasons: {}, UDP hooks: {}, ring buffer: {} MiB, max entries: {max})",
        if conn_range.is_some() { "on" } else { "off" },
        if drop_reasons { "on" } else { "off" },
        if collector.udp_hooks() { "on" } else { "off" },
        ring_bytes >> 20,
    );

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
                    state
                        .borrow_mut()
                        .set_retain(retain_periods(new.period_secs));
                }
                let udp = new.probe_bits & BIT_UDP != 0;
                if udp != collector.udp_hooks() {
                    // Failing to attach leaves the hooks off and the probe running.
                    match collector.set_udp_hooks(udp) {
                        Ok(()) => info!("UDP hooks {}", if udp { "attached" } else { "detached" }),
                        Err(e) => warn!("{e}"),
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
        next += settings.period();
        if next <= now {
            next = now + settings.period();
        }
        poller.poll(Duration::ZERO)?;
        pass(&mut collector, &state, false)?;
        let mut loss = collector.loss();
        loss.lost = loss.lost.saturating_add(undecodable.get());
        let written = {
            let st = state.borrow();
            loss.map_full = loss.map_full.saturating_add(st.overflow());
            let mut res = Ok(());
            if settings.probe_bits & BIT_TCP != 0 {
                res = st
                    .tcp_rows()
                    .filter(|(k, _)| settings.snoop.selects(k.tgid))
                    .try_for_each(|(k, r)| tables::write_tcp(&mut out, k, r));
            }
            if res.is_ok() && settings.probe_bits & BIT_UDP != 0 {
                res = st
                    .udp_rows()
                    .filter(|(k, _)| settings.snoop.selects(k.tgid))
                    .try_for_each(|(k, r)| tables::write_udp(&mut out, k, r));
            }
            res.and_then(|()| bpf::write_loss_record(&mut out, STATS_TABLE, "endpoint", &loss))
                .and_then(|()| out.flush())
        };
        state.borrow_mut().end_period();
        match written {
            Ok(()) => {}
            Err(e) if is_broken_pipe(&e) => return Ok(()),
            Err(e) => return Err(e).context("writing records"),
        }
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        probe_sdk::error!("{e:#}");
        let _ = io::stdout().flush();
        std::process::exit(1);
    }
}
