//! The merge rule: which source's settings a probe runs with.
//!
//! Per probe name, the base is its config entry if there is one, else the drop-in of that name
//! with default settings (switch on, no params — off for a shipped probe,
//! [`shipped_probes`]); without either, the probe is not run (its overrides wait, dormant, for
//! one to appear). Overrides then apply in rising [`Source`] order,
//! field by field: a field an override leaves `None` keeps the value below it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::runtime::Runtime;

use crate::config::Switch;
use crate::supervisor::discovery::{Base, ConfiguredProbe, Declare, Declared};

/// Where desired probe state comes from, in rising precedence (`Ord`): a later source wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// A drop-in found in `probes_dir`: runs with defaults (switch on, no params).
    DropIn,
    /// A `probes` / `extend_probes` entry of the config file (re-read on SIGHUP).
    Config,
    /// A line of `probes.init`, replayed at start (upstream's persisted REST state).
    ProbesInit,
    /// A REST `PUT /<probe>` while the daemon runs.
    Rest,
}

impl Source {
    /// Every source, lowest precedence first.
    pub const ALL: [Source; 4] = [
        Source::DropIn,
        Source::Config,
        Source::ProbesInit,
        Source::Rest,
    ];

    /// Whether this source is set through [`crate::control::Control::set_override`] (the others
    /// are read from files).
    pub fn is_override(self) -> bool {
        matches!(self, Source::ProbesInit | Source::Rest)
    }
}

/// What an override source changes of one probe; a `None` field keeps the value of the sources
/// below it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Override {
    /// `on` (upstream `state: running`), `off` (`stopped`) or `auto` (which keeps the start
    /// check of the source below; a probe with none reports that as its last error).
    pub switch: Option<Switch>,
    /// Replaces the whole parameter string (appended to the command line, split like a shell
    /// would): upstream's REST document is a probe's complete configuration.
    pub param: Option<String>,
    /// Replaces the run-time settings (sub-probes, params, snoopers, custom labels) as a whole.
    pub runtime: Option<Arc<Runtime>>,
}

/// Overrides of one probe, by source.
pub(crate) type Overrides = BTreeMap<Source, Override>;

/// Every source of desired probe state except the drop-ins, which each scan supplies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredState {
    entries: Vec<ConfiguredProbe>,
    overrides: BTreeMap<String, Overrides>,
}

impl DesiredState {
    /// Config entries (in config order) and no overrides.
    pub fn new(entries: Vec<ConfiguredProbe>) -> Self {
        DesiredState {
            entries,
            overrides: BTreeMap::new(),
        }
    }

    /// The config entries.
    pub fn entries(&self) -> &[ConfiguredProbe] {
        &self.entries
    }

    /// The override `source` holds for probe `name`, if any.
    pub fn override_of(&self, name: &str, source: Source) -> Option<&Override> {
        self.overrides.get(name)?.get(&source)
    }

    /// Probe names with at least one override.
    pub fn overridden(&self) -> impl Iterator<Item = &str> {
        self.overrides.keys().map(String::as_str)
    }

    pub(crate) fn set_entries(&mut self, entries: Vec<ConfiguredProbe>) {
        self.entries = entries;
    }

    /// Set (or replace) `source`'s override of `name`; false if nothing changed.
    pub(crate) fn set_override(&mut self, name: &str, source: Source, ov: Override) -> bool {
        let slot = self.overrides.entry(name.to_string()).or_default();
        slot.insert(source, ov.clone()) != Some(ov)
    }

    /// Drop `source`'s override of `name`; false if there was none.
    pub(crate) fn clear_override(&mut self, name: &str, source: Source) -> bool {
        let Some(slot) = self.overrides.get_mut(name) else {
            return false;
        };
        let removed = slot.remove(&source).is_some();
        if slot.is_empty() {
            self.overrides.remove(name);
        }
        removed
    }

    /// Number of override slots held (every source, every name).
    pub(crate) fn override_count(&self) -> usize {
        self.overrides.values().map(BTreeMap::len).sum()
    }
}

impl Declare for DesiredState {
    fn declare(&self, drop_ins: &BTreeSet<String>, warnings: &mut Vec<String>) -> Vec<Declared> {
        merge(&self.entries, &self.overrides, drop_ins, warnings)
    }
}

/// Config entries alone (no overrides) over the drop-ins.
impl Declare for [ConfiguredProbe] {
    fn declare(&self, drop_ins: &BTreeSet<String>, warnings: &mut Vec<String>) -> Vec<Declared> {
        merge(self, &BTreeMap::new(), drop_ins, warnings)
    }
}

impl Declare for Vec<ConfiguredProbe> {
    fn declare(&self, drop_ins: &BTreeSet<String>, warnings: &mut Vec<String>) -> Vec<Declared> {
        self.as_slice().declare(drop_ins, warnings)
    }
}

