//! Metadata publisher: one upstream metadata JSON per table to every sink that carries the meta
//! stream — all tables at start and every `meta.report_period`, and a table as soon as it
//! appears or changes (a drop-in probe's `.meta` registered at its start).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::export::json;
use crate::export::queue::{Item, MetaMessage, SinkQueue};
use crate::ingest::now_ms;
use crate::meta::{SchemaRef, SchemaRegistry};

/// How often the registry is checked for new tables.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Tables sorted by name.
fn snapshot(registry: &RwLock<SchemaRegistry>) -> Vec<SchemaRef> {
    let reg = registry.read().unwrap_or_else(|p| p.into_inner());
    let mut tables: Vec<SchemaRef> = reg.tables().cloned().collect();
    tables.sort_by(|a, b| a.table_name.cmp(&b.table_name));
    tables
}

/// Push one metadata message per table in `tables` to every queue.
pub fn publish(tables: &[SchemaRef], queues: &[Arc<SinkQueue>], time_ms: u64) {
    for t in tables {
        let mut buf = Vec::with_capacity(256);
        json::metadata(t, time_ms, &mut buf);
        let msg = Arc::new(MetaMessage {
            table: t.table_name.clone(),
            json: String::from_utf8(buf).unwrap_or_default(),
        });
        for q in queues {
            q.push(Item::Meta(Arc::clone(&msg)));
        }
    }
}

/// The publisher loop (runs until aborted).
pub async fn run(
    registry: Arc<RwLock<SchemaRegistry>>,
    queues: Vec<Arc<SinkQueue>>,
    period: Duration,
) {
    let mut known: HashMap<String, SchemaRef> = HashMap::new();
    let mut last_full: Option<Instant> = None;
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let tables = snapshot(&registry);
        let full = last_full.is_none_or(|t| t.elapsed() >= period);
        let due: Vec<SchemaRef> = if full {
            last_full = Some(Instant::now());
            tables.clone()
        } else {
            tables
                .iter()
                .filter(|t| known.get(&t.table_name).is_none_or(|k| !Arc::ptr_eq(k, t)))
                .cloned()
                .collect()
        };
        if !due.is_empty() {
            tracing::debug!(tables = due.len(), full, "publishing metadata");
            publish(&due, &queues, now_ms());
        }
        known = tables
            .into_iter()
            .map(|t| (t.table_name.clone(), t))
            .collect();
    }
}
