//! HTTPS on the metrics server (`web_server.ssl_auth = "on"`) against real clients: curl,
//! Python's `ssl` + `http.client`, and a real Prometheus server; client certificates with
//! `ca_file`; plain-HTTP and stalled TLS clients; and `--check-config` refusing bad TLS and
//! token files by `FILE:LINE: key`. Certificates are made per test with the `openssl` CLI.

mod daemon_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use daemon_support::*;

const BIN: &str = env!("CARGO_BIN_EXE_gala-gopher");

/// Run `openssl` in `dir`; panics with its output on failure.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl CLI installed (apt openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A test CA, a server certificate for 127.0.0.1, a client certificate, and a client
/// certificate from another CA. Keys are mode 0600.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
        };
        for ca in ["ca", "rogue-ca"] {
            pki.openssl(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-days",
                "2",
                "-subj",
                &format!("/CN={ca}"),
            ]);
        }
        pki.leaf(
            "server",
            "ca",
            2,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        );
        pki.leaf("client", "ca", 3, "extendedKeyUsage=clientAuth\n");
        pki.leaf("rogue", "rogue-ca", 4, "extendedKeyUsage=clientAuth\n");
        for f in [
            "ca.key",
            "rogue-ca.key",
            "server.key",
            "client.key",
            "rogue.key",
        ] {
            chmod(&pki.path(f), 0o600);
        }
        pki
    }

    fn openssl(&self, args: &[&str]) {
        openssl(self.dir.path(), args);
    }

    /// `NAME.key` (EC P-256, PKCS#8) and `NAME.pem` signed by `ca` with extensions `ext`.
    fn leaf(&self, name: &str, ca: &str, serial: u32, ext: &str) {
        let ext_file = format!("{name}.ext");
        std::fs::write(
            self.path(&ext_file),
            format!("basicConstraints=critical,CA:FALSE\n{ext}"),
        )
        .unwrap();
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        self.openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &key,
        ]);
        self.openssl(&[
            "req",
            "-new",
            "-key",
            &key,
            "-subj",
            &format!("/CN={name}"),
            "-out",
            &csr,
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-set_serial",
            &serial.to_string(),
            "-days",
            "2",
            "-extfile",
            &ext_file,
            "-out",
            &pem,
        ]);
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

/// The daemon serving `/metrics` over TLS with `pki`'s server certificate.
struct TlsDaemon {
    dir: tempfile::TempDir,
    port: u16,
    _child: KillOnDrop,
}

