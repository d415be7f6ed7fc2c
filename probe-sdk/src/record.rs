//! Buffered writer for record lines `|table|v1|…|vn|`.
//!
//! A probe formats every record of one period into a single in-memory line buffer and hands it to
//! the output with one `write` per [`RecordWriter::flush`], so the daemon sees whole lines and a
//! period costs one syscall however many records it has.
//!
//! Values are escaped by the record-line contract ([`record_line::escape`]), so any string
//! round-trips through the daemon's parser; [`split_line`] reads a line back exactly as the
//! daemon does, for probe tests.

use std::io::{self, Write};

/// Buffered bytes above which [`Record::end`] flushes on its own, so a probe that forgets to flush
/// (or emits a huge period) keeps bounded memory. Flushing happens only at line boundaries.
const AUTO_FLUSH_BYTES: usize = 256 * 1024;

/// Buffered, escaping writer of record lines; call [`flush`](RecordWriter::flush) once per period.
pub struct RecordWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
}

impl RecordWriter<io::Stdout> {
    /// A writer on the process's standard output (the pipe the daemon reads).
    pub fn stdout() -> Self {
        Self::new(io::stdout())
    }
}

impl<W: Write> RecordWriter<W> {
    /// Wraps any byte sink; nothing reaches it before [`flush`](Self::flush).
    pub fn new(w: W) -> Self {
        RecordWriter {
            out: w,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Starts a record line for `table`; add values with [`Record::field`] and finish with
    /// [`Record::end`]. A record dropped without `end()` leaves no trace in the buffer. A table
    /// name cannot contain `|` or `\`; one that does is escaped, so the daemon refuses the line
    /// instead of misreading it.
    pub fn record(&mut self, table: &str) -> Record<'_, W> {
        let start = self.buf.len();
        self.buf.push(b'|');
        escape_into(table.as_bytes(), &mut self.buf);
        self.buf.push(b'|');
        Record {
            writer: self,
            start,
            ended: false,
        }
    }

    /// Appends a complete, pre-formatted line (it must end with `'\n'` and is written unescaped).
    pub fn raw_line(&mut self, line: &str) -> io::Result<()> {
        if !line.ends_with('\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "raw_line: the line must end with '\\n'",
            ));
        }
        self.buf.extend_from_slice(line.as_bytes());
        self.flush_if_large()
    }

    /// Writes everything buffered with one `write_all` and flushes the sink; call once per period.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let res = self.out.write_all(&self.buf);
            // Drop the data even on error: a retry would duplicate the lines already written.
            self.buf.clear();
            res?;
        }
        self.out.flush()
    }

    /// Bytes formatted but not yet flushed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// Returns the sink; anything not flushed is discarded.
    pub fn into_inner(self) -> W {
        self.out
    }

    fn flush_if_large(&mut self) -> io::Result<()> {
        if self.buf.len() >= AUTO_FLUSH_BYTES {
            self.flush()
        } else {
            Ok(())
        }
    }
}

/// One record line being built; created by [`RecordWriter::record`].
#[must_use = "a record is only written by calling .end()"]
pub struct Record<'a, W: Write> {
    writer: &'a mut RecordWriter<W>,
    start: usize,
    ended: bool,
}

impl<W: Write> Record<'_, W> {
    /// Appends one value (escaped) followed by its `|` separator.
    pub fn field<V: FieldValue + ?Sized>(self, v: &V) -> Self {
        v.write_field(&mut self.writer.buf);
        self.writer.buf.push(b'|');
        self
    }

    /// Terminates the line in the buffer; it reaches the sink at the next flush.
    pub fn end(mut self) -> io::Result<()> {
        self.writer.buf.push(b'\n');
        self.ended = true;
        self.writer.flush_if_large()
    }
}

impl<W: Write> Drop for Record<'_, W> {
    fn drop(&mut self) {
        if !self.ended {
            self.writer.buf.truncate(self.start);
        }
    }
}

/// True when `e` means the reader of our stdout (the daemon) has gone away: exit quietly.
pub fn is_broken_pipe(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}

/// A value that can be written as one record field.
pub trait FieldValue {
    /// Appends the field's text, already escaped, to `out` (without the `|` separator).
    fn write_field(&self, out: &mut Vec<u8>);
}

/// Appends `s` to `out` with the record escapes applied (the contract's writer).
pub use record_line::escape_into;

/// Decodes the escapes of one raw value exactly as the daemon does: `\|`, `\\`, `\n`, `\r`,
/// `\t`, and any other `\c` reads as `c`. Meant for tests of probes.
pub fn unescape(s: &[u8]) -> Vec<u8> {
    record_line::unescape_bytes(s)
}

