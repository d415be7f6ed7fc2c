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
        // An installed shipped probe waits for a config entry, probes.init or REST to start it
        // (upstream HEAD's fixed probe table); other drop-ins run as found. A probe left out of
        // a tailored build ([`tailored_out`]) is not shipped by it: its file found in
        // `probes_dir` anyway (say, left over from a full install) is a drop-in like any
        // user's, run as found — no special case.
        if shipped_probes().any(|s| s == name) {
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

/// `probes/shipped.list`: the probes of a full build, one `NAME DIR SOURCE` line each.
const SHIPPED_LIST: &str = include_str!("../../../probes/shipped.list");

/// The probes this build carries, as `GG_PROBES` said when the crate was compiled (build.sh
/// sets it for a tailored build only): names separated by commas and/or whitespace; unset or
/// without a name, every probe of [`SHIPPED_LIST`]. Cargo recompiles the crate when the
/// variable changes (an `option_env!` is tracked).
const BUILD_SELECTION: &str = match option_env!("GG_PROBES") {
    Some(s) => s,
    None => "",
};

// A name `GG_PROBES` selects that `probes/shipped.list` does not list fails the build.
const _: () = if let Some(name) = first_unknown(SHIPPED_LIST, BUILD_SELECTION) {
    panic!("{}", name) // GG_PROBES names this probe, which probes/shipped.list does not list
};

/// Names of the probes installed with gala-gopher (`probes/shipped.list`, less those a
/// tailored build left out): each one found in `probes_dir` is declared, switched off, even
/// without a config entry, so the REST API can start it (upstream's fixed probe table).
pub fn shipped_probes() -> impl Iterator<Item = &'static str> {
    selected(SHIPPED_LIST, BUILD_SELECTION)
}

/// Names of `probes/shipped.list` that this (tailored) build left out: neither built nor
/// installed; the REST API answers them "not supported in the current version". Empty for a
/// full build.
pub fn tailored_out() -> impl Iterator<Item = &'static str> {
    left_out(SHIPPED_LIST, BUILD_SELECTION)
}

/// The NAMEs of a `shipped.list` text, in list order (comments and blank lines skipped).
fn listed(list: &str) -> impl Iterator<Item = &str> {
    list.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
}

/// Whether `b` separates two names of a selection: a comma or ASCII whitespace.
const fn is_separator(b: u8) -> bool {
    b == b',' || b.is_ascii_whitespace()
}

/// The names of a selection (`GG_PROBES`).
fn selection_names(selection: &str) -> impl Iterator<Item = &str> {
    selection
        .split(|c: char| u8::try_from(c).is_ok_and(is_separator))
        .filter(|n| !n.is_empty())
}

/// The NAMEs of `list` a build selecting `selection` carries, in list order: every one when
/// `selection` names none. A selected name `list` lacks is [`first_unknown`]'s concern.
fn selected<'a>(list: &'a str, selection: &'a str) -> impl Iterator<Item = &'a str> {
    let all = selection_names(selection).next().is_none();
    listed(list).filter(move |n| all || selection_names(selection).any(|s| s == *n))
}

/// The NAMEs of `list` a build selecting `selection` leaves out, in list order.
fn left_out<'a>(list: &'a str, selection: &'a str) -> impl Iterator<Item = &'a str> {
    listed(list).filter(move |n| !selected(list, selection).any(|s| s == *n))
}

