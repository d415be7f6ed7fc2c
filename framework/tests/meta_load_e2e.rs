//! `.meta` loading in the real daemon: a huge drop-in meta is refused from its size (or field
//! count) before any expensive work, is not read again while unchanged, and never stalls other
//! probes or `/status`; a record whose value count differs from its table is logged once per shape.

mod daemon_support;

use std::path::Path;
use std::time::{Duration, Instant};

use daemon_support::*;

const WAIT: Duration = Duration::from_secs(30);

const GOOD_META: &str = "version = \"1.0.0\";\nmeasurements = ( { table_name = \"good_t\"; \
    entity_name = \"good\"; fields = ( { name = \"k\"; type = \"key\"; description = \"k\"; }, \
    { name = \"v\"; type = \"gauge\"; description = \"v\"; } ); } );\n";

/// A probe that writes a record every 50 ms.
fn good_probe(dir: &Path) {
    std::fs::write(dir.join("good.meta"), GOOD_META).unwrap();
    write_script(
        &dir.join("good.sh"),
        "#!/bin/sh\ni=0\nwhile :; do i=$((i+1)); echo \"|good_t|a|$i|\"; sleep 0.05; done\n",
    );
}

/// One table `entity_name` = `name` with `n` gauge fields, one per line.
fn wide_meta(name: &str, n: usize) -> String {
    let mut s = format!(
        "version = \"1.0.0\";\nmeasurements = ( {{ table_name = \"{name}_t\"; entity_name = \"{name}\"; fields = (\n"
    );
    for i in 0..n {
        let sep = if i + 1 == n { "" } else { "," };
        s.push_str(&format!(
            "  {{ name = \"f{i}\"; type = \"gauge\"; description = \"field {i}\"; }}{sep}\n"
        ));
    }
    s.push_str("); } );\n");
    s
}

fn probe_status(d: &Daemon, name: &str) -> Option<serde_json::Value> {
    d.status()["probes"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
}

fn records(d: &Daemon, name: &str) -> u64 {
    probe_status(d, name)
        .and_then(|p| p["records"].as_u64())
        .unwrap_or(0)
}

fn metric(d: &Daemon, prefix: &str) -> f64 {
    sample(&d.scrape(), prefix).unwrap_or(0.0)
}

fn lines_with(log: &str, needles: &[&str]) -> Vec<String> {
    log.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_string)
        .collect()
}

