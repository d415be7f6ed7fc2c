//! The control channel: what the daemon writes on a probe's stdin.
//!
//! One JSON object per line (at most [`MAX_LINE_BYTES`]), each the probe's **complete**
//! run-time state — never a diff — so a probe only keeps the last line it read:
//!
//! ```json
//! {"v":1,"probe":["tcp_rtt"],"probe_bits":2,"params":{"report_period":10},"snoop":{"mode":"include","pids":[12,34]}}
//! ```
//!
//! * `probe`: the sub-probes on; `probe_bits`: their `-P` bits (every declared default when the
//!   user chose none);
//! * `params`: every declared param with its effective value (defaults filled in);
//! * `snoop`: which processes to observe: `all`, `include` (only `pids`) or `exclude` (all but
//!   `pids`), already resolved by the daemon from the snoopers (and kept current as processes
//!   start, exec and exit).
//!
//! The daemon sends the current state right after starting a probe, then on every change. Keys a
//! probe does not know are to be ignored: later versions may add some.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::declaration::{Declaration, ParamError, ParamValue};

/// Longest control line, newline included.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Which processes to observe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnoopMode {
    /// Every process (no snoopers).
    #[default]
    All,
    /// Only the listed pids (whitelist snoopers).
    Include,
    /// Every process but the listed pids (blacklist).
    Exclude,
}

impl std::fmt::Display for Snoop {
    /// `all`, `include 2 pids`, `exclude 1 pid` (for a probe's log line).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.mode {
            SnoopMode::All => return f.write_str("all"),
            SnoopMode::Include => "include",
            SnoopMode::Exclude => "exclude",
        };
        let n = self.pids.len();
        write!(f, "{mode} {n} pid{}", if n == 1 { "" } else { "s" })
    }
}

/// The resolved process selection.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Snoop {
    /// How `pids` is meant.
    #[serde(default)]
    pub mode: SnoopMode,
    /// Sorted pids.
    #[serde(default)]
    pub pids: Vec<u32>,
}

impl Snoop {
    /// Whether process `pid` is observed.
    pub fn selects(&self, pid: u32) -> bool {
        match self.mode {
            SnoopMode::All => true,
            SnoopMode::Include => self.pids.binary_search(&pid).is_ok(),
            SnoopMode::Exclude => self.pids.binary_search(&pid).is_err(),
        }
    }
}

/// One control line.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ControlMsg {
    /// Format version, 1.
    #[serde(default = "one")]
    pub v: u32,
    /// Sub-probes on.
    #[serde(default)]
    pub probe: Vec<String>,
    /// Their `-P` bits.
    #[serde(default)]
    pub probe_bits: u32,
    /// Every declared param's effective value.
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
    /// Processes to observe.
    #[serde(default, deserialize_with = "object")]
    pub snoop: Snoop,
}

/// Deserializes `T` from a JSON object only (derived impls also take arrays).
fn object<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Only<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Only<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_map(Only(std::marker::PhantomData))
}

fn one() -> u32 {
    1
}

/// A control line that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// Longer than [`MAX_LINE_BYTES`].
    #[error("control line longer than {MAX_LINE_BYTES} bytes")]
    TooLong,
    /// Not a control message.
    #[error("control line: {0}")]
    Json(#[from] serde_json::Error),
}

impl ControlMsg {
    /// Parses one line (without or with its newline).
    pub fn parse_line(line: &str) -> Result<ControlMsg, ChannelError> {
        if line.len() > MAX_LINE_BYTES {
            return Err(ChannelError::TooLong);
        }
        // Serde would also read a struct from a JSON array: a control line is an object.
        let mut de = serde_json::Deserializer::from_str(line.trim_end());
        let mut msg: ControlMsg = object(&mut de)?;
        de.end()?;
        msg.snoop.pids.sort_unstable();
        msg.snoop.pids.dedup();
        Ok(msg)
    }

    /// The line to write, newline included.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string());
        s.push('\n');
        s
    }

    /// Param `name` checked against its declaration in `decl`: None when the line does not
    /// carry it or `decl` does not declare it (a probe keeps its value then), else the value or
    /// why it is refused.
    pub fn checked(
        &self,
        decl: &Declaration,
        name: &str,
    ) -> Option<Result<ParamValue, ParamError>> {
        let value = self.params.get(name)?;
        Some(decl.param(name)?.check(value))
    }

    /// Param `name` as an integer.
    pub fn int(&self, name: &str) -> Option<i64> {
        self.params.get(name)?.as_i64()
    }

    /// Param `name` as a string.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.params.get(name)?.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_defaults() {
        let msg = ControlMsg::parse_line(
            r#"{"v":1,"probe":["a"],"probe_bits":3,"params":{"report_period":10,"dev_name":"sda"},"snoop":{"mode":"include","pids":[9,2,9]},"future":1}"#,
        )
        .unwrap();
        assert_eq!(msg.probe_bits, 3);
        assert_eq!(msg.int("report_period"), Some(10));
        assert_eq!(msg.str("dev_name"), Some("sda"));
        assert_eq!(msg.snoop.pids, [2, 9]);
        assert!(msg.snoop.selects(2) && !msg.snoop.selects(3));
        let again = ControlMsg::parse_line(&msg.to_line()).unwrap();
        assert_eq!(again, msg);
        assert!(msg.to_line().ends_with('\n'));

        let empty = ControlMsg::parse_line("{}").unwrap();
        assert_eq!(empty.v, 1);
        assert_eq!(empty.snoop.mode, SnoopMode::All);
        assert!(empty.snoop.selects(1));
        let ex = Snoop {
            mode: SnoopMode::Exclude,
            pids: vec![5],
        };
        assert!(!ex.selects(5) && ex.selects(6));

        assert_eq!(msg.snoop.to_string(), "include 2 pids");
        assert_eq!(Snoop::default().to_string(), "all");
        let decl = Declaration {
            params: vec![crate::standard("report_period").unwrap()],
            ..Declaration::default()
        };
        assert_eq!(
            msg.checked(&decl, "report_period"),
            Some(Ok(ParamValue::Int(10)))
        );
        assert_eq!(msg.checked(&decl, "dev_name"), None);
        let bad = ControlMsg::parse_line(r#"{"params":{"report_period":0}}"#).unwrap();
        assert!(matches!(bad.checked(&decl, "report_period"), Some(Err(_))));
        assert!(ControlMsg::parse_line("not json").is_err());
        assert!(ControlMsg::parse_line("[]").is_err());
        assert!(ControlMsg::parse_line("[1,[\"a\"],3]").is_err());
        assert!(ControlMsg::parse_line("{\"snoop\":[]}").is_err());
        assert!(ControlMsg::parse_line(&" ".repeat(MAX_LINE_BYTES + 1)).is_err());
    }
}
