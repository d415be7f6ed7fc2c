//! Container and pod identity of host processes, shared by the daemon and the probes.
//!
//! * [`host`] — the host root prefix (`global.host_root`, upstream's `GOPHER_HOST_PATH`) that
//!   every read of a host file (`/proc`, `/sys`, `/etc/machine-id`, runtime sockets) goes through.
//! * [`cgroup`] — `/proc/<pid>/cgroup` text → container id, runtime and pod uid (cgroup v1,
//!   hybrid and v2; docker, containerd/cri-containerd, CRI-O, podman/libpod, isulad, systemd
//!   `*.scope` names, kubepods slices of both cgroup drivers). No runtime is asked: probes use
//!   it alone.
//! * [`info`] — what is known of a container ([`info::ContainerInfo`], [`info::PodInfo`]) and the
//!   label set it gives a series ([`info::series_labels`]: `container_id, container_name,
//!   container_image, pod_id, pod, pod_namespace` and requested pod labels; unknown values are
//!   omitted, a host process gets none).
//! * feature `runtime`: [`docker`] (Docker Engine API over a unix socket: docker, podman's
//!   service), [`cri`] (CRI `RuntimeService` over gRPC: containerd, CRI-O, isulad) and
//!   [`resolver`] (the shared bounded cache [`resolver::Containers`] and the task that fills it).
//!
//! # What the resolver caches
//! * pid → [`cgroup::ContainerRef`] (or "host process"), trusted for `pid_ttl`, at most
//!   `max_pids` entries (expired entries go first, then a quarter of the map when still full);
//! * container id → [`info::ContainerInfo`] with its pod, at most `max_containers`; filled by a
//!   full list every `resync`, by docker/podman `start` events within milliseconds, and by
//!   queued misses; removed on `destroy` events and when a resync list no longer has it;
//! * CRI sandbox id → pod (name, uid, namespace, labels), from `ListPodSandbox`/`PodSandboxStatus`.
//!
//! # Bounds
//! Runtime requests: one time limit (`timeout`) for connect + answer; Docker bodies 8 MiB
//! (list) / 1 MiB (inspect), event lines 64 KiB; CRI messages 16 MiB (lists) / 1 MiB (status);
//! at most 65536 list entries, 128 labels per container or pod (names ≤ 256 B, values ≤ 4 KiB);
//! label values on series ≤ 256 B without control characters. The miss queue holds 1024 ids
//! (4 lookups in flight); ids no runtime knows are not asked again before the next resync, ids
//! whose lookup failed not before 1 s. A cgroup file is read up to 256 KiB, 64 lines, 4 KiB each.
//!
//! # Failure behaviour
//! The sync API ([`resolver::Containers::of_pid`], `info`, `labels_of_pid`, …) never waits for a
//! runtime: a miss answers `None` at once and queues the id. A runtime that is absent, hangs or
//! answers garbage only costs the resolver task its time limit per request; the error is counted
//! by kind (timeout, connect, protocol) and shown with the socket's state and last error in
//! [`resolver::Containers::status`]. Absent sockets are re-checked every resync period, event
//! streams are re-subscribed with backoff (50 ms → 5 s), so labels fill in when the runtime
//! comes back; [`resolver::Containers::generation`] changes whenever the cache does.

pub mod cgroup;
pub mod host;
pub mod info;

#[cfg(feature = "runtime")]
pub mod cri;
#[cfg(feature = "runtime")]
pub mod docker;
#[cfg(feature = "runtime")]
pub mod error;
#[cfg(feature = "runtime")]
pub mod resolver;

#[cfg(feature = "podman")]
pub mod podman;
