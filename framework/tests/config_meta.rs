//! `.meta` loading and the schema registry.

use std::fs;
use std::path::{Path, PathBuf};

use gala_gopher::meta::{self, FieldKind, MetaError, SchemaRegistry};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(rel)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p
}

fn table(name: &str, entity: &str, fields: &[(&str, &str)]) -> String {
    let f: Vec<String> = fields
        .iter()
        .map(|(n, t)| format!("    {{ description: \"{n} d\", type: \"{t}\", name: \"{n}\" }}"))
        .collect();
    format!(
        "{{\n  table_name: \"{name}\";\n  entity_name: \"{entity}\";\n  fields: (\n{}\n  );\n}}",
        f.join(",\n")
    )
}

fn doc(tables: &[String]) -> String {
    format!(
        "version = \"2.0.0\";\nmeasurements = (\n{}\n);\n",
        tables.join(",\n")
    )
}

#[test]
fn upstream_example_meta() {
    let path = fixture("meta/example.meta");
    let tables = meta::load_file(&path).unwrap();
    assert_eq!(tables.len(), 1);
    let t = &tables[0];
    assert_eq!(
        (t.table_name.as_str(), t.entity_name.as_str()),
        ("example", "example")
    );
    assert_eq!(t.version, "1.0.0");
    let kinds: Vec<FieldKind> = t.fields.iter().map(|f| f.kind).collect();
    assert_eq!(
        kinds,
        [FieldKind::Key, FieldKind::Gauge, FieldKind::Counter]
    );
    assert_eq!(t.fields[1].description, "example cpu usage");
    assert_eq!(t.origin, format!("{}:4", path.display()));
    assert_eq!(t.key_indices().collect::<Vec<_>>(), [0]);
}

#[test]
fn version_defaults_and_other_types_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "a.meta",
        "measurements = ( { table_name = \"t\"; entity_name = \"E\"; fields = ( { type = \"string\"; name = \"s\"; } ); } );",
    );
    let t = &meta::load_file(&p).unwrap()[0];
    assert_eq!(t.version, meta::DEFAULT_META_VERSION);
    assert_eq!(t.fields[0].kind, FieldKind::Other);
    assert_eq!(t.fields[0].description, "");
    assert_eq!(t.key_indices().count(), 0);
}

#[test]
fn validation_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "measurements = (\n { entity_name = \"E\"; fields = (); }\n);",
            ":2: measurement: missing \"table_name\"",
        ),
        (
            "measurements = (\n { table_name = \"t\"; fields = (); }\n);",
            ":2: table \"t\": missing \"entity_name\"",
        ),
        (
            "measurements = (\n { table_name = \"t\"; entity_name = \"E\"; }\n);",
            ":2: table \"t\": missing \"fields\"",
        ),
        (
            "measurements = ( { table_name = \"t\"; entity_name = \"E\"; fields = (\n { type = \"key\"; } ); } );",
            ":2: table \"t\" field #1: missing \"name\"",
        ),
        (
            "measurements = ( { table_name = \"t\"; entity_name = \"E\"; fields = (\n { name = \"k\"; } ); } );",
            ":2: table \"t\" field #1 \"k\": missing \"type\"",
        ),
        (
            "measurements = ( { table_name = \"t-1\"; entity_name = \"E\"; fields = (); } );",
            ":1: measurement: \"table_name\" value \"t-1\" must match [a-zA-Z_][a-zA-Z0-9_]*",
        ),
        (
            "measurements = ( { table_name = \"t\"; entity_name = \"E\"; fields = (\n { name = \"9x\"; type = \"key\"; } ); } );",
            ":2: table \"t\" field #1: \"name\" value \"9x\" must match [a-zA-Z_][a-zA-Z0-9_]*",
        ),
        (
            "measurements = ( { table_name = \"t\"; entity_name = \"E\"; fields = (\n { name = \"a\"; type = \"key\"; },\n { name = \"a\"; type = \"gauge\"; } ); } );",
            ":3: table \"t\": duplicate field name \"a\"",
        ),
        (
            "measurements = (\n { table_name = \"t\"; entity_name = \"E\"; fields = (); },\n { table_name = \"t\"; entity_name = \"F\"; fields = (); }\n);",
            ":3: duplicate table name \"t\" (first declared at ",
        ),
        ("version = \"1\";\n", ":1: missing \"measurements\""),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let p = write(dir.path(), &format!("c{i}.meta"), text);
        let e = meta::load_file(&p).unwrap_err();
        assert!(matches!(e, MetaError::Invalid { .. }), "case {i}: {e:?}");
        let msg = e.to_string();
        let want = format!("{}{want}", p.display());
        assert!(
            msg.starts_with(&want),
            "case {i}: got {msg:?}, want prefix {want:?}"
        );
    }
}

