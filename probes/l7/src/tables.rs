//! The output tables and the run-time control declaration, defined once: the record writer and
//! the `.meta` text both come from here (a test keeps `l7probe.meta` equal to [`meta_text`]).
//!
//! Upstream HEAD's tables and names: `l7_link`, `l7_rpc` (entity `l7`) and `l7_rpc_api`
//! (entity `l7_api`), keyed `tgid, client_ip, server_ip, server_port, l4_role, l7_role,
//! protocol` (+ `api`), label `ssl`. Counts are running totals (`period: "delta"` where upstream
//! reports per period); the rates, averages and ratios are of the last period.

use std::io::{self, Write};

use l7_protocol::tracker::{
    ApiKey, Blame, Key, LinkStats, Outcome, RpcStats, Span, LATENCY_BOUNDS_US,
};
use probe_sdk::args::DEFAULT_PERIOD_SECS;
use probe_sdk::bpf;
use probe_sdk::decl::{self, Declaration, ParamValue, SnooperKind, SubProbe};
use probe_sdk::histogram::{Histogram, SLOTS};
use probe_sdk::meta::{self, Field, Table};
use probe_sdk::record::{Record, RecordWriter};

/// Per-connection-group bytes and calls.
pub const LINK_TABLE: &str = "l7_link";
/// Requests, errors and latency per connection group.
pub const RPC_TABLE: &str = "l7_rpc";
/// The same per API.
pub const API_TABLE: &str = "l7_rpc_api";
/// Entity of `l7_link` and `l7_rpc` (upstream's).
pub const ENTITY: &str = "l7";
/// Entity of `l7_rpc_api` (upstream's).
pub const API_ENTITY: &str = "l7_api";
/// One record per traced request (sub-probe `l7_rpc_trace`; a trace table).
pub const TRACE_TABLE: &str = "l7_rpc_trace";
/// What the parsers and the tracker could not use (ours).
pub const PARSE_TABLE: &str = "l7_parse_stats";
/// Loss-counter table (`<probe>_bpf_stats`, entity `bpf_probe`).
pub const STATS_TABLE: &str = "l7probe_bpf_stats";

/// `-P` bit of `l7_link` (sub-probe `l7_bytes_metrics`).
pub const BIT_BYTES: u32 = 1;
/// `-P` bit of `l7_rpc` and `l7_rpc_api` (sub-probe `l7_rpc_metrics`).
pub const BIT_RPC: u32 = 2;
/// `-P` bit of `l7_rpc_trace` (sub-probe `l7_rpc_trace`, off unless asked for).
pub const BIT_TRACE: u32 = 4;
/// The tables written when `-P` is not given.
pub const DEFAULT_BITS: u32 = BIT_BYTES | BIT_RPC;
/// Spans reported per period at most (errors first, then the slowest).
pub const MAX_SPANS_PER_PERIOD: usize = 1000;
/// Ring buffer size when `ringbuf_map_size` is not given, MiB.
pub const DEFAULT_RING_MIB: u32 = 8;

/// Key fields of every table, upstream HEAD's in its order.
pub const KEYS: &[Field] = &[
    Field::key("tgid", "process id"),
    Field::key("client_ip", "client address of the connections"),
    Field::key("server_ip", "server address of the connections"),
    Field::key("server_port", "server port of the connections"),
    Field::key("l4_role", "tcp_client, tcp_server or udp"),
    Field::key(
        "l7_role",
        "client (the process sends the requests) or server",
    ),
    Field::key(
        "protocol",
        "http, redis, pgsql, mysql, kafka, dns, or unknown (not detected, or not parsed)",
    ),
];

/// The label after the keys (and after `api`).
pub const LABELS: &[Field] = &[
    Field::label(
        "ssl",
        "1 when the bytes are the plain text of a TLS session, else 0",
    ),
    Field::label("comm", "process name"),
];

/// `l7_link` values, [`LinkStats`] order.
pub const LINK_FIELDS: &[Field] = &[
    Field::per_period("bytes_sent", "bytes the process sent on these connections"),
    Field::per_period(
        "bytes_recv",
        "bytes the process received on these connections",
    ),
    Field::per_period("segs_sent", "send calls (system calls that sent bytes)"),
    Field::per_period(
        "segs_recv",
        "receive calls (system calls that received bytes)",
    ),
];

