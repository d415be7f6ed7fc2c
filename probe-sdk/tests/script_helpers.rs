//! The python (`gala_probe.py`) and shell (`gala_probe.sh`) helpers produce byte-identical
//! record and event lines to the Rust writer, and parse flags with the same results and messages.
//! All three writers (and the python and Rust test readers) follow the record-line vectors,
//! `record-line/vectors/record_lines.json`. The control-channel readers (Rust
//! `probe_sdk::control`, the python `Control` and the shell `gg_control_*`) follow the
//! control-line vectors, `probe-decl/vectors/control_lines.json`.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use probe_sdk::args::ProbeArgs;
use probe_sdk::event::{CivilTime, Severity};
use probe_sdk::record::RecordWriter;
use serde_json::Value;

fn sdk_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts")
}

/// The python to run: `GG_TEST_PYTHON` when set, else `python3` (only the standard library is used).
fn python() -> std::ffi::OsString {
    std::env::var_os("GG_TEST_PYTHON").unwrap_or_else(|| "python3".into())
}

/// String values covering every escape, shell-special characters and non-ASCII text.
const STRINGS: &[&str] = &[
    "",
    "plain",
    "a|b",
    "back\\slash",
    "new\nline",
    "cr\rx",
    "\\|",
    "|\\",
    "trailing\\",
    "\\\\|\\n",
    "||",
    "\n",
    "uni é 中 🦀",
    "%s %d %%",
    "$HOME `x` $(y) ${z}",
    "-dash",
    "  spaces  ",
    "*",
    "[a]?",
    "'single' \"double\"",
    "tab\there",
];

/// Builds the expected output with the Rust writer.
fn rust_lines(f: impl FnOnce(&mut RecordWriter<Vec<u8>>)) -> String {
    let mut w = RecordWriter::new(Vec::new());
    f(&mut w);
    w.flush().unwrap();
    String::from_utf8(w.into_inner()).unwrap()
}

/// A python string literal for `s` that survives any content.
fn py_str(s: &str) -> String {
    let mut lit = String::from("'");
    for c in s.chars() {
        lit.push_str(&format!("\\U{:08x}", u32::from(c)));
    }
    lit.push('\'');
    lit
}

/// A python expression giving exactly the f64 with these bits.
fn py_float(v: f64) -> String {
    format!("_f({:#x})", v.to_bits())
}

fn run_python(body: &str) -> Output {
    let program = format!(
        "import os, struct, sys\n\
         sys.path.insert(0, os.environ['GALA_GOPHER_SDK_DIR'])\n\
         import gala_probe\n\
         _f = lambda b: struct.unpack('<d', b.to_bytes(8, 'little'))[0]\n\
         {body}\n\
         gala_probe.flush()\n"
    );
    Command::new(python())
        .arg("-c")
        .arg(program)
        .env("GALA_GOPHER_SDK_DIR", sdk_dir())
        .output()
        .unwrap()
}

fn stdout_of(out: Output) -> String {
    assert!(
        out.status.success(),
        "status {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a shell snippet with the helper sourced; data is passed only as positional arguments.
fn run_shell(shell: &str, snippet: &str, args: &[&str]) -> Output {
    let script = format!(". \"$GALA_GOPHER_SDK_DIR/gala_probe.sh\"\n{snippet}\n");
    Command::new(shell)
        .arg("-c")
        .arg(script)
        .arg("gg-test")
        .args(args)
        .env("GALA_GOPHER_SDK_DIR", sdk_dir())
        .output()
        .unwrap()
}

/// Shells to check the helper with: POSIX `sh` (dash on Debian), and bash when present.
fn shells() -> Vec<&'static str> {
    let mut v = vec!["sh"];
    if Command::new("bash").arg("-c").arg("true").output().is_ok() {
        v.push("bash");
    }
    v
}

/// Deterministic spread of f64 bit patterns (xorshift), finite values only.
fn sample_floats() -> Vec<f64> {
    let mut v = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.1,
        0.3,
        12.5,
        1.0 / 3.0,
        1e15,
        1e16,
        1e20,
        1e-7,
        2.5e-5,
        123_456_789_012_345_680.0,
        f64::MAX,
        f64::MIN_POSITIVE,
        5e-324,
        9_007_199_254_740_993.0,
        // Exact ties between two shortest candidates: Rust rounds away from zero.
        1_195_605_190_570_738_f64 + 0.25,
        -(1_195_605_190_570_738_f64 + 0.25),
        1_125_899_906_842_624_f64 + 0.75,
        0.000_000_000_000_000_000_000_1,
    ];
    // More ties: with 16 integer digits the ulp is 0.25, so k + 0.25 needs 18 digits.
    for k in [2u64, 4, 6, 8, 100, 12_344, 99_998] {
        v.push(((1u64 << 50) + k) as f64 + 0.25);
        v.push(-(((1u64 << 51) + k) as f64 + 0.5));
    }
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while v.len() < 600 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let f = f64::from_bits(x);
        if f.is_finite() {
            v.push(f);
        }
        // Also values of everyday magnitude.
        v.push((x % 1_000_000) as f64 / 1000.0);
    }
    v
}

