//! Property tests: no input makes the parser panic, and rendered trees parse back unchanged.

use std::path::Path;
use std::sync::Arc;

use gala_libconfig::{parse_str, Node, Value};
use proptest::prelude::*;

fn node(value: Value) -> Node {
    Node::new(value, Arc::from(Path::new("gen.conf")), 1, 1)
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::Float),
        any::<String>().prop_map(Value::Str),
    ]
}

fn array() -> impl Strategy<Value = Value> {
    // Arrays hold scalars of one type.
    prop_oneof![
        prop::collection::vec(any::<bool>().prop_map(Value::Bool), 0..4),
        prop::collection::vec(any::<i64>().prop_map(Value::Int), 0..4),
        prop::collection::vec("[a-z ]{0,5}".prop_map(Value::Str), 0..4),
    ]
    .prop_map(|v| Value::Array(v.into_iter().map(node).collect()))
}

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z*][-A-Za-z0-9_*]{0,8}"
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![scalar(), array()];
    leaf.prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone().prop_map(node), 0..5).prop_map(Value::List),
            prop::collection::btree_map(name(), inner.prop_map(node), 0..5)
                .prop_map(|m| Value::Group(m.into_iter().collect())),
        ]
    })
}

fn document() -> impl Strategy<Value = Node> {
    prop::collection::btree_map(name(), value().prop_map(node), 0..6)
        .prop_map(|m| node(Value::Group(m.into_iter().collect())))
}

/// Text built from libconfig's own punctuation and keywords, so the parser gets deep into its
/// grammar instead of failing on the first character.
fn grammar_soup() -> impl Strategy<Value = String> {
    let tokens = prop_oneof![
        Just("a".to_string()),
        Just("name".to_string()),
        Just("=".to_string()),
        Just(":".to_string()),
        Just(";".to_string()),
        Just(",".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just("(".to_string()),
        Just(")".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("\"".to_string()),
        Just("\\".to_string()),
        Just("\\x".to_string()),
        Just("#".to_string()),
        Just("//".to_string()),
        Just("/*".to_string()),
        Just("*/".to_string()),
        Just("\n".to_string()),
        Just(" ".to_string()),
        Just("0x".to_string()),
        Just("1".to_string()),
        Just("-".to_string()),
        Just(".".to_string()),
        Just("e".to_string()),
        Just("L".to_string()),
        Just("true".to_string()),
        Just("@include".to_string()),
        Just("é".to_string()),
    ];
    prop::collection::vec(tokens, 0..60).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_str(&text, Path::new("/nonexistent/fuzz.conf"));
    }

    #[test]
    fn random_strings_never_panic(text in any::<String>()) {
        let _ = parse_str(&text, Path::new("/nonexistent/fuzz.conf"));
    }

    #[test]
    fn grammar_soup_never_panics(text in grammar_soup()) {
        if let Err(e) = parse_str(&text, Path::new("/nonexistent/fuzz.conf")) {
            // Every error that has a position points inside the text.
            if let Some(at) = e.location() {
                let lines = text.split('\n').count() as u32;
                prop_assert!(at.line >= 1 && at.line <= lines, "{e} for {text:?}");
            }
        }
    }

    #[test]
    fn render_then_parse_round_trips(doc in document()) {
        let text = doc.to_document();
        let parsed = parse_str(&text, Path::new("gen.conf"));
        prop_assert!(parsed.is_ok(), "{:?}\n{text}", parsed.err());
        prop_assert_eq!(parsed.unwrap(), doc, "{}", text);
    }
}
