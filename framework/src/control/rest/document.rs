//! Upstream's probe document (reference §5.3–5.5): a `PUT` body checked against the probe's
//! declaration and applied to its current settings, and the `GET` shape.
//!
//! Processing order is upstream's — `cmd` → `snoopers` → `blacklist` → `params` → `state` — on a
//! copy of the current settings, so a refused document changes nothing (every section "rolls
//! back"). `cmd`, `snoopers` and `blacklist` replace what was there; `params` merges (keys not
//! given keep their value). Unlike upstream: an unknown sub-probe, param or snooper kind the
//! probe does not honour is refused rather than ignored, messages are JSON-escaped by the
//! caller, and a probe with process snoopers may still be stopped or run without any (no
//! "the snooper for X cannot be empty").

use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::Switch;
use crate::control::runtime::{Base, ProcNameDoc, Runtime, SnooperDoc, Snoopers};
use probe_decl::{Declaration, SnooperKind, MAX_SUB_PROBES};

/// Most snooper entries in one section (upstream's limit; the resolver's).
pub use crate::control::snooper::MAX_SNOOPERS as MAX_SNOOPER_ENTRIES;
/// Longest string in a snooper or label, in bytes (the resolver's).
pub use crate::control::snooper::MAX_TEXT_BYTES as MAX_STRING_BYTES;
/// Most custom labels, or pod labels (upstream's limit; the label registry's).
pub use crate::custom_labels::MAX_LABELS;
/// Longest `comm` regex, in bytes.
const MAX_COMM_BYTES: usize = 128;

/// The probe a document is applied to.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Probe name (for messages).
    pub name: &'a str,
    /// Its declaration (`Declaration::default()` for a probe without one).
    pub decl: &'a Declaration,
    /// Its executable: the only value `cmd.bin` may hold.
    pub bin: &'a str,
}

/// The outcome of an accepted document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `state`, if given.
    pub switch: Option<Switch>,
    /// The new settings.
    pub runtime: Runtime,
}

/// A refused document: the message (naming the field) for the 400 reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DocError(pub String);

fn fail<T>(msg: impl Into<String>) -> Result<T, DocError> {
    Err(DocError(msg.into()))
}

/// Apply `doc` to `current` for `target`.
pub fn apply(doc: &Value, target: Target<'_>, current: &Runtime) -> Result<Change, DocError> {
    let Some(doc) = doc.as_object() else {
        return fail("Bad request: the document must be a JSON object");
    };
    let mut rt = current.clone();
    if let Some(cmd) = doc.get("cmd") {
        apply_cmd(cmd, target, &mut rt)?;
    }
    let mut whitelist_given = None;
    if let Some(s) = doc.get("snoopers") {
        let (sel, labels) = snooper_section(s, "snoopers", target, true)?;
        rt.custom_labels = labels;
        rt.snoopers = if sel.is_empty() {
            Snoopers::All
        } else {
            Snoopers::Whitelist(sel.clone())
        };
        whitelist_given = Some(sel);
    }
    if let Some(b) = doc.get("blacklist") {
        let (sel, _) = snooper_section(b, "blacklist", target, false)?;
        let whitelist_on = match &whitelist_given {
            Some(w) => !w.is_empty(),
            None => matches!(rt.snoopers, Snoopers::Whitelist(_)),
        };
        if whitelist_on && !sel.is_empty() {
            return fail("snoopers and blacklist are mutually exclusive");
        }
        if !whitelist_on {
            rt.snoopers = if sel.is_empty() {
                Snoopers::All
            } else {
                Snoopers::Blacklist(sel)
            };
        }
    }
    if let Some(p) = doc.get("params") {
        let Some(params) = p.as_object() else {
            return fail("params must be a JSON object");
        };
        for (k, v) in params {
            let Some(param) = target.decl.param(k) else {
                return fail(format!(
                    "params.{k} is not supported by probe {}",
                    target.name
                ));
            };
            let value = param.check(v).map_err(|e| DocError(e.to_string()))?;
            rt.params.insert(k.clone(), value);
        }
    }
    let switch = match doc.get("state") {
        None => None,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("running") => Some(Switch::On),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("stopped") => Some(Switch::Off),
        Some(other) => {
            return fail(format!(
                "invalid state {}: must be running or stopped",
                shown(other)
            ))
        }
    };
    Ok(Change {
        switch,
        runtime: rt,
    })
}

