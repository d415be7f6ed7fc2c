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

fn write(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(p, text).unwrap();
}

#[test]
fn wildcard_include_inside_a_list_splices_elements_in_sorted_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "parts/b2.cfg", "{ n = 2; },\n");
    write(d, "parts/b10.cfg", "{ n = 10; },\n");
    write(d, "parts/b1.cfg", "{ n = 1; },\n");
    write(d, "parts/.b0.cfg", "{ n = 0; },\n");
    write(d, "parts/notes.txt", "not matched");
    write(
        d,
        "main.cfg",
        "// list built from fragments\nitems: (\n\n@include \"parts/b*.cfg\"\n\n);\n",
    );
    let doc = parse_file(&d.join("main.cfg")).unwrap();
    let items = doc.lookup("items").and_then(|n| n.elements()).unwrap();
    let ns: Vec<i64> = items
        .iter()
        .map(|n| n.get("n").and_then(|v| v.as_int()).unwrap())
        .collect();
    // Byte order, like glob(3) in the C locale; dot files are not matched by '*'.
    assert_eq!(ns, [1, 10, 2]);
    assert_eq!(&*items[1].file, d.join("parts/b10.cfg").as_path());
    assert_eq!(items[1].line, 1);
}

#[test]
fn include_splices_between_list_and_array_elements() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "mid.cfg", "1, 2");
    write(d, "tail.cfg", "\"x\", (),\n");
    let doc = parse_str(
        "l = ( 0,\n@include \"mid.cfg\"\n, 3,\n@include \"tail.cfg\"\n);\na = [ 0,\n  @include \"mid.cfg\"\n];",
        &d.join("m.cfg"),
    )
    .unwrap();
    assert_eq!(
        doc.lookup("l").and_then(|n| n.elements()).map(<[_]>::len),
        Some(6)
    );
    assert_eq!(doc.lookup("l.[2]").and_then(|n| n.as_int()), Some(2));
    assert_eq!(doc.lookup("l.[4]").and_then(|n| n.as_str()), Some("x"));
    assert_eq!(doc.lookup("a.[2]").and_then(|n| n.as_int()), Some(2));

    // A missing separator across the boundary is still an error, pointing into the include.
    let e = parse_str("l = ( 0\n@include \"mid.cfg\"\n);", &d.join("m.cfg")).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:1:1: expected ',' or ')' in list",
            d.join("mid.cfg").display()
        )
    );
    let e = parse_str("l = ( 0,\n@include \"mid.cfg\"\n3 );", &d.join("m.cfg")).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:3:1: expected ',' or ')' in list",
            d.join("m.cfg").display()
        )
    );
    // Array element types are checked across files too.
    let e = parse_str("a = [ \"s\",\n@include \"mid.cfg\"\n];", &d.join("m.cfg")).unwrap_err();
    assert!(
        e.to_string().starts_with(&format!(
            "{}:1:1: array elements must all have one type",
            d.join("mid.cfg").display()
        )),
        "{e}"
    );
}

#[test]
fn wildcard_include_in_a_group_and_no_match() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "conf.d/10-a.conf", "a = 1;");
    write(d, "conf.d/20-b.conf", "b = 2;");
    let doc = parse_str(
        "g = {\n  @include \"conf.d/*.conf\"\n  @include \"empty.d/*.conf\"\n  @include \"conf.d/*.none\"\n};",
        &d.join("main.conf"),
    )
    .unwrap();
    let names: Vec<&str> = doc
        .lookup("g")
        .unwrap()
        .members()
        .unwrap()
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(names, ["a", "b"]);
    // Without a wildcard, a missing file stays an error.
    let e = parse_str("@include \"conf.d/none.conf\"", &d.join("main.conf")).unwrap_err();
    assert!(matches!(e, Error::Include { .. }), "{e}");
    // Wildcards in directories are not expanded.
    let e = parse_str("@include \"*/10-a.conf\"", &d.join("main.conf")).unwrap_err();
    assert!(
        e.to_string()
            .contains("wildcards are only supported in the file name"),
        "{e}"
    );
}

#[test]
fn nested_include_falls_back_to_the_top_level_directory() {
    // libconfig resolves every include against one include_dir; a nested include written
    // relative to the main file's directory is found there when it is not next to its file.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "inc/book.cfg",
        "{\n  title = \"t\";\n  @include \"inc/sub/*.cfg\"\n},\n",
    );
    write(d, "inc/sub/x.cfg", "x = 1;");
    write(d, "main.cfg", "books = (\n@include \"inc/book.cfg\"\n);\n");
    let doc = parse_file(&d.join("main.cfg")).unwrap();
    assert_eq!(doc.lookup("books.[0].x").and_then(|n| n.as_int()), Some(1));
    // The including file's own directory wins when the path exists there.
    write(d, "inc/inc/sub/x.cfg", "x = 2;");
    let doc = parse_file(&d.join("main.cfg")).unwrap();
    assert_eq!(doc.lookup("books.[0].x").and_then(|n| n.as_int()), Some(2));
}

#[test]
fn wildcard_expansion_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for n in 0..=gala_libconfig::MAX_INCLUDE_FILES {
        write(d, &format!("many/{n:04}.cfg"), "");
    }
    let e = parse_str("@include \"many/*.cfg\"", &d.join("m.cfg")).unwrap_err();
    assert!(
        matches!(
            e,
            Error::TooManyIncludes {
                limit: gala_libconfig::MAX_INCLUDE_FILES,
                ..
            }
        ),
        "{e}"
    );
    fs::remove_file(d.join("many/0000.cfg")).unwrap();
    assert!(parse_str("@include \"many/*.cfg\"", &d.join("m.cfg")).is_ok());
    // The bound counts every file of the document, not one directive.
    let e = parse_str(
        "@include \"many/*.cfg\"\n@include \"many/0001.cfg\"",
        &d.join("m.cfg"),
    )
    .unwrap_err();
    assert!(matches!(e, Error::TooManyIncludes { .. }), "{e}");
}
