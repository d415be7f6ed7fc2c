//! The collector over captured host trees (a fake `/proc`, `/sys` and mount table in a temp
//! dir): a hybrid (v1 + unified) host and a pure v2 host, each with containers named by the real
//! `container_info::cgroup::parse`, checked value by value.

use std::path::Path;

use containerprobe::cgroup_files::{DevIo, DevNum};
use containerprobe::collect::{Collector, Cycle, DevRow, PodSample, Sample};
use containerprobe::paths::HostPaths;
use containerprobe::proc_files::NetTotals;
use probe_sdk::decl::{Snoop, SnoopMode};

const ID_A: &str = "aaaa0000aaaa1111aaaa2222aaaa3333aaaa4444aaaa5555aaaa6666aaaa7777";
const ID_B: &str = "bbbb0000bbbb1111bbbb2222bbbb3333bbbb4444bbbb5555bbbb6666bbbb7777";
const BTIME: u64 = 1_700_000_000;

fn put(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// `/proc/<pid>/stat` with `starttime` = `ticks`.
fn stat(pid: u32, ticks: u64) -> String {
    format!(
        "{pid} (sh) S 1 {pid} {pid} 0 -1 4194560 97 0 0 0 1 2 0 0 20 0 1 0 {ticks} 2273280 104 \
         18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0\n"
    )
}

const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     500       5    0    0    0     0          0         0      500       5    0    0    0     0       0          0
  eth0:    1000      10    1    2    0     0          0         0     2000      20    3    4    0     0       0          0
";

/// Common `/proc` parts: boot time, the host's netns and a host process.
fn proc_base(root: &Path) {
    put(
        root,
        "proc/stat",
        &format!("cpu  1 2 3 4\nbtime {BTIME}\nprocesses 9\n"),
    );
    put(root, "proc/1/ns/net", "host netns");
    put(root, "proc/1/cgroup", "1:cpu:/\n0::/init.scope\n");
    put(root, "proc/1/stat", &stat(1, 5));
    put(
        root,
        "sys/dev/block/254:0/uevent",
        "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n",
    );
}

/// Container A: pids 100 (own netns) and 101 (older, same netns; in a sub-cgroup);
/// container B: pid 200 in the host's netns.
fn processes(root: &Path, cgroup_a: &str, cgroup_a_sub: &str, cgroup_b: &str) {
    put(root, "proc/100/cgroup", cgroup_a);
    put(root, "proc/100/stat", &stat(100, 2000));
    put(root, "proc/100/ns/net", "netns A");
    put(root, "proc/100/net/dev", NET_DEV);
    put(root, "proc/101/cgroup", cgroup_a_sub);
    put(root, "proc/101/stat", &stat(101, 1234));
    std::fs::create_dir_all(root.join("proc/101/ns")).unwrap();
    std::fs::hard_link(root.join("proc/100/ns/net"), root.join("proc/101/ns/net")).unwrap();
    put(root, "proc/101/net/dev", NET_DEV);
    put(root, "proc/200/cgroup", cgroup_b);
    put(root, "proc/200/stat", &stat(200, 777));
    std::fs::create_dir_all(root.join("proc/200/ns")).unwrap();
    std::fs::hard_link(root.join("proc/1/ns/net"), root.join("proc/200/ns/net")).unwrap();
    put(root, "proc/200/net/dev", NET_DEV);
}

fn collect(root: &Path, snoop: &Snoop) -> (Vec<Sample>, Collector) {
    let (cycle, c) = collect_cycle(root, snoop);
    (cycle.containers, c)
}

fn collect_cycle(root: &Path, snoop: &Snoop) -> (Cycle, Collector) {
    let mut c = Collector::new(HostPaths::fixture(root), container_info::cgroup::parse);
    let cycle = c.collect(snoop);
    (cycle, c)
}

fn hybrid_tree(root: &Path) {
    put(
        root,
        "proc/self/mountinfo",
        "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n\
             32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
             33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n\
             35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
             38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio\n\
             39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n\
             40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n\
             41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n",
    );
    proc_base(root);
    let lines = |id: &str, sub: &str| {
        let p = format!("/libpod_parent/libpod-{id}{sub}");
        format!(
            "9:name=systemd:{p}\n8:pids:{p}\n7:blkio:{p}\n4:memory:{p}\n2:cpuacct:{p}\n\
             1:cpu:{p}\n0::{p}\n"
        )
    };
    processes(
        root,
        &lines(ID_A, ""),
        &lines(ID_A, "/sub"),
        &lines(ID_B, ""),
    );
    let a = format!("libpod_parent/libpod-{ID_A}");
    let g = |ctl: &str, file: &str| format!("sys/fs/cgroup/{ctl}/{a}/{file}");
    put(root, &g("cpuacct", "cpuacct.usage"), "2500000000\n");
    put(root, &g("cpuacct", "cpuacct.stat"), "user 150\nsystem 75\n");
    put(
        root,
        &g("cpu", "cpu.stat"),
        "nr_periods 12\nnr_throttled 3\nthrottled_time 45000000\n",
    );
    put(root, &g("memory", "memory.usage_in_bytes"), "209715200\n");
    put(
        root,
        &g("memory", "memory.limit_in_bytes"),
        "9223372036854771712\n",
    );
    put(root, &g("memory", "memory.failcnt"), "4\n");
    put(
        root,
        &g("memory", "memory.stat"),
        "cache 100\nrss 200\ninactive_file 300\ntotal_cache 134217728\ntotal_rss 57344\n\
         total_inactive_file 1048576\n",
    );
    put(
        root,
        &g("memory", "memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    );
    put(root, &g("pids", "pids.current"), "3\n");
    put(root, &g("pids", "pids.max"), "50\n");
    put(
        root,
        &g("blkio", "blkio.throttle.io_service_bytes_recursive"),
        "254:0 Read 4096\n254:0 Write 8388608\n254:0 Sync 8392704\n254:0 Async 0\n\
         254:0 Discard 0\n254:0 Total 8392704\n7:0 Read 0\n7:0 Write 0\n7:0 Total 0\nTotal 8392704\n",
    );
    put(
        root,
        &g("blkio", "blkio.throttle.io_serviced_recursive"),
        "254:0 Read 1\n254:0 Write 8\n254:0 Total 9\nTotal 9\n",
    );
    put(
        root,
        &g("unified", "memory.pressure"),
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=1500000\n\
         full avg10=0.00 avg60=0.00 avg300=0.00 total=250000\n",
    );
    // Container B has only its memory directory: the rest is absent, not an error.
    let b = format!("sys/fs/cgroup/memory/libpod_parent/libpod-{ID_B}");
    put(root, &format!("{b}/memory.usage_in_bytes"), "1048576\n");
}

#[test]
fn hybrid_host_reads_v1_controllers_and_v2_pressure() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    hybrid_tree(root);
    let (samples, c) = collect(root, &Snoop::default());
    assert_eq!(samples.len(), 2, "{samples:#?}");
    let a = &samples[0];
    assert_eq!(
        *a,
        Sample {
            short_id: ID_A[..12].to_string(),
            pod_uid: None,
            procs_seen: 2,
            cpu_usage_s: Some(2.5),
            cpu_user_s: Some(1.5),
            cpu_system_s: Some(0.75),
            cfs_periods: Some(12),
            cfs_throttled_periods: Some(3),
            cfs_throttled_s: Some(0.045),
            mem_usage: Some(209_715_200),
            mem_working_set: Some(209_715_200 - 1_048_576),
            mem_rss: Some(57_344),
            mem_cache: Some(134_217_728),
            mem_limit: Some(0),
            mem_failcnt: Some(4),
            oom_events: None,
            oom_kills: Some(2),
            under_oom: Some(0),
            psi_some_s: Some(1.5),
            psi_full_s: Some(0.25),
            processes: Some(3),
            pids_max: Some(50),
            net: Some(NetTotals {
                rx_bytes: 1000,
                rx_packets: 10,
                rx_errors: 1,
                rx_dropped: 2,
                tx_bytes: 2000,
                tx_packets: 20,
                tx_errors: 3,
                tx_dropped: 4,
                interfaces: 1,
            }),
            // The oldest process (101) started 1234 ticks after boot.
            start_time_s: Some((BTIME * 100 + 1234) as f64 / 100.0),
            blkio: vec![DevRow {
                dev: DevNum {
                    major: 254,
                    minor: 0
                },
                name: Some("vda".into()),
                io: DevIo {
                    read_bytes: 4096,
                    write_bytes: 8_388_608,
                    reads: 1,
                    writes: 8
                },
            }],
        }
    );
    let b = &samples[1];
    assert_eq!(b.short_id, &ID_B[..12]);
    assert_eq!(b.mem_usage, Some(1_048_576));
    assert_eq!(b.cpu_usage_s, None);
    assert_eq!(b.net, None, "B shares the host's netns");
    assert_eq!(b.start_time_s, Some((BTIME * 100 + 777) as f64 / 100.0));
    assert!(b.blkio.is_empty());
    let counters = c.counters();
    assert_eq!(counters.read_errors, 0, "{counters:?}");
    assert_eq!(counters.containers, 2);

    // Snoopers: only the container holding pid 200.
    let (only_b, _) = collect(
        root,
        &Snoop {
            mode: SnoopMode::Include,
            pids: vec![200, 4242],
        },
    );
    assert_eq!(only_b.len(), 1);
    assert_eq!(only_b[0].short_id, &ID_B[..12]);
    // Excluding one of A's two pids keeps A.
    let (excl, _) = collect(
        root,
        &Snoop {
            mode: SnoopMode::Exclude,
            pids: vec![100, 200],
        },
    );
    assert_eq!(excl.len(), 1);
    assert_eq!(excl[0].short_id, &ID_A[..12]);
}

#[test]
fn pure_v2_host_reads_unified_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    put(
        root,
        "proc/self/mountinfo",
        "24 18 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
    );
    proc_base(root);
    let a = format!("/system.slice/docker-{ID_A}.scope");
    let b = format!("/system.slice/docker-{ID_B}.scope");
    processes(
        root,
        &format!("0::{a}\n"),
        &format!("0::{a}/nested\n"),
        &format!("0::{b}\n"),
    );
    let g = |file: &str| format!("sys/fs/cgroup{a}/{file}");
    put(
        root,
        &g("cpu.stat"),
        "usage_usec 2500000\nuser_usec 1500000\nsystem_usec 1000000\nnr_periods 40\n\
         nr_throttled 7\nthrottled_usec 350000\n",
    );
    put(root, &g("memory.current"), "104857600\n");
    put(root, &g("memory.max"), "536870912\n");
    put(
        root,
        &g("memory.stat"),
        "anon 4096\nfile 8192\nkernel 0\ninactive_file 1048576\n",
    );
    put(
        root,
        &g("memory.events"),
        "low 0\nhigh 0\nmax 5\noom 2\noom_kill 1\noom_group_kill 0\n",
    );
    put(
        root,
        &g("memory.pressure"),
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=3000000\n\
         full avg10=0.00 avg60=0.00 avg300=0.00 total=1000000\n",
    );
    put(root, &g("pids.current"), "2\n");
    put(root, &g("pids.max"), "max\n");
    put(
        root,
        &g("io.stat"),
        "254:0 rbytes=8192 wbytes=1048576 rios=2 wios=16 dbytes=0 dios=0\n\
         8:0 rbytes=512 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n",
    );
    let (samples, c) = collect(root, &Snoop::default());
    assert_eq!(samples.len(), 1, "B has no cgroup files: not reported");
    let s = &samples[0];
    assert_eq!(s.cpu_usage_s, Some(2.5));
    assert_eq!(s.cpu_user_s, Some(1.5));
    assert_eq!(s.cpu_system_s, Some(1.0));
    assert_eq!(
        (s.cfs_periods, s.cfs_throttled_periods, s.cfs_throttled_s),
        (Some(40), Some(7), Some(0.35))
    );
    assert_eq!(s.mem_usage, Some(104_857_600));
    assert_eq!(s.mem_working_set, Some(104_857_600 - 1_048_576));
    assert_eq!((s.mem_rss, s.mem_cache), (Some(4096), Some(8192)));
    assert_eq!(s.mem_limit, Some(536_870_912));
    assert_eq!(s.mem_failcnt, Some(5));
    assert_eq!(
        (s.oom_events, s.oom_kills, s.under_oom),
        (Some(2), Some(1), None)
    );
    assert_eq!((s.psi_some_s, s.psi_full_s), (Some(3.0), Some(1.0)));
    assert_eq!((s.processes, s.pids_max), (Some(2), Some(0)));
    assert_eq!(s.net.map(|n| n.rx_bytes), Some(1000));
    let devs: Vec<(String, Option<String>, u64)> = s
        .blkio
        .iter()
        .map(|r| (r.dev.to_string(), r.name.clone(), r.io.write_bytes))
        .collect();
    assert_eq!(
        devs,
        [
            ("8:0".to_string(), None, 0),
            ("254:0".to_string(), Some("vda".to_string()), 1_048_576)
        ]
    );
    assert_eq!(c.counters().read_errors, 0);
}

#[test]
fn pure_v1_host_has_no_pressure_and_bad_files_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    put(
        root,
        "proc/self/mountinfo",
        "29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
         30 25 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
    );
    proc_base(root);
    let p = format!("/docker/{ID_A}");
    let lines = format!("3:cpu,cpuacct:{p}\n2:memory:{p}\n");
    processes(root, &lines, &lines, "1:cpu:/\n");
    let g = |ctl: &str, file: &str| format!("sys/fs/cgroup/{ctl}{p}/{file}");
    put(root, &g("cpu,cpuacct", "cpuacct.usage"), "1000000000\n");
    put(
        root,
        &g("cpu,cpuacct", "cpu.stat"),
        "nr_periods 0\nnr_throttled 0\nthrottled_time 0\n",
    );
    put(
        root,
        &g("memory", "memory.usage_in_bytes"),
        "not a number\n",
    );
    put(root, &g("memory", "memory.limit_in_bytes"), "268435456\n");
    // Larger than its bound: refused whole, counted.
    put(root, &g("memory", "memory.stat"), &"x".repeat(70 * 1024));
    let (samples, c) = collect(root, &Snoop::default());
    assert_eq!(samples.len(), 1);
    let s = &samples[0];
    assert_eq!(s.cpu_usage_s, Some(1.0));
    assert_eq!(s.cfs_periods, Some(0));
    assert_eq!((s.psi_some_s, s.psi_full_s), (None, None));
    assert_eq!(s.mem_usage, None);
    assert_eq!(s.mem_limit, Some(268_435_456));
    assert_eq!((s.processes, s.pids_max), (None, None));
    assert_eq!(c.counters().read_errors, 2, "{:?}", c.counters());
}

