//! Kafka sink against a real Kafka-protocol broker (Tansu) and a real client (kafka-python):
//! the three topics byte for byte (golden files), and a 30 s broker outage.

mod daemon_support;
mod export_support;

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use daemon_support::*;
use export_support::*;

fn kafka_conf(broker: &str, extra: &str) -> String {
    format!(
        "kafka = {{ kafka_broker = \"{broker}\"; queue_buffering_max_ms = 5; {extra} }};\n\
         metric = {{ out_channel = [\"web_server\", \"kafka\"]; kafka_topic = \"gg_metric\"; }};\n"
    )
}

/// The fixture probe's records, events and metadata arrive on their topics in the upstream
/// JSON shapes (compared, time-normalized and sorted, with the golden files).
#[test]
fn three_topics_match_golden() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(free_port(), &tmp.path().join("tansu.log"));
    let conf = format!(
        "{}event = {{ out_channel = \"kafka\"; kafka_topic = \"gg_event\"; }};\n\
         meta = {{ out_channel = \"kafka\"; kafka_topic = \"gg_meta\"; }};\n",
        kafka_conf(&broker.bootstrap(), "")
    );
    let d = Daemon::start(60, &conf, |p| {
        install_fixture(p, "fx", &["fx.sh", "fx.meta"]);
    });
    d.wait_scrape("gala_gopher_fx_g", Duration::from_secs(20));
    // 5 records, 2 events (1 suppressed by the dedup window), 2 tables.
    let want = [
        ("gg_metric", "metric", 5),
        ("gg_event", "event", 2),
        ("gg_meta", "meta", 2),
    ];
    let delivered = wait_for(Duration::from_secs(30), || {
        let s = d.scrape();
        want.iter()
            .all(|(_, stream, n)| {
                self_sample(
                    &s,
                    "gala_gopher_self_sink_sent_total",
                    &["sink=\"kafka\"", &format!("stream=\"{stream}\"")],
                ) == Some(*n as f64)
            })
            .then_some(())
    });
    assert!(
        delivered.is_some(),
        "not delivered; scrape:\n{}\nlog:\n{}",
        d.scrape(),
        d.log()
    );
    for (topic, _, n) in want {
        let lines = consume(&broker.bootstrap(), topic, n, Duration::from_secs(60));
        assert_eq!(lines.len(), n, "{topic}: {lines:#?}");
        for l in &lines {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("{topic}: invalid JSON {l}: {e}"));
        }
        assert_golden(&format!("{topic}.jsonl"), &lines);
    }
    let st = d.status();
    let k = &st["sinks"][0];
    assert_eq!(k["name"], "kafka");
    assert_eq!(k["streams"]["metric"]["sent"], 5);
    assert_eq!(k["streams"]["event"]["sent"], 2);
    assert_eq!(k["streams"]["meta"]["dropped"], 0);
    let s = d.scrape();
    assert_eq!(
        self_sample(
            &s,
            "gala_gopher_self_events_total",
            &["outcome=\"deduplicated\""]
        ),
        Some(1.0)
    );
    for stream in ["metric", "event", "meta"] {
        let lbl = format!("stream=\"{stream}\"");
        for m in ["failed_total", "dropped_total"] {
            assert_eq!(
                self_sample(
                    &s,
                    &format!("gala_gopher_self_sink_{m}"),
                    &["sink=\"kafka\"", &lbl]
                ),
                Some(0.0),
                "{m} {stream}"
            );
        }
    }
}

fn seq_numbers(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["n"].as_str().unwrap().parse().unwrap()
        })
        .collect()
}

/// Wait for the probe to pause and report how many records it printed.
fn pause_probe(probes: &std::path::Path) -> u64 {
    let _ = std::fs::remove_file(probes.join("count"));
    std::fs::write(probes.join("pause"), b"").unwrap();
    let n = wait_for(Duration::from_secs(10), || {
        std::fs::read_to_string(probes.join("count")).ok()
    })
    .expect("probe paused");
    n.trim().parse().unwrap()
}

/// Stops a process (SIGSTOP) until dropped (SIGCONT).
struct Frozen(Pid);

