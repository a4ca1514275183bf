"""The benchmarks' timers (the median over rounds, of wall or CPU time) and machine line."""

from __future__ import annotations

import os
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


def median_seconds(fn, rounds, clock=time.process_time):
    """Call ``fn`` once (warm-up: compilation, caches), then ``rounds`` times; the median seconds
    per call on ``clock`` (CPU time by default, so other load does not count; time.perf_counter
    for wall time)."""
    fn()
    secs = []
    for _ in range(rounds):
        t0 = clock()
        fn()
        secs.append(clock() - t0)
    return statistics.median(secs)


def machine():
    """CPU model, SIMD level (what the CPU flags offer and what Numba's LLVM targets), cores."""
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and model == "unknown CPU":
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "AVX" if "avx" in flags else "SSE"
    try:
        import llvmlite.binding as ll

        host = ll.get_host_cpu_name()
    except Exception:  # pragma: no cover
        host = "?"
    return f"{model}, {simd} (LLVM target {host}), {os.cpu_count()} cores"
