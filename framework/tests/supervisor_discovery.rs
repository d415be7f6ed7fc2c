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
    out.replace(&format!("{root}/probes"), "$P")
        .replace(&format!("{root}/meta"), "$M")
        .replace(&format!("{root}/ext"), "$X")
}

#[test]
fn desired_probes_follow_the_documented_rule() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let (p, m, x) = (r.join("probes"), r.join("meta"), r.join("ext"));
    for d in [&p, &m, &x, &p.join("dirp"), &p.join("empty")] {
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
pg Extend Auto argv=["python3", "$X/pg.py"] meta=["$X/pg.meta"]
plain Extend On argv=["$X/nometa"] meta=[]
py DropIn On argv=["python3", "$P/py.py"] meta=["$P/py.meta"]
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
