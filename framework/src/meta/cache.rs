//! `.meta` loads remembered by file identity, so a probe's restarts and retries cost one `stat` per
//! file while the file is unchanged, and a refused file is counted and logged once per change.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::loader::{load_file_stamped, FileStamp, MetaLimits, META_REFUSAL_REASONS};
use super::{SchemaRef, SchemaRegistry};

/// Counts of `.meta` loads, exported as `gala_gopher_self_meta_*`.
#[derive(Debug, Default)]
pub struct MetaCounters {
    refused: [AtomicU64; META_REFUSAL_REASONS.len()],
    loaded: AtomicU64,
    cached: AtomicU64,
}

impl MetaCounters {
    fn refuse(&self, reason: &str) {
        if let Some(i) = META_REFUSAL_REASONS.iter().position(|r| *r == reason) {
            self.refused[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `.meta` refusals counted for `reason` (one of [`META_REFUSAL_REASONS`]).
    pub fn refused(&self, reason: &str) -> u64 {
        META_REFUSAL_REASONS
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.refused[i].load(Ordering::Relaxed))
    }

    /// Files read and parsed.
    pub fn loaded(&self) -> u64 {
        self.loaded.load(Ordering::Relaxed)
    }

    /// Loads answered from the cache (file unchanged).
    pub fn cached(&self) -> u64 {
        self.cached.load(Ordering::Relaxed)
    }

    /// Append the Prometheus text of these counters; `machine_id` is already label-escaped.
    pub fn render(&self, machine_id: &str, out: &mut String) {
        let name = "gala_gopher_self_meta_refused_total";
        let _ = writeln!(
            out,
            "# HELP {name} .meta files refused (limits, syntax, invalid content), once per file change.\n# TYPE {name} counter"
        );
        for (reason, n) in META_REFUSAL_REASONS.iter().zip(&self.refused) {
            let n = n.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}{{reason=\"{reason}\",machine_id=\"{machine_id}\"}} {n}"
            );
        }
        let name = "gala_gopher_self_meta_loads_total";
        let _ = writeln!(
            out,
            "# HELP {name} .meta loads at probe start: read from the file, or answered from the cache because the file is unchanged.\n# TYPE {name} counter"
        );
        for (outcome, n) in [("loaded", &self.loaded), ("cached", &self.cached)] {
            let n = n.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}{{outcome=\"{outcome}\",machine_id=\"{machine_id}\"}} {n}"
            );
        }
    }
}

/// What loading one file gave, for the content identified by `stamp`.
struct Entry {
    /// `None`: the file could not even be stat-ed (a missing file stays refused, silently, until
    /// it appears).
    stamp: Option<FileStamp>,
    outcome: Result<Arc<[SchemaRef]>, String>,
    /// Last refusal by the registry (a table owned by another file), logged once.
    install_error: Option<String>,
}

/// Loads `.meta` files within [`MetaLimits`] and remembers each result by file identity
/// (device, inode, size, mtime, ctime).
pub struct MetaCache {
    limits: MetaLimits,
    counters: Arc<MetaCounters>,
    entries: Mutex<HashMap<PathBuf, Entry>>,
}

impl MetaCache {
    /// An empty cache loading within `limits`, counting into `counters`.
    pub fn new(limits: MetaLimits, counters: Arc<MetaCounters>) -> Self {
        MetaCache {
            limits,
            counters,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The limits files are loaded within.
    pub fn limits(&self) -> MetaLimits {
        self.limits
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The tables of `path`: remembered if the file is unchanged, else read and parsed (which
    /// can take a while: call this off the async workers). A refusal is counted and logged only
    /// when it is new, i.e. once per file change.
    pub fn tables(&self, path: &Path) -> Result<Arc<[SchemaRef]>, String> {
        let before = FileStamp::current(path).ok();
        if let Some(e) = self.entries().get(path).filter(|e| e.stamp == before) {
            self.counters.cached.fetch_add(1, Ordering::Relaxed);
            return e.outcome.clone();
        }
        self.counters.loaded.fetch_add(1, Ordering::Relaxed);
        // No lock is held here: parsing a large file must not block other probes' starts.
        let (outcome, stamp) = match load_file_stamped(path, &self.limits) {
            Ok((tables, stamp)) => {
                let tables: Arc<[SchemaRef]> = tables.into_iter().map(Arc::new).collect();
                (Ok(tables), Some(stamp))
            }
            Err(e) => {
                self.counters.refuse(e.reason());
                tracing::warn!(
                    reason = e.reason(),
                    "{e}: .meta refused (read again only when the file changes)"
                );
                (Err(e.to_string()), before)
            }
        };
        self.entries().insert(
            path.to_path_buf(),
            Entry {
                stamp,
                outcome: outcome.clone(),
                install_error: None,
            },
        );
        outcome
    }

    /// Load `paths` (outside the registry lock) and install their tables into `registry`,
    /// holding the write lock only for the swap. Stops at the first failure.
    pub fn prepare(
        &self,
        registry: &RwLock<SchemaRegistry>,
        paths: &[PathBuf],
    ) -> Result<(), String> {
        let mut loaded = Vec::with_capacity(paths.len());
        for path in paths {
            loaded.push((path, self.tables(path)?));
        }
        let mut failure = None;
        {
            let mut reg = registry.write().unwrap_or_else(|p| p.into_inner());
            for (path, tables) in &loaded {
                if let Err(e) = reg.install(path, tables) {
                    failure = Some((*path, e));
                    break;
                }
            }
        }
        let Some((path, e)) = failure else {
            let mut entries = self.entries();
            for (path, _) in &loaded {
                if let Some(entry) = entries.get_mut(path.as_path()) {
                    entry.install_error = None;
                }
            }
            return Ok(());
        };
        let msg = e.to_string();
        let new = match self.entries().get_mut(path.as_path()) {
            Some(entry) if entry.install_error.as_ref() == Some(&msg) => false,
            Some(entry) => {
                entry.install_error = Some(msg.clone());
                true
            }
            None => true,
        };
        if new {
            self.counters.refuse(e.reason());
            tracing::warn!(reason = e.reason(), "{msg}: .meta refused");
        }
        Err(msg)
    }

    /// Forget `path` (its probe is gone).
    pub fn forget(&self, path: &Path) {
        self.entries().remove(path);
    }
}
