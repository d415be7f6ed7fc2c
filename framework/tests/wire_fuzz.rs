//! Property tests: random bytes through framer → parser → store never panic and never buffer
//! more than the line limit; valid escaped records round-trip.

use std::sync::{Arc, RwLock};

use gala_gopher::ingest::{Ingest, LogEvents};
use gala_gopher::meta::SchemaRegistry;
use gala_gopher::store::{StoreLimits, TableStore};
use gala_gopher::telemetry::ProbeStats;
use gala_gopher::wire::{parse_record, unescape_into, Framer};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..512), 0..16),
                                limit in 1usize..300) {
        let registry = Arc::new(RwLock::new(SchemaRegistry::default()));
        let store = Arc::new(TableStore::new(StoreLimits::default(), "m"));
        let ingest = Ingest::new(registry, store, Arc::new(LogEvents), limit, 64);
        let stats = Arc::new(ProbeStats::new("fuzz"));
        let mut handler = ingest.handler(Arc::clone(&stats));
        let mut framer = Framer::new(limit);
        for c in &chunks {
            framer.push(c, |l| handler.handle(l));
            prop_assert!(framer.buffered() <= limit);
        }
        framer.finish(|l| handler.handle(l));
    }

    #[test]
    fn escaped_values_round_trip(values in prop::collection::vec("[^\u{0}]{0,20}", 1..8)) {
        let mut line = String::from("|t|");
        for v in &values {
            for c in v.chars() {
                match c {
                    '|' => line.push_str("\\|"),
                    '\\' => line.push_str("\\\\"),
                    '\n' => line.push_str("\\n"),
                    '\r' => line.push_str("\\r"),
                    c => line.push(c),
                }
            }
            line.push('|');
        }
        let mut raw = Vec::new();
        let table = parse_record(&line, &mut raw).unwrap();
        prop_assert_eq!(table, "t");
        prop_assert_eq!(raw.len(), values.len());
        for (r, v) in raw.iter().zip(&values) {
            let mut s = String::new();
            unescape_into(r, &mut s);
            prop_assert_eq!(&s, v);
        }
    }
}
