"""Compile smallchains' kernels ahead of time: ``smallchains warmup [features]``.

Numba compiles each kernel on its first call and keeps the machine code on disk (see
docs/troubleshooting.md), so the first run of each feature after an install or an upgrade
pays a one-off compile.  ``warmup`` pays it now, feature by feature, with a progress bar,
by running each feature's public entry points once on tiny data:

* ``training``: dense chains, float32 and float64: full-batch and minibatch training,
  ``valgrad``, prediction, ``vjp_into``;
* ``cnn``: convolution and pooling layers (a small LeNet-style chain, one minibatch epoch);
* ``ode``: ``sc.solve``, neural ODEs and UDEs with their discrete-adjoint gradients;
* ``pk``: population objectives and fits (needs the ``data`` extra: pandas).

Every job returns a few numbers (checksums) so that tests can compare runs.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from . import _log
from ._jit import feature

_log_compile = _log.get("compile")


def _training():
    import smallchains as sc

    out = []
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        X = rng.standard_normal((600, 4)).astype(dtype)
        Y = np.tanh(X)
        chain = sc.SimpleChain(4, sc.Dense(8, sc.tanh), sc.Dense(4))
        p = chain.init_params(seed=0, dtype=dtype)
        loss = sc.add_loss(chain, sc.SquaredLoss(Y))
        h = sc.train_unbatched(loss, X, p, sc.Adam(1e-3), epochs=3, num_threads=2)
        h2 = sc.train_batched(loss, X, p, sc.Adam(1e-3), epochs=1, batch_size=64, num_threads=2)
        g = np.empty_like(p)
        v = sc.valgrad(g, loss, X, p)
        o = np.empty_like(p)
        chain.vjp_into(o, p, np.ones(4, dtype), X[0])
        out += [h[-1], h2[-1], v, g.sum(), o.sum(), chain(X[:3], p).sum()]
    return out


def _cnn():
    import smallchains as sc

    rng = np.random.default_rng(0)
    X = rng.random((64, 1, 12, 12)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    chain = sc.SimpleChain((1, 12, 12), sc.Conv(4, (3, 3), sc.relu), sc.MaxPool((2, 2)), sc.Flatten(), sc.Dense(3))
    p = chain.init_params(seed=0)
    loss = sc.add_loss(chain, sc.LogitCrossEntropyLoss(y))
    h = sc.train_batched(loss, X, p, sc.Adam(1e-3), epochs=1, batch_size=16, num_threads=2)
    acc, lv = sc.accuracy_and_loss(loss, X, p)
    return [h[-1], acc, lv]


def _ode():
    import numba

    import smallchains as sc

    chain = sc.SimpleChain(2, sc.Dense(8, sc.tanh), sc.Dense(2))
    node = sc.NeuralODE(chain)
    p = chain.init_params(seed=0, dtype=np.float64)
    ts = np.linspace(0.0, 1.0, 5)
    data = np.stack([np.cos(ts), np.sin(ts)], axis=1)
    gf = sc.gradient_function(data, node, [1.0, 0.0], (0.0, 1.0), p, saveat=ts, rtol=1e-6, atol=1e-6)
    value, gp, gu0 = gf(p)

    @numba.njit
    def decay(du, u, q, t):
        du[0] = -q[0] * u[0]

    sol = sc.solve(decay, [1.0], (0.0, 1.0), [0.5], saveat=ts)
    v2, g2, _ = sc.value_and_grad(np.exp(-0.4 * ts)[:, None], decay, [1.0], (0.0, 1.0), np.array([0.5]), saveat=ts)
    return [value, gp.sum(), gu0.sum(), sol.u[-1, 0], v2, g2[0]]


def _pk():
    import smallchains as sc
    from smallchains._optional import require

    pd = require("pandas", "the pk warm-up")
    rows = []
    for i in range(1, 4):
        rows.append(dict(ID=i, TIME=0.0, AMT=4.0, DV=0.0, EVID=1, MDV=1, CMT=1, WT=60.0 + 5 * i))
        for t, c in ((0.5, 4.0), (1.0, 6.0), (2.0, 6.5), (4.0, 5.5), (8.0, 4.0), (24.0, 1.0)):
            rows.append(dict(ID=i, TIME=t, AMT=0.0, DV=c * (1 + 0.05 * i), EVID=0, MDV=0, CMT=2, WT=60.0 + 5 * i))
    data = sc.pk.read_data(pd.DataFrame(rows))
    m = sc.pk.PopulationModel("one_cpt_oral", dict(ka=1.5, CL=0.04, V=0.5), eta=["ka", "CL"], error="additive")
    fit = sc.pk.fit(m, data, "pooled", se=False)
    return [fit.ofv]


#: Cold seconds of each whole warm-up job on a 2-core AMD EPYC (benchmarks/latency.py, 2026-12-03):
#: "training" compiles every dense entry point for float32 and float64.
SECONDS = {"training": 50, "cnn": 30, "ode": 22, "pk": 17}

JOBS = {"training": _training, "cnn": _cnn, "ode": _ode, "pk": _pk}
FEATURES = tuple(JOBS)


def warmup(features=FEATURES, progress=True):
    """Compile the kernels of ``features`` (names of :data:`FEATURES`) now; returns seconds per feature."""
    bad = [f for f in features if f not in JOBS]
    if bad:
        raise ValueError(f"unknown warm-up feature(s) {bad}; choose from {list(FEATURES)}")
    times = {}
    for i, name in enumerate(features):
        if progress:
            sys.stderr.write(
                f"[{i}/{len(features)}] compiling {name} (about {SECONDS[name]} s cold; "
                "seconds when already compiled)...\n"
            )
            sys.stderr.flush()
        t0 = time.perf_counter()
        with feature(name, SECONDS[name]):
            JOBS[name]()
        times[name] = time.perf_counter() - t0
        if progress:
            sys.stderr.write(f"[{i + 1}/{len(features)}] {name} ready in {times[name]:.1f} s\n")
            sys.stderr.flush()
    return times
