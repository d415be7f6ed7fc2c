//! `probes/shipped.list` is the one list of the probes installed with gala-gopher
//! (install.sh and build.sh's install check read it). These tests keep everything else that
//! names the shipped probes in step with it: the shipped config, the workspace's probe crates,
//! the probe files, and the docs.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// One line of `probes/shipped.list`.
#[derive(Debug)]
struct Shipped {
    name: String,
    dir: String,
    /// `None` for a cargo binary, else the script file in `dir`.
    script: Option<String>,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("probe-sdk is inside the workspace")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    let path = workspace().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn shipped() -> Vec<Shipped> {
    let list: Vec<Shipped> = read("probes/shipped.list")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let [name, dir, source] = words[..] else {
                panic!("probes/shipped.list: expected NAME DIR SOURCE, got {l:?}")
            };
            Shipped {
                name: name.to_string(),
                dir: dir.to_string(),
                script: (source != "cargo").then(|| source.to_string()),
            }
        })
        .collect();
    assert!(!list.is_empty());
    list
}

impl Shipped {
    /// Every shipped probe but the examples (templates to copy, described in
    /// writing-a-probe.md) has its page, `docs/probes/<dir>.md`.
    fn page(&self) -> Option<String> {
        let dir = Path::new(&self.dir).file_name()?.to_string_lossy();
        (dir != "example").then(|| format!("docs/probes/{dir}.md"))
    }
}

fn names() -> BTreeSet<String> {
    let list = shipped();
    let names: BTreeSet<String> = list.iter().map(|p| p.name.clone()).collect();
    assert_eq!(names.len(), list.len(), "a name listed twice");
    names
}

#[test]
fn shipped_config_lists_exactly_the_shipped_probes() {
    // Listed probes run only if switched on; an installed probe missing from the config would
    // run as a drop-in instead (docs/configuration.md, "Which probes run").
    let path = workspace().join("conf/gala-gopher.conf");
    let conf = gala_libconfig::parse_file(&path).expect("conf/gala-gopher.conf parses");
    let entries = conf
        .get("probes")
        .and_then(|p| p.elements())
        .expect("a probes list");
    let in_conf: Vec<String> = entries
        .iter()
        .map(|e| {
            e.get("name")
                .and_then(|n| n.as_str())
                .expect("probe entry with a name")
                .to_string()
        })
        .collect();
    let conf_set: BTreeSet<String> = in_conf.iter().cloned().collect();
    assert_eq!(conf_set.len(), in_conf.len(), "a probe listed twice");
    assert_eq!(
        conf_set,
        names(),
        "conf/gala-gopher.conf `probes` vs probes/shipped.list"
    );
}

#[test]
fn every_shipped_probe_has_its_files() {
    let ws = workspace();
    for p in shipped() {
        let dir = ws.join(&p.dir);
        assert!(
            dir.join(format!("{}.meta", p.name)).is_file(),
            "{}: no {}/{}.meta",
            p.name,
            p.dir,
            p.name
        );
        match &p.script {
            None => {
                let manifest = read(&format!("{}/Cargo.toml", p.dir));
                assert!(
                    manifest.contains(&format!("name = \"{}\"", p.name)),
                    "{}: {}/Cargo.toml builds no binary of that name",
                    p.name,
                    p.dir
                );
            }
            Some(script) => {
                // The daemon finds probe NAME as NAME, NAME.sh or NAME.py.
                assert!(
                    [format!("{}.sh", p.name), format!("{}.py", p.name)].contains(script),
                    "{}: script {script} is not NAME.sh or NAME.py",
                    p.name
                );
                let mode = std::fs::metadata(dir.join(script))
                    .unwrap_or_else(|e| panic!("{}/{script}: {e}", p.dir))
                    .permissions()
                    .mode();
                assert!(mode & 0o111 != 0, "{}/{script} is not executable", p.dir);
            }
        }
    }
}

#[test]
fn every_probe_crate_is_shipped() {
    // The workspace takes every probes/* crate as a member; each one must be a shipped probe.
    let cargo_dirs: BTreeSet<String> = shipped()
        .into_iter()
        .filter(|p| p.script.is_none())
        .map(|p| p.dir)
        .collect();
    let mut crates = BTreeSet::new();
    for entry in std::fs::read_dir(workspace().join("probes")).unwrap() {
        let path = entry.unwrap().path();
        if path.join("Cargo.toml").is_file() {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            crates.insert(format!("probes/{name}"));
        }
    }
    assert_eq!(
        crates, cargo_dirs,
        "probes/*/Cargo.toml vs probes/shipped.list"
    );
}

/// README.md lists every shipped probe on a line marked `<!-- probe:NAME -->` (install.sh drops
/// the marked lines of the probes a tailored build leaves out), and every marker in the packaged
/// docs names a shipped probe.
#[test]
fn docs_name_every_shipped_probe() {
    let readme = read("README.md");
    let names: Vec<String> = shipped().into_iter().map(|p| p.name).collect();
    for p in shipped() {
        let quoted = format!("`{}`", p.name);
        let marker = format!("<!-- probe:{} -->", p.name);
        assert!(
            readme
                .lines()
                .any(|l| l.contains(&quoted) && l.contains(&marker)),
            "README.md has no line naming {quoted} marked {marker}"
        );
        if let Some(page) = p.page() {
            assert!(workspace().join(&page).is_file(), "{}: no {page}", p.name);
        }
    }
    for doc in [
        "README.md",
        "docs/configuration.md",
        "docs/rest-api.md",
        "docs/exporters.md",
        "docs/writing-a-probe.md",
    ] {
        let text = read(doc);
        for (at, _) in text.match_indices("<!-- probe:") {
            let rest = &text[at + "<!-- probe:".len()..];
            let name = rest.split(' ').next().unwrap_or_default();
            assert!(
                names.iter().any(|n| n == name),
                "{doc}: marker for unknown probe {name:?}"
            );
        }
    }
}

/// Each shipped probe's page documents what its `.meta` declares for run-time control: the REST
/// name, every sub-probe and every param (the declaration is the one source; the page follows).
#[test]
fn probe_pages_document_their_declarations() {
    use probe_sdk::decl::Declaration;
    for p in shipped() {
        let Some(page_rel) = p.page() else { continue };
        let meta_rel = format!("{}/{}.meta", p.dir, p.name);
        let root = gala_libconfig::parse_str(&read(&meta_rel), Path::new(&meta_rel))
            .unwrap_or_else(|e| panic!("{meta_rel}: {e}"));
        let decl = Declaration::from_node(&root)
            .unwrap_or_else(|e| panic!("{meta_rel}: {e}"))
            .unwrap_or_else(|| panic!("{meta_rel}: no probe declaration"));
        let page = read(&page_rel);
        let section = page
            .split("## Run-time control")
            .nth(1)
            .unwrap_or_else(|| panic!("{page_rel}: no \"## Run-time control\" section"));
        let section = section.split("\n## ").next().unwrap_or(section);
        let mut words: Vec<String> = decl.rest_name.iter().cloned().collect();
        words.extend(decl.sub_probes.iter().map(|s| s.name.clone()));
        words.extend(decl.params.iter().map(|p| p.name.clone()));
        for w in words {
            assert!(
                section.contains(&format!("`{w}`")),
                "{page_rel}: the run-time control section does not name `{w}` (declared in {meta_rel})"
            );
        }
    }
}