/// Uid of the pod of the kubepods fixtures.
const POD_UID: &str = "0b6f1b0e-2a3c-4d5e-8f90-123456789abc";
const ID_C: &str = "cccc0000cccc1111cccc2222cccc3333cccc4444cccc5555cccc6666cccc7777";

/// Containers A (pids 100, 101) and B (pid 200) of pod [`POD_UID`] and a plain docker container
/// C (pid 300): `cgroup` gives each one's `/proc/<pid>/cgroup` text.
fn pod_processes(root: &Path, cgroup: impl Fn(&str) -> String) {
    for (pid, id) in [(100, ID_A), (101, ID_A), (200, ID_B), (300, ID_C)] {
        put(root, &format!("proc/{pid}/cgroup"), &cgroup(id));
        put(root, &format!("proc/{pid}/stat"), &stat(pid, 1000));
    }
}

/// The `pod` rows of a cycle as written, values unescaped.
fn pod_records(cycle: &Cycle, collector: &Collector) -> Vec<Vec<String>> {
    let mut out = probe_sdk::record::RecordWriter::new(Vec::new());
    containerprobe::report::write_cycle(&mut out, cycle, &collector.counters()).unwrap();
    let text = String::from_utf8(out.buffered().to_vec()).unwrap();
    text.lines()
        .filter_map(|l| probe_sdk::record::split_line(l.as_bytes()))
        .filter(|(t, _)| t.as_slice() == containerprobe::tables::POD.as_bytes())
        .map(|(_, v)| {
            v.into_iter()
                .map(|v| String::from_utf8(v).unwrap())
                .collect()
        })
        .collect()
}

