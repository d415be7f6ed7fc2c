//! Record-line parser: the daemon reads lines by the one contract in the [`record_line`] crate
//! (grammar, escapes, absent values, refusal reasons), re-exported here so the data path keeps
//! its `crate::wire::…` names. The rules are specified by `probe-sdk/record-line/vectors/`.

pub use record_line::{parse_record, unescape_into, value_is_absent, Malformed, ParseError};

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
        let m = |reason| Err(ParseError::Malformed(reason));
        assert_eq!(parse("|"), m(Malformed::EmptyTable));
        assert_eq!(parse("||a|"), m(Malformed::EmptyTable));
        assert_eq!(parse("|zz"), m(Malformed::NoSeparator));
        assert_eq!(parse(r"|t|a\"), m(Malformed::DanglingEscape));
        assert_eq!(parse(r"|t\x|a|"), m(Malformed::EscapeInTable));
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
