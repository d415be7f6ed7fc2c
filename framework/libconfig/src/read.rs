//! Reading configuration files safely: regular files only, bounded size, UTF-8 checked with the
//! position of the first bad byte.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Location};

/// Largest file (the main document or any `@include`d file) that is read: 16 MiB.
pub const MAX_FILE_SIZE: u64 = 16 * 1024 * 1024;
/// Largest total of a document plus everything it includes: 64 MiB.
pub const MAX_TOTAL_SIZE: u64 = 64 * 1024 * 1024;

/// Read a configuration file as text: [`read_file_bytes`] with [`MAX_FILE_SIZE`], then
/// [`decode_utf8`]. Use this instead of `std::fs::read_to_string` for any file a user names
/// (`-c /dev/zero` would never end, `-c FIFO` would block forever).
pub fn read_file(path: &Path) -> Result<String, Error> {
    let bytes = read_file_bytes(path, MAX_FILE_SIZE)?;
    decode_utf8(bytes, path)
}

/// Read at most `limit` bytes of a regular file.
///
/// The file is opened with `O_NONBLOCK | O_NOCTTY` (so a FIFO without writer or a terminal
/// cannot block or become the controlling terminal) and its type and size are taken with
/// `fstat` on the opened descriptor, so what is checked is what is read. Anything but a
/// regular file is refused with [`Error::NotRegularFile`], a file over `limit` with
/// [`Error::FileTooLarge`] before any byte is read; at most `limit + 1` bytes are ever read,
/// so a file growing while it is read is caught too.
pub fn read_file_bytes(path: &Path, limit: u64) -> Result<Vec<u8>, Error> {
    let io_err = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    // A cheap refusal before opening: opening some devices has side effects. The check that
    // counts is the fstat below, on the descriptor actually read.
    if let Ok(meta) = std::fs::metadata(path) {
        check_meta(path, &meta, limit)?;
    }
    let mut file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    check_meta(path, &meta, limit)?;
    let mut buf = Vec::with_capacity(usize::try_from(meta.len().min(limit)).unwrap_or(0) + 1);
    (&mut file)
        .take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(io_err)?;
    let read = buf.len() as u64;
    if read > limit {
        return Err(Error::FileTooLarge {
            path: path.to_path_buf(),
            size: read.max(meta.len()),
            limit,
        });
    }
    Ok(buf)
}

fn check_meta(path: &Path, meta: &std::fs::Metadata, limit: u64) -> Result<(), Error> {
    let ft = meta.file_type();
    if !ft.is_file() {
        let kind = if ft.is_dir() {
            "directory"
        } else if ft.is_fifo() {
            "FIFO"
        } else if ft.is_char_device() {
            "character device"
        } else if ft.is_block_device() {
            "block device"
        } else if ft.is_socket() {
            "socket"
        } else {
            "special file"
        };
        return Err(Error::NotRegularFile {
            path: path.to_path_buf(),
            kind,
        });
    }
    if meta.len() > limit {
        return Err(Error::FileTooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            limit,
        });
    }
    Ok(())
}

/// Turn file bytes into text; invalid UTF-8 is an [`Error::InvalidUtf8`] at the line and
/// column (in characters) of the first invalid byte.
pub fn decode_utf8(bytes: Vec<u8>, origin: &Path) -> Result<String, Error> {
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let bad = e.utf8_error().valid_up_to();
        let prefix = &bytes[..bad];
        let line_start = prefix
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        let line = prefix.iter().filter(|&&b| b == b'\n').count() + 1;
        // The prefix is valid UTF-8 by definition of `valid_up_to`.
        let col = std::str::from_utf8(&prefix[line_start..]).map_or(0, |s| s.chars().count()) + 1;
        Error::InvalidUtf8 {
            at: Location {
                file: Arc::from(origin),
                line: u32::try_from(line).unwrap_or(u32::MAX),
                col: u32::try_from(col).unwrap_or(u32::MAX),
            },
        }
    })
}
