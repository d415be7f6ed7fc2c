//! Upstream taskprobe's abnormal events (`|event|proc|<tgid>|…|` lines), raised from a period's
//! report when `report_event` (`-l`) is on: at most one event per process and kind per period,
//! from the change of its running totals since the previous report.
//!
//! | metric | severity | when (the table must be on) |
//! |---|---|---|
//! | `syscall_failed` | WARN | syscalls of the process failed in the period (`proc_syscall`) |
//! | `iowait_ns` | WARN | `latency_thr` (ms) > 0 and its threads waited on IO longer than that in the period (`proc_cpu`) |
//! | `offcpu_ns` | WARN | `offline_thr` (ms) > 0 and its threads were off the CPU longer than that in the period (`proc_cpu`) |
//! | `bio_err_count` | ERROR | block requests it issued failed in the period (`proc_io`) |
//! | `hang_count` | ERROR | the hung-task detector reported one of its threads in the period (`proc_io`) |

use std::collections::HashMap;
use std::io::{self, Write};

use probe_sdk::event::Severity;
use probe_sdk::record::RecordWriter;

use crate::report::{ProcCounters, Tables};
use crate::tables::ENTITY;

/// Event switches and thresholds (a threshold of 0 turns its event off).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventSettings {
    /// `report_event` (`-l`).
    pub on: bool,
    /// `latency_thr` (`-T`), ms: against the period's IO-wait time.
    pub latency_ms: u64,
    /// `offline_thr` (`-O`), ms: against the period's off-CPU time.
    pub offline_ms: u64,
}

/// The running totals the events look at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Totals {
    failed: u64,
    iowait_ns: u64,
    offcpu_ns: u64,
    bio_err: u64,
    hangs: u64,
}

impl Totals {
    fn of(c: &ProcCounters) -> Totals {
        Totals {
            failed: c.syscall_failed,
            iowait_ns: c.iowait_ns,
            offcpu_ns: c.offcpu_ns,
            bio_err: c.bio_err,
            hangs: c.hangs,
        }
    }

    fn since(self, prev: Totals) -> Totals {
        Totals {
            failed: self.failed.saturating_sub(prev.failed),
            iowait_ns: self.iowait_ns.saturating_sub(prev.iowait_ns),
            offcpu_ns: self.offcpu_ns.saturating_sub(prev.offcpu_ns),
            bio_err: self.bio_err.saturating_sub(prev.bio_err),
            hangs: self.hangs.saturating_sub(prev.hangs),
        }
    }
}

/// The previous report's totals of every process.
#[derive(Debug, Default)]
pub struct ProcEvents {
    prev: HashMap<u32, Totals>,
}

impl ProcEvents {
    /// Writes this period's events of the processes in `entries` (all of them are reported
    /// this period) and remembers their totals; processes not in `entries` are forgotten.
    pub fn write<W: Write>(
        &mut self,
        out: &mut RecordWriter<W>,
        entries: &[(u32, ProcCounters)],
        tables: &Tables,
        settings: &EventSettings,
    ) -> io::Result<()> {
        let mut next = HashMap::with_capacity(entries.len());
        for (tgid, c) in entries {
            let now = Totals::of(c);
            let delta = now.since(self.prev.get(tgid).copied().unwrap_or_default());
            next.insert(*tgid, now);
            if !settings.on {
                continue;
            }
            for (metric, sev, msg) in period_events(*tgid, &c.comm, &delta, tables, settings) {
                out.event(ENTITY, &tgid.to_string(), metric, sev, &msg)?;
            }
        }
        self.prev = next;
        Ok(())
    }
}

