//! Architecture invariant: the push path's modules import each other without a cycle.
//! `message` and `clock` sit below `ingest`, `events` and `meta_report`, which sit below `export`:
//! ingest → message, events → message, meta_report → message, export → events/meta_report/message.
//! Read from the source (every `crate::<module>` path outside comments, grouped imports too).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The modules whose imports are checked.
const MODULES: [&str; 6] = [
    "clock",
    "message",
    "ingest",
    "events",
    "export",
    "meta_report",
];

/// Imports that must never exist (each would put a lower layer on top of a higher one).
const FORBIDDEN: [(&str, &str); 10] = [
    ("clock", "message"),
    ("message", "ingest"),
    ("message", "events"),
    ("message", "export"),
    ("message", "meta_report"),
    ("ingest", "events"),
    ("ingest", "export"),
    ("events", "export"),
    ("events", "ingest"),
    ("meta_report", "export"),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Files of module `m`: `src/m.rs` and everything under `src/m/`.
fn module_files(src: &Path, m: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let single = src.join(format!("{m}.rs"));
    if single.is_file() {
        files.push(single);
    }
    rust_files(&src.join(m), &mut files);
    files
}

/// Source without `//` comments (doc links are not imports).
fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// First path segments after every `crate::`, including each member of `crate::{a::X, b}`.
fn crate_modules(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 1;
            let mut start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => start = true,
                    c if start && depth == 1 && !c.is_whitespace() => {
                        out.insert(ident_at(&group[j..]).to_string());
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident_at(after).to_string());
        }
        rest = after;
    }
    out
}

type Graph = BTreeMap<&'static str, BTreeSet<&'static str>>;

fn graph(src: &Path) -> Graph {
    let mut g = Graph::new();
    for m in MODULES {
        let files = module_files(src, m);
        assert!(
            !files.is_empty(),
            "module {m} has no source under {}",
            src.display()
        );
        let mut deps = BTreeSet::new();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for dep in crate_modules(&strip_comments(&text)) {
                if let Some(d) = MODULES.iter().find(|x| **x == dep && **x != m) {
                    deps.insert(*d);
                }
            }
        }
        g.insert(m, deps);
    }
    g
}

/// A cycle as a path `a → … → a`, if any.
fn find_cycle(g: &Graph) -> Option<Vec<&'static str>> {
    fn visit(
        n: &'static str,
        g: &Graph,
        path: &mut Vec<&'static str>,
        done: &mut BTreeSet<&'static str>,
    ) -> Option<Vec<&'static str>> {
        if let Some(i) = path.iter().position(|x| *x == n) {
            let mut cycle = path[i..].to_vec();
            cycle.push(n);
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n);
        for d in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n);
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(n, g, &mut Vec::new(), &mut done))
}

#[test]
fn push_path_modules_have_no_import_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = graph(&src);
    if let Some(c) = find_cycle(&g) {
        panic!("import cycle {}; imports: {g:?}", c.join(" → "));
    }
    for (from, to) in FORBIDDEN {
        assert!(
            !g[from].contains(to),
            "{from} must not import {to} (layering: clock, message < ingest, events, meta_report < export); imports: {g:?}"
        );
    }
    // The layers are really used as intended (guards against a vacuous check).
    for (from, to) in [
        ("ingest", "message"),
        ("events", "message"),
        ("export", "message"),
        ("export", "events"),
    ] {
        assert!(g[from].contains(to), "{from} no longer imports {to}: {g:?}");
    }
}

#[test]
fn checker_sees_grouped_imports_and_cycles() {
    let code = strip_comments(
        "use crate::{\n    message::{Item, Stream},\n    export::queue::SinkQueue,\n};\n// use crate::ingest::X;\nlet t = crate::clock::now_ms();",
    );
    let found: Vec<String> = crate_modules(&code).into_iter().collect();
    assert_eq!(found, ["clock", "export", "message"]);
    let mut g = Graph::new();
    g.insert("a", ["b"].into());
    g.insert("b", ["c"].into());
    g.insert("c", ["a"].into());
    assert_eq!(find_cycle(&g), Some(vec!["a", "b", "c", "a"]));
    g.insert("c", BTreeSet::new());
    assert_eq!(find_cycle(&g), None);
}
