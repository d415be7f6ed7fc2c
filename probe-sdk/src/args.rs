//! The upstream probe flags (`-t 5`, `-t5`, `-w path`, `-l warn`, `-P bits`, …), parsed
//! getopt-style and validated, without upstream's quirks (`-U` sets only the upper threshold).
//!
//! Flags that a specific probe defines itself are not rejected: they are kept in
//! [`ProbeArgs::extra`] in order, so the probe can interpret them.

use std::path::PathBuf;

/// Default report period (`-t`), seconds.
pub const DEFAULT_PERIOD_SECS: u32 = 5;
/// Largest accepted report period (`-t`), seconds.
pub const MAX_PERIOD_SECS: u32 = 3600;
/// `-P` value meaning "every probe bit" (also what `-P 0` turns into).
pub const ALL_PROBE_BITS: u32 = 0xFFFF_FFFF;
const DEFAULT_METRICS_FLAGS: u32 = 3;
const DEFAULT_ENV_FLAGS: u32 = 1;

/// Parsed probe flags; see [`usage`] for the flag letters.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeArgs {
    /// `-t`: report period in seconds, 1..=3600.
    pub period_secs: u32,
    /// `-s`: sampling period in milliseconds.
    pub sample_period_ms: u32,
    /// `-T`: latency threshold in ms (0 = off).
    pub latency_thr_ms: u64,
    /// `-J`: jitter threshold in ms (0 = off).
    pub jitter_thr_ms: u64,
    /// `-O`: offline threshold in ms (0 = off).
    pub offline_thr_ms: u64,
    /// `-D`: drops threshold (0 = off).
    pub drops_thr: u64,
    /// `-l <anything>`: report abnormal events.
    pub report_events: bool,
    /// `-U`: resource usage upper threshold, percent.
    pub res_upper_pct: u32,
    /// `-L`: resource usage lower threshold, percent.
    pub res_lower_pct: u32,
    /// `-F`: `task`, a pid, or a comm; see [`ProbeArgs::filter_kind`].
    pub filter: Option<String>,
    /// `-c 0|1`: report the client port.
    pub report_cport: bool,
    /// `-p`: binary to attach uprobes to.
    pub elf_path: Option<PathBuf>,
    /// `-w`: `gala-gopher-app.conf` process whitelist.
    pub whitelist: Option<PathBuf>,
    /// `-d`: target device or NIC list.
    pub dev: Option<String>,
    /// `-P`: probe bitmask; 0 means all.
    pub probe_bits: u32,
    /// Whether `-P` was on the command line (a probe may default to fewer bits than all).
    pub probe_bits_given: bool,
    /// `-C`: continuous sampling.
    pub continuous: bool,
    /// `-k`: Kafka port.
    pub kafka_port: u16,
    /// `-i a,b`: host IPs.
    pub host_ips: Vec<String>,
    /// `-m`: metrics flags (1 raw, 2 telemetry); 0 means the default 3.
    pub metrics_flags: u32,
    /// `-e`: environment flags (1 node, 2 container, 4 k8s); 0 means the default 1.
    pub env_flags: u32,
    /// `-f 1,2,3`: pid filter list.
    pub pids: Vec<u32>,
    /// `-b`: BTF file for kernels without `/sys/kernel/btf/vmlinux`.
    pub btf_path: Option<PathBuf>,
    /// Flags this module does not know, in command-line order, with their value if any.
    pub extra: Vec<(char, Option<String>)>,
}

impl Default for ProbeArgs {
    fn default() -> Self {
        ProbeArgs {
            period_secs: DEFAULT_PERIOD_SECS,
            sample_period_ms: 100,
            latency_thr_ms: 0,
            jitter_thr_ms: 0,
            offline_thr_ms: 0,
            drops_thr: 0,
            report_events: false,
            res_upper_pct: 0,
            res_lower_pct: 0,
            filter: None,
            report_cport: false,
            elf_path: None,
            whitelist: None,
            dev: None,
            probe_bits: ALL_PROBE_BITS,
            probe_bits_given: false,
            continuous: false,
            kafka_port: 9092,
            host_ips: Vec::new(),
            metrics_flags: DEFAULT_METRICS_FLAGS,
            env_flags: DEFAULT_ENV_FLAGS,
            pids: Vec::new(),
            btf_path: None,
            extra: Vec::new(),
        }
    }
}