/// `l7_rpc` values.
pub const RPC_FIELDS: &[Field] = &[
    Field::gauge("throughput_req", "requests per second in the last period"),
    Field::gauge("throughput_resp", "responses per second in the last period"),
    Field::per_period("req_count", "requests"),
    Field::per_period("resp_count", "responses matched to a request"),
    Field::gauge(
        "latency_avg",
        "mean request-to-response latency in the last period, us",
    ),
    // Upstream's separate `latency_sum` is the histogram's own sum (Prometheus: the
    // `gala_gopher_l7_latency_sum` series): a field of that name would clash with it.
    Field::histogram(
        "latency",
        "request-to-response latency, us (its sum: latency_sum)",
    ),
    Field::gauge(
        "err_ratio",
        "error responses per response in the last period, percent",
    ),
    Field::per_period(
        "err_count",
        "error responses (HTTP >= 400, error replies and packets, error codes, DNS rcode != 0)",
    ),
];

/// `l7_rpc_api` values: those of `l7_rpc`, then the errors by side.
pub const API_EXTRA: &[Field] = &[
    Field::gauge("client_err_ratio", "errors blamed on the request per response in the last period, percent"),
    Field::gauge("server_err_ratio", "errors blamed on the server per response in the last period, percent"),
    Field::per_period("client_err_count", "errors blamed on the request (HTTP 4xx, DNS NXDOMAIN/FORMERR/REFUSED, PostgreSQL client SQLSTATE classes)"),
    Field::per_period("server_err_count", "errors blamed on the server (HTTP 5xx, DNS SERVFAIL/NOTIMP, PostgreSQL SQLSTATE 53, 54, 57, 58, XX)"),
];

/// The API key field of `l7_rpc_api` and `l7_rpc_trace`.
const API_KEY: &[Field] = &[Field::key(
    "api",
    "HTTP method and templated path, SQL verb, Redis command, Kafka api, DNS query type; unknown, or other past the per-process cap",
)];

/// `l7_rpc_trace` fields after the keys, `api` and the labels.
pub const TRACE_FIELDS: &[Field] = &[
    Field::label("client_port", "client port of the connection"),
    Field::label("conn_id", "the kernel's id of the connection (socket cookie)"),
    Field::label("span_id", "16 hex digits naming this request (connection and request time)"),
    Field::label("request", "the parser's name of the request (templated like api; kept when api is other)"),
    Field::label("status", "ok, unparsed (the response ended but its status was not captured), or the protocol's error code (HTTP status, SQLSTATE, Redis error prefix, MySQL error number, Kafka error code, DNS rcode)"),
    Field::label("blame", "client or server for an error whose side the protocol tells, else empty"),
    Field::gauge("start_time", "when the request's last bytes were read or written, Unix time, us"),
    Field::gauge("latency", "request to response, us"),
    Field::gauge("error", "1 for an error response, else 0"),
];

/// Fields of [`PARSE_TABLE`] after its key, [`l7_protocol::tracker::TrackerStats`] and the
/// capture's own counts.
pub const PARSE_FIELDS: &[Field] = &[
    Field::counter("unknown_conn", "data calls for a connection not tracked"),
    Field::counter("conn_overflow", "connections not tracked: the connection cap was reached"),
    Field::counter("undetected", "connections whose protocol could not be detected"),
    Field::counter("malformed", "parser errors: bytes not following the protocol"),
    Field::counter("too_long", "parser errors: a header longer than the parser keeps"),
    Field::counter("desynchronised", "parser errors: a stream lost its place (bytes not captured)"),
    Field::counter("unanswered", "requests still waiting when their connection closed"),
    Field::counter("unmatched_response", "responses without a pending request"),
    Field::counter("pending_overflow", "pending requests dropped: a connection's cap reached"),
    Field::counter("pending_abandoned", "pending requests dropped with their connection's parsing"),
    Field::counter("unparsed_responses", "responses counted without their status: the response stream lost its place (a large reply not captured) and the next request showed they had ended"),
    Field::counter("api_overflow", "requests counted under the api other: the per-process API cap was reached"),
    Field::counter("key_overflow", "table updates dropped: the row cap was reached"),
    Field::counter("uncaptured_calls", "calls whose bytes could not be read (sendfile, splice, io_uring, ...): a gap for the parser"),
    Field::counter("bad_records", "kernel records that did not decode"),
    Field::counter("trace_dropped", "requests not reported in l7_rpc_trace: more than 1000 in a period (errors and the slowest are kept)"),
    Field::counter("topic_names_forgotten", "Kafka topic names forgotten: the id-to-name map (65,536 ids, learnt from Metadata responses) was full and was emptied; topics named by id (Produce/Fetch v13+) show as id: until the next Metadata response names them"),
    Field::counter("late_records", "kernel records parsed out of time order: they arrived after a later one had been parsed (a CPU's batch held by a preempted program across a flush, or more than 64 MiB waiting)"),
    Field::counter("tls_records", "socket calls of TLS sessions read through the SSL hooks that carried cipher text the hooks did not see (a close_notify written outside SSL_write): not parsed"),
];

