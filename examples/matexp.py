"""The main job: the seed article's matrix-exponential network, trained with smallchains.

Maps random 2x2 matrices A to exp(A) with a 4->32->16->4 tanh chain, full-batch
Adam(1e-3) for 10,000 epochs on 10,000 samples, then reports the losses on the
training set and on 10,000 unseen matrices.  When PyTorch and JAX are installed
(`pip install -e '.[bench]'`), the same training runs with each of them in this
process, from the same initial weights, and the speed-ups are printed.

    python examples/matexp.py [--epochs 10000] [--no-peers]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import scipy.linalg

import smallchains as sc


def matexp_data(n=10_000, seed=0):
    """(X, Y, Xtest, Ytest): random 2x2 matrices (flattened row-major) and their exponentials."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((2 * n, 2, 2))
    E = scipy.linalg.expm(A)
    X = A.reshape(2 * n, 4).astype(np.float32)
    Y = E.reshape(2 * n, 4).astype(np.float32)
    return X[:n], Y[:n], X[n:], Y[n:]


def main(epochs=10_000, peers=True):
    bench = None
    if peers:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
        import matexp as bench  # benchmarks/matexp.py: the same workload side by side

        bench.start_peer_runtimes()  # before any Numba threads start (see its docstring)
    X, Y, Xt, Yt = matexp_data()
    chain = sc.SimpleChain(4, sc.Dense(32, sc.tanh), sc.Dense(16, sc.tanh), sc.Dense(4))
    p = chain.init_params(seed=0)
    loss = sc.add_loss(chain, sc.SquaredLoss(Y))
    test = sc.add_loss(chain, sc.SquaredLoss(Yt))
    opt = sc.Adam(1e-3)
    print(f"{chain}: {chain.num_params} parameters, {len(X)} training samples")
    print(f"initial loss: train {loss(X, p):.4f}, test {test(Xt, p):.4f}")

    t0 = time.perf_counter()
    sc.train_unbatched(loss, X, p, opt, epochs=1)
    print(f"first epoch (includes loading or compiling the kernels): {time.perf_counter() - t0:.2f} s")
    t0 = time.perf_counter()
    history = sc.train_unbatched(loss, X, p, opt, epochs=epochs - 1)
    dt = time.perf_counter() - t0
    us = dt / (epochs - 1) * 1e6
    print(f"smallchains: {epochs - 1} epochs in {dt:.2f} s = {us:.0f} µs/epoch")
    print(f"final loss: train {loss(X, p):.5f}, test {test(Xt, p):.5f} (history[-1] = {history[-1]:.5f})")

    if bench is not None:
        print("\nside by side, same data and initial weights, one process:")
        bench.main(["--epochs", str(epochs)])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10_000)
    ap.add_argument("--no-peers", action="store_true", help="skip the PyTorch/JAX comparison")
    a = ap.parse_args()
    if a.epochs < 25:
        ap.error("--epochs must be at least 25 (one untimed epoch, then timed ones; the comparison warms up 20)")
    main(a.epochs, peers=not a.no_peers)
