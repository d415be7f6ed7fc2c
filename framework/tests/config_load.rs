//! `gala_gopher::config`: shipped files, defaults, overrides, warnings and error messages.

use std::path::{Path, PathBuf};

use gala_gopher::config::{self, CheckType, ConfigError, LogLevel, OutChannel, Provenance, Switch};

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn load(src: &str) -> Result<config::LoadedConfig, ConfigError> {
    config::load_str(src, Path::new("/etc/gala-gopher/gala-gopher.conf"), &[])
}

fn load_env(src: &str, env: &[(&str, &str)]) -> Result<config::LoadedConfig, ConfigError> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    config::load_str(src, Path::new("/etc/gala-gopher/gala-gopher.conf"), &env)
}

fn err(src: &str) -> String {
    match load(src) {
        Ok(c) => panic!("expected an error, got {:?}", c.config),
        Err(e) => e.to_string(),
    }
}

#[test]
fn shipped_config_loads_without_warnings() {
    let loaded = config::load(&repo_file("conf/gala-gopher.conf")).unwrap();
    assert_eq!(loaded.warnings, Vec::<String>::new());
    let c = &loaded.config;
    assert_eq!(c.web_server.bind_addr.to_string(), "127.0.0.1");
    assert_eq!(c.rest_api_server.bind_addr.to_string(), "127.0.0.1");
    // The REST API is on, on loopback only.
    assert!(c.global.rest_api_on);
    let on: Vec<&str> = c
        .probes
        .iter()
        .filter(|p| p.switch == Switch::On)
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(on, ["system_infos"]);
    let all: Vec<&str> = c.probes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        all,
        [
            "system_infos",
            "example",
            "example_py",
            "tcpprobe",
            "endpoint",
            "l7probe",
            "kafkaprobe",
            "taskprobe",
            "stackprobe",
            "ioprobe",
            "containerprobe",
            "sliprobe",
            "nginx",
            "haproxy",
            "lvs",
            "dnsmasq",
            "bind",
            "rabbitmq",
            "redis",
            "pg_stat_probe",
            "jvmprobe"
        ]
    );
    assert_eq!(
        c.probes[0].param,
        "-t 5 -w /etc/gala-gopher/gala-gopher-app.conf -l warn"
    );
    assert!(c.extend_probes.is_empty());
}

#[test]
fn empty_document_gives_defaults() {
    let c = load("").unwrap().config;
    assert_eq!(c, config::GopherConfig::default());
    assert_eq!(c.global.log_level, LogLevel::Info);
    assert_eq!(c.global.probes_dir, Path::new("/opt/gala-gopher/probes"));
    assert_eq!(c.global.max_line_bytes, 65536);
    assert_eq!(c.metric.out_channel.as_slice(), [OutChannel::WebServer]);
    assert_eq!(c.event.out_channel.as_slice(), [OutChannel::Logs]);
    assert_eq!(c.meta.out_channel.as_slice(), [OutChannel::Logs]);
    assert_eq!(c.web_server.port, 8888);
    assert_eq!(c.rest_api_server.port, 9999);
    assert_eq!(c.imdb.max_tables_num, 1024);
    assert_eq!(c.imdb.record_timeout, 60);
    assert_eq!(c.kafka.queue_buffering_max_kbytes, 1_048_576);
    assert_eq!(c.otlp.timeout_ms, 5000);
    assert!(!c.global.rest_api_on);
    assert_eq!(c.rest_api_server.bind_addr.to_string(), "127.0.0.1");
    assert_eq!(c.global.probes_init, "/etc/gala-gopher/probes.init");
}

#[test]
fn web_server_port_out_of_range_names_line_and_key() {
    let src = "global = { log_level = \"info\"; };\n\nweb_server =\n{\n    port = 70000;\n};\n";
    assert_eq!(
        err(src),
        "/etc/gala-gopher/gala-gopher.conf:5: web_server.port: invalid value 70000, expected 1..=65535"
    );
}

#[test]
fn unknown_keys_warn_with_line() {
    let src =
        "global = {\n  log_level = \"debug\";\n  colour = \"blue\";\n};\nfancy = { a = 1; };\n";
    let loaded = load(src).unwrap();
    assert_eq!(loaded.config.global.log_level, LogLevel::Debug);
    assert_eq!(
        loaded.warnings,
        [
            "/etc/gala-gopher/gala-gopher.conf:5: unknown key \"fancy\" (ignored)",
            "/etc/gala-gopher/gala-gopher.conf:3: unknown key \"global.colour\" (ignored)",
        ]
    );
}

