//! The parser on files produced by real JVMs (tests/fixtures/*.hsperf, captured by
//! tests/fixtures/capture.sh from JDK 17 Serial and G1 and JDK 25 Parallel), each compared with
//! what the JDK's own reader printed for the same bytes (`jstat -snap`, the `.snap` file); and
//! corrupted versions of them, which must never make the reader panic.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use jvmprobe::hsperf::{self, Builder, Value};
use jvmprobe::sample;
use proptest::prelude::*;

const FIXTURES: [&str; 3] = ["jdk17-serial", "jdk17-g1", "jdk25-parallel"];

fn fixture(name: &str) -> (Vec<u8>, HashMap<String, String>) {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"));
    let bytes = std::fs::read(dir.join(format!("{name}.hsperf"))).expect("fixture");
    let snap = std::fs::read_to_string(dir.join(format!("{name}.snap"))).expect("snap");
    (bytes, common::parse_snap(&snap))
}

#[test]
fn every_counter_equals_what_jstat_read() {
    for name in FIXTURES {
        let (bytes, mut snap) = fixture(name);
        let pd = hsperf::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        // jstat adds six pseudo-counters made from the prologue.
        let version = (
            snap["sun.perfdata.majorVersion"].parse::<u8>().unwrap(),
            snap["sun.perfdata.minorVersion"].parse::<u8>().unwrap(),
        );
        assert_eq!(pd.version, version, "{name}");
        snap.retain(|k, _| !k.starts_with("sun.perfdata."));
        assert_eq!(pd.entries.len(), snap.len(), "{name}: entry count");
        for e in &pd.entries {
            let key = String::from_utf8(e.name.to_vec()).unwrap();
            let want = snap
                .get(&key)
                .unwrap_or_else(|| panic!("{name}: {key} unknown to jstat"));
            match e.value {
                Value::Long(v) => assert_eq!(v.to_string(), *want, "{name}: {key}"),
                Value::Bytes(b) => {
                    assert_eq!(
                        format!("\"{}\"", String::from_utf8_lossy(b)),
                        *want,
                        "{name}: {key}"
                    )
                }
                Value::Other => panic!("{name}: {key} of another type"),
            }
        }
    }
}

#[test]
fn mapping_of_real_files() {
    let expect = [
        (
            "jdk17-serial",
            ["Copy", "MarkSweepCompact"].as_slice(),
            [
                "eden",
                "s0",
                "s1",
                "old",
                "metaspace",
                "compressed_class_space",
            ]
            .as_slice(),
        ),
        (
            "jdk17-g1",
            &[
                "G1 Young Generation",
                "G1 Old Generation",
                "G1 concurrent cycle pauses",
            ],
            &[
                "eden",
                "s0",
                "s1",
                "old",
                "metaspace",
                "compressed_class_space",
            ],
        ),
        (
            "jdk25-parallel",
            &["PS Scavenge", "PS MarkSweep"],
            &[
                "eden",
                "s0",
                "s1",
                "old",
                "metaspace",
                "compressed_class_space",
            ],
        ),
    ];
    for (name, gcs, pools) in expect {
        let (bytes, snap) = fixture(name);
        let long = |k: &str| snap[k].parse::<i64>().unwrap();
        let s = sample::map(&hsperf::parse(&bytes).unwrap());
        assert_eq!(s.main.as_deref(), Some("Alloc"), "{name}");
        assert_eq!(
            s.vm_version.as_deref(),
            Some(snap["java.property.java.vm.version"].trim_matches('"'))
        );
        let got: Vec<&str> = s.collectors.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(got, gcs, "{name}");
        let hz = long("sun.os.hrt.frequency") as f64;
        for (i, c) in s.collectors.iter().enumerate() {
            let inv = long(&format!("sun.gc.collector.{i}.invocations"));
            assert_eq!(c.count, Some(inv), "{name} {}", c.name);
            let t = long(&format!("sun.gc.collector.{i}.time")) as f64 / hz;
            assert_eq!(c.seconds, Some(t), "{name} {}", c.name);
        }
        assert!(
            s.collectors[0].count.unwrap() > 0,
            "{name}: the capture allocates"
        );
        let got: Vec<&str> = s.pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(got, pools, "{name}");
        let heap = &s.areas[0];
        assert_eq!(heap.name, "heap");
        assert_eq!(
            heap.committed,
            Some(long("sun.gc.generation.0.capacity") + long("sun.gc.generation.1.capacity"))
        );
        let used: i64 = (0..3)
            .map(|i| long(&format!("sun.gc.generation.0.space.{i}.used")))
            .sum::<i64>()
            + long("sun.gc.generation.1.space.0.used");
        assert_eq!(heap.used, Some(used), "{name}");
        assert_eq!(s.areas[1].used, Some(long("sun.gc.metaspace.used")));
        assert_eq!(
            s.classes_loaded_total,
            Some(long("java.cls.loadedClasses") + long("java.cls.sharedLoadedClasses"))
        );
        assert_eq!(s.threads_live, Some(long("java.threads.live")));
        assert_eq!(s.start_ms, Some(long("sun.rt.vmInitDoneTime")));
    }
}

#[test]
fn every_truncation_is_an_error_or_a_prefix() {
    for name in FIXTURES {
        let (bytes, _) = fixture(name);
        let full = hsperf::parse(&bytes).unwrap().entries.len();
        let used = i32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        for len in 0..bytes.len() {
            // `used` beyond a truncated file is refused, so only cuts in the unused tail parse.
            let got = hsperf::parse(&bytes[..len]).map(|pd| pd.entries.len());
            if len >= used {
                assert_eq!(got, Ok(full), "{name} cut at {len}");
            } else {
                assert!(got.is_err(), "{name} cut at {len} (used {used})");
            }
        }
    }
}

fn corrupt(mut bytes: Vec<u8>, edits: &[(usize, u32, u8)]) -> Vec<u8> {
    for &(at, v, kind) in edits {
        if bytes.is_empty() {
            break;
        }
        let at = at % bytes.len();
        match kind % 3 {
            // One byte.
            0 => bytes[at] = v as u8,
            // A whole i32 (offsets, lengths, counts).
            1 => {
                for (i, b) in v.to_le_bytes().into_iter().enumerate() {
                    if let Some(x) = bytes.get_mut(at + i) {
                        *x = b;
                    }
                }
            }
            // Truncation.
            _ => bytes.truncate(at),
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random edits of real files (bytes, i32 fields, truncation): an error or a result,
    /// never a panic; what parses also maps.
    #[test]
    fn corrupted_real_files_never_panic(
        which in 0..FIXTURES.len(),
        edits in proptest::collection::vec((0usize..40_000, any::<u32>(), any::<u8>()), 1..8),
    ) {
        let (bytes, _) = fixture(FIXTURES[which]);
        let bad = corrupt(bytes, &edits);
        if let Ok(pd) = hsperf::parse(&bad) {
            let _ = sample::map(&pd);
        }
    }

    /// Arbitrary bytes behind a valid prologue start.
    #[test]
    fn random_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut buf = Builder::new().build(0)[..8].to_vec();
        buf.extend_from_slice(&body);
        if let Ok(pd) = hsperf::parse(&buf) {
            let _ = sample::map(&pd);
        }
    }
}
