//! Loss accounting shared by every eBPF probe: the per-CPU `gg_stats` map of `gg_common.h`.

use std::io::{self, Write};

use libbpf_rs::{MapCore, MapFlags};

use super::BpfError;
use crate::record::RecordWriter;

/// Slot of `gg_stats` counting events produced (`GG_STAT_EVENTS` in `gg_common.h`).
pub const STAT_EVENTS: u32 = 0;
/// Slot counting ring-buffer reservations that failed: events lost (`GG_STAT_LOST`).
pub const STAT_LOST: u32 = 1;
/// Slot counting map updates refused with -E2BIG/-ENOMEM (`GG_STAT_MAP_FULL`).
pub const STAT_MAP_FULL: u32 = 2;
/// Number of slots in `gg_stats` (`GG_STAT_NR`).
pub const STAT_SLOTS: u32 = 3;

/// Cumulative loss counters of one BPF object, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LossCounters {
    /// Events the BPF programs produced (ring-buffer records submitted, or requests accounted
    /// in maps for map-aggregating probes).
    pub events: u64,
    /// Events dropped because the ring buffer was full.
    pub lost: u64,
    /// Map updates refused because the map was full (state or aggregates not recorded).
    pub map_full: u64,
}

fn read_slot(map: &dyn MapCore, slot: u32) -> Result<u64, BpfError> {
    let per_cpu = map
        .lookup_percpu(&slot.to_ne_bytes(), MapFlags::ANY)?
        .unwrap_or_default();
    Ok(per_cpu
        .iter()
        .filter_map(|v| v.get(..8))
        .map(|b| {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(b);
            u64::from_ne_bytes(raw)
        })
        .fold(0u64, u64::wrapping_add))
}

/// Reads the `gg_stats` map (pass `&skel.maps.gg_stats`).
pub fn try_read_loss_counters(map: &dyn MapCore) -> Result<LossCounters, BpfError> {
    Ok(LossCounters {
        events: read_slot(map, STAT_EVENTS)?,
        lost: read_slot(map, STAT_LOST)?,
        map_full: read_slot(map, STAT_MAP_FULL)?,
    })
}

/// Reads the `gg_stats` map; on a read error (not expected once loaded) logs a `[WARN]` and
/// returns zeros, so the caller's period loop keeps running.
pub fn read_loss_counters(map: &dyn MapCore) -> LossCounters {
    try_read_loss_counters(map).unwrap_or_else(|e| {
        crate::warn!("cannot read gg_stats: {e}");
        LossCounters::default()
    })
}

/// Writes the `<probe>_bpf_stats` record: `|<table>|<probe>|events|lost_events|map_full|`
/// (entity `bpf_probe`, key `probe`; all three cumulative counters).
pub fn write_loss_record<W: Write>(
    out: &mut RecordWriter<W>,
    table: &str,
    probe: &str,
    counters: &LossCounters,
) -> io::Result<()> {
    out.record(table)
        .field(probe)
        .field(&counters.events)
        .field(&counters.lost)
        .field(&counters.map_full)
        .end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_record_layout() {
        let mut w = RecordWriter::new(Vec::new());
        let c = LossCounters {
            events: 10,
            lost: 2,
            map_full: 1,
        };
        write_loss_record(&mut w, "io_bpf_stats", "io", &c).unwrap();
        w.flush().unwrap();
        assert_eq!(
            String::from_utf8(w.into_inner()).unwrap(),
            "|io_bpf_stats|io|10|2|1|\n"
        );
    }
}
