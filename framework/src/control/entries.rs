//! Config `probes` / `extend_probes` entries → the declarations discovery resolves.

use super::ControlError;
use crate::config::{CheckType, GopherConfig};
use crate::supervisor::discovery::ConfiguredProbe;
use crate::supervisor::StartCheck;

/// Every probe entry of `cfg`: `probes` first, then `extend_probes`, in file order.
pub fn config_entries(cfg: &GopherConfig) -> Result<Vec<ConfiguredProbe>, ControlError> {
    let natives = cfg.probes.iter().map(|p| {
        Ok(ConfiguredProbe {
            name: p.name.clone(),
            command: None,
            param: p.param.clone(),
            switch: p.switch,
            start_check: start_check(&p.name, &p.start_check, p.check_type)?,
        })
    });
    let extends = cfg.extend_probes.iter().map(|p| {
        Ok(ConfiguredProbe {
            name: p.name.clone(),
            command: Some(p.command.clone()),
            param: p.param.clone(),
            switch: p.switch,
            start_check: start_check(&p.name, &p.start_check, p.check_type)?,
        })
    });
    natives.chain(extends).collect()
}

fn start_check(
    name: &str,
    check: &Option<String>,
    kind: CheckType,
) -> Result<Option<StartCheck>, ControlError> {
    Ok(match (check, kind) {
        (None, _) => None,
        (Some(cmd), CheckType::Count) => Some(StartCheck::ShellCount(cmd.clone())),
        // Config validation compiles it already; kept as an error rather than a panic.
        (Some(re), CheckType::Process) => Some(StartCheck::ProcessRegex(
            regex::Regex::new(re).map_err(|e| ControlError::StartCheck {
                probe: name.to_string(),
                error: e.to_string(),
            })?,
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Switch;

    #[test]
    fn entries_keep_file_order_probes_first() {
        let loaded = crate::config::load_str(
            r#"
            extend_probes = ( { name = "ext"; command = "/bin/true --x"; param = "-t 5";
                                switch = "auto"; check_type = "process"; start_check = "^nginx$"; } );
            probes = ( { name = "b"; switch = "on"; param = "-l warn"; },
                       { name = "a"; switch = "auto"; start_check = "echo 1"; } );
            "#,
            std::path::Path::new("test.conf"),
            &[],
        )
        .unwrap();
        let e = config_entries(&loaded.config).unwrap();
        let names: Vec<&str> = e.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["b", "a", "ext"]);
        assert_eq!(e[0].command, None);
        assert_eq!(e[0].param, "-l warn");
        assert_eq!(e[0].switch, Switch::On);
        assert_eq!(
            e[1].start_check,
            Some(StartCheck::ShellCount("echo 1".into()))
        );
        assert_eq!(e[2].command.as_deref(), Some("/bin/true --x"));
        assert!(
            matches!(&e[2].start_check, Some(StartCheck::ProcessRegex(r)) if r.as_str() == "^nginx$")
        );
    }
}