#[test]
fn python_strings_match_rust_bytes() {
    let expected = rust_lines(|w| {
        for (i, s) in STRINGS.iter().enumerate() {
            w.record("t")
                .field(&i)
                .field(*s)
                .field("end")
                .end()
                .unwrap();
        }
        w.record("t|x").field("k").end().unwrap();
    });
    let mut body = String::new();
    for (i, s) in STRINGS.iter().enumerate() {
        body.push_str(&format!(
            "gala_probe.record('t', {i}, {}, 'end')\n",
            py_str(s)
        ));
    }
    body.push_str("gala_probe.record('t|x', 'k')\n");
    assert_eq!(stdout_of(run_python(&body)), expected);
}

#[test]
fn python_numbers_and_absent_values_match_rust_bytes() {
    let floats = sample_floats();
    let expected = rust_lines(|w| {
        for f in &floats {
            w.record("f").field(f).end().unwrap();
        }
        w.record("special")
            .field(&f64::NAN)
            .field(&f64::INFINITY)
            .field(&f64::NEG_INFINITY)
            .field(&None::<u32>)
            .field(&true)
            .field(&false)
            .field(&0u8)
            .field(&-5i32)
            .field(&u64::MAX)
            .field(&i64::MIN)
            .end()
            .unwrap();
    });
    let mut body = String::new();
    for f in &floats {
        body.push_str(&format!("gala_probe.record('f', {})\n", py_float(*f)));
    }
    body.push_str(&format!(
        "gala_probe.record('special', float('nan'), float('inf'), float('-inf'), None, True, \
         False, 0, -5, {}, {})\n",
        u64::MAX,
        i64::MIN
    ));
    assert_eq!(stdout_of(run_python(&body)), expected);
}

#[test]
fn python_event_matches_rust_bytes() {
    let when: i64 = 1_681_851_549;
    let t = CivilTime::local_from_unix(when).unwrap();
    let long = "x|".repeat(300);
    let cases = [
        (
            "cpu",
            "cpu",
            "total_used_per",
            Severity::Warn,
            "WARN",
            "Too high cpu utilization(95.00%).",
        ),
        (
            "fs",
            "/a|b",
            "UsePer",
            Severity::Error,
            "ERROR",
            "line\nbreak",
        ),
        (
            "proc",
            "1234",
            "hang",
            Severity::Info,
            "INFO",
            long.as_str(),
        ),
        ("nic", "eth0", "drops", Severity::Fatal, "FATAL", "é"),
    ];
    let expected = rust_lines(|w| {
        for (name, id, metric, sev, _, msg) in &cases {
            w.event_at(&t, name, id, metric, *sev, msg).unwrap();
        }
    });
    let mut body = String::new();
    for (name, id, metric, _, sev, msg) in &cases {
        body.push_str(&format!(
            "gala_probe.event({}, {}, {}, '{sev}', {}, when={when})\n",
            py_str(name),
            py_str(id),
            py_str(metric),
            py_str(msg)
        ));
    }
    assert_eq!(stdout_of(run_python(&body)), expected);
}

