//! The control channel, probe side: the daemon writes one [`ControlMsg`] line on the probe's
//! stdin right after starting it and on every change of its params, sub-probes or snoopers
//! (format: [`probe_decl::channel`]). [`Control::from_stdin`] reads them on a thread; the
//! probe's loop calls [`Control::take`] once per wake-up and applies what changed:
//!
//! ```no_run
//! use probe_sdk::control::Control;
//! let control = Control::from_stdin();
//! loop {
//!     if let Some(msg) = control.take() {
//!         let period = msg.int("report_period").unwrap_or(5);
//!         let _ = (period, msg.probe_bits, &msg.snoop);
//!     }
//!     # break;
//! }
//! ```
//!
//! Only the newest message counts (each is the complete state). A line that is not a control
//! message is reported once on stderr as a warning and skipped; stdin at EOF (no daemon, or a
//! probe run by hand with stdin closed) simply never yields a message.

use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Mutex};

pub use probe_decl::{ControlMsg, Snoop, SnoopMode};

/// Where the newest unread message waits.
#[derive(Debug, Default)]
struct Slot {
    latest: Option<ControlMsg>,
    received: u64,
    refused: u64,
    /// The input ended (or could not be read).
    closed: bool,
}

/// Handle on the control channel.
#[derive(Debug, Clone, Default)]
pub struct Control {
    slot: Arc<Mutex<Slot>>,
}

impl Control {
    /// Reads control lines from stdin on a background thread.
    pub fn from_stdin() -> Control {
        Control::from_reader(std::io::stdin())
    }

    /// Reads control lines from `input` on a background thread (tests use a pipe).
    pub fn from_reader<R: Read + Send + 'static>(input: R) -> Control {
        let control = Control::default();
        let slot = Arc::clone(&control.slot);
        let spawned = std::thread::Builder::new()
            .name("gala-control".into())
            .spawn(move || {
                read_lines(BufReader::new(input), &slot);
                lock(&slot).closed = true;
            });
        if let Err(e) = spawned {
            crate::warn!("control channel: cannot start its reader thread: {e}");
        }
        control
    }

    /// The newest message not taken yet.
    pub fn take(&self) -> Option<ControlMsg> {
        lock(&self.slot).latest.take()
    }

    /// The first message, waiting at most `timeout` for it; None if the input ends first (a
    /// probe run by hand) or nothing comes in time. The message stays for [`take`](Self::take):
    /// this is for the settings a probe must know before it starts (sizes of kernel maps),
    /// the daemon writes the first line right after the spawn.
    pub fn first(&self, timeout: std::time::Duration) -> Option<ControlMsg> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            {
                let s = lock(&self.slot);
                if s.received > 0 || s.closed {
                    return s.latest.clone();
                }
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Messages received and lines refused so far.
    pub fn counts(&self) -> (u64, u64) {
        let s = lock(&self.slot);
        (s.received, s.refused)
    }
}

fn lock(slot: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

fn read_lines<R: BufRead>(mut input: R, slot: &Mutex<Slot>) {
    let limit = probe_decl::MAX_LINE_BYTES as u64;
    let mut buf = Vec::new();
    let mut warned = false;
    loop {
        buf.clear();
        // One byte over the limit tells an overlong line from one that fits.
        match (&mut input).take(limit + 1).read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let too_long = buf.len() as u64 > limit;
        // A line one byte over the limit may end right there: then there is nothing to skip.
        if too_long && !buf.ends_with(b"\n") {
            // Skip the rest of the overlong line.
            loop {
                let mut rest = Vec::new();
                match (&mut input).take(limit).read_until(b'\n', &mut rest) {
                    Ok(0) | Err(_) => return,
                    Ok(_) if rest.ends_with(b"\n") => break,
                    Ok(_) => {}
                }
            }
        }
        let parsed = if too_long {
            Err("control line too long".to_string())
        } else {
            std::str::from_utf8(&buf)
                .map_err(|e| e.to_string())
                .and_then(|l| ControlMsg::parse_line(l).map_err(|e| e.to_string()))
        };
        let mut s = lock(slot);
        match parsed {
            Ok(msg) => {
                s.received += 1;
                s.latest = Some(msg);
            }
            Err(e) => {
                s.refused += 1;
                if !warned {
                    warned = true;
                    crate::warn!("control channel: line skipped: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::{Duration, Instant};

    fn wait_for(control: &Control, what: impl Fn(&Control) -> bool) {
        let start = Instant::now();
        while !what(control) {
            assert!(start.elapsed() < Duration::from_secs(5), "timed out");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn newest_message_wins_and_garbage_is_skipped() {
        let (reader, mut writer) = std::io::pipe().unwrap();
        let control = Control::from_reader(reader);
        assert!(control.take().is_none());
        writeln!(writer, "{{\"params\":{{\"report_period\":7}}}}").unwrap();
        writeln!(writer, "not json").unwrap();
        writeln!(
            writer,
            "{{\"probe_bits\":3,\"params\":{{\"report_period\":9}}}}"
        )
        .unwrap();
        wait_for(&control, |c| c.counts() == (2, 1));
        let msg = control.take().unwrap();
        assert_eq!(msg.int("report_period"), Some(9));
        assert_eq!(msg.probe_bits, 3);
        assert!(control.take().is_none());
        // An overlong line is refused whole and the next one still arrives.
        writer
            .write_all(&vec![b'x'; probe_decl::MAX_LINE_BYTES + 10])
            .unwrap();
        writeln!(writer).unwrap();
        writeln!(writer, "{{\"probe_bits\":1}}").unwrap();
        wait_for(&control, |c| c.counts() == (3, 2));
        assert_eq!(control.take().unwrap().probe_bits, 1);
        drop(writer);
    }

    #[test]
    fn first_waits_for_the_first_message_and_leaves_it() {
        let (reader, mut writer) = std::io::pipe().unwrap();
        let control = Control::from_reader(reader);
        let t0 = Instant::now();
        assert!(
            control.first(Duration::from_millis(50)).is_none(),
            "nothing yet"
        );
        assert!(t0.elapsed() >= Duration::from_millis(50));
        writeln!(writer, "{{\"params\":{{\"ringbuf_map_size\":4}}}}").unwrap();
        let msg = control.first(Duration::from_secs(5)).unwrap();
        assert_eq!(msg.int("ringbuf_map_size"), Some(4));
        assert_eq!(control.take().unwrap().int("ringbuf_map_size"), Some(4));
        // Input at its end: no wait.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(writer);
        let control = Control::from_reader(reader);
        let t0 = Instant::now();
        assert!(control.first(Duration::from_secs(5)).is_none());
        assert!(t0.elapsed() < Duration::from_secs(2));
    }
}
