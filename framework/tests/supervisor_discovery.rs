//! Discovery: which files and config entries become which probe specs, and the live loop that
//! starts, restarts and retires drop-ins.

mod supervisor_support;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use gala_gopher::supervisor::discovery::{
    desired_probes, spawn_discovery_loop, ConfiguredProbe, DiscoveryInputs,
};
use gala_gopher::supervisor::{ProbeSpec, Supervisor, Switch};
use gala_gopher::telemetry::{ProbeState, Telemetry};
use supervisor_support::*;
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(10);
const META: &str = "version = \"1.0.0\";\nmeasurements: ();\n";

fn configured(name: &str, command: Option<&str>, param: &str, switch: Switch) -> ConfiguredProbe {
    ConfiguredProbe {
        name: name.to_string(),
        command: command.map(str::to_string),
        param: param.to_string(),
        switch,
        start_check: None,
    }
}

/// One line per spec, temp paths replaced by `$P` (probes dir), `$M` (meta dir), `$X` (other).
fn render(specs: &[ProbeSpec], root: &Path) -> String {
    let mut out = String::new();
    for s in specs {
        let line = format!(
            "{} {:?} {:?} argv={:?} meta={:?}\n",
            s.name, s.origin, s.switch, s.argv, s.meta_files
        );
        out.push_str(&line);
    }
    let root = root.to_str().unwrap();
    // Bare interpreters are resolved through PATH (like execvp) so the checked file is the one run.
    let py = gala_gopher::supervisor::trust::which("python3")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| "python3".to_string());
    out.replace(&format!("\"{py}\""), "\"$PY\"")
        .replace(&format!("{root}/probes"), "$P")
        .replace(&format!("{root}/meta"), "$M")
        .replace(&format!("{root}/ext"), "$X")
}

#[test]
fn desired_probes_follow_the_documented_rule() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let (p, m, x) = (r.join("probes"), r.join("meta"), r.join("ext"));
    for d in [
        &p,
        &m,
        &x,
        &p.join("dirp"),
        &p.join("empty"),
        &r.join("sdk"),
    ] {
        std::fs::create_dir_all(d).unwrap();
    }
    // Drop-ins.
    write_file(&p, "foo.sh", "echo foo", false);
    write_file(&p, "foo.meta", META, false);
    write_file(&p, "bar", "#!/bin/sh\n", true);
    write_file(&p, "bar.meta", META, false);
    write_file(&p, "py.py", "print()", false);
    write_file(&p, "py.meta", META, false);
    write_file(&p, "dirp/dirp", "#!/bin/sh\n", true);
    write_file(&p, "dirp/dirp.meta", META, false);
    // Not probes: not executable, no meta, hidden, never-probe suffixes, not D* in a folder.
    write_file(&p, "noexec", "x", false);
    write_file(&p, "noexec.meta", META, false);
    write_file(&p, "nometa.sh", "#!/bin/sh\n", true);
    write_file(&p, ".hidden.sh", "#!/bin/sh\n", true);
    write_file(&p, ".hidden.meta", META, false);
    write_file(&p, "README.md", "#!/bin/sh\n", true);
    write_file(&p, "README.md.meta", META, false);
    write_file(&p, "x.conf", "#!/bin/sh\n", true);
    write_file(&p, "x.conf.meta", META, false);
    write_file(&p, "dirp/helper.sh", "#!/bin/sh\n", true);
    write_file(&p, "dirp/helper.meta", META, false);
    // A native probe with its meta in the global meta dir.
    write_file(&p, "system_infos", "#!/bin/sh\n", true);
    write_file(&m, "system_infos.meta", META, false);
    // A drop-in governed by a config entry.
    write_file(&p, "offp.sh", "#!/bin/sh\n", true);
    write_file(&p, "offp.meta", META, false);
    // Extend probes with meta beside the executable / script.
    write_file(&x, "tcpprobe", "#!/bin/sh\n", true);
    write_file(&x, "tcpprobe.meta", META, false);
    write_file(&x, "pg.py", "print()", false);
    write_file(&x, "pg.meta", META, false);
    write_file(&x, "nometa", "#!/bin/sh\n", true);

    let ext = |f: &str| x.join(f).to_str().unwrap().to_string();
    let config = vec![
        configured("system_infos", None, "-t 5 -w \"a b\" -l warn", Switch::On),
        configured("offp", None, "-v", Switch::Off),
        configured("tcp", Some(&ext("tcpprobe")), "-l warn -P 7", Switch::On),
        configured(
            "pg",
            Some(&format!("python3 {}", ext("pg.py"))),
            "",
            Switch::Auto,
        ),
        configured("plain", Some(&ext("nometa")), "", Switch::On),
        configured("broken", None, "-x 'unterminated", Switch::On),
        configured("badcmd", Some("\"open"), "", Switch::On),
        configured("absent", None, "", Switch::On),
        configured("absent_off", None, "", Switch::Off),
        configured("tcp", Some("/other"), "", Switch::Off),
    ];
    let sdk = r.join("sdk");
    let (specs, warnings) = desired_probes(&p, &m, &config, &sdk);

    let expected = r#"absent Native On argv=["$P/absent"] meta=[]
