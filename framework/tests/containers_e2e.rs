//! Container and pod labels and container snoopers through the real daemon, with real podman
//! containers and podman's Docker-compatible API service: process series (system_infos,
//! taskprobe) carry the right container labels and a host process carries none; a REST snooper
//! by container name follows processes started in the container later; a runtime socket that
//! hangs or answers garbage never stops the series, is counted, and the labels fill in once a
//! real runtime answers on that socket.

mod daemon_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use container_info::podman::Podman;
use daemon_support::*;

const IMAGE: &str = "localhost/gg-busy:1";

/// An isolated podman with the busybox image, and its API service on `dir/podman.sock`.
struct Runtime {
    podman: Podman,
    socket: PathBuf,
    service: Option<Child>,
}

impl Runtime {
    fn new(dir: &Path) -> Runtime {
        assert!(
            Podman::available(),
            "podman and runc are needed (./build.sh --check installs them)"
        );
        let podman = Podman::new(&dir.join("podman")).expect("podman setup");
        podman.import_busybox(IMAGE).expect("import busybox image");
        Runtime {
            podman,
            socket: dir.join("podman.sock"),
            service: None,
        }
    }

    /// Start the API service on `self.socket` and wait until it accepts.
    fn serve(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        self.service = Some(self.podman.service(&self.socket).expect("podman service"));
        wait_for(Duration::from_secs(20), || {
            std::os::unix::net::UnixStream::connect(&self.socket)
                .ok()
                .map(drop)
        })
        .expect("podman API socket never accepted");
    }

    /// Run `NAME` with a shell loop that goes off-CPU every 100 ms; its id and host pid.
    fn run(&self, name: &str, marker: &str) -> (String, u32) {
        let script = format!("while :; do sleep 0.1; done; echo {marker}");
        let id = self
            .podman
            .run_detached(
                name,
                &["--label", "team=observability"],
                IMAGE,
                &["/bin/sh", "-c", &script],
            )
            .expect("podman run");
        let pid = self.podman.pid(name).expect("container pid");
        (id, pid)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(mut s) = self.service.take() {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

/// The series lines of `prefix` for process `pid`.
fn lines_of<'a>(scrape: &'a str, prefix: &str, pid: u32) -> Vec<&'a str> {
    let tgid = format!("tgid=\"{pid}\"");
    scrape
        .lines()
        .filter(|l| l.starts_with(prefix) && l.contains(&tgid))
        .collect()
}

/// The `container` config section pointing at `sockets` (no CRI socket).
fn container_section(sockets: &[&Path], extra: &str) -> String {
    let list: Vec<String> = sockets
        .iter()
        .map(|p| format!("\"{}\"", p.display()))
        .collect();
    format!(
        "container = {{ docker_sockets = [{}]; cri_sockets = [\"/nonexistent/cri.sock\"]; {extra} }};",
        list.join(", ")
    )
}

/// The pid of the host process whose command line contains `marker`.
fn pid_with_marker(marker: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        (cmd.contains(marker) && !cmd.contains("podman")).then_some(pid)
    })
}

