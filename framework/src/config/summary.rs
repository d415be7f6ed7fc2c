//! Human summary for `gala-gopher --check-config`.

use std::fmt::Write as _;
use std::path::Path;

use super::load::LoadedConfig;
use super::model::{OutChannel, Switch};
use super::preflight::preflight;
use super::ConfigError;

/// What `--check-config` does: [`preflight`] `path`; on success return a short summary
/// (warnings first).
pub fn check(path: &Path) -> Result<String, ConfigError> {
    preflight(path).map(|checked| summary(&checked.loaded))
}

/// A short multi-line description of what a loaded config will do.
pub fn summary(loaded: &LoadedConfig) -> String {
    let c = &loaded.config;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: OK ({} warning{})",
        loaded.path.display(),
        loaded.warnings.len(),
        if loaded.warnings.len() == 1 { "" } else { "s" }
    );
    for w in &loaded.warnings {
        let _ = writeln!(out, "  warning: {w}");
    }
    let metrics_at = if c.metric.out_channel.contains(OutChannel::WebServer) {
        let scheme = if c.web_server.ssl_auth {
            "https"
        } else {
            "http"
        };
        let addr = std::net::SocketAddr::new(c.web_server.bind_addr, c.web_server.port);
        format!(" ({scheme}://{addr}/metrics)")
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "metric -> {}{metrics_at}; event -> {}; meta -> {}",
        c.metric.out_channel, c.event.out_channel, c.meta.out_channel
    );
    if c.global.rest_api_on {
        let r = &c.rest_api_server;
        let _ = writeln!(
            out,
            "rest api: {}://{} (token: {})",
            if r.ssl_auth { "https" } else { "http" },
            std::net::SocketAddr::new(r.bind_addr, r.port),
            if r.has_token() { "required" } else { "none" }
        );
    } else {
        let _ = writeln!(out, "rest api: off");
    }
    let _ = writeln!(
        out,
        "probes_dir: {}; meta_dir: {}",
        c.global.probes_dir.display(),
        c.global.meta_dir.display()
    );
    for sw in [Switch::On, Switch::Auto, Switch::Off] {
        let names: Vec<&str> = c
            .probes
            .iter()
            .filter(|p| p.switch == sw)
            .map(|p| p.name.as_str())
            .chain(
                c.extend_probes
                    .iter()
                    .filter(|p| p.switch == sw)
                    .map(|p| p.name.as_str()),
            )
            .collect();
        let list = if names.is_empty() {
            "-".to_string()
        } else {
            names.join(", ")
        };
        let _ = writeln!(out, "probes {sw}: {list}");
    }
    out
}
