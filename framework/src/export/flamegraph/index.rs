//! `<flame_dir>/index.json`, the flame graph probe's list of its latest profiles, read as a
//! lookup table only: every path in it is checked against the one layout the probe writes
//! (`<kind>/<YYYYMMDD>/<YYYYMMDDHHMMSS>-<pid>.<ext>`, kind and pid those of the entry) before it
//! is ever opened, and the file is bounded in size and entries.
//!
//! ```json
//! {"version":1,"updated_ms":1764950000000,"profiles":[{"pid":123,"comm":"hot","kind":"oncpu",
//!  "start_ms":1,"end_ms":2,"samples":950,"value":9500000000,
//!  "svg":"oncpu/20261205/20261205170000-123.svg","folded":"…","pprof":"…"}]}
//! ```

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

/// The index's file name in `flame_dir`.
pub const INDEX_FILE: &str = "index.json";
/// Largest index read.
pub const MAX_INDEX_BYTES: u64 = 4 << 20;
/// Most profiles an index may list.
pub const MAX_PROFILES: usize = 4096;
/// The index format this daemon reads.
pub const VERSION: u32 = 1;
/// Longest `comm` kept (the kernel's is 15 bytes; the rest is cut).
const MAX_COMM_CHARS: usize = 64;
/// Longest relative path accepted (the layout's are about 40 bytes).
const MAX_PATH_BYTES: usize = 128;

/// On-CPU or off-CPU profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Sampled on-CPU stacks.
    OnCpu,
    /// Off-CPU (blocked) time.
    OffCpu,
}

impl Kind {
    /// Both kinds.
    pub const ALL: [Kind; 2] = [Kind::OnCpu, Kind::OffCpu];

    /// `oncpu` / `offcpu`: the index value, directory and URL word.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::OnCpu => "oncpu",
            Kind::OffCpu => "offcpu",
        }
    }

    /// The kind called `s`.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One of the files written per profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Artifact {
    /// The inferno flame graph.
    Svg,
    /// Folded stacks (`a;b;c 12`).
    Folded,
    /// gzip'ed pprof protobuf.
    Pprof,
}

impl Artifact {
    /// Every artifact, in listing order.
    pub const ALL: [Artifact; 3] = [Artifact::Svg, Artifact::Folded, Artifact::Pprof];

    /// File name extension, dot included (also the URL's).
    pub fn ext(self) -> &'static str {
        match self {
            Artifact::Svg => ".svg",
            Artifact::Folded => ".folded",
            Artifact::Pprof => ".pb.gz",
        }
    }

    /// The artifact whose extension `s` ends with exactly (after a stem).
    pub fn split(s: &str) -> Option<(&str, Artifact)> {
        Artifact::ALL
            .into_iter()
            .find_map(|a| s.strip_suffix(a.ext()).map(|stem| (stem, a)))
    }
}

/// One profile of the index, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Profiled process.
    pub pid: u32,
    /// Its `comm` as the probe saw it (untrusted text, cut to 64 characters).
    pub comm: String,
    /// On- or off-CPU.
    pub kind: Kind,
    /// Period start, Unix ms.
    pub start_ms: u64,
    /// Period end, Unix ms.
    pub end_ms: u64,
    /// Stack samples in the period.
    pub samples: u64,
    /// Summed value (ns of CPU or of blocked time).
    pub value: u64,
    svg: Option<String>,
    folded: Option<String>,
    pprof: Option<String>,
}

impl Profile {
    /// The checked relative path of `artifact`, if the entry has one.
    pub fn path(&self, artifact: Artifact) -> Option<&str> {
        match artifact {
            Artifact::Svg => self.svg.as_deref(),
            Artifact::Folded => self.folded.as_deref(),
            Artifact::Pprof => self.pprof.as_deref(),
        }
    }
}

/// A parsed index.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Index {
    /// When the probe last rewrote it, Unix ms.
    pub updated_ms: u64,
    /// The valid profiles, in the index's order.
    pub profiles: Vec<Profile>,
    /// Entries or paths left out because they broke the layout (each one is a sign of tampering
    /// or of a probe bug).
    pub refused: Vec<String>,
    /// Per pid, kind and artifact: the position of the latest profile having it (built once, so
    /// that lookups and the listing stay linear in the number of profiles).
    latest: HashMap<(u32, Kind, Artifact), usize>,
}

