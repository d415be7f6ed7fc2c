//! The CRI client and the resolver against a real containerd (Debian's `containerd` package,
//! its built-in CRI plugin) started by the test with its own root, state and socket: a pod
//! sandbox and a container are created through CRI (host network: no CNI needed), then the
//! container's real process is looked up by pid.

use container_info::cgroup::Runtime;
use container_info::cri::CriClient;
use container_info::podman::Podman;
use container_info::resolver::{Config, Containers};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint, Uri};

const POD_UID: &str = "7c1d6a52-3b0e-4f7a-9d61-2a5e8c4b9f10";

/// The CRI messages only this test needs (creating a pod and a container).
#[allow(dead_code)]
mod create {
    use std::collections::HashMap;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamespaceOption {
        #[prost(int32, tag = "1")]
        pub network: i32,
        #[prost(int32, tag = "2")]
        pub pid: i32,
        #[prost(int32, tag = "3")]
        pub ipc: i32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LinuxSandboxSecurityContext {
        #[prost(message, optional, tag = "1")]
        pub namespace_options: Option<NamespaceOption>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LinuxPodSandboxConfig {
        #[prost(string, tag = "1")]
        pub cgroup_parent: String,
        #[prost(message, optional, tag = "2")]
        pub security_context: Option<LinuxSandboxSecurityContext>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxConfig {
        #[prost(message, optional, tag = "1")]
        pub metadata: Option<container_info::cri::proto::PodSandboxMetadata>,
        #[prost(string, tag = "2")]
        pub hostname: String,
        #[prost(string, tag = "3")]
        pub log_directory: String,
        #[prost(map = "string, string", tag = "6")]
        pub labels: HashMap<String, String>,
        #[prost(message, optional, tag = "8")]
        pub linux: Option<LinuxPodSandboxConfig>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RunPodSandboxRequest {
        #[prost(message, optional, tag = "1")]
        pub config: Option<PodSandboxConfig>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RunPodSandboxResponse {
        #[prost(string, tag = "1")]
        pub pod_sandbox_id: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerConfig {
        #[prost(message, optional, tag = "1")]
        pub metadata: Option<container_info::cri::proto::ContainerMetadata>,
        #[prost(message, optional, tag = "2")]
        pub image: Option<container_info::cri::proto::ImageSpec>,
        #[prost(string, repeated, tag = "3")]
        pub command: Vec<String>,
        #[prost(string, repeated, tag = "4")]
        pub args: Vec<String>,
        #[prost(map = "string, string", tag = "9")]
        pub labels: HashMap<String, String>,
        #[prost(string, tag = "11")]
        pub log_path: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CreateContainerRequest {
        #[prost(string, tag = "1")]
        pub pod_sandbox_id: String,
        #[prost(message, optional, tag = "2")]
        pub config: Option<ContainerConfig>,
        #[prost(message, optional, tag = "3")]
        pub sandbox_config: Option<PodSandboxConfig>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CreateContainerResponse {
        #[prost(string, tag = "1")]
        pub container_id: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerIdRequest {
        #[prost(string, tag = "1")]
        pub container_id: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SandboxIdRequest {
        #[prost(string, tag = "1")]
        pub pod_sandbox_id: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Empty {}
}

async fn call<Req, Resp>(ch: &Channel, method: &'static str, req: Req) -> Resp
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut g = tonic::client::Grpc::new(ch.clone());
    g.ready().await.unwrap();
    g.unary(
        tonic::Request::new(req),
        PathAndQuery::from_static(method),
        tonic_prost::ProstCodec::<Req, Resp>::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{method}: {e}"))
    .into_inner()
}

struct Containerd {
    child: Child,
    sock: std::path::PathBuf,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Whatever a failed test left running: kill its tasks before containerd goes.
        let ctr = |args: &[&str]| {
            Command::new("ctr")
                .arg("--address")
                .arg(&self.sock)
                .args(["-n", "k8s.io"])
                .args(args)
                .stderr(Stdio::null())
                .output()
        };
        if let Ok(out) = ctr(&["tasks", "ls", "-q"]) {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
                let _ = ctr(&["tasks", "delete", "-f", id]);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_containerd(dir: &Path) -> Containerd {
    let bin = Command::new("containerd").arg("--version").output();
    assert!(
        bin.is_ok_and(|o| o.status.success()),
        "containerd is needed (apt-get install containerd)"
    );
    let d = dir.display();
    let config = format!(
        "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
         [grpc]\n  address = \"{d}/containerd.sock\"\n\
         [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n\
         [plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"localhost/pause:1\"\n  restrict_oom_score_adj = true\n\
         [plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = \"{d}/cni/bin\"\n  conf_dir = \"{d}/cni/conf\"\n"
    );
    std::fs::write(dir.join("config.toml"), config).unwrap();
    let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
    let child = Command::new("containerd")
        .arg("--config")
        .arg(dir.join("config.toml"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let c = Containerd {
        child,
        sock: dir.join("containerd.sock"),
    };
    let t = Instant::now();
    while !dir.join("containerd.sock").exists() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "containerd did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    c
}

/// Build the pause and container images with podman and import them into containerd's
/// `k8s.io` namespace.
fn import_images(dir: &Path, sock: &Path) {
    let p = Podman::new(&dir.join("podman")).unwrap();
    p.import_busybox("localhost/busy:1").unwrap();
    // The sandbox image needs a command; busybox sleeping is pause enough.
    let root = dir.join("podman/busybox-rootfs");
    let tar = dir.join("pause-rootfs.tar");
    let out = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .output()
        .unwrap();
    assert!(out.status.success());
    p.run_args(&[
        "import",
        "--change",
        "CMD [\"/bin/sleep\", \"3600\"]",
        &tar.display().to_string(),
        "localhost/pause:1",
    ])
    .unwrap();
    for (image, file) in [
        ("localhost/pause:1", "pause.tar"),
        ("localhost/busy:1", "busy.tar"),
    ] {
        let f = dir.join(file).display().to_string();
        p.run_args(&["save", "--format", "docker-archive", "-o", &f, image])
            .unwrap();
        let out = Command::new("ctr")
            .arg("--address")
            .arg(sock)
            .args(["-n", "k8s.io", "images", "import", &f])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ctr import {image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_real_containerd_pod_is_resolved_through_cri() {
    let dir = tempfile::tempdir().unwrap();
    let _ctrd = start_containerd(dir.path());
    let sock = dir.path().join("containerd.sock");
    import_images(dir.path(), &sock);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let path = sock.clone();
    let ch = rt.block_on(async {
        Endpoint::from_static("http://cri.invalid")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let p = path.clone();
                async move { tokio::net::UnixStream::connect(p).await.map(TokioIo::new) }
            }))
            .await
            .unwrap()
    });
    let client = rt
        .block_on(CriClient::connect(&sock, Duration::from_secs(5)))
        .unwrap();
    // Nothing yet: the real runtime answers the lists.
    assert!(rt
        .block_on(client.list_containers(None))
        .unwrap()
        .is_empty());
    assert!(rt
        .block_on(client.list_pod_sandbox(None))
        .unwrap()
        .is_empty());

    let sandbox_config = create::PodSandboxConfig {
        metadata: Some(container_info::cri::proto::PodSandboxMetadata {
            name: "web-1".to_string(),
            uid: POD_UID.to_string(),
            namespace: "shop".to_string(),
            attempt: 0,
        }),
        hostname: String::new(),
        log_directory: dir.path().join("logs").display().to_string(),
        labels: HashMap::from([
            ("app.kubernetes.io/name".to_string(), "web".to_string()),
            ("io.kubernetes.pod.uid".to_string(), POD_UID.to_string()),
        ]),
        linux: Some(create::LinuxPodSandboxConfig {
            cgroup_parent: format!("/kubepods/besteffort/pod{POD_UID}"),
            security_context: Some(create::LinuxSandboxSecurityContext {
                // NODE network: no CNI plugin needed.
                namespace_options: Some(create::NamespaceOption {
                    network: 2,
                    pid: 1,
                    ipc: 0,
                }),
            }),
        }),
    };
    let (sandbox, id) = rt.block_on(async {
        let r: create::RunPodSandboxResponse = call(
            &ch,
            "/runtime.v1.RuntimeService/RunPodSandbox",
            create::RunPodSandboxRequest {
                config: Some(sandbox_config.clone()),
            },
        )
        .await;
        let c: create::CreateContainerResponse = call(
            &ch,
            "/runtime.v1.RuntimeService/CreateContainer",
            create::CreateContainerRequest {
                pod_sandbox_id: r.pod_sandbox_id.clone(),
                config: Some(create::ContainerConfig {
                    metadata: Some(container_info::cri::proto::ContainerMetadata {
                        name: "sleeper".to_string(),
                        attempt: 0,
                    }),
                    image: Some(container_info::cri::proto::ImageSpec {
                        image: "localhost/busy:1".to_string(),
                    }),
                    command: vec!["/bin/sleep".to_string(), "600".to_string()],
                    args: vec![],
                    labels: HashMap::from([("role".to_string(), "test".to_string())]),
                    log_path: "sleeper.log".to_string(),
                }),
                sandbox_config: Some(sandbox_config.clone()),
            },
        )
        .await;
        let _: create::Empty = call(
            &ch,
            "/runtime.v1.RuntimeService/StartContainer",
            create::ContainerIdRequest {
                container_id: c.container_id.clone(),
            },
        )
        .await;
        (r.pod_sandbox_id, c.container_id)
    });

    // The client reads what containerd says.
    let s = rt
        .block_on(client.container_status(&id))
        .unwrap()
        .expect("known");
    assert_eq!(s.name, "sleeper");
    assert!(s.image.contains("busy"), "{s:?}");
    assert_eq!(
        s.labels.get("io.kubernetes.pod.uid").map(String::as_str),
        None,
        "containerd adds no pod labels by itself: {s:?}"
    );
    let listed = rt.block_on(client.list_running()).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    assert_eq!(listed[0].pod_sandbox_id, sandbox);
    let sb = rt
        .block_on(client.pod_sandbox_status(&sandbox))
        .unwrap()
        .expect("sandbox");
    assert_eq!(sb.pod.uid, POD_UID);
    assert_eq!(sb.pod.name, "web-1");

    // The resolver: the container's real process → its cgroup → CRI → labels.
    let c = Containers::new(Config {
        docker_sockets: vec![],
        cri_sockets: vec![sock.clone()],
        timeout: Duration::from_secs(2),
        resync: Duration::from_secs(600),
        max_containers: 100,
        pid_ttl: Duration::from_secs(10),
        max_pids: 100,
    });
    let procs = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/memory/kubepods/besteffort/pod{POD_UID}/{id}/cgroup.procs"
    ))
    .or_else(|_| {
        std::fs::read_to_string(format!(
            "/sys/fs/cgroup/kubepods/besteffort/pod{POD_UID}/{id}/cgroup.procs"
        ))
    })
    .expect("the container's cgroup");
    let pid: u32 = procs.lines().next().unwrap().parse().unwrap();
    let r = c.of_pid(pid).expect("a container process");
    assert_eq!(r.id, id);
    assert_eq!(r.runtime, Runtime::Unknown);
    assert_eq!(r.pod_uid.as_deref(), Some(POD_UID));
    let _task = {
        let _g = rt.enter();
        c.start()
    };
    let t = Instant::now();
    let labels = loop {
        let l = c.labels_of_pid(pid, &["app.kubernetes.io/name".to_string()]);
        if l.iter().any(|(n, _)| n == "app_kubernetes_io_name") {
            break l;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{}", c.status());
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("labels from containerd: {labels:?}");
    let get = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("container_name"), Some("sleeper"));
    assert_eq!(get("pod"), Some("shop/web-1"));
    assert_eq!(get("pod_id"), Some(POD_UID));
    assert_eq!(get("app_kubernetes_io_name"), Some("web"));
    // The sandbox (pause) process is known too.
    assert_eq!(
        c.cached(&sandbox).map(|i| i.name.clone()).as_deref(),
        Some("POD")
    );

    rt.block_on(async {
        let _: create::Empty = call(
            &ch,
            "/runtime.v1.RuntimeService/StopPodSandbox",
            create::SandboxIdRequest {
                pod_sandbox_id: sandbox.clone(),
            },
        )
        .await;
        let _: create::Empty = call(
            &ch,
            "/runtime.v1.RuntimeService/RemovePodSandbox",
            create::SandboxIdRequest {
                pod_sandbox_id: sandbox.clone(),
            },
        )
        .await;
    });
}