#[test]
fn kubepods_containers_make_one_pod_row_on_a_v1_cgroupfs_host() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    put(
        root,
        "proc/self/mountinfo",
        "29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
         30 25 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
         31 25 0:28 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n\
         32 25 0:29 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
    );
    proc_base(root);
    // kubelet's cgroupfs driver on a hybrid host: v1 paths name the pod, the unified one is `/`.
    let path = |id: &str| {
        if id == ID_C {
            format!("/docker/{id}")
        } else {
            format!("/kubepods/burstable/pod{POD_UID}/{id}")
        }
    };
    pod_processes(root, |id| {
        let p = path(id);
        format!("9:pids:{p}\n5:memory:{p}\n3:cpu,cpuacct:{p}\n1:name=systemd:{p}\n0::/\n")
    });
    for (id, cpu_ns, mem, inactive, tasks) in [
        (ID_A, 1_500_000_000u64, 300u64, 100u64, 4u64),
        (ID_B, 250_000_000, 50, 0, 1),
        (ID_C, 9_000_000_000, 7000, 0, 9),
    ] {
        let g = |ctl: &str, file: &str| format!("sys/fs/cgroup/{ctl}{}/{file}", path(id));
        put(
            root,
            &g("cpu,cpuacct", "cpuacct.usage"),
            &format!("{cpu_ns}\n"),
        );
        put(
            root,
            &g("memory", "memory.usage_in_bytes"),
            &format!("{mem}\n"),
        );
        put(
            root,
            &g("memory", "memory.stat"),
            &format!("total_inactive_file {inactive}\n"),
        );
        put(root, &g("pids", "pids.current"), &format!("{tasks}\n"));
    }
    let (cycle, c) = collect_cycle(root, &Snoop::default());
    let pods_of: Vec<(&str, Option<&str>)> = cycle
        .containers
        .iter()
        .map(|s| (s.short_id.as_str(), s.pod_uid.as_deref()))
        .collect();
    assert_eq!(
        pods_of,
        [
            (&ID_A[..12], Some(POD_UID)),
            (&ID_B[..12], Some(POD_UID)),
            (&ID_C[..12], None)
        ]
    );
    assert_eq!(
        cycle.pods,
        [PodSample {
            pod_uid: POD_UID.to_string(),
            containers: 2,
            processes: 5,
            cpu_usage_s: Some(1.75),
            mem_working_set: Some(250),
        }]
    );
    assert_eq!(
        pod_records(&cycle, &c),
        [[POD_UID, "2", "5", "1.75", "250"]],
        "one pod row, none for the plain container"
    );
    let counters = c.counters();
    assert_eq!((counters.containers, counters.pods), (3, 1));
    assert_eq!(counters.read_errors, 0, "{counters:?}");

    // Snoopers select containers; the pod row sums only the selected ones.
    let (only_b, _) = collect_cycle(
        root,
        &Snoop {
            mode: SnoopMode::Include,
            pids: vec![200],
        },
    );
    assert_eq!(only_b.pods.len(), 1);
    assert_eq!(
        (only_b.pods[0].containers, only_b.pods[0].processes),
        (1, 1)
    );
    let (only_c, c) = collect_cycle(
        root,
        &Snoop {
            mode: SnoopMode::Include,
            pids: vec![300],
        },
    );
    assert!(only_c.pods.is_empty(), "{:?}", only_c.pods);
    assert_eq!(c.counters().pods, 0);
}

