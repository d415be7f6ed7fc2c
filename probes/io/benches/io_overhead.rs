//! Overhead of ioprobe on 4 KiB O_DIRECT I/O, with and without the probe in the same run.
//!
//! `cargo bench -p ioprobe --bench io_overhead` (root). Two parts per workload:
//!
//! 1. **Ratio**: many short runs, modes interleaved and rotated every round (no probe, probe
//!    with the tp_btf completion program, probe with the raw_tp one). The BPF programs are
//!    attached from this process through the ioprobe library, exactly as the binary does, so
//!    a round costs milliseconds instead of a process start; the kernel-side work per request is
//!    identical. Reported: medians of wall time and of the I/O thread's CPU time per op, their
//!    ratios, and the median of the per-round (paired) wall ratios.
//! 2. **Binary**: the real `ioprobe -t 1` process, kernel BPF run-time statistics switched on
//!    (`BPF_ENABLE_STATS`, which itself adds a little per call, hence not used in part 1):
//!    BPF ns per call, requests accounted per second, lost / map-full counters, whether every
//!    request of the workload was counted exactly (loop device), and the probe's CPU and RSS.
//!
//! Plus the probe's CPU and RSS at idle. Workloads: `loop-tmpfs` (a loop device whose backing
//! file is on tmpfs: the fastest device here, where a per-request cost weighs most) and
//! `vda-file` (a file on the root filesystem, virtio disk).
//!
//! Environment: `IO_BENCH_ROUNDS` (default 31), `IO_BENCH_OPS` (per ratio run, default 4000,
//! alternating writes and reads), `IO_BENCH_BINARY_RUNS` (default 3), `IO_BENCH_BINARY_OPS`
//! (default 20000), `IO_BENCH_IDLE_SECS` (default 10), `IO_BENCH_TARGETS` (comma-separated
//! workload names), `IO_BENCH_VERBOSE` (every ratio run on stderr).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::mem::MaybeUninit;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::time::{Duration, Instant};

use common::*;
use ioprobe::loader::{CompletionHook, IoBpf};
use libbpf_rs::query::ProgInfoIter;

const BLOCK: usize = 4096;
/// Kernel program names (truncated to 15 characters: `io_rq_complete_btf` is `io_rq_complete_`).
const PROGS: [&str; 4] = [
    "io_rq_insert",
    "io_rq_issue",
    "io_rq_complete",
    "io_rq_complete_",
];

/// Measured configurations, interleaved in every round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    Off,
    TpBtf,
    RawTp,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Off => "no probe",
            Mode::TpBtf => "ioprobe (tp_btf completion)",
            Mode::RawTp => "ioprobe (raw_tp completion)",
        }
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn thread_cpu() -> Duration {
    // SAFETY: getrusage fills the zeroed struct.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU time (utime + stime) and RSS (kB) of a process, from /proc.
fn proc_cpu_rss(pid: u32) -> (Duration, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the comm.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap())
        .unwrap_or(0);
    (Duration::from_millis(ticks * 1000 / hz), rss)
}

/// (run_time_ns, run_cnt) per ioprobe program id.
fn prog_stats() -> BTreeMap<u32, (String, u64, u64)> {
    ProgInfoIter::default()
        .filter_map(|p| {
            let name = p.name.to_string_lossy().to_string();
            PROGS
                .contains(&name.as_str())
                .then_some((p.id, (name, p.run_time_ns, p.run_cnt)))
        })
        .collect()
}

/// Keeps kernel BPF run-time statistics on while alive (BPF_ENABLE_STATS).
struct BpfStatsOn(i32);
impl BpfStatsOn {
    fn new() -> BpfStatsOn {
        // SAFETY: plain syscall wrapper; returns an fd or a negative error.
        let fd = unsafe {
            libbpf_rs::libbpf_sys::bpf_enable_stats(libbpf_rs::libbpf_sys::BPF_STATS_RUN_TIME)
        };
        assert!(fd >= 0, "bpf_enable_stats: {fd}");
        BpfStatsOn(fd)
    }
}
impl Drop for BpfStatsOn {
    fn drop(&mut self) {
        // SAFETY: closing the fd we own.
        unsafe { libc::close(self.0) };
    }
}

