//! Log-file sink (`logs` / `json` channels): JSON lines under `logs.metric_dir`
//! (`gopher_metrics_<N>`), `logs.event_dir` (`gopher_event_<N>`) and `logs.meta_dir`
//! (`gopher_meta.log`), each capped by its `*_total_size` (see [`rotate`]).
//!
//! One thread writes all three streams, buffering a batch and writing it with few syscalls. A
//! directory that cannot be used is retried every 10 s; its items count as failed meanwhile.

pub mod rotate;

pub use rotate::{prepare_dir, LogFileError, Naming, RotatingFile};

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::json;
use super::queue::{Item, Popped, SinkQueue};
use crate::ingest::now_ms;
use crate::telemetry::{SinkStats, Stream};

/// Items taken from the sink queue per round.
const BATCH: usize = 4096;

/// Pause between attempts to open an unusable directory.
const RETRY_OPEN: Duration = Duration::from_secs(10);

/// Metric line shape in the metric files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricFormat {
    /// `logs` channel: the upstream flat (Kafka) JSON.
    Flat,
    /// `json` channel: HEAD's `labels`/`metrics`/`histos` JSON.
    Head,
}

/// Where one stream's files go.
#[derive(Debug, Clone)]
pub struct FileSpec {
    /// Directory.
    pub dir: PathBuf,
    /// File naming.
    pub naming: Naming,
    /// Cap on all files of the stream, bytes.
    pub total_bytes: u64,
}

/// Opens the files on first use and again after a failure (at most every 10 s).
#[derive(Debug)]
struct LazyFile {
    spec: FileSpec,
    file: Option<RotatingFile>,
    last_try: Option<Instant>,
}

impl LazyFile {
    fn new(spec: FileSpec) -> Self {
        LazyFile {
            spec,
            file: None,
            last_try: None,
        }
    }

    fn get(&mut self, stats: &SinkStats) -> Option<&mut RotatingFile> {
        if self.file.is_none() && self.last_try.is_none_or(|t| t.elapsed() >= RETRY_OPEN) {
            self.last_try = Some(Instant::now());
            match RotatingFile::open(&self.spec.dir, self.spec.naming, self.spec.total_bytes) {
                Ok(f) => self.file = Some(f),
                Err(e) => {
                    tracing::error!(sink = "logs", "{e}");
                    stats.set_last_error(now_ms(), &e.to_string());
                }
            }
        }
        self.file.as_mut()
    }
}

/// The log-file sink: file specs per stream.
#[derive(Debug, Default)]
pub struct LogSinkSpec {
    /// Metric files and line shape.
    pub metric: Option<(FileSpec, MetricFormat)>,
    /// Event files.
    pub event: Option<FileSpec>,
    /// Metadata file.
    pub meta: Option<FileSpec>,
}

/// Start the log-file sink thread.
pub fn spawn(
    spec: LogSinkSpec,
    machine_id: &str,
    queue: Arc<SinkQueue>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let machine_id = machine_id.to_string();
    // Create the directories now so a bad one is reported at start (writing retries later).
    for s in [
        spec.metric.as_ref().map(|(s, _)| s),
        spec.event.as_ref(),
        spec.meta.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        if let Err(e) = prepare_dir(&s.dir) {
            tracing::error!(sink = "logs", "{e}");
            queue.stats().set_last_error(now_ms(), &e.to_string());
        }
    }
    std::thread::Builder::new()
        .name("sink-logs".into())
        .spawn(move || run(spec, &machine_id, &queue))
}

fn run(spec: LogSinkSpec, machine_id: &str, queue: &SinkQueue) {
    let stats = Arc::clone(queue.stats());
    let format = spec.metric.as_ref().map(|(_, f)| *f);
    let mut files: [Option<LazyFile>; 3] = [
        spec.metric.map(|(s, _)| LazyFile::new(s)),
        spec.event.map(LazyFile::new),
        spec.meta.map(LazyFile::new),
    ];
    let mut batch = Vec::with_capacity(BATCH);
    let mut line = Vec::with_capacity(4096);
    loop {
        let popped = queue.pop_batch(&mut batch, BATCH, Duration::from_millis(500));
        for item in batch.drain(..) {
            let stream = item.stream();
            let Some(lazy) = files[stream.index()].as_mut() else {
                continue;
            };
            let counters = stats.stream(stream);
            let Some(file) = lazy.get(&stats) else {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            line.clear();
            let bytes: &[u8] = match &item {
                Item::Metric(r) => {
                    match format {
                        Some(MetricFormat::Head) => json::metric_head(r, machine_id, &mut line),
                        _ => json::metric_flat(r, machine_id, &mut line),
                    }
                    &line
                }
                Item::Event(e) => e.json.as_bytes(),
                Item::Meta(m) => m.json.as_bytes(),
            };
            if let Err(e) = file.append(bytes) {
                counters
                    .failed
                    .fetch_add(1 + file.take_lost(), Ordering::Relaxed);
                stats.set_last_error(now_ms(), &e.to_string());
            }
        }
        for (i, lazy) in files.iter_mut().enumerate() {
            let Some(file) = lazy.as_mut().and_then(|l| l.file.as_mut()) else {
                continue;
            };
            let counters = stats.stream(Stream::ALL[i]);
            let (written, res) = file.flush();
            counters.sent.fetch_add(written, Ordering::Relaxed);
            counters
                .failed
                .fetch_add(file.take_lost(), Ordering::Relaxed);
            if let Err(e) = res {
                stats.set_last_error(now_ms(), &e.to_string());
            }
        }
        if popped == Popped::Closed {
            break;
        }
    }
}