absent_off Native Off argv=["$P/absent_off"] meta=[]
bar DropIn On argv=["$P/bar"] meta=["$P/bar.meta"]
dirp DropIn On argv=["$P/dirp/dirp"] meta=["$P/dirp/dirp.meta"]
foo DropIn On argv=["/bin/sh", "$P/foo.sh"] meta=["$P/foo.meta"]
offp Native Off argv=["$P/offp.sh", "-v"] meta=["$P/offp.meta"]
pg Extend Auto argv=["$PY", "$X/pg.py"] meta=["$X/pg.meta"]
plain Extend On argv=["$X/nometa"] meta=[]
py DropIn On argv=["$PY", "$P/py.py"] meta=["$P/py.meta"]
system_infos Native On argv=["$P/system_infos", "-t", "5", "-w", "a b", "-l", "warn"] meta=["$M/system_infos.meta"]
tcp Extend On argv=["$X/tcpprobe", "-l", "warn", "-P", "7"] meta=["$X/tcpprobe.meta"]
"#;
    assert_eq!(render(&specs, r), expected);

    let warned = |needle: &str| warnings.iter().any(|w| w.contains(needle));
    assert!(warned("probe broken skipped"), "{warnings:?}");
    assert!(warned("probe badcmd skipped"), "{warnings:?}");
    assert!(warned("probe absent: no executable"), "{warnings:?}");
    assert!(!warned("absent_off"), "{warnings:?}");
    assert!(warned("probe tcp configured twice"), "{warnings:?}");
    assert_eq!(warnings.len(), 4, "{warnings:?}");

    let foo = specs.iter().find(|s| s.name == "foo").unwrap();
    let env: Vec<(&str, &str)> = foo
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let sdk = sdk.to_str().unwrap();
    assert!(env.contains(&("GALA_GOPHER_SDK_DIR", sdk)));
    assert!(env.contains(&("GALA_GOPHER_PROBE", "foo")));
    let pythonpath = env.iter().find(|(k, _)| *k == "PYTHONPATH").unwrap().1;
    assert!(pythonpath == sdk || pythonpath.starts_with(&format!("{sdk}:")));

    // Same inputs, same answer.
    assert_eq!(desired_probes(&p, &m, &config, &r.join("sdk")).0, specs);
}

#[test]
fn missing_probes_dir_is_a_warning() {
    let root = tempfile::tempdir().unwrap();
    let (specs, warnings) =
        desired_probes(&root.path().join("nope"), root.path(), &[], root.path());
    assert!(specs.is_empty());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
}

struct Running {
    sup: Supervisor,
    sink: Arc<TestSink>,
    telemetry: Arc<Telemetry>,
    config: watch::Sender<Vec<ConfiguredProbe>>,
    handle: tokio::task::JoinHandle<()>,
}

fn start_loop(probes: &Path, entries: Vec<ConfiguredProbe>) -> Running {
    let sink = TestSink::new();
    let telemetry = Arc::new(Telemetry::default());
    let sup = Supervisor::new(sink.clone(), telemetry.clone(), fast_options());
    let (config, rx) = watch::channel(entries);
    let inputs = DiscoveryInputs {
        probes_dir: probes.to_path_buf(),
        meta_dir: probes.join("no-meta-dir"),
        sdk_dir: probes.join("sdk"),
        configured: rx,
    };
    let handle = spawn_discovery_loop(sup.clone(), inputs, Duration::from_millis(50));
    Running {
        sup,
        sink,
        telemetry,
        config,
        handle,
    }
}

