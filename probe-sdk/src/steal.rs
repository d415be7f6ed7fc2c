//! The hypervisor's steal time, for comparing on-CPU sample counts with run time: a software
//! cpu-clock perf event counts the guest's clock, which runs on while the hypervisor holds a
//! vCPU, whereas the scheduler's run time (`/proc/<pid>/schedstat`) leaves stolen time out.

/// The host's CPU time so far from `/proc/stat`'s `cpu` line, in ticks: (steal, all).
pub fn cpu_ticks() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    ticks_of(&text)
}

fn ticks_of(stat: &str) -> (u64, u64) {
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    (ticks.get(7).copied().unwrap_or(0), ticks.iter().sum())
}

/// How many times more cpu-clock time than run time a busy process can show since `since`
/// ([`cpu_ticks`]): 1 / (1 − the host's steal share), the share capped at ½; 1 without steal.
pub fn inflation(since: (u64, u64)) -> f64 {
    inflation_between(since, cpu_ticks())
}

fn inflation_between(since: (u64, u64), now: (u64, u64)) -> f64 {
    let d_all = now.1.saturating_sub(since.1);
    let share = if d_all == 0 {
        0.0
    } else {
        now.0.saturating_sub(since.0) as f64 / d_all as f64
    };
    1.0 / (1.0 - share.min(0.5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_share_scales_run_time() {
        let stat = "cpu  100 0 50 800 10 0 5 35 0 0\ncpu0 1 2 3\n";
        assert_eq!(ticks_of(stat), (35, 1000));
        assert_eq!(inflation_between((0, 0), (0, 1000)), 1.0);
        assert!((inflation_between((35, 1000), (135, 2000)) - 1.0 / 0.9).abs() < 1e-9);
        assert_eq!(inflation_between((0, 0), (900, 1000)), 2.0, "capped");
        assert_eq!(inflation_between((5, 5), (5, 5)), 1.0);
        assert_eq!(ticks_of(""), (0, 0));
    }
}
