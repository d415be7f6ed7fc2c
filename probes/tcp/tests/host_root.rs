//! The host root: with `GOPHER_HOST_PATH=<dir>`, the owners of connections older than the probe
//! come from `<dir>/proc` (`net/tcp*` for the socket inodes, `<pid>/fd` for the holders). The
//! fake tree says a process that does not exist here, named `tcp-fake-owner`, holds this
//! test's sockets: the records must name it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tcpprobe");
/// A pid above the default `pid_max` (4194304) of no live process.
const FAKE_PID: u32 = 4_000_003;

/// The socket inode of `fd` (what `/proc/net/tcp` lists and `/proc/<pid>/fd` links name).
fn inode(fd: &impl AsRawFd) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .expect("stat socket")
        .ino()
}

/// `<root>/proc/net/tcp{,6}` copied from the real ones, and [`FAKE_PID`] holding `inodes`.
fn fake_host(root: &Path, inodes: &[u64]) {
    let net = root.join("proc/net");
    std::fs::create_dir_all(&net).expect("mkdir");
    for f in ["tcp", "tcp6"] {
        std::fs::copy(format!("/proc/net/{f}"), net.join(f)).expect("copy /proc/net/tcp*");
    }
    let pid = root.join(format!("proc/{FAKE_PID}"));
    std::fs::create_dir_all(pid.join("fd")).expect("mkdir fd");
    std::fs::write(pid.join("comm"), "tcp-fake-owner\n").expect("comm");
    for (i, ino) in inodes.iter().enumerate() {
        std::os::unix::fs::symlink(format!("socket:[{ino}]"), pid.join(format!("fd/{}", i + 3)))
            .expect("fd link");
    }
}

#[test]
fn owners_of_older_connections_come_from_the_host_root() {
    assert!(
        !Path::new(&format!("/proc/{FAKE_PID}")).exists(),
        "pid {FAKE_PID} exists on this machine"
    );
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let (mut s, _) = listener.accept().expect("accept");
    let dir = tempfile::tempdir().expect("tempdir");
    fake_host(dir.path(), &[inode(&listener), inode(&c), inode(&s)]);

    let mut child = Command::new(BIN)
        .args(["-t", "1"])
        .env("GOPHER_HOST_PATH", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tcpprobe");
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (err_tx, err_lines) = mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = err_tx.send(line);
        }
    });
    let mut log = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log.contains("[INFO] attached") {
        let left = deadline.saturating_duration_since(Instant::now());
        match err_lines.recv_timeout(left) {
            Ok(l) => log.push_str(&(l + "\n")),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("probe did not attach:\n{log}");
            }
        }
    }
    assert!(log.contains("older sockets named: 3"), "{log}");

    c.write_all(&[7u8; 500]).expect("write");
    let mut got = [0u8; 500];
    s.read_exact(&mut got).expect("read");
    let mut server_row = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while server_row.is_none() && Instant::now() < deadline {
        let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let rec: Vec<String> = line
            .trim_matches('|')
            .split('|')
            .map(String::from)
            .collect();
        // table, tgid, comm, role, client_ip, toa_client_ip, server_ip, client_port,
        // server_port, protocol, …
        if rec[0] == "tcp_tx_rx" && rec[3] == "server" && rec[8] == port.to_string() {
            server_row = Some(rec);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let rec = server_row.expect("a tcp_tx_rx record of the server side");
    assert_eq!(rec[1], FAKE_PID.to_string(), "{rec:?}");
    assert_eq!(rec[2], "tcp-fake-owner", "{rec:?}");
}
