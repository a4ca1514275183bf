"""First-call latency: seconds from a fresh process to the end of the first training epoch.

Runs child processes with a private Numba cache directory:
  1. cold cache: everything is compiled (what a new install pays once);
  2. warm cache, a network shape never seen before (what every later script pays);
  3. warm cache, the same shape again.
Each child measures import time and the time to the end of its first epoch.
The peer figure (diffrax/JAX compile per new problem) is in benchmarks/matexp.py's JAX
`compile_s` and, for ODEs, in the neural-ODE benchmark.

    python benchmarks/latency.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import smallchains as sc
t_import = time.perf_counter() - t0
widths = json.loads(sys.argv[1])
layers = [sc.Dense(w, sc.tanh) for w in widths] + [sc.Dense(3)]
chain = sc.SimpleChain(5, *layers)
rng = np.random.default_rng(0)
X = rng.standard_normal((2000, 5)).astype(np.float32)
Y = rng.standard_normal((2000, 3)).astype(np.float32)
p = chain.init_params()
loss = sc.add_loss(chain, sc.SquaredLoss(Y))
sc.train_unbatched(loss, X, p, sc.Adam(1e-3), epochs=1)
t_first = time.perf_counter() - t0
print(json.dumps({"import_s": t_import, "first_epoch_s": t_first}))
"""


def run(cache_dir, widths):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(widths)], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    with tempfile.TemporaryDirectory() as cache:
        cold = run(cache, [17, 9])
        warm_new = run(cache, [23, 11, 6])
        warm_same = run(cache, [23, 11, 6])
    print("first-call latency (fresh process, seconds to the end of the first epoch)")
    for name, r in (("cold cache", cold), ("warm cache, new shape", warm_new), ("warm cache, same shape", warm_same)):
        print(f"  {name:24s} {r['first_epoch_s']:6.2f} s   (import {r['import_s']:.2f} s)")
    return {"cold": cold, "warm_new": warm_new, "warm_same": warm_same}


if __name__ == "__main__":
    main()
