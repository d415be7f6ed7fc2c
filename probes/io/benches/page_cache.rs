//! Cost of the opt-in `page_cache` sub-probe on a 4 KiB buffered-write loop (every write adds
//! and dirties a page: the work its programs see most), and of ioprobe's default tables on the
//! same loop.
//!
//! `cargo bench -p ioprobe --bench page_cache` (root). Three modes interleaved, order rotated
//! every round: no probe; ioprobe loaded as by default (block programs only; a buffered write
//! completes no block request, so this is the floor); ioprobe with `page_cache` on. The
//! programs are attached from this process through the ioprobe library, as the binary does.
//! Each run writes `PC_BENCH_MIB` MiB (default 16) in 4 KiB writes to a new file on the root
//! file system, then the file is removed (its pages are dropped without writeback, so the
//! disk is not involved). Reported: medians of ns per write, ratios to no probe, and the median
//! of the per-round ratios. Environment: `PC_BENCH_ROUNDS` (default 31), `PC_BENCH_MIB`,
//! `PC_BENCH_DIR` (default /var/tmp).

use std::io::Write;
use std::mem::MaybeUninit;
use std::path::Path;
use std::time::Instant;

use ioprobe::loader::{CompletionHook, IoBpf};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Writes `mib` MiB in 4 KiB writes to a new file in `dir`; ns per write.
fn run(dir: &Path, mib: u64) -> f64 {
    let path = dir.join(format!("gg-pc-bench-{}", std::process::id()));
    let mut f = std::fs::File::create(&path).unwrap();
    let buf = [0x6bu8; 4096];
    let n = mib * 256;
    let t0 = Instant::now();
    for _ in 0..n {
        f.write_all(&buf).unwrap();
    }
    let ns = t0.elapsed().as_secs_f64() * 1e9 / n as f64;
    drop(f);
    std::fs::remove_file(&path).unwrap();
    ns
}

fn main() {
    let rounds = env_or("PC_BENCH_ROUNDS", 31) as usize;
    let mib = env_or("PC_BENCH_MIB", 16);
    let dir = std::env::var("PC_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into());
    let dir = Path::new(&dir);
    let names = [
        "no probe",
        "ioprobe (default tables)",
        "ioprobe with page_cache",
    ];
    let mut t: [Vec<f64>; 3] = Default::default();
    run(dir, mib); // warm-up
    for round in 0..rounds {
        for k in 0..3 {
            let mode = (round + k) % 3;
            let mut storage = MaybeUninit::uninit();
            let mut bpf = (mode > 0).then(|| {
                IoBpf::load_and_attach(&mut storage, None, CompletionHook::TpBtf).unwrap()
            });
            if let Some(b) = bpf.as_mut() {
                b.set_page_cache(mode == 2).unwrap();
            }
            t[mode].push(run(dir, mib));
            drop(bpf);
        }
    }
    let base = median(&t[0]);
    println!(
        "4 KiB buffered writes ({mib} MiB per run, {rounds} rounds, medians): {} {:.0} ns/write",
        names[0], base
    );
    for mode in 1..3 {
        let per_round: Vec<f64> = t[mode].iter().zip(&t[0]).map(|(a, b)| a / b).collect();
        println!(
            "  {}: {:.0} ns/write, {:.3}x (median of per-round ratios {:.3}x)",
            names[mode],
            median(&t[mode]),
            median(&t[mode]) / base,
            median(&per_round)
        );
    }
}
