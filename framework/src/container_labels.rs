//! The daemon's container directory: `container_info`'s resolver cache
//! ([`Containers`]) as the ingest path's label source ([`ContainerSource`]) and the snooper
//! resolver's [`ContainerDirectory`], plus its self-metrics. See `docs/container-labels.md`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use container_info::cgroup::ContainerRef;
use container_info::info::{self, ContainerInfo};
use container_info::resolver::{Config, Containers};

use crate::config::Container as ContainerConfig;
use crate::control::snooper::ContainerDirectory;
use crate::record_labels::ContainerSource;

/// The resolver configuration from the `container` section (sockets under the host root).
pub fn resolver_config(cfg: &ContainerConfig) -> Config {
    let defaults = Config::default();
    let under_root = |list: &[std::path::PathBuf], default: Vec<std::path::PathBuf>| {
        if !cfg.runtime_api {
            Vec::new()
        } else if list.is_empty() {
            default
        } else {
            list.iter().map(container_info::host::path).collect()
        }
    };
    Config {
        docker_sockets: under_root(&cfg.docker_sockets, defaults.docker_sockets.clone()),
        cri_sockets: under_root(&cfg.cri_sockets, defaults.cri_sockets.clone()),
        timeout: Duration::from_millis(cfg.request_timeout_ms),
        resync: Duration::from_secs(cfg.resync_period),
        max_containers: cfg.max_containers as usize,
        ..defaults
    }
}

/// The shared cache, as the ingest path and the snooper resolver use it.
#[derive(Debug, Clone)]
pub struct ContainerLabeler {
    containers: Arc<Containers>,
}

impl ContainerLabeler {
    /// Over `containers` (its resolver task started by the caller).
    pub fn new(containers: Arc<Containers>) -> Self {
        ContainerLabeler { containers }
    }

    /// The cache.
    pub fn containers(&self) -> &Arc<Containers> {
        &self.containers
    }

    /// Container `id`: the full id, or a short one (at least 12 hex digits) found among the
    /// cached containers.
    fn find(&self, id: &str) -> Option<Arc<ContainerInfo>> {
        if id.len() >= 64 {
            return self.containers.info(id);
        }
        if let Some(i) = self.containers.cached(id) {
            return Some(i);
        }
        if id.len() < info::SHORT_ID_LEN {
            return None;
        }
        let hit = self.containers.cached_prefix(id);
        if hit.is_none() {
            // Ask the runtime (docker and CRI both take a unique prefix).
            let _ = self.containers.info(id);
        }
        hit
    }

    /// Append `gala_gopher_self_container_*` (`machine_id` already label-escaped).
    pub fn render(&self, machine_id: &str, out: &mut String) {
        let c = self.containers.counters();
        let counters: [(&str, &str, u64); 12] = [
            (
                "pid_lookups_total",
                "Process to container lookups.",
                c.pid_lookups,
            ),
            (
                "pid_reads_total",
                "Reads of /proc/<pid>/cgroup (lookup cache misses).",
                c.pid_reads,
            ),
            (
                "info_lookups_total",
                "Container name/image/pod lookups.",
                c.info_lookups,
            ),
            (
                "info_misses_total",
                "Container lookups not answered from the cache (queued for the runtime).",
                c.info_misses,
            ),
            (
                "lookups_dropped_total",
                "Container lookups not queued because the queue was full.",
                c.queue_drops,
            ),
            (
                "runtime_requests_total",
                "Requests sent to container runtimes.",
                c.runtime_requests,
            ),
            (
                "runtime_not_found_total",
                "Container ids no runtime knew.",
                c.not_found,
            ),
            (
                "runtime_events_total",
                "Container events received from runtimes.",
                c.events,
            ),
            (
                "runtime_event_lines_skipped_total",
                "Runtime event lines skipped (too long, not JSON, not a container event).",
                c.event_lines_skipped,
            ),
            (
                "resyncs_total",
                "Full re-listings of the runtimes' containers.",
                c.resyncs,
            ),
            (
                "evictions_total",
                "Containers dropped from the cache (destroyed, gone at a resync).",
                c.container_evictions,
            ),
            (
                "over_limit_total",
                "Containers not kept because container.max_containers was reached.",
                c.containers_over_limit,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP gala_gopher_self_container_{name} {help}\n# TYPE gala_gopher_self_container_{name} counter\ngala_gopher_self_container_{name}{{machine_id=\"{machine_id}\"}} {v}"
            );
        }
        let name = "gala_gopher_self_container_runtime_errors_total";
        let _ = writeln!(
            out,
            "# HELP {name} Failed container runtime requests, by kind.\n# TYPE {name} counter"
        );
        for (kind, v) in [
            ("timeout", c.errors_timeout),
            ("connect", c.errors_connect),
            ("protocol", c.errors_protocol),
        ] {
            let _ = writeln!(
                out,
                "{name}{{kind=\"{kind}\",machine_id=\"{machine_id}\"}} {v}"
            );
        }
        let name = "gala_gopher_self_container_cached";
        let _ = writeln!(
            out,
            "# HELP {name} Containers and processes in the container cache.\n# TYPE {name} gauge\n{name}{{kind=\"containers\",machine_id=\"{machine_id}\"}} {}\n{name}{{kind=\"pids\",machine_id=\"{machine_id}\"}} {}",
            c.containers_cached, c.pids_cached
        );
    }
}

