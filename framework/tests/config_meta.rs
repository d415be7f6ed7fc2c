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

/// `n` fields `f0..` of type gauge, one per line, in a table `t` (entity `E`).
fn wide_meta(n: usize) -> String {
    let mut s = String::from("version = \"1.0.0\";\nmeasurements = ( { table_name = \"t\"; entity_name = \"E\"; fields = (\n");
    for i in 0..n {
        let sep = if i + 1 == n { "" } else { "," };
        s.push_str(&format!("{{ name = \"f{i}\"; type = \"gauge\"; }}{sep}\n"));
    }
    s.push_str("); } );\n");
    s
}

#[test]
fn unknown_field_type_is_an_error_naming_file_line_and_value() {
    let dir = tempfile::tempdir().unwrap();
    for (bad, hint) in [
        ("guage", Some("gauge")),
        ("Gauge", Some("gauge")),
        ("countr", Some("counter")),
        ("lable", Some("label")),
        ("metric", None),
        ("", None),
    ] {
        let p = write(
            dir.path(),
            "typo.meta",
            &format!(
                "measurements = ( {{ table_name = \"t\"; entity_name = \"E\"; fields = (\n {{ name = \"k\"; type = \"key\"; }},\n {{ name = \"cpu\";\n   type = \"{bad}\"; }} ); }} );"
            ),
        );
        let e = meta::load_file(&p).unwrap_err();
        assert!(matches!(e, MetaError::Invalid { .. }), "{bad}: {e:?}");
        let msg = e.to_string();
        let want = format!(
            "{}:4: table \"t\" field #2 \"cpu\": unknown type \"{bad}\"",
            p.display()
        );
        assert!(msg.starts_with(&want), "got {msg:?}, want prefix {want:?}");
        if let Some(h) = hint {
            assert!(msg.contains(&format!("did you mean \"{h}\"")), "{msg}");
        }
        assert!(
            msg.contains("key, label, gauge, counter, histogram, summary"),
            "{msg}"
        );
    }
}

#[test]
fn every_accepted_type_loads_with_its_kind() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("key", FieldKind::Key),
        ("label", FieldKind::Label),
        ("gauge", FieldKind::Gauge),
        ("counter", FieldKind::Counter),
        ("histogram", FieldKind::Histogram),
        ("summary", FieldKind::Summary),
        // Kept for upstream's own metas: stored, never exported.
        ("string", FieldKind::Other),
        ("number", FieldKind::Other),
        ("byte sequence", FieldKind::Other),
        ("Unknown", FieldKind::Other),
    ];
    let fields: Vec<(String, &str)> = cases
        .iter()
        .enumerate()
        .map(|(i, (t, _))| (format!("f{i}"), *t))
        .collect();
    let fields: Vec<(&str, &str)> = fields.iter().map(|(n, t)| (n.as_str(), *t)).collect();
    let p = write(dir.path(), "all.meta", &doc(&[table("t", "E", &fields)]));
    let t = &meta::load_file(&p).unwrap()[0];
    let kinds: Vec<FieldKind> = t.fields.iter().map(|f| f.kind).collect();
    let want: Vec<FieldKind> = cases.iter().map(|(_, k)| *k).collect();
    assert_eq!(kinds, want);
}

/// Every `.meta` upstream shipped (both versions) still loads: the accepted type list keeps every
/// type they use. The corpus lives beside the repository (`../shared/corpus`); without it there is
/// nothing to check.
#[test]
fn upstream_metas_all_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
    let mut files = Vec::new();
    for v in ["upstream-v2023", "upstream-head"] {
        if let Ok(found) = meta::meta_files_in(&root.join(v).join("meta")) {
            files.extend(found);
        }
    }
    if files.is_empty() {
        eprintln!("no upstream corpus at {}: skipped", root.display());
        return;
    }
    assert!(files.len() >= 61, "{} files", files.len());
    for f in &files {
        if let Err(e) = meta::load_file(f) {
            panic!("{}: {e}", f.display());
        }
    }
}

