//! The host root: with `GOPHER_HOST_PATH=<dir>` (the daemon exports it from
//! `global.host_root`), the real binary reads the host's `/proc`, `/sys` and `/etc` below
//! `<dir>`, as it does in a container that mounts the host's `/` at `/host`. The fake host tree
//! holds values the real machine does not have (a chosen `MemTotal`, kernel release, host name,
//! os-release, a process id above any live one, a mount table), so each assertion fails if the
//! value was read from the real `/`.

mod common;

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_system_infos");

/// `MemTotal` of the fake host, in kB (48 GiB + 1 kB: no real machine here has it).
const MEM_TOTAL_KB: u64 = 50_331_649;
/// A process that exists only in the fake tree (the default `pid_max` is 4194304).
const FAKE_PID: u32 = 4_000_001;
const CONTAINER: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn write(root: &Path, rel: &str, text: impl AsRef<[u8]>) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn real(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The real `/proc/meminfo` with `MemTotal` replaced.
fn fake_meminfo() -> String {
    real("/proc/meminfo")
        .lines()
        .map(|l| {
            if l.starts_with("MemTotal:") {
                format!("MemTotal:       {MEM_TOTAL_KB} kB\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

/// A host tree under `root`: copies of the real global `/proc` files (with a chosen
/// `MemTotal`), chosen kernel facts and `/etc` files, PID 1's and PID 42's mount namespaces,
/// and one process, [`FAKE_PID`], built from this test's own `/proc/self`.
fn fake_host(root: &Path) {
    for f in [
        "stat",
        "softirqs",
        "cpuinfo",
        "loadavg",
        "sys/fs/dentry-state",
    ] {
        write(root, &format!("proc/{f}"), real(&format!("/proc/{f}")));
    }
    write(root, "proc/meminfo", fake_meminfo());
    write(root, "proc/uptime", "424242.50 10.00\n");
    write(root, "proc/sys/kernel/osrelease", "9.8.7-hostroot-test\n");
    write(root, "proc/sys/kernel/hostname", "kernel-name-not-used\n");
    write(root, "proc/net/fib_trie", "");
    write(root, "etc/hostname", "fake-host-name\n");
    write(
        root,
        "etc/os-release",
        "NAME=Fake\nPRETTY_NAME=\"Fake Host OS 42\"\n",
    );
    write(root, "sys/devices/system/cpu/present", "0-6\n");

    // PID 1's mount namespace: one filesystem at `/`, queried through `proc/1/root`.
    write(
        root,
        "proc/1/mountinfo",
        "27 1 254:0 / / rw,relatime - ext4 /dev/fake-root rw\n",
    );
    std::fs::create_dir_all(root.join("proc/1/root")).expect("mkdir root");
    // PID 42's (`--mount-ns-pid 42`): a second filesystem at /srv/data.
    write(
        root,
        "proc/42/mountinfo",
        "30 1 254:0 / / rw - ext4 /dev/fake-42 rw\n\
         31 30 254:1 / /srv/data rw - xfs /dev/fake-data rw\n",
    );
    std::fs::create_dir_all(root.join("proc/42/root/srv/data")).expect("mkdir data");

    // One process, from this test's own files with another pid and name.
    let pid_dir = format!("proc/{FAKE_PID}");
    let stat = real("/proc/self/stat");
    let after_comm = stat.rsplit_once(')').expect("stat has a comm").1;
    write(
        root,
        &format!("{pid_dir}/stat"),
        format!("{FAKE_PID} (fake-proc){after_comm}"),
    );
    for f in ["io", "limits", "smaps_rollup"] {
        write(
            root,
            &format!("{pid_dir}/{f}"),
            real(&format!("/proc/self/{f}")),
        );
    }
    write(
        root,
        &format!("{pid_dir}/cgroup"),
        format!("0::/system.slice/docker-{CONTAINER}.scope\n"),
    );
    write(
        root,
        &format!("{pid_dir}/cmdline"),
        b"fake-proc\0--in-the-tree\0",
    );
    for fd in ["0", "1", "2"] {
        write(root, &format!("{pid_dir}/fd/{fd}"), "");
    }
}

/// Runs `system_infos -t 1 --once -P 227 -f FAKE_PID <args>` (cpu, mem, df, proc, os) with
/// the host root `root`; returns its stdout.
fn run_under(root: &Path, args: &[&str]) -> String {
    let pid = FAKE_PID.to_string();
    let out = Command::new(BIN)
        .args(["-t", "1", "--once", "-P", "227", "-f", &pid])
        .args(args)
        .env("GOPHER_HOST_PATH", root)
        .output()
        .expect("run system_infos");
    assert!(
        out.status.success(),
        "exit {:?}, stderr {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

#[test]
fn every_host_file_is_read_below_the_host_root() {
    assert!(
        !Path::new(&format!("/proc/{FAKE_PID}")).exists(),
        "pid {FAKE_PID} exists on this machine; the test needs one that does not"
    );
    let real_total = real("/proc/meminfo");
    assert!(
        !real_total.contains(&format!(" {MEM_TOTAL_KB} kB")),
        "this machine has the chosen MemTotal"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    fake_host(dir.path());
    let out = run_under(dir.path(), &[]);
    let recs = common::check_against_meta(&out);
    let meta = common::meta_tables();
    let f = |table: &str, rec: &[String], field: &str| -> String {
        common::field(&meta, table, rec, field).to_string()
    };

    let mem = &recs["system_meminfo"][0];
    assert_eq!(
        f("system_meminfo", mem, "total_kB"),
        MEM_TOTAL_KB.to_string()
    );

    let os = &recs["system_os"][0];
    assert_eq!(os[0], "Fake Host OS 42", "os-release of the tree: {os:?}");
    assert_eq!(f("system_os", os, "hostname"), "fake-host-name");
    assert_eq!(f("system_os", os, "kversion"), "9.8.7-hostroot-test");
    assert_eq!(f("system_os", os, "cpu_num"), "7");
    assert_eq!(
        f("system_os", os, "memory_MB"),
        (MEM_TOTAL_KB / 1024).to_string()
    );
    assert_eq!(f("system_os", os, "uptime_secs"), "424242");

    let procs = &recs["system_proc"];
    assert_eq!(procs.len(), 1, "{procs:?}");
    assert_eq!(procs[0][0], FAKE_PID.to_string());
    assert_eq!(f("system_proc", &procs[0], "comm"), "fake-proc");
    assert_eq!(
        f("system_proc", &procs[0], "cmdline"),
        "fake-proc --in-the-tree"
    );
    assert_eq!(
        f("system_proc", &procs[0], "container_id"),
        &CONTAINER[..12]
    );
    assert_eq!(f("system_proc", &procs[0], "fd_count"), "3");

    // PID 1's mount table, each mount point measured through `<root>/proc/1/root`.
    let df = &recs["system_df"];
    assert_eq!(df.len(), 1, "{df:?}");
    assert_eq!(df[0][0], "/");
    assert_eq!(f("system_df", &df[0], "Fsname"), "/dev/fake-root");
    let st = nix::sys::statvfs::statvfs(&dir.path().join("proc/1/root")).expect("statvfs");
    #[allow(clippy::useless_conversion)]
    let inodes = u64::from(st.files());
    assert_eq!(f("system_df", &df[0], "Inodes"), inodes.to_string());

    let stats = &recs["system_infos_stats"][0];
    assert_eq!(
        f("system_infos_stats", stats, "read_errors_total"),
        "0",
        "every file read was in the tree:\n{out}"
    );
}

#[test]
fn mount_ns_pid_is_a_process_of_the_host_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    fake_host(dir.path());
    let out = run_under(dir.path(), &["--mount-ns-pid", "42"]);
    let recs = common::check_against_meta(&out);
    let mut df: Vec<(String, String)> = recs["system_df"]
        .iter()
        .map(|r| (r[0].clone(), r[2].clone()))
        .collect();
    df.sort();
    assert_eq!(
        df,
        [
            ("/".to_string(), "/dev/fake-42".to_string()),
            ("/srv/data".to_string(), "/dev/fake-data".to_string())
        ],
        "{out}"
    );
}

/// The host's `/etc/os-release` name, read by this test.
fn host_os_name() -> String {
    let text = real("/etc/os-release");
    system_infos::os::parse_os_release(&text).expect("PRETTY_NAME or NAME in /etc/os-release")
}

/// The source of `/` in this test's own mount table (the host's, as the probe must report it).
fn host_root_source() -> String {
    system_infos::fs::parse_mountinfo(&real("/proc/self/mountinfo"))
        .into_iter()
        .rfind(|m| m.target == "/")
        .expect("/ mounted")
        .source
}

/// Runs the probe in a real podman container (busybox image, the binary and the host's
/// libraries bind-mounted; no `--pid=host`), with the host's `/` at `/host`; `host_root` sets
/// `GOPHER_HOST_PATH=/host`. Returns stdout.
fn run_in_container(
    podman: &container_info::podman::Podman,
    host_root: bool,
    args: &[&str],
) -> String {
    let bin = format!("{BIN}:/gg/system_infos:ro");
    let mut all = vec![
        "run",
        "--rm",
        "--privileged",
        "--network",
        "none",
        "-v",
        "/:/host:ro",
        "-v",
        &bin,
        "-v",
        "/lib:/lib:ro",
        "-v",
        "/lib64:/lib64:ro",
    ];
    if host_root {
        all.extend(["-e", "GOPHER_HOST_PATH=/host"]);
    }
    all.extend(["localhost/gg-hostroot:1", "/gg/system_infos"]);
    all.extend(args);
    podman
        .run_args(&all)
        .unwrap_or_else(|e| panic!("system_infos in a container: {e}"))
}

#[test]
fn in_a_container_the_host_is_read_through_the_host_root() {
    use container_info::podman::Podman;
    assert!(
        Podman::available(),
        "podman and runc are needed (apt-get install podman runc)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let podman = Podman::new(&dir.path().join("podman")).expect("podman dir");
    podman
        .import_busybox("localhost/gg-hostroot:1")
        .expect("import busybox");
    // A host process the container's own pid namespace does not have.
    let sleep = dir.path().join("gg-hostroot-t");
    std::fs::copy("/bin/sleep", &sleep).expect("copy /bin/sleep");
    let mut child = std::process::Command::new(&sleep)
        .arg("60")
        .spawn()
        .expect("spawn");
    let pid = child.id().to_string();
    let args = [
        "-t",
        "1",
        "--once",
        "-P",
        "224",
        "-f",
        &pid,
        "--mount-ns-pid",
        &pid,
    ];

    let out = run_in_container(&podman, true, &args);
    let plain = run_in_container(&podman, false, &args);
    let _ = child.kill();
    let _ = child.wait();

    let recs = common::check_against_meta(&out);
    let meta = common::meta_tables();
    let procs = &recs["system_proc"];
    assert_eq!(procs.len(), 1, "{out}");
    assert_eq!(procs[0][0], pid);
    assert_eq!(
        common::field(&meta, "system_proc", &procs[0], "comm"),
        "gg-hostroot-t"
    );
    assert_eq!(recs["system_os"][0][0], host_os_name(), "{out}");
    // The host's mount table as the host sees it: its `/`, and not the container's `/host`.
    let df: Vec<(&str, &str)> = recs["system_df"]
        .iter()
        .map(|r| (r[0].as_str(), r[2].as_str()))
        .collect();
    assert!(
        df.contains(&("/", host_root_source().as_str())),
        "host / missing: {df:?}"
    );
    assert!(
        df.iter().all(|(target, _)| !target.starts_with("/host")),
        "the container's own mounts were reported: {df:?}"
    );

    // The same container without the host root sees neither (so the assertions above can fail).
    let plain = common::check_against_meta(&plain);
    assert!(!plain.contains_key("system_proc"), "{plain:?}");
    assert_ne!(plain["system_os"][0][0], host_os_name());
}
