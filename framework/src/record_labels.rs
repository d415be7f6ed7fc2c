//! The extra labels of a probe's records, added by the ingest path after the table's own fields:
//! container and pod labels (for tables with a `tgid`/`pid` or `container_id` field), then the
//! probe's custom labels and a process's `proc_name` snooper label, sorted by name.
//!
//! [`RecordLabels`] is one probe reader's view. It checks the sources' generations once per read
//! chunk and keeps, per (table, subject), the set it last computed: the same `Arc` is handed out
//! while the labels stay equal, so the store re-renders a row's label string only when its labels
//! really change (the store compares sets by pointer), never per scrape and not on every change
//! elsewhere. A subject is a process (the `tgid`, else `pid` field) or a container (the
//! `container_id` field, for tables without a process field).
//!
//! Precedence when names clash: a table's own field wins over everything, container labels win
//! over custom and process labels (custom labels cannot be named like them: see
//! [`crate::custom_labels::RESERVED_NAMES`]).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use crate::custom_labels::{CustomLabels, LabelSet, ProcessLabels};
use crate::meta::{SchemaRef, TableSchema};

/// Where container and pod labels come from (the daemon's
/// [`crate::container_labels::ContainerLabeler`]; tests use fakes). Lookups must be cheap and
/// never wait on a container runtime.
pub trait ContainerSource: Send + Sync {
    /// Bumped whenever a lookup below may answer differently.
    fn generation(&self) -> u64;
    /// The labels of process `pid` (empty for a host process), with the pod labels named in
    /// `pod_labels`, in output order.
    fn of_pid(&self, pid: u32, pod_labels: &[String]) -> Vec<(String, String)>;
    /// The labels of container `id` (the 12-character short id or the full id), without
    /// `container_id` itself (the table has it), in output order.
    fn of_container(&self, id: &str, pod_labels: &[String]) -> Vec<(String, String)>;
    /// The labels of the pod with uid `uid` (`pod`, `pod_namespace` and the requested
    /// `pod_labels`), without `pod_id` itself (the table has it); empty when unknown.
    fn of_pod(&self, uid: &str, pod_labels: &[String]) -> Vec<(String, String)> {
        let _ = (uid, pod_labels);
        Vec::new()
    }
}

/// Where a process's identity labels come from ([`crate::process_identity::ProcFs`]; tests use
/// fakes): `comm`, and with `full` also `cmdline` and `start_time`, in this order; empty for a
/// process that is gone.
pub trait ProcessSource: Send + Sync {
    /// The identity labels of process `pid`.
    fn of_process(&self, pid: u32, full: bool) -> Vec<(String, String)>;
}

/// Which identity labels a table's rows get: none, `comm` (tables with a `tgid` field), or also
/// `cmdline` and `start_time` (entity `proc`), as upstream HEAD adds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Identity {
    None,
    Comm,
    Full,
}

/// Label (name, value) pairs in output order.
type Labels = Vec<(String, String)>;

/// Tables whose label set a reader remembers before it starts over.
const MAX_TABLES: usize = 1024;
/// (table, subject) sets a reader remembers before it starts over.
const MAX_SUBJECTS: usize = 65_536;
/// A process's container labels are looked up again after this long (pid reuse, a process
/// joining a container with `exec`).
const PID_RECHECK_MS: u64 = 10_000;

/// Which field of a table names the subject of its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubjectField {
    None,
    Pid(usize),
    Container(usize),
    Pod(usize),
}

/// Per table: the subject field and the probe's custom labels as they apply to the table.
struct TableEntry {
    /// Held so the schema's address (the key) is not reused while remembered.
    _schema: SchemaRef,
    subject: SubjectField,
    identity: Identity,
    /// Custom labels without the names of the table's own fields.
    base: Option<LabelSet>,
}

/// Per (table, subject): the set last computed and what it was computed from.
struct SubjectEntry {
    /// The container id the key's hash came from (`None` for a process).
    id: Option<Box<str>>,
    stamp: (u64, u64),
    checked_ms: u64,
    set: Option<LabelSet>,
}

