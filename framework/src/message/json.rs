//! The one JSON primitive every message encoder shares (metric, event and metadata JSON).

/// Append `s` as a JSON string literal (quoted, escaped).
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}
