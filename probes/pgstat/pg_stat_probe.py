#!/usr/bin/python3
"""PostgreSQL / openGauss statistics probe (upstream's `pg_stat_probe`, REST name `opengauss_sli`).

Every period it finds the running postmasters (comm `postgres`, `postmaster` or `gaussdb`) and the
instances given as params, asks each one for `pg_stat_database`, `pg_stat_activity` and a few
settings in ONE simple query (one transaction), and prints:

    |pg_tps|<tgid>|<datid>|POSTGRE|0|<server_ip>|<server_port>|<datname>|<commits per second>|
    |pg_database|<instance>|<datname>|<datid>|<numbackends>|<xact_commit>|...|
    |pg_connections|<instance>|<state>|<connections>|
    |pg_server|<instance>|<version>|<tgid>|<backends>|<max_connections>|...|
    |pg_instance|<instance>|<up>|<scrape_errors>|<scrape_seconds>|

There is no libpq or psycopg on the hosts: this file speaks the PostgreSQL frontend/backend
protocol v3 itself (trust, cleartext, md5 and SCRAM-SHA-256 authentication; the simple query
protocol). Credentials come from root-only files named by params, never from the command line.
See docs/probes/pgstat.md.
"""

import base64
import hashlib
import hmac
import os
import socket
import ssl
import struct
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.environ.get("GALA_GOPHER_SDK_DIR", "/opt/gala-gopher/sdk"))
import gala_middleware as mw  # noqa: E402
import gala_probe  # noqa: E402

SERVER_COMMS = ("postgres", "postmaster", "gaussdb")
SOCKET_PREFIX = ".s.PGSQL."
APP_NAME = "gala-gopher"
MAX_MESSAGE_BYTES = 1 << 20
"""Largest single protocol message accepted from a server."""
MAX_SCRAM_ITERATIONS = 1 << 20
"""A server asking for more PBKDF2 rounds than this is refused (it would stall the probe)."""
MAX_ROWS = 100000
"""Rows of one answer kept at most; more is a protocol error (bounds memory)."""
MAX_PARALLEL = 8
"""Servers asked at the same time."""
SKIPPED_DATABASES = ("template0", "template1")
KNOWN_STATES = (
    "active",
    "idle",
    "idle in transaction",
    "idle in transaction (aborted)",
    "fastpath function call",
    "disabled",
)
DATABASE_COUNTERS = (
    "xact_commit",
    "xact_rollback",
    "blks_read",
    "blks_hit",
    "tup_returned",
    "tup_fetched",
    "tup_inserted",
    "tup_updated",
    "tup_deleted",
    "conflicts",
    "temp_files",
    "temp_bytes",
    "deadlocks",
    "blk_read_time",
    "blk_write_time",
)

# --- Queries -----------------------------------------------------------------------------------
# Sent together as one simple Query message: the server runs them in one implicit transaction, so
# each period adds exactly one commit to the database the probe connects to.

SQL_DATABASES = "SELECT * FROM pg_stat_database"
_ACTIVITY = (
    "SELECT coalesce(state, 'unknown'), count(*),"
    " max(extract(epoch FROM now() - xact_start)),"
    " max(CASE WHEN state = 'active' THEN extract(epoch FROM now() - query_start) END),"
    " %s"
    " FROM pg_stat_activity WHERE pid <> pg_backend_pid() %s GROUP BY 1"
)
# PostgreSQL >= 10 has backend_type (only client sessions count) and wait_event_type.
SQL_ACTIVITY = _ACTIVITY % (
    "count(CASE WHEN wait_event_type = 'Lock' THEN 1 END)",
    "AND backend_type = 'client backend'",
)
# openGauss (9.2-based) and PostgreSQL 9.x: background processes have no database.
SQL_ACTIVITY_LEGACY = _ACTIVITY % ("NULL", "AND datid IS NOT NULL")
SQL_SERVER = (
    "SELECT current_setting('max_connections'),"
    " extract(epoch FROM now() - pg_postmaster_start_time()), pg_is_in_recovery()"
)