/// What l7probe declares about its run-time control (REST name `l7`).
///
/// | sub-probe | bits | tables |
/// |---|---|---|
/// | `l7_bytes_metrics` | 1 | `l7_link` |
/// | `l7_rpc_metrics` | 2 | `l7_rpc`, `l7_rpc_api` |
/// | `l7_rpc_trace` (off by default) | 4 | `l7_rpc_trace` |
///
/// Params: `report_period`, `latency_thr` (ms: answered requests faster than this and not
/// failed are not traced), `l7_protocol` (the protocols parsed; empty: all), `support_ssl`
/// (1: TLS plain text through uprobes on the traced processes' libssl),
/// `ringbuf_map_size` (MiB, read at start). Every snooper kind is honoured in the kernel:
/// only the selected processes' bytes are captured.
pub fn declaration() -> Declaration {
    Declaration {
        rest_name: Some("l7".to_string()),
        reload: true,
        snoopers: SnooperKind::ALL.to_vec(),
        sub_probes: vec![
            SubProbe::new("l7_bytes_metrics", BIT_BYTES),
            SubProbe::new("l7_rpc_metrics", BIT_RPC),
            SubProbe::new("l7_rpc_trace", BIT_TRACE).off_by_default(),
        ],
        params: vec![
            decl::standard("report_period")
                .expect("a param name upstream has")
                .with_default(ParamValue::Int(i64::from(DEFAULT_PERIOD_SECS))),
            decl::standard("latency_thr").expect("a param name upstream has"),
            decl::standard("l7_protocol").expect("a param name upstream has"),
            decl::standard("support_ssl").expect("a param name upstream has"),
            decl::standard("ringbuf_map_size")
                .expect("a param name upstream has")
                .with_default(ParamValue::Int(i64::from(DEFAULT_RING_MIB))),
        ],
    }
}

/// Every table of the `.meta` file, in order.
pub fn meta_tables() -> Vec<Table> {
    vec![
        Table::new(LINK_TABLE, ENTITY, &[KEYS, LABELS, LINK_FIELDS]),
        Table::new(RPC_TABLE, ENTITY, &[KEYS, LABELS, RPC_FIELDS]),
        Table::new(
            API_TABLE,
            API_ENTITY,
            &[KEYS, API_KEY, LABELS, RPC_FIELDS, API_EXTRA],
        ),
        Table::new(
            TRACE_TABLE,
            TRACE_TABLE,
            &[KEYS, API_KEY, LABELS, TRACE_FIELDS],
        )
        .into_trace(),
        parse_table(PARSE_TABLE),
        stats_table(STATS_TABLE),
    ]
}

/// The parse-stats table named `name` (l7probe's and kafkaprobe's).
pub fn parse_table(name: &'static str) -> Table {
    Table::new(
        name,
        name,
        &[&[Field::key("probe", "probe name")], PARSE_FIELDS],
    )
}

/// The loss-counter table named `name` (l7probe's and kafkaprobe's).
pub fn stats_table(name: &'static str) -> Table {
    bpf::loss_table(
        name,
        "kernel records produced (connections seen, send and receive calls, closes)",
        "records lost (ring buffer full, or a program run skipped by the kernel)",
        "sockets not announced because the kernel's socket map was full",
    )
}

/// The `.meta` file (`l7probe --print-meta`): every table, then the control declaration.
pub fn meta_text() -> String {
    format!(
        "{}\n{}",
        meta::render(&[], &meta_tables()),
        declaration().render_meta()
    )
}

/// The latency histogram of `s` (the tracker's buckets are probe_sdk's first 13, then the
/// overflow, which the last bucket of probe_sdk takes).
fn histogram(s: &RpcStats) -> Histogram {
    debug_assert_eq!(
        LATENCY_BOUNDS_US[..],
        probe_sdk::histogram::BOUNDS_US[..SLOTS - 1]
    );
    let mut h = Histogram::default();
    for (d, c) in h.counts.iter_mut().zip(s.latency_buckets.iter()) {
        *d = *c;
    }
    h.sum = s.latency_sum_us;
    h.max = s.latency_max_us;
    h
}

