//! The desired probe state, in one place, and the control surface that reports on it.
//!
//! Sources, in rising precedence ([`Source`]):
//! 1. **drop-ins** found in `global.probes_dir` (rescanned every second by
//!    [`crate::supervisor::discovery`]): run with switch on and no params;
//! 2. **config entries** (`probes`, `extend_probes`; re-read on SIGHUP by [`Control::reload`]): an
//!    entry named like a drop-in replaces the drop-in's settings as a whole (switch, param, start
//!    check) but still runs the drop-in's file;
//! 3. **`probes.init`** overrides (upstream's persisted REST state, replayed at start);
//! 4. **REST** overrides (`PUT /<probe>`).
//!
//! Overrides ([`Override`], set with [`Control::set_override`]) apply field by field on top of
//! the entry or drop-in of their name: a field left `None` keeps the value below. An override of a
//! name with neither entry nor drop-in waits until one appears. A SIGHUP replaces only the config
//! entries; overrides stay.
//!
//! Control publishes its state ([`DesiredState`]) on a watch channel ([`Control::subscribe`]);
//! the discovery loop merges it with each scan's drop-ins ([`merge::merge`]), resolves the
//! result to files and hands the supervisor one list to reconcile against. Control never spawns
//! anything; the supervisor never decides what should run.
//!
//! [`status`] serves `GET /status`, the daemon's report of what runs.

mod entries;
pub mod merge;
pub mod probes_init;
mod reload;
pub mod rest;
pub mod runtime;
pub mod snooper;
pub mod snooper_glue;
pub mod status;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::{self, GopherConfig};
use crate::supervisor::discovery::ConfiguredProbe;
use crate::supervisor::trust::valid_probe_name;
use crate::telemetry::Telemetry;

pub use entries::config_entries;
pub use merge::{DesiredState, Override, Source};

/// Most override slots (names × override sources) held at once; more are refused.
pub const MAX_OVERRIDES: usize = 1024;

/// Why control refused a change.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The config file could not be read or is invalid.
    #[error(transparent)]
    Config(#[from] Box<config::ConfigError>),
    /// A `check_type = "process"` start check does not compile.
    #[error("probe {probe}: start_check regex: {error}")]
    StartCheck {
        /// Probe name.
        probe: String,
        /// Why the regex was refused.
        error: String,
    },
    /// Not a valid probe name.
    #[error("invalid probe name {0:?}: 1 to 64 of A-Z a-z 0-9 _ . - (not starting with . or -)")]
    BadName(String),
    /// The parameter string cannot be split like a shell would.
    #[error("probe {probe}: cannot split param {param:?}: {error}")]
    BadParam {
        /// Probe name.
        probe: String,
        /// The parameter string.
        param: String,
        /// Why it cannot be split.
        error: String,
    },
    /// Only probes.init and REST set overrides; the other sources are read from files.
    #[error("{0:?} is not an override source")]
    NotAnOverride(Source),
    /// [`MAX_OVERRIDES`] reached.
    #[error("too many probe overrides (at most {MAX_OVERRIDES})")]
    TooManyOverrides,
}

impl From<config::ConfigError> for ControlError {
    fn from(e: config::ConfigError) -> Self {
        ControlError::Config(Box::new(e))
    }
}

/// Owner of the desired probe state. Cheap to clone (a handle to shared state).
#[derive(Clone)]
pub struct Control {
    inner: Arc<Inner>,
}

struct Inner {
    /// Re-read on [`Control::reload`].
    config_path: PathBuf,
    /// The configuration the daemon started with (what runs, for settings a reload cannot apply).
    running: GopherConfig,
    telemetry: Arc<Telemetry>,
    /// The current state; its receivers are the discovery loops.
    desired: watch::Sender<Arc<DesiredState>>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("config_path", &self.inner.config_path)
            .field("desired", &*self.inner.desired.borrow())
            .finish_non_exhaustive()
    }
}

impl Control {
    /// Control over the probe entries of `running` (the configuration the daemon started with,
    /// read from `config_path`), counting reloads into `telemetry`.
    pub fn new(
        config_path: impl Into<PathBuf>,
        running: &GopherConfig,
        telemetry: Arc<Telemetry>,
    ) -> Result<Self, ControlError> {
        let state = DesiredState::new(config_entries(running)?);
        let (desired, _) = watch::channel(Arc::new(state));
        Ok(Control {
            inner: Arc::new(Inner {
                config_path: config_path.into(),
                running: running.clone(),
                telemetry,
                desired,
            }),
        })
    }

    /// A receiver of the desired state, for [`crate::supervisor::discovery::DiscoveryInputs`].
    pub fn subscribe(&self) -> watch::Receiver<Arc<DesiredState>> {
        self.inner.desired.subscribe()
    }

