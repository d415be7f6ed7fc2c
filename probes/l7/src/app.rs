//! The probes' run loop: load and attach, poll the ring buffer, apply control messages, write
//! one period's tables. [`Mode`] says which probe runs: `l7probe` (every protocol, the `l7_*`
//! tables) or `kafkaprobe` (Kafka on one broker port, the `kafkaprobe` table).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use l7_protocol::tracker::{ApiKey, Limits, RpcStats, Snapshot, Span, TopicKey, TraceConfig};
use probe_sdk::args::ProbeArgs;
use probe_sdk::bpf::{self, Hook, RingPoller};
use probe_sdk::control::Control;
use probe_sdk::decl::ParamValue;
use probe_sdk::record::{is_broken_pipe, RecordWriter};
use probe_sdk::run::{terminated, PeriodLoop};
use probe_sdk::{info, warn};

use crate::collector::{Collector, Options};
use crate::conns::Conns;
use crate::decode::Event;
use crate::reorder::Reorder;
use crate::runtime::Settings;
use crate::tables::{
    BIT_BYTES, BIT_RPC, BIT_TRACE, DEFAULT_RING_MIB, MAX_SPANS_PER_PERIOD, PARSE_TABLE, STATS_TABLE,
};
use crate::tls::tls_hooks;
use crate::{decode, kafka, tables};
use probe_sdk::bpf::uprobe_libs::LibHooks;

/// Which probe runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `l7probe`: every protocol of the selected processes, the `l7_*` tables.
    L7,
    /// `kafkaprobe`: Kafka on the broker port (`-k`) of every process, the `kafkaprobe` table.
    Kafka,
}

impl Mode {
    /// The probe's name (its binary, its stats rows).
    pub fn name(self) -> &'static str {
        match self {
            Mode::L7 => "l7probe",
            Mode::Kafka => "kafkaprobe",
        }
    }

    /// Default for `-C`: a Produce request's or Fetch response's topic headers follow record
    /// sets, so kafkaprobe captures as much as the kernel side allows.
    fn default_capture(self) -> u32 {
        match self {
            Mode::L7 => 1024,
            Mode::Kafka => 4096,
        }
    }
}
/// Longest wait between ring-buffer drains.
const DRAIN_EVERY: Duration = Duration::from_millis(100);
/// Shortest time between two flushes of the CPUs' batches (a wake-up of the consumer takes
/// what the ring holds; its parsing waits for the next flush).
const DRAIN_MIN: Duration = Duration::from_millis(20);

/// Unix time minus the kernel's monotonic clock, ns: turns event timestamps into Unix time.
fn wall_offset_ns() -> i128 {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    wall - i128::from(bpf::ktime_ns())
}

/// What `l7_rpc_trace` reports under `settings` (None: the sub-probe is off).
fn trace_config(mode: Mode, settings: &Settings) -> Option<TraceConfig> {
    (mode == Mode::L7 && settings.probe_bits & BIT_TRACE != 0).then(|| TraceConfig {
        min_latency_us: u64::from(settings.latency_thr_ms) * 1_000,
        max_spans: MAX_SPANS_PER_PERIOD,
    })
}

/// The previous period's `l7_rpc` and `l7_rpc_api` values (for rates and ratios).
#[derive(Default)]
struct Before {
    rpcs: BTreeMap<l7_protocol::tracker::Key, RpcStats>,
    apis: BTreeMap<ApiKey, RpcStats>,
}