#[test]
fn env_overrides_file_and_errors_name_the_variable() {
    let src = "web_server = { port = 8888; };\nglobal = { probes_dir = \"/a\"; };\n";
    let c = load_env(
        src,
        &[
            ("GALA_GOPHER_WEB_SERVER__PORT", "9100"),
            ("GALA_GOPHER_GLOBAL__PROBES_DIR", "/x"),
            ("GALA_GOPHER_KAFKA__SASL_PASSWORD", "007"),
            ("UNRELATED", "1"),
        ],
    )
    .unwrap()
    .config;
    assert_eq!(c.web_server.port, 9100);
    assert_eq!(c.global.probes_dir, Path::new("/x"));
    assert_eq!(c.kafka.sasl_password.as_deref(), Some("007"));

    let e = load_env(src, &[("GALA_GOPHER_WEB_SERVER__PORT", "0")]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "GALA_GOPHER_WEB_SERVER__PORT: web_server.port: invalid value 0, expected 1..=65535"
    );
    match e {
        ConfigError::Invalid {
            at: Provenance::Env { var },
            ..
        } => {
            assert_eq!(var, "GALA_GOPHER_WEB_SERVER__PORT")
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn out_channel_string_or_list() {
    let src = "kafka = { kafka_broker = \"localhost:9092\"; };\nmetric = { out_channel = [\"web_server\", \"kafka\"]; };\nevent = { out_channel = \"\"; };\n";
    let c = load(src).unwrap().config;
    assert_eq!(
        c.metric.out_channel.as_slice(),
        [OutChannel::WebServer, OutChannel::Kafka]
    );
    assert!(c.event.out_channel.is_off());
    assert_eq!(
        err("metric = { out_channel = \"carrier_pigeon\"; };"),
        "/etc/gala-gopher/gala-gopher.conf:1: metric.out_channel: invalid value \"carrier_pigeon\", expected one of: web_server, logs, kafka, otlp, json"
    );
}

#[test]
fn probe_rules() {
    let missing_name = "probes = (\n  { param = \"-t 5\"; }\n);";
    assert_eq!(
        err(missing_name),
        "/etc/gala-gopher/gala-gopher.conf:2: probes[0].name: missing required key"
    );
    let auto_without_check =
        "extend_probes = (\n  { name = \"x\"; command = \"/bin/x\"; switch = \"auto\"; }\n);";
    assert_eq!(
        err(auto_without_check),
        "/etc/gala-gopher/gala-gopher.conf:2: extend_probes[0].start_check: switch is \"auto\" but start_check is missing or empty"
    );
    let dup = "probes = ( { name = \"tcp\"; } );\nextend_probes = (\n  { name = \"tcp\"; command = \"/bin/tcp\"; }\n);";
    assert_eq!(
        err(dup),
        "/etc/gala-gopher/gala-gopher.conf:3: extend_probes[0].name: duplicate probe name \"tcp\" (first used by probes[0].name at /etc/gala-gopher/gala-gopher.conf:1)"
    );
    let ok = "extend_probes = ( { name = \"ng\"; command = \"/bin/ng -x\"; switch = \"auto\"; check_type = \"process\"; start_check = \"^nginx$\"; } );";
    let c = load(ok).unwrap().config;
    assert_eq!(c.extend_probes[0].check_type, CheckType::Process);
    assert_eq!(c.extend_probes[0].switch, Switch::Auto);
}

/// A document in upstream v2023's shape: every section, switches as "on"/"off" strings, integer
/// sizes, extend probes with shell start checks.
const V2023_SHAPE: &str = r#"global =
{
    log_file_name = "gopher.log";
    log_level = "debug";
    pin_path = "/sys/fs/bpf/gala-gopher";
};
metric = { out_channel = "web_server"; kafka_topic = "gala_gopher"; pod_info_switch = "on"; };
event = { out_channel = "kafka"; kafka_topic = "gala_gopher_event"; timeout = 600; desc_language = "zh_CN"; };
meta = { out_channel = "kafka"; kafka_topic = "gala_gopher_metadata"; };
ingress = { interval = 5; };
egress = { interval = 5; time_range = 5; };
imdb = { max_tables_num = 1024; max_records_num = 1024; max_metrics_num = 64; record_timeout = 60; };
web_server = { port = 8888; };
kafka =
{
    kafka_broker = "localhost:9092";
    batch_num_messages = 10000;
    compression_codec = "none";
    queue_buffering_max_messages = 100000;
    queue_buffering_max_kbytes = 1048576;
    queue_buffering_max_ms = 5;
};
logs = { metric_dir = "/var/log/gala-gopher/metrics"; event_dir = "/var/log/gala-gopher/event"; };
probes =
(
    { name = "example"; param = ""; switch = "off"; },
    { name = "system_infos"; param = "-t 5 -w /etc/gala-gopher/gala-gopher-app.conf -l warn"; switch = "on"; }
);
extend_probes =
(
    {
        name = "pg_stat_probe";
        command = "python3 /opt/gala-gopher/extend_probes/pg_stat_probe.py";
        param = "";
        start_check = "ps -ef | grep gaussdb | grep -v grep | wc -l";
        check_type = "count";
        switch = "auto";
    },
    { name = "redis"; command = "python3 /opt/gala-gopher/extend_probes/redis_probe.py"; param = ""; switch = "off"; }
);
"#;

#[test]
fn upstream_v2023_shape_is_accepted() {
    let loaded = load(V2023_SHAPE).unwrap();
    assert_eq!(loaded.warnings, Vec::<String>::new());
    let c = &loaded.config;
    assert_eq!(c.global.log_level, LogLevel::Debug);
    assert!(c.metric.pod_info_switch);
    assert_eq!(c.event.desc_language, config::Language::ZhCn);
    assert_eq!(c.event.out_channel.as_slice(), [OutChannel::Kafka]);
    assert_eq!(c.kafka.kafka_broker, "localhost:9092");
    assert_eq!(c.kafka.queue_buffering_max_kbytes, 1_048_576);
    assert_eq!((c.ingress.interval, c.egress.time_range), (5, 5));
    assert_eq!(c.probes.len(), 2);
    assert_eq!(c.probes[1].switch, Switch::On);
    assert_eq!(c.extend_probes[0].switch, Switch::Auto);
    assert_eq!(
        c.extend_probes[0].start_check.as_deref(),
        Some("ps -ef | grep gaussdb | grep -v grep | wc -l")
    );
}

#[test]
fn upstream_head_shape_is_accepted() {
    let src = "global = { log_file_name = \"gopher.log\"; log_level = \"info\"; rest_api_on = true; };\n\
               metric = { out_channel = \"web_server\"; kafka_topic = \"gala_gopher\"; };\n\
               web_server = { bind_addr = \"127.0.0.1\"; port = 8888; ssl_auth = \"off\"; private_key = \"\"; cert_file = \"\"; ca_file = \"\"; };\n\
               rest_api_server = { bind_addr = \"127.0.0.1\"; port = 9999; ssl_auth = \"off\"; private_key = \"\"; cert_file = \"\"; ca_file = \"\"; };\n\
               logs = { metric_total_size = 100; metric_dir = \"/var/log/gala-gopher/metrics\"; };\n";
    let loaded = load(src).unwrap();
    assert_eq!(loaded.warnings, Vec::<String>::new());
    assert!(loaded.config.global.rest_api_on);
    assert!(!loaded.config.web_server.ssl_auth);
    assert_eq!(loaded.config.rest_api_server.port, 9999);
    assert!(loaded.config.probes.is_empty());
}

#[test]
fn value_errors() {
    let f = "/etc/gala-gopher/gala-gopher.conf";
    let cases: &[(&str, &str)] = &[
        (
            "web_server = {\n  port = \"http\";\n};",
            ":2: web_server.port: invalid type: string \"http\", expected an integer",
        ),
        (
            "web_server = {\n  bind_addr = \"localhost\";\n};",
            ":2: web_server.bind_addr: invalid value \"localhost\", expected an IP address such as \"127.0.0.1\"",
        ),
        (
            "global = { log_level = \"verbose\"; };",
            ":1: global.log_level: invalid value \"verbose\", expected one of: debug, info, warn, error",
        ),
        (
            "imdb = {\n max_tables_num = 0;\n};",
            ":2: imdb.max_tables_num: invalid value 0, expected 1..=65536",
        ),
        (
            "imdb = { record_timeout = -1; };",
            ":1: imdb.record_timeout: invalid value -1, expected an integer >= 1",
        ),
        (
            "logs = {\n  metric_dir = \"/var/log/a;b\";\n};",
            ":2: logs.metric_dir: invalid value \"/var/log/a;b\", the path must not contain \";\"",
        ),
        (
            "web_server = 5;",
            ":1: web_server: invalid type: integer `5`, expected a group { ... }",
        ),
        (
            "probes = ( { name = \"../x\"; } );",
            ":1: probes[0].name: invalid value \"../x\", expected a probe name of at most 64 letters, digits, '_', '-' and '.' (not starting with '-' or '.')",
        ),
        (
            "probes = ( { name = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"; } );",
            ":1: probes[0].name: invalid value \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\", expected a probe name of at most 64 letters, digits, '_', '-' and '.' (not starting with '-' or '.')",
        ),
        (
            "extend_probes = (\n { name = \"x\"; command = \"/bin/x 'unclosed\"; }\n);",
            ":2: extend_probes[0].command: invalid value \"/bin/x 'unclosed\", unbalanced quotes",
        ),
        (
            "extend_probes = (\n { name = \"x\"; }\n);",
            ":2: extend_probes[0].command: missing required key",
        ),
        (
            "probes = (\n { name = \"x\"; switch = \"maybe\"; }\n);",
            ":2: probes[0].switch: invalid value \"maybe\", expected one of: on, off, auto",
        ),
        (
            "probes = (\n { name = \"x\"; switch = \"auto\"; check_type = \"process\";\n   start_check = \"(nginx\"; }\n);",
            ":3: probes[0].start_check: invalid process regex \"(nginx\": ",
        ),
        (
            "metric = {\n out_channel = \"kafka\";\n};",
            ":2: metric.out_channel: channel \"kafka\" needs kafka.kafka_broker to be set",
        ),
        (
            "event = { out_channel = \"otlp\"; };",
            ":1: event.out_channel: channel \"otlp\" needs otlp.endpoint to be set",
        ),
        (
            "meta = { out_channel = \"web_server\"; };",
            ":1: meta.out_channel: channel \"web_server\" only carries metrics",
        ),
        (
            "otlp = { endpoint = \"grpc://x:4317\"; };",
            ":1: otlp.endpoint: invalid value \"grpc://x:4317\", expected \"\" or an http:// or https:// URL",
        ),
        (
            "web_server = {\n ssl_auth = \"on\";\n};",
            ":2: web_server.private_key: required when ssl_auth is \"on\"",
        ),
        (
            "global = { rest_api_on = true; };\nrest_api_server = {\n port = 8888;\n};",
            ":3: rest_api_server.port: port 8888 is already used by web_server.port",
        ),
        (
            "probes = \"system_infos\";",
            ":1: probes: invalid type: string \"system_infos\", expected a list ( ... )",
        ),
        (
            "kafka = { compression_codec = \"brotli\"; };",
            ":1: kafka.compression_codec: invalid value \"brotli\", expected one of: none, gzip, snappy, lz4, zstd",
        ),
    ];
    for (src, want) in cases {
        let got = err(src);
        let want = format!("{f}{want}");
        assert!(got.starts_with(&want), "{src:?}\n got: {got}\nwant: {want}");
    }
}

#[test]
fn accepted_spellings() {
    let src = "global = { rest_api_on = \"on\"; log_level = \"WARN\"; };\n\
               web_server = { port = 9000; bind_addr = \"::1\"; ssl_auth = false; };\n\
               metric = { pod_info_switch = true; out_channel = (\"logs\", \"json\", \"logs\"); };\n\
               kafka = { sasl_mechanism = \"SCRAM-SHA-256\"; security_protocol = \"sasl_ssl\"; };";
    let c = load(src).unwrap().config;
    assert!(c.global.rest_api_on);
    assert_eq!(c.global.log_level, LogLevel::Warn);
    assert_eq!(c.web_server.port, 9000);
    assert_eq!(c.web_server.bind_addr.to_string(), "::1");
    assert!(c.metric.pod_info_switch);
    assert_eq!(
        c.metric.out_channel.as_slice(),
        [OutChannel::Logs, OutChannel::Json]
    );
    assert_eq!(
        c.kafka.sasl_mechanism,
        Some(config::SaslMechanism::ScramSha256)
    );
}

#[test]
fn tls_files_must_exist_and_are_returned() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let cert = dir.path().join("c.pem");
    std::fs::write(&key, "k").unwrap();
    std::fs::write(&cert, "c").unwrap();
    let src = format!(
        "web_server = {{ ssl_auth = \"on\"; private_key = \"{}\"; cert_file = \"{}\"; }};",
        key.display(),
        cert.display()
    );
    let c = load(&src).unwrap().config;
    let tls = c.web_server.tls().unwrap();
    assert_eq!(
        (tls.private_key, tls.cert_file, tls.ca_file),
        (key.clone(), cert.clone(), None)
    );
    assert!(c.rest_api_server.tls().is_none());

    let src = src.replace("\"; };", "\"; ca_file = \"/nonexistent/ca.pem\"; };");
    assert!(err(&src).ends_with("web_server.ca_file: file /nonexistent/ca.pem does not exist"));
}

