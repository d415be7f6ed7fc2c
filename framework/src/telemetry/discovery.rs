//! Counters of probe discovery: files refused by the ownership rule, failed folder scans.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a probe file, `.meta`, command or folder was refused (see `docs/configuration.md`,
/// "Probe file ownership rule").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefusalReason {
    /// The file is owned by someone other than root or the daemon's uid.
    Owner,
    /// The file is writable by group or others.
    Writable,
    /// A directory on the path is owned by someone other than root or the daemon's uid.
    ParentOwner,
    /// A directory on the path is writable by group or others (sticky ancestors excepted).
    ParentWritable,
    /// Not a regular file (or, for a folder, not a directory).
    NotRegular,
    /// The file or probe name is not printable, not UTF-8 or not a valid probe name.
    BadName,
}

impl RefusalReason {
    /// Every reason, in export order.
    pub const ALL: [RefusalReason; 6] = [
        RefusalReason::Owner,
        RefusalReason::Writable,
        RefusalReason::ParentOwner,
        RefusalReason::ParentWritable,
        RefusalReason::NotRegular,
        RefusalReason::BadName,
    ];

    /// Label value used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::Owner => "owner",
            RefusalReason::Writable => "writable",
            RefusalReason::ParentOwner => "parent_owner",
            RefusalReason::ParentWritable => "parent_writable",
            RefusalReason::NotRegular => "not_regular",
            RefusalReason::BadName => "bad_name",
        }
    }
}

/// Daemon-wide discovery counters.
#[derive(Debug, Default)]
pub struct DiscoveryCounters {
    refused: [AtomicU64; RefusalReason::ALL.len()],
    scan_errors: AtomicU64,
}

impl DiscoveryCounters {
    /// Count one newly refused file (counted when the refusal first appears, not per rescan).
    pub fn refuse(&self, reason: RefusalReason) {
        self.refused[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals counted so far for `reason`.
    pub fn refused(&self, reason: RefusalReason) -> u64 {
        self.refused[reason as usize].load(Ordering::Relaxed)
    }

    /// Count `n` failed reads (folder listing, file status) during one scan.
    pub fn scan_errors(&self, n: u64) {
        self.scan_errors.fetch_add(n, Ordering::Relaxed);
    }

    /// Failed reads counted so far.
    pub fn scan_error_count(&self) -> u64 {
        self.scan_errors.load(Ordering::Relaxed)
    }
}

/// Append `gala_gopher_self_probe_refused_total` and `gala_gopher_self_discovery_errors_total`.
/// `mid` is the already escaped machine id.
pub fn render_discovery_metrics(c: &DiscoveryCounters, mid: &str, out: &mut String) {
    let name = "gala_gopher_self_probe_refused_total";
    let _ = writeln!(
        out,
        "# HELP {name} Probe files, commands or folders refused by the ownership rule, by reason.\n\
         # TYPE {name} counter"
    );
    for r in RefusalReason::ALL {
        let _ = writeln!(
            out,
            "{name}{{reason=\"{}\",machine_id=\"{mid}\"}} {}",
            r.as_str(),
            c.refused(r)
        );
    }
    let name = "gala_gopher_self_discovery_errors_total";
    let _ = writeln!(
        out,
        "# HELP {name} Failed reads while scanning for probes (the previous probe set is kept).\n\
         # TYPE {name} counter\n\
         {name}{{machine_id=\"{mid}\"}} {}",
        c.scan_error_count()
    );
}
