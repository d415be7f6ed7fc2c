//! Desired probe set: config `probes` / `extend_probes` entries plus drop-ins in `probes_dir`.
//!
//! The rule:
//! * a configured entry without command (`probes`) named `X` runs `probes_dir/X` or
//!   `probes_dir/X/X` (also the `.sh`/`.py` forms) with its `param` split like a shell would;
//!   its tables are `X.meta` beside the executable, else `meta_dir/X.meta`;
//! * a configured entry with command (`extend_probes`) runs `command` + `param`, both split; its
//!   tables are a `.meta` with the stem of the command's executable, beside it, if any;
//! * a drop-in is a regular file in `probes_dir` (or `probes_dir/D/D*`) that is executable or ends
//!   in `.sh`/`.py` and has `NAME.meta` beside it (`NAME` = file name without `.sh`/`.py`); it runs
//!   with switch on and no params unless a configured entry of the same name governs it.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{ProbeOrigin, ProbeSpec, StartCheck, Supervisor, Switch};

/// A probe entry from the config (`probes` when `command` is `None`, else `extend_probes`).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfiguredProbe {
    /// Probe name.
    pub name: String,
    /// `extend_probes` command (split like a shell would, never run by one).
    pub command: Option<String>,
    /// Parameters appended to the command line (split like a shell would).
    pub param: String,
    /// on / off / auto.
    pub switch: Switch,
    /// Check for `auto`.
    pub start_check: Option<StartCheck>,
}

/// Identity of a file at scan time; a change (replaced script, edited meta) restarts the probe.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    path: PathBuf,
    modified: Option<SystemTime>,
    inode: u64,
    len: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let md = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        path: path.to_path_buf(),
        modified: md.modified().ok(),
        inode: md.ino(),
        len: md.len(),
    })
}

/// File stamps of each probe's executable and `.meta` files, by probe name.
type Stamps = BTreeMap<String, Vec<FileStamp>>;

/// Result of one scan.
#[derive(Debug, Default)]
struct Discovery {
    specs: Vec<ProbeSpec>,
    warnings: Vec<String>,
    stamps: Stamps,
}

/// A probe executable found in `probes_dir`.
#[derive(Debug, Clone)]
struct DropIn {
    path: PathBuf,
    meta: PathBuf,
}

/// Interpreter suffixes: a file with one is a probe even without the executable bit.
const SCRIPT_SUFFIXES: [(&str, &str); 2] = [(".sh", "/bin/sh"), (".py", "python3")];

/// Files with these suffixes are never probes.
const NEVER_PROBES: [&str; 3] = [".meta", ".md", ".conf"];

fn file_name(path: &Path) -> Option<&str> {
    path.file_name()?.to_str()
}

/// Probe name of a candidate file: its name without `.sh`/`.py`.
fn probe_name(file: &str) -> &str {
    SCRIPT_SUFFIXES
        .iter()
        .find_map(|(sfx, _)| file.strip_suffix(sfx))
        .unwrap_or(file)
}

fn is_executable(md: &std::fs::Metadata) -> bool {
    md.permissions().mode() & 0o111 != 0
}

/// Is `path` a runnable probe file (regular, not hidden, executable or a script)?
fn runnable(path: &Path) -> bool {
    let Some(name) = file_name(path) else {
        return false;
    };
    if name.starts_with('.') || NEVER_PROBES.iter().any(|s| name.ends_with(s)) {
        return false;
    }
    let Ok(md) = std::fs::metadata(path) else {
        return false;
    };
    md.is_file() && (is_executable(&md) || SCRIPT_SUFFIXES.iter().any(|(s, _)| name.ends_with(s)))
}

/// argv to run a probe file: directly if executable, else through its interpreter.
fn exec_argv(path: &Path) -> Vec<String> {
    let p = path.to_string_lossy().into_owned();
    let executable = std::fs::metadata(path).is_ok_and(|md| is_executable(&md));
    if !executable {
        if let Some(name) = file_name(path) {
            if let Some((_, interp)) = SCRIPT_SUFFIXES.iter().find(|(s, _)| name.ends_with(s)) {
                return vec![(*interp).to_string(), p];
            }
        }
    }
    vec![p]
}

