//! Off-CPU by sampling, the default off-CPU method (`-M sampled`): no program runs at context
//! switches, so a context-switch-heavy workload pays nothing for being on the host, tracked or
//! not. A thread of its own reads the `offcpu_tick` iterator (src/bpf/stack.bpf.c) every sample
//! period over the selected processes' threads: one iterator link per selected process, or one
//! over every task when the whole host (or all but some processes) is profiled.
//!
//! Each record is a thread found off the CPU, with the off-CPU time it accumulated since its
//! previous record — wall time minus the run time the scheduler accounted, so the time is exact
//! and only its attribution to stacks is sampled — and either the stacks just walked (numbered
//! by the thread's walk count, `gen`) or a reference to the thread's last walk (it has not run
//! since). The thread keeps each thread's last walk ([`MAX_THREADS`] at most) and adds the
//! records up per (process, kernel stack, user stack) until the next drain takes them.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use libbpf_rs::libbpf_sys;

use crate::decode;
use crate::drain::{self, Entry, RawStack};
use crate::skel::types::{samp_ctl, samp_rec};

/// Threads whose last walk is kept.
pub const MAX_THREADS: usize = 65_536;
/// Distinct (process, stacks) added up between two drains.
pub const MAX_STACKS: usize = 65_536;
/// A kept walk of a thread not seen for this many passes is forgotten (the thread exited, or
/// its process is no longer selected).
const FORGET_AFTER_PASSES: u64 = 1_000;
/// Most per-process iterator links (each costs an iterator per pass, a few µs); a larger
/// selection is read through one link over every task (the BPF filter selects).
pub const MAX_LINKS: usize = 32;
/// intf.h `SAMP_NEW`.
const SAMP_NEW: u32 = 1;

/// Counters of the sampler (cumulative).
#[derive(Debug, Default, Clone, Copy)]
pub struct SamplerStats {
    /// Passes over the selected threads.
    pub passes: u64,
    /// Records read.
    pub records: u64,
    /// Records naming a walk that was not kept (counted as expired stacks).
    pub expired: u64,
    /// Records dropped because [`MAX_STACKS`] distinct stacks were already pending.
    pub dropped: u64,
    /// Iterator reads that failed.
    pub read_errors: u64,
}

/// What the thread reads: the links and the period.
struct Plan {
    on: bool,
    period: Duration,
    links: Arc<Vec<OwnedFd>>,
}

#[derive(Default)]
struct Pending {
    stacks: HashMap<(u32, RawStack, RawStack), Summed>,
    stats: SamplerStats,
}

#[derive(Default)]
struct Summed {
    count: u64,
    ns: u64,
    teach: Vec<(u64, bool)>,
}

struct Shared {
    plan: Mutex<Plan>,
    wake: Condvar,
    stop: AtomicBool,
    pending: Mutex<Pending>,
}

/// The sampling thread and what it has read since the last [`Sampler::take`].
pub struct Sampler {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sampler {
    /// A sampler, idle until [`Sampler::set`]; `ctl` is the `samp_ctl` map (its fd is duplicated).
    pub fn start(ctl: BorrowedFd<'_>) -> std::io::Result<Sampler> {
        let ctl = ctl.try_clone_to_owned()?;
        let shared = Arc::new(Shared {
            plan: Mutex::new(Plan {
                on: false,
                period: Duration::from_millis(10),
                links: Arc::new(Vec::new()),
            }),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            pending: Mutex::new(Pending::default()),
        });
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("offcpu-sampler".into())
            .spawn(move || run(&for_thread, &ctl))?;
        Ok(Sampler {
            shared,
            thread: Some(thread),
        })
    }

    /// Sampling on (every `period`, through `links`) or off (`links` empty).
    pub fn set(&self, period: Duration, links: Vec<OwnedFd>) {
        let mut p = lock(&self.shared.plan);
        p.on = !links.is_empty();
        p.period = period.max(Duration::from_millis(1));
        p.links = Arc::new(links);
        self.shared.wake.notify_all();
    }