impl Frozen {
    fn new(pid: i32) -> Frozen {
        let pid = Pid::from_raw(pid);
        kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
        // kill(2) only queues the signal: wait until every thread is stopped.
        let task = format!("/proc/{pid}/task");
        let stopped = wait_for(Duration::from_secs(10), || {
            std::fs::read_dir(&task)
                .ok()?
                .all(|t| {
                    t.ok()
                        .and_then(|t| std::fs::read_to_string(t.path().join("stat")).ok())
                        .and_then(|st| st.rsplit_once(") ").map(|(_, rest)| rest.starts_with('T')))
                        .unwrap_or(true)
                })
                .then_some(())
        });
        assert!(stopped.is_some(), "pid {pid} did not stop");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

fn metric_counter(d: &Daemon, name: &str) -> f64 {
    self_sample(
        &d.scrape(),
        &format!("gala_gopher_self_sink_{name}"),
        &["sink=\"kafka\"", "stream=\"metric\""],
    )
    .unwrap_or(-1.0)
}

/// Stop the broker for 30 s while the probe keeps writing: the daemon keeps ingesting and
/// serving, every record produced while the queues had room arrives once the broker is back,
/// and exactly the rest is counted as dropped.
#[test]
fn broker_outage_loses_only_counted_records() {
    let tmp = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(free_port(), &tmp.path().join("tansu.log"));
    // Small queues so that 30 s at ~1000 records/s overflow them.
    const QUEUE_SIZE: u64 = 2000;
    let conf = format!(
        "{}event = {{ out_channel = \"\"; }};\nmeta = {{ out_channel = \"\"; }};\n",
        kafka_conf(
            &broker.bootstrap(),
            &format!("queue_size = {QUEUE_SIZE}; queue_buffering_max_messages = 1000;")
        )
    );
    let d = Daemon::start(60, &conf, |p| {
        install_fixture(p, "seq", &["seqprobe.py", "seqprobe.meta"]);
    });
    let probes = d.probes_dir();
    d.wait_scrape("gala_gopher_seq_n", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));

    // Phase 1: broker up. Pause, let everything be acknowledged, read it back.
    let before = pause_probe(&probes);
    assert!(before > 0);
    assert!(
        wait_for(Duration::from_secs(30), || {
            (metric_counter(&d, "sent_total") == before as f64).then_some(())
        })
        .is_some(),
        "phase 1 not delivered: sent {} of {before}",
        metric_counter(&d, "sent_total")
    );
    let first = seq_numbers(&consume(
        &broker.bootstrap(),
        "gg_metric",
        before as usize,
        Duration::from_secs(60),
    ));
    assert_eq!(first.len() as u64, before);
    let partitions = broker
        .partitions("gg_metric")
        .expect("the broker has gg_metric");

    // Phase 2: broker gone for 30 s while the probe writes.
    broker.stop();
    std::fs::remove_file(probes.join("pause")).unwrap();
    let records = |d: &Daemon| {
        self_sample(
            &d.scrape(),
            "gala_gopher_self_probe_records_total",
            &["probe=\"seqprobe\""],
        )
        .unwrap()
    };
    let r0 = records(&d);
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(30) {
        // Scrapes keep being answered (a 10 s read timeout would fail the call).
        let _ = d.scrape();
        std::thread::sleep(Duration::from_secs(1));
    }
    let r1 = records(&d);
    assert!(
        r1 - r0 > 15_000.0,
        "ingest stalled during the outage: {r0} -> {r1}"
    );
    let total = pause_probe(&probes);
    assert_eq!(records(&d), total as f64, "every line was ingested");

    // Phase 3: broker back (empty storage). Everything is either delivered or dropped.
    //
    // Tansu acknowledges produce requests for a topic it does not have and stores nothing
    // (Kafka answers UNKNOWN_TOPIC_OR_PARTITION, and librdkafka then re-reads the metadata,
    // which auto-creates the topic). librdkafka keeps the topic's metadata across the outage
    // and skips its on-connect metadata request while that is cached, so whether the new
    // broker first sees a metadata request (auto-creating gg_metric) or the leader
    // connection's produce requests (acked into nowhere: counted as sent, never readable)
    // depends on librdkafka's randomized reconnect backoff. The daemon is therefore frozen
    // while the broker restarts and gets the topic back, as a Kafka cluster would still have
    // it after a broker restart.
    {
        let _frozen = Frozen::new(d.pid());
        broker.restart();
        broker.create_topic("gg_metric", partitions);
    }
    let settled = wait_for(Duration::from_secs(120), || {
        let sent = metric_counter(&d, "sent_total");
        let dropped = metric_counter(&d, "dropped_total");
        let failed = metric_counter(&d, "failed_total");
        (sent + dropped + failed == total as f64).then_some((sent, dropped, failed))
    });
    let (sent, dropped, failed) = settled.unwrap_or_else(|| {
        panic!(
            "not settled: total {total}, sent {}, dropped {}, failed {}\nlog:\n{}",
            metric_counter(&d, "sent_total"),
            metric_counter(&d, "dropped_total"),
            metric_counter(&d, "failed_total"),
            d.log()
        )
    });
    eprintln!("outage: produced {total}, before {before}, sent {sent}, dropped {dropped}");
    assert_eq!(failed, 0.0);
    assert!(dropped > 0.0, "the outage should overflow the queues");
    let second = seq_numbers(&consume(
        &broker.bootstrap(),
        "gg_metric",
        (sent as u64 - before) as usize,
        Duration::from_secs(60),
    ));
    let mut all: Vec<u64> = first.iter().chain(&second).copied().collect();
    let received = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), received, "no record arrived twice");
    assert_eq!(
        received as f64, sent,
        "the broker has what the sink reported sent"
    );
    assert_eq!(
        received as u64 + dropped as u64,
        total,
        "records neither received nor counted as dropped"
    );
    assert!(all.iter().all(|n| *n < total));
    // Drop-oldest: the records lost are older than the ones that survived the outage.
    let missing: Vec<u64> = (0..total)
        .filter(|n| all.binary_search(n).is_err())
        .collect();
    let newest_lost = *missing.last().unwrap();
    assert!(
        newest_lost < total - QUEUE_SIZE,
        "the newest {QUEUE_SIZE} records (the sink queue's content) all arrived; \
         newest lost {newest_lost} of {total}"
    );
}
