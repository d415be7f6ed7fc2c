#!/usr/bin/python3
"""bind probe: the statistics channel (JSON) of every BIND 9 `named` on the host.

Each period it fetches `/json/v1/server` from every instance and reports

    |bind|<instance>|<version>|<uptime>|<requests>|...|          server counters and zone transfers
    |bind_resolver|<instance>|<view>|<queries>|...|              resolver and cache, per view
    |bind_qtype|<instance>|<qtype>|<queries>|                   incoming queries by type
    |bind_rcode|<instance>|<rcode>|<responses>|                 responses sent by rcode
    |bind_opcode|<instance>|<opcode>|<requests>|                requests received by opcode
    |bind_instance|<instance>|<up>|<scrape_errors>|<scrape_seconds>|

Instances: running processes named `named`, their configuration (`-c FILE`, default
/etc/bind/named.conf, read as the process sees it through /proc/PID/root, `include` files
followed) and its `statistics-channels { inet ADDR port P; };`, plus the `host:port` list of param
`instances` (`-a`). docs/probes/bind.md describes the tables, params and limits.
"""

import concurrent.futures
import datetime
import json
import os
import sys
import time

sys.path.insert(0, os.environ.get("GALA_GOPHER_SDK_DIR", "/opt/gala-gopher/sdk"))
import gala_middleware as mw  # noqa: E402
import gala_probe  # noqa: E402

STATS_PATH = "/json/v1/server"
DEFAULT_CONFIGS = ("/etc/bind/named.conf", "/etc/named.conf")
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_FILES = 64
MAX_INCLUDE_DEPTH = 8
MAX_INSTANCES = 256
MAX_MAP_ENTRIES = 256
MAX_VIEWS = 64
MAX_WORKERS = 8
MAX_LABEL = 64


# (field, (keys summed)) of table `bind`, after instance, version, uptime_seconds.
# nsstats: what the server received and answered; zonestats: zone maintenance (the server as a
# secondary: SOA checks and incoming transfers); named leaves zero counters out, so a missing key
# is 0.
SERVER_FIELDS = (
    ("requests", "nsstats", ("Requestv4", "Requestv6")),
    ("requests_tcp", "nsstats", ("ReqTCP",)),
    ("responses", "nsstats", ("Response",)),
    ("truncated_responses", "nsstats", ("TruncatedResp",)),
    ("qry_success", "nsstats", ("QrySuccess",)),
    ("qry_auth_ans", "nsstats", ("QryAuthAns",)),
    ("qry_noauth_ans", "nsstats", ("QryNoauthAns",)),
    ("qry_referral", "nsstats", ("QryReferral",)),
    ("qry_nxrrset", "nsstats", ("QryNxrrset",)),
    ("qry_nxdomain", "nsstats", ("QryNXDOMAIN",)),
    ("qry_servfail", "nsstats", ("QrySERVFAIL",)),
    ("qry_formerr", "nsstats", ("QryFORMERR",)),
    ("qry_failure", "nsstats", ("QryFailure",)),
    ("qry_recursion", "nsstats", ("QryRecursion",)),
    ("qry_duplicate", "nsstats", ("QryDuplicate",)),
    ("qry_dropped", "nsstats", ("QryDropped",)),
    ("qry_udp", "nsstats", ("QryUDP",)),
    ("qry_tcp", "nsstats", ("QryTCP",)),
    ("rate_dropped", "nsstats", ("RateDropped",)),
    ("update_done", "nsstats", ("UpdateDone",)),
    ("update_failed", "nsstats", ("UpdateFail",)),
    ("update_rejected", "nsstats", ("UpdateRej",)),
    ("xfr_req_done", "nsstats", ("XfrReqDone",)),
    ("xfr_rejected", "nsstats", ("XfrRej",)),
    ("notify_in", "zonestats", ("NotifyInv4", "NotifyInv6")),
    ("notify_out", "zonestats", ("NotifyOutv4", "NotifyOutv6")),
    ("notify_rejected", "zonestats", ("NotifyRej",)),
    ("soa_out", "zonestats", ("SOAOutv4", "SOAOutv6")),
    ("axfr_requested", "zonestats", ("AXFRReqv4", "AXFRReqv6")),
    ("ixfr_requested", "zonestats", ("IXFRReqv4", "IXFRReqv6")),
    ("xfr_success", "zonestats", ("XfrSuccess",)),
    ("xfr_fail", "zonestats", ("XfrFail",)),
)
# Gauges of table `bind` after the counters.
SERVER_GAUGES = (("recursive_clients", "nsstats", ("RecursClients",)),)

