"""The package's one optimizer driver: SciPy's ``minimize`` (and an optional Adam phase) with
the rules every caller needs.

:func:`minimize` is used by :func:`smallchains.minimize` (training a network),
:meth:`smallchains.ode.GradientFunction.minimize` (fitting an ODE's parameters) and the
population fits of :mod:`smallchains.pk` (``pk.fit``).  Its rules:

* **best so far**: the result is the point with the lowest finite objective of every
  evaluation (Adam's, L-BFGS's line searches, restarts), never merely the last one;
* **non-finite values**: an evaluation whose value or gradient is not finite is handed to the
  optimizer as a huge value (``BIG``) with a zero gradient (its line search steps back), is
  never the best point, and does not reach the evaluation hook; an Adam phase stops at one; a
  run without any finite evaluation is not a success (``x`` is the start, ``fun`` inf);
* **bounds**: ``bounds=(lower, upper)`` arrays (infinite entries: no bound) clip the start,
  become L-BFGS-B's box and project Adam's steps;
* **iteration cap**: SciPy's result stands (``success`` False at ``maxiter``); with ``warn``
  set, a :class:`~smallchains.ConvergenceWarning` says so;
* **stall rule** (``stall=(tol, iterations)``): stop, as converged, when the best objective
  improved by less than ``tol`` over the last ``iterations`` iterations;
* **restart rule** (``restart_gtol``): when the optimizer reports success but a partial
  derivative at the best point (on the box: one pointing into it) is above ``restart_gtol``,
  restart from the best point with a fresh curvature memory and a 1000x tighter ``ftol``, up to
  three times (L-BFGS's relative-reduction stop misled by a badly scaled valley);
* **evaluation hook** (``on_evaluation(z, value)``, after every finite evaluation): progress
  reports; returning True stops the run (``success`` True, "stopped by the callback").

It returns SciPy's ``OptimizeResult`` with ``x``/``fun`` replaced by the best point and value,
``nfev`` counting every evaluation, ``restarts`` the number of restarts.
"""

from __future__ import annotations

import warnings

import numpy as np

from ._warnings import ConvergenceWarning

#: the value handed to the optimizer for an evaluation that is not finite
BIG = 1e300


class _Stop(Exception):
    """The evaluation hook asked to stop."""


class _Stalled(Exception):
    """The stall rule stopped L-BFGS."""


def kkt(g, z, lo, hi):
    """The largest partial derivative of ``g`` that is not pointing out of the box (lo, hi) at z
    (no box: the largest absolute partial derivative)."""
    g = np.asarray(g, dtype=float)
    if lo is None:
        return float(np.abs(g).max()) if g.size else 0.0
    tol = 1e-7 * np.maximum(1.0, np.abs(z))
    v = np.abs(g)
    v = np.where(z <= lo + tol, np.maximum(0.0, -g), v)
    v = np.where(z >= hi - tol, np.maximum(0.0, g), v)
    return float(v.max()) if v.size else 0.0


