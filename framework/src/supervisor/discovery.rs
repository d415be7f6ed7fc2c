//! Files → probe specs: scans `probes_dir` for drop-ins, asks the desired state ([`Declare`],
//! implemented by [`crate::control`], the one place where sources are merged) which probes to
//! run given the drop-ins found, and resolves each declaration to a [`ProbeSpec`].
//!
//! The rule:
//! * a configured entry without command (`probes`) named `X` runs `probes_dir/X` or
//!   `probes_dir/X/X` (also the `.sh`/`.py` forms) with its `param` split like a shell would;
//!   its tables are `X.meta` beside the executable, else `meta_dir/X.meta`;
//! * a configured entry with command (`extend_probes`) runs `command` + `param`, both split; its
//!   tables are a `.meta` with the stem of the command's executable, beside it, if any;
//! * a drop-in is a regular file in `probes_dir` (or `probes_dir/D/D*`) that is executable or ends
//!   in `.sh`/`.py` and has `NAME.meta` beside it (`NAME` = file name without `.sh`/`.py`); declared
//!   on its own ([`Base::DropIn`]) it runs with what the desired state gives it (by default
//!   switch on, no params), declared as a configured entry it runs as that entry says.
//!
//! Every file that would be executed or read (probe, interpreter, script, `.meta`) and the SDK
//! folder must pass the ownership rule of [`super::trust`]; refused ones never run. A read that
//! fails for any reason other than "not found" keeps what the previous scan decided for the
//! probes it concerns: only a successful observation that a file is gone removes a probe.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::trust::{valid_probe_name, which, Refusal, TrustCheck, TrustError, Trusted};
use super::{ProbeOrigin, ProbeSpec, StartCheck, Supervisor, Switch};
use crate::telemetry::{ProbeState, RefusalReason, Telemetry};
use probe_decl::Declaration;

/// How one probe is declared: a config entry (`probes` when `command` is `None`, else
/// `extend_probes`), or a drop-in's settings, with any overrides already applied.
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

/// What a declared probe rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// A config entry: `extend_probes` (its `command`) or `probes` (found by name in
    /// `probes_dir`, a drop-in of that name included).
    Entry,
    /// A drop-in the scan found: its command line followed by `param`.
    DropIn,
    /// A shipped probe ([`crate::control::merge::shipped_probes`]) without entry or drop-in:
    /// resolved like a `probes` entry, silently left out when its executable is not installed.
    Shipped,
}

/// One probe to resolve into a [`ProbeSpec`].
#[derive(Debug, Clone, PartialEq)]
pub struct Declared {
    /// Name, command, param, switch and start check to run it with.
    pub probe: ConfiguredProbe,
    /// What it rests on.
    pub base: Base,
    /// Run-time settings from an override (REST, `probes.init`), if any.
    pub runtime: Option<Arc<crate::control::runtime::Runtime>>,
}

/// The desired probes, given the drop-ins a scan found. Implemented by [`crate::control`] (its
/// merged state, and a bare list of config entries); discovery only resolves what it declares.
pub trait Declare {
    /// Each probe to run, once per name. `drop_ins` are the names of the drop-ins found (trusted
    /// and checked); problems with the sources (a name configured twice) go to `warnings`.
    fn declare(&self, drop_ins: &BTreeSet<String>, warnings: &mut Vec<String>) -> Vec<Declared>;
}

impl<T: Declare + ?Sized> Declare for Arc<T> {
    fn declare(&self, drop_ins: &BTreeSet<String>, warnings: &mut Vec<String>) -> Vec<Declared> {
        (**self).declare(drop_ins, warnings)
    }
}

/// Identity of a file at scan time; a change (replaced script, edited meta) restarts the probe.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    path: PathBuf,
    modified: Option<SystemTime>,
    dev_ino: (u64, u64),
    len: u64,
}

impl FileStamp {
    fn of(path: &Path, t: &Trusted) -> Self {
        FileStamp {
            path: path.to_path_buf(),
            modified: t.modified,
            dev_ino: t.dev_ino,
            len: t.len,
        }
    }
}

/// File stamps of each probe's executable and `.meta` files, by probe name.
type Stamps = BTreeMap<String, Vec<FileStamp>>;

/// A checked drop-in found in `probes_dir`.
#[derive(Debug, Clone)]
struct DropIn {
    path: PathBuf,
    meta: PathBuf,
    argv: Vec<String>,
    stamps: Vec<FileStamp>,
}

