//! [`Symbolizer`]: the caches in front of the engine, their bounds, and the order of lookups
//! for an uncached user address: its file (the results shared by every process mapping it, then
//! blazesym), the vDSO, the perf map, then a miss name.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::{ElfAnswer, Engine, Frame, Lookup, PerfMapJob, Reply};
use crate::error::{PerfMapRefusal, ReadError};
use crate::files::{FileKey, FileResult, Files};
use crate::maps::{self, Backing, Mapping, Maps};
use crate::names::Names;
use crate::perf_map::{self, PerfMap};
use crate::proc::{self, Identity};
use crate::{Config, Resolved, ResolvedFrame, Stats, UNKNOWN};

/// Files remembered as slow (timed out); past it the list starts over.
const MAX_SLOW_FILES: usize = 1024;

/// A process's executable mappings are kept for the period up to this many (~100 bytes each);
/// more are read again at every batch.
const MAX_KEPT_MAPPINGS: usize = 1024;

/// Why a cached answer is what it is: decides when it goes stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// From the file's symbols: valid as long as the process image.
    Symbol,
    /// From the perf map: dropped when the perf map changes.
    Jit,
    /// A miss in a mapped file: as stable as `Symbol`.
    FileMiss,
    /// A miss outside any file (anonymous memory, unmapped): dropped when the perf map changes,
    /// which may explain it.
    AnonMiss,
    /// A miss because something failed: retried in the next period.
    Retry,
}

impl Class {
    /// Answers a change of the perf map invalidates.
    fn perf_dependent(self) -> bool {
        matches!(self, Class::Jit | Class::AnonMiss)
    }
}

/// Why blazesym gave no symbol for an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unexplained {
    /// Outside any file, or no symbol covers it.
    NoSymbol,
    /// The mapped file is no ELF file.
    NotElf,
    /// blazesym failed.
    Failed,
}

/// A process's cached answer for one address.
enum Entry {
    /// Found in a mapped file: the answer is that file's shared result for the offset (and is
    /// looked up again if it was dropped since).
    File { file: FileKey, offset: u64 },
    /// Held by the process: JIT names, misses, vDSO functions.
    Own { resolved: Resolved, class: Class },
}

impl Entry {
    fn class(&self) -> Class {
        match self {
            Entry::File { .. } => Class::Symbol,
            Entry::Own { class, .. } => *class,
        }
    }
}

/// A fresh answer, and where it is kept.
#[derive(Clone)]
struct Fresh {
    resolved: Resolved,
    class: Class,
    /// The file and offset whose shared result it is.
    file: Option<(FileKey, u64)>,
}

impl Fresh {
    fn own(resolved: Resolved, class: Class) -> Self {
        Fresh {
            resolved,
            class,
            file: None,
        }
    }
}

/// Everything cached for one process.
struct PidState {
    /// `None` if `/proc/<pid>/stat` could not be read when the state was made.
    identity: Option<Identity>,
    /// Period in which the identity was last checked.
    checked_period: u64,
    /// [`Symbolizer::tick`] of the last use, for least-recently-used eviction.
    last_used: u64,
    addrs: HashMap<u64, Entry>,
    /// Entries with [`Class::perf_dependent`].
    perf_dependent: usize,
    /// Entries with [`Class::Retry`].
    retries: usize,
    perf_map: PerfMap,
    /// Period in which the perf map was last refreshed.
    perf_checked_period: Option<u64>,
    /// Reading the perf map timed out once: it is not read again.
    perf_map_stalled: bool,
    /// Its executable mappings, and the period they were read in.
    maps: Option<(u64, Arc<Maps>)>,
    /// Mapped files whose shared results or blazesym path this process uses (released with the
    /// state).
    files: HashSet<FileKey>,
}

impl PidState {
    fn new(identity: Option<Identity>, period: u64, tick: u64) -> Self {
        PidState {
            identity,
            checked_period: period,
            last_used: tick,
            addrs: HashMap::new(),
            perf_dependent: 0,
            retries: 0,
            perf_map: PerfMap::default(),
            perf_checked_period: None,
            perf_map_stalled: false,
            maps: None,
            files: HashSet::new(),
        }
    }

    /// Drops the entries `stale` selects; returns how many.
    fn drop_entries(&mut self, stale: impl Fn(Class) -> bool) -> usize {
        let before = self.addrs.len();
        self.addrs.retain(|_, e| !stale(e.class()));
        self.recount();
        before - self.addrs.len()
    }

