//! kafkaprobe's table and run-time control declaration (REST name `kafka`): upstream's
//! kafkaprobe table, from the l7 probe's Kafka parser instead of XDP packet parsing.
//!
//! Upstream's fields keep their order (`num` among the keys, as its `.meta` has it); `bytes`,
//! `messages` and `partial` are ours. One row per period for each (producer or consumer,
//! client, topic, broker) that moved records; the values are the period's.

use std::io::{self, Write};

use l7_protocol::tracker::{TopicKey, TopicStats};
use probe_sdk::args::DEFAULT_PERIOD_SECS;
use probe_sdk::decl::{self, Declaration, ParamValue};
use probe_sdk::meta::{self, Field, Table};
use probe_sdk::record::RecordWriter;

use crate::tables::{parse_table, stats_table, DEFAULT_RING_MIB};

/// The records per topic (upstream's table name).
pub const TABLE: &str = "kafkaprobe";
/// Its entity (upstream's).
pub const ENTITY: &str = "kafka";
/// What the parsers and the tracker could not use.
pub const PARSE_TABLE: &str = "kafkaprobe_parse_stats";
/// Loss-counter table (`<probe>_bpf_stats`, entity `bpf_probe`).
pub const STATS_TABLE: &str = "kafkaprobe_bpf_stats";
/// Default broker port (`-k`, `kafka_port`).
pub const DEFAULT_PORT: u16 = 9092;

/// The fields of [`TABLE`], upstream's first and in its order.
pub const FIELDS: &[Field] = &[
    Field::key("msg_type", "producer (records in Produce requests) or consumer (records in Fetch responses)"),
    Field::key("client_ip", "the client's address"),
    Field::key("client_port", "the client's port"),
    Field::gauge("num", "records produced or fetched in the last period (in the record batches whose headers were seen)"),
    Field::key("topic", "the topic; Produce and Fetch v13+ name topics by id: the name a Metadata response gave the id, or id: and 32 hex digits until one does"),
    Field::key("server_ip", "the broker's address"),
    Field::key("server_port", "the broker's port"),
    Field::gauge("bytes", "bytes of the topic's record sets in the last period, as the messages declare them"),
    Field::gauge("messages", "Produce requests or Fetch responses that carried the topic in the last period"),
    Field::gauge("partial", "of those, messages only part of which was seen (bytes beyond the capture, a malformed body): num is a lower bound"),
];

/// What kafkaprobe declares about its run-time control (REST name `kafka`): no sub-probes
/// and no snoopers (upstream's: every process talking to the broker port is seen); params
/// `report_period`, `kafka_port` (the broker port, `-k`) and `ringbuf_map_size` (MiB, read at
/// start).
pub fn declaration() -> Declaration {
    Declaration {
        rest_name: Some("kafka".to_string()),
        reload: true,
        snoopers: Vec::new(),
        sub_probes: Vec::new(),
        params: vec![
            decl::standard("report_period")
                .expect("a param name upstream has")
                .with_default(ParamValue::Int(i64::from(DEFAULT_PERIOD_SECS))),
            decl::standard("kafka_port").expect("a param name upstream has"),
            decl::standard("ringbuf_map_size")
                .expect("a param name upstream has")
                .with_default(ParamValue::Int(i64::from(DEFAULT_RING_MIB))),
        ],
    }
}

/// Every table of the `.meta` file, in order.
pub fn meta_tables() -> Vec<Table> {
    vec![
        Table::new(TABLE, ENTITY, &[FIELDS]),
        parse_table(PARSE_TABLE),
        stats_table(STATS_TABLE),
    ]
}

/// The `.meta` file (`kafkaprobe --print-meta`): every table, then the control declaration.
pub fn meta_text() -> String {
    format!(
        "{}\n{}",
        meta::render(&[], &meta_tables()),
        declaration().render_meta()
    )
}

/// Writes the period's row of `key`.
pub fn write_topic<W: Write>(
    out: &mut RecordWriter<W>,
    key: &TopicKey,
    s: &TopicStats,
) -> io::Result<()> {
    out.record(TABLE)
        .field(key.way.name())
        .field(&key.client_ip.to_string())
        .field(&key.client_port)
        .field(&s.records)
        .field(&key.topic)
        .field(&key.server_ip.to_string())
        .field(&key.server_port)
        .field(&s.bytes)
        .field(&s.messages)
        .field(&s.partial)
        .end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use l7_protocol::tracker::TopicWay;
    use probe_sdk::meta::FieldKind;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn upstream_fields_in_upstream_order() {
        let t = &meta_tables()[0];
        let names: Vec<&str> = t.fields.iter().map(|f| f.name).collect();
        assert_eq!(
            names[..7],
            [
                "msg_type",
                "client_ip",
                "client_port",
                "num",
                "topic",
                "server_ip",
                "server_port"
            ]
        );
        assert_eq!(t.fields[3].kind, FieldKind::Gauge);
        assert_eq!((t.name, t.entity), ("kafkaprobe", "kafka"));
        assert_eq!(meta::check(&meta_tables()), Vec::<String>::new());
        assert_eq!(declaration().rest_name.as_deref(), Some("kafka"));
    }

    #[test]
    fn a_row_has_the_declared_width() {
        let mut out = RecordWriter::new(Vec::new());
        let key = TopicKey {
            way: TopicWay::Fetch,
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            client_port: 40000,
            topic: "orders|eu".into(),
            server_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            server_port: 9092,
        };
        let s = TopicStats {
            records: 5,
            bytes: 900,
            messages: 2,
            partial: 1,
        };
        write_topic(&mut out, &key, &s).unwrap();
        out.flush().unwrap();
        let line = String::from_utf8(out.into_inner()).unwrap();
        let mut values = Vec::new();
        let table = record_line::parse_record(line.trim_end(), &mut values).unwrap();
        assert_eq!(table, TABLE);
        assert_eq!(
            values.len(),
            FIELDS.len(),
            "the separator in a topic is escaped: {line}"
        );
        assert_eq!((values[0], values[3]), ("consumer", "5"));
    }

    #[test]
    fn declaration_is_valid_and_the_committed_meta_file_current() {
        let d = declaration();
        d.validate().expect("valid declaration");
        let doc = gala_libconfig::parse_str(&meta_text(), std::path::Path::new("kafkaprobe.meta"))
            .expect("valid libconfig");
        assert_eq!(Declaration::from_node(&doc), Ok(Some(declaration())));
        let committed =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/kafkaprobe.meta"))
                .expect("probes/l7/kafkaprobe.meta");
        assert_eq!(
            committed,
            meta_text(),
            "regenerate with: kafkaprobe --print-meta > probes/l7/kafkaprobe.meta"
        );
    }
}
