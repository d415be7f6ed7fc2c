//! Self-metrics in Prometheus text: `gala_gopher_self_*`.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::{DropReason, ProbeState, Telemetry};
use crate::store::{escape_label_value, TableStore};

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One per-probe sample: `name{probe="..",[extra="..",]machine_id=".."} value`.
fn probe_sample(
    out: &mut String,
    name: &str,
    probe: &str,
    extra: Option<(&str, &str)>,
    mid: &str,
    value: impl std::fmt::Display,
) {
    out.push_str(name);
    out.push_str("{probe=\"");
    escape_label_value(probe, out);
    out.push('"');
    if let Some((k, v)) = extra {
        let _ = write!(out, ",{k}=\"{v}\"");
    }
    let _ = writeln!(out, ",machine_id=\"{mid}\"}} {value}");
}

/// Append the daemon's own metrics.
pub fn render_self_metrics(tel: &Telemetry, store: &TableStore, out: &mut String) {
    let probes = tel.probes();
    let mid = {
        let mut s = String::new();
        escape_label_value(store.machine_id(), &mut s);
        s
    };
    let per_probe = |out: &mut String,
                     name: &str,
                     kind: &str,
                     help: &str,
                     f: &dyn Fn(&super::ProbeStats) -> String| {
        if probes.is_empty() {
            return;
        }
        header(out, name, kind, help);
        for p in &probes {
            probe_sample(out, name, &p.name, None, &mid, f(p));
        }
    };
    per_probe(
        out,
        "gala_gopher_self_probe_records_total",
        "counter",
        "Records accepted from the probe.",
        &|p| p.records.load(Ordering::Relaxed).to_string(),
    );
    per_probe(
        out,
        "gala_gopher_self_probe_restarts_total",
        "counter",
        "Times the probe process was restarted after exiting.",
        &|p| p.restarts.load(Ordering::Relaxed).to_string(),
    );
    per_probe(
        out,
        "gala_gopher_self_probe_log_lines_total",
        "counter",
        "Non-record output lines (stdout and stderr) from the probe.",
        &|p| p.log_lines.load(Ordering::Relaxed).to_string(),
    );
    per_probe(
        out,
        "gala_gopher_self_probe_log_lines_suppressed_total",
        "counter",
        "Probe log lines not written to the daemon log (rate limit, stdout and stderr together).",
        &|p| p.log_limit.suppressed_total().to_string(),
    );
    per_probe(
        out,
        "gala_gopher_self_probe_orphans_killed_total",
        "counter",
        "Processes a probe left behind (escaped children, setsid grandchildren) killed when its run ended.",
        &|p| p.orphans_killed.load(Ordering::Relaxed).to_string(),
    );
    per_probe(
        out,
        "gala_gopher_self_probe_control_lines_total",
        "counter",
        "Run-time settings sent to the probe over its control channel (stdin).",
        &|p| p.control_lines.load(Ordering::Relaxed).to_string(),
    );
    per_probe(
        out,
        "gala_gopher_self_probe_control_errors_total",
        "counter",
        "Control-channel writes that failed (the probe did not read its stdin in time, or was gone).",
        &|p| p.control_errors.load(Ordering::Relaxed).to_string(),
    );
    per_probe(
        out,
        "gala_gopher_self_probe_up",
        "gauge",
        "1 if the probe process is running.",
        &|p| u8::from(p.up.load(Ordering::Relaxed)).to_string(),
    );
    per_probe(
        out,
        "gala_gopher_self_probe_last_record_timestamp_seconds",
        "gauge",
        "Unix time of the last accepted record (0 if none).",
        &|p| {
            format!(
                "{:.3}",
                p.last_record_ms.load(Ordering::Relaxed) as f64 / 1000.0
            )
        },
    );
    if !probes.is_empty() {
        let name = "gala_gopher_self_probe_state";
        header(
            out,
            name,
            "gauge",
            "Probe lifecycle state (1 for the current state).",
        );
        for p in &probes {
            let cur = p.state();
            for st in [
                ProbeState::Stopped,
                ProbeState::Running,
                ProbeState::Backoff,
                ProbeState::Failed,
            ] {
                let value = u8::from(cur == st);
                probe_sample(
                    out,
                    name,
                    &p.name,
                    Some(("state", st.as_str())),
                    &mid,
                    value,
                );
            }
        }
        let name = "gala_gopher_self_probe_dropped_lines_total";
        header(
            out,
            name,
            "counter",
            "Probe output lines or values dropped, by reason.",
        );
        for p in &probes {
            for r in DropReason::ALL {
                let value = p.dropped(r);
                probe_sample(
                    out,
                    name,
                    &p.name,
                    Some(("reason", r.as_str())),
                    &mid,
                    value,
                );
            }
        }
    }
    let tables = store.series_per_table();
    header(
        out,
        "gala_gopher_self_store_series",
        "gauge",
        "Live series (rows) in the table store, per table.",
    );
    for (t, n) in &tables {
        out.push_str("gala_gopher_self_store_series{table=\"");
        escape_label_value(t, out);
        let _ = writeln!(out, "\",machine_id=\"{mid}\"}} {n}");
    }
    let c = &store.counters;
    header(
        out,
        "gala_gopher_self_store_dropped_total",
        "counter",
        "Records refused by the table store caps, by limit.",
    );
    let _ = writeln!(
        out,
        "gala_gopher_self_store_dropped_total{{limit=\"max_tables_num\",machine_id=\"{mid}\"}} {}",
        c.dropped_table_limit.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "gala_gopher_self_store_dropped_total{{limit=\"max_records_num\",machine_id=\"{mid}\"}} {}",
        c.dropped_record_limit.load(Ordering::Relaxed)
    );
    header(
        out,
        "gala_gopher_self_store_expired_total",
        "counter",
        "Rows removed after record_timeout without update.",
    );
    let _ = writeln!(
        out,
        "gala_gopher_self_store_expired_total{{machine_id=\"{mid}\"}} {}",
        c.expired.load(Ordering::Relaxed)
    );
    header(
        out,
        "gala_gopher_self_scrape_duration_seconds",
        "gauge",
        "Server time spent rendering the previous /metrics response.",
    );
    let _ = writeln!(
        out,
        "gala_gopher_self_scrape_duration_seconds{{machine_id=\"{mid}\"}} {:.6}",
        tel.last_scrape_us.load(Ordering::Relaxed) as f64 / 1e6
    );
    header(
        out,
        "gala_gopher_self_scrapes_total",
        "counter",
        "/metrics responses served.",
    );
    let _ = writeln!(
        out,
        "gala_gopher_self_scrapes_total{{machine_id=\"{mid}\"}} {}",
        tel.scrapes.load(Ordering::Relaxed)
    );
    header(
        out,
        "gala_gopher_self_config_reloads_total",
        "counter",
        "SIGHUP configuration reloads, by outcome (failed = invalid file, old configuration kept).",
    );
    for (outcome, n) in [
        ("applied", &tel.config_reloads),
        ("failed", &tel.config_reload_failures),
    ] {
        let _ = writeln!(
            out,
            "gala_gopher_self_config_reloads_total{{outcome=\"{outcome}\",machine_id=\"{mid}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    header(
        out,
        "gala_gopher_self_janitor_running",
        "gauge",
        "1 while the janitor process (kills what probes left if the daemon is killed) runs.",
    );
    let _ = writeln!(
        out,
        "gala_gopher_self_janitor_running{{machine_id=\"{mid}\"}} {}",
        u8::from(crate::supervisor::janitor::running())
    );
    super::render_sink_metrics(&tel.sinks.all(), &tel.events, &mid, out);
    super::render_discovery_metrics(&tel.discovery, &mid, out);
    super::render_http_metrics(&tel.http, &mid, out);
    super::render_flamegraph_metrics(&tel.flamegraph, &mid, out);
    tel.meta.render(&mid, out);
    tel.custom_labels.render(&mid, out);
    if let Some(c) = tel.containers.get() {
        c.render(&mid, out);
    }
    if let Some(c) = tel.snooper.get() {
        for (name, help, v) in [
            (
                "gala_gopher_self_snooper_events_total",
                "Process events (fork, exec, comm, exit) the snooper resolver received.",
                &c.events,
            ),
            (
                "gala_gopher_self_snooper_events_lost_total",
                "Times the kernel dropped process events (ENOBUFS); each is repaired by a /proc rescan.",
                &c.events_lost,
            ),
            (
                "gala_gopher_self_snooper_rescans_total",
                "Full /proc scans of the snooper resolver.",
                &c.rescans,
            ),
            (
                "gala_gopher_self_snooper_truncations_total",
                "Times a probe's resolved processes went over the 1000-pid cap (the excess left out).",
                &c.truncations,
            ),
            (
                "gala_gopher_self_snooper_pushes_total",
                "Resolved process sets published to probes.",
                &c.pushes,
            ),
        ] {
            header(out, name, "counter", help);
            let _ = writeln!(
                out,
                "{name}{{machine_id=\"{mid}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
    }
}
