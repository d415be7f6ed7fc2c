//! The kernel side: loads `l7.bpf.c`, attaches it, and keeps its process filter (`cfg`,
//! `procs`) equal to the control channel's process selection.

use std::collections::BTreeSet;
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, OpenObject};
use probe_sdk::bpf::{self, LossCounters};
use probe_sdk::decl::{Snoop, SnoopMode};

use crate::skel::types::{l7_cfg, l7_mode};
use crate::skel::{L7Skel, L7SkelBuilder};

/// Failure to load, attach or configure the BPF side.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// libbpf refused something.
    #[error("{what}: {source}")]
    Libbpf {
        /// What was being done.
        what: &'static str,
        /// The libbpf error.
        source: libbpf_rs::Error,
    },
    /// BTF selection failed.
    #[error(transparent)]
    Sdk(#[from] bpf::BpfError),
    /// More processes selected than the kernel's filter map holds.
    #[error("{0} processes selected, the kernel filter holds {1}: the rest are not traced")]
    TooManyProcesses(usize, u32),
}

fn ctx(what: &'static str) -> impl FnOnce(libbpf_rs::Error) -> CollectError {
    move |source| CollectError::Libbpf { what, source }
}

/// How to configure the BPF side.
#[derive(Debug, Clone)]
pub struct Options {
    /// Custom BTF file (`-b`).
    pub btf_path: Option<PathBuf>,
    /// Size of the ring buffer, bytes (a power of two).
    pub ring_bytes: u32,
    /// Bytes captured per call.
    pub capture: u32,
    /// Only sockets whose local or remote port this is (0: every socket).
    pub port: u16,
}

/// The loaded and attached BPF object.
pub struct Collector<'obj> {
    skel: L7Skel<'obj>,
    _links: Vec<Link>,
    /// Tgids now in the `procs` map.
    procs: BTreeSet<u32>,
    capture: u32,
    port: u16,
    mode: Option<u32>,
    ssl: bool,
    /// Announcement generation (`l7_cfg.gen`).
    gen: u32,
    /// Data records go through the per-CPU batches (`l7_cfg.batch`): [`flush`](Self::flush)
    /// works on this kernel.
    batch: bool,
    /// CPUs whose batches [`flush`](Self::flush) sends.
    cpus: u32,
}

/// `BPF_F_TEST_RUN_ON_CPU`: run a raw tracepoint program's test run on the CPU named.
const TEST_RUN_ON_CPU: u32 = 1;
/// Attempts per CPU while a program of that CPU holds its batch.
const FLUSH_TRIES: u32 = 64;

/// Most tgids the `procs` map holds (its `max_entries`).
pub const MAX_PROCS: u32 = 65536;

