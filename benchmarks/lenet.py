"""LeNet-5 on Fashion-MNIST: seconds per epoch, smallchains and PyTorch side by side in one run.

The seed's architecture: Conv 5x5x6 relu, MaxPool 2, Conv 5x5x16 relu, MaxPool 2, Flatten,
Dense 120 relu, Dense 84 relu, Dense 10; cross-entropy; Adam(3e-4); shuffled minibatches.
Batch 32 (the seed's 16 x threads) and 256.  PyTorch: ``nn.Sequential`` with the same layers,
``torch.optim.Adam``, a ``DataLoader``-free loop over a shuffled index (what the seed does,
minus the DataLoader's overhead, which would only slow PyTorch down), 2 threads.

    python benchmarks/lenet.py [--epochs-timed 1] [--samples 60000] [--no-peers] [--accuracy-epochs 10 (0: skip)]

``--accuracy-epochs N`` (default 10) also trains smallchains N epochs at batch 32 and prints the test-accuracy curve.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

import smallchains as sc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import machine  # noqa: E402


def lenet():
    return sc.SimpleChain(
        (1, 28, 28),
        sc.Conv(6, 5, sc.relu),
        sc.MaxPool(2),
        sc.Conv(16, 5, sc.relu),
        sc.MaxPool(2),
        sc.Flatten(),
        sc.Dense(120, sc.relu),
        sc.Dense(84, sc.relu),
        sc.Dense(10),
    )


def smallchains_epoch_seconds(X, y, batch, epochs=1, seed=0):
    chain = lenet()
    p = chain.init_params(seed=seed)
    opt = sc.Adam(3e-4)
    warm = sc.add_loss(chain, sc.LogitCrossEntropyLoss(y[: batch * 4]))
    sc.train_batched(warm, X[: batch * 4], p, opt, epochs=1, batch_size=batch, seed=seed)  # compile / load cache
    loss = sc.add_loss(chain, sc.LogitCrossEntropyLoss(y))
    times = []
    for e in range(epochs):
        t0 = time.perf_counter()
        h = sc.train_batched(loss, X, p, opt, epochs=1, batch_size=batch, seed=seed + e)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), float(h[-1])


def torch_epoch_seconds(X, y, batch, epochs=1, seed=0, threads=2):
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(256, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, 10),
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    lossf = nn.CrossEntropyLoss()
    Xt = torch.from_numpy(X)
    yt = torch.from_numpy(y.astype(np.int64))
    g = torch.Generator().manual_seed(seed)

    def epoch(n):
        perm = torch.randperm(n, generator=g)
        total = 0.0
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            xb, yb = Xt[idx], yt[idx]
            opt.zero_grad(set_to_none=True)
            out = lossf(model(xb), yb)
            out.backward()
            opt.step()
            total += out.item() * len(idx)
        return total / n

    epoch(batch * 4)  # warm-up
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        last = epoch(X.shape[0])
        times.append(time.perf_counter() - t0)
    return statistics.median(times), last


def accuracy_curve(Xtr, ytr, Xte, yte, epochs, batch=32, seed=0):
    chain = lenet()
    p = chain.init_params(seed=seed)
    loss = sc.add_loss(chain, sc.LogitCrossEntropyLoss(ytr))
    opt = sc.Adam(3e-4)
    rng = np.random.default_rng(seed)
    curve = []
    for e in range(epochs):
        t0 = time.perf_counter()
        h = sc.train_batched(loss, Xtr, p, opt, epochs=1, batch_size=batch, seed=rng)
        dt = time.perf_counter() - t0
        acc, tl = sc.accuracy_and_loss(loss, Xte, yte, p)
        curve.append(acc)
        print(
            f"  epoch {e + 1:2d}: train loss {h[-1]:.4f}  test loss {tl:.4f}  test accuracy {acc:.4f}  ({dt:.2f} s)",
            flush=True,
        )
    return curve


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs-timed", type=int, default=1)
    ap.add_argument("--samples", type=int, default=60000)
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--accuracy-epochs", type=int, default=10)
    args = ap.parse_args(argv)
    Xtr, ytr, Xte, yte = sc.datasets.fashion_mnist()
    X, y = Xtr[: args.samples], ytr[: args.samples]
    print(
        f"LeNet-5 / Fashion-MNIST — {time.strftime('%Y-%m-%d')}, {machine()}, {X.shape[0]} "
        f"training images, median of {args.epochs_timed} timed epoch(s)"
    )
    for batch in (32, 256):
        s, ls = smallchains_epoch_seconds(X, y, batch, args.epochs_timed)
        line = f"batch {batch:3d}: smallchains {s:7.2f} s/epoch (loss {ls:.4f})"
        if not args.no_peers:
            try:
                t, lt = torch_epoch_seconds(X, y, batch, args.epochs_timed)
                line += f"   pytorch {t:7.2f} s/epoch (loss {lt:.4f})   ratio {t / s:.1f}x"
            except ImportError as exc:
                line += f"   pytorch skipped ({exc})"
        print(line, flush=True)
    if args.accuracy_epochs:
        print(f"accuracy, batch 32, Adam(3e-4), {args.accuracy_epochs} epochs:")
        accuracy_curve(X, y, Xte, yte, args.accuracy_epochs)


if __name__ == "__main__":
    main()
