//! `proc_pygc` (sub-probe `proc_pygc`, `-P 8192`): CPython's garbage collections per process,
//! from its USDT probes `python:gc__start` and `python:gc__done` (CPython built with
//! `--with-dtrace`, as Debian's and Fedora's are). The probes are attached to the Python each
//! tracked process maps — the `python3.x` executable or `libpython3.x.so`, a container's own
//! through `/proc/<pid>/root` ([`probe_sdk::bpf::uprobe_libs`]); attaching sets the probes'
//! semaphores, so an untraced Python does not even reach them.

use std::path::Path;

use libbpf_rs::Link;
use probe_sdk::bpf::uprobe_libs::LibHooks;

use crate::skel::ProcProgs;

/// Which mapped files carry CPython: the interpreter (`python3.11`) or its shared library
/// (`libpython3.11.so.1.0`).
pub fn is_python(name: &str) -> bool {
    let rest = name
        .strip_prefix("libpython")
        .or_else(|| name.strip_prefix("python"));
    rest.is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
}

/// The hooks' targets.
pub fn python_hooks() -> LibHooks {
    LibHooks::new("python", is_python)
}

/// Attaches the two GC probes to the Python at `path` (for process `pid`, or every process
/// mapping it when `pid` is -1). A Python without them (built without dtrace) is an error.
pub fn attach(progs: &ProcProgs<'_>, pid: i32, path: &Path) -> Result<Vec<Link>, String> {
    let start = progs
        .pygc_begin
        .attach_usdt(pid, path, "python", "gc__start")
        .map_err(|e| format!("python:gc__start: {e}"))?;
    let done = progs
        .pygc_end
        .attach_usdt(pid, path, "python", "gc__done")
        .map_err(|e| format!("python:gc__done: {e}"))?;
    Ok(vec![start, done])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_names() {
        for yes in ["python3.11", "python3", "libpython3.12.so.1.0", "python2.7"] {
            assert!(is_python(yes), "{yes}");
        }
        for no in [
            "python",
            "pythonista",
            "libpython.so",
            "ipython3",
            "libc.so.6",
        ] {
            assert!(!is_python(no), "{no}");
        }
    }
}
