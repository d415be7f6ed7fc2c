//! What the control channel changes while tcpprobe runs: the settings, how a control message
//! updates them (checked against the probe's own [`declaration`](crate::tables::declaration)),
//! and the one log line describing a change.

use std::time::Duration;

use probe_sdk::args::ProbeArgs;
use probe_sdk::decl::{ControlMsg, Declaration, ParamKind, ParamValue, Snoop};

use crate::events::Thresholds;

/// The run-time settings of the probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Report period, seconds (`report_period`, `-t`).
    pub period_secs: u32,
    /// Tables written (`-P` bits; `probe_bits` of the control message).
    pub probe_bits: u32,
    /// Client ports in keys (`report_cport`, `-c`).
    pub report_cport: bool,
    /// Connections reported: those whose owning process this selects.
    pub snoop: Snoop,
    /// Abnormal events on (`report_event`, `-l`).
    pub report_event: bool,
    /// Event thresholds (`latency_thr` `-T` ms, `drops_thr` `-D`).
    pub thresholds: Thresholds,
}

impl Settings {
    /// The settings the command line gives.
    pub fn from_args(args: &ProbeArgs) -> Settings {
        Settings {
            period_secs: args.period_secs,
            probe_bits: args.probe_bits,
            report_cport: args.report_cport,
            snoop: Snoop::default(),
            report_event: args.report_events,
            thresholds: Thresholds {
                latency_ms: args.latency_thr_ms,
                drops: args.drops_thr,
            },
        }
    }

    /// Command-line values tcpprobe cannot honour, as one error message each: the thresholds'
    /// declared ranges.
    pub fn check_args(&self, decl: &Declaration) -> Vec<String> {
        let mut errors = Vec::new();
        for (name, v) in [
            ("latency_thr", self.thresholds.latency_ms),
            ("drops_thr", self.thresholds.drops),
        ] {
            if let Some(ParamKind::Int { min, max }) = decl.param(name).map(|p| &p.kind) {
                if i64::try_from(v).map_or(true, |v| v < *min || v > *max) {
                    errors.push(format!("{name} {v}: must be in [{min}, {max}]"));
                }
            }
        }
        errors
    }

    /// The settings after `msg`. A param that is missing keeps its value; one the declaration
    /// refuses keeps its value too and its refusal is returned (to be logged). `probe_bits` 0
    /// keeps the tables.
    pub fn updated(&self, decl: &Declaration, msg: &ControlMsg) -> (Settings, Vec<String>) {
        let mut refused = Vec::new();
        let mut next = self.clone();
        if let Some(p) = int_param(decl, msg, "report_period", &mut refused) {
            next.period_secs = u32::try_from(p).unwrap_or(next.period_secs);
        }
        if let Some(c) = int_param(decl, msg, "report_cport", &mut refused) {
            next.report_cport = c != 0;
        }
        if let Some(t) = int_param(decl, msg, "latency_thr", &mut refused) {
            next.thresholds.latency_ms = t.unsigned_abs();
        }
        if let Some(t) = int_param(decl, msg, "drops_thr", &mut refused) {
            next.thresholds.drops = t.unsigned_abs();
        }
        if let Some(e) = int_param(decl, msg, "report_event", &mut refused) {
            next.report_event = e != 0;
        }
        // Only 0 is accepted (the declaration's range): the check is the refusal.
        refuse_cluster_ip(decl, msg, "cluster_ip_backend", &mut refused);
        if msg.probe_bits != 0 {
            next.probe_bits = msg.probe_bits;
        }
        next.snoop = msg.snoop.clone();
        (next, refused)
    }

    /// The report period.
    pub fn period(&self) -> Duration {
        Duration::from_secs(u64::from(self.period_secs))
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
        if self.probe_bits != new.probe_bits {
            parts.push(format!(
                "tables 0x{:x} -> 0x{:x}",
                self.probe_bits, new.probe_bits
            ));
        }
        if self.report_cport != new.report_cport {
            parts.push(format!(
                "client ports {} -> {}",
                on_off(self.report_cport),
                on_off(new.report_cport)
            ));
        }
        if self.thresholds.latency_ms != new.thresholds.latency_ms {
            parts.push(format!("latency_thr {} ms", new.thresholds.latency_ms));
        }
        if self.thresholds.drops != new.thresholds.drops {
            parts.push(format!("drops_thr {}", new.thresholds.drops));
        }
        if self.report_event != new.report_event {
            parts.push(format!("events {}", on_off(new.report_event)));
        }
        if self.snoop != new.snoop {
            parts.push(format!("snoop {}", new.snoop));
        }
        (!parts.is_empty()).then(|| format!("control: {}", parts.join(", ")))
    }
}