#[test]
fn syntax_errors_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "bad.meta",
        "measurements = (\n { table_name = \"t\" \"x\n",
    );
    let e = meta::load_file(&p).unwrap_err();
    assert!(matches!(e, MetaError::Syntax(_)), "{e:?}");
    assert!(
        e.to_string().starts_with(&format!("{}:2:", p.display())),
        "{e}"
    );
}

#[test]
fn registry_ownership_replace_and_remove() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "a.meta",
        &doc(&[
            table("t1", "E", &[("k", "key"), ("g", "gauge")]),
            table("t2", "E", &[("k", "key")]),
        ]),
    );
    let b = write(
        dir.path(),
        "b.meta",
        &doc(&[table("t1", "F", &[("k", "key")])]),
    );
    let mut reg = SchemaRegistry::new();
    let added = reg.add_file(&a).unwrap();
    assert_eq!(added.len(), 2);
    assert_eq!(reg.len(), 2);
    assert_eq!(reg.get("t1").unwrap().version, "2.0.0");

    // A table owned by another file: error naming both, registry untouched.
    let e = reg.add_file(&b).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(&b.display().to_string()), "{msg}");
    assert!(
        msg.contains(&format!("already defined by {}", a.display())),
        "{msg}"
    );
    assert_eq!(reg.get("t1").unwrap().entity_name, "E");
    assert_eq!(reg.len(), 2);

    // Re-adding the same file replaces its tables; dropped tables disappear.
    fs::write(&a, doc(&[table("t1", "E2", &[("k", "key")])])).unwrap();
    reg.add_file(&a).unwrap();
    assert_eq!(reg.get("t1").unwrap().entity_name, "E2");
    assert!(reg.get("t2").is_none());
    assert_eq!(reg.len(), 1);

    // A broken re-add is all-or-nothing.
    fs::write(&a, "measurements = ( { table_name = \"t3\"; } );").unwrap();
    assert!(reg.add_file(&a).is_err());
    assert_eq!(reg.get("t1").unwrap().entity_name, "E2");

    let mut removed = reg.remove_file(&a);
    removed.sort();
    assert_eq!(removed, ["t1"]);
    assert!(reg.is_empty());
    reg.add_file(&b).unwrap();
    assert_eq!(reg.get("t1").unwrap().entity_name, "F");
    assert_eq!(reg.tables().count(), 1);
}

#[test]
fn load_dir_picks_visible_meta_files_only() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.meta",
        &doc(&[table("ta", "E", &[("k", "key")])]),
    );
    write(
        dir.path(),
        ".hidden.meta",
        &doc(&[table("th", "E", &[("k", "key")])]),
    );
    write(dir.path(), "notes.txt", "not libconfig {");
    write(dir.path(), "b.meta.bak", "not libconfig {");
    fs::create_dir(dir.path().join("sub.meta")).unwrap();
    let reg = meta::load_dir(dir.path()).unwrap();
    let mut names: Vec<&str> = reg.tables().map(|t| t.table_name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["ta"]);

    let missing = meta::load_dir(&dir.path().join("nope")).unwrap();
    assert_eq!(missing.len(), 0);

    write(
        dir.path(),
        "c.meta",
        &doc(&[table("ta", "E", &[("k", "key")])]),
    );
    let e = meta::load_dir(dir.path()).unwrap_err();
    assert!(matches!(e, MetaError::DuplicateTable { .. }), "{e:?}");
}
