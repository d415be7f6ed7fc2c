"""Helpers for gala-gopher middleware probes written in Python (standard library only).

What every probe that watches a server needs, written once:

* ``processes(comms)`` finds running servers by their command name (``/proc/PID/comm``), and
  ``listening_tcp(pid)`` / ``listening_unix(pid)`` the sockets such a process listens on, so a
  probe discovers its instances at run time (a server started or stopped later appears or goes
  without restarting the probe). ``in_root(pid, path)`` reaches a file as the process sees it
  (through ``/proc/PID/root``: containers included).
* ``read_secret(path)`` reads a credential from a file only root can read or change (never from
  the command line, where ``ps`` shows it).
* ``http_request()`` and ``exchange()`` talk to a server with one deadline for the whole request
  and a cap on the answer's size: a server that is slow or answers garbage costs at most the
  timeout, never the probe.
* ``Instances`` keeps the per-instance ``up`` gauge and error counter every middleware probe
  reports (one table, ``<probe>_instance``: see docs/probes/middleware.md).

    import os, sys
    sys.path.insert(0, os.environ.get("GALA_GOPHER_SDK_DIR", "/opt/gala-gopher/sdk"))
    import gala_probe, gala_middleware as mw
"""

import contextlib
import ctypes
import os
import socket
import stat
import sys
import time

__all__ = [
    "HttpError",
    "Instances",
    "MAX_ANSWER_BYTES",
    "Process",
    "SecretError",
    "connect",
    "RootPathError",
    "exchange",
    "glob_in_root",
    "hex_ip",
    "http_request",
    "in_netns",
    "instance_params",
    "in_root",
    "listening_tcp",
    "listdir_in_root",
    "listening_unix",
    "netns",
    "open_in_root",
    "parse_proc_net_tcp",
    "ppid",
    "processes",
    "read_in_root",
    "read_secret",
    "request_timeout",
    "root_of",
    "same_netns",
    "start_time",
    "stat_in_root",
    "trusted_server",
]

MAX_ANSWER_BYTES = 8 << 20
"""Largest answer read from a server; a longer one is an error, not a memory spike."""

MAX_SECRET_BYTES = 64 << 10


def request_timeout(period, limit=5.0):
    """Timeout for one request: shorter than the period, so a slow server never delays a report.

    At most ``limit`` seconds and at most half the period (at least 0.2 s).
    """
    return max(0.2, min(float(limit), float(period) / 2.0))


# --- Discovery ---------------------------------------------------------------------------------


class Process:
    """A running process: ``pid``, ``comm`` and ``argv`` (list of str, may be empty)."""

    __slots__ = ("pid", "comm", "argv")

    def __init__(self, pid, comm, argv):
        self.pid = pid
        self.comm = comm
        self.argv = argv

    def __repr__(self):
        return "Process(%d, %r)" % (self.pid, self.comm)


def _read(path, limit=1 << 20):
    with open(path, "rb") as f:
        return f.read(limit)


def processes(comms, proc="/proc"):
    """Running processes whose ``comm`` is one of ``comms`` (exact names), sorted by pid.

    Processes that exit while being read are skipped.
    """
    wanted = set(comms)
    out = []
    try:
        entries = os.listdir(proc)
    except OSError:
        return out
    for name in entries:
        if not name.isdigit():
            continue
        try:
            comm = _read("%s/%s/comm" % (proc, name), 64).decode("utf-8", "replace").rstrip("\n")
            if comm not in wanted:
                continue
            raw = _read("%s/%s/cmdline" % (proc, name))
        except OSError:
            continue
        argv = [a.decode("utf-8", "replace") for a in raw.split(b"\0")[:-1]] if raw else []
        out.append(Process(int(name), comm, argv))
    out.sort(key=lambda p: p.pid)
    return out


def _stat_field(pid, index, proc):
    """Field ``index`` of /proc/PID/stat counted from the one after ``(comm)`` (0: state), as an
    int; None when the process is gone or the line is odd."""
    try:
        with open("%s/%d/stat" % (proc, pid), "rb") as f:
            raw = f.read(4096)
        return int(raw[raw.rindex(b")") + 2 :].split()[index])
    except (OSError, ValueError, IndexError):
        return None


def ppid(pid, proc="/proc"):
    """Parent pid of ``pid``, or None."""
    return _stat_field(pid, 1, proc)


