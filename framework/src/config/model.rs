//! The typed daemon configuration. Field names are the upstream keys; every section is optional
//! and a missing key takes the default documented on it.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::de::{self, string_enum};

/// The whole `gala-gopher.conf`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct GopherConfig {
    /// `global` section.
    pub global: Global,
    /// `metric` section: where metrics go.
    pub metric: Metric,
    /// `event` section: where abnormal events go.
    pub event: Event,
    /// `meta` section: where table metadata goes.
    pub meta: Meta,
    /// `ingress` (accepted for compatibility, unused).
    pub ingress: Ingress,
    /// `egress` (accepted for compatibility, unused).
    pub egress: Egress,
    /// `imdb`: table store limits.
    pub imdb: Imdb,
    /// `web_server`: the Prometheus endpoint.
    pub web_server: WebServer,
    /// `rest_api_server`: probe control API (served when `global.rest_api_on`).
    pub rest_api_server: RestApiServer,
    /// `kafka`: producer settings.
    pub kafka: Kafka,
    /// `logs`: log-file channel directories.
    pub logs: Logs,
    /// `otlp`: OTLP/HTTP exporter.
    pub otlp: Otlp,
    /// `container` (new): container runtimes for container and pod labels.
    pub container: Container,
    /// `probes`: probes found by name in `global.probes_dir`.
    pub probes: Vec<ProbeEntry>,
    /// `extend_probes`: probes run from an explicit command.
    pub extend_probes: Vec<ExtendProbeEntry>,
}

string_enum! {
    /// `global.log_level`.
    pub enum LogLevel {
        /// Everything.
        Debug = "debug",
        /// Default.
        Info = "info",
        /// Warnings and errors.
        Warn = "warn",
        /// Errors only.
        Error = "error",
    }
}

string_enum! {
    /// `metric.counter_mode`: how counters whose upstream meaning is "per period" (declared
    /// `period: "delta"` in their `.meta`) are exported.
    pub enum CounterMode {
        /// Upstream's meaning under upstream's name: the change in the period, a gauge (what
        /// gala-spider and gala-anteater read). The default.
        Upstream = "upstream",
        /// Prometheus-native: the running total, a counter named `<name>_total` (or the field's
        /// `total_name`) in base units.
        Prometheus = "prometheus",
    }
}

impl CounterMode {
    /// The schema loader's form.
    pub fn for_meta(self) -> crate::meta::CounterMode {
        match self {
            CounterMode::Upstream => crate::meta::CounterMode::Upstream,
            CounterMode::Prometheus => crate::meta::CounterMode::Prometheus,
        }
    }
}

string_enum! {
    /// One output channel of `metric`/`event`/`meta`.
    pub enum OutChannel {
        /// Prometheus `/metrics` on `web_server`.
        WebServer = "web_server",
        /// Rotating files under `logs`.
        Logs = "logs",
        /// Kafka topic of the section.
        Kafka = "kafka",
        /// OTLP/HTTP to `otlp.endpoint`.
        Otlp = "otlp",
        /// JSON lines into the `logs` files (HEAD `json`).
        Json = "json",
    }
}

string_enum! {
    /// `event.desc_language`.
    pub enum Language {
        /// Chinese event descriptions.
        ZhCn = "zh_CN",
        /// English event descriptions.
        EnUs = "en_US",
    }
}

string_enum! {
    /// `switch` of a probe entry.
    pub enum Switch {
        /// Run it.
        On = "on",
        /// Do not run it.
        Off = "off",
        /// Run it while `start_check` passes.
        Auto = "auto",
    }
}

string_enum! {
    /// `check_type` of a probe entry.
    pub enum CheckType {
        /// `start_check` is a shell pipeline; start iff its first output line is an integer > 0.
        Count = "count",
        /// `start_check` is a regex; start iff a running process's comm matches (no shell).
        Process = "process",
    }
}