#[test]
fn python_logs_go_to_stderr_with_prefix() {
    let out = run_python(
        "gala_probe.log_info('a')\ngala_probe.log_warn('b\\nc')\ngala_probe.log_error('d')",
    );
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "[INFO] a\n[WARN] b\\nc\n[ERROR] d\n"
    );
}

#[test]
fn shell_strings_match_rust_bytes() {
    for shell in shells() {
        for s in STRINGS {
            let expected =
                rust_lines(|w| w.record("t").field("k").field(*s).field("").end().unwrap());
            let out = run_shell(shell, "gg_record t k \"$1\" ''", &[s]);
            assert_eq!(stdout_of(out), expected, "{shell}: value {s:?}");
        }
        // Every value at once, and a table name that needs escaping.
        let expected = rust_lines(|w| {
            let mut rec = w.record("a|b");
            for s in STRINGS {
                rec = rec.field(*s);
            }
            rec.end().unwrap();
        });
        let mut args = vec!["a|b"];
        args.extend_from_slice(STRINGS);
        let out = run_shell(shell, "gg_record \"$@\"", &args);
        assert_eq!(stdout_of(out), expected, "{shell}: all values");
    }
}

#[test]
fn shell_event_matches_rust_bytes() {
    for shell in shells() {
        let msg = "disk | full\nnow";
        // The shell stamps the current time itself: accept the line for any second in the window.
        let before = CivilTime::local_now().unwrap();
        let out = run_shell(shell, "gg_event fs /home UsePer WARN \"$1\"", &[msg]);
        let after = CivilTime::local_now().unwrap();
        let got = stdout_of(out);
        let line_at = |t: &CivilTime| {
            rust_lines(|w| {
                w.event_at(t, "fs", "/home", "UsePer", Severity::Warn, msg)
                    .unwrap()
            })
        };
        assert!(
            got == line_at(&before) || got == line_at(&after),
            "{shell}: {got:?} vs {:?}",
            line_at(&before)
        );
        let bad = run_shell(shell, "gg_event fs /home UsePer LOUD x", &[]);
        assert!(!bad.status.success());
        assert!(String::from_utf8_lossy(&bad.stderr).starts_with("[ERROR] gg_event: severity"));
    }
}

#[test]
fn shell_logs_go_to_stderr_with_prefix() {
    for shell in shells() {
        let out = run_shell(
            shell,
            "gg_log_info a; gg_log_warn \"$1\"; gg_log_error d",
            &["b\nc"],
        );
        assert!(out.status.success());
        assert!(out.stdout.is_empty());
        assert_eq!(
            String::from_utf8(out.stderr).unwrap(),
            "[INFO] a\n[WARN] b\\nc\n[ERROR] d\n",
            "{shell}"
        );
    }
}

/// Argument vectors with their expected Rust outcome checked against both helpers.
const ARGV_CASES: &[&[&str]] = &[
    &[],
    &["-t", "7"],
    &["-t7"],
    &["-t", "0"],
    &["-t", "3601"],
    &["-t", "-5"],
    &["-t", "007"],
    &["-t"],
    &["-t", "5", "-w", "/a b", "-l", "warn"],
    &["-P", "0"],
    &["-P", "12"],
    &["-U", "80"],
    &["-U", "101"],
    &["-L", "3"],
    &["-c", "1"],
    &["-c", "2"],
    &["-F", "task"],
    &["-Ct3"],
    &["-C", "-t", "2"],
    &["-x", "7", "-y", "-t", "2"],
    &["foo"],
    &["-t", "2", "--"],
    &["-k", "0"],
    &["-m", "4"],
    &["-p", ""],
];

/// The fields every helper reports, in one comparable line.
fn summary(a: &ProbeArgs) -> String {
    format!(
        "period={} events={} upper={} lower={} bits={} cont={} cport={} filter={} wl={}",
        a.period_secs,
        u8::from(a.report_events),
        a.res_upper_pct,
        a.res_lower_pct,
        a.probe_bits,
        u8::from(a.continuous),
        u8::from(a.report_cport),
        a.filter.as_deref().unwrap_or(""),
        a.whitelist
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    )
}

