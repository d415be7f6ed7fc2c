//! Turning one process's BPF values into the upstream `proc_*` record lines: running totals
//! (the daemon exports upstream's per-period change of the `per_period` fields) and the maxima
//! of the report period being closed.

use std::io::{self, Write};

use probe_sdk::record::RecordWriter;

use crate::syscalls::{FsKind, FsOp, SlowCol, FS_SLOTS, SLOW_SLOTS};
use crate::tables::{
    CPU, DNS, FS_TABLES, IO, IOCTL, LIFECYCLE, PAGE, PYGC, SLOW_TABLES, SYSCALL, THREAD,
};

/// Which `proc_*` tables are printed (from the `-P` bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tables {
    /// `proc_syscall`
    pub syscall: bool,
    /// `proc_syscall_io`
    pub io: bool,
    /// `proc_syscall_net`
    pub net: bool,
    /// `proc_syscall_sched`
    pub sched: bool,
    /// `proc_syscall_fork`
    pub fork: bool,
    /// `proc_ext4`, `proc_overlay`, `proc_tmpfs` (index: [`FsKind`])
    pub fs: [bool; 3],
    /// `proc_lifecycle`
    pub lifecycle: bool,
    /// `proc_io`
    pub bio: bool,
    /// `proc_cpu`
    pub cpu: bool,
    /// `proc_page`
    pub page: bool,
    /// `proc_pygc`
    pub pygc: bool,
    /// `proc_syscall_ioctl`
    pub ioctl: bool,
    /// `proc_dns` (written by [`crate::dns`], after every process's other tables)
    pub dns: bool,
    /// `thread_cpu` (written by [`crate::threads`], after `proc_dns`)
    pub threads: bool,
}

impl Tables {
    /// Names of the tables printed, in output order.
    pub fn names(&self) -> Vec<&'static str> {
        let slow = [self.io, self.net, self.sched, self.fork];
        let mut out = Vec::new();
        if self.syscall {
            out.push(SYSCALL);
        }
        for (on, t) in slow.into_iter().zip(&SLOW_TABLES) {
            if on {
                out.push(t.name);
            }
        }
        if self.ioctl {
            out.push(IOCTL);
        }
        for (on, t) in self.fs.into_iter().zip(&FS_TABLES) {
            if on {
                out.push(t.name);
            }
        }
        for (on, name) in [
            (self.lifecycle, LIFECYCLE),
            (self.bio, IO),
            (self.cpu, CPU),
            (self.page, PAGE),
            (self.pygc, PYGC),
            (self.dns, DNS),
            (self.threads, THREAD),
        ] {
            if on {
                out.push(name);
            }
        }
        out
    }
}

/// A maximum the BPF side keeps per report period (`struct period_max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeriodMax {
    /// The maximum, ns.
    pub ns: u64,
    /// Report period it was taken in (`period_gen` at the time).
    pub period: u32,
}

impl PeriodMax {
    /// The maximum of report period `period`: 0 if none was taken in it (an older value is a
    /// previous period's).
    pub fn of_period(self, period: u32) -> u64 {
        if self.period == period {
            self.ns
        } else {
            0
        }
    }
}

/// Values of one process, decoded from the BPF `struct proc_stats`: running totals since the
/// process began to be tracked, and per-period maxima.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcCounters {
    /// Process name (`comm`) at the time of the last exec/track/exit.
    pub comm: String,
    /// Syscalls that returned.
    pub syscalls: u64,
    /// Syscalls that returned an error (-4095..=-1).
    pub syscall_failed: u64,
    /// Longest call of each slow-syscall column ([`SlowCol`] as index; 0 unused).
    pub slow_max: [PeriodMax; SLOW_SLOTS],
    /// Child processes created.
    pub forks: u64,
    /// Threads created.
    pub threads: u64,
    /// Successful execs.
    pub execs: u64,
    /// Threads that exited (including the last one).
    pub thread_exits: u64,
    /// Time threads spent switched out (runnable or blocked), ns.
    pub offcpu_ns: u64,
    /// Part of `offcpu_ns` spent blocked in IO wait, ns.
    pub iowait_ns: u64,
    /// Block requests <= 4 KiB, [read, write].
    pub bio_small: [u64; 2],
    /// Block requests > 4 KiB, [read, write].
    pub bio_big: [u64; 2],
    /// Longest request completed without error (issue to completion).
    pub bio_latency: PeriodMax,
    /// Requests completed with an error.
    pub bio_err: u64,
    /// Hung-task reports.
    pub hangs: u64,
    /// Page cache and reclaim (`proc_page`).
    pub page: PageCounters,
    /// Longest operation of the period per file system and operation ([`FsKind::slot`]).
    pub fs_max: [PeriodMax; FS_SLOTS],
    /// Operations timed per file system and operation, running totals.
    pub fs_ops: [u64; FS_SLOTS],
    /// The ioctl behind `slow_max[Ioctl]`: its fd and request (both 0 before any).
    pub ioctl_fd: i64,
    /// See `ioctl_fd`.
    pub ioctl_cmd: u64,
    /// Python collections (`proc_pygc`), running total.
    pub pygc_count: u64,
    /// Their time, ns, running total.
    pub pygc_ns: u64,
    /// The period's longest collection.
    pub pygc_max: PeriodMax,
    /// The whole process has exited (this is its final report).
    pub exited: bool,
}

