//! pprof profiles (`profile.proto` of github.com/google/pprof), hand-written prost messages.
//!
//! * On disk the message is gzip-compressed (`.pb.gz`, what `go tool pprof` reads);
//!   [`pprof_bytes`] gives the plain message (e.g. for a pprof push).
//! * On-CPU: sample types `samples/count` and `cpu/nanoseconds`, period type `cpu/nanoseconds`,
//!   period = `sample_period_ns`, default sample type `cpu`.
//! * Off-CPU: sample types `contentions/count` (blocked stretches) and `delay/nanoseconds`
//!   (blocked time), period type `contentions/count`, period 1, default sample type `delay` —
//!   Go's block-profile convention, so `go tool pprof` shows the values as time and Pyroscope
//!   files them as a block profile.
//! * One `Function` per distinct (name, kernel, jit) and one `Location` (one `Line`) per distinct
//!   frame, inlined frames included (an inlined frame is its own location, not an extra `Line` of
//!   its caller's). A kernel function's `filename` is `[kernel.kallsyms]`, a JIT function's
//!   `[jit]`. There are no mappings (addresses are not kept): `mapping_id` is 0.
//! * Locations in a sample are leaf first, as the proto requires. The process frame of the folded
//!   stacks is not a location: every sample carries the labels `pid` (number) and `comm` (string)
//!   and the profile a comment `comm=<comm> pid=<pid>`.
//! * Names are sanitised for control characters and length ([`crate::sanitize`]); `;` is kept.
//! * `time_nanos` is the period's start, `duration_nanos` its length; values above `i64::MAX`
//!   saturate.

use std::collections::HashMap;
use std::io::{self, Write as _};

use flate2::{write::GzEncoder, Compression};
use prost::Message as _;

use crate::model::{epoch_ns, Frame, Kind, Profile};
use crate::sanitize::{self, Target};

/// `perftools.profiles.Profile`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PprofProfile {
    /// What each `Sample.value` means.
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    /// The samples.
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<PprofSample>,
    /// Binaries (none here).
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    /// Program locations.
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    /// Functions referenced by the locations.
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    /// All strings; `string_table[0]` is `""`.
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    /// Regexp of frames to drop (string index).
    #[prost(int64, tag = "7")]
    pub drop_frames: i64,
    /// Regexp of frames to keep (string index).
    #[prost(int64, tag = "8")]
    pub keep_frames: i64,
    /// Start of the collection, ns since the epoch.
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    /// Length of the collection in ns.
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    /// What the period counts.
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    /// Events between samples.
    #[prost(int64, tag = "12")]
    pub period: i64,
    /// Free-form comments (string indices).
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    /// Preferred sample type (string index).
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

/// `perftools.profiles.ValueType`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueType {
    /// String index of the type, e.g. `cpu`.
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    /// String index of the unit, e.g. `nanoseconds`.
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

/// `perftools.profiles.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PprofSample {
    /// Location ids, leaf first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    /// One value per sample type.
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    /// Extra context.
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

/// `perftools.profiles.Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    /// String index of the key.
    #[prost(int64, tag = "1")]
    pub key: i64,
    /// String index of a string value.
    #[prost(int64, tag = "2")]
    pub str: i64,
    /// A numeric value.
    #[prost(int64, tag = "3")]
    pub num: i64,
    /// String index of the numeric value's unit.
    #[prost(int64, tag = "4")]
    pub num_unit: i64,
}

/// `perftools.profiles.Mapping`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Mapping {
    /// Nonzero id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Load address.
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    /// End of the mapped range.
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    /// File offset of `memory_start`.
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    /// String index of the file name.
    #[prost(int64, tag = "5")]
    pub filename: i64,
    /// String index of the build id.
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    /// Symbolized to functions.
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    /// Symbolized to files.
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    /// Symbolized to lines.
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    /// Inline frames resolved.
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

/// `perftools.profiles.Location`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Location {
    /// Nonzero id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Mapping id, 0 when unknown.
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    /// Instruction address, 0 when unknown.
    #[prost(uint64, tag = "3")]
    pub address: u64,
    /// Functions at this location, the last one being the caller of the others.
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
    /// Several symbols share this address.
    #[prost(bool, tag = "5")]
    pub is_folded: bool,
}

/// `perftools.profiles.Line`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Line {
    /// The function's id.
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    /// Source line, 0 when unknown.
    #[prost(int64, tag = "2")]
    pub line: i64,
}

/// `perftools.profiles.Function`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Function {
    /// Nonzero id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// String index of the readable name.
    #[prost(int64, tag = "2")]
    pub name: i64,
    /// String index of the system (e.g. mangled) name.
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    /// String index of the source file.
    #[prost(int64, tag = "4")]
    pub filename: i64,
    /// First source line.
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}

