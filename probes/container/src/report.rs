//! Samples → record lines, in the field order of [`crate::tables`].

use std::io::{self, Write};

use probe_sdk::record::RecordWriter;

use crate::collect::{Counters, Cycle, PodSample, Sample};
use crate::tables::{BLKIO, CONTAINER, POD, STATS, STATS_PROBE};

/// A sum over the container's `container_blkio` rows; absent when it has none (nothing counted,
/// e.g. v1 without a throttle rule, is not the same as zero bytes).
fn blkio_sum(s: &Sample, f: fn(&crate::cgroup_files::DevIo) -> u64) -> Option<u64> {
    (!s.blkio.is_empty()).then(|| s.blkio.iter().map(|r| f(&r.io)).sum())
}

/// Writes one `container` row and the `container_blkio` rows of `s`.
pub fn write_sample<W: Write>(out: &mut RecordWriter<W>, s: &Sample) -> io::Result<()> {
    let net = s.net;
    let n = |f: fn(&crate::proc_files::NetTotals) -> u64| net.as_ref().map(f);
    out.record(CONTAINER)
        .field(s.short_id.as_str())
        .field(&s.cpu_usage_s)
        .field(&s.cpu_user_s)
        .field(&s.cpu_system_s)
        .field(&s.cfs_periods)
        .field(&s.cfs_throttled_periods)
        .field(&s.cfs_throttled_s)
        .field(&s.mem_usage)
        .field(&s.mem_working_set)
        .field(&s.mem_rss)
        .field(&s.mem_cache)
        .field(&s.mem_limit)
        .field(&s.mem_failcnt)
        .field(&s.oom_events)
        .field(&s.oom_kills)
        .field(&s.under_oom)
        .field(&s.psi_some_s)
        .field(&s.psi_full_s)
        .field(&s.processes)
        .field(&s.pids_max)
        .field(&n(|t| t.rx_bytes))
        .field(&n(|t| t.rx_packets))
        .field(&n(|t| t.rx_dropped))
        .field(&n(|t| t.rx_errors))
        .field(&n(|t| t.tx_bytes))
        .field(&n(|t| t.tx_packets))
        .field(&n(|t| t.tx_dropped))
        .field(&n(|t| t.tx_errors))
        .field(&s.start_time_s)
        .field(&blkio_sum(s, |io| io.read_bytes))
        .field(&blkio_sum(s, |io| io.write_bytes))
        .end()?;
    for row in &s.blkio {
        out.record(BLKIO)
            .field(s.short_id.as_str())
            .field(&row.dev.to_string())
            .field(&row.name)
            .field(&row.io.read_bytes)
            .field(&row.io.write_bytes)
            .field(&row.io.reads)
            .field(&row.io.writes)
            .end()?;
    }
    Ok(())
}

/// Writes one `pod` row.
pub fn write_pod<W: Write>(out: &mut RecordWriter<W>, p: &PodSample) -> io::Result<()> {
    out.record(POD)
        .field(p.pod_uid.as_str())
        .field(&p.containers)
        .field(&p.processes)
        .field(&p.cpu_usage_s)
        .field(&p.mem_working_set)
        .end()
}

/// Writes one cycle: each container's rows, the pod rows, then the `containerprobe_stats` row.
pub fn write_cycle<W: Write>(
    out: &mut RecordWriter<W>,
    cycle: &Cycle,
    c: &Counters,
) -> io::Result<()> {
    for s in &cycle.containers {
        write_sample(out, s)?;
    }
    for p in &cycle.pods {
        write_pod(out, p)?;
    }
    write_stats(out, c)
}

