//! Machine identity for the `machine_id` label, read from files (never `dmidecode`).
//!
//! Order: DMI `product_uuid` (what upstream's `dmidecode -s system-uuid` printed, lower-cased),
//! then `/etc/machine-id`, then the hostname.

use std::path::Path;

fn read_trimmed(path: &Path) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let s = s.trim();
    let useless = s.is_empty() || s.chars().all(|c| c == '0' || c == '-');
    (!useless).then(|| s.to_ascii_lowercase())
}

/// Resolve the machine id below `root` (`/` in production; a temp tree in tests).
pub fn machine_id(root: &Path) -> String {
    read_trimmed(&root.join("sys/class/dmi/id/product_uuid"))
        .or_else(|| read_trimmed(&root.join("etc/machine-id")))
        .or_else(|| read_trimmed(&root.join("proc/sys/kernel/hostname")))
        .unwrap_or_else(|| "unknown".to_string())
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
}
