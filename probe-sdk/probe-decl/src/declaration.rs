//! The declaration types and the checks the daemon applies with them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Most sub-probes one probe declares.
pub const MAX_SUB_PROBES: usize = 32;
/// Most params one probe declares.
pub const MAX_PARAMS: usize = 64;
/// Longest sub-probe, param or REST name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Most strings in a list param value.
const MAX_LIST_ITEMS: usize = 32;

/// What a probe declares about its run-time control.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Declaration {
    /// The name upstream's REST API and `gopher-ctl` know the probe by (`tcp` for tcpprobe),
    /// matched case-insensitively; the probe's own name always works too.
    pub rest_name: Option<String>,
    /// Whether the probe reads the control channel ([`crate::ControlMsg`] lines on stdin) and
    /// applies params, sub-probes and snoopers without a restart. Without it the daemon restarts
    /// the probe with new flags instead.
    pub reload: bool,
    /// Snooper kinds the probe honours (`custom_labels` always work: the daemon adds them).
    pub snoopers: Vec<SnooperKind>,
    /// Sub-probes (`cmd.probe`), each a set of the probe's `-P` table bits.
    pub sub_probes: Vec<SubProbe>,
    /// Params (`params.<name>`) the probe accepts.
    pub params: Vec<Param>,
}

/// One sub-probe: a name upstream users put in `cmd.probe`, and the `-P` bits it turns on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubProbe {
    /// Name, e.g. `tcp_rtt`.
    pub name: String,
    /// The probe's table bits this sub-probe selects (non-zero).
    pub bits: u32,
    /// Whether it is on when no `cmd.probe` was given.
    pub default: bool,
}

impl SubProbe {
    /// A sub-probe `name` selecting `bits`, on by default.
    pub fn new(name: &str, bits: u32) -> SubProbe {
        SubProbe {
            name: name.to_string(),
            bits,
            default: true,
        }
    }

    /// The same sub-probe, off unless asked for.
    pub fn off_by_default(mut self) -> SubProbe {
        self.default = false;
        self
    }
}

/// A snooper kind of upstream's REST document (`snoopers.<kind>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SnooperKind {
    /// `proc_id`: pids.
    ProcId,
    /// `proc_name`: `comm` regex, `cmdline` substring, optional label.
    ProcName,
    /// `container_id`: hex ids.
    ContainerId,
    /// `container_name`: names.
    ContainerName,
    /// `pod_id`: pod UUIDs.
    PodId,
    /// `pod_labels`: label names.
    PodLabels,
}

impl SnooperKind {
    /// Every kind, in upstream's order.
    pub const ALL: [SnooperKind; 6] = [
        SnooperKind::ProcId,
        SnooperKind::ProcName,
        SnooperKind::ContainerId,
        SnooperKind::ContainerName,
        SnooperKind::PodId,
        SnooperKind::PodLabels,
    ];

    /// The kinds that select processes (what upstream calls snooper type PROC).
    pub const PROCESS: [SnooperKind; 2] = [SnooperKind::ProcId, SnooperKind::ProcName];

    /// The document key, e.g. `proc_name`.
    pub fn as_str(self) -> &'static str {
        match self {
            SnooperKind::ProcId => "proc_id",
            SnooperKind::ProcName => "proc_name",
            SnooperKind::ContainerId => "container_id",
            SnooperKind::ContainerName => "container_name",
            SnooperKind::PodId => "pod_id",
            SnooperKind::PodLabels => "pod_labels",
        }
    }

    /// The kind of document key `s`.
    pub fn parse(s: &str) -> Option<SnooperKind> {
        SnooperKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for SnooperKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which characters a string param may hold. Neither admits shell metacharacters, spaces,
/// quotes or control characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// `A-Z a-z 0-9 _ . : @ , -` (device names, host:port).
    Name,
    /// An absolute path of `A-Z a-z 0-9 _ . / + -` without `.` or `..` components.
    Path,
}

