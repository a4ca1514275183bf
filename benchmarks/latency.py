"""First-run latency of each main job, in fresh processes: cold cache (what a new install or an
upgrade pays once) and warm cache (what every later script pays), and ``import smallchains``.

Each job is one of ``smallchains.warmup``'s (the seed-style dense network's first epochs, a LeNet-style
minibatch epoch, a neural-ODE gradient, a population objective and fit), run in a child process with a
private, empty ``NUMBA_CACHE_DIR`` (cold), then again on the cache it left (warm).  The cold figure
includes the import and every compile; CPU seconds are printed beside wall seconds (other load on a
shared machine shows as a gap between them).

    python benchmarks/latency.py [jobs...]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, os, sys, time
t0, c0 = time.perf_counter(), time.process_time()
import smallchains
t_import = time.perf_counter() - t0
from smallchains import warmup
warmup.JOBS[sys.argv[1]]()
print(json.dumps({"import_s": t_import, "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}))
"""

IMPORT = "import time; t = time.perf_counter(); import smallchains; print(time.perf_counter() - t)"


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


def child(job, cache):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    out = subprocess.run([sys.executable, "-c", CHILD, job], env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{job}: exit {out.returncode}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def import_time(n=7):
    """Median import time over n fresh processes, with Python's bytecode cache on (as users have it:
    PYTHONDONTWRITEBYTECODE, set in some sandboxes, recompiles every module on every import), after
    one priming import that writes it."""
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "PYTHONDONTWRITEBYTECODE")}
    ts = [float(subprocess.run([sys.executable, "-c", IMPORT], env=env, capture_output=True, text=True,
                               check=True).stdout) for _ in range(n + 1)]
    return statistics.median(ts[1:])


def main(jobs=None):
    from smallchains import warmup

    jobs = jobs or list(warmup.FEATURES)
    print(f"machine: {machine()}")
    print(f"import smallchains: {import_time():.3f} s (median of 7 fresh processes, bytecode cached)")
    print(f"{'job':10s} {'cold wall':>10s} {'cold CPU':>9s} {'warm wall':>10s} {'warm CPU':>9s}")
    rows = {}
    for job in jobs:
        with tempfile.TemporaryDirectory() as cache:
            cold = child(job, cache)
            warm = child(job, cache)
        rows[job] = (cold, warm)
        print(f"{job:10s} {cold['wall_s']:9.1f}s {cold['cpu_s']:8.1f}s {warm['wall_s']:9.2f}s {warm['cpu_s']:8.2f}s",
              flush=True)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:] or None)
