//! stackprobe: on-CPU and off-CPU flame graphs per process (upstream stackprobe, REST
//! `flamegraph`). On-CPU stacks are sampled by a software cpu-clock perf event on every CPU;
//! off-CPU stacks are sampled from the selected threads found off the CPU every sample period
//! (src/sampler.rs; `-M switch`: taken at every `sched_switch` instead); both are drained every
//! [`DRAIN_EVERY`], symbolized (blazesym, `stack-symbolize`) and added to the period's profiles,
//! which are written every `svg_period` into `flame_dir` as SVG, folded stacks and pprof
//! (`stack-profile`), and pushed to Pyroscope when `pyroscope_server` is set. The final,
//! partial period is written when the probe stops. See docs/probes/stack.md.
//!
//! Run-time control (the daemon's control channel on stdin): sub-probes (`-P` bits: 1 on-CPU,
//! 2 off-CPU), the params, and snoopers (the processes profiled; none: the whole host) apply
//! without a restart.

mod collector;
mod decode;
mod drain;
mod hints;
mod output;
mod perf;
mod profiles;
mod sampler;
mod skel;
mod tables;

use std::io::Write;
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use probe_sdk::args::ProbeArgs;
use probe_sdk::control::{Control, ControlMsg, Snoop, SnoopMode};
use probe_sdk::decl::{Declaration, ParamValue};
use probe_sdk::record::{self, RecordWriter};
use probe_sdk::run::{self, PeriodLoop};
use stack_profile::Kind;
use stack_symbolize::Symbolizer;

use collector::{Collector, Knobs, OffMethod};
use output::Outputs;
use profiles::Profiles;
use skel::{types, StackSkelBuilder};
use tables::{BIT_OFFCPU, BIT_ONCPU, DEFAULT_BITS};

/// How often the BPF maps are drained and their stacks symbolized: short enough that a process
/// that exits is still there to be symbolized, the stack maps stay sparse and the unwinding
/// hints (src/hints.rs) are learnt within seconds.
const DRAIN_EVERY: Duration = Duration::from_secs(1);
/// The first drain, sooner: the hints for what runs now are taught early.
const FIRST_DRAIN: Duration = Duration::from_millis(250);
/// Every this many drains, the hints forget exited processes (the symbolizer: every drain).
const FORGET_EVERY_DRAINS: u64 = 10;
/// Longest wait between control checks.
const POLL_SLICE: Duration = Duration::from_millis(100);
/// Benchmark knob: the sched_switch program returns at once (the floor: the tracepoint and the
/// program call alone). The verifier prunes the check when unset.
const NOOP_SWITCH_ENV: &str = "STACKPROBE_NOOP_SWITCH";
/// `-B <us>` (param `min_block_us`): off-CPU stretches shorter than this are counted, not
/// recorded (default 1 µs; the switch method only).
const MIN_BLOCK_FLAG: char = 'B';
/// `-M sampled|switch` (param `offcpu_method`): the off-CPU method (default sampled).
const METHOD_FLAG: char = 'M';

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--print-meta") {
        print!("{}", tables::meta_text());
        return ExitCode::SUCCESS;
    }
    let args = ProbeArgs::from_env();
    let (method, min_block_us) = match method(&args.extra).and_then(|m| {
        let b = min_block(&args.extra)?;
        if m == OffMethod::Sampled && args.extra_value(MIN_BLOCK_FLAG).is_some() {
            return Err(format!(
                "-{MIN_BLOCK_FLAG} (minimum off-CPU stretch) needs -{METHOD_FLAG} switch: the sampled method does not see stretches"
            ));
        }
        Ok((m, b))
    }) {
        Ok(v) => v,
        Err(e) => {
            probe_sdk::error!("{e}");
            return ExitCode::from(2);
        }
    };
    match run_probe(&args, method, min_block_us) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            probe_sdk::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The off-CPU method a `-M` value or an `offcpu_method` param names.
