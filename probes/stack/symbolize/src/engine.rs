//! The one blazesym symbolizer and the calls made to it.
//!
//! User addresses go to blazesym as file offsets into `/proc/<pid>/map_files/<start>-<end>`
//! (source `Elf`), one call per mapping: that path is the mapped file itself whatever the
//! process's mount namespace or root, also after the file was deleted or replaced on disk, and a
//! failing file only fails its own addresses. (blazesym's `Process` source does the same
//! per address but reads the maps itself and fails the whole batch on one bad file.) vDSO
//! addresses go through the `Process` source (blazesym parses the vDSO image). Kernel addresses
//! go through kallsyms only (`vmlinux` off: its DWARF is hundreds of MiB).
//!
//! blazesym keeps, per path handed to it, the open file and its parsed ELF/DWARF; the caller
//! evicts a path when its process goes ([`Engine::evict`]) and recreates the engine to bound
//! what is left (debug-link targets, kallsyms).

use std::path::Path;

use blazesym::symbolize::source::{Elf, Kernel, Process, Source};
use blazesym::symbolize::{self, evict, Input, Reason, Sym, Symbolized};
use blazesym::{ErrorKind, MaybeDefault, Pid};

use crate::names::Names;
use crate::ResolvedFrame;

/// What blazesym said about one address.
#[derive(Debug, PartialEq)]
pub(crate) enum Lookup {
    /// The function containing the address, then its inlined callees (outermost first).
    Found(Vec<ResolvedFrame>),
    /// No symbol covers the address.
    NotFound,
    /// The mapped file is no ELF file (memfd or shared-memory JIT code, ...).
    NotElf,
    /// blazesym failed (unreadable file, malformed ELF/DWARF, ...).
    Failed(String),
}

impl Lookup {
    fn failed_all(n: usize, err: &blazesym::Error) -> Vec<Lookup> {
        let text = format!("{err:#}");
        (0..n).map(|_| Lookup::Failed(text.clone())).collect()
    }
}

/// blazesym's symbolizer with this crate's settings.
pub(crate) struct Engine {
    inner: symbolize::Symbolizer,
    debug_syms: bool,
}

impl Engine {
    pub fn new(debug_syms: bool) -> Self {
        // Inlined functions need DWARF line information ("code info"); without DWARF the cheaper
        // plain lookup is enough.
        let inner = symbolize::Symbolizer::builder()
            .enable_code_info(debug_syms)
            .enable_inlined_fns(debug_syms)
            .enable_demangling(true)
            .build();
        Engine { inner, debug_syms }
    }

    /// Symbolizes file offsets into the ELF file at `path`.
    pub fn elf(&self, path: &Path, offsets: &[u64], names: &mut Names) -> Vec<Lookup> {
        let mut src = Elf::new(path);
        src.debug_syms = self.debug_syms;
        let result = self
            .inner
            .symbolize(&Source::Elf(src), Input::FileOffset(offsets));
        convert(result, offsets.len(), names)
    }

    /// Symbolizes addresses in the vDSO of process `pid` (not 0).
    pub fn vdso(&self, pid: u32, addrs: &[u64], names: &mut Names) -> Vec<Lookup> {
        let mut src = Process::new(Pid::from(pid));
        src.debug_syms = false;
        src.perf_map = false;
        src.map_files = true;
        src.vdso = true;
        let result = self
            .inner
            .symbolize(&Source::Process(src), Input::AbsAddr(addrs));
        convert(result, addrs.len(), names)
    }

    /// Symbolizes kernel addresses through `/proc/kallsyms`.
    pub fn kernel(&self, addrs: &[u64], names: &mut Names) -> Vec<Lookup> {
        let src = Kernel {
            kallsyms: MaybeDefault::Default,
            vmlinux: MaybeDefault::None,
            debug_syms: false,
            ..Kernel::default()
        };
        let result = self
            .inner
            .symbolize(&Source::Kernel(src), Input::AbsAddr(addrs));
        convert(result, addrs.len(), names)
    }

    /// Releases what blazesym holds for `path` (open file, parsed ELF/DWARF once no other path
    /// refers to the same file).
    pub fn evict(&mut self, path: &Path) {
        // Evicting an unknown path is no error; evict() only fails for future targets.
        let _ = self.inner.evict(&evict::Evict::Elf(evict::Elf::new(path)));
    }
}

fn convert(
    result: blazesym::Result<Vec<Symbolized<'_>>>,
    n: usize,
    names: &mut Names,
) -> Vec<Lookup> {
    match result {
        Ok(symbols) if symbols.len() == n => symbols
            .iter()
            .map(|symbolized| match symbolized {
                Symbolized::Sym(sym) => Lookup::Found(frames(sym, names)),
                Symbolized::Unknown(Reason::IgnoredError) => {
                    Lookup::Failed(Reason::IgnoredError.to_string())
                }
                Symbolized::Unknown(_) => Lookup::NotFound,
            })
            .collect(),
        Ok(symbols) => (0..n)
            .map(|_| {
                Lookup::Failed(format!(
                    "blazesym returned {} results for {n} inputs",
                    symbols.len()
                ))
            })
            .collect(),
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::InvalidData | ErrorKind::UnexpectedEof
            ) =>
        {
            (0..n).map(|_| Lookup::NotElf).collect()
        }
        Err(err) => Lookup::failed_all(n, &err),
    }
}

/// The function, then the functions inlined into it at the address, outermost first (blazesym's
/// order).
fn frames(sym: &Sym<'_>, names: &mut Names) -> Vec<ResolvedFrame> {
    let outer = ResolvedFrame {
        name: names.intern(&sym.name),
        inlined: false,
        jit: false,
    };
    std::iter::once(outer)
        .chain(sym.inlined.iter().map(|f| ResolvedFrame {
            name: names.intern(&f.name),
            inlined: true,
            jit: false,
        }))
        .collect()
}
