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

/// Longest label value kept, in bytes (cut at a character boundary).
pub const MAX_LABEL_VALUE_LEN: usize = 256;

/// A label value as it may go on a series: `None` when empty or when it holds a control
/// character (a runtime's answer is not trusted to be printable); cut to
/// [`MAX_LABEL_VALUE_LEN`] bytes.
pub fn label_value(v: &str) -> Option<String> {
    if v.is_empty() || v.chars().any(char::is_control) {
        return None;
    }
    let mut end = v.len().min(MAX_LABEL_VALUE_LEN);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    Some(v[..end].to_string())
}

/// A pod label name as a Prometheus label name: every character outside `[a-zA-Z0-9_]`
/// becomes `_`, and a leading digit gets a `_` in front (`app.kubernetes.io/name` →
/// `app_kubernetes_io_name`, `9lives` → `_9lives`). `None` for an empty name.
pub fn sanitize_label_name(name: &str) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(name.len() + 1);
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    out.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    Some(out)
}

/// The labels a process's series gets for the container `r` it runs in, in
/// [`LABEL_NAMES`] order, then the requested `pod_labels`:
///
/// * `container_id` — the first [`SHORT_ID_LEN`] characters of the id (always known);
/// * `container_name`, `container_image` — from `info`;
/// * `pod_id` — the pod uid (from `info`, else from the cgroup path);
/// * `pod` — `<namespace>/<name>` (upstream's form), only when both are known;
/// * `pod_namespace`;
/// * each name in `pod_labels` that the pod has, under its [`sanitize_label_name`] form
///   (duplicates and names clashing with a label already given are skipped).
///
/// A label whose value is unknown or empty is omitted (never upstream's `not found`); values
/// go through [`label_value`]. A host process has no [`crate::cgroup::ContainerRef`] and gets
/// no labels at all.
pub fn series_labels(
    r: &crate::cgroup::ContainerRef,
    info: Option<&ContainerInfo>,
    pod_labels: &[String],
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(LABEL_NAMES.len() + pod_labels.len());
    let push = |out: &mut Vec<(String, String)>, name: &str, value: &str| {
        if let Some(v) = label_value(value) {
            out.push((name.to_string(), v));
        }
    };
    let short = r.id.get(..SHORT_ID_LEN).unwrap_or(&r.id);
    push(&mut out, "container_id", short);
    let pod = info.and_then(|i| i.pod.as_ref());
    if let Some(i) = info {
        push(&mut out, "container_name", &i.name);
        push(&mut out, "container_image", &i.image);
    }
    let uid = pod
        .map(|p| p.uid.as_str())
        .filter(|u| !u.is_empty())
        .or(r.pod_uid.as_deref())
        .unwrap_or("");
    push(&mut out, "pod_id", uid);
    if let Some(p) = pod {
        if !p.name.is_empty() && !p.namespace.is_empty() {
            push(&mut out, "pod", &format!("{}/{}", p.namespace, p.name));
        }
        push(&mut out, "pod_namespace", &p.namespace);
        for wanted in pod_labels {
            let (Some(name), Some(value)) = (sanitize_label_name(wanted), p.labels.get(wanted))
            else {
                continue;
            };
            if LABEL_NAMES.contains(&name.as_str()) || out.iter().any(|(n, _)| *n == name) {
                continue;
            }
            push(&mut out, &name, value);
        }
    }
    out
}

/// Most labels kept of one container or pod (the first ones in name order).
pub const MAX_LABELS: usize = 128;
/// Longest label name kept from a runtime (longer ones are skipped).
pub const MAX_LABEL_NAME_LEN: usize = 256;
/// Longest label value kept from a runtime (longer ones are skipped).
pub const MAX_STORED_VALUE_LEN: usize = 4096;

/// A runtime's label map, bounded: at most [`MAX_LABELS`] entries (in name order), names up
/// to [`MAX_LABEL_NAME_LEN`] and values up to [`MAX_STORED_VALUE_LEN`] bytes.
pub fn bounded_labels<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> BTreeMap<String, String> {
    let mut all: Vec<(&String, &String)> = labels
        .into_iter()
        .filter(|(k, v)| k.len() <= MAX_LABEL_NAME_LEN && v.len() <= MAX_STORED_VALUE_LEN)
        .collect();
    all.sort_unstable();
    all.into_iter()
        .take(MAX_LABELS)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Kubernetes' container label: the pod's name.
pub const K8S_POD_NAME: &str = "io.kubernetes.pod.name";
/// Kubernetes' container label: the pod's namespace.
pub const K8S_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// Kubernetes' container label: the pod's uid.
pub const K8S_POD_UID: &str = "io.kubernetes.pod.uid";
/// Kubernetes' container label: the container's name in the pod spec.
pub const K8S_CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// The pod a container's `io.kubernetes.pod.*` labels name (`None` without a pod name or
/// uid); its own labels are left empty.
pub fn pod_from_container_labels(labels: &BTreeMap<String, String>) -> Option<PodInfo> {
    let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
    let pod = PodInfo {
        uid: get(K8S_POD_UID),
        name: get(K8S_POD_NAME),
        namespace: get(K8S_POD_NAMESPACE),
        labels: BTreeMap::new(),
    };
    (!pod.name.is_empty() || !pod.uid.is_empty()).then_some(pod)
}
