#!/usr/bin/python3
"""RabbitMQ probe: the management HTTP API of every RabbitMQ node on the host (and of the
instances named in a param), once per period.

    |rabbitmq_overview|<instance>|<cluster>|<version>|<node>|<messages>|...|
    |rabbitmq_node|<instance>|<node>|<running>|<mem_used>|...|
    |rabbitmq_queue|<instance>|<vhost>|<queue>|<node>|<type>|<messages_ready>|...|
    |rabbitmq_probe|<instance>|<producer hosts>|<consumer hosts>|
    |rabbitmq_instance|<instance>|<up>|<scrape_errors>|<scrape_seconds>|

Instances: each period, every Erlang VM (`beam.smp`) started with `-s rabbit` is a node; its
management listener is the port of `management.tcp.port` (or the older
`management.listener.port`) in the node's rabbitmq.conf (read through /proc/PID/root, path from
the node's RABBITMQ_CONFIG_FILE), else 15672, when the node listens on it. Explicit `host:port`
instances come from the param `instances` (flag -a).

Credentials: `user:password` on the first line of the file named by `credentials_file` (flag -u),
a root-owned file of mode 0600 (gala_middleware.read_secret). Without a file the probe uses
RabbitMQ's default guest:guest, which RabbitMQ accepts from loopback only.

Flags: -t period, -a host:port[,host:port...], -r credentials file, -q max queues per instance
(default 2000), -x 0|1 (discovery off/on, default on). rabbitmq.meta declares them as params with
`reload = true`: changes arrive as control lines on stdin without a restart.
"""

import base64
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.environ.get("GALA_GOPHER_SDK_DIR", "/opt/gala-gopher/sdk"))
import gala_middleware as mw  # noqa: E402
import gala_probe  # noqa: E402

DEFAULT_MGMT_PORT = 15672
DEFAULT_CONFIG = "/etc/rabbitmq/rabbitmq.conf"
DEFAULT_ENV_FILE = "/etc/rabbitmq/rabbitmq-env.conf"
PAGE_SIZE = 500  # the management API's largest page
DEFAULT_MAX_QUEUES = 2000
MAX_INSTANCES = 64
MAX_NODES = 256
MAX_PEER_HOSTS = 64
MAX_CONFIG_BYTES = 1 << 20
MAX_ENVIRON_BYTES = 256 << 10
WORKERS = 8

QUEUE_COLUMNS = (
    "name,vhost,node,type,messages,messages_ready,messages_unacknowledged,consumers,memory,"
    "message_stats.publish,message_stats.publish_details.rate,"
    "message_stats.deliver_get,message_stats.deliver_get_details.rate,"
    "message_stats.ack,message_stats.ack_details.rate,message_stats.redeliver"
)
NODE_COLUMNS = (
    "name,running,mem_used,mem_limit,mem_alarm,fd_used,fd_total,sockets_used,sockets_total,"
    "proc_used,proc_total,disk_free,disk_free_limit,disk_free_alarm,uptime"
)
OVERVIEW_COLUMNS = "cluster_name,rabbitmq_version,node,message_stats,queue_totals,object_totals"
CHANNEL_COLUMNS = "consumer_count,connection_details.peer_host"


class ScrapeError(Exception):
    """A request to the management API that failed or gave an unusable answer."""


# --- Parameters --------------------------------------------------------------------------------


def parse_instances(text):
    """(valid [(host, port)], invalid [str]) of a `host:port,host:port` list (IPv6 hosts may be
    bracketed: `[::1]:15672`)."""
    valid, invalid = [], []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            invalid.append(item)
            continue
        valid.append((host, int(port)))
    return valid, invalid


def instance_name(address):
    """`host:port` (`[v6]:port`) of an address, the `instance` key."""
    host, port = address
    return ("[%s]:%d" % (host, port)) if ":" in host else ("%s:%d" % (host, port))


def read_credentials(path):
    """The Authorization header value for the credentials file `path` (guest:guest without one).

    Raises mw.SecretError for a file that is not root-only or has no `user:password` line."""
    if not path:
        user, password = "guest", "guest"
    else:
        text = mw.read_secret(path)
        line = text.split("\n", 1)[0].rstrip("\r")
        user, sep, password = line.partition(":")
        if not sep or not user:
            raise mw.SecretError("%s: first line is not user:password" % path)
    token = base64.b64encode(("%s:%s" % (user, password)).encode("utf-8")).decode("ascii")
    return "Basic " + token