/// What `-F` selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// `-F task`: only processes selected by the whitelist.
    Task,
    /// `-F <digits>`: one pid.
    Pid(u32),
    /// `-F <name>`: processes with this comm.
    Comm(String),
}

/// A command-line problem; the message names the flag and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// A flag that takes a value was last on the line.
    #[error("-{flag}: missing value")]
    MissingValue {
        /// The flag letter.
        flag: char,
    },
    /// A value failed validation.
    #[error("-{flag}: invalid value \"{value}\", expected {expected}")]
    InvalidValue {
        /// The flag letter.
        flag: char,
        /// The value as given.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// A token that is neither a flag nor a flag's value.
    #[error("unexpected argument \"{0}\"")]
    UnexpectedArgument(String),
}

/// Flags that take a value, as in upstream's getopt string plus our `-f` and `-b`.
const VALUE_FLAGS: &str = "tsTJODlULFcpwdPkimefb";

impl ProbeArgs {
    /// Parses `args` (without argv\[0\]) getopt-style: `-t 5`, `-t5` and clusters like `-Ct5`.
    pub fn try_parse_from<I, S>(args: I) -> Result<ProbeArgs, ArgsError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut parsed = ProbeArgs::default();
        let mut tokens = args.into_iter().map(Into::into).peekable();
        while let Some(token) = tokens.next() {
            if token == "--" {
                if let Some(next) = tokens.next() {
                    return Err(ArgsError::UnexpectedArgument(next));
                }
                break;
            }
            let Some(cluster) = token.strip_prefix('-').filter(|c| !c.is_empty()) else {
                return Err(ArgsError::UnexpectedArgument(token));
            };
            for (i, flag) in cluster.char_indices() {
                let attached = &cluster[i + flag.len_utf8()..];
                if flag == 'C' {
                    parsed.continuous = true;
                    continue;
                }
                let known = VALUE_FLAGS.contains(flag);
                let value = if !attached.is_empty() {
                    Some(attached.to_string())
                } else if known {
                    Some(tokens.next().ok_or(ArgsError::MissingValue { flag })?)
                } else {
                    // Unknown flag: take the next token as its value only if it is not a flag.
                    tokens.next_if(|t| !t.starts_with('-'))
                };
                match value {
                    Some(v) if known => parsed.apply(flag, v)?,
                    v => parsed.extra.push((flag, v)),
                }
                break;
            }
        }
        Ok(parsed)
    }

    /// Parses the process's own arguments; on error prints `[ERROR] <msg>` and the usage to
    /// stderr and exits with status 2.
    pub fn from_env() -> ProbeArgs {
        let args = std::env::args_os()
            .skip(1)
            .map(|a| a.to_string_lossy().into_owned());
        match ProbeArgs::try_parse_from(args) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("[ERROR] {e}");
                eprint!("{}", usage());
                std::process::exit(2);
            }
        }
    }

    /// The report period as a [`std::time::Duration`].
    pub fn period(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.period_secs))
    }

    /// Interprets `-F` the upstream way: `task`, digits (a pid), or a comm.
    pub fn filter_kind(&self) -> Option<Filter> {
        let f = self.filter.as_deref()?;
        Some(if f == "task" {
            Filter::Task
        } else if let Ok(pid) = f.parse::<u32>() {
            Filter::Pid(pid)
        } else {
            Filter::Comm(f.to_string())
        })
    }

    /// The value of a probe-specific flag from [`extra`](Self::extra) (last occurrence wins).
    pub fn extra_value(&self, flag: char) -> Option<&str> {
        self.extra
            .iter()
            .rev()
            .find(|(f, _)| *f == flag)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The integer value of probe-specific flag `-<flag>` within `range`, `default` without the
    /// flag; an error message naming the flag, the value and the range otherwise.
    pub fn extra_u32(
        &self,
        flag: char,
        default: u32,
        range: std::ops::RangeInclusive<u32>,
    ) -> Result<u32, String> {
        match self.extra_value(flag) {
            None => Ok(default),
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| {
                    format!(
                        "-{flag}: invalid value \"{v}\", expected {}..={}",
                        range.start(),
                        range.end()
                    )
                }),
        }
    }

    fn apply(&mut self, flag: char, value: String) -> Result<(), ArgsError> {
        let invalid = |expected: &'static str| ArgsError::InvalidValue {
            flag,
            value: value.clone(),
            expected,
        };
        match flag {
            't' => {
                self.period_secs = parse_num::<u32>(&value)
                    .filter(|v| (1..=MAX_PERIOD_SECS).contains(v))
                    .ok_or_else(|| invalid("1..=3600"))?
            }
            's' => {
                self.sample_period_ms = parse_num::<u32>(&value)
                    .filter(|v| *v >= 1)
                    .ok_or_else(|| invalid("a positive number of milliseconds"))?
            }
            'T' => self.latency_thr_ms = parse_u64(&value).ok_or_else(|| invalid("0 or more"))?,
            'J' => self.jitter_thr_ms = parse_u64(&value).ok_or_else(|| invalid("0 or more"))?,
            'O' => self.offline_thr_ms = parse_u64(&value).ok_or_else(|| invalid("0 or more"))?,
            'D' => self.drops_thr = parse_u64(&value).ok_or_else(|| invalid("0 or more"))?,
            'l' => self.report_events = true,
            'U' => self.res_upper_pct = parse_pct(&value).ok_or_else(|| invalid("0..=100"))?,
            'L' => self.res_lower_pct = parse_pct(&value).ok_or_else(|| invalid("0..=100"))?,
            'F' => {
                self.filter =
                    Some(non_empty(&value).ok_or_else(|| invalid("task, a pid or a comm"))?)
            }
            'c' => {
                self.report_cport = match value.as_str() {
                    "0" => false,
                    "1" => true,
                    _ => return Err(invalid("0 or 1")),
                }
            }
            'p' => self.elf_path = Some(non_empty(&value).ok_or_else(|| invalid("a path"))?.into()),
            'w' => {
                self.whitelist = Some(non_empty(&value).ok_or_else(|| invalid("a path"))?.into())
            }
            'd' => self.dev = Some(non_empty(&value).ok_or_else(|| invalid("a device name"))?),
            'P' => {
                let bits = parse_bits(&value).ok_or_else(|| invalid("a 32-bit mask"))?;
                self.probe_bits = if bits == 0 { ALL_PROBE_BITS } else { bits };
                self.probe_bits_given = true;
            }
            'k' => {
                self.kafka_port = parse_num::<u16>(&value)
                    .filter(|p| *p != 0)
                    .ok_or_else(|| invalid("1..=65535"))?
            }
            'i' => {
                self.host_ips = split_list(&value).map(str::to_string).collect();
                if self.host_ips.is_empty() {
                    return Err(invalid("a comma-separated list of IPs"));
                }
            }
            'm' => {
                let m = parse_num::<u32>(&value)
                    .filter(|m| *m <= 3)
                    .ok_or_else(|| invalid("0..=3"))?;
                self.metrics_flags = if m == 0 { DEFAULT_METRICS_FLAGS } else { m };
            }
            'e' => {
                let e = parse_num::<u32>(&value)
                    .filter(|e| *e <= 7)
                    .ok_or_else(|| invalid("0..=7"))?;
                self.env_flags = if e == 0 { DEFAULT_ENV_FLAGS } else { e };
            }
            'f' => {
                let pids: Option<Vec<u32>> = split_list(&value)
                    .map(|p| parse_num::<u32>(p).filter(|p| *p != 0))
                    .collect();
                self.pids = pids
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| invalid("a comma-separated list of pids"))?;
            }
            'b' => self.btf_path = Some(non_empty(&value).ok_or_else(|| invalid("a path"))?.into()),
            _ => self.extra.push((flag, Some(value))),
        }
        Ok(())
    }
}

