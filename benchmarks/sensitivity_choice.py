"""Which sensitivity method is fastest, by problem size: the measurement behind ``sc.ode.auto_sensitivity``.

A chain of n compartments (linear transfer plus a saturable loss, 2n parameters), a bolus
into the first, 20 save points, rtol = atol = 1e-6, squared-error loss; one loss + gradient
per call, median microseconds.  Complex-step derivatives of a plain ``@njit`` right-hand side.

    python benchmarks/sensitivity_choice.py
"""

from __future__ import annotations

import os
import sys

import numba
import numpy as np

import smallchains as sc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import median_per_call  # noqa: E402


@numba.njit
def chain_rhs(du, u, p, t):
    n = u.shape[0]
    for i in range(n):
        inflow = p[i - 1] * u[i - 1] if i > 0 else 0.0
        du[i] = inflow - p[i] * u[i] - p[n + i] * u[i] * u[i] / (1.0 + u[i])


def median_us(fn, calls=100, rounds=5):
    return median_per_call(fn, calls, rounds)


def main():
    methods = [sc.DiscreteAdjoint(), sc.ForwardSensitivity(), sc.InterpolatingAdjoint(), sc.BacksolveAdjoint()]
    print("states n, params m: one loss + gradient, median us (steps of the forward solve)")
    print(f"  {'n':>3} {'m':>3} " + " ".join(f"{type(s).__name__:>22}" for s in methods))
    for n in (2, 4, 8, 16, 32):
        m = 2 * n
        u0 = np.zeros(n)
        u0[0] = 10.0
        p = np.linspace(0.5, 1.5, m)
        ts = np.linspace(0.5, 10, 20)
        cells = []
        for s in methods:
            gf = sc.gradient_function(
                np.ones((20, n)), chain_rhs, u0, (0, 10), p, saveat=ts, sensitivity=s, rtol=1e-6, atol=1e-6
            )
            us = median_us(lambda gf=gf, p=p: gf(p), calls=max(10, 2000 // (n * n)))
            cells.append(f"{us:12.0f} ({gf.stats['naccept']:3d} st)")
        print(f"  {n:>3} {m:>3} " + " ".join(f"{c:>22}" for c in cells))


if __name__ == "__main__":
    main()