#[test]
fn env_unknown_keys_and_lists() {
    let loaded = load_env(
        "",
        &[
            ("GALA_GOPHER_WEB_SERVER__COLOUR", "red"),
            ("GALA_GOPHER_METRIC__OUT_CHANNEL", "web_server,logs"),
            ("gala_gopher_global__log_level", "error"),
        ],
    )
    .unwrap();
    assert_eq!(
        loaded.warnings,
        ["GALA_GOPHER_WEB_SERVER__COLOUR: unknown key \"web_server.colour\" (ignored)"]
    );
    assert_eq!(
        loaded.config.metric.out_channel.as_slice(),
        [OutChannel::WebServer, OutChannel::Logs]
    );
    assert_eq!(loaded.config.global.log_level, LogLevel::Error);
}

#[test]
fn syntax_errors_pass_through() {
    let e = load("web_server = {\n  port = 8888 8889;\n};").unwrap_err();
    assert!(matches!(e, ConfigError::Syntax(_)));
    assert_eq!(
        e.to_string(),
        "/etc/gala-gopher/gala-gopher.conf:2:15: expected ';' or ',' after setting \"port\""
    );
    let e = config::load(Path::new("/nonexistent/gala-gopher.conf")).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e}");
}

#[test]
fn include_and_lines_in_included_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("probes.conf"),
        "probes = (\n  { name = \"a\"; switch = \"sometimes\"; }\n);\n",
    )
    .unwrap();
    let main = dir.path().join("gala-gopher.conf");
    std::fs::write(
        &main,
        "global = { log_level = \"info\"; };\n@include \"probes.conf\"\n",
    )
    .unwrap();
    let e = config::load(&main).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "{}:2: probes[0].switch: invalid value \"sometimes\"",
            dir.path().join("probes.conf").display()
        )),
        "{e}"
    );
}