impl Running {
    async fn stop(self) {
        self.handle.abort();
        self.sup.shutdown().await;
    }
}

#[tokio::test]
async fn drop_in_is_started_replaced_and_retired() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let run = start_loop(p, Vec::new());

    write_file(p, "foo.meta", META, false);
    write_script(
        p,
        "foo.sh",
        "echo \"hello from $GALA_GOPHER_PROBE\"\nexec sleep 1000",
    );
    assert!(eventually(WAIT, || run.sink.lines("foo") == ["hello from foo"]).await);
    assert_eq!(run.sink.prepares("foo").len(), 1);
    let stats = run.telemetry.probe("foo");
    let first_pid = stats.pid.load(Ordering::Relaxed) as i32;

    // Replacing the script restarts the probe with the new file.
    write_script(p, "foo.sh", "echo v2\nexec sleep 1000");
    assert!(eventually(WAIT, || run.sink.lines("foo") == ["hello from foo", "v2"]).await);
    assert!(!pid_exists(first_pid));
    assert!(!run.sink.retired("foo"));

    let pid = stats.pid.load(Ordering::Relaxed) as i32;
    assert!(pid > 0 && pid_exists(pid));
    std::fs::remove_file(p.join("foo.sh")).unwrap();
    assert!(eventually(WAIT, || run.sink.retired("foo")).await);
    assert!(!pid_exists(pid), "removed drop-in still running");
    assert!(run.sup.names().is_empty());
    run.stop().await;
}

#[tokio::test]
async fn configured_off_governs_drop_in_of_same_name() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    write_file(p, "quiet.meta", META, false);
    write_script(p, "quiet.sh", "echo \"args:$*\"\nexec sleep 1000");
    let run = start_loop(p, vec![configured("quiet", None, "-p 1", Switch::Off)]);

    assert!(eventually(WAIT, || run.sup.names() == ["quiet"]).await);
    // Give a wrongly started probe every chance to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(run.sink.prepares("quiet").is_empty());
    assert!(run.sink.lines("quiet").is_empty());
    assert_eq!(run.telemetry.probe("quiet").state(), ProbeState::Stopped);

    // Switching it on through the config channel starts it with the configured params.
    run.config
        .send(vec![configured("quiet", None, "-p 1", Switch::On)])
        .unwrap();
    assert!(eventually(WAIT, || run.sink.lines("quiet") == ["args:-p 1"]).await);
    run.stop().await;
}

#[tokio::test]
async fn quoted_param_arrives_as_single_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    write_script(
        p,
        "argy",
        "for a in \"$@\"; do echo \"[$a]\"; done\nexec sleep 1000",
    );
    let param = r#"-x "a b" -y 'c  d' e\ f $HOME `id` ;|"#;
    let run = start_loop(p, vec![configured("argy", None, param, Switch::On)]);
    let want = [
        "[-x]", "[a b]", "[-y]", "[c  d]", "[e f]", "[$HOME]", "[`id`]", "[;|]",
    ];
    assert!(
        eventually(WAIT, || run.sink.lines("argy") == want).await,
        "{:?}",
        run.sink.lines("argy")
    );
    run.stop().await;
}

// ---- The probe file ownership rule (issue 9, class 1) and probe names (class 11) ----

const NOBODY: u32 = 65534;

fn chown_to(path: &Path, uid: u32) {
    nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(uid)), None).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mkdir(path: &Path, mode: u32) -> std::path::PathBuf {
    std::fs::create_dir_all(path).unwrap();
    chmod(path, mode);
    path.to_path_buf()
}

/// A drop-in `NAME.sh` + `NAME.meta` in `dir`.
fn drop_in(dir: &Path, name: &str) -> std::path::PathBuf {
    write_file(dir, &format!("{name}.meta"), META, false);
    write_script(
        dir,
        &format!("{name}.sh"),
        &format!("echo {name}\nexec sleep 1000"),
    )
}

fn names(specs: &[ProbeSpec]) -> Vec<&str> {
    specs.iter().map(|s| s.name.as_str()).collect()
}