fn sorted_entries(dir: &Path) -> std::io::Result<Vec<(OsString, PathBuf)>> {
    let mut v: Vec<(OsString, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| (e.file_name(), e.path()))
        .collect();
    v.sort();
    Ok(v)
}

/// All drop-ins, by name; the first in file-name order wins a duplicate name.
fn scan_drop_ins(probes_dir: &Path, warnings: &mut Vec<String>) -> BTreeMap<String, DropIn> {
    let mut found = BTreeMap::new();
    let entries = match sorted_entries(probes_dir) {
        Ok(e) => e,
        Err(e) => {
            warnings.push(format!("probes_dir {}: {e}", probes_dir.display()));
            return found;
        }
    };
    let mut candidates = Vec::new();
    for (name, path) in entries {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            // probes_dir/D/D*: a probe may live in its own folder with helpers beside it.
            if let Ok(inner) = sorted_entries(&path) {
                candidates.extend(
                    inner
                        .into_iter()
                        .filter(|(n, _)| n.to_str().is_some_and(|n| n.starts_with(name)))
                        .map(|(_, p)| p),
                );
            }
        } else {
            candidates.push(path);
        }
    }
    for path in candidates {
        if !runnable(&path) {
            continue;
        }
        let Some(file) = file_name(&path) else {
            continue;
        };
        let name = probe_name(file).to_string();
        let meta = path.with_file_name(format!("{name}.meta"));
        if !meta.is_file() {
            continue;
        }
        if let Some(first) = found.get(&name) {
            let first: &DropIn = first;
            warnings.push(format!(
                "drop-in {} ignored: probe {name} is already {}",
                path.display(),
                first.path.display()
            ));
            continue;
        }
        found.insert(name, DropIn { path, meta });
    }
    found
}

/// Executable of a `probes` entry `name` in `probes_dir`.
fn native_executable(probes_dir: &Path, name: &str) -> Option<PathBuf> {
    let dir = probes_dir.join(name);
    let candidates = [
        probes_dir.join(name),
        dir.join(name),
        probes_dir.join(format!("{name}.sh")),
        probes_dir.join(format!("{name}.py")),
        dir.join(format!("{name}.sh")),
        dir.join(format!("{name}.py")),
    ];
    candidates.into_iter().find(|p| runnable(p))
}

/// `.meta` beside the first path-like element of `command` with the same stem.
fn meta_beside_command(command: &[String]) -> Option<PathBuf> {
    command
        .iter()
        .filter(|a| a.contains('/'))
        .map(Path::new)
        .find_map(|p| {
            let stem = p.file_stem()?.to_str()?;
            let meta = p.with_file_name(format!("{stem}.meta"));
            meta.is_file().then_some(meta)
        })
}

fn probe_env(name: &str, sdk_dir: &Path) -> Vec<(String, String)> {
    let sdk = sdk_dir.to_string_lossy().into_owned();
    let pythonpath = match std::env::var("PYTHONPATH") {
        Ok(old) if !old.is_empty() => format!("{sdk}:{old}"),
        _ => sdk.clone(),
    };
    vec![
        ("GALA_GOPHER_SDK_DIR".to_string(), sdk),
        ("GALA_GOPHER_PROBE".to_string(), name.to_string()),
        ("PYTHONPATH".to_string(), pythonpath),
    ]
}

fn split(what: &str, name: &str, s: &str, warnings: &mut Vec<String>) -> Option<Vec<String>> {
    match shell_words::split(s) {
        Ok(v) => Some(v),
        Err(e) => {
            warnings.push(format!(
                "probe {name} skipped: cannot split {what} {s:?}: {e}"
            ));
            None
        }
    }
}

