//! One period's profiles: drained counts are symbolized and added per (process, kind) until
//! the period ends and [`Profiles::finish`] hands them over as `stack_profile::Profile`s.
//!
//! Stacks are root first: the user stack from its outermost frame to the leaf, then, for
//! samples taken in the kernel, the kernel stack from the system-call entry to the leaf. A
//! return address names the instruction after the call, so every frame but the leaf is looked
//! up one byte earlier (the call itself; a call that ends a function would otherwise name the
//! next function). Bounds: at most [`MAX_PROCESSES`] processes and [`MAX_STACKS`] distinct
//! stacks per profile; what does not fit is folded into one `[truncated]` stack of the process
//! (or dropped for a process beyond the bound) and counted.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use stack_profile::{Frame, Kind, Profile, Sample};
use stack_symbolize::Symbolizer;

use crate::drain::{Entry, RawStack};

/// Most processes with a profile in one period.
pub const MAX_PROCESSES: usize = 4096;
/// Most distinct stacks in one profile.
pub const MAX_STACKS: usize = 16_384;
/// The JVM's own code (HotSpot's C++: interpreter runtime, compilers, GC), hidden unless
/// `native_stack` is set.
const JVM_MODULE: &str = "libjvm.so";
/// What a run of hidden JVM frames is shown as, so the time stays visible.
pub const JVM_FRAME: &str = "[jvm]";

/// Counters of the aggregation (cumulative).
#[derive(Debug, Default, Clone, Copy)]
pub struct AggStats {
    /// Samples and stretches folded into `[truncated]` or dropped (bounds).
    pub truncated: u64,
}

#[derive(Debug, Default)]
struct Acc {
    comm: String,
    stacks: HashMap<Arc<[Frame]>, (u64, u64)>,
}

/// The profiles of the period in progress.
pub struct Profiles {
    start: SystemTime,
    sample_period_ns: u64,
    acc: HashMap<(u32, Kind), Acc>,
    /// Symbolized stacks of this period, by raw stacks.
    memo: HashMap<(u32, RawStack, RawStack), Arc<[Frame]>>,
    /// Frames of the JVM's own code shown one by one (upstream's `native_stack`).
    native_stack: bool,
    stats: AggStats,
}

impl Profiles {
    /// An empty period starting now.
    pub fn new(start: SystemTime, sample_period_ns: u64) -> Profiles {
        Profiles {
            start,
            sample_period_ns,
            acc: HashMap::new(),
            memo: HashMap::new(),
            native_stack: false,
            stats: AggStats::default(),
        }
    }

