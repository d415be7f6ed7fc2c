#!/usr/bin/python3
"""Example drop-in probe in Python: times os.stat() on a few paths and reports, per path,

    |example_py|<path>|<python version>|<load avg 1m>|<stat calls>|<latency histogram>|

The histogram uses the upstream encoding `N b1 c1 ... bN cN sum max` (cumulative counts,
microseconds, since the probe started). Flags: the upstream ones (-t period, ...).

example_py.meta declares `reload = true` and the param report_period: the daemon sends changes as
control lines on stdin, and Control.sleep() applies a new period without a restart.
"""

import os
import platform
import sys
import time

sys.path.insert(0, os.environ.get("GALA_GOPHER_SDK_DIR", "/opt/gala-gopher/sdk"))
import gala_probe  # noqa: E402

PATHS = ("/", "/proc/self", "/etc/hostname", "/usr/bin/env")
CALLS_PER_PERIOD = 200
# Upper bounds in microseconds; the last one also takes anything slower, so its cumulative
# count is the total count (the daemon renders it again as le="+Inf").
BOUNDS_US = (1, 2, 5, 10, 20, 50, 100, 1000, 1000000)


class LatencyHistogram:
    """Cumulative-since-start histogram in the upstream text encoding."""

    def __init__(self, bounds):
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.total = 0.0
        self.max = 0.0
        self.calls = 0

    def observe(self, value):
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                break
        else:
            i = len(self.bounds) - 1
        self.counts[i] += 1
        self.total += value
        self.max = max(self.max, value)
        self.calls += 1

    def encode(self):
        parts = [str(len(self.bounds))]
        cumulative = 0
        for bound, count in zip(self.bounds, self.counts):
            cumulative += count
            parts += [str(bound), str(cumulative)]
        parts += [gala_probe.format_field(round(self.total, 3)),
                  gala_probe.format_field(round(self.max, 3))]
        return " ".join(parts)


def load_avg_1m():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def main():
    args = gala_probe.parse_args()
    histograms = {path: LatencyHistogram(BOUNDS_US) for path in PATHS}
    version = platform.python_version()
    gala_probe.log_info("example_py started, period %ss" % args["period"])
    control = gala_probe.Control()
    while control.sleep(args["period"]):
        for path, hist in histograms.items():
            for _ in range(CALLS_PER_PERIOD):
                start = time.perf_counter_ns()
                try:
                    os.stat(path)
                except OSError:
                    pass
                hist.observe((time.perf_counter_ns() - start) / 1000.0)
        try:
            load = load_avg_1m()
        except (OSError, ValueError, IndexError) as e:
            gala_probe.log_warn("cannot read /proc/loadavg: %s" % e)
            load = None
        for path, hist in histograms.items():
            gala_probe.record("example_py", path, version, load, hist.calls, hist.encode())
    gala_probe.log_info("example_py stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
