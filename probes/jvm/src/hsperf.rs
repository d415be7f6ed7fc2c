//! Reader of the HotSpot performance-data buffer (`/tmp/hsperfdata_<user>/<pid>`), the shared
//! memory a JVM publishes its counters in (what `jstat` and `jcmd PerfCounter.print` read).
//!
//! Layout (OpenJDK `src/hotspot/share/runtime/perfMemory.hpp`, `PerfDataPrologue` and
//! `PerfDataEntry`; the reader side is `sun/jvmstat/perfdata/monitor/v2_0/PerfDataBuffer.java`):
//!
//! ```text
//! prologue (32 bytes)                       entry (20-byte header, then name and data)
//!  0 magic 0xcafec0c0 (big endian)           0 entry_length   (i32)
//!  4 byte_order (0 big, 1 little endian)     4 name_offset    (i32, from the entry start)
//!  5 major_version (2)  6 minor_version      8 vector_length  (i32, 0 = scalar)
//!  7 accessible (1 once initialised)        12 data_type      ('J' long, 'B' byte array, ...)
//!  8 used (i32)        12 overflow (i32)    13 flags  14 data_units  15 data_variability
//! 16 mod_time_stamp (i64)                   16 data_offset    (i32, from the entry start)
//! 24 entry_offset (i32) 28 num_entries (i32)
//! ```
//!
//! The file is untrusted input (any user can write a file in `/tmp`): every offset and length is
//! checked against the bytes read, nothing is indexed unchecked, and a file that breaks a rule is
//! an [`HsperfError`], never a panic.

/// Size of `PerfDataPrologue`.
pub const PROLOGUE_LEN: usize = 32;
/// Size of the fixed `PerfDataEntry` header.
pub const ENTRY_HEADER_LEN: usize = 20;
/// Magic number at offset 0, read big endian.
pub const MAGIC: u32 = 0xcafe_c0c0;
/// The only major version this reader knows (JDK 6 and later).
pub const MAJOR_VERSION: u8 = 2;
/// Most entries read from one file; a JVM publishes a few hundred.
pub const MAX_ENTRIES: usize = 65_536;

/// Why a buffer is not a usable performance-data file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HsperfError {
    /// Shorter than the prologue.
    #[error("truncated prologue ({0} bytes)")]
    Truncated(usize),
    /// The first four bytes are not 0xcafec0c0.
    #[error("bad magic {0:#010x}")]
    BadMagic(u32),
    /// `byte_order` is neither 0 nor 1.
    #[error("bad byte order {0}")]
    BadByteOrder(u8),
    /// A layout this reader does not know.
    #[error("unsupported version {0}.{1}")]
    Version(u8, u8),
    /// The JVM has not finished initialising the buffer (`accessible` is 0).
    #[error("not accessible yet")]
    NotAccessible,
    /// `entry_offset`, `num_entries` or `used` outside the buffer.
    #[error("bad prologue: {0}")]
    BadPrologue(&'static str),
    /// Entry `index` breaks a rule.
    #[error("bad entry {index}: {why}")]
    BadEntry {
        /// Position of the entry in the buffer (0-based).
        index: usize,
        /// The rule it breaks.
        why: &'static str,
    },
}

/// A counter's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// A `jlong` scalar (`'J'`).
    Long(i64),
    /// A byte vector (`'B'`): the text before its first NUL.
    Bytes(&'a [u8]),
    /// Any other type or shape; kept so the entry count is exact, never mapped.
    Other,
}

/// One counter: its name and value, borrowed from the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Counter name, e.g. `sun.gc.collector.0.invocations` (bytes before the name's NUL).
    pub name: &'a [u8],
    /// Its value.
    pub value: Value<'a>,
}

/// A parsed buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerfData<'a> {
    /// Major and minor version of the layout.
    pub version: (u8, u8),
    /// Every entry, in buffer order.
    pub entries: Vec<Entry<'a>>,
}

