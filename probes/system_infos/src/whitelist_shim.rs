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
    pub fn selects(&self, comm: &str, cmdline: &str) -> bool {
        for (re, cmd) in &self.entries {
            if re.as_ref().is_some_and(|r| r.is_match(comm)) {
                return cmdline.contains(cmd.as_str());
            }
        }
        false
    }
    pub fn scan(&self, proc_root: &Path) -> Vec<u32> {
        let mut out = Vec::new();
        let Ok(dir) = std::fs::read_dir(proc_root) else {
            return out;
        };
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(comm) = std::fs::read_to_string(e.path().join("comm")) else {
                continue;
            };
            let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if self.selects(comm.trim_end_matches('\n'), &cmd) {
                out.push(pid);
            }
        }
        out.sort_unstable();
        out
    }
}
