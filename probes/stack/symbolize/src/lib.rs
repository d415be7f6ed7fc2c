//! stackprobe's symbolizer: raw instruction addresses (user space of a process, or kernel) to
//! function names, on top of [blazesym](https://docs.rs/blazesym), with bounded caches.
//!
//! * User addresses: the process's executable mappings are read from `/proc/<pid>/maps` and each
//!   address is looked up, as a file offset, in the mapped file through
//!   `/proc/<pid>/map_files/<start>-<end>` (ELF `.symtab`/`.dynsym`, DWARF with inlined
//!   functions, split debug info found by build ID). That path reaches the file the process
//!   mapped, so binaries of other mount namespaces (containers) and deleted or replaced binaries
//!   resolve. vDSO addresses resolve through blazesym's process source.
//! * JIT code: addresses no file explains are looked up in the process's perf map, read as the
//!   process sees it (`/proc/<pid>/root/tmp/perf-<nspid>.map`) and never through a symbolic link
//!   (see [Perf maps](#perf-maps)). Those frames have `jit: true`.
//! * Kernel addresses: `/proc/kallsyms` (a `kptr_restrict` that hides addresses gives misses).
//! * A miss is one frame, `found: false`, named `<module>+0x<file offset>` when the address is
//!   in a mapped file (`libc.so.6+0x2a1b0`), else [`UNKNOWN`].
//!
//! # Caches and their bounds
//! A process's cache maps its addresses to answers. For an address in a mapped file the answer
//! is shared: files are identified by (device, inode) from `/proc/<pid>/maps` (deleted ones
//! too), and results are kept per (file, file offset) for every process that maps the file, so
//! a hot libc address is resolved once on the host ([`Stats::shared_hits`]). blazesym is given
//! each file through one path, the `map_files` entry of one process mapping it, checked by
//! `stat` before another process uses it and replaced when that process is gone, so the second
//! and later processes of a binary (or users of a library) parse nothing again
//! ([`Stats::files_opened`], [`Stats::path_switches`]). JIT names (perf map), misses and vDSO
//! functions stay per process; kernel results are cached per address.
//!
//! A process's cache is dropped when [`Symbolizer::retain`] finds it gone, when
//! [`Symbolizer::forget`] is called, and when its `/proc/<pid>/stat` identity (start time, code
//! and stack addresses) changes — pid reuse, or an exec: its addresses then go through its new
//! mappings — checked once per period (a period is the time between two `retain` calls). Its
//! `/proc/<pid>/maps` is read once per period too (again for addresses outside the mappings
//! read), so an exec, or a library replaced by another at the same addresses, shows from the
//! next period. A file and its results are dropped when no process with a cache uses it.
//! Bounds: [`Config::max_pids`] (least recently used pid dropped), [`Config::max_addrs_per_pid`]
//! (the pid's cache is emptied), [`Config::max_addrs_total`], [`Config::max_kernel_addrs`],
//! [`Config::max_file_results`] (all shared results are dropped). blazesym keeps the open files
//! and parsed ELF/DWARF of what it was given: a file is evicted when no process uses it, and the
//! blazesym symbolizer is recreated past [`Config::max_open_files`] distinct files and every
//! [`Config::rebuild_interval_secs`] (which also re-reads kallsyms for modules loaded since; the
//! shared results stay).
//!
//! # Perf maps
//! `/tmp/perf-<pid>.map` is written by the profiled process and we run as root: `tmp` and the
//! file are opened with `O_NOFOLLOW` relative to `/proc/<pid>/root`, the file must be a regular
//! file owned by one of the process's uids, and at most [`Config::perf_map_max_bytes`] bytes and
//! [`Config::perf_map_max_entries`] entries are read (lines longer than 4 KiB and invalid lines
//! are skipped and counted). The map is checked for changes at most once per period; appended
//! lines are read incrementally, and names cached from the perf map are dropped when it changes.
//!
//! # Errors
//! Nothing here fails or panics on input: an address that cannot be resolved is a miss, and a
//! failure of blazesym or of a `/proc` read is a counter in [`Stats`] and
//! [`Symbolizer::last_error`].
//!
//! # Threads and time
//! blazesym runs on a worker thread the [`Symbolizer`] owns (blazesym's symbolizer is not `Send`;
//! [`Symbolizer`] is). Each call to it waits at most [`Config::call_timeout_ms`]: with DWARF on,
//! blazesym opens the debug-link targets a binary names with a blocking `open(2)`, so a FIFO
//! planted there (or a stalled FUSE file) would otherwise hang the probe. A call that times out
//! gives misses, its worker is abandoned and replaced, and the file is retried without DWARF in
//! the next period (skipped after a second timeout).

mod engine;
mod error;
mod files;
pub mod maps;
mod names;
mod perf_map;
pub mod proc;
mod symbolizer;

use std::sync::Arc;

pub use error::ReadError;
pub use symbolizer::Symbolizer;

/// Name of a miss outside any mapped file (and of an unresolved kernel address).
pub const UNKNOWN: &str = "[unknown]";