fn rust_outcome(argv: &[&str]) -> String {
    match ProbeArgs::try_parse_from(argv.iter().copied()) {
        Ok(a) => summary(&a),
        Err(e) => format!("[ERROR] {e}"),
    }
}

#[test]
fn python_parse_args_agrees_with_rust() {
    for argv in ARGV_CASES {
        let list: Vec<String> = argv.iter().map(|a| py_str(a)).collect();
        let body = format!(
            "try:\n    a = gala_probe.try_parse_args([{}])\n\
             except gala_probe.ArgsError as e:\n    print('[ERROR] ' + str(e))\n\
             else:\n    print('period=%d events=%d upper=%d lower=%d bits=%d cont=%d cport=%d \
             filter=%s wl=%s' % (a['period'], a['report_events'], a['res_upper_pct'], \
             a['res_lower_pct'], a['probe_bits'], a['continuous'], a['report_cport'], \
             a['filter'] or '', a['whitelist'] or ''))",
            list.join(", ")
        );
        let got = stdout_of(run_python(&body));
        assert_eq!(got.trim_end(), rust_outcome(argv), "argv {argv:?}");
    }
    // parse_args() itself exits 2 with the message on stderr.
    let out = run_python("gala_probe.parse_args(['-t', '0'])");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "[ERROR] -t: invalid value \"0\", expected 1..=3600\n"
    );
}

#[test]
fn shell_parse_args_agrees_with_rust() {
    let snippet = "gg_parse_args \"$@\"\n\
        printf 'period=%s events=%s upper=%s lower=%s bits=%s cont=%s cport=%s filter=%s wl=%s\\n' \
        \"$GG_PERIOD\" \"$GG_REPORT_EVENTS\" \"$GG_RES_UPPER\" \"$GG_RES_LOWER\" \"$GG_PROBE_BITS\" \
        \"$GG_CONTINUOUS\" \"$GG_REPORT_CPORT\" \"$GG_FILTER\" \"$GG_WHITELIST\"";
    for shell in shells() {
        for argv in ARGV_CASES {
            let out = run_shell(shell, snippet, argv);
            let expected = rust_outcome(argv);
            if expected.starts_with("[ERROR]") {
                assert_eq!(out.status.code(), Some(2), "{shell} argv {argv:?}");
                assert!(out.stdout.is_empty());
                assert_eq!(
                    String::from_utf8(out.stderr).unwrap().trim_end(),
                    expected,
                    "{shell} argv {argv:?}"
                );
            } else {
                assert_eq!(stdout_of(out).trim_end(), expected, "{shell} argv {argv:?}");
            }
        }
    }
}

/// The record-line vector file (the contract's specification).
fn vectors() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("record-line/vectors/record_lines.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

fn texts(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| text(s).to_string())
        .collect()
}

/// `(table, values)` of the line vectors the daemon accepts.
fn accepted_lines(v: &Value) -> Vec<(String, Vec<String>)> {
    let out: Vec<_> = v["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l.get("reject").is_none())
        .map(|l| (text(&l["table"]).to_string(), texts(&l["fields"])))
        .collect();
    assert!(out.len() >= 20, "the vector file lost lines");
    out
}

/// Reads a written line (with its newline) by the daemon's rules.
fn daemon_reads(written: &str) -> (String, Vec<String>) {
    let line = written
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("no newline: {written:?}"));
    assert!(!line.contains('\n'), "more than one line: {written:?}");
    let mut raw = Vec::new();
    let table =
        record_line::parse_record(line, &mut raw).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let values = raw
        .iter()
        .map(|r| {
            let mut s = String::new();
            record_line::unescape_into(r, &mut s);
            s
        })
        .collect();
    (table.to_string(), values)
}

