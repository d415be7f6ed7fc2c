//! Pushing profiles to a Pyroscope server (its documented ingest API):
//!
//! `POST <server>/ingest?name=<app>&from=<s>&until=<s>&format=folded&sampleRate=<hz>`
//! `&spyName=gala-gopher&units=samples&aggregationType=sum` with the folded stacks as the body.
//!
//! * `<server>` is `host:port` (plain HTTP) or a URL `http://…` / `https://…`, optionally with a
//!   path prefix; nothing else (no user info, query or fragment).
//! * The app is upstream's `gala-gopher-oncpu` / `gala-gopher-offcpu`. Per process
//!   (upstream's multi-instance mode) it carries Pyroscope labels:
//!   `gala-gopher-oncpu{pid=123,comm=nginx}` (label values: ASCII letters, digits, `_-.`, other
//!   characters `_`, at most 64 bytes). Without them every process of the host is one app, told
//!   apart by the `[pid]comm` root frame of the folded stacks.
//! * Units: Pyroscope accepts `samples`, `objects`, `goroutines`, `bytes`, `lock_samples` and
//!   `lock_nanoseconds` only, so both kinds push `units=samples`: on-CPU, one sample per
//!   `sample_period_ns` (`sampleRate` = 1e9 / period, rounded); off-CPU, the body is the same
//!   folded text as on disk (blocked microseconds) with `sampleRate=1000000`, so one "sample" is
//!   one microsecond and Pyroscope shows the blocked time.
//! * Bounds: connect 3 s, whole request 10 s, body at most 16 MiB (a larger profile is not sent:
//!   [`PushError::TooLarge`]), the reply read up to 64 KiB; no redirects, no proxy.

use std::fmt::Write as _;
use std::time::Duration;

use crate::folded;
use crate::model::{since_epoch, Kind, Profile};
use crate::sanitize;

/// Default bound on the connection set-up.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default bound on a whole request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on a body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 << 20;

const MAX_REPLY_BYTES: u64 = 64 << 10;
const SPY_NAME: &str = "gala-gopher";

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The configured server is not `host:port` or an http(s) URL.
    #[error("pyroscope server {0:?} is not host:port or an http(s) URL")]
    InvalidServer(String),
    /// The folded body exceeds the bound; nothing was sent.
    #[error("{kind} profile of pid {pid} is {bytes} bytes, more than the push bound of {max}")]
    TooLarge {
        /// The profile's kind.
        kind: Kind,
        /// The profile's pid.
        pid: u32,
        /// Body size.
        bytes: usize,
        /// The bound.
        max: usize,
    },
    /// The server answered with a status other than 2xx.
    #[error("pyroscope {url}: HTTP {status}")]
    Status {
        /// The ingest URL (without the query).
        url: String,
        /// The status code.
        status: u16,
    },
    /// Connecting, sending or receiving failed (includes timeouts).
    #[error("pyroscope {url}: {message}")]
    Transport {
        /// The ingest URL (without the query).
        url: String,
        /// What went wrong.
        message: String,
    },
}

/// How to push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushConfig {
    /// `host:port` or `http(s)://host:port[/prefix]`.
    pub server: String,
    /// Label each app with the process (`{pid=…,comm=…}`).
    pub per_process: bool,
    /// Bound on the connection set-up.
    pub connect_timeout: Duration,
    /// Bound on the whole request.
    pub timeout: Duration,
    /// Largest body sent.
    pub max_body_bytes: usize,
}

