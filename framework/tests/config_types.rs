//! Config value types: an integer key takes an integer, a switch takes a boolean or "on"/"off",
//! a string key takes a string — in the file and through environment overrides alike. Nothing
//! is coerced; every refusal names `FILE:LINE` (or the variable) and the dotted key.

use std::path::Path;

use gala_gopher::config::{self, ConfigError};

const FILE: &str = "/etc/gala-gopher/gala-gopher.conf";

fn load(src: &str, env: &[(&str, &str)]) -> Result<config::LoadedConfig, ConfigError> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    config::load_str(src, Path::new(FILE), &env)
}

/// Every integer key of the model.
const INTEGER_KEYS: &[&str] = &[
    "global.max_line_bytes",
    "event.timeout",
    "meta.report_period",
    "ingress.interval",
    "egress.interval",
    "egress.time_range",
    "imdb.max_tables_num",
    "imdb.max_records_num",
    "imdb.max_metrics_num",
    "imdb.record_timeout",
    "web_server.port",
    "rest_api_server.port",
    "kafka.batch_num_messages",
    "kafka.queue_buffering_max_messages",
    "kafka.queue_buffering_max_kbytes",
    "kafka.queue_buffering_max_ms",
    "kafka.queue_size",
    "logs.metric_total_size",
    "logs.event_total_size",
    "logs.meta_total_size",
    "logs.queue_size",
    "otlp.timeout_ms",
    "otlp.queue_size",
    "container.request_timeout_ms",
    "container.resync_period",
    "container.max_containers",
];

/// Every boolean switch of the model.
const SWITCH_KEYS: &[&str] = &[
    "global.rest_api_on",
    "metric.pod_info_switch",
    "web_server.timestamps",
    "web_server.ssl_auth",
    "rest_api_server.ssl_auth",
    "container.runtime_api",
];

/// String keys (a valid value each, so only the type is wrong in the bad cases).
const STRING_KEYS: &[&str] = &[
    "global.log_file_name",
    "global.log_level",
    "global.pin_path",
    "global.probes_dir",
    "global.meta_dir",
    "global.sdk_dir",
    "global.machine_id",
    "global.host_root",
    "metric.out_channel",
    "metric.kafka_topic",
    "event.kafka_topic",
    "event.desc_language",
    "meta.kafka_topic",
    "web_server.bind_addr",
    "web_server.private_key",
    "rest_api_server.bind_addr",
    "rest_api_server.token",
    "kafka.kafka_broker",
    "kafka.compression_codec",
    "kafka.security_protocol",
    "kafka.sasl_mechanism",
    "kafka.sasl_username",
    "kafka.sasl_password",
    "kafka.ssl_ca_location",
    "logs.metric_dir",
    "logs.debug_dir",
    "otlp.endpoint",
];

fn env_var(key: &str) -> String {
    let (section, name) = key.split_once('.').unwrap();
    format!(
        "GALA_GOPHER_{}__{}",
        section.to_uppercase(),
        name.to_uppercase()
    )
}

/// `key = literal;` on line 3 of a document.
fn doc(key: &str, literal: &str) -> String {
    let (section, name) = key.split_once('.').unwrap();
    format!("# test\n{section} = {{\n  {name} = {literal};\n}};\n")
}

fn file_error(key: &str, literal: &str) -> String {
    match load(&doc(key, literal), &[]) {
        Ok(c) => panic!("{key} = {literal} was accepted: {:?}", c.config),
        Err(e) => e.to_string(),
    }
}

fn env_error(key: &str, text: &str) -> String {
    let var = env_var(key);
    match load("", &[(&var, text)]) {
        Ok(c) => panic!("{var}={text} was accepted: {:?}", c.config),
        Err(e) => e.to_string(),
    }
}

#[test]
fn integer_keys_take_only_integers_in_the_file() {
    for key in INTEGER_KEYS {
        for literal in [
            "true", "false", "\"on\"", "\"yes\"", "1.5", "1e4", "\"2048\"", "2048.0",
        ] {
            let got = file_error(key, literal);
            let want = format!("{FILE}:3: {key}: invalid type: ");
            assert!(
                got.starts_with(&want) && got.contains("expected an integer"),
                "{key} = {literal}\n got: {got}\nwant: {want}... expected an integer"
            );
        }
        // An integer in range is fine.
        load(&doc(key, "2048"), &[]).unwrap_or_else(|e| panic!("{key} = 2048: {e}"));
    }
}