/// Write a config serving HTTPS on `port`. `global` is added to the `global` group, `web` (line
/// 8) to the `web_server` group, whose key and certificate are `pki`'s server ones on lines 6
/// and 7 unless `web` sets them; `extra` starts on line 10.
fn write_conf(dir: &Path, port: u16, pki: &Pki, global: &str, web: &str, extra: &str) -> PathBuf {
    for d in ["probes", "meta"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let default = |key: &str, file: &str| {
        if web.contains(key) {
            format!("# {key} below")
        } else {
            format!("{key} = \"{}\";", pki.p(file))
        }
    };
    // Each daemon its own command socket (or none), never the system's.
    let own = if global.contains("cmd_socket") {
        String::new()
    } else {
        "cmd_socket = \"\"; probes_init = \"\";".to_string()
    };
    let conf = format!(
        "global = {{ log_level = \"info\"; probes_dir = \"{p}\"; meta_dir = \"{m}\"; machine_id = \"{MACHINE_ID}\"; {own} {global} }};\n\
         web_server = {{\n  bind_addr = \"127.0.0.1\";\n  port = {port};\n  ssl_auth = \"on\";\n  \
         {key}\n  {cert}\n{web}\n}};\n{extra}\n",
        p = dir.join("probes").display(),
        m = dir.join("meta").display(),
        key = default("private_key", "server.key"),
        cert = default("cert_file", "server.pem"),
    );
    let path = dir.join("gala-gopher.conf");
    std::fs::write(&path, conf).unwrap();
    path
}

impl TlsDaemon {
    fn start(pki: &Pki, web: &str, env: &[(&str, &str)]) -> TlsDaemon {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = write_conf(dir.path(), port, pki, "", web, "");
        let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
        let child = Command::new(BIN)
            .arg("-c")
            .arg(&conf)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn gala-gopher");
        let d = TlsDaemon {
            dir,
            port,
            _child: KillOnDrop(child),
        };
        let up = wait_for(Duration::from_secs(20), || {
            let (ok, out, _) = d.curl(
                pki,
                &[
                    "--cert",
                    &pki.p("client.pem"),
                    "--key",
                    &pki.p("client.key"),
                ],
            );
            (ok && out.ends_with("\n200")).then_some(())
        });
        assert!(
            up.is_some(),
            "daemon did not serve HTTPS; log:\n{}",
            d.log()
        );
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// `curl --cacert ca.pem https://127.0.0.1:PORT/metrics` plus `args`: (success, body + "\n"
    /// + status code, stderr).
    fn curl(&self, pki: &Pki, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert", &pki.p("ca.pem")])
            .args(["-w", "\n%{http_code}"])
            .args(args)
            .arg(format!("https://127.0.0.1:{}/metrics", self.port))
            .output()
            .expect("curl installed");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A scrape over TLS with the client certificate.
    fn scrape(&self, pki: &Pki) -> String {
        let (ok, out, err) = self.curl(
            pki,
            &[
                "--cert",
                &pki.p("client.pem"),
                "--key",
                &pki.p("client.key"),
            ],
        );
        assert!(
            ok && out.ends_with("\n200"),
            "{out}{err}\nlog:\n{}",
            self.log()
        );
        out
    }
}

/// Python's `ssl` + `http.client` GET /metrics: stdout `STATUS VERSION ALPN`, or `error ...`
/// with exit 1.
fn python_get(port: u16, ca: &str, client: Option<(&str, &str)>) -> (bool, String) {
    const SCRIPT: &str = r#"
import http.client, ssl, sys
port, ca, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["h2", "http/1.1"])
if cert:
    ctx.load_cert_chain(cert, key)
try:
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    c.request("GET", "/metrics")
    r = c.getresponse()
    body = r.read()
    print(r.status, c.sock.version(), c.sock.selected_alpn_protocol(), b"gala_gopher_self_" in body)
except (ssl.SSLError, OSError) as e:
    print("error", type(e).__name__, e)
    sys.exit(1)
"#;
    let (cert, key) = client.unwrap_or(("", ""));
    let out = Command::new("python3")
        .args(["-c", SCRIPT, &port.to_string(), ca, cert, key])
        .output()
        .expect("python3 installed");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn curl_and_python_scrape_over_tls_and_plain_http_is_refused() {
    let pki = Pki::new();
    let d = TlsDaemon::start(&pki, "", &[]);

    // A later `-w` replaces the helper's.
    let (ok, out, err) = d.curl(
        &pki,
        &["-o", "/dev/null", "-w", "\n%{http_code} %{http_version}"],
    );
    assert!(ok && out.ends_with("\n200 1.1"), "{out}{err}");
    // TLS 1.2 too; curl offers h2 by ALPN and gets HTTP/1.1.
    let (ok, out, err) = d.curl(&pki, &["--tlsv1.2", "--tls-max", "1.2", "--http2"]);
    assert!(
        ok && out.contains("gala_gopher_self_") && out.ends_with("\n200"),
        "{out}{err}"
    );

    let (ok, out) = python_get(d.port, &pki.p("ca.pem"), None);
    assert!(ok, "{out}\nlog:\n{}", d.log());
    assert_eq!(out.trim(), "200 TLSv1.3 http/1.1 True");

    // Plain HTTP to the TLS port: a 400 that says why, then the server goes on serving.
    let (status, body) = http(d.port, "GET", "/metrics").expect("plain request");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("HTTP request to an HTTPS server"), "{body}");
    // A client that does not trust the certificate fails on its side.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .arg(format!("https://127.0.0.1:{}/metrics", d.port))
        .output()
        .unwrap();
    assert!(!out.status.success());

    let scrape = d.scrape(&pki);
    let failures = sample(
        &scrape,
        "gala_gopher_self_http_tls_handshake_failures_total{server=\"web_server\"",
    );
    assert!(failures >= Some(2.0), "{scrape}");
    assert!(
        d.log().contains("TLS handshake with 127.0.0.1:"),
        "{}",
        d.log()
    );
}

#[test]
fn ca_file_requires_a_client_certificate_it_signed() {
    let pki = Pki::new();
    let ca = pki.p("ca.pem");
    let d = TlsDaemon::start(&pki, &format!("  ca_file = \"{ca}\";"), &[]);

    let (ok, out, err) = d.curl(&pki, &[]);
    assert!(!ok, "no client certificate must fail: {out}");
    assert!(!out.ends_with("\n200"), "{out}{err}");
    let (ok, out) = python_get(d.port, &ca, None);
    assert!(!ok && out.starts_with("error"), "{out}");
    let (ok, out, _) = d.curl(
        &pki,
        &["--cert", &pki.p("rogue.pem"), "--key", &pki.p("rogue.key")],
    );
    assert!(!ok, "a certificate of another CA must fail: {out}");

    let (ok, out) = python_get(
        d.port,
        &ca,
        Some((&pki.p("client.pem"), &pki.p("client.key"))),
    );
    assert!(ok, "{out}\nlog:\n{}", d.log());
    assert!(out.starts_with("200 TLSv1.3 http/1.1 True"), "{out}");
    let scrape = d.scrape(&pki);
    let failures = sample(
        &scrape,
        "gala_gopher_self_http_tls_handshake_failures_total{server=\"web_server\"",
    );
    assert!(failures >= Some(3.0), "{scrape}");
}

/// Whether the server closed `s` within `within`; panics if it sent anything.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!("unexpected bytes: {:?}", &buf[..n]),
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn stalled_tls_clients_are_dropped_at_the_header_timeout_and_hold_a_slot() {
    let pki = Pki::new();
    let d = TlsDaemon::start(
        &pki,
        "  max_connections = 3;",
        &[("GALA_GOPHER_WEB_SERVER__HEADER_READ_TIMEOUT_SECS", "2")],
    );
    let t0 = Instant::now();
    // Connects and sends nothing; sends the first bytes of a handshake record and stops.
    let mut silent = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    let mut partial = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    partial.write_all(&[0x16, 0x03, 0x01, 0x02]).unwrap();
    // Others are served meanwhile.
    let scrape = d.scrape(&pki);
    assert!(scrape.contains("gala_gopher_self_"));
    for s in [&mut silent, &mut partial] {
        assert!(closed_within(s, Duration::from_secs(8)), "not closed");
        // Not before the limit (2 s from accept), and not much after it.
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(1900) && took < Duration::from_secs(8),
            "{took:?}"
        );
    }

    // A handshake in progress holds a connection slot: three stalled clients fill the limit.
    // On a loaded machine a connection closed just before may still be counted for a moment
    // (then one of the three is the refused one): try again with three fresh ones.
    let mut stalled: Vec<TcpStream> = Vec::new();
    let mut fourth = String::new();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(300));
        stalled = (0..3)
            .map(|_| TcpStream::connect(("127.0.0.1", d.port)).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let (ok, out, err) = d.curl(&pki, &[]);
        if !ok {
            fourth.clear();
            break;
        }
        fourth = format!("{out}{err}");
        stalled.clear();
    }
    assert!(
        fourth.is_empty(),
        "a fourth connection must be refused: {fourth}"
    );
    for s in &mut stalled {
        assert!(closed_within(s, Duration::from_secs(5)));
    }
    let scrape = d.scrape(&pki);
    let header = sample(
        &scrape,
        "gala_gopher_self_http_timeouts_total{server=\"web_server\",kind=\"header\"",
    );
    assert!(header >= Some(5.0), "{scrape}");
    let failures = sample(
        &scrape,
        "gala_gopher_self_http_tls_handshake_failures_total{server=\"web_server\"",
    );
    assert!(failures >= Some(5.0), "{scrape}");
    let refused = sample(
        &scrape,
        "gala_gopher_self_http_connections_refused_total{server=\"web_server\"",
    );
    assert!(refused >= Some(1.0), "{scrape}");
}

