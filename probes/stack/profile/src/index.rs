//! `<flame_dir>/index.json`: the latest outputs of each (pid, kind) still on disk, for the
//! daemon's HTTP server (`GET /flamegraph/<pid>/<kind>.svg`).
//!
//! ```json
//! {"version":1,"updated_ms":1764954000123,"profiles":[
//!   {"pid":123,"comm":"nginx","kind":"oncpu","start_ms":1764953820000,"end_ms":1764954000000,
//!    "samples":5400,"value":54545454000,
//!    "svg":"oncpu/20251205/20251205170000-123.svg",
//!    "folded":"oncpu/20251205/20251205170000-123.folded",
//!    "pprof":"oncpu/20251205/20251205170000-123.pb.gz"}]}
//! ```
//!
//! * Paths are relative to flame_dir, `/`-separated; a path is `null` when that file is not on
//!   disk (e.g. removed by hand).
//! * `samples` is the sum of `count`, `value` the sum of `value` (ns) of the profile.
//! * Entries are newest first (`end_ms`), at most [`MAX_INDEX_ENTRIES`]; older ones are left out.
//! * For files found at start without an entry in the previous index (no metadata), `comm` is
//!   `""`, `start_ms` = `end_ms` = the time in the file name, `samples` and `value` 0.
//! * `comm` is sanitised (control characters → `_`, at most 512 bytes).

use serde::{Deserialize, Serialize};

use crate::model::Kind;

/// The index format's version.
pub const INDEX_VERSION: u32 = 1;

/// Most entries listed in index.json (the newest are kept).
pub const MAX_INDEX_ENTRIES: usize = 4096;

/// Largest index.json read back at start (a bigger one is ignored).
pub(crate) const MAX_INDEX_BYTES: u64 = 8 << 20;

/// The whole index.json document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// [`INDEX_VERSION`].
    pub version: u32,
    /// When the index was written, ms since the epoch.
    pub updated_ms: u64,
    /// Latest outputs per (pid, kind), newest first.
    pub profiles: Vec<IndexEntry>,
}

/// The latest outputs of one (pid, kind).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// Process id.
    pub pid: u32,
    /// Process comm (sanitised).
    pub comm: String,
    /// `oncpu` / `offcpu`.
    pub kind: Kind,
    /// Start of the period, ms since the epoch.
    pub start_ms: u64,
    /// End of the period, ms since the epoch.
    pub end_ms: u64,
    /// Sum of the samples' `count`.
    pub samples: u64,
    /// Sum of the samples' `value` (ns).
    pub value: u64,
    /// The SVG, relative to flame_dir.
    pub svg: Option<String>,
    /// The folded stacks, relative to flame_dir.
    pub folded: Option<String>,
    /// The gzip-compressed pprof, relative to flame_dir.
    pub pprof: Option<String>,
}

impl Index {
    /// The JSON text of the index.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain structs of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses index.json text; `None` when it is not a version-1 index.
    pub fn from_json(bytes: &[u8]) -> Option<Index> {
        let index: Index = serde_json::from_slice(bytes).ok()?;
        (index.version == INDEX_VERSION).then_some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let index = Index {
            version: 1,
            updated_ms: 7,
            profiles: vec![IndexEntry {
                pid: 123,
                comm: "a\"b".into(),
                kind: Kind::OnCpu,
                start_ms: 1,
                end_ms: 2,
                samples: 3,
                value: 4,
                svg: Some("oncpu/20251205/20251205170000-123.svg".into()),
                folded: None,
                pprof: Some("oncpu/20251205/20251205170000-123.pb.gz".into()),
            }],
        };
        let text = String::from_utf8(index.to_json()).unwrap_or_default();
        assert_eq!(
            text,
            r#"{"version":1,"updated_ms":7,"profiles":[{"pid":123,"comm":"a\"b","kind":"oncpu","start_ms":1,"end_ms":2,"samples":3,"value":4,"svg":"oncpu/20251205/20251205170000-123.svg","folded":null,"pprof":"oncpu/20251205/20251205170000-123.pb.gz"}]}"#
        );
        assert_eq!(Index::from_json(text.as_bytes()), Some(index));
        assert_eq!(
            Index::from_json(br#"{"version":2,"updated_ms":0,"profiles":[]}"#),
            None
        );
        assert_eq!(Index::from_json(b"garbage"), None);
    }
}
