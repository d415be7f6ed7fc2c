//! Draining the BPF maps: one epoch's on-CPU counts and off-CPU stretches with their raw
//! stacks, while the programs go on filling the other epoch's maps.
//!
//! The BPF side (src/bpf/stack.bpf.c) keys every count by the epoch in which its stacks were
//! taken; the stack ids of epoch `e` live in the stack map of parity `e & 1`. A drain of epoch
//! `E`:
//! 1. bumps `epoch` to `E + 1` and waits [`SETTLE`] so programs that read `E` finish;
//! 2. reads and deletes the counts of parity `E & 1` (on-CPU, and off-CPU stretches that ended
//!    during `E`);
//! 3. reads the pending starts (threads still switched out) and then the current off-CPU map
//!    without deleting: stretches that began in `E` but end later name stacks of `E`, so the
//!    frames of those stacks are kept in user space ([`Pending`]) before
//! 4. the stack map of parity `E & 1` is cleared for epoch `E + 2`.
//!
//! A count whose epoch is older than `E` takes its frames from [`Pending`]; one found nowhere
//! (its start was dropped from a full cache) counts as `expired`. An on-CPU count can only be
//! of epoch `E`; one of another epoch (a program that read the epoch just before the bump and
//! wrote after the read, which [`SETTLE`] makes all but impossible) counts as `expired` too.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use libbpf_rs::{MapCore, MapFlags};

use crate::decode;
use crate::skel::types::{off_start, offcpu_key, offcpu_val, oncpu_key};

/// Time for programs that read the old epoch to finish (they run for microseconds).
pub const SETTLE: Duration = Duration::from_millis(2);
/// Most stacks kept for pending off-CPU stretches.
pub const MAX_PENDING: usize = 32_768;

/// Stack id meaning "no stack of this kind" (intf.h `STACK_NONE`).
pub const STACK_NONE: i32 = -1;
/// Stack id meaning "the stack could not be stored" (intf.h `STACK_LOST`).
pub const STACK_LOST: i32 = -2;

/// A stack as the drain hands it over: its frames, or why there are none.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RawStack {
    /// Instruction addresses, innermost first (as the kernel records them).
    Frames(Arc<[u64]>),
    /// No stack of this kind (a kernel thread's user stack, a sample taken in user mode).
    None,
    /// Taken but not stored (stack-map collision or full map; counted by the BPF side).
    Lost,
    /// Stored, but gone before it could be read (see the module doc).
    Expired,
}

/// One drained count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Process.
    pub tgid: u32,
    /// Kernel stack.
    pub kernel: RawStack,
    /// User stack.
    pub user: RawStack,
    /// On-CPU: samples. Off-CPU: stretches.
    pub count: u64,
    /// Off-CPU: ns switched out (0 on-CPU).
    pub ns: u64,
    /// User addresses to teach unwinding hints for (src/hints.rs): the leaf, then the return
    /// addresses the hints recovered.
    pub teach: Vec<(u64, bool)>,
}

/// What one drain read.
#[derive(Debug, Default)]
pub struct Drained {
    /// On-CPU counts.
    pub oncpu: Vec<Entry>,
    /// Off-CPU stretches.
    pub offcpu: Vec<Entry>,
    /// Counts whose stacks were gone (see the module doc).
    pub expired: u64,
    /// Pending stacks not kept because [`MAX_PENDING`] was reached.
    pub pending_dropped: u64,
}

/// Frames of stacks that pending off-CPU stretches name, by (epoch, stack id).
#[derive(Debug, Default)]
pub struct Pending {
    stacks: HashMap<(u32, i32), Arc<[u64]>>,
}