struct Tmpfs(tempfile::TempDir);
impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let target = CString::new(dir.path().to_str().unwrap()).unwrap();
        let opts = CString::new(format!("size={size}")).unwrap();
        // SAFETY: valid NUL-terminated strings.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        assert_eq!(rc, 0, "mount tmpfs");
        Tmpfs(dir)
    }
}
impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = CString::new(self.0.path().to_str().unwrap()).unwrap();
        // SAFETY: valid path.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Alternating 4 KiB O_DIRECT writes and reads over `blocks` blocks.
fn workload(f: &File, ops: u64, blocks: u64, wbuf: &AlignedBuf, rbuf: &mut AlignedBuf) {
    for i in 0..ops {
        let off = ((i / 2) * 7919 % blocks) * BLOCK as u64;
        if i % 2 == 0 {
            f.write_at(wbuf.as_slice(), off).expect("write");
        } else {
            f.read_at(rbuf.as_mut_slice(), off).expect("read");
        }
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

struct Target<'a> {
    name: &'static str,
    file: &'a File,
    blocks: u64,
    /// (major, minor) when the device carries nothing but the workload: exact counts checked.
    exact_dev: Option<(u32, u32)>,
}

#[derive(Default)]
struct RatioSamples {
    wall_ns_per_op: Vec<f64>,
    cpu_ns_per_op: Vec<f64>,
}

/// Part 1: interleaved short runs, programs attached in-process.
fn ratio_runs(t: &Target<'_>, rounds: u64, ops: u64) -> BTreeMap<Mode, RatioSamples> {
    let wbuf = AlignedBuf::new(BLOCK, 0x3c);
    let mut rbuf = AlignedBuf::new(BLOCK, 0);
    workload(t.file, ops, t.blocks, &wbuf, &mut rbuf); // warm-up
    let modes = [Mode::Off, Mode::TpBtf, Mode::RawTp];
    let mut out: BTreeMap<Mode, RatioSamples> = BTreeMap::new();
    for round in 0..rounds as usize {
        // Rotate the order every round so no mode always runs first or last.
        for k in 0..modes.len() {
            let mode = modes[(round + k) % modes.len()];
            let mut storage = MaybeUninit::uninit();
            let bpf = match mode {
                Mode::Off => None,
                Mode::TpBtf => {
                    Some(IoBpf::load_and_attach(&mut storage, None, CompletionHook::TpBtf).unwrap())
                }
                Mode::RawTp => {
                    Some(IoBpf::load_and_attach(&mut storage, None, CompletionHook::RawTp).unwrap())
                }
            };
            let (t0, c0) = (Instant::now(), thread_cpu());
            workload(t.file, ops, t.blocks, &wbuf, &mut rbuf);
            let (wall, cpu) = (t0.elapsed(), thread_cpu() - c0);
            drop(bpf);
            let s = out.entry(mode).or_default();
            s.wall_ns_per_op.push(wall.as_secs_f64() * 1e9 / ops as f64);
            s.cpu_ns_per_op.push(cpu.as_secs_f64() * 1e9 / ops as f64);
            if std::env::var_os("IO_BENCH_VERBOSE").is_some() {
                eprintln!(
                    "{} {:?}: wall/op {:.1} us, thread CPU/op {:.2} us",
                    t.name,
                    mode,
                    wall.as_secs_f64() * 1e6 / ops as f64,
                    cpu.as_secs_f64() * 1e6 / ops as f64
                );
            }
        }
    }
    out
}

#[derive(Default)]
struct BinarySamples {
    bpf_ns_per_call: BTreeMap<String, Vec<f64>>,
    accounted_per_s: Vec<f64>,
    probe_cpu_pct: Vec<f64>,
    probe_rss_kb: Vec<u64>,
    lost: u64,
    map_full: u64,
    exact: Option<bool>,
}

/// Part 2: one run with the real binary.
fn binary_run(t: &Target<'_>, mode: Mode, ops: u64, s: &mut BinarySamples) {
    let wbuf = AlignedBuf::new(BLOCK, 0x3c);
    let mut rbuf = AlignedBuf::new(BLOCK, 0);
    let before_ids: BTreeSet<u32> = prog_stats().keys().copied().collect();
    let mut p = match mode {
        Mode::RawTp => {
            ProbeRun::start_with_env(&["-t", "1"], &[("IOPROBE_COMPLETION_HOOK", "raw_tp")])
        }
        _ => ProbeRun::start(&["-t", "1"]),
    };
    p.wait_attached(Duration::from_secs(30));
    let stats_on = BpfStatsOn::new();
    let progs0 = prog_stats();
    let (pc0, _) = proc_cpu_rss(p.pid());
    let t0 = Instant::now();
    workload(t.file, ops, t.blocks, &wbuf, &mut rbuf);
    let wall = t0.elapsed();
    let progs1 = prog_stats();
    drop(stats_on);
    let (pc1, rss) = proc_cpu_rss(p.pid());
    s.probe_cpu_pct
        .push((pc1 - pc0).as_secs_f64() / wall.as_secs_f64() * 100.0);
    s.probe_rss_kb.push(rss);
    let mut completes = 0;
    for (id, (name, ns1, cnt1)) in &progs1 {
        if before_ids.contains(id) {
            continue; // another process's program
        }
        let (ns0, cnt0) = progs0.get(id).map(|(_, n, c)| (*n, *c)).unwrap_or((0, 0));
        if *cnt1 > cnt0 {
            s.bpf_ns_per_call
                .entry(name.clone())
                .or_default()
                .push((ns1 - ns0) as f64 / (cnt1 - cnt0) as f64);
        }
        if name.starts_with("io_rq_complete") {
            completes += cnt1 - cnt0;
        }
    }
    s.accounted_per_s
        .push(completes as f64 / wall.as_secs_f64());
    let rows = p.next_period(Duration::from_secs(30));
    let lost = lost_events(&rows);
    // Every request the workload made must have been accounted, bytes included (short only by
    // what the probe reports lost).
    if let Some((maj, min)) = t.exact_dev {
        let f = disk_row(&rows, "io_count", maj, min);
        let counted = num(f[7]) + num(f[8]);
        let exact = counted <= ops
            && ops - counted <= lost
            && num(f[4]) + num(f[5]) == counted * BLOCK as u64;
        s.exact = Some(s.exact.unwrap_or(true) && exact);
    }
    let bpf_stats = rows
        .iter()
        .find(|l| l.starts_with("|io_bpf_stats|io|"))
        .unwrap();
    s.lost += lost;
    s.map_full += num(fields(bpf_stats).1[3]);
    assert_eq!(p.stop(), Some(0));
}

fn main() {
    let rounds = env_or("IO_BENCH_ROUNDS", 31);
    let ops = env_or("IO_BENCH_OPS", 4000);
    let binary_runs = env_or("IO_BENCH_BINARY_RUNS", 3);
    let binary_ops = env_or("IO_BENCH_BINARY_OPS", 20_000);
    let idle_secs = env_or("IO_BENCH_IDLE_SECS", 10);
    let only = std::env::var("IO_BENCH_TARGETS").ok();

    // Idle: probe running, nothing but the machine's background I/O.
    let idle = {
        let mut p = ProbeRun::start(&["-t", "5"]);
        p.wait_attached(Duration::from_secs(30));
        let (c0, _) = proc_cpu_rss(p.pid());
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(idle_secs));
        let (c1, rss) = proc_cpu_rss(p.pid());
        let pct = (c1 - c0).as_secs_f64() / t0.elapsed().as_secs_f64() * 100.0;
        assert_eq!(p.stop(), Some(0));
        (pct, rss)
    };

    let fs = Tmpfs::mount("160m");
    let backing = fs.0.path().join("backing.img");
    File::create(&backing).unwrap().set_len(128 << 20).unwrap();
    let lo = LoopDevice::attach(&backing).unwrap();
    let lo_file = lo.open_direct();
    let lo_blocks = (128 << 20) / BLOCK as u64;
    // Fill the backing file so writes do not allocate tmpfs pages in the measured runs.
    let fill = AlignedBuf::new(BLOCK, 0);
    assert_eq!(direct_writes(&lo_file, &fill, 0, lo_blocks), lo_blocks);

    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let path = dir.path().join("io_bench.dat");
    let vda_blocks = (64 << 20) / BLOCK as u64;
    {
        let f = File::create(&path).unwrap();
        let zero = vec![0u8; 1 << 20];
        for i in 0..64 {
            f.write_at(&zero, i << 20).unwrap();
        }
        f.sync_all().unwrap();
    }
    let vda_file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .unwrap();

    let targets = [
        Target {
            name: "loop-tmpfs",
            file: &lo_file,
            blocks: lo_blocks,
            exact_dev: Some((lo.major, lo.minor)),
        },
        Target {
            name: "vda-file",
            file: &vda_file,
            blocks: vda_blocks,
            exact_dev: None,
        },
    ];
    let targets: Vec<&Target<'_>> = targets
        .iter()
        .filter(|t| {
            only.as_deref()
                .is_none_or(|o| o.split(',').any(|n| n == t.name))
        })
        .collect();

    println!("## Overhead ratio: {rounds} rounds x {ops} ops (alternating 4 KiB O_DIRECT write/read), medians\n");
    println!("| workload | mode | wall/op | wall ratio | paired wall ratio | I/O thread CPU/op | CPU ratio |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for t in &targets {
        let all = ratio_runs(t, rounds, ops);
        let off = &all[&Mode::Off];
        for (mode, s) in &all {
            let paired: Vec<f64> = s
                .wall_ns_per_op
                .iter()
                .zip(&off.wall_ns_per_op)
                .map(|(on, off)| on / off)
                .collect();
            println!(
                "| {} | {} | {:.1} µs | {:.3}× | {:.3}× | {:.2} µs | {:.3}× |",
                t.name,
                mode.name(),
                median(&s.wall_ns_per_op) / 1000.0,
                median(&s.wall_ns_per_op) / median(&off.wall_ns_per_op),
                median(&paired),
                median(&s.cpu_ns_per_op) / 1000.0,
                median(&s.cpu_ns_per_op) / median(&off.cpu_ns_per_op),
            );
        }
    }

    println!("\n## The ioprobe binary: {binary_runs} runs x {binary_ops} ops per mode, BPF run-time stats on\n");
    println!("| workload | completion | BPF ns/call insert, issue, complete | requests accounted/s | lost | map_full | exact counts | probe CPU under load | probe RSS |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for t in &targets {
        for mode in [Mode::TpBtf, Mode::RawTp] {
            let mut s = BinarySamples::default();
            for _ in 0..binary_runs {
                binary_run(t, mode, binary_ops, &mut s);
            }
            let bpf_ns = |p: &str| {
                s.bpf_ns_per_call
                    .get(p)
                    .map(|v| format!("{:.0}", median(v)))
                    .unwrap_or_else(|| "-".into())
            };
            let complete = if mode == Mode::RawTp {
                "io_rq_complete"
            } else {
                "io_rq_complete_"
            };
            println!(
                "| {} | {} | {}, {}, {} | {:.0} | {} | {} | {} | {:.2} % | {} kB |",
                t.name,
                if mode == Mode::RawTp {
                    "raw_tp"
                } else {
                    "tp_btf"
                },
                bpf_ns("io_rq_insert"),
                bpf_ns("io_rq_issue"),
                bpf_ns(complete),
                median(&s.accounted_per_s),
                s.lost,
                s.map_full,
                match s.exact {
                    Some(true) => "yes",
                    Some(false) => "NO",
                    None => "n/a",
                },
                median(&s.probe_cpu_pct),
                s.probe_rss_kb.iter().max().copied().unwrap_or(0),
            );
        }
    }
    println!(
        "\nprobe at idle ({idle_secs} s, -t 5): CPU {:.3} %, RSS {} kB",
        idle.0, idle.1
    );
}
