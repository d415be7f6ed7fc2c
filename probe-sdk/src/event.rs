//! Upstream (v2023) abnormal-event lines:
//! `|event|<EntityName>|<EntityID>|<metric>|<SeverityText>|<SeverityNumber>|<Body>|`
//!
//! Body is `asctime(localtime)` without its newline, then ` <SEV> Entity(<EntityID>) <message>`,
//! at most [`MAX_BODY_BYTES`] bytes, e.g.
//! `Tue Apr 18 20:59:09 2023 WARN Entity(cpu) Too high cpu utilization(95.00%).`

use std::io::{self, Write};

use crate::record::RecordWriter;

/// Upper bound of an event body, as upstream's body buffer.
pub const MAX_BODY_BYTES: usize = 512;

/// Event severity (OpenTelemetry severity numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// INFO, 9
    Info,
    /// WARN, 13
    Warn,
    /// ERROR, 17
    Error,
    /// FATAL, 21
    Fatal,
}

impl Severity {
    /// `INFO`, `WARN`, `ERROR` or `FATAL`.
    pub fn text(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Warn => "WARN",
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }

    /// 9, 13, 17 or 21.
    pub fn number(self) -> u8 {
        match self {
            Severity::Info => 9,
            Severity::Warn => 13,
            Severity::Error => 17,
            Severity::Fatal => 21,
        }
    }
}

/// A broken-down local time, enough for `asctime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CivilTime {
    /// Full year, e.g. 2023.
    pub year: i32,
    /// 1..=12
    pub month: u8,
    /// 1..=31
    pub day: u8,
    /// 0..=23
    pub hour: u8,
    /// 0..=59
    pub minute: u8,
    /// 0..=60 (leap second)
    pub second: u8,
    /// 0 = Sunday .. 6 = Saturday
    pub weekday: u8,
}

impl CivilTime {
    /// The current local time (per TZ / /etc/localtime), or `None` if the C library fails.
    pub fn local_now() -> Option<CivilTime> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        CivilTime::local_from_unix(i64::try_from(now).ok()?)
    }

    /// Converts seconds since the epoch to local time with `localtime_r`.
    pub fn local_from_unix(secs: i64) -> Option<CivilTime> {
        // time_t is 32 bits on some targets, so the conversion is not always a no-op.
        #[allow(clippy::useless_conversion)]
        let t: libc::time_t = secs.try_into().ok()?;
        // SAFETY: `tm` is plain old data that localtime_r fully initialises on success; both
        // pointers are valid for the call.
        let tm = unsafe {
            let mut tm: libc::tm = std::mem::zeroed();
            if libc::localtime_r(&t, &mut tm).is_null() {
                return None;
            }
            tm
        };
        Some(CivilTime {
            year: tm.tm_year + 1900,
            month: u8::try_from(tm.tm_mon + 1).ok()?,
            day: u8::try_from(tm.tm_mday).ok()?,
            hour: u8::try_from(tm.tm_hour).ok()?,
            minute: u8::try_from(tm.tm_min).ok()?,
            second: u8::try_from(tm.tm_sec).ok()?,
            weekday: u8::try_from(tm.tm_wday).ok()?,
        })
    }
}

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// C `asctime` layout without the trailing newline: `Tue Apr  8 20:59:09 2023`
/// (the day of month is right-aligned in 2 columns).
pub fn asctime(t: &CivilTime) -> String {
    let wday = WEEKDAYS
        .get(usize::from(t.weekday))
        .copied()
        .unwrap_or("???");
    let mon = usize::from(t.month)
        .checked_sub(1)
        .and_then(|m| MONTHS.get(m))
        .copied()
        .unwrap_or("???");
    format!(
        "{wday} {mon} {:>2} {:02}:{:02}:{:02} {}",
        t.day, t.hour, t.minute, t.second, t.year
    )
}

/// The event body: `<asctime> <SEV> Entity(<entity_id>) <message>`, cut to [`MAX_BODY_BYTES`]
/// at a character boundary.
pub fn event_body(time: &CivilTime, sev: Severity, entity_id: &str, message: &str) -> String {
    let mut body = format!(
        "{} {} Entity({}) {}",
        asctime(time),
        sev.text(),
        entity_id,
        message
    );
    if body.len() > MAX_BODY_BYTES {
        let mut cut = MAX_BODY_BYTES;
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        body.truncate(cut);
    }
    body
}

