//! `gala-gopher-app.conf`: which processes a probe started with `-w FILE` looks at.
//!
//! Upstream semantics (`whitelist_config.c`): entries are tried in file order; the FIRST entry
//! whose `comm` regex (extended syntax, unanchored search) matches the process name decides, and
//! the process is selected iff its command line (NULs as spaces) contains that entry's `cmdline`.
//! An empty `comm` never matches, an empty `cmdline` always matches, and a `comm` that is not a
//! valid regex never matches.
//!
//! ```
//! use probe_sdk::whitelist::Whitelist;
//! let wl = Whitelist::parse_str(
//!     r#"application = ( { comm = "^python$"; cmdline = "server"; }, { comm = "python"; cmdline = ""; } );"#,
//!     "app.conf",
//! ).unwrap();
//! assert!(wl.selects("python", "python server.py"));
//! assert!(!wl.selects("python", "python app.py")); // the first matching entry decides
//! assert!(wl.selects("python3", "python3 app.py"));
//! ```

use std::path::Path;

use gala_libconfig::Node;
use regex::Regex;

/// Why a whitelist file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WhitelistError {
    /// Not readable, or not valid libconfig (`FILE:LINE:COL: message`).
    #[error(transparent)]
    Syntax(#[from] gala_libconfig::Error),
    /// Valid libconfig with the wrong shape. `origin` is `FILE:LINE`.
    #[error("{origin}: {message}")]
    Invalid {
        /// `FILE:LINE` of the offending setting.
        origin: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    /// `None` when the pattern is empty or does not compile: such an entry never matches.
    comm: Option<Regex>,
    cmdline: String,
}

/// An ordered list of `{ comm, cmdline }` rules.
#[derive(Debug, Clone, Default)]
pub struct Whitelist {
    entries: Vec<Entry>,
}

fn invalid(node: &Node, message: impl Into<String>) -> WhitelistError {
    WhitelistError::Invalid {
        origin: node.file_line(),
        message: message.into(),
    }
}

fn string_key<'n>(entry: &'n Node, key: &str, idx: usize) -> Result<&'n str, WhitelistError> {
    let node = entry.get(key).ok_or_else(|| {
        invalid(
            entry,
            format!("application entry #{}: missing \"{key}\"", idx + 1),
        )
    })?;
    node.as_str().ok_or_else(|| {
        invalid(
            node,
            format!(
                "application entry #{}: \"{key}\" must be a string, found {}",
                idx + 1,
                node.value.type_name()
            ),
        )
    })
}

impl Whitelist {
    /// Read a whitelist file.
    pub fn load(path: &Path) -> Result<Whitelist, WhitelistError> {
        Self::from_document(&gala_libconfig::parse_file(path)?)
    }

    /// Parse whitelist text; `origin` names it in error messages.
    pub fn parse_str(src: &str, origin: &str) -> Result<Whitelist, WhitelistError> {
        Self::from_document(&gala_libconfig::parse_str(src, Path::new(origin))?)
    }

    fn from_document(root: &Node) -> Result<Whitelist, WhitelistError> {
        let app = root
            .get("application")
            .ok_or_else(|| invalid(root, "missing \"application\""))?;
        let items = match (&app.value, app.elements()) {
            (gala_libconfig::Value::List(_), Some(items)) => items,
            _ => {
                return Err(invalid(
                    app,
                    format!(
                        "\"application\" must be a list ( ... ), found {}",
                        app.value.type_name()
                    ),
                ))
            }
        };
        let mut entries = Vec::with_capacity(items.len());
        for (idx, item) in items.iter().enumerate() {
            if item.members().is_none() {
                return Err(invalid(
                    item,
                    format!(
                        "application entry #{}: must be a group {{ ... }}, found {}",
                        idx + 1,
                        item.value.type_name()
                    ),
                ));
            }
            let comm = string_key(item, "comm", idx)?;
            let cmdline = string_key(item, "cmdline", idx)?;
            entries.push(Entry {
                comm: if comm.is_empty() {
                    None
                } else {
                    Regex::new(comm).ok()
                },
                cmdline: cmdline.to_string(),
            });
        }
        Ok(Whitelist { entries })
    }