def build_query(server_version_num):
    activity = SQL_ACTIVITY if server_version_num >= 100000 else SQL_ACTIVITY_LEGACY
    return "%s; %s; %s" % (SQL_DATABASES, activity, SQL_SERVER)


# --- PostgreSQL wire protocol v3 ---------------------------------------------------------------


class ProtocolError(IOError):
    """The peer broke the protocol (garbage, oversized message, bad authentication exchange)."""


class ServerError(Exception):
    """An ErrorResponse from the server; ``fields`` maps the field codes (S, C, M, ...)."""

    def __init__(self, fields):
        self.fields = fields
        super().__init__(self.text())

    @property
    def sqlstate(self):
        return self.fields.get("C", "")

    def text(self):
        f = self.fields
        return "%s %s %s" % (f.get("S", "ERROR"), f.get("C", "?????"), f.get("M", "(no message)"))


class AuthError(ProtocolError):
    """Authentication that cannot proceed on our side (method unsupported, no password)."""


def _cstring(text):
    return text.encode("utf-8") + b"\0"


def _message(kind, payload):
    return kind + struct.pack("!I", len(payload) + 4) + payload


def _error_fields(payload):
    fields = {}
    for part in payload.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


def startup_message(user, database, options=None):
    """The StartupMessage (protocol 3.0) for ``user`` on ``database``."""
    body = struct.pack("!I", 196608)
    params = [("user", user), ("database", database), ("application_name", APP_NAME),
              ("client_encoding", "UTF8")]
    if options:
        params.append(("options", options))
    for k, v in params:
        body += _cstring(k) + _cstring(v)
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def md5_password(user, password, salt):
    """The answer to AuthenticationMD5Password: md5(md5(password + user) + salt), hex, "md5"-prefixed."""
    inner = hashlib.md5(password.encode("utf-8") + user.encode("utf-8")).hexdigest()
    return "md5" + hashlib.md5(inner.encode("ascii") + salt).hexdigest()


class ScramClient:
    """SCRAM-SHA-256 client side (RFC 5802, RFC 7677) as PostgreSQL uses it: no channel binding,
    the user name left empty in the messages (the server takes it from the startup packet).
    The password is used as UTF-8 without SASLprep (right for ASCII passwords)."""

    def __init__(self, password, nonce=None, user=""):
        self.password = password.encode("utf-8")
        self.nonce = nonce or base64.b64encode(os.urandom(18)).decode("ascii")
        self.first_bare = "n=%s,r=%s" % (user.replace("=", "=3D").replace(",", "=2C"), self.nonce)
        self._server_signature = None
        self.verified = False

    def first(self):
        return ("n,," + self.first_bare).encode("ascii")

    def final(self, server_first):
        try:
            text = server_first.decode("ascii")
            attrs = dict(kv.split("=", 1) for kv in text.split(","))
            nonce, rounds = attrs["r"], int(attrs["i"])
            salt = base64.b64decode(attrs["s"], validate=True)
        except (UnicodeDecodeError, ValueError, KeyError):
            raise ProtocolError("SCRAM: malformed server-first message") from None
        if not nonce.startswith(self.nonce) or len(nonce) == len(self.nonce):
            raise ProtocolError("SCRAM: server nonce does not extend ours")
        if not 1 <= rounds <= MAX_SCRAM_ITERATIONS:
            raise ProtocolError(
                "SCRAM: %d iterations asked (at most %d)" % (rounds, MAX_SCRAM_ITERATIONS))
        salted = hashlib.pbkdf2_hmac("sha256", self.password, salt, rounds)
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = "c=biws,r=" + nonce
        auth_message = ",".join((self.first_bare, text, without_proof)).encode("ascii")
        signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        self._server_signature = hmac.new(server_key, auth_message, hashlib.sha256).digest()
        return (without_proof + ",p=" + base64.b64encode(proof).decode("ascii")).encode("ascii")

    def verify(self, server_final):
        text = server_final.decode("ascii", "replace")
        if not text.startswith("v=") or self._server_signature is None:
            raise ProtocolError("SCRAM: malformed server-final message")
        try:
            got = base64.b64decode(text[2:].split(",", 1)[0], validate=True)
        except ValueError:
            raise ProtocolError("SCRAM: malformed server signature") from None
        if not hmac.compare_digest(got, self._server_signature):
            raise ProtocolError("SCRAM: wrong server signature (not the server we asked)")
        self.verified = True