#[test]
fn huge_meta_is_refused_at_once_without_stalling_the_daemon_and_not_reread() {
    let d = Daemon::start(60, "", good_probe);
    wait_for(WAIT, || (records(&d, "good") > 0).then_some(()))
        .unwrap_or_else(|| panic!("good probe produced nothing; log:\n{}", d.log()));

    // 100,000 fields (about 6 MB): over the file-size limit. 20,000 compact fields (under
    // 1 MiB): over imdb.max_metrics_num. Metas first, so discovery sees each pair complete.
    let probes = d.probes_dir();
    std::fs::write(probes.join("big.meta"), wide_meta("big", 100_000)).unwrap();
    let mut wide = String::from("version = \"1.0.0\";\nmeasurements = ( { table_name = \"wide_t\"; entity_name = \"wide\"; fields = (\n");
    for i in 0..20_000 {
        wide.push_str(&format!("{{name=\"f{i}\";type=\"gauge\";}},\n"));
    }
    wide.push_str("{name=\"last\";type=\"gauge\";}\n); } );\n");
    assert!(wide.len() < 1 << 20);
    std::fs::write(probes.join("wide.meta"), wide).unwrap();
    write_script(&probes.join("big.sh"), "#!/bin/sh\nsleep 1000\n");
    write_script(&probes.join("wide.sh"), "#!/bin/sh\nsleep 1000\n");

    // While the daemon deals with them, /status answers quickly and the good probe's records
    // keep arriving.
    let refused = |d: &Daemon| {
        ["big", "wide"]
            .iter()
            .all(|n| probe_status(d, n).is_some_and(|p| p["state"] == "failed"))
    };
    let t0 = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut done_at: Option<Instant> = None;
    let mut records_at_done = 0;
    while t0.elapsed() < WAIT {
        let start = Instant::now();
        let ok = refused(&d);
        slowest = slowest.max(start.elapsed());
        match done_at {
            None if ok => {
                done_at = Some(Instant::now());
                records_at_done = records(&d, "good");
            }
            Some(at) if at.elapsed() > Duration::from_secs(2) => break,
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = d.log();
    assert!(done_at.is_some(), "big/wide not refused; log:\n{log}");
    assert!(
        slowest < Duration::from_secs(3),
        "/status took {slowest:?} while a huge .meta was loaded"
    );
    assert!(
        records(&d, "good") > records_at_done,
        "good probe stalled; log:\n{log}"
    );

    // One clear log line per refused file, naming the limit.
    let big_lines = lines_with(&log, &["big.meta", "refused"]);
    assert_eq!(big_lines.len(), 1, "log:\n{log}");
    assert!(big_lines[0].contains("1 MiB"), "{}", big_lines[0]);
    let wide_lines = lines_with(&log, &["wide.meta", "refused"]);
    assert_eq!(wide_lines.len(), 1, "log:\n{log}");
    assert!(
        wide_lines[0].contains("20001 fields") && wide_lines[0].contains("imdb.max_metrics_num"),
        "{}",
        wide_lines[0]
    );
    let big = probe_status(&d, "big").unwrap();
    assert!(
        big["last_error"].as_str().unwrap_or("").contains("1 MiB"),
        "{big}"
    );
    let refused_total = |d: &Daemon, reason: &str| {
        metric(
            d,
            &format!("gala_gopher_self_meta_refused_total{{reason=\"{reason}\""),
        )
    };
    assert_eq!(refused_total(&d, "too_large"), 1.0, "{}", d.scrape());
    assert_eq!(refused_total(&d, "too_many_fields"), 1.0, "{}", d.scrape());
    let loaded = metric(&d, "gala_gopher_self_meta_loads_total{outcome=\"loaded\"");
    assert!(loaded >= 3.0, "{}", d.scrape());

    // Replacing the scripts restarts both probes: their unchanged metas are answered from the
    // cache, neither read, counted nor logged again.
    write_script(&probes.join("big.sh"), "#!/bin/sh\n# v2\nsleep 1000\n");
    write_script(&probes.join("wide.sh"), "#!/bin/sh\n# v2\nsleep 1000\n");
    wait_for(WAIT, || {
        (metric(&d, "gala_gopher_self_meta_loads_total{outcome=\"cached\"") >= 2.0).then_some(())
    })
    .unwrap_or_else(|| panic!("metas not re-checked; log:\n{}", d.log()));
    assert_eq!(
        metric(&d, "gala_gopher_self_meta_loads_total{outcome=\"loaded\""),
        loaded
    );
    assert_eq!(refused_total(&d, "too_large"), 1.0);
    assert_eq!(refused_total(&d, "too_many_fields"), 1.0);
    let log = d.log();
    assert_eq!(
        lines_with(&log, &["big.meta", "refused"]).len(),
        1,
        "log:\n{log}"
    );
    assert_eq!(
        lines_with(&log, &["wide.meta", "refused"]).len(),
        1,
        "log:\n{log}"
    );
    // One "cannot prepare" line per probe, however often it is retried.
    assert_eq!(
        lines_with(&log, &["cannot prepare", "big"]).len(),
        1,
        "log:\n{log}"
    );

    // A changed file is read again.
    std::fs::write(probes.join("big.meta"), wide_meta("big", 3)).unwrap();
    wait_for(WAIT, || {
        probe_status(&d, "big").filter(|p| p["state"] == "running")
    })
    .unwrap_or_else(|| panic!("fixed meta not picked up; log:\n{}", d.log()));
}

#[test]
fn field_count_mismatch_is_logged_once_per_shape_with_both_numbers() {
    let d = Daemon::start(60, "", |dir| {
        std::fs::write(dir.join("mm.meta"), GOOD_META.replace("good", "mm")).unwrap();
        write_script(
            &dir.join("mm.sh"),
            "#!/bin/sh\nwhile :; do echo '|mm_t|a|1|'; echo '|mm_t|a|1|2|'; echo '|mm_t|a|'; \
             echo '|mm_t|a|1|2|'; sleep 0.02; done\n",
        );
    });
    let dropped = |d: &Daemon| {
        probe_status(d, "mm")
            .and_then(|p| p["dropped"]["field_count"].as_u64())
            .unwrap_or(0)
    };
    wait_for(WAIT, || (dropped(&d) >= 100).then_some(()))
        .unwrap_or_else(|| panic!("no field_count drops; log:\n{}", d.log()));
    let log = d.log();
    let lines = lines_with(&log, &["mm_t", "declares 2 fields"]);
    assert_eq!(
        lines.len(),
        2,
        "one line per (table, expected, got); log:\n{log}"
    );
    assert!(
        lines.iter().any(|l| l.contains("has 3 values")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains("has 1 value")), "{lines:?}");
    assert!(lines.iter().all(|l| l.contains("probe=mm")), "{lines:?}");
}
