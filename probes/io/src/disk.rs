//! Disk names from sysfs: `/sys/dev/block/<major>:<minor>/uevent` (`DEVNAME=`).

use std::fs;
use std::path::PathBuf;

use crate::stats::DiskId;

/// The `blk_name` and `disk_name` labels of a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskLabels {
    /// Kernel name of the block device (`DEVNAME`), e.g. `vda`, `loop3`.
    pub blk_name: String,
    /// Name of the whole disk the device belongs to; the same as `blk_name` for a disk.
    pub disk_name: String,
}

/// Resolves disk names under a sysfs root (the host's `/sys` in production, a fixture tree in
/// tests).
#[derive(Debug, Clone)]
pub struct DiskNames {
    sys_root: PathBuf,
}

impl Default for DiskNames {
    /// The host's sysfs, under the host root (`probe_sdk::host::path("/sys")`).
    fn default() -> Self {
        DiskNames::new(probe_sdk::host::path("/sys"))
    }
}

impl DiskNames {
    /// Names read under `sys_root`.
    pub fn new(sys_root: impl Into<PathBuf>) -> DiskNames {
        DiskNames {
            sys_root: sys_root.into(),
        }
    }

    fn devname(&self, major: u32, minor: u32) -> Option<String> {
        let path = self
            .sys_root
            .join("dev/block")
            .join(format!("{major}:{minor}"))
            .join("uevent");
        let text = fs::read_to_string(path).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("DEVNAME="))
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
    }

    /// The whole disk of block device `dev` (kernel `dev_t` encoding): the device itself, or
    /// the disk a partition belongs to (`/sys/dev/block/M:m/partition` exists; its parent
    /// directory is the disk). None when sysfs does not know the device.
    pub fn whole_disk(&self, dev: u32) -> Option<DiskId> {
        let id = DiskId::from_kernel_dev(dev);
        let dir = self
            .sys_root
            .join("dev/block")
            .join(format!("{}:{}", id.major, id.first_minor));
        if !dir.join("partition").exists() {
            return dir.exists().then_some(id);
        }
        let parent = fs::canonicalize(&dir).ok()?.parent()?.join("dev");
        let text = fs::read_to_string(parent).ok()?;
        let (major, minor) = text.trim().split_once(':')?;
        Some(DiskId {
            major: major.parse().ok()?,
            first_minor: minor.parse().ok()?,
        })
    }

    /// Labels of `id`, or None if the device is gone (or sysfs is not readable).
    pub fn labels(&self, id: DiskId) -> Option<DiskLabels> {
        let blk_name = self.devname(id.major, id.first_minor)?;
        Some(DiskLabels {
            disk_name: blk_name.clone(),
            blk_name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let vda = dir.path().join("dev/block/254:0");
        fs::create_dir_all(&vda).unwrap();
        fs::write(
            vda.join("uevent"),
            "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n",
        )
        .unwrap();
        let odd = dir.path().join("dev/block/7:3");
        fs::create_dir_all(&odd).unwrap();
        fs::write(odd.join("uevent"), "MAJOR=7\nMINOR=3\nDEVTYPE=disk\n").unwrap();
        dir
    }

    #[test]
    fn reads_devname() {
        let dir = fixture();
        let names = DiskNames::new(dir.path());
        let l = names
            .labels(DiskId {
                major: 254,
                first_minor: 0,
            })
            .unwrap();
        assert_eq!(l.blk_name, "vda");
        assert_eq!(l.disk_name, "vda");
    }

    #[test]
    fn missing_or_nameless_device_has_no_labels() {
        let dir = fixture();
        let names = DiskNames::new(dir.path());
        assert_eq!(
            names.labels(DiskId {
                major: 8,
                first_minor: 0
            }),
            None
        );
        assert_eq!(
            names.labels(DiskId {
                major: 7,
                first_minor: 3
            }),
            None
        );
    }

    #[test]
    fn partitions_belong_to_their_disk() {
        let dir = fixture();
        // sysfs: /sys/dev/block/254:1 -> ../../devices/.../vda/vda1, whose parent is vda.
        let disk = dir.path().join("devices/virtio/block/vda");
        let part = disk.join("vda1");
        fs::create_dir_all(&part).unwrap();
        fs::write(disk.join("dev"), "254:0\n").unwrap();
        fs::write(part.join("partition"), "1\n").unwrap();
        std::os::unix::fs::symlink(&part, dir.path().join("dev/block/254:1")).unwrap();
        let names = DiskNames::new(dir.path());
        let vda = DiskId {
            major: 254,
            first_minor: 0,
        };
        assert_eq!(names.whole_disk((254 << 20) | 1), Some(vda));
        // A disk is its own; a device sysfs does not know has none.
        assert_eq!(names.whole_disk(254 << 20), Some(vda));
        assert_eq!(names.whole_disk((8 << 20) | 3), None);
    }

    #[test]
    fn real_sysfs_names_the_root_disk() {
        // Every block device listed in /sys/block resolves to its own name.
        let names = DiskNames::default();
        let mut seen = 0;
        for entry in fs::read_dir("/sys/block").unwrap().flatten() {
            let dev = fs::read_to_string(entry.path().join("dev")).unwrap();
            let (maj, min) = dev.trim().split_once(':').unwrap();
            let id = DiskId {
                major: maj.parse().unwrap(),
                first_minor: min.parse().unwrap(),
            };
            let l = names.labels(id).unwrap();
            assert_eq!(l.blk_name, entry.file_name().to_str().unwrap());
            seen += 1;
        }
        assert!(seen > 0);
    }
}
