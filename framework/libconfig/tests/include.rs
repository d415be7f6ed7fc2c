//! `@include`: relative resolution, provenance of included values, cycles, depth, missing files.

use std::fs;
use std::path::Path;

use gala_libconfig::{parse_file, parse_str, Error, MAX_INCLUDE_DEPTH};

#[test]
fn include_relative_to_including_file() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("conf.d")).unwrap();
    fs::write(
        dir.path().join("main.conf"),
        "a = 1;\n@include \"conf.d/extra.conf\"\nc = 3;\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("conf.d/extra.conf"),
        "# included\nb = { x = \"y\"; };\n@include \"deeper.conf\"\n",
    )
    .unwrap();
    fs::write(dir.path().join("conf.d/deeper.conf"), "d = 4;").unwrap();
    let doc = parse_file(&dir.path().join("main.conf")).unwrap();
    let names: Vec<&str> = doc
        .members()
        .unwrap()
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(names, ["a", "b", "d", "c"]);
    let x = doc.lookup("b.x").unwrap();
    assert_eq!(&*x.file, dir.path().join("conf.d/extra.conf").as_path());
    assert_eq!(x.line, 2);
    assert_eq!(
        doc.get("d").unwrap().file_line(),
        format!("{}:1", dir.path().join("conf.d/deeper.conf").display())
    );
    assert_eq!(doc.get("c").unwrap().line, 3);
}

#[test]
fn include_inside_a_group() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("part.conf"), "port = 1;").unwrap();
    let doc = parse_str(
        "web = {\n  @include \"part.conf\"\n  host = \"h\";\n};",
        &dir.path().join("main.conf"),
    )
    .unwrap();
    assert_eq!(doc.lookup("web.port").and_then(|n| n.as_int()), Some(1));
}

#[test]
fn duplicate_across_include_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("part.conf"), "a = 2;").unwrap();
    let e = parse_str("a = 1;\n@include \"part.conf\"", &dir.path().join("m.conf")).unwrap_err();
    assert!(matches!(e, Error::DuplicateSetting { .. }), "{e}");
}

#[test]
fn include_cycle() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.conf"), "@include \"b.conf\"\n").unwrap();
    fs::write(dir.path().join("b.conf"), "x = 1;\n@include \"a.conf\"\n").unwrap();
    let e = parse_file(&dir.path().join("a.conf")).unwrap_err();
    match &e {
        Error::IncludeCycle { at, .. } => {
            assert_eq!(&*at.file, dir.path().join("b.conf").as_path());
            assert_eq!(at.line, 2);
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("include cycle"), "{e}");

    fs::write(dir.path().join("self.conf"), "@include \"self.conf\"\n").unwrap();
    assert!(matches!(
        parse_file(&dir.path().join("self.conf")),
        Err(Error::IncludeCycle { .. })
    ));
}

#[test]
fn include_depth_limit() {
    let dir = tempfile::tempdir().unwrap();
    // f0 includes f1 ... includes fN; N = MAX is fine, N = MAX + 1 is not.
    let chain = |n: usize| {
        for i in 0..n {
            fs::write(
                dir.path().join(format!("f{i}.conf")),
                format!("v{i} = {i};\n@include \"f{}.conf\"\n", i + 1),
            )
            .unwrap();
        }
        fs::write(
            dir.path().join(format!("f{n}.conf")),
            format!("v{n} = {n};\n"),
        )
        .unwrap();
        parse_file(&dir.path().join("f0.conf"))
    };
    let ok = chain(MAX_INCLUDE_DEPTH).unwrap();
    assert_eq!(ok.members().unwrap().len(), MAX_INCLUDE_DEPTH + 1);
    let e = chain(MAX_INCLUDE_DEPTH + 1).unwrap_err();
    assert!(
        matches!(
            e,
            Error::IncludeDepth {
                limit: MAX_INCLUDE_DEPTH,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn missing_include_and_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let e = parse_str("\n@include \"nope.conf\"", &dir.path().join("m.conf")).unwrap_err();
    let want = format!(
        "{}:2:1: cannot read include file \"{}\": ",
        dir.path().join("m.conf").display(),
        dir.path().join("nope.conf").display()
    );
    assert!(e.to_string().starts_with(&want), "{e}");
    let e = parse_file(&dir.path().join("absent.conf")).unwrap_err();
    assert!(matches!(e, Error::Read { .. }));
    assert!(e.location().is_none());
}

#[test]
fn syntax_error_inside_include_points_into_it() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("bad.conf"), "ok = 1;\noops = ;\n").unwrap();
    let e = parse_str(
        "@include \"bad.conf\"",
        Path::new(&dir.path().join("m.conf")),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:2:8: expected a value for setting \"oops\"",
            dir.path().join("bad.conf").display()
        )
    );
}
