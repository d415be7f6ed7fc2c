//! The flame graph pages end to end: the real daemon, a drop-in probe whose `.meta` declares the
//! REST name `flamegraph` and the param `flame_dir` (pointing at a temp directory written like
//! stackprobe writes it), and raw HTTP on `web_server` and the command socket — including a
//! planted symbolic link and a hostile index entry, a REST change of `flame_dir`, and the
//! self-metrics.

mod daemon_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use daemon_support::{free_port, sample, wait_for, write_script, Daemon};

const SVG: &[u8] = b"<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\">\
<script><![CDATA[function zoom(){}]]></script><g><title>hot (950 samples)</title></g></svg>\n";
const SVG_REL: &str = "oncpu/20261205/20261205170000-4242.svg";

/// A probe that only runs (its flame graphs are written by the test).
const PROBE_SH: &str = "#!/bin/sh\nwhile :; do sleep 1; done\n";

fn meta(flame_dir: &Path) -> String {
    format!(
        r#"version = "1.0.0";
measurements:
(
    {{
        table_name: "stackflame_state";
        entity_name: "stackflame";
        fields:
        (
            {{ description: "id"; type: "key"; name: "id"; }},
            {{ description: "up"; type: "gauge"; name: "up"; }}
        );
    }}
);
probe =
{{
    rest_name = "flamegraph";
    reload = true;
    params = (
        {{ name = "svg_period"; type = "int"; min = 30; max = 600; default = 180; }},
        {{ name = "flame_dir"; type = "string"; max_len = 255; charset = "path"; default = "{}"; }}
    );
}};
"#,
        flame_dir.display()
    )
}

/// `dir` as stackprobe leaves it: one profile of pid 4242 (comm with markup), plus an index
/// entry pointing outside.
fn write_flame_dir(dir: &Path, pid: u32) {
    std::fs::create_dir_all(dir.join("oncpu/20261205")).unwrap();
    let svg = format!("oncpu/20261205/20261205170000-{pid}.svg");
    std::fs::write(dir.join(&svg), SVG).unwrap();
    let index = format!(
        r#"{{"version":1,"updated_ms":1764950000000,"profiles":[
  {{"pid":{pid},"comm":"<script>alert(1)</script>","kind":"oncpu","start_ms":1764950000000,"end_ms":1764950180000,
   "samples":950,"value":9500000000,"svg":"{svg}"}},
  {{"pid":666,"comm":"evil","kind":"oncpu","start_ms":1,"end_ms":2,"samples":1,"value":1,
   "svg":"../../../etc/passwd","folded":"/etc/passwd"}}]}}"#
    );
    // Atomic, as the probe writes it.
    std::fs::write(dir.join("index.json.tmp"), index).unwrap();
    std::fs::rename(dir.join("index.json.tmp"), dir.join("index.json")).unwrap();
}

struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn parse_reply(buf: &[u8]) -> Reply {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Reply {
        status,
        head,
        body: buf[split + 4..].to_vec(),
    }
}

/// One HTTP/1.0 request (a plain body, never chunked).
fn http(port: u16, method: &str, path: &str) -> Reply {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    parse_reply(&buf)
}

fn unix_get(sock: &Path, path: &str) -> Reply {
    let mut s = UnixStream::connect(sock).expect("command socket");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    parse_reply(&buf)
}

/// PUT as `curl -X PUT -d json='…'` sends it: the status.
fn put(port: u16, path: &str, doc: &str) -> (u16, String) {
    let body = format!("json={doc}");
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "PUT {path} HTTP/1.0\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let r = parse_reply(&buf);
    (r.status, r.text())
}

