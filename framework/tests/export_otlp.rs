//! OTLP sink against a real OTLP/HTTP receiver (Python, official opentelemetry-proto classes):
//! names, types, values and resource attributes of the metrics, events as log records, and
//! delivery after the receiver was absent and then answered 503.

mod daemon_support;
mod export_support;

use std::time::Duration;

use daemon_support::*;
use export_support::*;
use serde_json::{json, Value};

fn points<'a>(got: &'a [Value], name: &str) -> Vec<&'a Value> {
    let mut v: Vec<&Value> = got.iter().filter(|p| p["name"] == name).collect();
    v.sort_by_key(|p| p["attrs"]["k"].as_str().unwrap_or("").to_string());
    v
}

#[test]
fn metrics_and_events_reach_a_real_receiver() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = format!(
        "metric = {{ out_channel = [\"web_server\", \"otlp\"]; }};\n\
         event = {{ out_channel = \"otlp\"; }};\nmeta = {{ out_channel = \"\"; }};\n\
         otlp = {{ endpoint = \"http://127.0.0.1:{port}\"; timeout_ms = 2000; }};\n"
    );
    let d = Daemon::start(60, &conf, |p| {
        install_fixture(p, "fx", &["fx.sh", "fx.meta"]);
    });
    d.wait_scrape("gala_gopher_fx_g", Duration::from_secs(20));
    // Nobody listens yet: the sink keeps the batch and retries.
    let err = wait_for(Duration::from_secs(10), || {
        let s = d.scrape();
        s.contains("gala_gopher_self_sink_last_error_timestamp_seconds{sink=\"otlp\"")
            .then_some(s)
    });
    assert!(
        err.is_some(),
        "no error recorded while the receiver is absent"
    );
    // Then it appears, and refuses the first request with 503.
    let rx = OtlpReceiver::start(port, tmp.path(), 1);
    let done = wait_for(Duration::from_secs(30), || {
        let s = d.scrape();
        let m = self_sample(
            &s,
            "gala_gopher_self_sink_sent_total",
            &["sink=\"otlp\"", "stream=\"metric\""],
        );
        let e = self_sample(
            &s,
            "gala_gopher_self_sink_sent_total",
            &["sink=\"otlp\"", "stream=\"event\""],
        );
        (m == Some(5.0) && e == Some(2.0)).then_some(())
    });
    assert!(
        done.is_some(),
        "not delivered:\n{}\nlog:\n{}",
        d.scrape(),
        d.log()
    );
    let got = rx.received();

    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let resource = json!({
        "service.name": "gala-gopher",
        "host.name": host.trim(),
        "host.id": "test-machine",
    });
    assert!(got.iter().all(|p| p["resource"] == resource), "{got:#?}");

    let g = points(&got, "gala_gopher_fx_g");
    let summary: Vec<(&Value, &Value, &Value, &Value)> = g
        .iter()
        .map(|p| (&p["type"], &p["attrs"], &p["value"], &p["value_type"]))
        .collect();
    assert_eq!(
        summary,
        [
            (
                &json!("gauge"),
                &json!({"k": "a", "l": "lab1"}),
                &json!(1.5),
                &json!("as_double")
            ),
            (
                &json!("gauge"),
                &json!({"k": "b \"q\"", "l": "x|y"}),
                &json!(2),
                &json!("as_int")
            ),
            (
                &json!("gauge"),
                &json!({"k": "ünï", "l": "€ {json}"}),
                &json!(-300.0),
                &json!("as_double")
            ),
        ]
    );
    assert_eq!(g[0]["description"], "a gauge");

    let c = points(&got, "gala_gopher_fx_c");
    assert_eq!(c.len(), 4);
    for (p, v) in c.iter().zip([10, 20, 30, 40]) {
        assert_eq!(p["type"], "sum");
        assert_eq!(p["monotonic"], true);
        assert_eq!(p["temporality"], 2, "cumulative");
        assert_eq!(p["value"], v);
        assert!(p["start_ns"].as_u64().unwrap() > 0);
        assert!(p["start_ns"].as_u64() <= p["time_ns"].as_u64());
    }
    assert_eq!(c[2]["attrs"], json!({"k": "c\\d", "l": "line1\nline2"}));

    let h = points(&got, "gala_gopher_fx_h");
    let hs: Vec<Value> = h
        .iter()
        .map(|p| {
            json!([
                p["attrs"]["k"],
                p["type"],
                p["temporality"],
                p["bounds"],
                p["buckets"],
                p["count"],
                p["sum"],
                p["max"]
            ])
        })
        .collect();
    assert_eq!(
        hs,
        [
            json!([
                "a",
                "histogram",
                2,
                [10.0, 100.0, 1000.0],
                [1, 2, 0, 0],
                3,
                250.0,
                900.0
            ]),
            json!(["c\\d", "histogram", 2, [5.0], [2, 0], 2, 7.0, 9.0]),
            json!(["ünï", "histogram", 2, [1.0, 2.0], [0, 0, 0], 0, 0.0, 0.0]),
        ]
    );

    let s = points(&got, "gala_gopher_fx_s");
    assert_eq!(s.len(), 1);
    assert_eq!(
        (&s[0]["type"], &s[0]["value"]),
        (&json!("gauge"), &json!(0.25))
    );
    assert!(
        points(&got, "gala_gopher_fx_note").is_empty(),
        "strings are not metrics"
    );
    let names: std::collections::BTreeSet<&str> = got
        .iter()
        .filter(|p| p["signal"] == "metric")
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "gala_gopher_fx_c",
            "gala_gopher_fx_g",
            "gala_gopher_fx_h",
            "gala_gopher_fx_s"
        ]
    );

    let mut logs: Vec<&Value> = got.iter().filter(|p| p["signal"] == "log").collect();
    logs.sort_by_key(|l| l["severity_number"].as_i64());
    assert_eq!(logs.len(), 2, "one event per entity");
    assert_eq!(logs[0]["severity_text"], "WARN");
    assert_eq!(logs[0]["severity_number"], 13);
    assert_eq!(
        logs[0]["body"],
        "Tue Apr 18 20:59:09 2023 WARN Entity(a) value \"high\" \\ C:\\path\nnext line"
    );
    assert_eq!(logs[0]["attrs"]["entity_id"], "test-machine_fx_a");
    assert_eq!(logs[0]["attrs"]["metric"], "gala_gopher_fx_g");
    assert_eq!(logs[1]["severity_number"], 17);
    assert_eq!(logs[1]["attrs"]["entity_id"], "test-machine_fx_:b:c");
    assert!(logs[1]["time_ns"].as_u64().unwrap() > 1_600_000_000_000_000_000);

    let sc = d.scrape();
    for stream in ["metric", "event"] {
        let lbl = format!("stream=\"{stream}\"");
        for m in ["failed_total", "dropped_total"] {
            assert_eq!(
                self_sample(
                    &sc,
                    &format!("gala_gopher_self_sink_{m}"),
                    &["sink=\"otlp\"", &lbl]
                ),
                Some(0.0),
                "{m} {stream}"
            );
        }
    }
}
