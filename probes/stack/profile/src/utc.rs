//! UTC calendar time for file names and titles (no time-zone database, no dependency).

use std::time::SystemTime;

use crate::model::since_epoch;

/// A UTC calendar time, to the second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UtcTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl UtcTime {
    /// The calendar time of `secs` since the epoch.
    pub fn from_epoch_secs(secs: u64) -> UtcTime {
        let days = (secs / 86_400) as i64;
        let rem = (secs % 86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        UtcTime {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
        }
    }

    /// The calendar time of `t` (before the epoch: the epoch).
    pub fn from_system(t: SystemTime) -> UtcTime {
        UtcTime::from_epoch_secs(since_epoch(t).as_secs())
    }

    /// Seconds since the epoch, or `None` for a date before it or an invalid field.
    pub fn epoch_secs(&self) -> Option<u64> {
        if !(1..=12).contains(&self.month)
            || self.day == 0
            || self.day > days_in_month(self.year, self.month)
            || self.hour > 23
            || self.minute > 59
            || self.second > 59
        {
            return None;
        }
        let days = days_from_civil(self.year, self.month, self.day);
        let secs = days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second);
        u64::try_from(secs).ok()
    }

    /// `YYYYMMDD` (upstream's date directory).
    pub fn date(&self) -> String {
        format!("{:04}{:02}{:02}", self.year, self.month, self.day)
    }

    /// `YYYYMMDDHHMMSS` (upstream's file stem).
    pub fn stamp(&self) -> String {
        format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// `YYYY-MM-DD HH:MM:SS` for titles.
    pub fn display(&self) -> String {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// Parses a `YYYYMMDDHHMMSS` stamp (exactly 14 ASCII digits, a valid date).
    pub fn parse_stamp(s: &str) -> Option<UtcTime> {
        if s.len() != 14 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n = |r: std::ops::Range<usize>| s.get(r).and_then(|d| d.parse::<u32>().ok());
        let t = UtcTime {
            year: i64::from(n(0..4)?),
            month: n(4..6)?,
            day: n(6..8)?,
            hour: n(8..10)?,
            minute: n(10..12)?,
            second: n(12..14)?,
        };
        t.epoch_secs().map(|_| t)
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        _ => 28,
    }
}

// Howard Hinnant's days <-> civil algorithms (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        // date -u -d @1764954000 +%Y%m%d%H%M%S  -> 20251205170000
        let t = UtcTime::from_epoch_secs(1_764_954_000);
        assert_eq!(t.stamp(), "20251205170000");
        assert_eq!(t.date(), "20251205");
        assert_eq!(t.display(), "2025-12-05 17:00:00");
        assert_eq!(UtcTime::from_epoch_secs(0).stamp(), "19700101000000");
        // 2024-02-29 23:59:59
        assert_eq!(
            UtcTime::from_epoch_secs(1_709_251_199).stamp(),
            "20240229235959"
        );
    }

    #[test]
    fn stamps_round_trip() {
        for secs in [0u64, 59, 86_399, 951_782_400, 1_709_251_199, 4_102_444_800] {
            let t = UtcTime::from_epoch_secs(secs);
            let parsed = UtcTime::parse_stamp(&t.stamp());
            assert_eq!(parsed, Some(t));
            assert_eq!(t.epoch_secs(), Some(secs));
        }
    }

    #[test]
    fn bad_stamps_are_refused() {
        for s in [
            "2025120517000",
            "202512051700000",
            "20251305170000",
            "20250230170000",
            "20251205240000",
            "2025120517000a",
            "+0251205170000",
            "19691231235959",
        ] {
            assert_eq!(UtcTime::parse_stamp(s), None, "{s}");
        }
    }
}