    /// Whether the JVM's own frames (`libjvm.so`) are shown one by one (upstream's
    /// `native_stack` = 1) or each run of them as one [`JVM_FRAME`] (0, the default), from the
    /// next drain on.
    pub fn set_native_stack(&mut self, on: bool) {
        if on != self.native_stack {
            self.native_stack = on;
            self.memo.clear();
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> AggStats {
        self.stats
    }

    /// The on-CPU sampling period from now on (the value the next profiles carry).
    pub fn set_sample_period(&mut self, ns: u64) {
        self.sample_period_ns = ns;
    }

    /// Adds one drain's entries of `kind`.
    pub fn add(&mut self, kind: Kind, entries: &[Entry], sym: &mut Symbolizer, proc_root: &Path) {
        // The comms of new processes first: symbolizing can take long enough (the first look
        // at a process's files) for a short-lived process to exit, and a comm is only
        // readable while the process lives.
        for e in entries {
            let key = (e.tgid, kind);
            if !self.acc.contains_key(&key) && self.acc.len() < MAX_PROCESSES {
                let comm = comm_of(proc_root, e.tgid);
                self.acc.insert(
                    key,
                    Acc {
                        comm,
                        stacks: HashMap::new(),
                    },
                );
            }
        }
        for e in entries {
            let key = (e.tgid, kind);
            if !self.acc.contains_key(&key) {
                // Beyond MAX_PROCESSES.
                self.stats.truncated += e.count;
                continue;
            }
            let frames = self.frames_of(e, sym);
            let value = match kind {
                Kind::OnCpu => e.count.saturating_mul(self.sample_period_ns),
                Kind::OffCpu => e.ns,
            };
            let Some(acc) = self.acc.get_mut(&key) else {
                continue;
            };
            let frames = if acc.stacks.len() >= MAX_STACKS && !acc.stacks.contains_key(&frames) {
                self.stats.truncated += e.count;
                Arc::from(vec![Frame::user("[truncated]")])
            } else {
                frames
            };
            let slot = acc.stacks.entry(frames).or_insert((0, 0));
            slot.0 = slot.0.saturating_add(e.count);
            slot.1 = slot.1.saturating_add(value);
        }
    }

    fn frames_of(&mut self, e: &Entry, sym: &mut Symbolizer) -> Arc<[Frame]> {
        let key = (e.tgid, e.user.clone(), e.kernel.clone());
        if let Some(f) = self.memo.get(&key) {
            return Arc::clone(f);
        }
        let mut frames = Vec::new();
        // A stack with a user-space miss is not memoized: the symbolizer may name it at a later
        // drain of the period (a perf map written since, a read that failed).
        let mut complete = true;
        match &e.user {
            RawStack::Frames(ips) => {
                let addrs = call_sites(ips);
                for r in sym.user(e.tgid, &addrs).into_iter().rev() {
                    complete &= r.found;
                    if !self.native_stack && r.module.as_deref() == Some(JVM_MODULE) {
                        if frames.last().is_none_or(|f: &Frame| &*f.name != JVM_FRAME) {
                            frames.push(Frame::user(JVM_FRAME));
                        }
                        continue;
                    }
                    frames.extend(r.frames.into_iter().map(|f| Frame {
                        name: f.name,
                        kernel: false,
                        jit: f.jit,
                        inlined: f.inlined,
                    }));
                }
            }
            RawStack::None => {}
            other => frames.push(Frame::user(marker(other))),
        }
        match &e.kernel {
            RawStack::Frames(ips) => {
                let addrs = call_sites(ips);
                let mut resolved = sym.kernel(&addrs);
                // An off-CPU stack is taken inside the sched_switch program: its innermost
                // frames are the BPF machinery, not the task.
                let machinery = resolved
                    .iter()
                    .take_while(|r| r.frames.iter().all(|f| is_bpf_machinery(&f.name)))
                    .count();
                resolved.drain(..machinery);
                for r in resolved.into_iter().rev() {
                    frames.extend(r.frames.into_iter().map(|f| Frame {
                        name: f.name,
                        kernel: true,
                        jit: false,
                        inlined: f.inlined,
                    }));
                }
            }
            RawStack::None => {}
            other => frames.push(Frame::kernel(marker(other))),
        }
        if frames.is_empty() {
            frames.push(Frame::user("[no stack]"));
        }
        let frames: Arc<[Frame]> = Arc::from(frames);
        if complete {
            self.memo.insert(key, Arc::clone(&frames));
        }
        frames
    }

    /// Ends the period at `end`: its non-empty profiles, and a new empty period from `end`.
    pub fn finish(&mut self, end: SystemTime) -> Vec<Profile> {
        let acc = std::mem::take(&mut self.acc);
        self.memo.clear();
        let start = std::mem::replace(&mut self.start, end);
        let mut out: Vec<Profile> = acc
            .into_iter()
            .map(|((pid, kind), a)| Profile {
                pid,
                comm: a.comm,
                kind,
                start,
                end,
                sample_period_ns: if kind == Kind::OnCpu {
                    self.sample_period_ns
                } else {
                    0
                },
                samples: a
                    .stacks
                    .into_iter()
                    .map(|(frames, (count, value))| Sample {
                        frames: frames.to_vec(),
                        count,
                        value,
                    })
                    .collect(),
            })
            .filter(|p| !p.is_empty())
            .collect();
        out.sort_by_key(|p| (p.kind, p.pid));
        out
    }
}

/// Lookup addresses of a stack (innermost first): the leaf as is, every return address one
/// byte back into its call instruction.
fn call_sites(ips: &[u64]) -> Vec<u64> {
    ips.iter()
        .enumerate()
        .map(|(i, ip)| if i == 0 { *ip } else { ip.saturating_sub(1) })
        .collect()
}

/// Kernel functions that run a BPF program (the tracepoint's trampoline and the program).
fn is_bpf_machinery(name: &str) -> bool {
    name.starts_with("bpf_prog_")
        || name.starts_with("bpf_trace_run")
        || name.starts_with("__bpf_trace_")
        || name.starts_with("bpf_trampoline_")
}

fn marker(s: &RawStack) -> &'static str {
    match s {
        RawStack::Lost => "[stack lost]",
        RawStack::Expired => "[stack expired]",
        RawStack::None | RawStack::Frames(_) => "[no stack]",
    }
}

/// The process's comm, or `?` once it is gone.
fn comm_of(proc_root: &Path, tgid: u32) -> String {
    std::fs::read_to_string(proc_root.join(tgid.to_string()).join("comm"))
        .map(|s| s.trim_end_matches('\n').to_string())
        .unwrap_or_else(|_| "?".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_frames_are_machinery() {
        assert!(is_bpf_machinery("bpf_prog_f5864fbf7179ed5e_on_switch"));
        assert!(is_bpf_machinery("bpf_trace_run4"));
        assert!(!is_bpf_machinery("__schedule"));
    }

    #[test]
    fn return_addresses_point_into_the_call() {
        assert_eq!(
            call_sites(&[0x100, 0x200, 0x300]),
            vec![0x100, 0x1ff, 0x2ff]
        );
        assert!(call_sites(&[]).is_empty());
    }
}
