//! Command line: upstream's short flags (parsed by `probe_sdk::args`) plus this probe's long
//! options, which are taken out first.

use crate::collector::{Config, WhitelistFile};
use crate::events::Thresholds;
use crate::source::HostPaths;
use probe_sdk::args::{ArgsError, ProbeArgs};
use std::path::PathBuf;

/// A command-line problem.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionsError {
    /// A short flag was wrong.
    #[error(transparent)]
    Args(#[from] ArgsError),
    /// A long option that needs a value was last.
    #[error("{0}: missing value")]
    MissingValue(&'static str),
    /// A long option's value is not what it takes.
    #[error("{opt}: invalid value {value:?}, expected {expected}")]
    InvalidValue {
        /// The option.
        opt: &'static str,
        /// What was given.
        value: String,
        /// What it takes.
        expected: &'static str,
    },
    /// A long option this probe does not know.
    #[error("unknown option {0}")]
    Unknown(String),
}

/// Everything the command line says.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Upstream flags: `-t`, `-w`, `-l`, `-U`, `-D`, `-d`, `-P`, `-f`, …
    pub args: ProbeArgs,
    /// Where host state is read.
    pub paths: HostPaths,
    /// `--proc-root` / `--sys-root` / `--mounts` / `--os-release` left everything at the real
    /// host, so host-only sources (rtnetlink) may be used.
    pub live: bool,
    /// `--once`: prime, wait one period, write one period's records, exit.
    pub once: bool,
    /// `--df-remote`: also report network and FUSE filesystems.
    pub df_remote: bool,
    /// `--print-meta`: print the `.meta` file and exit.
    pub print_meta: bool,
    /// `--help`.
    pub help: bool,
}

/// Usage text for this probe's own options (the short flags are in `probe_sdk::args::usage`).
pub const USAGE: &str = "system_infos [-t SECS] [-w APP_CONF] [-l warn] [-U PCT] [-D N] [-d NIC,NIC] [-P BITS] [-f PID,PID]\n\
\x20 -t SECS        report period, 1..=3600 (default 5)\n\
\x20 -w FILE        gala-gopher-app.conf: processes for system_proc\n\
\x20 -f PID,PID     more processes for system_proc\n\
\x20 -l warn        report abnormal events\n\
\x20 -U PCT         event threshold for cpu, memory, swap, filesystem and disk use (0 = off)\n\
\x20 -D N           event threshold for NIC drops and errors per period (0 = off)\n\
\x20 -d NIC,NIC     report only these interfaces (default: all but lo)\n\
\x20 -P BITS        tables: 1 cpu, 2 mem, 4 nic, 8 tcp/udp, 16 iostat, 32 df, 64 proc, 128 os (default all)\n\
\x20 --proc-root DIR, --sys-root DIR, --mounts FILE, --os-release FILE   read another tree (tests)\n\
\x20 --mount-ns-pid PID   system_df describes this process's mount namespace (default 1, the host's;\n\
\x20                none when a tree is read)\n\
\x20 env GOPHER_HOST_PATH=DIR   the host's / is seen at DIR (a container): /proc, /sys and /etc are\n\
\x20                read below it (paths given to the options above are used as given)\n\
\x20 --df-remote    include network and FUSE filesystems in system_df (statvfs with a 2 s timeout)\n\
\x20 --once         write one period of records and exit\n\
\x20 --print-meta   print system_infos.meta and exit\n";

impl Options {
    /// The collector configuration these options describe.
    pub fn collector_config(&self) -> Config {
        let a = &self.args;
        for (flag, _) in &a.extra {
            probe_sdk::warn!("flag -{flag} is not used by system_infos; ignored");
        }
        Config {
            paths: self.paths.clone(),
            tables: a.probe_bits,
            thresholds: Thresholds {
                enabled: a.report_events,
                upper_pct: a.res_upper_pct,
                drops: a.drops_thr,
            },
            nics: a.dev.as_deref().map(parse_nics).unwrap_or_default(),
            df_remote: self.df_remote,
            qdisc: self.live,
            whitelist: a.whitelist.clone().map(WhitelistFile::new),
            pids: a.pids.clone(),
            ticks_per_sec: user_hz(),
            measure_cpu: true,
        }
    }
}

/// The interface list of `-d` (and of the `dev_name` param): comma-separated names; empty
/// means all but `lo`.
pub fn parse_nics(dev: &str) -> Vec<String> {
    dev.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// USER_HZ: the unit of the tick counters in `/proc`.
pub fn user_hz() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(100)
}

