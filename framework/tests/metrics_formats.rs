//! `/metrics` as scrapers ask for it: gzip when `Accept-Encoding` allows it, OpenMetrics when
//! `Accept` prefers it (checked with the `prometheus_client` OpenMetrics parser), the classic text
//! format otherwise (checked with `promtool`), and large pages streamed. Every test runs the real
//! daemon and talks raw HTTP to it.

#[path = "../benches/support/mod.rs"]
#[allow(dead_code)]
mod bench_support;
mod daemon_support;
mod export_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use daemon_support::*;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// What Prometheus 2.x sends (before `scrape_protocols`).
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,\
    application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// One HTTP/1.1 response: status, headers (names lower-case) and the body, de-chunked.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8 body")
    }

    /// The body, gunzipped if it says it is gzip.
    fn decoded(&self) -> String {
        if self.header("content-encoding") != Some("gzip") {
            return self.text();
        }
        let mut out = String::new();
        flate2::read::GzDecoder::new(&self.body[..])
            .read_to_string(&mut out)
            .expect("valid gzip");
        out
    }
}

/// `GET /metrics` over HTTP/1.1 with extra request headers (`Name: value` lines).
fn get(port: u16, headers: &[&str]) -> Reply {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = String::from("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .expect("Content-Length or chunked");
        assert_eq!(rest.len(), len, "body length");
        rest.to_vec()
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// Decode a complete chunked body (panics on a truncated one: a stream must end properly).
fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).trim(), 16)
            .expect("hex chunk size");
        rest = &rest[eol + 2..];
        if size == 0 {
            assert!(rest.starts_with(b"\r\n"), "chunked body ends with CRLF");
            return body;
        }
        body.extend_from_slice(&rest[..size]);
        assert_eq!(&rest[size..size + 2], b"\r\n", "chunk ends with CRLF");
        rest = &rest[size + 2..];
    }
}

fn copy_golden_probe(probes: &Path) {
    let src = workspace().join("framework/tests/fixtures/golden/probes");
    for f in ["golden.sh", "golden.meta"] {
        std::fs::copy(src.join(f), probes.join(f)).unwrap();
    }
}

/// Parse `text` with the strict OpenMetrics parser of `prometheus_client`; returns the family
/// names and types it read (`name type` lines), or panics with the parser's error.
fn openmetrics_parse(text: &str) -> String {
    let script = "import sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families as p\n\
        for f in p(sys.stdin.read()):\n    print(f.name, f.type, len(f.samples))\n";
    let mut child = Command::new(export_support::python())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the body (prometheus_client missing? run ./build.sh --test, \
         which installs framework/tests/requirements.txt): {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Lines of the daemon's own metrics without their values (which change between scrapes).
fn self_series(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.contains("gala_gopher_self_"))
        .map(|l| match l.strip_prefix('#') {
            Some(_) => l.to_string(),
            None => l.rsplit_once(' ').map_or(l, |(s, _)| s).to_string(),
        })
        .collect()
}

#[test]
fn gzip_only_when_accepted_and_identical_once_decompressed() {
    let d = Daemon::start(60, "", copy_golden_probe);
    d.wait_scrape("gala_gopher_golden_threads", Duration::from_secs(10));

    let plain = get(d.port, &[]);
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("content-encoding"), None);
    assert_eq!(plain.header("content-type"), Some(TEXT));
    assert_eq!(plain.header("vary"), Some("Accept, Accept-Encoding"));
    let plain_text = plain.text();
    assert!(plain_text.starts_with("# HELP gala_gopher_golden_"));

    for refuse in ["gzip;q=0", "identity", "deflate, br"] {
        let r = get(d.port, &[&format!("Accept-Encoding: {refuse}")]);
        assert_eq!(r.header("content-encoding"), None, "{refuse}");
        assert!(r.text().starts_with("# HELP "), "{refuse}");
    }

    let gz = get(d.port, &["Accept-Encoding: gzip, deflate"]);
    assert_eq!(gz.status, 200);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert_eq!(gz.header("content-type"), Some(TEXT));
    assert_eq!(gz.header("vary"), Some("Accept, Accept-Encoding"));
    assert_eq!(&gz.body[..2], &[0x1f, 0x8b], "gzip magic");
    let unzipped = gz.decoded();
    // The probe's series are the same bytes; the self-metrics the same series (their values
    // move between two scrapes).
    assert_eq!(probe_part(&unzipped), probe_part(&plain_text));
    assert_eq!(self_series(&unzipped), self_series(&plain_text));
    let (code, report) = promtool_check(&unzipped);
    assert_eq!(code, Some(0), "promtool: {report}\n{unzipped}");

    // OpenMetrics compressed too.
    let om_gz = get(
        d.port,
        &[
            &format!("Accept: {PROMETHEUS_ACCEPT}"),
            "Accept-Encoding: gzip",
        ],
    );
    assert_eq!(om_gz.header("content-encoding"), Some("gzip"));
    assert_eq!(om_gz.header("content-type"), Some(OPENMETRICS));
    assert!(om_gz.decoded().ends_with("# EOF\n"));
    // Counted per format and encoding (the scrape counting itself comes later).
    let after = d.scrape();
    for (format, encoding, at_least) in [
        ("text", "identity", 4.0),
        ("text", "gzip", 1.0),
        ("openmetrics", "gzip", 1.0),
    ] {
        let key = format!(
            "gala_gopher_self_scrape_responses_total{{format=\"{format}\",encoding=\"{encoding}\""
        );
        let n = sample(&after, &key).unwrap_or(0.0);
        assert!(n >= at_least, "{key}: {n}\n{after}");
    }
}