#[test]
fn process_series_carry_their_container_labels_and_host_processes_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut rt = Runtime::new(dir.path());
    rt.serve();
    let (id1, pid1) = rt.run("gg-lab-one", "m-one");
    let (id2, pid2) = rt.run("gg-lab-two", "m-two");
    let host = std::process::id();
    let d = Daemon::start(
        30,
        &format!(
            "{}\nprobes = ( {{ name = \"system_infos\"; param = \"-t 1 -P 64 -f {pid1},{pid2},{host}\"; switch = \"on\"; }},\n\
             {{ name = \"containerprobe\"; param = \"-t 1\"; switch = \"on\"; }} );",
            container_section(&[&rt.socket], "")
        ),
        |probes| {
            install_probe(probes, "system_infos", "probes/system_infos");
            install_probe(probes, "containerprobe", "probes/container");
        },
    );
    let want = |id: &str, name: &str| {
        vec![
            format!("container_id=\"{}\"", &id[..12]),
            format!("container_name=\"{name}\""),
            format!("container_image=\"{IMAGE}\""),
        ]
    };
    let labeled = |s: &str, pid: u32, want: &[String]| {
        let lines = lines_of(s, "gala_gopher_proc_", pid);
        !lines.is_empty() && lines.iter().all(|l| want.iter().all(|w| l.contains(w)))
    };
    let (w1, w2) = (want(&id1, "gg-lab-one"), want(&id2, "gg-lab-two"));
    wait_for(Duration::from_secs(30), || {
        let s = d.scrape();
        (labeled(&s, pid1, &w1)
            && labeled(&s, pid2, &w2)
            && !lines_of(&s, "gala_gopher_proc_", host).is_empty())
        .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "container labels missing:\n{}\nlog:\n{}",
            d.scrape(),
            d.log()
        )
    });
    let s = d.scrape();
    for l in lines_of(&s, "gala_gopher_proc_", host) {
        for name in [
            "container_id",
            "container_name",
            "container_image",
            "pod_id",
            "pod=",
        ] {
            assert!(!l.contains(name), "host process has {name}: {l}");
        }
    }
    // No pod outside Kubernetes: the pod labels are omitted, not empty.
    for l in lines_of(&s, "gala_gopher_proc_", pid1) {
        assert!(
            !l.contains("pod_id=") && !l.contains("pod_namespace="),
            "{l}"
        );
    }
    // Label order: the table's own labels, then the container labels, then machine_id.
    let l = lines_of(&s, "gala_gopher_proc_", pid1)[0];
    let at = |n: &str| l.find(n).unwrap_or_else(|| panic!("{n} in {l}"));
    assert!(
        at("container_id=") < at("container_name=") && at("container_image=") < at("machine_id=")
    );
    // The container table (key container_id, the short id) gets the names without a second
    // container_id.
    let short1 = format!("container_id=\"{}\"", &id1[..12]);
    let container_rows = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| {
                l.starts_with("gala_gopher_container_memory_usage_bytes{") && l.contains(&short1)
            })
            .map(str::to_string)
            .collect()
    };
    let rows = wait_for(Duration::from_secs(30), || {
        let rows = container_rows(&d.scrape());
        (!rows.is_empty()
            && rows
                .iter()
                .all(|l| l.contains("container_name=\"gg-lab-one\"")))
        .then_some(rows)
    })
    .unwrap_or_else(|| panic!("container table without names:\n{}", d.scrape()));
    assert_eq!(rows[0].matches("container_id=").count(), 1, "{}", rows[0]);
    assert!(
        rows[0].contains(&format!("container_image=\"{IMAGE}\"")),
        "{}",
        rows[0]
    );
    let status = d.status();
    let c = &status["containers"];
    assert!(c.is_object(), "no containers in /status: {status}");
    assert!(
        s.contains("gala_gopher_self_container_runtime_requests_total"),
        "{s}"
    );
    assert!(
        sample(&s, "gala_gopher_self_container_runtime_requests_total{").unwrap_or(0.0) >= 1.0,
        "no runtime request counted"
    );
}

