//! A process's identity labels, read from `/proc` (through the host root): `comm` for every
//! table with a `tgid` field, and for the `proc` entity also `cmdline` and `start_time` —
//! upstream HEAD's labels, which gala-spider's `proc` entity carries.
//!
//! Reads are bounded (`comm` 16 bytes, `cmdline` [`MAX_CMDLINE`] bytes, `stat` 4 KiB) and a
//! process that is gone has no labels.

use std::io::Read as _;
use std::path::Path;
use std::sync::OnceLock;

use crate::record_labels::ProcessSource;

/// Longest `cmdline` label value, in bytes (longer command lines are cut at a character
/// boundary; upstream's whole label buffer is 1 KiB).
pub const MAX_CMDLINE: usize = 256;

/// Label names, in output order.
pub const COMM: &str = "comm";
/// Label name of the command line (entity `proc` only).
pub const CMDLINE: &str = "cmdline";
/// Label name of the start time, unix seconds (entity `proc` only).
pub const START_TIME: &str = "start_time";

/// The real source: `/proc/<pid>/{comm,cmdline,stat}` under the host root.
#[derive(Debug, Default)]
pub struct ProcFs;

impl ProcessSource for ProcFs {
    fn of_process(&self, pid: u32, full: bool) -> Vec<(String, String)> {
        let dir = container_info::host::path(format!("/proc/{pid}"));
        let mut out = Vec::with_capacity(3);
        let Some(comm) = read_bounded(&dir.join("comm"), 64) else {
            return out;
        };
        let comm = comm.trim_end_matches('\n');
        if !comm.is_empty() {
            out.push((COMM.to_string(), comm.to_string()));
        }
        if !full {
            return out;
        }
        if let Some(raw) = read_bounded(&dir.join("cmdline"), MAX_CMDLINE + 4) {
            let cmd = cmdline_label(&raw);
            if !cmd.is_empty() {
                out.push((CMDLINE.to_string(), cmd));
            }
        }
        if let Some(start) = read_bounded(&dir.join("stat"), 4096)
            .and_then(|s| start_ticks(&s))
            .and_then(|ticks| start_seconds(ticks, boot_time()?, clock_ticks()))
        {
            out.push((START_TIME.to_string(), start.to_string()));
        }
        out
    }
}

/// At most `max` bytes of `path` as text (invalid UTF-8 replaced); `None` if unreadable.
fn read_bounded(path: &Path, max: usize) -> Option<String> {
    let f = std::fs::File::open(path).ok()?;
    let mut buf = Vec::with_capacity(max.min(4096));
    f.take(max as u64).read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// `/proc/<pid>/cmdline` as a label: arguments joined by single spaces (NULs → spaces, no
/// trailing space), control characters dropped, at most [`MAX_CMDLINE`] bytes.
pub fn cmdline_label(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len().min(MAX_CMDLINE));
    for arg in raw.split('\0').filter(|a| !a.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(arg.chars().filter(|c| !c.is_control()));
    }
    if out.len() > MAX_CMDLINE {
        let mut cut = MAX_CMDLINE;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out.trim_end().to_string()
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks after boot); the command name
/// (field 2, in parentheses) may contain spaces and parentheses, so fields are counted after
/// the last `)`.
pub fn start_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ")" come field 3 (state) onwards: field 22 is the 20th of them.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// Unix seconds of a start `ticks` after a boot at `btime` (unix seconds).
pub fn start_seconds(ticks: u64, btime: u64, clk_tck: u64) -> Option<u64> {
    (clk_tck > 0).then(|| btime + ticks / clk_tck)
}

/// `btime` of `/proc/stat` (read once).
fn boot_time() -> Option<u64> {
    static BTIME: OnceLock<Option<u64>> = OnceLock::new();
    *BTIME.get_or_init(|| {
        let stat = std::fs::read_to_string(container_info::host::path("/proc/stat")).ok()?;
        stat.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
    })
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_is_joined_cleaned_and_bounded() {
        assert_eq!(
            cmdline_label("nginx: master\0-g\0daemon off;\0"),
            "nginx: master -g daemon off;"
        );
        assert_eq!(cmdline_label("a\nb\0\0c\0"), "ab c");
        assert_eq!(cmdline_label(""), "");
        let long = "é".repeat(200);
        let l = cmdline_label(&long);
        assert!(l.len() <= MAX_CMDLINE && l.chars().all(|c| c == 'é'));
    }

    #[test]
    fn start_ticks_survive_odd_command_names() {
        let stat = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 12345 1000 10";
        assert_eq!(start_ticks(stat), Some(12345));
        assert_eq!(start_ticks("42 (x"), None);
        assert_eq!(start_seconds(250, 1_700_000_000, 100), Some(1_700_000_002));
    }

    #[test]
    fn this_process_has_its_identity() {
        let me = std::process::id();
        let got = ProcFs.of_process(me, true);
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, [COMM, CMDLINE, START_TIME]);
        let start: u64 = got[2].1.parse().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            start <= now && now - start < 3600,
            "start {start} now {now}"
        );
        assert_eq!(ProcFs.of_process(me, false).len(), 1);
        assert!(ProcFs.of_process(u32::MAX - 1, true).is_empty());
    }
}