string_enum! {
    /// `kafka.compression_codec` (librdkafka `compression.codec`).
    pub enum CompressionCodec {
        /// No compression.
        None = "none",
        /// gzip.
        Gzip = "gzip",
        /// snappy.
        Snappy = "snappy",
        /// lz4.
        Lz4 = "lz4",
        /// zstd.
        Zstd = "zstd",
    }
}

string_enum! {
    /// `kafka.security_protocol` (librdkafka `security.protocol`).
    pub enum SecurityProtocol {
        /// No TLS, no SASL.
        Plaintext = "plaintext",
        /// TLS.
        Ssl = "ssl",
        /// SASL without TLS.
        SaslPlaintext = "sasl_plaintext",
        /// SASL over TLS.
        SaslSsl = "sasl_ssl",
    }
}

string_enum! {
    /// `kafka.sasl_mechanism` (librdkafka `sasl.mechanism`).
    pub enum SaslMechanism {
        /// PLAIN.
        Plain = "PLAIN",
        /// SCRAM-SHA-256.
        ScramSha256 = "SCRAM-SHA-256",
        /// SCRAM-SHA-512.
        ScramSha512 = "SCRAM-SHA-512",
        /// GSSAPI (Kerberos).
        Gssapi = "GSSAPI",
        /// OAUTHBEARER.
        OauthBearer = "OAUTHBEARER",
    }
}

/// The channels a section writes to; empty = off (`out_channel = ""`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutChannels(Vec<OutChannel>);

impl OutChannels {
    /// Channels built from a list (duplicates dropped, order kept).
    pub fn new(list: impl IntoIterator<Item = OutChannel>) -> Self {
        let mut out = OutChannels::default();
        for c in list {
            out.push(c);
        }
        out
    }

    pub(crate) fn push(&mut self, c: OutChannel) {
        if !self.0.contains(&c) {
            self.0.push(c);
        }
    }

    /// Whether `c` is one of the channels.
    pub fn contains(&self, c: OutChannel) -> bool {
        self.0.contains(&c)
    }

    /// The channels, in config order.
    pub fn as_slice(&self) -> &[OutChannel] {
        &self.0
    }

    /// Whether the section is switched off.
    pub fn is_off(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for OutChannels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("off");
        }
        let names: Vec<&str> = self.0.iter().map(|c| c.as_str()).collect();
        f.write_str(&names.join(","))
    }
}

impl<'de> Deserialize<'de> for OutChannels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::channels(d)
    }
}

impl Serialize for OutChannels {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|c| c.as_str()))
    }
}

/// `global` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Global {
    /// Debug log file name inside `logs.debug_dir` (default `gopher.log`).
    #[serde(deserialize_with = "de::string")]
    pub log_file_name: String,
    /// Log level (default `info`).
    pub log_level: LogLevel,
    /// bpffs directory for pinned maps (default `/sys/fs/bpf/gala-gopher`).
    #[serde(deserialize_with = "de::path")]
    pub pin_path: PathBuf,
    /// Serve `rest_api_server` (default false).
    #[serde(deserialize_with = "de::on_off")]
    pub rest_api_on: bool,
    /// Drop-in probe folder (default `/opt/gala-gopher/probes`).
    #[serde(deserialize_with = "de::path")]
    pub probes_dir: PathBuf,
    /// Extra `.meta` folder (default `/opt/gala-gopher/meta`).
    #[serde(deserialize_with = "de::path")]
    pub meta_dir: PathBuf,
    /// Python/shell helper folder passed to script probes (default `/opt/gala-gopher/sdk`).
    #[serde(deserialize_with = "de::path")]
    pub sdk_dir: PathBuf,
    /// Longest accepted probe output line in bytes (default 65536, 1024..=16 MiB).
    #[serde(deserialize_with = "de::ranged::<_, usize, 1024, 16_777_216>")]
    pub max_line_bytes: usize,
    /// Fixed `machine_id` label value; empty (default) = DMI product_uuid, else /etc/machine-id.
    #[serde(deserialize_with = "de::string")]
    pub machine_id: String,
    /// Command socket for `gopher-ctl` (default `/run/gala_gopher/gala_gopher_cmd.sock`;
    /// empty = none).
    #[serde(deserialize_with = "de::string")]
    pub cmd_socket: String,
    /// Upstream's persisted REST state, rewritten after each successful `PUT` and replayed at
    /// start (default `/etc/gala-gopher/probes.init`; empty = none).
    #[serde(deserialize_with = "de::string")]
    pub probes_init: String,
    /// Where the host's `/` is seen (new; upstream's `GOPHER_HOST_PATH`): every read of a host
    /// file goes through it. Empty (default) = `GOPHER_HOST_PATH` if set, else `/`.
    #[serde(deserialize_with = "de::host_root")]
    pub host_root: String,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            log_file_name: "gopher.log".into(),
            log_level: LogLevel::Info,
            pin_path: "/sys/fs/bpf/gala-gopher".into(),
            rest_api_on: false,
            probes_dir: "/opt/gala-gopher/probes".into(),
            meta_dir: "/opt/gala-gopher/meta".into(),
            sdk_dir: "/opt/gala-gopher/sdk".into(),
            max_line_bytes: 65536,
            machine_id: String::new(),
            cmd_socket: "/run/gala_gopher/gala_gopher_cmd.sock".into(),
            probes_init: "/etc/gala-gopher/probes.init".into(),
            host_root: String::new(),
        }
    }
}