/// What the previous scan decided; reused for whatever a failed read leaves unknown.
#[derive(Debug, Clone, Default)]
struct Previous {
    specs: BTreeMap<String, (ProbeSpec, Vec<FileStamp>)>,
    drop_ins: BTreeMap<String, DropIn>,
    sdk_trusted: Option<bool>,
    /// Probe declarations read from `.meta` files, by file identity.
    decls: DeclCache,
}

/// `.meta` file → its probe declaration (or why it is refused), valid while the file is unchanged.
type DeclCache = BTreeMap<PathBuf, (FileStamp, Result<Option<Arc<Declaration>>, String>)>;

/// The probe declaration (`probe` group) of the first of `meta_files` that has one, read through
/// `cache`, a file being unchanged while its scan stamp (in `stamps`) is; a refused declaration is
/// a warning and leaves the probe undeclared (state only).
fn declaration_of(
    name: &str,
    meta_files: &[PathBuf],
    stamps: &[FileStamp],
    cache: &mut DeclCache,
    warnings: &mut Vec<String>,
) -> Option<Arc<Declaration>> {
    for path in meta_files {
        let Some(id) = stamps.iter().find(|s| s.path == *path) else {
            continue;
        };
        let fresh = match cache.get(path) {
            Some((seen, _)) => seen != id,
            None => true,
        };
        let id = id.clone();
        if fresh {
            // A file that cannot be read or parsed is the ingest path's to report (it refuses
            // the probe's tables); only a bad `probe` group is reported here.
            let read = crate::meta::read_meta_text(
                path,
                crate::meta::MetaLimits::default().max_file_bytes,
            )
            .ok()
            .and_then(|(text, _)| gala_libconfig::parse_str(&text, path).ok())
            .map_or(Ok(None), |root| {
                Declaration::from_node(&root)
                    .map(|d| d.map(Arc::new))
                    .map_err(|e| e.to_string())
            });
            cache.insert(path.clone(), (id, read));
        }
        match cache.get(path).map(|(_, r)| r) {
            Some(Ok(Some(d))) => return Some(Arc::clone(d)),
            Some(Ok(None)) | None => {}
            Some(Err(e)) => {
                warnings.push(format!(
                    "probe {name}: {e}; its run-time settings are refused"
                ));
                return None;
            }
        }
    }
    None
}

/// Result of one scan.
#[derive(Debug, Default)]
struct Discovery {
    specs: Vec<ProbeSpec>,
    warnings: Vec<String>,
    stamps: Stamps,
    /// Files refused by the ownership rule (or for their name) in this scan.
    refusals: Vec<Refusal>,
    /// Failed reads in this scan (each also a warning).
    errors: usize,
    /// Configured probes that cannot run because of a refusal: name → reason.
    failed: BTreeMap<String, String>,
    next: Previous,
}

/// Interpreter suffixes: a file with one is a probe even without the executable bit.
const SCRIPT_SUFFIXES: [(&str, &str); 2] = [(".sh", "/bin/sh"), (".py", "python3")];

/// Files with these suffixes are never probes.
const NEVER_PROBES: [&str; 3] = [".meta", ".md", ".conf"];

/// A command word with one of these suffixes (and a `/`) names code the interpreter will run.
const CODE_SUFFIXES: [&str; 11] = [
    ".sh", ".bash", ".py", ".pl", ".rb", ".js", ".jar", ".lua", ".php", ".tcl", ".awk",
];

/// Programs whose first non-option argument is code to run (a version suffix such as
/// `python3.11` or `perl5.36` is ignored).
const INTERPRETERS: [&str; 25] = [
    "sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish", "busybox", "python",
    "pypy", "perl", "ruby", "node", "nodejs", "java", "php", "lua", "luajit", "tclsh", "Rscript",
    "awk", "gawk",
];

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

/// Whether `program` (a path or a name) is an interpreter whose first argument is the code run.
pub(crate) fn is_interpreter(program: &str) -> bool {
    let base = program.rsplit('/').next().unwrap_or(program);
    let stem = base.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    INTERPRETERS.contains(&stem)
}

/// A file name that may appear in logs: UTF-8 without control characters.
fn printable_name(name: &OsString) -> Option<&str> {
    name.to_str().filter(|n| !n.chars().any(char::is_control))
}

fn bad_name(path: &Path, what: &str) -> Refusal {
    Refusal {
        reason: RefusalReason::BadName,
        path: path.to_path_buf(),
        detail: what.to_string(),
    }
}

/// Why a probe could not be built in this scan.
enum Problem {
    /// Refused by the rule: the probe must not run.
    Refused(Refusal),
    /// A read failed: keep what the previous scan decided.
    Unknown(String),
}

impl From<Refusal> for Problem {
    fn from(r: Refusal) -> Self {
        Problem::Refused(r)
    }
}

