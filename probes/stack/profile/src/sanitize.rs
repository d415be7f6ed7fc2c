//! Untrusted names (frames, comm) made safe for every output.
//!
//! Rules, in this order:
//! * an empty name becomes `[unknown]`;
//! * every control character (Unicode `Cc`: `\n`, `\r`, `\t`, ESC, DEL, C1 …), every whitespace
//!   character other than the ASCII space (U+2028, U+2029, NBSP …) and the XML non-characters
//!   U+FFFE/U+FFFF become `_` — so a name never breaks a line and every character is legal
//!   in XML 1.0 (the SVG escapes `<`, `&`, `"` itself);
//! * in folded stacks only, `;` (the frame separator) becomes `:`;
//! * the result is cut to [`MAX_NAME_BYTES`] bytes (at a character boundary) and ends in `...`
//!   when cut.
//!
//! The ASCII space is kept: C++ and Java signatures contain it, and every folded-stack reader
//! (FlameGraph.pl, inferno, Pyroscope) takes the count after the *last* space of a line.

use std::borrow::Cow;

/// Longest name kept, in bytes (longer names are cut and end in `...`).
pub const MAX_NAME_BYTES: usize = 512;

const UNKNOWN: &str = "[unknown]";
const CUT_MARK: &str = "...";

/// Where the name goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// A folded stack: `;` is the frame separator.
    Folded,
    /// Anything else (SVG subtitle, pprof strings, index.json).
    Plain,
}

fn replaced(c: char, target: Target) -> Option<char> {
    if c.is_control() || (c.is_whitespace() && c != ' ') || c == '\u{FFFE}' || c == '\u{FFFF}' {
        Some('_')
    } else if c == ';' && target == Target::Folded {
        Some(':')
    } else {
        None
    }
}

/// `name` made safe for `target` (see the module doc).
pub(crate) fn name(name: &str, target: Target) -> Cow<'_, str> {
    if name.is_empty() {
        return Cow::Borrowed(UNKNOWN);
    }
    let clean = name.len() <= MAX_NAME_BYTES && name.chars().all(|c| replaced(c, target).is_none());
    if clean {
        return Cow::Borrowed(name);
    }
    let budget = if name.len() > MAX_NAME_BYTES {
        MAX_NAME_BYTES - CUT_MARK.len()
    } else {
        MAX_NAME_BYTES
    };
    let mut out = String::with_capacity(name.len().min(MAX_NAME_BYTES));
    for c in name.chars() {
        let c = replaced(c, target).unwrap_or(c);
        if out.len() + c.len_utf8() > budget {
            out.push_str(CUT_MARK);
            break;
        }
        out.push(c);
    }
    Cow::Owned(out)
}

/// A label value for Pyroscope's `app{key=value}` syntax: ASCII letters, digits, `_`, `-`
/// and `.` kept, anything else `_`, at most 64 bytes, never empty.
pub(crate) fn label_value(value: &str) -> String {
    let out: String = value
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        "_".to_string()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_names_are_borrowed() {
        assert!(matches!(
            name("main", Target::Folded),
            Cow::Borrowed("main")
        ));
        assert!(matches!(
            name(
                "std::vector<int, std::allocator<int> >::push_back",
                Target::Folded
            ),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn separators_and_controls_are_replaced() {
        assert_eq!(name("a;b", Target::Folded), "a:b");
        assert_eq!(name("a;b", Target::Plain), "a;b");
        assert_eq!(name("a\nb\r\tc\u{1b}[31m", Target::Plain), "a_b__c_[31m");
        assert_eq!(name("x\u{2028}y\u{85}z\u{a0}w", Target::Plain), "x_y_z_w");
        assert_eq!(name("\u{FFFE}\u{FFFF}", Target::Plain), "__");
        assert_eq!(name("a b", Target::Folded), "a b");
        assert_eq!(name("", Target::Folded), "[unknown]");
    }

    #[test]
    fn long_names_are_cut_at_a_char_boundary() {
        let long = "é".repeat(400); // 800 bytes
        let cut = name(&long, Target::Folded);
        assert!(cut.len() <= MAX_NAME_BYTES, "{}", cut.len());
        assert!(cut.ends_with("..."));
        assert!(cut.trim_end_matches("...").chars().all(|c| c == 'é'));
        let exact = "a".repeat(MAX_NAME_BYTES);
        assert_eq!(name(&exact, Target::Folded), exact);
    }

    #[test]
    fn label_values_are_restricted() {
        assert_eq!(label_value("nginx: worker"), "nginx__worker");
        assert_eq!(label_value("kworker/0:1"), "kworker_0_1");
        assert_eq!(label_value("a}b,c=d\"e"), "a_b_c_d_e");
        assert_eq!(label_value(""), "_");
        assert_eq!(label_value(&"x".repeat(100)).len(), 64);
    }
}