# --- Discovery ---------------------------------------------------------------------------------


def is_rabbit_node(argv):
    """Whether an Erlang VM's argv boots RabbitMQ (`-s rabbit boot`)."""
    return any(argv[i] == "-s" and argv[i + 1] == "rabbit" for i in range(len(argv) - 1))


def read_environ(pid, proc="/proc"):
    """Environment of `pid` as a dict (empty when unreadable)."""
    try:
        with open("%s/%d/environ" % (proc, pid), "rb") as f:
            raw = f.read(MAX_ENVIRON_BYTES)
    except OSError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return env


def env_file_settings(text):
    """KEY=value settings of a rabbitmq-env.conf text (quotes removed)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("export "):
            line = line[7:].strip()
        key, sep, value = line.partition("=")
        if sep and key and not key.startswith("#"):
            out[key.strip()] = value.strip().strip("'\"")
    return out


def config_paths(env, env_file=None):
    """rabbitmq.conf files a node reads: RABBITMQ_CONFIG_FILE of its environment, else
    CONFIG_FILE (or RABBITMQ_CONFIG_FILE) of its rabbitmq-env.conf settings `env_file`, else the
    default; `.conf` is appended to a path without extension (as RabbitMQ does)."""
    env_file = env_file or {}
    path = (env.get("RABBITMQ_CONFIG_FILE") or env_file.get("RABBITMQ_CONFIG_FILE")
            or env_file.get("CONFIG_FILE") or DEFAULT_CONFIG)
    if not path.endswith(".conf") and not path.endswith(".config"):
        path += ".conf"
    return [path] if path.endswith(".conf") else []


def management_port(text):
    """The management listener port set in a rabbitmq.conf text, or None."""
    port = None
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key in ("management.tcp.port", "management.listener.port") and value.isdigit():
            if 0 < int(value) < 65536:
                port = int(value)
    return port


def node_address(pid, proc="/proc"):
    """(ip, port) to reach the management listener of RabbitMQ node `pid` from here, or
    (None, why) when there is none."""
    port = None
    env = read_environ(pid, proc)
    env_file = {}
    if not env.get("RABBITMQ_CONFIG_FILE"):
        path = env.get("RABBITMQ_CONF_ENV_FILE") or DEFAULT_ENV_FILE
        try:
            raw = mw.read_in_root("%s/%d/root" % (proc, pid), path, MAX_CONFIG_BYTES)
            env_file = env_file_settings(raw.decode("utf-8", "replace"))
        except OSError:
            pass
    for path in config_paths(env, env_file):
        try:
            raw = mw.read_in_root("%s/%d/root" % (proc, pid), path, MAX_CONFIG_BYTES)
            text = raw.decode("utf-8", "replace")
        except OSError:
            continue
        port = management_port(text) or port
    port = port or DEFAULT_MGMT_PORT
    ips = [ip for ip, p in mw.listening_tcp(pid, proc) if p == port]
    if not ips:
        return None, "no management listener on port %d (is rabbitmq_management enabled?)" % port
    same_netns = mw.same_netns(pid)
    for ip in ips:
        if ip in ("0.0.0.0", "::") or ip.startswith("127.") or ip == "::1":
            if same_netns:
                return ("127.0.0.1" if ip in ("0.0.0.0", "::") else ip, port), None
        else:
            return (ip, port), None
    return None, "management listener on loopback in another network namespace"


class Discovery:
    """The RabbitMQ nodes running now and their management addresses.

    Finding a node's listener reads the host's TCP tables (/proc/PID/net/tcp{,6}), which costs
    tens of milliseconds on a busy host, so a node's address is kept for REFRESH_SECONDS (and
    dropped at once when a scrape of it fails); a node without a listener yet (still starting) is
    looked at again after RETRY_SECONDS."""

    REFRESH_SECONDS = 30.0
    RETRY_SECONDS = 2.0

    def __init__(self, proc="/proc"):
        self.proc = proc
        self._cache = {}  # pid -> (argv, address or None, when)
        self._logged = set()  # pids logged as without a listener
        self.pids = {}  # instance name -> pid of the last nodes()

    def nodes(self):
        """{instance name: address} of the nodes running now."""
        now = time.monotonic()
        found = {}
        cache = {}
        for p in mw.processes(("beam.smp", "beam"), self.proc):
            if not is_rabbit_node(p.argv):
                continue
            argv, address, when = self._cache.get(p.pid, (None, None, None))
            ttl = self.REFRESH_SECONDS if address is not None else self.RETRY_SECONDS
            if argv != p.argv or when is None or now - when >= ttl:
                address, why = node_address(p.pid, self.proc)
                when = now
                if address is None and p.pid not in self._logged:
                    self._logged.add(p.pid)
                    gala_probe.log_info("rabbitmq node pid %d: %s" % (p.pid, why))
            cache[p.pid] = (p.argv, address, when)
            if address is not None:
                found[instance_name(address)] = address
                self.pids[instance_name(address)] = p.pid
        self.pids = {name: pid for name, pid in self.pids.items() if name in found}
        self._cache = cache
        self._logged &= set(pid for pid, v in cache.items() if v[1] is None)
        return found

    def forget(self, name):
        """Looks the node behind instance `name` up again next period (its scrape failed)."""
        for pid, (argv, address, when) in list(self._cache.items()):
            if address is not None and instance_name(address) == name:
                self._cache[pid] = (argv, address, None)


# --- Scraping ----------------------------------------------------------------------------------


def _num(value):
    """A JSON number (bools as 1/0), else None (absent)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    return None


