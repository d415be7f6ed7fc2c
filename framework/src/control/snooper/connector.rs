//! The kernel's process events connector (`NETLINK_CONNECTOR`, `CN_IDX_PROC`).
//!
//! One multicast netlink socket receives a message per fork, exec, comm change and exit of every
//! task on the host. A classic BPF socket filter drops, in the kernel, everything the resolver
//! does not use (thread creation and exit, uid/gid/sid/ptrace/coredump events) before it is
//! queued, so a busy host costs the resolver only the process-level events. Messages are read in
//! batches with `recvmmsg`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

const NETLINK_CONNECTOR: libc::c_int = 11;
const SO_ATTACH_FILTER: libc::c_int = 26;
const SO_RCVBUFFORCE: libc::c_int = 33;
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_CN_MCAST_IGNORE: u32 = 2;
const NLMSG_DONE: u16 = 3;

const PROC_EVENT_NONE: u32 = 0;
const PROC_EVENT_FORK: u32 = 1;
const PROC_EVENT_EXEC: u32 = 2;
const PROC_EVENT_COMM: u32 = 0x200;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;

/// `struct nlmsghdr` (16 bytes) + `struct cn_msg` (20 bytes).
const EVENT_OFFSET: usize = 36;
/// Offsets inside the message (`struct proc_event`: what, cpu, timestamp, then the union).
const WHAT: usize = EVENT_OFFSET;
const DATA: usize = EVENT_OFFSET + 16;

/// Socket receive buffer: room for a burst of some thousands of events between two reads.
const RCVBUF_BYTES: libc::c_int = 4 << 20;
/// Messages per `recvmmsg` call and the room for each (a proc event message is 76 bytes).
const BATCH: usize = 64;
const MSG_BYTES: usize = 256;

/// One process-level event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The answer to the listen request (`err` 0 = events will come).
    Ack {
        /// errno from the kernel.
        err: u32,
    },
    /// A new process `child` (thread group) forked by `parent` (thread group id).
    Fork {
        /// Parent tgid.
        parent: u32,
        /// Child tgid.
        child: u32,
    },
    /// `pid` executed a new program.
    Exec {
        /// tgid.
        pid: u32,
    },
    /// The main thread of `pid` changed its name to `comm` (NUL-padded).
    Comm {
        /// tgid.
        pid: u32,
        /// The new comm, NUL-padded.
        comm: [u8; 16],
    },
    /// Process `pid` exited.
    Exit {
        /// tgid.
        pid: u32,
    },
}

fn u32_at(msg: &[u8], off: usize) -> Option<u32> {
    let bytes = msg.get(off..off + 4)?;
    Some(u32::from_ne_bytes(bytes.try_into().ok()?))
}

/// Decode one netlink message from the proc connector; `None` for anything else (other
/// connector ids, thread-level events the filter let through, short messages).
pub fn parse(msg: &[u8]) -> Option<Event> {
    if u32_at(msg, 16)? != CN_IDX_PROC || u32_at(msg, 20)? != CN_VAL_PROC {
        return None;
    }
    let at = |i: usize| u32_at(msg, DATA + 4 * i);
    match u32_at(msg, WHAT)? {
        PROC_EVENT_NONE => Some(Event::Ack { err: at(0)? }),
        PROC_EVENT_FORK => {
            let (parent, child_pid, child) = (at(1)?, at(2)?, at(3)?);
            (child_pid == child).then_some(Event::Fork { parent, child })
        }
        PROC_EVENT_EXEC => Some(Event::Exec { pid: at(1)? }),
        PROC_EVENT_COMM => {
            let (pid, tgid) = (at(0)?, at(1)?);
            let comm = msg.get(DATA + 8..DATA + 24)?.try_into().ok()?;
            (pid == tgid).then_some(Event::Comm { pid, comm })
        }
        PROC_EVENT_EXIT => {
            let (pid, tgid) = (at(0)?, at(1)?);
            (pid == tgid).then_some(Event::Exit { pid })
        }
        _ => None,
    }
}

/// What one read of the socket gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Batch {
    /// `n` messages were read (0: nothing was waiting).
    Read(usize),
    /// The kernel dropped events because the socket buffer was full (`ENOBUFS`).
    Lost,
}

