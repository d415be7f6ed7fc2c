//! Probe log lines on stderr: `[INFO] msg`, `[WARN] msg`, `[ERROR] msg`.
//!
//! The daemon reads a probe's stderr line by line and logs each line under the probe's name at
//! the level of its prefix (the prefixes are part of the record-line contract,
//! [`record_line::log`]). Use the [`info!`](crate::info), [`warn!`](crate::warn) and
//! [`error!`](crate::error) macros.

use std::fmt;
use std::io::Write;

/// Severity of a log line; its prefix (the contract's, [`record_line::log`]) is what the daemon
/// keys on.
pub use record_line::log::Level;

/// Formats one log line (with trailing newline) into `out`. Newlines inside the message are
/// written as `\n` so one call is always exactly one line for the daemon.
pub fn format_line(out: &mut Vec<u8>, level: Level, args: fmt::Arguments<'_>) {
    out.extend_from_slice(level.prefix().as_bytes());
    out.push(b' ');
    let start = out.len();
    // Writing into a Vec cannot fail.
    let _ = out.write_fmt(args);
    if out[start..].iter().any(|&b| b == b'\n' || b == b'\r') {
        let msg = out.split_off(start);
        for b in msg {
            match b {
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                _ => out.push(b),
            }
        }
    }
    out.push(b'\n');
}

/// Writes one log line to stderr with a single write; errors (stderr closed) are ignored.
#[doc(hidden)]
pub fn write_line(level: Level, args: fmt::Arguments<'_>) {
    let mut line = Vec::with_capacity(128);
    format_line(&mut line, level, args);
    let _ = std::io::stderr().lock().write_all(&line);
}

/// Logs `[INFO] <message>` to stderr; takes `format!` arguments.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => {
        $crate::log::write_line($crate::log::Level::Info, ::std::format_args!($($arg)*))
    };
}

/// Logs `[WARN] <message>` to stderr; takes `format!` arguments.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => {
        $crate::log::write_line($crate::log::Level::Warn, ::std::format_args!($($arg)*))
    };
}

/// Logs `[ERROR] <message>` to stderr; takes `format!` arguments.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => {
        $crate::log::write_line($crate::log::Level::Error, ::std::format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(level: Level, args: fmt::Arguments<'_>) -> String {
        let mut out = Vec::new();
        format_line(&mut out, level, args);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn prefixes() {
        assert_eq!(line(Level::Info, format_args!("up {}", 1)), "[INFO] up 1\n");
        assert_eq!(line(Level::Warn, format_args!("w")), "[WARN] w\n");
        assert_eq!(line(Level::Error, format_args!("e")), "[ERROR] e\n");
    }

    #[test]
    fn multi_line_message_stays_one_line() {
        assert_eq!(
            line(Level::Error, format_args!("a\nb\r")),
            "[ERROR] a\\nb\\r\n"
        );
    }

    #[test]
    fn macros_expand() {
        crate::info!("info {}", 1);
        crate::warn!("warn {x}", x = 2);
        crate::error!("error");
    }
}
