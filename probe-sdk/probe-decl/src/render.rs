//! A declaration as the `probe` group of a `.meta` file (libconfig syntax).

use std::fmt::Write as _;

use crate::declaration::{Declaration, ParamKind, ParamValue};

fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn array(items: &[String]) -> String {
    if items.is_empty() {
        return "[ ]".to_string();
    }
    let inner: Vec<String> = items.iter().map(|s| quoted(s)).collect();
    format!("[ {} ]", inner.join(", "))
}

impl Declaration {
    /// The `probe = { … };` group, for appending to the probe's `.meta` text.
    pub fn render_meta(&self) -> String {
        let mut out = String::from("probe =\n{\n");
        if let Some(alias) = &self.rest_name {
            let _ = writeln!(out, "    rest_name = {};", quoted(alias));
        }
        let _ = writeln!(out, "    reload = {};", self.reload);
        let kinds: Vec<String> = self
            .snoopers
            .iter()
            .map(|k| k.as_str().to_string())
            .collect();
        let _ = writeln!(out, "    snoopers = {};", array(&kinds));
        out.push_str("    sub_probes =\n    (\n");
        for (i, s) in self.sub_probes.iter().enumerate() {
            let sep = if i + 1 < self.sub_probes.len() {
                ","
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "        {{ name = {}; bits = {}; default = {}; }}{sep}",
                quoted(&s.name),
                s.bits,
                s.default
            );
        }
        out.push_str("    );\n    params =\n    (\n");
        for (i, p) in self.params.iter().enumerate() {
            let mut line = format!(
                "{{ name = {}; type = {};",
                quoted(&p.name),
                quoted(p.kind.type_name())
            );
            match &p.kind {
                ParamKind::Int { min, max } => {
                    let _ = write!(line, " min = {min}; max = {max};");
                }
                ParamKind::Str { max_len, charset } => {
                    let _ = write!(
                        line,
                        " max_len = {max_len}; charset = {};",
                        quoted(charset.as_str())
                    );
                }
                ParamKind::Choice { values } | ParamKind::List { values } => {
                    let _ = write!(line, " values = {};", array(values));
                }
            }
            match &p.default {
                ParamValue::Int(v) => {
                    let _ = write!(line, " default = {v};");
                }
                ParamValue::Str(s) => {
                    let _ = write!(line, " default = {};", quoted(s));
                }
                ParamValue::List(l) => {
                    let _ = write!(line, " default = {};", array(l));
                }
            }
            if let Some(f) = p.flag {
                let _ = write!(line, " flag = {};", quoted(&f.to_string()));
            }
            if let Some(sv) = &p.switch_value {
                let _ = write!(line, " switch_value = {};", quoted(sv));
            }
            let sep = if i + 1 < self.params.len() { "," } else { "" };
            let _ = writeln!(out, "        {line} }}{sep}");
        }
        out.push_str("    );\n};\n");
        out
    }
}