# (field, section of views.<view>.resolver, (keys summed)) of table `bind_resolver`.
RESOLVER_FIELDS = (
    ("res_queries", "stats", ("Queryv4", "Queryv6")),
    ("res_responses", "stats", ("Responsev4", "Responsev6")),
    ("res_nxdomain", "stats", ("NXDOMAIN",)),
    ("res_servfail", "stats", ("SERVFAIL",)),
    ("res_formerr", "stats", ("FORMERR",)),
    ("res_other_errors", "stats", ("OtherError",)),
    ("res_edns0_fail", "stats", ("EDNS0Fail",)),
    ("res_lame", "stats", ("Lame",)),
    ("res_retries", "stats", ("Retry",)),
    ("res_timeouts", "stats", ("QueryTimeout",)),
    ("res_aborts", "stats", ("QueryAbort",)),
    ("res_mismatch", "stats", ("Mismatch",)),
    ("res_truncated", "stats", ("Truncated",)),
    ("res_val_attempts", "stats", ("ValAttempt",)),
    ("res_val_ok", "stats", ("ValOk",)),
    ("res_val_fail", "stats", ("ValFail",)),
    ("cache_hits", "cachestats", ("CacheHits",)),
    ("cache_misses", "cachestats", ("CacheMisses",)),
    ("cache_query_hits", "cachestats", ("QueryHits",)),
    ("cache_query_misses", "cachestats", ("QueryMisses",)),
    ("cache_delete_lru", "cachestats", ("DeleteLRU",)),
    ("cache_delete_ttl", "cachestats", ("DeleteTTL",)),
)
RESOLVER_GAUGES = (
    ("cache_nodes", "cachestats", ("CacheNodes",)),
    ("cache_heap_bytes", "cachestats", ("HeapMemInUse",)),
    ("cache_tree_bytes", "cachestats", ("TreeMemInUse",)),
)


class StatsError(ValueError):
    """A statistics answer that is not what BIND's JSON statistics look like."""


class ConfigError(ValueError):
    """A named configuration that cannot be read or has no usable statistics channel."""


# --- named.conf --------------------------------------------------------------------------------


