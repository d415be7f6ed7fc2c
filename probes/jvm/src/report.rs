//! A cycle → record lines, in [`crate::tables`] order and field order.

use std::io::{self, Write};

use probe_sdk::record::RecordWriter;

use crate::collect::{Counters, Cycle};
use crate::tables::{CLASS, GC, INFO, INSTANCE, MEM, MEM_POOL, PROC, STATS, STATS_PROBE, THREAD};

/// Writes every record of `cycle`, then the stats record (always the last of a period).
pub fn write_cycle<W: Write>(
    out: &mut RecordWriter<W>,
    cycle: &Cycle,
    counters: &Counters,
) -> io::Result<()> {
    for j in &cycle.jvms {
        let pid = j.pid;
        let name = j.sample.as_ref().and_then(|s| s.main.as_deref());
        if let Some(s) = &j.sample {
            out.record(INFO)
                .field(&pid)
                .field(&name)
                .field(&s.vm_name)
                .field(&s.vm_vendor)
                .field(&s.vm_version)
                .field(&1u32)
                .end()?;
            out.record(PROC)
                .field(&pid)
                .field(&name)
                .field(&s.start_ms.map(|ms| ms as f64 / 1000.0))
                .field(&j.cpu_secs)
                .end()?;
            out.record(CLASS)
                .field(&pid)
                .field(&name)
                .field(&s.classes_loaded)
                .field(&s.classes_loaded_total)
                .field(&s.classes_unloaded_total)
                .end()?;
            out.record(THREAD)
                .field(&pid)
                .field(&name)
                .field(&s.threads_live)
                .field(&s.threads_daemon)
                .field(&s.threads_peak)
                .field(&s.threads_started)
                .end()?;
            for a in &s.areas {
                out.record(MEM)
                    .field(&pid)
                    .field(&name)
                    .field(a.name)
                    .field(&a.used)
                    .field(&a.committed)
                    .field(&a.max)
                    .end()?;
            }
            for p in &s.pools {
                out.record(MEM_POOL)
                    .field(&pid)
                    .field(&name)
                    .field(&p.name)
                    .field(&p.used)
                    .field(&p.committed)
                    .field(&p.max)
                    .end()?;
            }
            for g in &s.collectors {
                out.record(GC)
                    .field(&pid)
                    .field(&name)
                    .field(&g.name)
                    .field(&g.count)
                    .field(&g.seconds)
                    .end()?;
            }
        }
        out.record(INSTANCE)
            .field(&pid)
            .field(&name)
            .field(&u32::from(j.sample.is_some()))
            .field(&j.errors)
            .field(&j.scrape_secs)
            .end()?;
    }
    out.record(STATS)
        .field(STATS_PROBE)
        .field(&counters.cycles)
        .field(&cycle.jvms.len())
        .field(&counters.errors)
        .field(&counters.refused)
        .field(&counters.stale)
        .field(&counters.procs_over_cap)
        .end()
}
