//! The real `gala-gopher` binary: what it reads as a config file, `--check-config` agreeing with
//! the daemon, a closed stdout, what SIGHUP says about settings it cannot apply, and `-v` naming
//! the probes of the build.

mod daemon_support;

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use daemon_support::{free_port, wait_for, Daemon};

const BIN: &str = env!("CARGO_BIN_EXE_gala-gopher");

/// Wait for `child` with a generous deadline; a hang fails the test (and the child is killed).
fn finish(mut child: Child, what: &str) -> Output {
    let done = wait_for(Duration::from_secs(30), || child.try_wait().ok().flatten());
    if done.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{what}: still running after 30 s");
    }
    child.wait_with_output().expect("collect output")
}

fn run(args: &[&str], env: &[(&str, &str)], what: &str) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gala-gopher");
    finish(child, what)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn main_config_must_be_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.conf");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let fifo = fifo.to_str().unwrap().to_string();
    let subdir = dir.path().to_str().unwrap().to_string();
    for path in ["/dev/zero", fifo.as_str(), subdir.as_str()] {
        for check in [true, false] {
            let mut args = vec!["-c", path];
            if check {
                args.insert(0, "--check-config");
            }
            let out = run(&args, &[], &format!("{args:?}"));
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert!(
                err.contains(&format!("{path}: not a regular file")),
                "{args:?}: {err}"
            );
        }
    }
}

#[test]
fn config_larger_than_the_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.conf");
    // A comment line repeated past the limit: no parsing happens before the size check.
    let line = "# padding padding padding padding padding padding padding padding padding\n";
    let body = line.repeat(17 * 1024 * 1024 / line.len() + 1);
    std::fs::write(&p, body).unwrap();
    let out = run(
        &["--check-config", "-c", p.to_str().unwrap()],
        &[],
        "big config",
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{}: file too large", p.display())),
        "{err}"
    );
}

#[test]
fn non_utf8_config_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.conf");
    std::fs::write(&p, b"global = {\n  machine_id = \"a\xffb\";\n};\n").unwrap();
    let out = run(
        &["--check-config", "-c", p.to_str().unwrap()],
        &[],
        "non-utf8",
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{}:2:", p.display())) && err.contains("UTF-8"),
        "{err}"
    );
}

/// A config in `dir` whose probes_dir is inside it, with `web` added to the `web_server` group.
fn write_conf(dir: &Path, meta_dir: &Path, web: &str) -> String {
    let p = dir.join("gala-gopher.conf");
    std::fs::create_dir_all(dir.join("probes")).unwrap();
    std::fs::write(
        &p,
        format!(
            "global = {{ probes_dir = \"{}\"; meta_dir = \"{}\"; machine_id = \"m\"; }};\n\
             web_server = {{ port = {}; {web} }};\n",
            dir.join("probes").display(),
            meta_dir.display(),
            free_port(),
        ),
    )
    .unwrap();
    p.to_str().unwrap().to_string()
}

/// `--check-config` and the daemon refuse the same things, with the same message and exit 2.
#[test]
fn check_config_refuses_what_the_daemon_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let cert = dir.path().join("c.pem");
    std::fs::write(&key, "k").unwrap();
    std::fs::write(&cert, "c").unwrap();

    let good_meta = dir.path().join("meta-ok");
    std::fs::create_dir_all(&good_meta).unwrap();
    let bad_meta = dir.path().join("meta-bad");
    std::fs::create_dir_all(&bad_meta).unwrap();
    std::fs::write(
        bad_meta.join("broken.meta"),
        "version = \"1.0.0\"\nmeasurements: (\n",
    )
    .unwrap();
    let file_meta = dir.path().join("meta-file");
    std::fs::write(&file_meta, "not a directory").unwrap();

    let cases = [
        (
            // Files that are not PEM (TLS itself is supported: tests/http_tls.rs).
            "ssl_auth",
            good_meta.clone(),
            format!(
                "ssl_auth = \"on\"; private_key = \"{}\"; cert_file = \"{}\";",
                key.display(),
                cert.display()
            ),
            "web_server.cert_file",
        ),
        ("bad meta", bad_meta.clone(), String::new(), "broken.meta"),
        (
            "meta_dir is a file",
            file_meta.clone(),
            String::new(),
            "meta-file",
        ),
    ];
    for (name, meta_dir, extra, needle) in cases {
        let case_dir = dir.path().join(name.replace(' ', "_"));
        std::fs::create_dir_all(&case_dir).unwrap();
        let conf = write_conf(&case_dir, &meta_dir, &extra);
        let check = run(&["--check-config", "-c", &conf], &[], name);
        let daemon = run(&["-c", &conf], &[], name);
        let (check_err, daemon_err) = (stderr(&check), stderr(&daemon));
        assert_eq!(check.status.code(), Some(2), "{name}: check: {check_err}");
        assert_eq!(
            daemon.status.code(),
            Some(2),
            "{name}: daemon: {daemon_err}"
        );
        let msg = check_err
            .lines()
            .find(|l| l.starts_with("gala-gopher: invalid configuration: "))
            .unwrap_or_else(|| panic!("{name}: no error line in {check_err}"));
        assert!(msg.contains(needle), "{name}: {msg}");
        assert!(
            daemon_err.lines().any(|l| l == msg),
            "{name}: daemon said\n{daemon_err}\ncheck said\n{msg}"
        );
    }

    // And the same file with a good meta_dir and TLS off passes both ways (the daemon starts).
    let case_dir = dir.path().join("ok");
    std::fs::create_dir_all(&case_dir).unwrap();
    std::fs::write(
        good_meta.join("t.meta"),
        "version = \"1.0.0\"\nmeasurements:\n(\n  { table_name: \"t\"; entity_name: \"t\";\n    fields: ( { description: \"k\"; type: \"key\"; name: \"k\"; } ); }\n);\n",
    )
    .unwrap();
    let conf = write_conf(&case_dir, &good_meta, "");
    let check = run(&["--check-config", "-c", &conf], &[], "ok");
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
}