/// One probe reader's view of its records' extra labels.
pub struct RecordLabels {
    probe: String,
    custom: Option<Arc<CustomLabels>>,
    containers: Option<Arc<dyn ContainerSource>>,
    identities: Option<Arc<dyn ProcessSource>>,
    /// Per (pid, full): the identity labels and when they were read.
    identity_cache: HashMap<(u32, bool), (u64, Labels), foldhash::fast::RandomState>,
    custom_gen: u64,
    containers_gen: u64,
    labels: LabelSet,
    processes: Option<ProcessLabels>,
    pod_labels: Arc<[String]>,
    tables: HashMap<usize, TableEntry, foldhash::fast::RandomState>,
    subjects: HashMap<(usize, u64), SubjectEntry, foldhash::fast::RandomState>,
    hasher: foldhash::fast::RandomState,
}

impl RecordLabels {
    /// A view for `probe`; `None` when there is nothing that could add a label.
    pub fn new(
        probe: &str,
        custom: Option<Arc<CustomLabels>>,
        containers: Option<Arc<dyn ContainerSource>>,
        identities: Option<Arc<dyn ProcessSource>>,
    ) -> Option<Self> {
        if custom.is_none() && containers.is_none() && identities.is_none() {
            return None;
        }
        let mut me = RecordLabels {
            probe: probe.to_string(),
            custom,
            containers,
            identities,
            identity_cache: HashMap::default(),
            custom_gen: u64::MAX,
            containers_gen: 0,
            labels: Arc::from(Vec::new()),
            processes: None,
            pod_labels: Arc::from(Vec::new()),
            tables: HashMap::default(),
            subjects: HashMap::default(),
            hasher: foldhash::fast::RandomState::default(),
        };
        me.refresh();
        Some(me)
    }

    /// Pick up changed sources (two atomic loads when nothing changed). Called once per chunk.
    pub fn refresh(&mut self) {
        if let Some(c) = &self.containers {
            self.containers_gen = c.generation();
        }
        let Some(registry) = &self.custom else {
            return;
        };
        let generation = registry.generation();
        if generation == self.custom_gen {
            return;
        }
        self.custom_gen = generation;
        let labels = registry.get(&self.probe);
        if !Arc::ptr_eq(&labels, &self.labels) {
            self.labels = labels;
            // The per-table bases change; subjects are recomputed through their stamp.
            self.tables.clear();
        }
        self.processes = registry.process_labels(&self.probe);
        self.pod_labels = registry.pod_labels(&self.probe);
    }

    /// The extra labels of a record of `schema` with `values`, read at `now_ms`.
    pub fn for_record(
        &mut self,
        schema: &SchemaRef,
        values: &[&str],
        now_ms: u64,
    ) -> Option<LabelSet> {
        let key = Arc::as_ptr(schema) as usize;
        if !self.tables.contains_key(&key) {
            if self.tables.len() >= MAX_TABLES {
                self.tables.clear();
                self.subjects.clear();
            }
            let entry = TableEntry {
                _schema: Arc::clone(schema),
                subject: subject_field(schema),
                identity: identity_of(schema),
                base: self.base_for(schema),
            };
            self.tables.insert(key, entry);
        }
        let (subject, identity, base) = match self.tables.get(&key) {
            Some(t) => (t.subject, t.identity, t.base.clone()),
            None => return None,
        };
        match subject {
            SubjectField::None => base,
            SubjectField::Pid(i) => {
                let pid = values.get(i).and_then(|v| v.parse::<u32>().ok());
                match pid {
                    Some(pid) if pid > 0 => self.for_pid(schema, key, pid, identity, base, now_ms),
                    _ => base,
                }
            }
            SubjectField::Container(i) => match values.get(i) {
                Some(id) if valid_container_id(id) && self.containers.is_some() => {
                    self.for_container(schema, key, id, base, false)
                }
                _ => base,
            },
            SubjectField::Pod(i) => match values.get(i) {
                Some(uid) if valid_pod_uid(uid) && self.containers.is_some() => {
                    self.for_container(schema, key, uid, base, true)
                }
                _ => base,
            },
        }
    }

    fn for_pid(
        &mut self,
        schema: &TableSchema,
        table: usize,
        pid: u32,
        identity: Identity,
        base: Option<LabelSet>,
        now_ms: u64,
    ) -> Option<LabelSet> {
        let label = self.processes.as_ref().and_then(|p| p.get(&pid)).cloned();
        let identity = if self.identities.is_some() {
            identity
        } else {
            Identity::None
        };
        if self.containers.is_none() && label.is_none() && identity == Identity::None {
            return base;
        }
        let stamp = (self.custom_gen, self.containers_gen);
        let k = (table, u64::from(pid));
        if let Some(e) = self.subjects.get(&k) {
            if e.stamp == stamp && now_ms.saturating_sub(e.checked_ms) < PID_RECHECK_MS {
                return e.set.clone();
            }
        }
        let mut labels = self.identity(pid, identity, now_ms);
        labels.extend(
            self.containers
                .as_ref()
                .map(|c| c.of_pid(pid, &self.pod_labels))
                .unwrap_or_default(),
        );
        let set = combine(schema, labels, base, label);
        self.remember(k, None, stamp, now_ms, set)
    }