#[derive(Default)]
struct Strings {
    index: HashMap<String, i64>,
    table: Vec<String>,
}

impl Strings {
    fn new() -> Strings {
        let mut s = Strings::default();
        s.id("");
        s
    }

    fn id(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `(type, unit)` of the two sample values and of the period of a profile of `kind`.
fn value_types(
    kind: Kind,
) -> (
    [(&'static str, &'static str); 2],
    (&'static str, &'static str),
) {
    match kind {
        Kind::OnCpu => (
            [("samples", "count"), ("cpu", "nanoseconds")],
            ("cpu", "nanoseconds"),
        ),
        Kind::OffCpu => (
            [("contentions", "count"), ("delay", "nanoseconds")],
            ("contentions", "count"),
        ),
    }
}

/// The pprof message of `profile` (see the module doc).
pub fn encode(profile: &Profile) -> PprofProfile {
    let mut strings = Strings::new();
    let (types, period) = value_types(profile.kind);
    let sample_type = types
        .iter()
        .map(|(t, u)| ValueType {
            r#type: strings.id(t),
            unit: strings.id(u),
        })
        .collect();
    let period_type = Some(ValueType {
        r#type: strings.id(period.0),
        unit: strings.id(period.1),
    });
    let comm = sanitize::name(&profile.comm, Target::Plain).into_owned();
    let labels = vec![
        Label {
            key: strings.id("pid"),
            num: i64::from(profile.pid),
            ..Label::default()
        },
        Label {
            key: strings.id("comm"),
            str: strings.id(&comm),
            ..Label::default()
        },
    ];
    let kernel_file = strings.id("[kernel.kallsyms]");
    let jit_file = strings.id("[jit]");

    let mut functions: HashMap<(String, bool, bool), u64> = HashMap::new();
    let mut function = Vec::new();
    let mut locations: HashMap<&Frame, u64> = HashMap::new();
    let mut location = Vec::new();
    let mut sample = Vec::new();
    for s in profile.samples.iter().filter(|s| !s.is_empty()) {
        let mut ids = Vec::with_capacity(s.frames.len());
        for frame in s.frames.iter().rev() {
            let id = match locations.get(frame) {
                Some(&id) => id,
                None => {
                    let name = sanitize::name(&frame.name, Target::Plain).into_owned();
                    let key = (name, frame.kernel, frame.jit);
                    let next_fn = function.len() as u64 + 1;
                    let function_id = *functions.entry(key.clone()).or_insert_with(|| {
                        let name = strings.id(&key.0);
                        function.push(Function {
                            id: next_fn,
                            name,
                            system_name: name,
                            filename: if key.1 {
                                kernel_file
                            } else if key.2 {
                                jit_file
                            } else {
                                0
                            },
                            start_line: 0,
                        });
                        next_fn
                    });
                    let id = location.len() as u64 + 1;
                    location.push(Location {
                        id,
                        mapping_id: 0,
                        address: 0,
                        line: vec![Line {
                            function_id,
                            line: 0,
                        }],
                        is_folded: false,
                    });
                    locations.insert(frame, id);
                    id
                }
            };
            ids.push(id);
        }
        sample.push(PprofSample {
            location_id: ids,
            value: vec![clamp(s.count), clamp(s.value)],
            label: labels.clone(),
        });
    }

    let start_ns = epoch_ns(profile.start);
    let end_ns = epoch_ns(profile.end);
    let comment = vec![strings.id(&format!("comm={comm} pid={}", profile.pid))];
    let default_sample_type = strings.id(types[1].0);
    PprofProfile {
        sample_type,
        sample,
        mapping: Vec::new(),
        location,
        function,
        string_table: strings.table,
        drop_frames: 0,
        keep_frames: 0,
        time_nanos: clamp(start_ns),
        duration_nanos: clamp(end_ns.saturating_sub(start_ns)),
        period_type,
        period: match profile.kind {
            Kind::OnCpu => clamp(profile.sample_period_ns),
            Kind::OffCpu => 1,
        },
        comment,
        default_sample_type,
    }
}

/// The serialized (uncompressed) pprof message of `profile`.
pub fn pprof_bytes(profile: &Profile) -> Vec<u8> {
    encode(profile).encode_to_vec()
}

/// The gzip-compressed pprof message of `profile` (the `.pb.gz` file).
pub fn pprof_gz(profile: &Profile) -> io::Result<Vec<u8>> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&pprof_bytes(profile))?;
    gz.finish()
}
