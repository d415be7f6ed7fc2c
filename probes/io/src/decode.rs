//! Decoding of the map entries `io.bpf.c` keeps: the skeleton's copies of `src/bpf/intf.h`,
//! read with `probe_sdk::bpf::plain_data`.

use probe_sdk::bpf::plain_data::{self, Plain};

use crate::skel::types;

// SAFETY: `struct io_disk_stats` is integers and integer arrays only (explicit `_pad`), valid
// for any bit pattern.
unsafe impl Plain for types::io_disk_stats {}
// SAFETY: four u64s.
unsafe impl Plain for types::io_pc_stats {}

/// The `io_stats` key: the disk's kernel-internal `dev_t` (see
/// [`DiskId::from_kernel_dev`](crate::stats::DiskId::from_kernel_dev)); None if too short.
pub fn disk_key(key: &[u8]) -> Option<u32> {
    plain_data::read::<u32>(key)
}

/// One CPU's `io_stats` value; None if its size is not the skeleton type's (build/kernel
/// mismatch).
pub fn disk_stats(bytes: &[u8]) -> Option<types::io_disk_stats> {
    plain_data::read_exact(bytes)
}

/// One CPU's `io_pc` value; None if its size is not the skeleton type's.
pub fn pc_stats(bytes: &[u8]) -> Option<types::io_pc_stats> {
    plain_data::read_exact(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{LAT_SLOTS, OPS, STAGES};

    #[test]
    fn disk_stats_checks_length() {
        let size = std::mem::size_of::<types::io_disk_stats>();
        assert!(disk_stats(&vec![0u8; size - 1]).is_none());
        assert!(disk_stats(&vec![0u8; size + 1]).is_none());
        let mut raw = vec![0u8; size];
        raw[8] = 7; // ops[1]
        let v = disk_stats(&raw).unwrap();
        assert_eq!(v.ops, [0, 7, 0, 0]);
    }

    #[test]
    fn disk_key_is_a_native_u32() {
        assert_eq!(
            disk_key(&((254u32 << 20) | 16).to_ne_bytes()),
            Some((254 << 20) | 16)
        );
        assert_eq!(disk_key(&[1, 2]), None);
    }

    #[test]
    fn rust_constants_match_intf_h() {
        let v: types::io_disk_stats = plain_data::zeroed();
        assert_eq!(v.ops.len(), OPS.len(), "IO_OP_NR");
        assert_eq!(v.lat.len(), STAGES.len(), "IO_STAGE_NR");
        assert_eq!(v.period.cur.max_ns.len(), STAGES.len(), "IO_STAGE_NR");
        assert_eq!(v.period.prev.jitter_ns.len(), STAGES.len(), "IO_STAGE_NR");
        assert_eq!(v.lat[0].slots.len(), LAT_SLOTS, "IO_LAT_SLOTS");
        assert_eq!(OPS.len(), types::io_op::IO_OP_NR.0 as usize);
        assert_eq!(STAGES.len(), types::io_stage::IO_STAGE_NR.0 as usize);
        for (i, op) in OPS.iter().enumerate() {
            assert_eq!(*op as usize, i, "OPS in enum io_op order");
        }
        for (i, stage) in STAGES.iter().enumerate() {
            assert_eq!(*stage as usize, i, "STAGES in enum io_stage order");
        }
    }
}
