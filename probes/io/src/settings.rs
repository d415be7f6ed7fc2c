//! What ioprobe prints and how often, from the command line and then from the control channel
//! (the daemon writes the complete state on stdin; see [`crate::tables::declaration`]):
//!
//! * `report_period` (`-t`): the period;
//! * `probe_bits` (`-P`): the tables (the BPF programs stay attached: every table comes from
//!   the same three programs, so the bits select what is printed);
//! * `dev_name` (`-d`): only this disk is printed (empty: every disk);
//! * `latency_thr` (`-T`, ms): the `latency_req_max` event threshold (0: no event).
//!
//! Pure: [`Settings::apply`] returns what changed and what was refused, the caller logs it.

use std::time::Duration;

use probe_sdk::args::ProbeArgs;
use probe_sdk::control::ControlMsg;
use probe_sdk::decl::{Declaration, ParamValue};

use crate::report::Tables;
use crate::tables::DEFAULT_BITS;

/// The run-time settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Report period.
    pub period: Duration,
    /// `-P` bits in force.
    pub bits: u32,
    /// Tables printed (from `bits`).
    pub tables: Tables,
    /// Only this disk (kernel name), or every disk.
    pub dev: Option<String>,
    /// `latency_req_max` event threshold in ms, 0 = off.
    pub latency_thr_ms: u64,
}

/// What one control message changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// One line per change, for an `[INFO]` log line each.
    pub changes: Vec<String>,
    /// Values refused (wrong type or range), for `[WARN]` lines.
    pub refused: Vec<String>,
    /// The period changed.
    pub period_changed: bool,
}

impl Settings {
    /// The settings the command line gives.
    pub fn from_args(args: &ProbeArgs) -> Settings {
        Settings {
            period: args.period(),
            // Without -P the default tables: io_pagecache only when asked for (-P 0 is
            // upstream's "all", which includes it).
            bits: if args.probe_bits_given {
                args.probe_bits
            } else {
                DEFAULT_BITS
            },
            tables: if args.probe_bits_given {
                Tables::from_bits(args.probe_bits)
            } else {
                Tables::default_tables()
            },
            dev: args.dev.clone(),
            latency_thr_ms: args.latency_thr_ms,
        }
    }

    /// Whether the disk called `blk_name` (None: gone) is printed.
    pub fn selects(&self, blk_name: Option<&str>) -> bool {
        match &self.dev {
            None => true,
            Some(only) => blk_name == Some(only.as_str()),
        }
    }

    /// Applies a control message: each param present (checked against its declaration), and
    /// `probe_bits` unless 0.
    pub fn apply(&mut self, msg: &ControlMsg, decl: &Declaration) -> Applied {
        let mut applied = Applied::default();
        let mut checked = |name: &str| match msg.checked(decl, name)? {
            Ok(v) => Some(v),
            Err(e) => {
                applied.refused.push(e.to_string());
                None
            }
        };
        let period = checked("report_period");
        let dev = checked("dev_name");
        let thr = checked("latency_thr");
        if let Some(ParamValue::Int(secs)) = period {
            let period = Duration::from_secs(secs.unsigned_abs());
            if period != self.period && !period.is_zero() {
                self.period = period;
                applied.period_changed = true;
                applied.changes.push(format!("report_period {secs} s"));
            }
        }
        if let Some(ParamValue::Str(name)) = dev {
            let dev = (!name.is_empty()).then_some(name);
            if dev != self.dev {
                applied.changes.push(match &dev {
                    Some(d) => format!("dev_name {d}: only this disk"),
                    None => "dev_name empty: every disk".to_string(),
                });
                self.dev = dev;
            }
        }
        if let Some(ParamValue::Int(ms)) = thr {
            let ms = ms.unsigned_abs();
            if ms != self.latency_thr_ms {
                self.latency_thr_ms = ms;
                applied.changes.push(format!("latency_thr {ms} ms"));
            }
        }
        if msg.probe_bits != 0 && msg.probe_bits != self.bits {
            self.bits = msg.probe_bits;
            self.tables = Tables::from_bits(msg.probe_bits);
            applied.changes.push(format!(
                "-P {:#x}: tables {}",
                msg.probe_bits,
                self.tables.names().join(", ")
            ));
        }
        applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::{declaration, BIT_COUNT};

    fn settings() -> Settings {
        Settings::from_args(&ProbeArgs::try_parse_from(["-t", "1", "-d", "vda"]).unwrap())
    }

    fn msg(line: &str) -> ControlMsg {
        ControlMsg::parse_line(line).unwrap()
    }

    #[test]
    fn command_line_then_control() {
        let mut s = settings();
        assert_eq!(s.tables, Tables::default_tables());
        assert!(!s.tables.page_cache, "page_cache only when asked for");
        assert!(s.selects(Some("vda")) && !s.selects(Some("sda")) && !s.selects(None));
        let d = declaration();
        let a = s.apply(
            &msg(
                r#"{"probe":["io_count"],"probe_bits":4,"params":{"report_period":3,"dev_name":"","latency_thr":0}}"#,
            ),
            &d,
        );
        assert_eq!(
            a.changes,
            [
                "report_period 3 s",
                "dev_name empty: every disk",
                "-P 0x4: tables io_count"
            ]
        );
        assert!(a.period_changed && a.refused.is_empty());
        assert_eq!(s.period, Duration::from_secs(3));
        assert_eq!(s.tables, Tables::from_bits(BIT_COUNT));
        assert!(s.selects(Some("sda")) && s.selects(None));

        // The same state again changes nothing; bits 0 keep the tables.
        let again = s.apply(
            &msg(r#"{"probe_bits":0,"params":{"report_period":3,"dev_name":""}}"#),
            &d,
        );
        assert_eq!(again, Applied::default());
        assert_eq!(s.tables, Tables::from_bits(BIT_COUNT));

        let a = s.apply(
            &msg(r#"{"params":{"dev_name":"loop3","latency_thr":20}}"#),
            &d,
        );
        assert_eq!(
            a.changes,
            ["dev_name loop3: only this disk", "latency_thr 20 ms"]
        );
        assert_eq!(s.latency_thr_ms, 20);
    }

    #[test]
    fn bad_values_are_refused_and_change_nothing() {
        let mut s = settings();
        let before = s.clone();
        let a = s.apply(
            &msg(r#"{"params":{"report_period":0,"dev_name":"a;b","latency_thr":"x"}}"#),
            &declaration(),
        );
        assert!(a.changes.is_empty());
        assert_eq!(a.refused.len(), 3, "{:?}", a.refused);
        assert_eq!(s, before);
    }
}
