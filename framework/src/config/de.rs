//! Value parsers used by the config structs: ranges, enums, on/off, channels, paths.
//!
//! Each returns a serde custom error with a message of the form `invalid value X, expected Y`;
//! the `config` crate attaches the dotted key and the loader attaches `FILE:LINE`.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};

/// An integer in `MIN..=MAX`, converted to `T`.
pub(crate) fn ranged<'de, D, T, const MIN: i64, const MAX: i64>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    let v = i64::deserialize(d)?;
    if !(MIN..=MAX).contains(&v) {
        let expected = if MAX == i64::MAX {
            format!("an integer >= {MIN}")
        } else {
            format!("{MIN}..={MAX}")
        };
        return Err(de::Error::custom(format!(
            "invalid value {v}, expected {expected}"
        )));
    }
    T::try_from(v).map_err(|_| de::Error::custom(format!("invalid value {v}")))
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

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use string_enum;

struct OnOff;

impl Visitor<'_> for OnOff {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"on\", \"off\", true or false")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        Ok(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        match v.to_ascii_lowercase().as_str() {
            "on" | "true" => Ok(true),
            "off" | "false" => Ok(false),
            _ => Err(E::custom(format!(
                "invalid value {v:?}, expected \"on\" or \"off\""
            ))),
        }
    }
}

/// `"on"`/`"off"` (upstream style) or a boolean.
pub(crate) fn on_off<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    d.deserialize_any(OnOff)
}

/// A string where `""` means "not set".
pub(crate) fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    Ok((!s.is_empty()).then_some(s))
}

/// A path where `""` means "not set".
pub(crate) fn opt_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    Ok(opt_string(d)?.map(PathBuf::from))
}

/// An IP address (v4 or v6) to bind to.
pub(crate) fn ip_addr<'de, D: Deserializer<'de>>(d: D) -> Result<IpAddr, D::Error> {
    let s = String::deserialize(d)?;
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
    let s = String::deserialize(d)?;
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
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Err(de::Error::custom("invalid value \"\", expected a path"));
    }
    Ok(PathBuf::from(s))
}

/// A probe name: it becomes a file name under `probes_dir`, a metric label and a REST path.
pub(crate) fn probe_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    let mut chars = s.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok {
        return Err(de::Error::custom(format!(
            "invalid value {s:?}, expected a probe name of letters, digits, '_', '-' and '.' \
             (not starting with '-' or '.')"
        )));
    }
    Ok(s)
}

/// An `extend_probes` command: non-empty and splittable like a shell would (it is never run by one).
pub(crate) fn command<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
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
    let s = String::deserialize(d)?;
    shell_words::split(&s)
        .map(|_| s.clone())
        .map_err(|_| de::Error::custom(format!("invalid value {s:?}, unbalanced quotes")))
}

/// An OTLP/HTTP endpoint: `""` (off) or an `http://` / `https://` URL.
pub(crate) fn endpoint<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() || s.starts_with("http://") || s.starts_with("https://") {
        Ok(s)
    } else {
        Err(de::Error::custom(format!(
            "invalid value {s:?}, expected \"\" or an http:// or https:// URL"
        )))
    }
}

/// One or more output channels; see [`super::OutChannels`].
pub(crate) struct ChannelsVisitor;

impl<'de> Visitor<'de> for ChannelsVisitor {
    type Value = super::OutChannels;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a channel name or a list of channel names")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        // A comma-separated string is accepted so environment overrides can name several.
        let mut out = super::OutChannels::default();
        for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            out.push(part.parse().map_err(E::custom)?);
        }
        Ok(out)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = super::OutChannels::default();
        while let Some(s) = seq.next_element::<String>()? {
            if !s.is_empty() {
                out.push(s.parse().map_err(de::Error::custom)?);
            }
        }
        Ok(out)
    }
}