def tokenize(text):
    """Tokens of a named.conf text: words, quoted strings (as ('"', text)), `{`, `}`, `;`.
    Comments (`#`, `//`, `/* */`) are skipped."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c == "#" or text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif c in "{};":
            out.append(c)
            i += 1
        elif c == '"':
            j = text.find('"', i + 1)
            if j < 0:
                raise ConfigError("unterminated string")
            out.append(('"', text[i + 1 : j]))
            i = j + 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in '{};"#':
                if text.startswith("//", j) or text.startswith("/*", j):
                    break
                j += 1
            out.append(text[i:j])
            i = j
    return out


def _word(tok):
    return tok[1] if isinstance(tok, tuple) else tok


def parse_statistics_channels(tokens):
    """[(address, port)] of the `inet` clauses of every top-level `statistics-channels` block
    (port 80 when not given; `port *` is skipped: no fixed port to reach)."""
    out = []
    depth = 0
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "{":
            depth += 1
        elif tok == "}":
            depth -= 1
        elif depth == 0 and tok == "statistics-channels" and i + 1 < len(tokens) and tokens[i + 1] == "{":
            j = i + 2
            level = 1
            clause = []
            while j < len(tokens) and level > 0:
                t = tokens[j]
                if t == "{":
                    level += 1
                elif t == "}":
                    level -= 1
                elif t == ";" and level == 1:
                    _inet_clause(clause, out)
                    clause = []
                if level >= 1 and t != ";" or level > 1:
                    clause.append(t)
                j += 1
            i = j
            continue
        i += 1
    return out


def _inet_clause(clause, out):
    words = [_word(t) for t in clause if t not in ("{", "}")]
    if len(words) < 2 or words[0] != "inet":
        return
    addr, port = words[1], 80
    if len(words) >= 4 and words[2] == "port":
        if not words[3].isdigit():
            return
        port = int(words[3])
    if 0 < port < 65536:
        out.append((addr, port))


def includes(tokens):
    """Paths of the `include "FILE";` statements (top level or inside blocks)."""
    out = []
    for i, tok in enumerate(tokens[:-1]):
        if tok == "include" and isinstance(tokens[i + 1], tuple):
            out.append(tokens[i + 1][1])
    return out


def read_config(root, conf):
    """(statistics channels, [(file, signature)]) of the configuration `conf`, includes followed.

    Paths are named's own, read inside directory `root` (its /proc/PID/root) with
    gala_middleware.read_in_root: no symlink leads out of it, a FIFO never blocks."""
    channels = []
    files = []
    todo = [(conf, 0)]
    while todo:
        path, depth = todo.pop(0)
        if len(files) >= MAX_CONFIG_FILES:
            raise ConfigError("more than %d configuration files" % MAX_CONFIG_FILES)
        try:
            st = mw.stat_in_root(root, path)
            data = mw.read_in_root(root, path, MAX_CONFIG_BYTES)
        except OSError as e:
            raise ConfigError("%s: %s" % (path, e.strerror or e)) from None
        files.append((path, (st.st_ino, st.st_size, st.st_mtime_ns)))
        try:
            tokens = tokenize(data.decode("utf-8", "replace"))
        except ConfigError as e:
            raise ConfigError("%s: %s" % (path, e)) from None
        channels.extend(parse_statistics_channels(tokens))
        for inc in includes(tokens):
            if depth >= MAX_INCLUDE_DEPTH:
                raise ConfigError("%s: includes nested deeper than %d" % (path, MAX_INCLUDE_DEPTH))
            if not inc.startswith("/"):
                inc = os.path.join(os.path.dirname(path), inc)
            todo.append((inc, depth + 1))
    return channels, files


def config_path(argv):
    """The `-c FILE` of a named command line, or None."""
    i = 1
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            break
        if not a.startswith("-") or len(a) < 2:
            continue
        flags = a[1:]
        for k, f in enumerate(flags):
            if f in "cCdDEeLmMnpStTUuXI":
                value = flags[k + 1 :]
                if not value:
                    if i >= len(argv):
                        return None
                    value = argv[i]
                    i += 1
                if f == "c":
                    return value
                break
    return None


_PREF = {"127.0.0.1": 0, "*": 1, "0.0.0.0": 1, "::1": 2, "::": 3}


def pick_channel(channels):
    """(host, port) to reach one of `channels`: loopback first, wildcards over loopback."""
    if not channels:
        return None
    addr, port = sorted(channels, key=lambda c: (_PREF.get(c[0], 9), c))[0]
    return {"*": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(addr, addr), port


def format_instance(host, port):
    """The instance name of an address: `host:port`, `[v6]:port`."""
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def parse_instances(text):
    """[(key, host, port, None)] from a comma-separated `host:port` list (IPv6: `[addr]:port` or
    `addr:port`, the last colon separates the port; no port: 80). Raises ValueError."""
    out = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        host, port = entry, 80
        if entry.startswith("["):
            close = entry.find("]")
            rest = entry[close + 1 :] if close >= 0 else "?"
            host = entry[1:close]
            if rest:
                if not rest.startswith(":") or not rest[1:].isdigit():
                    raise ValueError("bad instance %r" % entry)
                port = int(rest[1:])
        elif ":" in entry:
            host, _, p = entry.rpartition(":")
            if not p.isdigit():
                raise ValueError("bad instance %r" % entry)
            port = int(p)
        if not host or not 0 < port < 65536:
            raise ValueError("bad instance %r" % entry)
        out.append((format_instance(host, port), host, port, None))
    return out[:MAX_INSTANCES]


class Discovery:
    """Running named processes and the statistics channel of each, from its configuration. A
    named in another network namespace (a container) is asked from inside that namespace and
    named `ADDR:PORT@pidPID`."""

    def __init__(self):
        self._cache = {}  # pid -> (argv, files with signatures, channel or ConfigError)
        self._told = {}
        self._own_ns = mw.netns("self")

    @staticmethod
    def _still_valid(pid, entry, argv):
        if entry[0] != argv:
            return False
        for path, sig in entry[1]:
            try:
                st = mw.stat_in_root(mw.root_of(pid), path)
            except OSError:
                return False
            if (st.st_ino, st.st_size, st.st_mtime_ns) != sig:
                return False
        return True

    def _lookup(self, p):
        entry = self._cache.get(p.pid)
        if entry is not None and self._still_valid(p.pid, entry, p.argv):
            return entry[2]
        conf = config_path(p.argv)
        candidates = [conf] if conf else list(DEFAULT_CONFIGS)
        result, files = None, []
        for c in candidates:
            try:
                channels, files = read_config(mw.root_of(p.pid), c)
            except ConfigError as e:
                result = e
                continue
            chan = pick_channel(channels)
            result = chan if chan else ConfigError("%s has no statistics-channels inet clause" % c)
            break
        self._cache[p.pid] = (p.argv, files, result)
        return result

    def instances(self):
        """[(key, host, port, pid or None)] of the instances running now."""
        out = []
        live = set()
        for p in mw.processes(["named"]):
            live.add(p.pid)
            result = self._lookup(p)
            if isinstance(result, ConfigError):
                if self._told.get(p.pid) != str(result):
                    self._told[p.pid] = str(result)
                    gala_probe.log_info("named pid %d not watched: %s" % (p.pid, result))
                continue
            self._told.pop(p.pid, None)
            host, port = result
            ns = mw.netns(p.pid)
            if ns is None:
                continue
            if self._own_ns is not None and ns != self._own_ns:
                out.append(("%s@pid%d" % (format_instance(host, port), p.pid), host, port, p.pid))
            else:
                out.append((format_instance(host, port), host, port, None))
        for pid in list(self._cache):
            if pid not in live:
                del self._cache[pid]
                self._told.pop(pid, None)
        return out


# --- Statistics --------------------------------------------------------------------------------


def _count(section, keys):
    total = 0
    for k in keys:
        v = section.get(k, 0)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise StatsError("counter %s is not a number: %r" % (k, str(v)[:40]))
        total += v
    return total


def _section(obj, name):
    v = obj.get(name, {})
    if not isinstance(v, dict):
        raise StatsError("%s is not an object" % name)
    return v


def _map(obj, name):
    """[(label, count)] of a name -> counter object (qtypes, rcodes, opcodes), bounded."""
    out = []
    for k, v in list(_section(obj, name).items())[:MAX_MAP_ENTRIES]:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise StatsError("%s.%s is not a number" % (name, k[:40]))
        # Unassigned codes (RESERVED11, "17", ...) only when something used them.
        if v == 0 and (k.startswith("RESERVED") or k.isdigit()):
            continue
        out.append((k[:MAX_LABEL], v))
    return out


def _time(text):
    if not isinstance(text, str):
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def parse_stats(body):
    """The records of one `/json/v1/server` answer: [(table, values...)]. Raises StatsError."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise StatsError("not JSON: %s" % str(e)[:80]) from None
    if not isinstance(doc, dict):
        raise StatsError("not a JSON object")
    version = doc.get("json-stats-version")
    if not isinstance(version, str) or not version.startswith("1."):
        raise StatsError("not BIND JSON statistics (json-stats-version %r)" % str(version)[:20])
    server_version = doc.get("version")
    server_version = server_version[:MAX_LABEL] if isinstance(server_version, str) else None
    boot, now = _time(doc.get("boot-time")), _time(doc.get("current-time"))
    uptime = round(now - boot, 3) if boot is not None and now is not None and now >= boot else None
    sections = {name: _section(doc, name) for name in ("nsstats", "zonestats")}
    server = [_count(sections[sec], keys) for _, sec, keys in SERVER_FIELDS + SERVER_GAUGES]
    rows = [("bind", server_version, uptime, *server)]
    views = _section(doc, "views")
    for view, body_ in list(views.items())[:MAX_VIEWS]:
        if not isinstance(body_, dict):
            raise StatsError("views.%s is not an object" % view[:40])
        resolver = _section(body_, "resolver")
        if not resolver:
            continue
        res = {name: _section(resolver, name) for name in ("stats", "cachestats")}
        values = [_count(res[sec], keys) for _, sec, keys in RESOLVER_FIELDS + RESOLVER_GAUGES]
        rows.append(("bind_resolver", view[:MAX_LABEL], *values))
    for table, name in (("bind_qtype", "qtypes"), ("bind_rcode", "rcodes"), ("bind_opcode", "opcodes")):
        for label, count in _map(doc, name):
            rows.append((table, label, count))
    return rows


