//! File names inside flame_dir (upstream's layout):
//! `<kind>/<YYYYMMDD>/<YYYYMMDDHHMMSS>-<pid>.{svg,folded,pb.gz}`, UTC, the time of the period's
//! end. Temporary files are `.<final name>.<writer pid>.<seq>.tmp` in the same directory.
//!
//! Only names that parse here exactly (valid date, the date directory equal to the stamp's date,
//! a pid without leading zeros) are ever tracked or removed.

use crate::model::{since_epoch, Kind, Profile};
use crate::utc::UtcTime;

/// One output file of a profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Output {
    /// The SVG flame graph.
    Svg,
    /// The folded stacks.
    Folded,
    /// The gzip-compressed pprof.
    Pprof,
}

impl Output {
    /// All outputs, in writing order.
    pub const ALL: [Output; 3] = [Output::Svg, Output::Folded, Output::Pprof];

    /// The file extension (without the dot).
    pub fn ext(self) -> &'static str {
        match self {
            Output::Svg => "svg",
            Output::Folded => "folded",
            Output::Pprof => "pb.gz",
        }
    }

    pub(crate) fn slot(self) -> usize {
        match self {
            Output::Svg => 0,
            Output::Folded => 1,
            Output::Pprof => 2,
        }
    }
}

/// The outputs of one profile: ordered oldest first (then kind, then pid), which is the order
/// retention removes them in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SetKey {
    /// The period's end, whole seconds since the epoch.
    pub end_secs: u64,
    pub kind: Kind,
    pub pid: u32,
}

impl SetKey {
    pub fn of(profile: &Profile) -> SetKey {
        SetKey {
            end_secs: since_epoch(profile.end).as_secs(),
            kind: profile.kind,
            pid: profile.pid,
        }
    }

    fn time(&self) -> UtcTime {
        UtcTime::from_epoch_secs(self.end_secs)
    }

    /// The date directory, `YYYYMMDD`.
    pub fn date(&self) -> String {
        self.time().date()
    }

    /// Days since the epoch (one date directory per day).
    pub fn day(&self) -> u64 {
        self.end_secs / 86_400
    }

    /// `YYYYMMDDHHMMSS-<pid>.<ext>`.
    pub fn file_name(&self, out: Output) -> String {
        format!("{}-{}.{}", self.time().stamp(), self.pid, out.ext())
    }

    /// `<kind>/<date>/<file>`, relative to flame_dir.
    pub fn rel_path(&self, out: Output) -> String {
        format!(
            "{}/{}/{}",
            self.kind.name(),
            self.date(),
            self.file_name(out)
        )
    }
}

/// A date directory name: 8 digits, a valid date.
pub(crate) fn is_date_dir(name: &str) -> bool {
    name.len() == 8 && UtcTime::parse_stamp(&format!("{name}000000")).is_some()
}

fn parse_pid(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

/// The set and output a file named `name` in `<kind>/<date>/` belongs to.
pub(crate) fn parse_file(kind: Kind, date: &str, name: &str) -> Option<(SetKey, Output)> {
    let (stem, out) = Output::ALL.into_iter().find_map(|o| {
        name.strip_suffix(o.ext())?
            .strip_suffix('.')
            .map(|s| (s, o))
    })?;
    let (stamp, pid) = stem.split_once('-')?;
    let time = UtcTime::parse_stamp(stamp)?;
    if !stamp.starts_with(date) {
        return None;
    }
    let key = SetKey {
        end_secs: time.epoch_secs()?,
        kind,
        pid: parse_pid(pid)?,
    };
    Some((key, out))
}

/// The temporary name for writing `final_name` (writer pid and a sequence number).
pub(crate) fn temp_name(final_name: &str, seq: u64) -> String {
    format!(".{final_name}.{}.{seq}.tmp", std::process::id())
}

/// The final name a temporary file of ours was to become (whatever its writer).
pub(crate) fn temp_target(name: &str) -> Option<&str> {
    let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let mut parts = inner.rsplitn(3, '.');
    let seq = parts.next()?;
    let pid = parts.next()?;
    let target = parts.next()?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(seq) && digits(pid)).then_some(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_764_954_000; // 2025-12-05 17:00:00 UTC

    #[test]
    fn names() {
        let key = SetKey {
            end_secs: T,
            kind: Kind::OffCpu,
            pid: 123,
        };
        assert_eq!(key.date(), "20251205");
        assert_eq!(key.file_name(Output::Pprof), "20251205170000-123.pb.gz");
        assert_eq!(
            key.rel_path(Output::Svg),
            "offcpu/20251205/20251205170000-123.svg"
        );
        for out in Output::ALL {
            assert_eq!(
                parse_file(Kind::OffCpu, "20251205", &key.file_name(out)),
                Some((key, out))
            );
        }
    }

    #[test]
    fn foreign_names_do_not_parse() {
        for name in [
            "20251205170000-123.svg.bak",
            "20251205170000-0123.svg",
            "20251205170000-.svg",
            "20251205170000-123.png",
            "20251205170000123.svg",
            "20251305170000-1.svg",
            "20251206170000-1.svg", // another day than its directory
            "20251205170000-99999999999.svg",
            "x20251205170000-1.svg",
            "20251205170000-1.pb",
            "notes.txt",
        ] {
            assert_eq!(parse_file(Kind::OnCpu, "20251205", name), None, "{name}");
        }
        assert!(is_date_dir("20251205"));
        assert!(!is_date_dir("2025120"));
        assert!(!is_date_dir("20251232"));
        assert!(!is_date_dir("lost+found"));
    }

    #[test]
    fn temp_names() {
        let t = temp_name("20251205170000-1.svg", 7);
        assert!(t.starts_with(".20251205170000-1.svg."));
        assert_eq!(temp_target(&t), Some("20251205170000-1.svg"));
        assert_eq!(temp_target(".index.json.12.3.tmp"), Some("index.json"));
        assert_eq!(temp_target(".x.a.3.tmp"), None);
        assert_eq!(temp_target("x.1.2.tmp"), None);
        assert_eq!(temp_target(".1.2.tmp"), None);
    }
}
