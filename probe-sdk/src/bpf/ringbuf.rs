//! Ring-buffer consumption that works with batched wake-ups.
//!
//! `gg_common.h` submits with `BPF_RB_NO_WAKEUP` until 256 KiB are queued, so `epoll` alone
//! would sleep on pending records; [`RingPoller::poll`] therefore always drains after waiting.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use libbpf_rs::{MapCore, RingBuffer, RingBufferBuilder};

use super::BpfError;

/// Thin wrapper over [`libbpf_rs::RingBuffer`] that polls, then consumes, and counts records.
pub struct RingPoller<'cb> {
    ring: RingBuffer<'cb>,
    received: Rc<Cell<u64>>,
}

impl std::fmt::Debug for RingPoller<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingPoller")
            .field("received", &self.received.get())
            .finish_non_exhaustive()
    }
}

impl<'cb> RingPoller<'cb> {
    /// Polls the ring-buffer `map`, calling `callback` with each record's bytes. A negative
    /// return from the callback stops the current drain and is reported by [`poll`](Self::poll).
    pub fn new<F>(map: &dyn MapCore, mut callback: F) -> Result<RingPoller<'cb>, BpfError>
    where
        F: FnMut(&[u8]) -> i32 + 'cb,
    {
        let received = Rc::new(Cell::new(0u64));
        let counter = Rc::clone(&received);
        let mut builder = RingBufferBuilder::new();
        builder.add(map, move |data: &[u8]| {
            counter.set(counter.get() + 1);
            callback(data)
        })?;
        Ok(RingPoller {
            ring: builder.build()?,
            received,
        })
    }

    /// Waits up to `timeout` for a wake-up, then drains everything queued (including records
    /// submitted without wake-up). Returns the number of records handled by this call.
    /// An interrupted wait (signal) is not an error.
    pub fn poll(&self, timeout: Duration) -> Result<u64, BpfError> {
        let before = self.received.get();
        let rc = self.ring.poll_raw(timeout);
        if rc < 0 && rc != -libc::EINTR {
            return Err(libbpf_rs::Error::from_raw_os_error(-rc).into());
        }
        let rc = self.ring.consume_raw();
        if rc < 0 && rc != -libc::EINTR {
            return Err(libbpf_rs::Error::from_raw_os_error(-rc).into());
        }
        Ok(self.received.get() - before)
    }

    /// Records handled since creation (each callback invocation counts once).
    pub fn received(&self) -> u64 {
        self.received.get()
    }

    /// The epoll fd that becomes readable on a wake-up, for callers with their own event loop.
    pub fn epoll_fd(&self) -> i32 {
        self.ring.epoll_fd()
    }
}

/// Largest ring buffer upstream's `ringbuf_map_size` param allows, MiB.
pub const RING_MAX_MIB: i64 = 32;

/// The ring-buffer size in bytes for upstream's `ringbuf_map_size` param (MiB, 1..=32; a
/// BPF ring buffer must be a power of two): `requested` rounded up to a power of two, or
/// `default_mib` when not given. The second value is a note for the log when the request
/// was rounded or clamped.
pub fn ring_bytes(requested: Option<i64>, default_mib: u32) -> (u32, Option<String>) {
    let Some(want) = requested else {
        return (default_mib.next_power_of_two() << 20, None);
    };
    let clamped = want.clamp(1, RING_MAX_MIB);
    // In 1..=32: fits u32, and so does its power of two shifted by 20.
    let mib = (clamped as u32).next_power_of_two();
    let note = (i64::from(mib) != want).then(|| {
        format!("ringbuf_map_size {want} MiB: using {mib} MiB (a power of two in 1..=32)")
    });
    (mib << 20, note)
}

/// How long a probe waits at start for the daemon's first control line, which carries
/// `ringbuf_map_size` (the daemon writes it right after the spawn).
pub const FIRST_CONTROL_WAIT: Duration = Duration::from_millis(500);

/// The ring-buffer size to load with: `ringbuf_map_size` of the daemon's first control line
/// (waiting at most [`FIRST_CONTROL_WAIT`]), else `default_mib`; a rounded or clamped request is
/// logged as a warning.
pub fn ring_bytes_at_start(control: &crate::control::Control, default_mib: u32) -> u32 {
    let requested = control
        .first(FIRST_CONTROL_WAIT)
        .and_then(|m| m.int("ringbuf_map_size"));
    let (bytes, note) = ring_bytes(requested, default_mib);
    if let Some(note) = note {
        crate::warn!("{note}");
    }
    bytes
}

/// The warning for a control message asking for another ring size than the `current` one
/// (bytes): upstream changes `ringbuf_map_size` only while the probe is stopped.
pub fn ring_change_note(
    msg: &crate::control::ControlMsg,
    current: u32,
    default_mib: u32,
) -> Option<String> {
    let wanted = ring_bytes(msg.int("ringbuf_map_size"), default_mib).0;
    (wanted != current).then(|| {
        format!(
            "control: ringbuf_map_size is applied at start; the ring buffer stays {} MiB until the probe restarts",
            current >> 20
        )
    })
}

#[cfg(test)]
mod ring_size_tests {
    use super::*;

    #[test]
    fn sizes_are_powers_of_two_within_the_range() {
        assert_eq!(ring_bytes(None, 2), (2 << 20, None));
        assert_eq!(ring_bytes(Some(8), 2), (8 << 20, None));
        let (b, note) = ring_bytes(Some(3), 2);
        assert_eq!(b, 4 << 20);
        assert!(note.unwrap().contains("using 4 MiB"));
        assert_eq!(ring_bytes(Some(0), 2).0, 1 << 20);
        assert_eq!(ring_bytes(Some(1000), 2).0, 32 << 20);
        assert_eq!(ring_bytes(Some(-5), 2).0, 1 << 20);
    }

    #[test]
    fn a_change_while_running_is_noted() {
        let msg = |line: &str| crate::control::ControlMsg::parse_line(line).unwrap();
        let eight = msg(r#"{"params":{"ringbuf_map_size":8}}"#);
        assert_eq!(ring_change_note(&eight, 8 << 20, 2), None);
        assert!(ring_change_note(&eight, 2 << 20, 2)
            .unwrap()
            .contains("stays 2 MiB"));
        // Not given: the default, so no note while the default is in use.
        assert_eq!(ring_change_note(&msg("{}"), 2 << 20, 2), None);
    }
}