    /// The stacks added up since the last call, as drained entries.
    pub fn take(&self) -> Vec<Entry> {
        let stacks = std::mem::take(&mut lock(&self.shared.pending).stacks);
        stacks
            .into_iter()
            .map(|((tgid, kernel, user), s)| Entry {
                tgid,
                kernel,
                user,
                count: s.count,
                ns: s.ns,
                teach: s.teach,
            })
            .collect()
    }

    /// Counters so far.
    pub fn stats(&self) -> SamplerStats {
        lock(&self.shared.pending).stats
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An iterator link of `prog` (an `iter.s/task` program) over the threads of process `tgid`, or
/// over every task.
pub fn link(prog: BorrowedFd<'_>, tgid: Option<u32>) -> std::io::Result<OwnedFd> {
    let mut info = libbpf_sys::bpf_iter_link_info::default();
    if let Some(pid) = tgid {
        info.task.pid = pid;
    }
    let opts = libbpf_sys::bpf_link_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_link_create_opts>() as _,
        iter_info: &mut info,
        iter_info_len: std::mem::size_of::<libbpf_sys::bpf_iter_link_info>() as u32,
        ..Default::default()
    };
    // SAFETY: `opts` and `info` outlive the call; the returned fd is ours.
    let fd = unsafe {
        libbpf_sys::bpf_link_create(prog.as_raw_fd(), 0, libbpf_sys::BPF_TRACE_ITER, &opts)
    };
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: a new fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A kept walk of a thread.
struct Walk {
    tgid: u32,
    gen: u32,
    kernel: RawStack,
    user: RawStack,
    teach: Vec<(u64, bool)>,
    seen: u64,
}

fn run(shared: &Shared, ctl: &OwnedFd) {
    let mut walks: HashMap<u32, Walk> = HashMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut pass: u64 = 0;
    let mut next = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        let (period, links) = {
            let mut p = lock(&shared.plan);
            while !p.on && !shared.stop.load(Ordering::Relaxed) {
                walks.clear();
                p = shared.wake.wait(p).unwrap_or_else(|e| e.into_inner());
                next = Instant::now();
                // A pass number skipped: the BPF side does not count the time sampling was
                // off (a thread's time counts only from a visit in the pass before).
                if p.on {
                    pass += 1;
                }
            }
            (p.period, Arc::clone(&p.links))
        };
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        if next > now {
            // Sleep in slices so a plan change or a stop is seen soon.
            std::thread::sleep((next - now).min(Duration::from_millis(100)));
            continue;
        }
        // A pass that starts late (the host was busy) loses no time: the BPF side measures it.
        next += period;
        if next < now {
            next = now + period;
        }
        pass += 1;
        let c = samp_ctl { pass };
        let key = 0u32;
        // SAFETY: key and value are the map's sizes; the fd is a valid map fd.
        unsafe {
            libbpf_sys::bpf_map_update_elem(
                ctl.as_raw_fd(),
                (&key as *const u32).cast(),
                (&c as *const samp_ctl).cast(),
                0,
            )
        };
        let mut read_errors = 0;
        for l in links.iter() {
            if read_iter(l, &mut buf, pass, &mut walks, &shared.pending).is_err() {
                read_errors += 1;
            }
        }
        let mut pending = lock(&shared.pending);
        pending.stats.passes += 1;
        pending.stats.read_errors += read_errors;
        drop(pending);
        if pass.is_multiple_of(100) {
            walks.retain(|_, w| pass - w.seen <= FORGET_AFTER_PASSES);
        }
    }
}

/// Reads one pass of the iterator of `link` and adds its records up as they come (memory: the
/// read buffer and at most one partial record, however many threads there are).
fn read_iter(
    link: &OwnedFd,
    buf: &mut [u8],
    pass: u64,
    walks: &mut HashMap<u32, Walk>,
    pending: &Mutex<Pending>,
) -> std::io::Result<()> {
    // SAFETY: a valid link fd.
    let fd = unsafe { libbpf_sys::bpf_iter_create(link.as_raw_fd()) };
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: a new fd nothing else owns.
    let mut f = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = match f.read(buf) {
            Ok(0) if carry.is_empty() => return Ok(()),
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "iterator output ends inside a record",
                ))
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut p = lock(pending);
        if carry.is_empty() {
            let used = add_records(&buf[..n], pass, walks, &mut p);
            carry.extend_from_slice(&buf[used..n]);
        } else {
            carry.extend_from_slice(&buf[..n]);
            let used = add_records(&carry, pass, walks, &mut p);
            carry.drain(..used);
        }
    }
}

