//! Function names shared between cache entries: one allocation per distinct name, and the cache
//! hands out `Arc` clones. Bounded: names only the interner still holds are purged each period,
//! and past the bound new names are simply not shared.

use std::collections::HashSet;
use std::sync::Arc;

/// A bounded set of shared names.
#[derive(Debug)]
pub(crate) struct Names {
    set: HashSet<Arc<str>>,
    max: usize,
}

impl Names {
    pub fn new(max: usize) -> Self {
        Names {
            set: HashSet::new(),
            max,
        }
    }

    /// The shared copy of `name`.
    pub fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.set.get(name) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(name);
        if self.set.len() < self.max {
            self.set.insert(Arc::clone(&shared));
        }
        shared
    }

    /// Forgets names nobody else holds any more.
    pub fn purge(&mut self) {
        self.set.retain(|name| Arc::strong_count(name) > 1);
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
}
