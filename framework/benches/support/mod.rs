//! Helpers shared by the whole-daemon benchmarks (`footprint`, `kafka_sink`).

use std::io::{Read, Write};
use std::net::TcpStream;

/// `GET path` over HTTP/1.0 on 127.0.0.1:`port`; the whole response, headers included.
pub fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    write!(s, "GET {path} HTTP/1.0\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Resident set size of `pid` in kB (`VmRSS` of `/proc/<pid>/status`), 0 if unreadable.
pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Value of the first exposition line starting with `prefix` (a metric name, maybe with
/// labels).
pub fn metric_value(body: &str, prefix: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}