impl PushConfig {
    /// The default bounds for `server`.
    pub fn new(server: &str, per_process: bool) -> PushConfig {
        PushConfig {
            server: server.to_string(),
            per_process,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// What a successful push did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Sent this many body bytes.
    Sent(usize),
    /// The profile was empty: nothing sent.
    Empty,
}

/// A Pyroscope client (one HTTP agent, connections reused).
#[derive(Debug)]
pub struct Pusher {
    agent: ureq::Agent,
    ingest_url: String,
    config: PushConfig,
}

impl Pusher {
    /// A client for `config.server` (checked here).
    pub fn new(config: PushConfig) -> Result<Pusher, PushError> {
        let base = base_url(&config.server)?;
        let agent_config = ureq::Agent::config_builder()
            .timeout_connect(Some(config.connect_timeout))
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .user_agent(concat!(
                "gala-gopher-stackprobe/",
                env!("CARGO_PKG_VERSION")
            ))
            .build();
        Ok(Pusher {
            agent: ureq::Agent::new_with_config(agent_config),
            ingest_url: format!("{base}/ingest"),
            config,
        })
    }

    /// Pushes `profile`'s folded stacks.
    pub fn push(&self, profile: &Profile) -> Result<Pushed, PushError> {
        if profile.is_empty() {
            return Ok(Pushed::Empty);
        }
        let body = folded::render(profile);
        if body.len() > self.config.max_body_bytes {
            return Err(PushError::TooLarge {
                kind: profile.kind,
                pid: profile.pid,
                bytes: body.len(),
                max: self.config.max_body_bytes,
            });
        }
        let url = format!(
            "{}?{}",
            self.ingest_url,
            query(profile, self.config.per_process)
        );
        let reply = self
            .agent
            .post(&url)
            .header("Content-Type", "text/plain")
            .send(body.as_bytes());
        match reply {
            Ok(mut r) => {
                let status = r.status().as_u16();
                // Drain a bounded reply so the connection can be reused.
                let _ = r
                    .body_mut()
                    .with_config()
                    .limit(MAX_REPLY_BYTES)
                    .read_to_vec();
                if (200..300).contains(&status) {
                    Ok(Pushed::Sent(body.len()))
                } else {
                    Err(PushError::Status {
                        url: self.ingest_url.clone(),
                        status,
                    })
                }
            }
            Err(e) => Err(PushError::Transport {
                url: self.ingest_url.clone(),
                message: e.to_string(),
            }),
        }
    }
}

/// Pushes one profile with the default bounds (a new client each call; keep a [`Pusher`] to
/// reuse connections).
pub fn push(server: &str, profile: &Profile, per_process: bool) -> Result<Pushed, PushError> {
    Pusher::new(PushConfig::new(server, per_process))?.push(profile)
}

/// The base URL (scheme, authority, optional path prefix; no trailing `/`) of `server`.
pub fn base_url(server: &str) -> Result<String, PushError> {
    let invalid = || PushError::InvalidServer(server.to_string());
    let s = server.trim();
    let (scheme, rest) = match s.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => ("http", rest),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => ("https", rest),
        Some(_) => return Err(invalid()),
        None => ("http", s),
    };
    let rest = rest.trim_end_matches('/');
    let authority = rest.split('/').next().unwrap_or_default();
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~:[]/%".contains(c);
    if authority.is_empty() || !rest.chars().all(allowed) {
        return Err(invalid());
    }
    Ok(format!("{scheme}://{rest}"))
}

/// The app name: `gala-gopher-<kind>`, with `{pid=…,comm=…}` per process.
pub fn app_name(profile: &Profile, per_process: bool) -> String {
    let app = format!("gala-gopher-{}", profile.kind.name());
    if per_process {
        format!(
            "{app}{{pid={},comm={}}}",
            profile.pid,
            sanitize::label_value(&profile.comm)
        )
    } else {
        app
    }
}

/// Samples per second Pyroscope converts the folded values with.
pub fn sample_rate(profile: &Profile) -> u64 {
    match profile.kind {
        Kind::OnCpu if profile.sample_period_ns > 0 => {
            let p = profile.sample_period_ns;
            ((1_000_000_000 + p / 2) / p).max(1)
        }
        Kind::OnCpu => 100,
        Kind::OffCpu => 1_000_000,
    }
}

/// The ingest query string of `profile`.
pub fn query(profile: &Profile, per_process: bool) -> String {
    let from = since_epoch(profile.start).as_secs();
    let until = since_epoch(profile.end).as_secs().max(from);
    let mut q = String::new();
    let _ = write!(
        q,
        "name={}&from={from}&until={until}&format=folded&sampleRate={}&spyName={SPY_NAME}\
         &units=samples&aggregationType=sum",
        percent_encode(&app_name(profile, per_process)),
        sample_rate(profile)
    );
    q
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Frame, Sample};
    use std::time::{Duration, UNIX_EPOCH};

    fn profile(kind: Kind) -> Profile {
        Profile {
            pid: 123,
            comm: "ng inx{,}".into(),
            kind,
            start: UNIX_EPOCH + Duration::from_secs(1_764_953_820),
            end: UNIX_EPOCH + Duration::from_millis(1_764_954_000_900),
            sample_period_ns: 1_000_000_000 / 99,
            samples: vec![Sample {
                frames: vec![Frame::user("main")],
                count: 1,
                value: 1,
            }],
        }
    }

    #[test]
    fn servers() {
        assert_eq!(
            base_url("localhost:4040").ok().as_deref(),
            Some("http://localhost:4040")
        );
        assert_eq!(
            base_url(" http://h:4040/ ").ok().as_deref(),
            Some("http://h:4040")
        );
        assert_eq!(
            base_url("HTTPS://h/p/").ok().as_deref(),
            Some("https://h/p")
        );
        assert_eq!(
            base_url("[::1]:4040").ok().as_deref(),
            Some("http://[::1]:4040")
        );
        for bad in [
            "",
            "ftp://h",
            "h:4040?x=1",
            "u@h:4040",
            "h 4040",
            "http://",
            "h#f",
            "h/\u{7f}",
        ] {
            assert!(
                matches!(base_url(bad), Err(PushError::InvalidServer(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn query_strings() {
        let on = profile(Kind::OnCpu);
        assert_eq!(app_name(&on, false), "gala-gopher-oncpu");
        assert_eq!(
            app_name(&on, true),
            "gala-gopher-oncpu{pid=123,comm=ng_inx___}"
        );
        assert_eq!(
            query(&on, true),
            "name=gala-gopher-oncpu%7Bpid%3D123%2Ccomm%3Dng_inx___%7D&from=1764953820\
             &until=1764954000&format=folded&sampleRate=99&spyName=gala-gopher&units=samples\
             &aggregationType=sum"
        );
        assert_eq!(sample_rate(&profile(Kind::OffCpu)), 1_000_000);
    }
}
