//! `probe_sdk::bpf` end to end with a real (tiny) BPF program, `gg_selftest.bpf.c` beside this
//! file (built by probe-sdk's `build.rs` with the `bpf` feature): tracefs + classic tracepoint
//! attach, [`RingPoller`] with batched wake-ups, the `gg_stats` loss counters of `gg_common.h`
//! (EVENTS, LOST, MAP_FULL) with exactly predictable values, and [`plain_data`] on real records.

use std::collections::BTreeSet;
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::time::Duration;

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::OpenObject;

use super::{plain_data, LossCounters, RingPoller};
use skel::{types, GgSelftestSkel, GgSelftestSkelBuilder};

/// The generated skeleton of `gg_selftest.bpf.c`.
#[allow(
    clippy::all,
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    unused_imports
)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/gg_selftest.skel.rs"));
}

// SAFETY: a u64 and a byte array: every bit pattern is a valid value.
unsafe impl plain_data::Plain for types::selftest_event {}

const CALLS: u64 = 1000;
/// The BPF program's map `selftest_seen` holds this many keys.
const SEEN_CAPACITY: u64 = 4;
/// Size of one ring-buffer record: 64-byte event plus 8-byte header.
const RECORD_BYTES: u64 = 64 + 8;

fn gettid() -> u32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

fn getppid_calls(n: u64) {
    for _ in 0..n {
        // SAFETY: getppid has no arguments and cannot fail.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
}

/// Loads the self-test program filtered on the calling thread, with a ring buffer of
/// `ring_bytes` bytes.
fn load(storage: &mut MaybeUninit<OpenObject>, ring_bytes: u32) -> GgSelftestSkel<'_> {
    super::ensure_tracefs().expect("tracefs");
    let builder = GgSelftestSkelBuilder {
        obj_builder: super::object_builder(None).unwrap(),
    };
    let mut open = builder.open(storage).unwrap();
    open.maps.rodata_data.as_deref_mut().unwrap().target_tid = gettid();
    open.maps
        .selftest_events
        .set_max_entries(ring_bytes)
        .unwrap();
    let mut skel = open.load().unwrap();
    skel.attach().unwrap();
    skel
}

fn seq_of(data: &[u8]) -> u64 {
    assert_eq!(data.len(), std::mem::size_of::<types::selftest_event>());
    plain_data::read_exact::<types::selftest_event>(data)
        .expect("one event")
        .seq
}

#[test]
fn every_event_is_received_and_counted() {
    let mut storage = MaybeUninit::uninit();
    let skel = load(&mut storage, 256 * 1024);
    getppid_calls(CALLS);

    let mut seqs = BTreeSet::new();
    let poller = RingPoller::new(&skel.maps.selftest_events, |data: &[u8]| {
        seqs.insert(seq_of(data));
        0
    })
    .unwrap();
    // 72 000 bytes queued is below the 256 KiB wake-up threshold: no wake-up was sent, so this
    // only works because poll() drains after its timeout.
    for _ in 0..50 {
        if poller.received() == CALLS {
            break;
        }
        poller.poll(Duration::from_millis(20)).unwrap();
    }
    assert_eq!(poller.received(), CALLS);
    drop(poller);
    assert_eq!(seqs, (0..CALLS).collect::<BTreeSet<_>>());

    let loss = super::try_read_loss_counters(&skel.maps.gg_stats).unwrap();
    assert_eq!(
        loss,
        LossCounters {
            events: CALLS,
            lost: 0,
            map_full: CALLS - SEEN_CAPACITY,
        }
    );
    assert_eq!(super::read_loss_counters(&skel.maps.gg_stats), loss);
    // A syscall tracepoint cannot nest in itself: the kernel skipped nothing.
    let prog = skel.progs.selftest_getppid.as_fd();
    assert_eq!(super::prog_recursion_misses(prog).unwrap(), 0);
    assert_eq!(super::recursion_misses([prog, prog]), 0);
}

#[test]
fn program_info_of_a_non_program_is_an_error() {
    let file = std::fs::File::open("/dev/null").unwrap();
    assert!(super::prog_recursion_misses(file.as_fd()).is_err());
}

#[test]
fn full_ring_buffer_counts_lost_events() {
    let page = 4096u32;
    let mut storage = MaybeUninit::uninit();
    let skel = load(&mut storage, page);
    getppid_calls(CALLS);

    let fit = u64::from(page) / RECORD_BYTES;
    let loss = super::try_read_loss_counters(&skel.maps.gg_stats).unwrap();
    assert_eq!(loss.events, fit);
    assert_eq!(loss.lost, CALLS - fit);
    assert_eq!(loss.map_full, CALLS - SEEN_CAPACITY);

    // What was submitted is still all there.
    let mut seqs = Vec::new();
    let poller = RingPoller::new(&skel.maps.selftest_events, |data: &[u8]| {
        seqs.push(seq_of(data));
        0
    })
    .unwrap();
    assert_eq!(poller.poll(Duration::from_millis(10)).unwrap(), fit);
    assert_eq!(poller.poll(Duration::from_millis(10)).unwrap(), 0);
    drop(poller);
    assert_eq!(seqs, (0..fit).collect::<Vec<_>>());
}