/// A subscribed proc connector socket.
#[derive(Debug)]
pub struct Connector {
    fd: OwnedFd,
    bufs: Vec<[u8; MSG_BYTES]>,
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: `val` points to a live `T` of the size passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (val as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// The in-kernel filter: keep process forks (child pid == tgid), execs, exits and comm changes
/// of a main thread (pid == tgid), and the listen ack; drop everything else.
fn filter() -> Vec<libc::sock_filter> {
    // BPF_ABS loads read big-endian words; the connector writes host-endian ones.
    let k = |v: u32| u32::from_be_bytes(v.to_ne_bytes());
    let ld = |off: usize| libc::sock_filter {
        code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
        jt: 0,
        jf: 0,
        k: off as u32,
    };
    let jeq = |v: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k: k(v),
    };
    let jeq_x = |jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | 0x08) as u16, // BPF_X
        jt,
        jf,
        k: 0,
    };
    let tax = libc::sock_filter {
        code: 0x07, // BPF_MISC | BPF_TAX
        jt: 0,
        jf: 0,
        k: 0,
    };
    let ret = |v: u32| libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: v,
    };
    // Jump offsets count from the next instruction.
    vec![
        /* 0 */ ld(WHAT),
        /* 1 */ jeq(PROC_EVENT_FORK, 5, 0), // -> 7
        /* 2 */ jeq(PROC_EVENT_EXEC, 13, 0), // -> 16
        /* 3 */ jeq(PROC_EVENT_EXIT, 7, 0), // -> 11
        /* 4 */ jeq(PROC_EVENT_COMM, 6, 0), // -> 11
        /* 5 */ jeq(PROC_EVENT_NONE, 10, 0), // -> 16
        /* 6 */ ret(0),
        /* 7 */ ld(DATA + 12), // fork: child_tgid
        /* 8 */ tax,
        /* 9 */ ld(DATA + 8), // child_pid
        /* 10 */ jeq_x(5, 4), // -> 16 : 15
        /* 11 */ ld(DATA + 4), // exit, comm: tgid
        /* 12 */ tax,
        /* 13 */ ld(DATA), // pid
        /* 14 */ jeq_x(1, 0), // -> 16 : 15
        /* 15 */ ret(0),
        /* 16 */ ret(u32::MAX),
    ]
}

impl Connector {
    /// Open, filter, subscribe and wait (at most `ack_timeout`) for the kernel's ack. Fails when
    /// the connector is missing, not permitted (another user or pid namespace) or silent.
    pub fn open(ack_timeout: Duration) -> io::Result<Connector> {
        // SAFETY: plain socket(2); the fd is owned at once.
        let raw = cvt(unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                NETLINK_CONNECTOR,
            )
        })?;
        // SAFETY: `raw` is a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let prog = filter();
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr().cast_mut(),
        };
        // Without the filter every thread event reaches user space: slower, still correct.
        if let Err(e) = setsockopt(raw, libc::SOL_SOCKET, SO_ATTACH_FILTER, &fprog) {
            tracing::warn!(error = %e, "snooper: proc connector filter refused; reading all events");
        }
        if setsockopt(raw, libc::SOL_SOCKET, SO_RCVBUFFORCE, &RCVBUF_BYTES).is_err() {
            setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, &RCVBUF_BYTES)?;
        }
        // SAFETY: all-zero is a valid sockaddr_nl.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = CN_IDX_PROC;
        // SAFETY: `addr` is a sockaddr_nl of the size passed.
        cvt(unsafe {
            libc::bind(
                raw,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        })?;
        let conn = Connector {
            fd,
            bufs: vec![[0u8; MSG_BYTES]; BATCH],
        };
        conn.send_op(PROC_CN_MCAST_LISTEN)?;
        conn.wait_ack(ack_timeout)?;
        Ok(conn)
    }

    fn send_op(&self, op: u32) -> io::Result<()> {
        let mut msg = [0u8; 40];
        msg[0..4].copy_from_slice(&40u32.to_ne_bytes());
        msg[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        msg[16..20].copy_from_slice(&CN_IDX_PROC.to_ne_bytes());
        msg[20..24].copy_from_slice(&CN_VAL_PROC.to_ne_bytes());
        msg[32..34].copy_from_slice(&4u16.to_ne_bytes());
        msg[36..40].copy_from_slice(&op.to_ne_bytes());
        // SAFETY: all-zero is a valid sockaddr_nl (the kernel: pid 0, no groups).
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: `msg` and `to` are live buffers of the sizes passed.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&to as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn wait_ack(&self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; MSG_BYTES];
        loop {
            // SAFETY: `buf` is a live buffer of the size passed.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n >= 0 {
                // Events queued before the ack predate the initial scan: dropped.
                if let Some(Event::Ack { err }) = parse(&buf[..n as usize]) {
                    return match err {
                        0 => Ok(()),
                        e => Err(io::Error::from_raw_os_error(e as i32)),
                    };
                }
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) | Some(libc::EINTR) => {}
                _ => return Err(e),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no answer to PROC_CN_MCAST_LISTEN",
                ));
            }
            if !wait_readable(self.fd.as_raw_fd(), left)? {
                continue;
            }
        }
    }

    /// Read every waiting message (up to one batch) without blocking; decoded events are
    /// appended to `out`.
    pub fn read_batch(&mut self, out: &mut Vec<Event>) -> io::Result<Batch> {
        // SAFETY: all-zero is a valid value of these C structs.
        let mut addrs: [libc::sockaddr_nl; BATCH] = unsafe { std::mem::zeroed() };
        let mut iovs: Vec<libc::iovec> = self
            .bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: MSG_BYTES,
            })
            .collect();
        // SAFETY: as above.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, h) in hdrs.iter_mut().enumerate() {
            h.msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_nl).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut iovs[i];
            h.msg_hdr.msg_iovlen = 1;
        }
        let n = loop {
            // SAFETY: every header points at live buffers (`addrs`, `iovs`, `self.bufs`) that
            // outlive the call.
            let n = unsafe {
                libc::recvmmsg(
                    self.fd.as_raw_fd(),
                    hdrs.as_mut_ptr(),
                    BATCH as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return Ok(Batch::Read(0)),
                Some(libc::ENOBUFS) => return Ok(Batch::Lost),
                _ => return Err(e),
            }
        };
        for (i, h) in hdrs.iter().take(n).enumerate() {
            // Only the kernel (port 0) speaks for the connector.
            if addrs[i].nl_pid != 0 {
                continue;
            }
            let len = (h.msg_len as usize).min(MSG_BYTES);
            if let Some(ev) = parse(&self.bufs[i][..len]) {
                out.push(ev);
            }
        }
        Ok(Batch::Read(n))
    }
}

