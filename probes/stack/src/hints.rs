//! Unwinding hints: the callers a frame-pointer walk skips.
//!
//! The kernel walks user stacks by frame pointers. A function compiled without them (most of
//! Debian's libc, for one) does not link its frame, so the walk that starts in it continues
//! from the frame of the nearest caller that has one, and the callers in between are missing:
//! `main → work → nanosleep → clock_nanosleep` is recorded as `main → clock_nanosleep`.
//!
//! For each user address it sees at the innermost end of a stack, user space looks up the
//! call-frame information (`.eh_frame`, which every x86-64 ELF binary carries) and tells the
//! BPF side, through the `hints` map keyed by (process, address), where that function keeps its
//! return address relative to the stack pointer — or that its frame pointer is valid. At the
//! next sample at that address, the BPF side reads the return address from the user stack and
//! goes on with the caller's address, up to `MAX_HINTS` frames, until a function with a valid
//! frame pointer; the kernel's walk is right from there. The recovered return addresses are
//! part of the count's key and go in between the leaf and the kernel's next frame. Each drain
//! teaches the hints for the addresses it saw, so a chain of frameless callers is complete
//! after a few drains. x86-64 only (elsewhere no hint is ever given).
//!
//! Bounds: [`MAX_FILES`] binaries' call-frame tables cached (sections of at most
//! [`MAX_SECTION_BYTES`]), the BPF map's capacity in hints; a process's hints go when it exits.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;

use gimli::{
    BaseAddresses, CfaRule, EhFrame, EhFrameHdr, NativeEndian, RegisterRule, UnwindContext,
    UnwindSection, X86_64,
};
use libbpf_rs::{MapCore, MapFlags};
use object::{Object, ObjectSection, ObjectSegment};
use stack_symbolize::maps::{self, Backing, Maps};
use stack_symbolize::proc::{read_identity_at, Identity};

/// Binaries whose call-frame tables are kept.
pub const MAX_FILES: usize = 64;
/// Largest `.eh_frame` (or header) read.
pub const MAX_SECTION_BYTES: u64 = 64 << 20;
/// Hint value: the frame pointer is valid here (or nothing is known): stop.
pub const HINT_STOP: i32 = -1;

/// A binary's call-frame sections.
struct Cfi {
    eh_frame: Vec<u8>,
    eh_frame_addr: u64,
    hdr: Vec<u8>,
    hdr_addr: u64,
    text_addr: u64,
    /// (file offset, size, virtual address) of the loadable segments.
    segments: Vec<(u64, u64, u64)>,
}

impl Cfi {
    fn read(file: &File) -> Option<Cfi> {
        let data = object::ReadCache::new(file);
        let obj = object::File::parse(&data).ok()?;
        if obj.architecture() != object::Architecture::X86_64 {
            return None;
        }
        let section = |name: &str| -> Option<(Vec<u8>, u64)> {
            let s = obj.section_by_name(name)?;
            if s.size() > MAX_SECTION_BYTES {
                return None;
            }
            Some((s.data().ok()?.to_vec(), s.address()))
        };
        let (eh_frame, eh_frame_addr) = section(".eh_frame")?;
        let (hdr, hdr_addr) = section(".eh_frame_hdr")?;
        let text_addr = obj
            .section_by_name(".text")
            .map(|s| s.address())
            .unwrap_or(0);
        let segments = obj
            .segments()
            .map(|s| {
                let (off, size) = s.file_range();
                (off, size, s.address())
            })
            .collect();
        Some(Cfi {
            eh_frame,
            eh_frame_addr,
            hdr,
            hdr_addr,
            text_addr,
            segments,
        })
    }

