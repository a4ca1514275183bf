"""LeNet-5 on real Fashion-MNIST: the seed article's network and settings, trained with smallchains.

Conv 5x5x6 relu, MaxPool 2, Conv 5x5x16 relu, MaxPool 2, Flatten, Dense 120 relu,
Dense 84 relu, Dense 10; cross-entropy on the logits; Adam(3e-4); shuffled minibatches
of 32 (the seed's 16 x threads on two cores).  Prints the per-epoch curve (training
loss, test loss and accuracy, seconds), then saves the fitted chain atomically.

Needs the Fashion-MNIST IDX files (`apt-get install dataset-fashion-mnist`, or
$SMALLCHAINS_DATA).  The PyTorch comparison is `benchmarks/lenet.py`.

    python examples/lenet.py [--epochs 10] [--batch-size 32] [--train-samples 60000] [--out lenet.npz]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import smallchains as sc


def lenet5():
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--train-samples", type=int, default=60_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="save the fitted chain here (npz)")
    args = ap.parse_args(argv)

    X, y, Xte, yte = sc.datasets.fashion_mnist()
    X, y = X[: args.train_samples], y[: args.train_samples]
    chain = lenet5()
    p = chain.init_params(seed=args.seed)
    loss = sc.add_loss(chain, sc.LogitCrossEntropyLoss(y))
    opt = sc.Adam(3e-4)
    rng = np.random.default_rng(args.seed)
    print(f"LeNet-5, {chain.num_params} parameters, {X.shape[0]} training images, batch {args.batch_size}")

    t0 = time.perf_counter()
    warm = sc.add_loss(chain, sc.LogitCrossEntropyLoss(y[: 4 * args.batch_size]))
    sc.train_batched(warm, X[: 4 * args.batch_size], p.copy(), sc.Adam(3e-4), 1, batch_size=args.batch_size)
    print(f"compile / load cached kernels: {time.perf_counter() - t0:.1f} s")

    seconds = []
    for e in range(args.epochs):
        t0 = time.perf_counter()
        h = sc.train_batched(loss, X, p, opt, 1, batch_size=args.batch_size, seed=rng)
        seconds.append(time.perf_counter() - t0)
        acc, test_loss = sc.accuracy_and_loss(loss, Xte, yte, p)
        print(
            f"epoch {e + 1:2d}: train loss {h[-1]:.4f}  test loss {test_loss:.4f}  "
            f"test accuracy {acc:.4f}  ({seconds[-1]:.2f} s)",
            flush=True,
        )
    print(f"median {np.median(seconds):.2f} s per epoch; final test accuracy {acc:.4f}")
    if args.out:
        sc.save(args.out, chain, p)
        print(f"saved to {args.out}")
    return acc


if __name__ == "__main__":
    main()
