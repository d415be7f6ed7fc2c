//! Cost of one discovery scan (the daemon rescans `probes_dir` every second) with the probe file
//! ownership rule: 100 drop-ins (executable scripts and `.sh` scripts run through `/bin/sh`),
//! each with its `.meta`, plus 10 configured entries. Reports the median scan time and how many
//! path components the trust walk reads (each folder once per scan, not once per file).
//!
//! Run: `cargo bench -p gala-gopher --bench discovery_scan`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use gala_gopher::supervisor::discovery::{desired_probes, ConfiguredProbe};
use gala_gopher::supervisor::trust::TrustCheck;
use gala_gopher::supervisor::Switch;

const META: &str = "version = \"1.0.0\";\nmeasurements: ();\n";

fn write(path: &Path, body: &str, mode: u32) {
    std::fs::write(path, body).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn main() {
    let root = tempfile::tempdir().expect("tempdir");
    let p = root.path().join("probes");
    std::fs::create_dir(&p).expect("mkdir");
    for i in 0..100 {
        let (file, mode) = if i % 2 == 0 {
            (format!("p{i}"), 0o755)
        } else {
            (format!("p{i}.sh"), 0o644)
        };
        write(&p.join(file), "#!/bin/sh\nexit 0\n", mode);
        write(&p.join(format!("p{i}.meta")), META, 0o644);
    }
    let configured: Vec<ConfiguredProbe> = (0..10)
        .map(|i| ConfiguredProbe {
            name: format!("p{i}"),
            command: None,
            param: "-t 5".to_string(),
            switch: Switch::On,
            start_check: None,
        })
        .collect();
    let sdk = root.path().join("sdk");
    std::fs::create_dir(&sdk).expect("mkdir");

    let mut times = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let (specs, warnings) = desired_probes(&p, root.path(), &configured, &sdk);
        times.push(t.elapsed());
        assert_eq!(specs.len(), 100, "{warnings:?}");
    }
    times.sort();
    let median: Duration = times[times.len() / 2];
    let p99 = times[times.len() * 99 / 100];
    println!("discovery scan, 100 drop-ins + 10 configured: median {median:?}, p99 {p99:?}");

    let mut t = TrustCheck::new();
    for i in 0..100 {
        let f = if i % 2 == 0 {
            format!("p{i}")
        } else {
            format!("p{i}.sh")
        };
        t.check_file(&p.join(f)).expect("trusted");
        t.check_file(&p.join(format!("p{i}.meta")))
            .expect("trusted");
    }
    println!(
        "trust walk: {} components read for 200 files at depth {}",
        t.components_read(),
        p.components().count()
    );
}