    /// The virtual address of file offset `off`.
    fn vaddr(&self, off: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|(o, size, _)| off >= *o && off < o + size)
            .map(|(o, _, va)| va + (off - o))
    }

    /// The hint at virtual address `va`: the return address's offset from the stack pointer
    /// when the frame pointer is not set up there, else [`HINT_STOP`].
    fn hint(&self, va: u64) -> i32 {
        let bases = BaseAddresses::default()
            .set_eh_frame_hdr(self.hdr_addr)
            .set_eh_frame(self.eh_frame_addr)
            .set_text(self.text_addr);
        let hdr = EhFrameHdr::new(&self.hdr, NativeEndian);
        let Ok(parsed) = hdr.parse(&bases, 8) else {
            return HINT_STOP;
        };
        let Some(table) = parsed.table() else {
            return HINT_STOP;
        };
        let eh_frame = EhFrame::new(&self.eh_frame, NativeEndian);
        let mut ctx = UnwindContext::new();
        let Ok(row) = table.unwind_info_for_address(
            &eh_frame,
            &bases,
            &mut ctx,
            va,
            EhFrame::cie_from_offset,
        ) else {
            return HINT_STOP;
        };
        let standard_ra = matches!(row.register(X86_64::RA), Some(RegisterRule::Offset(-8)));
        match row.cfa() {
            CfaRule::RegisterAndOffset { register, offset }
                if *register == X86_64::RSP && standard_ra && (8..=4096).contains(offset) =>
            {
                (*offset - 8) as i32
            }
            _ => HINT_STOP,
        }
    }
}

/// The identity of the process's current image (start time, code and stack addresses):
/// changed by pid reuse and, with address-space randomisation, by an exec.
fn image_of(proc_root: &std::path::Path, tgid: u32) -> Option<Identity> {
    read_identity_at(proc_root.join(format!("{tgid}/stat"))).ok()
}

/// Key of the BPF `hints` map (intf.h `struct hint_key`).
fn key(tgid: u32, ip: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..4].copy_from_slice(&tgid.to_ne_bytes());
    k[8..].copy_from_slice(&ip.to_ne_bytes());
    k
}

/// Counters of the hints (cumulative).
#[derive(Debug, Default, Clone, Copy)]
pub struct HintStats {
    /// Hints given (frameless frames the BPF side now unwinds).
    pub given: u64,
    /// Addresses taught as "stop" (frame pointer valid, or nothing known).
    pub stops: u64,
    /// Hints not given because the map was full.
    pub refused: u64,
}

/// The user side of the hints.
pub struct Hints {
    proc_root: PathBuf,
    files: HashMap<(u64, u64), Option<std::sync::Arc<Cfi>>>,
    maps: HashMap<u32, Maps>,
    taught: HashSet<(u32, u64)>,
    /// Each process's program image when its first hint was taught (see [`image_of`]).
    image: HashMap<u32, Option<Identity>>,
    stats: HintStats,
    enabled: bool,
}

