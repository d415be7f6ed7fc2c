//! The REST API end to end: the real daemon with `rest_api_on`, a drop-in probe that declares
//! sub-probes and params and reads its control channel, and curl-like raw HTTP requests.

mod daemon_support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use daemon_support::{alive, free_port, sample, wait_for, write_script, Daemon};
use serde_json::Value;

/// A python drop-in: reads control lines from stdin (select, no helper library) and reports
/// its pid, the `-P` bits and the period it runs with, every period.
const CTL_PY: &str = r#"#!/usr/bin/env python3
import json, os, select, sys, time
period, bits, dev, snoop = 1.0, 1, "", "all"
for i, a in enumerate(sys.argv):
    if a == "-t":
        period = float(sys.argv[i + 1])
while True:
    end = time.time() + period
    while True:
        left = end - time.time()
        if left <= 0:
            break
        r, _, _ = select.select([sys.stdin], [], [], left)
        if r:
            line = sys.stdin.readline()
            if not line:
                time.sleep(left)
                continue
            msg = json.loads(line)
            period = float(msg["params"]["report_period"])
            bits = msg["probe_bits"]
            dev = msg["params"]["dev_name"]
            snoop = msg["snoop"]["mode"]
    print("|ctl_state|%d|%s|%s|%d|%g|" % (os.getpid(), dev or "none", snoop, bits, period), flush=True)
"#;

const CTL_META: &str = r#"version = "1.0.0";
measurements:
(
    {
        table_name: "ctl_state";
        entity_name: "ctl";
        fields:
        (
            { description: "pid"; type: "key"; name: "pid"; },
            { description: "dev"; type: "label"; name: "dev"; },
            { description: "snoop mode"; type: "label"; name: "snoop"; },
            { description: "bits"; type: "gauge"; name: "bits"; },
            { description: "period"; type: "gauge"; name: "period"; }
        );
    }
);
probe =
{
    rest_name = "ctlrest";
    reload = true;
    snoopers = [ "proc_id", "proc_name" ];
    sub_probes = (
        { name = "alpha"; bits = 1; default = true; },
        { name = "beta"; bits = 2; default = false; }
    );
    params = (
        { name = "report_period"; type = "int"; min = 1; max = 600; default = 1; flag = "t"; },
        { name = "dev_name"; type = "string"; max_len = 31; charset = "name"; default = ""; flag = "d"; }
    );
};
"#;

/// The same probe declared without `reload`: changes restart it with flags.
const FLAGS_META_PROBE: &str = r#"
probe =
{
    reload = false;
    params = (
        { name = "report_period"; type = "int"; min = 1; max = 600; default = 1; flag = "t"; }
    );
};
"#;

fn setup(probes: &Path) {
    write_script(&probes.join("ctl.py"), CTL_PY);
    std::fs::write(probes.join("ctl.meta"), CTL_META).unwrap();
    write_script(&probes.join("flags.py"), CTL_PY);
    let flags_meta = CTL_META
        .split("probe =")
        .next()
        .unwrap()
        .replace("ctl_state", "flags_state")
        .replace("\"ctl\"", "\"flags\"")
        + FLAGS_META_PROBE;
    std::fs::write(probes.join("flags.meta"), flags_meta).unwrap();
    // The flags probe reports under its own table.
    let src = std::fs::read_to_string(probes.join("flags.py")).unwrap();
    write_script(
        &probes.join("flags.py"),
        &src.replace("|ctl_state|", "|flags_state|"),
    );
    // A third one, a drop-in without a config entry (it runs until told otherwise).
    write_script(
        &probes.join("third.py"),
        &CTL_PY.replace("|ctl_state|", "|third_state|"),
    );
    let third_meta = CTL_META
        .replace("ctl_state", "third_state")
        .replace("\"ctl\"", "\"third\"")
        .replace("rest_name = \"ctlrest\";", "");
    std::fs::write(probes.join("third.meta"), third_meta).unwrap();
}

