//! Value parsers used by the config structs: integers, switches, strings, enums, channels, paths.
//!
//! Nothing is coerced: an integer key takes an integer, a switch takes a boolean or `"on"`/`"off"`,
//! a string key takes a string. The `config` crate would convert freely (`true` → 1, `1.5` → 2,
//! `"yes"` → 1, `5` → `"5"`), so every key goes through [`Raw`], which sees the value's real type.
//! Environment overrides arrive as text marked by [`env_value`]; their text is parsed by the same
//! rules (`"9100"` is an integer there because text is all a variable can hold).
//!
//! Each parser returns a serde custom error of the form `invalid type: X, expected Y` or
//! `invalid value X, expected Y`; the `config` crate attaches the dotted key and the loader
//! attaches `FILE:LINE` (or the variable).

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Key of the one-entry table that carries an environment override's text. It cannot be
/// written in a libconfig file (names start with a letter or `*`).
const ENV_TEXT_KEY: &str = "\u{0}env";

/// The `config` value for environment variable `var` holding `text`: marked, so typed keys
/// parse the text instead of treating it as a string written in the file.
pub(crate) fn env_value(var: &str, text: &str) -> config::Value {
    let origin = Some(var.to_string());
    let mut table = config::Map::new();
    table.insert(
        ENV_TEXT_KEY.to_string(),
        config::Value::new(origin.as_ref(), config::ValueKind::String(text.to_string())),
    );
    config::Value::new(origin.as_ref(), config::ValueKind::Table(table))
}

/// A config value as written, before any conversion.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Raw {
    /// `true` / `false`.
    Bool(bool),
    /// An integer literal.
    Int(i128),
    /// A float literal.
    Float(f64),
    /// A string literal in the file.
    Str(String),
    /// The text of an environment override.
    Env(String),
    /// A list or array.
    List(Vec<Raw>),
    /// A group.
    Group,
    /// No value.
    Unit,
}

impl Raw {
    /// `invalid type: <what this is>, expected <expected>`.
    fn invalid_type<E: de::Error>(&self, expected: &str) -> E {
        let what = match self {
            Raw::Bool(b) => format!("boolean `{b}`"),
            Raw::Int(i) => format!("integer `{i}`"),
            Raw::Float(f) => format!("floating point `{f:?}`"),
            Raw::Str(s) | Raw::Env(s) => format!("string {s:?}"),
            Raw::List(_) => "list".to_string(),
            Raw::Group => "group".to_string(),
            Raw::Unit => "nothing".to_string(),
        };
        E::custom(format!("invalid type: {what}, expected {expected}"))
    }

    /// The integer this is: an integer literal, or environment text that is a decimal integer.
    fn integer<E: de::Error>(&self) -> Result<i128, E> {
        match self {
            Raw::Int(i) => Ok(*i),
            Raw::Env(s) => s
                .parse::<i64>()
                .map(i128::from)
                .map_err(|_| self.invalid_type("an integer")),
            _ => Err(self.invalid_type("an integer")),
        }
    }

