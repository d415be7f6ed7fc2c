//! File + environment → validated [`GopherConfig`], with warnings for unknown keys.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use gala_libconfig::{LibconfigSource, Node};

use super::de;
use super::error::{ConfigError, Provenance};
use super::model::GopherConfig;
use super::validate::validate;

/// Prefix of environment overrides: `GALA_GOPHER_<SECTION>__<KEY>`.
pub const ENV_PREFIX: &str = "GALA_GOPHER";
/// Separator between section and key in an environment override name.
pub const ENV_SEPARATOR: &str = "__";

/// The daemon's own log filter (`tracing` directives), not a config override.
const LOG_FILTER_VAR: &str = "GALA_GOPHER_LOG";

/// Top-level lists that environment overrides cannot set (their entries have no stable name).
const FILE_ONLY_SECTIONS: &[&str] = &["probes", "extend_probes"];

/// A loaded configuration.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The validated configuration.
    pub config: GopherConfig,
    /// Non-fatal findings, e.g. `FILE:LINE: unknown key "x.y" (ignored)`.
    pub warnings: Vec<String>,
    /// The file it came from.
    pub path: PathBuf,
    /// Where each value was written, for errors found after loading.
    locator: Arc<Locator>,
}

impl LoadedConfig {
    /// An error about `key`, located where its value was written (file line or variable).
    pub fn invalid(&self, key: &str, message: String) -> ConfigError {
        self.locator.invalid(key, message)
    }

    /// Where `key` (or its nearest enclosing setting) was written.
    pub fn provenance(&self, key: &str) -> Provenance {
        self.locator.at(key)
    }
}

/// Maps a dotted key to where its value was written.
#[derive(Debug)]
pub(super) struct Locator {
    root: Node,
    origin: PathBuf,
    /// (dotted key, variable name) of every environment override.
    env: Vec<(String, String)>,
}

impl Locator {
    /// Environment overrides at `key` or inside it (`nosuch` → `GALA_GOPHER_NOSUCH__X`).
    fn env_within<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a (String, String)> {
        self.env.iter().filter(move |(k, _)| is_within(k, key))
    }

    /// Where `key` (or, if absent, its nearest enclosing setting) was written.
    pub(super) fn at(&self, key: &str) -> Provenance {
        // The override that set `key` (or a group around it); else, for a key the file does not
        // have, an override inside it (an unknown section that only the environment names).
        let from_env = self
            .env
            .iter()
            .find(|(k, _)| is_within(key, k))
            .or_else(|| {
                self.root
                    .lookup(key)
                    .is_none()
                    .then(|| self.env_within(key).next())
                    .flatten()
            });
        if let Some((_, var)) = from_env {
            return Provenance::Env { var: var.clone() };
        }
        self.file_at(key)
    }

    /// Where `key` (or, if absent, its nearest enclosing setting) was written in the file.
    fn file_at(&self, key: &str) -> Provenance {
        let (node, matched) = self.root.lookup_nearest(key);
        if matched == 0 {
            Provenance::Document {
                path: self.origin.clone(),
            }
        } else {
            Provenance::File {
                path: node.file.to_path_buf(),
                line: node.line,
            }
        }
    }

    pub(super) fn invalid(&self, key: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            at: self.at(key),
            key: key.to_string(),
            message,
        }
    }

    /// An error about `key` located where `at_key` was written (for a key that is missing
    /// because of another key's value).
    pub(super) fn invalid_at(&self, key: &str, at_key: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            at: self.at(at_key),
            key: key.to_string(),
            message,
        }
    }

    fn map_config_error(&self, err: &config::ConfigError) -> ConfigError {
        let key = gala_libconfig::error_key(err).unwrap_or_default();
        self.invalid(&key, libconfig_terms(&gala_libconfig::error_message(err)))
    }
}

/// Whether dotted key `inner` is `outer` or a key inside it.
fn is_within(inner: &str, outer: &str) -> bool {
    inner
        .strip_prefix(outer)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

/// Say "group"/"list" (the file's vocabulary) where serde says "struct X"/"sequence".
fn libconfig_terms(msg: &str) -> String {
    if let Some(pos) = msg.find("expected struct ") {
        return format!("{}expected a group {{ ... }}", &msg[..pos]);
    }
    msg.replace("expected a sequence", "expected a list ( ... )")
}

/// `GALA_GOPHER_WEB_SERVER__PORT` → `web_server.port` (as the `config` crate maps it).
fn env_key(var: &str) -> Option<String> {
    let lower = var.to_lowercase();
    let prefix = format!("{}_", ENV_PREFIX.to_lowercase());
    let rest = lower.strip_prefix(&prefix)?;
    Some(rest.replace(ENV_SEPARATOR, "."))
}

/// Render a `serde_ignored` path as `section.key` / `probes[0].key`.
fn ignored_key(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", ignored_key(parent)),
        P::Map { parent, key } => {
            let p = ignored_key(parent);
            if p.is_empty() {
                key.clone()
            } else {
                format!("{p}.{key}")
            }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            ignored_key(parent)
        }
    }
}