/// The usage text printed by [`ProbeArgs::from_env`] on error.
pub fn usage() -> &'static str {
    "usage: <probe> [flags]\n\
     \x20 -t SECS     report period, 1..=3600 (default 5)\n\
     \x20 -s MS       sampling period in ms (default 100)\n\
     \x20 -T/-J/-O MS latency / jitter / offline thresholds in ms (default 0 = off)\n\
     \x20 -D N        drops threshold (default 0 = off)\n\
     \x20 -l LEVEL    report abnormal events (e.g. -l warn)\n\
     \x20 -U/-L PCT   resource usage upper / lower thresholds, 0..=100\n\
     \x20 -F FILTER   task | <pid> | <comm>\n\
     \x20 -c 0|1      report client port\n\
     \x20 -p PATH     binary to attach to\n\
     \x20 -w PATH     process whitelist (gala-gopher-app.conf)\n\
     \x20 -d DEV      target device\n\
     \x20 -P BITS     probe bitmask (0 = all)\n\
     \x20 -C          continuous sampling\n\
     \x20 -k PORT     kafka port (default 9092)\n\
     \x20 -i IP,IP    host IPs\n\
     \x20 -m N        metrics flags 1 raw, 2 telemetry (default 3)\n\
     \x20 -e N        env flags 1 node, 2 container, 4 k8s (default 1)\n\
     \x20 -f PID,PID  pid filter\n\
     \x20 -b PATH     BTF file\n"
}