/// The merge rule (module doc): config entries in config order (the first of a duplicated name
/// wins, with a warning), then each drop-in without an entry, every one with its overrides
/// applied.
pub fn merge(
    entries: &[ConfiguredProbe],
    overrides: &BTreeMap<String, Overrides>,
    drop_ins: &BTreeSet<String>,
    warnings: &mut Vec<String>,
) -> Vec<Declared> {
    let mut out = Vec::with_capacity(entries.len() + drop_ins.len());
    let mut seen = BTreeSet::new();
    for entry in entries {
        if !seen.insert(entry.name.as_str()) {
            warnings.push(format!(
                "probe {} configured twice, keeping the first entry",
                entry.name
            ));
            continue;
        }
        let (probe, runtime) = apply(entry.clone(), overrides.get(&entry.name));
        out.push(Declared {
            probe,
            base: Base::Entry,
            runtime,
        });
    }
    for name in drop_ins {
        if seen.contains(name.as_str()) {
            continue;
        }
        seen.insert(name.as_str());
        let mut probe = drop_in_defaults(name);
        if shipped_probes().any(|s| s == name) {
            // An installed shipped probe waits for a config entry, probes.init or REST to
            // start it (upstream HEAD's fixed probe table); other drop-ins run as found.
            probe.switch = Switch::Off;
        }
        let (probe, runtime) = apply(probe, overrides.get(name));
        out.push(Declared {
            probe,
            base: Base::DropIn,
            runtime,
        });
    }
    for name in shipped_probes() {
        if seen.contains(name) {
            continue;
        }
        let mut probe = drop_in_defaults(name);
        probe.switch = Switch::Off;
        let (probe, runtime) = apply(probe, overrides.get(name));
        out.push(Declared {
            probe,
            base: Base::Shipped,
            runtime,
        });
    }
    out
}

/// Names of the probes installed with gala-gopher (`probes/shipped.list`): each one found in
/// `probes_dir` is declared, switched off, even without a config entry, so the REST API can
/// start it (upstream's fixed probe table).
pub fn shipped_probes() -> impl Iterator<Item = &'static str> {
    include_str!("../../../probes/shipped.list")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
}

/// A drop-in's settings when no entry governs it.
fn drop_in_defaults(name: &str) -> ConfiguredProbe {
    ConfiguredProbe {
        name: name.to_string(),
        command: None,
        param: String::new(),
        switch: Switch::On,
        start_check: None,
    }
}