#[test]
fn python_helper_passes_its_vector_tests() {
    let test_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python");
    let out = Command::new(python())
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(&test_dir)
        // Leave no __pycache__ in the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("running {:?}: {e}", python()));
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python vector tests failed:\n{report}"
    );
    // An empty discovery also exits 0: make sure the tests ran.
    assert!(
        report.contains("Ran ") && !report.contains("Ran 0 tests"),
        "{report}"
    );
}

#[test]
fn rust_writer_and_reader_follow_the_vectors() {
    let v = vectors();
    for t in v["values"].as_array().unwrap() {
        let value = text(&t["value"]);
        let got = rust_lines(|w| w.record("t").field(value).end().unwrap());
        assert_eq!(
            got,
            format!("|t|{}|\n", text(&t["escaped"])),
            "value {value:?}"
        );
    }
    for l in v["lines"].as_array().unwrap() {
        let line = text(&l["line"]);
        let got = probe_sdk::record::split_line(line.as_bytes()).map(|(t, f)| {
            let f: Vec<String> = f
                .into_iter()
                .map(|f| String::from_utf8(f).unwrap())
                .collect();
            (String::from_utf8(t).unwrap(), f)
        });
        match l.get("reject") {
            Some(_) => assert_eq!(got, None, "{line:?}"),
            None => assert_eq!(
                got,
                Some((text(&l["table"]).to_string(), texts(&l["fields"]))),
                "{line:?}"
            ),
        }
    }
    for (table, fields) in accepted_lines(&v) {
        let written = rust_lines(|w| {
            let mut rec = w.record(&table);
            for f in &fields {
                rec = rec.field(f);
            }
            rec.end().unwrap()
        });
        assert_eq!(daemon_reads(&written), (table, fields), "{written:?}");
    }
    for t in v["log_writes"].as_array().unwrap() {
        let level = match text(&t["level"]) {
            "info" => probe_sdk::log::Level::Info,
            "warn" => probe_sdk::log::Level::Warn,
            "error" => probe_sdk::log::Level::Error,
            other => panic!("level {other}"),
        };
        let mut out = Vec::new();
        probe_sdk::log::format_line(&mut out, level, format_args!("{}", text(&t["message"])));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{}\n", text(&t["line"]))
        );
    }
}

#[test]
fn shell_writer_follows_the_vectors() {
    let v = vectors();
    for shell in shells() {
        for t in v["values"].as_array().unwrap() {
            let value = text(&t["value"]);
            let out = run_shell(
                shell,
                "gg_escape \"$1\"; printf '%s' \"$GG_ESCAPED\"",
                &[value],
            );
            assert_eq!(
                stdout_of(out),
                text(&t["escaped"]),
                "{shell}: value {value:?}"
            );
        }
        // Every accepted line's table and values, written by gg_record, read back the same.
        for (table, fields) in accepted_lines(&v) {
            let mut args = vec![table.as_str()];
            args.extend(fields.iter().map(String::as_str));
            let written = stdout_of(run_shell(shell, "gg_record \"$@\"", &args));
            assert_eq!(
                daemon_reads(&written),
                (table.clone(), fields),
                "{shell}: {written:?}"
            );
        }
        for t in v["log_writes"].as_array().unwrap() {
            let snippet = format!("gg_log_{} \"$1\"", text(&t["level"]));
            let out = run_shell(shell, &snippet, &[text(&t["message"])]);
            assert!(
                out.status.success() && out.stdout.is_empty(),
                "{shell}: {snippet}"
            );
            assert_eq!(
                String::from_utf8(out.stderr).unwrap(),
                format!("{}\n", text(&t["line"])),
                "{shell}: {snippet}"
            );
        }
    }
}

// The control channel.

