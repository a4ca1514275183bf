"""How a model written in Python gets exact derivatives: complex step (what smallchains does)
against symbolic differentiation with generated code (sympy), measured.

For each built-in model, the same ``@njit f(du, u, p, t)`` is differentiated two ways:

  complex step   the package's default: f compiled a second time for complex arrays; a
                 vector-Jacobian product costs one complex evaluation per state and parameter
  sympy          f run on sympy symbols, v'df/du and v'df/dp differentiated symbolically,
                 common subexpressions eliminated, Python source generated and compiled with
                 @njit, then given to sc.ODEFunction(f, vjp=...)

Printed per model: the time to make the derivatives (from the model to its first gradient in
this process: complex-step compile vs sympy derivation + codegen + compile), one vector-Jacobian
product through the solver's calling path (µs), one gradient of a subject's squared error
(discrete adjoint, Tsit5 1e-8), and the difference of the two gradients.

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


def sympy_vjp(f_py, n, m):
    """(njit vjp, seconds to derive and generate, seconds to compile) from f's Python source."""
    import sympy

    t0 = time.perf_counter()
    u = list(sympy.symbols(f"u0:{n}"))
    p = list(sympy.symbols(f"p0:{m}"))
    v = list(sympy.symbols(f"v0:{n}"))
    t = sympy.Symbol("t")
    du = [sympy.Integer(0)] * n
    f_py(du, u, p, t)
    s = sum(v[j] * du[j] for j in range(n))
    grads = [sympy.diff(s, x) for x in u + p]
    repl, red = sympy.cse(grads, optimizations="basic")
    lines = ["def vjp(lu, lp, v, u, p, t):"]
    lines += [f"    u{j} = u[{j}]" for j in range(n)]
    lines += [f"    p{k} = p[{k}]" for k in range(m)]
    lines += [f"    v{j} = v[{j}]" for j in range(n)]
    lines += [f"    {sym} = {sympy.pycode(expr)}" for sym, expr in repl]
    lines += [f"    lu[{j}] = {sympy.pycode(red[j])}" for j in range(n)]
    lines += [f"    lp[{k}] += {sympy.pycode(red[n + k])}" for k in range(m)]
    src = "\n".join(lines).replace("math.", "np.")
    ns = {"np": np, "math": np}
    exec(compile(src, f"<sympy vjp of {getattr(f_py, '__name__', 'f')}>", "exec"), ns)
    t_gen = time.perf_counter() - t0
    fn = numba.njit(ns["vjp"])
    return fn, t_gen, src


def subject_problem(f, n, p, dose_state, vjp=None):
    ode = sc.ODEFunction(f, n_states=n, n_params=len(p), vjp=vjp, name=f.__name__ + ("-sympy" if vjp else ""))
    ts = np.array([0.5, 1, 2, 4, 6, 8, 12, 16, 24, 36, 48.0])
    data = np.zeros((ts.shape[0], n))
    jumps = sc.Jumps().bolus(0.0, dose_state, 100.0)
    return ode, ts, data, jumps


def _timed_vjp(call, va, lu, lp, vv, u, p, ode, fw):
    return median_per_call(lambda: call(va[0], va[1], lu, lp, vv, u, p, 0.0, ode.iw, fw, 10000), 3, 5,
                           scale=1e6) / 10000


def main():
    print("model                 derivatives   make (s)   VJP via kernel (µs)   gradient (µs)   |grad diff|/|grad|")
    for name, (make, p, dose, obs) in MODELS.items():
        p = np.array(p)
        model = make(derivatives="complex step")  # (the model's f only: both ways are made below)
        n, m = model.n_states, len(p)
        f = model.ode.py
        rows = {}
        grads = {}
        for kind in ("complex step", "sympy"):
            t0 = time.perf_counter()
            if kind == "sympy":
                vjp, t_gen, _ = sympy_vjp(f.py_func, n, m)
            else:
                vjp = None
            ode, ts, data, jumps = subject_problem(f, n, p, dose, vjp)
            gf = sc.gradient_function(sc.SquaredError(data[:, [obs]] + 1.0, states=[obs]), ode, np.zeros(n),
                                      (0.0, 48.0), p, saveat=ts, jumps=jumps, rtol=1e-8, atol=1e-8,
                                      check_derivatives=False)
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
        diff = np.max(np.abs(grads["sympy"] - grads["complex step"])) / np.max(np.abs(grads["complex step"]))
        for kind, (t_make, us, ms) in rows.items():
            print(f"{name:22s}{kind:14s}{t_make:9.2f}   {us:17.3f}   {ms:15.1f}   "
                  f"{diff:.1e}" if kind == "sympy" else f"{name:22s}{kind:14s}{t_make:9.2f}   {us:17.3f}   {ms:15.1f}")


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
