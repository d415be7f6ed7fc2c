//! The label set a process's series gets from its container and pod.

use container_info::cgroup::{ContainerRef, Runtime};
use container_info::info::{self, series_labels, ContainerInfo, PodInfo, LABEL_NAMES};
use std::collections::BTreeMap;

const ID: &str = "3f1c2b7d9e8a4c6b5d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e";
const UID: &str = "0b6f1b0e-2a3c-4d5e-8f90-123456789abc";

fn cref(pod_uid: Option<&str>) -> ContainerRef {
    ContainerRef {
        id: ID.to_string(),
        runtime: Runtime::Containerd,
        pod_uid: pod_uid.map(str::to_string),
        cgroup_path: format!("/kubepods/pod{UID}/{ID}"),
    }
}

fn pod() -> PodInfo {
    PodInfo {
        uid: UID.to_string(),
        name: "web-7d9f".to_string(),
        namespace: "shop".to_string(),
        labels: BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), "web".to_string()),
            ("tier".to_string(), "front".to_string()),
            ("9lives".to_string(), "cat".to_string()),
            ("pod".to_string(), "clash".to_string()),
            ("evil".to_string(), "a\nb".to_string()),
        ]),
    }
}

fn info_with(pod: Option<PodInfo>) -> ContainerInfo {
    ContainerInfo {
        id: ID.to_string(),
        name: "nginx".to_string(),
        image: "docker.io/library/nginx:1.25".to_string(),
        labels: BTreeMap::new(),
        pod,
    }
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn a_pod_container_gets_every_label_in_order() {
    let want_labels: Vec<String> = ["tier", "app.kubernetes.io/name", "9lives", "missing"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let got = series_labels(
        &cref(Some(UID)),
        Some(&info_with(Some(pod()))),
        &want_labels,
    );
    assert_eq!(
        got,
        pairs(&[
            ("container_id", "3f1c2b7d9e8a"),
            ("container_name", "nginx"),
            ("container_image", "docker.io/library/nginx:1.25"),
            ("pod_id", UID),
            ("pod", "shop/web-7d9f"),
            ("pod_namespace", "shop"),
            ("tier", "front"),
            ("app_kubernetes_io_name", "web"),
            ("_9lives", "cat"),
        ])
    );
    let names: Vec<&str> = got.iter().take(6).map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, LABEL_NAMES);
}

#[test]
fn unknown_values_are_omitted_never_not_found() {
    // No runtime info yet: the id, and the pod uid the cgroup path gave.
    let got = series_labels(&cref(Some(UID)), None, &["tier".to_string()]);
    assert_eq!(
        got,
        pairs(&[("container_id", "3f1c2b7d9e8a"), ("pod_id", UID)])
    );
    // A plain container (no pod): no pod labels at all.
    let got = series_labels(&cref(None), Some(&info_with(None)), &["tier".to_string()]);
    assert_eq!(
        got,
        pairs(&[
            ("container_id", "3f1c2b7d9e8a"),
            ("container_name", "nginx"),
            ("container_image", "docker.io/library/nginx:1.25"),
        ])
    );
    // Empty name and image, a pod without namespace: omitted, `pod` needs both parts.
    let mut i = info_with(Some(PodInfo {
        namespace: String::new(),
        ..pod()
    }));
    i.name.clear();
    i.image.clear();
    let got = series_labels(&cref(None), Some(&i), &[]);
    assert_eq!(
        got,
        pairs(&[("container_id", "3f1c2b7d9e8a"), ("pod_id", UID)])
    );
    assert!(got.iter().all(|(_, v)| v != "not found" && !v.is_empty()));
}

#[test]
fn control_characters_clashes_and_long_values() {
    let mut i = info_with(Some(pod()));
    i.name = "bad\u{1b}[31mname".to_string();
    i.image = "x".repeat(1000);
    let wanted: Vec<String> = ["evil", "pod", "tier", "tier"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let got = series_labels(&cref(None), Some(&i), &wanted);
    assert!(!got.iter().any(|(n, _)| n == "container_name"), "{got:?}");
    assert!(!got.iter().any(|(n, _)| n == "evil"), "{got:?}");
    let image = &got.iter().find(|(n, _)| n == "container_image").unwrap().1;
    assert_eq!(image.len(), info::MAX_LABEL_VALUE_LEN);
    // `pod` keeps its own value; `tier` appears once.
    assert_eq!(got.iter().filter(|(n, _)| n == "pod").count(), 1);
    assert_eq!(got.iter().filter(|(n, _)| n == "tier").count(), 1);
    // A cut never splits a character.
    let v = info::label_value(&"é".repeat(200)).unwrap();
    assert!(v.len() <= info::MAX_LABEL_VALUE_LEN && v.chars().all(|c| c == 'é'));
}

#[test]
fn label_names_are_sanitized() {
    assert_eq!(
        info::sanitize_label_name("a.b/c-d"),
        Some("a_b_c_d".to_string())
    );
    assert_eq!(info::sanitize_label_name("1x"), Some("_1x".to_string()));
    assert_eq!(
        info::sanitize_label_name("héllo"),
        Some("h_llo".to_string())
    );
    assert_eq!(info::sanitize_label_name(""), None);
}