/// The control-line vector file (the channel's specification).
fn control_vectors() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("probe-decl/vectors/control_lines.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The bytes a stream vector writes (`{fill, count}` pieces expanded).
fn stream_bytes(chunks: &Value) -> Vec<Vec<u8>> {
    chunks
        .as_array()
        .unwrap()
        .iter()
        .map(|c| match c {
            Value::String(s) => s.as_bytes().to_vec(),
            _ => {
                let count = usize::try_from(c["count"].as_u64().unwrap()).unwrap();
                text(&c["fill"]).repeat(count).into_bytes()
            }
        })
        .collect()
}

/// The line of a `long` vector, newline included.
fn long_line(t: &Value) -> String {
    let (prefix, suffix) = (text(&t["prefix"]), text(&t["suffix"]));
    let bytes = usize::try_from(t["bytes"].as_u64().unwrap()).unwrap();
    let line = format!(
        "{prefix}{}{suffix}\n",
        text(&t["fill"]).repeat(bytes - prefix.len() - suffix.len() - 1)
    );
    assert_eq!(line.len(), bytes);
    line
}

/// One stream every channel reader is run on.
struct StreamCase {
    note: String,
    /// Written one after the other, then end of input.
    pieces: Vec<Vec<u8>>,
    /// `{probe_bits, period}` of the newest message, or null.
    newest: Value,
    received: u64,
    refused: u64,
}

/// The stream vectors, and each `long` vector written alone.
fn control_streams(v: &Value) -> Vec<StreamCase> {
    let mut out: Vec<_> = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| StreamCase {
            note: text(&t["note"]).to_string(),
            pieces: stream_bytes(&t["chunks"]),
            newest: t["newest"].clone(),
            received: t["received"].as_u64().unwrap(),
            refused: t["refused"].as_u64().unwrap(),
        })
        .collect();
    assert!(out.len() >= 8, "the vector file lost streams");
    for t in v["long"].as_array().unwrap() {
        let accepted = t.get("reject").is_none();
        out.push(StreamCase {
            note: text(&t["note"]).to_string(),
            pieces: vec![long_line(t).into_bytes()],
            newest: if accepted {
                serde_json::json!({"probe_bits": t["probe_bits"], "period": t["period"]})
            } else {
                Value::Null
            },
            received: u64::from(accepted),
            refused: u64::from(!accepted),
        });
    }
    out
}

/// `{probe_bits, period}` of a message, as the stream vectors state the newest one.
fn bits_and_period(msg: &probe_sdk::decl::ControlMsg) -> Value {
    serde_json::json!({
        "probe_bits": msg.probe_bits,
        "period": msg.int("report_period").filter(|p| *p >= 1),
    })
}

#[test]
fn rust_control_follows_the_stream_vectors() {
    let v = control_vectors();
    for StreamCase {
        note,
        pieces,
        newest,
        received,
        refused,
    } in control_streams(&v)
    {
        let control =
            probe_sdk::control::Control::from_reader(std::io::Cursor::new(pieces.concat()));
        let start = Instant::now();
        while control.counts() != (received, refused) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{note}: counts {:?}",
                control.counts()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let got = control.take().map(|m| bits_and_period(&m));
        assert_eq!(got.unwrap_or(Value::Null), newest, "{note}");
    }
}

