//! The sync lookup hit path (`of_pid` + `info_of`), and the resolver's own CPU for a full
//! resync of 200 containers in 40 pods from a CRI server that really speaks gRPC.
//!
//! `/proc/<pid>/cgroup` is read under a fake host root (`host::set_root`) so the pid is a
//! kubepods container process of the fake runtime.

use container_info::cgroup::Runtime;
use container_info::cri::{proto, CONTAINER_RUNNING};
use container_info::host;
use container_info::resolver::{Config, Containers};
use criterion::{criterion_group, criterion_main, Criterion};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "../tests/common/fake_cri.rs"]
mod fake_cri;

const CONTAINERS: usize = 200;
const PODS: usize = 40;
const PID: u32 = 4242;

fn id(n: usize) -> String {
    format!("{n:064x}")
}

fn uid(p: usize) -> String {
    format!("00000000-0000-4000-8000-{p:012x}")
}

fn data() -> fake_cri::Data {
    let sandbox = |p: usize| format!("{:064x}", 0xface_0000 + p);
    let sandboxes = (0..PODS)
        .map(|p| proto::PodSandbox {
            id: sandbox(p),
            metadata: Some(proto::PodSandboxMetadata {
                name: format!("pod-{p}"),
                uid: uid(p),
                namespace: "bench".to_string(),
                attempt: 0,
            }),
            labels: HashMap::from([
                ("app".to_string(), format!("app-{p}")),
                ("tier".to_string(), "front".to_string()),
            ]),
            ..Default::default()
        })
        .collect();
    let containers = (0..CONTAINERS)
        .map(|n| {
            let p = n % PODS;
            proto::Container {
                id: id(n),
                pod_sandbox_id: sandbox(p),
                metadata: Some(proto::ContainerMetadata {
                    name: format!("c{n}"),
                    attempt: 0,
                }),
                image: Some(proto::ImageSpec {
                    image: "docker.io/library/nginx:1.25".to_string(),
                }),
                state: CONTAINER_RUNNING,
                labels: HashMap::from([
                    ("io.kubernetes.pod.name".to_string(), format!("pod-{p}")),
                    (
                        "io.kubernetes.pod.namespace".to_string(),
                        "bench".to_string(),
                    ),
                    ("io.kubernetes.pod.uid".to_string(), uid(p)),
                    ("io.kubernetes.container.name".to_string(), format!("c{n}")),
                ]),
                ..Default::default()
            }
        })
        .collect();
    fake_cri::Data {
        containers,
        sandboxes,
        ..Default::default()
    }
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn bench(c: &mut Criterion) {
    let root = tempfile::tempdir().unwrap();
    host::set_root(root.path().to_path_buf()).unwrap();
    let proc_dir = root.path().join(format!("proc/{PID}"));
    std::fs::create_dir_all(&proc_dir).unwrap();
    std::fs::write(
        proc_dir.join("cgroup"),
        format!(
            "5:memory:/kubepods/burstable/pod{}/{}\n0::/kubepods/burstable/pod{}/{}\n",
            uid(7),
            id(7),
            uid(7),
            id(7)
        ),
    )
    .unwrap();

    // The fake runtime on its own thread and runtime: only the resolver runs on this one.
    let sock = root.path().join("cri.sock");
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    {
        let _g = server_rt.enter();
        fake_cri::serve(&sock, Arc::new(Mutex::new(data())));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let containers = Containers::new(Config {
        docker_sockets: vec![],
        cri_sockets: vec![sock],
        max_containers: 1000,
        ..Config::default()
    });
    rt.block_on(containers.resync_now());
    assert_eq!(
        containers.counters().containers_cached as usize,
        CONTAINERS + PODS,
        "{}",
        containers.status()
    );

    // Resolver CPU: client side of a full resync (gRPC decode, conversion, cache update).
    let rounds = 50;
    let (cpu0, wall0) = (thread_cpu(), Instant::now());
    for _ in 0..rounds {
        rt.block_on(containers.resync_now());
    }
    let (cpu, wall) = (thread_cpu() - cpu0, wall0.elapsed());
    println!(
        "resync of {CONTAINERS} containers in {PODS} pods: {:?} resolver CPU, {:?} wall per resync; \
         at the default 30 s period that is {:.4} % of one core",
        cpu / rounds,
        wall / rounds,
        (cpu / rounds).as_secs_f64() / 30.0 * 100.0
    );

    let r = containers.of_pid(PID).expect("fake container pid");
    assert_eq!(r.runtime, Runtime::Unknown);
    assert_eq!(containers.info_of(&r).expect("cached").name, "c7");
    c.bench_function("of_pid+info_of hit", |b| {
        b.iter(|| {
            let r = containers.of_pid(black_box(PID)).unwrap();
            black_box(containers.info_of(&r))
        })
    });
    c.bench_function("labels_of_pid hit (2 pod labels)", |b| {
        let wanted = ["app".to_string(), "tier".to_string()];
        b.iter(|| black_box(containers.labels_of_pid(black_box(PID), &wanted)))
    });
    c.bench_function("resync 200 containers (client + fake server)", |b| {
        b.iter(|| rt.block_on(containers.resync_now()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
