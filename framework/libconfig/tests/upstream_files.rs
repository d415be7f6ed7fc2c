//! The shapes of upstream's shipped files parse, with the values and lines one expects.

use std::path::{Path, PathBuf};

use gala_libconfig::{parse_file, Node, Value};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn str_at<'a>(doc: &'a Node, path: &str) -> &'a str {
    doc.lookup(path)
        .and_then(Node::as_str)
        .unwrap_or_else(|| panic!("{path}"))
}

#[test]
fn v2023_daemon_config() {
    let doc = parse_file(&fixture("upstream-v2023.conf")).unwrap();
    let sections: Vec<&str> = doc
        .members()
        .unwrap()
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(
        sections,
        [
            "global",
            "metric",
            "event",
            "meta",
            "ingress",
            "egress",
            "imdb",
            "web_server",
            "kafka",
            "logs",
            "probes",
            "extend_probes"
        ]
    );
    assert_eq!(str_at(&doc, "global.pin_path"), "/sys/fs/bpf/gala-gopher");
    assert_eq!(
        doc.lookup("web_server.port").and_then(Node::as_int),
        Some(8888)
    );
    assert_eq!(
        doc.lookup("probes")
            .and_then(Node::elements)
            .map(<[Node]>::len),
        Some(4)
    );
    assert_eq!(
        str_at(&doc, "probes.[1].param"),
        "-t 5 -w /etc/gala-gopher/gala-gopher-app.conf -l warn"
    );
    let extend = doc
        .lookup("extend_probes")
        .and_then(Node::elements)
        .unwrap();
    assert_eq!(extend.len(), 19);
    assert_eq!(str_at(&doc, "extend_probes.[1].name"), "cadvisor");
    assert!(
        str_at(&doc, "extend_probes.[1].start_check").contains("\"$(systemctl is-active isulad")
    );
    let jvm = doc.lookup("extend_probes.[16]").unwrap();
    assert_eq!(jvm.get("name").and_then(Node::as_str), Some("jvmprobe"));
    assert_eq!(jvm.line, 203);
}

#[test]
fn head_daemon_config() {
    let doc = parse_file(&fixture("upstream-head.conf")).unwrap();
    assert_eq!(
        doc.lookup("global.rest_api_on").and_then(Node::as_bool),
        Some(true)
    );
    assert_eq!(str_at(&doc, "rest_api_server.bind_addr"), "127.0.0.1");
    assert_eq!(
        doc.lookup("logs.metric_total_size").and_then(Node::as_int),
        Some(100)
    );
    assert!(doc.get("probes").is_none());
}

#[test]
fn app_whitelist() {
    let doc = parse_file(&fixture("upstream-app.conf")).unwrap();
    let apps = doc.lookup("application").unwrap();
    assert!(matches!(apps.value, Value::List(ref v) if v.len() == 6));
    assert_eq!(str_at(&doc, "application.[4].comm"), "python[2-3]{1}");
    assert_eq!(str_at(&doc, "application.[3].cmdline"), "server");
}

#[test]
fn meta_with_colons_and_trailing_commas() {
    let doc = parse_file(&fixture("upstream-test.meta")).unwrap();
    assert_eq!(str_at(&doc, "version"), "1.0.0");
    let fields = doc
        .lookup("measurements.[0].fields")
        .and_then(Node::elements)
        .unwrap();
    assert_eq!(fields.len(), 8);
    assert_eq!(
        str_at(&doc, "measurements.[0].fields.[4].type"),
        "histogram"
    );
    assert_eq!(
        doc.lookup("measurements.[0].fields.[0].name").unwrap().line,
        13
    );
}
