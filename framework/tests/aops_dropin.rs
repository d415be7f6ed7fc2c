//! The A-Ops drop-in contract (issue 14): what gala-spider and gala-anteater read from a real
//! daemon must mean what upstream meant.
//!
//! A drop-in probe replays two rounds of fixed record lines for every table of the shipped
//! probes' `.meta` files (copied into `global.meta_dir`), plus two events. The daemon's
//! `/metrics`, its metadata messages, its event JSON and its metric JSON lines are compared
//! with the expected files in `tests/golden/aops/`, in both counter modes:
//!
//! * `upstream` (default): a counter declared `period: "delta"` is exported under its upstream
//!   name as a gauge of the change between the two rounds;
//! * `prometheus`: the same probe output gives running totals, counters named `*_total`.
//!
//! Besides the files, the consumers' rules are checked directly: every table of one entity has
//! the same keys and version (spider's `check_meta` drops the entity type otherwise), every
//! series carries its entity's keys, every `tgid` table lists `comm` (and the `proc` entity
//! `cmdline`, `start_time`) and the container labels in its metadata, one metric name has one
//! type, and promtool accepts both pages.
//!
//! `GG_BLESS=1 cargo test -p gala-gopher --test aops_dropin` rewrites the expected files (review
//! the diff: it is the compatibility contract).

mod daemon_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use daemon_support::{probe_part, promtool_check, wait_for, workspace, write_script, Daemon};
use gala_gopher::meta::{self, FieldKind, TableSchema};

/// The shipped probes' `.meta` files replayed (every table of each).
const SHIPPED_METAS: &[&str] = &[
    "probes/system_infos/system_infos.meta",
    "probes/tcp/tcpprobe.meta",
    "probes/endpoint/endpoint.meta",
    "probes/l7/l7probe.meta",
    "probes/l7/kafkaprobe.meta",
    "probes/proc/taskprobe.meta",
    "probes/io/ioprobe.meta",
    "probes/container/containerprobe.meta",
    "probes/sli/sliprobe.meta",
];

const REPLAY_META: &str = r#"version = "1.0.0"
measurements: ({ table_name: "replay", entity_name: "replay", fields: (
    { description: "probe", type: "key", name: "probe" },
    { description: "rounds written", type: "gauge", name: "round" }) })
"#;

/// Two events, v2023 and HEAD layouts.
const EVENTS: &str = "|event|proc|@PID@|syscall_failed|WARN|13|Process(@PID@) syscall failed|\n\
|event|tcp_link|@PID@_10.0.0.1_10.0.0.2_8080|retran_packets|@PID@|replay.sh|10.0.0.1||||WARN|13|TCP retransmissions too high|\n";

fn shipped_tables() -> Vec<(String, Vec<TableSchema>)> {
    SHIPPED_METAS
        .iter()
        .map(|m| {
            let tables =
                meta::load_file(&workspace().join(m)).unwrap_or_else(|e| panic!("{m}: {e}"));
            (m.to_string(), tables)
        })
        .collect()
}

/// A key or label value that means something to the consumers (spider's matches use tgid,
/// role, client/server ip and port, container_id, disk_name, dev_name).
fn label_value(name: &str) -> String {
    match name {
        "tgid" | "pid" | "ppid" | "pgid" => "@PID@".into(),
        "comm" => "replay.sh".into(),
        "role" => "client".into(),
        "client_ip" | "toa_client_ip" | "local_ip" => "10.0.0.1".into(),
        "server_ip" | "remote_ip" => "10.0.0.2".into(),
        "server_port" => "8080".into(),
        "client_port" => "0".into(),
        "protocol" => "2".into(),
        "container_id" => "0123456789ab".into(),
        "major" => "8".into(),
        "first_minor" | "minor" => "0".into(),
        "disk_name" | "blk_name" | "dev_name" => "sda".into(),
        "cpu" => "0".into(),
        _ => format!("{name}_v"),
    }
}