#[test]
fn check_summarises() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("g.conf");
    // A meta_dir that does not exist has no tables (the check loads it, as the daemon does).
    let meta = dir.path().join("meta");
    std::fs::write(
        &p,
        format!("global = {{ rest_api_on = true; bogus = 1; meta_dir = \"{}\"; }};\n\
         rest_api_server = {{ token = \"t\"; }};\n\
         probes = ( {{ name = \"a\"; switch = \"on\"; }}, {{ name = \"b\"; }} );\n\
         extend_probes = ( {{ name = \"c\"; command = \"/bin/c\"; switch = \"auto\"; check_type = \"process\"; start_check = \"^c$\"; }} );", meta.display()),
    )
    .unwrap();
    let s = config::check(&p).unwrap();
    let want = format!(
        "{0}: OK (1 warning)\n  warning: {0}:1: unknown key \"global.bogus\" (ignored)\n\
         metric -> web_server (http://127.0.0.1:8888/metrics); event -> logs; meta -> logs\n\
         rest api: http://127.0.0.1:9999 (token: required)\n\
         probes_dir: /opt/gala-gopher/probes; meta_dir: {1}\n\
         probes on: a\nprobes auto: c\nprobes off: b\n",
        p.display(),
        meta.display()
    );
    assert_eq!(s, want);
    std::fs::write(&p, "web_server = { port = 0; };").unwrap();
    assert!(config::check(&p).is_err());
}
