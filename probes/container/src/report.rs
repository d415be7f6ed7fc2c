//! Samples → record lines, in the field order of [`crate::tables`].

use std::io::{self, Write};

use probe_sdk::record::RecordWriter;

use crate::collect::{Counters, Sample};
use crate::tables::{BLKIO, CONTAINER, STATS, STATS_PROBE};

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

/// Writes the `containerprobe_stats` row (the last record of a period).
pub fn write_stats<W: Write>(out: &mut RecordWriter<W>, c: &Counters) -> io::Result<()> {
    out.record(STATS)
        .field(STATS_PROBE)
        .field(&c.cycles)
        .field(&c.containers)
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
    use crate::collect::DevRow;
    use crate::proc_files::NetTotals;
    use crate::tables::meta_tables;

    fn lines(s: &Sample, c: &Counters) -> Vec<(String, Vec<String>)> {
        let mut out = RecordWriter::new(Vec::new());
        write_sample(&mut out, s).unwrap();
        write_stats(&mut out, c).unwrap();
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
        let recs = lines(&s, &Counters::default());
        let tables = meta_tables();
        assert_eq!(recs.len(), 3);
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
        assert_eq!(
            recs[1].1,
            ["0123456789ab", "254:0", "vda", "1", "2", "3", "4"]
        );
        assert_eq!(recs[2].1[0], "container");
    }
}