/// Round `round` (1 or 2) of the records: counters grow by `10 * (i + 1)` between rounds, so a
/// per-period field shows exactly that in upstream mode.
fn records(tables: &[(String, Vec<TableSchema>)], round: u64) -> String {
    let mut out = String::new();
    for (_, ts) in tables {
        for t in ts {
            // A process table's rows are of a host process (the replay script): no container.
            let host_process = t.fields.iter().any(|f| f.name == "tgid");
            out.push('|');
            out.push_str(&t.table_name);
            out.push('|');
            for (i, f) in t.fields.iter().enumerate() {
                let i = i as u64;
                let v = match f.declared {
                    FieldKind::Label if host_process && f.name == "container_id" => String::new(),
                    FieldKind::Key | FieldKind::Label => label_value(&f.name),
                    FieldKind::Counter => (1000 * (i + 1) + (round - 1) * 10 * (i + 1)).to_string(),
                    FieldKind::Gauge | FieldKind::Summary => (i + round).to_string(),
                    FieldKind::Histogram => record_line::histogram::encode(
                        &[10, 100],
                        &[round, 2 * round],
                        50 * round,
                        90,
                    ),
                    _ => "x".into(),
                };
                out.push_str(&v);
                out.push('|');
            }
            out.push('\n');
        }
    }
    out
}

struct Outputs {
    metrics: String,
    metadata: String,
    events: String,
    metric_json: String,
}

