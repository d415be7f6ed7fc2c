//! `/proc/<pid>/cgroup` → which container (and pod) a process is in.
//!
//! (Skeleton: the parser is filled in with fixtures of every runtime's path shapes.)

/// The runtime a cgroup path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// `docker-<id>.scope`, `/docker/<id>`.
    Docker,
    /// containerd: `cri-containerd-<id>.scope`, `/kubepods/.../<id>` under containerd.
    Containerd,
    /// CRI-O: `crio-<id>.scope`, `crio-conmon-…` (conmon: not the container).
    Crio,
    /// podman / libpod: `libpod-<id>.scope`, `/libpod_parent/libpod-<id>`.
    Podman,
    /// iSulad: `/isulad/<id>`.
    Isulad,
    /// A kubepods path whose runtime the path does not say.
    Unknown,
}

/// The container (and pod) a process is in, from its cgroup file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerRef {
    /// Full container id as the path has it (64 lowercase hex digits for every runtime above).
    pub id: String,
    /// The runtime the path names.
    pub runtime: Runtime,
    /// Pod uid from a `kubepods` path (36-char UUID with hyphens; the systemd driver's
    /// underscores turned back into hyphens), if any.
    pub pod_uid: Option<String>,
    /// The container's cgroup path in the v2 (unified) hierarchy, or the v1 `memory` (else
    /// `cpu`) hierarchy's path on v1/hybrid hosts, relative to the hierarchy's mount.
    pub cgroup_path: String,
}

/// Parse the text of `/proc/<pid>/cgroup`; `None` for a host process (no container id in any
/// line). Bounded: only the first 64 lines and 4 KiB per line are looked at.
pub fn parse(text: &str) -> Option<ContainerRef> {
    let _ = text;
    None
}