impl AsRawFd for Connector {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        // The kernel counts listeners to skip the work when there are none.
        let _ = self.send_op(PROC_CN_MCAST_IGNORE);
    }
}

/// Wait until `fd` is readable or `timeout` passes; true if readable.
pub fn wait_readable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one live pollfd.
    match unsafe { libc::poll(&mut pfd, 1, ms) } {
        n if n > 0 => Ok(true),
        0 => Ok(false),
        _ => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(what: u32, data: &[u32]) -> Vec<u8> {
        let mut m = vec![0u8; 76];
        m[16..20].copy_from_slice(&CN_IDX_PROC.to_ne_bytes());
        m[20..24].copy_from_slice(&CN_VAL_PROC.to_ne_bytes());
        m[WHAT..WHAT + 4].copy_from_slice(&what.to_ne_bytes());
        for (i, v) in data.iter().enumerate() {
            m[DATA + 4 * i..DATA + 4 * i + 4].copy_from_slice(&v.to_ne_bytes());
        }
        m
    }

    #[test]
    fn decodes_process_events_and_skips_threads() {
        assert_eq!(
            parse(&msg(PROC_EVENT_FORK, &[10, 10, 11, 11])),
            Some(Event::Fork {
                parent: 10,
                child: 11
            })
        );
        // A new thread of 10.
        assert_eq!(parse(&msg(PROC_EVENT_FORK, &[10, 10, 12, 10])), None);
        assert_eq!(
            parse(&msg(PROC_EVENT_EXEC, &[11, 11])),
            Some(Event::Exec { pid: 11 })
        );
        assert_eq!(
            parse(&msg(PROC_EVENT_EXIT, &[11, 11, 0, 17])),
            Some(Event::Exit { pid: 11 })
        );
        assert_eq!(parse(&msg(PROC_EVENT_EXIT, &[12, 10, 0, 17])), None);
        let mut m = msg(PROC_EVENT_COMM, &[11, 11]);
        m[DATA + 8..DATA + 12].copy_from_slice(b"java");
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"java");
        assert_eq!(parse(&m), Some(Event::Comm { pid: 11, comm }));
        assert_eq!(
            parse(&msg(PROC_EVENT_NONE, &[0])),
            Some(Event::Ack { err: 0 })
        );
        // uid change, short message, other connector.
        assert_eq!(parse(&msg(4, &[11, 11])), None);
        assert_eq!(parse(&msg(PROC_EVENT_EXEC, &[11, 11])[..40]), None);
        let mut other = msg(PROC_EVENT_EXEC, &[11, 11]);
        other[16] = 7;
        assert_eq!(parse(&other), None);
    }

    #[test]
    fn filter_jumps_stay_inside_the_program() {
        let prog = filter();
        for (pc, ins) in prog.iter().enumerate() {
            if ins.code as u32 & 0x07 == libc::BPF_JMP {
                assert!(pc + 1 + (ins.jt as usize) < prog.len(), "jt at {pc}");
                assert!(pc + 1 + (ins.jf as usize) < prog.len(), "jf at {pc}");
            }
        }
        assert_eq!(prog.last().map(|i| i.k), Some(u32::MAX));
    }
}
