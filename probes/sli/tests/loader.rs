//! Every program loads (passes the verifier) in both cgroup modes, and attaching follows the
//! sub-probes.

use std::mem::MaybeUninit;

use probe_sdk::bpf;
use sliprobe::cgroups::Mode;
use sliprobe::loader::{Groups, Loaded, SliBpf};
use sliprobe::stats::LAT_BOUNDS_NS;

#[test]
fn every_program_loads_in_both_cgroup_modes() {
    let loaded = Loaded::new(bpf::raw_tracepoint_exists);
    assert!(
        loaded.missing().is_empty(),
        "this kernel has every hook: missing {:?}",
        loaded.missing()
    );
    for mode in [Mode::Dfl, Mode::V1Cpu] {
        let mut storage = MaybeUninit::uninit();
        let mut probe = SliBpf::load(&mut storage, None, mode, loaded)
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        assert_eq!(probe.lat_bounds_ns(), Some(LAT_BOUNDS_NS));
        probe
            .attach(Groups {
                cpu: false,
                mem: true,
                io: true,
            })
            .unwrap();
        assert_eq!(
            probe.attached_hooks(),
            [
                "mm_vmscan_direct_reclaim_begin",
                "mm_vmscan_direct_reclaim_end",
                "mm_vmscan_memcg_reclaim_begin",
                "mm_vmscan_memcg_reclaim_end",
                "mm_compaction_begin",
                "mm_compaction_end",
                "block_bio_queue",
                "block_bio_complete",
                "block_rq_complete"
            ]
        );
        probe
            .attach(Groups {
                cpu: true,
                mem: false,
                io: false,
            })
            .unwrap();
        assert_eq!(
            probe.attached_hooks(),
            ["sched_wakeup", "sched_wakeup_new", "sched_switch"]
        );
        // The scheduler programs fire on this busy machine: cgroups show up in the map.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let c = probe.collect().unwrap();
        assert!(!c.cpu.is_empty(), "{mode:?}: no cgroup in cpu_stats");
    }
}
