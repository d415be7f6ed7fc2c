//! The `probe` group of a `.meta` file back into a [`Declaration`].

use gala_libconfig::Node;

use crate::declaration::{
    Charset, DeclError, Declaration, Param, ParamKind, ParamValue, SnooperKind, SubProbe,
    MAX_PARAMS, MAX_SUB_PROBES,
};

fn err(node: &Node, message: impl Into<String>) -> DeclError {
    DeclError {
        origin: format!("{}: ", node.file_line()),
        message: message.into(),
    }
}

fn string<'n>(node: &'n Node, key: &str) -> Result<Option<&'n str>, DeclError> {
    match node.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(Some)
            .ok_or_else(|| err(v, format!("{key} must be a string"))),
    }
}

fn int(node: &Node, key: &str) -> Result<Option<i64>, DeclError> {
    match node.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_int()
            .map(Some)
            .ok_or_else(|| err(v, format!("{key} must be an integer"))),
    }
}

fn required<T>(node: &Node, key: &str, v: Option<T>) -> Result<T, DeclError> {
    v.ok_or_else(|| err(node, format!("missing {key}")))
}

fn strings(node: &Node, key: &str) -> Result<Vec<String>, DeclError> {
    let Some(v) = node.get(key) else {
        return Ok(Vec::new());
    };
    let items = v
        .elements()
        .ok_or_else(|| err(v, format!("{key} must be an array of strings")))?;
    items
        .iter()
        .map(|i| {
            i.as_str()
                .map(str::to_string)
                .ok_or_else(|| err(i, format!("{key} must be an array of strings")))
        })
        .collect()
}

fn list<'n>(node: &'n Node, key: &str, max: usize) -> Result<&'n [Node], DeclError> {
    let Some(v) = node.get(key) else {
        return Ok(&[]);
    };
    let items = v
        .elements()
        .ok_or_else(|| err(v, format!("{key} must be a list ( ... )")))?;
    if items.len() > max {
        return Err(err(v, format!("{key}: more than {max} entries")));
    }
    Ok(items)
}

fn param(node: &Node) -> Result<Param, DeclError> {
    let name = required(node, "name", string(node, "name")?)?;
    let ty = required(node, "type", string(node, "type")?)?;
    let kind = match ty {
        "int" => ParamKind::Int {
            min: required(node, "min", int(node, "min")?)?,
            max: required(node, "max", int(node, "max")?)?,
        },
        "string" => {
            let max_len = required(node, "max_len", int(node, "max_len")?)?;
            let charset = match string(node, "charset")? {
                None => Charset::Name,
                Some(c) => Charset::parse(c)
                    .ok_or_else(|| err(node, format!("charset \"{c}\": expected name or path")))?,
            };
            ParamKind::Str {
                max_len: usize::try_from(max_len)
                    .ok()
                    .filter(|l| *l <= 4096)
                    .ok_or_else(|| err(node, "max_len must be in 0..=4096"))?,
                charset,
            }
        }
        "choice" => ParamKind::Choice {
            values: strings(node, "values")?,
        },
        "list" => ParamKind::List {
            values: strings(node, "values")?,
        },
        other => {
            return Err(err(
                node,
                format!("param {name}: type \"{other}\": expected int, string, choice or list"),
            ))
        }
    };
    let default_node = required(node, "default", node.get("default"))?;
    let default = match &kind {
        ParamKind::Int { .. } => ParamValue::Int(
            default_node
                .as_int()
                .ok_or_else(|| err(default_node, "default must be an integer"))?,
        ),
        ParamKind::Str { .. } | ParamKind::Choice { .. } => ParamValue::Str(
            default_node
                .as_str()
                .ok_or_else(|| err(default_node, "default must be a string"))?
                .to_string(),
        ),
        ParamKind::List { .. } => ParamValue::List(strings(node, "default")?),
    };
    let flag = match string(node, "flag")? {
        None => None,
        Some(f) => {
            let mut chars = f.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Some(c),
                _ => return Err(err(node, format!("param {name}: flag must be one letter"))),
            }
        }
    };
    Ok(Param {
        name: name.to_string(),
        kind,
        default,
        flag,
        switch_value: string(node, "switch_value")?.map(str::to_string),
    })
}

