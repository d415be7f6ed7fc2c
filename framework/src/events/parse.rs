//! `|event|…|` lines into [`Event`]s. Two layouts are accepted (values after the table name):
//!
//! * v2023 (what `probe-sdk` emits), 6 values:
//!   `EntityName|EntityID|metric|SeverityText|SeverityNumber|Body`
//! * HEAD, 12 values:
//!   `EntityName|EntityID|metric|PID|COMM|IP|ContainerID|POD|Device|SeverityText|SeverityNumber|Body`
//!
//! Values arrive raw (as the wire parser split them) and are unescaped here.

use crate::message::{Event, HeadLabels};
use crate::wire::{unescape_into, value_is_absent};

/// Why an event line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Neither 6 nor 12 values.
    #[error("event line has {0} values, expected 6 (v2023) or 12 (HEAD)")]
    FieldCount(usize),
    /// EntityName, EntityID or metric is empty.
    #[error("event line has an empty {0}")]
    Empty(&'static str),
    /// Neither the severity text nor the number is known.
    #[error("event line has an unknown severity {text:?}/{number:?}")]
    Severity {
        /// Severity text as given.
        text: String,
        /// Severity number as given.
        number: String,
    },
}

const SEVERITIES: [(&str, u8); 4] = [("INFO", 9), ("WARN", 13), ("ERROR", 17), ("FATAL", 21)];

/// Severity from the line: a known text wins (a missing or bad number is filled in); else an
/// OpenTelemetry number 1..=24 names its range.
fn severity(text: &str, number: &str) -> Option<(String, u8)> {
    let num: Option<u8> = number.trim().parse().ok().filter(|n| (1..=24).contains(n));
    let upper = text.trim().to_ascii_uppercase();
    let upper = if upper == "WARNING" {
        "WARN".to_string()
    } else {
        upper
    };
    if let Some((t, n)) = SEVERITIES.iter().find(|(t, _)| *t == upper) {
        return Some((t.to_string(), num.unwrap_or(*n)));
    }
    let n = num?;
    let t = match n {
        1..=4 => "TRACE",
        5..=8 => "DEBUG",
        9..=12 => "INFO",
        13..=16 => "WARN",
        17..=20 => "ERROR",
        _ => "FATAL",
    };
    Some((t.to_string(), n))
}

fn unescape(raw: &str) -> String {
    let mut s = String::with_capacity(raw.len());
    if !value_is_absent(raw) {
        unescape_into(raw, &mut s);
    }
    s
}

/// Parse the values of an `|event|…|` line.
pub fn parse_event(raw: &[&str]) -> Result<Event, EventError> {
    let (head, sev_at) = match raw.len() {
        6 => (None, 3),
        12 => (
            Some(HeadLabels {
                pid: unescape(raw[3]),
                comm: unescape(raw[4]),
                ip: unescape(raw[5]),
                container_id: unescape(raw[6]),
                pod: unescape(raw[7]),
                device: unescape(raw[8]),
            }),
            9,
        ),
        n => return Err(EventError::FieldCount(n)),
    };
    let entity_name = unescape(raw[0]);
    let entity_id = unescape(raw[1]);
    let metric = unescape(raw[2]);
    for (what, v) in [
        ("EntityName", &entity_name),
        ("EntityID", &entity_id),
        ("metric", &metric),
    ] {
        if v.is_empty() {
            return Err(EventError::Empty(what));
        }
    }
    let text = unescape(raw[sev_at]);
    let number = unescape(raw[sev_at + 1]);
    let Some((severity_text, severity_number)) = severity(&text, &number) else {
        return Err(EventError::Severity { text, number });
    };
    Ok(Event {
        entity_name,
        entity_id,
        metric,
        severity_text,
        severity_number,
        body: unescape(raw[sev_at + 2]),
        labels: head,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2023_layout_unescaped() {
        let e = parse_event(&["fs", "/a\\|b", "UsePer", "WARN", "13", "x\\ny \\\\ \"q\""]).unwrap();
        assert_eq!(e.entity_id, "/a|b");
        assert_eq!(e.body, "x\ny \\ \"q\"");
        assert_eq!((e.severity_text.as_str(), e.severity_number), ("WARN", 13));
        assert!(e.labels.is_none());
    }

    #[test]
    fn head_layout_keeps_labels() {
        let e = parse_event(&[
            "proc",
            "42",
            "syscall_failed",
            "42",
            "nginx",
            "",
            "abc",
            "(null)",
            "",
            "ERROR",
            "17",
            "b",
        ])
        .unwrap();
        let l = e.labels.unwrap();
        assert_eq!(
            (l.pid.as_str(), l.comm.as_str(), l.container_id.as_str()),
            ("42", "nginx", "abc")
        );
        assert_eq!(l.pod, "");
        assert_eq!(e.severity_number, 17);
    }

    #[test]
    fn severity_rules() {
        assert_eq!(severity("warn", ""), Some(("WARN".into(), 13)));
        assert_eq!(severity("FATAL", "x"), Some(("FATAL".into(), 21)));
        assert_eq!(severity("?", "10"), Some(("INFO".into(), 10)));
        assert_eq!(severity("?", "99"), None);
        assert_eq!(severity("", ""), None);
    }

    #[test]
    fn refusals() {
        assert_eq!(parse_event(&["a", "b"]), Err(EventError::FieldCount(2)));
        assert_eq!(
            parse_event(&["a", "", "m", "WARN", "13", "b"]),
            Err(EventError::Empty("EntityID"))
        );
        assert!(matches!(
            parse_event(&["a", "b", "m", "LOUD", "0", "b"]),
            Err(EventError::Severity { .. })
        ));
    }
}