fn run(mode: &str, tables: &[(String, Vec<TableSchema>)]) -> Outputs {
    // Log directories must not contain "/." (tempfile's default names start with a dot).
    let logs = tempfile::Builder::new()
        .prefix("gg-aops")
        .tempdir()
        .unwrap();
    let r = logs.path();
    let conf = format!(
        "metric = {{ out_channel = [\"web_server\", \"json\"]; counter_mode = \"{mode}\"; }};\n\
         event = {{ out_channel = \"logs\"; }};\n\
         meta = {{ out_channel = \"logs\"; }};\n\
         logs = {{ metric_dir = \"{r}/m\"; event_dir = \"{r}/e\"; meta_dir = \"{r}/meta\"; }};\n",
        r = r.display()
    );
    let round1 = records(tables, 1);
    let round2 = records(tables, 2);
    let d = Daemon::start(600, &conf, |probes| {
        let meta_dir = probes.parent().unwrap().join("meta");
        for (m, _) in tables {
            let name = Path::new(m).file_name().unwrap();
            std::fs::copy(workspace().join(m), meta_dir.join(name)).unwrap();
        }
        std::fs::write(probes.join("round1.txt"), &round1).unwrap();
        std::fs::write(probes.join("round2.txt"), format!("{round2}{EVENTS}")).unwrap();
        std::fs::write(probes.join("replay.meta"), REPLAY_META).unwrap();
        write_script(
            &probes.join("replay.sh"),
            "#!/bin/bash\n\
             here=$(dirname \"$0\")\n\
             emit() { while IFS= read -r l; do printf '%s\\n' \"${l//@PID@/$$}\"; done < \"$here/$1\"; }\n\
             emit round1.txt\n\
             echo '|replay|replay|1|'\n\
             sleep 1.5\n\
             emit round2.txt\n\
             echo '|replay|replay|2|'\n\
             while true; do sleep 100; done\n",
        );
    });
    d.wait_scrape(
        "gala_gopher_replay_round{probe=\"replay\",machine_id=\"test-machine\"} 2",
        Duration::from_secs(30),
    );
    // A scrape locks one table at a time, and families render by name: the one that showed
    // round 2 of `replay` may have rendered `block` before its round-2 lines landed. Every
    // line of round 2 precedes that record, so a scrape started now sees all of them.
    let scrape = d.scrape();
    let pid = scrape
        .lines()
        .find_map(|l| l.split("tgid=\"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .expect("a series with a tgid")
        .to_string();
    let probes_dir = d.probes_dir().display().to_string();
    let norm = |s: &str| normalize(s, &pid, &probes_dir);
    let meta_file = r.join("meta/gopher_meta.log");
    let event_file = r.join("e/gopher_event_0");
    let all_tables: usize = tables.iter().map(|(_, t)| t.len()).sum::<usize>() + 1;
    wait_for(Duration::from_secs(20), || {
        let meta = std::fs::read_to_string(&meta_file).ok()?;
        let events = std::fs::read_to_string(&event_file).ok()?;
        (meta.lines().count() >= all_tables && events.lines().count() >= 2).then_some(())
    })
    .unwrap_or_else(|| panic!("metadata/events not written; log:\n{}", d.log()));
    // The JSON metric lines of the second round (the last line per table).
    let metric_json = wait_for(Duration::from_secs(20), || {
        let mut last: BTreeMap<String, String> = BTreeMap::new();
        for f in std::fs::read_dir(r.join("m")).ok()?.flatten() {
            for l in std::fs::read_to_string(f.path()).ok()?.lines() {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                let t = v["table_name"].as_str()?.to_string();
                last.insert(t, norm(l));
            }
        }
        let done = last
            .get("replay")
            .is_some_and(|l| l.contains("\"round\":\"2\""));
        done.then(|| last.into_values().map(|l| l + "\n").collect::<String>())
    })
    .unwrap_or_else(|| panic!("metric JSON lines not written; log:\n{}", d.log()));
    let sorted = |text: String| {
        let mut lines: Vec<String> = text.lines().map(|l| norm(l) + "\n").collect();
        lines.sort();
        lines.dedup();
        lines.concat()
    };
    Outputs {
        metrics: norm(&probe_part(&scrape)),
        metadata: sorted(std::fs::read_to_string(&meta_file).unwrap()),
        events: sorted(std::fs::read_to_string(&event_file).unwrap()),
        metric_json,
    }
}

/// Replace what differs per run: the replaying process's pid, its directory (in `cmdline`), its
/// start time, and timestamps.
fn normalize(s: &str, pid: &str, dir: &str) -> String {
    let s = s.replace(dir, "DIR");
    let mut out = String::with_capacity(s.len());
    let mut rest = s.as_str();
    // Numbers after these prefixes vary per run.
    const VARYING: &[&str] = &[
        "start_time=\"",
        "\"start_time\":\"",
        "\"timestamp\": ",
        "\"timestamp\":",
        "\"Timestamp\": ",
        "\"Timestamp\":",
        "\"event_id\": \"",
        "\"event_id\":\"",
    ];
    'outer: while !rest.is_empty() {
        for p in VARYING {
            if let Some(after) = rest.strip_prefix(p) {
                let digits = after.bytes().take_while(u8::is_ascii_digit).count();
                out.push_str(p);
                out.push_str(if digits > 0 { "0" } else { "" });
                rest = &after[digits..];
                continue 'outer;
            }
        }
        let c = rest.chars().next().unwrap_or_default();
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    // The pid as a whole word only, where a pid stands (a `*id` label or key, an entity id, a
    // message): never a sample value, which may be the same number.
    const BEFORE: &[&str] = &["id=\"", "id\":\"", "id\": \"", "ID\": \"", "(", "_", "/"];
    let mut fin = String::with_capacity(out.len());
    let b = out.as_bytes();
    let mut i = 0;
    while i < out.len() {
        if out[i..].starts_with(pid)
            && BEFORE.iter().any(|p| out[..i].ends_with(p))
            && b.get(i + pid.len()).is_none_or(|c| !c.is_ascii_digit())
        {
            fin.push_str("PID");
            i += pid.len();
        } else {
            let c = out[i..].chars().next().unwrap_or_default();
            fin.push(c);
            i += c.len_utf8();
        }
    }
    fin
}

fn golden(name: &str, actual: &str) {
    let path = workspace().join("framework/tests/golden/aops").join(name);
    if std::env::var_os("GG_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (GG_BLESS=1 writes it)", path.display()));
    if expected != actual {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .filter(|(a, b)| a != b)
            .take(8)
            .map(|(a, b)| format!("- {a}\n+ {b}"))
            .collect();
        panic!(
            "{} differs (expected {} lines, got {}); first differences:\n{}\n\
             (GG_BLESS=1 rewrites the file: review the diff, it is the A-Ops contract)",
            path.display(),
            expected.lines().count(),
            actual.lines().count(),
            diff.join("\n")
        );
    }
}

/// Series of `scrape`: (metric name, labels) for every sample line.
fn series(scrape: &str) -> Vec<(String, BTreeMap<String, String>)> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, rest) = l.split_once('{')?;
            let (labels, _) = rest.rsplit_once('}')?;
            let mut m = BTreeMap::new();
            for part in labels.split("\",") {
                let (k, v) = part.split_once("=\"")?;
                m.insert(k.to_string(), v.trim_end_matches('"').to_string());
            }
            Some((name.to_string(), m))
        })
        .collect()
}

