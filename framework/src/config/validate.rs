//! Rules that span several keys (serde checks each value on its own).

use std::collections::HashMap;

use super::load::Locator;
use super::model::{CheckType, GopherConfig, OutChannel, Switch};
use super::ConfigError;

/// One probe entry seen through the fields both lists share.
struct EntryView<'a> {
    key: String,
    name: &'a str,
    switch: Switch,
    start_check: Option<&'a str>,
    check_type: CheckType,
}

fn entries(cfg: &GopherConfig) -> Vec<EntryView<'_>> {
    let natives = cfg.probes.iter().enumerate().map(|(i, p)| EntryView {
        key: format!("probes[{i}]"),
        name: &p.name,
        switch: p.switch,
        start_check: p.start_check.as_deref(),
        check_type: p.check_type,
    });
    let extends = cfg
        .extend_probes
        .iter()
        .enumerate()
        .map(|(i, p)| EntryView {
            key: format!("extend_probes[{i}]"),
            name: &p.name,
            switch: p.switch,
            start_check: p.start_check.as_deref(),
            check_type: p.check_type,
        });
    natives.chain(extends).collect()
}

/// Check cross-key rules; errors point at the offending key.
pub(super) fn validate(cfg: &GopherConfig, loc: &Locator) -> Result<(), ConfigError> {
    validate_probes(cfg, loc)?;
    validate_channels(cfg, loc)?;
    validate_servers(cfg, loc)
}

fn validate_probes(cfg: &GopherConfig, loc: &Locator) -> Result<(), ConfigError> {
    let mut seen: HashMap<&str, String> = HashMap::new();
    for e in entries(cfg) {
        let name_key = format!("{}.name", e.key);
        if let Some(first) = seen.get(e.name) {
            return Err(loc.invalid(
                &name_key,
                format!(
                    "duplicate probe name {:?} (first used by {first} at {})",
                    e.name,
                    loc.at(first)
                ),
            ));
        }
        seen.insert(e.name, name_key);

        let check_key = format!("{}.start_check", e.key);
        if e.switch == Switch::Auto && e.start_check.is_none() {
            return Err(loc.invalid_at(
                &check_key,
                &format!("{}.switch", e.key),
                "switch is \"auto\" but start_check is missing or empty".to_string(),
            ));
        }
        if let (Some(check), CheckType::Process) = (e.start_check, e.check_type) {
            if let Err(err) = regex::Regex::new(check) {
                let first_line = err
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .to_string();
                return Err(loc.invalid(
                    &check_key,
                    format!("invalid process regex {check:?}: {first_line}"),
                ));
            }
        }
    }
    Ok(())
}

fn validate_channels(cfg: &GopherConfig, loc: &Locator) -> Result<(), ConfigError> {
    let sections = [
        ("metric", &cfg.metric.out_channel),
        ("event", &cfg.event.out_channel),
        ("meta", &cfg.meta.out_channel),
    ];
    for (section, channels) in sections {
        let key = format!("{section}.out_channel");
        if channels.contains(OutChannel::Kafka) && cfg.kafka.kafka_broker.is_empty() {
            return Err(loc.invalid(
                &key,
                "channel \"kafka\" needs kafka.kafka_broker to be set".to_string(),
            ));
        }
        if channels.contains(OutChannel::Otlp) && cfg.otlp.endpoint.is_empty() {
            return Err(loc.invalid(
                &key,
                "channel \"otlp\" needs otlp.endpoint to be set".to_string(),
            ));
        }
        if section != "metric" && channels.contains(OutChannel::WebServer) {
            return Err(loc.invalid(
                &key,
                "channel \"web_server\" only carries metrics".to_string(),
            ));
        }
    }
    Ok(())
}

fn validate_servers(cfg: &GopherConfig, loc: &Locator) -> Result<(), ConfigError> {
    let web = &cfg.web_server;
    let rest = &cfg.rest_api_server;
    let servers = [
        (
            "web_server",
            web.ssl_auth,
            &web.private_key,
            &web.cert_file,
            &web.ca_file,
        ),
        (
            "rest_api_server",
            rest.ssl_auth,
            &rest.private_key,
            &rest.cert_file,
            &rest.ca_file,
        ),
    ];
    for (section, ssl, key_file, cert_file, ca_file) in servers {
        if !ssl {
            continue;
        }
        for (name, value, required) in [
            ("private_key", key_file, true),
            ("cert_file", cert_file, true),
            ("ca_file", ca_file, false),
        ] {
            let key = format!("{section}.{name}");
            match value {
                None if required => {
                    return Err(loc.invalid_at(
                        &key,
                        &format!("{section}.ssl_auth"),
                        "required when ssl_auth is \"on\"".to_string(),
                    ))
                }
                Some(p) if !p.is_file() => {
                    return Err(loc.invalid(&key, format!("file {} does not exist", p.display())))
                }
                _ => {}
            }
        }
    }
    if rest.token.is_some() && rest.token_file.is_some() {
        return Err(loc.invalid(
            "rest_api_server.token_file",
            "set token_file or token, not both (token_file is the safer one)".to_string(),
        ));
    }
    if cfg.global.rest_api_on
        && cfg.metric.out_channel.contains(OutChannel::WebServer)
        && web.port == rest.port
        && (web.bind_addr == rest.bind_addr
            || web.bind_addr.is_unspecified()
            || rest.bind_addr.is_unspecified())
    {
        return Err(loc.invalid(
            "rest_api_server.port",
            format!("port {} is already used by web_server.port", rest.port),
        ));
    }
    Ok(())
}
