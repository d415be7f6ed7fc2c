//! The event JSON of upstream v2023 (Kafka event topic and `gopher_event_*` files), spacing kept
//! byte for byte, strings JSON-escaped (upstream printed them raw, so a quote in a body broke
//! the document):
//!
//! `{"Timestamp": TS, "event_id": "TS_ENT", "Attributes": { "entity_id": "ENT", "event_id": "TS_ENT", "event_type": "sys"}, "Resource": { "metric": "gala_gopher_E_m"}, "SeverityText": "WARN","SeverityNumber": 13,"Body": "…"}`
//!
//! For HEAD-layout lines `Resource` also carries HEAD's `labels` object:
//! `"Resource": { "metric": "…", "labels": {"Host": "M", "PID": "…", "COMM": "…", "IP": "…", "ContainerID": "…", "POD": "…", "Device": "…"}}`.

use std::io::Write as _;

use crate::message::json::push_str;
use crate::message::{Event, EventIds};

/// Render the event document (no newline). `body` is the (possibly translated) body.
pub fn event_json(
    ev: &Event,
    ids: &EventIds,
    body: &str,
    machine_id: &str,
    time_ms: u64,
    out: &mut Vec<u8>,
) {
    let _ = write!(out, "{{\"Timestamp\": {time_ms}, \"event_id\": ");
    push_str(out, &ids.event_id);
    out.extend_from_slice(b", \"Attributes\": { \"entity_id\": ");
    push_str(out, &ids.entity_id);
    out.extend_from_slice(b", \"event_id\": ");
    push_str(out, &ids.event_id);
    out.extend_from_slice(b", \"event_type\": \"sys\"}, \"Resource\": { \"metric\": ");
    push_str(out, &ids.metric);
    if let Some(l) = &ev.labels {
        out.extend_from_slice(b", \"labels\": {");
        let host = [("Host", machine_id)];
        for (i, (k, v)) in host.into_iter().chain(l.named()).enumerate() {
            if i > 0 {
                out.extend_from_slice(b", ");
            }
            push_str(out, k);
            out.extend_from_slice(b": ");
            push_str(out, v);
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"}, \"SeverityText\": ");
    push_str(out, &ev.severity_text);
    let _ = write!(
        out,
        ",\"SeverityNumber\": {},\"Body\": ",
        ev.severity_number
    );
    push_str(out, body);
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::parse::parse_event;

    #[test]
    fn matches_upstream_v2023_shape() {
        let ev = parse_event(&[
            "cpu",
            "cpu",
            "total_used_per",
            "WARN",
            "13",
            "Tue Apr 18 20:59:09 2023 WARN Entity(cpu) Too high cpu utilization(95.00%).",
        ])
        .unwrap();
        let ids = EventIds::new(&ev, "M", 1681822749000);
        let mut out = Vec::new();
        event_json(&ev, &ids, &ev.body, "M", 1681822749000, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"Timestamp": 1681822749000, "event_id": "1681822749000_M_cpu_cpu", "Attributes": { "entity_id": "M_cpu_cpu", "event_id": "1681822749000_M_cpu_cpu", "event_type": "sys"}, "Resource": { "metric": "gala_gopher_cpu_total_used_per"}, "SeverityText": "WARN","SeverityNumber": 13,"Body": "Tue Apr 18 20:59:09 2023 WARN Entity(cpu) Too high cpu utilization(95.00%)."}"#
        );
    }

    #[test]
    fn entity_id_slashes_and_escaping() {
        let ev =
            parse_event(&["fs", "/home", "UsePer", "WARN", "13", "a \"b\" \\\\ c\\nd"]).unwrap();
        let ids = EventIds::new(&ev, "M", 5);
        assert_eq!(ids.entity_id, "M_fs_:home");
        assert_eq!(ids.metric, "gala_gopher_fs_UsePer");
        let mut out = Vec::new();
        event_json(&ev, &ids, &ev.body, "M", 5, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["Body"], "a \"b\" \\ c\nd");
        assert_eq!(v["Attributes"]["entity_id"], "M_fs_:home");
    }

    #[test]
    fn head_labels_are_valid_json() {
        let ev = parse_event(&[
            "proc",
            "7",
            "hang_count",
            "7",
            "a\"b",
            "",
            "",
            "",
            "",
            "WARN",
            "13",
            "x",
        ])
        .unwrap();
        let ids = EventIds::new(&ev, "M", 5);
        let mut out = Vec::new();
        event_json(&ev, &ids, &ev.body, "M", 5, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["Resource"]["labels"]["COMM"], "a\"b");
        assert_eq!(v["Resource"]["labels"]["Host"], "M");
    }
}
