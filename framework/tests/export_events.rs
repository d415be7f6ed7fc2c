//! Events end to end: the real `system_infos` probe crosses a threshold every period (`-U 1`:
//! memory and filesystem use above 1 %); the daemon lets exactly one event per entity through
//! per `event.timeout` window, in the configured language, as valid JSON lines.

mod daemon_support;
mod export_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use daemon_support::*;
use export_support::*;

fn start(root: &Path, timeout_s: u32, language: &str) -> Daemon {
    let conf = format!(
        "event = {{ out_channel = \"logs\"; timeout = {timeout_s}; desc_language = \"{language}\"; }};\n\
         meta = {{ out_channel = \"\"; }};\n\
         logs = {{ event_dir = \"{}/e\"; }};\n\
         probes = ( {{ name = \"system_infos\"; param = \"-t 1 -l warn -U 1 -P 34\"; switch = \"on\"; }} );\n",
        root.display()
    );
    Daemon::start(60, &conf, |probes| {
        std::fs::copy(probe_bin("system_infos"), probes.join("system_infos")).unwrap();
        std::fs::copy(
            workspace().join("probes/system_infos/system_infos.meta"),
            probes.join("system_infos.meta"),
        )
        .unwrap();
    })
}

/// Events in the event files, by entity id.
fn events_by_entity(dir: &Path) -> BTreeMap<String, Vec<serde_json::Value>> {
    let mut out: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let path = e.unwrap().path();
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|err| panic!("{}: bad JSON {line:?}: {err}", path.display()));
            let id = v["Attributes"]["entity_id"].as_str().unwrap().to_string();
            out.entry(id).or_default().push(v);
        }
    }
    out
}

fn events_total(d: &Daemon, outcome: &str) -> f64 {
    self_sample(
        &d.scrape(),
        "gala_gopher_self_events_total",
        &[&format!("outcome=\"{outcome}\"")],
    )
    .unwrap_or(0.0)
}

#[test]
fn one_event_per_entity_per_window_in_chinese() {
    let out = tempfile::Builder::new()
        .prefix("gg-events")
        .tempdir()
        .unwrap();
    let d = start(out.path(), 600, "zh_CN");
    // Several periods, each crossing the threshold again.
    let repeated = wait_for(Duration::from_secs(30), || {
        (events_total(&d, "deduplicated") >= 3.0 * events_total(&d, "accepted")
            && events_total(&d, "accepted") > 0.0)
            .then_some(())
    });
    assert!(repeated.is_some(), "no repeated events; log:\n{}", d.log());
    std::thread::sleep(Duration::from_millis(500));
    let events = events_by_entity(&out.path().join("e"));
    assert_eq!(events.len() as f64, events_total(&d, "accepted"));
    for (entity, evs) in &events {
        assert_eq!(evs.len(), 1, "{entity}: {evs:#?}");
    }
    let mem = events
        .get("test-machine_mem_/proc/meminfo")
        .or_else(|| {
            events
                .iter()
                .find(|(k, _)| k.contains("_mem_"))
                .map(|(_, v)| v)
        })
        .unwrap_or_else(|| panic!("no mem event: {events:#?}"));
    let ev = &mem[0];
    assert_eq!(ev["Resource"]["metric"], "gala_gopher_mem_util");
    assert_eq!(ev["SeverityText"], "WARN");
    assert_eq!(ev["SeverityNumber"], 13);
    let body = ev["Body"].as_str().unwrap();
    assert!(body.contains(" WARN Entity("), "{body}");
    assert!(body.contains("内存利用率过高("), "not translated: {body}");
    assert!(
        events.keys().any(|k| k.contains("_fs_")),
        "the root filesystem is above 1 %: {events:#?}"
    );
}

#[test]
fn window_expiry_lets_the_next_event_through() {
    let out = tempfile::Builder::new()
        .prefix("gg-events")
        .tempdir()
        .unwrap();
    let t0 = Instant::now();
    let d = start(out.path(), 2, "en_US");
    std::thread::sleep(Duration::from_secs(9));
    let elapsed = t0.elapsed().as_secs();
    let events = events_by_entity(&out.path().join("e"));
    let mem: Vec<_> = events
        .iter()
        .filter(|(k, _)| k.contains("_mem_"))
        .flat_map(|(_, v)| v)
        .collect();
    // One per 2 s window at most, and more than one once a window expired.
    assert!(mem.len() >= 2, "{mem:#?}");
    assert!(
        mem.len() as u64 <= elapsed / 2 + 1,
        "{} in {elapsed} s",
        mem.len()
    );
    assert!(events_total(&d, "deduplicated") > 0.0);
    let body = mem[0]["Body"].as_str().unwrap();
    assert!(body.contains("Too high mem utilization("), "{body}");
}
