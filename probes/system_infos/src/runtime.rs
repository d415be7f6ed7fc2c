//! What the control channel changes while the probe runs: the settings, how a control message
//! updates them (checked against the probe's own [`declaration`](crate::schema::declaration)),
//! the one log line describing a change, and the period clock that a new period re-times.

use crate::events::Thresholds;
use crate::options::Options;
use probe_sdk::decl::{ControlMsg, Declaration, ParamValue, Snoop, SnoopMode};
use std::time::{Duration, Instant};

/// The run-time settings of the probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Report period, seconds (`report_period`, `-t`).
    pub period_secs: u32,
    /// Tables written (`-P` bits; `probe_bits` of the control message).
    pub tables: u32,
    /// Events (`report_event` `-l`, `res_upper_thr` `-U`, `drops_thr` `-D`).
    pub thresholds: Thresholds,
    /// Interfaces reported, comma-separated, empty for all but `lo` (`dev_name`, `-d`).
    pub dev: String,
    /// Processes of `system_proc`; mode `all` means the command line's `-w`/`-f` selection.
    pub snoop: Snoop,
}

impl Settings {
    /// The settings the command line gives.
    pub fn from_options(opts: &Options) -> Settings {
        let a = &opts.args;
        Settings {
            period_secs: a.period_secs,
            tables: a.probe_bits,
            thresholds: Thresholds {
                enabled: a.report_events,
                upper_pct: a.res_upper_pct,
                drops: a.drops_thr,
            },
            dev: a.dev.clone().unwrap_or_default(),
            snoop: Snoop::default(),
        }
    }

    /// The report period.
    pub fn period(&self) -> Duration {
        Duration::from_secs(u64::from(self.period_secs))
    }

    /// The settings after `msg`. A param that is missing keeps its value; one the declaration
    /// refuses keeps its value too and its refusal is returned (to be logged). `probe_bits` 0
    /// keeps the tables.
    pub fn updated(&self, decl: &Declaration, msg: &ControlMsg) -> (Settings, Vec<String>) {
        let mut refused = Vec::new();
        let mut next = self.clone();
        let mut int = |name: &str| match checked(decl, msg, name, &mut refused) {
            Some(ParamValue::Int(i)) => Some(i),
            _ => None,
        };
        if let Some(p) = int("report_period").and_then(|p| u32::try_from(p).ok()) {
            next.period_secs = p;
        }
        if let Some(e) = int("report_event") {
            next.thresholds.enabled = e != 0;
        }
        if let Some(u) = int("res_upper_thr").and_then(|u| u32::try_from(u).ok()) {
            next.thresholds.upper_pct = u;
        }
        if let Some(d) = int("drops_thr").and_then(|d| u64::try_from(d).ok()) {
            next.thresholds.drops = d;
        }
        if let Some(ParamValue::Str(dev)) = checked(decl, msg, "dev_name", &mut refused) {
            next.dev = dev;
        }
        if msg.probe_bits != 0 {
            next.tables = msg.probe_bits;
        }
        next.snoop = msg.snoop.clone();
        (next, refused)
    }

    /// `control: …` naming every setting that differs in `new`, or None if none does.
    pub fn describe_change(&self, new: &Settings) -> Option<String> {
        let mut parts = Vec::new();
        if self.period_secs != new.period_secs {
            parts.push(format!(
                "period {}s -> {}s",
                self.period_secs, new.period_secs
            ));
        }
        if self.tables != new.tables {
            parts.push(format!("tables 0x{:x} -> 0x{:x}", self.tables, new.tables));
        }
        let (a, b) = (self.thresholds, new.thresholds);
        if a.enabled != b.enabled {
            parts.push(format!(
                "events {} -> {}",
                on_off(a.enabled),
                on_off(b.enabled)
            ));
        }
        if a.upper_pct != b.upper_pct {
            parts.push(format!("res_upper_thr {} -> {}", a.upper_pct, b.upper_pct));
        }
        if a.drops != b.drops {
            parts.push(format!("drops_thr {} -> {}", a.drops, b.drops));
        }
        if self.dev != new.dev {
            parts.push(format!("nics {} -> {}", nics(&self.dev), nics(&new.dev)));
        }
        if self.snoop != new.snoop {
            parts.push(format!("snoop {}", describe_snoop(&new.snoop)));
        }
        (!parts.is_empty()).then(|| format!("control: {}", parts.join(", ")))
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

fn nics(dev: &str) -> &str {
    if dev.is_empty() {
        "all"
    } else {
        dev
    }
}

/// `all (command line)`, `include 2 pids`, `exclude 1 pid`.
pub fn describe_snoop(s: &Snoop) -> String {
    match s.mode {
        SnoopMode::All => "all (command line)".to_string(),
        _ => s.to_string(),
    }
}

/// Param `name` of `msg`, if present and accepted by the declaration.
fn checked(
    decl: &Declaration,
    msg: &ControlMsg,
    name: &str,
    refused: &mut Vec<String>,
) -> Option<ParamValue> {
    match msg.checked(decl, name)? {
        Ok(v) => Some(v),
        Err(e) => {
            refused.push(format!("control: {e}; kept the current value"));
            None
        }
    }
}

/// What the period clock says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// A period boundary has come: collect now.
    Due,
    /// Wait this long for the next one.
    Wait(Duration),
}

/// The period boundaries, re-timed by a new period the way `PeriodLoop::set_period` does: the
/// next boundary is one new period after the previous one, or now if that has passed.
#[derive(Debug, Clone)]
pub struct Ticker {
    period: Duration,
    next: Instant,
}

impl Ticker {
    /// The first boundary is one `period` after `now`.
    pub fn new(period: Duration, now: Instant) -> Ticker {
        Ticker {
            period,
            next: now + period,
        }
    }