/// One scan: the trust cache plus everything to report.
struct Scan {
    trust: TrustCheck,
    warnings: Vec<String>,
    refusals: Vec<Refusal>,
    errors: usize,
}

impl Scan {
    fn new() -> Self {
        Scan {
            trust: TrustCheck::new(),
            warnings: Vec::new(),
            refusals: Vec::new(),
            errors: 0,
        }
    }

    fn error(&mut self, msg: String) {
        self.errors += 1;
        self.warnings.push(msg);
    }

    /// Check one file that must exist: refused, unknown, or trusted. `Ok(None)` if it is gone.
    fn file(&mut self, path: &Path) -> Result<Option<Trusted>, Problem> {
        match self.trust.check_file(path) {
            Ok(t) => Ok(Some(t)),
            Err(TrustError::NotFound(_)) => Ok(None),
            Err(TrustError::Refused(r)) => Err(Problem::Refused(r)),
            Err(e) => Err(Problem::Unknown(e.to_string())),
        }
    }

    /// Check a path a command names, as a file or a folder; absent is fine (the run fails).
    fn named(&mut self, path: &Path, stamps: &mut Vec<FileStamp>) -> Result<(), Problem> {
        let is_dir = std::fs::metadata(path).is_ok_and(|m| m.is_dir());
        let checked = if is_dir {
            self.trust.check_dir(path)
        } else {
            self.trust.check_file(path)
        };
        match checked {
            Ok(t) => {
                if !is_dir {
                    stamps.push(FileStamp::of(path, &t));
                }
                Ok(())
            }
            Err(TrustError::NotFound(_)) => Ok(()),
            Err(TrustError::Refused(r)) => Err(Problem::Refused(r)),
            Err(e) => Err(Problem::Unknown(e.to_string())),
        }
    }

    /// Check the program of `argv` (resolved through `PATH` when bare; `argv[0]` is replaced by
    /// the resolved path so the checked file is the one executed), the script an interpreter is
    /// given among the first `command_words`, and every word naming a script by its suffix.
    fn program(
        &mut self,
        argv: &mut [String],
        command_words: usize,
    ) -> Result<Vec<FileStamp>, Problem> {
        let mut stamps = Vec::new();
        let Some(first) = argv.first_mut() else {
            return Ok(stamps);
        };
        if !first.contains('/') {
            match which(first) {
                Some(p) => *first = p.to_string_lossy().into_owned(),
                // Not found: nothing is executed, the spawn reports it.
                None => return Ok(stamps),
            }
        }
        let program = argv[0].clone();
        self.named(Path::new(&program), &mut stamps)?;
        let mut rest = 1;
        if program.rsplit('/').next() == Some("env") {
            // `env [-opts] [NAME=VALUE]... PROGRAM ARGS`: the real program follows.
            while rest < command_words && (argv[rest].starts_with('-') || argv[rest].contains('='))
            {
                rest += 1;
            }
            if let Some(real) = argv.get(rest).filter(|_| rest < command_words) {
                let real = if real.contains('/') {
                    Some(PathBuf::from(real))
                } else {
                    which(real)
                };
                if let Some(real) = real {
                    self.named(&real, &mut stamps)?;
                    if is_interpreter(&real.to_string_lossy()) {
                        self.script(argv, rest + 1, command_words, &mut stamps)?;
                    }
                }
            }
        } else if is_interpreter(&program) {
            self.script(argv, rest, command_words, &mut stamps)?;
        }
        for word in argv.iter() {
            if word.contains('/') && CODE_SUFFIXES.iter().any(|s| word.ends_with(s)) {
                self.named(Path::new(word), &mut stamps)?;
            }
        }
        Ok(stamps)
    }

    /// The first non-option word in `argv[from..command_words]` is the interpreter's script.
    fn script(
        &mut self,
        argv: &[String],
        from: usize,
        command_words: usize,
        stamps: &mut Vec<FileStamp>,
    ) -> Result<(), Problem> {
        let end = command_words.min(argv.len());
        if let Some(word) = argv
            .get(from..end)
            .and_then(|w| w.iter().find(|w| !w.starts_with('-')))
        {
            self.named(Path::new(word), stamps)?;
        }
        Ok(())
    }

    /// Probe file + `.meta` + whatever runs it, all checked.
    fn drop_in(&mut self, path: &Path, meta: &Path) -> Result<Option<DropIn>, Problem> {
        let Some(exe) = self.file(path)? else {
            return Ok(None);
        };
        let Some(meta_t) = self.file(meta)? else {
            return Ok(None);
        };
        let mut argv = exec_argv(path, exe.executable);
        let words = argv.len();
        let mut stamps = vec![FileStamp::of(path, &exe), FileStamp::of(meta, &meta_t)];
        stamps.extend(self.program(&mut argv, words)?);
        stamps.dedup_by(|a, b| a.path == b.path);
        Ok(Some(DropIn {
            path: path.to_path_buf(),
            meta: meta.to_path_buf(),
            argv,
            stamps,
        }))
    }
}