    fn clear_addrs(&mut self) -> usize {
        let n = self.addrs.len();
        self.addrs.clear();
        self.recount();
        n
    }

    fn recount(&mut self) {
        self.perf_dependent = self
            .addrs
            .values()
            .filter(|e| e.class().perf_dependent())
            .count();
        self.retries = self
            .addrs
            .values()
            .filter(|e| e.class() == Class::Retry)
            .count();
    }

    /// Caches `entry` for `addr`; true if the address was not cached (an entry whose shared
    /// result was dropped is replaced).
    fn insert(&mut self, addr: u64, entry: Entry) -> bool {
        let count = |this: &mut Self, class: Class, n: isize| {
            if class.perf_dependent() {
                this.perf_dependent = this.perf_dependent.saturating_add_signed(n);
            }
            if class == Class::Retry {
                this.retries = this.retries.saturating_add_signed(n);
            }
        };
        count(self, entry.class(), 1);
        match self.addrs.insert(addr, entry) {
            Some(old) => {
                count(self, old.class(), -1);
                false
            }
            None => true,
        }
    }
}

/// Addresses to function names, with bounded caches. See the [crate] documentation.
pub struct Symbolizer {
    cfg: Config,
    engine: Engine,
    pids: HashMap<u32, PidState>,
    /// Mapped files of all processes: blazesym paths and shared results.
    files: Files,
    kernel: HashMap<u64, Resolved>,
    names: Names,
    unknown: Arc<str>,
    /// Incremented by every `retain`.
    period: u64,
    /// Incremented by every `user` call.
    tick: u64,
    /// Sum of the pids' cached addresses.
    user_addrs: usize,
    /// Sum of the pids' perf map entries.
    perf_entries: usize,
    built: Instant,
    /// Mapped files (device, inode from the maps) whose blazesym call timed out, and how often.
    slow_files: HashMap<(u64, u64), u8>,
    stats: Stats,
    last_error: Option<String>,
}

impl Symbolizer {
    /// A symbolizer with `cfg`'s bounds (zeros are raised to 1).
    pub fn new(cfg: Config) -> Self {
        let mut cfg = cfg;
        cfg.max_pids = cfg.max_pids.max(1);
        cfg.max_addrs_per_pid = cfg.max_addrs_per_pid.max(1);
        cfg.max_addrs_total = cfg.max_addrs_total.max(cfg.max_addrs_per_pid);
        cfg.max_kernel_addrs = cfg.max_kernel_addrs.max(1);
        cfg.perf_map_max_entries_total =
            cfg.perf_map_max_entries_total.max(cfg.perf_map_max_entries);
        cfg.max_file_results = cfg.max_file_results.max(1);
        let mut names =
            Names::new(cfg.max_addrs_total + cfg.max_kernel_addrs + cfg.max_file_results);
        let unknown = names.intern(UNKNOWN);
        Symbolizer {
            engine: Engine::new(cfg.debug_syms, Duration::from_millis(cfg.call_timeout_ms)),
            pids: HashMap::new(),
            files: Files::new(cfg.max_file_results),
            cfg,
            kernel: HashMap::new(),
            names,
            unknown,
            period: 0,
            tick: 0,
            user_addrs: 0,
            perf_entries: 0,
            built: Instant::now(),
            slow_files: HashMap::new(),
            stats: Stats::default(),
            last_error: None,
        }
    }

    /// Resolves user-space addresses of process `pid` (as the kernel saw them, in that process's
    /// address space). Returns one [`Resolved`] per address, in order. A return address should be
    /// passed minus one, so that it falls inside the call instruction's function and inline
    /// chain.
    pub fn user(&mut self, pid: u32, addrs: &[u64]) -> Vec<Resolved> {
        let started = Instant::now();
        self.tick += 1;
        self.stats.lookups += addrs.len() as u64;
        let out = if pid == 0 {
            // Pid 0 would be blazesym's "this process".
            addrs.iter().map(|_| self.unknown()).collect()
        } else {
            self.user_batch(pid, addrs)
        };
        if self.files.open_files() > self.cfg.max_open_files {
            self.rebuild();
        }
        self.account(&out, started);
        out
    }