/// A value for a message: strings without their quotes, cut to 64 bytes.
fn shown(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.len() <= 64 {
        return s;
    }
    let mut end = 64;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn apply_cmd(cmd: &Value, target: Target<'_>, rt: &mut Runtime) -> Result<(), DocError> {
    let Some(cmd) = cmd.as_object() else {
        return fail("cmd must be a JSON object");
    };
    if let Some(bin) = cmd.get("bin") {
        match bin.as_str() {
            Some(b) if b == target.bin => {}
            _ => {
                return fail(format!(
                    "cmd.bin may only repeat the probe's executable {}",
                    target.bin
                ))
            }
        }
    }
    let Some(probe) = cmd.get("probe") else {
        return fail("Bad request: cmd.probe is missing");
    };
    let Some(items) = probe.as_array() else {
        return fail("cmd.probe must be an array of strings");
    };
    if items.len() > MAX_SUB_PROBES {
        return fail(format!("cmd.probe: more than {MAX_SUB_PROBES} entries"));
    }
    let mut names: Vec<String> = Vec::with_capacity(items.len());
    for i in items {
        let Some(n) = i.as_str() else {
            return fail("cmd.probe must be an array of strings");
        };
        if !names.iter().any(|x| x == n) {
            names.push(n.to_string());
        }
    }
    target
        .decl
        .sub_probe_bits(&names)
        .map_err(|e| DocError(format!("cmd.probe: {e}")))?;
    rt.sub_probes = Some(names);
    Ok(())
}

/// Characters never accepted in a snooper or label string: shell metacharacters and quotes
/// (the regex `comm` may use `$ | ( ) [ ] { } ^ * + ? .`).
fn refuse_text(s: &str, regex: bool) -> Option<&'static str> {
    if s.chars().any(char::is_control) {
        return Some("control characters are not allowed");
    }
    if s.contains("../") || s.contains("/..") || s == ".." {
        return Some("\"..\" path components are not allowed");
    }
    let forbidden: &[char] = if regex {
        &[';', '`', '&', '<', '>', '\'', '"']
    } else {
        &[';', '`', '&', '<', '>', '\'', '"', '$', '|', '\\']
    };
    if s.contains(forbidden) || s.contains("$(") {
        return Some("shell metacharacters and quotes are not allowed");
    }
    None
}

fn text<'v>(v: &'v Value, field: &str, max: usize, regex: bool) -> Result<&'v str, DocError> {
    let Some(s) = v.as_str() else {
        return fail(format!("{field} must be a string"));
    };
    if s.len() > max {
        return fail(format!("{field}: longer than {max} bytes"));
    }
    if let Some(why) = refuse_text(s, regex) {
        return fail(format!("{field}: {why}"));
    }
    Ok(s)
}

/// A label name the label registry accepts (Prometheus syntax, not reserved).
fn label_name(s: &str) -> bool {
    crate::custom_labels::check_name(s).is_ok()
}

fn label_pair(obj: &Map<String, Value>, field: &str) -> Result<(String, String), DocError> {
    let mut it = obj.iter();
    match (it.next(), it.next()) {
        (Some((k, v)), None) => {
            if !label_name(k) {
                return fail(format!(
                    "{field}: invalid label name {}",
                    shown(&Value::from(k.as_str()))
                ));
            }
            let v = text(v, &format!("{field}.{k}"), MAX_STRING_BYTES, false)?;
            Ok((k.clone(), v.to_string()))
        }
        _ => fail(format!("{field} must hold exactly one label")),
    }
}

