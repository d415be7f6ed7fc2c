//! One period's latencies per row: every cgroup's change goes to the node row and, when the
//! cgroup belongs to a container, to that container's row. Pure: the maps' readings and the
//! cgroup directory come in, rows and the cgroups to delete from the maps come out.

use std::collections::BTreeMap;

use crate::cgroups::Directory;
use crate::loader::Collected;
use crate::stats::{Row, Source, Tracker};

/// The rows and what is needed to turn cumulative readings into per-period changes.
#[derive(Debug, Default)]
pub struct Aggregator {
    tracker: Tracker,
    /// The whole node (every cgroup, containers included).
    pub node: Row,
    /// By container short id: the containers of the last directory.
    pub containers: BTreeMap<String, Row>,
}

/// Map elements of cgroups that no longer exist, to delete.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Gone {
    /// From `cpu_stats`.
    pub cpu: Vec<u64>,
    /// From `memio_stats`.
    pub memio: Vec<u64>,
}

impl Gone {
    /// The cgroup ids of `source`.
    pub fn of(&self, source: Source) -> &[u64] {
        match source {
            Source::Cpu => &self.cpu,
            Source::MemIo => &self.memio,
        }
    }
}

impl Aggregator {
    /// Folds one period's readings into the rows: the period values start again from zero,
    /// containers not in `dir` lose their row, new ones get one. Returns the elements of
    /// cgroups `dir` knows to be gone (already counted here), which the caller deletes.
    pub fn fold(&mut self, collected: &Collected, dir: &Directory) -> Gone {
        self.node.new_period();
        self.containers
            .retain(|id, _| dir.containers.contains_key(id));
        for id in dir.containers.keys() {
            self.containers.entry(id.clone()).or_default().new_period();
        }
        let mut gone = Gone::default();
        for source in [Source::Cpu, Source::MemIo] {
            let samples = collected.of(source);
            for d in self.tracker.deltas(source, samples) {
                self.node.add(&d);
                if let Some(row) = dir
                    .container_of(d.cgid)
                    .and_then(|id| self.containers.get_mut(id))
                {
                    row.add(&d);
                }
            }
            let ids: Vec<u64> = samples
                .iter()
                .map(|(cgid, _)| *cgid)
                .filter(|cgid| dir.is_gone(*cgid))
                .collect();
            for cgid in &ids {
                self.tracker.forget(source, *cgid);
            }
            match source {
                Source::Cpu => gone.cpu = ids,
                Source::MemIo => gone.memio = ids,
            }
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::{Cgroup, Walk};
    use crate::stats::{GroupSample, Kind};

    const ID_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn walk() -> Walk {
        Walk {
            cgroups: vec![
                Cgroup {
                    id: 1,
                    path: "/".into(),
                },
                Cgroup {
                    id: 10,
                    path: format!("/docker/{ID_A}"),
                },
                Cgroup {
                    id: 11,
                    path: format!("/docker/{ID_A}/sub"),
                },
                Cgroup {
                    id: 20,
                    path: "/system.slice/cron.service".into(),
                },
            ],
            truncated: false,
            errors: 0,
        }
    }

    fn sample(rundelay_ns: u64, count: u64) -> GroupSample {
        let mut s = GroupSample::default();
        s.lat[0].slots[0] = count;
        s.lat[0].count = count;
        s.lat[0].sum_ns = rundelay_ns;
        s.period_max_ns[0] = rundelay_ns;
        s
    }

    #[test]
    fn node_takes_everything_containers_their_cgroups() {
        let dir = Directory::from_walk(&walk());
        let mut agg = Aggregator::default();
        let collected = Collected {
            cpu: vec![
                (1, sample(100, 1)),
                (10, sample(1000, 2)),
                (11, sample(10, 1)),
                (20, sample(5, 1)),
            ],
            memio: vec![],
        };
        let gone = agg.fold(&collected, &dir);
        assert_eq!(gone, Gone::default());
        assert_eq!(agg.node.get(Kind::RunDelay).period_sum_ns, 1115);
        assert_eq!(agg.node.get(Kind::RunDelay).total.count, 5);
        let a = &agg.containers["aaaaaaaaaaaa"];
        assert_eq!(a.get(Kind::RunDelay).period_sum_ns, 1010);
        assert_eq!(a.get(Kind::RunDelay).period_max_ns, 1000);
        assert_eq!(agg.containers.len(), 1);

        // Next period: only cgroup 11 moved; the sub-cgroup 11 then disappears.
        let mut w = walk();
        w.cgroups.retain(|c| c.id != 11);
        let dir2 = Directory::from_walk(&w);
        let collected2 = Collected {
            cpu: vec![
                (1, sample(100, 1)),
                (10, sample(1000, 2)),
                (11, sample(40, 3)),
                (20, sample(5, 1)),
            ],
            memio: vec![],
        };
        let gone = agg.fold(&collected2, &dir2);
        assert_eq!(gone.cpu, [11], "counted, then deleted");
        assert_eq!(agg.node.get(Kind::RunDelay).period_sum_ns, 30);
        // The container row no longer knows cgroup 11 (gone from the directory).
        let a = &agg.containers["aaaaaaaaaaaa"];
        assert_eq!(a.get(Kind::RunDelay).period_sum_ns, 0);
        assert_eq!(a.get(Kind::RunDelay).total.count, 3);
    }

    #[test]
    fn incomplete_walks_delete_nothing_and_vanished_containers_lose_their_row() {
        let mut w = walk();
        w.truncated = true;
        let dir = Directory::from_walk(&w);
        let mut agg = Aggregator::default();
        let collected = Collected {
            cpu: vec![(99, sample(1, 1))],
            memio: vec![(99, GroupSample::default())],
        };
        assert_eq!(agg.fold(&collected, &dir), Gone::default());
        assert_eq!(agg.containers.len(), 1);
        let empty = Directory::from_walk(&Walk::default());
        agg.fold(&Collected::default(), &empty);
        assert!(agg.containers.is_empty());
    }
}
