//! End-to-end: the real daemon, real probe processes, real HTTP scrapes.

mod daemon_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use daemon_support::*;

fn copy_golden_probe(probes: &Path) {
    let src = workspace().join("framework/tests/fixtures/golden/probes");
    for f in ["golden.sh", "golden.meta"] {
        std::fs::copy(src.join(f), probes.join(f)).unwrap();
    }
}

/// The scraped probe series equal the checked-in golden text (`UPDATE_GOLDEN=1` rewrites it).
#[test]
fn golden_scrape() {
    let d = Daemon::start(60, "", copy_golden_probe);
    d.wait_scrape("gala_gopher_golden_threads", Duration::from_secs(10));
    // Two full probe periods so every line of the fixture was seen at least once.
    std::thread::sleep(Duration::from_millis(2200));
    let scrape = d.scrape();
    let got = probe_part(&scrape);
    let golden = workspace().join("framework/tests/golden/golden.prom");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden).expect("golden file");
    assert_eq!(got, want, "scrape differs from {}", golden.display());

    // Scrapes are non-destructive: a second scraper sees the same series.
    assert_eq!(probe_part(&d.scrape()), want);

    // Every broken line was dropped and counted under its reason.
    let dropped = |reason: &str| {
        sample(
            &scrape,
            &format!(
                "gala_gopher_self_probe_dropped_lines_total{{probe=\"golden\",reason=\"{reason}\""
            ),
        )
        .unwrap_or(0.0)
    };
    for reason in [
        "empty_key",
        "field_count",
        "bad_value",
        "unknown_table",
        "malformed",
    ] {
        assert!(
            dropped(reason) >= 1.0,
            "no {reason} drop counted:\n{scrape}"
        );
    }
    assert!(sample(&scrape, "gala_gopher_self_probe_up{probe=\"golden\"").unwrap() == 1.0);
    let status = d.status();
    let golden_status = status["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "golden")
        .expect("golden in /status");
    assert_eq!(golden_status["state"], "running");
    assert!(golden_status["records"].as_u64().unwrap() >= 5);
    assert!(
        d.log().contains("a probe log line"),
        "probe log line reaches the daemon log"
    );
}

/// `promtool check metrics` accepts the exposition (format and lint).
#[test]
fn promtool_accepts_scrape() {
    let d = Daemon::start(60, "", copy_golden_probe);
    let scrape = d.wait_scrape("gala_gopher_golden_threads", Duration::from_secs(10));
    let (code, report) = promtool_check(&scrape);
    assert_eq!(code, Some(0), "promtool: {report}\n{scrape}");
}

#[test]
fn not_found_and_method_not_allowed() {
    let d = Daemon::start(60, "", |_| {});
    assert_eq!(http(d.port, "GET", "/").unwrap().0, 200);
    assert_eq!(http(d.port, "GET", "/foo").unwrap().0, 404);
    assert_eq!(http(d.port, "POST", "/metrics").unwrap().0, 405);
    assert_eq!(http(d.port, "DELETE", "/").unwrap().0, 405);
}

#[test]
fn timestamps_option_adds_millisecond_timestamps() {
    let d = Daemon::start_env(
        60,
        "",
        &[("GALA_GOPHER_WEB_SERVER__TIMESTAMPS", "true")],
        copy_golden_probe,
    );
    let scrape = d.wait_scrape("gala_gopher_golden_threads", Duration::from_secs(10));
    let line = scrape
        .lines()
        .find(|l| l.starts_with("gala_gopher_golden_threads{"))
        .unwrap();
    let ts: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        ts <= now && now - ts < 60_000,
        "timestamp {ts} vs now {now}"
    );
}

