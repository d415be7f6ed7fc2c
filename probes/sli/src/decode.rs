//! Decoding of the map entries `sli.bpf.c` keeps: the skeleton's copies of `src/bpf/intf.h`,
//! read with `probe_sdk::bpf::plain_data`.

use probe_sdk::bpf::plain_data::{self, Plain};

use crate::skel::types;

// SAFETY: `struct sli_group` is integers and integer arrays only (no implicit padding: every
// member is 8-byte aligned and sized, the two u32 of sli_period_max fill one 8-byte slot),
// valid for any bit pattern.
unsafe impl Plain for types::sli_group {}

/// A statistics map key: the cgroup id (`kernfs_node.id`); None if too short.
pub fn cgroup_key(key: &[u8]) -> Option<u64> {
    plain_data::read::<u64>(key)
}

/// One CPU's statistics value; None if its size is not the skeleton type's (build/kernel
/// mismatch).
pub fn group(bytes: &[u8]) -> Option<types::sli_group> {
    plain_data::read_exact(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{GROUP_KINDS, LAT_SLOTS};

    #[test]
    fn group_checks_length() {
        let size = std::mem::size_of::<types::sli_group>();
        assert!(group(&vec![0u8; size - 1]).is_none());
        assert!(group(&vec![0u8; size + 1]).is_none());
        let mut raw = vec![0u8; size];
        raw[8] = 3; // lat[0].slots[1]
        let v = group(&raw).unwrap();
        assert_eq!(v.lat[0].slots[1], 3);
    }

    #[test]
    fn cgroup_key_is_a_native_u64() {
        assert_eq!(cgroup_key(&4242u64.to_ne_bytes()), Some(4242));
        assert_eq!(cgroup_key(&[1, 2, 3]), None);
    }

    #[test]
    fn rust_constants_match_intf_h() {
        let v: types::sli_group = plain_data::zeroed();
        assert_eq!(v.lat.len(), GROUP_KINDS, "SLI_GROUP_KINDS");
        assert_eq!(v.max.max_ns.len(), GROUP_KINDS, "SLI_GROUP_KINDS");
        assert_eq!(v.lat[0].slots.len(), LAT_SLOTS, "SLI_LAT_SLOTS");
        assert!(types::sli_cpu_kind::SLI_CPU_NR.0 as usize <= GROUP_KINDS);
        assert!(types::sli_memio_kind::SLI_MEMIO_NR.0 as usize <= GROUP_KINDS);
    }
}
