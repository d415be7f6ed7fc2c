//! gala-gopher daemon library. The data path reads top to bottom:
//! probe process → [`wire`] (framer, parser) → [`meta`] (schema lookup) → [`store`] → [`export`].
//! The control path: [`config`] + drop-ins → [`supervisor`] → [`telemetry`] / [`api`].

pub mod config;
pub mod meta;
pub mod wire;
pub mod ingest;
pub mod machine_id;
pub mod store;
pub mod export;
pub mod supervisor;
pub mod telemetry;