/// Drop-in: a script + meta copied into the running daemon's probes dir starts; removing it
/// stops the process and its series expire.
#[test]
fn drop_in_appears_and_expires() {
    let d = Daemon::start(2, "", |_| {});
    let probes = d.probes_dir();
    std::fs::write(
        probes.join("dropin.meta"),
        "version = \"1.0.0\"\nmeasurements: ({ table_name: \"dropin\"; entity_name: \"dropin\"; fields: (\
         { description: \"k\"; type: \"key\"; name: \"k\"; }, { description: \"v\"; type: \"gauge\"; name: \"v\"; }); });\n",
    )
    .unwrap();
    write_script(
        &probes.join("dropin.sh"),
        "#!/bin/sh\necho $$ > \"$(dirname \"$0\")/dropin.pid\"\nwhile :; do echo '|dropin|a|42|'; sleep 0.5; done\n",
    );
    let scrape = d.wait_scrape("gala_gopher_dropin_v{k=\"a\"", Duration::from_secs(10));
    assert_eq!(sample(&scrape, "gala_gopher_dropin_v{k=\"a\""), Some(42.0));
    let pid: i32 = wait_for(Duration::from_secs(5), || {
        std::fs::read_to_string(probes.join("dropin.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    })
    .unwrap();
    assert!(alive(pid));
    std::fs::remove_file(probes.join("dropin.sh")).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || (!alive(pid)).then_some(())).is_some(),
        "drop-in process still running after removal"
    );
    assert!(
        wait_for(Duration::from_secs(10), || {
            (!d.scrape().contains("gala_gopher_dropin_v")).then_some(())
        })
        .is_some(),
        "series did not expire"
    );
}

/// Daemon SIGTERM: a probe that ignores SIGTERM and forks grandchildren (one in its group, one
/// double-forked into its own session) leaves nothing behind; the daemon exits 0 within 5 s.
#[test]
fn stop_leaves_no_process_behind() {
    let d = Daemon::start(60, "", |probes| {
        std::fs::write(
            probes.join("stubborn.meta"),
            "version = \"1.0.0\"\nmeasurements: ()\n",
        )
        .unwrap();
        write_script(
            &probes.join("stubborn.sh"),
            "#!/bin/sh\ntrap '' TERM\ndir=$(dirname \"$0\")\nsleep 1000 &\necho $! > \"$dir/child.pid\"\n\
             setsid sh -c 'echo $$ > \"$1/orphan.pid\"; exec sleep 1000' _ \"$dir\" &\n\
             echo $$ > \"$dir/stubborn.pid\"\nwhile :; do sleep 1; done\n",
        );
    });
    let probes = d.probes_dir();
    let read_pid = |f: &str| -> Option<i32> {
        std::fs::read_to_string(probes.join(f))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let pids: Vec<i32> = wait_for(Duration::from_secs(10), || {
        Some(vec![
            read_pid("stubborn.pid")?,
            read_pid("child.pid")?,
            read_pid("orphan.pid")?,
        ])
    })
    .expect("stubborn probe wrote its pids");
    std::thread::sleep(Duration::from_millis(300));
    assert!(pids.iter().all(|p| alive(*p)), "all started");
    let (status, took, log) = d.stop();
    assert_eq!(status.code(), Some(0), "exit status; log:\n{log}");
    assert!(
        took < Duration::from_secs(5),
        "stop took {took:?}; log:\n{log}"
    );
    for p in pids {
        assert!(!alive(p), "pid {p} survived daemon stop; log:\n{log}");
    }
}

/// A probe printing 100 MB of random bytes neither grows the daemon past its bounds nor
/// disturbs another probe's data.
#[test]
fn random_bytes_probe_is_contained() {
    let d = Daemon::start(60, "", |probes| {
        std::fs::write(
            probes.join("noisy.meta"),
            "version = \"1.0.0\"\nmeasurements: ()\n",
        )
        .unwrap();
        write_script(
            &probes.join("noisy.sh"),
            "#!/bin/sh\nhead -c 100000000 /dev/urandom\necho done > \"$(dirname \"$0\")/noisy.done\"\nexec sleep 1000\n",
        );
        std::fs::write(
            probes.join("calm.meta"),
            "version = \"1.0.0\"\nmeasurements: ({ table_name: \"calm\"; entity_name: \"calm\"; fields: (\
             { description: \"k\"; type: \"key\"; name: \"k\"; }, { description: \"n\"; type: \"counter\"; name: \"n\"; }); });\n",
        )
        .unwrap();
        write_script(
            &probes.join("calm.sh"),
            "#!/bin/sh\ni=0\nwhile :; do i=$((i+1)); echo \"|calm|x|$i|\"; sleep 0.2; done\n",
        );
    });
    let done = wait_for(Duration::from_secs(120), || {
        d.probes_dir().join("noisy.done").exists().then_some(())
    });
    assert!(done.is_some(), "noisy probe finished writing");
    std::thread::sleep(Duration::from_millis(500));
    let scrape = d.scrape();
    let n1 = sample(&scrape, "gala_gopher_calm_n{k=\"x\"").expect("calm series present");
    std::thread::sleep(Duration::from_millis(1000));
    let n2 = sample(&d.scrape(), "gala_gopher_calm_n{k=\"x\"").unwrap();
    assert!(n2 > n1, "calm probe keeps updating ({n1} -> {n2})");
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let hwm_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(hwm_kb < 64 * 1024, "daemon peak RSS {hwm_kb} kB");
    let calm_drops: f64 = scrape
        .lines()
        .filter(|l| l.starts_with("gala_gopher_self_probe_dropped_lines_total{probe=\"calm\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(calm_drops, 0.0, "calm probe lost nothing");
    let noisy_lines = sample(
        &scrape,
        "gala_gopher_self_probe_log_lines_total{probe=\"noisy\"",
    )
    .unwrap();
    assert!(
        noisy_lines > 1000.0,
        "noisy output was counted ({noisy_lines})"
    );
}

/// A probe that keeps crashing is restarted with backoff and shows up in status and metrics.
#[test]
fn crashing_probe_is_restarted() {
    let d = Daemon::start(60, "", |probes| {
        std::fs::write(
            probes.join("crashy.meta"),
            "version = \"1.0.0\"\nmeasurements: ()\n",
        )
        .unwrap();
        write_script(
            &probes.join("crashy.sh"),
            "#!/bin/sh\necho '[ERROR] boom' >&2\nexit 7\n",
        );
    });
    let restarts = wait_for(Duration::from_secs(15), || {
        let s = d.scrape();
        sample(&s, "gala_gopher_self_probe_restarts_total{probe=\"crashy\"").filter(|n| *n >= 2.0)
    });
    assert!(restarts.is_some(), "restarts counted; log:\n{}", d.log());
    let st = d.status();
    let crashy = st["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "crashy")
        .unwrap();
    assert!(
        crashy["last_error"].as_str().unwrap_or("").contains("7"),
        "{crashy}"
    );
}

#[test]
fn bad_config_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("bad.conf");
    std::fs::write(
        &conf,
        "global = { log_level = \"info\"; };\nweb_server = {\n  port = \"eighty\";\n};\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gala-gopher"))
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:3", conf.display())), "{err}");
    assert!(err.contains("web_server.port"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_gala-gopher"))
        .args(["--check-config", "-c"])
        .arg(workspace().join("conf/gala-gopher.conf"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// SIGHUP re-reads the probe lists: a drop-in switched off in the config starts after the file
/// switches it on; an invalid file is reported and ignored.
#[test]
fn sighup_applies_probe_switches() {
    let meta = "version = \"1.0.0\"\nmeasurements: ({ table_name: \"hup\"; entity_name: \"hup\"; fields: (\
                { description: \"k\"; type: \"key\"; name: \"k\"; }, { description: \"v\"; type: \"gauge\"; name: \"v\"; }); });\n";
    let d = Daemon::start(
        60,
        "probes = ( { name = \"hup\"; switch = \"off\"; } );",
        |probes| {
            std::fs::write(probes.join("hup.meta"), meta).unwrap();
            write_script(
                &probes.join("hup.sh"),
                "#!/bin/sh\nwhile :; do echo '|hup|a|1|'; sleep 0.3; done\n",
            );
        },
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !d.scrape().contains("gala_gopher_hup_v"),
        "switched-off drop-in must not run"
    );
    let conf = d.dir.path().join("gala-gopher.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, text.replace("switch = \"off\"", "switch = \"on\"")).unwrap();
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(d.pid(), libc::SIGHUP) };
    d.wait_scrape("gala_gopher_hup_v{k=\"a\"", Duration::from_secs(10));
    // A broken file is rejected on reload; the daemon keeps running with what it had.
    std::fs::write(&conf, "web_server = { port = \"x\" ").unwrap();
    unsafe { libc::kill(d.pid(), libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(500));
    assert!(d.scrape().contains("gala_gopher_hup_v{k=\"a\""));
    assert!(
        d.log().contains("configuration not reloaded"),
        "{}",
        d.log()
    );
    let s = d.scrape();
    assert!(
        s.contains("gala_gopher_self_config_reloads_total{outcome=\"applied\"")
            && s.lines().any(|l| l
                .starts_with("gala_gopher_self_config_reloads_total{outcome=\"failed\"")
                && l.ends_with(" 1")),
        "reloads counted:\n{s}"
    );
}