impl<'a> PerfData<'a> {
    /// The long counter `name`, if present.
    pub fn long(&self, name: &str) -> Option<i64> {
        self.entries.iter().find_map(|e| match e.value {
            Value::Long(v) if e.name == name.as_bytes() => Some(v),
            _ => None,
        })
    }

    /// The string counter `name`, if present (invalid UTF-8 replaced).
    pub fn string(&self, name: &str) -> Option<String> {
        self.entries.iter().find_map(|e| match e.value {
            Value::Bytes(b) if e.name == name.as_bytes() => {
                Some(String::from_utf8_lossy(b).into_owned())
            }
            _ => None,
        })
    }
}

#[derive(Clone, Copy)]
enum Order {
    Big,
    Little,
}

impl Order {
    fn i32_at(self, buf: &[u8], at: usize) -> Option<i32> {
        let b: [u8; 4] = buf.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(match self {
            Order::Big => i32::from_be_bytes(b),
            Order::Little => i32::from_le_bytes(b),
        })
    }

    fn i64_at(self, buf: &[u8], at: usize) -> Option<i64> {
        let b: [u8; 8] = buf.get(at..at.checked_add(8)?)?.try_into().ok()?;
        Some(match self {
            Order::Big => i64::from_be_bytes(b),
            Order::Little => i64::from_le_bytes(b),
        })
    }
}

/// A non-negative `i32` as an offset.
fn offset(v: Option<i32>) -> Option<usize> {
    v.and_then(|v| usize::try_from(v).ok())
}

/// The bytes of `b` before its first NUL (all of `b` without one).
fn until_nul(b: &[u8]) -> &[u8] {
    b.iter().position(|&c| c == 0).map_or(b, |n| &b[..n])
}

/// Parses a performance-data buffer (the bytes of the file, read in one go).
pub fn parse(buf: &[u8]) -> Result<PerfData<'_>, HsperfError> {
    if buf.len() < PROLOGUE_LEN {
        return Err(HsperfError::Truncated(buf.len()));
    }
    let magic = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if magic != MAGIC {
        return Err(HsperfError::BadMagic(magic));
    }
    let order = match buf[4] {
        0 => Order::Big,
        1 => Order::Little,
        b => return Err(HsperfError::BadByteOrder(b)),
    };
    let version = (buf[5], buf[6]);
    if version.0 != MAJOR_VERSION {
        return Err(HsperfError::Version(version.0, version.1));
    }
    if buf[7] == 0 {
        return Err(HsperfError::NotAccessible);
    }
    let used = offset(order.i32_at(buf, 8)).ok_or(HsperfError::BadPrologue("used < 0"))?;
    if used > buf.len() || used < PROLOGUE_LEN {
        return Err(HsperfError::BadPrologue("used outside the file"));
    }
    let region = &buf[..used];
    let first = offset(order.i32_at(buf, 24)).ok_or(HsperfError::BadPrologue("entry_offset"))?;
    if first < PROLOGUE_LEN || first > used {
        return Err(HsperfError::BadPrologue(
            "entry_offset outside the used bytes",
        ));
    }
    let count = offset(order.i32_at(buf, 28)).ok_or(HsperfError::BadPrologue("num_entries"))?;
    if count > MAX_ENTRIES || count > (used - first) / ENTRY_HEADER_LEN {
        return Err(HsperfError::BadPrologue(
            "num_entries larger than the used bytes",
        ));
    }
    let mut entries = Vec::with_capacity(count);
    let mut at = first;
    for index in 0..count {
        let bad = |why| HsperfError::BadEntry { index, why };
        let (entry, len) = parse_entry(region, at, order).map_err(bad)?;
        entries.push(entry);
        at += len;
    }
    Ok(PerfData { version, entries })
}

