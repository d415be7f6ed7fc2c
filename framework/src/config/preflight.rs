//! Everything the daemon refuses before it serves, in one function: `--check-config` (the
//! systemd unit's `ExecStartPre`) and daemon start both call [`preflight`], so a file that
//! passes the check is a file the daemon starts with, and both report the same message.

use std::path::Path;

use super::load::{load, LoadedConfig};
use super::model::{OutChannel, Tls};
use super::ConfigError;
use crate::export::http::auth::BearerToken;
use crate::export::http::tls::ServerTls;
use crate::meta::{self, SchemaRegistry};

/// A configuration the daemon can start with, and what it loaded to find out.
#[derive(Debug)]
pub struct Preflight {
    /// The validated configuration; its warnings include the daemon's own (ignored features).
    pub loaded: LoadedConfig,
    /// Every table of `global.meta_dir`.
    pub registry: SchemaRegistry,
    /// `web_server` TLS (key, certificates, client CAs), when it serves `/metrics` with
    /// `ssl_auth = "on"`.
    pub web_tls: Option<ServerTls>,
    /// `rest_api_server` TLS, when the REST API is on with `ssl_auth = "on"`.
    pub rest_tls: Option<ServerTls>,
    /// The REST API's bearer token (`token_file` or `token`), when the REST API is on.
    pub rest_token: Option<BearerToken>,
}

/// Load and validate `path` (with this process's environment overrides), then check what the
/// daemon needs beyond a valid file: features it does not implement, the `.meta` files, and the
/// TLS and token files of the servers that run (read, owner and mode checked, parsed; a key
/// that does not match its certificate is refused).
///
/// Not checked: whether ports are free and whether push sinks connect (both change while the
/// daemon runs; they are reported when they happen).
pub fn preflight(path: &Path) -> Result<Preflight, ConfigError> {
    check_loaded(load(path)?)
}

/// [`preflight`] for an already loaded configuration.
pub fn check_loaded(mut loaded: LoadedConfig) -> Result<Preflight, ConfigError> {
    let cfg = &loaded.config;
    let web_tls = match cfg.web_server.tls() {
        Some(tls) if cfg.metric.out_channel.contains(OutChannel::WebServer) => {
            Some(load_tls(&loaded, "web_server", &tls)?)
        }
        _ => None,
    };
    let (rest_tls, rest_token) = if cfg.global.rest_api_on {
        let tls = match cfg.rest_api_server.tls() {
            Some(tls) => Some(load_tls(&loaded, "rest_api_server", &tls)?),
            None => None,
        };
        (tls, rest_token(&loaded)?)
    } else {
        (None, None)
    };
    let limits = meta::MetaLimits {
        max_fields: usize::try_from(cfg.imdb.max_metrics_num).unwrap_or(usize::MAX),
        counter_mode: cfg.metric.counter_mode.for_meta(),
        ..meta::MetaLimits::default()
    };
    let registry = meta::load_dir_with(&cfg.global.meta_dir, &limits)
        .map_err(|e| loaded.invalid("global.meta_dir", e.to_string()))?;
    if cfg.global.pin_path != super::model::Global::default().pin_path {
        let at = loaded.provenance("global.pin_path");
        loaded.warnings.push(format!(
            "{at}: global.pin_path: this version's eBPF probes pin no maps (ignored)"
        ));
    }
    Ok(Preflight {
        loaded,
        registry,
        web_tls,
        rest_tls,
        rest_token,
    })
}

fn load_tls(loaded: &LoadedConfig, section: &str, tls: &Tls) -> Result<ServerTls, ConfigError> {
    ServerTls::load(tls).map_err(|e| loaded.invalid(&format!("{section}.{}", e.key), e.message))
}

/// The REST token from `token_file` or `token` (validation makes them exclusive).
fn rest_token(loaded: &LoadedConfig) -> Result<Option<BearerToken>, ConfigError> {
    let rest = &loaded.config.rest_api_server;
    if let Some(path) = &rest.token_file {
        return BearerToken::from_file(path)
            .map(Some)
            .map_err(|e| loaded.invalid("rest_api_server.token_file", e.to_string()));
    }
    rest.token
        .as_deref()
        .map(BearerToken::new)
        .transpose()
        .map_err(|e| loaded.invalid("rest_api_server.token", e.to_string()))
}