    /// The entry that decides for a process named `comm`, if any.
    fn decider(&self, comm: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.comm.as_ref().is_some_and(|re| re.is_match(comm)))
    }

    /// Whether a process with this `comm` and `cmdline` (arguments joined by spaces) is selected.
    pub fn selects(&self, comm: &str, cmdline: &str) -> bool {
        self.decider(comm)
            .is_some_and(|e| e.cmdline.is_empty() || cmdline.contains(&e.cmdline))
    }

    /// Selected pids among `<proc_root>/<pid>` directories, ascending. Processes that vanish or
    /// cannot be read during the scan are skipped. In production `proc_root` is
    /// `crate::host::path("/proc")`, the host's procfs under the host root.
    pub fn scan(&self, proc_root: &Path) -> Vec<u32> {
        let Ok(dir) = std::fs::read_dir(proc_root) else {
            return Vec::new();
        };
        let mut pids: Vec<u32> = dir
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name();
                let name = name.to_str()?;
                if name.starts_with('0') {
                    return None;
                }
                name.parse::<u32>().ok()
            })
            .filter(|pid| self.selects_pid(proc_root, *pid))
            .collect();
        pids.sort_unstable();
        pids
    }

    fn selects_pid(&self, proc_root: &Path, pid: u32) -> bool {
        let dir = proc_root.join(pid.to_string());
        let Ok(comm) = std::fs::read(dir.join("comm")) else {
            return false;
        };
        let comm = String::from_utf8_lossy(&comm);
        let Some(entry) = self.decider(comm.trim_end_matches('\n')) else {
            return false;
        };
        if entry.cmdline.is_empty() {
            return true;
        }
        match std::fs::read(dir.join("cmdline")) {
            Ok(raw) => cmdline_text(&raw).contains(&entry.cmdline),
            Err(_) => false,
        }
    }

    /// Whether there are no entries (nothing is ever selected).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// `/proc/<pid>/cmdline` bytes as one line: arguments separated by single spaces.
