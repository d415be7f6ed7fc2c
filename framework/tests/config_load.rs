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
            "taskprobe",
            "ioprobe"
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

fn libconfig_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("libconfig/tests/fixtures")
        .join(name)
}

#[test]
fn upstream_v2023_config_is_accepted() {
    let loaded = config::load(&libconfig_fixture("upstream-v2023.conf")).unwrap();
    assert_eq!(loaded.warnings, Vec::<String>::new());
    let c = &loaded.config;
    assert_eq!(c.global.log_level, LogLevel::Debug);
    assert!(c.metric.pod_info_switch);
    assert_eq!(c.event.desc_language, config::Language::ZhCn);
    assert_eq!(c.event.out_channel.as_slice(), [OutChannel::Kafka]);
    assert_eq!(c.kafka.kafka_broker, "localhost:9092");
    assert_eq!(c.probes.len(), 4);
    assert_eq!(c.extend_probes.len(), 19);
    let auto: Vec<&str> = c
        .extend_probes
        .iter()
        .filter(|p| p.switch == Switch::Auto)
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(
        auto,
        [
            "pg_stat_probe",
            "cadvisor",
            "lvs",
            "ksliprobe",
            "pgsliprobe",
            "jvmprobe"
        ]
    );
    assert_eq!(
        c.extend_probes[0].start_check.as_deref(),
        Some("ps -ef | grep gaussdb | grep -v grep | wc -l")
    );
}

#[test]
fn upstream_head_config_is_accepted() {
    let loaded = config::load(&libconfig_fixture("upstream-head.conf")).unwrap();
    assert_eq!(loaded.warnings, Vec::<String>::new());
    assert!(loaded.config.global.rest_api_on);
    assert_eq!(loaded.config.rest_api_server.port, 9999);
    assert!(loaded.config.probes.is_empty());
}