    /// Changes the period at `now`.
    pub fn set_period(&mut self, period: Duration, now: Instant) {
        if period == self.period || period.is_zero() {
            return;
        }
        self.next = probe_sdk::run::rebase(self.next, self.period, period, now);
        self.period = period;
    }

    /// Whether a boundary has come at `now`; if so the clock moves to the next one, skipping
    /// boundaries missed while busy rather than firing them back to back.
    pub fn poll(&mut self, now: Instant) -> Tick {
        if now < self.next {
            return Tick::Wait(self.next - now);
        }
        self.next += self.period;
        if self.next <= now {
            self.next = now + self.period;
        }
        Tick::Due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::bits;
    use crate::options::parse;
    use crate::schema::declaration;

    fn msg(line: &str) -> ControlMsg {
        ControlMsg::parse_line(line).unwrap()
    }

    #[test]
    fn a_message_updates_every_declared_setting() {
        let base = Settings::from_options(&parse(["-t", "1", "-d", "eth0"]).unwrap());
        let (s, refused) = base.updated(
            &declaration(),
            &msg(r#"{"probe":["proc"],"probe_bits":64,"params":{"report_period":3,"report_event":1,"res_upper_thr":80,"drops_thr":10,"dev_name":""},"snoop":{"mode":"include","pids":[9,4]}}"#),
        );
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(s.period(), Duration::from_secs(3));
        assert_eq!(s.tables, bits::PROC);
        assert_eq!(
            s.thresholds,
            Thresholds {
                enabled: true,
                upper_pct: 80,
                drops: 10
            }
        );
        assert_eq!(s.dev, "");
        assert_eq!(s.snoop.pids, [4, 9]);
        assert_eq!(
            base.describe_change(&s).unwrap(),
            "control: period 1s -> 3s, tables 0xffffffff -> 0x40, events off -> on, res_upper_thr 0 -> 80, drops_thr 0 -> 10, nics eth0 -> all, snoop include 2 pids"
        );
        assert_eq!(s.describe_change(&s), None);
    }

    #[test]
    fn refused_or_missing_values_keep_the_current_ones() {
        let base = Settings::from_options(&parse(["-U", "50"]).unwrap());
        let (s, refused) = base.updated(
            &declaration(),
            &msg(r#"{"params":{"report_period":601,"res_upper_thr":"x","dev_name":"eth0;reboot","elf_path":"/bin/sh"}}"#),
        );
        assert_eq!(s, base);
        assert_eq!(refused.len(), 3, "{refused:?}");
        assert!(
            refused[0].contains("report_period invalid value 601"),
            "{refused:?}"
        );
        let mut with_snoop = base.clone();
        with_snoop.snoop = Snoop {
            mode: SnoopMode::Exclude,
            pids: vec![3],
        };
        assert_eq!(
            with_snoop.describe_change(&base).unwrap(),
            "control: snoop all (command line)"
        );
        assert_eq!(describe_snoop(&with_snoop.snoop), "exclude 1 pid");
    }

    #[test]
    fn ticker_fires_each_period_and_retimes_on_a_new_one() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut t = Ticker::new(s(1), t0);
        assert_eq!(t.poll(t0), Tick::Wait(s(1)));
        assert_eq!(t.poll(t0 + s(1)), Tick::Due);
        // 1 s -> 3 s half-way: the boundary after t0+1 is t0+4.
        t.set_period(s(3), t0 + Duration::from_millis(1500));
        assert_eq!(t.poll(t0 + s(2)), Tick::Wait(s(2)));
        assert_eq!(t.poll(t0 + s(4)), Tick::Due);
        // 3 s -> 1 s when the new boundary has passed: due now.
        t.set_period(s(1), t0 + Duration::from_millis(6500));
        assert_eq!(t.poll(t0 + Duration::from_millis(6500)), Tick::Due);
        // Missed boundaries are skipped, not fired back to back.
        assert_eq!(t.poll(t0 + s(20)), Tick::Due);
        assert_eq!(t.poll(t0 + s(20)), Tick::Wait(s(1)));
    }
}
