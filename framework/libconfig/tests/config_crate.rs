//! The `config` crate integration: libconfig as a source/format, and error keys mapped to lines.

use std::path::Path;

use gala_libconfig::{error_key, locate_error, parse_str, LibconfigFormat, LibconfigSource};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Web {
    port: u16,
    bind: String,
}

#[derive(Debug, Deserialize)]
struct Probe {
    name: String,
    #[allow(dead_code)]
    param: String,
}

#[derive(Debug, Deserialize)]
struct Doc {
    web: Web,
    probes: Vec<Probe>,
}

const SRC: &str = "web = {\n  port = 8080;\n  bind = \"0.0.0.0\";\n};\nprobes = (\n  { name = \"a\"; param = \"\"; },\n  { name = \"b\"; param = \"-t 5\"; }\n);\n";

#[test]
fn source_feeds_config_builder() {
    let root = parse_str(SRC, Path::new("gopher.conf")).unwrap();
    let cfg = config::Config::builder()
        .add_source(LibconfigSource::new(root))
        .build()
        .unwrap();
    assert_eq!(cfg.get_int("web.port").unwrap(), 8080);
    assert_eq!(cfg.get_string("probes[1].name").unwrap(), "b");
    let doc: Doc = cfg.try_deserialize().unwrap();
    assert_eq!((doc.web.port, doc.web.bind.as_str()), (8080, "0.0.0.0"));
    assert_eq!(doc.probes.len(), 2);
    assert_eq!(doc.probes[0].name, "a");
}

#[test]
fn format_works_with_config_file() {
    let cfg = config::Config::builder()
        .add_source(config::File::from_str(SRC, LibconfigFormat))
        .build()
        .unwrap();
    assert_eq!(cfg.get_string("web.bind").unwrap(), "0.0.0.0");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gopher.conf");
    std::fs::write(&path, SRC).unwrap();
    let cfg = config::Config::builder()
        .add_source(config::File::new(path.to_str().unwrap(), LibconfigFormat))
        .build()
        .unwrap();
    assert_eq!(cfg.get_int("web.port").unwrap(), 8080);

    let bad = config::Config::builder()
        .add_source(config::File::from_str("a = ;", LibconfigFormat))
        .build()
        .unwrap_err();
    assert!(
        bad.to_string()
            .contains("expected a value for setting \"a\""),
        "{bad}"
    );
}

#[test]
fn error_keys_map_back_to_lines() {
    let src = SRC.replace("port = 8080", "port = 70000");
    let root = parse_str(&src, Path::new("gopher.conf")).unwrap();
    let err = config::Config::builder()
        .add_source(LibconfigSource::new(root.clone()))
        .build()
        .unwrap()
        .try_deserialize::<Doc>()
        .unwrap_err();
    assert_eq!(error_key(&err).as_deref(), Some("web.port"));
    let at = locate_error(&root, &err).unwrap();
    assert_eq!((at.line, &*at.file), (2, Path::new("gopher.conf")));

    // Type errors raised by `config` itself carry the value's origin, FILE:LINE.
    let src = SRC.replace("port = 8080", "port = \"http\"");
    let root = parse_str(&src, Path::new("gopher.conf")).unwrap();
    let err = config::Config::builder()
        .add_source(LibconfigSource::new(root))
        .build()
        .unwrap()
        .try_deserialize::<Doc>()
        .unwrap_err();
    assert!(err.to_string().contains("in gopher.conf:2"), "{err}");

    let src = SRC.replace("{ name = \"b\"; ", "{ ");
    let root = parse_str(&src, Path::new("gopher.conf")).unwrap();
    let err = config::Config::builder()
        .add_source(LibconfigSource::new(root.clone()))
        .build()
        .unwrap()
        .try_deserialize::<Doc>()
        .unwrap_err();
    assert_eq!(error_key(&err).as_deref(), Some("probes[1].name"));
    assert_eq!(locate_error(&root, &err).unwrap().line, 7);
}
