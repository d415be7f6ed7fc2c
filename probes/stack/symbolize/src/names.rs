//! Function names shared between cache entries: one allocation per distinct name, and the cache
//! hands out `Arc` clones. Bounded: names only the interner still holds are purged once as many
//! names were added (or refused) as were kept at the last purge, so that a purge's cost is spread
//! over the names that made it necessary; past the bound new names are simply not shared.

use std::collections::HashSet;
use std::sync::Arc;

/// A bounded set of shared names.
#[derive(Debug)]
pub(crate) struct Names {
    set: HashSet<Arc<str>>,
    max: usize,
    /// New names (kept or refused) since the last purge.
    added: usize,
    /// Names kept by the last purge.
    kept: usize,
}

/// Names added before a purge is worth it, however few were kept.
const MIN_PURGE_INTERVAL: usize = 1024;

impl Names {
    pub fn new(max: usize) -> Self {
        Names {
            set: HashSet::new(),
            max,
            added: 0,
            kept: 0,
        }
    }

    /// The shared copy of `name`.
    pub fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.set.get(name) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(name);
        self.added += 1;
        if self.set.len() < self.max {
            self.set.insert(Arc::clone(&shared));
        }
        shared
    }

    /// Forgets names nobody else holds any more.
    pub fn purge(&mut self) {
        self.set.retain(|name| Arc::strong_count(name) > 1);
        self.added = 0;
        self.kept = self.set.len();
    }

    /// [`purge`](Self::purge)s if enough names were added since the last one.
    pub fn purge_if_grown(&mut self) {
        if self.added >= self.kept.max(MIN_PURGE_INTERVAL) {
            self.purge();
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.set.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_until_the_bound_and_purges_unheld_names() {
        let mut names = Names::new(2);
        let a = names.intern("a");
        assert!(Arc::ptr_eq(&a, &names.intern("a")));
        let b = names.intern("b");
        let c1 = names.intern("c");
        let c2 = names.intern("c");
        assert!(
            !Arc::ptr_eq(&c1, &c2),
            "past the bound names are not shared"
        );
        assert_eq!(names.len(), 2);
        drop(b);
        names.purge();
        assert_eq!(names.len(), 1);
        assert!(Arc::ptr_eq(&a, &names.intern("a")));
    }

    #[test]
    fn purges_once_as_many_names_were_added_as_kept() {
        let mut names = Names::new(1 << 20);
        let held: Vec<Arc<str>> = (0..2000).map(|i| names.intern(&format!("h{i}"))).collect();
        names.purge_if_grown();
        assert_eq!((names.len(), names.kept), (2000, 2000));
        for i in 0..1999 {
            names.intern(&format!("t{i}"));
        }
        names.purge_if_grown();
        assert_eq!(names.len(), 3999, "not yet: 1999 added, 2000 kept");
        names.intern("one more");
        names.purge_if_grown();
        assert_eq!(names.len(), held.len());
    }
}
