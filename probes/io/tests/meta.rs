//! `ioprobe.meta` describes exactly what the probe prints: same tables, same field count and
//! order, histogram fields where histogram values are, valid Prometheus names.

use std::collections::BTreeMap;
use std::path::Path;

use ioprobe::disk::DiskLabels;
use ioprobe::report::{self, DiskReport};
use ioprobe::stats::{DiskId, DiskSample, DiskStats, PeriodLat};
use probe_sdk::bpf::LossCounters;
use probe_sdk::record::RecordWriter;

struct Table {
    entity: String,
    fields: Vec<(String, String)>, // (name, type)
}

fn load_meta() -> BTreeMap<String, Table> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("ioprobe.meta");
    let root = gala_libconfig::parse_file(&path).unwrap();
    assert_eq!(root.get("version").and_then(|v| v.as_str()), Some("1.0.0"));
    let mut tables = BTreeMap::new();
    for m in root.get("measurements").unwrap().elements().unwrap() {
        let name = m.get("table_name").unwrap().as_str().unwrap().to_string();
        let entity = m.get("entity_name").unwrap().as_str().unwrap().to_string();
        let fields = m
            .get("fields")
            .unwrap()
            .elements()
            .unwrap()
            .iter()
            .map(|f| {
                assert!(!f.get("description").unwrap().as_str().unwrap().is_empty());
                (
                    f.get("name").unwrap().as_str().unwrap().to_string(),
                    f.get("type").unwrap().as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert!(
            tables.insert(name, Table { entity, fields }).is_none(),
            "duplicate table"
        );
    }
    tables
}

fn prometheus_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[test]
fn meta_is_well_formed() {
    let tables = load_meta();
    assert_eq!(
        tables.keys().collect::<Vec<_>>(),
        [
            "io_bpf_stats",
            "io_count",
            "io_err",
            "io_latency",
            "io_pagecache"
        ]
    );
    for (name, t) in &tables {
        assert!(name.len() < 32 && prometheus_name(name), "{name}");
        assert!(prometheus_name(&t.entity));
        assert!(
            t.fields.iter().any(|(_, ty)| ty == "key"),
            "{name} has no key"
        );
        for (field, ty) in &t.fields {
            assert!(field.len() < 32 && prometheus_name(field), "{name}.{field}");
            assert!(
                ["key", "label", "gauge", "counter", "histogram"].contains(&ty.as_str()),
                "{name}.{field}: {ty}"
            );
            // A counter named like a histogram's derived series would collide in Prometheus.
            for suffix in ["_bucket", "_count", "_sum", "_max"] {
                if ty == "histogram" {
                    let derived = format!("{field}{suffix}");
                    assert!(t.fields.iter().all(|(f, _)| *f != derived), "{derived}");
                }
            }
        }
    }
    for disk_table in ["io_latency", "io_count", "io_err", "io_pagecache"] {
        let t = &tables[disk_table];
        assert_eq!(t.entity, "block");
        let ids: Vec<_> = t.fields[..4]
            .iter()
            .map(|(n, ty)| (n.as_str(), ty.as_str()))
            .collect();
        assert_eq!(
            ids,
            [
                ("major", "key"),
                ("first_minor", "key"),
                ("blk_name", "label"),
                ("disk_name", "label")
            ]
        );
    }
    assert_eq!(tables["io_bpf_stats"].entity, "bpf_probe");
}

#[test]
fn meta_declares_the_run_time_control() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("ioprobe.meta");
    let root = gala_libconfig::parse_file(&path).unwrap();
    let decl = probe_sdk::decl::Declaration::from_node(&root)
        .expect("valid probe group")
        .expect("a probe group");
    assert_eq!(decl, ioprobe::tables::declaration());
    assert!(decl.reload);
    assert_eq!(decl.sub_probe("io_count").map(|s| s.bits), Some(4));
    assert_eq!(decl.sub_probe("page_cache").map(|s| s.bits), Some(8));
}

#[test]
fn printed_records_match_the_meta() {
    let tables = load_meta();
    let mut stats = DiskStats {
        ops: [1, 2, 3, 4],
        bytes: [4096, 8192, 0, 0],
        errors: 1,
        last_err: 10,
        ..DiskStats::default()
    };
    stats.lat[2].slots[6] = 3;
    stats.lat[2].count = 3;
    stats.lat[2].sum_ns = 150_000;
    let sample = DiskSample {
        id: DiskId {
            major: 254,
            first_minor: 0,
        },
        stats,
        // Only the device stage had a request in the period.
        period: [
            PeriodLat::default(),
            PeriodLat::default(),
            PeriodLat {
                count: 3,
                max_ns: 60_000,
                last_ns: 40_000,
                last_ts: 1,
                jitter_ns: 20_000,
            },
        ],
    };
    let labels = DiskLabels {
        blk_name: "vda".into(),
        disk_name: "vda".into(),
    };
    let mut w = RecordWriter::new(Vec::new());
    report::write_disk(
        &mut w,
        &DiskReport {
            sample: &sample,
            labels: Some(&labels),
        },
        report::Tables::ALL,
    )
    .unwrap();
    report::write_pagecache(
        &mut w,
        sample.id,
        Some(&labels),
        &report::PageCache {
            access: 40,
            buffer_dirty: 3,
            load: 20,
            page_dirty: 10,
        },
    )
    .unwrap();
    report::write_bpf_stats(&mut w, &LossCounters::default()).unwrap();
    w.flush().unwrap();
    let text = String::from_utf8(w.into_inner()).unwrap();

    let mut seen = Vec::new();
    for line in text.lines() {
        let inner = line.strip_prefix('|').unwrap().strip_suffix('|').unwrap();
        let mut parts = inner.split('|');
        let table = parts.next().unwrap();
        let values: Vec<&str> = parts.collect();
        let meta = &tables[table];
        assert_eq!(values.len(), meta.fields.len(), "{table}: {line}");
        for (v, (name, ty)) in values.iter().zip(&meta.fields) {
            match ty.as_str() {
                "histogram" => {
                    let n: Vec<u64> = v.split(' ').map(|t| t.parse().unwrap()).collect();
                    assert_eq!(n.len() as u64, 1 + 2 * n[0] + 2, "{table}.{name}");
                }
                "counter" => {
                    assert!(v.parse::<u64>().is_ok(), "{table}.{name} = {v:?}");
                }
                // A period gauge is absent (empty) when the period had no request.
                "gauge" => {
                    assert!(
                        v.is_empty() || v.parse::<u64>().is_ok(),
                        "{table}.{name} = {v:?}"
                    );
                }
                _ => assert!(!v.is_empty() && !v.contains(' '), "{table}.{name} = {v:?}"),
            }
        }
        seen.push(table.to_string());
    }
    assert_eq!(
        seen,
        [
            "io_latency",
            "io_count",
            "io_err",
            "io_pagecache",
            "io_bpf_stats"
        ]
    );
    // The device stage's period gauges are there, in nanoseconds; the others are absent.
    let latency: Vec<&str> = text.lines().next().unwrap().split('|').collect();
    let field = |name: &str| {
        let i = tables["io_latency"]
            .fields
            .iter()
            .position(|(n, _)| n == name)
            .unwrap();
        latency[2 + i]
    };
    assert_eq!(field("latency_device_max"), "60000");
    assert_eq!(field("latency_device_last"), "40000");
    assert_eq!(field("latency_device_jitter"), "20000");
    assert_eq!(field("latency_device_sum"), "150000");
    assert_eq!(field("count_latency_device"), "3");
    assert_eq!(field("latency_req_max"), "");
    assert_eq!(field("latency_driver_last"), "");
}