fn refused<'a>(warnings: &'a [String], needle: &str, reason: &str) -> Option<&'a String> {
    warnings
        .iter()
        .find(|w| w.contains(needle) && w.contains(&format!("refused ({reason})")))
}

#[test]
fn files_others_could_change_are_refused_and_trusted_ones_kept() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let p = mkdir(&r.join("probes"), 0o755);
    let ext = mkdir(&r.join("ext"), 0o755);
    let open = mkdir(&r.join("open"), 0o777);
    let sdk = mkdir(&r.join("sdk"), 0o755);

    drop_in(&p, "good");
    // The file itself: owned by nobody, world-writable, group-writable.
    chown_to(&drop_in(&p, "nob"), NOBODY);
    chmod(&drop_in(&p, "ww"), 0o777);
    chmod(&drop_in(&p, "gw"), 0o775);
    // Its .meta owned by nobody.
    drop_in(&p, "badmeta");
    chown_to(&p.join("badmeta.meta"), NOBODY);
    // A symlink to a nobody-owned script, and one into a world-writable (not sticky) folder.
    let evil = write_script(&ext, "evil.sh", "echo evil");
    chown_to(&evil, NOBODY);
    write_file(&p, "link.meta", META, false);
    std::os::unix::fs::symlink(&evil, p.join("link.sh")).unwrap();
    let in_open = write_script(&open, "fine.sh", "echo fine");
    write_file(&p, "link2.meta", META, false);
    std::os::unix::fs::symlink(&in_open, p.join("link2.sh")).unwrap();
    // A symlink that is itself in a world-writable folder, pointing at a trusted file.
    let trusted = write_script(&ext, "trusted.sh", "echo trusted");
    std::os::unix::fs::symlink(&trusted, open.join("hop.sh")).unwrap();
    write_file(&p, "link3.meta", META, false);
    std::os::unix::fs::symlink(open.join("hop.sh"), p.join("link3.sh")).unwrap();
    // A symlink to a trusted file in a trusted folder is fine.
    write_file(&p, "link4.meta", META, false);
    std::os::unix::fs::symlink(&trusted, p.join("link4.sh")).unwrap();
    // A probe folder probes/D/ that is group-writable.
    let d = mkdir(&p.join("dgw"), 0o775);
    drop_in(&d, "dgw");

    let config = vec![
        // A `probes` entry whose executable is owned by nobody.
        configured("nob", None, "", Switch::On),
        // extend_probes commands: untrusted executable, interpreter + untrusted script,
        // script in a world-writable folder, and a trusted one.
        configured("ext1", Some(evil.to_str().unwrap()), "", Switch::On),
        configured(
            "ext2",
            Some(&format!("sh {}", evil.display())),
            "",
            Switch::On,
        ),
        configured(
            "ext3",
            Some(&format!("python3 -u {}", in_open.display())),
            "",
            Switch::On,
        ),
        configured(
            "ext4",
            Some(&format!("sh {}", trusted.display())),
            "-t 5",
            Switch::On,
        ),
    ];
    let (specs, warnings) = desired_probes(&p, &r.join("meta"), &config, &sdk);
    assert_eq!(names(&specs), ["ext4", "good", "link4"], "{warnings:#?}");

    for (needle, reason) in [
        ("nob.sh", "owner"),
        ("ww.sh", "writable"),
        ("gw.sh", "writable"),
        ("badmeta.meta", "owner"),
        ("link.sh", "owner"),
        ("link2.sh", "parent_writable"),
        ("link3.sh", "parent_writable"),
        ("dgw", "parent_writable"),
        ("evil.sh", "owner"),
        ("fine.sh", "parent_writable"),
    ] {
        assert!(
            refused(&warnings, needle, reason).is_some(),
            "{needle} {reason}: {warnings:#?}"
        );
    }
    // The interpreter is resolved through PATH and the checked file is the one executed.
    let ext4 = specs.iter().find(|s| s.name == "ext4").unwrap();
    assert!(
        ext4.argv[0].starts_with('/') && ext4.argv[0].ends_with("/sh"),
        "{:?}",
        ext4.argv
    );
    assert_eq!(ext4.argv[1..], [trusted.to_str().unwrap(), "-t", "5"]);
    // A trusted SDK folder is exported.
    let sdk_env = ext4.env.iter().find(|(k, _)| k == "GALA_GOPHER_SDK_DIR");
    assert_eq!(sdk_env.map(|(_, v)| v.as_str()), sdk.to_str());
}