/// Period figures of a row: now minus the previous period's values.
fn rate(now: u64, before: u64, secs: f64) -> String {
    format!("{:.3}", now.saturating_sub(before) as f64 / secs)
}

fn ratio(part: u64, whole: u64) -> String {
    if whole == 0 {
        "0".to_string()
    } else {
        format!("{:.2}", part as f64 * 100.0 / whole as f64)
    }
}

fn keyed<'a, W: Write>(
    out: &'a mut RecordWriter<W>,
    table: &str,
    key: &Key,
    api: Option<&str>,
    comm: &str,
) -> Record<'a, W> {
    let mut rec = out
        .record(table)
        .field(&key.tgid)
        .field(&key.client_ip.to_string())
        .field(&key.server_ip.to_string())
        .field(&key.server_port)
        .field(key.l4_role())
        .field(key.l7_role())
        .field(key.protocol);
    if let Some(api) = api {
        rec = rec.field(api);
    }
    rec.field(if key.ssl { "1" } else { "0" }).field(comm)
}

/// A span's id: 16 hex digits from its connection and request time (splitmix64).
pub fn span_id(conn: u64, request_ns: u64) -> String {
    let mut z = conn ^ request_ns.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    format!("{:016x}", z ^ (z >> 31))
}

/// Writes the `l7_rpc_trace` record of `span`; `wall_offset_ns` turns the events' clock
/// (monotonic) into Unix time.
pub fn write_span<W: Write>(
    out: &mut RecordWriter<W>,
    span: &Span,
    comm: &str,
    wall_offset_ns: i128,
) -> io::Result<()> {
    let (status, blame, error) = match &span.outcome {
        Outcome::Ok => ("ok", "", "0"),
        Outcome::Unparsed => ("unparsed", "", "0"),
        Outcome::Error { code, blame } => (
            code.as_str(),
            match blame {
                Some(Blame::Client) => "client",
                Some(Blame::Server) => "server",
                None => "",
            },
            "1",
        ),
    };
    let start_us = (i128::from(span.request_ns) + wall_offset_ns).max(0) / 1_000;
    keyed(out, TRACE_TABLE, &span.key, Some(&span.api), comm)
        .field(&span.client_port)
        .field(&span.conn)
        .field(&span_id(span.conn, span.request_ns))
        .field(span.request.as_deref().unwrap_or(""))
        .field(status)
        .field(blame)
        .field(&start_us.to_string())
        .field(&span.latency_us())
        .field(error)
        .end()
}

/// Writes the `l7_link` record of `key`.
pub fn write_link<W: Write>(
    out: &mut RecordWriter<W>,
    key: &Key,
    comm: &str,
    s: &LinkStats,
) -> io::Result<()> {
    keyed(out, LINK_TABLE, key, None, comm)
        .field(&s.bytes_sent)
        .field(&s.bytes_recv)
        .field(&s.segs_sent)
        .field(&s.segs_recv)
        .end()
}