class Connection:
    """One session with a PostgreSQL server. Every call takes a deadline (time.monotonic())
    and raises socket.timeout once it passes; answers are bounded in size."""

    def __init__(self, address, user, password, database, deadline, sslmode="prefer", options=None):
        """Connects to ``address`` ((host, port) or a unix socket path) and authenticates.

        ``sslmode`` as libpq's for TCP: ``disable``, ``prefer`` (TLS when the server offers it)
        or ``require``; the server's certificate is not verified (libpq does not either in these
        modes). Unix sockets never use TLS."""
        self.address = address
        self.parameters = {}
        self.backend_pid = None
        self.tls = False
        self._buf = bytearray()
        self._budget = mw.MAX_ANSWER_BYTES
        self._sock = mw.connect(address, deadline)
        try:
            if sslmode != "disable" and not isinstance(address, str):
                self._start_tls(sslmode == "require", deadline)
            self._send(startup_message(user, database, options), deadline)
            self._authenticate(user, password, deadline)
            self._until_ready(deadline)
        except BaseException:
            self._sock.close()
            raise

    @property
    def server_version_num(self):
        """The server version as PostgreSQL's server_version_num (15.4 -> 150004; 9.2.4 -> 90204)."""
        text = self.parameters.get("server_version", "")
        digits = []
        for part in text.split(" ")[0].split(".")[:3]:
            num = "".join(c for c in part if c.isdigit()) if part[:1].isdigit() else ""
            if not num:
                break
            digits.append(int(num))
        if not digits:
            return 0
        if digits[0] >= 10:
            return digits[0] * 10000 + (digits[1] if len(digits) > 1 else 0)
        while len(digits) < 3:
            digits.append(0)
        return digits[0] * 10000 + digits[1] * 100 + digits[2]

    def _start_tls(self, required, deadline):
        self._send(struct.pack("!II", 8, 80877103), deadline)
        self._sock.settimeout(max(0.001, deadline - time.monotonic()))
        answer = self._sock.recv(1)
        if answer == b"N":
            if required:
                raise AuthError("sslmode=require but the server does not offer TLS")
            return
        if answer != b"S":
            raise ProtocolError("not a PostgreSQL server (answer %r to SSLRequest)" % answer)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        self._sock.settimeout(max(0.001, deadline - time.monotonic()))
        self._sock = context.wrap_socket(self._sock)
        self.tls = True

    def _send(self, data, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out")
        self._sock.settimeout(left)
        self._sock.sendall(data)

    def _fill(self, need, deadline):
        while len(self._buf) < need:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out")
            self._sock.settimeout(left)
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ProtocolError("server closed the connection")
            self._budget -= len(chunk)
            if self._budget < 0:
                raise ProtocolError("answer larger than %d bytes" % mw.MAX_ANSWER_BYTES)
            self._buf += chunk

    def _receive(self, deadline):
        """The next message as (type byte, payload)."""
        self._fill(5, deadline)
        kind = bytes(self._buf[:1])
        (length,) = struct.unpack_from("!I", self._buf, 1)
        if not kind.isalpha() or length < 4 or length > MAX_MESSAGE_BYTES:
            raise ProtocolError("not a PostgreSQL message (type %r, length %d)" % (kind, length))
        self._fill(1 + length, deadline)
        payload = bytes(self._buf[5 : 1 + length])
        del self._buf[: 1 + length]
        return kind, payload

    def _authenticate(self, user, password, deadline):
        scram = None
        while True:
            kind, payload = self._receive(deadline)
            if kind == b"E":
                raise ServerError(_error_fields(payload))
            if kind == b"N":
                continue
            if kind != b"R" or len(payload) < 4:
                raise ProtocolError("expected an authentication request, got %r" % kind)
            (code,) = struct.unpack_from("!I", payload)
            if code == 0:
                if scram is not None and not scram.verified:
                    raise ProtocolError("SCRAM: the server did not prove it knows the password")
                return
            if code in (3, 5, 10) and password is None:
                raise AuthError(
                    "the server asks for a password and none is configured for user %r" % user)
            if code == 3:
                self._send(_message(b"p", _cstring(password)), deadline)
            elif code == 5:
                if len(payload) != 8:
                    raise ProtocolError("malformed MD5 request")
                answer = md5_password(user, password, payload[4:8])
                self._send(_message(b"p", _cstring(answer)), deadline)
            elif code == 10:
                mechanisms = [m.decode("ascii", "replace") for m in payload[4:].split(b"\0") if m]
                if "SCRAM-SHA-256" not in mechanisms:
                    raise AuthError(
                        "SASL mechanisms %s not supported (only SCRAM-SHA-256; an openGauss "
                        "sha256 password needs md5: see the docs)" % ",".join(mechanisms[:4])
                    )
                scram = ScramClient(password)  # the user name goes in the startup packet
                first = scram.first()
                body = _cstring("SCRAM-SHA-256") + struct.pack("!I", len(first)) + first
                self._send(_message(b"p", body), deadline)
            elif code == 11 and scram is not None:
                self._send(_message(b"p", scram.final(payload[4:])), deadline)
            elif code == 12 and scram is not None:
                scram.verify(payload[4:])
            else:
                raise AuthError("authentication method %d not supported (trust, password, md5, "
                                "scram-sha-256 are)" % code)

    def _until_ready(self, deadline):
        while True:
            kind, payload = self._receive(deadline)
            if kind == b"Z":
                return
            if kind == b"E":
                raise ServerError(_error_fields(payload))
            if kind == b"S":
                name, _, rest = payload.partition(b"\0")
                value = rest.split(b"\0", 1)[0]
                if len(self.parameters) < 64:
                    self.parameters[name.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
            elif kind == b"K" and len(payload) >= 4:
                (self.backend_pid,) = struct.unpack_from("!I", payload)

    def query(self, sql, deadline):
        """Runs ``sql`` (one or more statements) with the simple query protocol; returns one
        (column names, rows) per statement that returned rows. Values are str or None (NULL).
        A server error raises ServerError after the server is ready again."""
        self._budget = mw.MAX_ANSWER_BYTES
        self._send(_message(b"Q", _cstring(sql)), deadline)
        results = []
        columns = None
        rows = []
        error = None
        while True:
            kind, payload = self._receive(deadline)
            if kind == b"T":
                columns = _row_description(payload)
                rows = []
            elif kind == b"D":
                if columns is None:
                    raise ProtocolError("DataRow before RowDescription")
                if len(rows) >= MAX_ROWS:
                    raise ProtocolError("more than %d rows" % MAX_ROWS)
                rows.append(_data_row(payload, len(columns)))
            elif kind == b"C":
                if columns is not None:
                    results.append((columns, rows))
                columns, rows = None, []
            elif kind == b"E":
                error = ServerError(_error_fields(payload))
            elif kind == b"Z":
                if error is not None:
                    raise error
                return results
            elif kind in (b"I", b"N", b"S", b"A"):
                continue
            else:
                raise ProtocolError("unexpected message %r in a query answer" % kind)

    def close(self):
        """Sends Terminate (best effort) and closes the socket."""
        try:
            self._sock.setblocking(False)
            self._sock.send(_message(b"X", b""))
        except OSError:
            pass
        self._sock.close()


def _row_description(payload):
    if len(payload) < 2:
        raise ProtocolError("malformed RowDescription")
    (count,) = struct.unpack_from("!H", payload)
    names = []
    pos = 2
    for _ in range(count):
        end = payload.find(b"\0", pos)
        if end < 0 or end + 19 > len(payload):
            raise ProtocolError("malformed RowDescription")
        names.append(payload[pos:end].decode("utf-8", "replace"))
        pos = end + 19
    return names


def _data_row(payload, ncols):
    if len(payload) < 2:
        raise ProtocolError("malformed DataRow")
    (count,) = struct.unpack_from("!H", payload)
    if count != ncols:
        raise ProtocolError("DataRow has %d columns, RowDescription %d" % (count, ncols))
    values = []
    pos = 2
    for _ in range(count):
        if pos + 4 > len(payload):
            raise ProtocolError("malformed DataRow")
        (size,) = struct.unpack_from("!i", payload, pos)
        pos += 4
        if size == -1:
            values.append(None)
            continue
        if size < 0 or pos + size > len(payload):
            raise ProtocolError("malformed DataRow")
        values.append(payload[pos : pos + size].decode("utf-8", "replace"))
        pos += size
    return values


# --- Credentials -------------------------------------------------------------------------------


def parse_credentials(text):
    """A credentials file: ``user=NAME`` and ``password=SECRET`` lines (blank lines and ``#``
    comments ignored; the value is everything after the first ``=``). Returns (user, password),
    either None when absent."""
    found = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if sep and key.strip() in ("user", "password"):
            found[key.strip()] = value
    return found.get("user"), found.get("password")


def _pgpass_fields(line):
    fields = [""]
    escaped = False
    for c in line:
        if escaped:
            fields[-1] += c
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == ":" and len(fields) < 5:
            fields.append("")
        else:
            fields[-1] += c
    return fields


def pgpass_lookup(text, hosts, port, database, user):
    """The password of the first line of a pgpass file (``host:port:database:user:password``,
    ``*`` matches anything, ``\\:`` and ``\\\\`` are escapes) that matches one of ``hosts``,
    ``port``, ``database`` and ``user``; None when no line does."""
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = _pgpass_fields(line)
        if len(fields) != 5:
            continue
        h, p, d, u, password = fields
        if (h == "*" or h in hosts) and p in ("*", str(port)) and d in ("*", database) \
                and u in ("*", user):
            return password
    return None


# --- Targets: explicit and discovered ----------------------------------------------------------


class Target:
    """One server to scrape: its instance name, where to connect, and upstream's labels."""

    __slots__ = ("instance", "address", "tgid", "server_ip", "server_port", "untrusted")

    def __init__(self, instance, address, tgid, server_ip, server_port):
        self.instance = instance
        self.address = address
        self.tgid = tgid
        self.server_ip = server_ip
        self.server_port = server_port
        # Why a discovered server gets no password (gala_middleware.trusted_server), or None.
        self.untrusted = None

    def host_names(self):
        """Host names a pgpass line may use for this target."""
        if isinstance(self.address, str):
            return ("localhost", os.path.dirname(self.address))
        names = [self.address[0]]
        if self.address[0] in ("127.0.0.1", "::1"):
            names.append("localhost")
        return tuple(names)


def tcp_instance(host, port):
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def parse_instances(text):
    """``host:port`` items of a comma-separated list (IPv6: ``::1:5432`` or ``[::1]:5432``);
    returns (targets, errors)."""
    targets, errors = [], []
    for item in (i.strip() for i in (text or "").split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            errors.append("%r is not host:port" % item)
            continue
        port = int(port)
        targets.append(Target(tcp_instance(host, port), (host, port), "0", host, str(port)))
    return targets, errors


def _ns(pid, kind):
    try:
        return os.readlink("/proc/%s/ns/%s" % (pid, kind))
    except OSError:
        return None


class Discovery:
    """Finds running postmasters each period. A postmaster's listening sockets never change while
    it runs, so they are read once per process (by pid and start time)."""

    def __init__(self):
        self._cache = {}
        self._own_mnt = _ns("self", "mnt")

    def postmasters(self):
        procs = mw.processes(SERVER_COMMS)
        pids = {p.pid for p in procs}
        # Backends are children of the postmaster and have its comm: keep the parents only.
        return [p.pid for p in procs if mw.ppid(p.pid) not in pids]

    def targets(self):
        out = []
        alive = set()
        for pid in self.postmasters():
            key = (pid, mw.start_time(pid))
            alive.add(key)
            found = self._cache.get(key)
            if found is None:
                found = self._discover(pid)
                if found:
                    self._cache[key] = found
            out.extend(found or ())
        for key in list(self._cache):
            if key not in alive:
                del self._cache[key]
        return out

    def _discover(self, pid):
        tcp = mw.listening_tcp(pid)
        same_net = mw.same_netns(pid)
        if tcp and same_net:
            by_port = {}
            for ip, port in tcp:
                by_port.setdefault(port, []).append(ip)
            out = []
            for port, ips in sorted(by_port.items()):
                host = _pick_host(ips)
                out.append(Target(tcp_instance(host, port), (host, port), str(pid), host, str(port)))
            return out
        out = []
        same_mnt = self._own_mnt is not None and _ns(pid, "mnt") == self._own_mnt
        for path in mw.listening_unix(pid):
            name = os.path.basename(path)
            if not name.startswith(SOCKET_PREFIX) or not name[len(SOCKET_PREFIX) :].isdigit():
                continue
            port = name[len(SOCKET_PREFIX) :]
            instance = "unix:%s" % path if same_mnt else "unix:%s@pid%d" % (path, pid)
            address = path if same_mnt else mw.in_root(pid, path)
            out.append(Target(instance, address, str(pid), None, port))
        return out


def _pick_host(ips):
    """The address to reach a server listening on ``ips`` from this host: loopback first."""
    for ip in ips:
        if ip in ("0.0.0.0", "127.0.0.1"):
            return "127.0.0.1"
    for ip in ips:
        if ip in ("::", "::1"):
            return "::1"
    return sorted(ips)[0]


# --- The probe ---------------------------------------------------------------------------------


class Settings:
    """The params in effect (flags, then the newest control line)."""

    FLAGS = {"a": "instances", "u": "user", "n": "dbname", "r": "credentials_file",
             "g": "pgpass_file", "x": "discover", "S": "sslmode"}
    DEFAULTS = {"instances": "", "user": "", "dbname": "postgres", "credentials_file": "",
                "pgpass_file": "", "discover": 1, "sslmode": "prefer"}
    SSLMODES = ("disable", "prefer", "require")

    def __init__(self, extra):
        self.values = dict(self.DEFAULTS)
        for flag, value in extra:
            name = self.FLAGS.get(flag)
            if name is None:
                gala_probe.log_warn("unknown flag -%s ignored" % flag)
            elif name == "discover":
                self.values[name] = 0 if value == "0" else 1
            elif name == "sslmode" and value not in self.SSLMODES:
                gala_probe.log_warn(
                    "-S %s: not one of %s; prefer used" % (value, ", ".join(self.SSLMODES)))
            elif value is not None:
                self.values[name] = value

    def effective(self, message):
        values = dict(self.values)
        if message is not None:
            for name in values:
                v = message["params"].get(name)
                if isinstance(v, type(self.DEFAULTS[name])) and not isinstance(v, bool):
                    values[name] = v
        return values


class Probe:
    """Scrapes every target once per period and prints the records."""

    def __init__(self, record=gala_probe.record):
        self.record = record
        self.instances = mw.Instances("pg_instance", gala_probe.log_warn, gala_probe.log_info, record)
        self.discovery = Discovery()
        self.conns = {}
        self.samples = {}
        self._warned = set()
        self._pool = None

    def warn_once(self, text):
        if text not in self._warned:
            self._warned.add(text)
            gala_probe.log_warn(text)

    def credentials(self, values):
        user, password, pgpass = values["user"] or None, None, None
        if values["credentials_file"]:
            try:
                file_user, password = parse_credentials(mw.read_secret(values["credentials_file"]))
                user = user or file_user
            except (mw.SecretError, UnicodeDecodeError) as e:
                self.warn_once("credentials_file: %s" % e)
        if values["pgpass_file"] and password is None:
            try:
                pgpass = mw.read_secret(values["pgpass_file"])
            except (mw.SecretError, UnicodeDecodeError) as e:
                self.warn_once("pgpass_file: %s" % e)
        return user or "postgres", password, pgpass

    def targets(self, values):
        explicit, errors = parse_instances(values["instances"])
        for e in errors:
            self.warn_once("instances: %s" % e)
        found = self.discovery.targets() if values["discover"] else []
        out = {}
        for t in found:
            ok, why = mw.trusted_server(int(t.tgid)) if t.tgid else (False, "its process is unknown")
            t.untrusted = None if ok else why
            out.setdefault(t.instance, t)
        for t in explicit:
            known = out.get(t.instance)
            if known is not None:
                known.untrusted = None  # named by the user: trusted
                continue
            # An explicit address of a discovered server takes its pid (upstream's tgid).
            for d in found:
                if not isinstance(d.address, str) and d.server_port == t.server_port:
                    t.tgid = d.tgid
                    break
            out[t.instance] = t
        return out

    def scrape(self, values, period):
        """One period: every target is asked at the same time (one thread each, at most
        MAX_PARALLEL), so a slow server costs the others nothing; records follow in instance
        order."""
        timeout = mw.request_timeout(period)
        credentials = self.credentials(values)
        targets = self.targets(values)
        for instance in list(self.conns):
            if instance not in targets:
                self.conns.pop(instance).close()
        for key in list(self.samples):
            if key[0] not in targets:
                del self.samples[key]
        ordered = sorted(targets.items())
        if len(ordered) > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(MAX_PARALLEL, thread_name_prefix="scrape")
            futures = [self._pool.submit(self._scrape_one, t, values, credentials, timeout)
                       for _, t in ordered]
            answers = [f.result() for f in futures]
        else:
            answers = [self._scrape_one(t, values, credentials, timeout) for _, t in ordered]
        self.instances.begin()
        for (instance, target), (answer, error, seconds, when) in zip(ordered, answers):
            if answer is not None:
                try:
                    self._report(target, *answer, when)
                except ProtocolError as e:
                    self._drop(instance)
                    answer, error = None, _describe(e)
            if answer is not None:
                self.instances.ok(instance, seconds)
            else:
                self.instances.failed(instance, error, seconds)
        self.instances.report()

    def _scrape_one(self, target, values, credentials, timeout):
        """(answer, None, seconds, time of the answer) or (None, error text, seconds, None)."""
        start = time.monotonic()
        try:
            answer = self._query(target, values, credentials, start + timeout)
            now = time.monotonic()
            return answer, None, now - start, now
        except socket.timeout:
            error = "no answer within %.1f s" % timeout
        except ServerError as e:
            what = "authentication failed" if e.sqlstate.startswith("28") else "server error"
            error = "%s: %s" % (what, e.text())
        except (OSError, ProtocolError) as e:
            error = _describe(e)
        self._drop(target.instance)
        return None, error, time.monotonic() - start, None

    def _drop(self, instance):
        conn = self.conns.pop(instance, None)
        if conn is not None:
            conn.close()

    def _query(self, target, values, credentials, deadline):
        conn = self.conns.get(target.instance)
        if conn is not None:
            try:
                return self._ask(conn, deadline)
            except socket.timeout:
                raise
            except (OSError, ProtocolError, ServerError):
                # A kept session can break between periods (server restart, idle_session_timeout,
                # a proxy): reconnect once, within the same deadline, before calling it down.
                self._drop(target.instance)
        user, password, pgpass = credentials
        if target.untrusted is not None and (password is not None or pgpass is not None):
            # Any user can start a program named postgres that asks for a cleartext password.
            self.warn_once("%s: password not sent: %s; name it in param instances to send it"
                           % (target.instance, target.untrusted))
            password = pgpass = None
        if password is None and pgpass is not None:
            password = pgpass_lookup(
                pgpass, target.host_names(), target.server_port, values["dbname"], user)
        conn = Connection(target.address, user, password, values["dbname"], deadline, values["sslmode"])
        self.conns[target.instance] = conn
        return self._ask(conn, deadline)

    @staticmethod
    def _ask(conn, deadline):
        version = conn.server_version_num
        results = conn.query(build_query(version), deadline)
        if len(results) != 3:
            raise ProtocolError("%d result sets, expected 3" % len(results))
        return results, conn.parameters.get("server_version"), version

    def _report(self, target, results, server_version, version_num, now):
        (db_cols, db_rows), (_, act_rows), (_, srv_rows) = results
        instance = target.instance
        col = {name: i for i, name in enumerate(db_cols)}
        for row in db_rows:
            datname = _cell(row, col.get("datname"))
            datid = _cell(row, col.get("datid"))
            if not datname or datname in SKIPPED_DATABASES or not datid:
                continue
            counters = [_number(_cell(row, col.get(name))) for name in DATABASE_COUNTERS]
            self.record("pg_database", instance, datname, datid,
                        _number(_cell(row, col.get("numbackends"))), *counters)
            commits = counters[0]
            key = (instance, datid)
            prev = self.samples.get(key)
            self.samples[key] = (commits, now)
            if prev is not None and commits is not None and prev[0] is not None and commits >= prev[0]:
                elapsed = now - prev[1]
                if elapsed > 0:
                    tps = round((commits - prev[0]) / elapsed, 3)
                    self.record("pg_tps", target.tgid, datid, "POSTGRE", "0", target.server_ip,
                                target.server_port, datname, tps)
        by_state = dict.fromkeys(KNOWN_STATES, 0)
        backends = 0
        oldest_xact = longest_query = 0.0
        # Counted by PostgreSQL >= 10 only (absent on older servers and openGauss).
        lock_waits = 0 if version_num >= 100000 else None
        for row in act_rows:
            if len(row) != 5:
                raise ProtocolError("pg_stat_activity answer has %d columns" % len(row))
            state = (row[0] or "unknown")[:64]
            count = _number(row[1]) or 0
            by_state[state] = by_state.get(state, 0) + count
            backends += count
            oldest_xact = max(oldest_xact, _float(row[2]))
            longest_query = max(longest_query, _float(row[3]))
            if row[4] is not None and lock_waits is not None:
                lock_waits += _number(row[4]) or 0
        for state, count in by_state.items():
            self.record("pg_connections", instance, state, count)
        srv = srv_rows[0] if srv_rows and len(srv_rows[0]) == 3 else [None, None, None]
        in_recovery = {"t": 1, "f": 0}.get(srv[2])
        uptime = round(_float(srv[1]), 3) if srv[1] is not None else None
        self.record("pg_server", instance, server_version, target.tgid, backends, _number(srv[0]),
                    round(oldest_xact, 3), round(longest_query, 3), lock_waits, uptime, in_recovery)

    def close(self):
        for conn in self.conns.values():
            conn.close()
        self.conns.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False)


def _cell(row, index):
    return row[index] if index is not None and index < len(row) else None


def _number(text):
    """An integer cell as int (a fractional one, e.g. blk_read_time in ms, as float); None when
    NULL or not a number."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            return None
        return value if value == value else None


def _float(text):
    try:
        return max(0.0, float(text)) if text is not None else 0.0
    except ValueError:
        return 0.0


def _describe(error):
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ProtocolError):
        return "protocol error: %s" % error
    return "%s: %s" % (type(error).__name__, error)


def main():
    args = gala_probe.parse_args()
    settings = Settings(args["extra"])
    control = gala_probe.Control()
    probe = Probe()
    gala_probe.log_info("pg_stat_probe started, period %ss" % args["period"])
    try:
        while control.sleep(args["period"]):
            values = settings.effective(control.message)
            try:
                probe.scrape(values, control.period(args["period"]))
            except Exception as e:  # noqa: BLE001 - one odd period must not end the probe
                probe.warn_once("period skipped: %s: %s" % (type(e).__name__, e))
    finally:
        probe.close()
    gala_probe.log_info("pg_stat_probe stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
