//! Plugs the [`snooper`](super::snooper) resolver into the supervisor
//! ([`SnoopResolver`]): a probe's validated snoopers become a resolver [`Mode`], and each
//! [`Resolved`] set becomes the [`Snoop`] of its control lines.

use std::sync::Arc;

use probe_decl::{Snoop, SnoopMode};
use tokio::sync::watch;

use super::runtime::{SnooperDoc, Snoopers};
use super::snooper::{Mode, ProcName, Resolved, Resolver, Selector};
use crate::custom_labels::CustomLabels;
use crate::supervisor::SnoopResolver;

/// The resolver, as the supervisor uses it.
#[derive(Clone)]
pub struct ResolverGlue {
    resolver: Resolver,
    /// Where the `proc_name` labels of matched processes go (added to their series).
    labels: Arc<CustomLabels>,
}

impl ResolverGlue {
    /// Glue over `resolver`, handing the labels of matched processes to `labels`.
    pub fn new(resolver: Resolver, labels: Arc<CustomLabels>) -> ResolverGlue {
        ResolverGlue { resolver, labels }
    }
}

/// The selector of a validated snooper section (regexes compiled when it was accepted).
fn selector(doc: &SnooperDoc) -> Selector {
    Selector {
        proc_id: doc.proc_id.clone(),
        proc_name: doc
            .proc_name
            .iter()
            .filter_map(|p| {
                Some(ProcName {
                    comm: super::snooper::comm_regex(&p.comm).ok()?,
                    cmdline: p.cmdline.clone(),
                    label: p.label.clone(),
                })
            })
            .collect(),
        container_id: doc.container_id.clone(),
        container_name: doc.container_name.clone(),
        pod_id: doc.pod_id.clone(),
        pod_labels: doc.pod_labels.clone(),
    }
}

fn snoop_of(kind: SnoopMode, resolved: &Resolved) -> Snoop {
    Snoop {
        mode: kind,
        pids: resolved.pids.iter().copied().collect(),
    }
}

impl SnoopResolver for ResolverGlue {
    fn resolve(&self, probe: &str, snoopers: &Snoopers) -> watch::Receiver<Snoop> {
        let (mode, kind) = match snoopers {
            Snoopers::All => (Mode::All, SnoopMode::All),
            Snoopers::Whitelist(d) => (Mode::Whitelist(selector(d)), SnoopMode::Include),
            Snoopers::Blacklist(d) => (Mode::Blacklist(selector(d)), SnoopMode::Exclude),
        };
        // A whitelist's pod_labels also name the pod labels copied onto the probe's series.
        let pod_labels = match snoopers {
            Snoopers::Whitelist(d) => d.pod_labels.clone(),
            _ => Vec::new(),
        };
        if let Err(e) = self.labels.set_pod_labels(probe, pod_labels) {
            tracing::warn!(probe, "snoopers.pod_labels not copied onto series: {e}");
        }
        // Until the first resolution, a whitelist observes nothing and a blacklist everything.
        let (tx, rx) = watch::channel(Snoop {
            mode: kind,
            pids: Vec::new(),
        });
        if let Err(e) = self.resolver.set(probe, mode) {
            tracing::warn!(probe, "snoopers not resolved: {e}");
            return rx;
        }
        let mut source = self.resolver.subscribe(probe);
        let labels = Arc::clone(&self.labels);
        let name = probe.to_string();
        tokio::spawn(async move {
            loop {
                let now: Arc<Resolved> = source.borrow_and_update().clone();
                labels
                    .set_process_labels(&name, now.labels.iter().map(|(pid, l)| (*pid, l.clone())));
                let snoop = snoop_of(kind, &now);
                tx.send_if_modified(|s| {
                    let changed = *s != snoop;
                    *s = snoop;
                    changed
                });
                tokio::select! {
                    r = source.changed() => if r.is_err() { break },
                    _ = tx.closed() => break,
                }
            }
        });
        rx
    }

    fn forget(&self, probe: &str) {
        self.resolver.remove(probe);
        self.labels.set_process_labels(probe, []);
        let _ = self.labels.set_pod_labels(probe, Vec::new());
    }
}
