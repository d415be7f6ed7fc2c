//! tracefs: classic `tp/` programs are resolved by libbpf through
//! `<tracefs>/events/<category>/<name>/id`, so tracefs must be mounted where libbpf looks.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::btf;
use super::BpfError;

/// libbpf (1.x) prefers this path whenever it exists (debugfs mounted with its tracing automount).
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";
/// The canonical tracefs mount point, used by libbpf otherwise.
const TRACEFS: &str = "/sys/kernel/tracing";

/// The directory libbpf will read tracepoint ids from (mirrors libbpf's `tracefs_path()`).
fn libbpf_tracefs_dir() -> &'static Path {
    if Path::new(DEBUGFS_TRACING).exists() {
        Path::new(DEBUGFS_TRACING)
    } else {
        Path::new(TRACEFS)
    }
}

/// The tracefs root libbpf will use, if tracefs is reachable there (has an `events` dir).
pub fn tracefs_root() -> Option<PathBuf> {
    let dir = libbpf_tracefs_dir();
    dir.join("events").is_dir().then(|| dir.to_path_buf())
}

/// Returns the tracefs root libbpf uses, mounting tracefs on `/sys/kernel/tracing` first if it is
/// not reachable there. Mounting needs CAP_SYS_ADMIN (root has it).
///
/// "Reachable" is judged where libbpf looks (`/sys/kernel/debug/tracing` if that exists, else
/// `/sys/kernel/tracing`), not by scanning mounts: a tracefs mounted elsewhere would not help
/// libbpf attach `tp/` programs.
pub fn ensure_tracefs() -> Result<PathBuf, BpfError> {
    if let Some(root) = tracefs_root() {
        return Ok(root);
    }
    let dir = libbpf_tracefs_dir();
    mount_tracefs(dir).map_err(|source| BpfError::TracefsMount {
        path: dir.to_path_buf(),
        source,
    })?;
    tracefs_root().ok_or_else(|| BpfError::TracefsMount {
        path: dir.to_path_buf(),
        source: io::Error::new(io::ErrorKind::NotFound, "mounted, but no events directory"),
    })
}

fn mount_tracefs(dir: &Path) -> io::Result<()> {
    let target = CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let fstype = c"tracefs";
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call; data is NULL,
    // which tracefs accepts (no mount options).
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// True if a path component is a plain name (no separators, not `.`/`..`, not empty).
fn plain_component(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\0')
}

/// Whether the classic tracepoint `category:name` exists.
///
/// Answered from `<tracefs>/events/<category>/<name>/id` (mounting tracefs if needed). If tracefs
/// cannot be mounted, falls back to the kernel BTF: `btf_trace_<name>` (every real tracepoint
/// has one) or `trace_event_raw_<name>`; in that case only raw_tp/tp_btf attachment will work.
pub fn tracepoint_exists(category: &str, name: &str) -> bool {
    if !plain_component(category) || !plain_component(name) {
        return false;
    }
    match ensure_tracefs() {
        Ok(root) => root
            .join("events")
            .join(category)
            .join(name)
            .join("id")
            .is_file(),
        Err(_) => {
            btf::vmlinux_has_type(&format!("btf_trace_{name}"))
                || btf::vmlinux_has_type(&format!("trace_event_raw_{name}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_path_tricks() {
        assert!(!tracepoint_exists("..", "block_rq_issue"));
        assert!(!tracepoint_exists("block/../block", "block_rq_issue"));
        assert!(!tracepoint_exists("block", ""));
        assert!(!tracepoint_exists("", "x"));
    }
}
