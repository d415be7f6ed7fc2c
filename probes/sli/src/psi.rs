//! Pressure stall information: `/proc/pressure/{cpu,memory,io}` and a v2 cgroup's
//! `{cpu,memory,io}.pressure`, whose `total=` fields count microseconds of stall since boot (or
//! since the cgroup was created).
//!
//! ```text
//! some avg10=0.12 avg60=0.46 avg300=0.76 total=29987062
//! full avg10=0.04 avg60=0.34 avg300=0.60 total=23850107
//! ```

/// The resources with a pressure file, in record order of their tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// `cpu`
    Cpu,
    /// `memory`
    Memory,
    /// `io`
    Io,
}

impl Resource {
    /// Every resource.
    pub const ALL: [Resource; 3] = [Resource::Cpu, Resource::Memory, Resource::Io];

    /// The file name: `cpu`, `memory`, `io` under `/proc/pressure`, `<name>.pressure` in a cgroup.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
            Resource::Io => "io",
        }
    }

    /// Position in [`Resource::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The cumulative stall times of one pressure file, µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pressure {
    /// `some … total=`: time some tasks stalled.
    pub some_us: u64,
    /// `full … total=`: time all non-idle tasks stalled (absent in old kernels' cpu file).
    pub full_us: Option<u64>,
}

/// The change of a pressure file over one period, ns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    /// Some tasks stalled.
    pub some_ns: u64,
    /// All non-idle tasks stalled.
    pub full_ns: Option<u64>,
}

fn total(line: &str) -> Option<u64> {
    line.split_ascii_whitespace()
        .find_map(|w| w.strip_prefix("total="))?
        .parse()
        .ok()
}

/// Parses a pressure file; None without a valid `some` line.
pub fn parse(text: &str) -> Option<Pressure> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        if line.starts_with("some ") {
            some = total(line);
        } else if line.starts_with("full ") {
            full = total(line);
        }
    }
    Some(Pressure {
        some_us: some?,
        full_us: full,
    })
}

impl Pressure {
    /// The stall added since `earlier`; None when a counter went down (the cgroup was created
    /// again under the same path).
    pub fn since(&self, earlier: &Pressure) -> Option<Stall> {
        let some = self.some_us.checked_sub(earlier.some_us)?;
        let full = match (self.full_us, earlier.full_us) {
            (Some(a), Some(b)) => Some(a.checked_sub(b)?),
            _ => None,
        };
        Some(Stall {
            some_ns: some.saturating_mul(1000),
            full_ns: full.map(|f| f.saturating_mul(1000)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_some_and_full() {
        let p = parse(
            "some avg10=0.12 avg60=0.46 avg300=0.76 total=29987062\n\
             full avg10=0.04 avg60=0.34 avg300=0.60 total=23850107\n",
        )
        .unwrap();
        assert_eq!(p.some_us, 29_987_062);
        assert_eq!(p.full_us, Some(23_850_107));
        // Kernels before 5.13 have no full line in the cpu file.
        let cpu = parse("some avg10=5.90 avg60=5.13 avg300=2.04 total=123945979\n").unwrap();
        assert_eq!(cpu.full_us, None);
        assert_eq!(parse(""), None);
        assert_eq!(parse("some avg10=1.00 total=x\n"), None);
    }

    #[test]
    fn stall_is_the_change_in_ns() {
        let a = Pressure {
            some_us: 100,
            full_us: Some(40),
        };
        let b = Pressure {
            some_us: 350,
            full_us: Some(41),
        };
        assert_eq!(
            b.since(&a),
            Some(Stall {
                some_ns: 250_000,
                full_ns: Some(1_000)
            })
        );
        assert_eq!(a.since(&b), None, "went down: recreated");
        let no_full = Pressure {
            some_us: 400,
            full_us: None,
        };
        assert_eq!(no_full.since(&a).unwrap().full_ns, None);
    }
}