/// The events of one process for a period whose changes are `d`.
fn period_events(
    tgid: u32,
    comm: &str,
    d: &Totals,
    tables: &Tables,
    s: &EventSettings,
) -> Vec<(&'static str, Severity, String)> {
    let who = format!("Process(COMM:{comm} TGID:{tgid})");
    let ms = |ns: u64| ns / 1_000_000;
    let mut out = Vec::new();
    if tables.syscall && d.failed > 0 {
        out.push((
            "syscall_failed",
            Severity::Warn,
            format!("{who} syscalls failed({}).", d.failed),
        ));
    }
    if tables.cpu && s.latency_ms > 0 && ms(d.iowait_ns) > s.latency_ms {
        out.push((
            "iowait_ns",
            Severity::Warn,
            format!(
                "{who} iowait({} ms) exceeded threshold({} ms).",
                ms(d.iowait_ns),
                s.latency_ms
            ),
        ));
    }
    if tables.cpu && s.offline_ms > 0 && ms(d.offcpu_ns) > s.offline_ms {
        out.push((
            "offcpu_ns",
            Severity::Warn,
            format!(
                "{who} off-CPU time({} ms) exceeded threshold({} ms).",
                ms(d.offcpu_ns),
                s.offline_ms
            ),
        ));
    }
    if tables.bio && d.bio_err > 0 {
        out.push((
            "bio_err_count",
            Severity::Error,
            format!("{who} block IO errors({}).", d.bio_err),
        ));
    }
    if tables.bio && d.hangs > 0 {
        out.push((
            "hang_count",
            Severity::Error,
            format!("{who} hung-task reports({}).", d.hangs),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(failed: u64, iowait_ms: u64, offcpu_ms: u64, bio_err: u64) -> ProcCounters {
        ProcCounters {
            comm: "db|x".into(),
            syscall_failed: failed,
            iowait_ns: iowait_ms * 1_000_000,
            offcpu_ns: offcpu_ms * 1_000_000,
            bio_err,
            ..ProcCounters::default()
        }
    }

    const ALL: Tables = Tables {
        syscall: true,
        io: false,
        net: false,
        sched: false,
        fork: false,
        fs: [false; 3],
        lifecycle: true,
        bio: true,
        cpu: true,
        page: false,
        pygc: false,
        ioctl: false,
        dns: false,
        threads: false,
    };

    fn lines(
        ev: &mut ProcEvents,
        entries: &[(u32, ProcCounters)],
        s: &EventSettings,
    ) -> Vec<String> {
        let mut w = RecordWriter::new(Vec::new());
        ev.write(&mut w, entries, &ALL, s).unwrap();
        w.flush().unwrap();
        String::from_utf8(w.into_inner())
            .unwrap()
            .lines()
            .map(|l| {
                // The body starts with the local time: keep the id, metric and message.
                let mut f = l.split('|');
                let (_, _, e, id, m, sev) =
                    (f.next(), f.next(), f.next(), f.next(), f.next(), f.next());
                let body = l.rsplit("Entity(").next().unwrap_or_default();
                format!(
                    "{}|{}|{}|{}|{}",
                    e.unwrap(),
                    id.unwrap(),
                    m.unwrap(),
                    sev.unwrap(),
                    body
                )
            })
            .collect()
    }

    #[test]
    fn events_follow_the_period_changes() {
        let on = EventSettings {
            on: true,
            latency_ms: 100,
            offline_ms: 500,
        };
        let mut ev = ProcEvents::default();
        // First sight: the totals since tracking began are this period's.
        assert_eq!(
            lines(&mut ev, &[(7, counters(2, 150, 400, 0))], &on),
            [
                "proc|7|syscall_failed|WARN|7) Process(COMM:db\\|x TGID:7) syscalls failed(2).|",
                "proc|7|iowait_ns|WARN|7) Process(COMM:db\\|x TGID:7) iowait(150 ms) exceeded threshold(100 ms).|",
            ]
        );
        // Unchanged totals: nothing. Then off-CPU +600 ms and one block error.
        assert!(lines(&mut ev, &[(7, counters(2, 150, 400, 0))], &on).is_empty());
        let l = lines(&mut ev, &[(7, counters(2, 200, 1000, 1))], &on);
        assert_eq!(l.len(), 2, "{l:?}");
        assert!(
            l[0].starts_with("proc|7|offcpu_ns|WARN|") && l[0].contains("(600 ms)"),
            "{l:?}"
        );
        assert!(
            l[1].starts_with("proc|7|bio_err_count|ERROR|") && l[1].contains("errors(1)"),
            "{l:?}"
        );
    }

    #[test]
    fn off_switch_and_zero_thresholds_raise_nothing_but_keep_the_totals() {
        let mut ev = ProcEvents::default();
        let off = EventSettings {
            on: false,
            latency_ms: 1,
            offline_ms: 1,
        };
        assert!(lines(&mut ev, &[(7, counters(5, 900, 900, 3))], &off).is_empty());
        // Turned on later: only what changed since is reported.
        let on = EventSettings {
            on: true,
            ..EventSettings::default()
        };
        assert!(lines(&mut ev, &[(7, counters(5, 1900, 1900, 3))], &on).is_empty());
        assert_eq!(
            lines(&mut ev, &[(7, counters(6, 1900, 1900, 3))], &on).len(),
            1
        );
    }
}