    /// The identity labels of `pid` (read at most once per [`PID_RECHECK_MS`] for all tables).
    fn identity(&mut self, pid: u32, identity: Identity, now_ms: u64) -> Vec<(String, String)> {
        let full = match identity {
            Identity::None => return Vec::new(),
            Identity::Comm => false,
            Identity::Full => true,
        };
        let Some(src) = &self.identities else {
            return Vec::new();
        };
        let cached = self.identity_cache.get(&(pid, full));
        if let Some((at, v)) = cached {
            if now_ms.saturating_sub(*at) < PID_RECHECK_MS {
                return v.clone();
            }
        }
        let mut v = src.of_process(pid, full);
        if v.is_empty() {
            // Gone since the last read (its last records still arrive): keep what it was, so
            // its series do not lose their identity labels (a reused pid reads as itself).
            if let Some((_, old)) = cached {
                v = old.clone();
            }
        }
        if self.identity_cache.len() >= MAX_SUBJECTS {
            self.identity_cache.clear();
        }
        self.identity_cache.insert((pid, full), (now_ms, v.clone()));
        v
    }

    /// The labels of a container (`pod` false) or pod (`pod` true) row, remembered per id.
    fn for_container(
        &mut self,
        schema: &TableSchema,
        table: usize,
        id: &str,
        base: Option<LabelSet>,
        pod: bool,
    ) -> Option<LabelSet> {
        let k = (table, self.hasher.hash_one(id));
        let stamp = (self.custom_gen, self.containers_gen);
        if let Some(e) = self.subjects.get(&k) {
            if e.stamp == stamp && e.id.as_deref() == Some(id) {
                return e.set.clone();
            }
        }
        let container = self
            .containers
            .as_ref()
            .map(|c| {
                if pod {
                    c.of_pod(id, &self.pod_labels)
                } else {
                    c.of_container(id, &self.pod_labels)
                }
            })
            .unwrap_or_default();
        let set = combine(schema, container, base, None);
        self.remember(k, Some(id.into()), stamp, 0, set)
    }

    /// Store a computed set, keeping the previous `Arc` when the labels are the same.
    fn remember(
        &mut self,
        k: (usize, u64),
        id: Option<Box<str>>,
        stamp: (u64, u64),
        checked_ms: u64,
        set: Option<Vec<(String, String)>>,
    ) -> Option<LabelSet> {
        if let Some(e) = self.subjects.get_mut(&k) {
            let same = e.id == id
                && match (&e.set, &set) {
                    (None, None) => true,
                    (Some(a), Some(b)) => **a == **b,
                    _ => false,
                };
            if same {
                e.stamp = stamp;
                e.checked_ms = checked_ms;
                return e.set.clone();
            }
        } else if self.subjects.len() >= MAX_SUBJECTS {
            self.subjects.clear();
        }
        let set: Option<LabelSet> = set.map(Arc::from);
        self.subjects.insert(
            k,
            SubjectEntry {
                id,
                stamp,
                checked_ms,
                set: set.clone(),
            },
        );
        set
    }

    /// The probe's custom labels as they apply to `schema`: names of the table's own fields are
    /// left out (logged and counted once per probe, table and label).
    fn base_for(&self, schema: &TableSchema) -> Option<LabelSet> {
        if self.labels.is_empty() {
            return None;
        }
        let is_field = |name: &str| schema.fields.iter().any(|f| f.name == name);
        if !self.labels.iter().any(|(n, _)| is_field(n)) {
            return Some(Arc::clone(&self.labels));
        }
        let mut kept = Vec::with_capacity(self.labels.len());
        for (name, value) in self.labels.iter() {
            if !is_field(name) {
                kept.push((name.clone(), value.clone()));
            } else if self
                .custom
                .as_ref()
                .is_some_and(|r| r.note_conflict(&self.probe, &schema.table_name, name))
            {
                tracing::warn!(probe = %self.probe, table = %schema.table_name, label = %name,
                    "custom label {name} left out of table {}: the table has a field of that name \
                     (counted in gala_gopher_self_custom_label_conflicts_total)", schema.table_name);
            }
        }
        (!kept.is_empty()).then(|| Arc::from(kept))
    }
}