/// The entry at `at` of `region` and its length.
fn parse_entry(region: &[u8], at: usize, order: Order) -> Result<(Entry<'_>, usize), &'static str> {
    let header = region
        .get(at..)
        .filter(|r| r.len() >= ENTRY_HEADER_LEN)
        .ok_or("header beyond the used bytes")?;
    let len = offset(order.i32_at(header, 0)).ok_or("negative entry_length")?;
    if len < ENTRY_HEADER_LEN || len > header.len() {
        return Err("entry_length outside the used bytes");
    }
    let entry = &header[..len];
    let name_at = offset(order.i32_at(entry, 4)).ok_or("negative name_offset")?;
    let vector_len = offset(order.i32_at(entry, 8)).ok_or("negative vector_length")?;
    let data_type = entry[12];
    let data_at = offset(order.i32_at(entry, 16)).ok_or("negative data_offset")?;
    if name_at < ENTRY_HEADER_LEN || name_at >= len {
        return Err("name_offset outside the entry");
    }
    let name_field = &entry[name_at..];
    let name_len = name_field
        .iter()
        .position(|&c| c == 0)
        .ok_or("name without NUL")?;
    let name = &name_field[..name_len];
    if name.is_empty() {
        return Err("empty name");
    }
    if data_at < ENTRY_HEADER_LEN || data_at > len {
        return Err("data_offset outside the entry");
    }
    let data = &entry[data_at..];
    let value = match (data_type, vector_len) {
        (b'J', 0) => Value::Long(order.i64_at(data, 0).ok_or("long beyond the entry")?),
        (b'B', n) if n > 0 => {
            Value::Bytes(until_nul(data.get(..n).ok_or("vector beyond the entry")?))
        }
        _ => Value::Other,
    };
    Ok((Entry { name, value }, len))
}

/// Builds performance-data buffers in the documented layout: synthetic JVMs for tests and
/// benchmarks, and corrupted variants of them.
#[derive(Debug, Clone, Default)]
pub struct Builder {
    entries: Vec<(String, Vec<u8>, u8, i32)>,
    big_endian: bool,
}

impl Builder {
    /// An empty little-endian buffer (what x86 and aarch64 JVMs write).
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Writes big-endian instead.
    pub fn big_endian(mut self) -> Builder {
        self.big_endian = true;
        self
    }

    /// Adds a long counter.
    pub fn long(mut self, name: &str, v: i64) -> Builder {
        let bytes = if self.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.entries
            .push((name.to_string(), bytes.to_vec(), b'J', 0));
        self
    }

    /// Adds a string counter (a NUL-terminated byte vector, padded as HotSpot does).
    pub fn string(mut self, name: &str, v: &str) -> Builder {
        let mut bytes = v.as_bytes().to_vec();
        bytes.push(0);
        let vector = bytes.len().max(v.len() + 8);
        bytes.resize(vector, 0);
        let vector = i32::try_from(vector).unwrap_or(i32::MAX);
        self.entries.push((name.to_string(), bytes, b'B', vector));
        self
    }

    /// The buffer, `accessible` set, padded to `size` bytes (at least what the entries need).
    pub fn build(&self, size: usize) -> Vec<u8> {
        let i32b = |v: usize| {
            let v = i32::try_from(v).unwrap_or(i32::MAX);
            if self.big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut buf = vec![0u8; PROLOGUE_LEN];
        buf[..4].copy_from_slice(&MAGIC.to_be_bytes());
        buf[4] = u8::from(!self.big_endian);
        buf[5] = MAJOR_VERSION;
        buf[6] = 0;
        buf[7] = 1;
        for (name, data, data_type, vector) in &self.entries {
            let start = buf.len();
            let name_at = ENTRY_HEADER_LEN;
            let mut data_at = name_at + name.len() + 1;
            let align = if *data_type == b'J' { 8 } else { 1 };
            data_at = data_at.div_ceil(align) * align;
            let len = (data_at + data.len()).div_ceil(8) * 8;
            buf.resize(start + len, 0);
            buf[start..start + 4].copy_from_slice(&i32b(len));
            buf[start + 4..start + 8].copy_from_slice(&i32b(name_at));
            let vector = usize::try_from(*vector).unwrap_or(0);
            buf[start + 8..start + 12].copy_from_slice(&i32b(vector));
            buf[start + 12] = *data_type;
            buf[start + 13] = 1;
            buf[start + 14] = 1;
            buf[start + 15] = 3;
            buf[start + 16..start + 20].copy_from_slice(&i32b(data_at));
            buf[start + name_at..start + name_at + name.len()].copy_from_slice(name.as_bytes());
            buf[start + data_at..start + data_at + data.len()].copy_from_slice(data);
        }
        let used = buf.len();
        buf[8..12].copy_from_slice(&i32b(used));
        buf[24..28].copy_from_slice(&i32b(PROLOGUE_LEN));
        buf[28..32].copy_from_slice(&i32b(self.entries.len()));
        if buf.len() < size {
            buf.resize(size, 0);
        }
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_builder_writes_in_both_byte_orders() {
        for b in [Builder::new(), Builder::new().big_endian()] {
            let buf = b
                .long("java.threads.live", 7)
                .string("sun.rt.javaCommand", "Main a b")
                .long("sun.os.hrt.frequency", -1)
                .build(4096);
            let pd = parse(&buf).unwrap();
            assert_eq!(pd.version, (2, 0));
            assert_eq!(pd.entries.len(), 3);
            assert_eq!(pd.long("java.threads.live"), Some(7));
            assert_eq!(pd.long("sun.os.hrt.frequency"), Some(-1));
            assert_eq!(pd.string("sun.rt.javaCommand").as_deref(), Some("Main a b"));
            assert_eq!(pd.long("sun.rt.javaCommand"), None);
            assert_eq!(pd.long("missing"), None);
        }
    }

    #[test]
    fn refuses_bad_prologues() {
        let good = Builder::new().long("a", 1).build(256);
        assert_eq!(parse(&good[..31]), Err(HsperfError::Truncated(31)));
        let mut b = good.clone();
        b[0] = 0;
        assert!(matches!(parse(&b), Err(HsperfError::BadMagic(_))));
        let mut b = good.clone();
        b[4] = 7;
        assert_eq!(parse(&b), Err(HsperfError::BadByteOrder(7)));
        let mut b = good.clone();
        b[5] = 1;
        assert_eq!(parse(&b), Err(HsperfError::Version(1, 0)));
        let mut b = good.clone();
        b[7] = 0;
        assert_eq!(parse(&b), Err(HsperfError::NotAccessible));
        let mut b = good.clone();
        b[8..12].copy_from_slice(&100_000i32.to_le_bytes());
        assert!(matches!(parse(&b), Err(HsperfError::BadPrologue(_))));
        let mut b = good.clone();
        b[28..32].copy_from_slice(&1000i32.to_le_bytes());
        assert!(matches!(parse(&b), Err(HsperfError::BadPrologue(_))));
        let mut b = good;
        b[24..28].copy_from_slice(&(-1i32).to_le_bytes());
        assert!(matches!(parse(&b), Err(HsperfError::BadPrologue(_))));
    }

    #[test]
    fn refuses_entries_outside_their_bounds() {
        let good = Builder::new().long("abc", 1).build(256);
        let e = PROLOGUE_LEN;
        let cases: [(usize, i32); 5] = [
            (e, 10),        // entry_length below the header
            (e, 10_000),    // entry_length beyond used
            (e + 4, 2),     // name_offset inside the header
            (e + 16, 1000), // data_offset beyond the entry
            (e + 16, -4),   // negative data_offset
        ];
        for (at, v) in cases {
            let mut b = good.clone();
            b[at..at + 4].copy_from_slice(&v.to_le_bytes());
            assert!(
                matches!(parse(&b), Err(HsperfError::BadEntry { index: 0, .. })),
                "offset {at} = {v}"
            );
        }
    }
}