/// Splits one record line (without its trailing newline) into table and unescaped values by the
/// daemon's own rules ([`record_line::parse_record`]: the final `|` is optional, one trailing
/// `\r` is ignored); `None` if the daemon would not take it as a record (a log line, a malformed
/// line, or bytes that are not UTF-8). Meant for tests of probes.
pub fn split_line(line: &[u8]) -> Option<(Vec<u8>, Vec<Vec<u8>>)> {
    let text = std::str::from_utf8(line).ok()?;
    let mut raw = Vec::new();
    let table = record_line::parse_record(text, &mut raw).ok()?;
    let values = raw.iter().map(|v| unescape(v.as_bytes())).collect();
    Some((table.as_bytes().to_vec(), values))
}

impl FieldValue for str {
    fn write_field(&self, out: &mut Vec<u8>) {
        escape_into(self.as_bytes(), out);
    }
}

impl FieldValue for String {
    fn write_field(&self, out: &mut Vec<u8>) {
        escape_into(self.as_bytes(), out);
    }
}

impl FieldValue for bool {
    fn write_field(&self, out: &mut Vec<u8>) {
        out.push(if *self { b'1' } else { b'0' });
    }
}

impl<T: FieldValue> FieldValue for Option<T> {
    fn write_field(&self, out: &mut Vec<u8>) {
        if let Some(v) = self {
            v.write_field(out);
        }
    }
}

impl<T: FieldValue + ?Sized> FieldValue for &T {
    fn write_field(&self, out: &mut Vec<u8>) {
        (**self).write_field(out);
    }
}

macro_rules! int_field {
    ($($t:ty),*) => {$(
        impl FieldValue for $t {
            fn write_field(&self, out: &mut Vec<u8>) {
                let mut buf = itoa::Buffer::new();
                out.extend_from_slice(buf.format(*self).as_bytes());
            }
        }
    )*};
}
int_field!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize);

macro_rules! float_field {
    ($($t:ty),*) => {$(
        impl FieldValue for $t {
            fn write_field(&self, out: &mut Vec<u8>) {
                if self.is_nan() {
                    out.extend_from_slice(b"NaN");
                } else if self.is_infinite() {
                    out.extend_from_slice(if *self > 0.0 { b"+Inf" } else { b"-Inf" });
                } else {
                    // `Display` rounds exact ties of the shortest digits away from zero, unlike
                    // ryu or C's `%.17g`; keeping it makes the format the documented one.
                    // Writing into a Vec cannot fail.
                    let _ = write!(out, "{}", self);
                }
            }
        }
    )*};
}
float_field!(f32, f64);

#[cfg(test)]
mod tests {
    use super::*;

    fn line_of(f: impl FnOnce(&mut RecordWriter<Vec<u8>>)) -> String {
        let mut w = RecordWriter::new(Vec::new());
        f(&mut w);
        w.flush().unwrap();
        String::from_utf8(w.into_inner()).unwrap()
    }

    #[test]
    fn formats_upstream_example_line() {
        let s = line_of(|w| {
            w.record("example")
                .field("system")
                .field(&10u32)
                .field(&88i64)
                .field(&15u8)
                .end()
                .unwrap()
        });
        assert_eq!(s, "|example|system|10|88|15|\n");
    }

    #[test]
    fn formats_every_value_kind() {
        let owned = String::from("own");
        let s = line_of(|w| {
            w.record("t")
                .field(&owned)
                .field(&-5i32)
                .field(&u64::MAX)
                .field(&12.5f64)
                .field(&1.0f64)
                .field(&0.1f32)
                .field(&f64::NAN)
                .field(&f64::INFINITY)
                .field(&f32::NEG_INFINITY)
                .field(&true)
                .field(&false)
                .field(&None::<u32>)
                .field(&Some(7u16))
                .field(&&"ref")
                .end()
                .unwrap()
        });
        assert_eq!(
            s,
            "|t|own|-5|18446744073709551615|12.5|1|0.1|NaN|+Inf|-Inf|1|0||7|ref|\n"
        );
    }

    #[test]
    fn floats_use_display_layout_and_rounding() {
        // The last value is exactly …738.25: the two shortest candidates tie, Display rounds up.
        let s = line_of(|w| {
            w.record("f")
                .field(&1e20f64)
                .field(&1e-7f64)
                .field(&-0.0f64)
                .field(&(1_195_605_190_570_738_f64 + 0.25))
                .end()
                .unwrap()
        });
        assert_eq!(
            s,
            "|f|100000000000000000000|0.0000001|-0|1195605190570738.3|\n"
        );
    }