#[test]
fn untrusted_folders_refuse_everything_in_them() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    // A world-writable sticky probes folder (like /tmp): the attack from the issue.
    let sticky = mkdir(&r.join("sticky"), 0o1777);
    drop_in(&sticky, "rootowned");
    let x = drop_in(&sticky, "x");
    chown_to(&x, NOBODY);
    chown_to(&sticky.join("x.meta"), NOBODY);
    let (specs, warnings) = desired_probes(&sticky, r, &[], r);
    assert!(specs.is_empty(), "{specs:?}");
    assert!(
        refused(&warnings, "sticky", "parent_writable").is_some(),
        "{warnings:#?}"
    );

    // A group-writable ancestor of an otherwise fine probes folder.
    let gw = mkdir(&r.join("gw"), 0o775);
    let p = mkdir(&gw.join("probes"), 0o755);
    drop_in(&p, "inside");
    let (specs, warnings) = desired_probes(&p, r, &[], r);
    assert!(specs.is_empty(), "{specs:?}");
    assert!(
        refused(&warnings, "probes", "parent_writable").is_some(),
        "{warnings:#?}"
    );

    // A folder owned by nobody.
    let nob = mkdir(&r.join("nob"), 0o755);
    chown_to(&nob, NOBODY);
    drop_in(&nob, "inside");
    let (specs, warnings) = desired_probes(&nob, r, &[], r);
    assert!(specs.is_empty(), "{specs:?}");
    assert!(
        refused(&warnings, "nob", "parent_owner").is_some(),
        "{warnings:#?}"
    );

    // An SDK folder others can write is not put on PYTHONPATH (nor exported).
    let ok = mkdir(&r.join("ok"), 0o755);
    drop_in(&ok, "p");
    let bad_sdk = mkdir(&r.join("sdk"), 0o777);
    let (specs, warnings) = desired_probes(&ok, r, &[], &bad_sdk);
    assert_eq!(names(&specs), ["p"]);
    assert!(
        refused(&warnings, "sdk", "parent_writable").is_some(),
        "{warnings:#?}"
    );
    let keys: Vec<&str> = specs[0].env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["GALA_GOPHER_PROBE"]);
}

#[test]
fn unprintable_or_invalid_names_are_refused() {
    use std::os::unix::ffi::OsStrExt;
    let root = tempfile::tempdir().unwrap();
    let p = mkdir(&root.path().join("probes"), 0o755);
    drop_in(&p, "good");
    // A newline would forge a daemon log line; ESC a terminal sequence.
    drop_in(&p, "x\n2024-01-01T00:00:00Z  INFO forged");
    drop_in(&p, "esc\u{1b}[31m");
    drop_in(&p, "has space");
    drop_in(&p, &"long".repeat(20));
    let raw = std::ffi::OsStr::from_bytes(b"bad\xff");
    std::fs::write(p.join(raw).with_extension("sh"), "#!/bin/sh\n").unwrap();
    std::fs::write(p.join(raw).with_extension("meta"), META).unwrap();
    let config = vec![
        configured("ok_name", None, "", Switch::Off),
        configured("bad\nname", None, "", Switch::On),
        configured(&"n".repeat(65), None, "", Switch::On),
    ];
    let (specs, warnings) = desired_probes(&p, root.path(), &config, root.path());
    assert_eq!(names(&specs), ["good", "ok_name"], "{warnings:#?}");
    for w in &warnings {
        assert!(
            !w.chars().any(char::is_control),
            "unescaped control character in {w:?}"
        );
    }
    let bad = warnings
        .iter()
        .filter(|w| w.contains("refused (bad_name)"))
        .count();
    // 2 files each for newline, ESC and the non-UTF-8 name; one each for space and length;
    // two configured names.
    assert!(bad >= 7, "{warnings:#?}");
}

#[test]
fn trust_walk_reads_each_folder_once() {
    use gala_gopher::supervisor::trust::TrustCheck;
    let root = tempfile::tempdir().unwrap();
    let p = mkdir(&root.path().join("probes"), 0o755);
    for i in 0..100 {
        write_script(&p, &format!("p{i}"), "true");
    }
    let mut t = TrustCheck::new();
    for i in 0..100 {
        t.check_file(&p.join(format!("p{i}"))).unwrap();
    }
    let depth = p.components().count();
    assert_eq!(t.components_read(), depth + 100);
}

