//! The host root: with `GOPHER_HOST_PATH=<dir>`, disk names come from
//! `<dir>/sys/dev/block/<major>:<minor>/uevent`. The fake tree names this test's loop device
//! `gg-fake-disk`, which no device here is called.

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn disk_names_are_read_below_the_host_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backing = dir.path().join("backing.img");
    std::fs::File::create(&backing)
        .and_then(|f| f.set_len(4 << 20))
        .expect("backing file");
    let lo = LoopDevice::attach(&backing).expect("loop device (root needed)");
    let (maj, min) = (lo.major, lo.minor);
    let root = dir.path().join("host");
    let dev = root.join(format!("sys/dev/block/{maj}:{min}"));
    std::fs::create_dir_all(&dev).expect("mkdir");
    std::fs::write(
        dev.join("uevent"),
        format!("MAJOR={maj}\nMINOR={min}\nDEVNAME=gg-fake-disk\nDEVTYPE=disk\n"),
    )
    .expect("uevent");

    let root_s = root.to_str().expect("utf-8 path");
    let mut probe = ProbeRun::start_with_env(&["-t", "1"], &[("GOPHER_HOST_PATH", root_s)]);
    probe.wait_attached(WAIT);
    let file = lo.open_direct();
    let buf = AlignedBuf::new(4096, 0x5a);
    assert_eq!(direct_writes(&file, &buf, 0, 8), 8);
    let rows = probe.next_period(WAIT);
    let f = disk_row(&rows, "io_count", maj, min);
    assert_eq!(f[2], "gg-fake-disk", "blk_name");
    assert_eq!(f[3], "gg-fake-disk", "disk_name");
    drop(file);
    probe.stop();
}
