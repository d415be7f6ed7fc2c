//! Helpers shared by the integration tests: an independent reading of `system_infos.meta` and a
//! record-line splitter.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

/// The crate directory.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Table name → field names, read from the committed `.meta` with a scanner that knows only
/// the `table_name:` / `name:` lines (independent of the schema module that renders it).
pub fn meta_tables() -> HashMap<String, Vec<String>> {
    let text = std::fs::read_to_string(crate_dir().join("system_infos.meta")).expect("read .meta");
    let quoted = |line: &str| line.split('"').nth(1).map(str::to_string);
    let mut tables = HashMap::new();
    let mut current: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with("table_name:") {
            current = quoted(line);
            tables.insert(current.clone().expect("table name"), Vec::new());
        } else if line.starts_with("name:") {
            let t = current.as_ref().expect("field outside a table");
            tables
                .get_mut(t)
                .expect("table")
                .push(quoted(line).expect("field name"));
        }
    }
    tables
}

/// Splits `|table|v1|…|vn|` into the table and its unescaped values by the daemon's own rules
/// (the `record_line` contract); `None` for lines the daemon would not take as records.
pub fn split_record(line: &str) -> Option<(String, Vec<String>)> {
    let mut raw = Vec::new();
    let table = record_line::parse_record(line, &mut raw).ok()?;
    let values = raw
        .iter()
        .map(|v| {
            let mut s = String::new();
            record_line::unescape_into(v, &mut s);
            s
        })
        .collect();
    Some((table.to_string(), values))
}

/// Checks every record line against the `.meta` widths; returns the records by table.
pub fn check_against_meta(output: &str) -> HashMap<String, Vec<Vec<String>>> {
    let meta = meta_tables();
    let mut by_table: HashMap<String, Vec<Vec<String>>> = HashMap::new();
    for line in output.lines() {
        let (table, values) =
            split_record(line).unwrap_or_else(|| panic!("not a record line: {line:?}"));
        if table == "event" {
            assert_eq!(values.len(), 6, "event line {line:?}");
        } else {
            let fields = meta
                .get(&table)
                .unwrap_or_else(|| panic!("table {table} not in .meta: {line:?}"));
            assert_eq!(
                values.len(),
                fields.len(),
                "{table}: {line:?} vs {fields:?}"
            );
            assert!(!values[0].is_empty(), "empty key in {line:?}");
        }
        by_table.entry(table).or_default().push(values);
    }
    by_table
}

/// Value of `field` in a record of `table`, by the `.meta` field order.
pub fn field<'a>(
    meta: &HashMap<String, Vec<String>>,
    table: &str,
    rec: &'a [String],
    field: &str,
) -> &'a str {
    let i = meta[table]
        .iter()
        .position(|f| f == field)
        .unwrap_or_else(|| panic!("{table} has no field {field}"));
    &rec[i]
}