impl Index {
    /// An index of `profiles` (in the index's order).
    pub fn new(updated_ms: u64, profiles: Vec<Profile>, refused: Vec<String>) -> Index {
        let mut latest: HashMap<(u32, Kind, Artifact), usize> = HashMap::new();
        for (i, p) in profiles.iter().enumerate() {
            for a in Artifact::ALL {
                if p.path(a).is_none() {
                    continue;
                }
                // The latest period end wins; a later entry wins a tie.
                let slot = latest.entry((p.pid, p.kind, a)).or_insert(i);
                let best = &profiles[*slot];
                if (p.end_ms, p.start_ms) >= (best.end_ms, best.start_ms) {
                    *slot = i;
                }
            }
        }
        Index {
            updated_ms,
            profiles,
            refused,
            latest,
        }
    }

    /// The latest profile of `pid` and `kind` that has `artifact`: the one with the latest period
    /// end (a later entry wins a tie).
    pub fn latest(&self, pid: u32, kind: Kind, artifact: Artifact) -> Option<&Profile> {
        self.latest
            .get(&(pid, kind, artifact))
            .map(|&i| &self.profiles[i])
    }

    /// Whether `p` (one of [`Index::profiles`]) is what `/<pid>/<kind><ext>` serves for
    /// `artifact`.
    pub fn serves(&self, p: &Profile, artifact: Artifact) -> bool {
        self.latest(p.pid, p.kind, artifact)
            .is_some_and(|l| std::ptr::eq(l, p))
    }

    /// Whether `p` is the latest profile of its pid and kind for any of its files.
    pub fn is_latest(&self, p: &Profile) -> bool {
        Artifact::ALL.into_iter().any(|a| self.serves(p, a))
    }
}

/// Why an index was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// Larger than [`MAX_INDEX_BYTES`].
    #[error("index.json is {0} bytes, more than {MAX_INDEX_BYTES}")]
    TooLarge(u64),
    /// Not JSON of the expected shape (or not UTF-8).
    #[error("index.json is malformed: {0}")]
    Malformed(String),
    /// A version this daemon does not read.
    #[error("index.json has version {0}, this daemon reads version {VERSION}")]
    Version(u64),
}

#[derive(Deserialize)]
struct RawIndex {
    version: u64,
    #[serde(default)]
    updated_ms: u64,
    #[serde(deserialize_with = "bounded_profiles")]
    profiles: Vec<RawProfile>,
}

#[derive(Deserialize)]
struct RawProfile {
    pid: u64,
    #[serde(default)]
    comm: String,
    kind: String,
    #[serde(default)]
    start_ms: u64,
    #[serde(default)]
    end_ms: u64,
    #[serde(default)]
    samples: u64,
    #[serde(default)]
    value: u64,
    #[serde(default)]
    svg: Option<String>,
    #[serde(default)]
    folded: Option<String>,
    #[serde(default)]
    pprof: Option<String>,
}

/// The `profiles` array, refused past [`MAX_PROFILES`] entries before more are allocated.
fn bounded_profiles<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<RawProfile>, D::Error> {
    struct Bounded;
    impl<'de> Visitor<'de> for Bounded {
        type Value = Vec<RawProfile>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "an array of at most {MAX_PROFILES} profiles")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(p) = seq.next_element::<RawProfile>()? {
                if out.len() == MAX_PROFILES {
                    return Err(de::Error::custom(format_args!(
                        "more than {MAX_PROFILES} profiles"
                    )));
                }
                out.push(p);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Bounded)
}