    /// The current desired state.
    pub fn desired(&self) -> Arc<DesiredState> {
        Arc::clone(&self.inner.desired.borrow())
    }

    /// Set `source`'s override of probe `name` (replacing any earlier one from that source),
    /// applied at once. `source` must be [`Source::ProbesInit`] or [`Source::Rest`].
    pub fn set_override(
        &self,
        name: &str,
        source: Source,
        ov: Override,
    ) -> Result<(), ControlError> {
        if !source.is_override() {
            return Err(ControlError::NotAnOverride(source));
        }
        if !valid_probe_name(name) {
            return Err(ControlError::BadName(name.to_string()));
        }
        if let Some(param) = &ov.param {
            shell_words::split(param).map_err(|e| ControlError::BadParam {
                probe: name.to_string(),
                param: param.clone(),
                error: e.to_string(),
            })?;
        }
        let mut result = Ok(());
        self.inner.desired.send_if_modified(|state| {
            let fresh = state.override_of(name, source).is_none();
            if fresh && state.override_count() >= MAX_OVERRIDES {
                result = Err(ControlError::TooManyOverrides);
                return false;
            }
            if state.override_of(name, source) == Some(&ov) {
                return false;
            }
            // Copies the state only if a discovery scan still holds this version.
            Arc::make_mut(state).set_override(name, source, ov)
        });
        result
    }

    /// Drop `source`'s override of probe `name`, applied at once; false if there was none.
    pub fn clear_override(&self, name: &str, source: Source) -> bool {
        self.inner.desired.send_if_modified(|state| {
            state.override_of(name, source).is_some()
                && Arc::make_mut(state).clear_override(name, source)
        })
    }

    fn replace_entries(&self, entries: Vec<ConfiguredProbe>) {
        // Always notify: a reload makes the discovery loop rescan at once.
        self.inner
            .desired
            .send_modify(|state| Arc::make_mut(state).set_entries(entries));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Switch;

    fn control(conf: &str) -> (Control, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.conf");
        std::fs::write(&path, conf).unwrap();
        let loaded = config::load(&path).unwrap();
        let c = Control::new(&path, &loaded.config, Arc::new(Telemetry::default())).unwrap();
        (c, dir)
    }

    fn off() -> Override {
        Override {
            switch: Some(Switch::Off),
            param: None,
            runtime: None,
        }
    }

    #[test]
    fn set_override_is_published_and_validated() {
        let (c, _dir) = control("probes = ( { name = \"a\"; switch = \"on\"; } );\n");
        let mut rx = c.subscribe();
        rx.borrow_and_update();
        c.set_override("a", Source::Rest, off()).unwrap();
        assert!(rx.has_changed().unwrap());
        let state = rx.borrow_and_update().clone();
        assert_eq!(state.override_of("a", Source::Rest), Some(&off()));
        // The same override again is no change.
        c.set_override("a", Source::Rest, off()).unwrap();
        assert!(!rx.has_changed().unwrap());

        assert!(matches!(
            c.set_override("a", Source::Config, off()),
            Err(ControlError::NotAnOverride(Source::Config))
        ));
        assert!(matches!(
            c.set_override("a", Source::DropIn, off()),
            Err(ControlError::NotAnOverride(Source::DropIn))
        ));
        assert!(matches!(
            c.set_override("../x", Source::Rest, off()),
            Err(ControlError::BadName(_))
        ));
        let bad = Override {
            switch: None,
            param: Some("-x 'open".into()),
            runtime: None,
        };
        assert!(matches!(
            c.set_override("a", Source::Rest, bad),
            Err(ControlError::BadParam { .. })
        ));
        assert!(!rx.has_changed().unwrap());

        assert!(c.clear_override("a", Source::Rest));
        assert!(rx.has_changed().unwrap());
        assert!(!c.clear_override("a", Source::Rest));
        assert_eq!(c.desired().override_count(), 0);
    }

    #[test]
    fn overrides_are_bounded() {
        let (c, _dir) = control("");
        for i in 0..MAX_OVERRIDES {
            c.set_override(&format!("p{i}"), Source::Rest, off())
                .unwrap();
        }
        assert!(matches!(
            c.set_override("one_more", Source::Rest, off()),
            Err(ControlError::TooManyOverrides)
        ));
        // Replacing one that exists is still fine.
        c.set_override("p0", Source::Rest, Override::default())
            .unwrap();
        assert!(c.clear_override("p1", Source::Rest));
        c.set_override("one_more", Source::ProbesInit, off())
            .unwrap();
    }
}