#[test]
fn integer_keys_take_only_integers_from_the_environment() {
    for key in INTEGER_KEYS {
        let var = env_var(key);
        for text in [
            "true", "on", "yes", "1.5", "1e4", "2048.0", "0x800", " 2048", "",
        ] {
            let got = env_error(key, text);
            let want = format!("{var}: {key}: invalid type: ");
            assert!(
                got.starts_with(&want) && got.contains("expected an integer"),
                "{var}={text:?}\n got: {got}\nwant: {want}... expected an integer"
            );
        }
        load("", &[(&var, "2048")]).unwrap_or_else(|e| panic!("{var}=2048: {e}"));
    }
}

#[test]
fn switches_take_booleans_or_on_off() {
    for key in SWITCH_KEYS {
        for literal in ["1", "0", "1.0", "\"yes\"", "\"no\"", "\"true\"", "\"1\""] {
            let got = file_error(key, literal);
            let want = format!("{FILE}:3: {key}: ");
            assert!(
                got.starts_with(&want) && got.contains("expected \"on\", \"off\", true or false"),
                "{key} = {literal}\n got: {got}"
            );
        }
        for literal in ["true", "false", "\"on\"", "\"off\""] {
            let src = doc(key, literal);
            // ssl_auth = on needs key files; only the type is under test here.
            match load(&src, &[]) {
                Ok(_) => {}
                Err(e) => assert!(
                    e.to_string().contains("required when ssl_auth"),
                    "{key} = {literal}: {e}"
                ),
            }
        }
        let var = env_var(key);
        for text in ["yes", "no", "1", "0", "2", ""] {
            let got = env_error(key, text);
            assert!(
                got.starts_with(&format!("{var}: {key}: "))
                    && got.contains("expected \"on\", \"off\", true or false"),
                "{var}={text:?}\n got: {got}"
            );
        }
        for text in ["on", "off", "true", "false", "ON"] {
            if let Err(e) = load("", &[(&var, text)]) {
                assert!(
                    e.to_string().contains("required when ssl_auth"),
                    "{var}={text}: {e}"
                );
            }
        }
    }
}

#[test]
fn string_keys_take_only_strings_in_the_file() {
    for key in STRING_KEYS {
        for literal in ["5", "true", "1.5", "{ a = 1; }"] {
            let got = file_error(key, literal);
            let want = format!("{FILE}:3: {key}: invalid type: ");
            assert!(got.starts_with(&want), "{key} = {literal}\n got: {got}");
        }
    }
    // Lists of strings: every element is a string.
    let got = file_error("metric.out_channel", "[ 1 ]");
    assert!(
        got.starts_with(&format!("{FILE}:3: metric.out_channel")),
        "{got}"
    );
}

#[test]
fn probe_entry_keys_are_typed_too() {
    let cases: &[(&str, &str)] = &[
        ("probes = (\n {\n  name = 5; } );", "probes[0].name"),
        (
            "probes = (\n {\n  name = \"a\"; param = 5; } );",
            "probes[0].param",
        ),
        (
            "probes = (\n {\n  name = \"a\"; switch = true; } );",
            "probes[0].switch",
        ),
        (
            "probes = (\n {\n  name = \"a\"; check_type = 1; } );",
            "probes[0].check_type",
        ),
        (
            "probes = (\n {\n  name = \"a\"; start_check = 1.5; } );",
            "probes[0].start_check",
        ),
        (
            "extend_probes = (\n {\n  name = \"a\"; command = 7; } );",
            "extend_probes[0].command",
        ),
        (
            "extend_probes = (\n {\n  name = \"a\"; command = \"/bin/a\"; switch = 1; } );",
            "extend_probes[0].switch",
        ),
    ];
    for (src, key) in cases {
        let got = load(src, &[]).map(|_| ()).unwrap_err().to_string();
        assert!(
            got.starts_with(&format!("{FILE}:3: {key}: invalid type: ")),
            "{src}\n got: {got}"
        );
    }
}

