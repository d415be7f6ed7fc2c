//! PostgreSQL through a real PostgreSQL 15 server (Debian package postgresql) driven by
//! pgbench -i (DDL, VACUUM, ...), psql (simple protocol, COPY both ways, a transaction) and
//! pgbench -M prepared (extended protocol), on loopback: the statements per verb are exact on
//! both ends (the server's backends, one process per connection, summed by server port) and
//! equal what the server logged (log_statement=all), an error is counted on its verb and
//! blamed on the request (SQLSTATE 42P01), and nothing is misparsed.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use common::*;

const BIN: &str = "/usr/lib/postgresql/15/bin";
/// Transactions of the prepared-statement pgbench run (one SELECT each).
const N: u64 = 200;

/// A PostgreSQL program, or a failure naming the package.
fn pg(program: &str) -> String {
    let p = Path::new(BIN).join(program);
    assert!(
        p.is_file(),
        "{} not found: install the Debian package postgresql (./build.sh --check does)",
        p.display()
    );
    p.display().to_string()
}

/// The uid and gid of user `name` (from /etc/passwd).
fn user(name: &str) -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[0] == name).then(|| (f[2].parse().unwrap(), f[3].parse().unwrap()))
        })
        .unwrap_or_else(|| panic!("no user {name}: install the Debian package postgresql"))
}

/// A postgres (postmaster) on 127.0.0.1:`port`, trust authentication, its data and unix
/// socket in a temp dir; stopped (immediate shutdown) when dropped.
struct Postgres {
    postmaster: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Postgres {
    /// The server's log (every statement: `log_statement=all`).
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap()
    }
}

/// What the server logged in `log`: per verb (upper-cased first word of the statement), the
/// statements run (simple queries, and executions of the extended protocol), and the errors
/// (all counted on the verb of the statement logged last).
fn logged(log: &str) -> BTreeMap<String, Counts> {
    let mut out: BTreeMap<String, Counts> = BTreeMap::new();
    let mut verb = String::new();
    for line in log.lines() {
        let stmt = if let Some((_, s)) = line.split_once("LOG:  statement: ") {
            s
        } else if let Some((_, s)) = line.split_once("LOG:  execute ") {
            s.split_once(": ").map_or("", |x| x.1)
        } else {
            if line.contains("ERROR:  ") {
                let c = out.entry(verb.clone()).or_default();
                c.2 += 1;
                c.3 += 1; // all of this test's errors are the client's (SQLSTATE class 42)
            }
            continue;
        };
        verb = stmt
            .trim_start()
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .next()
            .unwrap()
            .to_ascii_uppercase();
        let c = out.entry(verb.clone()).or_default();
        c.0 += 1;
        c.1 += 1;
        c.5 += 1;
    }
    out
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-QUIT", &self.postmaster.id().to_string()])
            .status();
        let _ = self.postmaster.wait();
    }
}

fn postgres() -> Postgres {
    let (uid, gid) = user("postgres");
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
    let data = dir.path().join("data");
    let out = Command::new(pg("initdb"))
        .arg("-D")
        .arg(&data)
        .args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "--no-instructions",
        ])
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap();
    assert!(out.status.success(), "initdb: {out:?}");
    let port = free_port();
    let log = dir.path().join("log");
    let postmaster = Command::new(pg("postgres"))
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
        .arg("-k")
        .arg(dir.path())
        .args(["-c", "fsync=off", "-c", "logging_collector=off"])
        .args(["-c", "log_statement=all", "-c", "log_line_prefix=%p "])
        .uid(uid)
        .gid(gid)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pg = Postgres {
        postmaster,
        dir,
        port,
    };
    wait_port(port);
    pg
}

