//! Grammar coverage: every construct of the libconfig 1.7 manual, and the error for each
//! common mistake (exact `FILE:LINE:COL: message`).

use std::path::Path;

use gala_libconfig::{parse_str, Error, Node, Value};

fn parse(src: &str) -> Node {
    parse_str(src, Path::new("t.conf")).unwrap_or_else(|e| panic!("{src:?}: {e}"))
}

fn value(src: &str, path: &str) -> Value {
    parse(src)
        .lookup(path)
        .unwrap_or_else(|| panic!("{path} not found in {src:?}"))
        .value
        .clone()
}

fn error(src: &str) -> String {
    match parse_str(src, Path::new("t.conf")) {
        Ok(n) => panic!("{src:?} parsed: {n:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn scalars() {
    let cases: &[(&str, Value)] = &[
        ("v = 42;", Value::Int(42)),
        ("v = -42;", Value::Int(-42)),
        ("v = +7;", Value::Int(7)),
        ("v = 0x1F;", Value::Int(31)),
        ("v = 0X1f;", Value::Int(31)),
        ("v = 123L;", Value::Int(123)),
        ("v = 5000000000LL;", Value::Int(5_000_000_000)),
        ("v = 9223372036854775807;", Value::Int(i64::MAX)),
        ("v = -9223372036854775808;", Value::Int(i64::MIN)),
        ("v = 0xFFFFFFFFFFFFFFFFL;", Value::Int(-1)),
        ("v = 1.5;", Value::Float(1.5)),
        ("v = 1e3;", Value::Float(1000.0)),
        ("v = .5;", Value::Float(0.5)),
        ("v = -2.0e-3;", Value::Float(-0.002)),
        ("v = 1.;", Value::Float(1.0)),
        ("v = 3E+2;", Value::Float(300.0)),
        ("v = true;", Value::Bool(true)),
        ("v = FALSE;", Value::Bool(false)),
        ("v = TrUe;", Value::Bool(true)),
        ("v = \"plain\";", Value::Str("plain".into())),
        (
            r#"v = "q\"b\\n\n t\t r\r f\f x\x41";"#,
            Value::Str("q\"b\\n\n t\t r\r f\u{c} xA".into()),
        ),
        (r#"v = "a" "b";"#, Value::Str("ab".into())),
        (
            "v = \"a\" # comment\n  /* c */ \"b\"\n // x\n \"c\";",
            Value::Str("abc".into()),
        ),
        ("v = \"multi\nline\";", Value::Str("multi\nline".into())),
        ("v = \"\\xC3\\xA9t\\xC3\\xA9\";", Value::Str("été".into())),
        ("v = \"ünïcödé\";", Value::Str("ünïcödé".into())),
        // libconfig's scanner: \a \b \v \f, \X as \x, and any other backslash kept literally.
        (
            r#"v = "\a\b\v\f";"#,
            Value::Str("\u{7}\u{8}\u{b}\u{c}".into()),
        ),
        (r#"v = "\X41\x6a";"#, Value::Str("Aj".into())),
        (
            r#"v = "ps -ef | grep 'redis\|keydb' | grep -v grep";"#,
            Value::Str(r"ps -ef | grep 'redis\|keydb' | grep -v grep".into()),
        ),
        (r#"v = "\q\.\d\ ";"#, Value::Str(r"\q\.\d\ ".into())),
        (r#"v = "\x4";"#, Value::Str(r"\x4".into())),
        (r#"v = "\xZZ\x";"#, Value::Str(r"\xZZ\x".into())),
        (r#"v = "a\\|b";"#, Value::Str(r"a\|b".into())),
        // Binary and octal integers, with and without the 64-bit suffix.
        ("v = 0b1111;", Value::Int(15)),
        ("v = 0B101L;", Value::Int(5)),
        (
            "v = 0b100001000010000010000100001L;",
            Value::Int(0b100001000010000010000100001),
        ),
        ("v = -0b11;", Value::Int(-3)),
        ("v = 0o17;", Value::Int(15)),
        ("v = 0O777LL;", Value::Int(511)),
        // Leading zeros are decimal, as libconfig's strtoll(.., 10).
        ("v = 010;", Value::Int(10)),
    ];
    for (src, want) in cases {
        assert_eq!(&value(src, "v"), want, "{src}");
    }
}

#[test]
fn settings_terminators_and_separators() {
    let doc = parse("a = 1; b : 2, c = 3\nd=4 e=5");
    let names: Vec<&str> = doc
        .members()
        .unwrap()
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(names, ["a", "b", "c", "d", "e"]);
    assert_eq!(doc.get("e").and_then(Node::as_int), Some(5));

    let doc = parse("*wild-card_1 = 1; Mixed-Case = 2;");
    assert_eq!(doc.get("*wild-card_1").and_then(Node::as_int), Some(1));
    assert_eq!(doc.get("Mixed-Case").and_then(Node::as_int), Some(2));
}

#[test]
fn comments() {
    let doc =
        parse("# hash\n// slashes\n/* block\n spanning */ a = 1; # trailing\nb = /* inline */ 2;");
    assert_eq!(doc.get("a").and_then(Node::as_int), Some(1));
    assert_eq!(doc.get("b").and_then(Node::as_int), Some(2));
    assert_eq!(doc.get("b").unwrap().line, 5);
    assert_eq!(parse("").members().unwrap().len(), 0);
    assert_eq!(parse("  # only a comment").members().unwrap().len(), 0);
}

#[test]
fn containers() {
    let src = r#"
        g = { x = 1; inner = { y = "z"; }; };
        l = ( 1, "two", [3, 4], { five = 5; }, (), );
        a = [ "p", "q", ];
        e = [];
        f = [1.5, 2.5];
        m = [ 1, 0x2, 0b11 ];
    "#;
    let doc = parse(src);
    assert_eq!(doc.lookup("g.inner.y").and_then(Node::as_str), Some("z"));
    assert_eq!(doc.lookup("l.[1]").and_then(Node::as_str), Some("two"));
    assert_eq!(doc.lookup("l[2][1]").and_then(Node::as_int), Some(4));
    assert_eq!(doc.lookup("l.[3].five").and_then(Node::as_int), Some(5));
    assert_eq!(
        doc.lookup("l.[4]")
            .and_then(Node::elements)
            .map(<[Node]>::len),
        Some(0)
    );
    assert!(doc.lookup("l.[5]").is_none());
    assert!(matches!(doc.lookup("a").unwrap().value, Value::Array(ref v) if v.len() == 2));
    assert!(matches!(doc.lookup("e").unwrap().value, Value::Array(ref v) if v.is_empty()));
    assert_eq!(doc.lookup("f.[1]").and_then(Node::as_float), Some(2.5));
    assert_eq!(doc.lookup("m.[2]").and_then(Node::as_int), Some(3));
    assert!(doc.lookup("g.nope").is_none());
    assert!(doc.lookup("g.x.deeper").is_none());
    assert!(doc.lookup("l.[x]").is_none());
}

#[test]
fn positions() {
    let src = "global =\n{\n    port = 8888;\n};\nprobes = (\n  { name = \"a\"; },\n\t{ name = \"b\"; }\n);\n";
    let doc = parse(src);
    let port = doc.lookup("global.port").unwrap();
    assert_eq!((port.line, port.col), (3, 5));
    assert_eq!(&*port.file, Path::new("t.conf"));
    assert_eq!(port.file_line(), "t.conf:3");
    assert_eq!(doc.lookup("global").unwrap().line, 1);
    let b = doc.lookup("probes.[1]").unwrap();
    assert_eq!((b.line, b.col), (7, 2));
    let name = doc.lookup("probes.[1].name").unwrap();
    assert_eq!((name.line, name.col), (7, 4));
    let (nearest, matched) = doc.lookup_nearest("probes.[1].param");
    assert_eq!((nearest.line, matched), (7, 2));
    // Columns count characters, not bytes.
    let doc = parse("s = \"é\"; t = 1;");
    assert_eq!(doc.get("t").unwrap().col, 10);
}

#[test]
fn syntax_errors() {
    let cases: &[(&str, &str)] = &[
        (
            "port = 8888 9999;",
            "t.conf:1:13: expected ';' or ',' after setting \"port\"",
        ),
        ("a = 1;\ns = \"abc\n", "t.conf:2:5: unterminated string"),
        ("a = ;", "t.conf:1:5: expected a value for setting \"a\""),
        (
            "a 1;",
            "t.conf:1:3: expected '=' or ':' after setting name \"a\"",
        ),
        (
            "a = {\n b = 1;\n",
            "t.conf:3:1: unexpected end of file: expected '}' to close the group opened at line 1",
        ),
        ("a = (1 2);", "t.conf:1:8: expected ',' or ')' in list"),
        (
            "a = [1, 2",
            "t.conf:1:10: unexpected end of file: expected ']' to close the array opened at line 1",
        ),
        (
            "a = 1; /* never closed",
            "t.conf:1:8: unterminated comment: expected '*/'",
        ),
        (
            "a = 1;\nb = 2;\na = 3;",
            "t.conf:3:1: duplicate setting \"a\" (first defined at line 1)",
        ),
        (r#"a = "abc\"#, "t.conf:1:5: unterminated string"),
        ("a = 0b;", "t.conf:1:7: expected binary digits after '0b'"),
        ("a = 0b102;", "t.conf:1:5: invalid number"),
        (
            "a = 0b11111111111111111111111111111111111111111111111111111111111111111;",
            "t.conf:1:5: binary integer does not fit in 64 bits",
        ),
        (
            "a = \"\\xFF\";",
            "t.conf:1:5: string is not valid UTF-8 after resolving '\\x' escapes",
        ),
        ("a = 12abc;", "t.conf:1:5: invalid number"),
        ("a = 1.2.3;", "t.conf:1:5: invalid number"),
        (
            "a = 0x;",
            "t.conf:1:7: expected hexadecimal digits after '0x'",
        ),
        (
            "a = 9223372036854775808;",
            "t.conf:1:5: integer 9223372036854775808 does not fit in 64 bits",
        ),
        (
            "a = 0x1FFFFFFFFFFFFFFFF;",
            "t.conf:1:5: hexadecimal integer does not fit in 64 bits",
        ),
        ("a = 1e999;", "t.conf:1:5: float 1e999 is out of range"),
        (
            "a = truth;",
            "t.conf:1:5: expected a value for setting \"a\"",
        ),
        ("a = 1; }", "t.conf:1:8: unexpected '}'"),
        ("1 = 2;", "t.conf:1:1: expected a setting name"),
        (
            "a = [1, \"x\"];",
            "t.conf:1:9: array elements must all have one type: expected integer, found string",
        ),
        (
            "a = [1, 2.0];",
            "t.conf:1:9: array elements must all have one type: expected integer, found float",
        ),
        (
            "a = [ {b = 1;} ];",
            "t.conf:1:7: array elements must be scalars, found a group",
        ),
        ("a = ( 1, );\nb = (,);", "t.conf:2:6: expected a value"),
        (
            "@include 5",
            "t.conf:1:10: expected a quoted file name after @include",
        ),
    ];
    for (src, want) in cases {
        assert_eq!(error(src), *want, "{src:?}");
    }
}

#[test]
fn error_variants_are_typed() {
    let e = parse_str("a = 1;\na = 2;", Path::new("t.conf")).unwrap_err();
    match &e {
        Error::DuplicateSetting {
            name,
            first_line,
            at,
        } => {
            assert_eq!((name.as_str(), *first_line, at.line), ("a", 1, 2));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.location().map(|l| (l.line, l.col)), Some((2, 1)));
    let e = parse_str("s = \"x", Path::new("t.conf")).unwrap_err();
    assert!(matches!(e, Error::Syntax { .. }));
}

#[test]
fn control_characters_between_tokens() {
    // libconfig skips \a, \b, \v and \f like spaces.
    let doc = parse("a = 1;\x07\x08\x0b\x0c b = 2;");
    assert_eq!(doc.get("b").and_then(Node::as_int), Some(2));
}

#[test]
fn nesting_limit() {
    let deep = format!("a = {}1{};", "(".repeat(200), ")".repeat(200));
    let e = parse_str(&deep, Path::new("t.conf")).unwrap_err();
    assert!(matches!(e, Error::TooDeep { .. }), "{e}");
    let ok = format!("a = {}1{};", "(".repeat(100), ")".repeat(100));
    assert!(parse_str(&ok, Path::new("t.conf")).is_ok());
}

#[test]
fn render_round_trip_of_a_rich_document() {
    let src = r#"
        name = "a \"quoted\" \\ tab\t nl\n ctl\x01";
        big = 5000000000L;
        neg = -1;
        f = 1e300;
        tiny = 1.5e-7;
        flags = [true, false];
        mixed = ( 1, "s", { inner = [1.0, 2.5]; }, (), [] );
        grp = { sub = { x = 0x10; }; };
    "#;
    let doc = parse(src);
    let text = doc.to_document();
    let again = parse(&text);
    assert_eq!(doc, again, "{text}");
    assert_eq!(again.lookup("grp.sub.x").and_then(Node::as_int), Some(16));
}
