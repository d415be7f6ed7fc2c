//! Puts the kernel's records back in time order before they are parsed.
//!
//! The kernel side gathers data records per CPU and sends a CPU's batch when it fills or when
//! user space flushes every CPU ([`Collector::flush`](crate::collector::Collector::flush));
//! opens, closes, TLS records and large captures are sent at once. So one socket's records
//! can arrive out of order: across two CPUs' batches when its thread moved, and a close
//! before the data that preceded it. [`Reorder`] keeps every record received, and hands them
//! over in kernel-time order up to a *watermark*: a time before which every record has
//! arrived (the time user space read just before a flush that reached every CPU).
//!
//! Bounds: records are copied into one arena; past [`MAX_HELD_BYTES`] held, everything is
//! handed over at the next release whatever the watermark (counted in `forced`). A record
//! older than a watermark already passed is handed over with the next release, first, and
//! counted in `late`.

/// Most bytes of records held between two releases.
pub const MAX_HELD_BYTES: usize = 64 << 20;

#[derive(Debug, Clone, Copy)]
struct Slot {
    ts: u64,
    off: usize,
    len: usize,
}

/// Records held until a watermark passes them.
#[derive(Debug, Default)]
pub struct Reorder {
    arena: Vec<u8>,
    slots: Vec<Slot>,
    /// Every record older than this was handed over.
    watermark: u64,
    /// Records that arrived older than the watermark already passed.
    late: u64,
    /// Releases that handed over everything because [`MAX_HELD_BYTES`] were held.
    forced: u64,
    spare: Vec<u8>,
}

impl Reorder {
    /// Holds a copy of `record`, whose kernel time is `ts`.
    pub fn push(&mut self, ts: u64, record: &[u8]) {
        if ts < self.watermark {
            self.late = self.late.saturating_add(1);
        }
        self.slots.push(Slot {
            ts,
            off: self.arena.len(),
            len: record.len(),
        });
        self.arena.extend_from_slice(record);
    }

    /// Bytes of records held.
    pub fn held_bytes(&self) -> usize {
        self.arena.len()
    }

    /// Records held.
    pub fn held(&self) -> usize {
        self.slots.len()
    }

    /// Hands `f` every held record older than `upto` (everything when more than
    /// [`MAX_HELD_BYTES`] are held), oldest first (records of one time in arrival order),
    /// and keeps the rest.
    pub fn release(&mut self, upto: u64, mut f: impl FnMut(&[u8])) {
        let upto = if self.arena.len() > MAX_HELD_BYTES {
            self.forced = self.forced.saturating_add(1);
            u64::MAX
        } else {
            upto
        };
        // Stable: records of one time keep their arrival order.
        self.slots.sort_by_key(|s| s.ts);
        let n = self.slots.partition_point(|s| s.ts < upto);
        for s in self.slots.get(..n).unwrap_or_default() {
            if let Some(r) = self.arena.get(s.off..s.off + s.len) {
                f(r);
            }
        }
        let passed = match (upto, n.checked_sub(1).and_then(|i| self.slots.get(i))) {
            (u64::MAX, Some(last)) => last.ts.saturating_add(1),
            (u64::MAX, None) => self.watermark,
            (upto, _) => upto,
        };
        self.watermark = self.watermark.max(passed);
        // Keep the rest, compacted into the spare arena.
        let mut kept = std::mem::take(&mut self.spare);
        kept.clear();
        let rest = self.slots.split_off(n);
        self.slots.clear();
        for s in rest {
            let off = kept.len();
            kept.extend_from_slice(self.arena.get(s.off..s.off + s.len).unwrap_or_default());
            self.slots.push(Slot { off, ..s });
        }
        self.spare = std::mem::replace(&mut self.arena, kept);
        if self.spare.capacity() > MAX_HELD_BYTES {
            self.spare = Vec::new();
        }
    }

    /// The watermark passed so far.
    pub fn watermark(&self) -> u64 {
        self.watermark
    }

    /// Records that arrived after a watermark had passed their time.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Releases that handed over everything because too much was held.
    pub fn forced(&self) -> u64 {
        self.forced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn released(r: &mut Reorder, upto: u64) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        r.release(upto, |b| out.push(b.to_vec()));
        out
    }

    #[test]
    fn records_come_out_in_time_order_up_to_the_watermark() {
        let mut r = Reorder::default();
        r.push(30, b"c");
        r.push(10, b"a");
        r.push(20, b"b1");
        r.push(20, b"b2");
        r.push(50, b"e");
        assert_eq!(
            released(&mut r, 40),
            [b"a".to_vec(), b"b1".to_vec(), b"b2".to_vec(), b"c".to_vec()]
        );
        assert_eq!((r.held(), r.held_bytes()), (1, 1));
        r.push(45, b"d");
        assert_eq!(released(&mut r, 60), [b"d".to_vec(), b"e".to_vec()]);
        assert_eq!(r.late(), 0);
        // Older than the watermark passed: handed over next, counted.
        r.push(5, b"old");
        r.push(70, b"f");
        assert_eq!(r.late(), 1);
        assert_eq!(released(&mut r, 60), [b"old".to_vec()]);
        assert_eq!(r.watermark(), 60);
        assert_eq!(released(&mut r, 80), [b"f".to_vec()]);
    }

    #[test]
    fn too_much_held_is_handed_over() {
        let mut r = Reorder::default();
        let big = vec![7u8; 1 << 20];
        for i in 0..65u64 {
            r.push(1000 + i, &big);
        }
        assert_eq!(released(&mut r, 10).len(), 65);
        assert_eq!((r.forced(), r.held()), (1, 0));
        assert_eq!(
            r.watermark(),
            1065,
            "a forced release passes only what it handed over"
        );
    }
}