struct Rest {
    daemon: Daemon,
    port: u16,
}

/// Start with `rest_extra` added to the `rest_api_server` group.
fn start(rest_extra: &str) -> Rest {
    let port = free_port();
    let conf = format!(
        "rest_api_server = {{ bind_addr = \"127.0.0.1\"; port = {port}; {rest_extra} }};\n\
         probes = ( {{ name = \"ctl\"; switch = \"off\"; }}, {{ name = \"flags\"; switch = \"off\"; }} );\n"
    );
    let daemon = Daemon::start_env(
        60,
        &conf,
        &[("GALA_GOPHER_GLOBAL__REST_API_ON", "true")],
        setup,
    );
    let rest = Rest { daemon, port };
    // Discovery has run once the probe is listed.
    wait_for(Duration::from_secs(10), || {
        rest.get("/probes")
            .1
            .as_array()?
            .iter()
            .find(|p| p["name"] == "ctl")
            .cloned()
    })
    .expect("ctl listed");
    rest
}

/// One request; (status, body as JSON or the raw text as a JSON string).
fn request(port: u16, method: &str, path: &str, headers: &str, body: &[u8]) -> (u16, Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // A refused large body may close the connection early: that is fine.
    let _ = s.write_all(body);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = dechunk(head, body);
    let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, json)
}