fn apply(
    mut probe: ConfiguredProbe,
    overrides: Option<&Overrides>,
) -> (ConfiguredProbe, Option<Arc<Runtime>>) {
    let mut runtime = None;
    // BTreeMap order is `Source` order: the highest source is applied last and wins.
    for ov in overrides.into_iter().flat_map(BTreeMap::values) {
        if let Some(switch) = ov.switch {
            probe.switch = switch;
        }
        if let Some(param) = &ov.param {
            probe.param.clone_from(param);
        }
        if let Some(rt) = &ov.runtime {
            runtime = Some(Arc::clone(rt));
        }
    }
    (probe, runtime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::StartCheck;

    fn entry(name: &str, command: Option<&str>, param: &str, switch: Switch) -> ConfiguredProbe {
        ConfiguredProbe {
            name: name.to_string(),
            command: command.map(str::to_string),
            param: param.to_string(),
            switch,
            start_check: None,
        }
    }

    fn names(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// `name base switch param` per declared probe (shipped probes left out).
    fn render(d: &[Declared]) -> Vec<String> {
        d.iter()
            .filter(|d| d.base != Base::Shipped)
            .map(|d| {
                format!(
                    "{} {:?} {} {:?}",
                    d.probe.name, d.base, d.probe.switch, d.probe.param
                )
            })
            .collect()
    }

    #[test]
    fn shipped_probes_are_listed_and_wait_to_be_started() {
        let names: Vec<&str> = shipped_probes().collect();
        for n in ["system_infos", "tcpprobe", "taskprobe", "ioprobe"] {
            assert!(names.contains(&n), "{names:?}");
        }
        // Installed in probes_dir (a drop-in) or not (declared as shipped): off until asked.
        let state = DesiredState::new(Vec::new());
        let d = state.declare(&names_of(&["tcpprobe", "mine"]), &mut Vec::new());
        let sw = |n: &str| {
            d.iter()
                .find(|d| d.probe.name == n)
                .map(|d| (d.base, d.probe.switch))
        };
        assert_eq!(sw("tcpprobe"), Some((Base::DropIn, Switch::Off)));
        assert_eq!(sw("mine"), Some((Base::DropIn, Switch::On)));
        assert_eq!(sw("ioprobe"), Some((Base::Shipped, Switch::Off)));
    }

    fn names_of(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sources_rise_in_the_documented_order() {
        assert!(Source::DropIn < Source::Config);
        assert!(Source::Config < Source::ProbesInit);
        assert!(Source::ProbesInit < Source::Rest);
        let mut sorted = Source::ALL;
        sorted.sort();
        assert_eq!(sorted, Source::ALL);
        let overrides: Vec<Source> = Source::ALL
            .into_iter()
            .filter(|s| s.is_override())
            .collect();
        assert_eq!(overrides, [Source::ProbesInit, Source::Rest]);
    }

    #[test]
    fn config_entry_governs_the_drop_in_of_its_name() {
        let state = DesiredState::new(vec![
            entry("offp", None, "-v", Switch::Off),
            entry("tcp", Some("/x/tcpprobe"), "-t 5", Switch::On),
        ]);
        let mut warnings = Vec::new();
        let d = state.declare(&names(&["foo", "offp"]), &mut warnings);
        assert_eq!(
            render(&d),
            [
                "offp Entry off \"-v\"",
                "tcp Entry on \"-t 5\"",
                "foo DropIn on \"\"",
            ]
        );
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn first_of_a_duplicated_entry_wins_with_a_warning() {
        let entries = vec![
            entry("tcp", Some("/a"), "", Switch::On),
            entry("tcp", Some("/b"), "", Switch::Off),
        ];
        let mut warnings = Vec::new();
        let d = entries.declare(&names(&["tcp"]), &mut warnings);
        assert_eq!(d.iter().filter(|d| d.base != Base::Shipped).count(), 1);
        assert_eq!(d[0].probe.command.as_deref(), Some("/a"));
        assert_eq!(d[0].base, Base::Entry);
        assert_eq!(
            warnings,
            ["probe tcp configured twice, keeping the first entry"]
        );
    }

    #[test]
    fn overrides_apply_field_by_field_highest_source_last() {
        let mut e = entry("tcp", Some("/x/tcpprobe"), "-t 5", Switch::Auto);
        e.start_check = Some(StartCheck::ShellCount("echo 1".into()));
        let mut state = DesiredState::new(vec![e]);
        assert!(state.set_override(
            "tcp",
            Source::ProbesInit,
            Override {
                switch: Some(Switch::On),
                param: Some("-t 10".into()),
                runtime: None,
            },
        ));
        let d = state.declare(&BTreeSet::new(), &mut Vec::new());
        assert_eq!(render(&d), ["tcp Entry on \"-t 10\""]);
        // The command and start check of the entry stay.
        assert_eq!(d[0].probe.command.as_deref(), Some("/x/tcpprobe"));
        assert!(d[0].probe.start_check.is_some());

        // REST beats probes.init on what it sets; probes.init still gives the rest.
        assert!(state.set_override(
            "tcp",
            Source::Rest,
            Override {
                switch: Some(Switch::Off),
                param: None,
                runtime: None,
            },
        ));
        let d = state.declare(&BTreeSet::new(), &mut Vec::new());
        assert_eq!(render(&d), ["tcp Entry off \"-t 10\""]);

        // Clearing REST falls back to probes.init, clearing that to the entry.
        assert!(state.clear_override("tcp", Source::Rest));
        assert!(!state.clear_override("tcp", Source::Rest));
        let d = state.declare(&BTreeSet::new(), &mut Vec::new());
        assert_eq!(render(&d), ["tcp Entry on \"-t 10\""]);
        assert!(state.clear_override("tcp", Source::ProbesInit));
        assert_eq!(state.override_count(), 0);
        let d = state.declare(&BTreeSet::new(), &mut Vec::new());
        assert_eq!(render(&d), ["tcp Entry auto \"-t 5\""]);
    }

    #[test]
    fn overrides_govern_drop_ins_too_and_wait_for_a_base() {
        let mut state = DesiredState::new(Vec::new());
        let off = Override {
            switch: Some(Switch::Off),
            param: None,
            runtime: None,
        };
        state.set_override("foo", Source::Rest, off.clone());
        state.set_override(
            "ghost",
            Source::Rest,
            Override {
                switch: None,
                param: Some("-v".into()),
                runtime: None,
            },
        );
        // Setting the same value again changes nothing.
        assert!(!state.set_override("foo", Source::Rest, off));
        // No drop-in or entry named ghost: nothing to run, the override waits.
        let d = state.declare(&names(&["foo"]), &mut Vec::new());
        assert_eq!(render(&d), ["foo DropIn off \"\""]);
        let d = state.declare(&names(&["foo", "ghost"]), &mut Vec::new());
        assert_eq!(
            render(&d),
            ["foo DropIn off \"\"", "ghost DropIn on \"-v\""]
        );
        assert_eq!(state.overridden().collect::<Vec<_>>(), ["foo", "ghost"]);
    }

    #[test]
    fn a_reload_keeps_the_overrides() {
        let mut state = DesiredState::new(vec![entry("a", None, "", Switch::On)]);
        state.set_override(
            "a",
            Source::Rest,
            Override {
                switch: Some(Switch::Off),
                param: None,
                runtime: None,
            },
        );
        state.set_entries(vec![entry("a", None, "-x", Switch::On)]);
        let d = state.declare(&BTreeSet::new(), &mut Vec::new());
        assert_eq!(render(&d), ["a Entry off \"-x\""]);
    }
}
