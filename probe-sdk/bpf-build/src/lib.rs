//! Shared `build.rs` helper for eBPF probes: compiles `src/bpf/<name>.bpf.c` into a libbpf-rs
//! skeleton `$OUT_DIR/<name>.skel.rs` with the workspace's committed `vmlinux.h`.
//!
//! Usage in a probe's `build.rs`:
//! ```no_run
//! // build.rs
//! bpf_build::build_skeletons(&["tcp"]);
//! ```
//! and in the probe's `src/skel.rs`: `include!(concat!(env!("OUT_DIR"), "/tcp.skel.rs"));`.
//!
//! clang's include path is the source directory (for `intf.h`), `vmlinux/<target arch>` and
//! `probe-sdk/bpf/include` (for `gg_common.h`); the build reruns when any `.h` in them changes.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use libbpf_cargo::SkeletonBuilder;

/// Directory holding `vmlinux.h` for the target architecture (`vmlinux/<arch>` in the workspace).
pub fn vmlinux_dir(workspace: &Path) -> PathBuf {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".to_string());
    workspace.join("vmlinux").join(arch)
}

/// Shared BPF C headers (`probe-sdk/bpf/include`), e.g. the loss-counter helpers.
pub fn shared_include_dir(workspace: &Path) -> PathBuf {
    workspace.join("probe-sdk").join("bpf").join("include")
}

fn workspace_root(manifest: &Path) -> PathBuf {
    // Probes live at <ws>/probes/<name>; walk up until a dir containing vmlinux/ is found.
    let mut dir = manifest.to_path_buf();
    loop {
        if dir.join("vmlinux").is_dir() && dir.join("Cargo.toml").is_file() {
            return dir;
        }
        if !dir.pop() {
            panic!(
                "bpf-build: no workspace root with vmlinux/ above {}",
                manifest.display()
            );
        }
    }
}

/// Build one skeleton per name from `src/bpf/<name>.bpf.c`. Panics with a clear message on failure
/// (this runs inside build.rs, where a panic is the error channel).
pub fn build_skeletons(names: &[&str]) {
    build_skeletons_from("src/bpf", names);
}

/// Like [`build_skeletons`], with extra clang arguments, e.g. `-mcpu=v3` for a program that
/// needs the BPF atomics beyond fetch-and-add (compare-and-exchange, kernel 5.12 and later).
pub fn build_skeletons_with(names: &[&str], extra: &[&str]) {
    build(Path::new("src/bpf"), names, extra);
}

/// Like [`build_skeletons`], with the sources in `src_dir` (relative to the crate's manifest
/// directory) instead of `src/bpf`; probe-sdk uses it for its BPF self-test program.
pub fn build_skeletons_from(src_dir: impl AsRef<Path>, names: &[&str]) {
    build(src_dir.as_ref(), names, &[]);
}

fn build(src_dir: &Path, names: &[&str], extra: &[&str]) {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let ws = workspace_root(&manifest);
    let bpf_dir = manifest.join(src_dir);
    let vmlinux = vmlinux_dir(&ws);
    let shared = shared_include_dir(&ws);
    for name in names {
        let src = bpf_dir.join(format!("{name}.bpf.c"));
        let skel = out_dir.join(format!("{name}.skel.rs"));
        let mut args: Vec<OsString> = vec![
            "-I".into(),
            bpf_dir.clone().into(),
            "-I".into(),
            vmlinux.clone().into(),
            "-I".into(),
            shared.clone().into(),
            "-Wall".into(),
            "-Wno-unused-function".into(),
            "-Wno-compare-distinct-pointer-types".into(),
        ];
        args.extend(extra.iter().map(OsString::from));
        SkeletonBuilder::new()
            .source(&src)
            .clang_args(args)
            .build_and_generate(&skel)
            .unwrap_or_else(|e| panic!("building {}: {e:#}", src.display()));
        println!("cargo:rerun-if-changed={}", src.display());
    }
    for dir in [&bpf_dir, &shared] {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "h") {
                    println!("cargo:rerun-if-changed={}", e.path().display());
                }
            }
        }
    }
    println!(
        "cargo:rerun-if-changed={}",
        vmlinux.join("vmlinux.h").display()
    );
}
