//! What is known of a container and its pod, and the labels that gives a series.

use std::collections::BTreeMap;

/// Label names added to a process's series, in this order (upstream HEAD's names).
pub const LABEL_NAMES: [&str; 6] = [
    "container_id",
    "container_name",
    "container_image",
    "pod_id",
    "pod",
    "pod_namespace",
];

/// Characters of a container id used in labels (upstream's 12-char short id).
pub const SHORT_ID_LEN: usize = 12;

/// A pod, from the runtime's `io.kubernetes.pod.*` labels (or CRI's `PodSandboxStatus`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// Pod uid.
    pub uid: String,
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// The pod's Kubernetes labels (bounded by the resolver).
    pub labels: BTreeMap<String, String>,
}

/// A container as its runtime describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Full id.
    pub id: String,
    /// Name without docker's leading `/`.
    pub name: String,
    /// Image reference as the runtime reports it (e.g. `localhost/busy:1`).
    pub image: String,
    /// The container's labels (bounded by the resolver).
    pub labels: BTreeMap<String, String>,
    /// Its pod, when it runs in one.
    pub pod: Option<PodInfo>,
}