impl<'obj> Collector<'obj> {
    /// Opens, loads and attaches everything; nothing is traced until [`select`](Self::select).
    pub fn start(
        object: &'obj mut MaybeUninit<OpenObject>,
        opts: &Options,
    ) -> Result<Collector<'obj>, CollectError> {
        let builder = L7SkelBuilder {
            obj_builder: bpf::object_builder(opts.btf_path.as_deref())?,
        };
        let mut open = builder
            .open(object)
            .map_err(ctx("opening the BPF object"))?;
        open.maps
            .events
            .set_max_entries(opts.ring_bytes)
            .map_err(ctx("sizing the ring buffer"))?;
        let skel = open.load().map_err(ctx("loading the BPF programs"))?;
        let mut c = Collector {
            skel,
            _links: Vec::new(),
            procs: BTreeSet::new(),
            capture: opts.capture,
            port: opts.port,
            mode: None,
            ssl: false,
            gen: 1,
            batch: false,
            cpus: libbpf_rs::num_possible_cpus()
                .ok()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(1),
        };
        c.set_mode(l7_mode::L7_MODE_NONE.0)?;
        // Batches only where user space can flush them (a raw tracepoint test run on a
        // chosen CPU: Linux 5.10+); else one record per call.
        match c.run_flush(0) {
            Ok(_) => {
                c.batch = true;
                c.write_cfg(l7_mode::L7_MODE_NONE.0, false)?;
            }
            Err(e) => probe_sdk::warn!("per-CPU batches off (each call its own record): {e}"),
        }
        let p = &c.skel.progs;
        let links = vec![
            p.on_state
                .attach()
                .map_err(ctx("attaching inet_sock_set_state"))?,
            p.on_send
                .attach()
                .map_err(ctx("attaching sock_send_length"))?,
            p.on_recv
                .attach()
                .map_err(ctx("attaching sock_recv_length"))?,
        ];
        c._links = links;
        Ok(c)
    }

    fn set_mode(&mut self, mode: u32) -> Result<(), CollectError> {
        if self.mode == Some(mode) {
            return Ok(());
        }
        self.write_cfg(mode, self.ssl)?;
        self.mode = Some(mode);
        Ok(())
    }

    /// Traces only the sockets whose local or remote port is `port` (0: every socket).
    pub fn set_port(&mut self, port: u16) -> Result<(), CollectError> {
        if self.port != port {
            self.port = port;
            self.write_cfg(self.mode.unwrap_or(l7_mode::L7_MODE_NONE.0), self.ssl)?;
        }
        Ok(())
    }

    /// Lets the SSL hooks report (or makes them return at once).
    pub fn set_ssl(&mut self, on: bool) -> Result<(), CollectError> {
        if self.ssl != on {
            self.write_cfg(self.mode.unwrap_or(l7_mode::L7_MODE_NONE.0), on)?;
            self.ssl = on;
        }
        Ok(())
    }

    fn write_cfg(&mut self, mode: u32, ssl: bool) -> Result<(), CollectError> {
        let v = l7_cfg {
            mode,
            cap: self.capture,
            ssl: u32::from(ssl),
            gen: self.gen,
            port: u32::from(self.port),
            batch: u32::from(self.batch),
        };
        // SAFETY: l7_cfg is the plain-data copy of the map's value type.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&v as *const l7_cfg).cast::<u8>(),
                std::mem::size_of::<l7_cfg>(),
            )
        };
        self.skel
            .maps
            .cfg
            .update(&0u32.to_ne_bytes(), bytes, MapFlags::ANY)
            .map_err(ctx("writing the configuration map"))?;
        Ok(())
    }

    /// Attaches the SSL hooks to the libssl at `path` (for process `pid`, or every process
    /// mapping it when `pid` is -1). A function the library lacks is skipped (the `_ex`
    /// variants are OpenSSL 1.1.1+); none found at all is an error.
    pub fn attach_ssl(&self, pid: i32, path: &Path) -> Result<Vec<Link>, CollectError> {
        let p = &self.skel.progs;
        let hooks: [(&libbpf_rs::ProgramMut<'_>, &str, bool); 9] = [
            (&p.ssl_set_fd, "SSL_set_fd", false),
            (&p.ssl_write_enter, "SSL_write", false),
            (&p.ssl_read_enter, "SSL_read", false),
            (&p.ssl_write_ex_enter, "SSL_write_ex", false),
            (&p.ssl_read_ex_enter, "SSL_read_ex", false),
            (&p.ssl_ret, "SSL_write", true),
            (&p.ssl_ret, "SSL_read", true),
            (&p.ssl_ret, "SSL_write_ex", true),
            (&p.ssl_ret, "SSL_read_ex", true),
        ];
        probe_sdk::bpf::uprobe_libs::attach_functions(&hooks, pid, path).map_err(|source| {
            CollectError::Libbpf {
                what: "attaching the libssl uprobes",
                source,
            }
        })
    }

    /// Traces the processes `snoop` selects (none when `on` is false). The filter map is
    /// updated first when the mode changes to one that reads it, so no process is traced that
    /// should not be.
    pub fn select(&mut self, snoop: &Snoop, on: bool) -> Result<(), CollectError> {
        let (mode, want): (u32, BTreeSet<u32>) = match (on, snoop.mode) {
            (false, _) => (l7_mode::L7_MODE_NONE.0, BTreeSet::new()),
            (true, SnoopMode::All) => (l7_mode::L7_MODE_ALL.0, BTreeSet::new()),
            (true, SnoopMode::Include) => (
                l7_mode::L7_MODE_INCLUDE.0,
                snoop.pids.iter().copied().collect(),
            ),
            (true, SnoopMode::Exclude) => (
                l7_mode::L7_MODE_EXCLUDE.0,
                snoop.pids.iter().copied().collect(),
            ),
        };
        if self.mode != Some(mode) {
            // Stop reading the map while it changes meaning.
            self.set_mode(l7_mode::L7_MODE_NONE.0)?;
        }
        let mut over = 0usize;
        for gone in self.procs.difference(&want).copied().collect::<Vec<_>>() {
            // A missing key is fine: the set is what we wrote.
            let _ = self.skel.maps.procs.delete(&gone.to_ne_bytes());
            self.procs.remove(&gone);
        }
        for new in want.difference(&self.procs).copied().collect::<Vec<_>>() {
            if self.procs.len() >= MAX_PROCS as usize {
                over += 1;
                continue;
            }
            self.skel
                .maps
                .procs
                .update(&new.to_ne_bytes(), &[1u8], MapFlags::ANY)
                .map_err(ctx("updating the process filter"))?;
            self.procs.insert(new);
        }
        self.set_mode(mode)?;
        if over > 0 {
            return Err(CollectError::TooManyProcesses(want.len(), MAX_PROCS));
        }
        Ok(())
    }

    /// User space forgot sockets: a new announcement generation makes the kernel announce
    /// every socket again when it next moves bytes (user space ignores those it knows).
    pub fn forget(&mut self, cookies: &[u64]) -> Result<(), CollectError> {
        if cookies.is_empty() {
            return Ok(());
        }
        self.gen = self.gen.wrapping_add(1).max(1);
        self.write_cfg(self.mode.unwrap_or(l7_mode::L7_MODE_NONE.0), self.ssl)
    }

    /// Runs the `flush_batch` program on `cpu`: Ok(true) when the batch was sent (or empty),
    /// Ok(false) when a program of that CPU held it.
    fn run_flush(&self, cpu: u32) -> Result<bool, CollectError> {
        let input = libbpf_rs::ProgramInput {
            cpu,
            flags: TEST_RUN_ON_CPU,
            ..Default::default()
        };
        let out = self
            .skel
            .progs
            .flush_batch
            .test_run(input)
            .map_err(ctx("flushing a CPU's batch"))?;
        Ok(out.return_value == 0)
    }

    /// Sends every CPU's batch to the ring buffer. True when every online CPU's was sent:
    /// every data record timed before the call is then in the ring buffer. (An offline CPU
    /// runs no program, and refuses the flush: skipped.)
    pub fn flush(&self) -> bool {
        if !self.batch {
            return true;
        }
        let mut all = true;
        for cpu in 0..self.cpus {
            let mut sent = false;
            for _ in 0..FLUSH_TRIES {
                match self.run_flush(cpu) {
                    Ok(true) | Err(_) => {
                        sent = true;
                        break;
                    }
                    Ok(false) => std::thread::yield_now(),
                }
            }
            all &= sent;
        }
        all
    }

    /// The ring buffer of records.
    pub fn events(&self) -> &dyn MapCore {
        &self.skel.maps.events
    }

    /// The loss counters, the programs' recursion misses among the lost.
    pub fn loss(&self) -> LossCounters {
        let mut c = bpf::read_loss_counters(&self.skel.maps.gg_stats);
        let p = &self.skel.progs;
        let missed = bpf::recursion_misses([
            p.on_state.as_fd(),
            p.on_send.as_fd(),
            p.on_recv.as_fd(),
            p.ssl_set_fd.as_fd(),
            p.ssl_write_enter.as_fd(),
            p.ssl_read_enter.as_fd(),
            p.ssl_write_ex_enter.as_fd(),
            p.ssl_read_ex_enter.as_fd(),
            p.ssl_ret.as_fd(),
        ]);
        c.lost = c.lost.saturating_add(missed);
        c
    }
}
