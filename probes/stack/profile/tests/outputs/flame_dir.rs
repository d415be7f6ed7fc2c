//! The bounded flame_dir, including an attacker who plants files and symlinks inside it.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use stack_profile::{
    folded, FlameDir, Index, Kind, Limits, OpenError, OutputError, Profile, DEFAULT_MAX_AGE,
};

use crate::{at, profile, read, read_string, tempdir, T};

fn open(path: &Path, limits: Limits) -> FlameDir {
    FlameDir::open(path, limits).unwrap_or_else(|e| panic!("open: {e}"))
}

fn write(dir: &mut FlameDir, p: &Profile) -> stack_profile::Written {
    match dir.write(p, at(p_end(p))) {
        Ok(Some(w)) => w,
        other => panic!("write: {other:?}"),
    }
}

fn p_end(p: &Profile) -> u64 {
    p.end
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Every file below `root` (relative paths, sorted), directories excluded.
fn files(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                walk(root, &path, out);
            } else if let Ok(rel) = path.strip_prefix(root) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn set(kind: &str, date: &str, stamp: &str, pid: u32) -> Vec<String> {
    let mut v: Vec<String> = ["folded", "pb.gz", "svg"]
        .iter()
        .map(|ext| format!("{kind}/{date}/{stamp}-{pid}.{ext}"))
        .collect();
    v.sort();
    v
}

#[test]
fn flame_dir_must_be_a_real_directory() {
    let tmp = tempdir();
    let real = tmp.path().join("real");
    let link = tmp.path().join("link");
    let file = tmp.path().join("file");
    assert!(fs::create_dir(&real).is_ok());
    assert!(symlink(&real, &link).is_ok());
    assert!(fs::write(&file, b"x").is_ok());
    let missing = tmp.path().join("missing");

    let err = |p: &PathBuf| FlameDir::open(p, Limits::default()).err();
    match err(&link) {
        Some(e @ OpenError::Symlink(_)) => {
            assert_eq!(
                e.to_string(),
                format!("flame_dir {} is a symlink, refusing", link.display())
            )
        }
        other => panic!("{other:?}"),
    }
    match err(&missing) {
        Some(e @ OpenError::NotFound(_)) => {
            assert_eq!(
                e.to_string(),
                format!("flame_dir {} does not exist", missing.display())
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(err(&file), Some(OpenError::NotADirectory(_))));
    assert!(matches!(
        err(&tmp.path().join("file/x")),
        Some(OpenError::NotADirectory(_))
    ));
    assert!(err(&real).is_none());
    // A symlink to a directory is not created through either.
    assert!(matches!(
        FlameDir::open_or_create_default(&link, Limits::default()),
        Err(OpenError::Symlink(_))
    ));
}

#[test]
fn writes_the_layout_atomically_with_mode_0640() {
    let tmp = tempdir();
    let mut dir = open(tmp.path(), Limits::default());
    let p = profile(123, Kind::OnCpu, T);
    let w = write(&mut dir, &p);
    assert_eq!(w.svg, "oncpu/20251205/20251205170000-123.svg");
    assert_eq!(w.folded, "oncpu/20251205/20251205170000-123.folded");
    assert_eq!(w.pprof, "oncpu/20251205/20251205170000-123.pb.gz");
    assert_eq!(
        files(tmp.path()),
        set("oncpu", "20251205", "20251205170000", 123)
    );
    assert_eq!(read_string(&tmp.path().join(&w.folded)), folded::render(&p));
    let mut total = 0;
    for rel in [&w.svg, &w.folded, &w.pprof] {
        let meta = fs::symlink_metadata(tmp.path().join(rel)).unwrap_or_else(|e| panic!("{e}"));
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o640, "{rel}");
        total += meta.len();
    }
    assert_eq!(w.bytes, total);
    let stats = dir.stats();
    assert_eq!((stats.files_written, stats.bytes_written), (3, total));
    assert_eq!((stats.tracked_files, stats.tracked_bytes), (3, total));
    let date_dir = fs::metadata(tmp.path().join("oncpu/20251205")).map(|m| m.permissions().mode());
    assert!(date_dir.is_ok_and(|m| m & 0o777 & !0o750 == 0));

    // An empty profile writes nothing.
    let mut empty = profile(5, Kind::OffCpu, T);
    empty.samples.clear();
    assert!(matches!(dir.write(&empty, at(T)), Ok(None)));
    assert!(!tmp.path().join("offcpu").exists());
}

#[test]
fn a_symlinked_kind_or_date_directory_is_refused() {
    let tmp = tempdir();
    let flame = tmp.path().join("flame");
    let outside = tmp.path().join("outside");
    assert!(fs::create_dir(&flame).is_ok());
    assert!(fs::create_dir(&outside).is_ok());
    assert!(symlink(&outside, flame.join("oncpu")).is_ok());
    assert!(fs::create_dir(flame.join("offcpu")).is_ok());
    assert!(symlink(&outside, flame.join("offcpu/20251205")).is_ok());

    let mut dir = open(&flame, Limits::default());
    for kind in Kind::ALL {
        match dir.write(&profile(1, kind, T), at(T)) {
            Err(e @ OutputError::UnsafeDir(_)) => {
                assert!(e.to_string().contains("refusing"), "{e}")
            }
            other => panic!("{kind}: {other:?}"),
        }
    }
    assert_eq!(
        files(&outside),
        Vec::<String>::new(),
        "nothing written through the links"
    );
    assert_eq!(dir.stats().write_errors, 2);
    assert_eq!(dir.stats().files_written, 0);
}

#[test]
fn links_planted_at_final_names_are_replaced_not_followed() {
    let tmp = tempdir();
    let flame = tmp.path().join("flame");
    let victim = tmp.path().join("victim");
    assert!(fs::create_dir_all(flame.join("oncpu/20251205")).is_ok());
    assert!(fs::write(&victim, b"secret").is_ok());
    let date = flame.join("oncpu/20251205");
    assert!(symlink(&victim, date.join("20251205170000-7.svg")).is_ok());
    assert!(fs::hard_link(&victim, date.join("20251205170000-7.folded")).is_ok());
    // A dangling symlink: O_CREAT through it would create the target.
    let target = tmp.path().join("created-through-link");
    assert!(symlink(&target, date.join("20251205170000-7.pb.gz")).is_ok());

    let mut dir = open(&flame, Limits::default());
    let w = write(&mut dir, &profile(7, Kind::OnCpu, T));
    assert_eq!(read(&victim), b"secret");
    assert_eq!(fs::metadata(&victim).map(|m| m.nlink()).ok(), Some(1));
    assert!(!target.exists());
    for rel in [&w.svg, &w.folded, &w.pprof] {
        let meta = fs::symlink_metadata(flame.join(rel)).unwrap_or_else(|e| panic!("{e}"));
        assert!(meta.is_file() && meta.nlink() == 1, "{rel}");
    }
}

#[test]
fn a_failed_write_is_an_error_and_leaves_no_temporary_file() {
    let tmp = tempdir();
    let date = tmp.path().join("oncpu/20251205");
    // A directory where the SVG goes: the rename fails.
    assert!(fs::create_dir_all(date.join("20251205170000-9.svg")).is_ok());
    let mut dir = open(tmp.path(), Limits::default());
    match dir.write(&profile(9, Kind::OnCpu, T), at(T)) {
        Err(OutputError::Io {
            op: "rename", path, ..
        }) => {
            assert!(path.ends_with("oncpu/20251205/20251205170000-9.svg"))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(dir.stats().write_errors, 1);
    assert_eq!(
        files(tmp.path()),
        Vec::<String>::new(),
        "no temporary file left"
    );

    // Too large for the bound: refused, counted apart, nothing written.
    let limits = Limits {
        max_bytes: 100,
        ..Limits::default()
    };
    let mut small = open(tmp.path(), limits);
    assert!(matches!(
        small.write(&profile(10, Kind::OnCpu, T), at(T)),
        Err(OutputError::TooLarge {
            pid: 10,
            max: 100,
            ..
        })
    ));
    assert_eq!(
        (small.stats().too_large, small.stats().write_errors),
        (1, 0)
    );
    assert_eq!(files(tmp.path()), Vec::<String>::new());
}

/// The bytes of one profile's three files (all fixtures render to the same size per kind).
fn set_bytes(kind: Kind) -> u64 {
    let tmp = tempdir();
    let mut dir = open(tmp.path(), Limits::default());
    write(&mut dir, &profile(1, kind, T)).bytes
}

#[test]
fn retention_removes_the_oldest_first_and_never_foreign_files() {
    let tmp = tempdir();
    let root = tmp.path();
    let one = set_bytes(Kind::OnCpu);
    let foreign = [
        "README",
        "oncpu/20251205/notes.txt",
        "oncpu/20251205/20251205170000-1.svg.bak",
        "oncpu/20251205/.hidden",
        "oncpu/mine/20251205170000-1.svg",
    ];
    for f in foreign {
        let path = root.join(f);
        assert!(path.parent().is_some_and(|p| fs::create_dir_all(p).is_ok()));
        assert!(fs::write(&path, b"keep me").is_ok());
    }
    let limits = Limits {
        max_bytes: one * 5 / 2,
        ..Limits::default()
    };
    let mut dir = open(root, limits);
    // pid 1 at T is older than anything else; pids 2..4 one minute apart.
    write(&mut dir, &profile(1, Kind::OnCpu, T));
    write(&mut dir, &profile(2, Kind::OnCpu, T + 60));
    let w3 = write(&mut dir, &profile(3, Kind::OnCpu, T + 120));
    assert_eq!(w3.removed_files, 3, "the oldest profile made room");
    let w4 = write(&mut dir, &profile(4, Kind::OnCpu, T + 180));
    assert_eq!(w4.removed_files, 3);

    let mut expected: Vec<String> = foreign.iter().map(|s| s.to_string()).collect();
    expected.extend(set("oncpu", "20251205", "20251205170200", 3));
    expected.extend(set("oncpu", "20251205", "20251205170300", 4));
    expected.sort();
    assert_eq!(files(root), expected);
    for f in foreign {
        assert_eq!(read(&root.join(f)), b"keep me", "{f}");
    }
    let stats = dir.stats();
    assert_eq!(stats.files_removed, 6);
    assert_eq!(stats.tracked_files, 6);
    assert!(stats.tracked_bytes <= limits.max_bytes);
}

#[test]
fn retention_by_age_and_empty_date_directories() {
    let tmp = tempdir();
    let root = tmp.path();
    let mut dir = open(root, Limits::default());
    let now = T + 8 * 86_400; // 2025-12-13
    write(&mut dir, &profile(1, Kind::OffCpu, T)); // 8 days before `now`
    write(&mut dir, &profile(2, Kind::OffCpu, now - 86_400)); // 1 day before
    assert!(root.join("offcpu/20251205").is_dir());

    assert_eq!(dir.enforce_retention(at(now)), 3);
    assert!(
        !root.join("offcpu/20251205").exists(),
        "empty date directory removed"
    );
    assert_eq!(files(root), set("offcpu", "20251212", "20251212170000", 2));

    // Exactly at the horizon is kept; a second older is removed by the next write.
    let horizon = now - DEFAULT_MAX_AGE.as_secs();
    let mut edge = profile(3, Kind::OnCpu, horizon);
    edge.end = at(horizon);
    write(&mut dir, &edge);
    assert_eq!(dir.enforce_retention(at(now)), 0);
    let w = dir.write(&profile(4, Kind::OnCpu, now), at(now + 1));
    assert!(
        matches!(w, Ok(Some(ref w)) if w.removed_files == 3),
        "{w:?}"
    );
}

#[test]
fn files_of_a_previous_run_are_counted_and_indexed() {
    let tmp = tempdir();
    let root = tmp.path();
    let one = set_bytes(Kind::OnCpu);
    let before = {
        let mut first = open(root, Limits::default());
        write(&mut first, &profile(1, Kind::OnCpu, T));
        write(&mut first, &profile(2, Kind::OnCpu, T + 60));
        assert!(first.write_index(at(T + 60)).is_ok());
        first.stats().tracked_bytes
    };
    // A temporary file of a crashed writer, an hour old, and a fresh one (another live writer).
    let date = root.join("oncpu/20251205");
    let stale = date.join(".20251205170000-1.svg.4242.1.tmp");
    let fresh = date.join(".20251205170000-1.svg.4242.2.tmp");
    let stale_index = root.join(".index.json.4242.3.tmp");
    for f in [&stale, &fresh, &stale_index] {
        assert!(fs::write(f, b"partial").is_ok());
    }
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    for f in [&stale, &stale_index] {
        let set_time = fs::File::options()
            .write(true)
            .open(f)
            .and_then(|h| h.set_modified(hour_ago));
        assert!(set_time.is_ok());
    }

    let limits = Limits {
        max_bytes: one * 5 / 2,
        ..Limits::default()
    };
    let mut second = open(root, limits);
    assert!(
        !stale.exists() && !stale_index.exists(),
        "stale temporary files removed"
    );
    assert!(
        fresh.exists(),
        "a fresh temporary file may be a live writer's"
    );
    let stats = second.stats();
    assert_eq!((stats.tracked_files, stats.tracked_bytes), (6, before));
    assert!(!stats.scan_truncated);
    let index = second.index(at(T + 60));
    assert_eq!(index.profiles.len(), 2);
    assert_eq!(
        index.profiles[0].comm, "app",
        "metadata from the previous index"
    );
    assert_eq!(index.profiles[0].samples, 100);

    // The previous run's oldest profile goes first.
    let w = write(&mut second, &profile(3, Kind::OnCpu, T + 120));
    assert_eq!(w.removed_files, 3);
    assert!(!root.join("oncpu/20251205/20251205170000-1.svg").exists());
    assert!(root.join("oncpu/20251205/20251205170100-2.svg").exists());

    // The scan is bounded.
    let tight = Limits {
        max_scan_entries: 3,
        ..Limits::default()
    };
    let truncated = open(root, tight);
    assert!(truncated.stats().scan_truncated);
    assert!(truncated.stats().tracked_files < 6);
}

#[test]
fn index_lists_the_latest_outputs_per_pid_and_kind() {
    let tmp = tempdir();
    let root = tmp.path();
    let mut dir = open(root, Limits::default());
    write(&mut dir, &profile(1, Kind::OnCpu, T));
    write(&mut dir, &profile(1, Kind::OnCpu, T + 180));
    write(&mut dir, &profile(1, Kind::OffCpu, T));
    let mut other = profile(2, Kind::OnCpu, T + 60);
    other.comm = "bad\ncomm".into();
    write(&mut dir, &other);
    assert_eq!(dir.write_index(at(T + 200)).ok(), Some(3));

    let text = read(&root.join("index.json"));
    let meta = fs::symlink_metadata(root.join("index.json")).unwrap_or_else(|e| panic!("{e}"));
    assert!(meta.is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    let index = Index::from_json(&text).unwrap_or_else(|| panic!("index.json does not parse"));
    assert_eq!(index.updated_ms, (T + 200) * 1000);
    let rows: Vec<(u32, Kind, u64, &str, &str)> = index
        .profiles
        .iter()
        .map(|e| {
            (
                e.pid,
                e.kind,
                e.end_ms,
                e.comm.as_str(),
                e.svg.as_deref().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                1,
                Kind::OnCpu,
                (T + 180) * 1000,
                "app",
                "oncpu/20251205/20251205170300-1.svg"
            ),
            (
                2,
                Kind::OnCpu,
                (T + 60) * 1000,
                "bad_comm",
                "oncpu/20251205/20251205170100-2.svg"
            ),
            (
                1,
                Kind::OffCpu,
                T * 1000,
                "app",
                "offcpu/20251205/20251205170000-1.svg"
            ),
        ]
    );
    let first = &index.profiles[0];
    assert_eq!(first.start_ms, T * 1000);
    assert_eq!(
        (first.samples, first.value),
        (100, 100 * (1_000_000_000 / 99))
    );
    assert_eq!(
        first.pprof.as_deref(),
        Some("oncpu/20251205/20251205170300-1.pb.gz")
    );
    assert_eq!(
        first.folded.as_deref(),
        Some("oncpu/20251205/20251205170300-1.folded")
    );
    for e in &index.profiles {
        for rel in [&e.svg, &e.folded, &e.pprof].into_iter().flatten() {
            assert!(root.join(rel).is_file(), "{rel}");
        }
    }
    // A file removed by hand is null in the index.
    assert!(fs::remove_file(root.join("oncpu/20251205/20251205170300-1.folded")).is_ok());
    let reopened = open(root, Limits::default());
    let again = reopened.index(at(T + 300));
    assert_eq!(again.profiles[0].folded, None);
    assert_eq!(
        again.profiles[0].svg.as_deref(),
        Some("oncpu/20251205/20251205170300-1.svg")
    );
}

#[test]
fn index_is_capped_to_the_newest_entries() {
    let tmp = tempdir();
    let date = tmp.path().join("oncpu/20251205");
    assert!(fs::create_dir_all(&date).is_ok());
    let n = stack_profile::index::MAX_INDEX_ENTRIES as u32 + 10;
    for pid in 0..n {
        // One second apart from 17:00:00, the newest with the highest pids.
        let s = 17 * 3600 + pid;
        let stamp = format!("20251205{:02}{:02}{:02}", s / 3600, s / 60 % 60, s % 60);
        assert!(fs::write(date.join(format!("{stamp}-{pid}.svg")), b"").is_ok());
    }
    let dir = open(tmp.path(), Limits::default());
    let index = dir.index(at(T));
    assert_eq!(
        index.profiles.len(),
        stack_profile::index::MAX_INDEX_ENTRIES
    );
    assert_eq!(index.profiles.first().map(|e| e.pid), Some(n - 1));
    assert_eq!(index.profiles.last().map(|e| e.pid), Some(10));
    assert!(index
        .profiles
        .iter()
        .all(|e| e.folded.is_none() && e.comm.is_empty()));
}

#[test]
fn concurrent_writers_do_not_collide() {
    let tmp = tempdir();
    let root = tmp.path().to_path_buf();
    let threads: Vec<_> = (0..2u32)
        .map(|t| {
            let root = root.clone();
            std::thread::spawn(move || {
                let mut dir = open(&root, Limits::default());
                for i in 0..10 {
                    let p = profile(t * 100 + i, Kind::OnCpu, T);
                    assert!(matches!(dir.write(&p, at(T)), Ok(Some(_))));
                    assert!(dir.write_index(at(T)).is_ok());
                }
                dir.stats().write_errors
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().ok(), Some(0));
    }
    let all = files(&root);
    assert_eq!(all.len(), 2 * 10 * 3 + 1, "{all:?}");
    assert!(all
        .iter()
        .all(|f| !f.rsplit('/').next().unwrap_or("").starts_with('.')));
    assert!(Index::from_json(&read(&root.join("index.json"))).is_some());
}
