//! Abnormal events (`-l`): threshold checks collected during a cycle, written after the records
//! in upstream's v2023 line format `|event|<entity>|<id>|<metric>|WARN|13|<body>|`.

use probe_sdk::event::{CivilTime, Severity};
use probe_sdk::record::RecordWriter;
use std::io::{self, Write};

/// Event thresholds from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Thresholds {
    /// `-l`: events are reported at all.
    pub enabled: bool,
    /// `-U`: upper resource-use percentage (cpu, memory, swap, filesystem, disk util); 0 = off.
    pub upper_pct: u32,
    /// `-D`: NIC drops/errors per period; 0 = off.
    pub drops: u64,
}

/// One event waiting to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEvent {
    /// Entity name (`cpu`, `mem`, `fs`, `disk`, `nic`).
    pub entity: &'static str,
    /// Entity ID (`cpu`, `/proc/meminfo`, a mount point, a device).
    pub id: String,
    /// Metric the threshold applies to.
    pub metric: &'static str,
    /// Message, e.g. `Too high cpu utilization(95.00%).`
    pub message: String,
}

/// The events of one cycle.
#[derive(Debug, Default)]
pub struct Events {
    thresholds: Thresholds,
    pending: Vec<PendingEvent>,
}

impl Events {
    /// Events checked against `thresholds`.
    pub fn new(thresholds: Thresholds) -> Events {
        Events {
            thresholds,
            pending: Vec::new(),
        }
    }

    /// Queues an event if `pct` is above the `-U` threshold.
    pub fn check_pct(
        &mut self,
        entity: &'static str,
        id: &str,
        metric: &'static str,
        pct: f64,
        message: impl FnOnce(f64) -> String,
    ) {
        let t = self.thresholds;
        if t.enabled && t.upper_pct > 0 && pct > f64::from(t.upper_pct) {
            self.push(entity, id, metric, message(pct));
        }
    }

    /// Queues an event if `count` is above the `-D` threshold.
    pub fn check_drops(
        &mut self,
        entity: &'static str,
        id: &str,
        metric: &'static str,
        count: u64,
        message: impl FnOnce(u64) -> String,
    ) {
        let t = self.thresholds;
        if t.enabled && t.drops > 0 && count > t.drops {
            self.push(entity, id, metric, message(count));
        }
    }

    fn push(&mut self, entity: &'static str, id: &str, metric: &'static str, message: String) {
        self.pending.push(PendingEvent {
            entity,
            id: id.to_string(),
            metric,
            message,
        });
    }

    /// Events queued so far.
    pub fn pending(&self) -> &[PendingEvent] {
        &self.pending
    }

    /// Writes and forgets the queued events, stamped with `time`.
    pub fn write_all<W: Write>(
        &mut self,
        out: &mut RecordWriter<W>,
        time: &CivilTime,
    ) -> io::Result<()> {
        for e in self.pending.drain(..) {
            out.event_at(time, e.entity, &e.id, e.metric, Severity::Warn, &e.message)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_gate_events() {
        let mut off = Events::new(Thresholds {
            enabled: false,
            upper_pct: 10,
            drops: 1,
        });
        off.check_pct("cpu", "cpu", "total_used_per", 50.0, |p| format!("{p}"));
        off.check_drops("nic", "eth0", "rx_dropped", 5, |n| format!("{n}"));
        assert!(off.pending().is_empty());

        let mut on = Events::new(Thresholds {
            enabled: true,
            upper_pct: 50,
            drops: 0,
        });
        on.check_pct("cpu", "cpu", "total_used_per", 50.0, |p| format!("{p}"));
        assert!(
            on.pending().is_empty(),
            "equal to the threshold is not above it"
        );
        on.check_pct("cpu", "cpu", "total_used_per", 50.01, |p| format!("{p:.2}"));
        on.check_drops("nic", "eth0", "rx_dropped", 1000, |n| format!("{n}"));
        assert_eq!(on.pending().len(), 1, "-D 0 disables drop events");
        assert_eq!(on.pending()[0].message, "50.01");
    }
}
