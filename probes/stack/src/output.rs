//! Where finished profiles go: `flame_dir` (SVG, folded stacks, pprof and the index the
//! daemon's `/flamegraph/` pages read, through `stack_profile::FlameDir`) and, when
//! `pyroscope_server` is set, Pyroscope — pushed from a thread of its own so a slow server never
//! delays the drains (a full queue drops the push, counted as an error).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::SystemTime;

use stack_profile::pyroscope::{PushConfig, Pusher};
use stack_profile::{FlameDir, Limits, Profile};

/// The shipped default, created when missing (any other flame_dir must exist).
pub use stack_profile::flame_dir::DEFAULT_FLAME_DIR;
/// Profiles waiting for the Pyroscope thread.
const PUSH_QUEUE: usize = 256;

/// Counters of the outputs (cumulative).
#[derive(Debug, Default, Clone, Copy)]
pub struct OutStats {
    /// Profiles written to flame_dir.
    pub profiles_written: u64,
    /// Files written.
    pub files_written: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Files removed by the retention bounds.
    pub files_removed: u64,
    /// Profiles not written.
    pub write_errors: u64,
    /// Profiles pushed to Pyroscope.
    pub pyroscope_pushes: u64,
    /// Pushes that failed or were dropped.
    pub pyroscope_errors: u64,
}

struct Push {
    server: String,
    multi_instance: bool,
    profile: Profile,
}

#[derive(Default)]
struct PushCounters {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// The outputs of the running probe.
pub struct Outputs {
    dir: Option<(PathBuf, FlameDir)>,
    /// The last error message about flame_dir (logged once until it changes).
    last_error: Option<String>,
    profiles_written: u64,
    write_errors: u64,
    pusher: Option<SyncSender<Push>>,
    push: Arc<PushCounters>,
    dropped_pushes: u64,
}

impl Outputs {
    /// No directory opened yet, no push thread yet.
    pub fn new() -> Outputs {
        Outputs {
            dir: None,
            last_error: None,
            profiles_written: 0,
            write_errors: 0,
            pusher: None,
            push: Arc::default(),
            dropped_pushes: 0,
        }
    }

    /// Writes `profiles` into `flame_dir` and queues them for Pyroscope when `server` is set.
    pub fn write(
        &mut self,
        flame_dir: &Path,
        server: &str,
        multi_instance: bool,
        profiles: &[Profile],
    ) {
        if profiles.is_empty() {
            return;
        }
        if let Some(dir) = self.open(flame_dir) {
            let now = SystemTime::now();
            let (mut written, mut errors) = (0, Vec::new());
            for p in profiles {
                match dir.write(p, now) {
                    Ok(Some(_)) => written += 1,
                    Ok(None) => {}
                    Err(e) => errors.push(e.to_string()),
                }
            }
            let failed = errors.len() as u64;
            if let Err(e) = dir.write_index(now) {
                errors.push(e.to_string());
            }
            self.profiles_written += written;
            self.write_errors += failed;
            for e in errors {
                self.note_error(format!("flame_dir {}: {e}", flame_dir.display()));
            }
        } else {
            self.write_errors += profiles.len() as u64;
        }
        if !server.is_empty() {
            for p in profiles {
                self.queue_push(server, multi_instance, p.clone());
            }
        }
    }

    /// Opens `flame_dir` now (at start and when the setting changes), so a directory that
    /// cannot be used is reported at once, not at the end of the period.
    pub fn prepare(&mut self, flame_dir: &Path) {
        let _ = self.open(flame_dir);
    }

    fn open(&mut self, flame_dir: &Path) -> Option<&mut FlameDir> {
        if self.dir.as_ref().map(|(p, _)| p.as_path()) != Some(flame_dir) {
            self.dir = None;
            let opened = if flame_dir == Path::new(DEFAULT_FLAME_DIR) {
                FlameDir::open_or_create_default(flame_dir, Limits::default())
            } else {
                FlameDir::open(flame_dir, Limits::default())
            };
            match opened {
                Ok(d) => {
                    probe_sdk::info!("writing flame graphs into {}", flame_dir.display());
                    self.last_error = None;
                    self.dir = Some((flame_dir.to_path_buf(), d));
                }
                Err(e) => {
                    self.note_error(format!("{e}; no profile written"));
                    return None;
                }
            }
        }
        self.dir.as_mut().map(|(_, d)| d)
    }

    /// Logs `msg` unless it is the one logged last.
    fn note_error(&mut self, msg: String) {
        if self.last_error.as_deref() != Some(msg.as_str()) {
            probe_sdk::warn!("{msg}");
            self.last_error = Some(msg);
        }
    }

    fn queue_push(&mut self, server: &str, multi_instance: bool, profile: Profile) {
        let tx = self
            .pusher
            .get_or_insert_with(|| spawn_pusher(Arc::clone(&self.push)));
        let job = Push {
            server: server.to_string(),
            multi_instance,
            profile,
        };
        match tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped_pushes += 1
            }
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> OutStats {
        let d = self
            .dir
            .as_ref()
            .map(|(_, d)| d.stats())
            .unwrap_or_default();
        OutStats {
            profiles_written: self.profiles_written,
            files_written: d.files_written,
            bytes_written: d.bytes_written,
            files_removed: d.files_removed,
            write_errors: self.write_errors,
            pyroscope_pushes: self.push.ok.load(Ordering::Relaxed),
            pyroscope_errors: self.push.failed.load(Ordering::Relaxed) + self.dropped_pushes,
        }
    }
}

fn spawn_pusher(counters: Arc<PushCounters>) -> SyncSender<Push> {
    let (tx, rx) = mpsc::sync_channel::<Push>(PUSH_QUEUE);
    let spawned = std::thread::Builder::new()
        .name("pyroscope".into())
        .spawn(move || {
            let mut last_error: Option<String> = None;
            let mut pusher: Option<(String, bool, Pusher)> = None;
            for job in rx {
                let same = pusher
                    .as_ref()
                    .is_some_and(|(s, m, _)| *s == job.server && *m == job.multi_instance);
                if !same {
                    pusher = Pusher::new(PushConfig::new(&job.server, job.multi_instance))
                        .map(|p| (job.server.clone(), job.multi_instance, p))
                        .map_err(|e| {
                            counters.failed.fetch_add(1, Ordering::Relaxed);
                            let msg = format!("pyroscope_server {}: {e}", job.server);
                            if last_error.as_deref() != Some(msg.as_str()) {
                                probe_sdk::warn!("{msg}");
                                last_error = Some(msg);
                            }
                        })
                        .ok();
                }
                let Some((_, _, p)) = pusher.as_mut() else {
                    continue;
                };
                match p.push(&job.profile) {
                    Ok(_) => {
                        counters.ok.fetch_add(1, Ordering::Relaxed);
                        last_error = None;
                    }
                    Err(e) => {
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        let msg = format!("pyroscope_server {}: {e}", job.server);
                        if last_error.as_deref() != Some(msg.as_str()) {
                            probe_sdk::warn!("{msg}");
                            last_error = Some(msg);
                        }
                    }
                }
            }
        });
    if let Err(e) = spawned {
        probe_sdk::warn!("cannot start the Pyroscope thread: {e}");
    }
    tx
}
