//! Folded stacks (Brendan Gregg's format): one line per distinct stack,
//! `frame;frame;…;frame <value>`, root first.
//!
//! * The first frame is the process, upstream's `[<pid>]<comm>`.
//! * Kernel frames end in `_[k]`, JIT frames in `_[j]`, inlined frames in `_[i]`
//!   (FlameGraph's and inferno's colour conventions; a kernel mark wins over the others).
//! * Names are sanitised ([`crate::sanitize`]): `;` → `:`, control and non-space whitespace
//!   characters → `_`, at most 512 bytes. Stacks that become equal after sanitising are merged
//!   (values added), so there is still one line per distinct stack; lines are sorted.
//! * The value: on-CPU, the number of samples (`count`); off-CPU, the blocked time in
//!   **microseconds** (upstream's `--countname=us`), rounded to the nearest µs and at least 1
//!   for every sample that measured anything, so no blocked stack disappears from the graph.
//!   Samples with `count == 0 && value == 0` are skipped.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::model::{Frame, Kind, Profile, Sample};
use crate::sanitize::{self, Target};

/// The label of `frame` in a folded stack: the sanitised name plus its `_[k]`/`_[j]`/`_[i]` mark.
pub fn frame_label(frame: &Frame) -> String {
    let name = sanitize::name(&frame.name, Target::Folded);
    let mark = if frame.kernel {
        "_[k]"
    } else if frame.jit {
        "_[j]"
    } else if frame.inlined {
        "_[i]"
    } else {
        ""
    };
    format!("{name}{mark}")
}

/// The process frame at the root of every stack: `[<pid>]<comm>`.
pub fn process_label(profile: &Profile) -> String {
    format!(
        "[{}]{}",
        profile.pid,
        sanitize::name(&profile.comm, Target::Folded)
    )
}

/// The folded value of one sample of a profile of `kind` (see the module doc), `None` when the
/// sample measured nothing.
pub fn sample_value(kind: Kind, sample: &Sample) -> Option<u64> {
    if sample.is_empty() {
        return None;
    }
    let v = match kind {
        Kind::OnCpu => sample.count,
        Kind::OffCpu => sample.value / 1000 + u64::from(sample.value % 1000 >= 500),
    };
    Some(v.max(1))
}

/// The distinct folded stacks of `profile` and their values, sorted by stack.
pub fn stacks(profile: &Profile) -> BTreeMap<String, u64> {
    let root = process_label(profile);
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for sample in &profile.samples {
        let Some(value) = sample_value(profile.kind, sample) else {
            continue;
        };
        let mut line = root.clone();
        for frame in &sample.frames {
            line.push(';');
            line.push_str(&frame_label(frame));
        }
        let slot = out.entry(line).or_insert(0);
        *slot = slot.saturating_add(value);
    }
    out
}

/// The folded text of `profile`: one `stack value\n` line per distinct stack; empty for an
/// empty profile.
pub fn render(profile: &Profile) -> String {
    let mut text = String::new();
    for (stack, value) in stacks(profile) {
        // Writing into a String cannot fail.
        let _ = writeln!(text, "{stack} {value}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn sample(frames: Vec<Frame>, count: u64, value: u64) -> Sample {
        Sample {
            frames,
            count,
            value,
        }
    }

    fn profile(kind: Kind, samples: Vec<Sample>) -> Profile {
        Profile {
            pid: 42,
            comm: "app".into(),
            kind,
            start: UNIX_EPOCH,
            end: UNIX_EPOCH,
            sample_period_ns: 10_101_010,
            samples,
        }
    }

    #[test]
    fn on_cpu_counts_samples_with_marks() {
        let p = profile(
            Kind::OnCpu,
            vec![
                sample(
                    vec![
                        Frame::user("main"),
                        Frame::jit("Lfoo;::bar"),
                        Frame::inlined("inl"),
                        Frame::kernel("do_syscall_64"),
                    ],
                    3,
                    30,
                ),
                sample(vec![Frame::user("main")], 2, 20),
                sample(vec![Frame::user("idle")], 0, 0),
            ],
        );
        assert_eq!(
            render(&p),
            "[42]app;main 2\n[42]app;main;Lfoo:::bar_[j];inl_[i];do_syscall_64_[k] 3\n"
        );
    }

    #[test]
    fn off_cpu_is_rounded_microseconds_at_least_one() {
        let p = profile(
            Kind::OffCpu,
            vec![
                sample(vec![Frame::user("a")], 1, 1_499),
                sample(vec![Frame::user("b")], 1, 1_500),
                sample(vec![Frame::user("c")], 4, 10),
                sample(vec![Frame::user("d")], 1, 0),
            ],
        );
        assert_eq!(
            render(&p),
            "[42]app;a 1\n[42]app;b 2\n[42]app;c 1\n[42]app;d 1\n"
        );
    }

    #[test]
    fn stacks_equal_after_sanitising_are_merged() {
        let p = profile(
            Kind::OnCpu,
            vec![
                sample(vec![Frame::user("a;b")], 1, 1),
                sample(vec![Frame::user("a:b")], 2, 2),
                sample(vec![Frame::user("x\ny")], 1, 1),
            ],
        );
        assert_eq!(render(&p), "[42]app;a:b 3\n[42]app;x_y 1\n");
    }
}
