//! Which containers run: every `/proc/<pid>/cgroup` is read and named by
//! `container_info::cgroup::parse`; processes are grouped by container id.

use std::collections::BTreeMap;
use std::path::Path;

use container_info::cgroup::ContainerRef;
use probe_sdk::decl::Snoop;

use crate::read::{self, ReadError};

/// `/proc` entries read per cycle; further ones are counted, not read.
pub const MAX_PROCS: usize = 1 << 18;
/// Containers reported per cycle (the first by id); further ones are counted.
pub const MAX_CONTAINERS: usize = 4096;

/// Names the container of a process from its cgroup file text (`None`: a host process).
pub type Identify = fn(&str) -> Option<ContainerRef>;

/// One container and its processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Full container id.
    pub id: String,
    /// Uid of its Kubernetes pod, from a `kubepods` cgroup path (`ContainerRef::pod_uid`).
    pub pod_uid: Option<String>,
    /// Its processes (tgids), ascending.
    pub pids: Vec<u32>,
    /// The cgroup lines of its first process that name the container, each path cut after the
    /// component holding the id (so a process in a sub-cgroup gives the container's own cgroup),
    /// as `(controllers, path)`. Lines that do not name it (a hierarchy the runtime put no
    /// cgroup in for it) are left out: their cgroup is not the container's.
    pub lines: Vec<(String, String)>,
}

/// What one scan found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Containers to report, ascending by id (at most [`MAX_CONTAINERS`]).
    pub containers: Vec<Found>,
    /// Containers selected but left out by [`MAX_CONTAINERS`].
    pub containers_over_cap: u64,
    /// `/proc` entries not read because of [`MAX_PROCS`].
    pub procs_over_cap: u64,
    /// cgroup files that could not be read (a process that exited is not counted).
    pub read_errors: u64,
}

/// `path` up to the end of the component that holds `id`, or None if no component does.
pub fn cut_at_id<'a>(path: &'a str, id: &str) -> Option<&'a str> {
    let at = path.find(id)?;
    let end = path[at..].find('/').map_or(path.len(), |i| at + i);
    Some(&path[..end])
}

fn container_lines(text: &str, id: &str) -> Vec<(String, String)> {
    crate::proc_files::cgroup_lines(text)
        .into_iter()
        .filter_map(|l| {
            Some((
                l.controllers.to_string(),
                cut_at_id(l.path, id)?.to_string(),
            ))
        })
        .collect()
}

/// Scans `proc`: the containers with at least one process that `snoop` selects.
pub fn scan(proc: &Path, identify: Identify, snoop: &Snoop) -> Scan {
    let mut scan = Scan::default();
    let mut all: BTreeMap<String, Found> = BTreeMap::new();
    let entries = match std::fs::read_dir(proc) {
        Ok(e) => e,
        Err(e) => {
            probe_sdk::warn!("cannot list {}: {e}", proc.display());
            scan.read_errors += 1;
            return scan;
        }
    };
    let mut read = 0usize;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if read == MAX_PROCS {
            scan.procs_over_cap += 1;
            continue;
        }
        read += 1;
        let text = match read::read_bounded(&entry.path().join("cgroup"), read::SMALL) {
            Ok(t) => t,
            Err(ReadError::Missing) => continue,
            Err(_) => {
                scan.read_errors += 1;
                continue;
            }
        };
        let Some(found) = identify(&text) else {
            continue;
        };
        let slot = all.entry(found.id.clone()).or_insert_with(|| Found {
            lines: container_lines(&text, &found.id),
            id: found.id,
            pod_uid: found.pod_uid,
            pids: Vec::new(),
        });
        slot.pids.push(pid);
    }
    for (_, mut c) in all {
        c.pids.sort_unstable();
        if !c.pids.iter().any(|p| snoop.selects(*p)) {
            continue;
        }
        if scan.containers.len() == MAX_CONTAINERS {
            scan.containers_over_cap += 1;
            continue;
        }
        scan.containers.push(c);
    }
    scan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_the_container_component() {
        let id = "abc123";
        assert_eq!(
            cut_at_id("/libpod_parent/libpod-abc123/init.scope", id),
            Some("/libpod_parent/libpod-abc123")
        );
        assert_eq!(
            cut_at_id("/system.slice/docker-abc123.scope", id),
            Some("/system.slice/docker-abc123.scope")
        );
        assert_eq!(cut_at_id("/", id), None);
        let lines = container_lines(
            "9:name=systemd:/\n4:memory:/docker/abc123/sub\n0::/docker/abc123\n",
            id,
        );
        assert_eq!(
            lines,
            [
                ("memory".to_string(), "/docker/abc123".to_string()),
                (String::new(), "/docker/abc123".to_string())
            ]
        );
    }
}