/// Parse and check an index; entries that break the layout are left out and named in
/// [`Index::refused`].
pub fn parse(bytes: &[u8]) -> Result<Index, IndexError> {
    if bytes.len() as u64 > MAX_INDEX_BYTES {
        return Err(IndexError::TooLarge(bytes.len() as u64));
    }
    let raw: RawIndex = serde_json::from_slice(bytes).map_err(|e| {
        let mut m = e.to_string();
        m.truncate(200);
        IndexError::Malformed(m)
    })?;
    if raw.version != u64::from(VERSION) {
        return Err(IndexError::Version(raw.version));
    }
    let mut profiles = Vec::with_capacity(raw.profiles.len());
    let mut refused = Vec::new();
    for (i, p) in raw.profiles.into_iter().enumerate() {
        match check_profile(p) {
            Ok((profile, bad_paths)) => {
                refused.extend(
                    bad_paths
                        .into_iter()
                        .map(|why| format!("profiles[{i}]: {why}")),
                );
                profiles.push(profile);
            }
            Err(why) => refused.push(format!("profiles[{i}]: {why}")),
        }
    }
    Ok(Index::new(raw.updated_ms, profiles, refused))
}

/// The checked profile and the reasons its refused paths were left out; `Err` refuses the
/// whole entry.
fn check_profile(p: RawProfile) -> Result<(Profile, Vec<String>), String> {
    let pid = u32::try_from(p.pid)
        .ok()
        .filter(|&pid| pid > 0)
        .ok_or_else(|| format!("pid {} out of range", p.pid))?;
    let kind = Kind::parse(&p.kind).ok_or("kind is neither oncpu nor offcpu")?;
    let mut bad = Vec::new();
    let mut keep = |path: Option<String>, artifact: Artifact| {
        let path = path?;
        match check_path(&path, kind, pid, artifact) {
            Ok(()) => Some(path),
            Err(why) => {
                bad.push(format!("{} path refused: {why}", &artifact.ext()[1..]));
                None
            }
        }
    };
    let svg = keep(p.svg, Artifact::Svg);
    let folded = keep(p.folded, Artifact::Folded);
    let pprof = keep(p.pprof, Artifact::Pprof);
    let comm = p.comm.chars().take(MAX_COMM_CHARS).collect();
    Ok((
        Profile {
            pid,
            comm,
            kind,
            start_ms: p.start_ms,
            end_ms: p.end_ms,
            samples: p.samples,
            value: p.value,
            svg,
            folded,
            pprof,
        },
        bad,
    ))
}

/// Why a relative path from the index is not one the probe writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Longer than any the layout produces.
    #[error("too long")]
    TooLong,
    /// A byte outside `A-Z a-z 0-9 . _ / -`.
    #[error("character outside A-Z a-z 0-9 . _ / -")]
    Charset,
    /// Starts with `/`.
    #[error("absolute")]
    Absolute,
    /// Empty, `.` or `..` component.
    #[error("empty, . or .. component")]
    Traversal,
    /// Not `<kind>/<YYYYMMDD>/<YYYYMMDDHHMMSS>-<pid><ext>` for the entry's kind, pid and
    /// artifact.
    #[error("not <kind>/<YYYYMMDD>/<YYYYMMDDHHMMSS>-<pid>.<ext> of this entry")]
    Layout,
}

fn digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