impl Charset {
    /// `name` or `path`.
    pub fn as_str(self) -> &'static str {
        match self {
            Charset::Name => "name",
            Charset::Path => "path",
        }
    }

    /// The charset called `s`.
    pub fn parse(s: &str) -> Option<Charset> {
        match s {
            "name" => Some(Charset::Name),
            "path" => Some(Charset::Path),
            _ => None,
        }
    }

    /// Why `s` is not in this charset, if it is not.
    pub fn refuse(self, s: &str) -> Option<&'static str> {
        match self {
            Charset::Name => (!s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:@,-".contains(&b)))
            .then_some("only A-Z a-z 0-9 _ . : @ , - are allowed"),
            Charset::Path => {
                if !s.starts_with('/') {
                    Some("must be an absolute path")
                } else if !s
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_./+-".contains(&b))
                {
                    Some("only A-Z a-z 0-9 _ . / + - are allowed")
                } else if s.split('/').any(|c| c == "." || c == "..") {
                    Some("must not contain . or .. components")
                } else {
                    None
                }
            }
        }
    }
}

/// What values a param takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamKind {
    /// A JSON integer in `min..=max`.
    Int {
        /// Smallest value.
        min: i64,
        /// Largest value.
        max: i64,
    },
    /// A JSON string of at most `max_len` bytes in `charset` (empty allowed).
    Str {
        /// Longest value in bytes.
        max_len: usize,
        /// Allowed characters.
        charset: Charset,
    },
    /// A JSON string, one of `values`.
    Choice {
        /// The allowed values.
        values: Vec<String>,
    },
    /// A JSON array of distinct strings, each one of `values`.
    List {
        /// The allowed items.
        values: Vec<String>,
    },
}

impl ParamKind {
    /// The `type` word of the `.meta` group.
    pub fn type_name(&self) -> &'static str {
        match self {
            ParamKind::Int { .. } => "int",
            ParamKind::Str { .. } => "string",
            ParamKind::Choice { .. } => "choice",
            ParamKind::List { .. } => "list",
        }
    }
}

/// A param value, checked against its [`ParamKind`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ParamValue {
    /// `Int`.
    Int(i64),
    /// `Str` or `Choice`.
    Str(String),
    /// `List`.
    List(Vec<String>),
}

impl ParamValue {
    /// The value as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            ParamValue::Int(i) => serde_json::Value::from(*i),
            ParamValue::Str(s) => serde_json::Value::from(s.as_str()),
            ParamValue::List(l) => serde_json::Value::from(l.clone()),
        }
    }
}

/// One param a probe accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Name (`params.<name>`), e.g. `report_period`.
    pub name: String,
    /// Values it takes.
    pub kind: ParamKind,
    /// The value the probe uses when none is given.
    pub default: ParamValue,
    /// The command-line flag it maps to (`t` for `-t`), if any: what a probe started without the
    /// control channel is given.
    pub flag: Option<char>,
    /// For an `Int` 0/1 param with a flag: 1 passes `-<flag> <switch_value>`, 0 passes nothing
    /// (`report_event` → `-l warn`).
    pub switch_value: Option<String>,
}

/// A param value refused; the messages are upstream's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// Wrong JSON type.
    #[error("params.{name} invalid data type")]
    InvalidType {
        /// Param name.
        name: String,
    },
    /// An integer out of range.
    #[error("params.{name} invalid value {value}, must be in [{min}, {max}]")]
    OutOfRange {
        /// Param name.
        name: String,
        /// The value given.
        value: i64,
        /// Smallest allowed.
        min: i64,
        /// Largest allowed.
        max: i64,
    },
    /// A string or list refused.
    #[error("params.{name} invalid value: {reason}")]
    Invalid {
        /// Param name.
        name: String,
        /// Why.
        reason: String,
    },
}

impl Param {
    /// A param without flag.
    pub fn new(name: &str, kind: ParamKind, default: ParamValue) -> Param {
        Param {
            name: name.to_string(),
            kind,
            default,
            flag: None,
            switch_value: None,
        }
    }

    /// The same param with another default.
    pub fn with_default(mut self, default: ParamValue) -> Param {
        self.default = default;
        self
    }

    /// The same param mapped to `-<flag>`.
    pub fn with_flag(mut self, flag: char) -> Param {
        self.flag = Some(flag);
        self
    }

    /// The same `Int` param with another range.
    pub fn with_range(mut self, min: i64, max: i64) -> Param {
        self.kind = ParamKind::Int { min, max };
        self
    }

