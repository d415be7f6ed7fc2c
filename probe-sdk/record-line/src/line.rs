//! Splitting a record line into its table name and raw values.
//!
//! ```text
//! line   = "|" table ( "|" value )* "|"?      ; the final "|" is optional
//! table  = 1*( any char except "|" "\" )
//! value  = *( any char except "|" "\"  |  "\" any-char )
//! ```
//! A line that does not start with `|` is not a record (a probe log line). One trailing `\r` is
//! ignored. Values come back raw (still escaped) as borrowed slices; [`crate::unescape_into`]
//! decodes one when it is kept. An empty value or the upstream literal `(null)` means "absent"
//! ([`value_is_absent`]).

/// Why a line starting with `|` is still not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// `||…` or a lone `|`: no table name.
    #[error("empty table name")]
    EmptyTable,
    /// A `\` inside the table name.
    #[error("backslash in table name")]
    EscapeInTable,
    /// `|table` with no `|` after it.
    #[error("no separator after the table name")]
    NoSeparator,
    /// The line ends inside an escape (a final lone `\`).
    #[error("line ends with a lone backslash")]
    DanglingEscape,
}

impl Malformed {
    /// Short snake_case name, as used by the vector file.
    pub fn as_str(self) -> &'static str {
        match self {
            Malformed::EmptyTable => "empty_table",
            Malformed::EscapeInTable => "escape_in_table",
            Malformed::NoSeparator => "no_separator",
            Malformed::DanglingEscape => "dangling_escape",
        }
    }
}

/// Why a line is not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The line does not start with `|`: it is a probe log line, not a record.
    #[error("not a record line")]
    NotRecord,
    /// Starts with `|` but is not a well-formed record.
    #[error("malformed record line: {0}")]
    Malformed(Malformed),
}

impl ParseError {
    /// Short snake_case name, as used by the vector file (`not_record` or the [`Malformed`] name).
    pub fn as_str(self) -> &'static str {
        match self {
            ParseError::NotRecord => "not_record",
            ParseError::Malformed(m) => m.as_str(),
        }
    }
}

/// Parses a record line (without its trailing newline). Returns the table name and pushes each
/// raw value into `values` (cleared first).
pub fn parse_record<'a>(line: &'a str, values: &mut Vec<&'a str>) -> Result<&'a str, ParseError> {
    values.clear();
    let line = line.strip_suffix('\r').unwrap_or(line);
    let Some(body) = line.strip_prefix('|') else {
        return Err(ParseError::NotRecord);
    };
    let bytes = body.as_bytes();
    let table_end = memchr::memchr2(b'|', b'\\', bytes).unwrap_or(bytes.len());
    if table_end == 0 {
        return Err(ParseError::Malformed(if bytes.first() == Some(&b'\\') {
            Malformed::EscapeInTable
        } else {
            Malformed::EmptyTable
        }));
    }
    match bytes.get(table_end) {
        None => return Err(ParseError::Malformed(Malformed::NoSeparator)),
        Some(b'\\') => return Err(ParseError::Malformed(Malformed::EscapeInTable)),
        Some(_) => {}
    }
    let table = &body[..table_end];
    // Each value starts after a '|' and runs to the next unescaped '|' or the end of the line.
    let mut start = table_end + 1;
    let mut i = start;
    loop {
        let Some(p) = memchr::memchr2(b'|', b'\\', &bytes[i..]) else {
            // Last value without a closing '|'; after a closing '|' this is the empty tail,
            // which is not a value.
            if start < bytes.len() {
                values.push(&body[start..]);
            }
            return Ok(table);
        };
        let at = i + p;
        if bytes[at] == b'|' {
            values.push(&body[start..at]);
            start = at + 1;
            i = start;
            continue;
        }
        // A backslash escapes the next character, whatever its UTF-8 length.
        let Some(escaped) = body[at + 1..].chars().next() else {
            values.clear();
            return Err(ParseError::Malformed(Malformed::DanglingEscape));
        };
        i = at + 1 + escaped.len_utf8();
    }
}

/// Whether a raw value means "absent" (empty or the upstream literal `(null)`).
pub fn value_is_absent(raw: &str) -> bool {
    raw.is_empty() || raw == "(null)"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<(&str, Vec<&str>), ParseError> {
        let mut v = Vec::new();
        let t = parse_record(line, &mut v)?;
        Ok((t, v))
    }

    #[test]
    fn basic_and_empty_values() {
        assert_eq!(parse("|t|a|x|1|2|"), Ok(("t", vec!["a", "x", "1", "2"])));
        assert_eq!(parse("|t|a||1|"), Ok(("t", vec!["a", "", "1"])));
        assert_eq!(parse("|t||x|"), Ok(("t", vec!["", "x"])));
        assert_eq!(parse("|t|a|x||"), Ok(("t", vec!["a", "x", ""])));
        assert_eq!(parse("|t|"), Ok(("t", vec![])));
        assert_eq!(parse("|t|a|b"), Ok(("t", vec!["a", "b"])));
        assert_eq!(parse("|t|a|b|\r"), Ok(("t", vec!["a", "b"])));
    }

    #[test]
    fn refusals_name_their_reason() {
        let m = |r| Err(ParseError::Malformed(r));
        assert_eq!(parse("hello"), Err(ParseError::NotRecord));
        assert_eq!(parse(""), Err(ParseError::NotRecord));
        assert_eq!(parse("|"), m(Malformed::EmptyTable));
        assert_eq!(parse("||a|"), m(Malformed::EmptyTable));
        assert_eq!(parse("|zz"), m(Malformed::NoSeparator));
        assert_eq!(parse(r"|t|a\"), m(Malformed::DanglingEscape));
        assert_eq!(parse(r"|t\x|a|"), m(Malformed::EscapeInTable));
        assert_eq!(parse(r"|\t|a|"), m(Malformed::EscapeInTable));
    }

    proptest::proptest! {
        #[test]
        fn escaped_values_read_back(
            values in proptest::collection::vec(proptest::arbitrary::any::<String>(), 0..6),
            bar in proptest::bool::ANY,
        ) {
            let mut line = b"|t".to_vec();
            for v in &values {
                line.push(b'|');
                crate::escape_into(v.as_bytes(), &mut line);
            }
            // The final '|' is optional, but the table needs one after it and a last empty value
            // needs one to exist.
            if bar || values.last().is_none_or(|v| v.is_empty()) {
                line.push(b'|');
            }
            let line = String::from_utf8(line).unwrap();
            let mut raw = Vec::new();
            proptest::prop_assert_eq!(parse_record(&line, &mut raw), Ok("t"));
            let read: Vec<String> = raw
                .iter()
                .map(|r| {
                    let mut s = String::new();
                    crate::unescape_into(r, &mut s);
                    proptest::prop_assert_eq!(crate::unescape_bytes(r.as_bytes()), s.as_bytes());
                    Ok(s)
                })
                .collect::<Result<_, _>>()?;
            proptest::prop_assert_eq!(read, values);
        }
    }

    #[test]
    fn escapes_stay_raw_and_multibyte_escapes_are_whole() {
        assert_eq!(
            parse(r"|t|a\|b|c\\d|e\nf|\é|"),
            Ok(("t", vec![r"a\|b", r"c\\d", r"e\nf", r"\é"]))
        );
    }
}