#[test]
fn kubepods_containers_make_one_pod_row_on_a_v2_systemd_host() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    put(
        root,
        "proc/self/mountinfo",
        "24 18 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
    );
    proc_base(root);
    // kubelet's systemd driver: the pod slice spells the uid with underscores.
    let slice = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
        POD_UID.replace('-', "_")
    );
    let path = |id: &str| {
        if id == ID_C {
            format!("/system.slice/docker-{id}.scope")
        } else {
            format!("{slice}/cri-containerd-{id}.scope")
        }
    };
    pod_processes(root, |id| format!("0::{}\n", path(id)));
    for (id, cpu_us, mem) in [
        (ID_A, 2_000_000u64, 4096u64),
        (ID_B, 500_000, 1024),
        (ID_C, 1_000_000, 1),
    ] {
        let g = |file: &str| format!("sys/fs/cgroup{}/{file}", path(id));
        put(root, &g("cpu.stat"), &format!("usage_usec {cpu_us}\n"));
        put(root, &g("memory.current"), &format!("{mem}\n"));
        put(root, &g("memory.stat"), "inactive_file 0\n");
        // B's cgroup has no pids controller: its processes seen in /proc (1) are counted.
        if id != ID_B {
            put(root, &g("pids.current"), "3\n");
        }
    }
    let (cycle, c) = collect_cycle(root, &Snoop::default());
    assert_eq!(cycle.containers.len(), 3);
    assert_eq!(cycle.containers[1].processes, None);
    assert_eq!(
        cycle.pods,
        [PodSample {
            pod_uid: POD_UID.to_string(),
            containers: 2,
            processes: 3 + 1,
            cpu_usage_s: Some(2.5),
            mem_working_set: Some(5120),
        }]
    );
    assert_eq!(
        pod_records(&cycle, &c),
        [[POD_UID, "2", "4", "2.5", "5120"]]
    );
    assert_eq!(c.counters().read_errors, 0, "{:?}", c.counters());
}
