//! Redis through a real redis-server (Debian package redis-server) driven by redis-benchmark
//! and redis-cli (redis-tools), on loopback: the per-command counts of the server's and the
//! benchmarks' rows (one request at a time, then 16 pipelined) equal the server's own INFO
//! commandstats, every request has its response and its latency, error replies are counted on
//! their command, RESP3 (HELLO 3, a map reply) is followed, and nothing is misparsed.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};

use common::*;

/// Requests of each redis-benchmark test.
const N: u64 = 2000;

/// A redis-server on 127.0.0.1:`port`, persistence off, in a temp dir.
struct Redis {
    server: Server,
    _dir: tempfile::TempDir,
    port: u16,
}

fn redis() -> Redis {
    let bin = need("redis-server", "redis-server");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new(bin)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    wait_port(port);
    Redis {
        server,
        _dir: dir,
        port,
    }
}

/// Runs redis-cli with `args` against `port`; returns its pid and stdout.
fn cli(port: u16, args: &[&str]) -> (u32, String) {
    let child = Command::new(need("redis-cli", "redis-tools"))
        .args(["-p", &port.to_string()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "redis-cli {args:?} failed");
    (pid, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `calls` of each `cmdstat_<name>` of INFO commandstats.
fn commandstats(port: u16) -> HashMap<String, u64> {
    let (_, text) = cli(port, &["INFO", "commandstats"]);
    text.lines()
        .filter_map(|l| {
            let (name, rest) = l.trim().strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_string(), calls.parse().ok()?))
        })
        .collect()
}

fn api_row<'a>(records: &'a [Vec<String>], tgid: u32, role: &str, api: &str) -> &'a Vec<String> {
    last(records, "l7_rpc_api", |r| {
        r[1] == tgid.to_string() && r[6] == role && field(r, "api") == api
    })
    .unwrap_or_else(|| {
        let mine: Vec<_> = records
            .iter()
            .filter(|r| r[1] == tgid.to_string())
            .collect();
        panic!("no {role} row of {tgid} for {api}; its rows: {mine:?}")
    })
}

/// Requests, responses, errors and latency-histogram count of a row.
fn counts(r: &[String]) -> (u64, u64, u64, u64) {
    (
        num(r, "req_count"),
        num(r, "resp_count"),
        num(r, "err_count"),
        hist_count(&field(r, "latency")),
    )
}

/// Runs redis-benchmark against `port` with `args`; returns its pid and the per-command call
/// deltas (`INFO commandstats` before and after it) of the commands in `cmds`.
fn benchmark(port: u16, args: &[&str], cmds: &[&str]) -> (u32, HashMap<String, u64>) {
    let before = commandstats(port);
    let bench = Command::new(need("redis-benchmark", "redis-tools"))
        .args([
            "-p",
            &port.to_string(),
            "-n",
            &N.to_string(),
            "-c",
            "1",
            "-q",
        ])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = bench.id();
    assert!(bench.wait_with_output().unwrap().status.success());
    let after = commandstats(port);
    let delta = cmds
        .iter()
        .map(|c| {
            let d = after.get(*c).unwrap_or(&0) - before.get(*c).unwrap_or(&0);
            (c.to_uppercase(), d)
        })
        .collect();
    (pid, delta)
}