/// Page-cache activity and reclaim time of one process, running totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageCounters {
    /// Time its threads spent in direct or memcg reclaim, ns.
    pub reclaim_ns: u64,
    /// Pages looked up in the page cache.
    pub access: u64,
    /// Buffers marked dirty.
    pub buffer_dirty: u64,
    /// Pages added to the page cache.
    pub load: u64,
    /// Pages dirtied.
    pub page_dirty: u64,
}

impl ProcCounters {
    fn slow(&self, col: SlowCol, period: u32) -> u64 {
        self.slow_max[col as usize].of_period(period)
    }
}

/// Writes the enabled tables for process `tgid`: running totals as they are, maxima of report
/// period `period` (the one being closed).
pub fn write_process<W: Write>(
    out: &mut RecordWriter<W>,
    tgid: u32,
    c: &ProcCounters,
    tables: &Tables,
    period: u32,
) -> io::Result<()> {
    let comm = c.comm.as_str();
    if tables.syscall {
        out.record(SYSCALL)
            .field(&tgid)
            .field(comm)
            .field(&c.syscall_failed)
            .field(&c.syscalls)
            .end()?;
    }
    let slow_enabled = [tables.io, tables.net, tables.sched, tables.fork];
    for (enabled, table) in slow_enabled.into_iter().zip(&SLOW_TABLES) {
        if enabled {
            let mut rec = out.record(table.name).field(&tgid).field(comm);
            for (col, _) in table.columns {
                rec = rec.field(&c.slow(*col, period));
            }
            rec.end()?;
        }
    }
    if tables.ioctl {
        let (fd, dir, kind, nr, size) = ioctl_labels(c.ioctl_fd, c.ioctl_cmd);
        out.record(IOCTL)
            .field(&tgid)
            .field(comm)
            .field(fd.as_str())
            .field(dir.as_str())
            .field(kind.as_str())
            .field(nr.as_str())
            .field(&size)
            .field(&c.slow(SlowCol::Ioctl, period))
            .end()?;
    }
    for ((enabled, table), kind) in tables.fs.into_iter().zip(&FS_TABLES).zip(FsKind::ALL) {
        if enabled {
            let mut rec = out.record(table.name).field(&tgid).field(comm);
            for op in FsOp::ALL {
                rec = rec.field(&c.fs_max[kind.slot(op)].of_period(period));
            }
            for op in FsOp::ALL {
                rec = rec.field(&c.fs_ops[kind.slot(op)]);
            }
            rec.end()?;
        }
    }
    if tables.lifecycle {
        out.record(LIFECYCLE)
            .field(&tgid)
            .field(comm)
            .field(&c.forks)
            .field(&c.threads)
            .field(&c.execs)
            .field(&c.thread_exits)
            .field(&c.exited)
            .end()?;
    }
    if tables.bio {
        out.record(IO)
            .field(&tgid)
            .field(comm)
            .field(&c.bio_small[0])
            .field(&c.bio_small[1])
            .field(&c.bio_big[0])
            .field(&c.bio_big[1])
            .field(&c.bio_latency.of_period(period))
            .field(&c.bio_err)
            .field(&c.hangs)
            .end()?;
    }
    if tables.cpu {
        out.record(CPU)
            .field(&tgid)
            .field(comm)
            .field(&c.iowait_ns)
            .field(&c.offcpu_ns)
            .end()?;
    }
    if tables.page {
        let p = &c.page;
        out.record(PAGE)
            .field(&tgid)
            .field(comm)
            .field(&p.reclaim_ns)
            .field(&p.access)
            .field(&p.buffer_dirty)
            .field(&p.load)
            .field(&p.page_dirty)
            .end()?;
    }
    if tables.pygc {
        let ms = |ns: u64| format!("{}.{:06}", ns / 1_000_000, ns % 1_000_000);
        out.record(PYGC)
            .field(&tgid)
            .field(comm)
            .field(&c.pygc_count)
            .field(&ms(c.pygc_ns))
            .field(&ms(c.pygc_max.of_period(period)))
            .end()?;
    }
    Ok(())
}