fn method_named(name: &str) -> Option<OffMethod> {
    match name {
        "sampled" => Some(OffMethod::Sampled),
        "switch" => Some(OffMethod::Switch),
        _ => None,
    }
}

fn method(extra: &[(char, Option<String>)]) -> Result<OffMethod, String> {
    match extra.iter().rev().find(|(f, _)| *f == METHOD_FLAG) {
        None => Ok(OffMethod::Sampled),
        Some((_, v)) => v.as_deref().and_then(method_named).ok_or_else(|| {
            format!("-{METHOD_FLAG}: expected the off-CPU method, sampled or switch")
        }),
    }
}

fn min_block(extra: &[(char, Option<String>)]) -> Result<u64, String> {
    match extra.iter().rev().find(|(f, _)| *f == MIN_BLOCK_FLAG) {
        None => Ok(tables::DEFAULT_MIN_BLOCK_US.unsigned_abs()),
        Some((_, v)) => v
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|v| *v <= tables::MAX_MIN_BLOCK_US.unsigned_abs())
            .ok_or_else(|| {
                format!(
                    "-{MIN_BLOCK_FLAG}: expected the minimum off-CPU time in µs (0..={})",
                    tables::MAX_MIN_BLOCK_US
                )
            }),
    }
}

/// The settings in force (command line, then the control channel).
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    bits: u32,
    svg_period: Duration,
    perf_sample_period_ms: u32,
    flame_dir: PathBuf,
    pyroscope_server: String,
    multi_instance: bool,
    /// The JVM's own frames shown one by one (upstream's `native_stack`).
    native_stack: bool,
    /// Older upstream's SVG directory: accepted, not used (see tables::declaration).
    svg_dir: String,
    /// The off-CPU method (`-M`, `offcpu_method`).
    method: OffMethod,
    /// The switch method's shortest recorded stretch (`-B`, `min_block_us`).
    min_block_us: u64,
    snoop: Snoop,
    /// The command line's selection (`-f`; all processes without it).
    cmdline_snoop: Snoop,
}

impl Settings {
    /// The declared defaults, then the command line (`method` and `min_block_us` parsed from
    /// its `-M` and `-B`).
    fn new(decl: &Declaration, args: &ProbeArgs, method: OffMethod, min_block_us: u64) -> Settings {
        let int = |n: &str| match decl.param(n).map(|p| &p.default) {
            Some(ParamValue::Int(v)) => *v,
            _ => 0,
        };
        let string = |n: &str| match decl.param(n).map(|p| &p.default) {
            Some(ParamValue::Str(v)) => v.clone(),
            _ => String::new(),
        };
        let mut snoop = Snoop::default();
        if !args.pids.is_empty() {
            snoop.mode = SnoopMode::Include;
            snoop.pids = args.pids.clone();
            snoop.pids.sort_unstable();
        }
        Settings {
            bits: if args.probe_bits_given {
                args.probe_bits
            } else {
                DEFAULT_BITS
            },
            svg_period: Duration::from_secs(int("svg_period").unsigned_abs()),
            perf_sample_period_ms: int("perf_sample_period").clamp(1, 1000) as u32,
            flame_dir: PathBuf::from(string("flame_dir")),
            pyroscope_server: string("pyroscope_server"),
            multi_instance: int("multi_instance") != 0,
            native_stack: int("native_stack") != 0,
            svg_dir: string("svg_dir"),
            method,
            min_block_us,
            cmdline_snoop: snoop.clone(),
            snoop,
        }
    }

