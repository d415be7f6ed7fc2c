//! Reading files safely: non-regular files are refused without blocking, sizes are bounded
//! before reading, and invalid UTF-8 is reported with its line and column.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use gala_libconfig::{parse_file, parse_str, read_file, Error, MAX_FILE_SIZE, MAX_TOTAL_SIZE};

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo: {}", std::io::Error::last_os_error());
}

/// Run `f` on a thread; if it has not answered within a generous bound, unblock a reader
/// stuck on `fifo` (open it for writing, then close) and fail.
fn without_blocking<T: Send + 'static>(
    fifo: Option<PathBuf>,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(v) => {
            handle.join().unwrap();
            v
        }
        Err(_) => {
            if let Some(p) = fifo {
                drop(fs::OpenOptions::new().write(true).open(p));
            }
            let _ = handle.join();
            panic!("reading blocked");
        }
    }
}

#[test]
fn dev_zero_is_refused() {
    let e = without_blocking(None, || read_file(Path::new("/dev/zero")).unwrap_err());
    match &e {
        Error::NotRegularFile { path, kind } => {
            assert_eq!(
                (path.as_path(), *kind),
                (Path::new("/dev/zero"), "character device")
            );
        }
        other => panic!("{other}"),
    }
    assert_eq!(
        e.to_string(),
        "/dev/zero: not a regular file (character device); refusing to read it"
    );
    let e = without_blocking(None, || parse_file(Path::new("/dev/zero")).unwrap_err());
    assert!(matches!(e, Error::NotRegularFile { .. }), "{e}");
}

#[test]
fn fifo_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("gopher.conf");
    mkfifo(&fifo);
    let p = fifo.clone();
    let e = without_blocking(Some(fifo.clone()), move || parse_file(&p).unwrap_err());
    assert!(
        matches!(&e, Error::NotRegularFile { path, kind: "FIFO" } if *path == fifo),
        "{e}"
    );
    assert!(
        e.to_string().starts_with(&fifo.display().to_string()),
        "{e}"
    );
}

#[test]
fn directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = read_file(dir.path()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NotRegularFile {
                kind: "directory",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn fifo_and_device_includes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("part.conf");
    mkfifo(&fifo);
    let main = dir.path().join("main.conf");
    fs::write(&main, "a = 1;\n@include \"part.conf\"\n").unwrap();
    let m = main.clone();
    let e = without_blocking(Some(fifo.clone()), move || parse_file(&m).unwrap_err());
    match &e {
        Error::IncludeRefused { at, source } => {
            assert_eq!((&*at.file, at.line), (main.as_path(), 2));
            assert!(
                matches!(**source, Error::NotRegularFile { kind: "FIFO", .. }),
                "{source}"
            );
        }
        other => panic!("{other}"),
    }
    let e = parse_str("@include \"/dev/zero\"", &main).unwrap_err();
    assert!(
        e.to_string().ends_with(
            "cannot include: /dev/zero: not a regular file (character device); refusing to read it"
        ),
        "{e}"
    );
}

#[test]
fn oversized_file_is_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.conf");
    // Sparse: costs no disk, and the limit is checked from the size, not by reading.
    fs::File::create(&big)
        .unwrap()
        .set_len(MAX_FILE_SIZE + 1)
        .unwrap();
    let e = parse_file(&big).unwrap_err();
    match &e {
        Error::FileTooLarge { path, size, limit } => {
            assert_eq!(
                (path, *size, *limit),
                (&big, MAX_FILE_SIZE + 1, MAX_FILE_SIZE)
            );
        }
        other => panic!("{other}"),
    }
    assert_eq!(
        e.to_string(),
        format!(
            "{}: file too large: {} bytes, the limit is {} bytes",
            big.display(),
            MAX_FILE_SIZE + 1,
            MAX_FILE_SIZE
        )
    );

    let main = dir.path().join("main.conf");
    let e = parse_str("x = 1;\n@include \"big.conf\"", &main).unwrap_err();
    match &e {
        Error::IncludeRefused { at, source } => {
            assert_eq!(at.line, 2);
            assert!(matches!(&**source, Error::FileTooLarge { path, .. } if *path == big));
        }
        other => panic!("{other}"),
    }

    // In-memory documents have the same bound.
    let text = " ".repeat(MAX_FILE_SIZE as usize + 1);
    let e = parse_str(&text, Path::new("mem.conf")).unwrap_err();
    assert!(matches!(e, Error::FileTooLarge { .. }), "{e}");
}

#[test]
fn total_size_of_includes_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    // One file just under the per-file limit, included under several names (symlinks): the
    // per-file check passes each time, the running total does not.
    let chunk = MAX_FILE_SIZE - 16;
    let mut text = String::with_capacity(chunk as usize);
    text.push('#');
    text.push_str(&"x".repeat(chunk as usize - 2));
    text.push('\n');
    fs::write(dir.path().join("chunk.cfg"), &text).unwrap();
    let copies = (MAX_TOTAL_SIZE / chunk + 1) as usize;
    let mut main = String::new();
    for n in 0..copies {
        std::os::unix::fs::symlink("chunk.cfg", dir.path().join(format!("c{n}.cfg"))).unwrap();
        main.push_str(&format!("@include \"c{n}.cfg\"\n"));
    }
    let e = parse_str(&main, &dir.path().join("main.conf")).unwrap_err();
    match &e {
        Error::IncludeRefused { at, source } => {
            // Four chunks plus the main text cross 64 MiB.
            assert_eq!(at.line, 4);
            assert!(
                matches!(&**source, Error::TotalTooLarge { limit, .. } if *limit == MAX_TOTAL_SIZE),
                "{source}"
            );
        }
        other => panic!("{other}"),
    }
}

#[test]
fn invalid_utf8_names_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.conf");
    fs::write(&path, b"a = 1;\nb = \"\xc3\xa9t\xff\";\n").unwrap();
    let e = parse_file(&path).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}:2:8: invalid UTF-8", path.display())
    );
    assert_eq!(e.location().map(|l| (l.line, l.col)), Some((2, 8)));

    // Inside an include, the position is in the included file.
    let main = dir.path().join("main.conf");
    let e = parse_str("x = 1;\n\n@include \"bad.conf\"", &main).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}:2:8: invalid UTF-8", path.display())
    );

    // A truncated multi-byte sequence at the very end.
    fs::write(&path, b"# \xe2\x82").unwrap();
    let e = read_file(&path).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}:1:3: invalid UTF-8", path.display())
    );
}
