//! The constructs upstream's shipped files use, in the project's own small documents (the real
//! files are checked in place by `tests/corpus.rs`).

use std::path::Path;

use gala_libconfig::{parse_str, Node, Value};

fn parse(src: &str) -> Node {
    parse_str(src, Path::new("shape.conf")).unwrap_or_else(|e| panic!("{e}"))
}

fn str_at<'a>(doc: &'a Node, path: &str) -> &'a str {
    doc.lookup(path)
        .and_then(Node::as_str)
        .unwrap_or_else(|| panic!("{path}"))
}

/// A daemon config in the v2023 layout: sections with trailing `;`, a probe list whose
/// elements omit some terminators, shell commands with quotes and a regex `\|`.
const DAEMON: &str = r#"
global =
{
    log_file_name = "gopher.log";
    log_level = "info";             # debug | info | warn | error
};

web_server =
{
    port = 8888;
};

probes =
(
    {
        name = "example";
        param = "-t 5 -l warn";
        switch = "off";
    }
);

extend_probes =
(
    {
        name = "cache";
        command = "/opt/probes/cacheprobe"
        param = "";
        start_check = "ps -ef | grep 'cached\|memstore' | grep -v grep | wc -l";
        check_type = "count";
        switch = "auto";
    },
    {
        name = "container";
        start_check = "echo \"$(systemctl is-active svc)\" | grep -c active";
        switch = "on";
    }
);
"#;

#[test]
fn daemon_config_shape() {
    let doc = parse(DAEMON);
    let sections: Vec<&str> = doc
        .members()
        .unwrap()
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(
        sections,
        ["global", "web_server", "probes", "extend_probes"]
    );
    assert_eq!(
        doc.lookup("web_server.port").and_then(Node::as_int),
        Some(8888)
    );
    assert_eq!(str_at(&doc, "probes.[0].param"), "-t 5 -l warn");
    assert_eq!(
        str_at(&doc, "extend_probes.[0].start_check"),
        r"ps -ef | grep 'cached\|memstore' | grep -v grep | wc -l"
    );
    assert_eq!(
        doc.lookup("extend_probes.[0].start_check").unwrap().line,
        28
    );
    assert!(str_at(&doc, "extend_probes.[1].start_check").starts_with("echo \"$(systemctl"));
}

#[test]
fn app_whitelist_shape() {
    let doc = parse(
        "application =\n(\n    {\n        comm = \"java[0-9]*\",\n        cmdline = \"\";\n    },\n    {\n        comm = \"python[2-3]{1}\",\n        cmdline = \"server\";\n    }\n);\n",
    );
    let apps = doc.lookup("application").unwrap();
    assert!(matches!(apps.value, Value::List(ref v) if v.len() == 2));
    assert_eq!(str_at(&doc, "application.[1].comm"), "python[2-3]{1}");
}

#[test]
fn meta_with_colons_and_trailing_commas() {
    let doc = parse(
        r#"version: "1.0.0"

measurements:
(
    {
        table_name: "demo",
        entity_name: "demo",
        fields:
        (
            {
                description: "the key",
                type: "key",
                name: "id",
            },
            {
                description: "a histogram",
                type: "histogram",
                name: "lat",
            },
        )
    }
)
"#,
    );
    assert_eq!(str_at(&doc, "version"), "1.0.0");
    let fields = doc
        .lookup("measurements.[0].fields")
        .and_then(Node::elements)
        .unwrap();
    assert_eq!(fields.len(), 2);
    assert_eq!(
        str_at(&doc, "measurements.[0].fields.[1].type"),
        "histogram"
    );
    assert_eq!(
        doc.lookup("measurements.[0].fields.[0].name").unwrap().line,
        13
    );
}
