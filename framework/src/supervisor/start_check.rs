//! Start checks of `auto` probes.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use regex::Regex;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::child;
use super::StartCheck;

/// Longest a `ShellCount` check may run.
pub const SHELL_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest first output line of a `ShellCount` check that is looked at.
const MAX_CHECK_OUTPUT: u64 = 4096;

/// Why a start check could not give an answer (treated as "do not start").
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The shell could not be started or read.
    #[error("start check failed: {0}")]
    Io(#[from] std::io::Error),
    /// The shell did not finish in time.
    #[error("start check timed out after {0:?}")]
    Timeout(Duration),
}

/// Evaluate `check`: true means the probe should start.
pub async fn passes(check: &StartCheck) -> Result<bool, CheckError> {
    match check {
        StartCheck::ShellCount(cmd) => shell_count(cmd, SHELL_CHECK_TIMEOUT).await,
        StartCheck::ProcessRegex(re) => {
            let re = re.clone();
            let found =
                tokio::task::spawn_blocking(move || any_process_matches(Path::new("/proc"), &re))
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
            Ok(found)
        }
    }
}

/// Upstream `start_check` with `check_type = "count"`: run the root-owned config's pipeline with
/// `/bin/sh -c` (the only shell use in the daemon) and start iff the first line's leading integer
/// (C `atoi`) is > 0.
pub async fn shell_count(cmd: &str, timeout: Duration) -> Result<bool, CheckError> {
    let argv = ["/bin/sh".to_string(), "-c".to_string(), cmd.to_string()];
    let mut command = child::probe_command(&argv)?;
    command.stderr(Stdio::null());
    let mut owned = child::spawn_owned(&mut command)?;
    let stdout = owned
        .child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("start check stdout not piped"))?;
    let read_first_line = async {
        let mut line = String::new();
        BufReader::new(stdout.take(MAX_CHECK_OUTPUT))
            .read_line(&mut line)
            .await
            .map(|_| line)
    };
    let outcome = tokio::time::timeout(timeout, read_first_line).await;
    // The pipeline's remaining processes are of no interest once the first line is read.
    child::signal_group(owned.pid, Signal::SIGKILL);
    let _ = owned.child.wait().await;
    match outcome {
        Err(_) => Err(CheckError::Timeout(timeout)),
        Ok(Err(e)) => Err(CheckError::Io(e)),
        Ok(Ok(line)) => Ok(atoi(&line) > 0),
    }
}

/// C `atoi`: optional leading whitespace and sign, then digits; anything else → 0.
pub fn atoi(s: &str) -> i64 {
    let s = s.trim_start();
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut value: i64 = 0;
    for b in digits.bytes().take_while(u8::is_ascii_digit) {
        value = value.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    if neg {
        -value
    } else {
        value
    }
}

/// True if `<proc_root>/<pid>/comm` of some process matches `re`.
pub fn any_process_matches(proc_root: &Path, re: &Regex) -> bool {
    let Ok(dir) = std::fs::read_dir(proc_root) else {
        return false;
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(is_pid))
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .any(|comm| re.is_match(comm.trim_end_matches('\n')))
}

fn is_pid(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atoi_like_c() {
        let cases = [
            ("3\n", 3),
            ("  12 abc", 12),
            ("-4", -4),
            ("+7x", 7),
            ("", 0),
            ("abc", 0),
            ("0\n", 0),
            ("99999999999999999999999", i64::MAX),
        ];
        for (input, want) in cases {
            assert_eq!(atoi(input), want, "{input:?}");
        }
    }

    #[test]
    fn process_regex_on_fake_proc() {
        let root = tempfile::tempdir().unwrap();
        for (pid, comm) in [("1", "systemd\n"), ("42", "redis-server\n")] {
            std::fs::create_dir(root.path().join(pid)).unwrap();
            std::fs::write(root.path().join(pid).join("comm"), comm).unwrap();
        }
        // Not a pid directory: must be ignored.
        std::fs::create_dir(root.path().join("sys")).unwrap();
        std::fs::write(root.path().join("sys").join("comm"), "nginx\n").unwrap();

        assert!(any_process_matches(
            root.path(),
            &Regex::new("^redis").unwrap()
        ));
        assert!(!any_process_matches(
            root.path(),
            &Regex::new("nginx").unwrap()
        ));
        assert!(!any_process_matches(
            root.path(),
            &Regex::new("server$\n").unwrap()
        ));
    }

    #[tokio::test]
    async fn shell_count_reads_first_line() {
        let t = Duration::from_secs(10);
        assert!(shell_count("echo 2; echo 0", t).await.unwrap());
        assert!(!shell_count("echo 0; echo 5", t).await.unwrap());
        assert!(!shell_count("true", t).await.unwrap());
        assert!(!shell_count("echo x", t).await.unwrap());
    }

    #[tokio::test]
    async fn shell_count_times_out() {
        let err = shell_count("sleep 30", Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, CheckError::Timeout(_)), "{err}");
    }
}
