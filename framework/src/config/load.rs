//! File + environment → validated [`GopherConfig`], with warnings for unknown keys.

use std::path::{Path, PathBuf};

use gala_libconfig::{LibconfigSource, Node};

use super::error::{ConfigError, Provenance};
use super::model::GopherConfig;
use super::validate::validate;

/// Prefix of environment overrides: `GALA_GOPHER_<SECTION>__<KEY>`.
pub const ENV_PREFIX: &str = "GALA_GOPHER";
/// Separator between section and key in an environment override name.
pub const ENV_SEPARATOR: &str = "__";

/// A loaded configuration.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The validated configuration.
    pub config: GopherConfig,
    /// Non-fatal findings, e.g. `FILE:LINE: unknown key "x.y" (ignored)`.
    pub warnings: Vec<String>,
    /// The file it came from.
    pub path: PathBuf,
}

/// Maps a dotted key to where its value was written.
pub(super) struct Locator {
    root: Node,
    origin: PathBuf,
    /// (dotted key, variable name) of every environment override.
    env: Vec<(String, String)>,
}

impl Locator {
    /// Where `key` (or, if absent, its nearest enclosing setting) was written.
    pub(super) fn at(&self, key: &str) -> Provenance {
        let from_env = self.env.iter().find(|(k, _)| {
            key == k
                || key
                    .strip_prefix(k.as_str())
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        });
        if let Some((_, var)) = from_env {
            return Provenance::Env { var: var.clone() };
        }
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

/// Load `path`, apply `GALA_GOPHER_*` environment overrides from this process, validate.
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            env_key(&k)?;
            Some((k, v.to_string_lossy().into_owned()))
        })
        .collect();
    load_str(&src, path, &env)
}

/// Load a config held in memory; `origin` names it in messages and anchors `@include`s, and `env`
/// lists the environment variables to consider (only `GALA_GOPHER_*` ones are used).
pub fn load_str(
    src: &str,
    origin: &Path,
    env: &[(String, String)],
) -> Result<LoadedConfig, ConfigError> {
    let root = gala_libconfig::parse_str(src, origin)?;
    let env_pairs: Vec<(String, String, String)> = env
        .iter()
        .filter_map(|(k, v)| Some((env_key(k)?, k.clone(), v.clone())))
        .collect();
    let loc = Locator {
        root: root.clone(),
        origin: origin.to_path_buf(),
        env: env_pairs
            .iter()
            .map(|(key, var, _)| (key.clone(), var.clone()))
            .collect(),
    };

    // Values stay strings: `config` converts them when the target is a number or a boolean, and
    // strings such as passwords keep their exact text ("007" stays "007").
    let env_source = config::Environment::with_prefix(ENV_PREFIX)
        .prefix_separator("_")
        .separator(ENV_SEPARATOR)
        .source(Some(
            env_pairs
                .iter()
                .map(|(_, var, value)| (var.clone(), value.clone()))
                .collect(),
        ));
    let merged = config::Config::builder()
        .add_source(LibconfigSource::new(root))
        .add_source(env_source)
        .build()
        .map_err(|e| loc.map_config_error(&e))?;

    let mut unknown = Vec::new();
    let config: GopherConfig = serde_ignored::deserialize(merged, |path| {
        unknown.push(ignored_key(&path));
    })
    .map_err(|e| loc.map_config_error(&e))?;
    validate(&config, &loc)?;

    unknown.sort();
    let warnings = unknown
        .iter()
        .map(|key| format!("{}: unknown key \"{key}\" (ignored)", loc.at(key)))
        .collect();
    Ok(LoadedConfig {
        config,
        warnings,
        path: origin.to_path_buf(),
    })
}
