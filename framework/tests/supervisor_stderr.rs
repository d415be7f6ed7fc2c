//! A probe's stderr reaches the daemon log line by line, at the level of its prefix, with the
//! probe name, bounded in length and lossily decoded.

mod supervisor_support;

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gala_gopher::supervisor::Supervisor;
use gala_gopher::telemetry::Telemetry;
use supervisor_support::*;

/// Log output captured by the tracing subscriber of this test.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    /// Capture this thread's log output (DEBUG and up, no colours) until the guard drops.
    fn install() -> (Capture, tracing::subscriber::DefaultGuard) {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (capture, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn stderr_lines_are_logged_with_level_and_probe() {
    // current_thread runtime: every task of this test runs on this thread.
    let (capture, _guard) = Capture::install();

    let dir = tempfile::tempdir().unwrap();
    let script = write_script(
        dir.path(),
        "chatty",
        r#"echo '[DEBUG] tick 1' >&2
echo '[INFO] started' >&2
echo '[WARN] low memory' >&2
echo '[ERROR] boom' >&2
echo 'no prefix here' >&2
printf 'bad \377 byte\n' >&2
head -c 100000 /dev/zero | tr '\0' x >&2; echo >&2
echo '[INFO] after the long line' >&2
printf 'unterminated' >&2
echo '|t|1|'
exec sleep 1000"#,
    );
    let sink = TestSink::new();
    let telemetry = Arc::new(Telemetry::default());
    let sup = Supervisor::new(sink.clone(), telemetry.clone(), fast_options());
    sup.reconcile(vec![spec("chatty", &[script.to_str().unwrap()])])
        .await;
    let stats = telemetry.probe("chatty");
    // 9 lines on stderr; the unterminated one is only complete at EOF (shutdown).
    assert!(
        eventually(Duration::from_secs(10), || stats
            .log_lines
            .load(Ordering::Relaxed)
            >= 8)
        .await
    );
    sup.shutdown().await;
    assert_eq!(stats.log_lines.load(Ordering::Relaxed), 9);
    assert_eq!(sink.lines("chatty"), vec!["|t|1|".to_string()]);

    let log = capture.text();
    let line_with = |needle: &str| -> String {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no log line with {needle:?} in:\n{log}"))
            .to_string()
    };
    for (needle, level) in [
        ("tick 1", "DEBUG"),
        ("started", "INFO"),
        ("low memory", "WARN"),
        ("boom", "ERROR"),
        ("no prefix here", "INFO"),
        ("after the long line", "INFO"),
        ("unterminated", "INFO"),
    ] {
        let line = line_with(needle);
        assert!(line.contains(level), "{line}");
        assert!(line.contains("probe=chatty"), "{line}");
        assert!(
            !line.contains("[ERROR]") && !line.contains("[WARN]"),
            "{line}"
        );
    }
    assert!(line_with("bad ").contains("bad \u{FFFD} byte"));
    let long = line_with("xxxxxxxx");
    assert!(long.contains("[truncated]"), "long line not marked");
    let xs = long.bytes().filter(|&b| b == b'x').count();
    assert!(xs <= 64 * 1024 + 16, "long line kept {xs} bytes");
    assert!(xs >= 60 * 1024, "long line cut too short: {xs}");
}

#[tokio::test]
async fn stderr_flood_is_rate_limited() {
    let (capture, _guard) = Capture::install();

    let dir = tempfile::tempdir().unwrap();
    let done = dir.path().join("done");
    let script = write_script(
        dir.path(),
        "flood",
        &format!(
            "timeout 2 yes '[INFO] flooding the log' >&2\ntouch {}\nexec sleep 1000",
            done.display()
        ),
    );
    let sink = TestSink::new();
    let telemetry = Arc::new(Telemetry::default());
    let sup = Supervisor::new(sink.clone(), telemetry.clone(), fast_options());
    let started = std::time::Instant::now();
    sup.reconcile(vec![spec("flood", &[script.to_str().unwrap()])])
        .await;
    assert!(eventually(Duration::from_secs(30), || done.exists()).await);
    let secs = started.elapsed().as_secs();
    sup.shutdown().await;
    let stats = telemetry.probe("flood");
    let total = stats.log_lines.load(Ordering::Relaxed);
    assert!(total > 10_000, "the flood was too small to test: {total}");

    let log = capture.text();
    let logged = log
        .lines()
        .filter(|l| l.contains("flooding the log"))
        .count() as u64;
    // 50 lines per second per probe, plus one window of slack at either end.
    let bound = 50 * (secs + 2);
    assert!(
        logged <= bound,
        "{logged} flood lines logged in {secs} s (bound {bound})"
    );
    assert!(logged >= 10, "the rate limit dropped everything: {logged}");
    let suppressed = stats.log_limit.suppressed_total();
    assert!(
        suppressed > 0 && suppressed <= total,
        "{suppressed} of {total}"
    );
    assert!(
        log.lines().any(|l| l.contains("suppressed")),
        "no summary of suppressed lines"
    );
}