/// Parses the arguments (without argv\[0\]).
pub fn parse<I, S>(argv: I) -> Result<Options, OptionsError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut short = Vec::new();
    let mut proc_root: Option<PathBuf> = None;
    let mut sys_root: Option<PathBuf> = None;
    let mut mounts: Option<PathBuf> = None;
    let mut os_release: Option<PathBuf> = None;
    let mut mount_ns_pid: Option<u32> = None;
    let (mut once, mut df_remote, mut print_meta, mut help) = (false, false, false, false);

    let mut it = argv.into_iter().map(Into::into);
    while let Some(arg) = it.next() {
        let Some(long) = arg.strip_prefix("--").filter(|l| !l.is_empty()) else {
            short.push(arg);
            continue;
        };
        let (name, inline) = match long.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (long.to_string(), None),
        };
        let mut value = |opt: &'static str| -> Result<PathBuf, OptionsError> {
            inline
                .clone()
                .or_else(|| it.next())
                .map(PathBuf::from)
                .ok_or(OptionsError::MissingValue(opt))
        };
        match name.as_str() {
            "proc-root" => proc_root = Some(value("--proc-root")?),
            "sys-root" => sys_root = Some(value("--sys-root")?),
            "mounts" => mounts = Some(value("--mounts")?),
            "os-release" => os_release = Some(value("--os-release")?),
            "mount-ns-pid" => {
                let v = value("--mount-ns-pid")?.to_string_lossy().into_owned();
                let pid = v.parse().ok().filter(|p| *p > 0);
                mount_ns_pid = Some(pid.ok_or(OptionsError::InvalidValue {
                    opt: "--mount-ns-pid",
                    value: v,
                    expected: "a process id",
                })?);
            }
            "once" => once = true,
            "df-remote" => df_remote = true,
            "print-meta" => print_meta = true,
            "help" => help = true,
            _ => return Err(OptionsError::Unknown(arg)),
        }
    }

    let args = ProbeArgs::try_parse_from(short)?;
    let live =
        proc_root.is_none() && sys_root.is_none() && mounts.is_none() && os_release.is_none();
    let mut paths = HostPaths::default();
    if let Some(p) = proc_root {
        paths.mounts = p.join("self/mounts");
        paths.proc = p;
    }
    if let Some(s) = sys_root {
        paths.sys = s;
    }
    if let Some(m) = mounts {
        paths.mounts = m;
    }
    if let Some(o) = os_release {
        paths.os_release = vec![o];
    }
    // A test tree has no other process's mount namespace unless one is asked for, and no
    // host `/etc/hostname`. `paths.proc` carries the host root, so does the namespace.
    paths.mount_ns = match mount_ns_pid {
        Some(pid) => Some(paths.proc.join(pid.to_string())),
        None if live => paths.mount_ns,
        None => None,
    };
    if !live {
        paths.etc_hostname = None;
    }
    Ok(Options {
        args,
        paths,
        live,
        once,
        df_remote,
        print_meta,
        help,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_options_are_taken_out_before_the_short_flags() {
        let o = parse([
            "-t",
            "2",
            "--proc-root",
            "/x/proc",
            "--once",
            "-l",
            "warn",
            "--sys-root=/x/sys",
        ])
        .unwrap();
        assert_eq!(o.args.period_secs, 2);
        assert!(o.args.report_events);
        assert!(o.once && !o.live && !o.df_remote);
        assert_eq!(o.paths.proc, PathBuf::from("/x/proc"));
        assert_eq!(o.paths.mounts, PathBuf::from("/x/proc/self/mounts"));
        assert_eq!(o.paths.sys, PathBuf::from("/x/sys"));
        assert_eq!(o.paths.mount_ns, None, "a test tree has no host namespace");
        let o = parse(["--proc-root", "/x/proc", "--mount-ns-pid=7"]).unwrap();
        assert_eq!(o.paths.mount_ns, Some(PathBuf::from("/x/proc/7")));
        let o = parse(["--mount-ns-pid", "42"]).unwrap();
        assert!(o.live);
        assert_eq!(o.paths.mount_ns, Some(PathBuf::from("/proc/42")));
    }

    #[test]
    fn defaults_are_the_live_host() {
        let o = parse(Vec::<String>::new()).unwrap();
        assert!(o.live);
        assert_eq!(o.paths, HostPaths::default());
        assert_eq!(o.args, ProbeArgs::default());
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse(["--bogus"]).unwrap_err(),
            OptionsError::Unknown("--bogus".into())
        );
        assert_eq!(
            parse(["--mounts"]).unwrap_err(),
            OptionsError::MissingValue("--mounts")
        );
        assert_eq!(
            parse(["--mount-ns-pid", "x"]).unwrap_err().to_string(),
            "--mount-ns-pid: invalid value \"x\", expected a process id"
        );
        assert!(parse(["--mount-ns-pid=0"]).is_err());
        assert!(matches!(
            parse(["-t", "0"]).unwrap_err(),
            OptionsError::Args(_)
        ));
        assert_eq!(
            parse(["-t", "9999"]).unwrap_err().to_string(),
            "-t: invalid value \"9999\", expected 1..=3600"
        );
    }
}