/// The maps a drain reads, by parity.
pub struct Maps<'a> {
    /// Stack maps of parity 0 and 1.
    pub stacks: [&'a dyn MapCore; 2],
    /// On-CPU counts of parity 0 and 1.
    pub oncpu: [&'a dyn MapCore; 2],
    /// Off-CPU stretches of parity 0 and 1.
    pub offcpu: [&'a dyn MapCore; 2],
    /// Threads switched out.
    pub starts: &'a dyn MapCore,
}

/// Reads every entry of `map` (keys first, then values: entries added meanwhile wait for the
/// next drain). With `delete`, the entries read are deleted.
fn entries(map: &dyn MapCore, delete: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
    let keys: Vec<Vec<u8>> = map.keys().collect();
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        if let Ok(Some(v)) = map.lookup(&k, MapFlags::ANY) {
            if delete {
                let _ = map.delete(&k);
            }
            out.push((k, v));
        }
    }
    out
}

/// Drains epoch `epoch` (already bumped to `epoch + 1` by the caller, [`SETTLE`] waited).
/// `pending_kept(tgid)`: whether a pending off-CPU stretch of that process can still end (the
/// process is selected and off-CPU recording is on); the others are deleted.
pub fn drain(
    maps: &Maps<'_>,
    epoch: u32,
    pending: &mut Pending,
    pending_kept: impl Fn(u32) -> bool,
) -> Drained {
    let parity = (epoch & 1) as usize;
    let mut out = Drained::default();
    let stack_map = maps.stacks[parity];
    let mut frames: HashMap<i32, Option<Arc<[u64]>>> = HashMap::new();
    let mut lookup = |id: i32| -> Option<Arc<[u64]>> {
        frames
            .entry(id)
            .or_insert_with(|| {
                stack_map
                    .lookup(&id.to_ne_bytes(), MapFlags::ANY)
                    .ok()
                    .flatten()
                    .map(|b| Arc::from(decode::frames(&b)))
            })
            .clone()
    };

    for (k, v) in entries(maps.oncpu[parity], true) {
        let (Some(key), Some(count)) = (decode::read::<oncpu_key>(&k), read_u64(&v)) else {
            continue;
        };
        if key.epoch != epoch {
            out.expired += count;
            continue;
        }
        let (user, teach) = with_rets(resolve(key.ustack, &mut lookup), &key.rets);
        out.oncpu.push(Entry {
            tgid: key.tgid,
            kernel: resolve(key.kstack, &mut lookup),
            user,
            count,
            ns: 0,
            teach,
        });
    }
    for (k, v) in entries(maps.offcpu[parity], true) {
        let (Some(key), Some(val)) = (
            decode::read::<offcpu_key>(&k),
            decode::read::<offcpu_val>(&v),
        ) else {
            continue;
        };
        let (kernel, user) = if key.epoch == epoch {
            (
                resolve(key.kstack, &mut lookup),
                resolve(key.ustack, &mut lookup),
            )
        } else {
            (
                pending.resolve(key.epoch, key.kstack),
                pending.resolve(key.epoch, key.ustack),
            )
        };
        if kernel == RawStack::Expired || user == RawStack::Expired {
            out.expired += val.count;
        }
        let (user, teach) = with_rets(user, &key.rets);
        out.offcpu.push(Entry {
            tgid: key.tgid,
            kernel,
            user,
            count: val.count,
            ns: val.ns,
            teach,
        });
    }

    // Stacks that stretches still pending (or ended since the bump) will name.
    let mut live: HashSet<(u32, i32)> = HashSet::new();
    for (k, v) in entries(maps.starts, false) {
        let Some(s) = decode::read::<off_start>(&v) else {
            continue;
        };
        // The BPF side ends a stretch only for a selected process: the starts of processes
        // no longer selected (or of every process, off-CPU being off) would stay forever.
        if !pending_kept(s.tgid) {
            let _ = maps.starts.delete(&k);
            continue;
        }
        live.insert((s.epoch, s.kstack));
        live.insert((s.epoch, s.ustack));
    }
    for (k, _) in entries(maps.offcpu[parity ^ 1], false) {
        if let Some(key) = decode::read::<offcpu_key>(&k) {
            live.insert((key.epoch, key.kstack));
            live.insert((key.epoch, key.ustack));
        }
    }
    pending.stacks.retain(|k, _| live.contains(k));
    for &(e, id) in &live {
        if e != epoch || id < 0 || pending.stacks.contains_key(&(e, id)) {
            continue;
        }
        if pending.stacks.len() >= MAX_PENDING {
            out.pending_dropped += 1;
            continue;
        }
        if let Some(f) = lookup(id) {
            pending.stacks.insert((e, id), f);
        }
    }

    // The stack map of this parity is empty again for epoch + 2.
    let ids: Vec<Vec<u8>> = stack_map.keys().collect();
    for id in ids {
        let _ = stack_map.delete(&id);
    }
    out
}

impl Pending {
    fn resolve(&self, epoch: u32, id: i32) -> RawStack {
        match id {
            STACK_NONE => RawStack::None,
            STACK_LOST => RawStack::Lost,
            _ => match self.stacks.get(&(epoch, id)) {
                Some(f) => RawStack::Frames(Arc::clone(f)),
                None => RawStack::Expired,
            },
        }
    }
}

fn resolve(id: i32, lookup: &mut impl FnMut(i32) -> Option<Arc<[u64]>>) -> RawStack {
    match id {
        STACK_NONE => RawStack::None,
        STACK_LOST => RawStack::Lost,
        id if id < 0 => RawStack::Lost,
        id => match lookup(id) {
            Some(f) => RawStack::Frames(f),
            None => RawStack::Expired,
        },
    }
}

/// The user stack with the return addresses the hints recovered put in after its leaf (they
/// are the callers the frame-pointer walk skipped), and the addresses to teach hints for.
pub fn with_rets(user: RawStack, rets: &[u64]) -> (RawStack, Vec<(u64, bool)>) {
    let RawStack::Frames(ips) = user else {
        return (user, Vec::new());
    };
    let Some((&leaf, rest)) = ips.split_first() else {
        return (RawStack::Frames(ips), Vec::new());
    };
    let rets: Vec<u64> = rets.iter().copied().take_while(|r| *r != 0).collect();
    let mut teach = vec![(leaf, false)];
    teach.extend(rets.iter().map(|r| (*r, true)));
    if rets.is_empty() {
        return (RawStack::Frames(ips), teach);
    }
    let mut frames = Vec::with_capacity(ips.len() + rets.len());
    frames.push(leaf);
    for r in &rets {
        // The walk may have found this caller itself (its frame pointer was valid after all).
        if rest.first() == Some(r) {
            break;
        }
        frames.push(*r);
    }
    frames.extend_from_slice(rest);
    (RawStack::Frames(Arc::from(frames)), teach)
}

fn read_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_ne_bytes(b.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(f: &[u64]) -> RawStack {
        RawStack::Frames(Arc::from(f.to_vec()))
    }

    #[test]
    fn recovered_callers_go_after_the_leaf() {
        let (s, teach) = with_rets(frames(&[0x10, 0x90, 0xa0]), &[0x20, 0x30, 0, 0]);
        assert_eq!(s, frames(&[0x10, 0x20, 0x30, 0x90, 0xa0]));
        assert_eq!(teach, vec![(0x10, false), (0x20, true), (0x30, true)]);
        // A recovered caller the walk also found is not repeated.
        let (s, _) = with_rets(frames(&[0x10, 0x20, 0xa0]), &[0x20, 0, 0, 0]);
        assert_eq!(s, frames(&[0x10, 0x20, 0xa0]));
        let (s, teach) = with_rets(RawStack::None, &[0x20, 0, 0, 0]);
        assert_eq!((s, teach.len()), (RawStack::None, 0));
    }
}
