//! Every shipped probe's `.meta` (probes/shipped.list) loads with the daemon's loader, and all of
//! them together fit in one registry, as on a host with every probe installed: no table name used
//! by two probes, no metric name with two meanings (`metric_clash`).

use std::path::{Path, PathBuf};

use gala_gopher::meta::SchemaRegistry;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("framework is inside the workspace")
        .to_path_buf()
}

/// (name, path of NAME.meta) of every line of probes/shipped.list.
fn shipped_metas() -> Vec<(String, PathBuf)> {
    let list = std::fs::read_to_string(workspace().join("probes/shipped.list"))
        .expect("probes/shipped.list");
    let metas: Vec<(String, PathBuf)> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            assert!(words.len() == 3, "shipped.list: bad line {l:?}");
            let meta = workspace()
                .join(words[1])
                .join(format!("{}.meta", words[0]));
            (words[0].to_string(), meta)
        })
        .collect();
    assert!(
        metas.len() >= 10,
        "shipped.list lists {} probes",
        metas.len()
    );
    metas
}

#[test]
fn all_shipped_metas_load_together() {
    let mut registry = SchemaRegistry::new();
    let mut tables = 0;
    for (name, meta) in shipped_metas() {
        let added = registry
            .add_file(&meta)
            .unwrap_or_else(|e| panic!("{name}: {}: {e}", meta.display()));
        assert!(!added.is_empty(), "{name}: {} has no table", meta.display());
        tables += added.len();
    }
    // The middleware probes alone bring more than 30 tables; a list that silently lost some
    // files would show here.
    assert!(tables > 60, "only {tables} tables in the shipped metas");
}
