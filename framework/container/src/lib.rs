//! Container and pod identity of host processes, shared by the daemon and the probes.
//!
//! * [`host`] — the host root prefix (`global.host_root`, upstream's `GOPHER_HOST_PATH`) that
//!   every read of a host file (`/proc`, `/sys`, `/etc/machine-id`, runtime sockets) goes through.
//! * [`cgroup`] — `/proc/<pid>/cgroup` text → container id, runtime and pod uid (cgroup v1,
//!   hybrid and v2; docker, containerd/cri-containerd, CRI-O, podman/libpod, isulad, systemd
//!   `*.scope` names, kubepods slices of both cgroup drivers).
//! * [`info`] — what is known of a container ([`info::ContainerInfo`], [`info::PodInfo`]) and the
//!   label set it gives a series.
//! * feature `runtime`: [`docker`] (Docker Engine API over a unix socket: docker, podman's
//!   service), [`cri`] (CRI `RuntimeService` over gRPC: containerd, CRI-O, isulad) and
//!   [`resolver`] (the shared bounded cache [`resolver::Containers`] and the task that fills it).

pub mod cgroup;
pub mod host;
pub mod info;

#[cfg(feature = "runtime")]
pub mod cri;
#[cfg(feature = "runtime")]
pub mod docker;
#[cfg(feature = "runtime")]
pub mod resolver;

#[cfg(feature = "podman")]
pub mod podman;