fn stamps_of(files: impl IntoIterator<Item = PathBuf>) -> Vec<FileStamp> {
    files.into_iter().filter_map(|p| stamp(&p)).collect()
}

/// Spec for a configured entry, or `None` (with a warning) if it cannot be built.
fn configured_spec(
    entry: &ConfiguredProbe,
    probes_dir: &Path,
    meta_dir: &Path,
    sdk_dir: &Path,
    drop_ins: &BTreeMap<String, DropIn>,
    warnings: &mut Vec<String>,
) -> Option<(ProbeSpec, Vec<FileStamp>)> {
    let name = &entry.name;
    let params = split("param", name, &entry.param, warnings)?;
    let (origin, mut argv, meta_files, files) = match &entry.command {
        Some(command) => {
            let cmd = split("command", name, command, warnings)?;
            if cmd.is_empty() {
                warnings.push(format!("probe {name} skipped: empty command"));
                return None;
            }
            let meta: Vec<PathBuf> = meta_beside_command(&cmd).into_iter().collect();
            let files = cmd
                .iter()
                .filter(|a| a.contains('/'))
                .map(PathBuf::from)
                .chain(meta.iter().cloned());
            let files = stamps_of(files);
            (ProbeOrigin::Extend, cmd, meta, files)
        }
        None => {
            let (exe, meta) = match drop_ins.get(name) {
                Some(d) => (Some(d.path.clone()), Some(d.meta.clone())),
                None => {
                    let exe = native_executable(probes_dir, name);
                    let beside = exe
                        .as_ref()
                        .map(|e| e.with_file_name(format!("{name}.meta")))
                        .filter(|m| m.is_file());
                    let global = meta_dir.join(format!("{name}.meta"));
                    (exe, beside.or_else(|| global.is_file().then_some(global)))
                }
            };
            let exe = exe.unwrap_or_else(|| {
                if entry.switch != Switch::Off {
                    warnings.push(format!(
                        "probe {name}: no executable {name} in {}",
                        probes_dir.display()
                    ));
                }
                // Kept so the probe shows up as Failed with the spawn error.
                probes_dir.join(name)
            });
            let meta: Vec<PathBuf> = meta.into_iter().collect();
            let files = stamps_of(std::iter::once(exe.clone()).chain(meta.iter().cloned()));
            (ProbeOrigin::Native, exec_argv(&exe), meta, files)
        }
    };
    argv.extend(params);
    let spec = ProbeSpec {
        name: name.clone(),
        argv,
        env: probe_env(name, sdk_dir),
        origin,
        switch: entry.switch,
        start_check: entry.start_check.clone(),
        meta_files,
    };
    Some((spec, files))
}

fn discover(
    probes_dir: &Path,
    meta_dir: &Path,
    configured: &[ConfiguredProbe],
    sdk_dir: &Path,
) -> Discovery {
    let mut d = Discovery::default();
    let drop_ins = scan_drop_ins(probes_dir, &mut d.warnings);
    let mut by_name: BTreeMap<String, ProbeSpec> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for entry in configured {
        if !seen.insert(entry.name.as_str()) {
            d.warnings.push(format!(
                "probe {} configured twice, keeping the first entry",
                entry.name
            ));
            continue;
        }
        if let Some((spec, files)) = configured_spec(
            entry,
            probes_dir,
            meta_dir,
            sdk_dir,
            &drop_ins,
            &mut d.warnings,
        ) {
            d.stamps.insert(spec.name.clone(), files);
            by_name.insert(spec.name.clone(), spec);
        }
    }
    for (name, drop_in) in &drop_ins {
        if seen.contains(name.as_str()) {
            continue;
        }
        let spec = ProbeSpec {
            name: name.clone(),
            argv: exec_argv(&drop_in.path),
            env: probe_env(name, sdk_dir),
            origin: ProbeOrigin::DropIn,
            switch: Switch::On,
            start_check: None,
            meta_files: vec![drop_in.meta.clone()],
        };
        let files = stamps_of([drop_in.path.clone(), drop_in.meta.clone()]);
        d.stamps.insert(name.clone(), files);
        by_name.insert(name.clone(), spec);
    }
    d.specs = by_name.into_values().collect();
    d
}