/// Read the main config file: a regular file only (a FIFO would block, `/dev/zero` never end),
/// at most [`gala_libconfig::MAX_FILE_SIZE`] bytes, UTF-8 (an error names the line otherwise).
fn read_main_file(path: &Path) -> Result<String, ConfigError> {
    gala_libconfig::read_file(path).map_err(|e| match e {
        gala_libconfig::Error::Read { path, source } => ConfigError::Read { path, source },
        other => ConfigError::Syntax(other),
    })
}

/// Load `path`, apply `GALA_GOPHER_*` environment overrides from this process, validate.
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let src = read_main_file(path)?;
    let env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            env_key(&k)?;
            Some((k, v.to_string_lossy().into_owned()))
        })
        .collect();
    load_str(&src, path, &env)
}

/// The environment overrides among `env`, as (dotted key, variable, text), plus a warning for
/// each `GALA_GOPHER_*` variable that is not a usable override.
fn env_overrides(env: &[(String, String)]) -> (Vec<(String, String, String)>, Vec<String>) {
    let mut overrides = Vec::new();
    let mut warnings = Vec::new();
    for (var, text) in env {
        let Some(key) = env_key(var) else { continue };
        if var.eq_ignore_ascii_case(LOG_FILTER_VAR) {
            continue;
        }
        let section = key.split('.').next().unwrap_or_default();
        if !key.contains('.') {
            warnings.push(format!(
                "{var}: not a configuration override (expected \
                 {ENV_PREFIX}_<SECTION>{ENV_SEPARATOR}<KEY>; ignored)"
            ));
        } else if FILE_ONLY_SECTIONS.contains(&section) {
            warnings.push(format!(
                "{var}: \"{section}\" can only be set in the file (ignored)"
            ));
        } else {
            overrides.push((key, var.clone(), text.clone()));
        }
    }
    (overrides, warnings)
}

/// `GALA_GOPHER_*` overrides as a `config` source. Each value is marked as environment text so
/// the typed parsers read it by the same rules as a file value (see `de::env_value`).
#[derive(Debug, Clone)]
struct EnvSource(Vec<(String, String, String)>);

impl config::Source for EnvSource {
    fn clone_into_box(&self) -> Box<dyn config::Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<config::Map<String, config::Value>, config::ConfigError> {
        Ok(self
            .0
            .iter()
            .map(|(key, var, text)| (key.clone(), de::env_value(var, text)))
            .collect())
    }
}

/// Load a config held in memory; `origin` names it in messages and anchors `@include`s, and `env`
/// lists the environment variables to consider (only `GALA_GOPHER_*` ones are used).
pub fn load_str(
    src: &str,
    origin: &Path,
    env: &[(String, String)],
) -> Result<LoadedConfig, ConfigError> {
    let root = gala_libconfig::parse_str(src, origin)?;
    let (env_pairs, mut warnings) = env_overrides(env);
    let loc = Locator {
        root: root.clone(),
        origin: origin.to_path_buf(),
        env: env_pairs
            .iter()
            .map(|(key, var, _)| (key.clone(), var.clone()))
            .collect(),
    };

    let merged = config::Config::builder()
        .add_source(LibconfigSource::new(root))
        .add_source(EnvSource(env_pairs))
        .build()
        .map_err(|e| loc.map_config_error(&e))?;

    let mut unknown = Vec::new();
    let config: GopherConfig = serde_ignored::deserialize(merged, |path| {
        unknown.push(ignored_key(&path));
    })
    .map_err(|e| loc.map_config_error(&e))?;
    validate(&config, &loc)?;

    unknown.sort();
    for key in &unknown {
        let mut from_env = false;
        for (env_key, var) in loc.env_within(key) {
            from_env = true;
            warnings.push(format!("{var}: unknown key \"{env_key}\" (ignored)"));
        }
        // Also the file's own setting, when the file has one (or nothing else explains it).
        if !from_env || loc.root.lookup(key).is_some() {
            let at = loc.file_at(key);
            warnings.push(format!("{at}: unknown key \"{key}\" (ignored)"));
        }
    }
    Ok(LoadedConfig {
        config,
        warnings,
        path: origin.to_path_buf(),
        locator: Arc::new(loc),
    })
}
