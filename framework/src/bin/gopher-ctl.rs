//! `gopher-ctl`: ask a running gala-gopher over its command socket (`global.cmd_socket`).
//! Glue only: the HTTP/1.1 client is `gala_gopher::ctl_client`.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use gala_gopher::config::valid_probe_name;
use gala_gopher::ctl_client::{
    error_message, Client, CtlError, Method, DEFAULT_CMD_SOCKET, DEFAULT_TIMEOUT_SECS, MAX_BODY,
    MAX_METRICS_BODY,
};

/// Largest probe configuration accepted by `probe set` (upstream's limit).
const MAX_PROBE_JSON: usize = 1 << 20;

/// Ask a running gala-gopher daemon over its command socket.
#[derive(Debug, Parser)]
#[command(
    name = "gopher-ctl",
    version,
    after_help = "Exit status: 0 on success; 1 when gala-gopher answered with an error (its \
                  message is printed) or the answer was incomplete; 2 on a usage error or when \
                  gala-gopher cannot be reached."
)]
struct Cli {
    /// The daemon's command socket.
    #[arg(long, global = true, value_name = "PATH", env = "GOPHER_CTL_SOCKET",
          default_value = DEFAULT_CMD_SOCKET)]
    socket: PathBuf,
    /// Seconds the whole exchange may take.
    #[arg(long, global = true, value_name = "SECS", default_value_t = DEFAULT_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read or change a probe's settings (the REST API's JSON).
    Probe {
        #[command(subcommand)]
        op: ProbeOp,
    },
    /// Probes, tables and counters (GET /status).
    Status,
    /// The current metrics exposition (GET /metrics; nothing is consumed).
    Metric,
}

#[derive(Debug, Subcommand)]
enum ProbeOp {
    /// Print a probe's configuration and state as JSON.
    Get {
        /// Probe name.
        #[arg(value_parser = probe_name)]
        name: String,
    },
    /// Change a probe's configuration (e.g. '{"cmd":{"probe":["tcp_rtt"]},"state":"running"}').
    Set {
        /// Probe name.
        #[arg(value_parser = probe_name)]
        name: String,
        /// The new configuration, a JSON object.
        #[arg(value_parser = probe_json)]
        json: String,
    },
    /// List the probes the daemon knows.
    List,
}

fn probe_name(s: &str) -> Result<String, String> {
    if valid_probe_name(s) {
        Ok(s.to_string())
    } else {
        Err("a probe name is 1 to 64 of A-Z a-z 0-9 _ . - and starts with neither - nor .".into())
    }
}

fn probe_json(s: &str) -> Result<String, String> {
    if s.len() > MAX_PROBE_JSON {
        return Err(format!("longer than {MAX_PROBE_JSON} bytes"));
    }
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(serde_json::Value::Object(_)) => Ok(s.to_string()),
        Ok(_) => Err("not a JSON object".into()),
        Err(e) => Err(format!("not valid JSON: {e}")),
    }
}

/// Remembers the last byte written, to end the output with a newline.
struct Output<W> {
    inner: W,
    last: Option<u8>,
}

impl<W: Write> Write for Output<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if n > 0 {
            self.last = Some(buf[n - 1]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn run(cli: Cli) -> Result<ExitCode, CtlError> {
    let client = Client::new(&cli.socket, Duration::from_secs(cli.timeout));
    let (method, path, body, limit) = match &cli.command {
        Command::Probe { op } => match op {
            ProbeOp::Get { name } => (Method::Get, format!("/{name}"), None, MAX_BODY),
            ProbeOp::Set { name, json } => (
                Method::Put,
                format!("/{name}"),
                Some(json.as_bytes()),
                MAX_BODY,
            ),
            ProbeOp::List => (Method::Get, "/probes".to_string(), None, MAX_BODY),
        },
        Command::Status => (Method::Get, "/status".to_string(), None, MAX_BODY),
        Command::Metric => (Method::Get, "/metrics".to_string(), None, MAX_METRICS_BODY),
    };
    let answer = client.send(method, &path, body)?;
    if !answer.head().is_success() {
        let status = answer.head().status;
        let reason = answer.head().reason.clone();
        let body = answer.body(MAX_BODY)?;
        let msg = error_message(&body);
        let msg = if msg.is_empty() { reason.clone() } else { msg };
        eprintln!("gopher-ctl: {msg} (HTTP {status} {reason})");
        return Ok(ExitCode::from(1));
    }
    let stdout = io::stdout().lock();
    let mut out = Output {
        inner: io::BufWriter::with_capacity(64 << 10, stdout),
        last: None,
    };
    answer.body_to(limit, &mut out)?;
    if out.last.is_some_and(|b| b != b'\n') {
        out.write_all(b"\n").map_err(CtlError::Output)?;
    }
    out.flush().map_err(CtlError::Output)?;
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        // A reader that went away (`gopher-ctl metric | head`) is not an error.
        Err(CtlError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gopher-ctl: {e}");
            ExitCode::from(if e.is_unreachable() { 2 } else { 1 })
        }
    }
}