#[test]
fn redis_benchmark_and_cli_commands_match_commandstats() {
    let r = redis();
    let server = r.server.0.id();
    let probe = Probe::start(&["-t", "1"], None);

    // The records of every period while the clients run (an exited client's rows are in one
    // period only), and two after.
    let ((benchmarks, nosuch_pid, incr_pid, hset_pid, hgetall_pid), records) =
        during(&probe, || {
            // One request at a time, then 16 pipelined, with array replies (LRANGE of 100 elements).
            let (plain_pid, plain) = benchmark(r.port, &["-t", "get,set"], &["get", "set"]);
            assert_eq!((plain["GET"], plain["SET"]), (N, N), "{plain:?}");
            let (piped_pid, piped) = benchmark(
                r.port,
                &["-P", "16", "-t", "get,set,lpush"],
                &["get", "set", "lpush"],
            );
            assert_eq!(
                (piped["GET"], piped["SET"], piped["LPUSH"]),
                (N, N, N),
                "{piped:?}"
            );
            // Pipelined LRANGEs of 100 elements: 16 replies of 906 bytes in one write, past the probe's
            // 1024 bytes captured per call (-C).
            // The rest of such a call past the 1024 bytes captured is a gap inside the replies, which
            // RESP cannot skip: the response stream loses its place and finds it again at the next
            // request (the replies count, without their status: unparsed_responses).
            const LARGE_REPLIES: bool = true;
            let mut benchmarks = vec![(plain_pid, plain), (piped_pid, piped)];
            if LARGE_REPLIES {
                let (pid, calls) = benchmark(
                    r.port,
                    &["-P", "16", "-t", "lrange_100"],
                    &["lpush", "lrange"],
                );
                // (lrange_100 fills its list with N LPUSHes first.)
                assert_eq!((calls["LPUSH"], calls["LRANGE"]), (N, N), "{calls:?}");
                benchmarks.push((pid, calls));
            }

            // Error replies: an unknown command (ERR unknown command) and INCR of a string (ERR value
            // is not an integer).
            cli(r.port, &["SET", "s", "abc"]);
            let (nosuch_pid, out) = cli(r.port, &["NOSUCHCOMMAND"]);
            assert!(out.contains("unknown command"), "{out}");
            let (incr_pid, out) = cli(r.port, &["INCR", "s"]);
            assert!(out.contains("not an integer"), "{out}");

            // RESP3 (HELLO 3 first): a map reply.
            let (hset_pid, _) = cli(r.port, &["-3", "HSET", "h", "a", "1", "b", "2"]);
            let (hgetall_pid, out) = cli(r.port, &["-3", "--no-raw", "HGETALL", "h"]);
            assert!(out.contains("=>"), "a map: {out}");
            (benchmarks, nosuch_pid, incr_pid, hset_pid, hgetall_pid)
        });

    // redis-server: the server end of everything.
    let rpc = last(&records, "l7_rpc", |x| {
        x[1] == server.to_string() && x[6] == "server"
    })
    .unwrap_or_else(|| panic!("no l7_rpc server row of redis-server {server}"));
    assert_eq!(field(rpc, "protocol"), "redis", "{rpc:?}");
    assert_eq!(field(rpc, "l4_role"), "tcp_server", "{rpc:?}");
    assert_eq!(field(rpc, "server_port"), r.port.to_string(), "{rpc:?}");
    let (req, resp, err, hist) = counts(rpc);
    let bench_calls: u64 = benchmarks.iter().flat_map(|b| b.1.values()).sum();
    assert!(req >= bench_calls + 3, "{rpc:?}");
    assert_eq!((resp, hist), (req, req), "{rpc:?}");
    assert_eq!(err, 2, "{rpc:?}");

    // Per command: what redis counted (the SET s abc of redis-cli is one more SET).
    let mut apis: Vec<&String> = benchmarks.iter().flat_map(|b| b.1.keys()).collect();
    apis.sort();
    apis.dedup();
    for api in apis {
        let n: u64 =
            benchmarks.iter().filter_map(|b| b.1.get(api)).sum::<u64>() + u64::from(api == "SET");
        let row = api_row(&records, server, "server", api);
        assert_eq!(counts(row), (n, n, 0, n), "{row:?}");
    }
    let nosuch = api_row(&records, server, "server", "NOSUCHCOMMAND");
    assert_eq!(counts(nosuch), (1, 1, 1, 1), "{nosuch:?}");
    let incr = api_row(&records, server, "server", "INCR");
    assert_eq!(counts(incr), (1, 1, 1, 1), "{incr:?}");
    for (api, n) in [("HELLO", 2), ("HSET", 1), ("HGETALL", 1)] {
        let row = api_row(&records, server, "server", api);
        assert_eq!(counts(row), (n, n, 0, n), "{row:?}");
    }

    // The redis-benchmarks: the client end of their commands.
    for (pid, calls) in &benchmarks {
        for (api, &n) in calls {
            let c = api_row(&records, *pid, "client", api);
            assert_eq!(field(c, "protocol"), "redis", "{c:?}");
            assert_eq!(field(c, "server_port"), r.port.to_string(), "{c:?}");
            assert_eq!(counts(c), (n, n, 0, n), "{c:?}");
        }
    }
    // redis-cli: the client end of the error replies.
    let c = api_row(&records, nosuch_pid, "client", "NOSUCHCOMMAND");
    assert_eq!(counts(c), (1, 1, 1, 1), "{c:?}");
    let c = api_row(&records, incr_pid, "client", "INCR");
    assert_eq!(counts(c), (1, 1, 1, 1), "{c:?}");
    for (pid, api) in [(hset_pid, "HSET"), (hgetall_pid, "HGETALL")] {
        for api in ["HELLO", api] {
            let c = api_row(&records, pid, "client", api);
            assert_eq!(counts(c), (1, 1, 0, 1), "{c:?}");
        }
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
    // Each of the 125 writes of 16 LRANGE replies (14.5 kB, 1024 bytes captured) loses 15
    // replies' heads, on the server's and on the client's connection.
    assert_eq!(num(stats, "desynchronised"), 2 * (N / 16), "{stats:?}");
    assert_eq!(
        num(stats, "unparsed_responses"),
        2 * 15 * (N / 16),
        "{stats:?}"
    );
    let loss = last(&records, "l7probe_bpf_stats", |_| true).unwrap();
    assert_eq!(field(loss, "lost_events"), "0", "{loss:?}");
}
