//! gala-gopher daemon library. The data path reads top to bottom:
//! probe process → [`wire`] (framer, parser) → [`meta`] (schema lookup) → [`store`] → [`export`].
//! The control path: [`config`] + drop-ins → [`supervisor`] → [`telemetry`] (served by
//! [`export::http`]).

pub mod config;
pub mod events;
pub mod export;
pub mod ingest;
pub mod machine_id;
pub mod meta;
pub mod meta_report;
pub mod store;
pub mod supervisor;
pub mod telemetry;
pub mod wire;