/// Adds up the complete records at the start of `out`; returns the bytes they took (the rest
/// is the start of a record whose end is still to be read).
fn add_records(
    out: &[u8],
    pass: u64,
    walks: &mut HashMap<u32, Walk>,
    pending: &mut Pending,
) -> usize {
    let head = std::mem::size_of::<samp_rec>();
    let mut at = 0;
    while at + head <= out.len() {
        let Some(r) = decode::read::<samp_rec>(&out[at..at + head]) else {
            break;
        };
        let mut next = at + head;
        let mut body: &[u8] = &[];
        let (nk, nu) = (usize::from(r.nk), usize::from(r.nu));
        if r.flags & SAMP_NEW != 0 {
            let Some(b) = out.get(next..next + (nk + nu) * 8) else {
                break;
            };
            body = b;
            next += (nk + nu) * 8;
        }
        at = next;
        pending.stats.records += 1;
        if r.flags & SAMP_NEW != 0 {
            let stack = |b: &[u8]| {
                let f = decode::frames(b);
                if f.is_empty() {
                    RawStack::None
                } else {
                    RawStack::Frames(Arc::from(f))
                }
            };
            let (user, teach) = drain::with_rets(stack(&body[nk * 8..]), &r.rets);
            if walks.len() < MAX_THREADS || walks.contains_key(&r.tid) {
                walks.insert(
                    r.tid,
                    Walk {
                        tgid: r.tgid,
                        gen: r.gen,
                        kernel: stack(&body[..nk * 8]),
                        user,
                        teach,
                        seen: pass,
                    },
                );
            }
        }
        let walk = walks
            .get_mut(&r.tid)
            .filter(|w| w.gen == r.gen && w.tgid == r.tgid);
        match walk {
            Some(w) => {
                w.seen = pass;
                if r.ns > 0 {
                    add(pending, r.tgid, w, r.ns);
                }
            }
            None if r.ns > 0 => {
                pending.stats.expired += 1;
                let gone = Walk {
                    tgid: r.tgid,
                    gen: r.gen,
                    kernel: RawStack::Expired,
                    user: RawStack::Expired,
                    teach: Vec::new(),
                    seen: pass,
                };
                add(pending, r.tgid, &gone, r.ns);
            }
            None => {}
        }
    }
    at
}

