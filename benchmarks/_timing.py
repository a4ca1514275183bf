"""The benchmarks' one timer: the median over rounds of the mean time per call."""

from __future__ import annotations

import statistics
import time


def median_per_call(fn, calls, rounds, scale=1e6):
    """Call ``fn`` once (warm-up), then ``rounds`` times ``calls`` calls; the median time per call
    in seconds times ``scale`` (1e6: µs, 1e3: ms)."""
    fn()
    per = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        per.append((time.perf_counter() - t0) / calls * scale)
    return statistics.median(per)
