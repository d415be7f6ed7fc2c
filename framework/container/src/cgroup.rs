//! `/proc/<pid>/cgroup` → which container (and pod) a process is in.
//!
//! Each line is `hierarchy-id:controllers:path`: v1 hierarchies name their controllers
//! (`4:memory:/docker/<id>`), the v2 (unified) line is `0::<path>`; hybrid hosts have both.
//! The container id is found by walking a line's path from the leaf up, so the innermost
//! container wins (docker-in-docker), and these component shapes name one:
//!
//! | shape | runtime |
//! |---|---|
//! | `docker-<id>.scope`, `/docker/<id>` | docker (also cri-dockerd) |
//! | `cri-containerd-<id>.scope`, `…slice:cri-containerd:<id>` | containerd |
//! | `crio-<id>.scope` (`crio-conmon-<id>.scope` is conmon, not the container) | CRI-O |
//! | `libpod-<id>.scope`, `libpod-<id>` (`libpod-conmon-…` is conmon) | podman |
//! | `isulad-<id>.scope`, `/isulad/<id>` | iSulad |
//! | `<other>-<id>.scope`, a bare `<id>` (e.g. `/kubepods/burstable/pod<uid>/<id>`) | unknown |
//!
//! where `<id>` is 64 lowercase hex digits. The pod uid comes from an ancestor `pod<uid>`
//! component under `kubepods` (cgroupfs driver) or a `kubepods[-burstable|-besteffort]-pod<uid>.slice`
//! component (systemd driver, whose `_` are turned back into `-`).

use std::io::{self, Read};

/// Lines of a cgroup file looked at (a real one has one per hierarchy: about 15 at most).
pub const MAX_LINES: usize = 64;
/// Longest line looked at; longer lines are skipped (the kernel's own limit is `PATH_MAX`).
pub const MAX_LINE_LEN: usize = 4096;
/// Bytes of `/proc/<pid>/cgroup` read by [`read_pid`].
pub const MAX_FILE_LEN: u64 = (MAX_LINES * MAX_LINE_LEN) as u64;
/// Length of a container id in a cgroup path.
pub const ID_LEN: usize = 64;

/// The runtime a cgroup path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// `docker-<id>.scope`, `/docker/<id>`.
    Docker,
    /// containerd: `cri-containerd-<id>.scope`, `/kubepods/.../<id>` under containerd.
    Containerd,
    /// CRI-O: `crio-<id>.scope`, `crio-conmon-…` (conmon: not the container).
    Crio,
    /// podman / libpod: `libpod-<id>.scope`, `/libpod_parent/libpod-<id>`.
    Podman,
    /// iSulad: `/isulad/<id>`.
    Isulad,
    /// A kubepods path whose runtime the path does not say.
    Unknown,
}

impl Runtime {
    /// Lower-case name (`docker`, `containerd`, `crio`, `podman`, `isulad`, `unknown`).
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::Crio => "crio",
            Runtime::Podman => "podman",
            Runtime::Isulad => "isulad",
            Runtime::Unknown => "unknown",
        }
    }

    /// Whether the Docker Engine API (docker, podman's service) is the first one to ask.
    pub fn prefers_docker_api(self) -> bool {
        matches!(self, Runtime::Docker | Runtime::Podman)
    }
}

/// The container (and pod) a process is in, from its cgroup file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerRef {
    /// Full container id as the path has it (64 lowercase hex digits for every runtime above).
    pub id: String,
    /// The runtime the path names.
    pub runtime: Runtime,
    /// Pod uid from a `kubepods` path (36-char UUID with hyphens; the systemd driver's
    /// underscores turned back into hyphens), if any.
    pub pod_uid: Option<String>,
    /// The container's cgroup path in the v2 (unified) hierarchy, or the v1 `memory` (else
    /// `cpu`) hierarchy's path on v1/hybrid hosts, relative to the hierarchy's mount.
    pub cgroup_path: String,
}

/// Which hierarchy a line is, best first for choosing the id and the `cgroup_path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Hierarchy {
    Memory,
    Cpu,
    Unified,
    OtherV1,
}

fn hierarchy(controllers: &str) -> Hierarchy {
    if controllers.is_empty() {
        return Hierarchy::Unified;
    }
    let mut cpu = false;
    for c in controllers.split(',') {
        match c {
            "memory" => return Hierarchy::Memory,
            "cpu" => cpu = true,
            _ => {}
        }
    }
    if cpu {
        Hierarchy::Cpu
    } else {
        Hierarchy::OtherV1
    }
}