/// Check that `rel` is `<kind>/<YYYYMMDD>/<YYYYMMDDHHMMSS>-<pid><ext>` (the date directory
/// being the timestamp's day) with only `[A-Za-z0-9._/-]`.
pub fn check_path(rel: &str, kind: Kind, pid: u32, artifact: Artifact) -> Result<(), PathError> {
    if rel.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    if !rel
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b))
    {
        return Err(PathError::Charset);
    }
    if rel.starts_with('/') {
        return Err(PathError::Absolute);
    }
    let parts: Vec<&str> = rel.split('/').collect();
    if parts
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == "..")
    {
        return Err(PathError::Traversal);
    }
    let [k, day, file] = parts[..] else {
        return Err(PathError::Layout);
    };
    let Some(stem) = file.strip_suffix(artifact.ext()) else {
        return Err(PathError::Layout);
    };
    let Some((stamp, file_pid)) = stem.split_once('-') else {
        return Err(PathError::Layout);
    };
    let ok = k == kind.as_str()
        && digits(day, 8)
        && digits(stamp, 14)
        && stamp.starts_with(day)
        && file_pid == pid.to_string();
    ok.then_some(()).ok_or(PathError::Layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVG: &str = "oncpu/20261205/20261205170000-123.svg";

    fn entry(pid: u64, kind: &str, svg: &str) -> String {
        format!(
            r#"{{"pid":{pid},"comm":"hot","kind":"{kind}","start_ms":1,"end_ms":2,"samples":950,"value":9500000000,"svg":"{svg}"}}"#
        )
    }

    fn index_of(entries: &[String]) -> Vec<u8> {
        format!(
            r#"{{"version":1,"updated_ms":1764950000000,"profiles":[{}]}}"#,
            entries.join(",")
        )
        .into_bytes()
    }

    #[test]
    fn the_layout_is_the_only_accepted_path() {
        let ok = |p: &str| check_path(p, Kind::OnCpu, 123, Artifact::Svg);
        assert_eq!(ok(SVG), Ok(()));
        assert_eq!(
            check_path(
                "offcpu/20261205/20261205170000-123.pb.gz",
                Kind::OffCpu,
                123,
                Artifact::Pprof
            ),
            Ok(())
        );
        for (bad, why) in [
            ("../../etc/passwd", PathError::Traversal),
            ("../../../etc/passwd", PathError::Traversal),
            ("oncpu/../../etc/passwd", PathError::Traversal),
            ("/etc/passwd", PathError::Absolute),
            (
                "/oncpu/20261205/20261205170000-123.svg",
                PathError::Absolute,
            ),
            ("oncpu//20261205170000-123.svg", PathError::Traversal),
            (
                "./oncpu/20261205/20261205170000-123.svg",
                PathError::Traversal,
            ),
            ("oncpu/20261205/20261205170000-123.svg ", PathError::Charset),
            ("oncpu\\20261205\\x.svg", PathError::Charset),
            (
                "oncpu/20261205/20261205170000-123.svg\0",
                PathError::Charset,
            ),
            ("oncpu/2026120é/20261205170000-123.svg", PathError::Charset),
            ("oncpu/20261205/%2e%2e.svg", PathError::Charset),
            ("etc/20261205/20261205170000-123.svg", PathError::Layout),
            ("offcpu/20261205/20261205170000-123.svg", PathError::Layout),
            ("oncpu/20261205/20261205170000-124.svg", PathError::Layout),
            ("oncpu/20261205/20261205170000-0123.svg", PathError::Layout),
            ("oncpu/20261206/20261205170000-123.svg", PathError::Layout),
            ("oncpu/2026120/20261205170000-123.svg", PathError::Layout),
            ("oncpu/20261205/2026120517000-123.svg", PathError::Layout),
            (
                "oncpu/20261205/20261205170000-123.folded",
                PathError::Layout,
            ),
            (
                "oncpu/20261205/20261205170000-123.svg.svg",
                PathError::Layout,
            ),
            ("oncpu/20261205/x/20261205170000-123.svg", PathError::Layout),
            ("passwd", PathError::Layout),
        ] {
            assert_eq!(ok(bad), Err(why), "{bad:?}");
        }
        assert_eq!(ok(&"a".repeat(129)), Err(PathError::TooLong));
    }

    #[test]
    fn hostile_entries_are_left_out_and_named() {
        let bytes = index_of(&[
            entry(123, "oncpu", SVG),
            entry(124, "oncpu", "../../../etc/passwd"),
            entry(125, "oncpu", "/etc/passwd"),
            entry(0, "oncpu", SVG),
            entry(1 << 40, "oncpu", SVG),
            entry(126, "etc", SVG),
        ]);
        let idx = parse(&bytes).unwrap();
        assert_eq!(idx.updated_ms, 1_764_950_000_000);
        // 124 and 125 stay listed, without a file to serve.
        let pids: Vec<u32> = idx.profiles.iter().map(|p| p.pid).collect();
        assert_eq!(pids, [123, 124, 125]);
        assert_eq!(idx.profiles[0].path(Artifact::Svg), Some(SVG));
        assert_eq!(idx.profiles[1].path(Artifact::Svg), None);
        assert_eq!(idx.profiles[2].path(Artifact::Svg), None);
        assert_eq!(idx.refused.len(), 5, "{:?}", idx.refused);
        assert!(idx.refused[0].starts_with("profiles[1]: svg path refused"));
        assert!(idx.latest(124, Kind::OnCpu, Artifact::Svg).is_none());
        assert!(idx.latest(123, Kind::OffCpu, Artifact::Svg).is_none());
        assert!(idx.latest(123, Kind::OnCpu, Artifact::Folded).is_none());
    }

    #[test]
    fn malformed_indexes_are_refused_whole() {
        for bad in [
            &b""[..],
            b"{",
            b"[]",
            b"{\"version\":1}",
            b"{\"version\":1,\"profiles\":{}}",
            b"{\"version\":1,\"profiles\":[{\"pid\":\"1\",\"kind\":\"oncpu\"}]}",
            b"{\"version\":1,\"profiles\":[{\"pid\":-1,\"kind\":\"oncpu\"}]}",
            // Not UTF-8 inside a string.
            b"{\"version\":1,\"profiles\":[{\"pid\":1,\"kind\":\"oncpu\",\"comm\":\"\xff\xfe\"}]}",
            b"\xef\xbb\xbf\xff{}",
        ] {
            assert!(
                matches!(parse(bad), Err(IndexError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            parse(b"{\"version\":2,\"profiles\":[]}"),
            Err(IndexError::Version(2))
        );
        // Unknown fields from a newer writer are ignored.
        let idx = parse(b"{\"version\":1,\"x\":[1],\"profiles\":[{\"pid\":1,\"kind\":\"offcpu\",\"new\":true}]}")
            .unwrap();
        assert_eq!(idx.profiles.len(), 1);
    }

    #[test]
    fn size_and_entry_count_are_bounded() {
        let huge = vec![b' '; MAX_INDEX_BYTES as usize + 1];
        assert_eq!(parse(&huge), Err(IndexError::TooLarge(MAX_INDEX_BYTES + 1)));
        let at_cap: Vec<String> = (1..=MAX_PROFILES as u64)
            .map(|pid| {
                entry(
                    pid,
                    "oncpu",
                    &format!("oncpu/20261205/20261205170000-{pid}.svg"),
                )
            })
            .collect();
        let idx = parse(&index_of(&at_cap)).unwrap();
        assert_eq!(idx.profiles.len(), MAX_PROFILES);
        assert!(idx.refused.is_empty());
        let ten_k: Vec<String> = (1..=10_000u64)
            .map(|pid| entry(pid, "oncpu", SVG))
            .collect();
        let bytes = index_of(&ten_k);
        assert!(bytes.len() < MAX_INDEX_BYTES as usize);
        match parse(&bytes) {
            Err(IndexError::Malformed(m)) => assert!(m.contains("more than 4096"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn comm_is_kept_as_text_and_cut() {
        let long = "x".repeat(500);
        let bytes = format!(
            r#"{{"version":1,"profiles":[{{"pid":7,"kind":"oncpu","comm":"<script>\u202e{long}"}}]}}"#
        );
        let idx = parse(bytes.as_bytes()).unwrap();
        assert_eq!(idx.profiles[0].comm.chars().count(), MAX_COMM_CHARS);
        assert!(idx.profiles[0].comm.starts_with("<script>\u{202e}x"));
    }

    #[test]
    fn latest_is_the_latest_period_end() {
        let mk = |start: u64, end: u64, stamp: &str| {
            format!(
                r#"{{"pid":9,"kind":"oncpu","start_ms":{start},"end_ms":{end},"svg":"oncpu/20261205/{stamp}-9.svg"}}"#
            )
        };
        let bytes = index_of(&[
            mk(10, 20, "20261205170000"),
            mk(30, 40, "20261205170300"),
            mk(0, 5, "20261205165700"),
        ]);
        let idx = parse(&bytes).unwrap();
        let l = idx.latest(9, Kind::OnCpu, Artifact::Svg).unwrap();
        assert_eq!(l.end_ms, 40);
        assert!(idx.is_latest(l));
        assert!(!idx.is_latest(&idx.profiles[0]));
    }
}
