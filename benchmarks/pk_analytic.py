"""Exact solutions of linear models against the ODE path, same run: Theophylline (one-compartment
oral, random effects on ka and CL), FOCE-I objective, its gradient, MAP gradient and a FOCE-I fit.

    python benchmarks/pk_analytic.py [--rounds 7]

Prints the median CPU time of each (process time, so other load on the machine does not count),
the ratio, the largest difference between the two paths' values, and the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import machine  # noqa: E402

import smallchains as sc  # noqa: E402
from smallchains import pk  # noqa: E402
from smallchains.pk.estimation import Problem  # noqa: E402


def cpu(fn, rounds, calls):
    fn()  # (warm: compiled code loaded, modes warm-started)
    out = []
    for _ in range(rounds):
        t = time.process_time()
        for _ in range(calls):
            fn()
        out.append((time.process_time() - t) / calls)
    return statistics.median(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args(argv)
    print(f"exact (matrix exponential) vs ODE path (Vern7, rtol 1e-8) — {time.strftime('%Y-%m-%d')}, {machine()}")
    data = sc.pkdata.theophylline()
    model = pk.PopulationModel("one_cpt_oral", dict(ka=1.5, CL=0.04, V=0.5), eta=["ka", "CL"], error="additive")
    x = model.x0.copy()
    etas = np.random.default_rng(0).normal(0, 0.2, (len(data.subjects), 2))
    rows, vals = {}, {}
    try:  # (as fit() does: NumPy's BLAS threads would only spin on these tiny matrices)
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    for analytic in (True, False):
        P = Problem(model, data, analytic=analytic, threads=1)
        _, modes, res = P.foce(x)
        vals[analytic] = (P.foce(x)[0], P.foce_gradient(x, res), P.map_objective(x, etas, 1)[1])
        rows[analytic] = [
            ("FOCE-I objective (ms)", 1e3 * cpu(lambda P=P, m=modes: P.foce(x, m), a.rounds, 5)),
            ("FOCE-I gradient (ms)", 1e3 * cpu(lambda P=P, r=res: P.foce_gradient(x, r), a.rounds, 2)),
            ("MAP objective + gradient (ms)", 1e3 * cpu(lambda P=P: P.map_objective(x, etas, 1), a.rounds, 10)),
        ]
        P.close()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pk.fit(model, data, "foce", analytic=analytic, se=False)  # (warm)
            t = time.process_time()
            r = pk.fit(model, data, "foce", analytic=analytic, se=False)
            rows[analytic].append(("FOCE-I fit, no SE (s)", time.process_time() - t))
        vals[analytic] += (r.ofv,)
    print(f"{'CPU time, median':34s} {'exact':>10s} {'ODE':>10s} {'ODE/exact':>10s}")
    for (name, ta), (_, to) in zip(rows[True], rows[False]):
        print(f"{name:34s} {ta:10.3f} {to:10.3f} {to / ta:10.1f}")
    va, vo = vals[True], vals[False]
    print(
        f"differences: FOCE-I objective {abs(va[0] - vo[0]) / abs(vo[0]):.1e} (relative), gradient "
        f"{np.abs(va[1] - vo[1]).max() / np.abs(vo[1]).max():.1e}, MAP gradient "
        f"{np.abs(va[2] - vo[2]).max() / np.abs(vo[2]).max():.1e}; fitted OFV {va[3]:.4f} vs {vo[3]:.4f}"
    )


if __name__ == "__main__":
    main()