#[test]
fn check_config_survives_a_closed_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write_conf(dir.path(), &dir.path().join("meta"), "");
    let mut fds = [0; 2];
    // SAFETY: pipe(2) into a two-element array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just created and are owned here.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // Like `| head -1` after head has exited: nobody will ever read.
    drop(read_end);
    let child = Command::new(BIN)
        .args(["--check-config", "-c", &conf])
        .env("GALA_GOPHER_NOSUCH__X", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = finish(child, "closed stdout");
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
    // Warnings go to stderr, naming the variable.
    assert!(err.contains("GALA_GOPHER_NOSUCH__X: unknown key"), "{err}");
}

#[test]
fn sighup_names_settings_that_need_a_restart() {
    let d = Daemon::start(60, "", |_| {});
    let conf = d.dir.path().join("gala-gopher.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    let other = free_port();
    let changed = text
        .replace(&format!("port = {};", d.port), &format!("port = {other};"))
        .replace("record_timeout = 60;", "record_timeout = 61;")
        + "extend_probes = ( { name = \"p\"; command = \"/bin/true\"; switch = \"off\"; } );\n";
    assert_ne!(changed, text);
    std::fs::write(&conf, changed).unwrap();
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(d.pid(), libc::SIGHUP);
    }
    let line = wait_for(Duration::from_secs(20), || {
        d.log()
            .lines()
            .find(|l| l.contains("restart"))
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("no restart warning; log:\n{}", d.log()));
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains("imdb.record_timeout, web_server.port"),
        "{line}"
    );
    assert!(!line.contains("extend_probes"), "{line}");
    // The old port is still served.
    d.scrape();
    let (status, _, log) = d.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn settings_without_an_implementation_are_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("meta");
    std::fs::create_dir(&meta).unwrap();
    let p = dir.path().join("g.conf");
    std::fs::write(
        &p,
        format!(
            "global = {{ meta_dir = \"{}\"; pin_path = \"/sys/fs/bpf/other\"; }};\n\
             metric = {{ pod_info_switch = \"on\"; }};\n",
            meta.display()
        ),
    )
    .unwrap();
    let out = run(&["--check-config", "-c", p.to_str().unwrap()], &[], "check");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(":1: global.pin_path:") && err.contains("pin no maps"),
        "{err}"
    );
    // Container and pod labels are implemented: the switch gets no warning any more.
    assert!(!err.contains("pod_info_switch"), "{err}");
    // The shipped defaults say nothing.
    std::fs::write(
        &p,
        format!("global = {{ meta_dir = \"{}\"; }};\n", meta.display()),
    )
    .unwrap();
    let out = run(&["--check-config", "-c", p.to_str().unwrap()], &[], "check");
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

#[test]
fn version_names_the_probes_of_the_build() {
    let ours: Vec<&str> = gala_gopher::control::merge::shipped_probes().collect();
    let left_out: Vec<&str> = gala_gopher::control::merge::tailored_out().collect();
    if option_env!("GG_PROBES").is_none_or(|s| s.trim().is_empty()) {
        // A full build carries every shipped probe.
        assert!(left_out.is_empty(), "{left_out:?}");
        for n in ["system_infos", "tcpprobe", "taskprobe", "ioprobe"] {
            assert!(ours.contains(&n), "{ours:?}");
        }
    }
    let mut expected = vec![
        format!("gala-gopher {}", env!("CARGO_PKG_VERSION")),
        format!("probes: {}", ours.join(" ")),
    ];
    if !left_out.is_empty() {
        expected.push(format!("left out: {}", left_out.join(" ")));
    }
    for flag in ["-v", "--version"] {
        let out = run(&[flag], &[], flag);
        assert_eq!(out.status.code(), Some(0), "{flag}: {}", stderr(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.lines().collect::<Vec<_>>(), expected, "{flag}");
    }
}
