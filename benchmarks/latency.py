"""First-run latency of each main job, in fresh processes: cold cache (what a new install or an
upgrade pays once) and warm cache (what every later script pays), and ``import smallchains``.

Two kinds of job, each run in a child process with a private, empty ``NUMBA_CACHE_DIR`` (cold), then
again on the cache it left (warm):

* first results (:data:`FIRST`): the first epoch of the seed network (4-32-16-4 tanh, 10,000 samples,
  float32, full batch), the first minibatch of a LeNet-5, the first neural-ODE gradient;
* whole warm-up features (``smallchains.warmup.JOBS``): every entry point of a feature, both dtypes
  where there are two (``pk`` is a whole population fit, whose first objective comes earlier).

The cold figure includes the import and every compile; CPU seconds are printed beside wall seconds
(other load on a shared machine shows as a gap between them).

    python benchmarks/latency.py [jobs...]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import machine  # noqa: E402

#: First results: each is the first call of a main job in a new process.
FIRST = {
    "seed_epoch": """
X = rng.standard_normal((10000, 4)).astype(np.float32)
chain = sc.SimpleChain(4, sc.Dense(32, sc.tanh), sc.Dense(16, sc.tanh), sc.Dense(4))
p = chain.init_params(seed=0)
sc.train_unbatched(sc.add_loss(chain, sc.SquaredLoss(np.tanh(X))), X, p, sc.Adam(1e-3), epochs=1)
""",
    "lenet_batch": """
X = rng.random((64, 1, 28, 28)).astype(np.float32)
chain = sc.SimpleChain((1, 28, 28), sc.Conv(6, (5, 5), sc.relu), sc.MaxPool((2, 2)), sc.Conv(16, (5, 5), sc.relu),
                       sc.MaxPool((2, 2)), sc.Flatten(), sc.Dense(120, sc.relu), sc.Dense(84, sc.relu), sc.Dense(10))
p = chain.init_params(seed=0)
loss = sc.add_loss(chain, sc.LogitCrossEntropyLoss(rng.integers(0, 10, 64)))
sc.train_batched(loss, X, p, sc.Adam(1e-3), epochs=1, batch_size=64)
""",
    "node_grad": """
chain = sc.SimpleChain(2, sc.Dense(16, sc.tanh), sc.Dense(2))
p = chain.init_params(seed=0, dtype=np.float64)
ts = np.linspace(0.0, 1.0, 5)
data = np.stack([np.cos(ts), np.sin(ts)], axis=1)
gf = sc.gradient_function(data, sc.NeuralODE(chain), [1.0, 0.0], (0.0, 1.0), p, saveat=ts)
gf(p)
""",
}

CHILD = r"""
import json, os, sys, time
t0, c0 = time.perf_counter(), time.process_time()
import smallchains
t_import = time.perf_counter() - t0
job, first = sys.argv[1], sys.argv[2]
if first:
    import numpy as np
    import smallchains as sc
    rng = np.random.default_rng(0)
    exec(first)
else:
    from smallchains import warmup
    warmup.JOBS[job]()
print(json.dumps({"import_s": t_import, "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}))
"""

IMPORT = "import time; t = time.perf_counter(); import smallchains; print(time.perf_counter() - t)"


def child(job, cache):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, job, FIRST.get(job, "")], env=env, capture_output=True, text=True
    )
    if out.returncode:
        raise RuntimeError(f"{job}: exit {out.returncode}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def import_time(n=7):
    """Median import time over n fresh processes, with Python's bytecode cache on (as users have it:
    PYTHONDONTWRITEBYTECODE, set in some sandboxes, recompiles every module on every import), after
    one priming import that writes it."""
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "PYTHONDONTWRITEBYTECODE")}
    ts = [
        float(
            subprocess.run([sys.executable, "-c", IMPORT], env=env, capture_output=True, text=True, check=True).stdout
        )
        for _ in range(n + 1)
    ]
    return statistics.median(ts[1:])


def main(jobs=None):
    from smallchains import warmup

    jobs = jobs or [*FIRST, *warmup.FEATURES]
    print(f"machine: {machine()}")
    print(f"import smallchains: {import_time():.3f} s (median of 7 fresh processes, bytecode cached)")
    print(f"{'job':12s} {'cold wall':>10s} {'cold CPU':>9s} {'warm wall':>10s} {'warm CPU':>9s}")
    rows = {}
    for job in jobs:
        with tempfile.TemporaryDirectory() as cache:
            cold = child(job, cache)
            warm = child(job, cache)
        rows[job] = (cold, warm)
        print(
            f"{job:12s} {cold['wall_s']:9.1f}s {cold['cpu_s']:8.1f}s {warm['wall_s']:9.2f}s {warm['cpu_s']:8.2f}s",
            flush=True,
        )
    return rows


if __name__ == "__main__":
    main(sys.argv[1:] or None)
