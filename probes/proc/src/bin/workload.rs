//! Deterministic syscall workload for taskprobe's integration tests and overhead benchmark.
//!
//! Every syscall is issued directly through libc so the number of syscalls the kernel sees is
//! exactly the number written here (no buffering, no allocator or runtime surprises).
//!
//! * `script K N`: open `/dev/zero`, print `ready <pid>`, block in `read(0)` until one byte
//!   arrives, then K failing `openat`s of a missing path, K one-byte `read`s of `/dev/zero`,
//!   N × (`fork` + `wait4`), print `done`, and block in `read(0)` until stdin closes, then
//!   `exit_group`. After the go byte the kernel therefore sees exactly `2 + 2K + 2N` syscall
//!   exits before `done` (K of them failing), and one more (the read returning EOF) before exit.
//! * `bench-open N [--reps R] [--wait]`: R times (default 1): N × (`openat("/dev/null")` +
//!   `close`), then print `cpu_ns=<user+sys> wall_ns=<wall>`; then `exit_group`. After the go
//!   byte that is exactly 1 + R × (2N + 3) syscall exits (the read; per rep getrusage, the
//!   loop, getrusage, write); with `--wait`, print `ready <pid>` first and wait for
//!   one byte on stdin so a probe can be attached to this pid before the loop. With
//!   `--write-to DIR` the loop is N buffered 4 KiB `pwrite`s instead, cycling over the first
//!   MiB of a file created in DIR before the go byte (so the pages stay cached and dirty and
//!   nothing waits for the disk): 1 + R × (N + 3) syscall exits. With `--resolve` it is N
//!   `getaddrinfo("localhost")` calls (answered from `/etc/hosts`) instead.
//! * `io-sleep COUNT MS DIR`: print `ready <pid>`, wait for the go byte, write COUNT × 64 KiB
//!   to a new file in DIR with `O_DIRECT` (so the block requests are issued from this process),
//!   sleep MS milliseconds, print `done <ns>` with the longest single write in ns (wall time
//!   around the `pwrite`, which bounds its block request's latency), and wait for stdin to close.
//! * `blockers MS`: print `ready <pid>`, wait for the go byte, then block MS milliseconds in
//!   each of: `epoll_wait` on an empty epoll set (timeout MS), `futex` (joining a thread that
//!   sleeps MS in `nanosleep`, which is not a timed syscall), and `read` of a pipe that a thread
//!   writes to after MS; print `done` and wait for stdin to close.
//! * `exec-after MS PATH ARG...`: sleep MS milliseconds, then exec PATH with the ARGs (same
//!   pid, new comm), so tests can watch a process turn into a whitelisted one.
//! * `page-cache MIB DIR`: print `ready <pid>`, wait for the go byte, write MIB MiB to a new
//!   file in DIR (buffered, 1 MiB writes) and fsync it, print `written`; wait for a byte, drop
//!   the file's pages (`POSIX_FADV_DONTNEED`) and read it back, print `read`; wait for stdin to
//!   close.
//! * `fs-ops N DIR...`: print `ready <pid>`, wait for the go byte, then in each DIR create
//!   `DIR/d/` and N files in it, each with one `openat` (create), one 64 KiB `write`, one
//!   `fsync` and a close, print `written`; wait for a byte, then open each file again, `read`
//!   it with one 64 KiB `read` and close it, print `read`; wait for stdin to close. Per DIR
//!   that is 2N opens, N writes, N reads and N fsyncs.
//! * `migrate N MS`: print `ready <pid>`, wait for the go byte, start a thread that N times
//!   pins itself to the other one of CPUs 0 and 1 (`sched_setaffinity`, a forced migration)
//!   and sleeps MS milliseconds, join it, print `done <tid>`, and wait for stdin to close.
//! * `ioctl N PATH`: open PATH, print `ready <pid>`, wait for the go byte, call
//!   `ioctl(fd, FS_IOC_GETFLAGS, &flags)` N times, print `done <fd>`, and wait for stdin to close.
//! * `resolve NAME...`: print `ready <pid>`, wait for the go byte, call `getaddrinfo` once for
//!   each NAME (IPv4), print `resolved <ok> <failed>`, and wait for stdin to close.

use std::ffi::CStr;
use std::process::ExitCode;
use std::time::Instant;

