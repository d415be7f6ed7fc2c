//! The CRI client and the resolver against a CRI server in the test that really speaks gRPC:
//! tonic's server side (`tonic::server::Grpc` with the same hand-written prost messages),
//! served by hyper's HTTP/2 over a unix socket, with fixed data.

use container_info::cgroup::{ContainerRef, Runtime};
use container_info::cri::{proto, CriClient, CONTAINER_RUNNING};
use container_info::error::ErrorKind;
use container_info::info::series_labels;
use container_info::resolver::{Config, Containers};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

mod common;
use common::fake_cri::{serve, Data, Shared};
use std::time::{Duration, Instant};

const SANDBOX: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
const NGINX: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const EXITED: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const HIDDEN: &str = "3333333333333333333333333333333333333333333333333333333333333333";
const BIG: &str = "4444444444444444444444444444444444444444444444444444444444444444";
const POD_UID: &str = "0b6f1b0e-2a3c-4d5e-8f90-123456789abc";

fn map(kv: &[(&str, &str)]) -> HashMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn k8s_labels(container: &str) -> HashMap<String, String> {
    map(&[
        ("io.kubernetes.pod.name", "web-1"),
        ("io.kubernetes.pod.namespace", "shop"),
        ("io.kubernetes.pod.uid", POD_UID),
        ("io.kubernetes.container.name", container),
    ])
}

fn container(id: &str, name: &str, state: i32) -> proto::Container {
    proto::Container {
        id: id.to_string(),
        pod_sandbox_id: SANDBOX.to_string(),
        metadata: Some(proto::ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        }),
        image: Some(proto::ImageSpec {
            image: "sha256:9e3f".to_string(),
        }),
        image_ref: "docker.io/library/nginx@sha256:9e3f".to_string(),
        state,
        created_at: 1,
        labels: k8s_labels(name),
        annotations: map(&[(
            "io.kubernetes.cri.image-name",
            "docker.io/library/nginx:1.25",
        )]),
    }
}

fn fixed_data() -> Data {
    let mut big = container(BIG, "big", CONTAINER_RUNNING);
    big.labels.insert("huge".to_string(), "x".repeat(2 << 20));
    let mut sandbox_labels = map(&[
        ("app.kubernetes.io/name", "web"),
        ("tier", "front"),
        ("io.kubernetes.pod.name", "web-1"),
    ]);
    sandbox_labels.insert("io.kubernetes.pod.uid".to_string(), POD_UID.to_string());
    Data {
        containers: vec![
            container(NGINX, "nginx", CONTAINER_RUNNING),
            container(EXITED, "init", 2),
        ],
        hidden: vec![container(HIDDEN, "sidecar", CONTAINER_RUNNING), big],
        sandboxes: vec![proto::PodSandbox {
            id: SANDBOX.to_string(),
            metadata: Some(proto::PodSandboxMetadata {
                name: "web-1".to_string(),
                uid: POD_UID.to_string(),
                namespace: "shop".to_string(),
                attempt: 0,
            }),
            state: 0,
            created_at: 1,
            labels: sandbox_labels,
            annotations: HashMap::new(),
        }],
        calls: HashMap::new(),
    }
}

fn setup() -> (tempfile::TempDir, PathBuf, Shared) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("cri.sock");
    (dir, sock, Arc::new(Mutex::new(fixed_data())))
}

#[tokio::test]
async fn the_client_speaks_the_cri_messages() {
    let (_dir, sock, data) = setup();
    serve(&sock, data.clone());
    let c = CriClient::connect(&sock, Duration::from_secs(2))
        .await
        .unwrap();

    let s = c.container_status(NGINX).await.unwrap().expect("known");
    assert_eq!(s.id, NGINX);
    assert_eq!(s.name, "nginx");
    // The image name annotation wins over a bare sha256 id.
    assert_eq!(s.image, "docker.io/library/nginx:1.25");
    assert_eq!(s.state, CONTAINER_RUNNING);
    assert_eq!(
        s.labels.get("io.kubernetes.pod.uid").map(String::as_str),
        Some(POD_UID)
    );
    assert_eq!(c.container_status(&"9".repeat(64)).await.unwrap(), None);

    let p = c.pod_sandbox_status(SANDBOX).await.unwrap().expect("known");
    assert_eq!(
        (
            p.pod.name.as_str(),
            p.pod.namespace.as_str(),
            p.pod.uid.as_str()
        ),
        ("web-1", "shop", POD_UID)
    );
    assert_eq!(p.pod.labels.get("tier").map(String::as_str), Some("front"));
    assert_eq!(c.pod_sandbox_status(NGINX).await.unwrap(), None);

    let all = c.list_containers(None).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|x| x.pod_sandbox_id == SANDBOX));
    let running = c.list_running().await.unwrap();
    assert_eq!(
        running.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(),
        [NGINX]
    );
    let pods = c.list_pod_sandbox(None).await.unwrap();
    assert_eq!(pods.len(), 1);
    assert_eq!(
        pods[0]
            .pod
            .labels
            .get("app.kubernetes.io/name")
            .map(String::as_str),
        Some("web")
    );
    assert_eq!(
        c.sandbox_of(HIDDEN).await.unwrap().as_deref(),
        Some(SANDBOX)
    );

    // An answer over the message size limit is refused, not read.
    let e = c.container_status(BIG).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
    println!("oversized answer: {e}");
    // The client still works afterwards.
    assert!(c.container_status(NGINX).await.unwrap().is_some());
}

