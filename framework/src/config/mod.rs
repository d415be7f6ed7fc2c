//! `gala-gopher.conf` loading (libconfig syntax) into typed structs.
//!
//! * Every section and key is optional; a missing one takes its upstream default.
//! * Unknown keys are warnings (`FILE:LINE: unknown key "x.y" (ignored)`), never errors.
//! * Wrong types, out-of-range values, missing required keys and bad enum values are errors
//!   naming `FILE:LINE` (or the environment variable) and the dotted key.
//! * `GALA_GOPHER_<SECTION>__<KEY>` environment variables override file values, parsed by the
//!   same type rules (an integer key takes an integer, a switch `on`/`off`/`true`/`false`).
//! * [`preflight`] is the one check shared by `--check-config` and daemon start.

mod de;
mod error;
mod load;
mod model;
mod preflight;
mod reload;
mod summary;
mod validate;

pub use de::{valid_probe_name, MAX_PROBE_NAME};
pub use error::{ConfigError, Provenance};
pub use load::{load, load_str, LoadedConfig, ENV_PREFIX, ENV_SEPARATOR};
pub use model::{
    CheckType, CompressionCodec, Container, CounterMode, Egress, Event, ExtendProbeEntry, Global,
    GopherConfig, Imdb, Ingress, Kafka, Language, LogLevel, Logs, Meta, Metric, Otlp, OutChannel,
    OutChannels, ProbeEntry, RestApiServer, SaslMechanism, SecurityProtocol, Switch, Tls,
    WebServer,
};
pub use preflight::{check_loaded, preflight, Preflight};
pub use reload::{restart_required, RELOADABLE};
pub use summary::{check, summary};

/// Default config file location.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/gala-gopher/gala-gopher.conf";
