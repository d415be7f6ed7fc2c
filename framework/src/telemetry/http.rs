//! Counters of the daemon's HTTP servers (`web_server`, later the REST API): open, refused and
//! timed-out connections, refused requests, accept errors, shared `/metrics` renders.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Which HTTP time limit closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpTimeout {
    /// The request header was not complete within `header_read_timeout_secs`.
    Header,
    /// A keep-alive connection stayed idle for `idle_timeout_secs`.
    Idle,
    /// A request (handling plus sending the response) took longer than `request_timeout_secs`.
    Request,
}

impl HttpTimeout {
    /// Every kind, in export order.
    pub const ALL: [HttpTimeout; 3] =
        [HttpTimeout::Header, HttpTimeout::Idle, HttpTimeout::Request];

    /// Label value used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpTimeout::Header => "header",
            HttpTimeout::Idle => "idle",
            HttpTimeout::Request => "request",
        }
    }
}

/// Counters of one HTTP server.
#[derive(Debug)]
pub struct HttpCounters {
    /// Config section of the server (`web_server`), the `server` label.
    pub server: &'static str,
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections accepted and served.
    pub accepted: AtomicU64,
    /// Connections closed at once because the connection limit was reached.
    pub refused_connections: AtomicU64,
    /// Requests answered 503 because `max_requests` were in flight.
    pub refused_requests: AtomicU64,
    /// Failed accept(2) calls (e.g. EMFILE).
    pub accept_errors: AtomicU64,
    /// TLS handshakes that failed or did not finish within the header time limit.
    pub tls_handshake_failures: AtomicU64,
    /// `/metrics` bodies rendered; concurrent scrapes share one render.
    pub renders: AtomicU64,
    timeouts: [AtomicU64; HttpTimeout::ALL.len()],
}

impl HttpCounters {
    fn new(server: &'static str) -> Self {
        HttpCounters {
            server,
            open: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            refused_connections: AtomicU64::new(0),
            refused_requests: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            tls_handshake_failures: AtomicU64::new(0),
            renders: AtomicU64::new(0),
            timeouts: Default::default(),
        }
    }

    /// Count one connection closed by `kind`.
    pub fn timeout(&self, kind: HttpTimeout) {
        self.timeouts[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections closed by `kind` so far.
    pub fn timeouts(&self, kind: HttpTimeout) -> u64 {
        self.timeouts[kind as usize].load(Ordering::Relaxed)
    }
}

/// The HTTP servers of the daemon, each registered once by its config section name.
#[derive(Debug, Default)]
pub struct HttpServers {
    servers: Mutex<Vec<Arc<HttpCounters>>>,
}

impl HttpServers {
    /// The counters of `server`, created on first use.
    pub fn register(&self, server: &'static str) -> Arc<HttpCounters> {
        let mut list = match self.servers.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        if let Some(c) = list.iter().find(|c| c.server == server) {
            return Arc::clone(c);
        }
        let c = Arc::new(HttpCounters::new(server));
        list.push(Arc::clone(&c));
        c
    }

    /// Every registered server, in registration order.
    pub fn all(&self) -> Vec<Arc<HttpCounters>> {
        match self.servers.lock() {
            Ok(l) => l.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

/// Append the `gala_gopher_self_http_*` families. `mid` is the already escaped machine id.
pub fn render_http_metrics(servers: &HttpServers, mid: &str, out: &mut String) {
    let all = servers.all();
    if all.is_empty() {
        return;
    }
    let family =
        |out: &mut String, name: &str, kind: &str, help: &str, f: &dyn Fn(&HttpCounters) -> u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for c in &all {
                let _ = writeln!(
                    out,
                    "{name}{{server=\"{}\",machine_id=\"{mid}\"}} {}",
                    c.server,
                    f(c)
                );
            }
        };
    family(
        out,
        "gala_gopher_self_http_connections",
        "gauge",
        "Open HTTP connections.",
        &|c| c.open.load(Ordering::Relaxed),
    );
    family(
        out,
        "gala_gopher_self_http_connections_accepted_total",
        "counter",
        "HTTP connections accepted.",
        &|c| c.accepted.load(Ordering::Relaxed),
    );
    family(
        out,
        "gala_gopher_self_http_connections_refused_total",
        "counter",
        "HTTP connections closed at once because max_connections or the descriptor budget was reached.",
        &|c| c.refused_connections.load(Ordering::Relaxed),
    );
    family(
        out,
        "gala_gopher_self_http_requests_refused_total",
        "counter",
        "Requests answered 503 because max_requests were in flight.",
        &|c| c.refused_requests.load(Ordering::Relaxed),
    );
    family(
        out,
        "gala_gopher_self_http_accept_errors_total",
        "counter",
        "Failed accept calls (e.g. out of file descriptors); the server backs off after each.",
        &|c| c.accept_errors.load(Ordering::Relaxed),
    );
    family(
        out,
        "gala_gopher_self_http_tls_handshake_failures_total",
        "counter",
        "TLS handshakes that failed (bad or missing client certificate, plain HTTP, no common protocol) or did not finish within header_read_timeout_secs.",
        &|c| c.tls_handshake_failures.load(Ordering::Relaxed),
    );
    family(
        out,
        "gala_gopher_self_scrape_renders_total",
        "counter",
        "Metrics bodies rendered; scrapes arriving during a render share it.",
        &|c| c.renders.load(Ordering::Relaxed),
    );
    let name = "gala_gopher_self_http_timeouts_total";
    let _ = writeln!(
        out,
        "# HELP {name} HTTP connections closed by a time limit.\n# TYPE {name} counter"
    );
    for c in &all {
        for kind in HttpTimeout::ALL {
            let _ = writeln!(
                out,
                "{name}{{server=\"{}\",kind=\"{}\",machine_id=\"{mid}\"}} {}",
                c.server,
                kind.as_str(),
                c.timeouts(kind)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_once_and_renders_every_family() {
        let servers = HttpServers::default();
        let a = servers.register("web_server");
        let b = servers.register("web_server");
        assert!(Arc::ptr_eq(&a, &b));
        a.timeout(HttpTimeout::Idle);
        a.refused_connections.fetch_add(2, Ordering::Relaxed);
        let mut out = String::new();
        render_http_metrics(&servers, "m", &mut out);
        assert!(out.contains(
            "gala_gopher_self_http_timeouts_total{server=\"web_server\",kind=\"idle\",machine_id=\"m\"} 1\n"
        ));
        assert!(out.contains(
            "gala_gopher_self_http_connections_refused_total{server=\"web_server\",machine_id=\"m\"} 2\n"
        ));
    }
}