/// Writes the period's l7 tables of the selected processes: `l7_link`, `l7_rpc`, `l7_rpc_api`
/// per the sub-probes, and `spans` (`l7_rpc_trace`, taken only when its sub-probe is on).
fn write_period<W: Write>(
    out: &mut RecordWriter<W>,
    settings: &Settings,
    snap: &Snapshot,
    spans: &[Span],
    before: &Before,
    secs: f64,
) -> io::Result<()> {
    let zero = RpcStats::default();
    let comm = |tgid: u32| snap.comms.get(&tgid).map_or("unknown", |c| c.as_str());
    let selected = |tgid: u32| settings.snoop.selects(tgid);
    if settings.probe_bits & BIT_BYTES != 0 {
        for (k, s) in snap.links.iter().filter(|(k, _)| selected(k.tgid)) {
            tables::write_link(out, k, comm(k.tgid), s)?;
        }
    }
    if settings.probe_bits & BIT_RPC != 0 {
        for (k, s) in snap.rpcs.iter().filter(|(k, _)| selected(k.tgid)) {
            let key = ApiKey {
                key: k.clone(),
                api: String::new(),
            };
            let b = before.rpcs.get(k).unwrap_or(&zero);
            tables::write_rpc(out, &key, false, comm(k.tgid), s, b, secs)?;
        }
        for (k, s) in snap.apis.iter().filter(|(k, _)| selected(k.key.tgid)) {
            let b = before.apis.get(k).unwrap_or(&zero);
            tables::write_rpc(out, k, true, comm(k.key.tgid), s, b, secs)?;
        }
    }
    if !spans.is_empty() {
        let offset = wall_offset_ns();
        for s in spans.iter().filter(|s| selected(s.key.tgid)) {
            tables::write_span(out, s, comm(s.key.tgid), offset)?;
        }
    }
    Ok(())
}

/// Brings the SSL hooks in line with `settings` (attaching to new processes' libssl).
fn sync_tls(collector: &mut Collector<'_>, hooks: &mut LibHooks, settings: &Settings, on: bool) {
    let want = on && settings.ssl;
    if !want {
        if hooks.attached() > 0 {
            hooks.clear();
            info!("SSL hooks detached");
        }
        if let Err(e) = collector.set_ssl(false) {
            warn!("{e}");
        }
        return;
    }
    let before = hooks.attached();
    let errors = hooks.sync(&settings.snoop, |pid, path| {
        collector.attach_ssl(pid, path).map_err(|e| e.to_string())
    });
    for e in errors {
        warn!("SSL hooks: {e}");
    }
    if hooks.attached() != before {
        info!(
            "SSL hooks attached to {} libssl target(s)",
            hooks.attached()
        );
    }
    if let Err(e) = collector.set_ssl(true) {
        warn!("{e}");
    }
}

