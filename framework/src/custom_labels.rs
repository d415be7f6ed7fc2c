//! Per-probe custom labels: extra `name="value"` pairs the daemon adds to every series a probe
//! produces (`/metrics`, Kafka and log-file JSON, OTLP attributes), changeable at run time.
//!
//! [`CustomLabels`] is the one shared registry (written by the REST API, read by every probe's
//! ingest reader). Readers poll [`CustomLabels::generation`] once per read chunk and fetch the
//! probe's set only when it moved, so the no-change path costs one atomic load per chunk.
//!
//! A changed set reaches a row of the table store on that row's next update (the row is then
//! re-rendered in place: the key tuple does not include custom labels, so no second series
//! appears). Rows that are not updated keep the labels they were rendered with until they expire
//! by `imdb.record_timeout`, like any other row. Push records carry the set in force when they
//! were read.
//!
//! A custom label whose name is also a field of a table is left out for that table (the
//! table's own field wins); each such (probe, table, label) is logged once by ingest and counted
//! here, exported as `gala_gopher_self_custom_label_conflicts_total`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::config::valid_probe_name;

/// Labels of single processes of a probe (`proc_name` snoopers' `label`), by pid: added to the
/// probe's rows whose `tgid` (or `pid`) field is that pid.
pub type ProcessLabels = Arc<std::collections::HashMap<u32, (String, String)>>;

/// Most labeled processes per probe (the resolver's pid cap).
pub const MAX_PROCESS_LABELS: usize = 1000;

/// A probe's custom labels, sorted by name: shared by the registry, the ingest readers, the
/// store rows and the push records (one allocation per change, never per record).
pub type LabelSet = Arc<[(String, String)]>;

/// Most custom labels per probe.
pub const MAX_LABELS: usize = 10;
/// Longest label name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Longest label value, in bytes.
pub const MAX_VALUE_BYTES: usize = 256;
/// Most probes with custom labels (or conflict counts) at once.
pub const MAX_PROBES: usize = 1024;
/// Distinct (table, label) conflicts remembered per probe for the log-once rule; beyond it,
/// every new detection is counted (and logged) again.
const MAX_CONFLICTS_REMEMBERED: usize = 256;

/// Names no custom label may take: `machine_id` and the container and pod labels are added by
/// the daemon; `le` and `quantile` are the exposition's own histogram/summary labels;
/// `timestamp` and `entity_name` are keys of the upstream flat JSON object that carries the
/// labels on Kafka and in log files.
pub const RESERVED_NAMES: [&str; 11] = [
    "machine_id",
    "le",
    "quantile",
    "timestamp",
    "entity_name",
    "container_id",
    "container_name",
    "container_image",
    "pod_id",
    "pod",
    "pod_namespace",
];

/// Most pod label names a probe copies onto its series (REST `snoopers.pod_labels`).
pub const MAX_POD_LABELS: usize = 10;

/// Why a set of custom labels was refused (nothing is changed then).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// The probe name does not follow the probe-name rule.
    #[error("invalid probe name {0:?}")]
    InvalidProbe(String),
    /// More than [`MAX_LABELS`] labels.
    #[error("{count} custom labels, at most {MAX_LABELS} are allowed")]
    TooMany {
        /// Labels given.
        count: usize,
    },
    /// A name is not `[a-zA-Z_][a-zA-Z0-9_]*` of at most [`MAX_NAME_BYTES`] bytes.
    #[error(
        "invalid label name {0:?}: expected [a-zA-Z_][a-zA-Z0-9_]* of at most {MAX_NAME_BYTES} bytes"
    )]
    InvalidName(String),
    /// A name starting with `__` or one of [`RESERVED_NAMES`].
    #[error("label name {0:?} is reserved")]
    ReservedName(String),
    /// The same name twice.
    #[error("label name {0:?} given twice")]
    DuplicateName(String),
    /// A value longer than [`MAX_VALUE_BYTES`].
    #[error("value of label {name:?} is {len} bytes, at most {MAX_VALUE_BYTES} are allowed")]
    ValueTooLong {
        /// Label name.
        name: String,
        /// Value length in bytes.
        len: usize,
    },
    /// An empty value (Prometheus would drop the label, the JSON exports would not).
    #[error("value of label {0:?} is empty (leave the label out instead)")]
    EmptyValue(String),
    /// A value with a control character.
    #[error("value of label {0:?} contains a control character")]
    ControlCharacter(String),
    /// [`MAX_PROBES`] probes already have custom labels.
    #[error("custom labels are already set for {MAX_PROBES} probes")]
    TooManyProbes,
}

