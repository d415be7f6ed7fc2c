//! What a reload (SIGHUP) can apply: the probe lists. Everything else needs a restart, and the
//! daemon says which keys those are instead of silently keeping the old values.

use serde_json::Value;

use super::model::GopherConfig;

/// Top-level keys a reload applies without a restart.
pub const RELOADABLE: &[&str] = &["probes", "extend_probes"];

/// Dotted keys (`web_server.port`) whose value differs between the running configuration and
/// `new`, outside [`RELOADABLE`], sorted. Values are compared, never reported (some are secrets).
pub fn restart_required(running: &GopherConfig, new: &GopherConfig) -> Vec<String> {
    let mut out = Vec::new();
    match (serde_json::to_value(running), serde_json::to_value(new)) {
        (Ok(Value::Object(a)), Ok(Value::Object(b))) => {
            for (section, old) in &a {
                if RELOADABLE.contains(&section.as_str()) {
                    continue;
                }
                diff(
                    section,
                    old,
                    b.get(section).unwrap_or(&Value::Null),
                    &mut out,
                );
            }
        }
        // Unreachable for this model (every field serializes); say something rather than nothing.
        _ if running != new => out.push("(configuration)".to_string()),
        _ => {}
    }
    out.sort();
    out
}

fn diff(key: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (name, v) in a {
                diff(
                    &format!("{key}.{name}"),
                    v,
                    b.get(name).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        _ if old != new => out.push(key.to_string()),
        _ => {}
    }
}
