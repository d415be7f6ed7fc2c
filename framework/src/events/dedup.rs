//! Per-entity dedup window (`event.timeout`): an entity reports at most one event per window.
//! Upstream kept up to 1000 ids per process; this table is bounded too ([`Dedup::new`]'s `cap`),
//! dropping expired ids first and then the least recently reported one.

use std::collections::HashMap;

/// Remembers when each entity last got an event through.
#[derive(Debug)]
pub struct Dedup {
    window_ms: u64,
    cap: usize,
    last: HashMap<String, u64>,
}

impl Dedup {
    /// A window of `window_ms` milliseconds over at most `cap` entities.
    pub fn new(window_ms: u64, cap: usize) -> Self {
        Dedup {
            window_ms,
            cap: cap.max(1),
            last: HashMap::new(),
        }
    }

    /// Whether an event for `key` at `now_ms` (a monotonic clock) may pass; if so the window
    /// restarts. Suppressed events do not extend the window.
    pub fn admit(&mut self, key: &str, now_ms: u64) -> bool {
        if let Some(t) = self.last.get_mut(key) {
            if now_ms.saturating_sub(*t) >= self.window_ms {
                *t = now_ms;
                return true;
            }
            return false;
        }
        if self.last.len() >= self.cap {
            let window = self.window_ms;
            self.last.retain(|_, t| now_ms.saturating_sub(*t) < window);
        }
        if self.last.len() >= self.cap {
            if let Some(oldest) = self
                .last
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(k, _)| k.clone())
            {
                self.last.remove(&oldest);
            }
        }
        self.last.insert(key.to_string(), now_ms);
        true
    }

    /// Entities remembered now.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// Whether no entity is remembered.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_entity_per_window() {
        let mut d = Dedup::new(600_000, 10);
        assert!(d.admit("a", 0));
        assert!(!d.admit("a", 1));
        assert!(d.admit("b", 1));
        assert!(!d.admit("a", 599_999));
        assert!(d.admit("a", 600_000));
        assert!(!d.admit("a", 600_001));
    }

    #[test]
    fn bounded_table_evicts_expired_then_oldest() {
        let mut d = Dedup::new(100, 2);
        assert!(d.admit("a", 0));
        assert!(d.admit("b", 50));
        assert!(d.admit("c", 120)); // "a" expired and was purged
        assert_eq!(d.len(), 2);
        assert!(!d.admit("b", 121));
        assert!(d.admit("d", 130)); // full of live ids: the oldest ("b") goes
        assert!(d.admit("b", 131));
        assert_eq!(d.len(), 2);
    }
}
