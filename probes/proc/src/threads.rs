//! `thread_cpu` (sub-probe `thread_cpu`, `-P 4096`, v2023's table): per-thread off-CPU time
//! (from `sched_switch`) and CPU migrations (`sched_migrate_task`) of the tracked processes.
//! BPF keeps running totals per thread in `thread_stats` (16384 threads; a refused insert
//! counts in `map_full`); each report writes one row per thread, and a thread's row is removed
//! after the report that shows its exit, or once its process is no longer tracked.

use std::collections::HashSet;
use std::io::{self, Write};

use libbpf_rs::MapCore;
use probe_sdk::bpf::plain_data::{self, Plain};
use probe_sdk::record::RecordWriter;

use crate::decode::{c_string, map_entries};
use crate::skel::types;
use crate::tables::THREAD;

// SAFETY: a plain C struct of integers and a byte array, valid for any bit pattern.
unsafe impl Plain for types::thread_stats {}

/// One thread's totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadRow {
    /// Thread id.
    pub pid: u32,
    /// Its process.
    pub tgid: u32,
    /// Its comm when first seen.
    pub comm: String,
    /// Time switched out, ns.
    pub offcpu_ns: u64,
    /// Moves to another CPU.
    pub migrations: u64,
    /// The thread has exited (this is its last row).
    pub exited: bool,
}

/// Decodes a `thread_stats` entry; None if a size is not the skeleton's.
pub fn decode(key: &[u8], value: &[u8]) -> Option<ThreadRow> {
    let pid = u32::from_ne_bytes(key.try_into().ok()?);
    let v: types::thread_stats = plain_data::read_exact(value)?;
    Some(ThreadRow {
        pid,
        tgid: v.tgid,
        comm: c_string(&v.comm),
        offcpu_ns: v.offcpu_ns,
        migrations: v.migrations,
        exited: v.exited != 0,
    })
}

/// Writes the rows of the threads of `tracked` processes (sorted by thread id), then deletes
/// from `map` the threads that exited and those of processes not tracked.
pub fn report<W: Write>(
    out: &mut RecordWriter<W>,
    map: &dyn MapCore,
    tracked: &HashSet<u32>,
) -> io::Result<()> {
    let mut rows = map_entries(map, decode);
    rows.sort_by_key(|(_, r)| r.pid);
    for (key, r) in &rows {
        let keep = tracked.contains(&r.tgid);
        if keep {
            write_row(out, r)?;
        }
        if !keep || r.exited {
            // Gone already (a race with another delete) is fine.
            let _ = map.delete(key);
        }
    }
    Ok(())
}

fn write_row<W: Write>(out: &mut RecordWriter<W>, r: &ThreadRow) -> io::Result<()> {
    out.record(THREAD)
        .field(&r.pid)
        .field(&r.tgid)
        .field(r.comm.as_str())
        .field(&r.offcpu_ns)
        .field(&r.migrations)
        .end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_decode_and_print_in_meta_order() {
        let mut v: types::thread_stats = plain_data::zeroed();
        v.offcpu_ns = 1500;
        v.migrations = 3;
        v.tgid = 10;
        v.exited = 1;
        v.comm = crate::decode::comm_bytes("worker|1");
        // SAFETY: u64s, two u32 and a byte array: no padding.
        let bytes = unsafe { plain_data::as_bytes(&v) };
        let r = decode(&12u32.to_ne_bytes(), bytes).unwrap();
        assert_eq!(r.pid, 12);
        assert!(r.exited);
        assert!(decode(&[1, 2], bytes).is_none());
        assert!(decode(&12u32.to_ne_bytes(), &bytes[..8]).is_none());
        let mut w = RecordWriter::new(Vec::new());
        write_row(&mut w, &r).unwrap();
        w.flush().unwrap();
        assert_eq!(
            String::from_utf8(w.into_inner()).unwrap(),
            "|thread_cpu|12|10|worker\\|1|1500|3|\n"
        );
    }
}
