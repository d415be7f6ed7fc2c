//! The library's loader directly (no binary): both completion programs account a loop device's
//! I/O exactly, and period latencies (max, last, jitter) are handed out once.

mod common;

use std::mem::MaybeUninit;

use common::*;
use ioprobe::loader::{CompletionHook, IoBpf};
use ioprobe::stats::{DiskId, DiskSample, Op, PeriodLat, Stage};

const BLOCK: usize = 4096;

fn disk<'a>(samples: &'a [DiskSample], lo: &LoopDevice) -> &'a DiskSample {
    let id = DiskId {
        major: lo.major,
        first_minor: lo.minor,
    };
    samples
        .iter()
        .find(|s| s.id == id)
        .expect("loop device in io_stats")
}

fn exact_accounting(hook: CompletionHook) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backing.img");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let lo = LoopDevice::attach(&path).unwrap();
    lo.set_scheduler("mq-deadline");

    let mut storage = MaybeUninit::uninit();
    let mut bpf = IoBpf::load_and_attach(&mut storage, None, hook).unwrap();
    let dev = lo.open_direct();
    let wbuf = AlignedBuf::new(BLOCK, 1);
    let mut rbuf = AlignedBuf::new(BLOCK, 0);
    assert_eq!(direct_writes(&dev, &wbuf, 0, 40), 40);
    direct_reads(&dev, &mut rbuf, 0, 24);

    // Completion is synchronous for O_DIRECT: everything is in the maps now.
    let samples = bpf.collect().unwrap();
    let lost = bpf.loss_counters().lost;
    let s = disk(&samples, &lo);
    let (reads, writes) = (
        s.stats.ops[Op::Read as usize],
        s.stats.ops[Op::Write as usize],
    );
    assert_counted("reads", reads, 24, lost);
    assert_counted("writes", writes, 40, lost);
    assert_eq!(
        s.stats.ops[Op::Discard as usize] + s.stats.ops[Op::Flush as usize],
        0
    );
    assert_eq!(s.stats.bytes[Op::Read as usize], reads * BLOCK as u64);
    assert_eq!(s.stats.bytes[Op::Write as usize], writes * BLOCK as u64);
    assert_eq!(s.stats.errors, 0);
    // mq-deadline inserts every request, so every stage has a start: all three are measured.
    for stage in [Stage::Req, Stage::Driver, Stage::Device] {
        let lat = &s.stats.lat[stage as usize];
        assert_eq!(lat.count, reads + writes, "{stage:?}");
        assert_eq!(lat.slots.iter().sum::<u64>(), lat.count, "{stage:?}");
        // One period since the programs were attached: the period saw every request.
        let p = &s.period[stage as usize];
        assert_eq!(p.count, lat.count, "{stage:?}");
        let max = p.max_ns;
        assert!(
            max > 0 && max * lat.count >= lat.sum_ns,
            "{stage:?}: max {max} sum {}",
            lat.sum_ns
        );
        assert!(p.last_ns > 0 && p.last_ns <= max, "{stage:?}: {p:?}");
        // The jitter is a difference of two latencies of the period: below the largest.
        assert!(p.jitter_ns < max, "{stage:?}: {p:?}");
    }
    // A request's whole latency is its driver part plus its device part, exactly.
    let l = &s.stats.lat;
    assert_eq!(l[0].sum_ns, l[1].sum_ns + l[2].sum_ns);

    // Next period without I/O on the device: cumulative values stay, period values are gone.
    let again = bpf.collect().unwrap();
    let s2 = disk(&again, &lo);
    assert_eq!(s2.stats, s.stats);
    assert_eq!(s2.period, [PeriodLat::default(); 3]);

    let loss = bpf.loss_counters();
    assert_eq!(loss.map_full, 0);
    assert!(loss.events >= reads + writes);
}

#[test]
fn tp_btf_completion_accounts_exactly() {
    exact_accounting(CompletionHook::TpBtf);
}

#[test]
fn raw_tp_completion_accounts_exactly() {
    exact_accounting(CompletionHook::RawTp);
}

/// Every program of the object (both completion variants) passes the verifier on this kernel,
/// without attaching anything: a verifier regression fails here first.
#[test]
fn every_program_passes_the_verifier() {
    use ioprobe::skel::IoSkelBuilder;
    use libbpf_rs::skel::{OpenSkel, SkelBuilder};

    let mut storage = MaybeUninit::uninit();
    let open = IoSkelBuilder::default().open(&mut storage).unwrap();
    let progs: Vec<String> = open
        .open_object()
        .progs()
        .map(|p| p.name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        progs,
        [
            "io_rq_insert",
            "io_rq_issue",
            "io_rq_complete",
            "io_rq_complete_btf",
            "io_pc_load",
            "io_pc_page_dirty",
            "io_pc_buffer_dirty",
            "io_pc_get_pages",
            "io_pc_map_pages",
            "io_pc_fault"
        ]
    );
    assert!(open.open_object().progs().all(|p| p.autoload()));
    let skel = open.load().unwrap();
    // Loaded programs have a kernel id.
    use std::os::fd::AsFd;
    let p = &skel.progs;
    for fd in [
        p.io_rq_insert.as_fd(),
        p.io_rq_issue.as_fd(),
        p.io_rq_complete.as_fd(),
        p.io_rq_complete_btf.as_fd(),
    ] {
        assert_eq!(probe_sdk::bpf::prog_recursion_misses(fd).unwrap(), 0);
    }
}
