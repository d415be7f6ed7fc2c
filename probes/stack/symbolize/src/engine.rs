//! The one blazesym symbolizer, on its own thread, and the calls made to it.
//!
//! User addresses go to blazesym as file offsets into `/proc/<pid>/map_files/<start>-<end>`
//! (source `Elf`), one call per mapping: that path is the mapped file itself whatever the
//! process's mount namespace or root, also after the file was deleted or replaced on disk, and a
//! failing file only fails its own addresses. (blazesym's `Process` source does the same per
//! address but reads the maps itself and fails the whole batch on one bad file.) vDSO addresses
//! go through the `Process` source (blazesym parses the vDSO image). Kernel addresses go through
//! kallsyms only (`vmlinux` off: its DWARF is hundreds of MiB).
//!
//! Why a thread: with DWARF on, blazesym follows a binary's `.gnu_debuglink` and
//! `.gnu_debugaltlink` to a file it opens with a plain blocking `open(2)` — a name the profiled
//! program chose, next to the binary or absolute. A FIFO there blocks the open until a writer
//! comes, a FUSE file can stall (a rootless container's root is one, and so its `/tmp` with the
//! perf map, which the worker reads too), and a huge debug file takes long to parse. Each call
//! waits at most the configured timeout; a worker that did not answer is abandoned (it exits when its
//! call returns) and a new one takes over, and while [`MAX_STUCK_WORKERS`] are stuck no call is
//! made. blazesym's symbolizer is not `Send`, so it is created on the worker thread.
//!
//! blazesym keeps, per path handed to it, the open file and its parsed ELF/DWARF, keyed by what
//! `stat` says through the path (device, inode, size, modification time): two paths to one file
//! share one parse, and it is dropped when the last path to it is evicted. The caller hands it one
//! path per mapped file ([`crate::files`]) and evicts it when no process maps the file any more
//! ([`Engine::evict`]); recreating the worker bounds what is left (debug-link targets, kallsyms).
//! Each worker has a [generation](Engine::generation): a new one knows none of the paths the old
//! one was given.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

use blazesym::symbolize::source::{Elf, Kernel, Process, Source};
use blazesym::symbolize::{self, evict, Input, Reason, Sym, Symbolized};
use blazesym::{ErrorKind, MaybeDefault, Pid};

use crate::error::PerfMapRefusal;
use crate::perf_map::{Limits, PerfMap, Refreshed};

/// Workers abandoned and still blocked, past which no call is made until one returns.
pub(crate) const MAX_STUCK_WORKERS: usize = 4;

/// Stack of the worker thread: DWARF walks recurse.
const WORKER_STACK_BYTES: usize = 8 * 1024 * 1024;

/// One frame as the worker reports it (the caller shares the name).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    pub name: Box<str>,
    pub inlined: bool,
}

/// What blazesym said about one address.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The function containing the address, then its inlined callees (outermost first).
    Found(Vec<Frame>),
    /// No symbol covers the address.
    NotFound,
    /// The mapped file is no ELF file (memfd or shared-memory JIT code, ...).
    NotElf,
    /// blazesym failed (unreadable file, malformed ELF/DWARF, ...).
    Failed(String),
}

/// The outcome of one call.
#[derive(Debug)]
pub(crate) enum Reply<T = Vec<Lookup>> {
    /// The answer: for lookups, one per input, in order.
    Done(T),
    /// No answer within the timeout: the worker was abandoned.
    TimedOut,
    /// No worker: too many are stuck, or the thread could not be started.
    Unavailable(String),
}

/// What `stat` says about a file through a path: the identity under which blazesym caches what
/// it parsed, and under which [`crate::files`] keeps lookup results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileStat {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

