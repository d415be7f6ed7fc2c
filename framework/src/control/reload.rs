//! SIGHUP: re-read the config file and apply its probe entries; say which other settings
//! changed but need a restart ([`crate::config::restart_required`]).

use std::sync::atomic::Ordering;

use super::{config_entries, Control, ControlError};
use crate::config;

impl Control {
    /// Re-read the config file and replace the config entries of the desired state (overrides
    /// stay). Counted in `gala_gopher_self_config_reloads_total` and logged. On success returns
    /// the dotted keys that changed but need a restart (compared with the configuration the
    /// daemon started with, so a change stays reported until the restart that applies it); a
    /// file that does not load changes nothing.
    pub fn reload(&self) -> Result<Vec<String>, ControlError> {
        let tel = &self.inner.telemetry;
        let loaded = config::load(&self.inner.config_path)
            .map_err(ControlError::from)
            .and_then(|l| config_entries(&l.config).map(|e| (e, l)));
        match loaded {
            Ok((entries, new)) => {
                tracing::info!("SIGHUP: probe configuration reloaded");
                tel.config_reloads.fetch_add(1, Ordering::Relaxed);
                self.replace_entries(entries);
                let pending = config::restart_required(&self.inner.running, &new.config);
                if !pending.is_empty() {
                    tracing::warn!(
                        "SIGHUP: these settings changed but need a restart to take effect (still using the old values): {}",
                        pending.join(", ")
                    );
                }
                Ok(pending)
            }
            Err(e) => {
                tel.config_reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!("SIGHUP: configuration not reloaded: {}", chain(&e));
                Err(e)
            }
        }
    }
}

/// `error: cause: cause …`, the whole source chain on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use tokio::sync::watch;

    use super::*;
    use crate::config::Switch;
    use crate::control::{DesiredState, Override, Source};
    use crate::supervisor::discovery::Declare;
    use crate::telemetry::Telemetry;

    const BEFORE: &str = "web_server = { port = 8888; };\n\
                          probes = ( { name = \"hup\"; switch = \"off\"; } );\n";

    #[test]
    fn reload_replaces_the_config_entries_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.conf");
        std::fs::write(&path, BEFORE).unwrap();
        let running = config::load(&path).unwrap().config;
        let tel = Arc::new(Telemetry::default());
        let c = Control::new(&path, &running, Arc::clone(&tel)).unwrap();
        c.set_override(
            "other",
            Source::Rest,
            Override {
                switch: Some(Switch::Off),
                param: None,
                runtime: None,
            },
        )
        .unwrap();
        let mut rx = c.subscribe();
        let drop_ins: BTreeSet<String> = ["hup".to_string(), "other".to_string()].into();
        let switches = |rx: &mut watch::Receiver<Arc<DesiredState>>| -> Vec<String> {
            let state = rx.borrow_and_update().clone();
            state
                .declare(&drop_ins, &mut Vec::new())
                .iter()
                .filter(|d| d.base != crate::supervisor::discovery::Base::Shipped)
                .map(|d| format!("{} {}", d.probe.name, d.probe.switch))
                .collect()
        };
        assert_eq!(switches(&mut rx), ["hup off", "other off"]);

        // The file switches the probe on and changes a setting that needs a restart.
        std::fs::write(
            &path,
            BEFORE
                .replace("switch = \"off\"", "switch = \"on\"")
                .replace("8888", "8889"),
        )
        .unwrap();
        assert_eq!(c.reload().unwrap(), ["web_server.port"]);
        assert!(rx.has_changed().unwrap());
        // The override of `other` survives the reload.
        assert_eq!(switches(&mut rx), ["hup on", "other off"]);
        assert_eq!(tel.config_reloads.load(Ordering::Relaxed), 1);

        // A broken file changes nothing and is counted.
        std::fs::write(&path, "web_server = { port = \"x\" ").unwrap();
        assert!(c.reload().is_err());
        assert!(!rx.has_changed().unwrap());
        assert_eq!(switches(&mut rx), ["hup on", "other off"]);
        assert_eq!(tel.config_reload_failures.load(Ordering::Relaxed), 1);
        assert_eq!(tel.config_reloads.load(Ordering::Relaxed), 1);

        // Still compared with what runs: the port stays reported until a restart.
        std::fs::write(&path, BEFORE.replace("8888", "8889")).unwrap();
        assert_eq!(c.reload().unwrap(), ["web_server.port"]);
        assert_eq!(switches(&mut rx), ["hup off", "other off"]);
    }

    #[test]
    fn chain_lists_every_cause() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(chain(&e), "outer: inner");
    }
}