#[test]
fn prometheus_scrapes_over_mutual_tls() {
    let pki = Pki::new();
    let d = TlsDaemon::start(&pki, &format!("  ca_file = \"{}\";", pki.p("ca.pem")), &[]);
    let work = tempfile::tempdir().unwrap();
    let conf = work.path().join("prometheus.yml");
    std::fs::write(
        &conf,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n  - job_name: gala_gopher\n    scheme: https\n    \
             tls_config: {{ca_file: '{ca}', cert_file: '{cert}', key_file: '{key}'}}\n    \
             static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n",
            ca = pki.p("ca.pem"),
            cert = pki.p("client.pem"),
            key = pki.p("client.key"),
            port = d.port,
        ),
    )
    .unwrap();
    let prom = Prometheus::start(&conf, work.path());
    let prom_port = prom.port;
    let query = "/api/v1/query?query=gala_gopher_self_http_connections_accepted_total";
    let answer = wait_for(Duration::from_secs(60), || {
        let (status, body) = http(prom_port, "GET", query).ok()?;
        (status == 200 && body.contains("\"value\"")).then_some(body)
    })
    .unwrap_or_else(|| {
        let (_, targets) = http(prom_port, "GET", "/api/v1/targets").unwrap_or_default();
        panic!("no sample; targets: {targets}\nlog:\n{}", d.log())
    });
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let result = &v["data"]["result"][0];
    assert_eq!(result["metric"]["machine_id"], MACHINE_ID);
    assert_eq!(result["metric"]["job"], "gala_gopher");
    assert_eq!(result["metric"]["server"], "web_server");
    let (_, targets) = http(prom_port, "GET", "/api/v1/targets?state=active").unwrap();
    assert!(targets.contains("\"health\":\"up\""), "{targets}");
    assert!(targets.contains("\"scrapeUrl\":\"https://"), "{targets}");
}