/// Adds one record of `ns` off-CPU with the stacks of `w`.
fn add(p: &mut Pending, tgid: u32, w: &Walk, ns: u64) {
    let key = (tgid, w.kernel.clone(), w.user.clone());
    if let Some(s) = p.stacks.get_mut(&key) {
        s.count += 1;
        s.ns = s.ns.saturating_add(ns);
        return;
    }
    if p.stacks.len() >= MAX_STACKS {
        p.stats.dropped += 1;
        return;
    }
    p.stacks.insert(
        key,
        Summed {
            count: 1,
            ns,
            teach: w.teach.clone(),
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(tid: u32, ns: u64, gen: u32, kernel: &[u64], user: &[u64], rets: [u64; 4]) -> Vec<u8> {
        let new = !kernel.is_empty() || !user.is_empty();
        let r = samp_rec {
            tgid: 100,
            tid,
            ns,
            gen,
            nk: kernel.len() as u16,
            nu: user.len() as u16,
            flags: if new { SAMP_NEW } else { 0 },
            pad: 0,
            rets,
        };
        // SAFETY: samp_rec is plain integers.
        let mut b = unsafe {
            std::slice::from_raw_parts(
                (&r as *const samp_rec).cast::<u8>(),
                std::mem::size_of::<samp_rec>(),
            )
        }
        .to_vec();
        for f in kernel.iter().chain(user) {
            b.extend_from_slice(&f.to_ne_bytes());
        }
        b
    }

    fn frames(f: &[u64]) -> RawStack {
        RawStack::Frames(Arc::from(f.to_vec()))
    }

    #[test]
    fn records_add_up_per_stack_and_reuse_the_last_walk() {
        let mut walks = HashMap::new();
        let mut p = Pending::default();
        let mut pass1 = rec(7, 0, 1, &[0xfff1, 0xfff2], &[0x10, 0x90], [0x20, 0, 0, 0]);
        pass1.extend(rec(8, 0, 1, &[0xfff1], &[], [0; 4]));
        add_records(&pass1, 1, &mut walks, &mut p);
        // First sight: walked, no time yet.
        assert!(p.stacks.is_empty());
        assert_eq!(p.stats.records, 2);

        // Thread 7 has not run since (same walk): its time goes to the walk's stacks, the
        // recovered caller after the leaf; thread 8 walked again somewhere else.
        let mut pass2 = rec(7, 5_000, 1, &[], &[], [0; 4]);
        pass2.extend(rec(8, 3_000, 2, &[0xfff3], &[0x30], [0; 4]));
        pass2.extend(rec(7, 2_000, 1, &[], &[], [0; 4]));
        add_records(&pass2, 2, &mut walks, &mut p);
        let key7 = (100, frames(&[0xfff1, 0xfff2]), frames(&[0x10, 0x20, 0x90]));
        let s = &p.stacks[&key7];
        assert_eq!((s.count, s.ns), (2, 7_000));
        assert_eq!(s.teach, vec![(0x10, false), (0x20, true)]);
        let s = &p.stacks[&(100, frames(&[0xfff3]), frames(&[0x30]))];
        assert_eq!((s.count, s.ns), (1, 3_000));

        // A walk that was never seen (or was forgotten) is expired, not attributed elsewhere.
        add_records(&rec(9, 4_000, 3, &[], &[], [0; 4]), 3, &mut walks, &mut p);
        assert_eq!(p.stats.expired, 1);
        assert_eq!(
            p.stacks[&(100, RawStack::Expired, RawStack::Expired)].ns,
            4_000
        );
        // So is an older walk number than the kept one.
        add_records(&rec(8, 1_000, 1, &[], &[], [0; 4]), 3, &mut walks, &mut p);
        assert_eq!(p.stats.expired, 2);
    }

    #[test]
    fn truncated_and_garbage_output_is_not_misread() {
        let mut walks = HashMap::new();
        let mut p = Pending::default();
        // Frames announced but not there yet: nothing taken, the record waits for its end.
        let whole = rec(7, 0, 1, &[0xfff1, 0xfff2], &[0x10], [0; 4]);
        let cut = &whole[..whole.len() - 8];
        assert_eq!(add_records(cut, 1, &mut walks, &mut p), 0);
        assert!(walks.is_empty() && p.stacks.is_empty());
        // Less than a header.
        assert_eq!(add_records(&[0u8; 10], 2, &mut walks, &mut p), 0);
        assert_eq!(p.stats.records, 0);
        // A whole record and the start of the next: only the first is taken.
        let mut two = whole.clone();
        two.extend_from_slice(&rec(7, 500, 1, &[], &[], [0; 4])[..20]);
        assert_eq!(add_records(&two, 3, &mut walks, &mut p), whole.len());
        assert_eq!(p.stats.records, 1);
        assert_eq!(walks[&7].kernel, frames(&[0xfff1, 0xfff2]));
        // No frames at all: no stacks of either kind.
        add_records(&rec(7, 0, 1, &[], &[], [0; 4]), 3, &mut walks, &mut p);
        assert!(p.stacks.is_empty());
    }

    #[test]
    fn pending_stacks_are_bounded() {
        let mut p = Pending::default();
        for i in 0..MAX_STACKS as u64 + 5 {
            let w = Walk {
                tgid: 1,
                gen: 1,
                kernel: frames(&[i + 1]),
                user: RawStack::None,
                teach: Vec::new(),
                seen: 0,
            };
            add(&mut p, 1, &w, 10);
        }
        assert_eq!(p.stacks.len(), MAX_STACKS);
        assert_eq!(p.stats.dropped, 5);
    }
}