#[test]
fn limits_are_checked_before_the_expensive_work() {
    let dir = tempfile::tempdir().unwrap();
    let limits = meta::MetaLimits::default();

    // Larger than the file limit: refused from its size alone, naming the limit.
    let big = write(dir.path(), "big.meta", &wide_meta(100_000));
    let size = fs::metadata(&big).unwrap().len();
    assert!(size > limits.max_file_bytes);
    let e = meta::load_file(&big).unwrap_err();
    assert!(matches!(e, MetaError::TooLarge { .. }), "{e:?}");
    assert_eq!(e.reason(), "too_large");
    assert!(e.to_string().contains("1 MiB"), "{e}");

    // Within the file limit but more fields than allowed: names the count and the config key.
    let wide = write(dir.path(), "wide.meta", &wide_meta(5_000));
    let e = meta::load_file_with(&wide, &meta::MetaLimits::with_max_fields(64)).unwrap_err();
    assert_eq!(e.reason(), "too_many_fields");
    let msg = e.to_string();
    assert!(msg.starts_with(&format!("{}:2:", wide.display())), "{msg}");
    assert!(
        msg.contains("5000 fields") && msg.contains("imdb.max_metrics_num = 64"),
        "{msg}"
    );
    assert_eq!(
        meta::load_file_with(&wide, &meta::MetaLimits::with_max_fields(5_000)).unwrap()[0]
            .fields
            .len(),
        5_000
    );

    // Too many tables in one file.
    let tables: Vec<String> = (0..=limits.max_tables)
        .map(|i| table(&format!("t{i}"), "E", &[("k", "key")]))
        .collect();
    let many = write(dir.path(), "many.meta", &doc(&tables));
    let e = meta::load_file(&many).unwrap_err();
    assert_eq!(e.reason(), "too_many_tables");
    assert!(
        e.to_string()
            .contains(&format!("{} tables", limits.max_tables + 1)),
        "{e}"
    );

    // Over-long names and descriptions.
    let long = "n".repeat(limits.max_name_bytes + 1);
    for text in [
        doc(&[table(&long, "E", &[("k", "key")])]),
        doc(&[table("t", &long, &[("k", "key")])]),
        doc(&[table("t", "E", &[(long.as_str(), "key")])]),
        format!("version = \"{long}\";\nmeasurements = ();\n"),
        format!(
            "measurements = ( {{ table_name = \"t\"; entity_name = \"E\"; fields = ( {{ name = \"k\"; type = \"key\"; description = \"{}\"; }} ); }} );",
            "d".repeat(limits.max_description_bytes + 1)
        ),
    ] {
        let p = write(dir.path(), "long.meta", &text);
        let e = meta::load_file(&p).unwrap_err();
        assert_eq!(e.reason(), "name_too_long", "{e}");
        assert!(e.to_string().contains("longer than"), "{e}");
    }
}

#[test]
fn non_regular_files_are_refused_without_reading() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.meta");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    // A FIFO without a writer would block a plain open/read forever.
    let e = meta::load_file(&fifo).unwrap_err();
    assert_eq!(e.reason(), "not_regular_file", "{e:?}");
    let e = meta::load_file(Path::new("/dev/zero")).unwrap_err();
    assert_eq!(e.reason(), "not_regular_file", "{e:?}");
    let e = meta::load_file(dir.path()).unwrap_err();
    assert_eq!(e.reason(), "not_regular_file", "{e:?}");
}

#[test]
fn duplicate_checks_are_linear_and_still_exact() {
    // 20k fields and a duplicate at the very end: found, with its line.
    let dir = tempfile::tempdir().unwrap();
    let mut text = wide_meta(20_000);
    text = text.replace("{ name = \"f19999\";", "{ name = \"f7\";");
    let p = write(dir.path(), "dup.meta", &text);
    let e = meta::load_file_with(&p, &meta::MetaLimits::with_max_fields(20_000)).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:20002: table \"t\": duplicate field name \"f7\"",
            p.display()
        )
    );
}