    /// The settings a control message asks for (a bad param is warned about and ignored).
    fn with(&self, decl: &Declaration, msg: &ControlMsg) -> Settings {
        let mut s = self.clone();
        if msg.probe_bits != 0 {
            s.bits = msg.probe_bits;
        }
        for (name, v) in &msg.params {
            let Some(p) = decl.param(name) else { continue };
            match p.check(v) {
                Ok(ParamValue::Int(i)) => match name.as_str() {
                    "svg_period" => s.svg_period = Duration::from_secs(i.unsigned_abs()),
                    "perf_sample_period" => s.perf_sample_period_ms = i.clamp(1, 1000) as u32,
                    "multi_instance" => s.multi_instance = i != 0,
                    "native_stack" => s.native_stack = i != 0,
                    tables::MIN_BLOCK_PARAM => s.min_block_us = i.unsigned_abs(),
                    _ => {}
                },
                Ok(ParamValue::Str(v)) => match name.as_str() {
                    "flame_dir" => s.flame_dir = PathBuf::from(v),
                    "pyroscope_server" => s.pyroscope_server = v,
                    "svg_dir" => s.svg_dir = v,
                    tables::METHOD_PARAM => {
                        // A declared choice: checked above.
                        if let Some(m) = method_named(&v) {
                            s.method = m;
                        }
                    }
                    _ => {}
                },
                Ok(_) => {}
                Err(e) => probe_sdk::warn!("control: {e}"),
            }
        }
        // `all` (no snoopers) goes back to the command line's selection (`-f`).
        s.snoop = match msg.snoop.mode {
            SnoopMode::All => self.cmdline_snoop.clone(),
            _ => msg.snoop.clone(),
        };
        s
    }

    fn hz(&self) -> u32 {
        perf::sample_hz(self.perf_sample_period_ms)
    }
}

/// Counters of the user side, printed in `stackprobe_stats`.
#[derive(Debug, Default)]
struct UserStats {
    expired: u64,
    filter_refused: u64,
}

