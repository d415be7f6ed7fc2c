//! HotSpot counters → what the tables report: one [`Sample`] per JVM.
//!
//! Counter names (HotSpot 8 to 25): `sun.gc.generation.<g>.space.<s>.{name,used,capacity,
//! maxCapacity}`, `sun.gc.generation.<g>.{capacity,maxCapacity}`, `sun.gc.{metaspace,
//! compressedclassspace}.{used,capacity,maxCapacity}`, `sun.gc.collector.<n>.{name,invocations,
//! time}` (time in `sun.os.hrt.frequency` ticks), `java.threads.{live,daemon,livePeak,started}`,
//! `java.cls.{loadedClasses,unloadedClasses,sharedLoadedClasses,sharedUnloadedClasses}`,
//! `java.property.java.vm.{name,vendor,version}`, `sun.rt.javaCommand`,
//! `sun.rt.{createVmBeginTime,vmInitDoneTime}` (ms since the epoch).

use crate::hsperf::{PerfData, Value};

/// Most generations, spaces per generation and collectors mapped (HotSpot has 2, 3 and 3).
const MAX_INDEX: usize = 16;

/// A memory pool: bytes used, committed and at most.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pool {
    /// Pool name (`eden`, `s0`, `s1`, `old`, `metaspace`, `compressed_class_space`).
    pub name: String,
    /// Bytes in use.
    pub used: Option<i64>,
    /// Bytes committed (`capacity`).
    pub committed: Option<i64>,
    /// Most bytes it can grow to (`maxCapacity`).
    pub max: Option<i64>,
}

/// A memory area (`heap` or `nonheap`): sums over its pools.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Area {
    /// `heap` or `nonheap`.
    pub name: &'static str,
    /// Bytes in use.
    pub used: Option<i64>,
    /// Bytes committed.
    pub committed: Option<i64>,
    /// Most bytes.
    pub max: Option<i64>,
}

/// A garbage collector.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Collector {
    /// `GarbageCollectorMXBean` name where known (`Copy`, `G1 Young Generation`...), else the
    /// name the JVM publishes.
    pub name: String,
    /// Collections run.
    pub count: Option<i64>,
    /// Seconds spent in them.
    pub seconds: Option<f64>,
}

/// Everything reported about one JVM.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// Main class or jar (first word of `sun.rt.javaCommand`).
    pub main: Option<String>,
    /// `java.vm.name`.
    pub vm_name: Option<String>,
    /// `java.vm.vendor`.
    pub vm_vendor: Option<String>,
    /// `java.vm.version`.
    pub vm_version: Option<String>,
    /// JVM start as `RuntimeMXBean.getStartTime` gives it (`sun.rt.vmInitDoneTime`), ms since
    /// the epoch.
    pub start_ms: Option<i64>,
    /// Beginning of the JVM's creation (`sun.rt.createVmBeginTime`), ms since the epoch.
    pub create_ms: Option<i64>,
    /// Live threads.
    pub threads_live: Option<i64>,
    /// Live daemon threads.
    pub threads_daemon: Option<i64>,
    /// Peak live threads.
    pub threads_peak: Option<i64>,
    /// Threads started since the JVM started.
    pub threads_started: Option<i64>,
    /// Classes loaded now (`ClassLoadingMXBean.getLoadedClassCount`).
    pub classes_loaded: Option<i64>,
    /// Classes loaded since the start (`getTotalLoadedClassCount`).
    pub classes_loaded_total: Option<i64>,
    /// Classes unloaded since the start.
    pub classes_unloaded_total: Option<i64>,
    /// `heap` and `nonheap`.
    pub areas: Vec<Area>,
    /// Heap pools, then metaspace and compressed class space.
    pub pools: Vec<Pool>,
    /// Collectors in the JVM's order.
    pub collectors: Vec<Collector>,
}

/// `GarbageCollectorMXBean` name of a collector published as `perf` (JDK 8 and JDK 9+ names).
pub fn mxbean_gc_name(perf: &str) -> Option<&'static str> {
    Some(match perf {
        "Copy" | "Serial young collection pauses" => "Copy",
        "MSC" | "Serial full collection pauses" => "MarkSweepCompact",
        "PSScavenge" | "Parallel young collection pauses" => "PS Scavenge",
        "PSParallelCompact" | "Parallel full collection pauses" => "PS MarkSweep",
        "G1 incremental collections" | "G1 young collection pauses" => "G1 Young Generation",
        "G1 stop-the-world full collections" | "G1 full collection pauses" => "G1 Old Generation",
        _ => return None,
    })
}

#[derive(Default)]
struct SpaceRaw {
    name: Option<String>,
    used: Option<i64>,
    capacity: Option<i64>,
    max: Option<i64>,
}

