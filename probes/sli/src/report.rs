//! The records sliprobe prints each period (tables of `sliprobe.meta`).

use std::io::{self, Write};

use probe_sdk::bpf::{write_loss_record, LossCounters};
use probe_sdk::record::RecordWriter;

use crate::files::FileRow;
use crate::loader::Measured;
use crate::psi::Resource;
use crate::stats::{Kind, Row, LAT_BOUNDS_NS};
use crate::tables::{
    Scope, BIT_CONTAINER, BIT_CPU, BIT_HISTOGRAM, BIT_IO, BIT_MEM, BIT_NODE, PROBE_KEY,
    TABLE_BPF_STATS,
};

/// Which tables and rows are printed (from the `-P` bits of the sub-probes, see
/// [`crate::tables::declaration`]); `sli_bpf_stats` always is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tables {
    /// The `sli_cpu_*` tables (sub-probe `cpu`).
    pub cpu: bool,
    /// The `sli_mem_*` tables (sub-probe `mem`).
    pub mem: bool,
    /// The `sli_io_*` tables (sub-probe `io`).
    pub io: bool,
    /// Node rows (sub-probe `node`).
    pub node: bool,
    /// Container rows (sub-probe `container`).
    pub container: bool,
    /// The `*_histogram` tables (sub-probe `histogram`).
    pub histogram: bool,
}

impl Tables {
    /// The tables of `-P` bits `bits`.
    pub fn from_bits(bits: u32) -> Tables {
        Tables {
            cpu: bits & BIT_CPU != 0,
            mem: bits & BIT_MEM != 0,
            io: bits & BIT_IO != 0,
            node: bits & BIT_NODE != 0,
            container: bits & BIT_CONTAINER != 0,
            histogram: bits & BIT_HISTOGRAM != 0,
        }
    }

    /// Whether rows of `scope` are printed.
    pub fn scope(&self, scope: Scope) -> bool {
        match scope {
            Scope::Node => self.node,
            Scope::Container => self.container,
        }
    }

    /// The sub-probe names on, for the log.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.cpu, "cpu"),
            (self.mem, "mem"),
            (self.io, "io"),
            (self.node, "node"),
            (self.container, "container"),
            (self.histogram, "histogram"),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| n)
        .collect()
    }
}

/// What to print for one row.
#[derive(Debug, Clone, Copy)]
pub struct RowReport<'a> {
    /// The key value: [`crate::tables::NODE_KEY`] or a container's short id.
    pub key: &'a str,
    /// Latencies.
    pub lat: &'a Row,
    /// File values.
    pub files: &'a FileRow,
}

impl RowReport<'_> {
    /// The period sum of `kind`, absent when it is not measured.
    fn gauge(&self, kind: Kind, measured: bool) -> Option<u64> {
        measured.then(|| self.lat.get(kind).period_sum_ns)
    }

    /// The histogram of `kind`, absent when it is not measured.
    fn histogram(&self, kind: Kind, measured: bool) -> Option<String> {
        measured.then(|| {
            let l = self.lat.get(kind);
            record_line::histogram::encode(
                &LAT_BOUNDS_NS,
                &l.total.slots,
                l.total.sum_ns,
                l.period_max_ns,
            )
        })
    }

    fn some(&self, r: Resource) -> Option<u64> {
        self.files.stall(r).map(|s| s.some_ns)
    }

    fn full(&self, r: Resource) -> Option<u64> {
        self.files.stall(r).and_then(|s| s.full_ns)
    }
}

/// Nothing: a field upstream declares that this probe never measures.
const ABSENT: Option<u64> = None;