/// An ioctl's labels (fd, direction, type, number) and argument size, decoded from the request
/// by the generic `_IOC` layout (x86, arm64: nr bits 0–7, type 8–15, size 16–29, direction
/// 30–31, 1 = write, 2 = read); empty labels and size 0 before any ioctl was recorded.
pub fn ioctl_labels(fd: i64, cmd: u64) -> (String, String, String, String, u64) {
    if fd == 0 && cmd == 0 {
        return (
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            0,
        );
    }
    (
        fd.to_string(),
        ((cmd >> 30) & 0x3).to_string(),
        ((cmd >> 8) & 0xff).to_string(),
        (cmd & 0xff).to_string(),
        (cmd >> 16) & 0x3fff,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The report period the sample's maxima were taken in.
    const PERIOD: u32 = 7;

    fn render(tgid: u32, c: &ProcCounters, tables: &Tables) -> String {
        render_period(tgid, c, tables, PERIOD)
    }

    fn render_period(tgid: u32, c: &ProcCounters, tables: &Tables, period: u32) -> String {
        let mut w = RecordWriter::new(Vec::new());
        write_process(&mut w, tgid, c, tables, period).unwrap();
        w.flush().unwrap();
        String::from_utf8(w.into_inner()).unwrap()
    }

    fn sample() -> ProcCounters {
        let mut slow_max = [PeriodMax::default(); SLOW_SLOTS];
        for (i, v) in slow_max.iter_mut().enumerate() {
            *v = PeriodMax {
                ns: 100 + i as u64,
                period: PERIOD,
            };
        }
        ProcCounters {
            comm: "nginx".into(),
            syscalls: 1000,
            syscall_failed: 7,
            slow_max,
            forks: 2,
            threads: 3,
            execs: 1,
            thread_exits: 4,
            offcpu_ns: 5_000,
            iowait_ns: 1_000,
            bio_small: [1, 2],
            bio_big: [3, 4],
            bio_latency: PeriodMax {
                ns: 12_345_678,
                period: PERIOD,
            },
            bio_err: 1,
            hangs: 2,
            page: PageCounters {
                reclaim_ns: 9_000,
                access: 40,
                buffer_dirty: 3,
                load: 20,
                page_dirty: 10,
            },
            fs_max: std::array::from_fn(|i| PeriodMax {
                ns: 200 + i as u64,
                period: PERIOD,
            }),
            fs_ops: std::array::from_fn(|i| 300 + i as u64),
            ioctl_fd: 5,
            // FS_IOC_GETFLAGS = _IOR('f', 1, long)
            ioctl_cmd: 0x8008_6601,
            pygc_count: 4,
            pygc_ns: 12_345_678,
            pygc_max: PeriodMax {
                ns: 5_000_001,
                period: PERIOD,
            },
            exited: true,
        }
    }

    const ALL_TABLES: Tables = Tables {
        syscall: true,
        io: true,
        net: true,
        sched: true,
        fork: true,
        fs: [true; 3],
        lifecycle: true,
        bio: true,
        cpu: true,
        page: true,
        pygc: true,
        ioctl: true,
        dns: false,
        threads: false,
    };

    #[test]
    fn every_table_in_meta_order() {
        let all = ALL_TABLES;
        let expected = "\
|proc_syscall|42|nginx|7|1000|
|proc_syscall_io|42|nginx|101|102|103|104|105|
|proc_syscall_net|42|nginx|106|107|
|proc_syscall_sched|42|nginx|108|109|110|111|
|proc_syscall_fork|42|nginx|112|113|114|
|proc_syscall_ioctl|42|nginx|5|2|102|1|8|115|
|proc_ext4|42|nginx|200|201|202|203|300|301|302|303|
|proc_overlay|42|nginx|204|205|206|207|304|305|306|307|
|proc_tmpfs|42|nginx|208|209|210|211|308|309|310|311|
|proc_lifecycle|42|nginx|2|3|1|4|1|
|proc_io|42|nginx|1|2|3|4|12345678|1|2|
|proc_cpu|42|nginx|1000|5000|
|proc_page|42|nginx|9000|40|3|20|10|
|proc_pygc|42|nginx|4|12.345678|5.000001|
";
        assert_eq!(render(42, &sample(), &all), expected);
    }

    /// The maxima belong to the period they were taken in: the next report of an idle process
    /// shows 0 for them, and the running totals unchanged.
    #[test]
    fn maxima_of_an_earlier_period_read_as_zero() {
        let mut c = sample();
        c.slow_max[SlowCol::Read as usize].period = PERIOD - 1;
        let io = Tables {
            io: true,
            bio: true,
            ..Tables::default()
        };
        assert_eq!(
            render(42, &c, &io),
            "|proc_syscall_io|42|nginx|101|102|0|104|105|\n|proc_io|42|nginx|1|2|3|4|12345678|1|2|\n"
        );
        assert_eq!(
            render_period(42, &c, &io, PERIOD + 1),
            "|proc_syscall_io|42|nginx|0|0|0|0|0|\n|proc_io|42|nginx|1|2|3|4|0|1|2|\n"
        );
        assert_eq!(PeriodMax { ns: 5, period: 3 }.of_period(3), 5);
        assert_eq!(PeriodMax { ns: 5, period: 3 }.of_period(4), 0);
    }

    /// Table name → field names, from the declarations `taskprobe.meta` is generated from.
    fn meta_tables() -> Vec<(String, Vec<String>)> {
        crate::tables::meta_tables()
            .into_iter()
            .map(|t| {
                let names = t.fields.iter().map(|f| f.name.to_string()).collect();
                (t.name.to_string(), names)
            })
            .collect()
    }

    #[test]
    fn records_match_the_meta_field_for_field() {
        let all = ALL_TABLES;
        let mut w = RecordWriter::new(Vec::new());
        write_process(&mut w, 42, &sample(), &all, PERIOD).unwrap();
        // proc_dns rows come after every process's other tables (crate::dns).
        let dns_row = crate::dns::DnsRow {
            tgid: 42,
            domain: "example.org".into(),
            count: 1,
            errors: 0,
            sum_ns: 10,
            max: PeriodMax::default(),
        };
        crate::dns::DnsReport::default()
            .write(&mut w, &[dns_row], |_| Some("nginx".into()), PERIOD)
            .unwrap();
        // thread_cpu rows come after proc_dns (crate::threads).
        w.record(crate::tables::THREAD)
            .field(&43u32)
            .field(&42u32)
            .field("nginx")
            .field(&1u64)
            .field(&2u64)
            .end()
            .unwrap();
        probe_sdk::bpf::write_loss_record(
            &mut w,
            crate::tables::STATS_TABLE,
            crate::tables::STATS_PROBE,
            &probe_sdk::bpf::LossCounters::default(),
        )
        .unwrap();
        w.flush().unwrap();
        let out = String::from_utf8(w.into_inner()).unwrap();
        let meta = meta_tables();
        assert_eq!(out.lines().count(), meta.len(), "one line per meta table");
        for (line, (table, fields)) in out.lines().zip(&meta) {
            let (name, values) = probe_sdk::record::split_line(line.as_bytes()).unwrap();
            assert_eq!(String::from_utf8(name).unwrap(), *table, "meta order");
            assert_eq!(values.len(), fields.len(), "{table}: {fields:?} vs {line}");
            match table.as_str() {
                "proc_bpf_stats" => {}
                "proc_dns" => assert_eq!(fields[..3], ["tgid", "domain", "comm"]),
                "thread_cpu" => assert_eq!(fields[..3], ["pid", "tgid", "comm"]),
                _ => assert_eq!(fields[..2], ["tgid".to_string(), "comm".to_string()]),
            }
        }
    }

    #[test]
    fn disabled_tables_are_not_printed() {
        let only = Tables {
            syscall: true,
            lifecycle: true,
            ..Tables::default()
        };
        let out = render(7, &sample(), &only);
        assert_eq!(out.lines().count(), 2);
        assert!(out.starts_with("|proc_syscall|7|nginx|"));
    }

    #[test]
    fn table_names_follow_the_output_order() {
        let t = Tables {
            cpu: true,
            sched: true,
            lifecycle: true,
            ..Tables::default()
        };
        assert_eq!(
            t.names(),
            ["proc_syscall_sched", "proc_lifecycle", "proc_cpu"]
        );
        assert_eq!(ALL_TABLES.names().len(), 14);
        assert_eq!(ioctl_labels(0, 0).4, 0);
        assert_eq!(ioctl_labels(0, 0).0, "");
        // FIONREAD = 0x541B: no direction bits, type 'T', nr 27, no size.
        let (fd, dir, kind, nr, size) = ioctl_labels(3, 0x541b);
        assert_eq!([fd, dir, kind, nr], ["3", "0", "84", "27"]);
        assert_eq!(size, 0);
    }

    #[test]
    fn comm_with_separator_is_escaped() {
        let c = ProcCounters {
            comm: "a|b".into(),
            ..ProcCounters::default()
        };
        let only = Tables {
            cpu: true,
            ..Tables::default()
        };
        assert_eq!(render(1, &c, &only), "|proc_cpu|1|a\\|b|0|0|\n");
    }
}
