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

use probe_decl::{ControlMsg, Declaration, ParamKind, ParamValue, Snoop};

/// What a probe's own command line sets (its config entry's `param`, say `-t 10 -P 0x3`), read
/// through its declaration: the values in effect where REST and `probes.init` set nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Base {
    /// `-P` bits, if given.
    pub bits: Option<u32>,
    /// Declared params whose flag is given (valid values only).
    pub params: BTreeMap<String, ParamValue>,
}

fn parse_bits(s: &str) -> Option<u32> {
    let bits = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
        None => s.parse().ok()?,
    };
    // Upstream: -P 0 means every probe bit.
    Some(if bits == 0 { u32::MAX } else { bits })
}

impl Base {
    /// The settings `argv` (program first) gives, getopt-style (`-t 5`, `-t5`); later flags win.
    pub fn from_argv(decl: &Declaration, argv: &[String]) -> Base {
        let mut base = Base::default();
        let mut i = 1;
        while i < argv.len() {
            let token = &argv[i];
            i += 1;
            let Some(rest) = token.strip_prefix('-') else {
                continue;
            };
            let mut chars = rest.chars();
            let Some(flag) = chars.next() else { continue };
            let attached = chars.as_str();
            let param = decl.params.iter().find(|p| p.flag == Some(flag));
            if flag != 'P' && param.is_none() {
                continue;
            }
            let value = if attached.is_empty() {
                let v = argv.get(i).cloned();
                i += 1;
                v
            } else {
                Some(attached.to_string())
            };
            let Some(value) = value else { break };
            match param {
                None => base.bits = parse_bits(&value).or(base.bits),
                Some(p) => {
                    let parsed = match (&p.kind, &p.switch_value) {
                        (_, Some(_)) => Some(ParamValue::Int(1)),
                        (ParamKind::Int { .. }, None) => value.parse().ok().map(ParamValue::Int),
                        (ParamKind::List { .. }, None) => Some(ParamValue::List(
                            value.split(',').map(str::to_string).collect(),
                        )),
                        _ => Some(ParamValue::Str(value)),
                    };
                    if let Some(v) = parsed.filter(|v| p.check(&v.to_json()).is_ok()) {
                        base.params.insert(p.name.clone(), v);
                    }
                }
            }
        }
        base
    }
}

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
    /// The sub-probes in effect under `decl`: those set, else those the command line's `-P`
    /// selects, else the declared defaults.
    pub fn effective_sub_probes(&self, decl: &Declaration, base: &Base) -> Vec<String> {
        match (&self.sub_probes, base.bits) {
            (Some(s), _) => s.clone(),
            (None, Some(bits)) => decl
                .sub_probes
                .iter()
                .filter(|s| s.bits & bits != 0)
                .map(|s| s.name.clone())
                .collect(),
            (None, None) => decl.default_sub_probes(),
        }
    }

    /// Every declared param's value in effect: set here, else on the command line, else the
    /// declared default.
    pub fn effective_params(
        &self,
        decl: &Declaration,
        base: &Base,
    ) -> BTreeMap<String, ParamValue> {
        let mut all = decl.defaults();
        for (k, v) in base.params.iter().chain(&self.params) {
            if all.contains_key(k) {
                all.insert(k.clone(), v.clone());
            }
        }
        all
    }

    /// `-P` bits in effect (0 for a probe without sub-probes): those of the sub-probes set, else
    /// the command line's, else the declared defaults'.
    pub fn bits(&self, decl: &Declaration, base: &Base) -> u32 {
        if decl.sub_probes.is_empty() {
            return 0;
        }
        if let (None, Some(bits)) = (&self.sub_probes, base.bits) {
            return bits;
        }
        let names = self.effective_sub_probes(decl, base);
        decl.sub_probe_bits(&names).unwrap_or_else(|_| {
            // Validated when set; a declaration that changed since keeps the defaults.
            decl.sub_probe_bits(&decl.default_sub_probes()).unwrap_or(0)
        })
    }

    /// Flags for a probe started without the control channel: `-P` only when sub-probes were
    /// chosen, params only when set.
    pub fn argv(&self, decl: &Declaration) -> Vec<String> {
        let bits = self
            .sub_probes
            .as_ref()
            .map(|_| self.bits(decl, &Base::default()));
        decl.argv(bits, &self.params)
    }

    /// The control line for a probe with `reload` whose command line gives `base`, given the
    /// resolved process selection.
    pub fn control_msg(&self, decl: &Declaration, base: &Base, snoop: Snoop) -> ControlMsg {
        ControlMsg {
            v: 1,
            probe: self.effective_sub_probes(decl, base),
            probe_bits: self.bits(decl, base),
            params: self
                .effective_params(decl, base)
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
        let none = Base::default();
        let mut rt = Runtime::default();
        assert_eq!(rt.bits(&d, &none), 1);
        assert!(rt.argv(&d).is_empty());
        let msg = rt.control_msg(&d, &none, Snoop::default());
        assert_eq!(msg.probe, ["a"]);
        assert_eq!(msg.int("report_period"), Some(5));

        rt.sub_probes = Some(vec!["b".into()]);
        rt.params
            .insert("report_period".into(), ParamValue::Int(10));
        rt.params.insert("gone".into(), ParamValue::Int(1));
        assert_eq!(rt.bits(&d, &none), 2);
        assert_eq!(rt.argv(&d), ["-P", "0x2", "-t", "10"]);
        let msg = rt.control_msg(&d, &none, Snoop::default());
        assert_eq!(msg.probe_bits, 2);
        assert_eq!(msg.int("report_period"), Some(10));
        assert!(!msg.params.contains_key("gone"));
    }

    #[test]
    fn the_command_line_is_the_base() {
        let d = decl();
        let argv: Vec<String> = ["/p/probe", "-t", "7", "-P3", "-x", "-t", "bad"]
            .map(String::from)
            .to_vec();
        let base = Base::from_argv(&d, &argv);
        assert_eq!(base.bits, Some(3));
        assert_eq!(base.params["report_period"], ParamValue::Int(7));
        let mut rt = Runtime::default();
        let msg = rt.control_msg(&d, &base, Snoop::default());
        assert_eq!(msg.probe_bits, 3);
        assert_eq!(msg.probe, ["a", "b"]);
        assert_eq!(msg.int("report_period"), Some(7));
        // What REST sets wins over the command line.
        rt.params.insert("report_period".into(), ParamValue::Int(9));
        rt.sub_probes = Some(vec!["b".into()]);
        let msg = rt.control_msg(&d, &base, Snoop::default());
        assert_eq!((msg.probe_bits, msg.int("report_period")), (2, Some(9)));
        assert_eq!(
            Base::from_argv(&d, &["p".into(), "-P".into(), "0".into()]).bits,
            Some(u32::MAX)
        );
    }
}