    /// The text of a string literal or of an environment override.
    fn string<E: de::Error>(self) -> Result<String, E> {
        match self {
            Raw::Str(s) | Raw::Env(s) => Ok(s),
            other => Err(other.invalid_type("a string")),
        }
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Raw, E> {
        i128::try_from(v)
            .map(Raw::Int)
            .map_err(|_| E::custom(format!("invalid value {v}, the integer is too large")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Unit)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Raw>()? {
            items.push(item);
        }
        Ok(Raw::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut out = Raw::Group;
        while let Some(key) = map.next_key::<String>()? {
            if key == ENV_TEXT_KEY {
                out = Raw::Env(map.next_value::<String>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(out)
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

/// An integer in `MIN..=MAX`, converted to `T`.
pub(crate) fn ranged<'de, D, T, const MIN: i64, const MAX: i64>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    let v = Raw::deserialize(d)?.integer::<D::Error>()?;
    let in_range = i64::try_from(v).ok().filter(|v| (MIN..=MAX).contains(v));
    let Some(v) = in_range else {
        let expected = if MAX == i64::MAX {
            format!("an integer >= {MIN}")
        } else {
            format!("{MIN}..={MAX}")
        };
        return Err(de::Error::custom(format!(
            "invalid value {v}, expected {expected}"
        )));
    };
    T::try_from(v).map_err(|_| de::Error::custom(format!("invalid value {v}")))
}

/// Any 64-bit integer.
pub(crate) fn integer<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    ranged::<D, i64, { i64::MIN }, { i64::MAX }>(d)
}

/// A string (in the file: a string literal; from the environment: the variable's text).
pub(crate) fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Raw::deserialize(d)?.string()
}

/// Defines a string-valued enum with case-insensitive parsing and an error listing the choices.
macro_rules! string_enum {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $variant,)+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The spelling used in the config file.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str().eq_ignore_ascii_case(s))
                    .ok_or_else(|| {
                        let choices: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                        format!("invalid value {s:?}, expected one of: {}", choices.join(", "))
                    })
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = $crate::config::de::string(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use string_enum;

const ON_OFF: &str = "\"on\", \"off\", true or false";

/// A switch: `true`/`false` or `"on"`/`"off"` (upstream writes both: `rest_api_on = true`,
/// `ssl_auth = "on"`). From the environment the text `on`/`off`/`true`/`false` (any case).
pub(crate) fn on_off<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    const FILE_WORDS: &[(&str, bool)] = &[("on", true), ("off", false)];
    const ENV_WORDS: &[(&str, bool)] = &[
        ("on", true),
        ("off", false),
        ("true", true),
        ("false", false),
    ];
    let (text, words) = match Raw::deserialize(d)? {
        Raw::Bool(b) => return Ok(b),
        Raw::Str(s) => (s, FILE_WORDS),
        Raw::Env(s) => (s, ENV_WORDS),
        other => return Err(other.invalid_type(ON_OFF)),
    };
    words
        .iter()
        .find(|(w, _)| w.eq_ignore_ascii_case(&text))
        .map(|(_, b)| *b)
        .ok_or_else(|| de::Error::custom(format!("invalid value {text:?}, expected {ON_OFF}")))
}

/// A string where `""` means "not set".
pub(crate) fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = string(d)?;
    Ok((!s.is_empty()).then_some(s))
}

/// A path where `""` means "not set".
pub(crate) fn opt_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    Ok(opt_string(d)?.map(PathBuf::from))
}

/// An IP address (v4 or v6) to bind to.
pub(crate) fn ip_addr<'de, D: Deserializer<'de>>(d: D) -> Result<IpAddr, D::Error> {
    let s = string(d)?;
    s.parse().map_err(|_| {
        de::Error::custom(format!(
            "invalid value {s:?}, expected an IP address such as \"127.0.0.1\""
        ))
    })
}

/// Sequences HEAD's `check_path_for_security` rejects in log directories.
const UNSAFE_PATH_PARTS: &[&str] = &[
    "|", ";", "&", "$", ">", "<", "(", ")", "./", "/.", "?", "*", "'", "`", "[", "]", "\\", "!",
    "\n",
];

/// A non-empty directory path without shell metacharacters or dot segments.
pub(crate) fn safe_dir<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let s = string(d)?;
    if s.is_empty() {
        return Err(de::Error::custom(
            "invalid value \"\", expected a directory path",
        ));
    }
    if let Some(bad) = UNSAFE_PATH_PARTS.iter().find(|p| s.contains(**p)) {
        return Err(de::Error::custom(format!(
            "invalid value {s:?}, the path must not contain {bad:?}"
        )));
    }
    Ok(PathBuf::from(s))
}

/// A non-empty path.
pub(crate) fn path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let s = string(d)?;
    if s.is_empty() {
        return Err(de::Error::custom("invalid value \"\", expected a path"));
    }
    Ok(PathBuf::from(s))
}

/// Longest probe name accepted.
pub const MAX_PROBE_NAME: usize = 64;

