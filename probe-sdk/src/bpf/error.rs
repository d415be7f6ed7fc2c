//! Error type of the eBPF platform.

use std::io;
use std::path::PathBuf;

/// Why an eBPF platform operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// tracefs is not reachable and mounting it failed (needs CAP_SYS_ADMIN).
    #[error("cannot mount tracefs on {path}: {source}")]
    TracefsMount {
        /// Mount point that was tried.
        path: PathBuf,
        /// The mount(2) error.
        source: io::Error,
    },
    /// The BTF file given with `-b` does not exist.
    #[error("custom BTF file {0} does not exist")]
    CustomBtfMissing(PathBuf),
    /// The kernel exposes no BTF and no custom BTF was given or found.
    #[error("kernel has no BTF (/sys/kernel/btf/vmlinux) and no custom BTF found (pass -b <file>, or install {0})")]
    NoBtf(PathBuf),
    /// A libbpf call failed.
    #[error("libbpf: {0}")]
    Libbpf(#[from] libbpf_rs::Error),
}
