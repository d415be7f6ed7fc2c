//! Upstream's params (reference §5.4) with their types, ranges, defaults and our flags.
//!
//! A probe declares the ones it honours with [`standard`] and may change the default to what it
//! really uses ([`crate::Param::with_default`]). Ranges are upstream's, except that
//! `report_period` also takes 1–4 s (a superset: upstream scripts keep working) and the
//! thresholds also take 0 (off, upstream's default).

use crate::declaration::{Charset, Param, ParamKind, ParamValue};

fn int(name: &str, min: i64, max: i64, default: i64, flag: Option<char>) -> Param {
    let mut p = Param::new(name, ParamKind::Int { min, max }, ParamValue::Int(default));
    p.flag = flag;
    p
}

fn string(
    name: &str,
    max_len: usize,
    charset: Charset,
    default: &str,
    flag: Option<char>,
) -> Param {
    let mut p = Param::new(
        name,
        ParamKind::Str { max_len, charset },
        ParamValue::Str(default.to_string()),
    );
    p.flag = flag;
    p
}

/// Upstream's param `name`, or None for a name upstream does not have.
pub fn standard(name: &str) -> Option<Param> {
    Some(match name {
        "report_period" => int(name, 1, 600, 60, Some('t')),
        "sample_period" => int(name, 100, 10_000, 5000, Some('s')),
        "latency_thr" => int(name, 0, 100_000, 0, Some('T')),
        "offline_thr" => int(name, 0, 100_000, 0, Some('O')),
        "drops_thr" => int(name, 0, 100_000, 0, Some('D')),
        "res_lower_thr" => int(name, 0, 100, 0, Some('L')),
        "res_upper_thr" => int(name, 0, 100, 0, Some('U')),
        "report_event" => {
            let mut p = int(name, 0, 1, 0, Some('l'));
            p.switch_value = Some("warn".to_string());
            p
        }
        "report_cport" => int(name, 0, 1, 0, Some('c')),
        "ringbuf_map_size" => int(name, 1, 32, 1, None),
        "cluster_ip_backend" => int(name, 0, 2, 0, None),
        "support_ssl" => int(name, 0, 1, 0, None),
        "continuous_sampling" => int(name, 0, 1, 0, None),
        "multi_instance" | "native_stack" => int(name, 0, 1, 0, None),
        "svg_period" => int(name, 30, 600, 180, None),
        "perf_sample_period" => int(name, 10, 1000, 10, None),
        "min_exec_dur" => int(name, 0, 1_000_000, 1, None),
        "min_aggr_dur" => int(name, 10, 10_000, 100, None),
        "kafka_port" => int(name, 1, 65_535, 9092, Some('k')),
        "cadvisor_port" => int(name, 1, 65_535, 8083, None),
        "dev_name" => string(name, 31, Charset::Name, "", Some('d')),
        "elf_path" => string(name, 255, Charset::Path, "", Some('p')),
        "output_dir" => string(name, 255, Charset::Path, "", None),
        // Older stackprobe's SVG directory (its README's request still sends it); upstream
        // HEAD writes SVGs into flame_dir.
        "svg_dir" => string(name, 255, Charset::Path, "", None),
        "flame_dir" => string(
            name,
            255,
            Charset::Path,
            "/var/log/gala-gopher/flamegraph",
            None,
        ),
        "pyroscope_server" => string(name, 63, Charset::Name, "localhost:4040", None),
        "profiling_channel" => Param::new(
            name,
            ParamKind::Choice {
                values: vec!["local".into(), "kafka".into()],
            },
            ParamValue::Str("local".into()),
        ),
        "l7_protocol" => Param::new(
            name,
            ParamKind::List {
                values: [
                    "http", "dns", "redis", "mysql", "pgsql", "kafka", "mongo", "crpc",
                ]
                .map(String::from)
                .to_vec(),
            },
            ParamValue::List(Vec::new()),
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::declaration::ParamError;
    use serde_json::json;

    #[test]
    fn upstream_messages() {
        let p = standard("report_period").unwrap();
        assert_eq!(p.check(&json!(10)), Ok(ParamValue::Int(10)));
        assert_eq!(
            p.check(&json!(601)).unwrap_err().to_string(),
            "params.report_period invalid value 601, must be in [1, 600]"
        );
        assert_eq!(
            p.check(&json!("10")).unwrap_err().to_string(),
            "params.report_period invalid data type"
        );
        assert!(matches!(
            p.check(&json!(1.5)),
            Err(ParamError::InvalidType { .. })
        ));
        assert!(matches!(
            p.check(&json!(true)),
            Err(ParamError::InvalidType { .. })
        ));
        assert_eq!(p.flag_words(&ParamValue::Int(10)), ["-t", "10"]);

        let ev = standard("report_event").unwrap();
        assert_eq!(ev.flag_words(&ParamValue::Int(1)), ["-l", "warn"]);
        assert!(ev.flag_words(&ParamValue::Int(0)).is_empty());
    }

    #[test]
    fn strings_refuse_metacharacters_and_traversal() {
        let dev = standard("dev_name").unwrap();
        assert_eq!(dev.check(&json!("sda")), Ok(ParamValue::Str("sda".into())));
        assert_eq!(dev.check(&json!("")), Ok(ParamValue::Str(String::new())));
        for bad in [
            "sda;reboot",
            "$(id)",
            "a b",
            "`x`",
            "a|b",
            "../etc",
            "x\n",
            &"a".repeat(32),
        ] {
            assert!(dev.check(&json!(bad)).is_err(), "{bad:?}");
        }
        let elf = standard("elf_path").unwrap();
        assert!(elf.check(&json!("/usr/sbin/nginx")).is_ok());
        for bad in ["usr/bin/x", "/usr/../bin/sh", "/a/./b", "/bin/sh;x", "/a b"] {
            assert!(elf.check(&json!(bad)).is_err(), "{bad:?}");
        }
        let l7 = standard("l7_protocol").unwrap();
        assert_eq!(
            l7.check(&json!(["http", "dns"])),
            Ok(ParamValue::List(vec!["http".into(), "dns".into()]))
        );
        assert!(l7.check(&json!(["http", "http"])).is_err());
        assert!(l7.check(&json!(["gopher"])).is_err());
        assert!(l7.check(&json!("http")).is_err());
        let ch = standard("profiling_channel").unwrap();
        assert!(ch.check(&json!("kafka")).is_ok());
        assert!(ch.check(&json!("file")).is_err());
    }

    #[test]
    fn every_standard_param_is_a_valid_declaration() {
        for name in [
            "report_period",
            "sample_period",
            "latency_thr",
            "offline_thr",
            "drops_thr",
            "res_lower_thr",
            "res_upper_thr",
            "report_event",
            "report_cport",
            "ringbuf_map_size",
            "cluster_ip_backend",
            "support_ssl",
            "continuous_sampling",
            "multi_instance",
            "native_stack",
            "svg_period",
            "perf_sample_period",
            "min_exec_dur",
            "min_aggr_dur",
            "kafka_port",
            "cadvisor_port",
            "dev_name",
            "elf_path",
            "output_dir",
            "svg_dir",
            "flame_dir",
            "pyroscope_server",
            "profiling_channel",
            "l7_protocol",
        ] {
            let p = standard(name).unwrap();
            assert_eq!(p.name, name);
            p.check(&p.default.to_json()).unwrap();
        }
        assert!(standard("nope").is_none());
    }
}