/// The subject field of a table: `tgid`, else `pid`, else `container_id`, else `pod_id`.
fn subject_field(schema: &TableSchema) -> SubjectField {
    let find = |name: &str| schema.fields.iter().position(|f| f.name == name);
    if let Some(i) = find("tgid").or_else(|| find("pid")) {
        SubjectField::Pid(i)
    } else if let Some(i) = find("container_id") {
        SubjectField::Container(i)
    } else if let Some(i) = find("pod_id") {
        SubjectField::Pod(i)
    } else {
        SubjectField::None
    }
}

/// The identity labels a table's rows get: `comm` with a `tgid` field, plus `cmdline` and
/// `start_time` for the `proc` entity.
fn identity_of(schema: &TableSchema) -> Identity {
    if !schema
        .fields
        .iter()
        .any(|f| f.name == "tgid" && f.kind.is_label())
    {
        Identity::None
    } else if schema.entity_name == "proc" {
        Identity::Full
    } else {
        Identity::Comm
    }
}

/// The identity label names the rows of `schema` may carry (for its metadata), minus the
/// table's own fields: `comm` for tables with a `tgid` key or label, and `cmdline`,
/// `start_time` for the `proc` entity.
pub fn identity_label_names(schema: &TableSchema) -> Vec<&'static str> {
    use crate::process_identity::{CMDLINE, COMM, START_TIME};
    let names: &[&'static str] = match identity_of(schema) {
        Identity::None => &[],
        Identity::Comm => &[COMM],
        Identity::Full => &[COMM, CMDLINE, START_TIME],
    };
    names
        .iter()
        .copied()
        .filter(|n| !schema.fields.iter().any(|f| f.name == *n))
        .collect()
}

/// The container and pod label names the rows of `schema` may carry (for its metadata): all six
/// for a table with a process field, the five besides `container_id` for a container table,
/// none otherwise; names of the table's own fields left out.
pub fn container_label_names(schema: &TableSchema) -> Vec<&'static str> {
    let names: &[&'static str] = match subject_field(schema) {
        SubjectField::None => &[],
        SubjectField::Pid(_) => &container_info::info::LABEL_NAMES,
        SubjectField::Container(_) => &container_info::info::LABEL_NAMES[1..],
        SubjectField::Pod(_) => &container_info::info::LABEL_NAMES[4..],
    };
    names
        .iter()
        .copied()
        .filter(|n| !schema.fields.iter().any(|f| f.name == *n))
        .collect()
}

/// A pod uid: 1 to 64 characters of hex digits, `-` and `_` (systemd cgroup paths write the
/// uid's dashes as underscores).
fn valid_pod_uid(uid: &str) -> bool {
    (1..=64).contains(&uid.len())
        && uid
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_')
}