/// `metric` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Metric {
    /// Channels (default `web_server`).
    pub out_channel: OutChannels,
    /// Kafka topic (default `gala_gopher`).
    #[serde(deserialize_with = "de::string")]
    pub kafka_topic: String,
    /// Add the container and pod labels to every series of a process or container (default on,
    /// as upstream).
    #[serde(deserialize_with = "de::on_off")]
    pub pod_info_switch: bool,
    /// How per-period counters are exported (default `upstream`; see [`CounterMode`]).
    pub counter_mode: CounterMode,
}

impl Default for Metric {
    fn default() -> Self {
        Metric {
            out_channel: OutChannels::new([OutChannel::WebServer]),
            kafka_topic: "gala_gopher".into(),
            pod_info_switch: true,
            counter_mode: CounterMode::Upstream,
        }
    }
}

/// `event` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Event {
    /// Channels (default `logs`).
    pub out_channel: OutChannels,
    /// Kafka topic (default `gala_gopher_event`).
    #[serde(deserialize_with = "de::string")]
    pub kafka_topic: String,
    /// Per-entity dedup window, seconds (default 600).
    #[serde(deserialize_with = "de::ranged::<_, u64, 1, { i64::MAX }>")]
    pub timeout: u64,
    /// Event description language (default `en_US`).
    pub desc_language: Language,
}

impl Default for Event {
    fn default() -> Self {
        Event {
            out_channel: OutChannels::new([OutChannel::Logs]),
            kafka_topic: "gala_gopher_event".into(),
            timeout: 600,
            desc_language: Language::EnUs,
        }
    }
}

/// `meta` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Meta {
    /// Channels (default `logs`).
    pub out_channel: OutChannels,
    /// Kafka topic (default `gala_gopher_metadata`).
    #[serde(deserialize_with = "de::string")]
    pub kafka_topic: String,
    /// Seconds between metadata reports (default 600).
    #[serde(deserialize_with = "de::ranged::<_, u64, 1, { i64::MAX }>")]
    pub report_period: u64,
}

impl Default for Meta {
    fn default() -> Self {
        Meta {
            out_channel: OutChannels::new([OutChannel::Logs]),
            kafka_topic: "gala_gopher_metadata".into(),
            report_period: 600,
        }
    }
}

/// `ingress` (v2023; unused).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Ingress {
    /// Unused.
    #[serde(deserialize_with = "de::integer")]
    pub interval: i64,
}

impl Default for Ingress {
    fn default() -> Self {
        Ingress { interval: 5 }
    }
}

/// `egress` (v2023; unused).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Egress {
    /// Unused.
    #[serde(deserialize_with = "de::integer")]
    pub interval: i64,
    /// Unused.
    #[serde(deserialize_with = "de::integer")]
    pub time_range: i64,
}