impl<W: Write> RecordWriter<W> {
    /// Buffers one event line stamped with the current local time.
    pub fn event(
        &mut self,
        entity_name: &str,
        entity_id: &str,
        metric: &str,
        sev: Severity,
        message: &str,
    ) -> io::Result<()> {
        let now = CivilTime::local_now()
            .ok_or_else(|| io::Error::other("event: cannot read the local time"))?;
        self.event_at(&now, entity_name, entity_id, metric, sev, message)
    }

    /// Buffers one event line stamped with `time` (for tests and replay).
    pub fn event_at(
        &mut self,
        time: &CivilTime,
        entity_name: &str,
        entity_id: &str,
        metric: &str,
        sev: Severity,
        message: &str,
    ) -> io::Result<()> {
        let body = event_body(time, sev, entity_id, message);
        self.record("event")
            .field(entity_name)
            .field(entity_id)
            .field(metric)
            .field(sev.text())
            .field(&sev.number())
            .field(body.as_str())
            .end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APR_18: CivilTime = CivilTime {
        year: 2023,
        month: 4,
        day: 18,
        hour: 20,
        minute: 59,
        second: 9,
        weekday: 2,
    };

    #[test]
    fn severities() {
        let all = [
            (Severity::Info, "INFO", 9),
            (Severity::Warn, "WARN", 13),
            (Severity::Error, "ERROR", 17),
            (Severity::Fatal, "FATAL", 21),
        ];
        for (s, text, n) in all {
            assert_eq!((s.text(), s.number()), (text, n));
        }
    }

    #[test]
    fn asctime_layout() {
        assert_eq!(asctime(&APR_18), "Tue Apr 18 20:59:09 2023");
        let early = CivilTime {
            day: 8,
            hour: 1,
            minute: 2,
            second: 3,
            month: 1,
            weekday: 0,
            ..APR_18
        };
        assert_eq!(asctime(&early), "Sun Jan  8 01:02:03 2023");
    }

    #[test]
    fn event_line_matches_upstream_example() {
        let mut w = RecordWriter::new(Vec::new());
        w.event_at(
            &APR_18,
            "cpu",
            "cpu",
            "total_used_per",
            Severity::Warn,
            "Too high cpu utilization(95.00%).",
        )
        .unwrap();
        w.flush().unwrap();
        assert_eq!(
            String::from_utf8(w.into_inner()).unwrap(),
            "|event|cpu|cpu|total_used_per|WARN|13|Tue Apr 18 20:59:09 2023 WARN Entity(cpu) Too high cpu utilization(95.00%).|\n"
        );
    }

    #[test]
    fn event_fields_are_escaped() {
        let mut w = RecordWriter::new(Vec::new());
        w.event_at(&APR_18, "fs", "/a|b", "UsePer", Severity::Error, "x\ny")
            .unwrap();
        w.flush().unwrap();
        assert_eq!(
            String::from_utf8(w.into_inner()).unwrap(),
            "|event|fs|/a\\|b|UsePer|ERROR|17|Tue Apr 18 20:59:09 2023 ERROR Entity(/a\\|b) x\\ny|\n"
        );
    }

    #[test]
    fn long_body_is_cut_at_char_boundary() {
        let msg = "é".repeat(400);
        let body = event_body(&APR_18, Severity::Info, "e", &msg);
        assert!(body.len() <= MAX_BODY_BYTES);
        assert!(body.len() >= MAX_BODY_BYTES - 1);
        assert!(body.starts_with("Tue Apr 18 20:59:09 2023 INFO Entity(e) éé"));
    }

    #[test]
    fn local_time_conversion_is_consistent_in_any_zone() {
        // 2023-04-18T20:59:09Z is the 18th or the 19th of April in every time zone.
        let t = CivilTime::local_from_unix(1_681_851_549).unwrap();
        assert_eq!((t.year, t.month), (2023, 4));
        assert!(matches!((t.day, t.weekday), (18, 2) | (19, 3)), "{t:?}");
        assert_eq!(t.second, 9);
        let next = CivilTime::local_from_unix(1_681_851_549 + 86_400).unwrap();
        assert_eq!(next.weekday, (t.weekday + 1) % 7);
        let now = CivilTime::local_now().unwrap();
        assert!((1..=12).contains(&now.month) && now.weekday < 7 && now.year >= 2023);
    }
}