/// Writes one row's records of every table `tables` selects (nothing if its scope is off).
pub fn write_row<W: Write>(
    out: &mut RecordWriter<W>,
    scope: Scope,
    tables: Tables,
    m: Measured,
    row: &RowReport<'_>,
) -> io::Result<()> {
    if !tables.scope(scope) {
        return Ok(());
    }
    let n = scope.names();
    if tables.cpu {
        out.record(n.cpu_stat)
            .field(row.key)
            .field(&row.files.busy_pct)
            .field(&row.files.cores)
            .end()?;
        out.record(n.cpu_gauge)
            .field(row.key)
            .field(&ABSENT)
            .field(&row.gauge(Kind::Sleep, m.cpu))
            .field(&row.gauge(Kind::IoWait, m.cpu))
            .field(&row.gauge(Kind::Block, m.cpu))
            .field(&row.gauge(Kind::RunDelay, m.cpu))
            .field(&ABSENT)
            .field(&row.some(Resource::Cpu))
            .field(&row.full(Resource::Cpu))
            .end()?;
        if tables.histogram {
            out.record(n.cpu_histogram)
                .field(row.key)
                .field(&ABSENT)
                .field(&row.histogram(Kind::Sleep, m.cpu))
                .field(&row.histogram(Kind::IoWait, m.cpu))
                .field(&row.histogram(Kind::Block, m.cpu))
                .field(&row.histogram(Kind::RunDelay, m.cpu))
                .field(&ABSENT)
                .end()?;
        }
    }
    if tables.mem {
        out.record(n.mem_gauge)
            .field(row.key)
            .field(&row.gauge(Kind::Reclaim, m.reclaim))
            .field(&row.gauge(Kind::Compact, m.compact))
            .field(&ABSENT)
            .field(&row.some(Resource::Memory))
            .field(&row.full(Resource::Memory))
            .end()?;
        if tables.histogram {
            out.record(n.mem_histogram)
                .field(row.key)
                .field(&row.histogram(Kind::Reclaim, m.reclaim))
                .field(&row.histogram(Kind::Compact, m.compact))
                .field(&ABSENT)
                .end()?;
        }
    }
    if tables.io {
        out.record(n.io_gauge)
            .field(row.key)
            .field(&row.gauge(Kind::Bio, m.bio))
            .field(&row.some(Resource::Io))
            .field(&row.full(Resource::Io))
            .end()?;
        if tables.histogram {
            out.record(n.io_histogram)
                .field(row.key)
                .field(&row.histogram(Kind::Bio, m.bio))
                .end()?;
        }
    }
    Ok(())
}

