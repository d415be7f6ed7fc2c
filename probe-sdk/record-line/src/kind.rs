//! Field kinds: what each position of a record line is, as `.meta` files name them.

use std::fmt;
use std::str::FromStr;

/// What a field is: part of the series identity, a plain label, or a value of a metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldKind {
    /// Identity of the record (and a Prometheus label).
    Key,
    /// A Prometheus label that is not part of the identity.
    Label,
    /// A value that can go up and down.
    Gauge,
    /// A monotonically increasing value.
    Counter,
    /// Upstream histogram encoding `N b1 c1 … bN cN sum max` (see [`crate::histogram`]).
    Histogram,
    /// Exported like a gauge (upstream behaviour).
    Summary,
    /// `string`, `number`, `byte sequence` or `Unknown` (types upstream's own metas use): stored,
    /// never exported as a metric.
    Other,
}

/// A `type` string no `.meta` reader accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown field type {0:?} (expected key, label, gauge, counter, histogram or summary)")]
pub struct UnknownFieldKind(pub String);

impl FieldKind {
    /// The kinds a probe declares, in the order `.meta` documentation lists them.
    pub const DECLARED: [FieldKind; 6] = [
        FieldKind::Key,
        FieldKind::Label,
        FieldKind::Gauge,
        FieldKind::Counter,
        FieldKind::Histogram,
        FieldKind::Summary,
    ];

    /// The `type` strings read as [`FieldKind::Other`]: the ones upstream's own `.meta` files use
    /// for values that are stored but never exported. Only these are accepted, because any other
    /// string is far more likely a typo of a declared kind.
    pub const STORED_ONLY: [&'static str; 4] = ["string", "number", "byte sequence", "Unknown"];

    /// The `type` string written in `.meta` files (`Other` writes `string`).
    pub fn as_str(self) -> &'static str {
        match self {
            FieldKind::Key => "key",
            FieldKind::Label => "label",
            FieldKind::Gauge => "gauge",
            FieldKind::Counter => "counter",
            FieldKind::Histogram => "histogram",
            FieldKind::Summary => "summary",
            FieldKind::Other => "string",
        }
    }

    /// Whether the field carries a metric value (as opposed to identity/labels).
    pub fn is_metric(self) -> bool {
        matches!(
            self,
            FieldKind::Gauge | FieldKind::Counter | FieldKind::Histogram | FieldKind::Summary
        )
    }

    /// Whether the field is rendered as a label (key or label).
    pub fn is_label(self) -> bool {
        matches!(self, FieldKind::Key | FieldKind::Label)
    }
}

impl FromStr for FieldKind {
    type Err = UnknownFieldKind;

    /// Reads a `.meta` `type` string: the six [declared](FieldKind::DECLARED) kinds, and the
    /// [stored-only](FieldKind::STORED_ONLY) types as [`FieldKind::Other`]. Case-sensitive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "key" => FieldKind::Key,
            "label" => FieldKind::Label,
            "gauge" => FieldKind::Gauge,
            "counter" => FieldKind::Counter,
            "histogram" => FieldKind::Histogram,
            "summary" => FieldKind::Summary,
            other if FieldKind::STORED_ONLY.contains(&other) => FieldKind::Other,
            other => return Err(UnknownFieldKind(other.to_string())),
        })
    }
}

impl fmt::Display for FieldKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_kinds_round_trip_through_their_names() {
        for k in FieldKind::DECLARED {
            assert_eq!(k.as_str().parse::<FieldKind>(), Ok(k));
        }
        for t in FieldKind::STORED_ONLY {
            assert_eq!(t.parse::<FieldKind>(), Ok(FieldKind::Other));
        }
        assert!("Gauge".parse::<FieldKind>().is_err());
    }
}
