//! The profile stackprobe hands over once per `svg_period` for one (process, kind).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What a profile measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Stacks sampled while on a CPU (perf events).
    OnCpu,
    /// Stacks of blocked stretches (sched_switch).
    OffCpu,
}

impl Kind {
    /// Both kinds, in directory order.
    pub const ALL: [Kind; 2] = [Kind::OnCpu, Kind::OffCpu];

    /// Upstream's directory name: `oncpu` / `offcpu`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::OnCpu => "oncpu",
            Kind::OffCpu => "offcpu",
        }
    }

    /// The kind named `name` (as [`Kind::name`] spells it).
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One symbolized frame. The name is untrusted text from the profiled process.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Function name as the symbolizer found it (any text).
    pub name: Arc<str>,
    /// A kernel frame.
    pub kernel: bool,
    /// A JIT-compiled frame (perf map).
    pub jit: bool,
    /// A frame the compiler inlined into its caller.
    pub inlined: bool,
}

impl Frame {
    /// A user-space frame.
    pub fn user(name: &str) -> Frame {
        Frame {
            name: Arc::from(name),
            kernel: false,
            jit: false,
            inlined: false,
        }
    }

    /// A kernel frame.
    pub fn kernel(name: &str) -> Frame {
        Frame {
            kernel: true,
            ..Frame::user(name)
        }
    }

    /// A JIT frame.
    pub fn jit(name: &str) -> Frame {
        Frame {
            jit: true,
            ..Frame::user(name)
        }
    }

    /// An inlined user frame.
    pub fn inlined(name: &str) -> Frame {
        Frame {
            inlined: true,
            ..Frame::user(name)
        }
    }
}

/// One distinct stack and what was measured on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Root first: the outermost caller first, the leaf last.
    pub frames: Vec<Frame>,
    /// On-CPU: samples; off-CPU: blocked stretches.
    pub count: u64,
    /// On-CPU: CPU time in ns (`count × sample_period_ns`); off-CPU: blocked ns.
    pub value: u64,
}

impl Sample {
    /// A sample that measured nothing (`count` and `value` both 0); every output skips it.
    pub fn is_empty(&self) -> bool {
        self.count == 0 && self.value == 0
    }
}

/// One period's stacks of one process and kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// Process id (tgid).
    pub pid: u32,
    /// The process's comm (untrusted text).
    pub comm: String,
    /// On-CPU or off-CPU.
    pub kind: Kind,
    /// Start of the period.
    pub start: SystemTime,
    /// End of the period; names the output files.
    pub end: SystemTime,
    /// On-CPU: the sampling period in ns (e.g. 1e9/99); off-CPU: 0.
    pub sample_period_ns: u64,
    /// The distinct stacks.
    pub samples: Vec<Sample>,
}

impl Profile {
    /// True when no sample measured anything: no output is written or pushed.
    pub fn is_empty(&self) -> bool {
        self.samples.iter().all(Sample::is_empty)
    }

    /// Sum of `count` over the samples (saturating).
    pub fn total_count(&self) -> u64 {
        self.samples
            .iter()
            .fold(0u64, |acc, s| acc.saturating_add(s.count))
    }

    /// Sum of `value` over the samples (saturating).
    pub fn total_value(&self) -> u64 {
        self.samples
            .iter()
            .fold(0u64, |acc, s| acc.saturating_add(s.value))
    }
}

/// Time since the epoch; times before it count as the epoch.
pub(crate) fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO)
}

/// Milliseconds since the epoch (saturating).
pub(crate) fn epoch_ms(t: SystemTime) -> u64 {
    u64::try_from(since_epoch(t).as_millis()).unwrap_or(u64::MAX)
}

/// Nanoseconds since the epoch (saturating).
pub(crate) fn epoch_ns(t: SystemTime) -> u64 {
    u64::try_from(since_epoch(t).as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_name(k.name()), Some(k));
        }
        assert_eq!(Kind::OnCpu.name(), "oncpu");
        assert_eq!(Kind::OffCpu.name(), "offcpu");
        assert_eq!(Kind::from_name("mem"), None);
        assert_eq!(
            serde_json::to_string(&Kind::OffCpu).ok().as_deref(),
            Some("\"offcpu\"")
        );
    }

    #[test]
    fn empty_means_nothing_measured() {
        let mut p = Profile {
            pid: 1,
            comm: "x".into(),
            kind: Kind::OnCpu,
            start: UNIX_EPOCH,
            end: UNIX_EPOCH,
            sample_period_ns: 1,
            samples: vec![Sample {
                frames: vec![Frame::user("a")],
                count: 0,
                value: 0,
            }],
        };
        assert!(p.is_empty());
        p.samples[0].value = 1;
        assert!(!p.is_empty());
        assert_eq!(p.total_value(), 1);
    }
}
