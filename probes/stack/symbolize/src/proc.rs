//! Facts about a process from `/proc`: the identity of its current image (to notice pid reuse and
//! exec), the pid it sees itself as, and its uids. Parsers take the text so tests feed them fixtures.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::ReadError;

/// Bound on a `/proc/<pid>/stat` or `status` read (both are a few KiB).
const SMALL_FILE_MAX_BYTES: u64 = 64 * 1024;

/// Identity of one process image. It changes when the pid is reused (start time) and, with
/// address-space randomisation, when the process execs (the code and stack addresses): either
/// way, addresses cached for the pid no longer mean the same functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    start_time: u64,
    start_code: u64,
    end_code: u64,
    start_stack: u64,
}

/// Parses `/proc/<pid>/stat`. `comm` (field 2) may hold spaces and parentheses, so the fields are
/// counted from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<Identity> {
    let rest = &text[text.rfind(')')? + 1..];
    // Field 3 (state) is index 0 here: starttime is field 22, startcode 26, endcode 27,
    // startstack 28.
    let fields: Vec<&str> = rest.split_ascii_whitespace().take(26).collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Identity {
        start_time: field(22)?,
        start_code: field(26)?,
        end_code: field(27)?,
        start_stack: field(28)?,
    })
}

/// Reads the identity of process `pid`.
pub(crate) fn read_identity(pid: u32) -> Result<Identity, ReadError> {
    read_identity_at(PathBuf::from(format!("/proc/{pid}/stat")))
}

/// Reads the identity in `path` (a `/proc/<pid>/stat`, e.g. under a host root).
pub fn read_identity_at(path: PathBuf) -> Result<Identity, ReadError> {
    let text = read_small(&path)?;
    parse_stat(&text).ok_or(ReadError::Malformed {
        path,
        what: "fewer than 28 fields",
    })
}

/// What the perf-map lookup needs from `/proc/<pid>/status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Status {
    /// The pid the process sees itself as (innermost pid namespace): the `<pid>` of its
    /// `/tmp/perf-<pid>.map`.
    pub ns_pid: u32,
    /// Real, effective, saved and filesystem uid.
    pub uids: Vec<u32>,
}

/// Parses `/proc/<pid>/status`. `NStgid` (or `NSpid`, which is the same for a thread-group
/// leader) lists the pid in each namespace, innermost last; kernels without pid namespaces have
/// neither line, and then the pid is `pid`.
pub(crate) fn parse_status(text: &str, pid: u32) -> Option<Status> {
    let mut ns_tgid = None;
    let mut ns_pid = None;
    let mut uids = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("NStgid:") {
            ns_tgid = Some(v.split_ascii_whitespace().next_back()?.parse().ok()?);
        } else if let Some(v) = line.strip_prefix("NSpid:") {
            ns_pid = Some(v.split_ascii_whitespace().next_back()?.parse().ok()?);
        } else if let Some(v) = line.strip_prefix("Uid:") {
            let parsed: Option<Vec<u32>> =
                v.split_ascii_whitespace().map(|u| u.parse().ok()).collect();
            uids = Some(parsed?);
        }
    }
    let uids = uids.filter(|u| !u.is_empty())?;
    Some(Status {
        ns_pid: ns_tgid.or(ns_pid).unwrap_or(pid),
        uids,
    })
}

/// Reads the status facts of process `pid`.
pub(crate) fn read_status(pid: u32) -> Result<Status, ReadError> {
    let path = PathBuf::from(format!("/proc/{pid}/status"));
    let text = read_small(&path)?;
    parse_status(&text, pid).ok_or(ReadError::Malformed {
        path,
        what: "no Uid line or a malformed NStgid/NSpid line",
    })
}

/// Reads a small kernel-generated file, at most [`SMALL_FILE_MAX_BYTES`].
fn read_small(path: &Path) -> Result<String, ReadError> {
    let io = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut text = String::new();
    File::open(path)
        .map_err(io)?
        .take(SMALL_FILE_MAX_BYTES)
        .read_to_string(&mut text)
        .map_err(io)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str =
        "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 1171 0 0 0 1 2 0 0 20 0 1 0 \
        987654 2646016 224 18446744073709551615 94000000000000 94000000001000 140730000000000 0 0 \
        0 0 0 0 0 0 0 17 3 0 0 0 0 0";

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let id = parse_stat(STAT).expect("parses");
        assert_eq!(
            id,
            Identity {
                start_time: 987654,
                start_code: 94000000000000,
                end_code: 94000000001000,
                start_stack: 140730000000000,
            }
        );
    }

    #[test]
    fn short_or_garbled_stat_is_refused() {
        assert_eq!(parse_stat("1 (x) S 1 2 3"), None);
        assert_eq!(parse_stat("no parenthesis at all"), None);
        assert_eq!(parse_stat(&STAT.replace("987654", "98x654")), None);
    }

    #[test]
    fn status_takes_the_innermost_pid_and_all_uids() {
        let text = "Name:\tjava\nTgid:\t4242\nNgid:\t0\nPid:\t4242\nUid:\t1000\t1000\t1000\t1000\n\
            Gid:\t1000\t1000\t1000\t1000\nNStgid:\t4242\t17\t1\nNSpid:\t4242\t17\t1\n";
        assert_eq!(
            parse_status(text, 4242),
            Some(Status {
                ns_pid: 1,
                uids: vec![1000; 4]
            })
        );
    }

    #[test]
    fn status_without_namespace_lines_uses_the_pid() {
        let text = "Name:\tx\nUid:\t0\t0\t0\t0\n";
        assert_eq!(parse_status(text, 77).map(|s| s.ns_pid), Some(77));
        assert_eq!(parse_status("Name:\tx\n", 77), None);
        assert_eq!(parse_status("Uid:\t0\t0\t0\t0\nNStgid:\t7\tx\n", 7), None);
    }

    #[test]
    fn own_process_reads() {
        let me = std::process::id();
        let id = read_identity(me).expect("own stat");
        assert_eq!(read_identity(me).expect("again"), id);
        let status = read_status(me).expect("own status");
        assert_eq!(status.uids.len(), 4);
    }
}
