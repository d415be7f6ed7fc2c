//! What the container-info benches share: realistic containers and pods (Kubernetes and
//! compose-style labels), cgroup files for fake host roots, CPU clocks and percentiles.
#![allow(dead_code)]

#[path = "../../tests/common/fake_cri.rs"]
pub mod fake_cri;
#[path = "../../tests/common/fake_docker.rs"]
pub mod fake_docker;

use container_info::cri::{proto, CONTAINER_RUNNING, SANDBOX_READY};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Whether `cargo bench` started this binary (it passes `--bench`); `cargo test --benches`
/// or `--all-targets` runs bench binaries without it, and then they should only say so.
pub fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Exit unless started by `cargo bench` (see [`bench_mode`]).
pub fn exit_unless_bench(name: &str) {
    if !bench_mode() {
        println!(
            "{name}: a measurement; run it with `cargo bench -p container-info --bench {name}`"
        );
        std::process::exit(0);
    }
}

/// CPU time of the calling thread (user + system).
pub fn thread_cpu() -> Duration {
    clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time of the whole process (user + system, all threads).
pub fn process_cpu() -> Duration {
    clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime({id})");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The `q` quantile (nearest rank) of `v` (sorted in place); zero when empty.
pub fn percentile(v: &mut [Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// `p50 … p99 … max … (n)` of `v`.
pub fn summary(v: &mut [Duration]) -> String {
    format!(
        "p50 {:.1?}  p99 {:.1?}  max {:.1?}  (n = {})",
        percentile(v, 0.5),
        percentile(v, 0.99),
        v.iter().max().copied().unwrap_or_default(),
        v.len()
    )
}

/// `/proc/loadavg`, trimmed.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unreadable: {e}"))
}

fn mix(mut x: u64) -> u64 {
    // splitmix64: ids that look random but are the same every run.
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn hex64(seed: u64) -> String {
    (0..4)
        .map(|i| format!("{:016x}", mix(seed * 4 + i)))
        .collect()
}

/// Container `n`'s id (64 hex characters).
pub fn container_id(n: usize) -> String {
    hex64(n as u64)
}

/// Pod `p`'s sandbox id (64 hex characters).
pub fn sandbox_id(p: usize) -> String {
    hex64(0x5a5a_0000_0000 + p as u64)
}

/// Pod `p`'s uid (a UUID).
pub fn pod_uid(p: usize) -> String {
    let h = mix(0x0d0d_0000_0000 + p as u64);
    let l = mix(0x0e0e_0000_0000 + p as u64);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        l >> 52,
        l & 0xffff_ffff_ffff
    )
}

const NAMESPACES: [&str; 5] = ["shop", "payments", "monitoring", "default", "kube-system"];
const APPS: [&str; 8] = [
    "checkout",
    "cart",
    "catalog",
    "frontend",
    "recommendation",
    "shipping",
    "prometheus-node-exporter",
    "coredns",
];
const IMAGES: [&str; 4] = [
    "registry.example.com/shop/checkout:v2.14.3",
    "docker.io/library/nginx:1.25.4",
    "quay.io/prometheus/node-exporter:v1.7.0",
    "registry.k8s.io/coredns/coredns:v1.11.1",
];

/// Pod `p`: `<app>-<replicaset hash>-<suffix>` in one of five namespaces.
pub fn pod_name(p: usize) -> (String, &'static str) {
    let app = APPS[p % APPS.len()];
    let h = mix(0x7777_0000 + p as u64);
    (
        format!("{app}-{:010x}-{:05x}", h >> 24, h & 0xfffff),
        NAMESPACES[p % NAMESPACES.len()],
    )
}

/// Pod `p`'s five labels (what a Deployment's pod template typically sets).
pub fn pod_labels(p: usize) -> HashMap<String, String> {
    let app = APPS[p % APPS.len()];
    let h = mix(0x7777_0000 + p as u64);
    HashMap::from([
        ("app".to_string(), app.to_string()),
        ("app.kubernetes.io/name".to_string(), app.to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            format!("{app}-prod"),
        ),
        (
            "app.kubernetes.io/version".to_string(),
            "2.14.3".to_string(),
        ),
        ("pod-template-hash".to_string(), format!("{:010x}", h >> 24)),
    ])
}

/// Pod `p`'s sandbox as `ListPodSandbox` gives it (ready, five labels).
pub fn cri_sandbox(p: usize) -> proto::PodSandbox {
    let (name, namespace) = pod_name(p);
    proto::PodSandbox {
        id: sandbox_id(p),
        metadata: Some(proto::PodSandboxMetadata {
            name,
            uid: pod_uid(p),
            namespace: namespace.to_string(),
            attempt: 0,
        }),
        state: SANDBOX_READY,
        created_at: 1_700_000_000_000_000_000,
        labels: pod_labels(p),
        annotations: HashMap::from([(
            "kubernetes.io/config.source".to_string(),
            "api".to_string(),
        )]),
    }
}

/// Container `n` of pod `p` as `ListContainers` gives it: running, ten labels (kubelet's four
/// `io.kubernetes.*` ones and six image labels), the image name in containerd's annotation.
pub fn cri_container(n: usize, p: usize) -> proto::Container {
    let (pod, namespace) = pod_name(p);
    let name = APPS[p % APPS.len()].to_string();
    let image = IMAGES[p % IMAGES.len()];
    let labels = HashMap::from([
        ("io.kubernetes.container.name".to_string(), name.clone()),
        ("io.kubernetes.pod.name".to_string(), pod),
        (
            "io.kubernetes.pod.namespace".to_string(),
            namespace.to_string(),
        ),
        ("io.kubernetes.pod.uid".to_string(), pod_uid(p)),
        (
            "org.opencontainers.image.created".to_string(),
            "2024-03-14T09:26:53Z".to_string(),
        ),
        (
            "org.opencontainers.image.revision".to_string(),
            container_id(n)[..40].to_string(),
        ),
        (
            "org.opencontainers.image.source".to_string(),
            "https://github.com/example/shop".to_string(),
        ),
        ("org.opencontainers.image.title".to_string(), name.clone()),
        (
            "org.opencontainers.image.vendor".to_string(),
            "Example Corp".to_string(),
        ),
        (
            "org.opencontainers.image.version".to_string(),
            "2.14.3".to_string(),
        ),
    ]);
    proto::Container {
        id: container_id(n),
        pod_sandbox_id: sandbox_id(p),
        metadata: Some(proto::ContainerMetadata { name, attempt: 0 }),
        image: Some(proto::ImageSpec {
            image: format!("sha256:{}", hex64(0x1111 + (p % IMAGES.len()) as u64)),
        }),
        image_ref: format!(
            "{image}@sha256:{}",
            hex64(0x2222 + (p % IMAGES.len()) as u64)
        ),
        state: CONTAINER_RUNNING,
        created_at: 1_700_000_000_000_000_000,
        labels,
        annotations: HashMap::from([
            (
                container_info::cri::IMAGE_NAME_ANNOTATION.to_string(),
                image.to_string(),
            ),
            (
                "io.kubernetes.container.terminationMessagePath".to_string(),
                "/dev/termination-log".to_string(),
            ),
        ]),
    }
}

/// A docker/podman container of a compose project: ten labels.
pub fn docker_container(n: usize, pid: u32) -> fake_docker::Container {
    let service = APPS[n % APPS.len()];
    let labels: BTreeMap<String, String> = [
        ("com.docker.compose.project", "shop".to_string()),
        ("com.docker.compose.service", service.to_string()),
        ("com.docker.compose.container-number", format!("{}", n + 1)),
        ("com.docker.compose.oneoff", "False".to_string()),
        ("com.docker.compose.version", "2.24.6".to_string()),
        (
            "com.docker.compose.config-hash",
            container_id(n + 1_000_000),
        ),
        (
            "com.docker.compose.project.working_dir",
            "/srv/compose/shop".to_string(),
        ),
        (
            "com.docker.compose.project.config_files",
            "/srv/compose/shop/compose.yaml".to_string(),
        ),
        ("org.opencontainers.image.version", "2.14.3".to_string()),
        (
            "org.opencontainers.image.source",
            "https://github.com/example/shop".to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    fake_docker::Container {
        id: container_id(n),
        name: format!("shop-{service}-{}", n + 1),
        image: IMAGES[n % IMAGES.len()].to_string(),
        labels,
        pid,
    }
}

/// `/proc/<pid>/cgroup` of a process in container `id` of pod `uid` (containerd, systemd
/// cgroup driver, hybrid cgroups as on this machine).
pub fn k8s_cgroup(uid: &str, id: &str) -> String {
    let path = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{id}.scope",
        uid.replace('-', "_")
    );
    format!(
        "9:pids:{path}\n5:memory:{path}\n3:cpu,cpuacct:{path}\n1:name=systemd:{path}\n0::{path}\n"
    )
}

/// `/proc/<pid>/cgroup` of a process in docker container `id` (cgroupfs driver, hybrid).
pub fn docker_cgroup(id: &str) -> String {
    let path = format!("/docker/{id}");
    format!(
        "9:pids:{path}\n5:memory:{path}\n3:cpu,cpuacct:{path}\n1:name=systemd:{path}\n0::{path}\n"
    )
}

/// Write `text` as `/proc/<pid>/cgroup` under the fake host root `root`.
pub fn write_cgroup(root: &std::path::Path, pid: u32, text: &str) {
    let dir = root.join(format!("proc/{pid}"));
    std::fs::create_dir_all(&dir).expect("create the fake /proc/<pid>");
    std::fs::write(dir.join("cgroup"), text).expect("write the fake /proc/<pid>/cgroup");
}