    #[test]
    fn escapes_specials_in_values_and_table() {
        let s = line_of(|w| w.record("a|b").field("x|y\\z\nw\rv").end().unwrap());
        assert_eq!(s, "|a\\|b|x\\|y\\\\z\\nw\\rv|\n");
    }

    #[test]
    fn escaped_values_round_trip_through_parser_rules() {
        let values = [
            "",
            "|",
            "\\",
            "\\|",
            "|\\",
            "\n\n",
            "a\\nb",
            "trailing\\",
            "\\\\|\\",
            "mixed | pipes \\ and\nnewlines\r",
            "plain",
        ];
        let mut w = RecordWriter::new(Vec::new());
        let mut rec = w.record("tbl");
        for v in values {
            rec = rec.field(v);
        }
        rec.end().unwrap();
        w.flush().unwrap();
        let out = w.into_inner();
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        let (table, fields) = split_line(out.strip_suffix(b"\n").unwrap()).unwrap();
        assert_eq!(table, b"tbl");
        let fields: Vec<String> = fields
            .into_iter()
            .map(|f| String::from_utf8(f).unwrap())
            .collect();
        assert_eq!(fields, values);
    }

    #[test]
    fn record_dropped_without_end_leaves_nothing() {
        let s = line_of(|w| {
            let _ = w.record("gone").field("x");
            w.record("kept").field("y").end().unwrap();
        });
        assert_eq!(s, "|kept|y|\n");
    }

    #[test]
    fn nothing_reaches_sink_before_flush() {
        let mut w = RecordWriter::new(Vec::new());
        w.record("t").field("v").end().unwrap();
        assert_eq!(w.buffered(), b"|t|v|\n");
        let mut w2 = RecordWriter::new(Vec::new());
        w2.record("t").end().unwrap();
        assert!(w2.into_inner().is_empty());
    }

    #[test]
    fn raw_line_requires_newline() {
        let mut w = RecordWriter::new(Vec::new());
        assert!(w.raw_line("|t|1|").is_err());
        w.raw_line("|t|1|\n").unwrap();
        w.flush().unwrap();
        assert_eq!(w.into_inner(), b"|t|1|\n");
    }

    /// Counts write calls so the one-write-per-flush property is checked on a real sink.
    struct CountingSink {
        writes: usize,
        data: Vec<u8>,
    }
    impl Write for CountingSink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.writes += 1;
            self.data.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn one_write_per_flush() {
        let mut w = RecordWriter::new(CountingSink {
            writes: 0,
            data: Vec::new(),
        });
        for i in 0..100u32 {
            w.record("t").field(&i).end().unwrap();
        }
        w.flush().unwrap();
        w.flush().unwrap();
        let sink = w.into_inner();
        assert_eq!(sink.writes, 1);
        assert_eq!(sink.data.iter().filter(|&&b| b == b'\n').count(), 100);
    }

    #[test]
    fn broken_pipe_is_reported() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from(io::ErrorKind::BrokenPipe))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = RecordWriter::new(Closed);
        w.record("t").field("v").end().unwrap();
        let err = w.flush().unwrap_err();
        assert!(is_broken_pipe(&err));
        assert!(w.buffered().is_empty());
        assert!(!is_broken_pipe(&io::Error::from(io::ErrorKind::Other)));
    }

    #[test]
    fn split_line_reads_like_the_daemon() {
        assert!(split_line(b"no pipe").is_none());
        assert!(split_line(b"|t|a\\").is_none());
        assert!(split_line(b"|t").is_none());
        assert!(split_line(b"|t|\xff|").is_none());
        let (t, f) = split_line(b"|t||").unwrap();
        assert_eq!(t, b"t");
        assert_eq!(f, vec![Vec::<u8>::new()]);
        // The final '|' is optional; `\t` is a tab, an unknown escape drops its backslash.
        let (_, f) = split_line(b"|t|a").unwrap();
        assert_eq!(f, vec![b"a".to_vec()]);
        let (_, f) = split_line(b"|t|a\\||x\\ty\\q|").unwrap();
        assert_eq!(f, vec![b"a|".to_vec(), b"x\tyq".to_vec()]);
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_values_round_trip(values in proptest::collection::vec(".*", 0..8)) {
                let mut w = RecordWriter::new(Vec::new());
                let mut rec = w.record("t");
                for v in &values {
                    rec = rec.field(v);
                }
                rec.end().unwrap();
                w.flush().unwrap();
                let out = w.into_inner();
                prop_assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
                let (_, fields) = split_line(out.strip_suffix(b"\n").unwrap()).unwrap();
                let expected: Vec<Vec<u8>> = values.iter().map(|v| v.as_bytes().to_vec()).collect();
                prop_assert_eq!(fields, expected);
            }
        }
    }
}
