//! `gala-gopher` daemon: wires config → supervisor → ingest → store → exporters.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use gala_gopher::clock::now_ms;
use gala_gopher::config::{self, GopherConfig, OutChannel};
use gala_gopher::container_labels;
use gala_gopher::control::{self, Control};
use gala_gopher::export::build_exporters;
use gala_gopher::export::flamegraph::{self, FlamegraphState};
use gala_gopher::export::http::{self, MetricsState};
use gala_gopher::export::prometheus::RenderOptions;
use gala_gopher::ingest::Ingest;
use gala_gopher::meta::SchemaRegistry;
use gala_gopher::store::{StoreLimits, TableStore};
use gala_gopher::supervisor::discovery::{self, DiscoveryInputs};
use gala_gopher::supervisor::{self, Supervisor, SupervisorOptions};
use gala_gopher::telemetry::Telemetry;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// Command line (upstream flags `-c/--config_path`, plus `--check-config` and `-v`).
#[derive(Debug, Parser)]
#[command(
    name = "gala-gopher",
    version = version_text(),
    about = "eBPF-based host observability agent",
    disable_version_flag = true
)]
struct Cli {
    /// Configuration file (libconfig syntax).
    #[arg(short = 'c', long = "config_path", visible_alias = "config-path", default_value = config::DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Validate the configuration, print a summary and exit (0 = valid, 2 = invalid).
    #[arg(long = "check-config")]
    check_config: bool,
    /// Print the version and the probes of this build, and exit.
    #[arg(short = 'v', long = "version", action = clap::ArgAction::Version)]
    version: Option<bool>,
}

/// `-v`/`--version`: the version, then the probes this build carries and, for a tailored
/// build, those it left out (`GG_PROBES` at build time, [`control::merge`]).
fn version_text() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let ours: Vec<&str> = control::merge::shipped_probes().collect();
        let left_out: Vec<&str> = control::merge::tailored_out().collect();
        let mut text = format!("{}\nprobes: {}", env!("CARGO_PKG_VERSION"), ours.join(" "));
        if !left_out.is_empty() {
            text.push_str(&format!("\nleft out: {}", left_out.join(" ")));
        }
        text
    })
}

/// Grace period per probe at daemon stop: every child must be gone within 5 s.
const STOP_GRACE: Duration = Duration::from_millis(2500);

