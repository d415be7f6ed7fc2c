//! Property test: any mix of known/unknown keys and values of any type loads or fails cleanly,
//! and every failure names the file (or the environment variable) it comes from.

use std::path::Path;

use gala_gopher::config;
use proptest::prelude::*;

const KEYS: &[(&str, &[&str])] = &[
    (
        "global",
        &[
            "log_level",
            "rest_api_on",
            "probes_dir",
            "max_line_bytes",
            "bogus",
        ],
    ),
    ("metric", &["out_channel", "kafka_topic", "pod_info_switch"]),
    ("event", &["out_channel", "timeout", "desc_language"]),
    ("imdb", &["max_tables_num", "record_timeout"]),
    (
        "web_server",
        &["bind_addr", "port", "ssl_auth", "timestamps"],
    ),
    (
        "kafka",
        &[
            "kafka_broker",
            "compression_codec",
            "queue_buffering_max_ms",
        ],
    ),
    ("logs", &["metric_dir", "metric_total_size"]),
    ("otlp", &["endpoint", "queue_size"]),
    ("mystery", &["x"]),
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        (0i64..70000).prop_map(|i| i.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        "[a-z_:./;0-9]{0,12}".prop_map(|s| format!("{s:?}")),
        prop::sample::select(vec![
            "\"on\"",
            "\"off\"",
            "\"web_server\"",
            "\"kafka\"",
            "\"127.0.0.1\"",
            "\"info\"",
            "\"\"",
            "[\"logs\", \"json\"]",
            "( 1, 2 )",
            "{ a = 1; }",
            "1.5",
        ])
        .prop_map(str::to_string),
    ]
}

fn document() -> impl Strategy<Value = String> {
    let setting = (0..KEYS.len()).prop_flat_map(|s| {
        let (section, keys) = KEYS[s];
        (prop::sample::select(keys.to_vec()), value())
            .prop_map(move |(k, v)| format!("{section} = {{ {k} = {v}; }};\n"))
    });
    let probe = (
        "[a-z]{1,6}",
        prop::sample::select(vec!["on", "off", "auto", "x"]),
        any::<bool>(),
    )
        .prop_map(|(n, sw, check)| {
            let check = if check {
                " start_check = \"^a$\"; check_type = \"process\";"
            } else {
                ""
            };
            format!("{{ name = \"{n}\"; switch = \"{sw}\";{check} }}")
        });
    (
        prop::collection::btree_map(0..KEYS.len(), setting, 0..6),
        prop::collection::vec(probe, 0..4),
    )
        .prop_map(|(settings, probes)| {
            let mut doc: String = settings.into_values().collect();
            doc.push_str(&format!("probes = ( {} );\n", probes.join(", ")));
            doc
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn loads_or_fails_with_a_location(doc in document(), port in prop::option::of("[0-9a-z]{0,6}")) {
        let env: Vec<(String, String)> = port
            .map(|p| ("GALA_GOPHER_WEB_SERVER__PORT".to_string(), p))
            .into_iter()
            .collect();
        match config::load_str(&doc, Path::new("/etc/g.conf"), &env) {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    prop_assert!(w.starts_with("/etc/g.conf:") || w.starts_with("GALA_GOPHER_"), "{w}");
                }
            }
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(
                    msg.starts_with("/etc/g.conf") || msg.starts_with("GALA_GOPHER_WEB_SERVER__PORT: "),
                    "{msg}\n{doc}"
                );
            }
        }
    }
}
