//! The drop-in example probes in `probes/example/` run with `-t 1`, print records that match
//! their `.meta` (table name and field count), and exit 0 on SIGTERM.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use probe_sdk::record::split_line;

fn example_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../probes/example")
}

/// Reads `table_name` and the number of fields from a single-table `.meta` by simple means:
/// each field has exactly one `type:` entry.
fn meta_shape(meta: &Path) -> (String, usize) {
    let text = std::fs::read_to_string(meta).unwrap();
    let table = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("table_name:"))
        .map(|v| v.trim().trim_end_matches(',').trim_matches('"').to_string())
        .unwrap();
    let fields = text
        .lines()
        .filter(|l| l.trim_start().starts_with("type:"))
        .count();
    (table, fields)
}

/// Runs `probe -t 1` for ~2.5 s, sends SIGTERM, and returns (exit code, stdout lines, stderr).
fn run_for_a_while(probe: &Path) -> (Option<i32>, Vec<String>, String) {
    let mode = std::fs::metadata(probe).unwrap().permissions().mode();
    assert!(mode & 0o111 != 0, "{} is not executable", probe.display());
    let mut child = Command::new(probe)
        .args(["-t", "1"])
        .env(
            "GALA_GOPHER_SDK_DIR",
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{} ignored SIGTERM", probe.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (
        status.code(),
        out.lines().map(str::to_string).collect(),
        err,
    )
}

/// Checks every line parses as a record of the meta's table with the meta's field count.
fn parse_records(lines: &[String], meta: &Path) -> Vec<Vec<String>> {
    let (table, nfields) = meta_shape(meta);
    lines
        .iter()
        .map(|line| {
            let (t, fields) = split_line(line.as_bytes()).unwrap_or_else(|| panic!("{line}"));
            assert_eq!(String::from_utf8(t).unwrap(), table, "{line}");
            assert_eq!(fields.len(), nfields, "{line}");
            fields
                .into_iter()
                .map(|f| String::from_utf8(f).unwrap())
                .collect()
        })
        .collect()
}

fn percent(v: &str) -> f64 {
    let p: f64 = v.parse().unwrap_or_else(|_| panic!("not a number: {v}"));
    assert!((0.0..=100.0).contains(&p), "{v}");
    p
}

#[test]
fn shell_example_reports_upstream_table() {
    let dir = example_dir();
    let (code, lines, err) = run_for_a_while(&dir.join("example.sh"));
    assert_eq!(code, Some(0), "stderr: {err}");
    assert!(!lines.is_empty(), "no records; stderr: {err}");
    for f in parse_records(&lines, &dir.join("example.meta")) {
        assert_eq!(f[0], "system");
        percent(&f[1]);
        let mem = percent(&f[2]);
        assert!(mem > 0.0, "memory usage cannot be zero on a running system");
        f[3].parse::<u64>().unwrap();
    }
    assert!(err.starts_with("[INFO] "), "{err}");
}

/// Upstream histogram encoding: `N b1 c1 … bN cN sum max`, counts cumulative.
fn check_histogram(v: &str, calls: u64) {
    let tok: Vec<&str> = v.split(' ').collect();
    let n: usize = tok[0].parse().unwrap();
    assert!(n > 0);
    assert_eq!(tok.len(), 1 + 2 * n + 2, "{v}");
    let mut prev_bound = 0u64;
    let mut prev_count = 0u64;
    for i in 0..n {
        let bound: u64 = tok[1 + 2 * i].parse().unwrap();
        let count: u64 = tok[2 + 2 * i].parse().unwrap();
        assert!(bound > prev_bound, "{v}");
        assert!(count >= prev_count, "{v}");
        prev_bound = bound;
        prev_count = count;
    }
    assert_eq!(
        prev_count, calls,
        "last bucket holds every observation: {v}"
    );
    let sum: f64 = tok[1 + 2 * n].parse().unwrap();
    let max: f64 = tok[2 + 2 * n].parse().unwrap();
    assert!(sum > 0.0 && max > 0.0 && max <= sum, "{v}");
}

#[test]
fn python_example_reports_histogram_table() {
    let dir = example_dir();
    let (code, lines, err) = run_for_a_while(&dir.join("example_py.py"));
    assert_eq!(code, Some(0), "stderr: {err}");
    assert!(!lines.is_empty(), "no records; stderr: {err}");
    let records = parse_records(&lines, &dir.join("example_py.meta"));
    let mut paths: Vec<&str> = records.iter().map(|f| f[0].as_str()).collect();
    paths.sort_unstable();
    paths.dedup();
    assert!(paths.contains(&"/"), "{paths:?}");
    for f in &records {
        assert!(!f[1].is_empty(), "python_version label");
        f[2].parse::<f64>().unwrap();
        let calls: u64 = f[3].parse().unwrap();
        assert!(calls > 0);
        check_histogram(&f[4], calls);
    }
    assert!(err.starts_with("[INFO] "), "{err}");
}

#[test]
fn examples_reject_bad_period() {
    let dir = example_dir();
    for probe in ["example.sh", "example_py.py"] {
        let out = Command::new(dir.join(probe))
            .args(["-t", "0"])
            .env(
                "GALA_GOPHER_SDK_DIR",
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts"),
            )
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{probe}");
        assert_eq!(
            String::from_utf8(out.stderr).unwrap(),
            "[ERROR] -t: invalid value \"0\", expected 1..=3600\n",
            "{probe}"
        );
    }
}