#[test]
fn meta_cache_reads_each_file_version_once() {
    use std::sync::{Arc, RwLock};
    let dir = tempfile::tempdir().unwrap();
    let counters = Arc::new(meta::MetaCounters::default());
    let cache = meta::MetaCache::new(meta::MetaLimits::default(), Arc::clone(&counters));
    let registry = RwLock::new(SchemaRegistry::new());
    let p = write(
        dir.path(),
        "p.meta",
        "measurements = ( { table_name = \"t\"; } );",
    );
    let paths = [p.clone()];
    for _ in 0..3 {
        assert!(cache.prepare(&registry, &paths).is_err());
    }
    assert_eq!((counters.loaded(), counters.cached()), (1, 2));
    assert_eq!(counters.refused("invalid"), 1);

    // A new version is read at once; the good tables are installed and stay the same objects.
    fs::write(&p, doc(&[table("t", "E", &[("k", "key")])])).unwrap();
    cache.prepare(&registry, &paths).unwrap();
    let first = Arc::clone(registry.read().unwrap().get("t").unwrap());
    cache.prepare(&registry, &paths).unwrap();
    assert!(Arc::ptr_eq(
        &first,
        registry.read().unwrap().get("t").unwrap()
    ));
    assert_eq!((counters.loaded(), counters.cached()), (2, 3));

    // A table owned by another file: refused, counted once however often it is retried.
    let q = write(
        dir.path(),
        "q.meta",
        &doc(&[table("t", "F", &[("k", "key")])]),
    );
    for _ in 0..3 {
        let e = cache
            .prepare(&registry, std::slice::from_ref(&q))
            .unwrap_err();
        assert!(e.contains("already defined by"), "{e}");
    }
    assert_eq!(counters.refused("duplicate_table"), 1);

    // A missing file: refused and counted once, until it appears.
    let gone = dir.path().join("gone.meta");
    for _ in 0..3 {
        assert!(cache
            .prepare(&registry, std::slice::from_ref(&gone))
            .is_err());
    }
    assert_eq!(counters.refused("read_error"), 1);
    cache.forget(&p);
    assert_eq!(registry.read().unwrap().get("t").unwrap().entity_name, "E");
}

fn per_period_doc(extra: &str) -> String {
    format!(
        "version = \"1.0.0\";\nmeasurements = ({{\n  table_name: \"net\";\n  entity_name: \"link\";\n  fields: (\n    {{ description: \"id\", type: \"key\", name: \"id\" }},\n    {{ description: \"bytes\", type: \"counter\", name: \"rx_bytes\", period: \"delta\"{extra} }},\n    {{ description: \"plain\", type: \"counter\", name: \"opens_total\" }}\n  );\n}});\n"
    )
}

#[test]
fn per_period_counters_follow_the_counter_mode() {
    let dir = tempfile::tempdir().unwrap();
    let plain = write(dir.path(), "a.meta", &per_period_doc(""));
    let scaled = write(
        dir.path(),
        "b.meta",
        &per_period_doc(", total_name: \"rx_seconds_total\", total_scale: \"1e-9\""),
    );
    let upstream = meta::MetaLimits::default();
    let prometheus = meta::MetaLimits {
        counter_mode: meta::CounterMode::Prometheus,
        ..meta::MetaLimits::default()
    };
    // Upstream mode: a gauge of the change, under its own name; other counters untouched.
    let t = &meta::load_file_with(&plain, &upstream).unwrap()[0];
    assert!(t.derives);
    let f = &t.fields[1];
    assert_eq!((f.name.as_str(), f.kind), ("rx_bytes", FieldKind::Gauge));
    assert_eq!(f.derive, meta::Derive::Delta);
    assert_eq!((f.declared, f.per_period), (FieldKind::Counter, true));
    assert_eq!(t.fields[2].kind, FieldKind::Counter);
    // Prometheus mode: the running total as `<name>_total`, or the declared name and scale.
    let t = &meta::load_file_with(&plain, &prometheus).unwrap()[0];
    assert!(!t.derives);
    let f = &t.fields[1];
    assert_eq!(
        (f.name.as_str(), f.kind),
        ("rx_bytes_total", FieldKind::Counter)
    );
    assert_eq!(f.derive, meta::Derive::None);
    let t = &meta::load_file_with(&scaled, &prometheus).unwrap()[0];
    let f = &t.fields[1];
    assert_eq!(
        (f.name.as_str(), f.kind),
        ("rx_seconds_total", FieldKind::Counter)
    );
    assert_eq!(f.derive, meta::Derive::Scale(1e-9));
    let t = &meta::load_file_with(&scaled, &upstream).unwrap()[0];
    assert_eq!(t.fields[1].name, "rx_bytes");
}

