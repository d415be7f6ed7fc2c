//! TEMPORARY stand-in for `probe_sdk::whitelist::Whitelist` (same contract) until the SDK's is
//! committed; removed then.
use regex::Regex;
use std::path::Path;

#[derive(Debug)]
pub struct Whitelist {
    entries: Vec<(Option<Regex>, String)>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WhitelistError(String);

impl Whitelist {
    pub fn load(path: &Path) -> Result<Whitelist, WhitelistError> {
        let src = std::fs::read_to_string(path).map_err(|e| WhitelistError(e.to_string()))?;
        Self::parse_str(&src, &path.display().to_string())
    }
    pub fn parse_str(src: &str, _origin: &str) -> Result<Whitelist, WhitelistError> {
        let re = Regex::new(r#"comm\s*[=:]\s*"([^"]*)"\s*[,;]\s*cmdline\s*[=:]\s*"([^"]*)""#)
            .map_err(|e| WhitelistError(e.to_string()))?;
        let entries = re
            .captures_iter(src)
            .map(|c| {
                let comm = &c[1];
                (
                    (!comm.is_empty()).then(|| Regex::new(comm).ok()).flatten(),
                    c[2].to_string(),
                )
            })
            .collect();
        Ok(Whitelist { entries })
    }
    pub fn scan(&self, proc_root: &Path) -> Vec<u32> {
        let mut out = Vec::new();
        let Ok(dir) = std::fs::read_dir(proc_root) else {
            return out;
        };
        let mut comm = String::new();
        let mut cmd = Vec::new();
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if crate::source::read_into(&e.path().join("comm"), &mut comm).is_err() {
                continue;
            }
            let comm = comm.trim_end_matches('\n');
            let Some((_, want)) = self
                .entries
                .iter()
                .find(|(re, _)| re.as_ref().is_some_and(|r| r.is_match(comm)))
            else {
                continue;
            };
            if crate::source::read_bytes_into(&e.path().join("cmdline"), &mut cmd).is_err() {
                continue;
            }
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(want.as_str()) {
                out.push(pid);
            }
        }
        out.sort_unstable();
        out
    }
}