def minimize(
    fun_grad,
    z0,
    *,
    method="L-BFGS-B",
    bounds=None,
    maxiter=1000,
    tol=None,
    options=None,
    adam_steps=0,
    adam_lr=0.01,
    stall=None,
    restart_gtol=None,
    max_restarts=3,
    on_evaluation=None,
    warn=None,
    stacklevel=2,
):
    """Minimise ``fun_grad(z) -> (value, gradient)`` from ``z0``: see the module's rules.

    Args:
        method: SciPy's method (``"L-BFGS-B"``), or None for the Adam phase alone.
        bounds: (lower, upper) arrays for z, or None.
        maxiter, tol, options: SciPy's (``options`` updated with ``maxiter``).
        adam_steps, adam_lr: an Adam phase of this many steps before ``method`` (0: none).
        stall: (tol, iterations), or None.
        restart_gtol: the restart rule's gradient limit, or None; ``max_restarts`` its cap.
        on_evaluation: ``f(z, value)`` after each finite evaluation; True stops.
        warn: the caller's name for a ConvergenceWarning when it does not converge, or None
            (the caller reports it itself); ``stacklevel`` counts from the caller of this function.
    """
    from scipy.optimize import OptimizeResult
    from scipy.optimize import minimize as scipy_minimize

    lo, hi = (None, None) if bounds is None else (np.asarray(bounds[0]), np.asarray(bounds[1]))
    z0 = np.array(z0, dtype=np.float64)
    if lo is not None:
        z0 = np.clip(z0, lo, hi)
    best = {"z": z0.copy(), "f": np.inf, "g": None}
    n_eval = [0]

    def fg(z):
        n_eval[0] += 1
        f, g = fun_grad(z)
        if not np.isfinite(f) or not np.all(np.isfinite(g)):
            return BIG, np.zeros_like(z)
        if f < best["f"]:
            best["z"], best["f"], best["g"] = z.copy(), f, g
        if on_evaluation is not None and on_evaluation(z, f):
            raise _Stop
        return f, g

    z = z0.copy()
    success, message, nit, res, restarts = False, "", 0, None, 0
    try:
        if adam_steps:
            from .optimizers import Adam

            opt = Adam(adam_lr)
            for _ in range(int(adam_steps)):
                f, g = fg(z)
                if f >= BIG:
                    break
                opt.update(z, g)
                if lo is not None:
                    np.clip(z, lo, hi, out=z)
            z = best["z"].copy()
            message = f"Adam: {adam_steps} steps"
        if method is not None:
            res, restarts = _scipy_runs(
                scipy_minimize, fg, z, method, lo, hi, maxiter, tol, options, stall, best, restart_gtol, max_restarts
            )
            success, message, nit = bool(res.success), str(res.message), int(getattr(res, "nit", 0) or 0)
    except _Stop:
        success, message = True, "stopped by the callback"
    if not np.isfinite(best["f"]):
        success = False
        message = f"{message}; no evaluation gave a finite objective" if message else "no finite objective"
    out = res if res is not None else OptimizeResult(nit=nit, status=0 if success else 1)
    out.x, out.fun, out.success, out.message = best["z"], best["f"], success, message
    out.nfev, out.restarts = n_eval[0], restarts
    if warn and not success:
        warnings.warn(
            f"{warn} stopped without converging after {getattr(out, 'nit', '?')} iterations: {message} "
            "(raise maxiter, or check the loss and the starting point)",
            ConvergenceWarning,
            stacklevel=stacklevel + 1,
        )
    return out


def _scipy_runs(scipy_minimize, fg, z, method, lo, hi, maxiter, tol, options, stall, best, restart_gtol, max_restarts):
    """SciPy's runs with the stall and restart rules: (the last run's result, restarts)."""
    from scipy.optimize import OptimizeResult

    opts = {"maxiter": int(maxiter)}
    if options:
        opts.update(options)
    trace = []
    state = {"restarts": 0}
    callback = None
    if stall:
        stall_tol, stall_iters = stall

        def callback(intermediate_result=None):
            trace.append(best["f"])
            if len(trace) > stall_iters and trace[-1 - stall_iters] - trace[-1] < stall_tol:
                if not (restart_gtol and state["restarts"]):  # (a restart is for the gradient criterion)
                    raise _Stalled

    box = None
    if lo is not None and (np.isfinite(lo).any() or np.isfinite(hi).any()):
        box = [(None if not np.isfinite(a) else a, None if not np.isfinite(b) else b) for a, b in zip(lo, hi)]
    kw = {} if box is None else {"bounds": box}
    if callback is not None:
        kw["callback"] = callback
    if tol is not None:
        kw["tol"] = tol
    restarts = 0
    while True:
        o = dict(opts)
        ftol = o.get("ftol", tol)  # (SciPy's L-BFGS-B takes ``tol`` as its ftol unless options give one)
        if restarts and ftol is not None:
            o["ftol"] = ftol * 1e-3**restarts
        try:
            res = scipy_minimize(fg, z, jac=True, method=method, options=o, **kw)
        except _Stalled:
            message = f"the objective improved by < {stall[0]:g} over the last {stall[1]} iterations"
            res = OptimizeResult(success=True, message=message, nit=len(trace), status=0)
            break
        g = best["g"]
        if not (restart_gtol and res.success and g is not None and kkt(g, best["z"], lo, hi) > restart_gtol):
            break
        if restarts == max_restarts or getattr(res, "nit", 0) <= 1:
            break
        restarts += 1
        state["restarts"] = restarts
        trace.clear()
        z = best["z"].copy()
    if restarts:
        res.message = f"{res.message} (L-BFGS restarted {restarts} time(s) short of the gradient criterion)"
    return res, restarts