#[derive(Default)]
struct GenRaw {
    capacity: Option<i64>,
    max: Option<i64>,
    spaces: Vec<SpaceRaw>,
}

#[derive(Default)]
struct GcRaw {
    name: Option<String>,
    invocations: Option<i64>,
    ticks: Option<i64>,
}

/// `(index, rest)` of `"<index>.<rest>"`, the index below [`MAX_INDEX`].
fn indexed(s: &[u8]) -> Option<(usize, &[u8])> {
    let dot = s.iter().position(|&c| c == b'.')?;
    let (digits, rest) = (&s[..dot], &s[dot + 1..]);
    if digits.is_empty() || digits.len() > 2 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
    (n < MAX_INDEX).then_some((n, rest))
}

fn slot<T: Default>(v: &mut Vec<T>, i: usize) -> &mut T {
    if v.len() <= i {
        v.resize_with(i + 1, T::default);
    }
    &mut v[i]
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn sum(vals: impl Iterator<Item = Option<i64>>) -> Option<i64> {
    let mut any = false;
    let mut total = 0i64;
    for v in vals.flatten() {
        any = true;
        total = total.saturating_add(v);
    }
    any.then_some(total)
}

/// Maps the counters of one JVM (one pass over the entries).
pub fn map(pd: &PerfData<'_>) -> Sample {
    let mut s = Sample::default();
    let mut gens: Vec<GenRaw> = Vec::new();
    let mut gcs: Vec<GcRaw> = Vec::new();
    let mut meta = [Pool::default(), Pool::default()];
    let (mut freq, mut loaded, mut shared_loaded, mut unloaded, mut shared_unloaded) =
        (None, None, None, None, None);
    for e in &pd.entries {
        let long = match e.value {
            Value::Long(v) => Some(v),
            _ => None,
        };
        let string = match e.value {
            Value::Bytes(b) => Some(b),
            _ => None,
        };
        let name = e.name;
        if let Some(rest) = name.strip_prefix(b"sun.gc.") {
            if let Some(rest) = rest.strip_prefix(b"generation.") {
                let Some((g, rest)) = indexed(rest) else {
                    continue;
                };
                let gen = slot(&mut gens, g);
                if let Some(rest) = rest.strip_prefix(b"space.") {
                    let Some((i, field)) = indexed(rest) else {
                        continue;
                    };
                    let sp = slot(&mut gen.spaces, i);
                    match (field, long, string) {
                        (b"name", _, Some(b)) => sp.name = Some(text(b)),
                        (b"used", Some(v), _) => sp.used = Some(v),
                        (b"capacity", Some(v), _) => sp.capacity = Some(v),
                        (b"maxCapacity", Some(v), _) => sp.max = Some(v),
                        _ => {}
                    }
                } else {
                    match (rest, long) {
                        (b"capacity", Some(v)) => gen.capacity = Some(v),
                        (b"maxCapacity", Some(v)) => gen.max = Some(v),
                        _ => {}
                    }
                }
            } else if let Some(rest) = rest.strip_prefix(b"collector.") {
                let Some((n, field)) = indexed(rest) else {
                    continue;
                };
                let gc = slot(&mut gcs, n);
                match (field, long, string) {
                    (b"name", _, Some(b)) => gc.name = Some(text(b)),
                    (b"invocations", Some(v), _) => gc.invocations = Some(v),
                    (b"time", Some(v), _) => gc.ticks = Some(v),
                    _ => {}
                }
            } else {
                let (i, field) = if let Some(f) = rest.strip_prefix(b"metaspace.") {
                    (0, f)
                } else if let Some(f) = rest.strip_prefix(b"compressedclassspace.") {
                    (1, f)
                } else {
                    continue;
                };
                let p = &mut meta[i];
                match (field, long) {
                    (b"used", Some(v)) => p.used = Some(v),
                    (b"capacity", Some(v)) => p.committed = Some(v),
                    (b"maxCapacity", Some(v)) => p.max = Some(v),
                    _ => {}
                }
            }
            continue;
        }
        match (name, long, string) {
            (b"java.threads.live", Some(v), _) => s.threads_live = Some(v),
            (b"java.threads.daemon", Some(v), _) => s.threads_daemon = Some(v),
            (b"java.threads.livePeak", Some(v), _) => s.threads_peak = Some(v),
            (b"java.threads.started", Some(v), _) => s.threads_started = Some(v),
            (b"java.cls.loadedClasses", Some(v), _) => loaded = Some(v),
            (b"java.cls.sharedLoadedClasses", Some(v), _) => shared_loaded = Some(v),
            (b"java.cls.unloadedClasses", Some(v), _) => unloaded = Some(v),
            (b"java.cls.sharedUnloadedClasses", Some(v), _) => shared_unloaded = Some(v),
            (b"java.property.java.vm.name", _, Some(b)) => s.vm_name = Some(text(b)),
            (b"java.property.java.vm.vendor", _, Some(b)) => s.vm_vendor = Some(text(b)),
            (b"java.property.java.vm.version", _, Some(b)) => s.vm_version = Some(text(b)),
            (b"sun.rt.javaCommand", _, Some(b)) => {
                s.main = b
                    .split(|c| c.is_ascii_whitespace())
                    .find(|w| !w.is_empty())
                    .map(text);
            }
            (b"sun.rt.createVmBeginTime", Some(v), _) => s.create_ms = Some(v),
            (b"sun.rt.vmInitDoneTime", Some(v), _) => s.start_ms = Some(v),
            (b"sun.os.hrt.frequency", Some(v), _) => freq = Some(v),
            _ => {}
        }
    }
    // ClassLoadingService: total = loaded + shared loaded; current = total - unloaded.
    if let Some(l) = loaded {
        let total = l.saturating_add(shared_loaded.unwrap_or(0));
        let gone = unloaded
            .unwrap_or(0)
            .saturating_add(shared_unloaded.unwrap_or(0));
        s.classes_loaded_total = Some(total);
        s.classes_unloaded_total = Some(gone);
        s.classes_loaded = Some(total.saturating_sub(gone));
    }
    // Heap: the young (0) and old (1) generations. Old's spaces are one pool, `old`.
    let heap = gens.iter().take(2);
    let mut heap_used = Vec::new();
    for (g, gen) in heap.clone().enumerate() {
        if g == 0 {
            for sp in &gen.spaces {
                let Some(name) = &sp.name else { continue };
                heap_used.push(sp.used);
                s.pools.push(Pool {
                    name: name.clone(),
                    used: sp.used,
                    committed: sp.capacity,
                    max: sp.max,
                });
            }
        } else if !gen.spaces.is_empty() {
            let used = sum(gen.spaces.iter().map(|sp| sp.used));
            heap_used.push(used);
            s.pools.push(Pool {
                name: "old".to_string(),
                used,
                committed: gen
                    .capacity
                    .or_else(|| sum(gen.spaces.iter().map(|sp| sp.capacity))),
                max: gen.max.or_else(|| sum(gen.spaces.iter().map(|sp| sp.max))),
            });
        }
    }
    if !gens.is_empty() {
        s.areas.push(Area {
            name: "heap",
            used: sum(heap_used.into_iter()),
            committed: sum(heap.clone().map(|g| g.capacity)),
            max: sum(heap.map(|g| g.max)),
        });
    }
    let [metaspace, ccs] = meta;
    if metaspace.used.is_some() || metaspace.committed.is_some() {
        // Metaspace counters include the compressed class space: it alone is non-heap here
        // (the code cache is not published in the buffer).
        s.areas.push(Area {
            name: "nonheap",
            used: metaspace.used,
            committed: metaspace.committed,
            max: metaspace.max,
        });
        s.pools.push(Pool {
            name: "metaspace".to_string(),
            ..metaspace
        });
    }
    if ccs.used.is_some() || ccs.committed.is_some() {
        s.pools.push(Pool {
            name: "compressed_class_space".to_string(),
            ..ccs
        });
    }
    let hz = freq.filter(|f| *f > 0);
    for gc in gcs {
        let Some(name) = gc.name else { continue };
        s.collectors.push(Collector {
            name: mxbean_gc_name(&name).map_or(name, str::to_string),
            count: gc.invocations,
            seconds: match (gc.ticks, hz) {
                (Some(t), Some(hz)) => Some(t as f64 / hz as f64),
                _ => None,
            },
        });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hsperf::{parse, Builder};

    fn serial_jvm() -> Vec<u8> {
        Builder::new()
            .long("sun.os.hrt.frequency", 1_000_000_000)
            .string("sun.rt.javaCommand", "com.example.Main --port 1")
            .long("sun.rt.createVmBeginTime", 1_700_000_000_100)
            .long("sun.rt.vmInitDoneTime", 1_700_000_000_123)
            .string("java.property.java.vm.name", "OpenJDK 64-Bit Server VM")
            .string("java.property.java.vm.vendor", "Debian")
            .string("java.property.java.vm.version", "17.0.15+6")
            .long("java.threads.live", 9)
            .long("java.threads.daemon", 7)
            .long("java.threads.livePeak", 10)
            .long("java.threads.started", 12)
            .long("java.cls.loadedClasses", 100)
            .long("java.cls.sharedLoadedClasses", 400)
            .long("java.cls.unloadedClasses", 3)
            .long("java.cls.sharedUnloadedClasses", 1)
            .string("sun.gc.collector.0.name", "Serial young collection pauses")
            .long("sun.gc.collector.0.invocations", 25)
            .long("sun.gc.collector.0.time", 1_500_000_000)
            .string("sun.gc.collector.1.name", "Serial full collection pauses")
            .long("sun.gc.collector.1.invocations", 0)
            .long("sun.gc.collector.1.time", 0)
            .string("sun.gc.collector.2.name", "G1 concurrent cycle pauses")
            .long("sun.gc.generation.0.capacity", 8000)
            .long("sun.gc.generation.0.maxCapacity", 8000)
            .string("sun.gc.generation.0.space.0.name", "eden")
            .long("sun.gc.generation.0.space.0.used", 100)
            .long("sun.gc.generation.0.space.0.capacity", 6000)
            .long("sun.gc.generation.0.space.0.maxCapacity", 6000)
            .string("sun.gc.generation.0.space.1.name", "s0")
            .long("sun.gc.generation.0.space.1.used", 10)
            .long("sun.gc.generation.0.space.1.capacity", 1000)
            .long("sun.gc.generation.0.space.1.maxCapacity", 1000)
            .string("sun.gc.generation.0.space.2.name", "s1")
            .long("sun.gc.generation.0.space.2.used", 0)
            .long("sun.gc.generation.0.space.2.capacity", 1000)
            .long("sun.gc.generation.0.space.2.maxCapacity", 1000)
            .long("sun.gc.generation.1.capacity", 50_000)
            .long("sun.gc.generation.1.maxCapacity", 90_000)
            .string("sun.gc.generation.1.space.0.name", "old")
            .long("sun.gc.generation.1.space.0.used", 2000)
            .long("sun.gc.generation.1.space.0.capacity", 50_000)
            .long("sun.gc.generation.1.space.0.maxCapacity", 90_000)
            .long("sun.gc.metaspace.used", 700)
            .long("sun.gc.metaspace.capacity", 800)
            .long("sun.gc.metaspace.maxCapacity", 1 << 30)
            .long("sun.gc.compressedclassspace.used", 70)
            .long("sun.gc.compressedclassspace.capacity", 80)
            .long("sun.gc.compressedclassspace.maxCapacity", 1 << 30)
            .build(8192)
    }

    #[test]
    fn maps_every_counter() {
        let buf = serial_jvm();
        let s = map(&parse(&buf).unwrap());
        assert_eq!(s.main.as_deref(), Some("com.example.Main"));
        assert_eq!(s.vm_vendor.as_deref(), Some("Debian"));
        assert_eq!(s.start_ms, Some(1_700_000_000_123));
        assert_eq!(s.create_ms, Some(1_700_000_000_100));
        assert_eq!(
            (
                s.threads_live,
                s.threads_daemon,
                s.threads_peak,
                s.threads_started
            ),
            (Some(9), Some(7), Some(10), Some(12))
        );
        assert_eq!(s.classes_loaded_total, Some(500));
        assert_eq!(s.classes_loaded, Some(496));
        assert_eq!(s.classes_unloaded_total, Some(4));
        let names: Vec<&str> = s.pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "eden",
                "s0",
                "s1",
                "old",
                "metaspace",
                "compressed_class_space"
            ]
        );
        assert_eq!(
            s.pools[3],
            Pool {
                name: "old".into(),
                used: Some(2000),
                committed: Some(50_000),
                max: Some(90_000)
            }
        );
        assert_eq!(
            s.areas,
            [
                Area {
                    name: "heap",
                    used: Some(2110),
                    committed: Some(58_000),
                    max: Some(98_000)
                },
                Area {
                    name: "nonheap",
                    used: Some(700),
                    committed: Some(800),
                    max: Some(1 << 30)
                }
            ]
        );
        assert_eq!(
            s.collectors,
            [
                Collector {
                    name: "Copy".into(),
                    count: Some(25),
                    seconds: Some(1.5)
                },
                Collector {
                    name: "MarkSweepCompact".into(),
                    count: Some(0),
                    seconds: Some(0.0)
                },
                Collector {
                    name: "G1 concurrent cycle pauses".into(),
                    count: None,
                    seconds: None
                },
            ]
        );
    }

    #[test]
    fn odd_names_are_ignored() {
        let buf = Builder::new()
            .long("sun.gc.collector.99.invocations", 1)
            .long("sun.gc.collector..time", 1)
            .long("sun.gc.generation.x.capacity", 1)
            .string("sun.gc.generation.0.space.123.name", "eden")
            .long("java.threads.live", 1)
            .build(0);
        let s = map(&parse(&buf).unwrap());
        assert!(s.collectors.is_empty());
        assert!(s.pools.is_empty());
        assert_eq!(s.threads_live, Some(1));
    }
}