/// Appended to a refused `cluster_ip_backend`.
const CLUSTER_IP_NOTE: &str =
    " (tcpprobe does not translate cluster IPs to their backends: only 0 is supported); kept 0";

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// Param `name` of `msg` as an integer, if present and accepted by the declaration; a refusal
/// is noted in `refused`.
fn int_param(
    decl: &Declaration,
    msg: &ControlMsg,
    name: &str,
    refused: &mut Vec<String>,
) -> Option<i64> {
    match msg.checked(decl, name)? {
        Ok(ParamValue::Int(i)) => Some(i),
        Ok(_) => None,
        Err(e) => {
            refused.push(format!("control: {e}; kept the current value"));
            None
        }
    }
}

/// Records the refusal of `cluster_ip_backend` (its only valid value, 0, changes nothing).
fn refuse_cluster_ip(decl: &Declaration, msg: &ControlMsg, name: &str, refused: &mut Vec<String>) {
    if let Some(Err(e)) = msg.checked(decl, name) {
        refused.push(format!("control: {e}{CLUSTER_IP_NOTE}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::{declaration, BIT_TXRX};
    use probe_sdk::decl::SnoopMode;

    fn msg(line: &str) -> ControlMsg {
        ControlMsg::parse_line(line).unwrap()
    }

    #[test]
    fn a_message_updates_period_tables_ports_and_snoop() {
        let d = declaration();
        let base = Settings::from_args(&ProbeArgs::default());
        assert_eq!(base.period_secs, 5);
        let (s, refused) = base.updated(
            &d,
            &msg(r#"{"probe_bits":8,"params":{"report_period":10,"report_cport":1},"snoop":{"mode":"include","pids":[7,3]}}"#),
        );
        assert!(refused.is_empty());
        assert_eq!(s.period_secs, 10);
        assert_eq!(s.probe_bits, BIT_TXRX);
        assert!(s.report_cport);
        assert!(s.snoop.selects(3) && s.snoop.selects(7) && !s.snoop.selects(5));
        assert_eq!(
            base.describe_change(&s).unwrap(),
            "control: period 5s -> 10s, tables 0xffffffff -> 0x8, client ports off -> on, snoop include 2 pids"
        );
        assert_eq!(s.describe_change(&s), None);
    }

    #[test]
    fn thresholds_events_and_cluster_ip_backend() {
        let d = declaration();
        let base = Settings::from_args(&ProbeArgs::default());
        assert!(!base.report_event);
        let (s, refused) = base.updated(
            &d,
            &msg(r#"{"params":{"latency_thr":20,"drops_thr":5,"report_event":1,"cluster_ip_backend":0}}"#),
        );
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(
            s.thresholds,
            Thresholds {
                latency_ms: 20,
                drops: 5
            }
        );
        assert!(s.report_event);
        assert_eq!(
            base.describe_change(&s).unwrap(),
            "control: latency_thr 20 ms, drops_thr 5, events on"
        );
        for v in [1, 2] {
            let (s2, refused) = s.updated(
                &d,
                &msg(&format!(r#"{{"params":{{"cluster_ip_backend":{v}}}}}"#)),
            );
            assert_eq!(s2, s);
            assert_eq!(refused.len(), 1);
            assert!(
                refused[0].contains("cluster_ip_backend invalid value")
                    && refused[0].contains("does not translate cluster IPs"),
                "{refused:?}"
            );
        }
        let args = ProbeArgs {
            drops_thr: 100_001,
            ..Default::default()
        };
        let errors = Settings::from_args(&args).check_args(&d);
        assert_eq!(errors, ["drops_thr 100001: must be in [0, 100000]"]);
    }

    #[test]
    fn refused_or_missing_values_keep_the_current_ones() {
        let d = declaration();
        let base = Settings::from_args(&ProbeArgs::default());
        let (s, refused) = base.updated(
            &d,
            &msg(
                r#"{"probe_bits":0,"params":{"report_period":0,"report_cport":"yes","unknown":1}}"#,
            ),
        );
        assert_eq!(s, base);
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert!(
            refused[0].contains("report_period invalid value 0"),
            "{refused:?}"
        );
        // Snoop back to all.
        let mut inc = base.clone();
        inc.snoop = Snoop {
            mode: SnoopMode::Exclude,
            pids: vec![1],
        };
        let (s, _) = inc.updated(&d, &msg("{}"));
        assert_eq!(s.snoop.mode, SnoopMode::All);
        assert_eq!(inc.describe_change(&s).unwrap(), "control: snoop all");
        assert_eq!(inc.snoop.to_string(), "exclude 1 pid");
    }
}