/// Time the push sinks get at stop to deliver what they hold.
const SINK_FLUSH: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The same checks as `--check-config`, so the unit's ExecStartPre and the start agree.
    let checked = match config::preflight(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            report(format_args!("gala-gopher: invalid configuration: {e}"));
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        for w in &checked.loaded.warnings {
            report(format_args!("warning: {w}"));
        }
        return print_summary(&config::summary(&checked.loaded));
    }
    init_logging(&checked.loaded.config);
    for w in &checked.loaded.warnings {
        tracing::warn!("{w}");
    }
    // Still one thread: the environment may be changed (probes inherit GOPHER_HOST_PATH).
    set_host_root(&checked.loaded.config.global.host_root);
    // Before the runtime: fork is only safe while the process has one thread.
    if let Err(e) = supervisor::janitor::start() {
        tracing::warn!(
            "no janitor process ({e}): if the daemon is killed, what its probes started lives on until the next start"
        );
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gala-gopher: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(checked, cli.config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("gala-gopher: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Make `global.host_root` (else `GOPHER_HOST_PATH`) this process's host root and hand it to the
/// probes through `GOPHER_HOST_PATH`. Must run while the process has one thread.
fn set_host_root(configured: &str) {
    use container_info::host;
    if !configured.is_empty() {
        // Checked by preflight already.
        if let Ok(root) = host::parse(configured) {
            if let Err(e) = host::set_root(root.clone()) {
                tracing::warn!("global.host_root: {e}");
            }
            // Sound only while no other thread reads the environment: none exists yet.
            std::env::set_var(host::ENV, &root);
        }
    }
    let root = host::root();
    if !host::is_identity() {
        tracing::info!(host_root = %root.display(), "host files are read under the host root");
    }
}

/// One line to stderr; a closed stderr is not worth a panic.
fn report(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// The `--check-config` summary to stdout. A reader that went away (`| head -1`) ends the output
/// quietly; the config was still valid, so the exit status stays 0.
fn print_summary(text: &str) -> ExitCode {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            report(format_args!("gala-gopher: writing the summary: {e}"));
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cfg: &GopherConfig) {
    let default = cfg.global.log_level.as_str().to_string();
    let filter = tracing_subscriber::EnvFilter::try_from_env("GALA_GOPHER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn run(checked: config::Preflight, config_path: PathBuf) -> anyhow::Result<()> {
    let config::Preflight {
        loaded,
        registry,
        web_tls,
        rest_tls,
        rest_token,
    } = checked;
    let cfg = &loaded.config;
    let machine_id = if cfg.global.machine_id.is_empty() {
        gala_gopher::machine_id::host_machine_id()
    } else {
        cfg.global.machine_id.clone()
    };
    tracing::info!(
        machine_id = %machine_id,
        tables = registry.len(),
        meta_dir = %cfg.global.meta_dir.display(),
        "gala-gopher starting"
    );
    let registry: Arc<RwLock<SchemaRegistry>> = Arc::new(RwLock::new(registry));
    let store = Arc::new(TableStore::new(
        StoreLimits {
            max_tables: cfg.imdb.max_tables_num as usize,
            max_records: cfg.imdb.max_records_num as usize,
            record_timeout_ms: cfg.imdb.record_timeout.saturating_mul(1000),
        },
        &machine_id,
    ));
    let telemetry = Arc::new(Telemetry::default());
    let exporters =
        build_exporters(cfg, &machine_id, &telemetry).context("starting push exporters")?;
    let mut ingest = Ingest::new(
        Arc::clone(&registry),
        Arc::clone(&store),
        exporters.event_sink(),
        cfg.global.max_line_bytes,
        cfg.imdb.max_metrics_num as usize,
    )
    .with_meta_counters(
        Arc::clone(&telemetry.meta),
        cfg.metric.counter_mode.for_meta(),
    )
    .with_custom_labels(Arc::clone(&telemetry.custom_labels))
    .with_process_identity(Arc::new(gala_gopher::process_identity::ProcFs));
    // Container and pod identity: a bounded cache over the runtimes' APIs, filled by its own task.
    let containers = container_info::resolver::Containers::new(container_labels::resolver_config(
        &cfg.container,
    ));
    let _container_task = containers.start();
    let labeler = container_labels::ContainerLabeler::new(containers);
    let _ = telemetry.containers.set(labeler.clone());
    if cfg.metric.pod_info_switch {
        ingest = ingest.with_containers(Arc::new(labeler.clone()));
    }
    if let Some(sink) = exporters.record_sink() {
        ingest = ingest.with_record_sink(sink);
    }
    let ingest = Arc::new(ingest);
    let metadata = exporters.start_metadata(Arc::clone(&registry), cfg.metric.pod_info_switch);

    if let Err(e) = supervisor::become_subreaper() {
        tracing::warn!("cannot become child subreaper: {e}");
    }
    let sup = Supervisor::new(
        ingest,
        Arc::clone(&telemetry),
        SupervisorOptions {
            grace: STOP_GRACE,
            ..SupervisorOptions::default()
        },
    );
    // Snoopers: the processes each probe observes, kept current from the kernel's process events.
    let snooper_opts = control::snooper::ResolverOpts {
        containers: Some(Arc::new(labeler)),
        ..control::snooper::ResolverOpts::default()
    };
    match control::snooper::Resolver::start(snooper_opts) {
        Ok(resolver) => {
            tracing::info!(source = resolver.source(), "snooper resolver started");
            let _ = telemetry.snooper.set(resolver.counters());
            sup.set_snoop_resolver(Arc::new(control::snooper_glue::ResolverGlue::new(
                resolver,
                Arc::clone(&telemetry.custom_labels),
            )));
        }
        Err(e) => tracing::warn!("no snooper resolver ({e}): snoopers select no process"),
    }
    let control = Control::new(config_path, cfg, Arc::clone(&telemetry))?;
    let discovery = discovery::spawn_discovery_loop(
        sup.clone(),
        DiscoveryInputs {
            probes_dir: cfg.global.probes_dir.clone(),
            meta_dir: cfg.global.meta_dir.clone(),
            sdk_dir: cfg.global.sdk_dir.clone(),
            configured: control.subscribe(),
        },
        discovery::DISCOVERY_INTERVAL,
    );

    // The REST API's handlers: also behind the command socket, and what replays probes.init.
    let probes_init =
        (!cfg.global.probes_init.is_empty()).then(|| PathBuf::from(&cfg.global.probes_init));
    let rest_state = control::rest::RestState::new(
        control.clone(),
        sup.clone(),
        Arc::clone(&telemetry),
        probes_init.clone(),
        STOP_GRACE,
    )
    .with_labels(Arc::clone(&telemetry.custom_labels) as Arc<dyn control::rest::LabelSink>);
    if let Some(path) = probes_init {
        let rest = rest_state.clone();
        tokio::spawn(async move {
            let (applied, refused) = control::probes_init::replay(&rest, &path).await;
            if applied + refused > 0 {
                tracing::info!(applied, refused, "{} replayed", path.display());
            }
        });
    }

    let expiry_store = Arc::clone(&store);
    let expiry = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            expiry_store.expire(now_ms());
        }
    });

    // Flame graphs (read-only): where the probe with REST name `flamegraph` writes them, from
    // the supervisor's current spec at each request.
    let flame_state = FlamegraphState::new(Arc::new(sup.clone()), Arc::clone(&telemetry));

    let (stop_tx, stop_rx) = watch::channel(false);
    let status_state = control::status::StatusState {
        store: Arc::clone(&store),
        telemetry: Arc::clone(&telemetry),
    };
    let metrics_state = cfg
        .metric
        .out_channel
        .contains(OutChannel::WebServer)
        .then(|| {
            MetricsState::new(
                Arc::clone(&store),
                Arc::clone(&telemetry),
                RenderOptions {
                    timestamps: cfg.web_server.timestamps,
                    openmetrics: cfg.web_server.openmetrics,
                },
                cfg.web_server.max_requests as usize,
            )
        });
    let mut server = None;
    if let Some(state) = metrics_state.clone() {
        let addr = SocketAddr::new(cfg.web_server.bind_addr, cfg.web_server.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding web_server {addr}"))?;
        match &web_tls {
            None => tracing::info!(%addr, "serving /metrics"),
            Some(t) => tracing::info!(
                %addr,
                client_certificates = if t.client_auth() { "required" } else { "not asked" },
                "serving /metrics over HTTPS"
            ),
        }
        http::return_large_buffers_on_free();
        let limits = http::HttpLimits::from(&cfg.web_server);
        let counters = state.counters();
        let app = http::router(state)
            .merge(control::status::router(status_state.clone()))
            .merge(flamegraph::router(flame_state.clone()));
        let mut rx = stop_rx.clone();
        server = Some(tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            http::serve_with_tls(listener, app, limits, web_tls, counters, shutdown).await;
        }));
    }

    // gopher-ctl's socket: the REST routes, /status, /flamegraph/ and /metrics, guarded by file
    // permissions.
    let mut cmd_server = None;
    if !cfg.global.cmd_socket.is_empty() {
        let path = std::path::Path::new(&cfg.global.cmd_socket);
        match http::unix::bind_unix(path) {
            Ok(sock) => {
                let mut app = control::rest::routes(rest_state.clone())
                    .merge(control::status::router(status_state.clone()))
                    .merge(flamegraph::routes(flame_state.clone()));
                if let Some(state) = metrics_state.clone() {
                    app = app.merge(http::router(state));
                }
                tracing::info!(socket = %path.display(), "serving gopher-ctl");
                let counters = telemetry.http.register(http::unix::CMD_SOCKET);
                let mut rx = stop_rx.clone();
                cmd_server = Some(tokio::spawn(async move {
                    let shutdown = async move {
                        let _ = rx.wait_for(|s| *s).await;
                    };
                    sock.serve(app, http::unix::CMD_SOCKET_LIMITS, counters, shutdown)
                        .await;
                }));
            }
            // Not fatal: the daemon observes without it (e.g. another instance holds it).
            Err(e) => tracing::warn!("gopher-ctl socket {}: {e}", path.display()),
        }
    }

    let mut rest_server = None;
    if cfg.global.rest_api_on {
        let addr = SocketAddr::new(cfg.rest_api_server.bind_addr, cfg.rest_api_server.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding rest_api_server {addr}"))?;
        tracing::info!(
            %addr,
            tls = rest_tls.is_some(),
            token = rest_token.is_some(),
            "serving the REST API"
        );
        let mut app = control::rest::router(rest_state.clone());
        if let Some(token) = rest_token {
            app = app.layer(http::auth::require_bearer(token).writes_only());
        }
        let counters = telemetry.http.register("rest_api_server");
        let limits = http::HttpLimits::from(&cfg.web_server);
        let mut rx = stop_rx.clone();
        rest_server = Some(tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            http::serve_with_tls(listener, app, limits, rest_tls, counters, shutdown).await;
        }));
    }

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => {
                // Logged and counted by control; a bad file leaves everything as it was.
                let _ = control.reload();
            }
        }
    }
    tracing::info!("stopping");
    discovery.abort();
    sup.shutdown().await;
    let _ = stop_tx.send(true);
    for s in [server, rest_server, cmd_server].into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_secs(1), s).await;
    }
    expiry.abort();
    if let Some(m) = metadata {
        m.abort();
    }
    // After the supervisor: every probe's last records are in the sink queues by now.
    let _ = tokio::task::spawn_blocking(move || exporters.shutdown(SINK_FLUSH)).await;
    tracing::info!("stopped");
    Ok(())
}