const MISSING_PATH: &CStr = c"/nonexistent/taskprobe-workload/missing";
const DEV_NULL: &CStr = c"/dev/null";
const DEV_ZERO: &CStr = c"/dev/zero";

fn write_all(fd: i32, bytes: &[u8]) -> Result<(), String> {
    let mut off = 0;
    while off < bytes.len() {
        // SAFETY: the pointer/length pair comes from a live slice.
        let n = unsafe { libc::write(fd, bytes[off..].as_ptr().cast(), bytes.len() - off) };
        if n <= 0 {
            return Err(format!("write: {}", std::io::Error::last_os_error()));
        }
        off += n as usize;
    }
    Ok(())
}

/// Blocks until one byte arrives on stdin; false on EOF.
fn wait_byte() -> Result<bool, String> {
    let mut b = 0u8;
    // SAFETY: reading one byte into a local.
    let n = unsafe { libc::read(0, (&mut b as *mut u8).cast(), 1) };
    if n < 0 {
        return Err(format!("read stdin: {}", std::io::Error::last_os_error()));
    }
    Ok(n == 1)
}

fn open(path: &CStr) -> i32 {
    // SAFETY: `path` is NUL-terminated.
    unsafe {
        libc::openat(
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    }
}

fn script(k: u64, n: u64) -> Result<(), String> {
    let zero = open(DEV_ZERO);
    if zero < 0 {
        return Err(format!(
            "open /dev/zero: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    write_all(1, format!("ready {pid}\n").as_bytes())?;
    if !wait_byte()? {
        return Ok(());
    }
    for _ in 0..k {
        if open(MISSING_PATH) >= 0 {
            return Err("the missing path exists".into());
        }
    }
    let mut b = 0u8;
    for _ in 0..k {
        // SAFETY: one byte into a local.
        if unsafe { libc::read(zero, (&mut b as *mut u8).cast(), 1) } != 1 {
            return Err(format!(
                "read /dev/zero: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    for _ in 0..n {
        // The raw fork syscall: glibc's fork() may add syscalls of its own (atfork handlers).
        // SAFETY: the child only calls _exit, which is async-signal-safe.
        let child = unsafe { libc::syscall(libc::SYS_fork) };
        if child == 0 {
            // SAFETY: terminating the child without running any Rust code.
            unsafe { libc::_exit(0) };
        }
        if child < 0 {
            return Err(format!("fork: {}", std::io::Error::last_os_error()));
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let r = unsafe {
            libc::syscall(
                libc::SYS_wait4,
                child,
                &mut status as *mut i32,
                0,
                std::ptr::null_mut::<libc::rusage>(),
            )
        };
        if r != child {
            return Err(format!("wait4: {}", std::io::Error::last_os_error()));
        }
    }
    write_all(1, b"done\n")?;
    while wait_byte()? {}
    exit_now()
}

fn blockers(ms: u64) -> Result<(), String> {
    let dur = std::time::Duration::from_millis(ms);
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    write_all(1, format!("ready {pid}\n").as_bytes())?;
    if !wait_byte()? {
        return Ok(());
    }
    // SAFETY: a new epoll instance owned by this function.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(format!(
            "epoll_create1: {}",
            std::io::Error::last_os_error()
        ));
    }
    let mut ev = libc::epoll_event { events: 0, u64: 0 };
    let timeout = i32::try_from(ms).map_err(|_| "MS too large")?;
    // SAFETY: waits on our epoll fd with room for one event; the set is empty, so it times out.
    let n = unsafe { libc::epoll_wait(ep, &mut ev, 1, timeout) };
    if n != 0 {
        return Err(format!("epoll_wait returned {n}"));
    }
    // join() waits in futex while the thread sleeps in clock_nanosleep.
    std::thread::spawn(move || std::thread::sleep(dur))
        .join()
        .map_err(|_| "sleeper thread panicked")?;
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe2: {}", std::io::Error::last_os_error()));
    }
    let writer = fds[1];
    let t = std::thread::spawn(move || {
        std::thread::sleep(dur);
        write_all(writer, b"x")
    });
    let mut b = 0u8;
    // SAFETY: one byte into a local from our pipe.
    if unsafe { libc::read(fds[0], (&mut b as *mut u8).cast(), 1) } != 1 {
        return Err(format!("read pipe: {}", std::io::Error::last_os_error()));
    }
    t.join().map_err(|_| "writer thread panicked")??;
    write_all(1, b"done\n")?;
    while wait_byte()? {}
    exit_now()
}

/// Ends the process with exit_group at once, so no runtime teardown syscalls (sigaltstack,
/// munmap) follow the counted ones.
fn exit_now() -> ! {
    // SAFETY: terminating the process; nothing needs flushing (all output was raw writes).
    unsafe { libc::_exit(0) }
}

fn cpu_ns() -> u64 {
    // SAFETY: getrusage fills a zeroed struct.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn bench_open(
    n: u64,
    reps: u64,
    wait: bool,
    write_to: Option<&str>,
    resolve: bool,
) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::fd::AsRawFd;
    let target = match write_to {
        Some(dir) => {
            let path =
                std::path::Path::new(dir).join(format!("bench-write-{}", std::process::id()));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let _ = std::fs::remove_file(&path);
            Some(f)
        }
        None => None,
    };
    let page = [0x5au8; 4096];
    if wait {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        write_all(1, format!("ready {pid}\n").as_bytes())?;
        if !wait_byte()? {
            return Ok(());
        }
    }
    for _ in 0..reps {
        let cpu0 = cpu_ns();
        let t0 = Instant::now();
        if let Some(f) = &target {
            for i in 0..n {
                // SAFETY: writing a live 4 KiB buffer to an open fd.
                let w = unsafe {
                    libc::pwrite(
                        f.as_raw_fd(),
                        page.as_ptr().cast(),
                        page.len(),
                        ((i % 256) * 4096) as libc::off_t,
                    )
                };
                if w != 4096 {
                    return Err(format!("pwrite: {}", std::io::Error::last_os_error()));
                }
            }
        }
        if resolve {
            for _ in 0..n {
                // SAFETY: an all-zero addrinfo is a valid "no hints" value.
                let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
                hints.ai_family = libc::AF_INET;
                hints.ai_socktype = libc::SOCK_DGRAM;
                let mut res: *mut libc::addrinfo = std::ptr::null_mut();
                // SAFETY: NUL-terminated name, valid hints, out pointer freed below.
                let rc = unsafe {
                    libc::getaddrinfo(c"localhost".as_ptr(), std::ptr::null(), &hints, &mut res)
                };
                if rc != 0 {
                    return Err(format!("getaddrinfo localhost: {rc}"));
                }
                // SAFETY: res came from a successful getaddrinfo.
                unsafe { libc::freeaddrinfo(res) };
            }
        }
        for _ in 0..if target.is_some() || resolve { 0 } else { n } {
            let fd = open(DEV_NULL);
            if fd < 0 {
                return Err(format!(
                    "open /dev/null: {}",
                    std::io::Error::last_os_error()
                ));
            }
            // SAFETY: closing the fd just opened.
            unsafe { libc::close(fd) };
        }
        let wall = t0.elapsed().as_nanos();
        let cpu = cpu_ns() - cpu0;
        // Formatted on the stack: a heap allocation could add brk/mmap syscalls to the count.
        let mut buf = [0u8; 96];
        let mut cur = &mut buf[..];
        writeln!(cur, "cpu_ns={cpu} wall_ns={wall}").map_err(|e| e.to_string())?;
        let len = 96 - cur.len();
        write_all(1, &buf[..len])?;
    }
    exit_now()
}

const IO_CHUNK: usize = 64 * 1024;

fn io_sleep(count: u64, ms: u64, dir: &str) -> Result<(), String> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let path = std::path::Path::new(dir).join(format!("taskprobe-io-{pid}"));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    // O_DIRECT needs a block-aligned buffer.
    let layout = std::alloc::Layout::from_size_align(IO_CHUNK, 4096).map_err(|e| e.to_string())?;
    // SAFETY: non-zero size; freed below with the same layout.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    if ptr.is_null() {
        return Err("out of memory".into());
    }
    // SAFETY: ptr is a live allocation of IO_CHUNK bytes.
    let buf = unsafe { std::slice::from_raw_parts(ptr, IO_CHUNK) };
    write_all(1, format!("ready {pid}\n").as_bytes())?;
    let result = (|| {
        if !wait_byte()? {
            return Ok(());
        }
        let mut longest = 0u128;
        for i in 0..count {
            let start = Instant::now();
            file.write_all_at(buf, i * IO_CHUNK as u64)
                .map_err(|e| format!("direct write: {e}"))?;
            longest = longest.max(start.elapsed().as_nanos());
        }
        std::thread::sleep(std::time::Duration::from_millis(ms));
        write_all(1, format!("done {longest}\n").as_bytes())?;
        while wait_byte()? {}
        Ok(())
    })();
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(ptr, layout) };
    let _ = std::fs::remove_file(&path);
    result
}