/// Writes the `sli_bpf_stats` record.
pub fn write_bpf_stats<W: Write>(out: &mut RecordWriter<W>, loss: &LossCounters) -> io::Result<()> {
    write_loss_record(out, TABLE_BPF_STATS, PROBE_KEY, loss)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::psi::Stall;
    use crate::stats::{Delta, Lat};
    use crate::tables::{meta_tables, DEFAULT_BITS, NODE_KEY};

    fn render(f: impl FnOnce(&mut RecordWriter<Vec<u8>>)) -> String {
        let mut w = RecordWriter::new(Vec::new());
        f(&mut w);
        w.flush().unwrap();
        String::from_utf8(w.into_inner()).unwrap()
    }

    fn row() -> Row {
        let mut r = Row::default();
        let mut lat = Lat::default();
        lat.slots[3] = 2; // (100, 250] us
        lat.sum_ns = 400_000;
        lat.count = 2;
        r.add(&Delta {
            cgid: 1,
            kind: Kind::RunDelay,
            lat,
            max_ns: 210_000,
        });
        r
    }

    fn files() -> FileRow {
        FileRow {
            stall: [
                Some(Stall {
                    some_ns: 5_000,
                    full_ns: Some(0),
                }),
                Some(Stall {
                    some_ns: 7_000,
                    full_ns: Some(1_000),
                }),
                None,
            ],
            busy_pct: Some(12.5),
            cores: Some(2.0),
        }
    }

    #[test]
    fn records_have_the_declared_width_and_histograms_decode() {
        let r = row();
        let f = files();
        let text = render(|w| {
            for scope in [Scope::Node, Scope::Container] {
                let rr = RowReport {
                    key: if scope == Scope::Node {
                        NODE_KEY
                    } else {
                        "0123456789ab"
                    },
                    lat: &r,
                    files: &f,
                };
                write_row(w, scope, Tables::from_bits(u32::MAX), Measured::ALL, &rr).unwrap();
            }
            write_bpf_stats(w, &LossCounters::default()).unwrap();
        });
        let tables = meta_tables();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), tables.len(), "one record per table: {text}");
        let mut values = Vec::new();
        for line in lines {
            let name = record_line::parse_record(line, &mut values).unwrap();
            let t = tables.iter().find(|t| t.name == name).unwrap();
            assert_eq!(values.len(), t.width(), "{line}");
            for (v, field) in values.iter().zip(t.fields.iter()) {
                if field.kind == record_line::FieldKind::Histogram && !v.is_empty() {
                    assert!(record_line::histogram::decode(v).is_some(), "{line}");
                }
            }
        }
    }

    #[test]
    fn node_rows_with_absent_fields() {
        let r = row();
        let f = files();
        let rr = RowReport {
            key: NODE_KEY,
            lat: &r,
            files: &f,
        };
        let text = render(|w| {
            write_row(
                w,
                Scope::Node,
                Tables::from_bits(DEFAULT_BITS | BIT_HISTOGRAM),
                Measured {
                    compact: false,
                    ..Measured::ALL
                },
                &rr,
            )
            .unwrap()
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "|sli_cpu_node_stat|sli_node_key|12.5|2|");
        assert_eq!(
            lines[1],
            "|sli_cpu_node_gauge|sli_node_key||0|0|0|400000||5000|0|"
        );
        let hist = record_line::histogram::encode(
            &LAT_BOUNDS_NS,
            &[0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            400_000,
            210_000,
        );
        let zero = record_line::histogram::encode(&LAT_BOUNDS_NS, &[0; 14], 0, 0);
        assert_eq!(
            lines[2],
            format!("|sli_cpu_node_histogram|sli_node_key||{zero}|{zero}|{zero}|{hist}||")
        );
        assert!(hist.starts_with("14 10000 0 50000 0 100000 0 250000 2 "));
        assert!(hist.ends_with(" 86400000000000 2 400000 210000"));
        // Compaction not measured: empty, reclaim measured: 0; swapin never.
        assert_eq!(lines[3], "|sli_mem_node_gauge|sli_node_key|0|||7000|1000|");
        assert_eq!(lines[5], "|sli_io_node_gauge|sli_node_key|0|||");
    }

    #[test]
    fn bits_select_tables_and_rows() {
        let r = row();
        let f = FileRow::default();
        let rr = RowReport {
            key: "abc",
            lat: &r,
            files: &f,
        };
        let names = |bits: u32, scope: Scope| {
            render(|w| write_row(w, scope, Tables::from_bits(bits), Measured::ALL, &rr).unwrap())
                .lines()
                .map(|l| l.split('|').nth(1).unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(DEFAULT_BITS, Scope::Container),
            [
                "sli_cpu_container_stat",
                "sli_cpu_container_gauge",
                "sli_mem_container_gauge",
                "sli_io_container_gauge"
            ]
        );
        assert!(names(BIT_CPU | BIT_NODE, Scope::Container).is_empty());
        assert_eq!(
            names(BIT_IO | BIT_NODE | BIT_HISTOGRAM, Scope::Node),
            ["sli_io_node_gauge", "sli_io_node_histogram"]
        );
        assert_eq!(
            Tables::from_bits(DEFAULT_BITS).names(),
            ["cpu", "mem", "io", "node", "container"]
        );
    }

    #[test]
    fn bpf_stats_record() {
        let loss = LossCounters {
            events: 9,
            lost: 1,
            map_full: 0,
        };
        assert_eq!(
            render(|w| write_bpf_stats(w, &loss).unwrap()),
            "|sli_bpf_stats|sli|9|1|0|\n"
        );
    }
}