/// argv to run a probe file: directly if executable, else through its interpreter.
fn exec_argv(path: &Path, executable: bool) -> Vec<String> {
    let p = path.to_string_lossy().into_owned();
    if !executable {
        if let Some(name) = file_name(path) {
            if let Some((_, interp)) = SCRIPT_SUFFIXES.iter().find(|(s, _)| name.ends_with(s)) {
                return vec![(*interp).to_string(), p];
            }
        }
    }
    vec![p]
}

/// Does `path` look like a probe file (regular, executable or a script)? `Err` if it cannot be
/// told (a read failed for a reason other than "not found").
fn runnable(path: &Path) -> io::Result<bool> {
    let Some(name) = file_name(path) else {
        return Ok(false);
    };
    if name.starts_with('.') || NEVER_PROBES.iter().any(|s| name.ends_with(s)) {
        return Ok(false);
    }
    match std::fs::metadata(path) {
        Ok(md) => Ok(md.is_file()
            && (md.permissions().mode() & 0o111 != 0
                || SCRIPT_SUFFIXES.iter().any(|(s, _)| name.ends_with(s)))),
        Err(e) if gone(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Does `path` exist? `Err` if it cannot be told.
fn exists(path: &Path) -> io::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if gone(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A successful observation that nothing is there.
fn gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
}

/// A folder's entries, sorted; any failed read makes the whole listing unknown (a partial
/// listing would look like removed files).
fn sorted_entries(dir: &Path) -> io::Result<Vec<(OsString, PathBuf)>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        v.push((e.file_name(), e.path()));
    }
    v.sort();
    Ok(v)
}

/// What a drop-in scan could not read: previous drop-ins under these paths are kept.
#[derive(Debug, Default)]
struct Unknown {
    all: bool,
    paths: Vec<PathBuf>,
}

impl Unknown {
    fn covers(&self, d: &DropIn) -> bool {
        self.all
            || self
                .paths
                .iter()
                .any(|u| d.path.starts_with(u) || d.meta.starts_with(u))
    }
}

/// All drop-ins, by name; the first in file-name order wins a duplicate name.
fn scan_drop_ins(
    probes_dir: &Path,
    prev: &BTreeMap<String, DropIn>,
    scan: &mut Scan,
) -> BTreeMap<String, DropIn> {
    let mut found = BTreeMap::new();
    let mut unknown = Unknown::default();
    collect_drop_ins(probes_dir, scan, &mut found, &mut unknown);
    for (name, d) in prev {
        if !found.contains_key(name) && unknown.covers(d) {
            found.insert(name.clone(), d.clone());
        }
    }
    found
}

fn collect_drop_ins(
    probes_dir: &Path,
    scan: &mut Scan,
    found: &mut BTreeMap<String, DropIn>,
    unknown: &mut Unknown,
) {
    // An untrusted folder is refused once as a whole, never listed entry by entry.
    match scan.trust.check_dir(probes_dir) {
        Ok(_) => {}
        Err(TrustError::NotFound(_)) => {
            scan.warnings
                .push(format!("probes_dir {}: not found", probes_dir.display()));
            return;
        }
        Err(TrustError::Refused(r)) => {
            scan.refusals.push(r);
            return;
        }
        Err(e) => {
            scan.error(format!("probes_dir {e}; keeping the previous drop-ins"));
            unknown.all = true;
            return;
        }
    }
    let entries = match sorted_entries(probes_dir) {
        Ok(e) => e,
        Err(e) => {
            scan.error(format!(
                "probes_dir {}: {e}; keeping the previous drop-ins",
                probes_dir.display()
            ));
            unknown.all = true;
            return;
        }
    };
    let mut candidates = Vec::new();
    for (name, path) in entries {
        let Some(name) = printable_name(&name) else {
            scan.refusals
                .push(bad_name(&path, "file name is not printable UTF-8"));
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let is_dir = match std::fs::metadata(&path) {
            Ok(md) => md.is_dir(),
            Err(e) if gone(&e) => continue,
            Err(e) => {
                scan.error(format!("{path:?}: {e}; keeping its drop-ins"));
                unknown.paths.push(path);
                continue;
            }
        };
        if !is_dir {
            candidates.push(path);
            continue;
        }
        // probes_dir/D/D*: a probe may live in its own folder with helpers beside it.
        match scan.trust.check_dir(&path) {
            Ok(_) => {}
            Err(TrustError::NotFound(_)) => continue,
            Err(TrustError::Refused(r)) => {
                scan.refusals.push(r);
                continue;
            }
            Err(e) => {
                scan.error(format!("{e}; keeping its drop-ins"));
                unknown.paths.push(path);
                continue;
            }
        }
        match sorted_entries(&path) {
            Ok(inner) => {
                for (n, p) in inner {
                    match printable_name(&n) {
                        Some(n) if n.starts_with(name) => candidates.push(p),
                        Some(_) => {}
                        None => scan
                            .refusals
                            .push(bad_name(&p, "file name is not printable UTF-8")),
                    }
                }
            }
            Err(e) => {
                scan.error(format!("{path:?}: {e}; keeping its drop-ins"));
                unknown.paths.push(path);
            }
        }
    }
    for path in candidates {
        match runnable(&path) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                scan.error(format!("{path:?}: {e}; keeping its drop-in"));
                unknown.paths.push(path);
                continue;
            }
        }
        let Some(file) = file_name(&path) else {
            continue;
        };
        let name = probe_name(file).to_string();
        let meta = path.with_file_name(format!("{name}.meta"));
        match exists(&meta) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                scan.error(format!("{meta:?}: {e}; keeping its drop-in"));
                unknown.paths.push(path);
                continue;
            }
        }
        if !valid_probe_name(&name) {
            scan.refusals.push(bad_name(
                &path,
                "probe names are 1 to 64 of A-Z a-z 0-9 _ . - (not starting with . or -)",
            ));
            continue;
        }
        if let Some(first) = found.get(&name) {
            scan.warnings.push(format!(
                "drop-in {} ignored: probe {name} is already {}",
                path.display(),
                first.path.display()
            ));
            continue;
        }
        match scan.drop_in(&path, &meta) {
            Ok(Some(d)) => {
                found.insert(name, d);
            }
            Ok(None) => {}
            Err(Problem::Refused(r)) => scan.refusals.push(r),
            Err(Problem::Unknown(e)) => {
                scan.error(format!("{e}; keeping drop-in {name}"));
                unknown.paths.push(path);
            }
        }
    }
}

