//! The host root: with `GOPHER_HOST_PATH=<dir>`, the whitelist (`-w`) is matched against
//! `<dir>/proc`, not the probe's own `/proc`. The fake tree names one real process
//! `tp-fake-name`, which no process on this machine is called: only that process may be tracked.

mod common;

use std::process::{Child, Command};
use std::time::Duration;

use common::Probe;

const ATTACH: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(15);

/// A running copy of `sleep` named `name` (its comm), killed on drop.
struct Sleeper(Child);

impl Sleeper {
    fn start(dir: &std::path::Path, name: &str) -> Sleeper {
        let bin = dir.join(name);
        std::fs::copy("/bin/sleep", &bin).expect("copy /bin/sleep");
        Sleeper(Command::new(&bin).arg("120").spawn().expect("spawn sleep"))
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_whitelist_reads_the_host_root() {
    // SAFETY: geteuid has no preconditions.
    assert!(
        unsafe { libc::geteuid() } == 0,
        "taskprobe loads BPF programs: run the tests as root"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let chosen = Sleeper::start(dir.path(), "tp-hr-chosen");
    let other = Sleeper::start(dir.path(), "tp-hr-other");

    // The host tree: only `chosen` exists there, under a name the whitelist selects.
    let root = dir.path().join("host");
    let pid_dir = root.join(format!("proc/{}", chosen.pid()));
    std::fs::create_dir_all(&pid_dir).expect("mkdir");
    std::fs::write(pid_dir.join("comm"), "tp-fake-name\n").expect("comm");
    std::fs::write(pid_dir.join("cmdline"), b"tp-fake-name\x00120\x00").expect("cmdline");
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", chosen.pid())).expect("stat");
    std::fs::write(pid_dir.join("stat"), stat).expect("stat");
    let conf = dir.path().join("gala-gopher-app.conf");
    std::fs::write(
        &conf,
        "application = (\n  { comm = \"^tp-fake-name$\"; cmdline = \"\"; }\n);\n",
    )
    .expect("write whitelist");

    let root_s = root.to_str().expect("utf-8 path");
    let conf_s = conf.to_str().expect("utf-8 path");
    let mut probe = Probe::start(
        &["-t", "1", "-P", "1", "-w", conf_s],
        &[("GOPHER_HOST_PATH", root_s)],
    );
    probe.wait_attached(ATTACH);
    let tracked = |pid: u32| move |r: &common::Record| r.tgid() == Some(pid);
    probe
        .wait_for(WAIT, tracked(chosen.pid()))
        .unwrap_or_else(|| {
            panic!(
                "pid {} (tp-fake-name in the host tree) never tracked: {}",
                chosen.pid(),
                probe.stderr()
            )
        });
    let period = probe.next_period(WAIT);
    assert!(period.iter().any(tracked(chosen.pid())), "{:?}", period);
    let (status, stderr, seen) = probe.stop();
    assert!(status.success(), "{stderr}");
    assert!(
        !seen.iter().any(tracked(other.pid())),
        "pid {} is not in the host tree but was tracked",
        other.pid()
    );
}
