//! Record-line parser.
//!
//! Grammar (upstream "lightweight report format", plus escapes):
//! ```text
//! line   = "|" table ( "|" value )* "|"?      ; the final "|" is optional
//! table  = 1*( any char except "|" "\" )
//! value  = *( any char except "|" "\"  |  "\" any-char )
//! ```
//! Escapes inside values: `\|` → `|`, `\\` → `\`, `\n` → newline, `\r`, `\t`. An unknown escape
//! keeps the escaped character. Values are returned raw (still escaped) as borrowed slices;
//! [`unescape_into`] decodes one when the store keeps it.

use nom::character::complete::char;
use nom::error::{Error as NomError, ErrorKind};
use nom::multi::fold_many0;
use nom::sequence::preceded;
use nom::{IResult, Parser};

/// Why a line is not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The line does not start with `|`: it is a probe log line, not a record.
    #[error("not a record line")]
    NotRecord,
    /// Starts with `|` but has no table name or is otherwise malformed.
    #[error("malformed record line")]
    Malformed,
}

fn fail(input: &str, kind: ErrorKind) -> nom::Err<NomError<&str>> {
    nom::Err::Error(NomError::new(input, kind))
}

/// `table`: one or more characters up to the next `|` (a `\` is not allowed in table names).
/// Hand-written nom parser: memchr finds the delimiter instead of testing char by char.
fn table_name(input: &str) -> IResult<&str, &str> {
    let end = memchr::memchr2(b'|', b'\\', input.as_bytes()).unwrap_or(input.len());
    if end == 0 {
        return Err(fail(input, ErrorKind::TakeWhile1));
    }
    Ok((&input[end..], &input[..end]))
}

/// `value`: characters up to the next unescaped `|` (or end of line), escapes kept raw.
fn raw_value(input: &str) -> IResult<&str, &str> {
    let bytes = input.as_bytes();
    let mut i = 0;
    loop {
        let Some(p) = memchr::memchr2(b'|', b'\\', &bytes[i..]) else {
            return Ok(("", input));
        };
        let at = i + p;
        if bytes[at] == b'|' {
            return Ok((&input[at..], &input[..at]));
        }
        // A backslash escapes the next character, whatever its UTF-8 length.
        let escaped_len = input[at + 1..]
            .chars()
            .next()
            .map(char::len_utf8)
            .ok_or_else(|| fail(input, ErrorKind::Escaped))?;
        i = at + 1 + escaped_len;
    }
}

/// Parse a record line (without its trailing newline). Returns the table name and pushes each
/// raw value into `values` (cleared first).
pub fn parse_record<'a>(line: &'a str, values: &mut Vec<&'a str>) -> Result<&'a str, ParseError> {
    values.clear();
    let line = line.strip_suffix('\r').unwrap_or(line);
    if !line.starts_with('|') {
        return Err(ParseError::NotRecord);
    }
    let fields = fold_many0(
        preceded(char('|'), raw_value),
        || (),
        |(), v| values.push(v),
    );
    let (rest, (_, table, ())) = (char('|'), table_name, fields)
        .parse(line)
        .map_err(|_: nom::Err<NomError<&str>>| ParseError::Malformed)?;
    if !rest.is_empty() || values.is_empty() {
        // Trailing garbage (a '\\' right after the table name, a dangling escape) or `|table`
        // with no '|' after it.
        return Err(ParseError::Malformed);
    }
    if line.ends_with('|') && values.last() == Some(&"") {
        // The final '|' closes the last value; it does not open an empty one.
        values.pop();
    }
    Ok(table)
}

/// Whether a raw value means "absent" (empty or the upstream literal `(null)`).
pub fn value_is_absent(raw: &str) -> bool {
    raw.is_empty() || raw == "(null)"
}

/// Decode the escapes of a raw value, appending to `out`.
pub fn unescape_into(raw: &str, out: &mut String) {
    if !raw.contains('\\') {
        out.push_str(raw);
        return;
    }
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
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
    fn basic_record() {
        assert_eq!(parse("|t|a|x|1|2|"), Ok(("t", vec!["a", "x", "1", "2"])));
    }

    #[test]
    fn empty_values_are_kept_positionally() {
        assert_eq!(parse("|t|a||1|2|"), Ok(("t", vec!["a", "", "1", "2"])));
        assert_eq!(parse("|t||x|1|2|"), Ok(("t", vec!["", "x", "1", "2"])));
        assert_eq!(parse("|t|a|x||"), Ok(("t", vec!["a", "x", ""])));
    }

    #[test]
    fn trailing_bar_optional() {
        assert_eq!(parse("|t|a|b"), Ok(("t", vec!["a", "b"])));
        assert_eq!(parse("|t|a|b|\r"), Ok(("t", vec!["a", "b"])));
    }

    #[test]
    fn escapes() {
        let (t, v) = parse(r"|t|a\|b|c\\d|e\nf|").unwrap();
        assert_eq!(t, "t");
        assert_eq!(v, vec![r"a\|b", r"c\\d", r"e\nf"]);
        let mut s = String::new();
        unescape_into(v[0], &mut s);
        assert_eq!(s, "a|b");
        s.clear();
        unescape_into(v[1], &mut s);
        assert_eq!(s, r"c\d");
        s.clear();
        unescape_into(v[2], &mut s);
        assert_eq!(s, "e\nf");
    }

    #[test]
    fn not_records() {
        assert_eq!(parse("hello"), Err(ParseError::NotRecord));
        assert_eq!(parse(""), Err(ParseError::NotRecord));
        assert_eq!(parse("[INFO] started"), Err(ParseError::NotRecord));
    }

    #[test]
    fn malformed() {
        assert_eq!(parse("|"), Err(ParseError::Malformed));
        assert_eq!(parse("||a|"), Err(ParseError::Malformed));
        assert_eq!(parse("|zz"), Err(ParseError::Malformed));
        assert_eq!(parse(r"|t|a\"), Err(ParseError::Malformed));
        assert_eq!(parse(r"|t\x|a|"), Err(ParseError::Malformed));
    }

    #[test]
    fn unknown_table_parses_and_is_rejected_later() {
        assert_eq!(parse("|zz|1|"), Ok(("zz", vec!["1"])));
    }

    #[test]
    fn absent_values() {
        assert!(value_is_absent(""));
        assert!(value_is_absent("(null)"));
        assert!(!value_is_absent("0"));
    }

    #[test]
    fn percent_is_just_data() {
        assert_eq!(parse("|t|%s%n|"), Ok(("t", vec!["%s%n"])));
    }
}