/// Parse the text of `/proc/<pid>/cgroup`; `None` for a host process (no container id in any
/// line). Bounded: only the first 64 lines and 4 KiB per line are looked at.
pub fn parse(text: &str) -> Option<ContainerRef> {
    // (rank, path) of every well-formed line, in file order.
    let mut lines: Vec<(Hierarchy, &str)> = Vec::new();
    for line in text.lines().take(MAX_LINES) {
        if line.len() > MAX_LINE_LEN {
            continue;
        }
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if !path.starts_with('/') {
            continue;
        }
        lines.push((hierarchy(controllers), path));
    }
    // Stable: equal ranks keep file order.
    lines.sort_by_key(|(h, _)| *h);
    let (found, found_path) = lines
        .iter()
        .find_map(|(_, path)| find_in_path(path).map(|f| (f, *path)))?;
    let cgroup_path = lines
        .iter()
        .filter(|(h, _)| *h != Hierarchy::OtherV1)
        .map(|(_, p)| *p)
        .find(|p| p.contains(found.id))
        .unwrap_or(found_path);
    Some(ContainerRef {
        id: found.id.to_string(),
        runtime: found.runtime,
        pod_uid: found.pod_uid,
        cgroup_path: cgroup_path.to_string(),
    })
}

/// Read `/proc/<pid>/cgroup` under the host root ([`crate::host::path`]), at most
/// [`MAX_FILE_LEN`] bytes, and [`parse`] it. `Err` when the process is gone or unreadable.
pub fn read_pid(pid: u32) -> io::Result<Option<ContainerRef>> {
    let file = std::fs::File::open(crate::host::path(format!("/proc/{pid}/cgroup")))?;
    let mut buf = Vec::with_capacity(1024);
    file.take(MAX_FILE_LEN).read_to_end(&mut buf)?;
    Ok(parse(&String::from_utf8_lossy(&buf)))
}

struct Found<'a> {
    id: &'a str,
    runtime: Runtime,
    pod_uid: Option<String>,
}

/// The innermost container a cgroup path names, with the pod uid of its ancestors.
fn find_in_path(path: &str) -> Option<Found<'_>> {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    for i in (0..comps.len()).rev() {
        let parent = if i > 0 { comps[i - 1] } else { "" };
        if let Some((id, runtime)) = container_in(comps[i], parent) {
            // The raw `<slice>:<prefix>:<id>` form carries its pod slice in the same component.
            let own_slice = comps[i].split_once(':').map(|(slice, _)| slice);
            let pod_uid = own_slice
                .into_iter()
                .chain(comps[..i].iter().rev().copied())
                .find_map(|c| pod_uid_in(c, &comps[..i]));
            return Some(Found {
                id,
                runtime,
                pod_uid,
            });
        }
    }
    None
}

fn is_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn runtime_of_prefix(prefix: &str) -> Option<Runtime> {
    Some(match prefix {
        "docker" => Runtime::Docker,
        "cri-containerd" => Runtime::Containerd,
        "crio" => Runtime::Crio,
        "libpod" => Runtime::Podman,
        "isulad" => Runtime::Isulad,
        // conmon scopes hold the runtime's monitor, not the container.
        "crio-conmon" | "libpod-conmon" => return None,
        _ => Runtime::Unknown,
    })
}

/// A container id in one path component, given its parent component.
fn container_in<'a>(comp: &'a str, parent: &str) -> Option<(&'a str, Runtime)> {
    // systemd unit: `<prefix>-<id>.scope`.
    if let Some(stem) = comp.strip_suffix(".scope") {
        let (prefix, id) = split_prefixed(stem, '-')?;
        return runtime_of_prefix(prefix).map(|r| (id, r));
    }
    // runc's systemd cgroupsPath seen raw: `<slice>:<prefix>:<id>`.
    if comp.contains(':') {
        let mut it = comp.rsplitn(3, ':');
        let (Some(id), Some(prefix)) = (it.next(), it.next()) else {
            return None;
        };
        return (is_id(id) && it.next().is_some())
            .then(|| runtime_of_prefix(prefix).map(|r| (id, r)))
            .flatten();
    }
    // cgroupfs podman: `libpod-<id>`.
    if let Some((prefix, id)) = split_prefixed(comp, '-') {
        return runtime_of_prefix(prefix).map(|r| (id, r));
    }
    if is_id(comp) {
        let runtime = match parent {
            "docker" => Runtime::Docker,
            "isulad" => Runtime::Isulad,
            "libpod_parent" => Runtime::Podman,
            _ => Runtime::Unknown,
        };
        return Some((comp, runtime));
    }
    None
}

/// `<prefix><sep><64 hex>` → (prefix, id).
fn split_prefixed(s: &str, sep: char) -> Option<(&str, &str)> {
    if s.len() <= ID_LEN + 1 {
        return None;
    }
    let cut = s.len() - ID_LEN;
    if !s.is_char_boundary(cut) {
        return None;
    }
    let (head, id) = s.split_at(cut);
    let prefix = head.strip_suffix(sep)?;
    (is_id(id) && !prefix.is_empty()).then_some((prefix, id))
}

