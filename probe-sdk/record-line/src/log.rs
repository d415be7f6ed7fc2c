//! Probe log lines: `[INFO] msg`, `[WARN] msg`, `[ERROR] msg` (and `[DEBUG] msg`).
//!
//! A probe writes them on stderr (or, as upstream's probes do, on stdout where any line not
//! starting with `|` is a log line). The daemon logs each under the probe's name at the level of
//! its prefix; a line without a known prefix is logged at info, whole.

/// Severity named by a log line's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// `[DEBUG]`
    Debug,
    /// `[INFO]`
    Info,
    /// `[WARN]`
    Warn,
    /// `[ERROR]`
    Error,
}

impl Level {
    /// The line prefix, e.g. `[WARN]`; writers put one space after it.
    pub fn prefix(self) -> &'static str {
        match self {
            Level::Debug => "[DEBUG]",
            Level::Info => "[INFO]",
            Level::Warn => "[WARN]",
            Level::Error => "[ERROR]",
        }
    }
}

/// Splits `[LEVEL] message` into level and message (leading blanks of the message trimmed); a
/// line without a known prefix at its very start is info, the whole line.
pub fn classify(line: &str) -> (Level, &str) {
    for level in [Level::Error, Level::Warn, Level::Info, Level::Debug] {
        if let Some(rest) = line.strip_prefix(level.prefix()) {
            return (level, rest.trim_start());
        }
    }
    (Level::Info, line)
}

/// Whether the line is an `[ERROR]` line (byte-level check for unvalidated input).
pub fn is_error_line(line: &[u8]) -> bool {
    line.starts_with(Level::Error.prefix().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_prefixes() {
        assert_eq!(
            classify("[ERROR] unsupported: x"),
            (Level::Error, "unsupported: x")
        );
        assert_eq!(classify("[WARN]low memory"), (Level::Warn, "low memory"));
        assert_eq!(classify("[DEBUG] d"), (Level::Debug, "d"));
        assert_eq!(
            classify(" [ERROR] not at start"),
            (Level::Info, " [ERROR] not at start")
        );
        assert_eq!(classify("plain"), (Level::Info, "plain"));
    }
}
