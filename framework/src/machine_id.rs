//! Machine identity for the `machine_id` label, read from files (never `dmidecode`).
//!
//! Order: DMI `product_uuid` (what upstream's `dmidecode -s system-uuid` printed, lower-cased),
//! then `/etc/machine-id`, then the host name (`/etc/hostname`, then the kernel's). Every file
//! is the host's, read under the host root ([`container_info::host`]).

use std::path::Path;

fn read_trimmed(path: &Path) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let s = s.trim();
    let useless = s.is_empty() || s.chars().all(|c| c == '0' || c == '-');
    (!useless).then(|| s.to_ascii_lowercase())
}

/// Resolve the machine id below `root` (the host root in production; a temp tree in tests).
///
/// `/etc/hostname` comes before `/proc/sys/kernel/hostname` because under a host root the
/// latter is the reader's UTS namespace, a container's name.
pub fn machine_id(root: &Path) -> String {
    [
        "sys/class/dmi/id/product_uuid",
        "etc/machine-id",
        "etc/hostname",
        "proc/sys/kernel/hostname",
    ]
    .iter()
    .find_map(|rel| read_trimmed(&root.join(rel)))
    .unwrap_or_else(|| "unknown".to_string())
}

/// The machine id of the host under this process's host root (`global.host_root`,
/// `GOPHER_HOST_PATH`; `/` on a host install).
pub fn host_machine_id() -> String {
    machine_id(container_info::host::root())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_dmi_then_machine_id() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/machine-id"), "abc123\n").unwrap();
        assert_eq!(machine_id(d.path()), "abc123");
        std::fs::create_dir_all(d.path().join("sys/class/dmi/id")).unwrap();
        std::fs::write(
            d.path().join("sys/class/dmi/id/product_uuid"),
            "4C4C4544-0042-1234\n",
        )
        .unwrap();
        assert_eq!(machine_id(d.path()), "4c4c4544-0042-1234");
        std::fs::write(
            d.path().join("sys/class/dmi/id/product_uuid"),
            "00000000-0000-0000-0000-000000000000\n",
        )
        .unwrap();
        assert_eq!(machine_id(d.path()), "abc123");
    }

    #[test]
    fn host_name_is_the_last_resort() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(machine_id(d.path()), "unknown");
        std::fs::create_dir_all(d.path().join("proc/sys/kernel")).unwrap();
        std::fs::write(d.path().join("proc/sys/kernel/hostname"), "Kernel-Name\n").unwrap();
        assert_eq!(machine_id(d.path()), "kernel-name");
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/hostname"), "etc-name\n").unwrap();
        assert_eq!(machine_id(d.path()), "etc-name");
        std::fs::write(d.path().join("etc/machine-id"), "\n").unwrap();
        assert_eq!(
            machine_id(d.path()),
            "etc-name",
            "an empty machine-id is skipped"
        );
    }
}