/// Runs `snippet` with the shell helper sourced, `input` written piece by piece on its stdin.
fn run_shell_with_input(shell: &str, snippet: &str, input: Vec<Vec<u8>>) -> Output {
    let script = format!(". \"$GALA_GOPHER_SDK_DIR/gala_probe.sh\"\n{snippet}\n");
    let mut child = Command::new(shell)
        .arg("-c")
        .arg(script)
        .env("GALA_GOPHER_SDK_DIR", sdk_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        for piece in input {
            // The shell may have stopped reading; that is its test's business.
            if stdin.write_all(&piece).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

#[test]
fn shell_control_follows_the_stream_vectors() {
    // Polls until the channel ends, then prints the number of good lines and the newest one.
    let snippet = "i=0\n\
        while [ $i -lt 2400 ]; do\n\
            gg_control_poll\n\
            [ \"$GG_CONTROL_CLOSED\" = 1 ] && break\n\
            sleep 0.05\n\
            i=$((i + 1))\n\
        done\n\
        printf '%s\\n%s' \"$_gg_ctl_seq\" \"$GG_CONTROL_LINE\"";
    let v = control_vectors();
    for shell in shells() {
        for StreamCase {
            note,
            pieces,
            newest,
            received,
            refused,
        } in control_streams(&v)
        {
            let out = run_shell_with_input(shell, snippet, pieces);
            let stdout = stdout_of(out.clone());
            let (seq, line) = stdout.split_once('\n').unwrap();
            let got = if line.is_empty() {
                Value::Null
            } else {
                bits_and_period(&probe_sdk::decl::ControlMsg::parse_line(line).unwrap())
            };
            assert_eq!(got, newest, "{shell}: {note}");
            assert_eq!(seq, received.to_string(), "{shell}: {note}");
            let stderr = String::from_utf8(out.stderr).unwrap();
            let expected = if refused > 0 {
                "[WARN] control channel: line skipped: "
            } else {
                ""
            };
            assert!(
                stderr.starts_with(expected) && stderr.lines().count() == usize::from(refused > 0),
                "{shell}: {note}: {stderr}"
            );
        }
    }
}

#[test]
fn shell_control_reads_the_valid_vectors() {
    let v = control_vectors();
    let lines = v["valid"].as_array().unwrap();
    assert!(lines.len() >= 20);
    for shell in shells() {
        for t in lines {
            let line = text(&t["line"]);
            let note = text(&t["note"]);
            let valid = run_shell(shell, "gg__control_valid \"$1\"", &[line]);
            assert!(valid.status.success(), "{shell}: {note}: refused {line:?}");
            let period = run_shell(shell, "GG_CONTROL_LINE=$1\ngg_control_period", &[line]);
            match t["period"].as_i64() {
                Some(p) => assert_eq!(stdout_of(period), format!("{p}\n"), "{shell}: {note}"),
                None => assert!(
                    period.status.code() == Some(1) && period.stdout.is_empty(),
                    "{shell}: {note}"
                ),
            }
            let Some(params) = t["params"].as_object() else {
                continue;
            };
            for (name, value) in params {
                let expected = match value {
                    Value::String(s) => Some(format!("{s}\n")),
                    Value::Number(n) if n.is_i64() || n.is_u64() => Some(format!("{n}\n")),
                    // Printed as written, which this test cannot know from the parsed value.
                    Value::Number(_) => continue,
                    _ => None,
                };
                let out = run_shell(
                    shell,
                    "GG_CONTROL_LINE=$1\ngg_control_param \"$2\"",
                    &[line, name],
                );
                match expected {
                    Some(e) => assert_eq!(stdout_of(out), e, "{shell}: {note}: {name}"),
                    None => assert!(
                        out.status.code() == Some(1) && out.stdout.is_empty(),
                        "{shell}: {note}: {name}: {out:?}"
                    ),
                }
            }
        }
        // No line, or no such param.
        let out = run_shell(shell, "gg_control_param report_period", &[]);
        assert_eq!(out.status.code(), Some(1), "{shell}");
        let out = run_shell(
            shell,
            "GG_CONTROL_LINE=$1\ngg_control_param nope",
            &["{\"params\":{}}"],
        );
        assert_eq!(out.status.code(), Some(1), "{shell}");
    }
}

/// Runs a shell snippet with raw bytes as its first argument.
fn run_shell_bytes(shell: &str, snippet: &str, arg: Vec<u8>) -> Output {
    let script = format!(". \"$GALA_GOPHER_SDK_DIR/gala_probe.sh\"\n{snippet}\n");
    Command::new(shell)
        .arg("-c")
        .arg(script)
        .arg("gg-test")
        .arg(OsString::from_vec(arg))
        .env("GALA_GOPHER_SDK_DIR", sdk_dir())
        .output()
        .unwrap()
}

#[test]
fn shell_control_refuses_the_invalid_vectors() {
    let v = control_vectors();
    for shell in shells() {
        for t in v["invalid"].as_array().unwrap() {
            let bytes = match t.get("line") {
                Some(line) => text(line).as_bytes().to_vec(),
                None => {
                    let hex = text(&t["bytes_hex"]);
                    (0..hex.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                        .collect()
                }
            };
            let out = run_shell_bytes(shell, "gg__control_valid \"$1\"", bytes);
            assert_eq!(out.status.code(), Some(1), "{shell}: {}", text(&t["note"]));
            assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
        }
    }
}

#[test]
fn shell_control_without_a_channel_never_yields() {
    for shell in shells() {
        // stdin /dev/null, then closed.
        for redirect in ["</dev/null", "<&-"] {
            let snippet = format!(
                "f() {{ gg_control_poll && echo yielded; sleep 0.3; gg_control_poll && echo yielded; \
                 echo \"closed=$GG_CONTROL_CLOSED\"; }}\nf {redirect}"
            );
            let out = run_shell(shell, &snippet, &[]);
            assert_eq!(stdout_of(out), "closed=1\n", "{shell} {redirect}");
        }
    }
}

/// The `probe` group of an example's `.meta`.
fn example_declaration(meta: &str) -> probe_sdk::decl::Declaration {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../probes/example")
        .join(meta);
    let text = std::fs::read_to_string(&path).unwrap();
    let root = gala_libconfig::parse_str(&text, &path).unwrap();
    probe_sdk::decl::Declaration::from_node(&root)
        .unwrap()
        .unwrap_or_else(|| panic!("{meta}: no probe group"))
}

#[test]
fn example_metas_declare_reload_and_report_period() {
    for meta in ["example.meta", "example_py.meta"] {
        let d = example_declaration(meta);
        assert!(d.reload, "{meta}");
        let p = d.param("report_period").unwrap();
        assert_eq!(p.flag, Some('t'), "{meta}");
        assert_eq!(
            p.check(&serde_json::json!(1)),
            Ok(probe_sdk::decl::ParamValue::Int(1))
        );
    }
}

/// Starts an example with `-t 30`, sends a control line setting report_period to 1 and expects
/// records within a few seconds: the new period applies without a restart.
fn example_applies_a_new_period(probe: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../probes/example")
        .join(probe);
    let mut child = Command::new(&path)
        .args(["-t", "30"])
        .env("GALA_GOPHER_SDK_DIR", sdk_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut stdin = child.stdin.take().unwrap();
    let start = Instant::now();
    stdin
        .write_all(b"{\"v\":1,\"probe\":[],\"probe_bits\":0,\"params\":{\"report_period\":1},\"snoop\":{\"mode\":\"all\",\"pids\":[]}}\n")
        .unwrap();
    let first = rx.recv_timeout(Duration::from_secs(10));
    let took = start.elapsed();
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = child.wait().unwrap();
    drop(stdin);
    reader.join().unwrap();
    let first = first.unwrap_or_else(|_| panic!("{probe}: no record 10 s after period 1"));
    assert!(first.starts_with("|example"), "{probe}: {first}");
    assert!(
        took < Duration::from_secs(5),
        "{probe}: first record after {took:?}"
    );
    assert_eq!(status.code(), Some(0), "{probe}");
}

#[test]
fn python_example_applies_a_new_period_without_restart() {
    example_applies_a_new_period("example_py.py");
}

#[test]
fn shell_example_applies_a_new_period_without_restart() {
    example_applies_a_new_period("example.sh");
}

/// The declaration example of docs/writing-a-probe.md ("The declaration") is a valid `probe`
/// group, with every param type.
#[test]
fn documented_declaration_example_is_valid() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/writing-a-probe.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let section = &doc[doc.find("### The declaration").expect("section")..];
    let block = section
        .split("```")
        .nth(1)
        .expect("a code block in the section");
    let root = gala_libconfig::parse_str(block, &path).unwrap();
    let d = probe_sdk::decl::Declaration::from_node(&root)
        .unwrap()
        .expect("a probe group");
    assert!(d.reload && d.rest_name.as_deref() == Some("tcp"));
    let mut types: Vec<&str> = d.params.iter().map(|p| p.kind.type_name()).collect();
    types.sort_unstable();
    types.dedup();
    assert_eq!(types, ["choice", "int", "list", "string"]);
    assert_eq!(d.sub_probe_bits(&["tcp_rtt".into()]), Ok(4));
}