/// Writes the `containerprobe_stats` row (the last record of a period).
pub fn write_stats<W: Write>(out: &mut RecordWriter<W>, c: &Counters) -> io::Result<()> {
    out.record(STATS)
        .field(STATS_PROBE)
        .field(&c.cycles)
        .field(&c.containers)
        .field(&c.pods)
        .field(&c.containers_over_cap)
        .field(&c.procs_over_cap)
        .field(&c.devices_over_cap)
        .field(&c.read_errors)
        .end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup_files::{DevIo, DevNum};
    use crate::collect::{pods, DevRow};
    use crate::proc_files::NetTotals;
    use crate::tables::meta_tables;

    fn lines(cycle: &Cycle, c: &Counters) -> Vec<(String, Vec<String>)> {
        let mut out = RecordWriter::new(Vec::new());
        write_cycle(&mut out, cycle, c).unwrap();
        let text = String::from_utf8(out.buffered().to_vec()).unwrap();
        text.lines()
            .map(|l| {
                let (t, v) = probe_sdk::record::split_line(l.as_bytes()).unwrap();
                (
                    String::from_utf8(t).unwrap(),
                    v.into_iter()
                        .map(|v| String::from_utf8(v).unwrap())
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn every_record_has_its_table_width_and_absent_values_are_empty() {
        let s = Sample {
            short_id: "0123456789ab".into(),
            pod_uid: Some("0b6f1b0e-2a3c-4d5e-8f90-123456789abc".into()),
            procs_seen: 1,
            processes: Some(4),
            cpu_usage_s: Some(1.5),
            mem_usage: Some(4096),
            net: Some(NetTotals {
                rx_bytes: 7,
                ..NetTotals::default()
            }),
            blkio: vec![DevRow {
                dev: DevNum {
                    major: 254,
                    minor: 0,
                },
                name: Some("vda".into()),
                io: DevIo {
                    read_bytes: 1,
                    write_bytes: 2,
                    reads: 3,
                    writes: 4,
                },
            }],
            ..Sample::default()
        };
        let cycle = Cycle {
            pods: pods(std::slice::from_ref(&s)),
            containers: vec![s],
        };
        let counters = Counters {
            containers: 1,
            pods: 1,
            ..Counters::default()
        };
        let recs = lines(&cycle, &counters);
        let tables = meta_tables();
        let order: Vec<&str> = recs.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(order, [CONTAINER, BLKIO, POD, STATS]);
        for (name, values) in &recs {
            let t = tables.iter().find(|t| t.name == name).unwrap();
            assert_eq!(values.len(), t.width(), "{name}");
        }
        let field = |name: &str| {
            let i = crate::tables::CONTAINER_FIELDS
                .iter()
                .position(|f| f.name == name)
                .unwrap();
            recs[0].1[i].clone()
        };
        assert_eq!(field("container_id"), "0123456789ab");
        assert_eq!(field("cpu_usage_seconds_total"), "1.5");
        assert_eq!(field("memory_usage_bytes"), "4096");
        assert_eq!(field("memory_psi_some_seconds_total"), "");
        assert_eq!(field("network_receive_bytes_total"), "7");
        assert_eq!(field("network_transmit_bytes_total"), "0");
        // cAdvisor's per-container block IO totals (what gala-anteater reads): the device sums.
        assert_eq!(field("fs_reads_bytes_total"), "1");
        assert_eq!(field("fs_writes_bytes_total"), "2");
        let no_io = Sample {
            blkio: Vec::new(),
            ..cycle.containers[0].clone()
        };
        let mut w = RecordWriter::new(Vec::new());
        write_sample(&mut w, &no_io).unwrap();
        w.flush().unwrap();
        let text = String::from_utf8(w.into_inner()).unwrap();
        assert!(
            text.starts_with("|container|") && text.ends_with("||\n"),
            "{text}"
        );
        assert_eq!(
            recs[1].1,
            ["0123456789ab", "254:0", "vda", "1", "2", "3", "4"]
        );
        // No memory_working_set_bytes in the container row: absent in the pod row too.
        assert_eq!(
            recs[2].1,
            ["0b6f1b0e-2a3c-4d5e-8f90-123456789abc", "1", "4", "1.5", ""]
        );
        assert_eq!(recs[3].1[..4], ["container", "0", "1", "1"]);
    }
}
