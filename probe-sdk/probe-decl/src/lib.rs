//! The run-time control contract between the gala-gopher daemon and a probe, defined once.
//!
//! A probe **declares** ([`Declaration`]) which sub-probes it has (and which of its `-P` table
//! bits each one sets), which params it accepts (type, range, default, the flag it maps to),
//! which snooper kinds it honours and whether it takes changes **without a restart** over the
//! control channel. A Rust probe builds its declaration in code and renders it into the `probe`
//! group of its `.meta` file ([`Declaration::render_meta`]); a script probe writes that group by
//! hand. The daemon reads the group back ([`Declaration::from_node`]) and validates REST and
//! `probes.init` documents against it ([`Param::check`], [`Declaration::sub_probe_bits`]), so
//! validation, `GET` output, the documentation and the probe itself follow from one declaration.
//!
//! The **control channel** ([`channel`]): the daemon writes one JSON object per line
//! ([`ControlMsg`]) on the probe's stdin — the complete run-time state each time, never a diff.

pub mod channel;
mod declaration;
mod params;
mod parse;
mod render;

pub use channel::{ChannelError, ControlMsg, Snoop, SnoopMode, MAX_LINE_BYTES};
pub use declaration::{
    Charset, DeclError, Declaration, Param, ParamError, ParamKind, ParamValue, SnooperKind,
    SubProbe, MAX_NAME_BYTES, MAX_PARAMS, MAX_SUB_PROBES,
};
pub use params::standard;