impl Hints {
    /// Hints for processes under `proc_root` (`/proc` of the host).
    pub fn new(proc_root: PathBuf) -> Hints {
        Hints {
            proc_root,
            files: HashMap::new(),
            maps: HashMap::new(),
            taught: HashSet::new(),
            image: HashMap::new(),
            stats: HintStats::default(),
            enabled: cfg!(target_arch = "x86_64"),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> HintStats {
        self.stats
    }

    /// Teaches the hint for the user address `ip` of `tgid` (`ret`: a return address, whose
    /// call instruction is one byte before it), once.
    pub fn teach(&mut self, map: &dyn MapCore, tgid: u32, ip: u64, ret: bool) {
        if !self.enabled || ip == 0 || !self.taught.insert((tgid, ip)) {
            return;
        }
        let root = &self.proc_root;
        self.image
            .entry(tgid)
            .or_insert_with(|| image_of(root, tgid));
        let lookup = if ret { ip - 1 } else { ip };
        let hint = self.hint_for(tgid, lookup).unwrap_or(HINT_STOP);
        match map.update(&key(tgid, ip), &hint.to_ne_bytes(), MapFlags::ANY) {
            Ok(()) if hint == HINT_STOP => self.stats.stops += 1,
            Ok(()) => self.stats.given += 1,
            Err(_) => {
                self.stats.refused += 1;
                // Taught again later, when there may be room.
                self.taught.remove(&(tgid, ip));
            }
        }
    }

    /// Drops what is kept for the processes `alive` says are gone or that exec'd another
    /// program since their hints were taught (and their BPF entries), and the per-process map
    /// snapshots (re-read at the next teach: libraries come and go).
    pub fn retain(&mut self, map: &dyn MapCore, mut alive: impl FnMut(u32) -> bool) {
        let tgids: HashSet<u32> = self.taught.iter().map(|(t, _)| *t).collect();
        let gone: HashSet<u32> = tgids
            .into_iter()
            .filter(|t| {
                !alive(*t) || self.image.get(t).copied().flatten() != image_of(&self.proc_root, *t)
            })
            .collect();
        self.image.retain(|t, _| !gone.contains(t));
        self.taught.retain(|(t, ip)| {
            if gone.contains(t) {
                let _ = map.delete(&key(*t, *ip));
                false
            } else {
                true
            }
        });
        self.maps.clear();
    }

    fn hint_for(&mut self, tgid: u32, ip: u64) -> Option<i32> {
        if !self.maps.contains_key(&tgid) {
            let path = self.proc_root.join(format!("{tgid}/maps"));
            self.maps.insert(tgid, maps::read_from(path).ok()?);
        }
        let m = self
            .maps
            .get(&tgid)?
            .find(ip)
            .filter(|m| matches!(m.backing, Backing::File { .. }))?
            .clone();
        let id = m.file_id;
        if !self.files.contains_key(&id) {
            if self.files.len() >= MAX_FILES {
                self.files.clear();
            }
            // map_files: the very file mapped, also when deleted or in another mount namespace.
            let path = self
                .proc_root
                .join(format!("{tgid}/map_files/{:x}-{:x}", m.start, m.end));
            let cfi = File::open(path)
                .ok()
                .and_then(|f| Cfi::read(&f))
                .map(std::sync::Arc::new);
            self.files.insert(id, cfi);
        }
        let cfi = self.files.get(&id)?.as_ref()?;
        let va = cfi.vaddr(m.file_offset(ip))?;
        Some(cfi.hint(va))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Call-frame tables come from files a profiled process can plant: garbage, a truncated
    /// ELF or an empty file give no table (every address then a stop), never a panic.
    #[test]
    fn garbage_binaries_give_no_table() {
        let dir = tempfile::tempdir().unwrap();
        let own = std::fs::read("/proc/self/exe").unwrap();
        let cases: [(&str, Vec<u8>); 4] = [
            ("empty", Vec::new()),
            (
                "garbage",
                (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(),
            ),
            ("elf header only", own[..64].to_vec()),
            ("truncated elf", own[..own.len().min(64 * 1024)].to_vec()),
        ];
        for (name, bytes) in cases {
            let path = dir.path().join(name.replace(' ', "_"));
            std::fs::write(&path, &bytes).unwrap();
            let file = File::open(&path).unwrap();
            assert!(Cfi::read(&file).is_none(), "{name}");
        }
    }

    /// This test binary's own code: a Rust function's frame pointer state at its first
    /// instruction is "not set up" (the return address is at the stack pointer).
    #[test]
    fn the_first_instruction_of_a_function_has_its_return_address_at_sp() {
        #[inline(never)]
        fn probe_me(x: u64) -> u64 {
            x.wrapping_mul(3)
        }
        let addr = probe_me as *const () as usize as u64;
        let mut h = Hints::new(PathBuf::from("/proc"));
        let pid = std::process::id();
        assert_eq!(
            h.hint_for(pid, addr),
            Some(0),
            "at entry, [sp] is the return address"
        );
        assert_eq!(std::hint::black_box(probe_me(2)), 6);
    }
}