impl Default for Egress {
    fn default() -> Self {
        Egress {
            interval: 5,
            time_range: 5,
        }
    }
}

/// `imdb` section: table store limits.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Imdb {
    /// Most tables (default 1024, 1..=65536).
    #[serde(deserialize_with = "de::ranged::<_, u32, 1, 65536>")]
    pub max_tables_num: u32,
    /// Most records per table (default 1024).
    #[serde(deserialize_with = "de::ranged::<_, u32, 1, { u32::MAX as i64 }>")]
    pub max_records_num: u32,
    /// Most fields per table (default 64).
    #[serde(deserialize_with = "de::ranged::<_, u32, 1, { u32::MAX as i64 }>")]
    pub max_metrics_num: u32,
    /// Seconds after which an unrefreshed record expires (default 60).
    #[serde(deserialize_with = "de::ranged::<_, u64, 1, { i64::MAX }>")]
    pub record_timeout: u64,
}

impl Default for Imdb {
    fn default() -> Self {
        Imdb {
            max_tables_num: 1024,
            max_records_num: 1024,
            max_metrics_num: 64,
            record_timeout: 60,
        }
    }
}

/// TLS settings of an HTTP server, as [`WebServer::tls`] / [`RestApiServer::tls`] return them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// PEM private key.
    pub private_key: PathBuf,
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// CA bundle for client-certificate verification, if any.
    pub ca_file: Option<PathBuf>,
}

fn tls_of(
    on: bool,
    key: &Option<PathBuf>,
    cert: &Option<PathBuf>,
    ca: &Option<PathBuf>,
) -> Option<Tls> {
    match (on, key, cert) {
        (true, Some(k), Some(c)) => Some(Tls {
            private_key: k.clone(),
            cert_file: c.clone(),
            ca_file: ca.clone(),
        }),
        _ => None,
    }
}

/// `web_server` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct WebServer {
    /// Address to bind (default 127.0.0.1).
    #[serde(deserialize_with = "de::ip_addr")]
    pub bind_addr: IpAddr,
    /// Port (default 8888).
    #[serde(deserialize_with = "de::ranged::<_, u16, 1, 65535>")]
    pub port: u16,
    /// Add sample timestamps to `/metrics` (default false).
    #[serde(deserialize_with = "de::on_off")]
    pub timestamps: bool,
    /// Answer `/metrics` in OpenMetrics when the scraper asks for it (default on). Off keeps
    /// the classic text format for every scraper, and with it upstream's counter names
    /// (OpenMetrics names counter samples `<name>_total`).
    #[serde(deserialize_with = "de::on_off")]
    pub openmetrics: bool,
    /// `ssl_auth`: serve HTTPS (default off).
    #[serde(deserialize_with = "de::on_off")]
    pub ssl_auth: bool,
    /// PEM private key (required when `ssl_auth` is on).
    #[serde(deserialize_with = "de::opt_path")]
    pub private_key: Option<PathBuf>,
    /// PEM certificate chain (required when `ssl_auth` is on).
    #[serde(deserialize_with = "de::opt_path")]
    pub cert_file: Option<PathBuf>,
    /// CA bundle; when set, clients must present a certificate it signed.
    #[serde(deserialize_with = "de::opt_path")]
    pub ca_file: Option<PathBuf>,
    /// Most open connections; more are closed at once (default 256; 0 = no limit but half
    /// the descriptor limit, which always applies).
    #[serde(deserialize_with = "de::ranged::<_, u32, 0, 1_000_000>")]
    pub max_connections: u32,
    /// Most `/metrics` requests in flight; more get 503 (default 40; 0 = unlimited).
    #[serde(deserialize_with = "de::ranged::<_, u32, 0, 1_000_000>")]
    pub max_requests: u32,
    /// Seconds a client has to send a whole request header (default 10).
    #[serde(deserialize_with = "de::ranged::<_, u32, 1, 3600>")]
    pub header_read_timeout_secs: u32,
    /// Seconds a keep-alive connection may wait for its next request (default 60).
    #[serde(deserialize_with = "de::ranged::<_, u32, 1, 86_400>")]
    pub idle_timeout_secs: u32,
    /// Seconds for one request, from its header to the last byte of the response (default 60).
    #[serde(deserialize_with = "de::ranged::<_, u32, 1, 3600>")]
    pub request_timeout_secs: u32,
}

