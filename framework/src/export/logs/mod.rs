//! Log-file sink (`logs` / `json` channels): JSON lines under `logs.metric_dir`
//! (`gopher_metrics_<N>`), `logs.event_dir` (`gopher_event_<N>`) and `logs.meta_dir`
//! (`gopher_meta.log`), each capped by its `*_total_size` (see [`rotate`]).
//!
//! One thread (`sink-logs`) writes all three streams, buffering a batch and writing it with few
//! syscalls at the end of each round. A directory that cannot be used is retried every 10 s; its
//! items count as failed meanwhile.

pub mod rotate;

pub use rotate::{prepare_dir, LogFileError, Naming, RotatingFile};

pub use super::json::MetricFormat;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::json;
use super::sink::{streams_to, Messages, Plan, SendError, Sent, Sink};
use crate::clock::now_ms;
use crate::config::{GopherConfig, OutChannel};
use crate::message::{Item, Stream};
use crate::telemetry::SinkStats;

/// Bytes in the `*_total_size` megabytes.
const MB: u64 = 1024 * 1024;

/// Pause between attempts to open an unusable directory.
const RETRY_OPEN: Duration = Duration::from_secs(10);

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

/// The sink's settings, from the `logs` section: file specs per stream.
#[derive(Debug, Clone, Default)]
pub struct LogSinkConfig {
    /// Metric files and line shape.
    pub metric: Option<(FileSpec, MetricFormat)>,
    /// Event files.
    pub event: Option<FileSpec>,
    /// Metadata file.
    pub meta: Option<FileSpec>,
    /// The daemon's machine id (in every metric line).
    pub machine_id: String,
}

fn file_spec(dir: &Path, naming: Naming, total_mb: u64) -> FileSpec {
    FileSpec {
        dir: dir.to_path_buf(),
        naming,
        total_bytes: total_mb.saturating_mul(MB),
    }
}

/// The log-file sink: the files of each carried stream.
#[derive(Debug)]
pub struct LogSink {
    files: [Option<LazyFile>; 3],
    format: MetricFormat,
    machine_id: String,
    stats: Arc<SinkStats>,
}

impl Sink for LogSink {
    const NAME: &'static str = "logs";
    const BATCH: usize = 4096;
    type Config = LogSinkConfig;
    type Error = std::convert::Infallible;

    fn plan(cfg: &GopherConfig, machine_id: &str) -> Option<Plan<LogSinkConfig>> {
        let streams = streams_to(cfg, &[OutChannel::Logs, OutChannel::Json]);
        if streams.is_empty() {
            return None;
        }
        let l = &cfg.logs;
        let m = &cfg.metric.out_channel;
        if m.contains(OutChannel::Logs) && m.contains(OutChannel::Json) {
            tracing::warn!("metric.out_channel has both \"logs\" and \"json\": metric files use the json shape");
        }
        let format = if m.contains(OutChannel::Json) {
            MetricFormat::Head
        } else {
            MetricFormat::Flat
        };
        let has = |s| streams.contains(&s);
        let config = LogSinkConfig {
            metric: has(Stream::Metric).then(|| {
                let numbered = Naming::Numbered("gopher_metrics_");
                (
                    file_spec(&l.metric_dir, numbered, l.metric_total_size),
                    format,
                )
            }),
            event: has(Stream::Event).then(|| {
                let numbered = Naming::Numbered("gopher_event_");
                file_spec(&l.event_dir, numbered, l.event_total_size)
            }),
            meta: has(Stream::Meta).then(|| {
                let backup = Naming::Backup("gopher_meta.log");
                file_spec(&l.meta_dir, backup, l.meta_total_size)
            }),
            machine_id: machine_id.to_string(),
        };
        Some(Plan {
            streams,
            queue_size: l.queue_size,
            config,
        })
    }

    fn open(config: LogSinkConfig, stats: Arc<SinkStats>) -> Result<Self, Self::Error> {
        // Create the directories now so a bad one is reported at start (writing retries later).
        for s in [
            config.metric.as_ref().map(|(s, _)| s),
            config.event.as_ref(),
            config.meta.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            if let Err(e) = prepare_dir(&s.dir) {
                tracing::error!(sink = "logs", "{e}");
                stats.set_last_error(now_ms(), &e.to_string());
            }
        }
        Ok(LogSink {
            format: config
                .metric
                .as_ref()
                .map_or(MetricFormat::Flat, |(_, f)| *f),
            files: [
                config.metric.map(|(s, _)| LazyFile::new(s)),
                config.event.map(LazyFile::new),
                config.meta.map(LazyFile::new),
            ],
            machine_id: config.machine_id,
            stats,
        })
    }

    fn encode(&mut self, stream: Stream, items: &[Item], out: &mut Messages) {
        if self.files[stream.index()].is_none() {
            return;
        }
        for item in items {
            out.push(1, |line| {
                json::item(item, &self.machine_id, self.format, line)
            });
        }
    }

    fn send(&mut self, stream: Stream, line: &[u8]) -> Result<Sent, SendError> {
        let Some(lazy) = self.files[stream.index()].as_mut() else {
            return Err(SendError::Permanent(None));
        };
        // Unusable directory: the open attempt recorded the error.
        let Some(file) = lazy.get(&self.stats) else {
            return Err(SendError::Permanent(None));
        };
        match file.append(line) {
            // Counted when the buffer is written ([`Sink::flush`]).
            Ok(()) => Ok(Sent::Pending),
            Err(e) => {
                // Buffered lines lost with the failed write.
                let lost = file.take_lost();
                self.stats
                    .stream(stream)
                    .failed
                    .fetch_add(lost, Ordering::Relaxed);
                Err(SendError::Permanent(Some(e.to_string())))
            }
        }
    }

    fn flush(&mut self) {
        for (i, lazy) in self.files.iter_mut().enumerate() {
            let Some(file) = lazy.as_mut().and_then(|l| l.file.as_mut()) else {
                continue;
            };
            let counters = self.stats.stream(Stream::ALL[i]);
            let (written, res) = file.flush();
            counters.sent.fetch_add(written, Ordering::Relaxed);
            counters
                .failed
                .fetch_add(file.take_lost(), Ordering::Relaxed);
            if let Err(e) = res {
                self.stats.set_last_error(now_ms(), &e.to_string());
            }
        }
    }
}