#[test]
fn bad_per_period_declarations_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, want) in [
        (
            ", total_scale: \"-1\"",
            "\"total_scale\" must be a positive number",
        ),
        (", total_name: \"1bad\"", "must match"),
    ] {
        let p = write(dir.path(), "x.meta", &per_period_doc(extra));
        let e = meta::load_file(&p).unwrap_err().to_string();
        assert!(e.contains("x.meta:7") && e.contains(want), "{e}");
    }
    let p = write(
        dir.path(),
        "y.meta",
        &per_period_doc("").replace("period: \"delta\"", "period: \"sum\""),
    );
    let e = meta::load_file(&p).unwrap_err().to_string();
    assert!(
        e.contains("y.meta:7") && e.contains("unknown period \"sum\""),
        "{e}"
    );
    let p = write(
        dir.path(),
        "z.meta",
        &per_period_doc("").replace(
            "type: \"counter\", name: \"rx_bytes\"",
            "type: \"gauge\", name: \"rx_bytes\"",
        ),
    );
    let e = meta::load_file(&p).unwrap_err().to_string();
    assert!(e.contains("applies to counters only"), "{e}");
    // In Prometheus mode the `_total` name must not collide with another field.
    let p = write(
        dir.path(),
        "w.meta",
        &per_period_doc("").replace("opens_total", "rx_bytes_total"),
    );
    let prometheus = meta::MetaLimits {
        counter_mode: meta::CounterMode::Prometheus,
        ..meta::MetaLimits::default()
    };
    let e = meta::load_file_with(&p, &prometheus)
        .unwrap_err()
        .to_string();
    assert!(e.contains("duplicate field name \"rx_bytes_total\""), "{e}");
}

#[test]
fn a_metric_with_two_meanings_in_one_entity_is_refused_naming_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let infos = write(
        dir.path(),
        "system_infos.meta",
        &doc(&[table(
            "system_proc",
            "proc",
            &[("tgid", "key"), ("read_bytes", "gauge")],
        )]),
    );
    let task = write(
        dir.path(),
        "taskprobe.meta",
        &doc(&[table(
            "proc_io",
            "proc",
            &[("tgid", "key"), ("read_bytes", "counter")],
        )]),
    );
    let mut reg = SchemaRegistry::new();
    reg.add_file(&infos).unwrap();
    let e = reg.add_file(&task).unwrap_err();
    assert!(matches!(e, MetaError::MetricClash(_)));
    assert_eq!(e.reason(), "metric_clash");
    let msg = e.to_string();
    assert!(
        msg.contains("taskprobe.meta:") && msg.contains("system_infos.meta:"),
        "{msg}"
    );
    assert!(msg.contains("gala_gopher_proc_read_bytes"), "{msg}");
    assert!(
        reg.get("proc_io").is_none(),
        "nothing of the refused file is installed"
    );
    // The whole directory load fails the same way (daemon start, --check-config).
    let e = meta::load_dir(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("taskprobe.meta") && e.contains("system_infos.meta"),
        "{e}"
    );
    // Same type and meaning in another table of the entity: one family, allowed; another
    // entity may use the name freely.
    fs::write(
        &task,
        doc(&[
            table(
                "proc_io",
                "proc",
                &[("tgid", "key"), ("read_bytes", "gauge")],
            ),
            table(
                "disk_io",
                "disk",
                &[("dev", "key"), ("read_bytes", "counter")],
            ),
        ]),
    )
    .unwrap();
    reg.add_file(&task).unwrap();
    // A per-period counter and a plain gauge of the same name differ in meaning.
    let other = write(
        dir.path(),
        "other.meta",
        &per_period_doc("")
            .replace("\"link\"", "\"proc\"")
            .replace("\"net\"", "\"proc_net\"")
            .replace("rx_bytes", "read_bytes"),
    );
    let e = reg.add_file(&other).unwrap_err().to_string();
    assert!(e.contains("per period"), "{e}");
}

fn kind_doc(kind: &str) -> String {
    format!(
        "version = \"1.0.0\";\nmeasurements = ({{\n  table_name: \"req\";\n  entity_name: \"req\";{kind}\n  fields: (\n    {{ description: \"id\", type: \"key\", name: \"id\" }},\n    {{ description: \"took\", type: \"gauge\", name: \"took_ns\" }}\n  );\n}});\n"
    )
}

#[test]
fn a_table_kind_is_metrics_by_default_or_trace_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, trace) in [
        ("", false),
        ("\n  kind: \"metrics\";", false),
        ("\n  kind: \"trace\";", true),
    ] {
        let p = write(dir.path(), "k.meta", &kind_doc(kind));
        let t = meta::load_file(&p).unwrap();
        assert_eq!(t[0].trace, trace, "{kind}");
    }
    let p = write(dir.path(), "bad.meta", &kind_doc("\n  kind: \"spans\";"));
    let e = meta::load_file(&p).unwrap_err().to_string();
    assert!(
        e.contains("bad.meta:5") && e.contains("unknown kind \"spans\""),
        "{e}"
    );
    let p = write(dir.path(), "num.meta", &kind_doc("\n  kind: 1;"));
    let e = meta::load_file(&p).unwrap_err().to_string();
    assert!(
        e.contains("num.meta:5") && e.contains("must be a string"),
        "{e}"
    );
}