/// 1 to 64 hex digits (upstream's container id rule).
fn valid_container_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Identity and container labels (in their order, minus the table's own fields), then the custom labels and
/// the process label sorted by name (minus names already taken). `None` when empty.
fn combine(
    schema: &TableSchema,
    container: Vec<(String, String)>,
    base: Option<LabelSet>,
    label: Option<(String, String)>,
) -> Option<Vec<(String, String)>> {
    let is_field = |name: &str| schema.fields.iter().any(|f| f.name == name);
    let mut out: Vec<(String, String)> = container
        .into_iter()
        .filter(|(n, _)| !is_field(n))
        .collect();
    let first_custom = out.len();
    let taken = |out: &[(String, String)], n: &str| out.iter().any(|(m, _)| m == n);
    for (n, v) in base.iter().flat_map(|b| b.iter()) {
        if !taken(&out, n) {
            out.push((n.clone(), v.clone()));
        }
    }
    if let Some((n, v)) = label {
        if !is_field(&n) && !taken(&out, &n) {
            out.push((n, v));
        }
    }
    out[first_custom..].sort_by(|a, b| a.0.cmp(&b.0));
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    use record_line::FieldKind;

    struct Fake {
        generation: AtomicU64,
        pids: Mutex<HashMap<u32, Vec<(String, String)>>>,
        calls: AtomicU64,
    }

    impl ContainerSource for Fake {
        fn generation(&self) -> u64 {
            self.generation.load(Ordering::Relaxed)
        }
        fn of_pid(&self, pid: u32, pod_labels: &[String]) -> Vec<(String, String)> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let mut v = self
                .pids
                .lock()
                .unwrap()
                .get(&pid)
                .cloned()
                .unwrap_or_default();
            for l in pod_labels {
                v.push((l.clone(), "x".into()));
            }
            v
        }
        fn of_container(&self, id: &str, _: &[String]) -> Vec<(String, String)> {
            vec![("container_name".into(), format!("name-{id}"))]
        }
        fn of_pod(&self, uid: &str, _: &[String]) -> Vec<(String, String)> {
            vec![
                ("pod".into(), format!("default/web-{uid}")),
                ("pod_namespace".into(), "default".into()),
            ]
        }
    }

    fn schema(fields: &[(&str, FieldKind)]) -> SchemaRef {
        Arc::new(TableSchema::from_fields("t", "e", fields))
    }

    fn fake() -> Arc<Fake> {
        let f = Fake {
            generation: AtomicU64::new(1),
            pids: Mutex::new(HashMap::new()),
            calls: AtomicU64::new(0),
        };
        f.pids.lock().unwrap().insert(
            7,
            vec![
                ("container_id".into(), "abcdefabcdef".into()),
                ("container_name".into(), "web".into()),
            ],
        );
        Arc::new(f)
    }

    const PROC_META: &[(&str, FieldKind)] = &[("tgid", FieldKind::Key), ("v", FieldKind::Gauge)];
    const CON_META: &[(&str, FieldKind)] =
        &[("container_id", FieldKind::Key), ("v", FieldKind::Gauge)];

    #[test]
    fn process_rows_get_container_then_custom_labels_and_keep_their_arc() {
        let f = fake();
        let custom = Arc::new(CustomLabels::new());
        custom
            .set("pr", vec![("env".into(), "prod".into())])
            .unwrap();
        let mut r = RecordLabels::new(
            "pr",
            Some(Arc::clone(&custom)),
            Some(f.clone() as Arc<dyn ContainerSource>),
            None,
        )
        .unwrap();
        let s = schema(PROC_META);
        let a = r.for_record(&s, &["7", "1"], 1000).unwrap();
        let names: Vec<_> = a.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["container_id", "container_name", "env"]);
        // Host process: custom labels only.
        let h = r.for_record(&s, &["8", "1"], 1000).unwrap();
        assert_eq!(&*h, &[("env".to_string(), "prod".to_string())][..]);
        // Same generation: no lookup, same Arc.
        let calls = f.calls.load(Ordering::Relaxed);
        let b = r.for_record(&s, &["7", "2"], 2000).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(f.calls.load(Ordering::Relaxed), calls);
        // A generation change with equal labels keeps the Arc (no re-render in the store).
        f.generation.fetch_add(1, Ordering::Relaxed);
        r.refresh();
        let c = r.for_record(&s, &["7", "2"], 2000).unwrap();
        assert!(Arc::ptr_eq(&a, &c));
        // Changed labels: a new set.
        f.pids
            .lock()
            .unwrap()
            .get_mut(&7)
            .unwrap()
            .push(("pod".into(), "ns/p".into()));
        f.generation.fetch_add(1, Ordering::Relaxed);
        r.refresh();
        let d = r.for_record(&s, &["7", "2"], 2000).unwrap();
        assert!(!Arc::ptr_eq(&a, &d));
        assert_eq!(d.len(), 4);
        // The pid is looked up again after the recheck interval even without a change.
        let calls = f.calls.load(Ordering::Relaxed);
        r.for_record(&s, &["7", "2"], 2000 + PID_RECHECK_MS)
            .unwrap();
        assert_eq!(f.calls.load(Ordering::Relaxed), calls + 1);
    }

    #[test]
    fn pod_labels_requested_by_the_probe_are_passed_on() {
        let f = fake();
        let custom = Arc::new(CustomLabels::new());
        custom.set_pod_labels("pr", vec!["app".into()]).unwrap();
        let mut r = RecordLabels::new(
            "pr",
            Some(custom),
            Some(f.clone() as Arc<dyn ContainerSource>),
            None,
        )
        .unwrap();
        let s = schema(PROC_META);
        let a = r.for_record(&s, &["7", "1"], 0).unwrap();
        assert_eq!(a.last().unwrap(), &("app".to_string(), "x".to_string()));
    }

    #[test]
    fn container_tables_get_names_without_a_second_container_id() {
        let f = fake();
        let mut r =
            RecordLabels::new("pr", None, Some(f as Arc<dyn ContainerSource>), None).unwrap();
        let s = schema(CON_META);
        let a = r.for_record(&s, &["abcdefabcdef", "1"], 0).unwrap();
        assert_eq!(
            &*a,
            &[(
                "container_name".to_string(),
                "name-abcdefabcdef".to_string()
            )][..]
        );
        assert!(r.for_record(&s, &["not hex", "1"], 0).is_none());
        let b = r.for_record(&s, &["abcdefabcdef", "2"], 0).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn a_table_field_wins_over_a_container_label() {
        let f = fake();
        let meta: &[(&str, FieldKind)] = &[
            ("tgid", FieldKind::Key),
            ("container_id", FieldKind::Label),
            ("v", FieldKind::Gauge),
        ];
        let mut r =
            RecordLabels::new("pr", None, Some(f as Arc<dyn ContainerSource>), None).unwrap();
        let s = schema(meta);
        let a = r.for_record(&s, &["7", "own", "1"], 0).unwrap();
        assert_eq!(
            &*a,
            &[("container_name".to_string(), "web".to_string())][..]
        );
    }

    /// The pid [`FakeProcs`] reports as gone.
    static GONE: AtomicU64 = AtomicU64::new(0);

    struct FakeProcs;

    impl ProcessSource for FakeProcs {
        fn of_process(&self, pid: u32, full: bool) -> Vec<(String, String)> {
            if GONE.load(Ordering::Relaxed) == u64::from(pid) {
                return Vec::new();
            }
            let mut v = vec![("comm".to_string(), format!("p{pid}"))];
            if full {
                v.push(("cmdline".into(), format!("/bin/p{pid} -x")));
                v.push(("start_time".into(), "1700000000".into()));
            }
            v
        }
    }

    #[test]
    fn tgid_tables_get_comm_and_proc_tables_also_cmdline_and_start_time_first() {
        let f = fake();
        let mut r = RecordLabels::new(
            "pr",
            None,
            Some(f as Arc<dyn ContainerSource>),
            Some(Arc::new(FakeProcs) as Arc<dyn ProcessSource>),
        )
        .unwrap();
        let names = |set: Option<LabelSet>| -> Vec<String> {
            set.map(|s| s.iter().map(|(n, _)| n.clone()).collect())
                .unwrap_or_default()
        };
        let link = schema(PROC_META);
        assert_eq!(
            names(r.for_record(&link, &["7", "1"], 0)),
            ["comm", "container_id", "container_name"]
        );
        let proc = Arc::new(TableSchema::from_fields("p", "proc", PROC_META));
        let got = r.for_record(&proc, &["8", "1"], 0).unwrap();
        assert_eq!(
            got.iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>(),
            ["comm=p8", "cmdline=/bin/p8 -x", "start_time=1700000000"]
        );
        // A table's own comm wins; pid-only tables (threads) get none; metadata names agree.
        let own = schema(&[("tgid", FieldKind::Key), ("comm", FieldKind::Label)]);
        assert_eq!(
            names(r.for_record(&own, &["9", "x"], 0)),
            Vec::<String>::new()
        );
        let thread = schema(&[("pid", FieldKind::Key), ("v", FieldKind::Gauge)]);
        assert!(!names(r.for_record(&thread, &["9", "1"], 0)).contains(&"comm".to_string()));
        assert_eq!(
            identity_label_names(&proc),
            ["comm", "cmdline", "start_time"]
        );
        assert_eq!(identity_label_names(&link), ["comm"]);
        assert!(identity_label_names(&own).is_empty());
    }

    #[test]
    fn pod_tables_get_the_pod_name_and_namespace() {
        let f = fake();
        let mut r =
            RecordLabels::new("pr", None, Some(f as Arc<dyn ContainerSource>), None).unwrap();
        let pods = schema(&[("pod_id", FieldKind::Key), ("containers", FieldKind::Gauge)]);
        let got = r.for_record(&pods, &["1f2e-3d", "2"], 0).unwrap();
        assert_eq!(
            got.iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>(),
            ["pod=default/web-1f2e-3d", "pod_namespace=default"]
        );
        assert!(r.for_record(&pods, &["not a uid", "2"], 0).is_none());
        assert_eq!(container_label_names(&pods), ["pod", "pod_namespace"]);
    }
}