#[test]
fn environment_strings_are_kept_exactly() {
    let c = load(
        "",
        &[
            ("GALA_GOPHER_KAFKA__SASL_PASSWORD", "007"),
            ("GALA_GOPHER_METRIC__KAFKA_TOPIC", "123"),
            ("GALA_GOPHER_GLOBAL__MACHINE_ID", "true"),
            ("GALA_GOPHER_GLOBAL__LOG_FILE_NAME", "1.5"),
            ("GALA_GOPHER_WEB_SERVER__PORT", "9100"),
            ("GALA_GOPHER_GLOBAL__REST_API_ON", "on"),
        ],
    )
    .unwrap()
    .config;
    assert_eq!(c.kafka.sasl_password.as_deref(), Some("007"));
    assert_eq!(c.metric.kafka_topic, "123");
    assert_eq!(c.global.machine_id, "true");
    assert_eq!(c.global.log_file_name, "1.5");
    assert_eq!(c.web_server.port, 9100);
    assert!(c.global.rest_api_on);
}

#[test]
fn unknown_environment_sections_name_the_variable() {
    let loaded = load(
        "web_server = { port = 9000; };\n",
        &[
            ("GALA_GOPHER_NOSUCH__X", "1"),
            ("GALA_GOPHER_OTHER__Y__Z", "2"),
        ],
    )
    .unwrap();
    assert_eq!(
        loaded.warnings,
        [
            "GALA_GOPHER_NOSUCH__X: unknown key \"nosuch.x\" (ignored)",
            "GALA_GOPHER_OTHER__Y__Z: unknown key \"other.y.z\" (ignored)",
        ]
    );
    // A file section of the same name is reported too, at its line.
    let loaded = load("nosuch = { a = 1; };\n", &[("GALA_GOPHER_NOSUCH__X", "1")]).unwrap();
    assert_eq!(
        loaded.warnings,
        [
            "GALA_GOPHER_NOSUCH__X: unknown key \"nosuch.x\" (ignored)",
            &format!("{FILE}:1: unknown key \"nosuch\" (ignored)"),
        ]
    );
    // A variable without a section separator is not an override.
    let loaded = load("", &[("GALA_GOPHER_WEB_SERVER", "5")]).unwrap();
    assert_eq!(loaded.config.web_server.port, 8888);
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(
        loaded.warnings[0].starts_with("GALA_GOPHER_WEB_SERVER: "),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn container_sockets_and_host_root_are_checked() {
    let c = load(
        "global = { host_root = \"/host/\"; };\ncontainer = { docker_sockets = [\"/run/a.sock\", \"/run/b.sock\"]; cri_sockets = \"/run/c.sock\"; };\n",
        &[],
    )
    .unwrap();
    assert_eq!(c.config.global.host_root, "/host/");
    assert_eq!(
        c.config.container.docker_sockets,
        [Path::new("/run/a.sock"), Path::new("/run/b.sock")]
    );
    assert_eq!(c.config.container.cri_sockets, [Path::new("/run/c.sock")]);
    // An environment override names several, comma-separated.
    let c = load(
        "",
        &[(
            "GALA_GOPHER_CONTAINER__DOCKER_SOCKETS",
            "/x/1.sock, /x/2.sock",
        )],
    )
    .unwrap();
    assert_eq!(c.config.container.docker_sockets.len(), 2);
    let e = file_error("container.docker_sockets", "[\"relative.sock\"]");
    assert!(
        e.contains("container.docker_sockets") && e.contains("absolute path"),
        "{e}"
    );
    let long = format!("[\"/{}\"]", "s".repeat(120));
    assert!(file_error("container.cri_sockets", &long).contains("107 bytes"));
    let e = file_error("global.host_root", "\"host\"");
    assert!(
        e.contains("global.host_root") && e.contains("not an absolute path"),
        "{e}"
    );
    assert!(file_error("global.host_root", "\"/a/../b\"").contains(".."));
    assert!(file_error("container.request_timeout_ms", "50").contains("100"));
}