fn array<'v>(v: &'v Value, field: &str) -> Result<&'v [Value], DocError> {
    match v.as_array() {
        Some(a) if a.len() <= MAX_SNOOPER_ENTRIES => Ok(a),
        Some(_) => fail(format!("{field}: more than {MAX_SNOOPER_ENTRIES} entries")),
        None => fail(format!("{field} must be an array")),
    }
}

fn strings(
    v: &Value,
    field: &str,
    valid: impl Fn(&str) -> bool,
    expected: &str,
) -> Result<Vec<String>, DocError> {
    let mut out = Vec::new();
    for item in array(v, field)? {
        let s = text(item, field, MAX_STRING_BYTES, false)?;
        if !valid(s) {
            return fail(format!("{field}: {} is not {expected}", shown(item)));
        }
        out.push(s.to_string());
    }
    Ok(out)
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn pod_id(s: &str) -> bool {
    (s.len() == 32 && is_hex(s))
        || (s.len() == 36
            && s.char_indices().all(|(i, c)| {
                if matches!(i, 8 | 13 | 18 | 23) {
                    c == '-'
                } else {
                    c.is_ascii_hexdigit()
                }
            }))
}

fn container_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn pod_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./-".contains(&b))
}

/// One `snoopers` / `blacklist` section; `with_labels` allows `custom_labels` and `proc_name`
/// labels (only the whitelist has them).
fn snooper_section(
    v: &Value,
    section: &str,
    target: Target<'_>,
    with_labels: bool,
) -> Result<(SnooperDoc, Vec<(String, String)>), DocError> {
    let Some(obj) = v.as_object() else {
        return fail(format!("{section} must be a JSON object"));
    };
    let mut doc = SnooperDoc::default();
    let mut labels = Vec::new();
    for (key, value) in obj {
        let field = format!("{section}.{key}");
        if key == "custom_labels" && with_labels {
            let Some(m) = value.as_object() else {
                return fail(format!("{field} must be a JSON object"));
            };
            if m.len() > MAX_LABELS {
                return fail(format!("{field}: more than {MAX_LABELS} labels"));
            }
            for (k, v) in m {
                if !label_name(k) {
                    return fail(format!(
                        "{field}: invalid label name {}",
                        shown(&Value::from(k.as_str()))
                    ));
                }
                let v = text(v, &format!("{field}.{k}"), MAX_STRING_BYTES, false)?;
                labels.push((k.clone(), v.to_string()));
            }
            continue;
        }
        let Some(kind) = SnooperKind::parse(key) else {
            return fail(format!("{field}: unknown snooper kind"));
        };
        match kind {
            SnooperKind::ProcId => {
                for item in array(value, &field)? {
                    match item.as_u64().and_then(|p| u32::try_from(p).ok()) {
                        Some(p) if p > 0 => doc.proc_id.push(p),
                        _ => return fail(format!("{field}: {} is not a pid", shown(item))),
                    }
                }
            }
            SnooperKind::ProcName => {
                for item in array(value, &field)? {
                    let Some(o) = item.as_object() else {
                        return fail(format!("{field} entries must be JSON objects"));
                    };
                    let Some(comm) = o.get("comm") else {
                        return fail(format!("{field}.comm is missing"));
                    };
                    let comm = text(comm, &format!("{field}.comm"), MAX_COMM_BYTES, true)?;
                    if comm.is_empty() {
                        return fail(format!("{field}.comm must not be empty"));
                    }
                    if let Err(e) = crate::control::snooper::comm_regex(comm) {
                        let first = e.to_string();
                        let first = first.lines().last().unwrap_or("").trim().to_string();
                        return fail(format!("{field}.comm is not a valid regex: {first}"));
                    }
                    let cmdline = match o.get("cmdline") {
                        None | Some(Value::Null) => "",
                        Some(c) => text(c, &format!("{field}.cmdline"), MAX_STRING_BYTES, false)?,
                    };
                    let label = match o.get("label") {
                        None | Some(Value::Null) => None,
                        Some(Value::Object(m)) if m.is_empty() => None,
                        Some(Value::Object(m)) if with_labels => {
                            Some(label_pair(m, &format!("{field}.label"))?)
                        }
                        Some(_) => return fail(format!("{field}.label must be one label object")),
                    };
                    doc.proc_name.push(ProcNameDoc {
                        comm: comm.to_string(),
                        cmdline: cmdline.to_string(),
                        label,
                    });
                }
            }
            SnooperKind::ContainerId => {
                doc.container_id = strings(
                    value,
                    &field,
                    |s| !s.is_empty() && s.len() <= 64 && is_hex(s),
                    "1 to 64 hex digits",
                )?;
            }
            SnooperKind::ContainerName => {
                doc.container_name = strings(value, &field, container_name, "a container name")?;
            }
            SnooperKind::PodId => {
                doc.pod_id = strings(value, &field, pod_id, "a pod id (32 hex digits or a UUID)")?;
            }
            SnooperKind::PodLabels => {
                doc.pod_labels = strings(value, &field, pod_label, "a label name")?;
                if doc.pod_labels.len() > MAX_LABELS {
                    return fail(format!("{field}: more than {MAX_LABELS} labels"));
                }
            }
        }
        let given = match kind {
            SnooperKind::ProcId => !doc.proc_id.is_empty(),
            SnooperKind::ProcName => !doc.proc_name.is_empty(),
            SnooperKind::ContainerId => !doc.container_id.is_empty(),
            SnooperKind::ContainerName => !doc.container_name.is_empty(),
            SnooperKind::PodId => !doc.pod_id.is_empty(),
            SnooperKind::PodLabels => !doc.pod_labels.is_empty(),
        };
        if given && !target.decl.honours(kind) {
            return fail(format!("{field} is not supported by probe {}", target.name));
        }
    }
    if doc.len() > MAX_SNOOPER_ENTRIES {
        return fail(format!(
            "{section}: more than {MAX_SNOOPER_ENTRIES} snooper entries"
        ));
    }
    Ok((doc, labels))
}