fn dechunk(head: &str, body: &str) -> String {
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_string();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

impl Rest {
    fn get(&self, path: &str) -> (u16, Value) {
        request(self.port, "GET", path, "", b"")
    }

    /// PUT as `curl -X PUT -d json='…'` sends it.
    fn put(&self, path: &str, doc: &str) -> (u16, Value) {
        let body = format!("json={doc}");
        request(
            self.port,
            "PUT",
            path,
            "Content-Type: application/x-www-form-urlencoded\r\n",
            body.as_bytes(),
        )
    }

    fn ctl_sample(&self, pid: u64, bits: u32, period: &str) -> bool {
        let scrape = self.daemon.scrape();
        scrape.lines().any(|l| {
            l.starts_with("gala_gopher_ctl_bits{")
                && l.contains(&format!("pid=\"{pid}\""))
                && l.ends_with(&format!(" {bits}"))
        }) && scrape.lines().any(|l| {
            l.starts_with("gala_gopher_ctl_period{")
                && l.contains(&format!("pid=\"{pid}\""))
                && l.ends_with(&format!(" {period}"))
        })
    }
}

fn pid_of(v: &Value) -> u64 {
    v["pid"].as_u64().expect("pid")
}

#[test]
fn put_starts_retunes_without_restart_and_stops() {
    let r = start("");
    // Upstream's keys come first, in upstream's order.
    let raw = {
        let mut s = TcpStream::connect(("127.0.0.1", r.port)).unwrap();
        write!(s, "GET /ctl HTTP/1.0\r\n\r\n").unwrap();
        let mut buf = String::new();
        let _ = s.read_to_string(&mut buf);
        buf
    };
    let at = |k: &str| raw.find(&format!("\"{k}\":")).unwrap_or(usize::MAX);
    assert!(
        at("cmd") < at("snoopers") && at("snoopers") < at("params"),
        "{raw}"
    );
    assert!(
        at("params") < at("state") && at("state") < at("status"),
        "{raw}"
    );
    // Known but never started: stopped, defaults.
    let (st, v) = r.get("/ctl");
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["state"], "stopped");
    assert_eq!(v["cmd"]["probe"], serde_json::json!(["alpha"]));
    assert_eq!(v["params"]["report_period"], 1);
    assert_eq!(v["reload"], true);
    assert!(
        v["cmd"]["bin"].as_str().unwrap().ends_with("/ctl.py"),
        "{v}"
    );
    // The declared REST name and any case address it too.
    assert_eq!(r.get("/CtlRest").1["cmd"], v["cmd"]);
    assert_eq!(r.get("/CTL").0, 200);

    let (st, v) = r.put(
        "/ctlrest",
        r#"{"cmd":{"probe":["alpha","beta"]},"params":{"report_period":2},"state":"running"}"#,
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["result"], "success", "{v}");
    // The reply comes once it runs.
    let (_, v) = r.get("/ctl");
    assert_eq!(v["state"], "running");
    assert_eq!(v["status"], "running");
    let pid = pid_of(&v);
    assert!(alive(pid as i32));
    assert_eq!(v["cmd"]["probe"], serde_json::json!(["alpha", "beta"]));
    assert_eq!(v["params"]["report_period"], 2);
    wait_for(Duration::from_secs(10), || {
        r.ctl_sample(pid, 3, "2").then_some(())
    })
    .unwrap_or_else(|| panic!("bits 3 period 2 not seen:\n{}", r.daemon.scrape()));

    // New params: same process, new period; params merge (report_period kept when only
    // dev_name is given).
    let (st, v) = r.put("/ctl", r#"{"params":{"report_period":3}}"#);
    assert_eq!(st, 200, "{v}");
    wait_for(Duration::from_secs(10), || {
        r.ctl_sample(pid, 3, "3").then_some(())
    })
    .unwrap_or_else(|| panic!("period 3 not seen:\n{}", r.daemon.scrape()));
    let (st, _) = r.put("/ctl", r#"{"params":{"dev_name":"sda"}}"#);
    assert_eq!(st, 200);
    let (_, v) = r.get("/ctl");
    assert_eq!(pid_of(&v), pid, "the probe was restarted: {v}");
    assert_eq!(v["params"]["report_period"], 3);
    assert_eq!(v["params"]["dev_name"], "sda");
    assert_eq!(v["restarts"], 0);

    // Custom labels land on every series of the probe, still without a restart.
    let (st, v) = r.put("/ctl", r#"{"snoopers":{"custom_labels":{"team":"blue"}}}"#);
    assert_eq!(st, 200, "{v}");
    let scrape = r
        .daemon
        .wait_scrape("team=\"blue\"", Duration::from_secs(10));
    for l in scrape.lines().filter(|l| l.starts_with("gala_gopher_ctl_")) {
        assert!(l.contains("team=\"blue\""), "{l}");
    }
    let (_, v) = r.get("/ctl");
    assert_eq!(v["snoopers"]["custom_labels"]["team"], "blue");
    assert_eq!(pid_of(&v), pid);

    // Stopped: the reply comes after the process is gone.
    let (st, v) = r.put("/ctl", r#"{"state":"stopped"}"#);
    assert_eq!(st, 200, "{v}");
    assert!(
        !alive(pid as i32),
        "pid {pid} still alive after the stop reply"
    );
    let (_, v) = r.get("/ctl");
    assert_eq!(v["state"], "stopped");
    assert!(v["pid"].is_null());
    // Settings stay for the next start.
    assert_eq!(v["params"]["report_period"], 3);
}

#[test]
fn a_probe_without_reload_is_restarted_with_flags() {
    let r = start("");
    let (st, v) = r.put(
        "/flags",
        r#"{"params":{"report_period":2},"state":"running"}"#,
    );
    assert_eq!(st, 200, "{v}");
    let (_, v) = r.get("/flags");
    assert_eq!(v["reload"], false);
    let pid = pid_of(&v);
    let (st, v) = r.put("/flags", r#"{"params":{"report_period":3}}"#);
    assert_eq!(st, 200, "{v}");
    // Restarted: a new process reports the new period it was given as `-t 3`.
    let old_pid = format!("pid=\"{pid}\"");
    wait_for(Duration::from_secs(15), || {
        r.daemon
            .scrape()
            .lines()
            .any(|l| {
                l.starts_with("gala_gopher_flags_period{")
                    && !l.contains(&old_pid)
                    && l.ends_with(" 3")
            })
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "no new process with -t 3: {}\n{}\nlog:\n{}",
            r.get("/flags").1,
            r.daemon.scrape(),
            r.daemon.log()
        )
    });
    let v = r.get("/flags").1;
    assert_ne!(v["pid"].as_u64(), Some(pid));
    assert_eq!(v["params"]["report_period"], 3);
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let r = start("");
    let (st, _) = r.put(
        "/ctl",
        r#"{"params":{"report_period":2},"state":"running"}"#,
    );
    assert_eq!(st, 200);
    let before = r.get("/ctl").1;
    let pid = pid_of(&before);
    let big = format!(
        "{{\"params\":{{\"dev_name\":\"{}\"}}}}",
        "a".repeat(10 << 20)
    );
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let cases: Vec<(&str, String, &str)> = vec![
        ("/ctl", "{nope".into(), "invalid JSON"),
        ("/ctl", big, "larger than"),
        (
            "/nosuch",
            r#"{"state":"running"}"#.into(),
            "invalid probe name",
        ),
        (
            "/ctl",
            r#"{"cmd":{"probe":["gamma"]}}"#.into(),
            "unsupported probe range: gamma",
        ),
        ("/ctl", r#"{"cmd":{"probe":[]}}"#.into(), "at least one"),
        ("/ctl", r#"{"cmd":{}}"#.into(), "cmd.probe"),
        (
            "/ctl",
            r#"{"params":{"sample_period":100}}"#.into(),
            "params.sample_period is not supported",
        ),
        (
            "/ctl",
            r#"{"params":{"report_period":0}}"#.into(),
            "must be in [1, 600]",
        ),
        (
            "/ctl",
            r#"{"params":{"report_period":"5"}}"#.into(),
            "invalid data type",
        ),
        (
            "/ctl",
            r#"{"cmd":{"bin":"/bin/sh","probe":["alpha"]}}"#.into(),
            "cmd.bin",
        ),
        (
            "/ctl",
            r#"{"params":{"dev_name":"sda;reboot"}}"#.into(),
            "params.dev_name",
        ),
        (
            "/ctl",
            r#"{"params":{"dev_name":"../../etc"}}"#.into(),
            "params.dev_name",
        ),
        (
            "/ctl",
            r#"{"params":{"dev_name":"$(id)"}}"#.into(),
            "params.dev_name",
        ),
        (
            "/ctl",
            r#"{"snoopers":{"proc_name":[{"comm":"java;rm -rf /"}]}}"#.into(),
            "proc_name.comm",
        ),
        (
            "/ctl",
            r#"{"snoopers":{"proc_name":[{"comm":"java","cmdline":"`id`"}]}}"#.into(),
            "proc_name.cmdline",
        ),
        (
            "/ctl",
            r#"{"snoopers":{"proc_name":[{"comm":"(("}]}}"#.into(),
            "not a valid regex",
        ),
        (
            "/ctl",
            r#"{"snoopers":{"container_name":["../x"]}}"#.into(),
            "container_name",
        ),
        (
            "/ctl",
            r#"{"snoopers":{"custom_labels":{"a b":"x"}}}"#.into(),
            "custom_labels",
        ),
        (
            "/ctl",
            r#"{"snoopers":{"custom_labels":{"k":"a|b"}}}"#.into(),
            "custom_labels.k",
        ),
        ("/ctl", r#"{"snoopers":{"pod_id":["x"]}}"#.into(), "pod_id"),
        (
            "/ctl",
            r#"{"snoopers":{"proc_id":[1]},"blacklist":{"proc_id":[2]}}"#.into(),
            "mutually exclusive",
        ),
        (
            "/ctl",
            r#"{"state":"paused"}"#.into(),
            "invalid state paused",
        ),
        ("/ctl", deep, "deeper"),
        ("/ctl", "[1]".into(), "JSON object"),
    ];
    for (path, doc, want) in &cases {
        let (st, v) = r.put(path, doc);
        assert!(
            (400..500).contains(&st),
            "{path} {}: status {st} {v}",
            &doc[..doc.len().min(80)]
        );
        let msg = v["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no JSON message for {doc:.80}: {v}"));
        assert_eq!(v["result"], "failed");
        assert!(msg.contains(want), "{doc:.80}: {msg:?} lacks {want:?}");
        assert!(msg.len() < 400, "{msg}");
    }
    // 110 proc_id entries: over the limit.
    let many: Vec<u32> = (1..=110).collect();
    let (st, v) = r.put(
        "/ctl",
        &format!("{{\"snoopers\":{{\"proc_id\":{many:?}}}}}"),
    );
    assert_eq!(st, 400, "{v}");
    // A message with quotes is valid JSON (escaped).
    let (st, v) = r.put("/ctl", r#"{"params":{"dev_name":"a\"b"}}"#);
    assert_eq!(st, 400);
    assert!(v["message"].as_str().unwrap().contains("params.dev_name"));
    // Other methods and paths.
    assert_eq!(request(r.port, "DELETE", "/ctl", "", b"").0, 405);
    assert_eq!(r.get("/").0, 404);
    assert_eq!(r.get("/nosuch").1["message"], "url not found");

    let after = r.get("/ctl").1;
    for k in ["cmd", "params", "snoopers", "state"] {
        assert_eq!(before[k], after[k], "{k} changed");
    }
    assert_eq!(pid_of(&after), pid);
    assert!(alive(pid as i32));
    assert!(alive(r.daemon.pid()));
}

#[test]
fn concurrent_puts_are_serialized_and_all_answered() {
    let r = start("");
    let (st, _) = r.put("/ctl", r#"{"state":"running"}"#);
    assert_eq!(st, 200);
    let port = r.port;
    let answers: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..200)
            .map(|i| {
                s.spawn(move || {
                    let doc = if i % 10 == 0 {
                        r#"json={"params":{"report_period":"bad"}}"#.to_string()
                    } else {
                        format!("json={{\"params\":{{\"report_period\":{}}}}}", 1 + i % 50)
                    };
                    let path = if i % 2 == 0 { "/ctl" } else { "/flags" };
                    request(port, "PUT", path, "", doc.as_bytes())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let statuses: BTreeSet<u16> = answers.iter().map(|(s, _)| *s).collect();
    assert!(statuses.is_subset(&[200, 400].into()), "{statuses:?}");
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 400)
        .map(|(_, v)| v)
        .collect();
    // Only the 20 bad documents, never a probe that is being restarted meanwhile.
    assert_eq!(refused.len(), 20, "{refused:?}");
    for v in refused {
        assert!(
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("invalid data type")),
            "{v}"
        );
    }
    assert!(alive(r.daemon.pid()));
    let v = r.get("/ctl").1;
    assert_eq!(v["status"], "running");
    assert_eq!(v["restarts"], 0, "{v}");
}

#[test]
fn probes_init_persists_across_restarts_and_reports_bad_lines() {
    let mut r = start("");
    let (st, v) = r.put(
        "/ctl",
        r#"{"cmd":{"probe":["beta"]},"params":{"report_period":4},"snoopers":{"proc_name":[{"comm":"^nomatch$","cmdline":"a b  c"}],"custom_labels":{"team":"blue"}},"state":"running"}"#,
    );
    assert_eq!(st, 200, "{v}");
    let (st, v) = r.put(
        "/flags",
        r#"{"params":{"report_period":2},"state":"running"}"#,
    );
    assert_eq!(st, 200, "{v}");
    let (st, v) = r.put(
        "/third",
        r#"{"cmd":{"probe":["alpha","beta"]},"params":{"dev_name":"sdz"}}"#,
    );
    assert_eq!(st, 200, "{v}");
    let before_third = r.get("/third").1;
    let init = r.daemon.dir.path().join("probes.init");
    let text = std::fs::read_to_string(&init).unwrap();
    assert!(text.contains("\"cmdline\":\"a b  c\""), "{text}");
    let before_ctl = r.get("/ctl").1;
    let replays = |log: &str| log.matches("replayed").count();

    r.daemon
        .restart(&[("GALA_GOPHER_GLOBAL__REST_API_ON", "true")]);
    let v = wait_for(Duration::from_secs(20), || {
        let v = r.get("/ctl").1;
        (v["status"] == "running").then_some(v)
    })
    .unwrap_or_else(|| panic!("ctl not running after restart; log:\n{}", r.daemon.log()));
    for k in ["cmd", "params", "snoopers", "state"] {
        assert_eq!(before_ctl[k], v[k], "{k} differs after restart");
    }
    let f = wait_for(Duration::from_secs(20), || {
        let v = r.get("/flags").1;
        (v["status"] == "running").then_some(v)
    })
    .expect("flags running after restart");
    assert_eq!(f["params"]["report_period"], 2);
    let t = wait_for(Duration::from_secs(20), || {
        let v = r.get("/third").1;
        (v["status"] == "running" && v["params"]["dev_name"] == "sdz").then_some(v)
    })
    .expect("third running with its settings after restart");
    for k in ["cmd", "params", "state"] {
        assert_eq!(before_third[k], t[k], "third: {k} differs after restart");
    }
    wait_for(Duration::from_secs(20), || {
        (replays(&r.daemon.log()) == 1).then_some(())
    })
    .expect("replay finished");

    // A broken line: reported with its number, the others still apply.
    std::fs::write(
        &init,
        "# comment\nctl {\"state\":\"running\",\"params\":{\"report_period\":5}}\nflags {broken\nnosuch {\"state\":\"running\"}\n",
    )
    .unwrap();
    r.daemon
        .restart(&[("GALA_GOPHER_GLOBAL__REST_API_ON", "true")]);
    let v = wait_for(Duration::from_secs(20), || {
        let v = r.get("/ctl").1;
        (v["params"]["report_period"] == 5 && v["status"] == "running").then_some(v)
    })
    .unwrap_or_else(|| panic!("line 2 not applied; log:\n{}", r.daemon.log()));
    assert_eq!(v["state"], "running");
    let log = wait_for(Duration::from_secs(15), || {
        let log = r.daemon.log();
        (replays(&log) == 2).then_some(log)
    })
    .unwrap_or_else(|| panic!("second replay not finished:\n{}", r.daemon.log()));
    assert!(log.contains("probes.init:3: invalid JSON"), "{log}");
    assert!(
        log.contains("probes.init:4: probe nosuch: invalid probe name"),
        "{log}"
    );
    // The file is left as written: the broken line stays for its owner to fix.
    assert!(std::fs::read_to_string(&init)
        .unwrap()
        .contains("flags {broken"));
    // flags was not set by the file this time: the config entry's switch (off) rules.
    assert_eq!(r.get("/flags").1["state"], "stopped");
}

#[test]
fn the_token_guards_writes_only() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let r = start(&format!("token_file = \"{}\";", token.display()));
    assert_eq!(r.get("/ctl").0, 200);
    let (st, v) = r.put("/ctl", r#"{"state":"running"}"#);
    assert_eq!(st, 401, "{v}");
    assert_eq!(r.get("/ctl").1["state"], "stopped");
    let (st, v) = request(
        r.port,
        "PUT",
        "/ctl",
        "Authorization: Bearer s3cret-token\r\n",
        br#"json={"state":"running"}"#,
    );
    assert_eq!(st, 200, "{v}");
    let _ = sample;
}

/// `gopher-ctl` against the real daemon's command socket: the same documents and replies as
/// REST, its exit codes, and a clear message once the daemon is gone.
#[test]
fn gopher_ctl_drives_the_daemon_over_its_socket() {
    let r = start("");
    let sock = r.daemon.dir.path().join("cmd.sock");
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gopher-ctl"))
            .arg("--socket")
            .arg(&sock)
            .args(args)
            .output()
            .expect("run gopher-ctl");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let md = std::fs::metadata(&sock).expect("socket exists");
    assert!(md.file_type().is_socket());
    assert_eq!(md.permissions().mode() & 0o777, 0o660);

    let (code, out, err) = ctl(&[
        "probe",
        "set",
        "ctlrest",
        r#"{"params":{"report_period":2},"state":"running"}"#,
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("New config takes effect"), "{out}");
    let (code, out, _) = ctl(&["probe", "get", "ctl"]);
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["state"], "running");
    assert_eq!(v["params"]["report_period"], 2);
    // The same document as REST shows.
    assert_eq!(r.get("/ctl").1["params"], v["params"]);
    let (code, out, _) = ctl(&["probe", "list"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("\"ctl\""), "{out}");
    let (code, out, _) = ctl(&["status"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("\"probes\""), "{out}");
    let m1 = wait_for(Duration::from_secs(10), || {
        let (code, out, _) = ctl(&["metric"]);
        (code == Some(0) && out.contains("gala_gopher_ctl_period")).then_some(out)
    })
    .expect("metric shows the probe's series");
    // Not destructive: asking again gives the series again.
    let (_, m2, _) = ctl(&["metric"]);
    assert!(m1.contains("gala_gopher_ctl_period") && m2.contains("gala_gopher_ctl_period"));

    let (code, _, err) = ctl(&[
        "probe",
        "set",
        "ctl",
        r#"{"params":{"report_period":9999}}"#,
    ]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("params.report_period invalid value 9999"),
        "{err}"
    );
    let (code, _, err) = ctl(&["probe", "get", "nosuch"]);
    assert_eq!(code, Some(1), "{err}");

    let Rest { daemon, .. } = r;
    daemon.stop();
    let (code, _, err) = ctl(&["probe", "list"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not running"), "{err}");
}

/// A `probe` group that does not hold together is reported with file and line; the probe still
/// runs, and takes only a state over REST.
#[test]
fn a_bad_declaration_is_reported_and_the_probe_still_runs() {
    let port = free_port();
    let d = Daemon::start_env(
        60,
        &format!("rest_api_server = {{ bind_addr = \"127.0.0.1\"; port = {port}; }};"),
        &[("GALA_GOPHER_GLOBAL__REST_API_ON", "true")],
        |probes| {
            write_script(
                &probes.join("odd.sh"),
                "#!/bin/sh\nwhile :; do echo '|odd_t|a|1|'; sleep 1; done\n",
            );
            let meta = "version = \"1.0.0\";\nmeasurements: ( { table_name: \"odd_t\"; entity_name: \"odd\"; fields: (\n\
                        { description: \"k\"; type: \"key\"; name: \"k\"; }, { description: \"v\"; type: \"gauge\"; name: \"v\"; } ); } );\n\
                        probe = {\n  reload = true;\n  sub_probes = ( { name = \"x\"; bits = 0; } );\n};\n";
            std::fs::write(probes.join("odd.meta"), meta).unwrap();
        },
    );
    d.wait_scrape("gala_gopher_odd_v", Duration::from_secs(15));
    let log = d.log();
    assert!(
        log.contains("odd.meta:4: probe declaration: sub_probe x: bits must not be 0"),
        "{log}"
    );
    let (st, v) = request(port, "GET", "/odd", "", b"");
    assert_eq!(st, 200);
    assert_eq!(v["reload"], false);
    let (st, v) = request(
        port,
        "PUT",
        "/odd",
        "",
        br#"json={"params":{"report_period":5}}"#,
    );
    assert_eq!(st, 400, "{v}");
    let (st, v) = request(port, "PUT", "/odd", "", br#"json={"state":"stopped"}"#);
    assert_eq!(st, 200, "{v}");
}
