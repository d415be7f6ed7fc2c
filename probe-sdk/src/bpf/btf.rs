//! Kernel BTF: which raw tracepoints exist, and which BTF file CO-RE relocations should use.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libbpf_rs::btf::{types, BtfType};
use libbpf_rs::Btf;
use libbpf_rs::ObjectBuilder;

use super::BpfError;

/// Where the running kernel exposes its own BTF.
const SYSFS_VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Upstream gala-gopher's BTF cache for kernels without BTF: `<dir>/<uname -r>.btf`.
pub const UPSTREAM_BTF_DIR: &str = "/opt/gala-gopher/btf";

/// Type-name prefixes kept from the kernel BTF; everything else is dropped after the scan so the
/// probe does not keep megabytes of type names alive.
const KEPT_PREFIXES: [&str; 2] = ["btf_trace_", "trace_event_raw_"];

/// Names of tracepoint-related types in the kernel BTF, or None if no BTF could be loaded.
fn tracepoint_type_names() -> Option<&'static HashSet<Box<str>>> {
    static NAMES: OnceLock<Option<HashSet<Box<str>>>> = OnceLock::new();
    NAMES.get_or_init(load_tracepoint_type_names).as_ref()
}

fn load_tracepoint_type_names() -> Option<HashSet<Box<str>>> {
    // libbpf searches /sys/kernel/btf/vmlinux, then /boot/vmlinux-<release> and similar.
    let btf = match btf_path(None) {
        Ok(Some(custom)) => Btf::from_path(custom).ok()?,
        _ => Btf::from_vmlinux().ok()?,
    };
    let mut names = HashSet::new();
    // Type ids are 1..=len; id 0 is `void`.
    for id in 1..=btf.len() {
        let Ok(id) = u32::try_from(id) else { break };
        let Some(ty) = btf.type_by_id::<BtfType<'_>>(id.into()) else {
            continue;
        };
        if let Some(name) = ty.name().and_then(|n| n.to_str()) {
            if KEPT_PREFIXES.iter().any(|p| name.starts_with(p)) {
                names.insert(Box::from(name));
            }
        }
    }
    Some(names)
}

/// Whether the kernel BTF has a type called `name`; only names starting with `btf_trace_` or
/// `trace_event_raw_` are known (false otherwise, and false without kernel BTF).
pub(crate) fn vmlinux_has_type(name: &str) -> bool {
    debug_assert!(KEPT_PREFIXES.iter().any(|p| name.starts_with(p)));
    tracepoint_type_names().is_some_and(|names| names.contains(name))
}

/// Whether the raw tracepoint `name` (e.g. `block_rq_issue`) exists: the kernel BTF has the
/// typedef `btf_trace_<name>` that every tracepoint usable by `raw_tp/` and `tp_btf/` gets.
/// Needs no tracefs. Syscall events (`sys_enter_openat`) are not raw tracepoints; use
/// `sys_enter`/`sys_exit`.
pub fn raw_tracepoint_exists(name: &str) -> bool {
    vmlinux_has_type(&format!("btf_trace_{name}"))
}

/// Whether tracepoint `event`'s record, `struct trace_event_raw_<event>` in the kernel BTF, has
/// a field called `field` (e.g. `kfree_skb`'s `rx_sk`, added in Linux 6.13). Reads the kernel
/// BTF, so it needs no tracefs; false without BTF or without the event. Loads the BTF on every
/// call: meant for start-up checks.
pub fn trace_event_has_field(event: &str, field: &str) -> bool {
    let btf = match btf_path(None) {
        Ok(Some(custom)) => Btf::from_path(custom).ok(),
        _ => Btf::from_vmlinux().ok(),
    };
    let Some(btf) = btf else { return false };
    let name = format!("trace_event_raw_{event}");
    if name.contains('\0') {
        return false;
    }
    btf.type_by_name::<types::Struct<'_>>(&name)
        .is_some_and(|s| s.iter().any(|m| m.name.is_some_and(|n| n == field)))
}

fn kernel_release() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string())
}

/// The BTF file CO-RE relocations should use, for kernels without `/sys/kernel/btf/vmlinux`.
///
/// * `custom` given (flag `-b`): `Some(custom)` if the file exists, else an error.
/// * otherwise, the kernel has BTF: `None` (libbpf uses the kernel's own).
/// * otherwise `Some(/opt/gala-gopher/btf/<uname -r>.btf)` if that exists (upstream's layout),
///   else [`BpfError::NoBtf`].
pub fn btf_path(custom: Option<&Path>) -> Result<Option<PathBuf>, BpfError> {
    if let Some(custom) = custom {
        return if custom.is_file() {
            Ok(Some(custom.to_path_buf()))
        } else {
            Err(BpfError::CustomBtfMissing(custom.to_path_buf()))
        };
    }
    if Path::new(SYSFS_VMLINUX_BTF).is_file() {
        return Ok(None);
    }
    let release = kernel_release().unwrap_or_default();
    let cached = Path::new(UPSTREAM_BTF_DIR).join(format!("{release}.btf"));
    if cached.is_file() {
        Ok(Some(cached))
    } else {
        Err(BpfError::NoBtf(cached))
    }
}

/// An `ObjectBuilder` whose open options carry `btf_custom_path` when [`btf_path`] selects one.
///
/// Every libbpf-rs skeleton builder has a public `obj_builder` field; set it before `open`:
///
/// ```ignore
/// let builder = IoSkelBuilder {
///     obj_builder: probe_sdk::bpf::object_builder(args.btf_path.as_deref())?,
/// };
/// let open = builder.open(&mut open_object)?;
/// ```
pub fn object_builder(custom: Option<&Path>) -> Result<ObjectBuilder, BpfError> {
    let mut builder = ObjectBuilder::default();
    if let Some(path) = btf_path(custom)? {
        builder.btf_custom_path(path)?;
    }
    Ok(builder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_custom_btf_is_an_error() {
        let err = btf_path(Some(Path::new("/nonexistent/x.btf"))).unwrap_err();
        assert!(matches!(err, BpfError::CustomBtfMissing(_)), "{err}");
        assert!(object_builder(Some(Path::new("/nonexistent/x.btf"))).is_err());
    }

    #[test]
    fn existing_custom_btf_is_selected() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k.btf");
        std::fs::write(&file, b"not checked here").unwrap();
        assert_eq!(btf_path(Some(&file)).unwrap(), Some(file.clone()));
        // The builder differs from the default one exactly by the custom path.
        assert_ne!(
            object_builder(Some(&file)).unwrap(),
            ObjectBuilder::default()
        );
    }

    #[test]
    fn trace_event_fields_come_from_btf() {
        // sched_process_exec's record has had `filename` (a __data_loc) and `pid` for ever.
        assert!(trace_event_has_field("sched_process_exec", "pid"));
        assert!(!trace_event_has_field(
            "sched_process_exec",
            "no_such_field"
        ));
        assert!(!trace_event_has_field("no_such_event", "pid"));
        assert!(!trace_event_has_field("bad\0name", "pid"));
        // This project's kernels (6.13+) pass kfree_skb the receiving socket.
        assert!(trace_event_has_field("kfree_skb", "rx_sk"));
    }

    #[test]
    fn kernel_btf_needs_no_custom_path() {
        // The project's kernels (and CI) expose BTF in sysfs.
        assert!(Path::new(SYSFS_VMLINUX_BTF).is_file());
        assert_eq!(btf_path(None).unwrap(), None);
        assert_eq!(object_builder(None).unwrap(), ObjectBuilder::default());
    }
}
