//! Real podman containers for tests (feature `podman`): each [`Podman`] has its own storage,
//! run root and `containers.conf` under a directory the test owns, so tests run in parallel and
//! leave nothing behind. How podman runs on this machine kind (runc, cgroupfs manager, no default
//! ulimits, images imported from a local root filesystem) is recorded in
//! `shared/facts/containers-and-servers.md`.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// One isolated podman (storage, run root, config) under a test's directory.
#[derive(Debug)]
pub struct Podman {
    dir: PathBuf,
}

fn check(out: Output, what: &str) -> io::Result<String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(io::Error::other(format!(
            "podman {what}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl Podman {
    /// Whether `podman` and `runc` are installed.
    pub fn available() -> bool {
        ["podman", "runc"].iter().all(|b| {
            Command::new(b)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    }

    /// A podman keeping everything under `dir` (created if missing).
    pub fn new(dir: &Path) -> io::Result<Podman> {
        std::fs::create_dir_all(dir.join("run"))?;
        std::fs::create_dir_all(dir.join("tmp"))?;
        // crun refuses hybrid cgroups; default ulimits need CAP_SYS_RESOURCE. Its own tmp_dir
        // keeps the events log (and exit files) apart from other podman instances.
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                "[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\ntmp_dir = \"{}\"\n",
                dir.join("tmp").display()
            ),
        )?;
        Ok(Podman {
            dir: dir.to_path_buf(),
        })
    }

    /// `podman` with this instance's storage and config; add arguments and run it.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .arg("--root")
            .arg(self.dir.join("storage"))
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .args(["--runtime", "runc", "--cgroup-manager=cgroupfs"])
            .stdin(Stdio::null());
        c
    }

    /// Run podman with `args`; its stdout, trimmed.
    pub fn run_args(&self, args: &[&str]) -> io::Result<String> {
        let out = self.cmd().args(args).output()?;
        check(out, &args.join(" "))
    }

    /// Import `rootfs` (a directory) as image `tag`.
    pub fn import_dir(&self, rootfs: &Path, tag: &str) -> io::Result<()> {
        let tar = self
            .dir
            .join(format!("{}.tar", tag.replace(['/', ':'], "_")));
        let out = Command::new("tar")
            .arg("-C")
            .arg(rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .output()?;
        check(out, "tar")?;
        let tar = tar.to_string_lossy().into_owned();
        self.run_args(&["import", &tar, tag]).map(drop)
    }

    /// Import a busybox image (`/bin/busybox` of `busybox-static` with `sh`, `sleep`, `cat`,
    /// `dd`, `yes`, `head`, `nc`, `top` links) as `tag`.
    pub fn import_busybox(&self, tag: &str) -> io::Result<()> {
        let root = self.dir.join("busybox-rootfs");
        std::fs::create_dir_all(root.join("bin"))?;
        std::fs::create_dir_all(root.join("tmp"))?;
        std::fs::copy("/bin/busybox", root.join("bin/busybox"))?;
        for applet in ["sh", "sleep", "cat", "dd", "yes", "head", "nc", "top", "ls"] {
            let link = root.join("bin").join(applet);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink("busybox", &link)?;
            }
        }
        self.import_dir(&root, tag)
    }

    /// `podman run -d --network none --name NAME [extra…] IMAGE ARGS…`; the container id.
    pub fn run_detached(
        &self,
        name: &str,
        extra: &[&str],
        image: &str,
        args: &[&str],
    ) -> io::Result<String> {
        let mut all = vec!["run", "-d", "--network", "none", "--name", name];
        all.extend_from_slice(extra);
        all.push(image);
        all.extend_from_slice(args);
        self.run_args(&all)
    }

    /// The host pid of a running container's first process.
    pub fn pid(&self, name: &str) -> io::Result<u32> {
        let s = self.run_args(&["inspect", "-f", "{{.State.Pid}}", name])?;
        s.parse()
            .map_err(|_| io::Error::other(format!("podman inspect pid: {s:?}")))
    }

    /// Start the Docker-compatible API service on the unix socket `socket` (`podman system
    /// service --time=0`); kill the child to stop it.
    pub fn service(&self, socket: &Path) -> io::Result<Child> {
        self.cmd()
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    }

    /// Remove a container at once (`rm -f -t 0`).
    pub fn rm(&self, name: &str) -> io::Result<()> {
        self.run_args(&["rm", "-f", "-t", "0", name]).map(drop)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self
            .cmd()
            .args(["rm", "-a", "-f", "-t", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