/// The desired probe set (sorted by name) and warnings about entries that were skipped or
/// cannot run. Reads `probes_dir`; never fails as a whole.
pub fn desired_probes(
    probes_dir: &Path,
    meta_dir: &Path,
    configured: &[ConfiguredProbe],
    sdk_dir: &Path,
) -> (Vec<ProbeSpec>, Vec<String>) {
    let d = discover(probes_dir, meta_dir, configured, sdk_dir);
    (d.specs, d.warnings)
}

/// What the discovery loop scans.
#[derive(Debug, Clone)]
pub struct DiscoveryInputs {
    /// `global.probes_dir`: native probes and drop-ins.
    pub probes_dir: PathBuf,
    /// Directory of global `.meta` files.
    pub meta_dir: PathBuf,
    /// Probe SDK directory exported to probes (`GALA_GOPHER_SDK_DIR`, `PYTHONPATH`).
    pub sdk_dir: PathBuf,
    /// Configured entries; send a new list (REST `PUT`, config reload) to apply it at once.
    pub configured: watch::Receiver<Vec<ConfiguredProbe>>,
}

/// Default rescan period of [`spawn_discovery_loop`].
pub const DISCOVERY_INTERVAL: Duration = Duration::from_secs(1);

/// Rescan every `interval` (and whenever `configured` changes) and reconcile `supervisor` when
/// the desired set changed; a probe whose executable or `.meta` file changed is restarted.
/// New warnings are logged once. Abort the handle to stop it.
pub fn spawn_discovery_loop(
    supervisor: Supervisor,
    inputs: DiscoveryInputs,
    interval: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let DiscoveryInputs {
            probes_dir,
            meta_dir,
            sdk_dir,
            mut configured,
        } = inputs;
        let mut config_open = true;
        let mut current: Option<(Vec<ProbeSpec>, Stamps)> = None;
        let mut last_warnings: BTreeSet<String> = BTreeSet::new();
        loop {
            let entries = configured.borrow_and_update().clone();
            let (p, m, s) = (probes_dir.clone(), meta_dir.clone(), sdk_dir.clone());
            let scan = tokio::task::spawn_blocking(move || discover(&p, &m, &entries, &s)).await;
            match scan {
                Ok(d) => {
                    let warnings: BTreeSet<String> = d.warnings.into_iter().collect();
                    for w in warnings.difference(&last_warnings) {
                        tracing::warn!("discovery: {w}");
                    }
                    last_warnings = warnings;
                    let unchanged = current
                        .as_ref()
                        .is_some_and(|(specs, stamps)| *specs == d.specs && *stamps == d.stamps);
                    if !unchanged {
                        supervisor.reconcile(d.specs.clone()).await;
                        if let Some((old_specs, old_stamps)) = &current {
                            // Same spec but different files: reconcile kept it running.
                            for spec in &d.specs {
                                let same_spec = old_specs.iter().any(|o| o == spec);
                                if same_spec
                                    && old_stamps.get(&spec.name) != d.stamps.get(&spec.name)
                                {
                                    tracing::info!(probe = %spec.name, "probe files changed, restarting");
                                    supervisor.restart(&spec.name).await;
                                }
                            }
                        }
                        current = Some((d.specs, d.stamps));
                    }
                }
                Err(e) => tracing::error!("discovery scan failed: {e}"),
            }
            if config_open {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    changed = configured.changed() => config_open = changed.is_ok(),
                }
            } else {
                tokio::time::sleep(interval).await;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_name_strips_script_suffix_only() {
        assert_eq!(probe_name("foo.sh"), "foo");
        assert_eq!(probe_name("foo.py"), "foo");
        assert_eq!(probe_name("foo"), "foo");
        assert_eq!(probe_name("foo.bin"), "foo.bin");
    }
}
