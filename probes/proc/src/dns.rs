//! `proc_dns` (sub-probe `proc_dns`, `-P` bit 512): DNS lookups per process and domain, from
//! uprobes on the C library's `getaddrinfo`, `gethostbyname` and `gethostbyname2` (entry and
//! return). The C library is the one each tracked process maps (a container's own, opened
//! through `/proc/<pid>/root`; [`probe_sdk::bpf::uprobe_libs`]). BPF keeps running totals per
//! (tgid, domain) in `dns_stats`; each report turns them into upstream's per-period values.
//!
//! Bounds: a process has at most [`DOMAIN_CAP`] domains, its further lookups count under the
//! domain `(other)`; the map holds 8192 rows in all (a refused insert counts in `map_full`); a
//! lookup whose return was never seen (thread killed inside it) is dropped after
//! [`STALE_CALL`].

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use libbpf_rs::{Link, MapCore};
use probe_sdk::bpf::plain_data::{self, Plain};
use probe_sdk::bpf::uprobe_libs::{self, LibHooks};
use probe_sdk::record::RecordWriter;

use crate::decode::{c_string, map_entries};
use crate::report::PeriodMax;
use crate::skel::{types, ProcProgs};
use crate::tables::DNS;

// SAFETY: plain C structs of integers and byte arrays, valid for any bit pattern.
unsafe impl Plain for types::dns_key {}
// SAFETY: as above.
unsafe impl Plain for types::dns_stats {}
// SAFETY: as above.
unsafe impl Plain for types::dns_call {}

/// Domains one process may have; its further lookups count under `(other)`.
pub const DOMAIN_CAP: u32 = 256;
/// A lookup in progress for longer than this is taken as abandoned and forgotten.
pub const STALE_CALL: Duration = Duration::from_secs(60);

/// Which libraries get the hooks: glibc (`libc.so.6`, old `libc-2.x.so`) and musl (its libc is
/// the dynamic loader, `ld-musl-<arch>.so.1`).
pub fn is_libc(name: &str) -> bool {
    name.starts_with("libc.so")
        || (name.starts_with("libc-") && name.ends_with(".so"))
        || name.starts_with("ld-musl-")
}

/// The hooks' targets.
pub fn libc_hooks() -> LibHooks {
    LibHooks::new("libc", is_libc)
}

/// Attaches the lookup uprobes to the C library at `path` (for process `pid`, or every process
/// mapping it when `pid` is -1). A function the library lacks is skipped; none at all is an
/// error.
pub fn attach(progs: &ProcProgs<'_>, pid: i32, path: &Path) -> Result<Vec<Link>, String> {
    let hooks = [
        (&progs.dns_enter, "getaddrinfo", false),
        (&progs.dns_ret_int, "getaddrinfo", true),
        (&progs.dns_enter, "gethostbyname", false),
        (&progs.dns_ret_ptr, "gethostbyname", true),
        (&progs.dns_enter, "gethostbyname2", false),
        (&progs.dns_ret_ptr, "gethostbyname2", true),
    ];
    uprobe_libs::attach_functions(&hooks, pid, path)
        .map_err(|e| format!("attaching the DNS uprobes: {e}"))
}

/// One (process, domain) row of `dns_stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRow {
    /// Process.
    pub tgid: u32,
    /// Domain as the process asked for it (lossy UTF-8), `(other)`, or empty when the name
    /// could not be read.
    pub domain: String,
    /// Lookups, running total.
    pub count: u64,
    /// Failed lookups, running total.
    pub errors: u64,
    /// Time in lookups, ns, running total.
    pub sum_ns: u64,
    /// The period's longest lookup.
    pub max: PeriodMax,
}

/// Decodes a `dns_stats` entry; None if a size is not the skeleton's.
pub fn decode(key: &[u8], value: &[u8]) -> Option<DnsRow> {
    let k: types::dns_key = plain_data::read_exact(key)?;
    let v: types::dns_stats = plain_data::read_exact(value)?;
    Some(DnsRow {
        tgid: k.tgid,
        domain: c_string(&k.domain),
        count: v.count,
        errors: v.errors,
        sum_ns: v.sum_ns,
        max: PeriodMax {
            ns: v.max.ns,
            period: v.max.period,
        },
    })
}

/// Totals of a row at the previous report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Prev {
    count: u64,
    errors: u64,
    sum_ns: u64,
}

/// Turns the running totals into upstream's per-period `delay_avg` and `error_ratio`.
#[derive(Debug, Default)]
pub struct DnsReport {
    prev: HashMap<(u32, String), Prev>,
}