#[tokio::test]
async fn a_hung_or_absent_cri_socket_fails_within_the_time_limit() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("hung.sock");
    let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let held = std::thread::spawn(move || {
        let mut v = Vec::new();
        for s in l.incoming().take(2) {
            v.push(s);
        }
        std::thread::sleep(Duration::from_secs(3));
    });
    let t = Instant::now();
    let r = match CriClient::connect(&sock, Duration::from_millis(300)).await {
        Ok(c) => c.list_running().await.map(drop),
        Err(e) => Err(e),
    };
    let e = r.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let e = CriClient::connect(&dir.path().join("absent.sock"), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connect, "{e}");
    drop(held);
}

#[test]
fn the_resolver_fills_cri_containers_with_pods_and_evicts_gone_ones() {
    let (_dir, sock, data) = setup();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    {
        let _g = rt.enter();
        serve(&sock, data.clone());
    }
    let c = Containers::new(Config {
        docker_sockets: vec![],
        cri_sockets: vec![sock.clone()],
        timeout: Duration::from_secs(2),
        resync: Duration::from_millis(300),
        max_containers: 100,
        pid_ttl: Duration::from_secs(10),
        max_pids: 100,
    });
    let _task = {
        let _g = rt.enter();
        c.start()
    };
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let t = Instant::now();
        while !f() {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "{what}: {}",
                c.status()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    // The resync lists the running container and the sandbox (its pause process).
    wait("nginx listed", &|| c.cached(NGINX).is_some());
    let pause = c.cached(SANDBOX).expect("sandbox cached");
    assert_eq!(pause.name, "POD");
    assert!(
        c.cached(EXITED).is_none(),
        "exited containers are not cached"
    );
    let nginx = c.cached(NGINX).unwrap();
    let r = ContainerRef {
        id: NGINX.to_string(),
        runtime: Runtime::Containerd,
        pod_uid: Some(POD_UID.to_string()),
        cgroup_path: String::new(),
    };
    let want_labels = ["app.kubernetes.io/name", "tier", "absent"].map(String::from);
    let labels = series_labels(&r, Some(&nginx), &want_labels);
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        labels,
        pairs(&[
            ("container_id", "111111111111"),
            ("container_name", "nginx"),
            ("container_image", "docker.io/library/nginx:1.25"),
            ("pod_id", POD_UID),
            ("pod", "shop/web-1"),
            ("pod_namespace", "shop"),
            ("app_kubernetes_io_name", "web"),
            ("tier", "front"),
        ])
    );

    // Not listed yet: a miss queues it and ContainerStatus (+ its sandbox) resolves it.
    let hidden = ContainerRef {
        id: HIDDEN.to_string(),
        ..r.clone()
    };
    let t = Instant::now();
    assert!(c.info_of(&hidden).is_none());
    eprintln!(
        "after miss: {:?} {:?}",
        t.elapsed(),
        c.cached(HIDDEN).is_some()
    );
    wait("hidden resolved", &|| c.info_of(&hidden).is_some());
    println!("queued lookup answered in {:?}", t.elapsed());
    let h = c.info_of(&hidden).unwrap();
    assert_eq!(h.name, "sidecar");
    assert_eq!(
        h.pod
            .as_ref()
            .unwrap()
            .labels
            .get("tier")
            .map(String::as_str),
        Some("front")
    );
    assert!(
        data.lock()
            .unwrap()
            .calls
            .get("ContainerStatus")
            .copied()
            .unwrap_or(0)
            == 0,
        "a queued lookup is one filtered ListContainers (+ PodSandboxStatus for a new pod)"
    );
    // A container of a pod not cached yet: its pod is asked for (PodSandboxStatus) only once
    // pod labels are wanted; before that the pod comes from the container's own labels.
    let sandbox_calls = || {
        data.lock()
            .unwrap()
            .calls
            .get("PodSandboxStatus")
            .copied()
            .unwrap_or(0)
    };
    let in_new_pod = |id: &str| {
        let mut x = container(id, "late", CONTAINER_RUNNING);
        x.pod_sandbox_id = "9".repeat(64);
        data.lock().unwrap().hidden.push(x);
        ContainerRef {
            id: id.to_string(),
            ..r.clone()
        }
    };
    let before = sandbox_calls();
    let first = in_new_pod(&"4".repeat(64));
    assert!(c.info_of(&first).is_none());
    wait("first new-pod container", &|| c.info_of(&first).is_some());
    assert_eq!(
        sandbox_calls(),
        before,
        "no PodSandboxStatus while pod labels are unused"
    );
    c.want_pod_labels();
    let second = in_new_pod(&"5".repeat(64));
    assert!(c.info_of(&second).is_none());
    wait("second new-pod container", &|| c.info_of(&second).is_some());
    assert_eq!(
        sandbox_calls(),
        before + 1,
        "pod labels wanted: the pod is asked for"
    );

    // An unknown id is asked once, then not again within the resync period.
    let unknown = "ab".repeat(32);
    assert!(c.info(&unknown).is_none());
    wait("not found counted", &|| c.counters().not_found >= 1);
    let asked = c.counters().queued;
    for _ in 0..100 {
        assert!(c.info(&unknown).is_none());
    }
    assert_eq!(c.counters().queued, asked);

    // Gone from the runtime: the next resync evicts it.
    let gen = c.generation();
    data.lock().unwrap().containers.retain(|x| x.id != NGINX);
    wait("nginx evicted", &|| c.cached(NGINX).is_none());
    assert!(c.generation() > gen);
    assert!(c.counters().container_evictions >= 1);
    let status = c.status();
    assert_eq!(status["sockets"][0]["kind"], "cri");
    assert_eq!(status["sockets"][0]["state"], "ok", "{status}");
}
