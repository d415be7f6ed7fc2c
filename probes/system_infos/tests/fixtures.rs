//! Fixture trees → exact records.
//!
//! Each directory under `tests/fixtures/` is a case: `t0/` and `t1/` are two snapshots of
//! `/proc`, `/sys` and `/etc/os-release` (captured from a machine with `capture.py`, or written
//! by hand for edge cases), `statvfs` holds the filesystem sizes, `args` the probe flags
//! (`{case}` stands for the case directory) and `expected.txt` the exact output of the second
//! cycle. `UPDATE_FIXTURES=1 cargo test -p system_infos --test fixtures` rewrites the expected
//! files (review the diff!).

mod common;

use probe_sdk::event::CivilTime;
use probe_sdk::record::RecordWriter;
use std::path::Path;
use system_infos::collector::Collector;
use system_infos::fs::TableStatFs;
use system_infos::options;
use system_infos::source::HostPaths;

const EVENT_TIME: CivilTime = CivilTime {
    year: 2023,
    month: 4,
    day: 18,
    hour: 20,
    minute: 59,
    second: 9,
    weekday: 2,
};

fn run_case(case: &Path) -> String {
    let args = std::fs::read_to_string(case.join("args")).unwrap_or_default();
    let mut argv: Vec<String> = args
        .split_ascii_whitespace()
        .map(|a| a.replace("{case}", &case.display().to_string()))
        .collect();
    let t0 = HostPaths::fixture(&case.join("t0"));
    argv.extend(["--proc-root".into(), t0.proc.display().to_string()]);
    let opts = options::parse(argv).expect("case args");
    let mut cfg = opts.collector_config();
    cfg.paths = t0;
    cfg.measure_cpu = false;
    cfg.ticks_per_sec = 100;
    assert!(!cfg.qdisc, "fixture runs must not read the live host");
    let statvfs = std::fs::read_to_string(case.join("statvfs")).unwrap_or_default();
    let mut collector = Collector::new(cfg, Box::new(TableStatFs::parse(&statvfs)));
    let mut out = RecordWriter::new(Vec::new());
    assert!(
        !collector.cycle(&mut out, &EVENT_TIME).unwrap(),
        "the first cycle only primes"
    );
    assert!(out.buffered().is_empty());
    collector.set_paths(HostPaths::fixture(&case.join("t1")));
    assert!(collector.cycle(&mut out, &EVENT_TIME).unwrap());
    out.flush().unwrap();
    String::from_utf8(out.into_inner()).expect("utf-8 output")
}

#[test]
fn fixture_cases_produce_the_expected_records() {
    let root = common::crate_dir().join("tests/fixtures");
    let update = std::env::var_os("UPDATE_FIXTURES").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("t0").is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 4, "fixture cases missing: {cases:?}");
    let mut failures = Vec::new();
    for case in &cases {
        let got = run_case(case);
        common::check_against_meta(&got);
        let expected_path = case.join("expected.txt");
        if update {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if got != expected {
            let diff: Vec<String> = expected
                .lines()
                .zip(got.lines().chain(std::iter::repeat("<missing>")))
                .filter(|(e, g)| e != g)
                .map(|(e, g)| format!("  expected {e}\n  got      {g}"))
                .chain((got.lines().count() > expected.lines().count()).then(|| {
                    format!(
                        "  extra lines: {:?}",
                        got.lines()
                            .skip(expected.lines().count())
                            .collect::<Vec<_>>()
                    )
                }))
                .collect();
            failures.push(format!("{}:\n{}", case.display(), diff.join("\n")));
        }
    }
    assert!(
        failures.is_empty(),
        "fixture mismatches:\n{}",
        failures.join("\n")
    );
}