    /// Checks a JSON value given for this param.
    pub fn check(&self, v: &serde_json::Value) -> Result<ParamValue, ParamError> {
        let invalid_type = || ParamError::InvalidType {
            name: self.name.clone(),
        };
        let invalid = |reason: String| ParamError::Invalid {
            name: self.name.clone(),
            reason,
        };
        match &self.kind {
            ParamKind::Int { min, max } => {
                let i = v.as_i64().ok_or_else(invalid_type)?;
                if i < *min || i > *max {
                    return Err(ParamError::OutOfRange {
                        name: self.name.clone(),
                        value: i,
                        min: *min,
                        max: *max,
                    });
                }
                Ok(ParamValue::Int(i))
            }
            ParamKind::Str { max_len, charset } => {
                let s = v.as_str().ok_or_else(invalid_type)?;
                if s.len() > *max_len {
                    return Err(invalid(format!("longer than {max_len} bytes")));
                }
                if !s.is_empty() {
                    if let Some(reason) = charset.refuse(s) {
                        return Err(invalid(reason.to_string()));
                    }
                }
                Ok(ParamValue::Str(s.to_string()))
            }
            ParamKind::Choice { values } => {
                let s = v.as_str().ok_or_else(invalid_type)?;
                if !values.iter().any(|x| x == s) {
                    return Err(invalid(format!("must be one of {}", values.join(", "))));
                }
                Ok(ParamValue::Str(s.to_string()))
            }
            ParamKind::List { values } => {
                let items = v.as_array().ok_or_else(invalid_type)?;
                if items.len() > MAX_LIST_ITEMS {
                    return Err(invalid(format!("more than {MAX_LIST_ITEMS} items")));
                }
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    let s = item.as_str().ok_or_else(invalid_type)?;
                    if !values.iter().any(|x| x == s) {
                        return Err(invalid(format!(
                            "items must be among {}",
                            values.join(", ")
                        )));
                    }
                    if out.iter().any(|x| x == s) {
                        return Err(invalid(format!("{s} given twice")));
                    }
                    out.push(s.to_string());
                }
                Ok(ParamValue::List(out))
            }
        }
    }

    /// The command-line words passing `value` to a probe, empty without a flag (or for an empty
    /// string or list, or a switch at 0).
    pub fn flag_words(&self, value: &ParamValue) -> Vec<String> {
        let Some(flag) = self.flag else {
            return Vec::new();
        };
        let text = match (value, &self.switch_value) {
            (ParamValue::Int(0), Some(_)) => return Vec::new(),
            (ParamValue::Int(_), Some(sv)) => sv.clone(),
            (ParamValue::Int(i), None) => i.to_string(),
            (ParamValue::Str(s), _) if s.is_empty() => return Vec::new(),
            (ParamValue::Str(s), _) => s.clone(),
            (ParamValue::List(l), _) if l.is_empty() => return Vec::new(),
            (ParamValue::List(l), _) => l.join(","),
        };
        vec![format!("-{flag}"), text]
    }
}

/// A declaration that does not hold together (what [`Declaration::validate`] and
/// [`Declaration::from_node`] report; `origin` is `FILE:LINE` when read from a `.meta` file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}probe declaration: {message}")]
pub struct DeclError {
    /// `FILE:LINE: `, or empty.
    pub origin: String,
    /// What is wrong.
    pub message: String,
}

impl DeclError {
    pub(crate) fn new(message: impl Into<String>) -> DeclError {
        DeclError {
            origin: String::new(),
            message: message.into(),
        }
    }
}

