//! Compatibility with the public corpus in `../shared/corpus` (libconfig's own test data and
//! examples, upstream gala-gopher's shipped configs and `.meta` files). The files are read in
//! place, never copied into this repository.

use std::path::{Path, PathBuf};

use gala_libconfig::{parse_file, Node};

fn corpus() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus");
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!("corpus directory {} is missing (CI is set)", dir.display());
    }
    eprintln!("skipping: corpus directory {} not found", dir.display());
    None
}

fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files(&p, ext, out);
        } else if p.extension().is_some_and(|e| e == ext) {
            out.push(p);
        }
    }
}

/// libconfig's own files that are meant to be rejected (see the corpus README).
fn meant_to_fail(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name.starts_with("bad_input_")
        || name == "override_setting.cfg"
        || rel == "examples/c++/invalid.cfg"
}

#[test]
fn libconfig_test_data_and_examples() {
    let Some(root) = corpus() else { return };
    let base = root.join("libconfig");
    let mut all = Vec::new();
    files(&base, "cfg", &mut all);
    assert!(
        all.len() >= 20,
        "only {} files under {}",
        all.len(),
        base.display()
    );
    let mut wrong = Vec::new();
    let (mut valid, mut invalid) = (0, 0);
    for path in &all {
        let rel = path
            .strip_prefix(&base)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        // List fragments, only meaningful when spliced into example4.cfg's list.
        if rel.starts_with("examples/c/cfg_includes/book") {
            continue;
        }
        let res = parse_file(path);
        if meant_to_fail(&rel) {
            invalid += 1;
            if res.is_ok() {
                wrong.push(format!("{rel}: parsed, but is meant to fail"));
            }
        } else {
            valid += 1;
            if let Err(e) = res {
                wrong.push(format!("{rel}: {e}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        valid >= 20 && invalid >= 4,
        "{valid} valid, {invalid} invalid"
    );

    // Spot checks of the constructs these files exercise.
    let doc = parse_file(&base.join("testdata/binhex.cfg")).unwrap();
    assert_eq!(doc.get("bin_int").and_then(Node::as_int), Some(15));
    assert_eq!(doc.lookup("mixed.[2]").and_then(Node::as_int), Some(3));
    let doc = parse_file(&base.join("examples/c/example4.cfg")).unwrap();
    let books = doc.get("books").and_then(Node::elements).unwrap();
    assert_eq!(books.len(), 4);
    assert_eq!(books[3].get("title").and_then(Node::as_str), Some("Ubik"));
    assert_eq!(books[3].get("extra2").and_then(Node::as_int), Some(12345));
}

#[test]
fn upstream_configs_and_every_meta() {
    let Some(root) = corpus() else { return };
    let mut all = Vec::new();
    for version in ["upstream-v2023", "upstream-head"] {
        let dir = root.join(version);
        files(&dir, "conf", &mut all);
        files(&dir, "meta", &mut all);
    }
    assert!(all.len() >= 60, "only {} upstream files", all.len());
    let failed: Vec<String> = all
        .iter()
        .filter_map(|p| parse_file(p).err().map(|e| e.to_string()))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));

    // The v2023 daemon config: line 174's `\|` is kept literally, as libconfig does.
    let doc = parse_file(&root.join("upstream-v2023/gala-gopher.conf")).unwrap();
    let check = doc
        .get("extend_probes")
        .and_then(Node::elements)
        .unwrap()
        .iter()
        .find(|p| p.get("name").and_then(Node::as_str) == Some("ksliprobe"))
        .and_then(|p| p.get("start_check"))
        .unwrap();
    assert_eq!(check.line, 174);
    assert!(check.as_str().unwrap().contains(r"grep 'redis\|keydb'"));
}