fn run_probe(args: &ProbeArgs, method: OffMethod, min_block_us: u64) -> Result<()> {
    let decl = tables::declaration();
    let _signals = PeriodLoop::new(args.period()).context("installing signal handlers")?;
    let control = Control::from_stdin();
    let mut settings = Settings::new(&decl, args, method, min_block_us);
    // The daemon writes the first message right after the spawn: start with its settings.
    if let Some(msg) = control.first(probe_sdk::bpf::FIRST_CONTROL_WAIT) {
        settings = settings.with(&decl, &msg);
    }

    let builder = StackSkelBuilder {
        obj_builder: probe_sdk::bpf::object_builder(args.btf_path.as_deref())?,
    };
    let mut storage = MaybeUninit::uninit();
    let mut open = builder.open(&mut storage).context("opening BPF object")?;
    if let Some(ro) = open.maps.rodata_data.as_deref_mut() {
        ro.noop_switch = u8::from(std::env::var_os(NOOP_SWITCH_ENV).is_some());
    }
    let mut skel = open.load().context("loading BPF programs")?;
    let bss = skel
        .maps
        .bss_data
        .as_deref_mut()
        .context("BPF object has no .bss")?;
    let types::bss {
        epoch,
        filter_mode,
        offcpu_on,
        min_block_ns,
        hints_gen,
        ..
    } = bss;
    let knobs = Knobs {
        epoch,
        filter_mode,
        offcpu_on,
        min_block_ns,
        hints_gen,
    };
    let maps = collector::MapRefs {
        stacks: [&skel.maps.stacks0, &skel.maps.stacks1],
        oncpu: [&skel.maps.oncpu0, &skel.maps.oncpu1],
        offcpu: [&skel.maps.offcpu0, &skel.maps.offcpu1],
        starts: &skel.maps.starts,
        tgid_bits: &skel.maps.tgid_bits,
        st_stats: &skel.maps.st_stats,
        gg_stats: &skel.maps.gg_stats,
        hints: &skel.maps.hints,
    };
    let mut collector = Collector::new(maps, &skel.progs, knobs, skel.maps.samp_ctl.as_fd())?;
    let mut user = UserStats::default();
    apply(&mut collector, None, &settings, &mut user)?;

    let proc_root = probe_sdk::host::path("/proc");
    let mut sym = Symbolizer::new(stack_symbolize::Config::default());
    let mut hints = hints::Hints::new(proc_root.clone());
    let mut profiles = Profiles::new(SystemTime::now(), perf::period_ns(settings.hz()));
    profiles.set_native_stack(settings.native_stack);
    let mut outputs = Outputs::new();
    outputs.prepare(&settings.flame_dir);
    let mut out = RecordWriter::stdout();
    probe_sdk::info!(
        "stackprobe running: {}; flame_dir {}, svg_period {} s",
        describe(&collector, &settings),
        settings.flame_dir.display(),
        settings.svg_period.as_secs()
    );

    let now = Instant::now();
    let mut next_drain = now + FIRST_DRAIN;
    let mut next_svg = now + settings.svg_period;
    let mut next_stats = now + args.period();
    let mut drains: u64 = 0;
    while !run::terminated() {
        std::thread::sleep(POLL_SLICE);
        if let Some(msg) = control.take() {
            let new = settings.with(&decl, &msg);
            if new != settings {
                apply(&mut collector, Some(&settings), &new, &mut user)?;
                profiles.set_native_stack(new.native_stack);
                if new.svg_period != settings.svg_period {
                    next_svg = probe_sdk::run::rebase(
                        next_svg,
                        settings.svg_period,
                        new.svg_period,
                        Instant::now(),
                    );
                }
                if new.flame_dir != settings.flame_dir {
                    outputs.prepare(&new.flame_dir);
                }
                settings = new;
                probe_sdk::info!("control: {}", describe(&collector, &settings));
            }
        }
        let now = Instant::now();
        if now >= next_drain {
            drain_once(
                &mut collector,
                &mut profiles,
                &mut sym,
                &mut hints,
                &proc_root,
                &mut user,
            );
            profiles.set_sample_period(perf::period_ns(settings.hz()));
            next_drain = now + DRAIN_EVERY;
            drains += 1;
            let alive = |pid: u32| proc_root.join(pid.to_string()).exists();
            // Exited processes' caches go; perf maps (JIT code) and pid reuse are re-checked.
            sym.retain(alive);
            if drains.is_multiple_of(FORGET_EVERY_DRAINS) {
                hints.retain(collector.hints_map(), alive);
            }
        }
        if now >= next_svg {
            let done = profiles.finish(SystemTime::now());
            outputs.write(
                &settings.flame_dir,
                &settings.pyroscope_server,
                settings.multi_instance,
                &done,
            );
            next_svg = now + settings.svg_period;
        }
        if now >= next_stats {
            if let Err(e) = report(
                &mut out, &collector, &profiles, &sym, &hints, &outputs, &user,
            ) {
                if record::is_broken_pipe(&e) {
                    return Ok(());
                }
                return Err(e).context("writing records");
            }
            next_stats = now + args.period();
        }
    }
    // Stopping: the partial period is written too.
    drain_once(
        &mut collector,
        &mut profiles,
        &mut sym,
        &mut hints,
        &proc_root,
        &mut user,
    );
    let done = profiles.finish(SystemTime::now());
    outputs.write(
        &settings.flame_dir,
        &settings.pyroscope_server,
        settings.multi_instance,
        &done,
    );
    let _ = report(
        &mut out, &collector, &profiles, &sym, &hints, &outputs, &user,
    );
    Ok(())
}

fn describe(c: &Collector<'_, '_>, s: &Settings) -> String {
    format!(
        "on-CPU {}, off-CPU {}, snoop {}",
        if c.oncpu() {
            format!("{} Hz", s.hz())
        } else {
            "off".to_string()
        },
        match (c.offcpu(), c.method()) {
            (false, _) => "off",
            (true, OffMethod::Sampled) => "sampled",
            (true, OffMethod::Switch) => "at every context switch",
        },
        s.snoop
    )
}