impl Default for WebServer {
    fn default() -> Self {
        WebServer {
            bind_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8888,
            timestamps: false,
            openmetrics: true,
            ssl_auth: false,
            private_key: None,
            cert_file: None,
            ca_file: None,
            max_connections: 256,
            max_requests: 40,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            request_timeout_secs: 60,
        }
    }
}

impl WebServer {
    /// TLS settings when `ssl_auth` is on (validation guarantees key and cert are set then).
    pub fn tls(&self) -> Option<Tls> {
        tls_of(
            self.ssl_auth,
            &self.private_key,
            &self.cert_file,
            &self.ca_file,
        )
    }
}

/// `rest_api_server` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct RestApiServer {
    /// Address to bind (default 127.0.0.1).
    #[serde(deserialize_with = "de::ip_addr")]
    pub bind_addr: IpAddr,
    /// Port (default 9999).
    #[serde(deserialize_with = "de::ranged::<_, u16, 1, 65535>")]
    pub port: u16,
    /// Bearer token required on requests that change state (`""` = none). Prefer
    /// `token_file`: the config file is often readable by everyone.
    #[serde(deserialize_with = "de::opt_string")]
    pub token: Option<String>,
    /// File holding the bearer token (owned by root or the daemon's user, mode 0600/0400);
    /// exclusive with `token`.
    #[serde(deserialize_with = "de::opt_path")]
    pub token_file: Option<PathBuf>,
    /// `ssl_auth`: serve HTTPS (default off).
    #[serde(deserialize_with = "de::on_off")]
    pub ssl_auth: bool,
    /// PEM private key (required when `ssl_auth` is on).
    #[serde(deserialize_with = "de::opt_path")]
    pub private_key: Option<PathBuf>,
    /// PEM certificate chain (required when `ssl_auth` is on).
    #[serde(deserialize_with = "de::opt_path")]
    pub cert_file: Option<PathBuf>,
    /// CA bundle; when set, clients must present a certificate it signed.
    #[serde(deserialize_with = "de::opt_path")]
    pub ca_file: Option<PathBuf>,
}

impl Default for RestApiServer {
    fn default() -> Self {
        RestApiServer {
            bind_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 9999,
            token: None,
            token_file: None,
            ssl_auth: false,
            private_key: None,
            cert_file: None,
            ca_file: None,
        }
    }
}

impl RestApiServer {
    /// Whether a bearer token is configured (`token` or `token_file`).
    pub fn has_token(&self) -> bool {
        self.token.is_some() || self.token_file.is_some()
    }

    /// TLS settings when `ssl_auth` is on (validation guarantees key and cert are set then).
    pub fn tls(&self) -> Option<Tls> {
        tls_of(
            self.ssl_auth,
            &self.private_key,
            &self.cert_file,
            &self.ca_file,
        )
    }
}