#[test]
fn flame_graphs_are_served_read_only_from_the_probe_s_flame_dir() {
    let flames = tempfile::tempdir().unwrap();
    let dir_a = flames.path().join("a");
    let dir_b = flames.path().join("b");
    write_flame_dir(&dir_a, 4242);
    write_flame_dir(&dir_b, 777);
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let passwd_line = passwd.lines().next().unwrap_or("root:x:0:0").to_string();

    let rest_port = free_port();
    let meta_text = meta(&dir_a);
    let daemon = Daemon::start_env(
        60,
        &format!("rest_api_server = {{ bind_addr = \"127.0.0.1\"; port = {rest_port}; }};\n"),
        &[("GALA_GOPHER_GLOBAL__REST_API_ON", "true")],
        |probes| {
            write_script(&probes.join("stackflame.sh"), PROBE_SH);
            std::fs::write(probes.join("stackflame.meta"), &meta_text).unwrap();
        },
    );
    let port = daemon.port;

    // Discovery finds the probe within a scan or two.
    let page = wait_for(Duration::from_secs(15), || {
        Some(http(port, "GET", "/flamegraph/")).filter(|r| r.text().contains("4242/oncpu.svg"))
    })
    .unwrap_or_else(|| {
        panic!(
            "listing never showed pid 4242: {}\nlog:\n{}",
            http(port, "GET", "/flamegraph/").text(),
            daemon.log()
        )
    });
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        page.header("content-security-policy"),
        Some("default-src 'none'; style-src 'unsafe-inline'")
    );
    let text = page.text();
    assert!(text.contains("<td class=\"n\">4242</td>"), "{text}");
    assert!(text.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!text.contains("<script>"), "{text}");
    assert!(text.contains("stackflame"));
    assert!(text.contains("2025-12-05 15:53:20 UTC"));
    // The hostile entry is listed (escaped) without a link, its paths named as refused.
    assert!(!text.contains("666/oncpu"));
    assert!(text.contains("svg path refused"));

    // The SVG: exact bytes, sandboxed.
    let svg = http(port, "GET", "/flamegraph/4242/oncpu.svg");
    assert_eq!(svg.status, 200, "{}", svg.text());
    assert_eq!(svg.body, SVG);
    assert_eq!(svg.header("content-type"), Some("image/svg+xml"));
    assert_eq!(svg.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        svg.header("content-security-policy"),
        Some(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             img-src data:; sandbox allow-scripts allow-modals"
        )
    );
    assert_eq!(
        svg.header("content-length"),
        Some(SVG.len().to_string().as_str())
    );

    // Not served: the hostile entry, an unknown pid, a file the entry does not have, bad paths,
    // other methods.
    for (path, status) in [
        ("/flamegraph/666/oncpu.svg", 404),
        ("/flamegraph/666/oncpu.folded", 404),
        ("/flamegraph/999/oncpu.svg", 404),
        ("/flamegraph/4242/offcpu.svg", 404),
        ("/flamegraph/4242/oncpu.pb.gz", 404),
        ("/flamegraph/4242/../../../etc/passwd", 400),
        ("/flamegraph/..%2F..%2F..%2Fetc%2Fpasswd", 400),
        ("/flamegraph/4242/oncpu.html", 400),
        ("/flamegraph/x/oncpu.svg", 400),
    ] {
        let r = http(port, "GET", path);
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert!(!r.text().contains(&passwd_line), "{path}");
    }
    let r = http(port, "POST", "/flamegraph/4242/oncpu.svg");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));

    // A symbolic link planted as the SVG, to /etc/passwd: refused, nothing of it sent.
    std::fs::remove_file(dir_a.join(SVG_REL)).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir_a.join(SVG_REL)).unwrap();
    let r = http(port, "GET", "/flamegraph/4242/oncpu.svg");
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(!r.text().contains(&passwd_line));
    assert!(!r.text().contains("root:"), "{}", r.text());

    // Counted, by result.
    let scrape = daemon.scrape();
    let count = |result: &str| {
        sample(
            &scrape,
            &format!("gala_gopher_self_flamegraph_requests_total{{result=\"{result}\""),
        )
        .unwrap_or(-1.0)
    };
    assert!(count("served") >= 2.0, "{scrape}");
    assert_eq!(count("refused"), 1.0);
    assert_eq!(count("not_found"), 5.0);
    assert_eq!(count("bad_request"), 4.0);
    assert_eq!(count("method_not_allowed"), 1.0);
    assert_eq!(count("bad_index"), 0.0);

    // The command socket serves the pages too, and `/flamegraph` there is still the REST
    // API's probe.
    let sock = daemon.dir.path().join("cmd.sock");
    let r = unix_get(&sock, "/flamegraph/");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("4242/oncpu.svg"));
    let r = unix_get(&sock, "/flamegraph");
    assert_eq!(r.status, 200);
    let probe: serde_json::Value = serde_json::from_slice(&r.body).expect("REST JSON");
    assert_eq!(
        probe["params"]["flame_dir"].as_str(),
        Some(dir_a.to_str().unwrap()),
        "{probe}"
    );

    // A REST change of flame_dir applies to the next request.
    let (status, reply) = put(
        rest_port,
        "/flamegraph",
        &format!(r#"{{"params":{{"flame_dir":"{}"}}}}"#, dir_b.display()),
    );
    assert_eq!(status, 200, "{reply}");
    let page = wait_for(Duration::from_secs(10), || {
        Some(http(port, "GET", "/flamegraph/")).filter(|r| r.text().contains("777/oncpu.svg"))
    })
    .expect("listing follows the new flame_dir");
    assert!(!page.text().contains("4242/oncpu.svg"));
    let svg = http(port, "GET", "/flamegraph/777/oncpu.svg");
    assert_eq!((svg.status, svg.body.as_slice()), (200, SVG));
    assert_eq!(http(port, "GET", "/flamegraph/4242/oncpu.svg").status, 404);
}

#[test]
fn without_a_flame_graph_probe_the_page_says_why() {
    let daemon = Daemon::start(60, "", |_| {});
    let r = http(daemon.port, "GET", "/flamegraph/");
    assert_eq!(r.status, 200);
    assert!(
        r.text()
            .contains("No managed probe declares the REST name flamegraph"),
        "{}",
        r.text()
    );
    assert_eq!(
        http(daemon.port, "GET", "/flamegraph/1/oncpu.svg").status,
        404
    );
    // web_server's `/flamegraph` leads to the page.
    let r = http(daemon.port, "GET", "/flamegraph");
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("flamegraph/"));
}