#[test]
fn a_container_name_snooper_follows_processes_started_later() {
    let dir = tempfile::tempdir().unwrap();
    let mut rt = Runtime::new(dir.path());
    rt.serve();
    let (_, pid1) = rt.run("gg-snp-in", "m-in");
    let (_, pid2) = rt.run("gg-snp-out", "m-out");
    let port = free_port();
    let d = Daemon::start_env(
        4,
        &format!(
            "{}\nrest_api_server = {{ bind_addr = \"127.0.0.1\"; port = {port}; }};",
            container_section(&[&rt.socket], "")
        ),
        &[("GALA_GOPHER_GLOBAL__REST_API_ON", "true")],
        |probes| install_probe(probes, "taskprobe", "probes/proc"),
    );
    wait_for(Duration::from_secs(20), || {
        (request(port, "GET", "/proc", "").0 == 200).then_some(())
    })
    .expect("taskprobe not known");
    let (st, v) = request(
        port,
        "PUT",
        "/proc",
        r#"json={"cmd":{"probe":["proc_offcpu"]},"snoopers":{"container_name":["gg-snp-in"]},"params":{"report_period":1},"state":"running"}"#,
    );
    assert_eq!(st, 200, "{v}\n{}", d.log());
    wait_for(Duration::from_secs(30), || {
        let s = d.scrape();
        let l = lines_of(&s, "gala_gopher_proc_", pid1);
        (!l.is_empty() && l.iter().all(|l| l.contains("container_name=\"gg-snp-in\"")))
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the container's process not reported:\n{}\n{}",
            d.scrape(),
            d.log()
        )
    });
    let (_, v) = request(port, "GET", "/proc", "");
    let probe_pid = v["pid"].as_u64().expect("taskprobe running");
    // Only processes of that container: none of the other, none of the host.
    let s = d.scrape();
    assert!(
        lines_of(&s, "gala_gopher_proc_", pid2).is_empty(),
        "other container reported"
    );
    let strays: Vec<&str> = s
        .lines()
        .filter(|l| l.starts_with("gala_gopher_proc_") && l.contains("tgid=\""))
        .filter(|l| !l.contains("container_name=\"gg-snp-in\""))
        .collect();
    assert!(
        strays.is_empty(),
        "processes outside the container: {strays:?}"
    );

    // A process started in the container afterwards is observed without a probe restart.
    rt.podman
        .run_args(&[
            "exec",
            "-d",
            "gg-snp-in",
            "/bin/sh",
            "-c",
            "while :; do sleep 0.1; done; echo m-late-exec",
        ])
        .expect("podman exec");
    let late = wait_for(Duration::from_secs(10), || pid_with_marker("m-late-exec"))
        .expect("exec'd process not found");
    wait_for(Duration::from_secs(30), || {
        (!lines_of(&d.scrape(), "gala_gopher_proc_", late).is_empty()).then_some(())
    })
    .unwrap_or_else(|| panic!("late process {late} not reported:\n{}", d.scrape()));
    let (_, v) = request(port, "GET", "/proc", "");
    assert_eq!(
        v["pid"].as_u64(),
        Some(probe_pid),
        "taskprobe restarted: {v}"
    );
}

/// A unix socket that accepts and never answers (kept open while the listener lives).
fn hanging_socket(path: &Path) -> std::thread::JoinHandle<()> {
    let l = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming() {
            match c {
                Ok(c) => held.push(c),
                Err(_) => break,
            }
            if held.len() > 1000 {
                break;
            }
        }
    })
}

/// A unix socket that answers every request with garbage.
fn garbage_socket(path: &Path) {
    let l = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{garbage!");
        }
    });
}