impl ContainerSource for ContainerLabeler {
    fn generation(&self) -> u64 {
        self.containers.generation()
    }

    fn of_pid(&self, pid: u32, pod_labels: &[String]) -> Vec<(String, String)> {
        if !pod_labels.is_empty() {
            self.containers.want_pod_labels();
        }
        self.containers.labels_of_pid(pid, pod_labels)
    }

    fn of_container(&self, id: &str, pod_labels: &[String]) -> Vec<(String, String)> {
        if !pod_labels.is_empty() {
            self.containers.want_pod_labels();
        }
        let Some(found) = self.find(id) else {
            return Vec::new();
        };
        let r = ContainerRef {
            id: found.id.clone(),
            runtime: container_info::cgroup::Runtime::Unknown,
            pod_uid: found.pod.as_ref().map(|p| p.uid.clone()),
            cgroup_path: String::new(),
        };
        let mut labels = info::series_labels(&r, Some(&found), pod_labels);
        labels.retain(|(n, _)| n != "container_id");
        labels
    }

    fn of_pod(&self, uid: &str, pod_labels: &[String]) -> Vec<(String, String)> {
        if !pod_labels.is_empty() {
            self.containers.want_pod_labels();
        }
        let uid_dashed = uid.replace('_', "-");
        let Some(found) = self.containers.all().into_iter().find(|c| {
            c.pod
                .as_ref()
                .is_some_and(|p| p.uid == uid || p.uid == uid_dashed)
        }) else {
            return Vec::new();
        };
        let r = ContainerRef {
            id: found.id.clone(),
            runtime: container_info::cgroup::Runtime::Unknown,
            pod_uid: Some(uid.to_string()),
            cgroup_path: String::new(),
        };
        let mut labels = info::series_labels(&r, Some(&found), pod_labels);
        labels.retain(|(n, _)| {
            !matches!(
                n.as_str(),
                "container_id" | "container_name" | "container_image" | "pod_id"
            )
        });
        labels
    }
}

impl ContainerDirectory for ContainerLabeler {
    fn of_pid(&self, pid: u32) -> Option<Arc<ContainerRef>> {
        self.containers.of_pid(pid)
    }

    fn info(&self, id: &str) -> Option<Arc<ContainerInfo>> {
        self.containers.info(id)
    }

    fn generation(&self) -> u64 {
        self.containers.generation()
    }

    fn note_fork(&self, parent: u32, child: u32) {
        self.containers.note_fork(parent, child);
    }

    fn note_exec(&self, pid: u32) {
        self.containers.note_exec(pid);
    }

    fn want_pod_labels(&self) {
        self.containers.want_pod_labels();
    }
}