/// Executable of a `probes` entry `name` in `probes_dir`.
fn native_executable(probes_dir: &Path, name: &str) -> Result<Option<PathBuf>, Problem> {
    let dir = probes_dir.join(name);
    let candidates = [
        probes_dir.join(name),
        dir.join(name),
        probes_dir.join(format!("{name}.sh")),
        probes_dir.join(format!("{name}.py")),
        dir.join(format!("{name}.sh")),
        dir.join(format!("{name}.py")),
    ];
    for p in candidates {
        match runnable(&p) {
            Ok(true) => return Ok(Some(p)),
            Ok(false) => {}
            Err(e) => return Err(Problem::Unknown(format!("{p:?}: {e}"))),
        }
    }
    Ok(None)
}

/// Environment of every probe. The SDK folder is exported (and put on `PYTHONPATH`) only when
/// trusted: an SDK folder others can write would let them inject code into root probes.
fn probe_env(name: &str, sdk_dir: &Path, sdk_trusted: bool) -> Vec<(String, String)> {
    let mut env = vec![("GALA_GOPHER_PROBE".to_string(), name.to_string())];
    if sdk_trusted {
        let sdk = sdk_dir.to_string_lossy().into_owned();
        let pythonpath = match std::env::var("PYTHONPATH") {
            Ok(old) if !old.is_empty() => format!("{sdk}:{old}"),
            _ => sdk.clone(),
        };
        env.push(("GALA_GOPHER_SDK_DIR".to_string(), sdk));
        env.push(("PYTHONPATH".to_string(), pythonpath));
    }
    env
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

/// Inputs shared by every declared probe of one scan.
struct Dirs<'a> {
    probes: &'a Path,
    meta: &'a Path,
    sdk: &'a Path,
    sdk_trusted: bool,
}