    /// Resolves kernel addresses. Returns one [`Resolved`] per address, in order.
    pub fn kernel(&mut self, addrs: &[u64]) -> Vec<Resolved> {
        let started = Instant::now();
        self.stats.lookups += addrs.len() as u64;
        let mut out: Vec<Option<Resolved>> = Vec::with_capacity(addrs.len());
        let mut todo = Vec::new();
        for addr in addrs {
            let hit = self.kernel.get(addr).cloned();
            if hit.is_none() {
                todo.push(*addr);
            }
            out.push(hit);
        }
        self.stats.cache_hits += (addrs.len() - todo.len()) as u64;
        todo.sort_unstable();
        todo.dedup();
        let mut fresh = Vec::with_capacity(todo.len());
        if !todo.is_empty() {
            let reply = self.engine.kernel(&todo);
            let lookups = self.lookups(reply, todo.len());
            let mut failed = None;
            for (addr, lookup) in todo.iter().zip(lookups) {
                let resolved = match lookup {
                    Lookup::Found(frames) => found(self.share(frames)),
                    Lookup::NotFound | Lookup::NotElf => self.unknown(),
                    Lookup::Failed(err) => {
                        failed = Some(err);
                        // Not cached: kallsyms may be readable next time.
                        fresh.push(self.unknown());
                        continue;
                    }
                };
                if self.kernel.len() >= self.cfg.max_kernel_addrs {
                    self.kernel.clear();
                    self.stats.cache_resets += 1;
                }
                self.kernel.insert(*addr, resolved.clone());
                fresh.push(resolved);
            }
            if let Some(err) = failed {
                self.error(format!("kernel: {err}"));
            }
        }
        let out = out
            .into_iter()
            .zip(addrs)
            .map(|(hit, addr)| match hit {
                Some(hit) => hit,
                None => pick(&todo, &fresh, *addr).unwrap_or_else(|| self.unknown()),
            })
            .collect::<Vec<_>>();
        self.account(&out, started);
        out
    }

    /// Ends a period: drops the caches of the processes for which `alive(pid)` is false, and
    /// recreates blazesym when [`Config::rebuild_interval_secs`] has passed.
    ///
    /// Cheap enough to call after every drain (once a second): one `alive` call per cached
    /// process and nothing read. What a new period re-checks is done lazily, once per period, at
    /// the next [`user`](Self::user) call for a process: one read of `/proc/<pid>/stat` (pid
    /// reuse, exec); for a process with cached JIT names or misses outside files, one read of
    /// `/proc/<pid>/status` and an open and `fstat` of its perf map, of which only appended bytes
    /// are read (a perf map written after the first misses names them from then on); and, at its
    /// first uncached address, one read of `/proc/<pid>/maps`. Shared names are purged only once
    /// as many were added as the last purge kept, and blazesym is recreated only every
    /// [`Config::rebuild_interval_secs`] or past [`Config::max_open_files`] distinct files.
    pub fn retain(&mut self, mut alive: impl FnMut(u32) -> bool) {
        self.period += 1;
        let gone: Vec<u32> = self.pids.keys().copied().filter(|p| !alive(*p)).collect();
        for pid in gone {
            self.drop_pid(pid);
            self.stats.pids_dropped += 1;
        }
        // Mappings are kept for one period: memory for the processes of one period only.
        for state in self.pids.values_mut() {
            state.maps = None;
        }
        self.names.purge_if_grown();
        if self.built.elapsed() >= Duration::from_secs(self.cfg.rebuild_interval_secs) {
            self.rebuild();
        }
    }

    /// Drops everything cached for process `pid`.
    pub fn forget(&mut self, pid: u32) {
        if self.drop_pid(pid) {
            self.stats.pids_dropped += 1;
        }
    }

    /// Counters and current sizes.
    pub fn stats(&self) -> Stats {
        Stats {
            cached_pids: self.pids.len(),
            cached_addrs: self.user_addrs + self.kernel.len(),
            file_results: self.files.results(),
            perf_map_entries: self.perf_entries,
            open_files: self.files.open_files(),
            ..self.stats
        }
    }

