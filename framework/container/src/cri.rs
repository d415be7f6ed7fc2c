//! CRI `runtime.v1.RuntimeService` client (containerd, CRI-O, iSulad) over gRPC on a unix
//! socket, with hand-written protobuf messages for just the calls used: `ContainerStatus`,
//! `PodSandboxStatus`, `ListContainers`, `ListPodSandbox` (field numbers from
//! k8s.io/cri-api's `api.proto`; fields not declared here are skipped when decoding).
//!
//! Bounded: every call by the client's time limit (connect included), every answer by a
//! message size limit ([`STATUS_MESSAGE_MAX`], [`LIST_MESSAGE_MAX`]), lists by [`LIST_MAX`].

use crate::error::ErrorKind;
use crate::info::{self, ContainerInfo, PodInfo};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::UnixStream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint, Uri};

/// Largest `*Status` answer decoded.
pub const STATUS_MESSAGE_MAX: usize = 1 << 20;
/// Largest `List*` answer decoded.
pub const LIST_MESSAGE_MAX: usize = 16 << 20;
/// Most containers (or sandboxes) taken from one list answer.
pub const LIST_MAX: usize = 65536;
/// CRI `ContainerState.CONTAINER_RUNNING`.
pub const CONTAINER_RUNNING: i32 = 1;
/// CRI `PodSandboxState.SANDBOX_READY`.
pub const SANDBOX_READY: i32 = 0;
/// containerd's container annotation with the image name the pod spec asked for.
pub const IMAGE_NAME_ANNOTATION: &str = "io.kubernetes.cri.image-name";
/// The name given to a pod's sandbox (pause) "container" (kubelet's and cri-dockerd's).
pub const SANDBOX_NAME: &str = "POD";

