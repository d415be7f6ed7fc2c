//! Shipped probes started by the real daemon (the binaries are built by `cargo test --workspace`).

mod daemon_support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use daemon_support::*;

/// Path of a workspace binary built next to this test (target/<profile>/<name>).
fn probe_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} not built: run the whole suite (`cargo test --workspace`, as build.sh --test does)",
        bin.display()
    );
    bin
}

/// Install a shipped probe (binary + its .meta) into a daemon's probes dir.
fn install_probe(probes: &Path, bin: &str, meta_dir: &str) {
    std::fs::copy(probe_bin(bin), probes.join(bin)).unwrap();
    std::fs::copy(
        workspace().join(meta_dir).join(format!("{bin}.meta")),
        probes.join(format!("{bin}.meta")),
    )
    .unwrap();
}

/// Upstream metric names (camelCase, `_kB`, counters without `_total`) draw promtool *lint*
/// warnings; the exposition must still parse (exit 1 would be a format error).
fn promtool_format_ok(scrape: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "promtool failed: {report}"
    );
    const NAMING_LINTS: [&str; 5] = [
        "should have \"_total\" suffix",
        "should not contain abbreviated units",
        "should be written in 'snake_case' not 'camelCase'",
        "should not have \"_count\" suffix",
        "should not have \"_sum\" suffix",
    ];
    for line in report.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            NAMING_LINTS.iter().any(|lint| line.contains(lint)),
            "promtool reported more than a naming lint: {line}"
        );
    }
}

#[test]
fn system_infos_through_daemon() {
    let d = Daemon::start(
        60,
        "probes = ( { name = \"system_infos\"; param = \"-t 1\"; switch = \"on\"; } );",
        |probes| install_probe(probes, "system_infos", "probes/system_infos"),
    );
    let scrape = d.wait_scrape("gala_gopher_cpu_total_used_per", Duration::from_secs(20));
    // Every family has HELP and TYPE; memory total equals /proc/meminfo exactly.
    for family in ["gala_gopher_cpu_total_used_per", "gala_gopher_mem_total_kB"] {
        assert!(
            scrape.contains(&format!("# HELP {family} ")),
            "{family} HELP"
        );
        assert!(
            scrape.contains(&format!("# TYPE {family} gauge")),
            "{family} TYPE"
        );
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kb: f64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap();
    let got = sample(&scrape, "gala_gopher_mem_total_kB{").expect("mem total series");
    assert_eq!(got, total_kb);
    let up = sample(&scrape, "gala_gopher_self_probe_up{probe=\"system_infos\"");
    assert_eq!(up, Some(1.0));
    promtool_format_ok(&scrape);
}
