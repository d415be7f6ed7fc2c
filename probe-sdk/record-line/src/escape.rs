//! Value escapes.
//!
//! Writers escape exactly four bytes: `|` → `\|`, `\` → `\\`, newline → `\n`, carriage return →
//! `\r`. Readers decode those, plus `\t` → tab; any other `\c` decodes to `c` (the backslash is
//! dropped). A backslash as the last byte of a line makes the line malformed (see
//! [`crate::line`]); [`unescape_into`] on its own keeps such a trailing backslash.

/// Whether a writer must escape byte `b`.
#[inline]
pub fn needs_escape(b: u8) -> bool {
    matches!(b, b'|' | b'\\' | b'\n' | b'\r')
}

/// Appends `s` to `out` with the record escapes applied.
pub fn escape_into(s: &[u8], out: &mut Vec<u8>) {
    let mut rest = s;
    while let Some(pos) = rest.iter().position(|&b| needs_escape(b)) {
        out.extend_from_slice(&rest[..pos]);
        out.push(b'\\');
        out.push(match rest[pos] {
            b'\n' => b'n',
            b'\r' => b'r',
            other => other,
        });
        rest = &rest[pos + 1..];
    }
    out.extend_from_slice(rest);
}

/// The character an escape `\c` decodes to.
#[inline]
fn decode(c: char) -> char {
    match c {
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        other => other,
    }
}

/// Decodes the escapes of one raw value, appending to `out`.
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
            Some(e) => out.push(decode(e)),
            None => out.push('\\'),
        }
    }
}

/// [`unescape_into`] for bytes (values that are not UTF-8 are decoded byte-wise the same way).
pub fn unescape_bytes(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && i + 1 < raw.len() {
            out.push(match raw[i + 1] {
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                other => other,
            });
            i += 2;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_the_four_specials() {
        let mut out = Vec::new();
        escape_into(b"a|b\\c\nd\re\tf", &mut out);
        assert_eq!(out, b"a\\|b\\\\c\\nd\\re\tf");
    }

    #[test]
    fn unescape_rules() {
        let mut s = String::new();
        unescape_into(r"a\|b\\c\nd\re\tf\xg\", &mut s);
        assert_eq!(s, "a|b\\c\nd\re\tfxg\\");
        assert_eq!(
            unescape_bytes(br"a\|b\\c\nd\re\tf\xg\"),
            b"a|b\\c\nd\re\tfxg\\"
        );
    }
}
