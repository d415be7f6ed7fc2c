//! pprof: decoded back with the crate's own messages, and read by `go tool pprof`.

use std::io::Read as _;
use std::process::Command;

use prost::Message as _;
use stack_profile::pprof::{pprof_bytes, pprof_gz, PprofProfile};
use stack_profile::{Frame, Kind};

use crate::{profile, sample, tempdir, T};

fn decode(p: &stack_profile::Profile) -> PprofProfile {
    PprofProfile::decode(pprof_bytes(p).as_slice()).unwrap_or_else(|e| panic!("decode: {e}"))
}

fn string(pb: &PprofProfile, i: i64) -> &str {
    usize::try_from(i)
        .ok()
        .and_then(|i| pb.string_table.get(i))
        .map_or("<out of range>", String::as_str)
}

/// The function names of a sample's locations, in the order stored.
fn stack(pb: &PprofProfile, location_ids: &[u64]) -> Vec<String> {
    location_ids
        .iter()
        .map(|id| {
            let loc = pb.location.iter().find(|l| l.id == *id);
            let line = loc.and_then(|l| l.line.first());
            let func = line.and_then(|l| pb.function.iter().find(|f| f.id == l.function_id));
            func.map_or("<missing>".to_string(), |f| string(pb, f.name).to_string())
        })
        .collect()
}

#[test]
fn on_cpu_round_trip() {
    let p = profile(42, Kind::OnCpu, T);
    let pb = decode(&p);
    assert_eq!(pb.string_table.first().map(String::as_str), Some(""));
    let types: Vec<(&str, &str)> = pb
        .sample_type
        .iter()
        .map(|t| (string(&pb, t.r#type), string(&pb, t.unit)))
        .collect();
    assert_eq!(types, [("samples", "count"), ("cpu", "nanoseconds")]);
    let period = pb.period_type.clone().unwrap_or_default();
    assert_eq!(
        (string(&pb, period.r#type), string(&pb, period.unit)),
        ("cpu", "nanoseconds")
    );
    assert_eq!(pb.period, 1_000_000_000 / 99);
    assert_eq!(string(&pb, pb.default_sample_type), "cpu");
    assert_eq!(pb.time_nanos, (T as i64 - 180) * 1_000_000_000);
    assert_eq!(pb.duration_nanos, 180 * 1_000_000_000);

    assert_eq!(pb.sample.len(), 3);
    let hot = &pb.sample[0];
    // Leaf first.
    assert_eq!(stack(&pb, &hot.location_id), ["hot_leaf", "work", "main"]);
    assert_eq!(hot.value, [90, 90 * (1_000_000_000 / 99)]);
    let labels: Vec<(&str, &str, i64)> = hot
        .label
        .iter()
        .map(|l| (string(&pb, l.key), string(&pb, l.str), l.num))
        .collect();
    assert_eq!(labels, [("pid", "", 42), ("comm", "app", 0)]);
    assert_eq!(
        stack(&pb, &pb.sample[1].location_id),
        ["do_syscall_64", "work", "main"]
    );

    // One location per distinct frame, one function per distinct name; the kernel one is marked.
    assert_eq!(pb.location.len(), 4);
    assert_eq!(pb.function.len(), 4);
    let kernel = pb
        .function
        .iter()
        .find(|f| string(&pb, f.name) == "do_syscall_64");
    assert_eq!(
        kernel.map(|f| string(&pb, f.filename)),
        Some("[kernel.kallsyms]")
    );
    // Every string is referenced once in the table.
    let mut sorted = pb.string_table.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), pb.string_table.len());
}

#[test]
fn off_cpu_types_and_hostile_names() {
    let mut p = profile(7, Kind::OffCpu, T);
    p.samples.push(sample(
        &[
            Frame::user("main"),
            Frame::jit("Lcom/x;run\n"),
            Frame::inlined("inl"),
        ],
        2,
        5,
    ));
    let pb = decode(&p);
    let types: Vec<(&str, &str)> = pb
        .sample_type
        .iter()
        .map(|t| (string(&pb, t.r#type), string(&pb, t.unit)))
        .collect();
    assert_eq!(types, [("contentions", "count"), ("delay", "nanoseconds")]);
    assert_eq!(string(&pb, pb.default_sample_type), "delay");
    assert_eq!(pb.period, 1);
    let last = pb.sample.last().map(|s| stack(&pb, &s.location_id));
    assert_eq!(
        last,
        Some(vec!["inl".into(), "Lcom/x;run_".into(), "main".into()])
    );
    assert_eq!(pb.sample.last().map(|s| s.value.clone()), Some(vec![2, 5]));
}

#[test]
fn gzip_file_is_the_same_message() {
    let p = profile(42, Kind::OnCpu, T);
    let gz = pprof_gz(&p).unwrap_or_default();
    let mut plain = Vec::new();
    let read = flate2::read::GzDecoder::new(gz.as_slice()).read_to_end(&mut plain);
    assert!(read.is_ok());
    assert_eq!(plain, pprof_bytes(&p));
}

/// `go tool pprof -top` lists the hot function first (skipped when Go is not installed).
#[test]
fn go_tool_pprof_reads_it() {
    let go_found = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !go_found {
        eprintln!("NOTICE: `go` not installed, skipping the go tool pprof check");
        return;
    }
    let dir = tempdir();
    for kind in Kind::ALL {
        let file = dir.path().join(format!("{kind}.pb.gz"));
        let gz = pprof_gz(&profile(42, kind, T)).unwrap_or_default();
        assert!(std::fs::write(&file, gz).is_ok());
        let out = Command::new("go")
            .args(["tool", "pprof", "-top", "-symbolize=none"])
            .arg(&file)
            .env("HOME", dir.path())
            .env("GOCACHE", dir.path().join("gocache"))
            .env("PPROF_TMPDIR", dir.path())
            .output();
        let Ok(out) = out else {
            panic!("running go tool pprof failed");
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        let first = stdout
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("flat"))
            .nth(1)
            .unwrap_or_default();
        assert_eq!(
            first.split_whitespace().last(),
            Some("hot_leaf"),
            "{kind}:\n{stdout}"
        );
        let type_line = match kind {
            Kind::OnCpu => "Type: cpu",
            Kind::OffCpu => "Type: delay",
        };
        assert!(stdout.contains(type_line), "{stdout}");
    }
}
