//! Log-file sink through the real daemon: rotation at `logs.metric_total_size`, never more than
//! the cap on disk, upstream file names, safe permissions, every line valid JSON; event and
//! metadata files; the HEAD `json` channel shape.

mod daemon_support;
mod export_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use daemon_support::*;
use export_support::*;

/// (total bytes, file names sorted by their number)
fn dir_state(dir: &Path, prefix: &str) -> (u64, Vec<(u64, String)>) {
    let mut total = 0;
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, files);
    };
    for e in entries {
        let e = e.unwrap();
        let Ok(md) = e.metadata() else { continue };
        total += md.len();
        let name = e.file_name().to_string_lossy().into_owned();
        let n = name
            .strip_prefix(prefix)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("unexpected file {name}"));
        files.push((n, name));
    }
    files.sort();
    (total, files)
}

fn logs_conf(root: &Path, channels: &str) -> String {
    format!(
        "metric = {{ out_channel = [{channels}]; }};\nevent = {{ out_channel = \"logs\"; }};\n\
         meta = {{ out_channel = \"logs\"; }};\n\
         logs = {{ metric_total_size = 1; metric_dir = \"{r}/m\"; event_dir = \"{r}/e\"; meta_dir = \"{r}/meta\"; }};\n",
        r = root.display()
    )
}

#[test]
fn metric_files_rotate_within_the_cap() {
    const RECORDS: u64 = 20_000;
    const CAP: u64 = 1024 * 1024;
    let out = tempfile::Builder::new()
        .prefix("gg-logs")
        .tempdir()
        .unwrap();
    let root = out.path();
    let d = Daemon::start(60, &logs_conf(root, "\"web_server\", \"logs\""), |p| {
        install_fixture(p, "bulk", &["bulkprobe.py", "bulkprobe.meta"]);
    });
    let mdir = root.join("m");
    let written = wait_for(Duration::from_secs(60), || {
        let (total, _) = dir_state(&mdir, "gopher_metrics_");
        assert!(total <= CAP, "{total} bytes on disk > cap");
        let s = d.scrape();
        let sent = |stream: &str| {
            self_sample(
                &s,
                "gala_gopher_self_sink_sent_total",
                &["sink=\"logs\"", &format!("stream=\"{stream}\"")],
            )
        };
        (sent("metric") == Some(RECORDS as f64)
            && sent("event") == Some(1.0)
            && sent("meta") == Some(1.0))
        .then_some(())
    });
    assert!(
        written.is_some(),
        "not all records written; log:\n{}",
        d.log()
    );
    let (total, files) = dir_state(&mdir, "gopher_metrics_");
    assert!(total <= CAP, "{total}");
    // ~6 MB written into 256 KiB files: many rotations, the four newest files kept.
    assert_eq!(files.len(), 4, "{files:?}");
    assert!(files[0].0 >= 10, "rotated files: {files:?}");
    let consecutive: Vec<u64> = (files[0].0..files[0].0 + 4).collect();
    assert_eq!(files.iter().map(|f| f.0).collect::<Vec<_>>(), consecutive);
    assert_eq!(
        std::fs::metadata(&mdir).unwrap().permissions().mode() & 0o777,
        0o750
    );
    let mut last_n = None;
    for (_, name) in &files {
        let path = mdir.join(name);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name}: bad JSON line {line:?}: {e}"));
            assert_eq!(v["entity_name"], "bulk");
            let n: u64 = v["n"].as_str().unwrap().parse().unwrap();
            if let Some(prev) = last_n {
                assert_eq!(
                    n,
                    prev + 1,
                    "lines in order, none missing inside the kept files"
                );
            }
            last_n = Some(n);
        }
    }
    assert_eq!(last_n, Some(RECORDS - 1), "the newest record is kept");

    let event = std::fs::read_to_string(root.join("e/gopher_event_0")).unwrap();
    let ev: serde_json::Value = serde_json::from_str(event.trim_end()).unwrap();
    assert_eq!(ev["Attributes"]["entity_id"], "test-machine_bulk_s");
    assert_eq!(
        ev["Body"],
        "Mon Jan  1 00:00:00 2024 WARN Entity(s) bulk done"
    );
    let meta = std::fs::read_to_string(root.join("meta/gopher_meta.log")).unwrap();
    let lines: Vec<&str> = meta.lines().collect();
    assert_eq!(lines.len(), 1, "{meta}");
    assert_eq!(
        normalize_times(lines[0]),
        r#"{"timestamp": TS, "meta_name": "bulk", "entity_name": "bulk", "version": "1.0.0", "keys": ["machine_id", "k"], "labels": ["hostname", "pad"], "metrics": ["n"]}"#
    );
}

#[test]
fn json_channel_writes_head_shape() {
    let out = tempfile::Builder::new()
        .prefix("gg-logs")
        .tempdir()
        .unwrap();
    let root = out.path();
    let d = Daemon::start(60, &logs_conf(root, "\"web_server\", \"json\""), |p| {
        install_fixture(p, "fx", &["fx.sh", "fx.meta"]);
    });
    let done = wait_for(Duration::from_secs(30), || {
        (self_sample(
            &d.scrape(),
            "gala_gopher_self_sink_sent_total",
            &["sink=\"logs\"", "stream=\"metric\""],
        ) == Some(5.0))
        .then_some(())
    });
    assert!(done.is_some(), "log:\n{}", d.log());
    let text = std::fs::read_to_string(root.join("m/gopher_metrics_0")).unwrap();
    let re = regex::Regex::new(r#""timestamp":\d+"#).unwrap();
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap();
            re.replace(l, "\"timestamp\":TS").into_owned()
        })
        .collect();
    lines.sort();
    assert_eq!(
        lines[0],
        r#"{"timestamp":TS,"entity_name":"fx","table_name":"fx","labels":{"k":"a","l":"lab1","machine_id":"test-machine"},"metrics":{"g":"1.5","c":"10"},"histos":{"h":{"10":1,"100":3,"1000":3,"count":3,"sum":250,"max":900}}}"#
    );
    assert_eq!(
        lines[1],
        r#"{"timestamp":TS,"entity_name":"fx","table_name":"fx","labels":{"k":"b \"q\"","l":"x|y","machine_id":"test-machine"},"metrics":{"g":"2","c":"20"},"histos":{}}"#
    );
    assert_eq!(
        lines[2],
        r#"{"timestamp":TS,"entity_name":"fx","table_name":"fx","labels":{"k":"c\\d","l":"line1\nline2","machine_id":"test-machine"},"metrics":{"c":"30"},"histos":{"h":{"5":2,"count":2,"sum":7,"max":9}}}"#
    );
    assert_eq!(
        lines[4],
        r#"{"timestamp":TS,"entity_name":"fx","table_name":"fx_info","labels":{"k":"a","machine_id":"test-machine"},"metrics":{"s":"0.25"},"histos":{}}"#
    );
}