/// `kafka` section (librdkafka producer settings).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Kafka {
    /// `bootstrap.servers` (default `""`; required when a channel is `kafka`).
    #[serde(deserialize_with = "de::string")]
    pub kafka_broker: String,
    /// `batch.num.messages` (default 10000).
    #[serde(deserialize_with = "de::ranged::<_, u32, 1, 1_000_000>")]
    pub batch_num_messages: u32,
    /// `compression.codec` (default none).
    pub compression_codec: CompressionCodec,
    /// `queue.buffering.max.messages` (default 100000).
    #[serde(deserialize_with = "de::ranged::<_, u32, 1, 2_147_483_647>")]
    pub queue_buffering_max_messages: u32,
    /// `queue.buffering.max.kbytes` (default 1048576).
    #[serde(deserialize_with = "de::ranged::<_, u32, 1, 2_147_483_647>")]
    pub queue_buffering_max_kbytes: u32,
    /// `queue.buffering.max.ms` (default 5).
    #[serde(deserialize_with = "de::ranged::<_, u32, 0, 900_000>")]
    pub queue_buffering_max_ms: u32,
    /// `security.protocol` (unset = librdkafka default, plaintext).
    #[serde(deserialize_with = "opt_enum")]
    pub security_protocol: Option<SecurityProtocol>,
    /// `sasl.mechanism`.
    #[serde(deserialize_with = "opt_enum")]
    pub sasl_mechanism: Option<SaslMechanism>,
    /// `sasl.username`.
    #[serde(deserialize_with = "de::opt_string")]
    pub sasl_username: Option<String>,
    /// `sasl.password`.
    #[serde(deserialize_with = "de::opt_string")]
    pub sasl_password: Option<String>,
    /// `ssl.ca.location`.
    #[serde(deserialize_with = "de::opt_path")]
    pub ssl_ca_location: Option<PathBuf>,
    /// Records (and events, metadata messages) the Kafka sink holds per stream in front of
    /// librdkafka; when full the oldest is dropped and counted (default 100000).
    #[serde(deserialize_with = "de::ranged::<_, usize, 1, 100_000_000>")]
    pub queue_size: usize,
}

/// An enum value where `""` means "not set".
fn opt_enum<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr<Err = String>,
{
    match de::opt_string(d)? {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

impl Default for Kafka {
    fn default() -> Self {
        Kafka {
            kafka_broker: String::new(),
            batch_num_messages: 10000,
            compression_codec: CompressionCodec::None,
            queue_buffering_max_messages: 100_000,
            queue_buffering_max_kbytes: 1_048_576,
            queue_buffering_max_ms: 5,
            security_protocol: None,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            queue_size: 100_000,
        }
    }
}

/// `logs` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Logs {
    /// Total size of metric log files, MB (default 100).
    #[serde(deserialize_with = "de::ranged::<_, u64, 1, 1_048_576>")]
    pub metric_total_size: u64,
    /// Metric files (default `/var/log/gala-gopher/metrics`).
    #[serde(deserialize_with = "de::safe_dir")]
    pub metric_dir: PathBuf,
    /// Event files (default `/var/log/gala-gopher/event`).
    #[serde(deserialize_with = "de::safe_dir")]
    pub event_dir: PathBuf,
    /// Metadata files (default `/var/log/gala-gopher/meta`).
    #[serde(deserialize_with = "de::safe_dir")]
    pub meta_dir: PathBuf,
    /// Debug log (default `/var/log/gala-gopher/debug`).
    #[serde(deserialize_with = "de::safe_dir")]
    pub debug_dir: PathBuf,
    /// Total size of event log files, MB (default 100).
    #[serde(deserialize_with = "de::ranged::<_, u64, 1, 1_048_576>")]
    pub event_total_size: u64,
    /// Total size of metadata log files, MB (default 100).
    #[serde(deserialize_with = "de::ranged::<_, u64, 1, 1_048_576>")]
    pub meta_total_size: u64,
    /// Records the log-file sink holds per stream while the disk is slow; when full the oldest
    /// is dropped and counted (default 100000).
    #[serde(deserialize_with = "de::ranged::<_, usize, 1, 100_000_000>")]
    pub queue_size: usize,
}

impl Default for Logs {
    fn default() -> Self {
        Logs {
            metric_total_size: 100,
            metric_dir: "/var/log/gala-gopher/metrics".into(),
            event_dir: "/var/log/gala-gopher/event".into(),
            meta_dir: "/var/log/gala-gopher/meta".into(),
            debug_dir: "/var/log/gala-gopher/debug".into(),
            event_total_size: 100,
            meta_total_size: 100,
            queue_size: 100_000,
        }
    }
}

/// `container` section (new): how container ids found in `/proc/<pid>/cgroup` become names,
/// images and pods.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Container {
    /// Ask the container runtimes for names, images and pods (default on); off = only the
    /// `container_id` and `pod_id` the cgroup paths give.
    #[serde(deserialize_with = "de::on_off")]
    pub runtime_api: bool,
    /// Docker Engine API sockets (docker, podman's service), tried in order; empty (default) =
    /// the usual paths (`/run/docker.sock`, `/var/run/docker.sock`, `/run/podman/podman.sock`).
    /// Under `global.host_root`.
    #[serde(deserialize_with = "de::socket_paths")]
    pub docker_sockets: Vec<PathBuf>,
    /// CRI sockets (containerd, CRI-O, iSulad); empty (default) = the usual paths. Under
    /// `global.host_root`.
    #[serde(deserialize_with = "de::socket_paths")]
    pub cri_sockets: Vec<PathBuf>,
    /// Longest wait for one runtime request, ms (default 2000, 100..=60000).
    #[serde(deserialize_with = "de::ranged::<_, u64, 100, 60_000>")]
    pub request_timeout_ms: u64,
    /// Full re-listing of the runtimes' containers, seconds (default 30, 5..=3600).
    #[serde(deserialize_with = "de::ranged::<_, u64, 5, 3600>")]
    pub resync_period: u64,
    /// Most containers kept (default 4096, 16..=65536).
    #[serde(deserialize_with = "de::ranged::<_, u32, 16, 65_536>")]
    pub max_containers: u32,
}