fn run(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A daemon that wrongly starts is stopped after a while rather than hanging the test.
    let end = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

/// The one error line of `--check-config`, after checking the daemon refuses with the same line.
fn refusal(conf: &Path) -> String {
    let conf = conf.to_str().unwrap();
    let check = run(&["--check-config", "-c", conf]);
    let err = String::from_utf8_lossy(&check.stderr).into_owned();
    assert_eq!(check.status.code(), Some(2), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("gala-gopher: invalid configuration: "))
        .unwrap_or_else(|| panic!("no error line: {err}"))
        .to_string();
    let daemon = run(&["-c", conf]);
    let daemon_err = String::from_utf8_lossy(&daemon.stderr);
    assert_eq!(daemon.status.code(), Some(2), "{daemon_err}");
    assert!(
        daemon_err.lines().any(|l| l == line),
        "{daemon_err}\n{line}"
    );
    line
}

#[test]
fn check_config_names_file_line_and_key_of_bad_tls_and_token_files() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    chmod(&garbage, 0o600);
    let open_key = dir.path().join("open.key");
    std::fs::copy(pki.path("server.key"), &open_key).unwrap();
    chmod(&open_key, 0o644);
    let token = dir.path().join("token");
    std::fs::write(&token, "tok\n").unwrap();
    chmod(&token, 0o640);
    let g = garbage.display().to_string();
    // (case, web_server lines, extra, line of the key, key, what the message says)
    let cases: Vec<(&str, String, &str, u32, &str, String)> = vec![
        (
            "missing cert",
            "  cert_file = \"/nonexistent/cert.pem\";".into(),
            "",
            8,
            "web_server.cert_file",
            "file /nonexistent/cert.pem does not exist".into(),
        ),
        (
            "not PEM",
            format!("  cert_file = \"{g}\";"),
            "",
            8,
            "web_server.cert_file",
            format!("{g}: no certificate"),
        ),
        (
            "world-readable key",
            format!("  private_key = \"{}\";", open_key.display()),
            "",
            8,
            "web_server.private_key",
            format!(
                "{} is accessible by group or others (mode 0644)",
                open_key.display()
            ),
        ),
        (
            "key of another certificate",
            format!("  private_key = \"{}\";", pki.p("client.key")),
            "",
            8,
            "web_server.private_key",
            "does not belong to the first certificate".into(),
        ),
        (
            "bad ca_file",
            format!("  ca_file = \"{g}\";"),
            "",
            8,
            "web_server.ca_file",
            format!("{g}: no certificate"),
        ),
        (
            "readable token file",
            String::new(),
            "rest_api_server = {\n  token_file = \"TOKEN\";\n};",
            11,
            "rest_api_server.token_file",
            "accessible by group or others (mode 0640)".into(),
        ),
        (
            "token and token_file",
            String::new(),
            "rest_api_server = {\n  token = \"x\";\n  token_file = \"TOKEN\";\n};",
            12,
            "rest_api_server.token_file",
            "not both".into(),
        ),
    ];
    for (name, web, extra, line, key, says) in cases {
        let case = dir.path().join(name.replace(' ', "_"));
        std::fs::create_dir_all(&case).unwrap();
        let extra = extra.replace("TOKEN", &token.display().to_string());
        let global = if extra.is_empty() {
            ""
        } else {
            "rest_api_on = true;"
        };
        let conf = write_conf(&case, free_port(), &pki, global, &web, &extra);
        let got = refusal(&conf);
        let want = format!("{}:{line}: {key}: ", conf.display());
        assert!(got.contains(&want), "{name}: {got}\nwant {want}");
        assert!(got.contains(&says), "{name}: {got}\nwant {says}");
    }
}

