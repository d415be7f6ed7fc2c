//! Abnormal events: what ingest hands over ([`EventSink`]), the parsed [`Event`] and the
//! [`EventMessage`] every sink receives (parsing, dedup and rendering live in `crate::events`).

/// Receives `|event|…|` lines (raw values after the table name).
pub trait EventSink: Send + Sync + 'static {
    /// Handle one event record from `probe`.
    fn event(&self, probe: &str, values: &[&str]);
}

/// Event sink that only logs (used until a push channel is configured).
#[derive(Debug, Default)]
pub struct LogEvents;

impl EventSink for LogEvents {
    fn event(&self, probe: &str, values: &[&str]) {
        tracing::info!(probe, event = values.join("|"), "probe event");
    }
}

/// The extra labels of a HEAD event line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeadLabels {
    /// Process id.
    pub pid: String,
    /// Process comm.
    pub comm: String,
    /// IP address.
    pub ip: String,
    /// Container id.
    pub container_id: String,
    /// Pod.
    pub pod: String,
    /// Device.
    pub device: String,
}

impl HeadLabels {
    /// The labels under their upstream JSON / attribute names, in upstream order.
    pub fn named(&self) -> [(&'static str, &str); 6] {
        [
            ("PID", &self.pid),
            ("COMM", &self.comm),
            ("IP", &self.ip),
            ("ContainerID", &self.container_id),
            ("POD", &self.pod),
            ("Device", &self.device),
        ]
    }
}

/// One abnormal event as a probe reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Entity name (`cpu`, `fs`, `tcp_link` …).
    pub entity_name: String,
    /// Entity id within the entity name (`cpu`, `/home`, `eth0` …).
    pub entity_id: String,
    /// Metric the threshold applies to (without the `gala_gopher_<entity>_` prefix).
    pub metric: String,
    /// `INFO`, `WARN`, `ERROR`, `FATAL` (or a text derived from the number).
    pub severity_text: String,
    /// OpenTelemetry severity number (9, 13, 17, 21 …).
    pub severity_number: u8,
    /// Human description (`<asctime> <SEV> Entity(<id>) <message>`).
    pub body: String,
    /// Extra labels of the HEAD layout.
    pub labels: Option<HeadLabels>,
}

/// Identity strings of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventIds {
    /// `<machine_id>_<EntityName>_<EntityID with '/' → ':'>`.
    pub entity_id: String,
    /// `<ts_ms>_<entity_id>`.
    pub event_id: String,
    /// `gala_gopher_<EntityName>_<metric>`.
    pub metric: String,
}

impl EventIds {
    /// The ids upstream derives for `ev` at `time_ms`.
    pub fn new(ev: &Event, machine_id: &str, time_ms: u64) -> Self {
        let entity_id = format!(
            "{machine_id}_{}_{}",
            ev.entity_name,
            ev.entity_id.replace('/', ":")
        );
        EventIds {
            event_id: format!("{time_ms}_{entity_id}"),
            metric: format!("gala_gopher_{}_{}", ev.entity_name, ev.metric),
            entity_id,
        }
    }
}

/// An accepted event, ready for every sink: structured fields for OTLP, JSON for Kafka and files.
#[derive(Debug)]
pub struct EventMessage {
    /// The event as parsed (its `body` untranslated).
    pub event: Event,
    /// Derived ids.
    pub ids: EventIds,
    /// Body in the configured language.
    pub body: String,
    /// Daemon receive time, Unix ms.
    pub time_ms: u64,
    /// The upstream event JSON (one line, no newline).
    pub json: String,
}