impl DnsReport {
    /// Writes one `proc_dns` record per row of a tracked process (`comm_of` gives its comm;
    /// rows of other processes are skipped), with the maxima of report period `period`.
    pub fn write<'r, W: Write>(
        &mut self,
        out: &mut RecordWriter<W>,
        rows: impl IntoIterator<Item = &'r DnsRow>,
        comm_of: impl Fn(u32) -> Option<String>,
        period: u32,
    ) -> io::Result<()> {
        // Sorted, so a process's domains come together and the output is stable.
        let sorted: BTreeMap<(u32, &str), &DnsRow> = rows
            .into_iter()
            .map(|r| ((r.tgid, r.domain.as_str()), r))
            .collect();
        let mut next = HashMap::with_capacity(sorted.len());
        for ((tgid, domain), r) in sorted {
            let Some(comm) = comm_of(tgid) else { continue };
            let key = (tgid, domain.to_string());
            let p = self.prev.get(&key).copied().unwrap_or_default();
            let n = r.count.saturating_sub(p.count);
            let errors = r.errors.saturating_sub(p.errors);
            let sum = r.sum_ns.saturating_sub(p.sum_ns);
            let avg = sum.checked_div(n).unwrap_or(0);
            let ratio = if n == 0 {
                0.0
            } else {
                errors as f64 * 100.0 / n as f64
            };
            out.record(DNS)
                .field(&tgid)
                .field(domain)
                .field(comm.as_str())
                .field(&avg)
                .field(&r.max.of_period(period))
                .field(&format!("{ratio:.2}"))
                .field(&r.count)
                .field(&r.errors)
                .end()?;
            next.insert(
                key,
                Prev {
                    count: r.count,
                    errors: r.errors,
                    sum_ns: r.sum_ns,
                },
            );
        }
        self.prev = next;
        Ok(())
    }
}

/// Every row of `dns_stats` with its raw key (entries that fail to decode are skipped).
pub fn read_rows(map: &dyn MapCore) -> Vec<(Vec<u8>, DnsRow)> {
    map_entries(map, decode)
}

/// Deletes the lookups in progress that started more than [`STALE_CALL`] before `now_ns`
/// (`CLOCK_MONOTONIC`, the clock of `bpf_ktime_get_ns`); returns how many.
pub fn purge_stale_calls(map: &dyn MapCore, now_ns: u64) -> usize {
    let stale = map_entries(map, |_, v| {
        let c = plain_data::read_exact::<types::dns_call>(v)?;
        (now_ns.saturating_sub(c.ts) > STALE_CALL.as_nanos() as u64).then_some(())
    });
    stale.iter().filter(|(k, _)| map.delete(k).is_ok()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tgid: u32, domain: &str) -> Vec<u8> {
        let mut k: types::dns_key = plain_data::zeroed();
        k.tgid = tgid;
        for (o, b) in k.domain.iter_mut().zip(domain.bytes()) {
            *o = b as i8;
        }
        // SAFETY: a u32 then a byte array: no padding.
        unsafe { plain_data::as_bytes(&k) }.to_vec()
    }

    fn value(count: u64, errors: u64, sum_ns: u64, max: u64, period: u32) -> Vec<u8> {
        let mut v: types::dns_stats = plain_data::zeroed();
        v.count = count;
        v.errors = errors;
        v.sum_ns = sum_ns;
        v.max.ns = max;
        v.max.period = period;
        // SAFETY: u64s and a period_max (u64, u32, u32): no padding.
        unsafe { plain_data::as_bytes(&v) }.to_vec()
    }

    #[test]
    fn libc_names() {
        for yes in ["libc.so.6", "libc-2.28.so", "ld-musl-x86_64.so.1"] {
            assert!(is_libc(yes), "{yes}");
        }
        for no in [
            "libcrypto.so.3",
            "libc++.so.1",
            "libcap.so.2",
            "ld-linux-x86-64.so.2",
        ] {
            assert!(!is_libc(no), "{no}");
        }
    }

    #[test]
    fn rows_decode_and_report_per_period() {
        let long = "a".repeat(200);
        let r = decode(&key(7, &long), &value(1, 0, 5, 5, 1)).unwrap();
        assert_eq!(
            r.domain.len(),
            128,
            "a full buffer without NUL keeps its 128 bytes"
        );
        assert!(decode(&key(7, "x")[..10], &value(1, 0, 0, 0, 0)).is_none());

        let row = |count, errors, sum_ns, max| {
            decode(
                &key(42, "example.org"),
                &value(count, errors, sum_ns, max, 3),
            )
            .unwrap()
        };
        let other = decode(&key(9, "ignored.org"), &value(1, 1, 1, 1, 3)).unwrap();
        let comm = |tgid: u32| (tgid == 42).then(|| "curl".to_string());
        let mut rep = DnsReport::default();
        let mut w = RecordWriter::new(Vec::new());
        rep.write(&mut w, &[row(4, 1, 4000, 2500), other.clone()], comm, 3)
            .unwrap();
        // Next period: 2 more lookups, 1 failed, 3000 ns; the maximum is an older period's.
        rep.write(&mut w, &[row(6, 2, 7000, 2500), other], comm, 4)
            .unwrap();
        w.flush().unwrap();
        assert_eq!(
            String::from_utf8(w.into_inner()).unwrap(),
            "|proc_dns|42|example.org|curl|1000|2500|25.00|4|1|\n\
             |proc_dns|42|example.org|curl|1500|0|50.00|6|2|\n"
        );
    }

    #[test]
    fn an_idle_row_reports_zero_for_the_period() {
        let r = decode(&key(1, "a.b"), &value(2, 0, 10, 7, 1)).unwrap();
        let mut rep = DnsReport::default();
        let mut w = RecordWriter::new(Vec::new());
        rep.write(&mut w, std::slice::from_ref(&r), |_| Some("x".into()), 1)
            .unwrap();
        rep.write(&mut w, &[r], |_| Some("x".into()), 2).unwrap();
        w.flush().unwrap();
        let out = String::from_utf8(w.into_inner()).unwrap();
        assert_eq!(out.lines().nth(1), Some("|proc_dns|1|a.b|x|0|0|0.00|2|0|"));
    }
}