fn parse_num<T: std::str::FromStr>(s: &str) -> Option<T> {
    // FromStr accepts a leading '+', getopt users would not expect it to mean anything.
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_u64(s: &str) -> Option<u64> {
    parse_num(s)
}

fn parse_pct(s: &str) -> Option<u32> {
    parse_num::<u32>(s).filter(|v| *v <= 100)
}

fn parse_bits(s: &str) -> Option<u32> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u32::from_str_radix(hex, 16).ok()
        }
        Some(_) => None,
        None => parse_num(s),
    }
}

fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|p| !p.is_empty())
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ProbeArgs, ArgsError> {
        ProbeArgs::try_parse_from(s.split_whitespace())
    }

    fn err(s: &str) -> String {
        parse(s).unwrap_err().to_string()
    }

    #[test]
    fn extra_u32_takes_default_value_or_names_the_range() {
        assert_eq!(parse("-t 5").unwrap().extra_u32('M', 7, 1..=10), Ok(7));
        assert_eq!(parse("-M 10").unwrap().extra_u32('M', 7, 1..=10), Ok(10));
        for bad in ["-M 0", "-M 11", "-M x"] {
            assert_eq!(
                parse(bad).unwrap().extra_u32('M', 7, 1..=10),
                Err(format!(
                    "-M: invalid value \"{}\", expected 1..=10",
                    &bad[3..]
                )),
                "{bad}"
            );
        }
    }

    #[test]
    fn defaults() {
        let a = parse("").unwrap();
        assert_eq!(a, ProbeArgs::default());
        assert_eq!(a.period_secs, 5);
        assert_eq!(a.sample_period_ms, 100);
        assert_eq!(a.probe_bits, 0xFFFF_FFFF);
        assert_eq!(a.kafka_port, 9092);
        assert_eq!(a.metrics_flags, 3);
        assert_eq!(a.env_flags, 1);
        assert_eq!(a.period(), std::time::Duration::from_secs(5));
    }

    #[test]
    fn period_separate_and_attached() {
        assert_eq!(parse("-t 7").unwrap().period_secs, 7);
        assert_eq!(parse("-t7").unwrap().period_secs, 7);
        assert_eq!(parse("-t 1").unwrap().period_secs, 1);
        assert_eq!(parse("-t 3600").unwrap().period_secs, 3600);
        assert_eq!(parse("-t 5 -t 9").unwrap().period_secs, 9);
    }

    #[test]
    fn period_errors() {
        assert_eq!(err("-t 0"), r#"-t: invalid value "0", expected 1..=3600"#);
        assert_eq!(
            err("-t 3601"),
            r#"-t: invalid value "3601", expected 1..=3600"#
        );
        assert_eq!(err("-t -5"), r#"-t: invalid value "-5", expected 1..=3600"#);
        assert_eq!(err("-t +5"), r#"-t: invalid value "+5", expected 1..=3600"#);
        assert_eq!(
            err("-t abc"),
            r#"-t: invalid value "abc", expected 1..=3600"#
        );
        assert_eq!(err("-t"), "-t: missing value");
        assert_eq!(err("-l warn -t"), "-t: missing value");
    }

    #[test]
    fn sample_period() {
        assert_eq!(parse("-s 250").unwrap().sample_period_ms, 250);
        assert_eq!(
            err("-s 0"),
            r#"-s: invalid value "0", expected a positive number of milliseconds"#
        );
    }

    #[test]
    fn thresholds() {
        let a = parse("-T 10 -J 20 -O30 -D 40").unwrap();
        assert_eq!(
            (
                a.latency_thr_ms,
                a.jitter_thr_ms,
                a.offline_thr_ms,
                a.drops_thr
            ),
            (10, 20, 30, 40)
        );
        assert_eq!(err("-T x"), r#"-T: invalid value "x", expected 0 or more"#);
        assert_eq!(
            err("-J -1"),
            r#"-J: invalid value "-1", expected 0 or more"#
        );
        assert_eq!(
            err("-O 1.5"),
            r#"-O: invalid value "1.5", expected 0 or more"#
        );
        assert_eq!(err("-D"), "-D: missing value");
    }

    #[test]
    fn report_events_takes_any_value() {
        assert!(parse("-l warn").unwrap().report_events);
        assert!(parse("-lx").unwrap().report_events);
        assert_eq!(err("-l"), "-l: missing value");
    }

    #[test]
    fn resource_thresholds_without_upstream_fallthrough() {
        let a = parse("-U 80").unwrap();
        assert_eq!(a.res_upper_pct, 80);
        assert_eq!(a.res_lower_pct, 0);
        assert_eq!(a.env_flags, 1);
        assert_eq!(a.metrics_flags, 3);
        assert_eq!(parse("-L 5").unwrap().res_lower_pct, 5);
        assert_eq!(parse("-U 100").unwrap().res_upper_pct, 100);
        assert_eq!(
            err("-U 101"),
            r#"-U: invalid value "101", expected 0..=100"#
        );
        assert_eq!(err("-L x"), r#"-L: invalid value "x", expected 0..=100"#);
    }

    #[test]
    fn filter_kinds() {
        assert_eq!(parse("-F task").unwrap().filter_kind(), Some(Filter::Task));
        assert_eq!(
            parse("-F 123").unwrap().filter_kind(),
            Some(Filter::Pid(123))
        );
        assert_eq!(
            parse("-F nginx").unwrap().filter_kind(),
            Some(Filter::Comm("nginx".into()))
        );
        assert_eq!(parse("").unwrap().filter_kind(), None);
        assert_eq!(
            ProbeArgs::try_parse_from(["-F", ""])
                .unwrap_err()
                .to_string(),
            r#"-F: invalid value "", expected task, a pid or a comm"#
        );
    }

    #[test]
    fn client_port_flag() {
        assert!(parse("-c 1").unwrap().report_cport);
        assert!(!parse("-c 0").unwrap().report_cport);
        assert_eq!(err("-c 2"), r#"-c: invalid value "2", expected 0 or 1"#);
    }

    #[test]
    fn paths_and_device() {
        let a = parse(
            "-p /usr/sbin/nginx -w /etc/gala-gopher/gala-gopher-app.conf -d eth0 -b /tmp/btf",
        )
        .unwrap();
        assert_eq!(a.elf_path, Some(PathBuf::from("/usr/sbin/nginx")));
        assert_eq!(
            a.whitelist,
            Some(PathBuf::from("/etc/gala-gopher/gala-gopher-app.conf"))
        );
        assert_eq!(a.dev.as_deref(), Some("eth0"));
        assert_eq!(a.btf_path, Some(PathBuf::from("/tmp/btf")));
        // getopt hands a value-taking flag the next token even if it starts with '-'.
        assert_eq!(
            parse("-w -odd").unwrap().whitelist,
            Some(PathBuf::from("-odd"))
        );
        assert_eq!(
            ProbeArgs::try_parse_from(["-p", ""])
                .unwrap_err()
                .to_string(),
            r#"-p: invalid value "", expected a path"#
        );
    }

    #[test]
    fn probe_bits() {
        assert_eq!(parse("-P 0").unwrap().probe_bits, 0xFFFF_FFFF);
        assert_eq!(parse("-P 5").unwrap().probe_bits, 5);
        assert!(parse("-P 5").unwrap().probe_bits_given);
        assert!(!parse("-t 5").unwrap().probe_bits_given);
        assert_eq!(parse("-P 0x10").unwrap().probe_bits, 16);
        assert_eq!(parse("-P 4294967295").unwrap().probe_bits, u32::MAX);
        assert_eq!(
            err("-P 4294967296"),
            r#"-P: invalid value "4294967296", expected a 32-bit mask"#
        );
        assert_eq!(
            err("-P 0x"),
            r#"-P: invalid value "0x", expected a 32-bit mask"#
        );
    }

    #[test]
    fn continuous_takes_no_value_and_clusters() {
        let a = parse("-C").unwrap();
        assert!(a.continuous);
        let a = parse("-C -t 3").unwrap();
        assert!(a.continuous);
        assert_eq!(a.period_secs, 3);
        let a = parse("-Ct3").unwrap();
        assert!(a.continuous);
        assert_eq!(a.period_secs, 3);
        let a = parse("-Ct 4").unwrap();
        assert_eq!(a.period_secs, 4);
        assert_eq!(err("-C 5"), r#"unexpected argument "5""#);
    }

    #[test]
    fn kafka_port() {
        assert_eq!(parse("-k 19092").unwrap().kafka_port, 19092);
        assert_eq!(
            err("-k 65536"),
            r#"-k: invalid value "65536", expected 1..=65535"#
        );
        assert_eq!(err("-k 0"), r#"-k: invalid value "0", expected 1..=65535"#);
    }

    #[test]
    fn host_ips() {
        assert_eq!(
            parse("-i 10.0.0.1,192.168.1.2").unwrap().host_ips,
            vec!["10.0.0.1", "192.168.1.2"]
        );
        assert_eq!(parse("-i 10.0.0.1").unwrap().host_ips, vec!["10.0.0.1"]);
        assert_eq!(
            err("-i ,"),
            r#"-i: invalid value ",", expected a comma-separated list of IPs"#
        );
    }

    #[test]
    fn metrics_and_env_flags() {
        let a = parse("-m 1 -e 4").unwrap();
        assert_eq!((a.metrics_flags, a.env_flags), (1, 4));
        let a = parse("-m 0 -e 0").unwrap();
        assert_eq!((a.metrics_flags, a.env_flags), (3, 1));
        assert_eq!(err("-m 4"), r#"-m: invalid value "4", expected 0..=3"#);
        assert_eq!(err("-e 8"), r#"-e: invalid value "8", expected 0..=7"#);
    }

    #[test]
    fn pid_list() {
        assert_eq!(parse("-f 1,22,333").unwrap().pids, vec![1, 22, 333]);
        assert_eq!(
            err("-f 1,x"),
            r#"-f: invalid value "1,x", expected a comma-separated list of pids"#
        );
        assert_eq!(
            err("-f 0"),
            r#"-f: invalid value "0", expected a comma-separated list of pids"#
        );
    }

    #[test]
    fn unknown_flags_are_kept_in_order() {
        let a = parse("-x 7 -y -t 2 -z -q9").unwrap();
        assert_eq!(
            a.extra,
            vec![
                ('x', Some("7".into())),
                ('y', None),
                ('z', None),
                ('q', Some("9".into())),
            ]
        );
        assert_eq!(a.period_secs, 2);
        assert_eq!(a.extra_value('x'), Some("7"));
        assert_eq!(a.extra_value('y'), None);
        assert_eq!(a.extra_value('n'), None);
    }

    #[test]
    fn stray_arguments_are_errors() {
        assert_eq!(err("foo"), r#"unexpected argument "foo""#);
        assert_eq!(err("-t 5 bar"), r#"unexpected argument "bar""#);
        assert_eq!(err("-"), r#"unexpected argument "-""#);
        assert_eq!(err("-- -t"), r#"unexpected argument "-t""#);
        assert_eq!(parse("-t 2 --").unwrap().period_secs, 2);
    }

    /// Reference §8.2 vector 15, adapted: our flags arrive as argv, so a path keeps its spaces,
    /// and `-U` sets only its own field.
    #[test]
    fn reference_vector_15() {
        let a = ProbeArgs::try_parse_from(["-t", "5", "-w", "/a b", "-l", "warn"]).unwrap();
        assert_eq!(a.period_secs, 5);
        assert_eq!(a.whitelist, Some(PathBuf::from("/a b")));
        assert!(a.report_events);
        assert_eq!(err("-t 0"), r#"-t: invalid value "0", expected 1..=3600"#);
        assert_eq!(parse("-P 0").unwrap().probe_bits, 0xFFFF_FFFF);
        assert_eq!(
            parse("-F 123").unwrap().filter_kind(),
            Some(Filter::Pid(123))
        );
        assert_eq!(parse("-F task").unwrap().filter_kind(), Some(Filter::Task));
        assert!(parse("-c 2").is_err());
        let u = parse("-U 80").unwrap();
        assert_eq!((u.res_upper_pct, u.env_flags, u.metrics_flags), (80, 1, 3));
    }

    #[test]
    fn usage_mentions_every_known_flag() {
        let u = usage();
        for f in VALUE_FLAGS.chars().chain(['C']) {
            assert!(u.contains(&format!("-{f}")), "usage lacks -{f}");
        }
    }
}