/// Makes the BPF side match `new` (`old`: the settings in force, None at start), and says
/// once what a setting that cannot apply is ignored for.
fn apply(
    c: &mut Collector<'_, '_>,
    old: Option<&Settings>,
    new: &Settings,
    user: &mut UserStats,
) -> Result<()> {
    let offcpu = new.bits & BIT_OFFCPU != 0;
    let min_block_moot = |s: &Settings| {
        s.bits & BIT_OFFCPU != 0
            && s.method == OffMethod::Sampled
            && s.min_block_us != tables::DEFAULT_MIN_BLOCK_US.unsigned_abs()
    };
    if min_block_moot(new)
        && !old.is_some_and(|o| min_block_moot(o) && o.min_block_us == new.min_block_us)
    {
        probe_sdk::warn!(
            "{} {} applies to {} switch only: the sampled method does not see single off-CPU stretches",
            tables::MIN_BLOCK_PARAM,
            new.min_block_us,
            tables::METHOD_PARAM
        );
    }
    if !new.svg_dir.is_empty()
        && old.is_none_or(|o| o.svg_dir != new.svg_dir)
        && Path::new(&new.svg_dir) != new.flame_dir
    {
        probe_sdk::info!(
            "svg_dir {} is not used: SVGs are written with the folded stacks and pprof profiles into flame_dir {}",
            new.svg_dir,
            new.flame_dir.display()
        );
    }
    if old.map(|o| &o.snoop) != Some(&new.snoop) {
        user.filter_refused += c.set_filter(&new.snoop);
    }
    let period = (new.bits & BIT_ONCPU != 0).then(|| perf::period_ns(new.hz()));
    c.set_oncpu(period)?;
    c.set_offcpu(
        offcpu,
        new.method,
        new.min_block_us.saturating_mul(1000),
        perf::period_ns(new.hz()),
    )?;
    Ok(())
}

fn drain_once(
    c: &mut Collector<'_, '_>,
    profiles: &mut Profiles,
    sym: &mut Symbolizer,
    hints: &mut hints::Hints,
    proc_root: &Path,
    user: &mut UserStats,
) {
    let d = c.drain();
    let given = hints.stats().given;
    for e in d.oncpu.iter().chain(&d.offcpu) {
        for &(ip, ret) in &e.teach {
            hints.teach(c.hints_map(), e.tgid, ip, ret);
        }
    }
    if hints.stats().given != given {
        c.hints_changed();
    }
    user.expired += d.expired + d.pending_dropped;
    profiles.add(Kind::OnCpu, &d.oncpu, sym, proc_root);
    profiles.add(Kind::OffCpu, &d.offcpu, sym, proc_root);
}