/// Spec for a configured entry; `Ok(None)` (with a warning) if it cannot be built.
fn configured_spec(
    entry: &ConfiguredProbe,
    dirs: &Dirs<'_>,
    drop_ins: &BTreeMap<String, DropIn>,
    scan: &mut Scan,
    shipped: bool,
) -> Result<Option<(ProbeSpec, Vec<FileStamp>)>, Problem> {
    let name = &entry.name;
    if shipped && native_executable(dirs.probes, name)?.is_none() {
        return Ok(None);
    }
    let Some(params) = split("param", name, &entry.param, &mut scan.warnings) else {
        return Ok(None);
    };
    let (origin, mut argv, meta_files, files) = match &entry.command {
        Some(command) => {
            let Some(cmd) = split("command", name, command, &mut scan.warnings) else {
                return Ok(None);
            };
            if cmd.is_empty() {
                scan.warnings
                    .push(format!("probe {name} skipped: empty command"));
                return Ok(None);
            }
            let mut meta = Vec::new();
            let mut files = Vec::new();
            // `.meta` beside the first path-like word with the same stem.
            for p in cmd.iter().filter(|a| a.contains('/')).map(Path::new) {
                let Some(stem) = p.file_stem().and_then(|s| s.to_str()) else {
                    continue;
                };
                let m = p.with_file_name(format!("{stem}.meta"));
                if let Some(t) = scan.file(&m)? {
                    files.push(FileStamp::of(&m, &t));
                    meta.push(m);
                    break;
                }
            }
            let words = cmd.len();
            let mut argv = cmd;
            argv.extend(params);
            files.extend(scan.program(&mut argv, words)?);
            (ProbeOrigin::Extend, argv, meta, files)
        }
        None => {
            if let Some(d) = drop_ins.get(name) {
                let mut argv = d.argv.clone();
                argv.extend(params);
                (
                    ProbeOrigin::Native,
                    argv,
                    vec![d.meta.clone()],
                    d.stamps.clone(),
                )
            } else {
                native_spec_parts(entry, dirs, params, scan)?
            }
        }
    };
    argv.shrink_to_fit();
    let spec = ProbeSpec {
        name: name.clone(),
        argv,
        env: probe_env(name, dirs.sdk, dirs.sdk_trusted),
        origin,
        switch: entry.switch,
        start_check: entry.start_check.clone(),
        meta_files,
        declaration: None,
        runtime: None,
    };
    Ok(Some((spec, files)))
}

/// Spec for a probe declared on a drop-in of this scan: the drop-in's command line + `param`.
/// `None` (with a warning) if `param` cannot be split or the drop-in is not in this scan.
fn drop_in_spec(
    entry: &ConfiguredProbe,
    dirs: &Dirs<'_>,
    drop_ins: &BTreeMap<String, DropIn>,
    scan: &mut Scan,
) -> Option<(ProbeSpec, Vec<FileStamp>)> {
    let name = &entry.name;
    let drop_in = drop_ins.get(name)?;
    let params = split("param", name, &entry.param, &mut scan.warnings)?;
    let mut argv = drop_in.argv.clone();
    argv.extend(params);
    let spec = ProbeSpec {
        name: name.clone(),
        argv,
        env: probe_env(name, dirs.sdk, dirs.sdk_trusted),
        origin: ProbeOrigin::DropIn,
        switch: entry.switch,
        start_check: entry.start_check.clone(),
        meta_files: vec![drop_in.meta.clone()],
        declaration: None,
        runtime: None,
    };
    Some((spec, drop_in.stamps.clone()))
}

type SpecParts = (ProbeOrigin, Vec<String>, Vec<PathBuf>, Vec<FileStamp>);

fn native_spec_parts(
    entry: &ConfiguredProbe,
    dirs: &Dirs<'_>,
    params: Vec<String>,
    scan: &mut Scan,
) -> Result<SpecParts, Problem> {
    let name = &entry.name;
    let exe = native_executable(dirs.probes, name)?;
    let mut files = Vec::new();
    let mut meta = Vec::new();
    let argv_head = match &exe {
        Some(exe) => match scan.file(exe)? {
            Some(t) => {
                files.push(FileStamp::of(exe, &t));
                let beside = exe.with_file_name(format!("{name}.meta"));
                let global = dirs.meta.join(format!("{name}.meta"));
                for m in [beside, global] {
                    if let Some(t) = scan.file(&m)? {
                        files.push(FileStamp::of(&m, &t));
                        meta.push(m);
                        break;
                    }
                }
                let mut argv = exec_argv(exe, t.executable);
                let words = argv.len();
                files.extend(scan.program(&mut argv, words)?);
                files.dedup_by(|a, b| a.path == b.path);
                argv
            }
            None => vec![exe.to_string_lossy().into_owned()],
        },
        None => {
            if entry.switch != Switch::Off {
                scan.warnings.push(format!(
                    "probe {name}: no executable {name} in {}",
                    dirs.probes.display()
                ));
            }
            // Kept so the probe shows up as Failed with the spawn error.
            vec![dirs.probes.join(name).to_string_lossy().into_owned()]
        }
    };
    let mut argv = argv_head;
    argv.extend(params);
    Ok((ProbeOrigin::Native, argv, meta, files))
}