    /// The most recent failure (also counted in [`Stats::errors`] or
    /// [`Stats::perf_map_refused`]), for a debug log.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    fn account(&mut self, out: &[Resolved], started: Instant) {
        self.stats.misses += out.iter().filter(|r| !r.found).count() as u64;
        self.stats.jit_frames += out
            .iter()
            .filter(|r| r.frames.first().is_some_and(|f| f.jit))
            .count() as u64;
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.stats.symbolize_ns = self.stats.symbolize_ns.saturating_add(ns);
    }

    fn unknown(&self) -> Resolved {
        miss(Arc::clone(&self.unknown))
    }

    fn error(&mut self, text: String) {
        self.stats.errors += 1;
        self.last_error = Some(text);
    }

    fn user_batch(&mut self, pid: u32, addrs: &[u64]) -> Vec<Resolved> {
        self.prepare(pid);
        let mut out: Vec<Option<Resolved>> = Vec::with_capacity(addrs.len());
        let mut todo = Vec::new();
        let state = self.pids.get(&pid);
        for addr in addrs {
            let hit = match state.and_then(|s| s.addrs.get(addr)) {
                Some(Entry::Own { resolved, .. }) => Some(resolved.clone()),
                Some(Entry::File { file, offset }) => match self.files.result(*file, *offset) {
                    Some(FileResult::Found(resolved)) => Some(resolved.clone()),
                    // Dropped (bound) since: looked up again.
                    _ => None,
                },
                None => None,
            };
            if hit.is_none() {
                todo.push(*addr);
            }
            out.push(hit);
        }
        self.stats.cache_hits += (addrs.len() - todo.len()) as u64;
        todo.sort_unstable();
        todo.dedup();
        let fresh = if todo.is_empty() {
            Vec::new()
        } else {
            let fresh = self.resolve_user(pid, &todo);
            self.store(pid, &todo, &fresh);
            fresh.into_iter().map(|f| f.resolved).collect()
        };
        out.into_iter()
            .zip(addrs)
            .map(|(hit, addr)| match hit {
                Some(hit) => hit,
                None => pick(&todo, &fresh, *addr).unwrap_or_else(|| self.unknown()),
            })
            .collect()
    }

    /// Makes sure `pid` has a state, checked against the process once per period.
    fn prepare(&mut self, pid: u32) {
        let (period, tick) = (self.period, self.tick);
        let Some(state) = self.pids.get_mut(&pid) else {
            if self.pids.len() >= self.cfg.max_pids {
                self.evict_lru(pid);
            }
            let identity = proc::read_identity(pid).ok();
            self.pids.insert(pid, PidState::new(identity, period, tick));
            return;
        };
        state.last_used = tick;
        if state.checked_period == period {
            return;
        }
        state.checked_period = period;
        match proc::read_identity(pid) {
            Ok(now) if state.identity.is_some_and(|was| was != now) => {
                self.drop_pid(pid);
                self.stats.pid_changes += 1;
                self.pids
                    .insert(pid, PidState::new(Some(now), period, tick));
                return;
            }
            Ok(now) => state.identity = Some(now),
            // Gone: what is cached still describes it.
            Err(_) => {}
        }
        if state.retries > 0 {
            let n = state.drop_entries(|c| c == Class::Retry);
            self.user_addrs -= n;
        }
        if self.cfg.perf_map && state.perf_dependent > 0 {
            self.refresh_perf_map(pid);
        }
    }

    /// Resolves sorted, distinct, uncached addresses of `pid`.
    fn resolve_user(&mut self, pid: u32, todo: &[u64]) -> Vec<Fresh> {
        let maps = match self.maps_of(pid, todo) {
            Ok(maps) => maps,
            Err(err) => {
                // A process that exited since its stack was taken is no error, just misses.
                let gone = matches!(&err, ReadError::Io { source, .. }
                    if source.kind() == std::io::ErrorKind::NotFound);
                if !gone {
                    self.error(err.to_string());
                }
                return todo
                    .iter()
                    .map(|_| Fresh::own(self.unknown(), Class::Retry))
                    .collect();
            }
        };
        let mut results: Vec<Option<Fresh>> = vec![None; todo.len()];
        // Addresses blazesym did not explain, and why.
        let mut rest: Vec<(usize, Unexplained)> = Vec::new();

        // Sorted addresses: those of one mapping are adjacent.
        let mut i = 0;
        while i < todo.len() {
            let Some(mapping) = maps.find(todo[i]) else {
                rest.push((i, Unexplained::NoSymbol));
                i += 1;
                continue;
            };
            let mut j = i + 1;
            while j < todo.len() && todo[j] < mapping.end {
                j += 1;
            }
            match &mapping.backing {
                Backing::File { .. } => {
                    let offsets: Vec<u64> =
                        todo[i..j].iter().map(|a| mapping.file_offset(*a)).collect();
                    let looked = self.file(pid, mapping, &offsets);
                    for ((k, offset), result) in (i..j).zip(offsets).zip(looked) {
                        match result {
                            Ok(resolved) => {
                                results[k] = Some(Fresh {
                                    resolved,
                                    class: Class::Symbol,
                                    file: Some((mapping.file_id, offset)),
                                });
                            }
                            Err(why) => rest.push((k, why)),
                        }
                    }
                }
                Backing::Vdso => {
                    let reply = self.engine.vdso(pid, &todo[i..j]);
                    let lookups = self.lookups(reply, j - i);
                    let mut failed = None;
                    for (k, lookup) in (i..j).zip(lookups) {
                        match self.explain(lookup, &mut failed) {
                            Ok(resolved) => {
                                results[k] = Some(Fresh::own(resolved, Class::Symbol));
                            }
                            Err(why) => rest.push((k, why)),
                        }
                    }
                    if let Some(err) = failed {
                        self.error(format!("pid {pid} [vdso]: {err}"));
                    }
                }
                Backing::Other => rest.extend((i..j).map(|k| (k, Unexplained::NoSymbol))),
            }
            i = j;
        }

        if !rest.is_empty() && self.cfg.perf_map {
            self.refresh_perf_map(pid);
        }
        for (k, why) in rest {
            let (resolved, class) = self.fallback(pid, &maps, todo[k], why);
            results[k] = Some(Fresh::own(resolved, class));
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Fresh::own(self.unknown(), Class::Retry)))
            .collect()
    }

    /// The executable mappings of `pid`: read once per period, and again for addresses the
    /// copy read earlier in the period does not cover (a library loaded since).
    fn maps_of(&mut self, pid: u32, todo: &[u64]) -> Result<Arc<Maps>, ReadError> {
        let period = self.period;
        if let Some((read_in, maps)) = self.pids.get(&pid).and_then(|s| s.maps.as_ref()) {
            if *read_in == period && todo.iter().all(|a| maps.find(*a).is_some()) {
                return Ok(Arc::clone(maps));
            }
        }
        let maps = Arc::new(maps::read(pid)?);
        self.stats.maps_reads += 1;
        if maps.truncated {
            self.error(format!(
                "/proc/{pid}/maps: longer than {} bytes",
                maps::MAPS_MAX_BYTES
            ));
        }
        if let Some(state) = self.pids.get_mut(&pid) {
            state.maps = (maps.len() <= MAX_KEPT_MAPPINGS).then(|| (period, Arc::clone(&maps)));
        }
        Ok(maps)
    }

    /// Looks offsets of the file `mapping` maps up for `pid`: in the results shared by every
    /// process mapping the file, then through blazesym (and shares what it says).
    fn file(
        &mut self,
        pid: u32,
        mapping: &Mapping,
        offsets: &[u64],
    ) -> Vec<Result<Resolved, Unexplained>> {
        let key = mapping.file_id;
        if let Some(state) = self.pids.get_mut(&pid) {
            if state.files.insert(key) {
                self.files.add_user(key, pid);
            }
        }
        let mut out: Vec<Option<Result<Resolved, Unexplained>>> = offsets
            .iter()
            .map(|offset| match self.files.result(key, *offset) {
                Some(FileResult::Found(resolved)) => Some(Ok(resolved.clone())),
                Some(FileResult::NoSymbol) => Some(Err(Unexplained::NoSymbol)),
                None => None,
            })
            .collect();
        let shared = out.iter().filter(|r| r.is_some()).count() as u64;
        self.stats.cache_hits += shared;
        self.stats.shared_hits += shared;
        let missing: Vec<u64> = offsets
            .iter()
            .zip(&out)
            .filter(|(_, r)| r.is_none())
            .map(|(offset, _)| *offset)
            .collect();
        if !missing.is_empty() {
            let lookups = self.elf(pid, mapping, &missing);
            let mut failed = None;
            let mut looked = missing.iter().zip(lookups);
            for slot in out.iter_mut().filter(|r| r.is_none()) {
                let Some((offset, lookup)) = looked.next() else {
                    break;
                };
                let shared = matches!(lookup, Lookup::Found(_) | Lookup::NotFound);
                let result = self.explain(lookup, &mut failed).map(|mut r| {
                    r.module = mapping.module().map(|m| self.names.intern(m));
                    r
                });
                if shared {
                    let kept = match &result {
                        Ok(resolved) => FileResult::Found(resolved.clone()),
                        Err(_) => FileResult::NoSymbol,
                    };
                    if self.files.insert_result(key, *offset, kept) {
                        self.stats.cache_resets += 1;
                    }
                }
                *slot = Some(result);
            }
            if let Some(err) = failed {
                let what = mapping.module().unwrap_or(UNKNOWN);
                self.error(format!("pid {pid} {what}: {err}"));
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or(Err(Unexplained::Failed)))
            .collect()
    }

    /// A blazesym lookup as an answer, or why there is none (a failure is kept in `failed`).
    fn explain(
        &mut self,
        lookup: Lookup,
        failed: &mut Option<String>,
    ) -> Result<Resolved, Unexplained> {
        match lookup {
            Lookup::Found(frames) => Ok(found(self.share(frames))),
            Lookup::NotFound => Err(Unexplained::NoSymbol),
            Lookup::NotElf => {
                self.stats.not_elf += 1;
                Err(Unexplained::NotElf)
            }
            Lookup::Failed(err) => {
                *failed = Some(err);
                Err(Unexplained::Failed)
            }
        }
    }

    /// Symbolizes offsets into the file `mapping` maps, through the one path blazesym knows the
    /// file by (checked, and replaced by `pid`'s own `map_files` entry when it no longer leads
    /// to the file): without DWARF if a call on this file timed out before, not at all if that
    /// timed out too.
    fn elf(&mut self, pid: u32, mapping: &Mapping, offsets: &[u64]) -> Vec<Lookup> {
        let key = mapping.file_id;
        let timeouts = self.slow_files.get(&key).copied().unwrap_or(0);
        if timeouts >= 2 {
            return offsets.iter().map(|_| Lookup::NotFound).collect();
        }
        let debug_syms = timeouts == 0;
        let own = maps::map_files_path(pid, mapping);
        self.files.sync(self.engine.generation());
        let route = self.files.route(key, own.clone());
        let mut path = route.path;
        let mut reply = self.engine.elf(&path, offsets, debug_syms, route.expect);
        if matches!(reply, Reply::Done(ElfAnswer::Stale)) {
            path = own;
            reply = self.engine.elf(&path, offsets, debug_syms, None);
        }
        self.files.sync(self.engine.generation());
        let reply = match reply {
            Reply::Done(ElfAnswer::Looked { lookups, stat }) => {
                let registered = self.files.registered(key, path, pid, stat);
                self.stats.files_opened += u64::from(registered.opened);
                if let Some(old) = registered.evict {
                    self.engine.evict(&old);
                    self.stats.path_switches += 1;
                }
                Reply::Done(lookups)
            }
            Reply::Done(ElfAnswer::Stale) => {
                Reply::Unavailable("the mapping changed while being read".into())
            }
            Reply::TimedOut => {
                if self.slow_files.len() >= MAX_SLOW_FILES {
                    self.slow_files.clear();
                }
                *self.slow_files.entry(key).or_insert(0) += 1;
                Reply::TimedOut
            }
            Reply::Unavailable(why) => Reply::Unavailable(why),
        };
        self.lookups(reply, offsets.len())
    }

    /// The lookups of a reply (failures for a call that got no answer).
    fn lookups(&mut self, reply: Reply, n: usize) -> Vec<Lookup> {
        let failed = match reply {
            Reply::Done(lookups) => return lookups,
            Reply::TimedOut => {
                self.stats.timeouts += 1;
                format!(
                    "no answer within {} ms (abandoned)",
                    self.cfg.call_timeout_ms
                )
            }
            Reply::Unavailable(why) => why,
        };
        (0..n).map(|_| Lookup::Failed(failed.clone())).collect()
    }

    /// The frames of a lookup, with shared names.
    fn share(&mut self, frames: Vec<Frame>) -> Vec<ResolvedFrame> {
        frames
            .into_iter()
            .map(|f| ResolvedFrame {
                name: self.names.intern(&f.name),
                inlined: f.inlined,
                jit: false,
            })
            .collect()
    }

    /// The answer for an address blazesym did not explain: the perf map, else a miss name.
    fn fallback(
        &mut self,
        pid: u32,
        maps: &Maps,
        addr: u64,
        why: Unexplained,
    ) -> (Resolved, Class) {
        if let Some(name) = self.pids.get(&pid).and_then(|s| s.perf_map.lookup(addr)) {
            let frame = ResolvedFrame {
                name: Arc::clone(name),
                inlined: false,
                jit: true,
            };
            return (found(vec![frame]), Class::Jit);
        }
        let mapping = maps.find(addr);
        let class = match (why, mapping.and_then(|m| m.module())) {
            (Unexplained::Failed, _) => Class::Retry,
            (Unexplained::NoSymbol, Some(_)) => Class::FileMiss,
            // JIT code in a memfd: only the perf map can name it.
            (Unexplained::NotElf, _) | (Unexplained::NoSymbol, None) => Class::AnonMiss,
        };
        match mapping.and_then(|m| Some((m.module()?, m.file_offset(addr)))) {
            Some((module, offset)) => {
                let name = self.names.intern(&format!("{module}+{offset:#x}"));
                let mut r = miss(name);
                r.module = Some(self.names.intern(module));
                (r, class)
            }
            None => (self.unknown(), class),
        }
    }

    /// Re-reads `pid`'s perf map if it was not in this period.
    fn refresh_perf_map(&mut self, pid: u32) {
        let period = self.period;
        let limits = perf_map::Limits {
            max_bytes: self.cfg.perf_map_max_bytes,
            max_entries: self.cfg.perf_map_max_entries,
        };
        let Some(state) = self.pids.get_mut(&pid) else {
            return;
        };
        if state.perf_checked_period == Some(period) || state.perf_map_stalled {
            return;
        }
        state.perf_checked_period = Some(period);
        let map = std::mem::take(&mut state.perf_map);
        let before = map.len();
        let result = match proc::read_status(pid) {
            Err(err) => {
                state.perf_map = map;
                Err(PerfMapRefusal::from(err))
            }
            Ok(status) => {
                let job = PerfMapJob {
                    map,
                    root: PathBuf::from(format!("/proc/{pid}/root")),
                    ns_pid: status.ns_pid,
                    uids: status.uids,
                    limits,
                };
                match self.engine.perf_map(job) {
                    Reply::Done((map, result)) => {
                        if let Some(state) = self.pids.get_mut(&pid) {
                            state.perf_map = map;
                        }
                        result
                    }
                    Reply::TimedOut => {
                        // Its file system stalls: never again for this process.
                        self.stats.timeouts += 1;
                        if let Some(state) = self.pids.get_mut(&pid) {
                            state.perf_map_stalled = true;
                        }
                        self.last_error = Some(format!(
                            "pid {pid} perf map: no answer within {} ms, not read again",
                            self.cfg.call_timeout_ms
                        ));
                        Ok(perf_map::Refreshed {
                            changed: before > 0,
                            ..perf_map::Refreshed::default()
                        })
                    }
                    Reply::Unavailable(why) => {
                        // The map was dropped with the request: read it again (whole) next
                        // time.
                        self.error(format!("pid {pid} perf map: {why}"));
                        if let Some(state) = self.pids.get_mut(&pid) {
                            state.perf_checked_period = None;
                        }
                        Ok(perf_map::Refreshed {
                            changed: before > 0,
                            ..perf_map::Refreshed::default()
                        })
                    }
                }
            }
        };
        let after = self.pids.get(&pid).map_or(0, |s| s.perf_map.len());
        self.perf_entries = self.perf_entries.saturating_sub(before) + after;
        let changed = match result {
            Ok(refreshed) => {
                self.stats.perf_map_reads += u64::from(refreshed.read);
                self.stats.perf_map_invalid_lines += refreshed.invalid_lines;
                self.stats.perf_map_truncated += u64::from(refreshed.truncated);
                refreshed.changed
            }
            Err(err) => {
                match &err {
                    PerfMapRefusal::Read(ReadError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        // The process is gone.
                    }
                    PerfMapRefusal::Read(_) => self.error(format!("pid {pid} perf map: {err}")),
                    _ => {
                        self.stats.perf_map_refused += 1;
                        self.last_error = Some(format!("pid {pid} perf map: {err}"));
                    }
                }
                before != after
            }
        };
        if changed {
            if let Some(state) = self.pids.get_mut(&pid) {
                let n = state.drop_entries(Class::perf_dependent);
                self.user_addrs -= n;
            }
        }
        self.bound_perf_entries(pid);
    }

    /// Drops other processes' perf maps, least recently used first, past the total bound.
    fn bound_perf_entries(&mut self, keep: u32) {
        while self.perf_entries > self.cfg.perf_map_max_entries_total {
            let victim = self
                .pids
                .iter()
                .filter(|(pid, s)| **pid != keep && s.perf_map.len() > 0)
                .min_by_key(|(_, s)| s.last_used)
                .map(|(pid, _)| *pid);
            let Some(state) = victim.and_then(|pid| self.pids.get_mut(&pid)) else {
                break;
            };
            self.perf_entries -= state.perf_map.len();
            state.perf_map = PerfMap::default();
            // Read again (whole) the next time one of its addresses needs it.
            state.perf_checked_period = None;
        }
    }

    /// Caches fresh answers, within the bounds.
    fn store(&mut self, pid: u32, todo: &[u64], fresh: &[Fresh]) {
        let max = self.cfg.max_addrs_per_pid;
        let Some(state) = self.pids.get_mut(&pid) else {
            return;
        };
        if state.addrs.len() + todo.len() > max {
            self.user_addrs -= state.clear_addrs();
            self.stats.cache_resets += 1;
            // The files only the dropped entries used are released; this batch's stay.
            let batch: HashSet<FileKey> = fresh.iter().filter_map(|f| Some(f.file?.0)).collect();
            let unused: Vec<FileKey> = state.files.difference(&batch).copied().collect();
            self.files.sync(self.engine.generation());
            for key in unused {
                state.files.remove(&key);
                if let Some(path) = self.files.release(key, pid) {
                    self.engine.evict(&path);
                }
            }
        }
        for (addr, f) in todo.iter().zip(fresh).take(max) {
            let entry = match f.file {
                Some((file, offset)) => Entry::File { file, offset },
                None => Entry::Own {
                    resolved: f.resolved.clone(),
                    class: f.class,
                },
            };
            if state.insert(*addr, entry) {
                self.user_addrs += 1;
            }
        }
        while self.user_addrs > self.cfg.max_addrs_total {
            if !self.evict_lru(pid) {
                break;
            }
        }
    }

    /// Drops the least recently used process other than `keep`; false if there is none.
    fn evict_lru(&mut self, keep: u32) -> bool {
        let victim = self
            .pids
            .iter()
            .filter(|(pid, _)| **pid != keep)
            .min_by_key(|(_, s)| s.last_used)
            .map(|(pid, _)| *pid);
        match victim {
            Some(pid) => {
                self.drop_pid(pid);
                self.stats.pid_evictions += 1;
                true
            }
            None => false,
        }
    }

    /// Drops `pid`'s state, and the files nobody else uses (from blazesym too); false if there
    /// was none.
    fn drop_pid(&mut self, pid: u32) -> bool {
        let Some(state) = self.pids.remove(&pid) else {
            return false;
        };
        self.user_addrs -= state.addrs.len();
        self.perf_entries -= state.perf_map.len();
        self.files.sync(self.engine.generation());
        for key in state.files {
            if let Some(path) = self.files.release(key, pid) {
                self.engine.evict(&path);
            }
        }
        true
    }

    /// Recreates blazesym, releasing every file, parsed ELF/DWARF and kallsyms it holds (the
    /// shared results stay).
    fn rebuild(&mut self) {
        self.engine.rebuild();
        self.files.sync(self.engine.generation());
        // Modules may have been (re)loaded since kallsyms was read.
        self.kernel.clear();
        self.built = Instant::now();
        self.stats.rebuilds += 1;
    }
}

fn found(frames: Vec<ResolvedFrame>) -> Resolved {
    Resolved {
        frames,
        found: true,
        module: None,
    }
}

fn miss(name: Arc<str>) -> Resolved {
    Resolved {
        frames: vec![ResolvedFrame {
            name,
            inlined: false,
            jit: false,
        }],
        found: false,
        module: None,
    }
}

/// The fresh answer for `addr` (`todo` is sorted and parallel to `fresh`).
fn pick(todo: &[u64], fresh: &[Resolved], addr: u64) -> Option<Resolved> {
    let idx = todo.binary_search(&addr).ok()?;
    fresh.get(idx).cloned()
}