impl Declaration {
    /// The declaration in the `probe` group of a parsed `.meta` document, None without one;
    /// errors name `FILE:LINE`.
    pub fn from_node(root: &Node) -> Result<Option<Declaration>, DeclError> {
        let Some(group) = root.get("probe") else {
            return Ok(None);
        };
        if group.members().is_none() {
            return Err(err(group, "probe must be a group { ... }"));
        }
        let reload = match group.get("reload") {
            None => false,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| err(v, "reload must be true or false"))?,
        };
        let mut snoopers = Vec::new();
        for k in strings(group, "snoopers")? {
            let kind = SnooperKind::parse(&k).ok_or_else(|| {
                err(
                    group,
                    format!("snoopers: unknown kind \"{k}\" (proc_id, proc_name, container_id, container_name, pod_id, pod_labels)"),
                )
            })?;
            if !snoopers.contains(&kind) {
                snoopers.push(kind);
            }
        }
        let mut sub_probes = Vec::new();
        for node in list(group, "sub_probes", MAX_SUB_PROBES)? {
            let name = required(node, "name", string(node, "name")?)?;
            let bits = required(node, "bits", int(node, "bits")?)?;
            let bits = u32::try_from(bits)
                .map_err(|_| err(node, format!("sub_probe {name}: bits must fit 32 bits")))?;
            let default = match node.get("default") {
                None => true,
                Some(v) => v
                    .as_bool()
                    .ok_or_else(|| err(v, "default must be true or false"))?,
            };
            sub_probes.push(SubProbe {
                name: name.to_string(),
                bits,
                default,
            });
        }
        let params = list(group, "params", MAX_PARAMS)?
            .iter()
            .map(param)
            .collect::<Result<Vec<_>, _>>()?;
        let decl = Declaration {
            rest_name: string(group, "rest_name")?.map(str::to_string),
            reload,
            snoopers,
            sub_probes,
            params,
        };
        decl.validate().map_err(|e| DeclError {
            origin: format!("{}: ", group.file_line()),
            message: e.message,
        })?;
        Ok(Some(decl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::standard;
    use std::path::Path;

    fn sample() -> Declaration {
        Declaration {
            rest_name: Some("tcp".into()),
            reload: true,
            snoopers: SnooperKind::PROCESS.to_vec(),
            sub_probes: vec![
                SubProbe::new("tcp_abnormal", 1),
                SubProbe::new("tcp_rtt", 2).off_by_default(),
            ],
            params: vec![
                standard("report_period")
                    .unwrap()
                    .with_default(ParamValue::Int(5)),
                standard("report_event").unwrap(),
                standard("dev_name").unwrap(),
                standard("elf_path").unwrap(),
                standard("l7_protocol").unwrap(),
                standard("profiling_channel").unwrap(),
            ],
        }
    }

    fn parse(text: &str) -> Result<Option<Declaration>, DeclError> {
        let root = gala_libconfig::parse_str(text, Path::new("x.meta")).unwrap();
        Declaration::from_node(&root)
    }

    #[test]
    fn render_then_parse_gives_the_declaration_back() {
        let d = sample();
        d.validate().unwrap();
        let text = format!(
            "version = \"1.0.0\";\nmeasurements = ( );\n{}",
            d.render_meta()
        );
        assert_eq!(parse(&text).unwrap(), Some(d));
        let empty = Declaration::default();
        assert_eq!(parse(&empty.render_meta()).unwrap(), Some(empty));
        assert_eq!(parse("measurements = ( );").unwrap(), None);
    }

    #[test]
    fn bad_groups_name_the_line() {
        let e = parse("measurements = ( );\nprobe = { reload = 1; };").unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.meta:2: probe declaration: reload must be true or false"
        );
        let e = parse("probe = { snoopers = [ \"pid\" ]; };").unwrap_err();
        assert!(e.message.contains("unknown kind \"pid\""), "{e}");
        let e = parse("probe = { sub_probes = ( { name = \"a\"; bits = 0; } ); };").unwrap_err();
        assert!(e.message.contains("bits must not be 0"), "{e}");
        let e = parse("probe = { reload = false; snoopers = [ \"proc_id\" ]; };").unwrap_err();
        assert!(e.message.contains("need reload"), "{e}");
        let e = parse(
            "probe = { params = ( { name = \"x\"; type = \"int\"; min = 1; max = 5; default = 9; } ); };",
        )
        .unwrap_err();
        assert!(e.message.contains("invalid value 9"), "{e}");
        let e = parse("probe = 1;").unwrap_err();
        assert!(e.message.contains("must be a group"), "{e}");
    }

    #[test]
    fn bits_argv_and_defaults() {
        let d = sample();
        assert_eq!(d.default_sub_probes(), ["tcp_abnormal"]);
        assert_eq!(
            d.sub_probe_bits(&["tcp_rtt".into(), "tcp_abnormal".into()]),
            Ok(3)
        );
        assert_eq!(
            d.sub_probe_bits(&["tcp_x".into()]),
            Err("unsupported probe range: tcp_x.".into())
        );
        assert_eq!(
            d.sub_probe_bits(&[]),
            Err("invalid probe ranges: at least one must be set".into())
        );
        let mut set = std::collections::BTreeMap::new();
        set.insert("report_period".to_string(), ParamValue::Int(10));
        set.insert("report_event".to_string(), ParamValue::Int(1));
        set.insert("dev_name".to_string(), ParamValue::Str(String::new()));
        assert_eq!(
            d.argv(Some(3), &set),
            ["-P", "0x3", "-t", "10", "-l", "warn"]
        );
        assert_eq!(d.defaults()["report_period"], ParamValue::Int(5));
        let none = Declaration::default();
        assert_eq!(none.sub_probe_bits(&[]), Ok(0));
        assert!(none.sub_probe_bits(&["a".into()]).is_err());
        assert!(none.argv(Some(1), &set).is_empty());
    }
}