/// `cmd` of the `GET` shape.
#[derive(Debug, Serialize)]
pub struct CmdView {
    /// The executable.
    pub bin: String,
    /// Sub-probes in effect.
    pub probe: Vec<String>,
}

/// `proc_name` entry of the `GET` shape.
#[derive(Debug, Serialize)]
pub struct ProcNameView {
    comm: String,
    cmdline: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<Map<String, Value>>,
}

/// A `snoopers` / `blacklist` object of the `GET` shape (`{}` when nothing is selected).
#[derive(Debug, Default, Serialize)]
pub struct SnoopersView {
    #[serde(skip_serializing_if = "Option::is_none")]
    proc_id: Option<Vec<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proc_name: Option<Vec<ProcNameView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pod_id: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container_id: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container_name: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pod_labels: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    custom_labels: Option<Map<String, Value>>,
}

impl SnoopersView {
    fn of(doc: Option<&SnooperDoc>, labels: &[(String, String)]) -> SnoopersView {
        let mut v = SnoopersView::default();
        if let Some(d) = doc {
            v.proc_id = Some(d.proc_id.clone());
            v.proc_name = Some(
                d.proc_name
                    .iter()
                    .map(|p| ProcNameView {
                        comm: p.comm.clone(),
                        cmdline: p.cmdline.clone(),
                        label: p.label.as_ref().map(|(k, val)| {
                            let mut m = Map::new();
                            m.insert(k.clone(), Value::from(val.as_str()));
                            m
                        }),
                    })
                    .collect(),
            );
            v.pod_id = Some(d.pod_id.clone());
            v.container_id = Some(d.container_id.clone());
            v.container_name = Some(d.container_name.clone());
            v.pod_labels = Some(d.pod_labels.clone());
        }
        if !labels.is_empty() {
            v.custom_labels = Some(
                labels
                    .iter()
                    .map(|(k, val)| (k.clone(), Value::from(val.as_str())))
                    .collect(),
            );
        }
        v
    }
}