/// gala-spider's view of the metadata: entity → (keys, labels, version), checked like its
/// `check_meta` (same keys, in order, for every table of an entity at one version).
fn spider_entities(metadata: &str) -> BTreeMap<String, (Vec<String>, BTreeSet<String>, String)> {
    let mut out: BTreeMap<String, (Vec<String>, BTreeSet<String>, String)> = BTreeMap::new();
    for l in metadata.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let list = |k: &str| -> Vec<String> {
            v[k].as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        };
        let entity = v["entity_name"].as_str().unwrap().to_string();
        let version = v["version"].as_str().unwrap().to_string();
        let keys = list("keys");
        let labels: BTreeSet<String> = list("labels").into_iter().collect();
        match out.get_mut(&entity) {
            None => {
                out.insert(entity, (keys, labels, version));
            }
            Some((k0, l0, v0)) => {
                assert_eq!(
                    (&*k0, &*v0),
                    (&keys, &version),
                    "entity {entity}: table {} has other keys or version than its first table \
                     (spider drops the entity type)",
                    v["meta_name"]
                );
                l0.extend(labels);
            }
        }
    }
    out
}

fn check_consumer_rules(mode: &str, tables: &[(String, Vec<TableSchema>)], o: &Outputs) {
    let entities = spider_entities(&o.metadata);
    // HEAD's tcp_link layout (mixed fleets merge with upstream HEAD hosts).
    let (keys, _, version) = &entities["tcp_link"];
    assert_eq!(
        keys,
        &[
            "machine_id",
            "tgid",
            "comm",
            "role",
            "client_ip",
            "toa_client_ip",
            "server_ip",
            "client_port",
            "server_port",
            "protocol"
        ]
    );
    assert!(version.as_str() >= "1.0.0");
    // Process and container identity where spider looks for it.
    let (_, proc_labels, _) = &entities["proc"];
    for l in [
        "comm",
        "cmdline",
        "start_time",
        "container_id",
        "container_name",
        "container_image",
        "pod_id",
        "pod",
        "pod_namespace",
    ] {
        assert!(proc_labels.contains(l), "proc metadata lacks label {l}");
    }
    let (keys, con_labels, _) = &entities["container"];
    assert_eq!(keys, &["machine_id", "container_id"]);
    assert!(con_labels.contains("pod_id"));
    for l in o.metadata.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let has_tgid = v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .chain(v["labels"].as_array().unwrap())
            .any(|k| k == "tgid");
        if has_tgid {
            let labels = v["labels"].to_string();
            for want in ["\"comm\"", "\"container_id\"", "\"pod\""] {
                assert!(
                    labels.contains(want) || v["keys"].to_string().contains(want),
                    "{} lacks {want}: {l}",
                    v["meta_name"]
                );
            }
        }
    }
    // Every series carries its entity's keys (spider's get_entity_keys_of_metric), and the proc
    // series have their identity labels.
    for (name, labels) in series(&o.metrics) {
        let Some(rest) = name.strip_prefix("gala_gopher_") else {
            continue;
        };
        let Some((entity, (keys, _, _))) = entities
            .iter()
            .filter(|(e, _)| rest.starts_with(&format!("{e}_")))
            .max_by_key(|(e, _)| e.len())
        else {
            continue;
        };
        for k in keys {
            assert!(labels.contains_key(k), "{name} lacks key {k} of {entity}");
        }
        if entity == "proc" {
            for k in ["comm", "cmdline", "start_time"] {
                assert!(labels.contains_key(k), "{name} lacks {k}: {labels:?}");
            }
            assert!(
                !labels.contains_key("container_id"),
                "a host process has no container_id (spider: proc runs_on host)"
            );
        }
    }
    // One name, one type; per-period fields are gauges of the change (upstream) or `_total`
    // counters of the running total (prometheus).
    let mut types: BTreeMap<&str, &str> = BTreeMap::new();
    for l in o.metrics.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut it = l["# TYPE ".len()..].split(' ');
        let (n, t) = (it.next().unwrap(), it.next().unwrap());
        assert!(
            types.insert(n, t).is_none_or(|old| old == t),
            "{n}: two types"
        );
    }
    let limits = meta::MetaLimits {
        counter_mode: if mode == "prometheus" {
            meta::CounterMode::Prometheus
        } else {
            meta::CounterMode::Upstream
        },
        ..meta::MetaLimits::default()
    };
    let mut per_period = 0;
    for (m, _) in tables {
        for t in meta::load_file_with(&workspace().join(m), &limits).unwrap() {
            for (i, f) in t.fields.iter().enumerate().filter(|(_, f)| f.per_period) {
                per_period += 1;
                let family = format!("gala_gopher_{}_{}", t.entity_name, f.name);
                let (want_type, want_value) = if mode == "prometheus" {
                    assert!(f.name.ends_with("_total"), "{family}");
                    let total = 1000 * (i as u64 + 1) + 10 * (i as u64 + 1);
                    let value = match f.derive {
                        meta::Derive::Scale(s) => total as f64 * s,
                        _ => total as f64,
                    };
                    ("counter", value)
                } else {
                    ("gauge", 10.0 * (i as f64 + 1.0))
                };
                assert_eq!(
                    types.get(family.as_str()).copied(),
                    Some(want_type),
                    "{family}"
                );
                let sample = o
                    .metrics
                    .lines()
                    .find(|l| l.starts_with(&format!("{family}{{")))
                    .unwrap_or_else(|| panic!("no sample of {family}"));
                let v: f64 = sample.rsplit(' ').next().unwrap().parse().unwrap();
                assert!(
                    (v - want_value).abs() <= want_value * 1e-9,
                    "{family}: {v}, expected {want_value} ({mode} mode)"
                );
            }
        }
    }
    assert!(
        per_period > 10,
        "the shipped probes declare per-period fields"
    );
    let (code, report) = promtool_check(&o.metrics);
    // Exit 3 is lint findings only, one line per metric; a metric name may say "error".
    let errors = report
        .lines()
        .any(|l| l.contains("error") && !l.starts_with("gala_gopher_"));
    assert!(
        matches!(code, Some(0 | 3)) && !errors,
        "promtool ({mode}): {code:?} {report}"
    );
}

#[test]
fn shipped_probe_output_means_what_upstream_meant_in_both_counter_modes() {
    let tables = shipped_tables();
    golden("records_round1.txt", &records(&tables, 1));
    golden("records_round2.txt", &records(&tables, 2));
    for mode in ["upstream", "prometheus"] {
        let o = run(mode, &tables);
        golden(&format!("metrics_{mode}.prom"), &o.metrics);
        golden(&format!("metric_json_{mode}.jsonl"), &o.metric_json);
        golden(&format!("metadata_{mode}.jsonl"), &o.metadata);
        if mode == "upstream" {
            golden("events.jsonl", &o.events);
        }
        check_consumer_rules(mode, &tables, &o);
    }
}