/// Check one label name.
pub(crate) fn check_name(name: &str) -> Result<(), LabelError> {
    let mut bytes = name.bytes();
    let well_formed = name.len() <= MAX_NAME_BYTES
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !well_formed {
        return Err(LabelError::InvalidName(name.to_string()));
    }
    if name.starts_with("__") || RESERVED_NAMES.contains(&name) {
        return Err(LabelError::ReservedName(name.to_string()));
    }
    Ok(())
}

/// Check one label value.
fn check_value(name: &str, value: &str) -> Result<(), LabelError> {
    if value.is_empty() {
        return Err(LabelError::EmptyValue(name.to_string()));
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(LabelError::ValueTooLong {
            name: name.to_string(),
            len: value.len(),
        });
    }
    if value.chars().any(char::is_control) {
        return Err(LabelError::ControlCharacter(name.to_string()));
    }
    Ok(())
}

/// Validate `labels` and sort them by name.
pub fn validate(mut labels: Vec<(String, String)>) -> Result<Vec<(String, String)>, LabelError> {
    if labels.len() > MAX_LABELS {
        return Err(LabelError::TooMany {
            count: labels.len(),
        });
    }
    for (name, value) in &labels {
        check_name(name)?;
        check_value(name, value)?;
    }
    labels.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(w) = labels.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(LabelError::DuplicateName(w[0].0.clone()));
    }
    Ok(labels)
}

#[derive(Debug)]
struct ProbeEntry {
    labels: LabelSet,
    /// Conflicts counted for the probe (never reset while the daemon runs).
    conflicts: u64,
    /// (table, label) conflicts already counted.
    seen: BTreeSet<(String, String)>,
}

/// The registry of every probe's custom labels (shared: `Arc<CustomLabels>`).
#[derive(Debug)]
pub struct CustomLabels {
    /// Bumped after every change; readers compare it before looking anything up.
    generation: AtomicU64,
    probes: RwLock<BTreeMap<String, ProbeEntry>>,
    /// Per-process labels, by probe.
    processes: RwLock<BTreeMap<String, ProcessLabels>>,
    /// Pod label names copied onto each probe's series (REST `snoopers.pod_labels`).
    pod_labels: RwLock<BTreeMap<String, Arc<[String]>>>,
    empty: LabelSet,
    no_pod_labels: Arc<[String]>,
}

impl Default for CustomLabels {
    fn default() -> Self {
        CustomLabels {
            generation: AtomicU64::new(0),
            probes: RwLock::new(BTreeMap::new()),
            processes: RwLock::new(BTreeMap::new()),
            pod_labels: RwLock::new(BTreeMap::new()),
            empty: Arc::from(Vec::new()),
            no_pod_labels: Arc::from(Vec::new()),
        }
    }
}

