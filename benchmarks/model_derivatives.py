"""How a model written in Python gets exact derivatives: complex step against symbolic
differentiation with generated code (sympy), measured on the package's own two paths.

For each built-in model, ``make(derivatives="complex step")`` and ``make(derivatives="symbolic")``:

  complex step   f compiled a second time for complex arrays; a vector-Jacobian product costs
                 one complex evaluation per state and parameter
  symbolic       ``sc.ode.symbolic``: f run on sympy symbols, v'df/du and v'df/dp differentiated,
                 common subexpressions eliminated, Python source generated, compiled with @njit
                 and checked against complex step (what ``derivatives="auto"`` picks when it can)

Printed per model: the time from the model to its first gradient in this process, one
vector-Jacobian product through the solver's calling path (µs), one gradient of a subject's
squared error (discrete adjoint, Tsit5 1e-8), and the difference of the two gradients.

    python benchmarks/model_derivatives.py
"""

from __future__ import annotations

import os
import sys
import time

import numba
import numpy as np

import smallchains as sc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import median_per_call  # noqa: E402

MODELS = {  # model, parameters, dose state, observed state
    "one_cpt_oral_mm": (sc.pk.one_cpt_oral_mm, [1.0, 30.0, 5.0, 20.0], 0, 1),
    "two_cpt_oral": (sc.pk.two_cpt_oral, [1.2, 4.0, 20.0, 6.0, 40.0], 0, 1),
    "one_cpt_oral_emax": (sc.pk.one_cpt_oral_emax, [1.2, 4.0, 20.0, 0.5, 1.0, 10.0, 3.0], 0, 1),
}


def subject_problem(n, dose_state):
    ts = np.array([0.5, 1, 2, 4, 6, 8, 12, 16, 24, 36, 48.0])
    return ts, np.zeros((ts.shape[0], n)), sc.Jumps().bolus(0.0, dose_state, 100.0)


def _timed_vjp(call, va, lu, lp, vv, u, p, ode, fw):
    return (
        median_per_call(lambda: call(va[0], va[1], lu, lp, vv, u, p, 0.0, ode.iw, fw, 10000), 3, 5, scale=1e6) / 10000
    )


def main():
    print("model                 derivatives   make (s)   VJP via kernel (µs)   gradient (µs)   |grad diff|/|grad|")
    for name, (make, p, dose, obs) in MODELS.items():
        p = np.array(p)
        rows = {}
        grads = {}
        for kind in ("complex step", "symbolic"):
            t0 = time.perf_counter()
            model = make(derivatives=kind)
            ode, n, m = model.ode, model.n_states, len(p)
            ts, data, jumps = subject_problem(n, dose)
            gf = sc.gradient_function(
                sc.SquaredError(data[:, [obs]] + 1.0, states=[obs]),
                ode,
                np.zeros(n),
                (0.0, 48.0),
                p,
                saveat=ts,
                jumps=jumps,
                rtol=1e-8,
                atol=1e-8,
                check_derivatives=False,
            )
            v, g, _ = gf(p)  # compiles what it needs
            t_make = time.perf_counter() - t0
            # the VJP alone, through the same compiled calling path the adjoint uses
            va = ode.vjp_addr
            lu, lp, vv, u = np.zeros(n), np.zeros(m), np.ones(n), np.full(n, 3.0)
            fw = ode.workspace(n, m)
            call = _vjp_caller()
            call(va[0], va[1], lu, lp, vv, u, p, 0.0, ode.iw, fw, 1)
            us = _timed_vjp(call, va, lu, lp, vv, u, p, ode, fw)
            ms = median_per_call(lambda gf=gf, p=p: gf(p), 50, 7, scale=1e6)
            rows[kind] = (t_make, us, ms)
            grads[kind] = g
        diff = np.max(np.abs(grads["symbolic"] - grads["complex step"])) / np.max(np.abs(grads["complex step"]))
        for kind, (t_make, us, ms) in rows.items():
            tail = f"{diff:.1e}" if kind == "symbolic" else ""
            print(f"{name:22s}{kind:14s}{t_make:9.2f}   {us:17.3f}   {ms:15.1f}   {tail}")


_CALLER = None


def _vjp_caller():
    """A compiled loop calling a VJP by address ``reps`` times (the adjoint's calling path)."""
    global _CALLER
    if _CALLER is None:
        from smallchains.ode._adjoint import as_vjp

        @numba.njit
        def call(a0, a1, lu, lp, v, u, p, t, iw, fw, reps):
            vjp = as_vjp(a0, a1)
            for _ in range(reps):
                vjp(lu, lp, v, u, p, t, iw, fw)

        _CALLER = call
    return _CALLER


if __name__ == "__main__":
    main()