/// Writes the `l7_rpc` record of `key` (`api` None) or the `l7_rpc_api` record of `api`;
/// `before` is the row's values a period ago, `secs` the period.
pub fn write_rpc<W: Write>(
    out: &mut RecordWriter<W>,
    key: &ApiKey,
    api: bool,
    comm: &str,
    s: &RpcStats,
    before: &RpcStats,
    secs: f64,
) -> io::Result<()> {
    let table = if api { API_TABLE } else { RPC_TABLE };
    let resp = s.resp_count.saturating_sub(before.resp_count);
    let lat = s.latency_sum_us.saturating_sub(before.latency_sum_us);
    let avg = if resp == 0 {
        "0".to_string()
    } else {
        format!("{:.1}", lat as f64 / resp as f64)
    };
    let rec = keyed(out, table, &key.key, api.then_some(key.api.as_str()), comm)
        .field(&rate(s.req_count, before.req_count, secs))
        .field(&rate(s.resp_count, before.resp_count, secs))
        .field(&s.req_count)
        .field(&s.resp_count)
        .field(&avg)
        .field(&histogram(s).encode())
        .field(&ratio(s.err_count.saturating_sub(before.err_count), resp))
        .field(&s.err_count);
    if !api {
        return rec.end();
    }
    rec.field(&ratio(
        s.client_err_count.saturating_sub(before.client_err_count),
        resp,
    ))
    .field(&ratio(
        s.server_err_count.saturating_sub(before.server_err_count),
        resp,
    ))
    .field(&s.client_err_count)
    .field(&s.server_err_count)
    .end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use l7_protocol::tracker::Role;
    use probe_sdk::meta::FieldKind;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn upstream_names_and_keys() {
        let tables = meta_tables();
        let keys = |t: &Table| -> Vec<&str> {
            t.fields
                .iter()
                .filter(|f| f.kind == FieldKind::Key)
                .map(|f| f.name)
                .collect()
        };
        let head = [
            "tgid",
            "client_ip",
            "server_ip",
            "server_port",
            "l4_role",
            "l7_role",
            "protocol",
        ];
        assert_eq!(keys(&tables[0]), head);
        assert_eq!(keys(&tables[1]), head);
        assert_eq!(keys(&tables[2])[..7], head);
        assert_eq!(keys(&tables[2])[7], "api");
        assert_eq!(
            (tables[0].entity, tables[1].entity, tables[2].entity),
            ("l7", "l7", "l7_api")
        );
        let names: Vec<&str> = tables[2].fields.iter().map(|f| f.name).collect();
        for upstream in [
            "throughput_req",
            "throughput_resp",
            "req_count",
            "resp_count",
            "latency_avg",
            "latency",
            "err_ratio",
            "client_err_ratio",
            "server_err_ratio",
            "err_count",
            "client_err_count",
            "server_err_count",
            "ssl",
        ] {
            assert!(names.contains(&upstream), "{upstream}");
        }
        assert_eq!(meta::check(&tables), Vec::<String>::new());
    }

    #[test]
    fn records_match_the_declared_width() {
        let key = Key {
            tgid: 7,
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            server_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            server_port: 80,
            role: Role::Server,
            protocol: "http",
            ssl: true,
            udp: false,
        };
        let api = ApiKey {
            key: key.clone(),
            api: "GET /{id}".into(),
        };
        let mut s = RpcStats {
            req_count: 4,
            resp_count: 4,
            err_count: 2,
            client_err_count: 1,
            server_err_count: 1,
            latency_sum_us: 400,
            latency_max_us: 200,
            ..RpcStats::default()
        };
        s.latency_buckets[2] = 4;
        let mut w = RecordWriter::new(Vec::new());
        write_link(&mut w, &key, "nginx", &LinkStats::default()).unwrap();
        write_rpc(&mut w, &api, false, "nginx", &s, &RpcStats::default(), 2.0).unwrap();
        write_rpc(&mut w, &api, true, "nginx", &s, &RpcStats::default(), 2.0).unwrap();
        w.flush().unwrap();
        let out = String::from_utf8(w.into_inner()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[1].starts_with(
                "|l7_rpc|7|127.0.0.1|127.0.0.1|80|tcp_server|server|http|1|nginx|2.000|2.000|4|4|100.0|"
            ),
            "{out}"
        );
        assert!(lines[2].contains("|GET /{id}|1|nginx|"), "{out}");
        assert!(
            lines[2].ends_with(" 400 200|50.00|2|25.00|25.00|1|1|"),
            "histogram sum and max, err_ratio, err_count, client/server ratios and counts: {out}"
        );
        for (line, t) in lines.iter().zip(meta_tables().iter()) {
            assert_eq!(line.matches('|').count() - 2, t.width(), "{line}");
        }
    }

    #[test]
    fn declaration_is_valid() {
        let d = declaration();
        d.validate().expect("valid declaration");
        assert_eq!(d.rest_name.as_deref(), Some("l7"));
        assert_eq!(d.snoopers, SnooperKind::ALL);
        assert_eq!(d.sub_probe_bits(&["l7_rpc_metrics".into()]), Ok(BIT_RPC));
        assert_eq!(
            d.sub_probe_bits(&["l7_bytes_metrics".into()]),
            Ok(BIT_BYTES)
        );
        let doc = gala_libconfig::parse_str(&meta_text(), std::path::Path::new("l7probe.meta"))
            .expect("valid libconfig");
        assert_eq!(Declaration::from_node(&doc), Ok(Some(declaration())));
    }

    #[test]
    fn committed_meta_file_is_current() {
        let committed =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/l7probe.meta"))
                .expect("probes/l7/l7probe.meta");
        assert_eq!(
            committed,
            meta_text(),
            "regenerate with: l7probe --print-meta > probes/l7/l7probe.meta"
        );
    }
}