impl Default for Container {
    fn default() -> Self {
        Container {
            runtime_api: true,
            docker_sockets: Vec::new(),
            cri_sockets: Vec::new(),
            request_timeout_ms: 2000,
            resync_period: 30,
            max_containers: 4096,
        }
    }
}

/// `otlp` section (new): OTLP/HTTP exporter.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct Otlp {
    /// Collector base URL, e.g. `http://127.0.0.1:4318` (`""` = off).
    #[serde(deserialize_with = "de::endpoint")]
    pub endpoint: String,
    /// Request timeout, ms (default 5000).
    #[serde(deserialize_with = "de::ranged::<_, u64, 1, 600_000>")]
    pub timeout_ms: u64,
    /// Records (and events) held per stream while the collector is slow or unreachable; when
    /// full the oldest is dropped and counted (default 10000).
    #[serde(deserialize_with = "de::ranged::<_, usize, 1, 10_000_000>")]
    pub queue_size: usize,
}

impl Default for Otlp {
    fn default() -> Self {
        Otlp {
            endpoint: String::new(),
            timeout_ms: 5000,
            queue_size: 10000,
        }
    }
}

fn default_check_type() -> CheckType {
    CheckType::Count
}

fn default_switch() -> Switch {
    Switch::Off
}

/// A `probes` entry: runs `probes_dir/NAME` (or `probes_dir/NAME/NAME`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ProbeEntry {
    /// Probe name (required).
    #[serde(deserialize_with = "de::probe_name")]
    pub name: String,
    /// Command-line parameters, split like a shell would (default `""`).
    #[serde(default, deserialize_with = "de::param")]
    pub param: String,
    /// on / off / auto (default off).
    #[serde(default = "default_switch")]
    pub switch: Switch,
    /// Check for `auto` (required then).
    #[serde(default, deserialize_with = "de::opt_string")]
    pub start_check: Option<String>,
    /// How `start_check` is evaluated (default count).
    #[serde(default = "default_check_type")]
    pub check_type: CheckType,
}

/// An `extend_probes` entry: runs `command` + `param` (split, never through a shell).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ExtendProbeEntry {
    /// Probe name (required).
    #[serde(deserialize_with = "de::probe_name")]
    pub name: String,
    /// Program and leading arguments (required).
    #[serde(deserialize_with = "de::command")]
    pub command: String,
    /// Parameters appended to `command` (default `""`).
    #[serde(default, deserialize_with = "de::param")]
    pub param: String,
    /// on / off / auto (default off).
    #[serde(default = "default_switch")]
    pub switch: Switch,
    /// Check for `auto` (required then).
    #[serde(default, deserialize_with = "de::opt_string")]
    pub start_check: Option<String>,
    /// How `start_check` is evaluated (default count).
    #[serde(default = "default_check_type")]
    pub check_type: CheckType,
}
