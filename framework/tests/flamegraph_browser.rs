//! Flame graphs from the real probe to a real browser: the real daemon with the shipped
//! `stackprobe` (started, retargeted and stopped through the REST API as upstream's users do),
//! two C programs with uniquely named hot functions, the daemon's `/flamegraph/` pages, and
//! headless Chromium rendering the served SVG under its Content-Security-Policy sandbox.
//!
//! Needs root (eBPF), `cc`, and `chromium` (Debian package `chromium`); without Chromium the
//! browser part is skipped with a notice, unless `CI` is set.

mod daemon_support;

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use daemon_support::{alive, free_port, http, install_probe, request, wait_for, Daemon};
use serde_json::Value;

const HOT_A: &str = "gg_browser_hot_4714";
const HOT_B: &str = "gg_browser_hot_b_4715";
/// On-CPU sampling rate for the default `perf_sample_period` (10 ms, kept off 100 Hz).
const HZ: f64 = 99.0;
/// How long each process is profiled.
const PROFILE_FOR: Duration = Duration::from_secs(4);

/// A busy program whose time is spent in `HOT_FN`, called from `main` until `argv[1]` seconds
/// have passed.
const HOT_SRC: &str = r#"
#include <stdlib.h>
#include <time.h>
volatile unsigned long sink;
__attribute__((noinline)) void HOT_FN(void)
{
    for (unsigned long i = 0; i < 20000000UL; i++)
        sink += i * 7;
}
int main(int argc, char **argv)
{
    time_t end = time(NULL) + (argc > 1 ? atoi(argv[1]) : 60);
    while (time(NULL) < end)
        HOT_FN();
    return 0;
}
"#;

/// `HOT_SRC` with its hot function named `func`, compiled into `dir/name`.
fn compile(dir: &Path, name: &str, func: &str) -> PathBuf {
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, HOT_SRC.replace("HOT_FN", func)).unwrap();
    let bin = dir.join(name);
    let out = Command::new("cc")
        .args(["-g", "-O0", "-fno-omit-frame-pointer", "-o"])
        .arg(&bin)
        .arg(&c)
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// A started process killed and reaped when dropped.
struct Running(Child);