/// Runs psql over TCP with `script` on stdin; returns its pid and stderr.
fn psql(port: u16, script: &str) -> (u32, String) {
    let mut child = Command::new(pg("psql"))
        .args(["-X", "-q", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-U", "postgres", "-d", "postgres", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "psql: {out:?}");
    (pid, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Runs pgbench with `args` over TCP; returns its pid.
fn pgbench(port: u16, args: &[&str]) -> u32 {
    let child = Command::new(pg("pgbench"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args(args)
        .arg("postgres")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "pgbench {args:?}: {out:?}");
    pid
}

/// Latest l7_rpc_api row of every key (running totals) that `pick` selects.
fn api_rows(records: &[Vec<String>], pick: impl Fn(&[String]) -> bool) -> Vec<&Vec<String>> {
    let mut latest: HashMap<&[String], &Vec<String>> = HashMap::new();
    for r in records.iter().filter(|r| r[0] == "l7_rpc_api" && pick(r)) {
        latest.insert(&r[1..=KEYS + 1], r);
    }
    latest.into_values().collect()
}

/// Per api: (requests, responses, errors, client errors, server errors, histogram count).
type Counts = (u64, u64, u64, u64, u64, u64);

fn per_api(rows: &[&Vec<String>]) -> BTreeMap<String, Counts> {
    let mut out: BTreeMap<String, Counts> = BTreeMap::new();
    for r in rows {
        let c = out.entry(field(r, "api")).or_default();
        c.0 += num(r, "req_count");
        c.1 += num(r, "resp_count");
        c.2 += num(r, "err_count");
        c.3 += num(r, "client_err_count");
        c.4 += num(r, "server_err_count");
        c.5 += latency_count(r);
    }
    out
}

/// The count of a row's latency histogram (empty when the row has no response).
fn latency_count(r: &[String]) -> u64 {
    let h = field(r, "latency");
    if h.is_empty() {
        0
    } else {
        hist_count(&h)
    }
}

/// `n` requests answered without error.
fn ok(n: u64) -> Counts {
    (n, n, 0, 0, 0, n)
}

/// Adds `b`'s counts to `a`'s.
fn add(a: &mut BTreeMap<String, Counts>, b: &BTreeMap<String, Counts>) {
    for (api, c) in b {
        let s = a.entry(api.clone()).or_default();
        *s = (
            s.0 + c.0,
            s.1 + c.1,
            s.2 + c.2,
            s.3 + c.3,
            s.4 + c.4,
            s.5 + c.5,
        );
    }
}

/// The client rows of process `pid`, per api.
fn client_rows(records: &[Vec<String>], pid: u32, port: &str) -> BTreeMap<String, Counts> {
    let rows = api_rows(records, |r| r[1] == pid.to_string());
    for r in &rows {
        assert_eq!(field(r, "l7_role"), "client", "{r:?}");
        assert_eq!(field(r, "protocol"), "pgsql", "{r:?}");
        assert_eq!(field(r, "server_port"), port, "{r:?}");
    }
    per_api(&rows)
}

#[test]
fn psql_and_pgbench_statements_per_verb_are_exact() {
    let db = postgres();
    let port = db.port.to_string();
    let probe = Probe::start(&["-t", "1"], None);
    // Calls larger than the 1024 bytes captured: many small CopyData or DataRow messages in
    // one call, whose heads are in the gap. The stream loses its place and finds it again
    // from the other direction (a response ends a lost request; the next request ends lost
    // responses): pgbench -i with client-side data generation (COPY pgbench_accounts FROM
    // STDIN, 100 000 rows in 8 kB writes), a psql SELECT of 1000 rows.
    const WHOLE_CALLS: bool = true;
    let mut offsets = vec![db.log().len()];

    // pgbench -i: DDL, a transaction, data generated by the server (INSERT ... SELECT) or
    // sent by pgbench (COPY FROM STDIN), VACUUM, primary keys.
    let steps = if WHOLE_CALLS { "dtgvp" } else { "dtGvp" };
    let init_pid = pgbench(db.port, &["-i", "-q", "-I", steps]);
    offsets.push(db.log().len());

    // psql: one simple Query per statement (two statements in the one of `\;`), a COPY in
    // each direction, one statement failing (42P01).
    let mut script = "CREATE TABLE t (a int);\n\
        INSERT INTO t VALUES (1);\n\
        INSERT INTO t VALUES (2);\n\
        INSERT INTO t VALUES (3);\n\
        SELECT * FROM t;\n\
        select a from t where a > 1;\n\
        UPDATE t SET a = 4 WHERE a = 1;\n\
        DELETE FROM t WHERE a = 2;\n\
        BEGIN;\n\
        COPY t FROM STDIN;\n5\n6\n\\.\n\
        COPY t TO STDOUT;\n\
        COMMIT;\n\
        SELECT 1 \\; SELECT 2;\n\
        SELECT * FROM missing_table;\n\
        DROP TABLE t;\n"
        .to_string();
    // A result of 1000 rows (about 100 kB), read by psql in calls of up to 16 kB.
    if WHOLE_CALLS {
        script.push_str("SELECT * FROM pgbench_accounts WHERE aid <= 1000;\n");
    }
    let (psql_pid, err) = psql(db.port, &script);
    assert!(err.contains("missing_table"), "{err}");
    offsets.push(db.log().len());

    // pgbench: N prepared SELECTs (Parse once, then Bind/Execute/Sync per transaction).
    let bench_pid = pgbench(
        db.port,
        &["-n", "-S", "-M", "prepared", "-t", &N.to_string()],
    );
    offsets.push(db.log().len());

    thread::sleep(Duration::from_millis(300));
    let records = probe.records_for(2);
    let log = db.log();
    let segment = |i: usize| logged(&log[offsets[i]..offsets[i + 1]]);

    // pgbench -i: what the server logged.
    let init = segment(0);
    assert!(init.contains_key("COPY") == WHOLE_CALLS, "{init:?}");
    assert_eq!(
        client_rows(&records, init_pid, &port),
        init,
        "pgbench -i {init_pid}"
    );

    // psql: what it was given, as the server logged it too.
    let mut psql_expected: BTreeMap<String, Counts> = [
        ("CREATE", ok(1)),
        ("INSERT", ok(3)),
        ("SELECT", (4, 4, 1, 1, 0, 4)),
        ("UPDATE", ok(1)),
        ("DELETE", ok(1)),
        ("BEGIN", ok(1)),
        ("COPY", ok(2)),
        ("COMMIT", ok(1)),
        ("DROP", ok(1)),
    ]
    .into_iter()
    .map(|(a, c)| (a.to_string(), c))
    .collect();
    if WHOLE_CALLS {
        add(&mut psql_expected, &[("SELECT".to_string(), ok(1))].into());
    }
    assert_eq!(segment(1), psql_expected, "the server's log");
    assert_eq!(
        client_rows(&records, psql_pid, &port),
        psql_expected,
        "psql {psql_pid}"
    );

    // pgbench: its setup connection asks two SELECTs (the table layout, the scale), its
    // client connection prepares once (a Parse/Sync without Execute: no verb, not logged)
    // then runs N prepared SELECTs.
    let mut bench_expected = segment(2);
    assert_eq!(
        bench_expected.get("SELECT"),
        Some(&ok(N + 2)),
        "{bench_expected:?}"
    );
    add(
        &mut bench_expected,
        &[("unknown".to_string(), ok(1))].into(),
    );
    assert_eq!(
        client_rows(&records, bench_pid, &port),
        bench_expected,
        "pgbench {bench_pid}"
    );

    // The server end: one backend process per connection, summed over the backends.
    let rows = api_rows(&records, |r| {
        r[4] == port && r[6] == "server" && r[7] == "pgsql"
    });
    let mut server_expected = init.clone();
    add(&mut server_expected, &psql_expected);
    add(&mut server_expected, &bench_expected);
    assert_eq!(per_api(&rows), server_expected, "server rows: {rows:?}");
    let backends: std::collections::BTreeSet<&String> = rows.iter().map(|r| &r[1]).collect();
    assert_eq!(backends.len(), 4, "one backend per connection: {rows:?}");
    assert!(
        !backends.contains(&db.postmaster.id().to_string()),
        "the postmaster does not answer queries: {rows:?}"
    );
    for r in &rows {
        assert_eq!(field(r, "comm"), "postgres", "{r:?}");
        assert_eq!(field(r, "l4_role"), "tcp_server", "{r:?}");
    }

    // Nothing was misparsed (the counters are the whole host's: other traffic traced at the
    // same time would show here too). The large replies lost their place (their heads were
    // not captured) and found it again at the next request: no request was abandoned.
    let stats = last(&records, "l7_parse_stats", |_| true).unwrap();
    for f in [
        "malformed",
        "too_long",
        "unmatched_response",
        "pending_abandoned",
        "bad_records",
    ] {
        assert_eq!(num(stats, f), 0, "{f}: {stats:?}");
    }
    // The 1000-row result (both ends) and the COPY data (both ends).
    assert!(num(stats, "desynchronised") >= 2, "{stats:?}");
    assert!(num(stats, "unparsed_responses") >= 2, "{stats:?}");
    let loss = last(&records, "l7probe_bpf_stats", |_| true).unwrap();
    assert_eq!(field(loss, "lost_events"), "0", "{loss:?}");
}
