//! Everything the daemon refuses before it serves, in one function: `--check-config` (the
//! systemd unit's `ExecStartPre`) and daemon start both call [`preflight`], so a file that
//! passes the check is a file the daemon starts with, and both report the same message.

use std::path::Path;

use super::load::{load, LoadedConfig};
use super::ConfigError;
use crate::meta::{self, SchemaRegistry};

/// A configuration the daemon can start with, and what it loaded to find out.
#[derive(Debug)]
pub struct Preflight {
    /// The validated configuration; its warnings include the daemon's own (ignored features).
    pub loaded: LoadedConfig,
    /// Every table of `global.meta_dir`.
    pub registry: SchemaRegistry,
}

/// Load and validate `path` (with this process's environment overrides), then check what the
/// daemon needs beyond a valid file: features it does not implement and the `.meta` files.
///
/// Not checked: whether ports are free and whether push sinks connect (both change while the
/// daemon runs; they are reported when they happen).
pub fn preflight(path: &Path) -> Result<Preflight, ConfigError> {
    check_loaded(load(path)?)
}

/// [`preflight`] for an already loaded configuration.
pub fn check_loaded(mut loaded: LoadedConfig) -> Result<Preflight, ConfigError> {
    let cfg = &loaded.config;
    if cfg.web_server.ssl_auth {
        return Err(loaded.invalid(
            "web_server.ssl_auth",
            "\"on\" is not supported yet; terminate TLS in front of the agent".to_string(),
        ));
    }
    let limits = meta::MetaLimits {
        max_fields: usize::try_from(cfg.imdb.max_metrics_num).unwrap_or(usize::MAX),
        ..meta::MetaLimits::default()
    };
    let registry = meta::load_dir_with(&cfg.global.meta_dir, &limits)
        .map_err(|e| loaded.invalid("global.meta_dir", e.to_string()))?;
    if cfg.global.rest_api_on {
        let at = loaded.provenance("global.rest_api_on");
        loaded.warnings.push(format!(
            "{at}: global.rest_api_on: the REST API is not implemented in this version (ignored)"
        ));
    }
    if cfg.metric.pod_info_switch {
        let at = loaded.provenance("metric.pod_info_switch");
        loaded.warnings.push(format!(
            "{at}: metric.pod_info_switch: container and pod labels are not implemented in this \
             version (ignored)"
        ));
    }
    if cfg.global.pin_path != super::model::Global::default().pin_path {
        let at = loaded.provenance("global.pin_path");
        loaded.warnings.push(format!(
            "{at}: global.pin_path: this version's eBPF probes pin no maps (ignored)"
        ));
    }
    Ok(Preflight { loaded, registry })
}