impl Running {
    fn start(bin: &Path) -> Running {
        let child = Command::new(bin)
            .arg("60")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn workload");
        Running(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// CPU time used so far (user + system), from `/proc/<pid>/stat`.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        // utime and stime: fields 14 and 15 of stat(5), 12 and 13 after the comm.
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_millis(ticks * 1000 / hz)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `PUT /flamegraph` as `curl -X PUT -d json='…'` sends it; fails on anything but 200.
fn put(rest: u16, doc: &str, daemon: &Daemon) -> Value {
    let (status, reply) = request(rest, "PUT", "/flamegraph", &format!("json={doc}"));
    assert_eq!(status, 200, "PUT {doc}: {reply}\nlog:\n{}", daemon.log());
    reply
}

/// The probe as the REST API reports it (`GET /flamegraph`).
fn probe_state(rest: u16) -> Value {
    let (status, body) = request(rest, "GET", "/flamegraph", "");
    assert_eq!(status, 200, "{body}");
    body
}

/// The profiles `index.json` lists for `pid` and `kind`.
fn indexed(flame: &Path, pid: u32, kind: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(flame.join("index.json")).unwrap_or_default();
    let index: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    index["profiles"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter(|p| p["pid"] == pid && p["kind"] == kind)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn stackprobe_flame_graphs_reach_a_browser_through_the_daemon() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let flame = tmp.path().join("flame");
    std::fs::create_dir(&flame).unwrap();
    let bin_a = compile(tmp.path(), "gg_browser_a", HOT_A);
    let bin_b = compile(tmp.path(), "gg_browser_b", HOT_B);

    let rest = free_port();
    let daemon = Daemon::start_env(
        60,
        &format!("rest_api_server = {{ bind_addr = \"127.0.0.1\"; port = {rest}; }};\n"),
        &[("GALA_GOPHER_GLOBAL__REST_API_ON", "true")],
        |probes| install_probe(probes, "stackprobe", "probes/stack"),
    );
    // The shipped probe is known (stopped) once discovery has found it.
    wait_for(Duration::from_secs(15), || {
        let (status, _) = request(rest, "GET", "/flamegraph", "");
        (status == 200).then_some(())
    })
    .unwrap_or_else(|| panic!("stackprobe not discovered; log:\n{}", daemon.log()));

    // 1. Profile process A, with the params of upstream's documented request (its older
    //    `svg_dir` included: accepted, not used).
    let a = Running::start(&bin_a);
    put(
        rest,
        &format!(
            r#"{{"cmd":{{"probe":["oncpu"]}},"snoopers":{{"proc_id":[{}]}},"params":{{"perf_sample_period":10,"svg_period":30,"svg_dir":"/var/log/gala-gopher/stacktrace","flame_dir":"{}","multi_instance":1,"native_stack":0}},"state":"running"}}"#,
            a.pid(),
            flame.display()
        ),
        &daemon,
    );
    let probe_pid = probe_state(rest)["pid"].as_i64().expect("probe pid");
    assert!(alive(probe_pid as i32), "probe {probe_pid} runs");
    wait_for(Duration::from_secs(20), || {
        daemon.log().contains("stackprobe running").then_some(())
    })
    .unwrap_or_else(|| panic!("stackprobe did not start; log:\n{}", daemon.log()));
    assert!(
        daemon
            .log()
            .contains("svg_dir /var/log/gala-gopher/stacktrace is not used"),
        "the unused svg_dir is named; log:\n{}",
        daemon.log()
    );
    // Sampling is on (the probe logs that line once its perf events are attached).
    let cpu_a_at_start = a.cpu();
    // cpu-clock samples count stolen time, run time does not (probe_sdk::steal).
    let ticks = probe_sdk::steal::cpu_ticks();
    std::thread::sleep(PROFILE_FOR);

    // 2. Move the snoopers to process B: the probe follows over its control channel.
    let b = Running::start(&bin_b);
    put(
        rest,
        &format!(r#"{{"snoopers":{{"proc_id":[{}]}}}}"#, b.pid()),
        &daemon,
    );
    // CPU time A had while it was selected (give or take the log's and the control
    // channel's latency: lines are coalesced over 100 ms, the probe polls every 100 ms).
    let cpu_a_at_switch = a.cpu();
    let cpu_a_selected = cpu_a_at_switch.saturating_sub(cpu_a_at_start);
    let state = probe_state(rest);
    assert_eq!(
        state["pid"].as_i64(),
        Some(probe_pid),
        "no restart: {state}"
    );
    assert_eq!(state["restarts"].as_u64(), Some(0), "{state}");
    std::thread::sleep(PROFILE_FOR);
    let state = probe_state(rest);
    assert_eq!(
        state["pid"].as_i64(),
        Some(probe_pid),
        "no restart: {state}"
    );

    // 3. Stop: the probe writes the partial period before the daemon's grace runs out.
    let t_stop = Instant::now();
    let reply = put(rest, r#"{"state":"stopped"}"#, &daemon);
    let stop_took = t_stop.elapsed();
    assert!(!alive(probe_pid as i32), "probe {probe_pid} stopped");
    let (cpu_a, cpu_b) = (a.cpu(), b.cpu());
    let (pid_a, pid_b) = (a.pid(), b.pid());
    drop((a, b));
    let log = daemon.log();
    // The daemon's grace between SIGTERM and SIGKILL is 5 s.
    assert!(
        stop_took < Duration::from_secs(4) && !reply.to_string().contains("still stopping"),
        "the probe took {stop_took:?} to stop ({reply}):\n{log}"
    );

    let prof_a = indexed(&flame, pid_a, "oncpu");
    let prof_b = indexed(&flame, pid_b, "oncpu");
    assert_eq!(prof_a.len(), 1, "one profile of A: {prof_a:?}\n{log}");
    assert_eq!(prof_b.len(), 1, "one profile of B: {prof_b:?}\n{log}");
    // Samples follow CPU time (a cpu-clock event at HZ on every CPU), whatever the load of the
    // machine. A left the filter at the switch: its samples are bounded by the CPU time it had
    // used then, not by what it used until the stop. B entered it right after it started.
    let steal = probe_sdk::steal::inflation(ticks);
    let samples_a = prof_a[0]["samples"].as_f64().unwrap_or(0.0);
    let samples_b = prof_b[0]["samples"].as_f64().unwrap_or(0.0);
    let (min_a, max_a) = (
        HZ * cpu_a_selected.as_secs_f64() * 0.6,
        HZ * (cpu_a_selected.as_secs_f64() * steal + 0.6) * 1.1,
    );
    assert!(
        samples_a >= min_a && samples_a <= max_a,
        "A: {samples_a} samples, {min_a:.0}..={max_a:.0} expected for {cpu_a_selected:?} of \
         CPU while selected ({cpu_a:?} in all)"
    );
    // The bound tells: A kept running after the switch, unsampled.
    let after_switch = cpu_a.saturating_sub(cpu_a_at_switch);
    assert!(
        HZ * after_switch.as_secs_f64() >= 50.0,
        "A had only {after_switch:?} of CPU after the switch: the machine is too busy for this test"
    );
    let want_b = HZ * cpu_b.as_secs_f64();
    let max_b = want_b * steal * 1.2 + 10.0;
    assert!(
        samples_b >= want_b * 0.6 && samples_b <= max_b,
        "B: {samples_b} samples, ~{want_b:.0} expected for {cpu_b:?} of CPU (steal x{steal:.2})"
    );

    // 4. The daemon's pages: both processes listed, each SVG with its own hot function.
    let port = daemon.port;
    let (status, page) = http(port, "GET", "/flamegraph/").expect("listing");
    assert_eq!(status, 200);
    for pid in [pid_a, pid_b] {
        assert!(
            page.contains(&format!("<td class=\"n\">{pid}</td>"))
                && page.contains(&format!("href=\"{pid}/oncpu.svg\"")),
            "pid {pid} not listed:\n{page}"
        );
    }
    for (pid, hot, other) in [(pid_a, HOT_A, HOT_B), (pid_b, HOT_B, HOT_A)] {
        let (status, svg) = http(port, "GET", &format!("/flamegraph/{pid}/oncpu.svg")).unwrap();
        assert_eq!(status, 200, "{svg}");
        assert!(svg.contains("<svg"), "not an SVG: {svg:.200}");
        assert!(svg.contains(hot), "{hot} not in the SVG of {pid}");
        assert!(!svg.contains(other), "{other} in the SVG of {pid}");
    }
    // What the browser gets below: the SVG in a sandbox that still lets its script run.
    let head = response_head(port, &format!("/flamegraph/{pid_a}/oncpu.svg"));
    assert!(
        head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("content-security-policy:") && l.contains("sandbox allow-scripts")
        }),
        "{head}"
    );

    // 5. A real browser renders it.
    match chromium() {
        Some(chromium) => browse(&chromium, port, pid_a, tmp.path()),
        None if std::env::var_os("CI").is_some() => {
            panic!("chromium not installed (Debian package chromium); build.sh --check installs it")
        }
        None => eprintln!(
            "NOTICE: chromium not installed (Debian package chromium): browser checks skipped"
        ),
    }
    eprintln!(
        "flamegraph_browser: {:?} in all; stop took {stop_took:?}; A {samples_a} samples \
         (CPU {cpu_a:?}, {cpu_a_selected:?} while selected), B {samples_b} samples (CPU {cpu_b:?})",
        started.elapsed()
    );
}

/// The status line and headers of `GET path` on `port`.
fn response_head(port: u16, path: &str) -> String {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf);
    text.split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_string()
}

/// `chromium` on PATH.
fn chromium() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    })
}