/// A pod uid in one ancestor component: `pod<uid>` under a `kubepods` ancestor (cgroupfs) or
/// `kubepods[-<qos>]-pod<uid_with_underscores>.slice` (systemd).
fn pod_uid_in(comp: &str, ancestors: &[&str]) -> Option<String> {
    if let Some(stem) = comp.strip_suffix(".slice") {
        if !stem.starts_with("kubepods") {
            return None;
        }
        let at = stem.rfind("-pod")?;
        let uid = stem[at + 4..].replace('_', "-");
        return is_pod_uid(&uid).then_some(uid);
    }
    let uid = comp.strip_prefix("pod")?;
    (is_pod_uid(uid) && ancestors.iter().any(|a| a.starts_with("kubepods")))
        .then(|| uid.to_string())
}

/// A pod uid: a UUID (`8-4-4-4-12` hex) or a static pod's 32 hex digits.
fn is_pod_uid(s: &str) -> bool {
    let hex = |b: u8| b.is_ascii_hexdigit();
    match s.len() {
        32 => s.bytes().all(hex),
        36 => s.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                hex(b)
            }
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "18c7ac49bdca0807221ac15146d543d74ad11fb3094fdd3f491063855edb0bac";

    #[test]
    fn shapes_of_one_component() {
        let cases: &[(&str, &str, Option<Runtime>)] = &[
            ("docker-ID.scope", "system.slice", Some(Runtime::Docker)),
            ("cri-containerd-ID.scope", "x", Some(Runtime::Containerd)),
            ("crio-ID.scope", "x", Some(Runtime::Crio)),
            ("crio-conmon-ID.scope", "x", None),
            ("libpod-conmon-ID.scope", "x", None),
            ("libpod-ID.scope", "machine.slice", Some(Runtime::Podman)),
            ("libpod-ID", "libpod_parent", Some(Runtime::Podman)),
            ("isulad-ID.scope", "x", Some(Runtime::Isulad)),
            ("ID", "docker", Some(Runtime::Docker)),
            ("ID", "isulad", Some(Runtime::Isulad)),
            ("ID", "podabc", Some(Runtime::Unknown)),
            ("foo-ID.scope", "x", Some(Runtime::Unknown)),
            (
                "kubepods-pod1.slice:cri-containerd:ID",
                "x",
                Some(Runtime::Containerd),
            ),
            ("session-3.scope", "user.slice", None),
            ("-ID.scope", "x", None),
        ];
        for (comp, parent, want) in cases {
            let comp = comp.replace("ID", ID);
            let got = container_in(&comp, parent);
            assert_eq!(got.map(|g| g.1), *want, "{comp}");
            if let Some((id, _)) = got {
                assert_eq!(id, ID);
            }
        }
    }

    #[test]
    fn pod_uids() {
        assert!(is_pod_uid("0b6f1b0e-2a3c-4d5e-8f90-123456789abc"));
        assert!(is_pod_uid("6e4f0e9b4f0b0f6e4f0e9b4f0b0f0f0f"));
        assert!(!is_pod_uid("0b6f1b0e_2a3c-4d5e-8f90-123456789abc"));
        assert_eq!(
            pod_uid_in(
                "kubepods-burstable-pod0b6f1b0e_2a3c_4d5e_8f90_123456789abc.slice",
                &[]
            ),
            Some("0b6f1b0e-2a3c-4d5e-8f90-123456789abc".to_string())
        );
        assert_eq!(
            pod_uid_in(
                "pod0b6f1b0e-2a3c-4d5e-8f90-123456789abc",
                &["kubepods", "burstable"]
            ),
            Some("0b6f1b0e-2a3c-4d5e-8f90-123456789abc".to_string())
        );
        // `pod…` outside kubepods is not a pod.
        assert_eq!(
            pod_uid_in("pod0b6f1b0e-2a3c-4d5e-8f90-123456789abc", &["x"]),
            None
        );
    }

    #[test]
    fn overlong_and_extra_lines_are_ignored() {
        let long = format!("4:memory:/{}/docker/{ID}\n", "a".repeat(MAX_LINE_LEN));
        assert_eq!(parse(&long), None);
        let mut many = "1:cpu:/\n".repeat(MAX_LINES);
        many.push_str(&format!("0::/docker/{ID}\n"));
        assert_eq!(parse(&many), None);
    }

    #[test]
    fn multibyte_text_does_not_panic() {
        let s = format!("0::/é{}", "é".repeat(40));
        assert_eq!(parse(&s), None);
        assert_eq!(split_prefixed(&"é".repeat(40), '-'), None);
    }
}