/// The CRI messages used, hand-written (no protoc): `runtime.v1` field numbers.
#[allow(missing_docs)]
pub mod proto {
    use std::collections::HashMap;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerStatusRequest {
        #[prost(string, tag = "1")]
        pub container_id: String,
        #[prost(bool, tag = "2")]
        pub verbose: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerStatusResponse {
        #[prost(message, optional, tag = "1")]
        pub status: Option<ContainerStatus>,
        #[prost(map = "string, string", tag = "2")]
        pub info: HashMap<String, String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerStatus {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(message, optional, tag = "2")]
        pub metadata: Option<ContainerMetadata>,
        /// `ContainerState` enum.
        #[prost(int32, tag = "3")]
        pub state: i32,
        #[prost(int64, tag = "4")]
        pub created_at: i64,
        #[prost(message, optional, tag = "8")]
        pub image: Option<ImageSpec>,
        #[prost(string, tag = "9")]
        pub image_ref: String,
        #[prost(map = "string, string", tag = "12")]
        pub labels: HashMap<String, String>,
        #[prost(map = "string, string", tag = "13")]
        pub annotations: HashMap<String, String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerMetadata {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(uint32, tag = "2")]
        pub attempt: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ImageSpec {
        #[prost(string, tag = "1")]
        pub image: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxStatusRequest {
        #[prost(string, tag = "1")]
        pub pod_sandbox_id: String,
        #[prost(bool, tag = "2")]
        pub verbose: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxStatusResponse {
        #[prost(message, optional, tag = "1")]
        pub status: Option<PodSandboxStatus>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxStatus {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(message, optional, tag = "2")]
        pub metadata: Option<PodSandboxMetadata>,
        /// `PodSandboxState` enum.
        #[prost(int32, tag = "3")]
        pub state: i32,
        #[prost(int64, tag = "4")]
        pub created_at: i64,
        #[prost(map = "string, string", tag = "7")]
        pub labels: HashMap<String, String>,
        #[prost(map = "string, string", tag = "8")]
        pub annotations: HashMap<String, String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxMetadata {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub uid: String,
        #[prost(string, tag = "3")]
        pub namespace: String,
        #[prost(uint32, tag = "4")]
        pub attempt: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListContainersRequest {
        #[prost(message, optional, tag = "1")]
        pub filter: Option<ContainerFilter>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerFilter {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(message, optional, tag = "2")]
        pub state: Option<ContainerStateValue>,
        #[prost(string, tag = "3")]
        pub pod_sandbox_id: String,
        #[prost(map = "string, string", tag = "4")]
        pub label_selector: HashMap<String, String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ContainerStateValue {
        #[prost(int32, tag = "1")]
        pub state: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListContainersResponse {
        #[prost(message, repeated, tag = "1")]
        pub containers: Vec<Container>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Container {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(string, tag = "2")]
        pub pod_sandbox_id: String,
        #[prost(message, optional, tag = "3")]
        pub metadata: Option<ContainerMetadata>,
        #[prost(message, optional, tag = "4")]
        pub image: Option<ImageSpec>,
        #[prost(string, tag = "5")]
        pub image_ref: String,
        /// `ContainerState` enum.
        #[prost(int32, tag = "6")]
        pub state: i32,
        #[prost(int64, tag = "7")]
        pub created_at: i64,
        #[prost(map = "string, string", tag = "8")]
        pub labels: HashMap<String, String>,
        #[prost(map = "string, string", tag = "9")]
        pub annotations: HashMap<String, String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListPodSandboxRequest {
        #[prost(message, optional, tag = "1")]
        pub filter: Option<PodSandboxFilter>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxFilter {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(message, optional, tag = "2")]
        pub state: Option<PodSandboxStateValue>,
        #[prost(map = "string, string", tag = "3")]
        pub label_selector: HashMap<String, String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandboxStateValue {
        #[prost(int32, tag = "1")]
        pub state: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListPodSandboxResponse {
        #[prost(message, repeated, tag = "1")]
        pub items: Vec<PodSandbox>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PodSandbox {
        #[prost(string, tag = "1")]
        pub id: String,
        #[prost(message, optional, tag = "2")]
        pub metadata: Option<PodSandboxMetadata>,
        /// `PodSandboxState` enum.
        #[prost(int32, tag = "3")]
        pub state: i32,
        #[prost(int64, tag = "4")]
        pub created_at: i64,
        #[prost(map = "string, string", tag = "5")]
        pub labels: HashMap<String, String>,
        #[prost(map = "string, string", tag = "6")]
        pub annotations: HashMap<String, String>,
    }
}

/// A failed CRI request.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The socket could not be connected to, or the gRPC connection could not be set up.
    #[error("connect {path}: {message}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// No answer within the time limit.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// A gRPC error status (including undecodable or oversized answers).
    #[error("gRPC status {code:?}: {message}")]
    Status {
        /// The status code.
        code: tonic::Code,
        /// Its message (truncated to 512 bytes).
        message: String,
    },
}

impl CriError {
    /// The kind counted for this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CriError::Connect { .. } => ErrorKind::Connect,
            CriError::Timeout(_) => ErrorKind::Timeout,
            CriError::Status { code, .. } => match code {
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => ErrorKind::Timeout,
                tonic::Code::Unavailable => ErrorKind::Connect,
                _ => ErrorKind::Protocol,
            },
        }
    }

    fn from_status(s: tonic::Status) -> CriError {
        let mut message = s.message().to_string();
        if message.len() > 512 {
            let mut end = 512;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        CriError::Status {
            code: s.code(),
            message,
        }
    }
}

/// A container from `ListContainers` or `ContainerStatus`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CriContainer {
    /// Full id.
    pub id: String,
    /// Its pod sandbox (`ListContainers` only; empty from `ContainerStatus`).
    pub pod_sandbox_id: String,
    /// `metadata.name`: the container's name in the pod spec.
    pub name: String,
    /// The image name: containerd's `io.kubernetes.cri.image-name` annotation, else
    /// `image.image`, else `image_ref` (a name is preferred over a bare `sha256:` id).
    pub image: String,
    /// `ContainerState` (1 = running).
    pub state: i32,
    /// Labels (bounded), with `io.kubernetes.pod.*` and `io.kubernetes.container.name`.
    pub labels: BTreeMap<String, String>,
}

impl CriContainer {
    /// What the resolver keeps; `pod` is the sandbox's pod when known, else the pod the
    /// container's `io.kubernetes.pod.*` labels name (without pod labels).
    pub fn to_info(&self, pod: Option<&PodInfo>) -> ContainerInfo {
        let name = if self.name.is_empty() {
            self.labels
                .get(info::K8S_CONTAINER_NAME)
                .cloned()
                .unwrap_or_default()
        } else {
            self.name.clone()
        };
        ContainerInfo {
            id: self.id.clone(),
            name,
            image: self.image.clone(),
            labels: self.labels.clone(),
            pod: pod
                .cloned()
                .or_else(|| info::pod_from_container_labels(&self.labels)),
        }
    }
}

/// A pod sandbox from `ListPodSandbox` or `PodSandboxStatus`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CriSandbox {
    /// Sandbox id (also the id in its pause process's cgroup path).
    pub id: String,
    /// `PodSandboxState` (0 = ready).
    pub state: i32,
    /// The pod: metadata name/uid/namespace and its labels (bounded).
    pub pod: PodInfo,
}

impl CriSandbox {
    /// The sandbox as a "container" (its pause process): named [`SANDBOX_NAME`].
    pub fn to_info(&self) -> ContainerInfo {
        ContainerInfo {
            id: self.id.clone(),
            name: SANDBOX_NAME.to_string(),
            image: String::new(),
            labels: BTreeMap::new(),
            pod: Some(self.pod.clone()),
        }
    }
}

fn pick_image(
    annotations: &std::collections::HashMap<String, String>,
    image: Option<&proto::ImageSpec>,
    image_ref: &str,
) -> String {
    let candidates = [
        annotations
            .get(IMAGE_NAME_ANNOTATION)
            .map(String::as_str)
            .unwrap_or(""),
        image.map(|i| i.image.as_str()).unwrap_or(""),
        image_ref,
    ];
    candidates
        .iter()
        .find(|c| !c.is_empty() && !c.starts_with("sha256:"))
        .or_else(|| candidates.iter().find(|c| !c.is_empty()))
        .map(|c| c.to_string())
        .unwrap_or_default()
}

fn sandbox_of(
    id: String,
    state: i32,
    metadata: Option<proto::PodSandboxMetadata>,
    labels: &std::collections::HashMap<String, String>,
) -> CriSandbox {
    let md = metadata.unwrap_or_default();
    CriSandbox {
        id,
        state,
        pod: PodInfo {
            uid: md.uid,
            name: md.name,
            namespace: md.namespace,
            labels: info::bounded_labels(labels),
        },
    }
}

/// A CRI `RuntimeService` client on one unix socket (the gRPC channel reconnects by itself).
#[derive(Debug, Clone)]
pub struct CriClient {
    socket: PathBuf,
    timeout: Duration,
    channel: Channel,
}

impl CriClient {
    /// Connect to the CRI socket `socket` (HTTP/2 over the unix socket), within `timeout`;
    /// every later call is bounded by `timeout` too.
    pub async fn connect(socket: &Path, timeout: Duration) -> Result<CriClient, CriError> {
        let connect_err = |message: String| CriError::Connect {
            path: socket.to_path_buf(),
            message,
        };
        // The URI is not used: the connector below always dials the socket.
        // No per-request timeout layer: `unary` bounds each call itself (one timer, not two).
        let endpoint = Endpoint::from_static("http://cri.invalid").connect_timeout(timeout);
        let path = socket.to_path_buf();
        let connector = tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        });
        let channel = tokio::time::timeout(timeout, endpoint.connect_with_connector(connector))
            .await
            .map_err(|_| CriError::Timeout(timeout))?
            .map_err(|e| {
                use std::error::Error;
                let mut msg = e.to_string();
                let mut src = e.source();
                while let Some(s) = src {
                    msg = format!("{msg}: {s}");
                    src = s.source();
                }
                connect_err(msg)
            })?;
        Ok(CriClient {
            socket: socket.to_path_buf(),
            timeout,
            channel,
        })
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn unary<Req, Resp>(
        &self,
        method: &'static str,
        req: Req,
        max: usize,
    ) -> Result<Resp, CriError>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc =
            tonic::client::Grpc::new(self.channel.clone()).max_decoding_message_size(max);
        let call = async move {
            grpc.ready().await.map_err(|e| CriError::Connect {
                path: self.socket.clone(),
                message: e.to_string(),
            })?;
            let path = PathAndQuery::from_static(method);
            grpc.unary(
                tonic::Request::new(req),
                path,
                tonic_prost::ProstCodec::<Req, Resp>::default(),
            )
            .await
            .map(tonic::Response::into_inner)
            .map_err(CriError::from_status)
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or(Err(CriError::Timeout(self.timeout)))
    }

    /// [`Self::unary`] where gRPC `NotFound` (the runtime does not know the id) is `None`.
    async fn unary_found<Req, Resp>(
        &self,
        method: &'static str,
        req: Req,
        max: usize,
    ) -> Result<Option<Resp>, CriError>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        match self.unary(method, req, max).await {
            Err(CriError::Status {
                code: tonic::Code::NotFound,
                ..
            }) => Ok(None),
            r => r.map(Some),
        }
    }

    /// `ContainerStatus`; `None` when the runtime does not know the id (gRPC `NotFound`).
    pub async fn container_status(&self, id: &str) -> Result<Option<CriContainer>, CriError> {
        let req = proto::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        };
        let resp: Option<proto::ContainerStatusResponse> = self
            .unary_found(
                "/runtime.v1.RuntimeService/ContainerStatus",
                req,
                STATUS_MESSAGE_MAX,
            )
            .await?;
        let Some(s) = resp.and_then(|r| r.status) else {
            return Ok(None);
        };
        Ok(Some(CriContainer {
            image: pick_image(&s.annotations, s.image.as_ref(), &s.image_ref),
            id: s.id,
            pod_sandbox_id: String::new(),
            name: s.metadata.map(|m| m.name).unwrap_or_default(),
            state: s.state,
            labels: info::bounded_labels(&s.labels),
        }))
    }

    /// `PodSandboxStatus`; `None` when the runtime does not know the id.
    pub async fn pod_sandbox_status(&self, id: &str) -> Result<Option<CriSandbox>, CriError> {
        let req = proto::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: false,
        };
        let resp: Option<proto::PodSandboxStatusResponse> = self
            .unary_found(
                "/runtime.v1.RuntimeService/PodSandboxStatus",
                req,
                STATUS_MESSAGE_MAX,
            )
            .await?;
        Ok(resp
            .and_then(|r| r.status)
            .map(|s| sandbox_of(s.id, s.state, s.metadata, &s.labels)))
    }

    /// `ListContainers` with `filter` (`None`: all), at most [`LIST_MAX`].
    pub async fn list_containers(
        &self,
        filter: Option<proto::ContainerFilter>,
    ) -> Result<Vec<CriContainer>, CriError> {
        let resp: proto::ListContainersResponse = self
            .unary(
                "/runtime.v1.RuntimeService/ListContainers",
                proto::ListContainersRequest { filter },
                LIST_MESSAGE_MAX,
            )
            .await?;
        Ok(resp
            .containers
            .into_iter()
            .take(LIST_MAX)
            .map(|c| CriContainer {
                image: pick_image(&c.annotations, c.image.as_ref(), &c.image_ref),
                id: c.id,
                pod_sandbox_id: c.pod_sandbox_id,
                name: c.metadata.map(|m| m.name).unwrap_or_default(),
                state: c.state,
                labels: info::bounded_labels(&c.labels),
            })
            .collect())
    }

    /// The running containers.
    pub async fn list_running(&self) -> Result<Vec<CriContainer>, CriError> {
        self.list_containers(Some(proto::ContainerFilter {
            state: Some(proto::ContainerStateValue {
                state: CONTAINER_RUNNING,
            }),
            ..Default::default()
        }))
        .await
    }

    /// `ListPodSandbox` with `filter` (`None`: all), at most [`LIST_MAX`].
    pub async fn list_pod_sandbox(
        &self,
        filter: Option<proto::PodSandboxFilter>,
    ) -> Result<Vec<CriSandbox>, CriError> {
        let resp: proto::ListPodSandboxResponse = self
            .unary(
                "/runtime.v1.RuntimeService/ListPodSandbox",
                proto::ListPodSandboxRequest { filter },
                LIST_MESSAGE_MAX,
            )
            .await?;
        Ok(resp
            .items
            .into_iter()
            .take(LIST_MAX)
            .map(|p| sandbox_of(p.id, p.state, p.metadata, &p.labels))
            .collect())
    }

    /// The sandbox id of container `id` (`ListContainers` filtered by id: `ContainerStatus`
    /// does not say it).
    pub async fn sandbox_of(&self, id: &str) -> Result<Option<String>, CriError> {
        let list = self
            .list_containers(Some(proto::ContainerFilter {
                id: id.to_string(),
                ..Default::default()
            }))
            .await?;
        Ok(list
            .into_iter()
            .find(|c| c.id == id)
            .map(|c| c.pod_sandbox_id)
            .filter(|s| !s.is_empty()))
    }
}
