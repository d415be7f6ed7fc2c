//! MySQL protocol through a real MariaDB 10.11 server (Debian package mariadb-server) driven
//! by the mariadb client (text protocol, COM_QUERY) and by a minimal client in this test for
//! prepared statements (COM_STMT_PREPARE / COM_STMT_EXECUTE, binary protocol: no Debian
//! client of the installed packages uses it; with and without CLIENT_DEPRECATE_EOF) and by
//! mariadb-admin (COM_PING), on loopback: the statements per verb are exact on both ends (a
//! multi-statement query with two result sets is one), ERR packets (of a query, of a
//! prepare) are counted on their verb, and nothing is misparsed.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use common::*;

/// A mariadbd on 127.0.0.1:`port` (grant tables skipped: any user, no password), its data
/// and unix socket in a temp dir.
struct Mariadb {
    server: Server,
    _dir: tempfile::TempDir,
    port: u16,
}

fn mariadb() -> Mariadb {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let out = Command::new(need("mariadb-install-db", "mariadb-server"))
        .args([
            "--no-defaults",
            &format!("--datadir={d}/data"),
            "--user=root",
        ])
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
        .output()
        .unwrap();
    assert!(out.status.success(), "mariadb-install-db: {out:?}");
    let port = free_port();
    let child = Command::new(need("mariadbd", "mariadb-server"))
        .args([
            "--no-defaults",
            "--user=root",
            &format!("--datadir={d}/data"),
        ])
        .args([&format!("--socket={d}/s"), &format!("--port={port}")])
        .args([
            "--bind-address=127.0.0.1",
            "--skip-grant-tables",
            "--skip-log-bin",
        ])
        .args([
            &format!("--pid-file={d}/pid"),
            &format!("--log-error={d}/err"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    wait_port(port);
    Mariadb {
        server,
        _dir: dir,
        port,
    }
}

/// Runs the mariadb client over TCP with `sql` (statements sent one by one, going on after
/// an error); returns its pid and stderr.
fn client(port: u16, sql: &str) -> (u32, String) {
    let child = Command::new(need("mariadb", "mariadb-server"))
        .args(["--no-defaults", "-h", "127.0.0.1", "-P", &port.to_string()])
        .args(["-u", "root", "--force", "-e", sql])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    (pid, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A minimal client of the binary protocol: handshake with an empty password, then
/// prepared statements.
struct Raw {
    s: TcpStream,
    /// CLIENT_DEPRECATE_EOF: no EOF after definitions, an OK (0xFE) ends the rows.
    deprecate_eof: bool,
}

impl Raw {
    fn read(&mut self) -> Vec<u8> {
        let mut head = [0u8; 4];
        self.s.read_exact(&mut head).unwrap();
        let len = u32::from_le_bytes([head[0], head[1], head[2], 0]) as usize;
        let mut payload = vec![0u8; len];
        self.s.read_exact(&mut payload).unwrap();
        payload
    }

    fn write(&mut self, seq: u8, payload: &[u8]) {
        let len = (payload.len() as u32).to_le_bytes();
        let mut p = vec![len[0], len[1], len[2], seq];
        p.extend_from_slice(payload);
        self.s.write_all(&p).unwrap();
    }

    /// An OK, or the ERR's message.
    fn ok(&mut self) {
        let p = self.read();
        assert_eq!(p[0], 0, "not an OK: {}", String::from_utf8_lossy(&p));
    }

    /// `n` definitions (and their EOF unless DEPRECATE_EOF).
    fn definitions(&mut self, n: u16) {
        for _ in 0..n {
            self.read();
        }
        if n > 0 && !self.deprecate_eof {
            let eof = self.read();
            assert_eq!((eof[0], eof.len() < 9), (0xfe, true), "not an EOF");
        }
    }

    /// Binary rows up to their EOF (or OK with header 0xFE under DEPRECATE_EOF).
    fn rows(&mut self) {
        loop {
            let p = self.read();
            assert_ne!(p[0], 0xff, "ERR: {}", String::from_utf8_lossy(&p));
            if p[0] == 0xfe {
                return;
            }
        }
    }

    fn connect(port: u16, deprecate_eof: bool) -> Raw {
        let mut r = Raw {
            s: TcpStream::connect(("127.0.0.1", port)).unwrap(),
            deprecate_eof,
        };
        r.s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let greeting = r.read();
        assert_eq!(greeting[0], 10, "protocol 10 handshake");
        // LONG_PASSWORD, PROTOCOL_41, TRANSACTIONS, SECURE_CONNECTION, PLUGIN_AUTH, and
        // maybe DEPRECATE_EOF.
        let caps: u32 =
            1 | 0x200 | 0x2000 | 0x8000 | 0x8_0000 | if deprecate_eof { 1 << 24 } else { 0 };
        let mut p = caps.to_le_bytes().to_vec();
        p.extend_from_slice(&(1u32 << 24).to_le_bytes());
        p.push(33); // utf8_general_ci
        p.extend_from_slice(&[0; 23]);
        p.extend_from_slice(b"root\0");
        p.push(0); // empty auth response
        p.extend_from_slice(b"mysql_native_password\0");
        r.write(1, &p);
        let reply = r.read();
        if reply[0] == 0xfe {
            // AuthSwitchRequest: the empty password again.
            r.write(3, b"");
            r.ok();
        } else {
            assert_eq!(reply[0], 0, "login: {}", String::from_utf8_lossy(&reply));
        }
        r
    }

    /// COM_STMT_PREPARE: the statement id and its parameter count, or the ERR's code.
    fn prepare(&mut self, sql: &str) -> Result<(u32, u16), u16> {
        let mut p = vec![0x16];
        p.extend_from_slice(sql.as_bytes());
        self.write(0, &p);
        let ok = self.read();
        if ok[0] == 0xff {
            return Err(u16::from_le_bytes([ok[1], ok[2]]));
        }
        assert_eq!(ok[0], 0, "prepare: {}", String::from_utf8_lossy(&ok));
        let id = u32::from_le_bytes(ok[1..5].try_into().unwrap());
        let columns = u16::from_le_bytes(ok[5..7].try_into().unwrap());
        let params = u16::from_le_bytes(ok[7..9].try_into().unwrap());
        self.definitions(params);
        self.definitions(columns);
        Ok((id, params))
    }

    /// COM_STMT_EXECUTE with one BIGINT parameter; reads its OK or its binary result set.
    fn execute(&mut self, id: u32, value: i64) {
        let mut p = vec![0x17];
        p.extend_from_slice(&id.to_le_bytes());
        p.push(0); // no cursor
        p.extend_from_slice(&1u32.to_le_bytes());
        p.push(0); // null bitmap
        p.push(1); // types follow
        p.extend_from_slice(&[0x08, 0x00]); // MYSQL_TYPE_LONGLONG
        p.extend_from_slice(&value.to_le_bytes());
        self.write(0, &p);
        let first = self.read();
        assert_ne!(
            first[0],
            0xff,
            "execute: {}",
            String::from_utf8_lossy(&first)
        );
        if first[0] != 0 {
            self.definitions(u16::from(first[0]));
            self.rows();
        }
    }

    fn close(&mut self, id: u32) {
        let mut p = vec![0x19];
        p.extend_from_slice(&id.to_le_bytes());
        self.write(0, &p);
    }

    fn quit(mut self) {
        self.write(0, &[0x01]);
        let mut rest = Vec::new();
        let _ = self.s.read_to_end(&mut rest);
    }
}

/// Latest l7_rpc_api row of every key (running totals) that `pick` selects.
fn api_rows(records: &[Vec<String>], pick: impl Fn(&[String]) -> bool) -> Vec<&Vec<String>> {
    let mut latest: HashMap<&[String], &Vec<String>> = HashMap::new();
    for r in records.iter().filter(|r| r[0] == "l7_rpc_api" && pick(r)) {
        latest.insert(&r[1..=KEYS + 1], r);
    }
    latest.into_values().collect()
}

/// Per api: (requests, responses, errors, histogram count).
type Counts = (u64, u64, u64, u64);

fn per_api(rows: &[&Vec<String>]) -> BTreeMap<String, Counts> {
    let mut out: BTreeMap<String, Counts> = BTreeMap::new();
    for r in rows {
        let c = out.entry(field(r, "api")).or_default();
        c.0 += num(r, "req_count");
        c.1 += num(r, "resp_count");
        c.2 += num(r, "err_count");
        c.3 += latency_count(r);
    }
    out
}

fn expect(list: &[(&str, Counts)]) -> BTreeMap<String, Counts> {
    list.iter().map(|(a, c)| (a.to_string(), *c)).collect()
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
    (n, n, 0, n)
}

#[test]
fn mariadb_text_and_prepared_statements_per_verb_are_exact() {
    let db = mariadb();
    let server = db.server.0.id();
    let port = db.port.to_string();
    let probe = Probe::start(&["-t", "1"], None);

    // The text protocol: one COM_QUERY per statement, one failing (ERR 1146).
    let sql = "CREATE DATABASE d; CREATE TABLE d.t (a BIGINT); \
        INSERT INTO d.t VALUES (1); INSERT INTO d.t VALUES (2); INSERT INTO d.t VALUES (3); \
        SELECT * FROM d.t; select a from d.t where a > 1; \
        UPDATE d.t SET a = 4 WHERE a = 1; DELETE FROM d.t WHERE a = 2;\n\
        delimiter //\n\
        SELECT 1 AS one; SELECT 2 AS two//\n\
        delimiter ;\n\
        SELECT * FROM d.missing_table";
    let (text_pid, err) = client(db.port, sql);
    assert!(err.contains("1146"), "{err}");
    let text_expected = expect(&[
        ("CREATE", ok(2)),
        ("INSERT", ok(3)),
        // (SELECT 1; SELECT 2: one COM_QUERY, two result sets)
        ("SELECT", (4, 4, 1, 4)),
        ("UPDATE", ok(1)),
        ("DELETE", ok(1)),
    ]);

    // The binary protocol: each COM_STMT_PREPARE and COM_STMT_EXECUTE counts on the verb of
    // its statement.
    // With EOF packets, then without (CLIENT_DEPRECATE_EOF); one PREPARE fails (ERR 1146).
    for deprecate_eof in [false, true] {
        let mut raw = Raw::connect(db.port, deprecate_eof);
        let (select, params) = raw.prepare("SELECT ? + 1").unwrap();
        assert_eq!(params, 1);
        for v in 0..3 {
            raw.execute(select, v);
        }
        let (insert, params) = raw.prepare("INSERT INTO d.t VALUES (?)").unwrap();
        assert_eq!(params, 1);
        for v in 10..12 {
            raw.execute(insert, v);
        }
        assert_eq!(
            raw.prepare("SELECT * FROM d.missing_table WHERE a = ?"),
            Err(1146)
        );
        raw.close(select);
        raw.close(insert);
        raw.quit();
    }
    let raw_expected = expect(&[("SELECT", (10, 10, 2, 10)), ("INSERT", ok(6))]);

    // mariadb-admin ping: COM_PING.
    let admin = Command::new(need("mariadb-admin", "mariadb-server"))
        .args([
            "--no-defaults",
            "-h",
            "127.0.0.1",
            "-P",
            &port,
            "-u",
            "root",
            "ping",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let admin_pid = admin.id();
    assert!(admin.wait_with_output().unwrap().status.success());
    let admin_expected = expect(&[("PING", ok(1))]);

    // A result of 1000 rows (about 100 kB).
    // Its row packets' heads are past the 1024 bytes captured of each call: the response
    // stream loses its place and finds it again at the next request.
    const WHOLE_CALLS: bool = true;
    let mut big_expected = BTreeMap::new();
    let mut big_pid = 0;
    if WHOLE_CALLS {
        let (pid, err) = client(db.port, "SELECT REPEAT('x', 100) FROM d.seq_1_to_1000");
        assert_eq!(err, "");
        (big_pid, big_expected) = (pid, expect(&[("SELECT", ok(1))]));
    }

    thread::sleep(Duration::from_millis(300));
    let records = probe.records_for(2);

    // The mariadb client.
    let rows = api_rows(&records, |r| r[1] == text_pid.to_string());
    for r in &rows {
        assert_eq!(field(r, "l7_role"), "client", "{r:?}");
        assert_eq!(field(r, "protocol"), "mysql", "{r:?}");
        assert_eq!(field(r, "server_port"), port, "{r:?}");
    }
    assert_eq!(
        per_api(&rows),
        text_expected,
        "mariadb {text_pid}: {rows:?}"
    );

    // This test's own binary-protocol client.
    let me = std::process::id().to_string();
    let rows = api_rows(&records, |r| r[1] == me && r[4] == port);
    for r in &rows {
        assert_eq!(field(r, "l7_role"), "client", "{r:?}");
        assert_eq!(field(r, "protocol"), "mysql", "{r:?}");
    }
    assert_eq!(per_api(&rows), raw_expected, "raw client: {rows:?}");

    let rows = api_rows(&records, |r| r[1] == admin_pid.to_string());
    assert_eq!(
        per_api(&rows),
        admin_expected,
        "mariadb-admin {admin_pid}: {rows:?}"
    );
    if WHOLE_CALLS {
        let rows = api_rows(&records, |r| r[1] == big_pid.to_string());
        assert_eq!(per_api(&rows), big_expected, "mariadb {big_pid}: {rows:?}");
    }

    // mariadbd: the server end of all.
    let rows = api_rows(&records, |r| r[1] == server.to_string() && r[6] == "server");
    for r in &rows {
        assert_eq!(field(r, "protocol"), "mysql", "{r:?}");
        assert_eq!(field(r, "l4_role"), "tcp_server", "{r:?}");
        assert_eq!(field(r, "server_port"), port, "{r:?}");
        assert_eq!(field(r, "comm"), "mariadbd", "{r:?}");
    }
    let mut server_expected = text_expected.clone();
    for (api, c) in raw_expected
        .iter()
        .chain(&admin_expected)
        .chain(&big_expected)
    {
        let s = server_expected.entry(api.clone()).or_default();
        *s = (s.0 + c.0, s.1 + c.1, s.2 + c.2, s.3 + c.3);
    }
    assert_eq!(
        per_api(&rows),
        server_expected,
        "mariadbd {server}: {rows:?}"
    );

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
    // The 1000-row result, on both ends.
    assert_eq!(num(stats, "desynchronised"), 2, "{stats:?}");
    assert_eq!(num(stats, "unparsed_responses"), 2, "{stats:?}");
    let loss = last(&records, "l7probe_bpf_stats", |_| true).unwrap();
    assert_eq!(field(loss, "lost_events"), "0", "{loss:?}");
}
