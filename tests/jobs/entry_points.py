"""Every main compiled entry point once (smallchains.warmup's jobs), printing one checksum line each;
run in fresh processes by tests/test_jit_cache.py to check partial, killed and corrupt Numba caches.

Argument: a comma-separated subset of the job names (default: training,ode,pk), run in that order.
"""

import sys

import numpy as np

from smallchains.warmup import JOBS


def dense32():
    """The lightest compile that still reaches the parallel kernels: one float32 train_unbatched."""
    import smallchains as sc

    X = np.random.default_rng(0).standard_normal((600, 4)).astype(np.float32)
    chain = sc.SimpleChain(4, sc.Dense(8, sc.tanh), sc.Dense(4))
    p = chain.init_params(seed=0)
    h = sc.train_unbatched(sc.add_loss(chain, sc.SquaredLoss(np.tanh(X))), X, p, sc.Adam(1e-3), epochs=3, num_threads=2)
    return [h[-1], p.sum()]


JOBS = dict(JOBS, dense32=dense32)

if __name__ == "__main__":
    names = sys.argv[1].split(",") if len(sys.argv) > 1 else ["training", "ode", "pk"]
    for name in names:
        vals = JOBS[name]()
        assert all(np.isfinite(v) for v in vals), (name, vals)
        print(name, " ".join(f"{float(v):.10g}" for v in vals), flush=True)
