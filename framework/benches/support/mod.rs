//! Helpers shared by the whole-daemon benchmarks (`footprint`, `kafka_sink`, `scrape_concurrency`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// `GET path` over HTTP/1.0 on 127.0.0.1:`port`; the whole response, headers included.
pub fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    write!(s, "GET {path} HTTP/1.0\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:` …), 0 if unreadable.
pub fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Resident set size of `pid` in kB (`VmRSS` of `/proc/<pid>/status`), 0 if unreadable.
pub fn rss_kb(pid: u32) -> u64 {
    status_kb(pid, "VmRSS:")
}

/// Write the `load` drop-in into `probes`: `rows` rows of one key, one label and 5 gauges
/// (`rows × 5` series), re-sent every second.
#[allow(dead_code)] // not every bench including this module holds a load probe
pub fn write_load_probe(probes: &Path, rows: usize) -> std::io::Result<()> {
    std::fs::create_dir_all(probes)?;
    std::fs::write(
        probes.join("load.meta"),
        "version = \"1.0.0\"\nmeasurements: ({ table_name: \"load\"; entity_name: \"load\"; fields: (\
         { description: \"id\"; type: \"key\"; name: \"id\"; }, { description: \"c\"; type: \"label\"; name: \"comm\"; },\
         { description: \"a\"; type: \"gauge\"; name: \"a\"; }, { description: \"b\"; type: \"gauge\"; name: \"b\"; },\
         { description: \"c\"; type: \"gauge\"; name: \"c\"; }, { description: \"d\"; type: \"gauge\"; name: \"d\"; },\
         { description: \"e\"; type: \"gauge\"; name: \"e\"; }); });\n",
    )?;
    let script = probes.join("load.py");
    std::fs::write(
        &script,
        format!(
            "#!/usr/bin/env python3\nimport sys, time\nrows = {rows}\nwhile True:\n    t = int(time.time())\n    out = []\n    for i in range(rows):\n        out.append(f'|load|{{i}}|proc{{i % 97}}|{{i}}|{{t}}|{{i * 0.5}}|{{i % 7}}|{{-i}}|\\n')\n    sys.stdout.write(''.join(out))\n    sys.stdout.flush()\n    time.sleep(1)\n"
        ),
    )?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
}

/// Value of the first exposition line starting with `prefix` (a metric name, maybe with
/// labels).
pub fn metric_value(body: &str, prefix: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Write `dir/gg.conf` for a bench daemon (warn logs, machine id `bench`, room for `rows` rows)
/// serving on `port`, with `web_extra` appended inside `web_server`, and start the real daemon
/// on it.
#[allow(dead_code)] // not every bench including this module starts its own daemon
pub fn spawn_daemon(
    dir: &Path,
    probes_dir: &Path,
    rows: usize,
    port: u16,
    web_extra: &str,
) -> std::io::Result<std::process::Child> {
    let conf = dir.join("gg.conf");
    std::fs::write(
        &conf,
        format!(
            "global = {{ log_level = \"warn\"; probes_dir = \"{}\"; meta_dir = \"{}\"; machine_id = \"bench\"; }};\n\
             imdb = {{ max_records_num = {}; }};\nweb_server = {{ port = {port}; {web_extra} }};\n",
            probes_dir.display(),
            dir.join("meta").display(),
            rows + 10
        ),
    )?;
    std::process::Command::new(env!("CARGO_BIN_EXE_gala-gopher"))
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
}

/// An in-process table store with `series` live series: tables of 1,000 rows (one key, one
/// label) × 4 gauges and 1 counter (upstream counter names, without `_total`).
#[allow(dead_code)] // only the in-process benches build a store
pub fn populated_store(series: usize) -> gala_gopher::store::TableStore {
    use gala_gopher::meta::{Field, FieldKind, TableSchema};
    use gala_gopher::store::{Scratch, StoreLimits, TableStore};
    const FIELDS: usize = 5;
    let rows = series / FIELDS;
    let store = TableStore::new(
        StoreLimits {
            max_tables: 1024,
            max_records: 1000,
            record_timeout_ms: u64::MAX / 2,
        },
        "0d2f5a9c1e7b4e6f8a3b2c1d0e9f8a7b",
    );
    let sc = &mut Scratch::default();
    let field = |name: String, kind| {
        let description = format!("{name} of the process");
        Field::new(name, kind, description)
    };
    for t in 0..rows.div_ceil(1000) {
        let mut fields = vec![
            field("tgid".into(), FieldKind::Key),
            field("comm".into(), FieldKind::Label),
        ];
        fields.extend((0..FIELDS - 1).map(|f| field(format!("gauge_{f}"), FieldKind::Gauge)));
        fields.push(field("events".into(), FieldKind::Counter));
        let schema = std::sync::Arc::new(TableSchema {
            table_name: format!("bench_{t}"),
            entity_name: format!("bench_{t}"),
            version: "1.0.0".into(),
            fields,
            origin: "bench".into(),
            derives: false,
            trace: false,
        });
        for r in 0..1000.min(rows - t * 1000) {
            let key = (100_000 + r).to_string();
            let vals: Vec<String> = (0..FIELDS).map(|f| format!("{}.{f}", r * 7 + f)).collect();
            let mut line: Vec<&str> = vec![&key, "nginx"];
            line.extend(vals.iter().map(String::as_str));
            let _ = store.upsert(&schema, &line, 1, sc);
        }
    }
    store
}