/// What a Chromium run left: exit status (None: killed at the timeout), stdout, stderr.
struct BrowserRun {
    status: Option<ExitStatus>,
    stdout: Vec<u8>,
    stderr: String,
}

/// Longest a Chromium run may take.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs headless Chromium with `args` in its own process group (killed at the timeout, and its
/// left-over helpers after it exits), its profile, HOME and XDG dirs under `work`.
fn run_chromium(chromium: &Path, work: &Path, name: &str, args: &[String]) -> BrowserRun {
    let home = work.join(format!("chromium-{name}"));
    for d in ["profile", "config", "cache", "data", "runtime"] {
        std::fs::create_dir_all(home.join(d)).unwrap();
    }
    std::fs::set_permissions(
        home.join("runtime"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let out_path = home.join("stdout");
    let err_path = home.join("stderr");
    let mut child = Command::new(chromium)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
        ])
        .arg(format!(
            "--user-data-dir={}",
            home.join("profile").display()
        ))
        .args(args)
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_RUNTIME_DIR", home.join("runtime"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .process_group(0)
        .spawn()
        .expect("spawn chromium");
    let group = child.id() as i32;
    let status = wait_for(CHROMIUM_TIMEOUT, || child.try_wait().ok().flatten());
    // SAFETY: kill(2) on the process group this test created (its leader is our child).
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
    let _ = child.wait();
    let mut stdout = Vec::new();
    std::fs::File::open(&out_path)
        .and_then(|mut f| f.read_to_end(&mut stdout))
        .unwrap();
    BrowserRun {
        status,
        stdout,
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

/// Chromium loads the served SVG: its DOM has the hot function in a `<text>` element, the
/// inline script ran in the sandbox (a search from the URL marks the matches), and a screenshot
/// shows flame-coloured frames.
fn browse(chromium: &Path, port: u16, pid: u32, work: &Path) {
    let url = format!("http://127.0.0.1:{port}/flamegraph/{pid}/oncpu.svg");

    // The DOM after load, with timers run (inferno's init works from a setTimeout).
    let run = run_chromium(
        chromium,
        work,
        "dom",
        &[
            "--virtual-time-budget=3000".to_string(),
            "--dump-dom".to_string(),
            format!("{url}?s={HOT_A}"),
        ],
    );
    let dom = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.is_some_and(|s| s.success()),
        "chromium --dump-dom: {:?}\nstderr:\n{}",
        run.status,
        run.stderr
    );
    let texts = elements(&dom, "text");
    assert!(
        texts.iter().any(|t| t.contains(HOT_A)),
        "no <text> with {HOT_A} in the DOM ({} <text> elements): {texts:?}\nDOM head: {:.2000}",
        texts.len(),
        dom
    );
    assert!(
        elements(&dom, "title").iter().any(|t| t.contains(HOT_A)),
        "no <title> with {HOT_A}"
    );
    // The script ran in the sandbox (`sandbox allow-scripts`): the search from `?s=` filled in
    // the `<text id="matched">` element (the served SVG has it blank; its script has the words).
    let matched = |markup: &str| {
        elements(markup, "text")
            .into_iter()
            .find(|t| t.starts_with("Matched: "))
    };
    let (_, served) = http(port, "GET", &format!("/flamegraph/{pid}/oncpu.svg")).unwrap();
    assert!(
        served.contains("<text id=\"matched\""),
        "inferno's layout changed"
    );
    assert_eq!(matched(&served), None);
    let found = matched(&dom);
    assert!(
        found.as_deref().is_some_and(|t| t.ends_with('%')),
        "inferno's script did not run (no search result in the DOM):\n{:.3000}",
        dom
    );

    // A screenshot: a PNG with the hot palette's frames on it.
    let shot = work.join("shot.png");
    let run = run_chromium(
        chromium,
        work,
        "shot",
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1200,800".to_string(),
            "--hide-scrollbars".to_string(),
            url,
        ],
    );
    assert!(
        run.status.is_some_and(|s| s.success()),
        "chromium --screenshot: {:?}\nstderr:\n{}",
        run.status,
        run.stderr
    );
    let png = std::fs::read(&shot).expect("the screenshot was written");
    let image = Png::decode(&png);
    assert_eq!((image.width, image.height), (1200, 800));
    let colours: HashSet<[u8; 3]> = image.pixels().collect();
    // inferno's hot palette: red 205..=255, green 0..=230, blue 0..=55 (the background is a
    // light grey-to-yellow gradient, the text black).
    let frame_pixels = image
        .pixels()
        .filter(|[r, _, b]| *r >= 200 && *b <= 60)
        .count();
    let area = (image.width * image.height) as usize;
    assert!(
        colours.len() >= 10 && frame_pixels * 100 >= area,
        "screenshot not a flame graph: {} colours, {frame_pixels} of {area} pixels frame-coloured ({})",
        colours.len(),
        shot.display()
    );
}