fn discover<D: Declare + ?Sized>(
    probes_dir: &Path,
    meta_dir: &Path,
    desired: &D,
    sdk_dir: &Path,
    prev: &Previous,
) -> Discovery {
    let mut scan = Scan::new();
    let sdk_trusted = match scan.trust.check_dir(sdk_dir) {
        Ok(_) => true,
        Err(TrustError::NotFound(_)) => false,
        Err(TrustError::Refused(r)) => {
            scan.refusals.push(r);
            false
        }
        Err(e) => {
            scan.error(format!("sdk_dir {e}; keeping the previous decision"));
            prev.sdk_trusted.unwrap_or(false)
        }
    };
    let dirs = Dirs {
        probes: probes_dir,
        meta: meta_dir,
        sdk: sdk_dir,
        sdk_trusted,
    };
    let drop_ins = scan_drop_ins(probes_dir, &prev.drop_ins, &mut scan);
    let found: BTreeSet<String> = drop_ins.keys().cloned().collect();
    let declared = desired.declare(&found, &mut scan.warnings);
    let mut d = Discovery::default();
    let mut by_name: BTreeMap<String, (ProbeSpec, Vec<FileStamp>)> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    let mut decls = prev.decls.clone();
    for Declared {
        probe: entry,
        base,
        runtime,
    } in &declared
    {
        if !valid_probe_name(&entry.name) {
            scan.refusals.push(bad_name(
                Path::new(&entry.name),
                "configured probe name: 1 to 64 of A-Z a-z 0-9 _ . - (not starting with . or -)",
            ));
            continue;
        }
        // `Declare` gives each name once; should it not, the first declaration wins.
        if !seen.insert(entry.name.as_str()) {
            continue;
        }
        let built = match base {
            Base::Entry => configured_spec(entry, &dirs, &drop_ins, &mut scan, false),
            Base::Shipped => configured_spec(entry, &dirs, &drop_ins, &mut scan, true),
            Base::DropIn => Ok(drop_in_spec(entry, &dirs, &drop_ins, &mut scan)),
        };
        match built {
            Ok(Some((mut spec, stamps))) => {
                spec.declaration = declaration_of(
                    &entry.name,
                    &spec.meta_files,
                    &stamps,
                    &mut decls,
                    &mut scan.warnings,
                );
                if let Some(rt) = runtime {
                    // Without the control channel, run-time settings are command-line flags:
                    // a change restarts the probe.
                    match &spec.declaration {
                        Some(decl) if !decl.reload => spec.argv.extend(rt.argv(decl)),
                        _ => {}
                    }
                    spec.runtime = Some(Arc::clone(rt));
                }
                by_name.insert(entry.name.clone(), (spec, stamps));
            }
            Ok(None) => {}
            Err(Problem::Refused(r)) => {
                d.failed.insert(entry.name.clone(), r.to_string());
                scan.refusals.push(r);
            }
            Err(Problem::Unknown(e)) => {
                scan.error(format!(
                    "probe {}: {e}; keeping its previous state",
                    entry.name
                ));
                if let Some(p) = prev.specs.get(&entry.name) {
                    by_name.insert(entry.name.clone(), p.clone());
                }
            }
        }
    }
    for (name, (spec, stamps)) in &by_name {
        d.stamps.insert(name.clone(), stamps.clone());
        d.specs.push(spec.clone());
    }
    decls.retain(|path, _| by_name.values().any(|(s, _)| s.meta_files.contains(path)));
    d.next = Previous {
        specs: by_name,
        drop_ins,
        sdk_trusted: Some(sdk_trusted),
        decls,
    };
    for r in &scan.refusals {
        scan.warnings.push(r.to_string());
    }
    d.warnings = scan.warnings;
    d.refusals = scan.refusals;
    d.errors = scan.errors;
    d
}

/// The probe specs (sorted by name) for config entries `configured` plus the drop-ins in
/// `probes_dir` (merged by [`crate::control`]'s rule: an entry governs the drop-in of its name),
/// and warnings about entries that were skipped, refused or cannot run. Reads `probes_dir`;
/// never fails as a whole.
pub fn desired_probes(
    probes_dir: &Path,
    meta_dir: &Path,
    configured: &[ConfiguredProbe],
    sdk_dir: &Path,
) -> (Vec<ProbeSpec>, Vec<String>) {
    let d = discover(
        probes_dir,
        meta_dir,
        configured,
        sdk_dir,
        &Previous::default(),
    );
    (d.specs, d.warnings)
}

/// Count and log refusals when they first appear, and show refused configured probes as
/// Failed with the reason; forget them when the refusal goes away.
#[derive(Debug, Default)]
struct RefusalBook {
    seen: BTreeSet<String>,
    failed: BTreeMap<String, String>,
}