def _get(obj, *path):
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _text(value):
    return value if isinstance(value, str) else None


def get_json(address, path, auth, deadline):
    """GET `path` from the management API at `address`: the decoded JSON."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise ScrapeError("%s: no time left in this period" % path.split("?", 1)[0])
    try:
        status, _, body = mw.http_request(
            address, path, left, headers={"Authorization": auth, "Accept": "application/json"})
    except (OSError, mw.HttpError) as e:
        raise ScrapeError("%s: %s" % (path.split("?", 1)[0], e or type(e).__name__)) from None
    if status == 401:
        raise ScrapeError("HTTP 401: credentials refused")
    if status != 200:
        raise ScrapeError("%s: HTTP %d" % (path.split("?", 1)[0], status))
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise ScrapeError("%s: answer is not JSON" % path.split("?", 1)[0]) from None


def _page_items(answer, what):
    """(items, total_count) of a paginated answer (or of a plain list from an old server)."""
    if isinstance(answer, list):
        return answer, len(answer)
    items = _get(answer, "items")
    if not isinstance(items, list):
        raise ScrapeError("%s: no items in the answer" % what)
    total = _num(_get(answer, "total_count"))
    return items, int(total) if total is not None else len(items)


class Scrape:
    """What one instance answered in one period."""

    def __init__(self):
        self.overview = None
        self.nodes = []
        self.queues = []
        self.queues_total = 0
        self.producers = []
        self.consumers = []


_warned = set()


def warn_once(address, what, message):
    """Logs a partial failure of an instance once, until that part works again."""
    if (address, what) not in _warned:
        _warned.add((address, what))
        gala_probe.log_warn("%s: %s" % (instance_name(address), message))


def scrape(address, auth, deadline, max_queues):
    """Reads overview, nodes, queues (paged, at most `max_queues`) and channels of one instance.

    Overview and nodes must answer (else ScrapeError: the instance is down); queue pages stop at
    the deadline or at `max_queues`, and what was left out is counted."""
    s = Scrape()
    s.overview = get_json(address, "/api/overview?columns=" + OVERVIEW_COLUMNS, auth, deadline)
    if not isinstance(s.overview, dict):
        raise ScrapeError("/api/overview: not an object")
    nodes = get_json(address, "/api/nodes?columns=" + NODE_COLUMNS, auth, deadline)
    if not isinstance(nodes, list):
        raise ScrapeError("/api/nodes: not a list")
    s.nodes = [n for n in nodes[:MAX_NODES] if isinstance(n, dict)]
    total = _num(_get(s.overview, "object_totals", "queues"))
    s.queues_total = int(total) if total is not None else 0
    page = 1
    size = min(PAGE_SIZE, max_queues)  # one size for every page: pages are offsets of it
    complete = True
    while len(s.queues) < max_queues and page <= max_queues // max(size, 1) + 1:
        try:
            answer = get_json(address, "/api/queues?page=%d&page_size=%d&columns=%s"
                              % (page, size, QUEUE_COLUMNS), auth, deadline)
        except ScrapeError as e:
            if page == 1:
                raise
            complete = False
            warn_once(address, "queues", "queue page %d: %s (queues left out are counted)"
                      % (page, e))
            break
        items, total = _page_items(answer, "/api/queues")
        s.queues_total = max(s.queues_total, total)
        s.queues.extend(q for q in items[: max_queues - len(s.queues)] if isinstance(q, dict))
        if isinstance(answer, list) or len(items) < size or page * size >= total:
            break
        page += 1
    if complete:
        _warned.discard((address, "queues"))
    try:
        answer = get_json(address, "/api/channels?page=1&page_size=%d&columns=%s"
                          % (PAGE_SIZE, CHANNEL_COLUMNS), auth, deadline)
        items, _ = _page_items(answer, "/api/channels")
    except ScrapeError as e:
        warn_once(address, "channels", "channels: %s" % e)
        s.producers = s.consumers = None
        return s
    _warned.discard((address, "channels"))
    producers, consumers = set(), set()
    for ch in items:
        host = _text(_get(ch, "connection_details", "peer_host"))
        if host:
            count = _num(_get(ch, "consumer_count")) or 0
            (consumers if count > 0 else producers).add(host)
    s.producers = sorted(producers)[:MAX_PEER_HOSTS]
    s.consumers = sorted(consumers)[:MAX_PEER_HOSTS]
    return s


def report(instance, s):
    """Writes the records of one instance's scrape."""
    o = s.overview
    ms = _get(o, "message_stats")
    gala_probe.record(
        "rabbitmq_overview", instance,
        _text(_get(o, "cluster_name")), _text(_get(o, "rabbitmq_version")),
        _text(_get(o, "node")),
        _num(_get(o, "queue_totals", "messages")),
        _num(_get(o, "queue_totals", "messages_ready")),
        _num(_get(o, "queue_totals", "messages_unacknowledged")),
        _num(_get(o, "object_totals", "connections")),
        _num(_get(o, "object_totals", "channels")),
        _num(_get(o, "object_totals", "consumers")),
        _num(_get(o, "object_totals", "queues")),
        _num(_get(o, "object_totals", "exchanges")),
        _num(_get(ms, "publish")), _num(_get(ms, "deliver_get")), _num(_get(ms, "ack")),
        _num(_get(ms, "publish_details", "rate")),
        _num(_get(ms, "deliver_get_details", "rate")),
        _num(_get(ms, "ack_details", "rate")),
        len(s.queues), max(0, s.queues_total - len(s.queues)),
    )
    for n in s.nodes:
        name = _text(n.get("name"))
        if not name:
            continue
        uptime = _num(n.get("uptime"))
        gala_probe.record(
            "rabbitmq_node", instance, name, _num(n.get("running")),
            _num(n.get("mem_used")), _num(n.get("mem_limit")), _num(n.get("mem_alarm")),
            _num(n.get("fd_used")), _num(n.get("fd_total")),
            _num(n.get("sockets_used")), _num(n.get("sockets_total")),
            _num(n.get("proc_used")), _num(n.get("proc_total")),
            _num(n.get("disk_free")), _num(n.get("disk_free_limit")),
            _num(n.get("disk_free_alarm")),
            None if uptime is None else uptime / 1000.0,
        )
    for q in s.queues:
        vhost, name = _text(q.get("vhost")), _text(q.get("name"))
        if not vhost or not name:
            continue
        ms = q.get("message_stats")
        gala_probe.record(
            "rabbitmq_queue", instance, vhost, name, _text(q.get("node")), _text(q.get("type")),
            _num(q.get("messages_ready")), _num(q.get("messages_unacknowledged")),
            _num(q.get("messages")), _num(q.get("consumers")), _num(q.get("memory")),
            _num(_get(ms, "publish")), _num(_get(ms, "deliver_get")), _num(_get(ms, "ack")),
            _num(_get(ms, "redeliver")),
            _num(_get(ms, "publish_details", "rate")),
            _num(_get(ms, "deliver_get_details", "rate")),
            _num(_get(ms, "ack_details", "rate")),
        )
    if s.producers is not None:
        gala_probe.record("rabbitmq_probe", instance, " ".join(s.producers),
                          " ".join(s.consumers))


