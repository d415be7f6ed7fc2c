//! The BPF side's records as Rust values: the skeleton's `#[repr(C)]` key and value types.

use probe_sdk::bpf::plain_data::{self, Plain};

use crate::skel::types::{off_start, offcpu_key, offcpu_val, oncpu_key, samp_rec};

// SAFETY: integers only, so every bit pattern is a valid value.
unsafe impl Plain for oncpu_key {}
// SAFETY: as above.
unsafe impl Plain for offcpu_key {}
// SAFETY: as above.
unsafe impl Plain for offcpu_val {}
// SAFETY: as above.
unsafe impl Plain for off_start {}
// SAFETY: as above.
unsafe impl Plain for samp_rec {}

/// A map entry's bytes as `T` (None when the size is not `T`'s).
pub fn read<T: Plain>(bytes: &[u8]) -> Option<T> {
    plain_data::read_exact(bytes)
}

/// A stack map value: the frames up to the first zero.
pub fn frames(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .take_while(|ip| *ip != 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_stop_at_the_first_zero() {
        let mut b = Vec::new();
        for ip in [0x10u64, 0x20, 0, 0x30] {
            b.extend_from_slice(&ip.to_ne_bytes());
        }
        assert_eq!(frames(&b), vec![0x10, 0x20]);
        assert!(frames(&[]).is_empty());
    }
}