fn page_cache(mib: u64, dir: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let path = std::path::Path::new(dir).join(format!("taskprobe-pc-{pid}"));
    write_all(1, format!("ready {pid}\n").as_bytes())?;
    let result = (|| {
        if !wait_byte()? {
            return Ok(());
        }
        let chunk = vec![0x5au8; 1 << 20];
        let mut f = std::fs::File::create(&path).map_err(|e| format!("create: {e}"))?;
        for _ in 0..mib {
            f.write_all(&chunk).map_err(|e| format!("write: {e}"))?;
        }
        f.sync_all().map_err(|e| format!("fsync: {e}"))?;
        write_all(1, b"written\n")?;
        if !wait_byte()? {
            return Ok(());
        }
        let mut f = std::fs::File::open(&path).map_err(|e| format!("open: {e}"))?;
        // SAFETY: fadvise on an open fd.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            return Err(format!("posix_fadvise: {rc}"));
        }
        let mut buf = vec![0u8; 1 << 20];
        while f.read(&mut buf).map_err(|e| format!("read: {e}"))? > 0 {}
        write_all(1, b"read\n")?;
        while wait_byte()? {}
        Ok(())
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// Bytes each `fs-ops` file holds, written and read in one syscall each.
const FS_FILE: usize = 64 << 10;

fn fs_ops(n: u64, dirs: &[String]) -> Result<(), String> {
    use std::io::{Read, Write};
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let file = |dir: &str, i: u64| std::path::Path::new(dir).join(format!("d/fs-{pid}-{i}"));
    write_all(1, format!("ready {pid}\n").as_bytes())?;
    if !wait_byte()? {
        return Ok(());
    }
    let data = vec![0xa5u8; FS_FILE];
    for dir in dirs {
        std::fs::create_dir_all(std::path::Path::new(dir).join("d"))
            .map_err(|e| format!("mkdir in {dir}: {e}"))?;
        for i in 0..n {
            let mut f = std::fs::File::create(file(dir, i)).map_err(|e| format!("create: {e}"))?;
            let w = f.write(&data).map_err(|e| format!("write: {e}"))?;
            if w != FS_FILE {
                return Err(format!("short write: {w}"));
            }
            f.sync_all().map_err(|e| format!("fsync: {e}"))?;
        }
    }
    write_all(1, b"written\n")?;
    if !wait_byte()? {
        return Ok(());
    }
    let mut buf = vec![0u8; FS_FILE];
    for dir in dirs {
        for i in 0..n {
            let mut f = std::fs::File::open(file(dir, i)).map_err(|e| format!("open: {e}"))?;
            let r = f.read(&mut buf).map_err(|e| format!("read: {e}"))?;
            if r != FS_FILE {
                return Err(format!("short read: {r}"));
            }
        }
    }
    write_all(1, b"read\n")?;
    while wait_byte()? {}
    Ok(())
}

fn migrate(n: u64, ms: u64) -> Result<(), String> {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    write_all(1, format!("ready {pid}\n").as_bytes())?;
    if !wait_byte()? {
        return Ok(());
    }
    let worker = std::thread::spawn(move || -> Result<i32, String> {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        for i in 0..n {
            // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays within it.
            let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            unsafe { libc::CPU_SET((i % 2) as usize, &mut set) };
            // SAFETY: pid 0 is this thread; the set is a valid cpu_set_t of that size.
            let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
            if rc != 0 {
                return Err(format!(
                    "sched_setaffinity: {}",
                    std::io::Error::last_os_error()
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        Ok(tid)
    });
    let tid = worker.join().map_err(|_| "worker panicked")??;
    write_all(1, format!("done {tid}\n").as_bytes())?;
    while wait_byte()? {}
    Ok(())
}

fn ioctls(n: u64, path: &str) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    // FS_IOC_GETFLAGS = _IOR('f', 1, long).
    const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
    let f = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    write_all(1, format!("ready {pid}\n").as_bytes())?;
    if !wait_byte()? {
        return Ok(());
    }
    let mut flags: libc::c_long = 0;
    for _ in 0..n {
        // SAFETY: FS_IOC_GETFLAGS writes one long into `flags`.
        if unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_GETFLAGS, &mut flags) } != 0 {
            return Err(format!(
                "FS_IOC_GETFLAGS: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    write_all(1, format!("done {}\n", f.as_raw_fd()).as_bytes())?;
    while wait_byte()? {}
    Ok(())
}

fn resolve(names: &[String]) -> Result<(), String> {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    write_all(1, format!("ready {pid}\n").as_bytes())?;
    if !wait_byte()? {
        return Ok(());
    }
    let (mut ok, mut failed) = (0, 0);
    for name in names {
        let c = std::ffi::CString::new(name.as_str()).map_err(|e| e.to_string())?;
        // SAFETY: an all-zero addrinfo is a valid "no hints" value; the family is set below.
        let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
        hints.ai_family = libc::AF_INET;
        hints.ai_socktype = libc::SOCK_DGRAM;
        let mut res: *mut libc::addrinfo = std::ptr::null_mut();
        // SAFETY: NUL-terminated name, valid hints, and an out pointer freed below.
        let rc = unsafe { libc::getaddrinfo(c.as_ptr(), std::ptr::null(), &hints, &mut res) };
        if rc == 0 {
            ok += 1;
            // SAFETY: res came from a successful getaddrinfo.
            unsafe { libc::freeaddrinfo(res) };
        } else {
            failed += 1;
        }
    }
    write_all(1, format!("resolved {ok} {failed}\n").as_bytes())?;
    while wait_byte()? {}
    Ok(())
}

fn exec_after(ms: u64, rest: &[String]) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let (path, args) = rest.split_first().ok_or("missing PATH")?;
    std::thread::sleep(std::time::Duration::from_millis(ms));
    let err = std::process::Command::new(path).args(args).exec();
    Err(format!("exec {path}: {err}"))
}

fn parse(s: Option<&String>, what: &str) -> Result<u64, String> {
    s.ok_or_else(|| format!("missing {what}"))?
        .parse()
        .map_err(|e| format!("bad {what}: {e}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("script") => parse(args.get(1), "K")
            .and_then(|k| parse(args.get(2), "N").and_then(|n| script(k, n))),
        Some("bench-open") => parse(args.get(1), "N").and_then(|n| {
            let reps = match args.iter().position(|a| a == "--reps") {
                Some(i) => parse(args.get(i + 1), "R")?,
                None => 1,
            };
            let write_to = match args.iter().position(|a| a == "--write-to") {
                Some(i) => Some(args.get(i + 1).ok_or("missing DIR")?.as_str()),
                None => None,
            };
            bench_open(
                n,
                reps,
                args.iter().any(|a| a == "--wait"),
                write_to,
                args.iter().any(|a| a == "--resolve"),
            )
        }),
        Some("io-sleep") => parse(args.get(1), "COUNT").and_then(|c| {
            parse(args.get(2), "MS").and_then(|ms| {
                let dir = args.get(3).ok_or("missing DIR")?;
                io_sleep(c, ms, dir)
            })
        }),
        Some("blockers") => parse(args.get(1), "MS").and_then(blockers),
        Some("page-cache") => parse(args.get(1), "MIB").and_then(|m| {
            let dir = args.get(2).ok_or("missing DIR")?;
            page_cache(m, dir)
        }),
        Some("resolve") => resolve(&args[1..]),
        Some("ioctl") => parse(args.get(1), "N").and_then(|n| {
            let path = args.get(2).ok_or("missing PATH")?;
            ioctls(n, path)
        }),
        Some("migrate") => parse(args.get(1), "N")
            .and_then(|n| parse(args.get(2), "MS").and_then(|ms| migrate(n, ms))),
        Some("fs-ops") => parse(args.get(1), "N").and_then(|n| fs_ops(n, &args[2..])),
        Some("exec-after") => {
            parse(args.get(1), "MS").and_then(|ms| exec_after(ms, args.get(2..).unwrap_or(&[])))
        }
        _ => Err(
            "usage: taskprobe-workload script K N | bench-open N [--reps R] [--wait] [--write-to DIR] [--resolve] | io-sleep COUNT MS DIR | blockers MS | page-cache MIB DIR | fs-ops N DIR... | ioctl N PATH | resolve NAME... | migrate N MS | exec-after MS PATH ARG..."
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("taskprobe-workload: {e}");
            ExitCode::FAILURE
        }
    }
}
