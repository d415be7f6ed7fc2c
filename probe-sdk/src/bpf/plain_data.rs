//! Plain-data views of BPF records: the one way probes turn ring-buffer records and map values
//! into the skeleton's `#[repr(C)]` types (generated from the probe's `src/bpf/intf.h`) and back.
//!
//! A probe marks each type it decodes once, in its `src/decode.rs`:
//!
//! ```ignore
//! // SAFETY: integers and integer arrays only, so every bit pattern is a valid value.
//! unsafe impl probe_sdk::bpf::Plain for crate::skel::types::my_event {}
//! ```
//!
//! and then reads records with [`read`] (ring-buffer records, which may be padded) or
//! [`read_exact`] (map values, whose size must match the type).

pub use plain::Plain;

/// Copies the first `size_of::<T>()` bytes of `bytes` into a `T`; None if `bytes` is shorter.
/// Longer input is accepted: ring-buffer records are padded to 8 bytes, and a record that
/// starts with a common header may be read as that header first.
pub fn read<T: Plain>(bytes: &[u8]) -> Option<T> {
    let bytes = bytes.get(..std::mem::size_of::<T>())?;
    // SAFETY: `T: Plain` promises that every bit pattern is a valid `T`; `bytes` holds exactly
    // `size_of::<T>()` initialized bytes and `read_unaligned` needs no alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Like [`read`], but `bytes` must be exactly `size_of::<T>()` long (a map value of this
/// type); None otherwise, which means the skeleton and the loaded object disagree.
pub fn read_exact<T: Plain>(bytes: &[u8]) -> Option<T> {
    if bytes.len() != std::mem::size_of::<T>() {
        return None;
    }
    read(bytes)
}

/// A `T` with every byte zero (valid for any [`Plain`] type).
pub fn zeroed<T: Plain>() -> T {
    // SAFETY: `T: Plain` promises that every bit pattern, all-zero included, is a valid `T`.
    unsafe { std::mem::zeroed() }
}

/// The bytes of `value`, e.g. to update a map with it.
///
/// # Safety
///
/// `T` must have no padding bytes (their contents are uninitialized, and reading them is
/// undefined behaviour): lay the C struct out so that every byte belongs to a field.
pub unsafe fn as_bytes<T: Plain>(value: &T) -> &[u8] {
    // SAFETY: the caller guarantees there is no padding, so all size_of::<T>() bytes behind the
    // reference are initialized; the slice borrows `value`.
    unsafe { plain::as_bytes(value) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    #[repr(C)]
    struct Sample {
        a: u64,
        b: u32,
        c: u32,
    }
    // SAFETY: integers only, no padding.
    unsafe impl Plain for Sample {}

    fn sample_bytes() -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&7u64.to_ne_bytes());
        v.extend_from_slice(&8u32.to_ne_bytes());
        v.extend_from_slice(&9u32.to_ne_bytes());
        v
    }

    #[test]
    fn reads_prefix_and_rejects_short_input() {
        let mut bytes = sample_bytes();
        let expected = Sample { a: 7, b: 8, c: 9 };
        assert_eq!(read::<Sample>(&bytes), Some(expected));
        bytes.extend_from_slice(&[0xff; 8]); // ring-buffer padding
        assert_eq!(read::<Sample>(&bytes), Some(expected));
        assert_eq!(read::<Sample>(&bytes[..15]), None);
        // Unaligned input is fine.
        let shifted: Vec<u8> = [0u8].iter().chain(&bytes).copied().collect();
        assert_eq!(read::<Sample>(&shifted[1..]), Some(expected));
    }

    #[test]
    fn exact_length_for_map_values() {
        let bytes = sample_bytes();
        assert!(read_exact::<Sample>(&bytes).is_some());
        assert!(read_exact::<Sample>(&[bytes.as_slice(), &[0]].concat()).is_none());
        assert!(read_exact::<Sample>(&bytes[..8]).is_none());
    }

    #[test]
    fn round_trips_through_bytes() {
        let mut s: Sample = zeroed();
        assert_eq!(s, Sample { a: 0, b: 0, c: 0 });
        s.b = 8;
        // SAFETY: Sample has no padding.
        let bytes = unsafe { as_bytes(&s) }.to_vec();
        assert_eq!(read_exact::<Sample>(&bytes), Some(s));
    }
}
