//! A probe's run-time settings: what upstream's REST document (`PUT /<probe>`, `probes.init`)
//! sets besides the switch — sub-probes, params, snoopers and custom labels — already validated
//! against the probe's [`Declaration`].
//!
//! How they reach the probe depends on its declaration: a probe with `reload = true` gets them
//! over the control channel ([`Runtime::control_msg`], a line on its stdin) and keeps running;
//! any other probe is restarted with them as command-line flags ([`Runtime::argv`]). Snoopers
//! are resolved into pids by [`crate::control::snooper`] first; custom labels never reach the
//! probe: the daemon adds them to every series it produces.

use std::collections::BTreeMap;

use probe_decl::{ControlMsg, Declaration, ParamValue, Snoop};

/// One `proc_name` snooper.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcNameDoc {
    /// Regex searched in the process's `comm`.
    pub comm: String,
    /// Substring of its command line (empty: any).
    pub cmdline: String,
    /// Label added to the process's series (one `k: v`).
    pub label: Option<(String, String)>,
}

/// The selectors of a `snoopers` or `blacklist` section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnooperDoc {
    /// `proc_id`.
    pub proc_id: Vec<u32>,
    /// `proc_name`.
    pub proc_name: Vec<ProcNameDoc>,
    /// `container_id` (hex, as given).
    pub container_id: Vec<String>,
    /// `container_name`.
    pub container_name: Vec<String>,
    /// `pod_id`.
    pub pod_id: Vec<String>,
    /// `pod_labels`.
    pub pod_labels: Vec<String>,
}

impl SnooperDoc {
    /// No selector at all.
    pub fn is_empty(&self) -> bool {
        self.proc_id.is_empty()
            && self.proc_name.is_empty()
            && self.container_id.is_empty()
            && self.container_name.is_empty()
            && self.pod_id.is_empty()
            && self.pod_labels.is_empty()
    }

    /// Number of selector entries.
    pub fn len(&self) -> usize {
        self.proc_id.len()
            + self.proc_name.len()
            + self.container_id.len()
            + self.container_name.len()
            + self.pod_id.len()
            + self.pod_labels.len()
    }

    /// Kinds given that cannot be resolved yet (container awareness lands later).
    pub fn unresolved(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (kind, empty) in [
            ("container_id", self.container_id.is_empty()),
            ("container_name", self.container_name.is_empty()),
            ("pod_id", self.pod_id.is_empty()),
            ("pod_labels", self.pod_labels.is_empty()),
        ] {
            if !empty {
                out.push(kind);
            }
        }
        out
    }
}

/// Which processes a probe observes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Snoopers {
    /// Every process (no snoopers, or `"blacklist": {}`).
    #[default]
    All,
    /// Only the processes these select (`snoopers`).
    Whitelist(SnooperDoc),
    /// Every process but those these select (`blacklist`).
    Blacklist(SnooperDoc),
}

/// A probe's run-time settings (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Runtime {
    /// `cmd.probe`; `None`: the declared defaults.
    pub sub_probes: Option<Vec<String>>,
    /// Params set so far (`params` merges: keys not given keep their value).
    pub params: BTreeMap<String, ParamValue>,
    /// Process selection.
    pub snoopers: Snoopers,
    /// `snoopers.custom_labels`: added to every series of the probe.
    pub custom_labels: Vec<(String, String)>,
}

impl Runtime {
    /// The sub-probes in effect under `decl`.
    pub fn effective_sub_probes(&self, decl: &Declaration) -> Vec<String> {
        match &self.sub_probes {
            Some(s) => s.clone(),
            None => decl.default_sub_probes(),
        }
    }

    /// Every declared param's value in effect.
    pub fn effective_params(&self, decl: &Declaration) -> BTreeMap<String, ParamValue> {
        let mut all = decl.defaults();
        for (k, v) in &self.params {
            if all.contains_key(k) {
                all.insert(k.clone(), v.clone());
            }
        }
        all
    }

    /// `-P` bits of the sub-probes in effect (0 for a probe without sub-probes).
    pub fn bits(&self, decl: &Declaration) -> u32 {
        let names = self.effective_sub_probes(decl);
        decl.sub_probe_bits(&names).unwrap_or_else(|_| {
            // Validated when set; a declaration that changed since keeps the defaults.
            decl.sub_probe_bits(&decl.default_sub_probes()).unwrap_or(0)
        })
    }

    /// Flags for a probe started without the control channel: `-P` only when sub-probes were
    /// chosen, params only when set.
    pub fn argv(&self, decl: &Declaration) -> Vec<String> {
        let bits = self.sub_probes.as_ref().map(|_| self.bits(decl));
        decl.argv(bits, &self.params)
    }

    /// The control line for a probe with `reload`, given the resolved process selection.
    pub fn control_msg(&self, decl: &Declaration, snoop: Snoop) -> ControlMsg {
        ControlMsg {
            v: 1,
            probe: self.effective_sub_probes(decl),
            probe_bits: self.bits(decl),
            params: self
                .effective_params(decl)
                .into_iter()
                .map(|(k, v)| (k, v.to_json()))
                .collect(),
            snoop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_decl::{standard, SubProbe};

    fn decl() -> Declaration {
        Declaration {
            rest_name: Some("tcp".into()),
            reload: true,
            snoopers: Vec::new(),
            sub_probes: vec![
                SubProbe::new("a", 1),
                SubProbe::new("b", 2).off_by_default(),
            ],
            params: vec![standard("report_period")
                .unwrap()
                .with_default(ParamValue::Int(5))],
        }
    }

    #[test]
    fn defaults_fill_what_was_not_set() {
        let d = decl();
        let mut rt = Runtime::default();
        assert_eq!(rt.bits(&d), 1);
        assert!(rt.argv(&d).is_empty());
        let msg = rt.control_msg(&d, Snoop::default());
        assert_eq!(msg.probe, ["a"]);
        assert_eq!(msg.int("report_period"), Some(5));

        rt.sub_probes = Some(vec!["b".into()]);
        rt.params.insert("report_period".into(), ParamValue::Int(10));
        rt.params.insert("gone".into(), ParamValue::Int(1));
        assert_eq!(rt.bits(&d), 2);
        assert_eq!(rt.argv(&d), ["-P", "0x2", "-t", "10"]);
        let msg = rt.control_msg(&d, Snoop::default());
        assert_eq!(msg.probe_bits, 2);
        assert_eq!(msg.int("report_period"), Some(10));
        assert!(!msg.params.contains_key("gone"));
    }

    #[test]
    fn unresolved_kinds() {
        let doc = SnooperDoc {
            proc_id: vec![1],
            pod_id: vec!["x".into()],
            ..SnooperDoc::default()
        };
        assert_eq!(doc.unresolved(), ["pod_id"]);
        assert_eq!(doc.len(), 2);
        assert!(!doc.is_empty());
    }
}
