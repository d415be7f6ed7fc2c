//! `probes.init` (`global.probes_init`, default `/etc/gala-gopher/probes.init`): upstream's
//! persisted REST state, one `<probe> <json document>` line per probe (`#` comments and blank
//! lines skipped). Every successful `PUT` rewrites it atomically (a temp file in the same
//! folder, fsync, rename); at start it is replayed as [`Source::ProbesInit`] overrides, below
//! REST and above the config file. Unlike upstream's `init_probes.sh`, the JSON is kept intact
//! (spaces in command-line strings survive), there is no 30-line limit, and a bad line is
//! reported with its line number and skipped while the others still apply.
//!
//! The file must be a regular file (not a symlink) that only its owner (root or the daemon's
//! user) can write; otherwise it is refused as a whole.

use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::merge::Source;
use super::rest::RestState;

/// Largest `probes.init` read.
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// How long replay waits for a named probe to be discovered.
const DISCOVERY_WAIT: Duration = Duration::from_secs(10);

/// One line of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// 1-based line number.
    pub number: usize,
    /// Probe name.
    pub name: String,
    /// The document, or why the line cannot be read.
    pub doc: Result<Value, String>,
}

/// Reads and splits `path`; `Ok(None)` when it does not exist.
pub fn read(path: &Path) -> io::Result<Option<Vec<Line>>> {
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !md.file_type().is_file() {
        return Err(io::Error::other(
            "not a regular file (symlinks are refused)",
        ));
    }
    let me = nix::unistd::geteuid().as_raw();
    if (md.uid() != 0 && md.uid() != me) || md.mode() & 0o022 != 0 {
        return Err(io::Error::other(format!(
            "owned by uid {} with mode {:o}: only root (or the daemon's user) may be able to write it",
            md.uid(),
            md.mode() & 0o7777
        )));
    }
    if md.len() > MAX_FILE_BYTES {
        return Err(io::Error::other(format!(
            "larger than {MAX_FILE_BYTES} bytes"
        )));
    }
    let text = std::fs::read_to_string(path)?;
    Ok(Some(parse(&text)))
}

/// Splits the text of a `probes.init` file.
pub fn parse(text: &str) -> Vec<Line> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = match line.split_once(char::is_whitespace) {
            Some((n, r)) => (n, r.trim_start()),
            None => (line, ""),
        };
        let doc = if rest.is_empty() {
            Err("missing the JSON document after the probe name".to_string())
        } else {
            serde_json::from_str::<Value>(rest).map_err(|e| format!("invalid JSON: {e}"))
        };
        out.push(Line {
            number: i + 1,
            name: name.to_string(),
            doc,
        });
    }
    out
}

/// Rewrites `path` atomically with one line per `(probe, document)`.
pub fn write(path: &Path, lines: &[(String, Value)]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::other("no file name"))?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let mut text = String::from(
        "# Written by gala-gopher after each successful REST PUT / gopher-ctl probe set.\n\
         # One probe per line: <name> <JSON document>, replayed at start.\n",
    );
    for (name, doc) in lines {
        text.push_str(name);
        text.push(' ');
        text.push_str(&doc.to_string());
        text.push('\n');
    }
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Replays `path` through `rest` (as [`Source::ProbesInit`]); every problem is logged with the
/// line number. Returns (applied, refused).
pub async fn replay(rest: &RestState, path: &Path) -> (usize, usize) {
    let p = path.to_path_buf();
    let lines = match tokio::task::spawn_blocking(move || read(&p)).await {
        Ok(Ok(Some(lines))) => lines,
        Ok(Ok(None)) => return (0, 0),
        Ok(Err(e)) => {
            tracing::error!("{}: refused: {e}", path.display());
            return (0, 0);
        }
        Err(e) => {
            tracing::error!("{}: {e}", path.display());
            return (0, 0);
        }
    };
    let deadline = tokio::time::Instant::now() + DISCOVERY_WAIT;
    let (mut applied, mut refused) = (0, 0);
    for line in lines {
        let doc = match &line.doc {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("{}:{}: {e}; line skipped", path.display(), line.number);
                refused += 1;
                continue;
            }
        };
        // The first discovery scan may still be running.
        while rest.resolve(&line.name).is_none() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        match rest.put(&line.name, doc, Source::ProbesInit).await {
            Ok(_) => {
                tracing::info!(
                    "{}:{}: probe {} set",
                    path.display(),
                    line.number,
                    line.name
                );
                applied += 1;
            }
            Err(f) => {
                tracing::error!(
                    "{}:{}: probe {}: {}; line skipped",
                    path.display(),
                    line.number,
                    line.name,
                    f.message
                );
                refused += 1;
            }
        }
    }
    (applied, refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_keeps_json_intact_and_numbers_lines() {
        let text = "# c\n\ntcp {\"snoopers\":{\"proc_name\":[{\"comm\":\"java\",\"cmdline\":\"-jar my app.jar\"}]},\"state\":\"running\"}\nbad {nope\nlonely\n  io   {\"state\":\"stopped\"}  \n";
        let lines = parse(text);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0].number, 3);
        assert_eq!(lines[0].name, "tcp");
        let doc = lines[0].doc.as_ref().unwrap();
        assert_eq!(
            doc["snoopers"]["proc_name"][0]["cmdline"],
            "-jar my app.jar"
        );
        assert_eq!(lines[1].number, 4);
        assert!(lines[1].doc.as_ref().unwrap_err().contains("invalid JSON"));
        assert!(lines[2].doc.is_err());
        assert_eq!(lines[3].name, "io");
        assert_eq!(lines[3].doc.as_ref().unwrap()["state"], "stopped");
    }

    #[test]
    fn write_is_atomic_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probes.init");
        let docs = vec![
            (
                "tcp".to_string(),
                serde_json::json!({"state": "running", "x": "a b"}),
            ),
            ("io".to_string(), serde_json::json!({"state": "stopped"})),
        ];
        write(&path, &docs).unwrap();
        let back = read(&path).unwrap().unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].doc.as_ref().unwrap(), &docs[0].1);
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        // No temp file left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(read(&dir.path().join("none")).unwrap().is_none());
        // Group-writable or a symlink: refused.
        std::os::unix::fs::symlink(&path, dir.path().join("link")).unwrap();
        assert!(read(&dir.path().join("link")).is_err());
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
        assert!(read(&path).is_err());
    }
}
