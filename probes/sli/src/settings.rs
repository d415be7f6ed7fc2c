//! What sliprobe prints, how often and for which containers, from the command line and then
//! from the control channel (the daemon writes the complete state on stdin; see
//! [`crate::tables::declaration`]):
//!
//! * `report_period` (`-t`): the period;
//! * `probe_bits` (`-P`): the sub-probes; `cpu`, `mem` and `io` also decide which programs are
//!   attached (none while neither `node` nor `container` rows are printed);
//! * `snoop`: which containers are reported (those holding a selected process).
//!
//! Pure: [`Settings::apply`] returns what changed and what was refused, the caller logs it.

use std::time::Duration;

use probe_sdk::args::ProbeArgs;
use probe_sdk::control::ControlMsg;
use probe_sdk::decl::{Declaration, ParamValue, Snoop};

use crate::loader::Groups;
use crate::report::Tables;
use crate::tables::DEFAULT_BITS;

/// The run-time settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Report period.
    pub period: Duration,
    /// `-P` bits in force.
    pub bits: u32,
    /// Tables and rows printed (from `bits`).
    pub tables: Tables,
    /// Which containers are reported.
    pub snoop: Snoop,
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
    /// The settings the command line gives: `-P` as given (0 = every bit), else
    /// [`DEFAULT_BITS`].
    pub fn from_args(args: &ProbeArgs) -> Settings {
        let bits = if args.probe_bits_given {
            args.probe_bits
        } else {
            DEFAULT_BITS
        };
        Settings {
            period: args.period(),
            bits,
            tables: Tables::from_bits(bits),
            snoop: Snoop::default(),
        }
    }

    /// The program groups to attach: a group is needed when its tables are printed for some
    /// rows.
    pub fn groups(&self) -> Groups {
        let t = self.tables;
        let rows = t.node || t.container;
        Groups {
            cpu: rows && t.cpu,
            mem: rows && t.mem,
            io: rows && t.io,
        }
    }

    /// Applies a control message: `report_period` (checked against its declaration),
    /// `probe_bits` unless 0, and `snoop`.
    pub fn apply(&mut self, msg: &ControlMsg, decl: &Declaration) -> Applied {
        let mut applied = Applied::default();
        match msg.checked(decl, "report_period") {
            Some(Ok(ParamValue::Int(secs))) => {
                let period = Duration::from_secs(secs.unsigned_abs());
                if period != self.period && !period.is_zero() {
                    self.period = period;
                    applied.period_changed = true;
                    applied.changes.push(format!("report_period {secs} s"));
                }
            }
            Some(Err(e)) => applied.refused.push(e.to_string()),
            _ => {}
        }
        if msg.probe_bits != 0 && msg.probe_bits != self.bits {
            self.bits = msg.probe_bits;
            self.tables = Tables::from_bits(msg.probe_bits);
            applied.changes.push(format!(
                "-P {:#x}: {}",
                msg.probe_bits,
                self.tables.names().join(", ")
            ));
        }
        if msg.snoop != self.snoop {
            self.snoop = msg.snoop.clone();
            applied.changes.push(format!("snoop {}", self.snoop));
        }
        applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::{declaration, BIT_CPU, BIT_HISTOGRAM, BIT_IO, BIT_NODE};
    use probe_sdk::decl::SnoopMode;

    fn msg(line: &str) -> ControlMsg {
        ControlMsg::parse_line(line).unwrap()
    }

    #[test]
    fn defaults_and_command_line_bits() {
        let s = Settings::from_args(&ProbeArgs::try_parse_from(["-t", "2"]).unwrap());
        assert_eq!(s.bits, DEFAULT_BITS);
        assert!(!s.tables.histogram);
        assert_eq!(
            s.groups(),
            Groups {
                cpu: true,
                mem: true,
                io: true
            }
        );
        let s = Settings::from_args(&ProbeArgs::try_parse_from(["-P", "41"]).unwrap());
        assert_eq!(s.bits, BIT_CPU | BIT_NODE | BIT_HISTOGRAM);
        assert_eq!(
            s.groups(),
            Groups {
                cpu: true,
                mem: false,
                io: false
            }
        );
        // Tables without rows attach nothing.
        let s = Settings::from_args(&ProbeArgs::try_parse_from(["-P", "7"]).unwrap());
        assert_eq!(s.groups(), Groups::default());
    }

    #[test]
    fn control_changes_period_bits_and_snoop() {
        let mut s = Settings::from_args(&ProbeArgs::try_parse_from(["-t", "5"]).unwrap());
        let d = declaration();
        let a = s.apply(
            &msg(
                r#"{"probe":["io","node"],"probe_bits":12,"params":{"report_period":2},"snoop":{"mode":"include","pids":[1,2]}}"#,
            ),
            &d,
        );
        assert_eq!(
            a.changes,
            [
                "report_period 2 s",
                "-P 0xc: io, node",
                "snoop include 2 pids"
            ]
        );
        assert!(a.period_changed && a.refused.is_empty());
        assert_eq!(s.bits, BIT_IO | BIT_NODE);
        assert_eq!(s.snoop.mode, SnoopMode::Include);
        // The same state again changes nothing; bits 0 keep the tables.
        let again = s.apply(
            &msg(r#"{"probe_bits":0,"params":{"report_period":2},"snoop":{"mode":"include","pids":[1,2]}}"#),
            &d,
        );
        assert_eq!(again, Applied::default());
        let bad = s.apply(&msg(r#"{"params":{"report_period":0}}"#), &d);
        assert_eq!(bad.refused.len(), 1, "{bad:?}");
        assert_eq!(s.period, Duration::from_secs(2));
    }
}