#[tokio::test]
async fn refused_probes_never_run_and_are_counted_once() {
    use gala_gopher::telemetry::RefusalReason;
    let dir = tempfile::tempdir().unwrap();
    let p = mkdir(&dir.path().join("probes"), 0o755);
    drop_in(&p, "good");
    let marker = dir.path().join("ran");
    let evil = write_script(
        &p,
        "evil.sh",
        &format!("echo evil\ntouch {}\nexec sleep 1000", marker.display()),
    );
    write_file(&p, "evil.meta", META, false);
    chown_to(&evil, NOBODY);
    write_script(&p, "cfg", "echo cfg\nexec sleep 1000");
    chown_to(&p.join("cfg"), NOBODY);
    let run = start_loop(&p, vec![configured("cfg", None, "", Switch::On)]);

    assert!(eventually(WAIT, || run.sink.lines("good") == ["good"]).await);
    let refused_owner = || run.telemetry.discovery.refused(RefusalReason::Owner);
    // evil.sh and the configured cfg: counted once each, however many rescans happen.
    assert!(
        eventually(WAIT, || refused_owner() == 2).await,
        "{}",
        refused_owner()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(refused_owner(), 2);
    assert!(!marker.exists(), "refused probe ran");
    assert!(run.sink.prepares("evil").is_empty());
    assert!(run.sink.lines("cfg").is_empty());
    // The configured probe shows as failed with the reason.
    let cfg = run.telemetry.probe("cfg");
    assert_eq!(cfg.state(), ProbeState::Failed);
    let err = cfg.last_error().unwrap_or_default();
    assert!(err.contains("refused (owner)"), "{err}");
    let mut metrics = String::new();
    gala_gopher::telemetry::render_discovery_metrics(&run.telemetry.discovery, "m", &mut metrics);
    assert!(
        metrics
            .contains("gala_gopher_self_probe_refused_total{reason=\"owner\",machine_id=\"m\"} 2"),
        "{metrics}"
    );

    // Fixing the ownership lets it run.
    chown_to(&p.join("cfg"), 0);
    assert!(eventually(WAIT, || run.sink.lines("cfg") == ["cfg"]).await);
    assert!(run.telemetry.probe("cfg").last_error().is_none());
    assert_eq!(run.telemetry.discovery.scan_error_count(), 0);
    run.stop().await;
}

// ---- A failed read keeps the previous decision (issue 9, class 3) ----

#[tokio::test]
async fn unreadable_entry_keeps_its_probe_and_only_absence_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = mkdir(&dir.path().join("probes"), 0o755);
    drop_in(&p, "keep");
    drop_in(&p, "other");
    let run = start_loop(&p, Vec::new());
    assert!(eventually(WAIT, || run.sink.lines("keep") == ["keep"]).await);
    assert!(eventually(WAIT, || run.sink.lines("other") == ["other"]).await);
    let stats = run.telemetry.probe("keep");
    let pid = stats.pid.load(Ordering::Relaxed) as i32;

    // The file's status cannot be read any more (ELOOP, not ENOENT): nothing is known about it,
    // so its probe keeps running, and the error is counted.
    std::fs::remove_file(p.join("keep.sh")).unwrap();
    std::os::unix::fs::symlink("keep.sh", p.join("keep.sh")).unwrap();
    let errors = || run.telemetry.discovery.scan_error_count();
    let counted = eventually(WAIT, || errors() >= 3 || run.sink.retired("keep")).await;
    assert!(
        !run.sink.retired("keep"),
        "probe removed after a failed read"
    );
    assert_eq!(run.sup.names(), ["keep", "other"]);
    assert_eq!(stats.pid.load(Ordering::Relaxed) as i32, pid);
    assert!(counted, "{}", errors());

    // A successful observation that it is gone removes it.
    std::fs::remove_file(p.join("keep.sh")).unwrap();
    assert!(eventually(WAIT, || run.sink.retired("keep")).await);
    assert!(!pid_exists(pid));
    assert_eq!(run.sup.names(), ["other"]);
    run.stop().await;
}