/// The OpenMetrics exposition of the golden probe equals the checked-in golden text
/// (`UPDATE_GOLDEN=1` rewrites it) and the whole body passes the strict parser.
#[test]
fn openmetrics_golden_and_parser() {
    let d = Daemon::start(60, "", copy_golden_probe);
    d.wait_scrape("gala_gopher_golden_threads", Duration::from_secs(10));
    let r = get(d.port, &[&format!("Accept: {PROMETHEUS_ACCEPT}")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(OPENMETRICS));
    assert_eq!(r.header("content-encoding"), None);
    let body = r.text();
    assert!(body.ends_with("\n# EOF\n"), "{body}");
    let families = openmetrics_parse(&body);
    // Upstream counters: family without `_total`, samples with it.
    assert!(body.contains("# TYPE gala_gopher_golden_rx_bytes counter\n"));
    assert!(body.contains("gala_gopher_golden_rx_bytes_total{tgid=\"100\""));
    assert!(families.contains("gala_gopher_golden_rx_bytes counter 2\n"));
    assert!(families.contains("gala_gopher_golden_latency_seconds histogram "));
    assert!(families.contains("gala_gopher_golden_latency_seconds_max gauge 2\n"));
    assert!(families.contains("gala_gopher_self_scrapes counter 1\n"));
    assert!(body.contains("le=\"10.0\"} 1\n"));

    let got = probe_part(&body);
    let golden = workspace().join("framework/tests/golden/golden.openmetrics");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden).expect("golden file");
    assert_eq!(got, want, "scrape differs from {}", golden.display());

    // OpenMetrics 0.0.1 alone is answered as such (same body).
    let old = get(
        d.port,
        &["Accept: application/openmetrics-text; version=0.0.1"],
    );
    assert_eq!(
        old.header("content-type"),
        Some("application/openmetrics-text; version=0.0.1; charset=utf-8")
    );
    assert!(old.text().ends_with("# EOF\n"));
    // The classic format when preferred, or for anything else.
    for accept in [
        "text/plain;version=0.0.4;q=0.9,application/openmetrics-text;q=0.5",
        "*/*",
        "application/json",
    ] {
        let r = get(d.port, &[&format!("Accept: {accept}")]);
        assert_eq!(r.header("content-type"), Some(TEXT), "{accept}");
        assert!(!r.text().contains("# EOF"), "{accept}");
    }
}