/// Bounds and switches of a [`Symbolizer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Processes with a cache; past it the least recently used one is dropped.
    pub max_pids: usize,
    /// Cached addresses of one process; past it that process's cache is emptied.
    pub max_addrs_per_pid: usize,
    /// Cached user addresses of all processes; past it least recently used processes are dropped.
    pub max_addrs_total: usize,
    /// Cached kernel addresses; past it the kernel cache is emptied.
    pub max_kernel_addrs: usize,
    /// Lookup results of mapped files (by file and offset), shared by every process mapping the
    /// file; past it they are all dropped.
    pub max_file_results: usize,
    /// Look JIT code up in `/tmp/perf-<pid>.map`.
    pub perf_map: bool,
    /// Bytes read from one perf map; the rest is ignored (counted as truncated).
    pub perf_map_max_bytes: u64,
    /// Entries kept from one perf map.
    pub perf_map_max_entries: usize,
    /// Entries kept from all perf maps; past it the least recently used processes' maps are dropped.
    pub perf_map_max_entries_total: usize,
    /// Use DWARF (inlined functions, better names) when the binary or its debug file has it.
    pub debug_syms: bool,
    /// Mapped files whose ELF/DWARF blazesym may hold at once (a file shared by processes counts
    /// once); past it blazesym is recreated.
    pub max_open_files: usize,
    /// blazesym is recreated (and kallsyms re-read) at the first `retain` after this long.
    pub rebuild_interval_secs: u64,
    /// Longest wait for one blazesym call (one mapped file, or a kernel batch); a file that took
    /// longer is symbolized without DWARF next time, and not at all after a second timeout.
    pub call_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_pids: 1024,
            max_addrs_per_pid: 65536,
            max_addrs_total: 262_144,
            max_kernel_addrs: 65536,
            max_file_results: 262_144,
            perf_map: true,
            perf_map_max_bytes: 64 * 1024 * 1024,
            perf_map_max_entries: 1 << 20,
            perf_map_max_entries_total: 1 << 20,
            debug_syms: true,
            max_open_files: 1024,
            rebuild_interval_secs: 600,
            call_timeout_ms: 10_000,
        }
    }
}

/// What one address resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// Outermost first: the function containing the address, then the functions inlined into it
    /// down to the innermost. Never empty; a miss has one frame (`<module>+0x<offset>` or
    /// [`UNKNOWN`]).
    pub frames: Vec<ResolvedFrame>,
    /// A symbol was found (false for a miss).
    pub found: bool,
    /// Base name of the file the address lies in (`libc.so.6`, `[vdso]`); None for JIT code,
    /// other anonymous memory and kernel addresses.
    pub module: Option<Arc<str>>,
}

/// One function of a [`Resolved`] address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResolvedFrame {
    /// Demangled name (C++ and Rust), or the miss name.
    pub name: Arc<str>,
    /// Inlined into the frame before it.
    pub inlined: bool,
    /// From the process's perf map (JIT-compiled code).
    pub jit: bool,
}

/// Counters (monotonic) and gauges (current values) of a [`Symbolizer`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Addresses looked up (user and kernel, cache hits included).
    pub lookups: u64,
    /// Lookups answered from a cache: the process's own, or the results of its mapped file that
    /// an earlier lookup (of any process) made (`shared_hits`), without blazesym.
    pub cache_hits: u64,
    /// Lookups the process had not cached, answered from the results its mapped file shares with
    /// every process mapping it (also counted in `cache_hits`).
    pub shared_hits: u64,
    /// Lookups that returned a miss (`found: false`).
    pub misses: u64,
    /// Lookups answered from a perf map (JIT frames), cache hits included.
    pub jit_frames: u64,
    /// Uncached lookups in a mapped file that is no ELF file (memfd or shared-memory JIT code):
    /// misses (or perf map names), not errors.
    pub not_elf: u64,
    /// Failures: a blazesym call, a `/proc/<pid>/maps` or perf map read (each also gave misses).
    pub errors: u64,
    /// Time spent in `user` and `kernel`, nanoseconds.
    pub symbolize_ns: u64,
    /// Processes dropped because a bound was reached (`max_pids`, `max_addrs_total`).
    pub pid_evictions: u64,
    /// Caches emptied because full (`max_addrs_per_pid`, `max_kernel_addrs`,
    /// `max_file_results`).
    pub cache_resets: u64,
    /// Processes dropped by `retain` (exited) or `forget`.
    pub pids_dropped: u64,
    /// Processes whose cache was dropped because their identity changed (pid reuse, exec).
    pub pid_changes: u64,
    /// Perf map reads (whole file or appended lines).
    pub perf_map_reads: u64,
    /// Perf map lines skipped as invalid or too long.
    pub perf_map_invalid_lines: u64,
    /// Perf maps not read: symbolic link, not a regular file, or owned by another user.
    pub perf_map_refused: u64,
    /// Perf map reads that stopped at a bound (bytes or entries).
    pub perf_map_truncated: u64,
    /// Recreations of the blazesym symbolizer.
    pub rebuilds: u64,
    /// Mapped files handed to blazesym to open and parse. A file that processes share counts
    /// once, and again only after blazesym was recreated (or replaced after a timeout), once no
    /// process uses it, or when it changed.
    pub files_opened: u64,
    /// Shared files moved to another process's `/proc/<pid>/map_files` path, without a new
    /// parse: the process whose path blazesym knew them by exited or changed.
    pub path_switches: u64,
    /// Reads of a `/proc/<pid>/maps`: one per process and period with uncached addresses, plus
    /// one per batch with addresses outside the mappings read before (and every batch of a
    /// process with over 1,024 executable mappings).
    pub maps_reads: u64,
    /// blazesym calls abandoned after `call_timeout_ms` (their addresses are misses).
    pub timeouts: u64,
    /// Processes with a cache now.
    pub cached_pids: usize,
    /// Cached addresses now (user and kernel).
    pub cached_addrs: usize,
    /// Results of mapped files held now (shared by processes, by file and offset).
    pub file_results: usize,
    /// Perf map entries held now.
    pub perf_map_entries: usize,
    /// Mapped files blazesym holds now (one path each, however many processes map them).
    pub open_files: usize,
}