/// Is `name` a valid probe name: 1..=64 of `[A-Za-z0-9_.-]`, not starting with `-` or `.`?
///
/// Probe names end up in log lines, metric labels, file names and REST paths; this keeps them
/// printable and bounded (a file name with a newline could otherwise forge log lines). Config
/// entries and drop-ins are checked by this one function.
pub fn valid_probe_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_PROBE_NAME
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// A probe name: it becomes a file name under `probes_dir`, a metric label and a REST path.
pub(crate) fn probe_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = string(d)?;
    if !valid_probe_name(&s) {
        return Err(de::Error::custom(format!(
            "invalid value {s:?}, expected a probe name of at most {MAX_PROBE_NAME} letters, \
             digits, '_', '-' and '.' (not starting with '-' or '.')"
        )));
    }
    Ok(s)
}

/// An `extend_probes` command: non-empty and splittable like a shell would (it is never run by one).
pub(crate) fn command<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = string(d)?;
    match shell_words::split(&s) {
        Ok(words) if !words.is_empty() => Ok(s),
        Ok(_) => Err(de::Error::custom("invalid value \"\", expected a command")),
        Err(_) => Err(de::Error::custom(format!(
            "invalid value {s:?}, unbalanced quotes"
        ))),
    }
}

/// A probe `param` string: must split like a shell would.
pub(crate) fn param<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = string(d)?;
    shell_words::split(&s)
        .map(|_| s.clone())
        .map_err(|_| de::Error::custom(format!("invalid value {s:?}, unbalanced quotes")))
}

/// An OTLP/HTTP endpoint: `""` (off) or an `http://` / `https://` URL.
pub(crate) fn endpoint<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = string(d)?;
    if s.is_empty() || s.starts_with("http://") || s.starts_with("https://") {
        Ok(s)
    } else {
        Err(de::Error::custom(format!(
            "invalid value {s:?}, expected \"\" or an http:// or https:// URL"
        )))
    }
}

/// `global.host_root`: empty, or an absolute path without `..` (kept as written).
pub(crate) fn host_root<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = string(d)?;
    container_info::host::parse(&s).map_err(de::Error::custom)?;
    Ok(s)
}

/// A string (comma-separated items, so an environment override can name several) or a list of
/// strings; each non-empty item goes to `add`. `item` and `items` name them in type errors.
fn string_list<'de, D: Deserializer<'de>>(
    d: D,
    item: &'static str,
    items: &'static str,
    mut add: impl FnMut(&str) -> Result<(), D::Error>,
) -> Result<(), D::Error> {
    match Raw::deserialize(d)? {
        Raw::Str(s) | Raw::Env(s) => {
            for part in s.split(',').map(str::trim) {
                add(part)?;
            }
        }
        Raw::List(items) => {
            for it in items {
                match it {
                    Raw::Str(s) => add(&s)?,
                    other => return Err(other.invalid_type(item)),
                }
            }
        }
        other => return Err(other.invalid_type(items)),
    }
    Ok(())
}

/// Unix socket paths: a string (comma-separated, so an environment override can name several)
/// or a list of strings; each an absolute path of at most 107 bytes (`sun_path`).
pub(crate) fn socket_paths<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    let mut out = Vec::new();
    let add = |p: &str| -> Result<(), D::Error> {
        if p.is_empty() {
            return Ok(());
        }
        if !p.starts_with('/') || p.len() > 107 || p.contains('\0') {
            return Err(de::Error::custom(format!(
                "invalid socket path {p:?}, expected an absolute path of at most 107 bytes"
            )));
        }
        if out.len() >= 16 {
            return Err(de::Error::custom("more than 16 socket paths"));
        }
        out.push(PathBuf::from(p));
        Ok(())
    };
    string_list(
        d,
        "a socket path",
        "a socket path or a list of socket paths",
        add,
    )?;
    Ok(out)
}

const CHANNELS: &str = "a channel name or a list of channel names";

/// One or more output channels; see [`super::OutChannels`]: a string (comma-separated names, so
/// an environment override can name several) or a list of strings.
pub(crate) fn channels<'de, D: Deserializer<'de>>(d: D) -> Result<super::OutChannels, D::Error> {
    let mut out = super::OutChannels::default();
    let add = |name: &str| -> Result<(), D::Error> {
        if !name.is_empty() {
            out.push(name.parse().map_err(de::Error::custom)?);
        }
        Ok(())
    };
    string_list(d, "a channel name", CHANNELS, add)?;
    Ok(out)
}