/// Text content of every `<tag …>…</tag>` element in `markup` (no nesting inside).
fn elements(markup: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = markup;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        // `<title` must not match `<titlex`.
        if !after.starts_with(['>', ' ', '\n', '\t', '/']) {
            rest = after;
            continue;
        }
        let Some(gt) = after.find('>') else { break };
        let body = &after[gt + 1..];
        let Some(end) = body.find(&close) else { break };
        out.push(body[..end].to_string());
        rest = &body[end..];
    }
    out
}

/// An 8-bit RGB or RGBA PNG, decoded (no interlacing: what Chromium writes).
struct Png {
    width: u32,
    height: u32,
    channels: usize,
    data: Vec<u8>,
}

impl Png {
    fn decode(bytes: &[u8]) -> Png {
        const MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
        assert!(
            bytes.starts_with(MAGIC),
            "not a PNG ({} bytes)",
            bytes.len()
        );
        let mut pos = MAGIC.len();
        let (mut width, mut height, mut channels) = (0, 0, 0);
        let mut idat = Vec::new();
        while pos + 8 <= bytes.len() {
            let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
            let kind = &bytes[pos + 4..pos + 8];
            let body = &bytes[pos + 8..pos + 8 + len];
            match kind {
                b"IHDR" => {
                    width = u32::from_be_bytes(body[0..4].try_into().unwrap());
                    height = u32::from_be_bytes(body[4..8].try_into().unwrap());
                    let (depth, colour, interlace) = (body[8], body[9], body[12]);
                    assert_eq!((depth, interlace), (8, 0), "8-bit, not interlaced");
                    channels = match colour {
                        2 => 3,
                        6 => 4,
                        c => panic!("PNG colour type {c}"),
                    };
                }
                b"IDAT" => idat.extend_from_slice(body),
                b"IEND" => break,
                _ => {}
            }
            pos += 12 + len;
        }
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(idat.as_slice())
            .read_to_end(&mut raw)
            .expect("PNG image data inflates");
        let stride = width as usize * channels;
        assert_eq!(raw.len(), height as usize * (stride + 1), "PNG data size");
        let mut data = vec![0u8; height as usize * stride];
        for y in 0..height as usize {
            let filter = raw[y * (stride + 1)];
            let line = &raw[y * (stride + 1) + 1..(y + 1) * (stride + 1)];
            for x in 0..stride {
                let a = if x >= channels {
                    data[y * stride + x - channels]
                } else {
                    0
                };
                let b = if y > 0 { data[(y - 1) * stride + x] } else { 0 };
                let c = if x >= channels && y > 0 {
                    data[(y - 1) * stride + x - channels]
                } else {
                    0
                };
                let pred = match filter {
                    0 => 0,
                    1 => a,
                    2 => b,
                    3 => ((a as u16 + b as u16) / 2) as u8,
                    4 => paeth(a, b, c),
                    f => panic!("PNG filter {f}"),
                };
                data[y * stride + x] = line[x].wrapping_add(pred);
            }
        }
        Png {
            width,
            height,
            channels,
            data,
        }
    }

    /// RGB of every pixel.
    fn pixels(&self) -> impl Iterator<Item = [u8; 3]> + '_ {
        self.data
            .chunks_exact(self.channels)
            .map(|p| [p[0], p[1], p[2]])
    }
}

fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let p = a as i16 + b as i16 - c as i16;
    let (pa, pb, pc) = (
        (p - a as i16).abs(),
        (p - b as i16).abs(),
        (p - c as i16).abs(),
    );
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}