def start_time(pid, proc="/proc"):
    """Start time of ``pid`` in clock ticks since boot, or None. With the pid it names one
    process for good: a reused pid has another start time."""
    return _stat_field(pid, 19, proc)


def _socket_inodes(pid, proc):
    inodes = set()
    fd_dir = "%s/%d/fd" % (proc, pid)
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink("%s/%s" % (fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:[") and target.endswith("]"):
            inodes.add(target[8:-1])
    return inodes


def hex_ip(text):
    """An address of /proc/net/tcp{,6} (kernel byte order per 32-bit word) as text; an IPv4-mapped
    IPv6 address as the IPv4 one."""
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    if words[:12] == b"\0" * 10 + b"\xff\xff":
        return socket.inet_ntop(socket.AF_INET, words[12:])
    return socket.inet_ntop(socket.AF_INET6, words)


def parse_proc_net_tcp(text, inodes=None, state="0A"):
    """(ip, port) of the entries of a /proc/net/tcp{,6} text in ``state`` (0A = listen), only
    those whose inode is in ``inodes`` when given."""
    out = []
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 10 or cols[3] != state:
            continue
        if inodes is not None and cols[9] not in inodes:
            continue
        try:
            addr, port = cols[1].rsplit(":", 1)
            out.append((hex_ip(addr), int(port, 16)))
        except ValueError:
            continue
    return out


def listening_tcp(pid, proc="/proc"):
    """Sorted, distinct (ip, port) TCP listening sockets of ``pid`` (IPv4 and IPv6), read in the
    process's own network namespace."""
    inodes = _socket_inodes(pid, proc)
    found = set()
    if not inodes:
        return []
    for table in ("tcp", "tcp6"):
        try:
            text = _read("%s/%d/net/%s" % (proc, pid, table), 64 << 20).decode("ascii", "replace")
        except OSError:
            continue
        found.update(parse_proc_net_tcp(text, inodes))
    return sorted(found)


def listening_unix(pid, proc="/proc"):
    """Sorted paths of the unix stream sockets ``pid`` listens on (abstract ones left out)."""
    inodes = _socket_inodes(pid, proc)
    if not inodes:
        return []
    try:
        text = _read("%s/%d/net/unix" % (proc, pid), 64 << 20).decode("utf-8", "replace")
    except OSError:
        return []
    out = set()
    for line in text.splitlines()[1:]:
        cols = line.split(None, 7)
        # Num RefCount Protocol Flags Type St Inode Path; Flags 00010000 = listening.
        if len(cols) < 8 or cols[6] not in inodes or not cols[7].startswith("/"):
            continue
        if int(cols[3], 16) & 0x10000:
            out.add(cols[7])
    return sorted(out)


SYSTEM_UID_MAX = 999
"""Accounts up to this uid are the system's (root and the service users packages create:
login.defs SYS_UID_MAX); ordinary users start above it."""


def trusted_server(pid, proc="/proc"):
    """(True, "") when a server found by discovery may be sent credentials, else (False, why).

    Trusted: the process runs in this host's own network and mount namespaces (not in a
    container, whose owner may be anyone) under a system account (uid <= SYSTEM_UID_MAX: root or
    a service user such as redis or postgres). A process name proves nothing (any user can start
    a program called "redis-server" on a free port and wait for the password), so servers that
    fail this get no credentials unless the user names them explicitly (an `instances` param).
    """
    for kind in ("net", "mnt"):
        try:
            if os.readlink("%s/%d/ns/%s" % (proc, pid, kind)) != os.readlink("/proc/self/ns/%s" % kind):
                return False, "it runs in another %s namespace (a container)" % ("network" if kind == "net" else "mount")
        except OSError:
            return False, "its namespaces cannot be read"
    try:
        with open("%s/%d/status" % (proc, pid), "rb") as f:
            for line in f.read(16384).decode("ascii", "replace").splitlines():
                if line.startswith("Uid:"):
                    uids = [int(u) for u in line.split()[1:]]
                    break
            else:
                return False, "its owner cannot be read"
    except (OSError, ValueError):
        return False, "its owner cannot be read"
    if max(uids) > SYSTEM_UID_MAX:
        return False, "it runs as uid %d, not a system account" % max(uids)
    return True, ""


def in_root(pid, path):
    """``path`` as process ``pid`` sees it (its mount namespace and root: containers too), for
    connecting to a socket. To READ a file there use read_in_root() and friends: a symlink the
    server's owner planted must not lead this root process to the host's files."""
    return "/proc/%d/root/%s" % (pid, path.lstrip("/"))


# --- Files inside a server's root --------------------------------------------------------------

MAX_SYMLINKS = 40
MAX_FILE_BYTES = 1 << 20
MAX_GLOB_MATCHES = 256


class RootPathError(OSError):
    """A path that cannot be resolved inside the root (too many symlinks, not a regular file...)."""


def root_of(pid):
    """The root directory of process ``pid`` as this process reaches it (``/proc/PID/root``)."""
    return "/proc/%d/root" % pid


def _walk(root, path):
    """(O_PATH fd of the directory holding the last component, that component's name) of
    ``path`` resolved inside directory ``root`` as a chroot would: an absolute symlink target
    starts again at ``root``, ``..`` never leaves it, at most MAX_SYMLINKS links. The caller
    closes the fd. The name is "" for the root itself."""
    flags = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
    stack = [os.open(root, flags)]
    parts = [p for p in path.split("/") if p not in ("", ".")]
    links = 0
    try:
        while parts:
            name = parts.pop(0)
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            try:
                target = os.readlink(name, dir_fd=stack[-1])
            except OSError as e:
                if e.errno not in (22, 2):  # EINVAL: not a symlink; ENOENT: left to the caller
                    raise
                target = None
            if target is not None:
                links += 1
                if links > MAX_SYMLINKS:
                    raise RootPathError(40, "too many levels of symbolic links", path)
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                parts = [p for p in target.split("/") if p not in ("", ".")] + parts
                continue
            if not parts:
                return os.dup(stack[-1]), name
            stack.append(os.open(name, flags | os.O_NOFOLLOW, dir_fd=stack[-1]))
        return os.dup(stack[-1]), ""
    finally:
        for fd in stack:
            os.close(fd)


def open_in_root(root, path, flags=os.O_RDONLY):
    """An fd of ``path`` opened inside directory ``root`` (see _walk), never through a symlink
    that leads out of it, and non-blocking (a FIFO planted where a file is expected cannot hang
    the probe). ``root`` is root_of(pid) for a server's own view, or "/" for the host's."""
    parent, name = _walk(root, path)
    try:
        return os.open(name or ".", flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent)
    finally:
        os.close(parent)


def read_in_root(root, path, limit=MAX_FILE_BYTES):
    """The bytes of regular file ``path`` inside ``root``; RootPathError when it is not a regular
    file or is larger than ``limit`` bytes, OSError when it cannot be read."""
    fd = open_in_root(root, path)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RootPathError(21, "not a regular file", path)
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise RootPathError(27, "larger than %d bytes" % limit, path)
        return b"".join(chunks)
    finally:
        os.close(fd)


def stat_in_root(root, path):
    """os.stat_result of ``path`` inside ``root`` (symlinks followed inside it)."""
    fd = open_in_root(root, path, os.O_PATH)
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def listdir_in_root(root, path):
    """Sorted names in directory ``path`` inside ``root``."""
    fd = open_in_root(root, path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return sorted(os.listdir(fd))
    finally:
        os.close(fd)


def glob_in_root(root, pattern, limit=MAX_GLOB_MATCHES):
    """Sorted absolute paths inside ``root`` matching the shell pattern ``pattern`` (``*``, ``?``,
    ``[...]`` in any component; names starting with "." only when the pattern's component does),
    at most ``limit`` of them."""
    import fnmatch

    found = ["/"]
    parts = [p for p in pattern.split("/") if p not in ("", ".")]
    for i, part in enumerate(parts):
        nxt = []
        for base in found:
            if not any(c in part for c in "*?["):
                nxt.append(base.rstrip("/") + "/" + part)
                continue
            try:
                names = listdir_in_root(root, base)
            except OSError:
                continue
            for n in names:
                if fnmatch.fnmatchcase(n, part) and (not n.startswith(".") or part.startswith(".")):
                    nxt.append(base.rstrip("/") + "/" + n)
        found = nxt[: limit * 4]
    out = []
    for p in found:
        try:
            stat_in_root(root, p)
        except OSError:
            continue
        out.append(p)
        if len(out) >= limit:
            break
    return sorted(out)


# --- Network namespaces ------------------------------------------------------------------------

CLONE_NEWNET = 0x40000000
_libc = None


def netns(pid):
    """The network namespace of ``pid`` (or "self") as ``net:[inode]``; None when unreadable."""
    try:
        return os.readlink("/proc/%s/ns/net" % pid)
    except OSError:
        return None


def same_netns(pid):
    """Whether ``pid`` is in this process's network namespace (False when unreadable)."""
    theirs = netns(pid)
    return theirs is not None and theirs == netns("self")


def _setns(fd):
    global _libc
    if hasattr(os, "setns"):  # python >= 3.12
        os.setns(fd, CLONE_NEWNET)
        return
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def in_netns(pid):
    """Runs the body with the calling thread in the network namespace of process ``pid``
    (nothing to do for None), to reach a server that listens only inside a container.

    Only the calling thread moves (use a worker thread), and it is back in its own namespace when
    the body ends; a socket keeps the namespace it was made in. Raises OSError when the namespace
    cannot be opened or entered. A thread that cannot get back would talk to the wrong servers
    from then on: the probe exits (status 1) and the daemon starts it again.
    """
    if pid is None:
        yield
        return
    theirs = os.open("/proc/%d/ns/net" % pid, os.O_RDONLY | os.O_CLOEXEC)
    try:
        ours = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(theirs)
            try:
                yield
            finally:
                try:
                    _setns(ours)
                except OSError as e:
                    sys.stderr.write("[ERROR] cannot return to the probe's network namespace: %s\n" % e)
                    sys.stderr.flush()
                    os._exit(1)
        finally:
            os.close(ours)
    finally:
        os.close(theirs)


# --- Credentials -------------------------------------------------------------------------------


class SecretError(ValueError):
    """A credential file that is missing, too large, or readable or writable by others."""


def read_secret(path):
    """The content of credential file ``path``, trailing newline stripped.

    The file must be a regular file owned by root (uid 0) with no permission for group or
    others (mode 0600 or 0400), else SecretError: a secret anyone can read is no secret, and one
    anyone can change lets them point the probe elsewhere.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise SecretError("%s: %s" % (path, e.strerror)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SecretError("%s: not a regular file" % path)
        if st.st_uid != 0:
            raise SecretError("%s: not owned by root" % path)
        if st.st_mode & 0o077:
            raise SecretError("%s: readable or writable by group or others (chmod 600)" % path)
        data = os.read(fd, MAX_SECRET_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_SECRET_BYTES:
        raise SecretError("%s: larger than %d bytes" % (path, MAX_SECRET_BYTES))
    return data.decode("utf-8").rstrip("\r\n")


# --- Talking to servers ------------------------------------------------------------------------


class HttpError(IOError):
    """A request that failed: connection, timeout, oversized or malformed answer."""


def connect(address, deadline):
    """A stream socket connected to ``address`` ((host, port) or a unix socket path) before
    ``deadline`` (time.monotonic()), with that time left as its timeout."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise socket.timeout("timed out")
    if isinstance(address, str):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(left)
        try:
            s.connect(address)
        except OSError:
            s.close()
            raise
        return s
    return socket.create_connection(address, timeout=left)


def exchange(address, request, timeout, done=None, limit=MAX_ANSWER_BYTES):
    """Send ``request`` (bytes) and return the answer (bytes), all within ``timeout`` seconds.

    ``address`` is (host, port) or a unix socket path. Reads until the server closes the
    connection, or until ``done(answer_so_far)`` is true. Raises OSError (socket.timeout
    included) or HttpError when the answer exceeds ``limit`` bytes.
    """
    deadline = time.monotonic() + timeout
    s = connect(address, deadline)
    try:
        if request:
            s.settimeout(max(0.001, deadline - time.monotonic()))
            s.sendall(request)
        chunks = []
        size = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out")
            s.settimeout(left)
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise HttpError("answer larger than %d bytes" % limit)
            if done is not None and done(b"".join(chunks) if len(chunks) > 1 else chunk):
                chunks = [b"".join(chunks)]
                break
        return b"".join(chunks)
    finally:
        s.close()


def _dechunk(body):
    out = []
    pos = 0
    while True:
        end = body.find(b"\r\n", pos)
        if end < 0:
            raise HttpError("truncated chunked body")
        try:
            size = int(body[pos:end].split(b";", 1)[0], 16)
        except ValueError:
            raise HttpError("bad chunk size") from None
        if size == 0:
            return b"".join(out)
        start = end + 2
        if start + size > len(body):
            raise HttpError("truncated chunked body")
        out.append(body[start : start + size])
        pos = start + size + 2


def http_request(address, path, timeout, method="GET", headers=None, body=None, host=None,
                 limit=MAX_ANSWER_BYTES):
    """One HTTP/1.1 request (``Connection: close``); returns (status, headers, body).

    ``address`` is (host, port) or a unix socket path. ``host`` is the Host header (default: the
    address, or "localhost" for a unix socket; give the server name for a virtual host).
    ``headers`` a dict; header names in the result are lower case. Chunked answers are decoded.
    The whole exchange, connect included, takes at most ``timeout`` seconds (OSError /
    socket.timeout), and an answer larger than ``limit`` bytes or not HTTP raises HttpError.
    """
    if host is None:
        if isinstance(address, str):
            host = "localhost"
        else:
            host = "%s:%d" % (("[%s]" % address[0]) if ":" in address[0] else address[0], address[1])
    if any(c in host for c in "\r\n"):
        raise HttpError("line break in the Host header")
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: %s" % host, "Connection: close"]
    for k, v in (headers or {}).items():
        if any(c in str(v) + k for c in "\r\n"):
            raise HttpError("header %r: line break in header" % k)
        lines.append("%s: %s" % (k, v))
    if body is not None:
        lines.append("Content-Length: %d" % len(body))
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
    answer = exchange(address, raw, timeout, limit=limit)
    head, sep, rest = answer.partition(b"\r\n\r\n")
    if not sep:
        raise HttpError("no complete HTTP header in the answer")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise HttpError("not an HTTP answer: %r" % status_line[:80])
    hdrs = {}
    for line in header_lines:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    if hdrs.get("transfer-encoding", "").lower() == "chunked":
        rest = _dechunk(rest)
    elif "content-length" in hdrs:
        try:
            n = int(hdrs["content-length"])
        except ValueError:
            raise HttpError("bad Content-Length") from None
        if len(rest) < n:
            raise HttpError("truncated body (%d of %d bytes)" % (len(rest), n))
        rest = rest[:n]
    return int(parts[1]), hdrs, rest


# --- Params ------------------------------------------------------------------------------------


def instance_params(args, control):
    """The two params every discovering probe has, as in effect now: ``instances`` (flag ``-a``,
    a comma-separated list, default "") and ``discover`` (flag ``-x 0|1``, default 1). The newest
    control line wins over the command line (``args`` from gala_probe.parse_args, ``control`` a
    gala_probe.Control); a malformed ``-x`` value is ignored."""
    p = {"instances": "", "discover": 1}
    for flag, value in args["extra"]:
        if flag == "a" and value is not None:
            p["instances"] = value
        if flag == "x" and value in ("0", "1"):
            p["discover"] = int(value)
    p["instances"] = control.param("instances", p["instances"])
    p["discover"] = control.param("discover", p["discover"])
    return p


# --- Instance bookkeeping ----------------------------------------------------------------------


class Instances:
    """The per-instance health every middleware probe reports, one record per instance and period
    in table ``table`` (``<probe>_instance``: key ``instance``; ``up`` gauge 1/0,
    ``scrape_errors`` counter since the probe started, ``scrape_seconds`` gauge).

    Each period: ``begin()``, then per instance ``ok(instance, seconds)`` or
    ``failed(instance, error, seconds)``, then ``report()``. A failure is logged once when the
    instance goes down (and once when it is back), not every period. Instances not seen in a
    period are forgotten (their error count too).
    """

    def __init__(self, table, log_warn, log_info, record):
        self.table = table
        self._warn = log_warn
        self._info = log_info
        self._record = record
        self._errors = {}
        self._down = set()
        self._seen = {}

    def begin(self):
        self._seen = {}

    def ok(self, instance, seconds=0.0):
        if instance in self._down:
            self._down.discard(instance)
            self._info("%s: %s is up again" % (self.table, instance))
        self._errors.setdefault(instance, 0)
        self._seen[instance] = (1, seconds)

    def failed(self, instance, error, seconds=0.0):
        self._errors[instance] = self._errors.get(instance, 0) + 1
        if instance not in self._down:
            self._down.add(instance)
            self._warn("%s: %s is down: %s" % (self.table, instance, error))
        self._seen[instance] = (0, seconds)

    def errors(self, instance):
        return self._errors.get(instance, 0)

    def report(self):
        for instance in list(self._errors):
            if instance not in self._seen:
                del self._errors[instance]
                self._down.discard(instance)
        for instance, (up, seconds) in sorted(self._seen.items()):
            self._record(self.table, instance, up, self._errors.get(instance, 0), round(seconds, 6))