# --- Main loop ---------------------------------------------------------------------------------


def cli_settings(args):
    """Settings from the command line (the flags declared in rabbitmq.meta)."""
    out = {"instances": "", "credentials_file": "", "max_queues": DEFAULT_MAX_QUEUES,
           "discover": 1}
    for flag, value in args["extra"]:
        if value is None:
            gala_probe.log_warn("-%s: missing value, ignored" % flag)
        elif flag == "a":
            out["instances"] = value
        elif flag == "r":
            out["credentials_file"] = value
        elif flag in ("q", "x"):
            key, hi = ("max_queues", 100000) if flag == "q" else ("discover", 1)
            if value.isdigit() and int(value) <= hi:
                out[key] = int(value)
            else:
                gala_probe.log_warn("-%s: invalid value %r, ignored" % (flag, value))
        else:
            gala_probe.log_warn("-%s: unknown flag, ignored" % flag)
    return out


def effective(control, cli):
    """Settings in effect: the newest control line's params, else the command line."""
    out = dict(cli)
    for key, kind in (("instances", str), ("credentials_file", str), ("max_queues", int),
                      ("discover", int)):
        value = control.param(key)
        if isinstance(value, kind) and not isinstance(value, bool):
            out[key] = value
    return out


def run_period(settings, period, health, executor, discovery, logged):
    """One period: find the instances, scrape them in parallel, write every record."""
    explicit, invalid = parse_instances(settings["instances"])
    for item in invalid:
        if item not in logged.setdefault("invalid", set()):
            logged["invalid"].add(item)
            gala_probe.log_warn("instances: %r is not host:port, ignored" % item)
    targets = {}
    for address in explicit:
        targets.setdefault(instance_name(address), address)
    if settings["discover"]:
        for name, address in discovery.nodes().items():
            targets.setdefault(name, address)
    if len(targets) > MAX_INSTANCES and "too_many" not in logged:
        logged["too_many"] = True
        gala_probe.log_warn("%d instances, watching the first %d" % (len(targets), MAX_INSTANCES))
    names = sorted(targets)[:MAX_INSTANCES]

    try:
        auth, auth_error = read_credentials(settings["credentials_file"]), None
    except (mw.SecretError, UnicodeDecodeError) as e:
        auth, auth_error = None, "credentials: %s" % e

    timeout = mw.request_timeout(period)
    max_queues = max(0, int(settings["max_queues"]))

    # A credentials file's user goes only to the instances named in `instances` and to nodes
    # that gala_middleware.trusted_server() trusts: any user can start a program that looks
    # like a RabbitMQ node and wait for the password.
    untrusted = {}
    if settings["credentials_file"]:
        explicit_names = set(instance_name(a) for a in explicit)
        for name in names:
            pid = discovery.pids.get(name)
            if name in explicit_names or pid is None:
                continue
            ok, why = mw.trusted_server(pid, discovery.proc)
            if not ok:
                untrusted[name] = "credentials not sent: %s; name it in param instances to send them" % why

    def one(name):
        start = time.monotonic()
        if name in untrusted:
            return name, None, untrusted[name], 0.0
        if auth is None:
            return name, None, auth_error, 0.0
        try:
            s = scrape(targets[name], auth, start + timeout, max_queues)
            return name, s, None, time.monotonic() - start
        except ScrapeError as e:
            return name, None, str(e), time.monotonic() - start
        except Exception as e:  # noqa: BLE001 - an odd answer must never stop the probe
            return name, None, "%s: %s" % (type(e).__name__, e), time.monotonic() - start

    health.begin()
    for name, s, error, seconds in executor.map(one, names):
        if s is None:
            health.failed(name, error, seconds)
            discovery.forget(name)
            continue
        health.ok(name, seconds)
        report(name, s)
    health.report()


def main():
    args = gala_probe.parse_args()
    cli = cli_settings(args)
    control = gala_probe.Control()
    health = mw.Instances("rabbitmq_instance", gala_probe.log_warn, gala_probe.log_info,
                          gala_probe.record)
    logged = {}
    discovery = Discovery()
    gala_probe.log_info("rabbitmq started, period %ss" % args["period"])
    with ThreadPoolExecutor(max_workers=WORKERS) as executor:
        while control.sleep(args["period"]):
            run_period(effective(control, cli), control.period(args["period"]), health, executor,
                       discovery, logged)
    gala_probe.log_info("rabbitmq stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
