"""Every main compiled entry point once (smallchains.warmup's jobs), printing one checksum line each;
run in fresh processes by tests/test_jit_cache.py to check partial, killed and corrupt Numba caches.

Argument: a comma-separated subset of the job names (default: training,ode,pk), run in that order.
"""

import sys

import numpy as np

from smallchains.warmup import JOBS

if __name__ == "__main__":
    names = sys.argv[1].split(",") if len(sys.argv) > 1 else ["training", "ode", "pk"]
    for name in names:
        vals = JOBS[name]()
        assert all(np.isfinite(v) for v in vals), (name, vals)
        print(name, " ".join(f"{float(v):.10g}" for v in vals), flush=True)