def scrape(key, host, port, pid, timeout):
    """(key, rows or None, error or None, seconds) for one instance (in the network namespace of
    process `pid` unless None)."""
    start = time.monotonic()
    try:
        with mw.in_netns(pid):
            status, _headers, body = mw.http_request((host, port), STATS_PATH, timeout)
        if status != 200:
            raise StatsError("HTTP status %d for %s" % (status, STATS_PATH))
        rows = parse_stats(body)
        return key, rows, None, time.monotonic() - start
    except (OSError, mw.HttpError, StatsError) as e:
        return key, None, str(e) or type(e).__name__, time.monotonic() - start
    except Exception as e:  # noqa: BLE001 - odd input must never stop the probe
        return key, None, "unexpected answer: %s: %s" % (type(e).__name__, e), time.monotonic() - start


def main():
    args = gala_probe.parse_args()
    control = gala_probe.Control()
    discovery = Discovery()
    health = mw.Instances("bind_instance", gala_probe.log_warn, gala_probe.log_info, gala_probe.record)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=MAX_WORKERS)
    bad_instances = None
    gala_probe.log_info("bind probe started, period %ss" % args["period"])
    while control.sleep(args["period"]):
        params = mw.instance_params(args, control)
        timeout = mw.request_timeout(control.period(args["period"]))
        try:
            explicit = parse_instances(str(params["instances"]))
            bad_instances = None
        except ValueError as e:
            if bad_instances != str(e):
                bad_instances = str(e)
                gala_probe.log_warn("param instances: %s; the list is ignored" % e)
            explicit = []
        targets = {}
        for target in explicit + (discovery.instances() if params["discover"] else []):
            targets.setdefault(target[0], target)
        chosen = list(targets.values())[:MAX_INSTANCES]
        futures = [pool.submit(scrape, *target, timeout) for target in chosen]
        health.begin()
        for fut in futures:
            key, rows, error, seconds = fut.result()
            if error is not None:
                health.failed(key, error, seconds)
                continue
            health.ok(key, seconds)
            for table, *values in rows:
                gala_probe.record(table, key, *values)
        health.report()
    pool.shutdown(wait=False)
    gala_probe.log_info("bind probe stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
