//! TEMPORARY stand-in for `probe_sdk::whitelist` until the config helper commits it.
#![allow(dead_code, missing_docs)]
use std::path::Path;
#[derive(Debug)]
pub struct Whitelist;
#[derive(Debug, thiserror::Error)]
#[error("whitelist support not available yet")]
pub struct WhitelistError;
impl Whitelist {
    pub fn load(_p: &Path) -> Result<Whitelist, WhitelistError> {
        Err(WhitelistError)
    }
    pub fn parse_str(_s: &str, _o: &str) -> Result<Whitelist, WhitelistError> {
        Err(WhitelistError)
    }
    pub fn selects(&self, _c: &str, _l: &str) -> bool {
        false
    }
    pub fn scan(&self, _r: &Path) -> Vec<u32> {
        Vec::new()
    }
}