fn report<W: Write>(
    out: &mut RecordWriter<W>,
    c: &Collector<'_, '_>,
    profiles: &Profiles,
    sym: &Symbolizer,
    hints: &hints::Hints,
    outputs: &Outputs,
    user: &UserStats,
) -> std::io::Result<()> {
    use collector::slot;
    let k = c.stats();
    let (samp, link_errors) = c.sampler_stats();
    let s = sym.stats();
    let o = outputs.stats();
    out.record(tables::STATS_TABLE)
        .field(tables::STATS_PROBE)
        .field(&k[slot::SAMPLES as usize])
        .field(&k[slot::SWITCHES as usize])
        .field(&k[slot::SHORT as usize])
        .field(&k[slot::SITE_HITS as usize])
        .field(&k[slot::OFF_SAMPLES as usize])
        .field(&k[slot::OFF_WALKS as usize])
        .field(&(k[slot::OFF_NO_STATE as usize] + samp.dropped + samp.read_errors + link_errors))
        .field(&(k[slot::COLLISIONS as usize] + k[slot::STACK_FULL as usize]))
        .field(&(user.expired + samp.expired))
        .field(&profiles.stats().truncated)
        .field(&s.lookups)
        .field(&s.misses)
        .field(&s.symbolize_ns)
        .field(&hints.stats().given)
        .field(&o.profiles_written)
        .field(&o.files_written)
        .field(&o.bytes_written)
        .field(&o.files_removed)
        .field(&o.write_errors)
        .field(&o.pyroscope_pushes)
        .field(&o.pyroscope_errors)
        .end()?;
    let mut loss = c.loss();
    loss.map_full += user.filter_refused + hints.stats().refused;
    probe_sdk::bpf::write_loss_record(out, tables::BPF_STATS_TABLE, tables::STATS_PROBE, &loss)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(argv: &[&str]) -> ProbeArgs {
        ProbeArgs::try_parse_from(argv.iter().copied()).expect("valid flags")
    }

    #[test]
    fn control_lines_set_params_and_processes() {
        let decl = tables::declaration();
        let base = Settings::new(&decl, &args(&["-f", "7"]), OffMethod::Sampled, 1);
        assert_eq!(base.bits, DEFAULT_BITS);
        assert_eq!(base.svg_period, Duration::from_secs(180));
        assert_eq!(base.hz(), 99);
        assert_eq!(base.flame_dir, PathBuf::from(output::DEFAULT_FLAME_DIR));
        assert_eq!(base.pyroscope_server, "");
        assert!(
            !base.native_stack,
            "upstream's default: the JVM's own frames hidden"
        );
        assert_eq!((base.method, base.min_block_us), (OffMethod::Sampled, 1));
        assert_eq!(
            (base.snoop.mode, base.snoop.pids.clone()),
            (SnoopMode::Include, vec![7])
        );

        let msg = ControlMsg::parse_line(
            r#"{"v":1,"probe_bits":3,"params":{"svg_period":30,"perf_sample_period":20,"flame_dir":"/tmp/f","pyroscope_server":"py:4040","multi_instance":1,"native_stack":1,"svg_dir":"/var/log/x","offcpu_method":"switch","min_block_us":250},"snoop":{"mode":"include","pids":[1,2]}}"#,
        )
        .unwrap();
        let s = base.with(&decl, &msg);
        assert_eq!(s.bits, 3);
        assert_eq!(s.svg_period, Duration::from_secs(30));
        assert_eq!(s.hz(), 49);
        assert_eq!(s.flame_dir, PathBuf::from("/tmp/f"));
        assert_eq!(s.pyroscope_server, "py:4040");
        assert!(s.multi_instance);
        assert!(s.native_stack);
        assert_eq!(s.svg_dir, "/var/log/x");
        assert_eq!((s.method, s.min_block_us), (OffMethod::Switch, 250));
        assert_eq!(s.snoop.pids, vec![1, 2]);

        // Out of range: warned about and ignored; `all` is the command line's selection again.
        let msg =
            ControlMsg::parse_line(r#"{"v":1,"params":{"svg_period":5,"offcpu_method":"kprobe","min_block_us":-1},"snoop":{"mode":"all"}}"#)
                .unwrap();
        let t = s.with(&decl, &msg);
        assert_eq!(t.svg_period, Duration::from_secs(30));
        assert_eq!((t.method, t.min_block_us), (OffMethod::Switch, 250));
        assert_eq!(t.bits, 3, "probe_bits 0 keeps the sub-probes");
        assert_eq!(t.snoop, base.snoop);
    }

    #[test]
    fn method_flag() {
        assert_eq!(method(&[]), Ok(OffMethod::Sampled));
        assert_eq!(
            method(&[('M', Some("switch".into()))]),
            Ok(OffMethod::Switch)
        );
        assert_eq!(
            method(&[('M', Some("sampled".into()))]),
            Ok(OffMethod::Sampled)
        );
        assert!(method(&[('M', Some("kprobe".into()))]).is_err());
        assert!(method(&[('M', None)]).is_err());
        assert_eq!(
            method(&args(&["-P", "2", "-M", "switch", "-B", "250"]).extra),
            Ok(OffMethod::Switch)
        );
    }

    #[test]
    fn min_block_flag() {
        assert_eq!(min_block(&[]), Ok(1));
        assert_eq!(min_block(&[('B', Some("250".into()))]), Ok(250));
        assert!(min_block(&[('B', Some("x".into()))]).is_err());
        assert!(min_block(&[('B', None)]).is_err());
        assert_eq!(min_block(&args(&["-P", "3", "-B", "250"]).extra), Ok(250));
    }
}
