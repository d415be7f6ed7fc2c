//! The resolver thread: waits on the connector socket, the command wake-up and the next
//! publication or rescan time; applies what arrived; publishes what is due.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::connector::{Batch, Connector, Event};
use super::engine::Engine;
use super::procfs::LiveProc;
use super::{Command, ResolverOpts, Shared, SOURCE_CONNECTOR, SOURCE_SCAN};

/// After a batch of events, wait this long before reading again so that a busy host costs one
/// wake-up per pause rather than one per event (the socket buffer holds the events meanwhile;
/// publications are coalesced over [`ResolverOpts::push_interval`] anyway).
const BATCH_PAUSE: Duration = Duration::from_millis(25);
/// Most `recvmmsg` batches per wake-up, so commands are not starved by an event storm.
const MAX_BATCHES: usize = 64;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: one live timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

fn drain_eventfd(fd: i32) {
    let mut v: u64 = 0;
    // SAFETY: reads 8 bytes into a live u64 from our non-blocking eventfd.
    let _ = unsafe { libc::read(fd, (&mut v as *mut u64).cast(), std::mem::size_of::<u64>()) };
}

fn apply(engine: &mut Engine<LiveProc>, ev: Event) {
    match ev {
        Event::Fork { parent, child } => engine.fork(parent, child),
        Event::Exec { pid } => engine.exec(pid),
        Event::Comm { pid, comm } => engine.comm(pid, &comm),
        Event::Exit { pid } => engine.exit(pid),
        Event::Ack { .. } => {}
    }
}

/// Run until every handle is dropped.
pub(super) fn run(
    mut engine: Engine<LiveProc>,
    mut connector: Option<Connector>,
    commands: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    opts: &ResolverOpts,
) {
    let counters = Arc::clone(&shared.counters);
    engine.rescan();
    tracing::info!(
        source = if connector.is_some() {
            SOURCE_CONNECTOR
        } else {
            SOURCE_SCAN
        },
        processes = engine.process_count(),
        "snooper resolver started"
    );
    let mut next_scan = Instant::now() + opts.rescan_interval;
    // Repairs after lost events: at most one per rescan interval, so an event storm that keeps
    // overflowing the socket costs one scan a second, not one per read.
    let mut last_repair: Option<Instant> = None;
    let mut repair_at: Option<Instant> = None;
    let mut events = Vec::with_capacity(256);
    loop {
        shared.cpu_ns.store(thread_cpu_ns(), Ordering::Relaxed);
        let now = Instant::now();
        let mut deadline = engine.next_due(opts.push_interval);
        if engine.watches_containers() {
            let at = now + super::CONTAINER_POLL;
            deadline = Some(deadline.map_or(at, |d| d.min(at)));
        }
        let scan_at = match (&connector, repair_at) {
            (None, _) => Some(next_scan),
            (Some(_), at) => at,
        };
        if let Some(at) = scan_at {
            deadline = Some(deadline.map_or(at, |d| d.min(at)));
        }
        let timeout_ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(now);
                // Round up: waking early would only spin.
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int
            }
        };
        let mut fds = [
            libc::pollfd {
                fd: shared.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: connector.as_ref().map_or(-1, |c| c.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two live pollfds; a negative fd is ignored by poll(2).
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                tracing::error!(error = %e, "snooper: poll failed; resolver stops");
                return;
            }
        }

        if fds[0].revents != 0 {
            drain_eventfd(shared.wake.as_raw_fd());
        }
        loop {
            match commands.try_recv() {
                Ok(Command::Set {
                    probe,
                    mode,
                    generation,
                }) => engine.set(&probe, mode, generation),
                Ok(Command::Remove { probe }) => engine.remove(&probe),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return,
            }
        }

        let mut had_events = false;
        if fds[1].revents != 0 {
            if let Some(conn) = connector.as_mut() {
                let mut lost = false;
                let mut failed = None;
                for _ in 0..MAX_BATCHES {
                    events.clear();
                    match conn.read_batch(&mut events) {
                        Ok(Batch::Read(0)) => break,
                        Ok(Batch::Read(_)) => {
                            had_events = true;
                            counters
                                .events
                                .fetch_add(events.len() as u64, Ordering::Relaxed);
                            for ev in events.drain(..) {
                                apply(&mut engine, ev);
                            }
                        }
                        Ok(Batch::Lost) => {
                            counters.events_lost.fetch_add(1, Ordering::Relaxed);
                            lost = true;
                        }
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                if let Some(e) = failed {
                    tracing::warn!(error = %e, "snooper: proc connector failed; rescanning /proc every {:?}", opts.rescan_interval);
                    connector = None;
                    shared.source.store(1, Ordering::Relaxed);
                    next_scan = Instant::now();
                } else if lost && repair_at.is_none() {
                    tracing::debug!("snooper: process events lost; rescanning /proc");
                    let now = Instant::now();
                    repair_at =
                        Some(last_repair.map_or(now, |t| (t + opts.rescan_interval).max(now)));
                }
            }
        }
        if connector.is_none() && Instant::now() >= next_scan {
            engine.rescan();
            next_scan = Instant::now() + opts.rescan_interval;
        }
        if connector.is_some() && repair_at.is_some_and(|t| Instant::now() >= t) {
            engine.rescan();
            repair_at = None;
            last_repair = Some(Instant::now());
        }

        engine.containers_changed();
        for p in engine.due(Instant::now(), opts.push_interval) {
            shared.publish(&p.probe, p.generation, p.resolved);
        }
        if had_events {
            shared.cpu_ns.store(thread_cpu_ns(), Ordering::Relaxed);
            std::thread::sleep(BATCH_PAUSE);
        }
    }
}