pub fn cmdline_text(raw: &[u8]) -> String {
    let trimmed = raw.strip_suffix(&[0]).unwrap_or(raw);
    String::from_utf8_lossy(trimmed).replace('\0', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../conf/gala-gopher-app.conf");

    #[test]
    fn vector_16_unanchored_comm() {
        let wl = Whitelist::parse_str(
            r#"application = ( { comm = "redis*"; cmdline = ""; } );"#,
            "t",
        )
        .unwrap();
        for comm in ["redi", "redis-server", "myredis"] {
            assert!(wl.selects(comm, ""), "{comm}");
        }
        assert!(!wl.selects("nginx", ""));
    }

    #[test]
    fn vector_16_first_match_decides() {
        let wl = Whitelist::parse_str(
            r#"application = ( { comm = "^python$"; cmdline = "server"; }, { comm = "python"; cmdline = ""; } );"#,
            "t",
        )
        .unwrap();
        assert!(!wl.selects("python", "python app.py"));
        assert!(wl.selects("python", "python server.py"));
    }

    #[test]
    fn empty_comm_and_bad_regex_never_match() {
        let wl = Whitelist::parse_str(
            r#"application = ( { comm = ""; cmdline = ""; }, { comm = "(unclosed"; cmdline = ""; }, { comm = "x"; cmdline = "needle"; } );"#,
            "t",
        )
        .unwrap();
        assert_eq!(wl.len(), 3);
        assert!(!wl.selects("(unclosed", ""));
        assert!(!wl.selects("", ""));
        // Only the third entry can match; its cmdline filter applies.
        assert!(wl.selects("x(unclosed", "a needle b"));
        assert!(!wl.selects("x", "haystack"));
    }

    #[test]
    fn shipped_file() {
        let wl = Whitelist::parse_str(SHIPPED, "gala-gopher-app.conf").unwrap();
        assert_eq!(wl.len(), 6);
        assert!(wl.selects("redis-server", "/usr/bin/redis-server *:6379"));
        assert!(wl.selects("go", "go run ."));
        assert!(!wl.selects("gopls", "gopls"));
        assert!(wl.selects("python3", "python3 x.py"));
        assert!(!wl.selects("python", "python x.py"));
        assert!(wl.selects("python", "python -m http.server"));
        assert!(wl.selects("nginx", "nginx: master process"));
        assert!(!wl.selects("bash", "bash"));
    }

    #[test]
    fn shape_errors() {
        let cases = [
            ("apps = ();", "t:1: missing \"application\""),
            (
                "application = 5;",
                "t:1: \"application\" must be a list ( ... ), found integer",
            ),
            (
                "application = (\n { cmdline = \"\"; }\n);",
                "t:2: application entry #1: missing \"comm\"",
            ),
            (
                "application = (\n { comm = \"a\"; }\n);",
                "t:2: application entry #1: missing \"cmdline\"",
            ),
            (
                "application = ( { comm = 1; cmdline = \"\"; } );",
                "t:1: application entry #1: \"comm\" must be a string, found integer",
            ),
        ];
        for (src, want) in cases {
            let e = Whitelist::parse_str(src, "t").unwrap_err();
            assert_eq!(e.to_string(), want, "{src}");
        }
        let e = Whitelist::parse_str("application = (", "t").unwrap_err();
        assert!(matches!(e, WhitelistError::Syntax(_)));
        assert!(Whitelist::parse_str("application = ();", "t")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn cmdline_nuls_become_spaces() {
        assert_eq!(
            cmdline_text(b"python3\0-m\0http.server\0"),
            "python3 -m http.server"
        );
        assert_eq!(cmdline_text(b""), "");
    }

    fn fake_proc(root: &Path, pid: &str, comm: &str, cmdline: &[u8]) {
        let d = root.join(pid);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("comm"), format!("{comm}\n")).unwrap();
        std::fs::write(d.join("cmdline"), cmdline).unwrap();
    }

    #[test]
    fn scan_fake_proc_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fake_proc(root, "1", "systemd", b"/sbin/init\0splash\0");
        fake_proc(root, "42", "python", b"python\0-m\0http.server\0");
        fake_proc(root, "43", "python", b"python\0app.py\0");
        fake_proc(root, "77", "redis-server", b"redis-server\0*:6379\0");
        fake_proc(root, "100", "python3", b"python3\0x.py\0");
        fake_proc(root, "0123", "redis-server", b"");
        fake_proc(root, "self", "redis-server", b"");
        std::fs::create_dir_all(root.join("200")).unwrap(); // vanished: no comm file
        std::fs::write(root.join("300"), "not a dir").unwrap();
        let wl = Whitelist::parse_str(SHIPPED, "app.conf").unwrap();
        assert_eq!(wl.scan(root), [42, 77, 100]);
        assert_eq!(wl.scan(&root.join("missing")), Vec::<u32>::new());
    }

    #[test]
    fn scan_real_proc_finds_this_test() {
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        let pattern = format!("^{}$", regex::escape(comm.trim_end()));
        let wl = Whitelist::parse_str(
            &format!(
                "application = ( {{ comm = \"{}\"; cmdline = \"\"; }} );",
                pattern.replace('\\', "\\\\")
            ),
            "t",
        )
        .unwrap();
        assert!(wl.scan(Path::new("/proc")).contains(&std::process::id()));
    }

    #[test]
    fn load_reads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("app.conf");
        std::fs::write(&p, SHIPPED).unwrap();
        assert_eq!(Whitelist::load(&p).unwrap().len(), 6);
        assert!(matches!(
            Whitelist::load(&dir.path().join("none")),
            Err(WhitelistError::Syntax(gala_libconfig::Error::Read { .. }))
        ));
    }
}