impl RefusalBook {
    fn record(&mut self, d: &Discovery, tel: &Telemetry, managed: &[String]) {
        let mut now = BTreeSet::new();
        for r in &d.refusals {
            let key = r.to_string();
            if !self.seen.contains(&key) {
                tel.discovery.refuse(r.reason);
            }
            now.insert(key);
        }
        self.seen = now;
        tel.discovery.scan_errors(d.errors as u64);
        for (name, msg) in &d.failed {
            let stats = tel.probe(name);
            stats.up.store(false, Ordering::Relaxed);
            stats.pid.store(0, Ordering::Relaxed);
            stats.set_state(ProbeState::Failed);
            stats.set_last_error(Some(msg.clone()));
        }
        for (name, msg) in &self.failed {
            if d.failed.contains_key(name) {
                continue;
            }
            if !managed.contains(name) {
                tel.remove_probe(name);
            } else {
                // Now runnable: drop the stale refusal, keep any error the probe has since had.
                let stats = tel.probe(name);
                if stats.last_error().as_ref() == Some(msg) {
                    stats.set_last_error(None);
                }
            }
        }
        self.failed = d.failed.clone();
    }
}

/// What the discovery loop scans, and the desired state it resolves (by default a bare list of
/// config entries; the daemon passes [`crate::control::Control::subscribe`]).
#[derive(Debug, Clone)]
pub struct DiscoveryInputs<D = Vec<ConfiguredProbe>> {
    /// `global.probes_dir`: native probes and drop-ins.
    pub probes_dir: PathBuf,
    /// Directory of global `.meta` files.
    pub meta_dir: PathBuf,
    /// Probe SDK directory exported to probes (`GALA_GOPHER_SDK_DIR`, `PYTHONPATH`).
    pub sdk_dir: PathBuf,
    /// The desired probes; a new value (config reload, override) is applied at once.
    pub configured: watch::Receiver<D>,
}

/// Default rescan period of [`spawn_discovery_loop`].
pub const DISCOVERY_INTERVAL: Duration = Duration::from_secs(1);

/// Rescan every `interval` (and whenever `configured` changes) and reconcile `supervisor` when
/// the desired set changed; a probe whose executable or `.meta` file changed is restarted.
/// New warnings are logged once; refusals and failed reads are counted in the supervisor's
/// telemetry. Abort the handle to stop it.
pub fn spawn_discovery_loop<D>(
    supervisor: Supervisor,
    inputs: DiscoveryInputs<D>,
    interval: Duration,
) -> JoinHandle<()>
where
    D: Declare + Clone + Send + Sync + 'static,
{
    tokio::spawn(async move {
        let DiscoveryInputs {
            probes_dir,
            meta_dir,
            sdk_dir,
            mut configured,
        } = inputs;
        let telemetry: Arc<Telemetry> = supervisor.telemetry();
        let mut config_open = true;
        let mut current: Option<(Vec<ProbeSpec>, Stamps)> = None;
        let mut last_warnings: BTreeSet<String> = BTreeSet::new();
        let mut prev = Previous::default();
        let mut book = RefusalBook::default();
        loop {
            let desired = configured.borrow_and_update().clone();
            let (p, m, s) = (probes_dir.clone(), meta_dir.clone(), sdk_dir.clone());
            let before = prev.clone();
            let scan =
                tokio::task::spawn_blocking(move || discover(&p, &m, &desired, &s, &before)).await;
            match scan {
                Ok(mut d) => {
                    let warnings: BTreeSet<String> =
                        std::mem::take(&mut d.warnings).into_iter().collect();
                    for w in warnings.difference(&last_warnings) {
                        tracing::warn!("discovery: {w}");
                    }
                    last_warnings = warnings;
                    prev = std::mem::take(&mut d.next);
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
                    }
                    book.record(&d, &telemetry, &supervisor.names());
                    if !unchanged {
                        current =
                            Some((std::mem::take(&mut d.specs), std::mem::take(&mut d.stamps)));
                    }
                }
                Err(e) => {
                    telemetry.discovery.scan_errors(1);
                    tracing::error!("discovery scan failed: {e}");
                }
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

    #[test]
    fn interpreters_are_recognised_with_versions() {
        for p in [
            "sh",
            "/usr/bin/python3",
            "python3.11",
            "/usr/bin/perl5.36",
            "java",
            "bash",
        ] {
            assert!(is_interpreter(p), "{p}");
        }
        for p in ["tcpprobe", "/opt/x/ioprobe", "shx", "pythonic"] {
            assert!(!is_interpreter(p), "{p}");
        }
    }
}