/// A name of a sub-probe, param or REST alias: `[a-z0-9_]`, 1..=64 bytes, starting with a letter.
pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_BYTES
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Declaration {
    /// The sub-probe called `name` (exact match, as upstream).
    pub fn sub_probe(&self, name: &str) -> Option<&SubProbe> {
        self.sub_probes.iter().find(|s| s.name == name)
    }

    /// The param called `name`.
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }

    /// Whether the probe honours snooper kind `kind`.
    pub fn honours(&self, kind: SnooperKind) -> bool {
        self.snoopers.contains(&kind)
    }

    /// Names of the sub-probes on when `cmd.probe` is not given.
    pub fn default_sub_probes(&self) -> Vec<String> {
        self.sub_probes
            .iter()
            .filter(|s| s.default)
            .map(|s| s.name.clone())
            .collect()
    }

    /// The `-P` bits of the sub-probes `names`; upstream's messages for an unknown name or an
    /// empty list (on a probe that has sub-probes).
    pub fn sub_probe_bits(&self, names: &[String]) -> Result<u32, String> {
        if self.sub_probes.is_empty() {
            return match names.first() {
                None => Ok(0),
                Some(n) => Err(format!("unsupported probe range: {n}.")),
            };
        }
        if names.is_empty() {
            return Err("invalid probe ranges: at least one must be set".to_string());
        }
        let mut bits = 0;
        for n in names {
            bits |= self
                .sub_probe(n)
                .ok_or_else(|| format!("unsupported probe range: {n}."))?
                .bits;
        }
        Ok(bits)
    }

    /// Every param at its default.
    pub fn defaults(&self) -> BTreeMap<String, ParamValue> {
        self.params
            .iter()
            .map(|p| (p.name.clone(), p.default.clone()))
            .collect()
    }

    /// Command-line words for a probe started with sub-probe bits `bits` (`-P`, only for a probe
    /// with sub-probes) and the params `set` (only those given; unknown names are skipped).
    pub fn argv(&self, bits: Option<u32>, set: &BTreeMap<String, ParamValue>) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(bits) = bits.filter(|_| !self.sub_probes.is_empty()) {
            out.push("-P".to_string());
            out.push(format!("0x{bits:x}"));
        }
        for p in &self.params {
            if let Some(v) = set.get(&p.name) {
                out.extend(p.flag_words(v));
            }
        }
        out
    }

    /// Checks that the declaration holds together: names, counts, distinct names and flags,
    /// non-zero sub-probe bits, defaults within their own kinds.
    pub fn validate(&self) -> Result<(), DeclError> {
        if let Some(alias) = &self.rest_name {
            if !valid_name(alias) {
                return Err(DeclError::new(format!(
                    "rest_name \"{alias}\": expected [a-z0-9_], starting with a letter, at most {MAX_NAME_BYTES} bytes"
                )));
            }
        }
        if self.sub_probes.len() > MAX_SUB_PROBES {
            return Err(DeclError::new(format!(
                "more than {MAX_SUB_PROBES} sub_probes"
            )));
        }
        if self.params.len() > MAX_PARAMS {
            return Err(DeclError::new(format!("more than {MAX_PARAMS} params")));
        }
        if !self.snoopers.is_empty() && !self.reload {
            return Err(DeclError::new(
                "snoopers need reload = true (the resolved processes reach the probe over the control channel)",
            ));
        }
        let mut names = BTreeSet::new();
        for s in &self.sub_probes {
            if !valid_name(&s.name) {
                return Err(DeclError::new(format!("sub_probe name \"{}\"", s.name)));
            }
            if !names.insert(s.name.as_str()) {
                return Err(DeclError::new(format!(
                    "sub_probe {} declared twice",
                    s.name
                )));
            }
            if s.bits == 0 {
                return Err(DeclError::new(format!(
                    "sub_probe {}: bits must not be 0",
                    s.name
                )));
            }
        }
        let mut names = BTreeSet::new();
        let mut flags = BTreeSet::new();
        for p in &self.params {
            if !valid_name(&p.name) {
                return Err(DeclError::new(format!("param name \"{}\"", p.name)));
            }
            if !names.insert(p.name.as_str()) {
                return Err(DeclError::new(format!("param {} declared twice", p.name)));
            }
            if let Some(f) = p.flag {
                if !f.is_ascii_alphabetic() || f == 'P' {
                    return Err(DeclError::new(format!(
                        "param {}: flag must be a letter other than P (used for sub-probes)",
                        p.name
                    )));
                }
                if !flags.insert(f) {
                    return Err(DeclError::new(format!(
                        "param {}: flag -{f} used twice",
                        p.name
                    )));
                }
            }
            if let ParamKind::Int { min, max } = p.kind {
                if min > max {
                    return Err(DeclError::new(format!("param {}: min > max", p.name)));
                }
            }
            if p.switch_value.is_some() && !matches!(p.kind, ParamKind::Int { min: 0, max: 1 }) {
                return Err(DeclError::new(format!(
                    "param {}: switch_value needs type int with range 0..1",
                    p.name
                )));
            }
            p.check(&p.default.to_json())
                .map_err(|e| DeclError::new(format!("default: {e}")))?;
        }
        Ok(())
    }
}