impl From<&std::fs::Metadata> for FileStat {
    fn from(meta: &std::fs::Metadata) -> Self {
        FileStat {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

#[cfg(test)]
impl FileStat {
    /// A stat that differs from another by `size`.
    pub fn for_test(size: u64) -> Self {
        FileStat {
            dev: 8,
            ino: 99,
            size,
            mtime_ns: 0,
        }
    }
}

/// The answer to a lookup in a mapped file.
#[derive(Debug)]
pub(crate) enum ElfAnswer {
    /// One lookup per offset, and what `stat` said through the path (`None` if it failed, and
    /// then blazesym failed too and was not given the path).
    Looked {
        lookups: Vec<Lookup>,
        stat: Option<FileStat>,
    },
    /// The path no longer leads to the expected file (its process exited, or the pid or the
    /// address range was reused): nothing was looked up.
    Stale,
}

/// A perf map to bring up to date, on the worker: the file lies in the process's file system,
/// which may be a FUSE mount its owner can stall.
pub(crate) struct PerfMapJob {
    pub map: PerfMap,
    /// `/proc/<pid>/root`.
    pub root: PathBuf,
    pub ns_pid: u32,
    pub uids: Vec<u32>,
    pub limits: Limits,
}

/// The map back, and how its refresh went.
pub(crate) type PerfMapDone = (PerfMap, Result<Refreshed, PerfMapRefusal>);

enum Answer {
    Lookups(Vec<Lookup>),
    Elf(ElfAnswer),
    PerfMap(Box<PerfMapDone>),
}

enum Request {
    Elf {
        path: PathBuf,
        offsets: Vec<u64>,
        debug_syms: bool,
        /// Look up only if `stat` through the path says this.
        expect: Option<FileStat>,
    },
    Vdso {
        pid: u32,
        addrs: Vec<u64>,
    },
    Kernel {
        addrs: Vec<u64>,
    },
    Evict {
        path: PathBuf,
    },
    PerfMap(Box<PerfMapJob>),
}

/// Worker states, for the count of stuck workers.
const RUNNING: u8 = 0;
const ABANDONED: u8 = 1;
const EXITED: u8 = 2;

struct Worker {
    requests: Sender<Request>,
    replies: Receiver<Answer>,
    state: Arc<AtomicU8>,
}

/// The blazesym worker.
pub(crate) struct Engine {
    worker: Option<Worker>,
    /// Workers started so far; the current one's generation.
    spawned: u64,
    debug_syms: bool,
    timeout: Duration,
    /// Abandoned workers still running.
    stuck: Arc<AtomicUsize>,
}

impl Engine {
    pub fn new(debug_syms: bool, timeout: Duration) -> Self {
        Engine {
            worker: None,
            spawned: 0,
            debug_syms,
            timeout,
            stuck: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Symbolizes file offsets into the ELF file at `path`, if `stat` through it says `expect`
    /// (when given); `debug_syms` false skips DWARF and debug links even if the engine uses them.
    pub fn elf(
        &mut self,
        path: &Path,
        offsets: &[u64],
        debug_syms: bool,
        expect: Option<FileStat>,
    ) -> Reply<ElfAnswer> {
        let request = Request::Elf {
            path: path.to_path_buf(),
            offsets: offsets.to_vec(),
            debug_syms: debug_syms && self.debug_syms,
            expect,
        };
        match self.call(request) {
            Reply::Done(Answer::Elf(answer)) => Reply::Done(answer),
            Reply::Done(_) => Reply::Unavailable("mismatched answer".into()),
            Reply::TimedOut => Reply::TimedOut,
            Reply::Unavailable(why) => Reply::Unavailable(why),
        }
    }

    /// The generation of the current worker (`None` if there is none): paths given to another
    /// generation are unknown to it.
    pub fn generation(&self) -> Option<u64> {
        self.worker.as_ref().map(|_| self.spawned)
    }

    /// Symbolizes addresses in the vDSO of process `pid` (not 0).
    pub fn vdso(&mut self, pid: u32, addrs: &[u64]) -> Reply {
        self.lookups(Request::Vdso {
            pid,
            addrs: addrs.to_vec(),
        })
    }

    /// Symbolizes kernel addresses through `/proc/kallsyms`.
    pub fn kernel(&mut self, addrs: &[u64]) -> Reply {
        self.lookups(Request::Kernel {
            addrs: addrs.to_vec(),
        })
    }

    /// Refreshes a perf map (which is lost if the call gets no answer).
    pub fn perf_map(&mut self, job: PerfMapJob) -> Reply<PerfMapDone> {
        match self.call(Request::PerfMap(Box::new(job))) {
            Reply::Done(Answer::PerfMap(done)) => Reply::Done(*done),
            Reply::Done(_) => Reply::Unavailable("mismatched answer".into()),
            Reply::TimedOut => Reply::TimedOut,
            Reply::Unavailable(why) => Reply::Unavailable(why),
        }
    }

    fn lookups(&mut self, request: Request) -> Reply {
        match self.call(request) {
            Reply::Done(Answer::Lookups(lookups)) => Reply::Done(lookups),
            Reply::Done(_) => Reply::Unavailable("mismatched answer".into()),
            Reply::TimedOut => Reply::TimedOut,
            Reply::Unavailable(why) => Reply::Unavailable(why),
        }
    }

    /// Releases what the current worker's blazesym holds for `path` (open file, parsed ELF/DWARF
    /// once no other path refers to the same file). Does not wait.
    pub fn evict(&mut self, path: &Path) {
        if let Some(worker) = &self.worker {
            let _ = worker.requests.send(Request::Evict {
                path: path.to_path_buf(),
            });
        }
    }

    /// Replaces the worker, releasing everything blazesym holds (the old worker finishes its
    /// call, if any, and exits).
    pub fn rebuild(&mut self) {
        self.worker = None;
    }

    fn call(&mut self, request: Request) -> Reply<Answer> {
        let timeout = self.timeout;
        let Some(worker) = self.worker() else {
            return Reply::Unavailable(format!(
                "{} symbolizer calls are stuck",
                self.stuck.load(Ordering::Acquire)
            ));
        };
        if worker.requests.send(request).is_err() {
            self.worker = None;
            return Reply::Unavailable("symbolizer thread ended".into());
        }
        match worker.replies.recv_timeout(timeout) {
            Ok(answer) => Reply::Done(answer),
            Err(RecvTimeoutError::Timeout) => {
                self.abandon();
                Reply::TimedOut
            }
            Err(RecvTimeoutError::Disconnected) => {
                // The thread panicked inside blazesym: a new one takes over next time.
                self.worker = None;
                Reply::Unavailable("symbolizer thread ended".into())
            }
        }
    }

    /// The worker, started if needed and allowed.
    fn worker(&mut self) -> Option<&Worker> {
        if self.worker.is_none() && self.stuck.load(Ordering::Acquire) < MAX_STUCK_WORKERS {
            self.worker = spawn(self.debug_syms, Arc::clone(&self.stuck));
            self.spawned += u64::from(self.worker.is_some());
        }
        self.worker.as_ref()
    }

    fn abandon(&mut self) {
        if let Some(worker) = self.worker.take() {
            self.stuck.fetch_add(1, Ordering::AcqRel);
            let was = worker.state.compare_exchange(
                RUNNING,
                ABANDONED,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            if was.is_err() {
                // It exited in the meantime.
                self.stuck.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

fn spawn(debug_syms: bool, stuck: Arc<AtomicUsize>) -> Option<Worker> {
    let (requests, request_rx) = mpsc::channel();
    let (reply_tx, replies) = mpsc::channel();
    let state = Arc::new(AtomicU8::new(RUNNING));
    let thread_state = Arc::clone(&state);
    std::thread::Builder::new()
        .name("gg-symbolize".into())
        .stack_size(WORKER_STACK_BYTES)
        .spawn(move || {
            serve(debug_syms, &request_rx, &reply_tx);
            if thread_state.swap(EXITED, Ordering::AcqRel) == ABANDONED {
                stuck.fetch_sub(1, Ordering::AcqRel);
            }
        })
        .ok()?;
    Some(Worker {
        requests,
        replies,
        state,
    })
}

/// The worker thread: answers requests until the engine lets go of it.
fn serve(debug_syms: bool, requests: &Receiver<Request>, replies: &Sender<Answer>) {
    // Inlined functions need DWARF line information ("code info"); without DWARF the cheaper
    // plain lookup is enough.
    let mut inner = symbolize::Symbolizer::builder()
        .enable_code_info(debug_syms)
        .enable_inlined_fns(debug_syms)
        .enable_demangling(true)
        .build();
    for request in requests {
        let lookups = match request {
            Request::Elf {
                path,
                offsets,
                debug_syms,
                expect,
            } => {
                // blazesym stats the path again a moment later (a change in between is not
                // caught: it needs the owner's exit and a reuse of its pid within microseconds).
                let stat = std::fs::metadata(&path).ok().map(|m| FileStat::from(&m));
                let answer = if expect.is_some() && stat != expect {
                    ElfAnswer::Stale
                } else {
                    let mut src = Elf::new(path);
                    src.debug_syms = debug_syms;
                    let result = inner.symbolize(&Source::Elf(src), Input::FileOffset(&offsets));
                    ElfAnswer::Looked {
                        lookups: convert(result, offsets.len()),
                        stat,
                    }
                };
                if replies.send(Answer::Elf(answer)).is_err() {
                    return;
                }
                continue;
            }
            Request::Vdso { pid, addrs } => {
                let mut src = Process::new(Pid::from(pid));
                src.debug_syms = false;
                src.perf_map = false;
                src.map_files = true;
                src.vdso = true;
                let result = inner.symbolize(&Source::Process(src), Input::AbsAddr(&addrs));
                convert(result, addrs.len())
            }
            Request::Kernel { addrs } => {
                let src = Kernel {
                    kallsyms: MaybeDefault::Default,
                    vmlinux: MaybeDefault::None,
                    debug_syms: false,
                    ..Kernel::default()
                };
                let result = inner.symbolize(&Source::Kernel(src), Input::AbsAddr(&addrs));
                convert(result, addrs.len())
            }
            Request::Evict { path } => {
                // Evicting an unknown path is no error.
                let _ = inner.evict(&evict::Evict::Elf(evict::Elf::new(path)));
                continue;
            }
            Request::PerfMap(job) => {
                let PerfMapJob {
                    mut map,
                    root,
                    ns_pid,
                    uids,
                    limits,
                } = *job;
                let result = map.refresh(&root, ns_pid, &uids, limits);
                if replies
                    .send(Answer::PerfMap(Box::new((map, result))))
                    .is_err()
                {
                    return;
                }
                continue;
            }
        };
        if replies.send(Answer::Lookups(lookups)).is_err() {
            return;
        }
    }
}

fn convert(result: blazesym::Result<Vec<Symbolized<'_>>>, n: usize) -> Vec<Lookup> {
    match result {
        Ok(symbols) if symbols.len() == n => symbols
            .iter()
            .map(|symbolized| match symbolized {
                Symbolized::Sym(sym) => Lookup::Found(frames(sym)),
                Symbolized::Unknown(Reason::IgnoredError) => {
                    Lookup::Failed(Reason::IgnoredError.to_string())
                }
                Symbolized::Unknown(_) => Lookup::NotFound,
            })
            .collect(),
        Ok(symbols) => {
            let text = format!("blazesym returned {} results for {n} inputs", symbols.len());
            (0..n).map(|_| Lookup::Failed(text.clone())).collect()
        }
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::InvalidData | ErrorKind::UnexpectedEof
            ) =>
        {
            (0..n).map(|_| Lookup::NotElf).collect()
        }
        Err(err) => {
            let text = format!("{err:#}");
            (0..n).map(|_| Lookup::Failed(text.clone())).collect()
        }
    }
}

/// The function, then the functions inlined into it at the address, outermost first (blazesym's
/// order).
fn frames(sym: &Sym<'_>) -> Vec<Frame> {
    let outer = Frame {
        name: sym.name.as_ref().into(),
        inlined: false,
    };
    std::iter::once(outer)
        .chain(sym.inlined.iter().map(|f| Frame {
            name: f.name.as_ref().into(),
            inlined: true,
        }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_to_another_file_than_expected_is_not_looked_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"not an ELF file").expect("a");
        std::fs::write(&b, b"another file").expect("b");
        let stat_of = |p: &Path| FileStat::from(&std::fs::metadata(p).expect("stat"));
        let mut engine = Engine::new(false, Duration::from_secs(10));
        assert!(matches!(
            engine.elf(&b, &[0], false, Some(stat_of(&a))),
            Reply::Done(ElfAnswer::Stale)
        ));
        assert!(matches!(
            engine.elf(&dir.path().join("gone"), &[0], false, Some(stat_of(&a))),
            Reply::Done(ElfAnswer::Stale)
        ));
        match engine.elf(&b, &[0], false, Some(stat_of(&b))) {
            Reply::Done(ElfAnswer::Looked { lookups, stat }) => {
                assert_eq!(lookups.len(), 1, "looked up (and not found)");
                assert!(!matches!(lookups[0], Lookup::Found(_)));
                assert_eq!(stat, Some(stat_of(&b)));
            }
            other => panic!("{other:?}"),
        }
        let generation = engine.generation();
        assert!(generation.is_some());
        engine.rebuild();
        assert_eq!(engine.generation(), None);
        assert!(matches!(
            engine.elf(&a, &[0], false, None),
            Reply::Done(ElfAnswer::Looked { .. })
        ));
        assert_ne!(engine.generation(), generation, "a new worker");
    }
}