/// What the daemon knows of the probe process, after the upstream keys of the `GET` shape.
#[derive(Debug, Serialize)]
pub struct RunView {
    /// stopped / running / backoff / failed.
    pub status: String,
    /// Pid of the running process.
    pub pid: Option<u32>,
    /// Restarts so far.
    pub restarts: u64,
    /// Last error, if any.
    pub last_error: Option<String>,
    /// True: changes reach the running probe over its control channel; false: it is restarted.
    pub reload: bool,
}

/// The `GET /<probe>` shape: upstream's keys in upstream's order (`cmd`, `snoopers` or
/// `blacklist`, `params`, `state`), then ours.
#[derive(Debug, Serialize)]
pub struct ProbeView {
    /// `cmd`.
    pub cmd: CmdView,
    /// `snoopers` (whitelist mode or none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snoopers: Option<SnoopersView>,
    /// `blacklist` (blacklist mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blacklist: Option<SnoopersView>,
    /// Every declared param's value in effect.
    pub params: Map<String, Value>,
    /// `running` (switch on), `stopped` (off) or `auto`.
    pub state: &'static str,
    /// Our additions.
    #[serde(flatten)]
    pub run: RunView,
}

/// The `GET` view of `target` with settings `rt` over its command line's `base`, and switch
/// `switch`.
pub fn view(
    target: Target<'_>,
    rt: &Runtime,
    base: &Base,
    switch: Switch,
    run: RunView,
) -> ProbeView {
    let (snoopers, blacklist) = match &rt.snoopers {
        Snoopers::All => (Some(SnoopersView::of(None, &rt.custom_labels)), None),
        Snoopers::Whitelist(d) => (Some(SnoopersView::of(Some(d), &rt.custom_labels)), None),
        Snoopers::Blacklist(d) => (
            (!rt.custom_labels.is_empty()).then(|| SnoopersView::of(None, &rt.custom_labels)),
            Some(SnoopersView::of(Some(d), &[])),
        ),
    };
    ProbeView {
        cmd: CmdView {
            bin: target.bin.to_string(),
            probe: rt.effective_sub_probes(target.decl, base),
        },
        snoopers,
        blacklist,
        params: rt
            .effective_params(target.decl, base)
            .into_iter()
            .map(|(k, v)| (k, v.to_json()))
            .collect(),
        state: match switch {
            Switch::On => "running",
            Switch::Off => "stopped",
            Switch::Auto => "auto",
        },
        run,
    }
}

/// The document that re-creates `rt` and `switch` (a `probes.init` line): `cmd` only when
/// sub-probes were chosen, params only those set.
pub fn persisted(rt: &Runtime, switch: Switch) -> Value {
    let mut doc = Map::new();
    if let Some(s) = &rt.sub_probes {
        let mut cmd = Map::new();
        cmd.insert("probe".into(), Value::from(s.clone()));
        doc.insert("cmd".into(), Value::Object(cmd));
    }
    let as_value = |v: SnoopersView| serde_json::to_value(v).unwrap_or_default();
    match &rt.snoopers {
        Snoopers::All => {
            doc.insert(
                "snoopers".into(),
                as_value(SnoopersView::of(None, &rt.custom_labels)),
            );
        }
        Snoopers::Whitelist(d) => {
            doc.insert(
                "snoopers".into(),
                as_value(SnoopersView::of(Some(d), &rt.custom_labels)),
            );
        }
        Snoopers::Blacklist(d) => {
            doc.insert(
                "snoopers".into(),
                as_value(SnoopersView::of(None, &rt.custom_labels)),
            );
            doc.insert("blacklist".into(), as_value(SnoopersView::of(Some(d), &[])));
        }
    }
    doc.insert(
        "params".into(),
        Value::Object(
            rt.params
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        ),
    );
    if switch != Switch::Auto {
        doc.insert(
            "state".into(),
            Value::from(if switch == Switch::On {
                "running"
            } else {
                "stopped"
            }),
        );
    }
    Value::Object(doc)
}
