//! gala-gopher daemon library. The data path reads top to bottom:
//! probe process → [`wire`] (framer, parser) → [`meta`] (schema lookup) → [`store`] → [`export`].
//! The control path: [`config`] + drop-ins (+ overrides) → [`control`] (desired state) →
//! [`supervisor`] → [`telemetry`] (served by [`export::http`] and [`control::status`]).

pub mod clock;
pub mod config;
pub mod container_labels;
pub mod control;
pub mod ctl_client;
pub mod custom_labels;
pub mod events;
pub mod export;
pub mod ingest;
pub mod machine_id;
pub mod message;
pub mod meta;
pub mod meta_report;
pub mod process_identity;
pub mod record_labels;
pub mod store;
pub mod supervisor;
pub mod telemetry;
pub mod wire;
