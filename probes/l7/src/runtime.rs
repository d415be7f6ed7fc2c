//! What the control channel changes while l7probe runs: the settings, how a control message
//! updates them (checked against the probe's own [`declaration`](crate::tables::declaration)),
//! and the one log line describing a change.

use std::time::Duration;

use l7_protocol::Protocol;
use probe_sdk::args::ProbeArgs;
use probe_sdk::decl::{ControlMsg, Declaration, ParamValue, Snoop};

use crate::tables::DEFAULT_BITS;

/// The run-time settings of the probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Report period, seconds (`report_period`, `-t`).
    pub period_secs: u32,
    /// Tables written (`-P` bits; `probe_bits` of the control message).
    pub probe_bits: u32,
    /// Processes traced.
    pub snoop: Snoop,
    /// Protocols parsed (`l7_protocol`; every known one when the list is empty).
    pub protocols: Vec<Protocol>,
    /// TLS plain text through the libssl uprobes (`support_ssl`).
    pub ssl: bool,
    /// Answered requests faster than this and not failed are not traced, ms (`latency_thr`).
    pub latency_thr_ms: u32,
}

/// The protocols `names` select (all when empty), and the names not parsed by this probe.
pub fn protocols(names: &[String]) -> (Vec<Protocol>, Vec<String>) {
    if names.is_empty() {
        return (Protocol::ALL.to_vec(), Vec::new());
    }
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    for n in names {
        match Protocol::ALL.iter().find(|p| p.name() == n) {
            Some(p) if !out.contains(p) => out.push(*p),
            Some(_) => {}
            None => unknown.push(n.clone()),
        }
    }
    (out, unknown)
}

impl Settings {
    /// The settings the command line gives.
    pub fn from_args(args: &ProbeArgs) -> Settings {
        Settings {
            period_secs: args.period_secs,
            // No `-P`: the metric tables; traces only when asked for.
            probe_bits: if args.probe_bits == u32::MAX {
                DEFAULT_BITS
            } else {
                args.probe_bits
            },
            snoop: Snoop::default(),
            protocols: Protocol::ALL.to_vec(),
            ssl: false,
            latency_thr_ms: u32::try_from(args.latency_thr_ms).unwrap_or(u32::MAX),
        }
    }

    /// The settings after `msg`. A missing param keeps its value; a refused one keeps it too
    /// and its refusal is returned (to be logged), as are protocol names not parsed here.
    /// `probe_bits` 0 keeps the tables.
    pub fn updated(&self, decl: &Declaration, msg: &ControlMsg) -> (Settings, Vec<String>) {
        let mut refused = Vec::new();
        let mut next = self.clone();
        match msg.checked(decl, "report_period") {
            Some(Ok(ParamValue::Int(p))) => {
                next.period_secs = u32::try_from(p).unwrap_or(next.period_secs);
            }
            Some(Ok(_)) | None => {}
            Some(Err(e)) => refused.push(format!("control: {e}; kept the current value")),
        }
        match msg.checked(decl, "l7_protocol") {
            Some(Ok(ParamValue::List(names))) => {
                let (p, unknown) = protocols(&names);
                if !unknown.is_empty() {
                    refused.push(format!(
                        "control: l7_protocol {} not parsed by this probe",
                        unknown.join(", ")
                    ));
                }
                next.protocols = p;
            }
            Some(Ok(_)) | None => {}
            Some(Err(e)) => refused.push(format!("control: {e}; kept the current value")),
        }
        match msg.checked(decl, "latency_thr") {
            Some(Ok(ParamValue::Int(v))) => {
                next.latency_thr_ms = u32::try_from(v).unwrap_or(next.latency_thr_ms);
            }
            Some(Ok(_)) | None => {}
            Some(Err(e)) => refused.push(format!("control: {e}; kept the current value")),
        }
        match msg.checked(decl, "support_ssl") {
            Some(Ok(ParamValue::Int(v))) => next.ssl = v == 1,
            Some(Ok(_)) | None => {}
            Some(Err(e)) => refused.push(format!("control: {e}; kept the current value")),
        }
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
        if self.snoop != new.snoop {
            parts.push(format!("snoop {}", new.snoop));
        }
        if self.protocols != new.protocols {
            let names: Vec<&str> = new.protocols.iter().map(|p| p.name()).collect();
            parts.push(format!("protocols {}", names.join(",")));
        }
        if self.ssl != new.ssl {
            parts.push(format!("support_ssl {}", u8::from(new.ssl)));
        }
        if self.latency_thr_ms != new.latency_thr_ms {
            parts.push(format!("latency_thr {}ms", new.latency_thr_ms));
        }
        (!parts.is_empty()).then(|| format!("control: {}", parts.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::{declaration, BIT_RPC};

    fn msg(line: &str) -> ControlMsg {
        ControlMsg::parse_line(line).unwrap()
    }

    #[test]
    fn a_message_updates_period_tables_protocols_and_snoop() {
        let d = declaration();
        let base = Settings::from_args(&ProbeArgs::default());
        let (s, refused) = base.updated(
            &d,
            &msg(r#"{"probe_bits":2,"params":{"report_period":10,"l7_protocol":["http","redis","mongo"],"support_ssl":1},"snoop":{"mode":"include","pids":[7]}}"#),
        );
        assert_eq!(
            refused,
            ["control: l7_protocol mongo not parsed by this probe"]
        );
        assert_eq!((s.period_secs, s.probe_bits), (10, BIT_RPC));
        assert_eq!(s.protocols, [Protocol::Http, Protocol::Redis]);
        assert!(s.ssl);
        assert!(s.snoop.selects(7) && !s.snoop.selects(5));
        assert_eq!(
            base.describe_change(&s).unwrap(),
            "control: period 5s -> 10s, tables 0x3 -> 0x2, snoop include 1 pid, protocols http,redis, support_ssl 1"
        );
        let (same, refused) = base.updated(&d, &msg(r#"{"params":{"report_period":0}}"#));
        assert_eq!(same, base);
        assert_eq!(refused.len(), 1, "{refused:?}");
        let (all, _) = s.updated(&d, &msg(r#"{"params":{"l7_protocol":[]}}"#));
        assert_eq!(all.protocols, Protocol::ALL);
    }
}