#[test]
fn runtimes_that_hang_or_answer_garbage_never_stop_the_series() {
    let dir = tempfile::tempdir().unwrap();
    let mut rt = Runtime::new(dir.path());
    let (id, pid) = rt.run("gg-flaky", "m-flaky");
    let hang = dir.path().join("hang.sock");
    let garbage = dir.path().join("garbage.sock");
    let _h = hanging_socket(&hang);
    garbage_socket(&garbage);
    // The real service will come up later on the socket path that hangs at first.
    let d = Daemon::start(
        30,
        &format!(
            "{}\nprobes = ( {{ name = \"system_infos\"; param = \"-t 1 -P 64 -f {pid}\"; switch = \"on\"; }} );",
            container_section(&[&hang, &garbage], "request_timeout_ms = 300; resync_period = 5;")
        ),
        |probes| install_probe(probes, "system_infos", "probes/system_infos"),
    );
    let short = format!("container_id=\"{}\"", &id[..12]);
    let started = Instant::now();
    wait_for(Duration::from_secs(30), || {
        let s = d.scrape();
        let l = lines_of(&s, "gala_gopher_proc_", pid);
        (!l.is_empty() && l.iter().all(|l| l.contains(&short))).then_some(())
    })
    .unwrap_or_else(|| panic!("series without a runtime:\n{}\n{}", d.scrape(), d.log()));
    assert!(started.elapsed() < Duration::from_secs(20));
    let s = d.scrape();
    assert!(
        lines_of(&s, "gala_gopher_proc_", pid)
            .iter()
            .all(|l| !l.contains("container_name=")),
        "a name without a runtime?"
    );
    wait_for(Duration::from_secs(20), || {
        let s = d.scrape();
        let t = sample(
            &s,
            "gala_gopher_self_container_runtime_errors_total{kind=\"timeout\"",
        )
        .unwrap_or(0.0);
        let p = sample(
            &s,
            "gala_gopher_self_container_runtime_errors_total{kind=\"protocol\"",
        )
        .unwrap_or(0.0);
        (t >= 1.0 && p >= 1.0).then_some(())
    })
    .unwrap_or_else(|| panic!("runtime errors not counted:\n{}", d.scrape()));
    let status = d.status();
    let text = status["containers"].to_string();
    assert!(text.contains("error"), "{text}");
    // Scrapes stay fast while a runtime hangs.
    let t = Instant::now();
    for _ in 0..5 {
        d.scrape();
    }
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "scrapes slowed down: {:?}",
        t.elapsed()
    );

    // The runtime recovers on the hanging path: the labels fill in.
    std::fs::remove_file(&hang).unwrap();
    rt.socket = hang.clone();
    rt.serve();
    wait_for(Duration::from_secs(40), || {
        let s = d.scrape();
        let l = lines_of(&s, "gala_gopher_proc_", pid);
        (!l.is_empty() && l.iter().all(|l| l.contains("container_name=\"gg-flaky\""))).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "labels did not fill in after recovery:\n{}\n{}",
            d.scrape(),
            d.log()
        )
    });
}

#[test]
fn tcp_links_of_a_container_process_carry_its_labels() {
    let dir = tempfile::tempdir().unwrap();
    let mut rt = Runtime::new(dir.path());
    rt.serve();
    let d = Daemon::start(
        60,
        &format!(
            "{}\nprobes = ( {{ name = \"tcpprobe\"; param = \"-t 1\"; switch = \"on\"; }} );",
            container_section(&[&rt.socket], "")
        ),
        |probes| install_probe(probes, "tcpprobe", "probes/tcp"),
    );
    d.wait_scrape("gala_gopher_bpf_probe_events", Duration::from_secs(30));
    // A server in a container on the host's network namespace; the test is its client.
    let port = free_port();
    let id = rt
        .podman
        .run_args(&[
            "run",
            "-d",
            "--network",
            "host",
            "--name",
            "gg-tcp-srv",
            IMAGE,
            "/bin/nc",
            "-l",
            "-p",
            &port.to_string(),
        ])
        .expect("podman run nc");
    let server = rt.podman.pid("gg-tcp-srv").unwrap();
    let mut c = wait_for(Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .expect("nc in the container never listened");
    c.write_all(&[5u8; 50_000]).unwrap();
    let want = [
        format!("container_id=\"{}\"", &id[..12]),
        "container_name=\"gg-tcp-srv\"".to_string(),
        format!("container_image=\"{IMAGE}\""),
    ];
    wait_for(Duration::from_secs(30), || {
        let s = d.scrape();
        let l = lines_of(&s, "gala_gopher_tcp_link_", server);
        (!l.is_empty() && l.iter().all(|l| want.iter().all(|w| l.contains(w)))).then_some(())
    })
    .unwrap_or_else(|| panic!("the container's tcp link lacks its labels:\n{}", d.scrape()));
    // The client (this test, a host process) has its own links without container labels.
    let s = d.scrape();
    for l in lines_of(&s, "gala_gopher_tcp_link_", std::process::id()) {
        assert!(
            !l.contains("container_id="),
            "host process with container labels: {l}"
        );
    }
    drop(c);
}