fn run(mode: Mode) -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("--print-meta") {
        match mode {
            Mode::L7 => print!("{}", tables::meta_text()),
            Mode::Kafka => print!("{}", kafka::meta_text()),
        }
        return Ok(());
    }
    let name = mode.name();
    let args = ProbeArgs::from_env();
    let capture = args
        .extra_u32('C', mode.default_capture(), 64..=4096)
        .map_err(anyhow::Error::msg)?;
    for (flag, _) in args.extra.iter().filter(|(f, _)| *f != 'C') {
        warn!("-{flag} is not used by {name}, ignored");
    }
    if mode == Mode::Kafka && args.dev.is_some() {
        warn!("-d is not used by kafkaprobe (it reads the processes' socket calls, not a device), ignored");
    }
    if args.whitelist.is_some() || args.filter.is_some() {
        bail!(
            "-w/-F process filtering is not supported by {name}: select processes with the control channel's snoopers"
        );
    }
    let control = Control::from_stdin();
    let declaration = match mode {
        Mode::L7 => tables::declaration(),
        Mode::Kafka => kafka::declaration(),
    };
    let mut settings = Settings::from_args(&args);
    let mut kafka_port = args.kafka_port;
    if mode == Mode::Kafka {
        settings.protocols = vec![l7_protocol::Protocol::Kafka];
    }
    bpf::require_hooks(
        &[
            "sock_send_length",
            "sock_recv_length",
            "inet_sock_set_state",
        ]
        .map(Hook::raw_tracepoint),
    );
    let ring_bytes = bpf::ring_bytes_at_start(&control, DEFAULT_RING_MIB);
    let opts = Options {
        btf_path: args.btf_path.clone(),
        ring_bytes,
        capture,
        port: if mode == Mode::Kafka { kafka_port } else { 0 },
    };
    let mut object = MaybeUninit::uninit();
    let mut collector = Collector::start(&mut object, &opts)?;
    let _signals = PeriodLoop::new(settings.period()).context("installing signal handlers")?;

    let conns = Rc::new(RefCell::new(Conns::new(
        Limits::default(),
        settings.protocols.clone(),
    )));
    let bad_records = Rc::new(Cell::new(0u64));
    // Records wait here until they can be parsed in time order (see reorder.rs).
    let held = Rc::new(RefCell::new(Reorder::default()));
    let poller = {
        let held = Rc::clone(&held);
        let bad = Rc::clone(&bad_records);
        RingPoller::new(collector.events(), move |bytes| {
            let mut held = held.borrow_mut();
            let malformed = decode::split(bytes, |ts, record| held.push(ts, record));
            bad.set(bad.get() + malformed);
            0
        })?
    };
    // Sends every CPU's batch, takes what the ring holds, and parses what is complete; unless
    // `now` is false and the last drain was less than DRAIN_MIN ago.
    let mut last_drain = Instant::now();
    let mut drain = |collector: &Collector<'_>, now: bool| -> Result<()> {
        if !now && last_drain.elapsed() < DRAIN_MIN {
            return Ok(());
        }
        last_drain = Instant::now();
        let before = bpf::ktime_ns();
        let all = collector.flush();
        poller.poll(Duration::ZERO)?;
        let mut held = held.borrow_mut();
        let upto = if all { before } else { held.watermark() };
        let mut conns = conns.borrow_mut();
        held.release(upto, |record| match decode::decode(record) {
            Some(Event::Open(o)) => conns.open(o),
            Some(Event::Data(d)) => conns.data(&d),
            Some(Event::Close { cookie }) => conns.close(cookie),
            None => bad_records.set(bad_records.get() + 1),
        });
        Ok(())
    };
    let tracing = |s: &Settings| s.probe_bits & (BIT_BYTES | BIT_RPC | BIT_TRACE) != 0;
    conns.borrow_mut().set_trace(trace_config(mode, &settings));
    if let Err(e) = collector.select(&settings.snoop, tracing(&settings)) {
        warn!("{e}");
    }
    let mut tls_hooks = tls_hooks();
    sync_tls(
        &mut collector,
        &mut tls_hooks,
        &settings,
        tracing(&settings),
    );
    info!(
        "attached (capture: {capture} bytes per call, ring buffer: {} MiB)",
        ring_bytes >> 20
    );

    let mut out = RecordWriter::stdout();
    let mut before = Before::default();
    let mut next = Instant::now() + settings.period();
    let mut last_report = Instant::now();
    while !terminated() {
        if let Some(msg) = control.take() {
            if let Some(note) = bpf::ring_change_note(&msg, ring_bytes, DEFAULT_RING_MIB) {
                warn!("{note}");
            }
            let (new, refused) = settings.updated(&declaration, &msg);
            for r in refused {
                warn!("{r}");
            }
            if mode == Mode::Kafka {
                match msg.checked(&declaration, "kafka_port") {
                    Some(Ok(ParamValue::Int(p))) => {
                        let p = u16::try_from(p).unwrap_or(kafka_port);
                        if p != kafka_port {
                            collector.set_port(p)?;
                            info!("control: kafka_port {kafka_port} -> {p}");
                            kafka_port = p;
                        }
                    }
                    Some(Ok(_)) | None => {}
                    Some(Err(e)) => warn!("control: {e}; kept the current value"),
                }
            }
            if let Some(line) = settings.describe_change(&new) {
                if new.period_secs != settings.period_secs {
                    next = probe_sdk::run::rebase(
                        next,
                        settings.period(),
                        new.period(),
                        Instant::now(),
                    );
                }
                if new.protocols != settings.protocols {
                    conns.borrow_mut().set_protocols(new.protocols.clone());
                }
                let trace = trace_config(mode, &new);
                if trace != trace_config(mode, &settings) {
                    conns.borrow_mut().set_trace(trace);
                }
                if let Err(e) = collector.select(&new.snoop, tracing(&new)) {
                    warn!("{e}");
                }
                sync_tls(&mut collector, &mut tls_hooks, &new, tracing(&new));
                info!("{line}");
                settings = new;
            }
        }
        let now = Instant::now();
        if now < next {
            poller.poll((next - now).min(DRAIN_EVERY))?;
            drain(&collector, false)?;
            continue;
        }
        next += settings.period();
        if next <= now {
            next = now + settings.period();
        }
        drain(&collector, true)?;
        let secs = now.duration_since(last_report).as_secs_f64().max(0.001);
        last_report = now;
        let capture_stats = conns.borrow().capture_stats();
        let loss = collector.loss();
        let st = conns.borrow().stats();
        let (parse_table, stats_table) = match mode {
            Mode::L7 => (PARSE_TABLE, STATS_TABLE),
            Mode::Kafka => (kafka::PARSE_TABLE, kafka::STATS_TABLE),
        };
        let tables = match mode {
            Mode::L7 => {
                // kafkaprobe writes no l7 table: only l7probe copies them.
                let snap = conns.borrow().snapshot();
                let spans = conns.borrow_mut().take_spans();
                let written = write_period(&mut out, &settings, &snap, &spans, &before, secs);
                before = Before {
                    rpcs: snap.rpcs,
                    apis: snap.apis,
                };
                written
            }
            Mode::Kafka => {
                let rows = conns.borrow_mut().take_topics();
                let traced = |k: &TopicKey| k.server_port == kafka_port;
                rows.iter()
                    .filter(|(k, _)| traced(k))
                    .try_for_each(|(k, s)| kafka::write_topic(&mut out, k, s))
            }
        };
        let written = tables
            .and_then(|()| {
                out.record(parse_table)
                    .field(name)
                    .field(&st.unknown_conn)
                    .field(&st.conn_overflow)
                    .field(&st.undetected)
                    .field(&st.malformed)
                    .field(&st.too_long)
                    .field(&st.desynchronised)
                    .field(&st.unanswered)
                    .field(&st.unmatched_response)
                    .field(&st.pending_overflow)
                    .field(&st.pending_abandoned)
                    .field(&st.unparsed_responses)
                    .field(&st.api_overflow)
                    .field(&st.key_overflow)
                    .field(&capture_stats.uncaptured_calls)
                    .field(&bad_records.get())
                    .field(&st.trace_dropped)
                    .field(&st.topic_names_forgotten)
                    .field(&held.borrow().late())
                    .field(&capture_stats.tls_records)
                    .end()
            })
            .and_then(|()| bpf::write_loss_record(&mut out, stats_table, name, &loss))
            .and_then(|()| out.flush());
        let forgotten = conns.borrow_mut().end_period(bpf::ktime_ns());
        if let Err(e) = collector.forget(&forgotten) {
            warn!("{e}");
        }
        // Processes started since: their libssl.
        sync_tls(
            &mut collector,
            &mut tls_hooks,
            &settings,
            tracing(&settings),
        );
        match written {
            Ok(()) => {}
            Err(e) if is_broken_pipe(&e) => return Ok(()),
            Err(e) => return Err(e).context("writing records"),
        }
    }
    Ok(())
}

/// Runs the probe `mode` names until it is stopped; exits with status 1 after an error.
pub fn main(mode: Mode) {
    if let Err(e) = run(mode) {
        probe_sdk::error!("{e:#}");
        let _ = io::stdout().flush();
        std::process::exit(1);
    }
}
