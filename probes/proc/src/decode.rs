//! The map values and ring-buffer records `proc.bpf.c` shares with user space: the skeleton's
//! copies of `src/bpf/intf.h`, read and written with `probe_sdk::bpf::plain_data`.

use probe_sdk::bpf::plain_data::{self, Plain};

use crate::report::{PageCounters, PeriodMax, ProcCounters};
use crate::skel::types;

// SAFETY: plain C structs of integers and byte arrays, valid for any bit pattern.
unsafe impl Plain for types::proc_stats {}
// SAFETY: as above.
unsafe impl Plain for types::exec_notice {}

/// `comm` as the BPF structs hold it: at most 15 bytes, NUL-terminated.
pub fn comm_bytes(comm: &str) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (o, b) in out.iter_mut().zip(comm.bytes().take(15)) {
        *o = b as i8;
    }
    out
}

/// A NUL-padded C string of a BPF struct (`comm`, a domain name) as text, up to the first NUL
/// (all of it without one); invalid UTF-8 is replaced.
pub fn c_string(raw: &[i8]) -> String {
    let bytes: Vec<u8> = raw
        .iter()
        .map(|&c| c as u8)
        .take_while(|&c| c != 0)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A `proc_stats` map value; None if its size is not the skeleton type's.
pub fn proc_stats(bytes: &[u8]) -> Option<types::proc_stats> {
    plain_data::read_exact(bytes)
}

/// A new `proc_stats` entry for a process named `comm`; `in_slot` says whether its syscall
/// counts accrue in its filter slot's hot counters.
pub fn new_proc_stats(comm: &str, in_slot: bool) -> types::proc_stats {
    let mut s: types::proc_stats = plain_data::zeroed();
    s.comm = comm_bytes(comm);
    s.in_slot = u32::from(in_slot);
    s
}

fn period_max(m: &types::period_max) -> PeriodMax {
    PeriodMax {
        ns: m.ns,
        period: m.period,
    }
}

/// The bytes of a `proc_stats` value, for a map update.
pub fn proc_stats_bytes(s: &types::proc_stats) -> &[u8] {
    // SAFETY: `struct proc_stats` has no padding: u64 fields and `struct period_max`s (a u64 and
    // two u32), then two u32 and a 16-byte array (see intf.h), so every byte is initialized.
    unsafe { plain_data::as_bytes(s) }
}

/// Decodes a `proc_stats` map value; the flag says whether the syscall counts still accrue in
/// the process's hot slot.
pub fn decode_stats(bytes: &[u8]) -> Option<(ProcCounters, bool)> {
    let s = proc_stats(bytes)?;
    let c = ProcCounters {
        comm: c_string(&s.comm),
        syscalls: s.syscalls,
        syscall_failed: s.syscall_failed,
        slow_max: s.slow_max.each_ref().map(period_max),
        forks: s.forks,
        threads: s.threads,
        execs: s.execs,
        thread_exits: s.thread_exits,
        offcpu_ns: s.offcpu_ns,
        iowait_ns: s.iowait_ns,
        bio_small: s.bio_small,
        bio_big: s.bio_big,
        bio_latency: period_max(&s.bio_latency),
        bio_err: s.bio_err,
        hangs: s.hangs,
        page: PageCounters {
            reclaim_ns: s.reclaim_ns,
            access: s.pc_access,
            buffer_dirty: s.pc_buffer_dirty,
            load: s.pc_load,
            page_dirty: s.pc_page_dirty,
        },
        fs_max: s.fs_max.each_ref().map(period_max),
        fs_ops: s.fs_ops,
        ioctl_fd: s.ioctl_fd,
        ioctl_cmd: s.ioctl_cmd,
        pygc_count: s.pygc_count,
        pygc_ns: s.pygc_ns,
        pygc_max: period_max(&s.pygc_max),
        exited: s.exited != 0,
    };
    Some((c, s.in_slot != 0))
}

/// Every entry of a BPF hash `map` that `decode(key, value)` accepts, with its raw key (for a
/// delete); entries gone between the key walk and the lookup are skipped.
pub fn map_entries<T>(
    map: &dyn libbpf_rs::MapCore,
    decode: impl Fn(&[u8], &[u8]) -> Option<T>,
) -> Vec<(Vec<u8>, T)> {
    map.keys()
        .filter_map(|k| {
            let v = map.lookup(&k, libbpf_rs::MapFlags::ANY).ok()??;
            let t = decode(&k, &v)?;
            Some((k, t))
        })
        .collect()
}

/// The process of an `exec_notice` ring-buffer record; None if the record is truncated.
pub fn exec_notice_tgid(bytes: &[u8]) -> Option<u32> {
    plain_data::read::<types::exec_notice>(bytes).map(|n| n.tgid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscalls::{FS_SLOTS, SLOW_SLOTS, TABLE_LEN};
    use crate::tracker::TRACK_SLOTS;

    #[test]
    fn comm_round_trip_truncates_to_15() {
        let raw = comm_bytes("a-very-long-process-name");
        assert_eq!(c_string(&raw), "a-very-long-pro");
        assert_eq!(c_string(&comm_bytes("sh")), "sh");
        assert_eq!(c_string(&[0; 16]), "");
    }

    #[test]
    fn decode_reads_every_field() {
        let mut s = new_proc_stats("worker", true);
        s.syscalls = 10;
        s.syscall_failed = 3;
        s.slow_max[3].ns = 99;
        s.slow_max[3].period = 4;
        s.forks = 2;
        s.bio_big = [5, 6];
        s.bio_latency.ns = 77;
        s.bio_latency.period = 4;
        s.hangs = 8;
        s.fs_max[5].ns = 55;
        s.fs_max[5].period = 4;
        s.fs_ops[11] = 3;
        s.exited = 1;
        let (c, in_slot) = decode_stats(proc_stats_bytes(&s)).unwrap();
        assert!(in_slot);
        assert_eq!(c.syscalls, 10);
        assert_eq!(c.syscall_failed, 3);
        assert_eq!(c.slow_max[3], PeriodMax { ns: 99, period: 4 });
        assert_eq!(c.forks, 2);
        assert_eq!(c.bio_big, [5, 6]);
        assert_eq!(c.bio_latency, PeriodMax { ns: 77, period: 4 });
        assert_eq!(c.hangs, 8);
        assert_eq!(c.fs_max[5], PeriodMax { ns: 55, period: 4 });
        assert_eq!(c.fs_ops[11], 3);
        assert!(c.exited);
        assert_eq!(c.comm, "worker");
        assert!(decode_stats(&[0u8; 3]).is_none());
    }

    #[test]
    fn exec_notice_needs_a_whole_record() {
        let mut raw = 4242u32.to_ne_bytes().to_vec();
        raw.resize(std::mem::size_of::<types::exec_notice>(), 0);
        assert_eq!(exec_notice_tgid(&raw), Some(4242));
        assert_eq!(exec_notice_tgid(&raw[..8]), None);
    }

    /// Length of an array field, read off its type (`bss` is too big to build on the stack).
    fn array_len<S, T, const N: usize>(_field: fn(&S) -> &[T; N]) -> usize {
        N
    }

    #[test]
    fn rust_constants_match_intf_h() {
        assert_eq!(
            array_len(|s: &types::proc_stats| &s.slow_max),
            SLOW_SLOTS,
            "SLOW_SLOTS"
        );
        assert_eq!(
            array_len(|b: &types::bss| &b.tracked_slots),
            TRACK_SLOTS,
            "TRACK_SLOTS"
        );
        assert_eq!(
            array_len(|b: &types::bss| &b.hot_slots),
            TRACK_SLOTS,
            "TRACK_SLOTS"
        );
        assert_eq!(
            array_len(|b: &types::bss| &b.slow_col),
            TABLE_LEN,
            "SYSCALL_TABLE_LEN"
        );
        assert!(types::slow_col::NR_COLS.0 as usize <= SLOW_SLOTS);
        assert_eq!(
            array_len(|s: &types::proc_stats| &s.fs_max),
            FS_SLOTS,
            "FS_SLOTS"
        );
        assert_eq!(
            array_len(|b: &types::bss| &b.fs_op),
            TABLE_LEN,
            "SYSCALL_TABLE_LEN"
        );
    }
}