/// The first name of `selection` that is no NAME of `list`. A `const fn`, so that the build
/// itself checks `GG_PROBES`; it reads `list` as [`listed`] does and `selection` as
/// [`selection_names`] does (a test holds them together).
const fn first_unknown<'a>(list: &str, selection: &'a str) -> Option<&'a str> {
    let sel = selection.as_bytes();
    let mut i = 0;
    while i < sel.len() {
        if is_separator(sel[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < sel.len() && !is_separator(sel[i]) {
            i += 1;
        }
        let name = sel.split_at(i).0.split_at(start).1;
        if !lists(list.as_bytes(), name) {
            return match std::str::from_utf8(name) {
                Ok(n) => Some(n),
                // Unreachable: separators are ASCII, so a name is whole UTF-8 sequences.
                Err(_) => Some(selection),
            };
        }
    }
    None
}

/// Whether `name` is the NAME (first word) of a line of `list` that is no comment.
const fn lists(list: &[u8], name: &[u8]) -> bool {
    let mut i = 0;
    while i < list.len() {
        while i < list.len() && list[i] != b'\n' && list[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while i < list.len() && !list[i].is_ascii_whitespace() {
            i += 1;
        }
        if i > start && list[start] != b'#' && same(list, start, i, name) {
            return true;
        }
        while i < list.len() && list[i] != b'\n' {
            i += 1;
        }
        i += 1;
    }
    false
}

/// Whether `list[start..end]` is `name`.
const fn same(list: &[u8], start: usize, end: usize, name: &[u8]) -> bool {
    if end - start != name.len() {
        return false;
    }
    let mut k = 0;
    while k < name.len() {
        if list[start + k] != name[k] {
            return false;
        }
        k += 1;
    }
    true
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
        let listed: Vec<&str> = listed(SHIPPED_LIST).collect();
        for n in ["system_infos", "tcpprobe", "taskprobe", "ioprobe"] {
            assert!(listed.contains(&n), "{listed:?}");
        }
        // The build's probes and those it left out split the list (whatever GG_PROBES said).
        let ours: Vec<&str> = shipped_probes().collect();
        let out: Vec<&str> = tailored_out().collect();
        assert!(!ours.is_empty());
        assert_eq!(ours.len() + out.len(), listed.len());
        assert!(ours.iter().all(|n| !out.contains(n)), "{ours:?} {out:?}");
        // Installed in probes_dir (a drop-in) or not (declared as shipped): off until asked.
        // A left-out probe's file is a plain drop-in: it runs as found.
        let installed = ours[0];
        let mut drop_ins = vec![installed, "mine"];
        drop_ins.extend(&out);
        let state = DesiredState::new(Vec::new());
        let d = state.declare(&names_of(&drop_ins), &mut Vec::new());
        let sw = |n: &str| {
            d.iter()
                .find(|d| d.probe.name == n)
                .map(|d| (d.base, d.probe.switch))
        };
        assert_eq!(sw(installed), Some((Base::DropIn, Switch::Off)));
        assert_eq!(sw("mine"), Some((Base::DropIn, Switch::On)));
        for n in &ours[1..] {
            assert_eq!(sw(n), Some((Base::Shipped, Switch::Off)), "{n}");
        }
        for n in &out {
            assert_eq!(sw(n), Some((Base::DropIn, Switch::On)), "{n}");
        }
        assert_eq!(d.len(), listed.len() + 1);
    }

    /// A list as `probes/shipped.list` writes it, with the odd spacing a hand edit leaves.
    const LIST: &str = "# NAME  DIR  SOURCE\n\
                        \n\
                        system_infos  probes/system_infos  cargo\n\
                        \ttcpprobe\tprobes/tcp\tcargo\r\n\
                        #ioprobe  probes/io  cargo\n\
                        taskprobe probes/proc cargo\n\
                        example_py";

    #[test]
    fn the_list_gives_its_names_in_order() {
        assert_eq!(
            listed(LIST).collect::<Vec<_>>(),
            ["system_infos", "tcpprobe", "taskprobe", "example_py"]
        );
    }

    #[test]
    fn a_selection_is_names_between_commas_and_whitespace() {
        let names = |s| selection_names(s).collect::<Vec<_>>();
        assert_eq!(names("a,b c\tд ,, e\n"), ["a", "b", "c", "д", "e"]);
        assert!(names("").is_empty());
        assert!(names(" ,\t, ").is_empty());
    }

    #[test]
    fn a_build_carries_the_selected_names_in_list_order() {
        let sel = |s| {
            (
                selected(LIST, s).collect::<Vec<_>>(),
                left_out(LIST, s).collect::<Vec<_>>(),
            )
        };
        let all = vec!["system_infos", "tcpprobe", "taskprobe", "example_py"];
        // Unset, empty or without a name: the full list.
        assert_eq!(sel(""), (all.clone(), vec![]));
        assert_eq!(sel(" , "), (all, vec![]));
        assert_eq!(
            sel("taskprobe, system_infos"),
            (
                vec!["system_infos", "taskprobe"],
                vec!["tcpprobe", "example_py"]
            )
        );
        assert_eq!(
            sel("tcpprobe tcpprobe"),
            (
                vec!["tcpprobe"],
                vec!["system_infos", "taskprobe", "example_py"]
            )
        );
    }

    #[test]
    fn a_selected_name_the_list_lacks_is_found_at_compile_time() {
        // A const context: what the build's own check runs.
        const BAD: Option<&str> = first_unknown(LIST, "tcpprobe,ioprobe");
        assert_eq!(BAD, Some("ioprobe"));
        const GOOD: Option<&str> = first_unknown(SHIPPED_LIST, BUILD_SELECTION);
        assert_eq!(GOOD, None);
        for sel in [
            "",
            "tcpprobe",
            "example_py, system_infos",
            "ioprobe",
            "tcp",
            "tcpprobes",
            "#ioprobe",
            "NAME",
            "#",
            "probes/tcp",
            "cargo",
            "tcpprobe\r",
            "TCPPROBE",
            "taskprobe nosuch tcpprobe",
            "д",
        ] {
            // The const reader agrees with the runtime one, name for name.
            let runtime = selection_names(sel).find(|s| !listed(LIST).any(|n| n == *s));
            assert_eq!(first_unknown(LIST, sel), runtime, "{sel:?}");
        }
        assert_eq!(first_unknown(LIST, "taskprobe nosuch x"), Some("nosuch"));
        assert_eq!(first_unknown(LIST, "cargo"), Some("cargo"));
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
