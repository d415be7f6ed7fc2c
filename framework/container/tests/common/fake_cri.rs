//! A CRI server that really speaks gRPC, for tests and benches: tonic's server side
//! (`tonic::server::Grpc` with the crate's hand-written prost messages) served by hyper's
//! HTTP/2 over a unix socket, answering from fixed data.
#![allow(dead_code)]

use container_info::cri::proto;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tonic::codegen::http;
use tonic::server::Grpc;
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

#[derive(Default)]
pub struct Data {
    /// Listed by ListContainers.
    pub containers: Vec<proto::Container>,
    /// Known to ContainerStatus but not listed (a container started after the last resync).
    pub hidden: Vec<proto::Container>,
    /// Pod sandboxes.
    pub sandboxes: Vec<proto::PodSandbox>,
    /// Calls per method.
    pub calls: HashMap<&'static str, u64>,
}

pub type Shared = Arc<Mutex<Data>>;

fn status_of(c: &proto::Container) -> proto::ContainerStatus {
    proto::ContainerStatus {
        id: c.id.clone(),
        metadata: c.metadata.clone(),
        state: c.state,
        created_at: c.created_at,
        image: c.image.clone(),
        image_ref: c.image_ref.clone(),
        labels: c.labels.clone(),
        annotations: c.annotations.clone(),
    }
}

fn sandbox_status(s: &proto::PodSandbox) -> proto::PodSandboxStatus {
    proto::PodSandboxStatus {
        id: s.id.clone(),
        metadata: s.metadata.clone(),
        state: s.state,
        created_at: s.created_at,
        labels: s.labels.clone(),
        annotations: s.annotations.clone(),
    }
}

async fn route(req: http::Request<Incoming>, d: Shared) -> http::Response<tonic::body::Body> {
    let path = req.uri().path().to_string();
    let method = path.rsplit('/').next().unwrap_or("").to_string();
    {
        let mut g = d.lock().unwrap();
        let key: &'static str = match method.as_str() {
            "ContainerStatus" => "ContainerStatus",
            "PodSandboxStatus" => "PodSandboxStatus",
            "ListContainers" => "ListContainers",
            "ListPodSandbox" => "ListPodSandbox",
            _ => "other",
        };
        *g.calls.entry(key).or_default() += 1;
    }
    match method.as_str() {
        "ContainerStatus" => {
            let svc = tower::service_fn(move |r: Request<proto::ContainerStatusRequest>| {
                let d = d.clone();
                async move {
                    let id = r.into_inner().container_id;
                    let g = d.lock().unwrap();
                    let c = g
                        .containers
                        .iter()
                        .chain(&g.hidden)
                        .find(|c| c.id == id)
                        .ok_or_else(|| Status::not_found(format!("container {id} not found")))?;
                    Ok::<_, Status>(Response::new(proto::ContainerStatusResponse {
                        status: Some(status_of(c)),
                        info: HashMap::new(),
                    }))
                }
            });
            Grpc::new(ProstCodec::<
                proto::ContainerStatusResponse,
                proto::ContainerStatusRequest,
            >::default())
            .unary(svc, req)
            .await
        }
        "PodSandboxStatus" => {
            let svc = tower::service_fn(move |r: Request<proto::PodSandboxStatusRequest>| {
                let d = d.clone();
                async move {
                    let id = r.into_inner().pod_sandbox_id;
                    let g = d.lock().unwrap();
                    let s = g
                        .sandboxes
                        .iter()
                        .find(|s| s.id == id)
                        .ok_or_else(|| Status::not_found(format!("sandbox {id} not found")))?;
                    Ok::<_, Status>(Response::new(proto::PodSandboxStatusResponse {
                        status: Some(sandbox_status(s)),
                    }))
                }
            });
            Grpc::new(ProstCodec::<
                proto::PodSandboxStatusResponse,
                proto::PodSandboxStatusRequest,
            >::default())
            .unary(svc, req)
            .await
        }
        "ListContainers" => {
            let svc = tower::service_fn(move |r: Request<proto::ListContainersRequest>| {
                let d = d.clone();
                async move {
                    let f = r.into_inner().filter.unwrap_or_default();
                    let g = d.lock().unwrap();
                    // A filter by id also finds containers the plain list hides (started since).
                    let pool: Vec<&proto::Container> = if f.id.is_empty() {
                        g.containers.iter().collect()
                    } else {
                        g.containers.iter().chain(&g.hidden).collect()
                    };
                    let containers = pool
                        .into_iter()
                        .filter(|c| f.id.is_empty() || c.id == f.id)
                        .filter(|c| f.state.as_ref().is_none_or(|s| s.state == c.state))
                        .filter(|c| {
                            f.pod_sandbox_id.is_empty() || c.pod_sandbox_id == f.pod_sandbox_id
                        })
                        .cloned()
                        .collect();
                    Ok::<_, Status>(Response::new(proto::ListContainersResponse { containers }))
                }
            });
            Grpc::new(ProstCodec::<
                proto::ListContainersResponse,
                proto::ListContainersRequest,
            >::default())
            .unary(svc, req)
            .await
        }
        "ListPodSandbox" => {
            let svc = tower::service_fn(move |_r: Request<proto::ListPodSandboxRequest>| {
                let d = d.clone();
                async move {
                    let items = d.lock().unwrap().sandboxes.clone();
                    Ok::<_, Status>(Response::new(proto::ListPodSandboxResponse { items }))
                }
            });
            Grpc::new(ProstCodec::<
                proto::ListPodSandboxResponse,
                proto::ListPodSandboxRequest,
            >::default())
            .unary(svc, req)
            .await
        }
        _ => Status::unimplemented(path).into_http(),
    }
}

/// Serve the CRI on `path` until the runtime ends.
pub fn serve(path: &Path, data: Shared) {
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let d = data.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let d = d.clone();
                    async move { Ok::<_, std::convert::Infallible>(route(req, d).await) }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}
