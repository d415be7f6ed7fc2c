//! A reader for the [libconfig](https://hyperrealm.github.io/libconfig/) configuration syntax
//! (version 1.7 grammar), written with `nom`, that keeps the file, line and column of every value.
//!
//! ```
//! use std::path::Path;
//! let doc = gala_libconfig::parse_str(
//!     "web_server = { port = 8888; };\nprobes = ( { name = \"tcp\"; } );",
//!     Path::new("gopher.conf"),
//! ).unwrap();
//! assert_eq!(doc.lookup("web_server.port").and_then(|n| n.as_int()), Some(8888));
//! let name = doc.lookup("probes.[0].name").unwrap();
//! assert_eq!((name.as_str(), name.line), (Some("tcp"), 2));
//! ```
//!
//! Supported: `=`/`:` settings with optional `;`/`,` terminators, groups, lists, arrays, strings
//! with escapes and literal concatenation, decimal/hex integers with `L`/`LL`, floats, booleans
//! in any case, `#`, `//` and `/* */` comments, and `@include` (where a setting may appear).
//! [`LibconfigSource`] / [`LibconfigFormat`] plug documents into the `config` crate.

mod error;
mod lex;
mod node;
mod parse;
mod source;

pub use error::{Error, Location};
pub use node::{parse_path, Node, PathSegment, Value};
pub use parse::{parse_file, parse_str, MAX_INCLUDE_DEPTH, MAX_NESTING};
pub use source::{
    error_key, error_message, locate_error, to_config_value, LibconfigFormat, LibconfigSource,
};