/// With `web_server.timestamps`, the classic format carries upstream's milliseconds and
/// OpenMetrics seconds; both parse.
#[test]
fn timestamps_in_each_format() {
    let d = Daemon::start_env(
        60,
        "",
        &[("GALA_GOPHER_WEB_SERVER__TIMESTAMPS", "true")],
        copy_golden_probe,
    );
    d.wait_scrape("gala_gopher_golden_threads", Duration::from_secs(10));
    let classic = get(d.port, &[]).text();
    let om = get(d.port, &[&format!("Accept: {PROMETHEUS_ACCEPT}")]).text();
    let ts = |text: &str| -> String {
        text.lines()
            .find(|l| l.starts_with("gala_gopher_golden_threads{tgid=\"100\""))
            .and_then(|l| l.rsplit(' ').next())
            .expect("threads sample")
            .to_string()
    };
    let ms: u64 = ts(&classic).parse().expect("integer milliseconds");
    let secs = ts(&om);
    let (whole, frac) = secs.split_once('.').expect("seconds with a fraction");
    assert_eq!(frac.len(), 3, "{secs}");
    let om_ms: u64 = format!("{whole}{frac}").parse().unwrap();
    // Both are the row's last update; a record may land between the two scrapes.
    assert!(om_ms.abs_diff(ms) < 5_000, "{ms} ms vs {secs} s");
    assert!(ms > 1_600_000_000_000, "{ms}");
    openmetrics_parse(&om);
    let (code, report) = promtool_check(&classic);
    assert_eq!(code, Some(0), "promtool: {report}\n{classic}");
}

/// A large page is streamed: over HTTP/1.1 it goes out chunked (its head was sent before its
/// length, i.e. the end of the render, was known), complete in every format; a small one gets a
/// plain `Content-Length`.
#[test]
fn large_pages_are_streamed_and_complete() {
    const ROWS: usize = 10_000;
    let d = Daemon::start_env(
        60,
        "",
        &[("GALA_GOPHER_IMDB__MAX_RECORDS_NUM", "20000")],
        |p| bench_support::write_load_probe(p, ROWS).unwrap(),
    );
    let ok = wait_for(Duration::from_secs(60), || {
        (d.status()["tables"]["load"].as_u64() == Some(ROWS as u64)).then_some(())
    });
    assert!(ok.is_some(), "load rows did not arrive; log:\n{}", d.log());
    for (headers, om) in [
        (vec![], false),
        (vec!["Accept-Encoding: gzip"], false),
        (vec!["Accept: application/openmetrics-text"], true),
        (
            vec![
                "Accept: application/openmetrics-text",
                "Accept-Encoding: gzip",
            ],
            true,
        ),
    ] {
        let r = get(d.port, &headers);
        assert_eq!(r.status, 200, "{headers:?}");
        assert_eq!(
            r.header("transfer-encoding"),
            Some("chunked"),
            "{headers:?}: a {} byte body was not streamed",
            r.body.len()
        );
        let text = r.decoded();
        let series = text
            .lines()
            .filter(|l| l.starts_with("gala_gopher_load_a{"))
            .count();
        assert_eq!(series, ROWS, "{headers:?}");
        if om {
            assert!(text.ends_with("\n# EOF\n"), "{headers:?}");
            openmetrics_parse(&text);
        } else {
            assert!(
                text.ends_with("\n") && !text.contains("# EOF"),
                "{headers:?}"
            );
            // Exit 3 = lint remarks only (the load probe's names: "abbreviated units").
            let (code, report) = promtool_check(&text);
            assert!(
                matches!(code, Some(0 | 3)) && !report.contains("error"),
                "promtool: {code:?} {report}"
            );
        }
    }
}

/// A page that fits in one chunk is complete when the response starts: `Content-Length`, no
/// chunking.
#[test]
fn small_pages_have_a_content_length() {
    let d = Daemon::start(60, "", |_| {});
    for headers in [vec![], vec!["Accept-Encoding: gzip"]] {
        let r = get(d.port, &headers);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("transfer-encoding"), None, "{headers:?}");
        let len: usize = r.header("content-length").unwrap().parse().unwrap();
        assert_eq!(len, r.body.len());
    }
}
