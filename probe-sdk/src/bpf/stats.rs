//! Loss accounting shared by every eBPF probe: the per-CPU `gg_stats` map of `gg_common.h`.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, BorrowedFd};

use libbpf_rs::{MapCore, MapFlags};

use super::BpfError;
use crate::meta::{Field, Table};
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
    /// Events dropped: ring buffer full (`gg_stats` LOST); callers add the programs'
    /// [`recursion_misses`].
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

/// Invocations of the program `prog` that the kernel skipped because the same program was
/// already running on that CPU (`bpf_prog_info.recursion_misses`).
///
/// Tracing programs (raw_tp, tp_btf, kprobe …) are not re-entrant per CPU: when an interrupt
/// fires the program's hook while the program runs (e.g. a block completion in softirq nested
/// in a completion in task context), the nested call is dropped and only this counter moves.
/// Those are lost events: add them to [`LossCounters::lost`] (see [`recursion_misses`]).
pub fn prog_recursion_misses(prog: BorrowedFd<'_>) -> Result<u64, BpfError> {
    let mut info = libbpf_rs::libbpf_sys::bpf_prog_info::default();
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: info is a properly sized, zeroed bpf_prog_info and len says how big it is; the
    // kernel writes at most len bytes. All optional array pointers are 0 (not requested).
    let rc = unsafe {
        libbpf_rs::libbpf_sys::bpf_prog_get_info_by_fd(prog.as_raw_fd(), &mut info, &mut len)
    };
    if rc != 0 {
        return Err(libbpf_rs::Error::from_raw_os_error(-rc).into());
    }
    Ok(info.recursion_misses)
}

/// Sum of [`prog_recursion_misses`] over `progs` (pass `skel.progs.<name>.as_fd()` of every
/// attached program); a program whose info cannot be read counts 0 and logs a `[WARN]`.
pub fn recursion_misses<'a>(progs: impl IntoIterator<Item = BorrowedFd<'a>>) -> u64 {
    progs
        .into_iter()
        .map(|fd| {
            prog_recursion_misses(fd).unwrap_or_else(|e| {
                crate::warn!("cannot read BPF program info: {e}");
                0
            })
        })
        .fold(0u64, u64::wrapping_add)
}

/// Entity of every `<probe>_bpf_stats` table.
pub const LOSS_ENTITY: &str = "bpf_probe";

/// Declaration of the `<probe>_bpf_stats` table [`write_loss_record`] writes: key `probe`,
/// then the cumulative counters `events`, `lost_events` and `map_full`, described for this
/// probe (what its events are, how they get lost, which maps can fill up).
pub fn loss_table(
    name: &'static str,
    events: &'static str,
    lost_events: &'static str,
    map_full: &'static str,
) -> Table {
    Table::new(
        name,
        LOSS_ENTITY,
        &[&[
            Field::key("probe", "probe name"),
            Field::counter("events", events),
            Field::counter("lost_events", lost_events),
            Field::counter("map_full", map_full),
        ]],
    )
}

/// Writes the `<probe>_bpf_stats` record: `|<table>|<probe>|events|lost_events|map_full|`
/// (entity [`LOSS_ENTITY`], key `probe`; all three cumulative counters, see [`loss_table`]).
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

    #[test]
    fn loss_table_declares_the_record() {
        let table = loss_table("t_bpf_stats", "events seen", "events lost", "map full");
        assert_eq!(
            crate::meta::check(std::slice::from_ref(&table)),
            Vec::<String>::new()
        );
        let expected = r#"version = "1.0.0"

measurements:
(
    {
        table_name: "t_bpf_stats",
        entity_name: "bpf_probe",
        fields:
        (
            { description: "probe name", type: "key", name: "probe" },
            { description: "events seen", type: "counter", name: "events" },
            { description: "events lost", type: "counter", name: "lost_events" },
            { description: "map full", type: "counter", name: "map_full" }
        )
    }
)
"#;
        assert_eq!(
            crate::meta::render(&[], std::slice::from_ref(&table)),
            expected
        );
        // One value per declared field, in that order.
        let mut w = RecordWriter::new(Vec::new());
        write_loss_record(&mut w, table.name, "t", &LossCounters::default()).unwrap();
        w.flush().unwrap();
        let line = String::from_utf8(w.into_inner()).unwrap();
        assert_eq!(line.matches('|').count() - 2, table.width());
    }
}