#[test]
fn check_config_accepts_every_supported_key_format() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let keys: [(&str, &[&str]); 5] = [
        (
            "rsa-pkcs1",
            &["genrsa", "-traditional", "-out", "rsa-pkcs1.key", "2048"],
        ),
        (
            "rsa-pkcs8",
            &["genpkey", "-algorithm", "RSA", "-out", "rsa-pkcs8.key"],
        ),
        (
            "ec-sec1",
            &[
                "ecparam",
                "-name",
                "secp384r1",
                "-genkey",
                "-noout",
                "-out",
                "ec-sec1.key",
            ],
        ),
        (
            "ec-pkcs8",
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "ec-pkcs8.key",
            ],
        ),
        (
            "ed25519",
            &["genpkey", "-algorithm", "ed25519", "-out", "ed25519.key"],
        ),
    ];
    for (name, gen) in keys {
        openssl(d, gen);
        let key = d.join(format!("{name}.key"));
        chmod(&key, 0o600);
        let cert = format!("{name}.pem");
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-key",
                &format!("{name}.key"),
                "-subj",
                "/CN=localhost",
                "-days",
                "2",
                "-out",
                &cert,
            ],
        );
        let head = std::fs::read_to_string(&key).unwrap();
        let conf = d.join(format!("{name}.conf"));
        std::fs::create_dir_all(d.join("meta")).unwrap();
        std::fs::write(
            &conf,
            format!(
                "global = {{ meta_dir = \"{m}\"; probes_dir = \"{m}\"; }};\n\
                 web_server = {{ port = {port}; ssl_auth = \"on\"; private_key = \"{k}\"; cert_file = \"{c}\"; }};\n",
                m = d.join("meta").display(),
                port = free_port(),
                k = key.display(),
                c = d.join(&cert).display(),
            ),
        )
        .unwrap();
        let out = run(&["--check-config", "-c", conf.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name} ({}): {}",
            head.lines().next().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr)
        );
        let summary = String::from_utf8_lossy(&out.stdout);
        assert!(summary.contains("(https://127.0.0.1:"), "{summary}");
    }
}

/// The REST API over HTTPS with client certificates and a bearer token: a client with the CA
/// and its certificate reads, a client without a certificate fails the handshake, a write
/// without the token gets 401 and with it reaches the handler.
#[test]
fn rest_api_over_mutual_tls_with_a_token() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "tls-token-1\n").unwrap();
    chmod(&token, 0o600);
    let (web_port, rest_port) = (free_port(), free_port());
    let rest = format!(
        "rest_api_server = {{\n  bind_addr = \"127.0.0.1\";\n  port = {rest_port};\n  ssl_auth = \"on\";\n  \
         private_key = \"{}\";\n  cert_file = \"{}\";\n  ca_file = \"{}\";\n  token_file = \"{}\";\n}};",
        pki.p("server.key"),
        pki.p("server.pem"),
        pki.p("ca.pem"),
        token.display()
    );
    let global = format!(
        "rest_api_on = true; cmd_socket = \"{0}/cmd.sock\"; probes_init = \"{0}/probes.init\";",
        dir.path().display()
    );
    let conf = write_conf(dir.path(), web_port, &pki, &global, "", &rest);
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let _child = KillOnDrop(
        Command::new(BIN)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn gala-gopher"),
    );
    let curl = |args: &[&str], method: &str, path: &str| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert", &pki.p("ca.pem")])
            .args(["-w", "\n%{http_code}", "-X", method])
            .args(args)
            .arg(format!("https://127.0.0.1:{rest_port}{path}"))
            .output()
            .expect("curl installed");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let cert = [
        "--cert",
        &pki.p("client.pem"),
        "--key",
        &pki.p("client.key"),
    ];
    let listed = wait_for(Duration::from_secs(20), || {
        let (ok, out) = curl(&cert, "GET", "/probes");
        (ok && out.ends_with("\n200")).then_some(out)
    });
    let daemon_log = || std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
    let listed = listed.unwrap_or_else(|| panic!("REST API not served; log:\n{}", daemon_log()));
    assert!(listed.starts_with('['), "{listed}");

    let (ok, out) = curl(&[], "GET", "/probes");
    assert!(
        !ok && !out.ends_with("\n200"),
        "no client certificate must fail: {out}"
    );

    let put = |extra: &[&str]| {
        let mut args = cert.to_vec();
        args.extend_from_slice(&["-d", "json={\"state\":\"running\"}"]);
        args.extend_from_slice(extra);
        curl(&args, "PUT", "/nosuch")
    };
    let (ok, out) = put(&[]);
    assert!(ok && out.ends_with("\n401"), "{out}");
    let (ok, out) = put(&["-H", "Authorization: Bearer tls-token-1"]);
    assert!(ok && out.ends_with("\n400"), "{out}");
    assert!(out.contains("invalid probe name nosuch"), "{out}");
}