impl CustomLabels {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, ProbeEntry>> {
        self.probes.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, ProbeEntry>> {
        self.probes.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Replace `probe`'s custom labels (validated, see [`LabelError`]); an empty vec clears them.
    /// Readers pick the new set up at their next read chunk; setting the same set again changes
    /// nothing.
    pub fn set(&self, probe: &str, labels: Vec<(String, String)>) -> Result<(), LabelError> {
        if !valid_probe_name(probe) {
            return Err(LabelError::InvalidProbe(probe.to_string()));
        }
        let labels = validate(labels)?;
        let mut probes = self.write();
        match probes.get_mut(probe) {
            Some(e) if *e.labels == *labels => return Ok(()),
            Some(e) => {
                e.labels = if labels.is_empty() {
                    Arc::clone(&self.empty)
                } else {
                    Arc::from(labels)
                };
                if e.labels.is_empty() && e.conflicts == 0 {
                    probes.remove(probe);
                }
            }
            None if labels.is_empty() => return Ok(()),
            None => {
                if probes.len() >= MAX_PROBES {
                    return Err(LabelError::TooManyProbes);
                }
                probes.insert(
                    probe.to_string(),
                    ProbeEntry {
                        labels: Arc::from(labels),
                        conflicts: 0,
                        seen: BTreeSet::new(),
                    },
                );
            }
        }
        // Still under the lock: a reader that sees the new generation sees the new set.
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// `probe`'s custom labels (empty if none), sorted by name.
    pub fn get(&self, probe: &str) -> LabelSet {
        self.read()
            .get(probe)
            .map_or_else(|| Arc::clone(&self.empty), |e| Arc::clone(&e.labels))
    }

    /// Replace `probe`'s per-process labels (the snooper resolver's `proc_name` labels of the
    /// processes it matched); labels that fail the rules of [`validate`] are left out, and at
    /// most [`MAX_PROCESS_LABELS`] processes are kept. An empty map clears them.
    pub fn set_process_labels(
        &self,
        probe: &str,
        labels: impl IntoIterator<Item = (u32, (String, String))>,
    ) {
        let map: std::collections::HashMap<u32, (String, String)> = labels
            .into_iter()
            .filter(|(_, (k, v))| check_name(k).is_ok() && check_value(k, v).is_ok())
            .take(MAX_PROCESS_LABELS)
            .collect();
        let empty = map.is_empty();
        // Beyond MAX_PROBES the map is not kept (the resolver's pids stay unlabeled).
        let _ = self.replace(&self.processes, probe, Arc::new(map), empty);
    }

    /// Replace `probe`'s entry of `all` by `new` (remove it when `empty`) unless it is equal;
    /// bump the generation on a change. `Err` when `MAX_PROBES` probes already have an entry.
    fn replace<V: PartialEq>(
        &self,
        all: &RwLock<BTreeMap<String, V>>,
        probe: &str,
        new: V,
        empty: bool,
    ) -> Result<(), LabelError> {
        let mut all = all.write().unwrap_or_else(|p| p.into_inner());
        let unchanged = match all.get(probe) {
            Some(old) => *old == new,
            None => empty,
        };
        if unchanged {
            return Ok(());
        }
        if empty {
            all.remove(probe);
        } else if all.len() < MAX_PROBES || all.contains_key(probe) {
            all.insert(probe.to_string(), new);
        } else {
            return Err(LabelError::TooManyProbes);
        }
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Replace the pod label names copied onto `probe`'s series (REST `snoopers.pod_labels`:
    /// a `key` or `key=value` entry copies the pod label `key`); an empty vec clears them.
    pub fn set_pod_labels(&self, probe: &str, names: Vec<String>) -> Result<(), LabelError> {
        if !valid_probe_name(probe) {
            return Err(LabelError::InvalidProbe(probe.to_string()));
        }
        if names.len() > MAX_POD_LABELS {
            return Err(LabelError::TooMany { count: names.len() });
        }
        let mut names: Vec<String> = names
            .into_iter()
            .map(|n| n.split_once('=').map_or(n.clone(), |(k, _)| k.to_string()))
            .collect();
        names.sort();
        names.dedup();
        let empty = names.is_empty();
        self.replace(&self.pod_labels, probe, Arc::from(names), empty)
    }

    /// The pod label names copied onto `probe`'s series (empty if none).
    pub fn pod_labels(&self, probe: &str) -> Arc<[String]> {
        self.pod_labels
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(probe)
            .map_or_else(|| Arc::clone(&self.no_pod_labels), Arc::clone)
    }

    /// `probe`'s per-process labels, if any.
    pub fn process_labels(&self, probe: &str) -> Option<ProcessLabels> {
        self.processes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(probe)
            .cloned()
    }

    /// Changes so far: when it is unchanged since a [`CustomLabels::get`], so is every set. Read
    /// it before `get`.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Every probe with custom labels and its set, sorted by probe name.
    pub fn all(&self) -> Vec<(String, LabelSet)> {
        self.read()
            .iter()
            .filter(|(_, e)| !e.labels.is_empty())
            .map(|(p, e)| (p.clone(), Arc::clone(&e.labels)))
            .collect()
    }

    /// Note that `label` of `probe` was left out of `table` because the table has a field of
    /// that name. Returns true the first time for this (probe, table, label): the caller logs
    /// it then.
    pub fn note_conflict(&self, probe: &str, table: &str, label: &str) -> bool {
        let mut probes = self.write();
        let Some(e) = probes.get_mut(probe) else {
            // Cleared meanwhile: the reader drops the set at its next chunk.
            return false;
        };
        let seen_before = e.seen.len() < MAX_CONFLICTS_REMEMBERED
            && !e.seen.insert((table.to_string(), label.to_string()));
        if seen_before {
            return false;
        }
        e.conflicts += 1;
        true
    }

    /// Conflicts counted for `probe` (see [`CustomLabels::note_conflict`]).
    pub fn conflicts(&self, probe: &str) -> u64 {
        self.read().get(probe).map_or(0, |e| e.conflicts)
    }

    /// Append `gala_gopher_self_custom_label_conflicts_total` (one sample per probe with custom
    /// labels or conflicts; nothing when there is none); `machine_id` is already label-escaped.
    pub fn render(&self, machine_id: &str, out: &mut String) {
        let probes = self.read();
        if probes.is_empty() {
            return;
        }
        let name = "gala_gopher_self_custom_label_conflicts_total";
        let _ = writeln!(
            out,
            "# HELP {name} Custom labels left out of a table that has a field of the same name, once per probe, table and label.\n# TYPE {name} counter"
        );
        for (probe, e) in probes.iter() {
            // Probe names are letters, digits, '_', '-' and '.': nothing to escape.
            let _ = writeln!(
                out,
                "{name}{{probe=\"{probe}\",machine_id=\"{machine_id}\"}} {}",
                e.conflicts
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_labels_are_kept_per_probe_and_bump_the_generation() {
        let r = CustomLabels::new();
        let g0 = r.generation();
        r.set_process_labels(
            "p",
            [
                (7, ("app".to_string(), "shop".to_string())),
                (8, ("machine_id".to_string(), "x".to_string())),
            ],
        );
        assert!(r.generation() > g0);
        let m = r.process_labels("p").unwrap();
        assert_eq!(m.len(), 1, "a reserved name is left out");
        assert_eq!(m[&7].1, "shop");
        let g1 = r.generation();
        r.set_process_labels("p", [(7, ("app".to_string(), "shop".to_string()))]);
        assert_eq!(r.generation(), g1, "the same map again changes nothing");
        r.set_process_labels("p", []);
        assert!(r.process_labels("p").is_none());
        assert!(r.generation() > g1);
    }

    fn l(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn accepts_well_formed_sets_and_sorts_them() {
        let v = validate(l(&[("zone", "b"), ("_env", "prod"), ("Rack9", "r 1/ü")])).unwrap();
        assert_eq!(v, l(&[("Rack9", "r 1/ü"), ("_env", "prod"), ("zone", "b")]));
        let name = "a".repeat(MAX_NAME_BYTES);
        let value = "v".repeat(MAX_VALUE_BYTES);
        assert!(validate(l(&[(&name, &value)])).is_ok());
        let ten: Vec<_> = (0..MAX_LABELS)
            .map(|i| (format!("l{i}"), "x".into()))
            .collect();
        assert!(validate(ten).is_ok());
        assert_eq!(validate(Vec::new()), Ok(Vec::new()));
    }

    #[test]
    fn refuses_bad_names() {
        for bad in ["", "1a", "a-b", "a.b", "a b", "é", "a\u{0}"] {
            assert_eq!(
                validate(l(&[(bad, "x")])),
                Err(LabelError::InvalidName(bad.into())),
                "{bad:?}"
            );
        }
        let long = "a".repeat(MAX_NAME_BYTES + 1);
        assert_eq!(
            validate(l(&[(&long, "x")])),
            Err(LabelError::InvalidName(long.clone()))
        );
        for reserved in [
            "machine_id",
            "__name__",
            "__x",
            "le",
            "quantile",
            "timestamp",
        ] {
            assert_eq!(
                validate(l(&[(reserved, "x")])),
                Err(LabelError::ReservedName(reserved.into())),
                "{reserved}"
            );
        }
        assert_eq!(
            validate(l(&[("a", "1"), ("b", "2"), ("a", "3")])),
            Err(LabelError::DuplicateName("a".into()))
        );
    }

    #[test]
    fn refuses_bad_values_and_too_many() {
        let long = "v".repeat(MAX_VALUE_BYTES + 1);
        assert_eq!(
            validate(l(&[("a", &long)])),
            Err(LabelError::ValueTooLong {
                name: "a".into(),
                len: MAX_VALUE_BYTES + 1
            })
        );
        for bad in ["a\nb", "\t", "x\u{7f}", "x\u{85}", "\r"] {
            assert_eq!(
                validate(l(&[("a", bad)])),
                Err(LabelError::ControlCharacter("a".into())),
                "{bad:?}"
            );
        }
        assert_eq!(
            validate(l(&[("a", "")])),
            Err(LabelError::EmptyValue("a".into()))
        );
        let eleven: Vec<_> = (0..=MAX_LABELS)
            .map(|i| (format!("l{i}"), "x".into()))
            .collect();
        assert_eq!(
            validate(eleven),
            Err(LabelError::TooMany {
                count: MAX_LABELS + 1
            })
        );
    }

    #[test]
    fn set_get_clear_and_generation() {
        let r = CustomLabels::new();
        let g0 = r.generation();
        assert!(r.get("p").is_empty());
        r.set("p", l(&[("env", "prod")])).unwrap();
        let g1 = r.generation();
        assert_ne!(g0, g1);
        let first = r.get("p");
        assert_eq!(&*first, &l(&[("env", "prod")])[..]);
        assert!(r.get("q").is_empty());
        // The same set again is no change.
        r.set("p", l(&[("env", "prod")])).unwrap();
        assert_eq!(r.generation(), g1);
        assert!(Arc::ptr_eq(&first, &r.get("p")));
        // A refused set changes nothing.
        assert!(r.set("p", l(&[("machine_id", "x")])).is_err());
        assert_eq!(r.generation(), g1);
        assert_eq!(r.all(), vec![("p".to_string(), first)]);
        r.set("p", Vec::new()).unwrap();
        assert_ne!(r.generation(), g1);
        assert!(r.get("p").is_empty());
        assert!(r.all().is_empty());
        assert_eq!(
            r.set("bad/name", Vec::new()),
            Err(LabelError::InvalidProbe("bad/name".into()))
        );
    }

    #[test]
    fn probes_are_bounded() {
        let r = CustomLabels::new();
        for i in 0..MAX_PROBES {
            r.set(&format!("p{i}"), l(&[("a", "1")])).unwrap();
        }
        assert_eq!(
            r.set("one_more", l(&[("a", "1")])),
            Err(LabelError::TooManyProbes)
        );
        // Clearing and changing existing ones still works.
        r.set("p0", l(&[("a", "2")])).unwrap();
        r.set("p1", Vec::new()).unwrap();
        r.set("one_more", l(&[("a", "1")])).unwrap();
    }

    #[test]
    fn conflicts_are_counted_once_and_rendered() {
        let r = CustomLabels::new();
        let mut out = String::new();
        r.render("M", &mut out);
        assert_eq!(out, "");
        r.set("p", l(&[("comm", "x")])).unwrap();
        assert!(r.note_conflict("p", "t", "comm"));
        assert!(!r.note_conflict("p", "t", "comm"));
        assert!(r.note_conflict("p", "u", "comm"));
        assert_eq!(r.conflicts("p"), 2);
        // Cleared labels keep the counter (counters never go back).
        r.set("p", Vec::new()).unwrap();
        r.render("M", &mut out);
        assert!(out.ends_with(
            "gala_gopher_self_custom_label_conflicts_total{probe=\"p\",machine_id=\"M\"} 2\n"
        ));
        assert!(out.contains("# TYPE gala_gopher_self_custom_label_conflicts_total counter\n"));
    }
}
