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
//! with libconfig's escapes (`\a \b \f \n \r \t \v \\ \" \xHH`; a backslash before anything
//! else is kept) and literal concatenation, decimal/hex/binary/octal integers with `L`/`LL`,
//! floats, booleans in any case, `#`, `//` and `/* */` comments, and `@include` of a file or a
//! wildcard pattern where a setting or a list/array element may appear.
//!
//! Files are read with [`read_file`]: regular files only (a FIFO or `/dev/zero` is refused
//! without blocking), at most [`MAX_FILE_SIZE`] bytes each and [`MAX_TOTAL_SIZE`] with all
//! includes, invalid UTF-8 reported at its line and column. Parsing is linear in the input.
//! [`LibconfigSource`] / [`LibconfigFormat`] plug documents into the `config` crate.

mod error;
mod lex;
mod node;
mod parse;
mod read;
mod source;

pub use error::{Error, Location};
pub use node::{parse_path, Node, PathSegment, Value};
pub use parse::{parse_file, parse_str, MAX_INCLUDE_DEPTH, MAX_INCLUDE_FILES, MAX_NESTING};
pub use read::{decode_utf8, read_file, read_file_bytes, MAX_FILE_SIZE, MAX_TOTAL_SIZE};
pub use source::{
    error_key, error_message, locate_error, to_config_value, LibconfigFormat, LibconfigSource,
};
