//! A probe's stderr → daemon log, one tracing event per line at the level named by its prefix
//! (the contract's prefixes, [`record_line::log`]), within the probe's log-line budget (shared
//! with its stdout; see [`crate::telemetry::LogLimiter`]).
//!
//! A probe may write to stderr as fast as a pipe goes: suppressed lines cost a scan for `\n`, an
//! atomic add and nothing else (no decoding, no allocation, no formatting).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use record_line::log::{classify, is_error_line, Level};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::telemetry::{log_suppressed, Admit, ProbeStats};

/// Longest stderr line kept; the rest of a longer line is discarded.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// Bytes read from the pipe per call: a flood is read in few, large reads.
const READ_CHUNK: usize = 64 * 1024;

/// Appended to a line that was cut at [`MAX_LINE`].
const TRUNCATED_MARKER: &str = " …[truncated]";

/// Splits a byte stream into lines of at most `max` bytes without ever buffering more.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
    truncated: bool,
}

impl LineSplitter {
    pub(crate) fn new(max: usize) -> Self {
        LineSplitter {
            buf: Vec::new(),
            max,
            truncated: false,
        }
    }

    /// Feed bytes; `emit(line, truncated)` is called for every completed line (without `\n`/`\r`).
    pub(crate) fn push(&mut self, mut data: &[u8], emit: &mut impl FnMut(&[u8], bool)) {
        while !data.is_empty() {
            let (chunk, complete) = match memchr::memchr(b'\n', data) {
                Some(i) => (&data[..i], Some(i + 1)),
                None => (data, None),
            };
            if let (Some(consumed), true) = (complete, self.buf.is_empty() && !self.truncated) {
                if chunk.len() <= self.max {
                    // Whole line inside this read: hand it over without copying.
                    emit(chunk.strip_suffix(b"\r").unwrap_or(chunk), false);
                    data = &data[consumed..];
                    continue;
                }
            }
            let room = self.max.saturating_sub(self.buf.len());
            if chunk.len() > room {
                self.truncated = true;
            }
            self.buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            match complete {
                Some(consumed) => {
                    self.flush(emit);
                    data = &data[consumed..];
                }
                None => break,
            }
        }
    }

    /// Emit a pending unterminated line (at EOF).
    pub(crate) fn finish(&mut self, emit: &mut impl FnMut(&[u8], bool)) {
        if !self.buf.is_empty() || self.truncated {
            self.flush(emit);
        }
    }

    fn flush(&mut self, emit: &mut impl FnMut(&[u8], bool)) {
        let line = self.buf.strip_suffix(b"\r").unwrap_or(&self.buf);
        emit(line, self.truncated);
        self.buf.clear();
        self.truncated = false;
    }
}

/// Read `stderr` to EOF, logging each line with field `probe` within the probe's log budget and
/// counting `stats.log_lines`. Returns the message of the last `[ERROR]` line (logged or not),
/// used to explain an exit.
pub(crate) async fn forward<R: AsyncRead + Unpin>(
    mut stderr: R,
    stats: Arc<ProbeStats>,
) -> Option<String> {
    let probe = Arc::clone(&stats.name);
    let mut splitter = LineSplitter::new(MAX_LINE);
    let mut last_error: Option<String> = None;
    let mut emit = |raw: &[u8], truncated: bool| {
        stats.log_lines.fetch_add(1, Ordering::Relaxed);
        let verdict = stats.log_limit.admit();
        let is_error = is_error_line(raw);
        if verdict == Admit::Suppress && !is_error {
            return;
        }
        let text = String::from_utf8_lossy(raw);
        let (level, msg) = classify(&text);
        let marker = if truncated { TRUNCATED_MARKER } else { "" };
        if level == Level::Error {
            // Reuse the buffer: a flood of [ERROR] lines must not allocate per line.
            let keep = last_error.get_or_insert_with(String::new);
            keep.clear();
            keep.push_str(msg);
            keep.push_str(marker);
        }
        let Admit::Log { summary } = verdict else {
            return;
        };
        if let Some(n) = summary {
            log_suppressed(&probe, n);
        }
        match level {
            Level::Debug => tracing::debug!(probe = %probe, "{msg}{marker}"),
            Level::Info => tracing::info!(probe = %probe, "{msg}{marker}"),
            Level::Warn => tracing::warn!(probe = %probe, "{msg}{marker}"),
            Level::Error => tracing::error!(probe = %probe, "{msg}{marker}"),
        }
    };
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        match stderr.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => splitter.push(&chunk[..n], &mut emit),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(probe = %probe, error = %e, "reading probe stderr failed");
                break;
            }
        }
    }
    splitter.finish(&mut emit);
    log_suppressed(&probe, stats.log_limit.take_pending());
    last_error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(max: usize, pieces: &[&[u8]]) -> Vec<(Vec<u8>, bool)> {
        let mut out = Vec::new();
        let mut s = LineSplitter::new(max);
        let mut emit = |l: &[u8], t: bool| out.push((l.to_vec(), t));
        for p in pieces {
            s.push(p, &mut emit);
        }
        s.finish(&mut emit);
        out
    }

    #[test]
    fn splits_across_chunks() {
        let got = split_all(100, &[b"ab", b"c\nde", b"\r\n", b"tail"]);
        assert_eq!(
            got,
            vec![
                (b"abc".to_vec(), false),
                (b"de".to_vec(), false),
                (b"tail".to_vec(), false)
            ]
        );
    }

    #[test]
    fn long_line_truncated_and_next_line_intact() {
        let got = split_all(4, &[b"0123", b"456789\nok\n"]);
        assert_eq!(got, vec![(b"0123".to_vec(), true), (b"ok".to_vec(), false)]);
    }

    #[test]
    fn buffer_never_exceeds_limit() {
        let mut s = LineSplitter::new(16);
        let mut n = 0;
        let mut emit = |_: &[u8], _: bool| n += 1;
        for _ in 0..1000 {
            s.push(&[b'x'; 1000], &mut emit);
            assert!(s.buf.len() <= 16);
        }
        s.finish(&mut emit);
        assert_eq!(n, 1);
    }

    #[test]
    fn empty_lines_are_lines() {
        assert_eq!(
            split_all(10, &[b"\n\n"]),
            vec![(vec![], false), (vec![], false)]
        );
    }

    #[test]
    fn classifies_prefixes() {
        let cases = [
            (
                "[ERROR] unsupported: tracepoint x",
                Level::Error,
                "unsupported: tracepoint x",
            ),
            ("[WARN]low memory", Level::Warn, "low memory"),
            ("[INFO] started", Level::Info, "started"),
            ("[DEBUG] tick", Level::Debug, "tick"),
            ("plain text", Level::Info, "plain text"),
            (
                " [ERROR] not at start",
                Level::Info,
                " [ERROR] not at start",
            ),
            ("[error] lower case", Level::Info, "[error] lower case"),
        ];
        for (line, level, msg) in cases {
            assert_eq!(classify(line), (level, msg), "{line}");
        }
    }
}
