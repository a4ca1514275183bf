"""Gradients of losses on ODE solutions: ``value_and_grad`` and ``GradientFunction``.

A loss reads the solution at the save points: L = sum_i g(u(t_i), t_i).  Every method
calls compiled vector–Jacobian (or Jacobian–vector) products of the right-hand side:
the chain kernels for a neural ODE, complex-step derivatives (or the user's own
``vjp``) for a hand-written ``f``; none records a tape in Python.
"""

from __future__ import annotations

import copy

import numpy as np

from .._jit import COMPILE_SECONDS, feature
from .._warnings import warn_unconverged
from . import _adjoint as ADJ
from . import _kernels as RK
from .recording import Recording
from .sensitivities import (
    BacksolveAdjoint,
    DiscreteAdjoint,
    ForwardSensitivity,
    InterpolatingAdjoint,
    SensitivityMethod,
    auto_sensitivity,
)

#: (the methods live in ``sensitivities/``; re-exported here, their historical home)
__all__ = [
    "BacksolveAdjoint",
    "DiscreteAdjoint",
    "ForwardSensitivity",
    "GradientFunction",
    "InterpolatingAdjoint",
    "SensitivityMethod",
    "SquaredError",
    "auto_sensitivity",
    "gradient_function",
    "value_and_grad",
]

# --------------------------------------------------------------------------- losses


class SquaredError:
    """L = sum_i sum_j w_j (u_j(t_i) - data[i, j])^2 over the save points; NaN data are missing.

    Args:
        data: (n_saves, n_observed) observations at the ``saveat`` times.
        states: indices of the observed states (default: all, in order).
        weights: a scalar or one weight per observed state.
    """

    def __init__(self, data, states=None, weights=1.0):
        d = np.asarray(data, dtype=np.float64)
        if d.ndim == 1:
            d = d[:, None]
        if d.ndim != 2:
            raise ValueError(f"`data` must be a (n_saves, n_observed) array, got shape {np.shape(data)}")
        self.data = d
        self.states = None if states is None else np.asarray(states, dtype=np.int64).reshape(-1)
        if self.states is not None and self.states.shape[0] != d.shape[1]:
            raise ValueError(f"`states` lists {self.states.shape[0]} states but `data` has {d.shape[1]} columns")
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim > 1 or (w.ndim == 1 and w.shape[0] != d.shape[1]):
            raise ValueError(
                f"`weights` must be a scalar or one per observed state ({d.shape[1]}), got shape {w.shape}"
            )
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("`weights` must be finite and >= 0")
        self.weights = w
        self._cols = None

    def check(self, n_saves, n_states):
        if self.data.shape[0] != n_saves:
            raise ValueError(
                f"`data` has {self.data.shape[0]} rows but there are {n_saves} save points (one row per saveat time)"
            )
        if self.states is None and self.data.shape[1] != n_states:
            raise ValueError(
                f"`data` has {self.data.shape[1]} columns but the ODE has {n_states} states; "
                "pass states=[...] to name the observed ones"
            )
        cols = self.states if self.states is not None else np.arange(n_states, dtype=np.int64)
        if np.any(cols < 0) or np.any(cols >= n_states):
            raise ValueError(f"`states` {cols.tolist()} must lie in 0..{n_states - 1}")
        self._cols = np.ascontiguousarray(cols, dtype=np.int64)
        self._w = np.ascontiguousarray(np.broadcast_to(self.weights, (self.data.shape[1],)), dtype=np.float64)
        self._data = np.ascontiguousarray(self.data)

    def into(self, u, g):
        """The loss at the saved states ``u``; its gradient written into ``g`` (compiled, no allocation)."""
        return ADJ.squared_error(u, self._data, self._w, self._cols, g)

    def __call__(self, u, t):
        u = np.ascontiguousarray(u, dtype=np.float64)
        self.check(u.shape[0], u.shape[1])
        g = np.empty_like(u)
        return self.into(u, g), g

    def __repr__(self):
        return f"SquaredError({self.data.shape[0]}x{self.data.shape[1]} data)"


def _as_loss(loss):
    if isinstance(loss, SquaredError):
        return loss
    if callable(loss):
        return loss
    if isinstance(loss, np.ndarray) or isinstance(loss, (list, tuple)):
        return SquaredError(loss)
    raise TypeError(
        "`loss` must be sc.SquaredError(data), a data array (squared error), or a callable "
        f"loss(u, t) -> (value, dvalue/du) on the saved states; got {type(loss).__name__}"
    )


# --------------------------------------------------------------------------- gradient functions


class GradientFunction:
    """``(value, grad_p, grad_u0) = gf(p, u0=None)``: a loss on an ODE solution and its gradient.

    Built once by :func:`gradient_function` (inputs checked, options fixed, buffers
    allocated), then called many times: the per-call Python cost is a few microseconds
    on top of the compiled forward and reverse passes.  ``gf.stats`` holds the last
    forward solve's step counts; ``gf.solution()`` the last solve's save points.

    The solve, its buffers and its derivatives are a :class:`~smallchains.ode.recording.Recording`
    (``gf.recording``); the sensitivity method object (``gf.sensitivity``) forms the gradient
    from it.  This class adds the loss.

    Not reentrant: it owns its buffers, so use one per thread (e.g. one per subject
    group); the compiled passes release the GIL, so threads do run in parallel.
    """

    def __init__(self, loss, f, u0, tspan, p, sensitivity, solve_kw, check_derivatives=True):
        solve_kw = dict(solve_kw)
        saveat = solve_kw.pop("saveat", None)
        rec = Recording(
            f, u0, tspan, p, saveat=saveat, sensitivity=sensitivity, check_derivatives=check_derivatives, **solve_kw
        )
        #: the recorded solve (see :mod:`smallchains.ode.recording`)
        self.recording = rec
        #: the sensitivity method object
        self.sensitivity = rec.method
        self.n, self.m = rec.n, rec.m
        self.loss = _as_loss(loss)
        if isinstance(self.loss, SquaredError):
            self.loss = copy.copy(self.loss)  # its compiled arguments are fixed for this problem
            self.loss.check(rec.times.shape[0], rec.n)
        self._g = np.empty((rec.times.shape[0], rec.n))
        self._gradient = rec.method.gradient  # (bound once: the per-call path)

    @property
    def stats(self):
        """The last solve's step counts: {"naccept", "nreject", "nf"}."""
        return self.recording.stats

    @property
    def adjoint_stats(self):
        """The last augmented solve's step counts (continuous adjoints, sensitivities)."""
        return self.recording.adjoint_stats

    def forward(self):
        """Run the recording forward solve at the inputs last given; returns the status."""
        self.recording.forward()
        return RK.OK

    def record(self, run):
        """:meth:`Recording.record <smallchains.ode.recording.Recording.record>`."""
        return self.recording.record(run)

    def value(self, p, u0=None):
        """The loss alone, from the forward solve of the adjoint methods (for ForwardSensitivity
        this solve differs from the augmented one inside ``gf(p)``, so the values may differ in
        the last digits allowed by the tolerances)."""
        rec = self.recording
        rec.set_inputs(p, u0)
        us = rec.forward()
        if isinstance(self.loss, SquaredError):
            return float(self.loss.into(us, self._g))
        v, _ = self.loss(us.copy(), rec.times.copy())
        return float(v)

    def _loss_gradient(self):
        """(value, dL/du) of the loss on the recording's saved states."""
        us = self.recording.states
        if isinstance(self.loss, SquaredError):
            g = self._g
            value = self.loss.into(us, g)
        else:
            value, g = self.loss(us.copy(), self.recording.times.copy())  # copies: the buffers are reused
            g = np.ascontiguousarray(g, dtype=np.float64)
            if g.shape != us.shape:
                raise ValueError(
                    f"the loss's gradient has shape {g.shape}; expected {us.shape} (one row "
                    "per save point, one column per state)"
                )
            if not np.all(np.isfinite(g)):
                raise ValueError("the loss's gradient contains NaN or Inf")
        return float(value), g

    def __call__(self, p, u0=None):
        rec = self.recording
        rec.set_inputs(p, u0)
        return self._gradient(rec, self._loss_gradient)

    def move_jumps(self, t, val):
        """:meth:`Recording.move_jumps <smallchains.ode.recording.Recording.move_jumps>`: new times
        and values for the schedule's jumps (in the order they were added)."""
        self.recording.move_jumps(t, val)

    def pullback(self, g, jumps=False):
        """:meth:`Recording.pullback <smallchains.ode.recording.Recording.pullback>`: (grad_p,
        grad_u0[, jump derivatives]) of sum(g * u) at the save points of the last forward solve
        (adjoint methods only)."""
        return self.recording.pullback(g, jumps)

    def directional_sensitivities(self, p, Dp, u0=None, Du0=None, jump_tangents=None):
        """:meth:`Recording.directional_sensitivities
        <smallchains.ode.recording.Recording.directional_sensitivities>`: the saved states and
        their derivatives along parameter directions ``Dp`` (k, m), in one solve."""
        return self.recording.directional_sensitivities(p, Dp, u0=u0, Du0=Du0, jump_tangents=jump_tangents)

    def minimize(self, p, method="L-BFGS-B", *, u0=None, maxiter=1000, tol=None, options=None, callback=None):
        """Minimise the loss over ``p`` with ``scipy.optimize.minimize`` and these exact gradients.

        ``p`` is updated in place with the result (the best point evaluated, when finite); returns
        SciPy's ``OptimizeResult``.  ``callback(p, value)`` is called after each evaluation with a
        finite value and may return True to stop (e.g. once the loss is low enough).  The rules
        are the package's optimizer driver's (:mod:`smallchains._optimize`).
        """
        from .._optimize import minimize as drive

        def fun(theta):
            value, gp, _ = self(theta, u0)
            return value, gp

        res = drive(fun, p, method=method, maxiter=maxiter, tol=tol, options=options, on_evaluation=callback)
        if res.x is not None and np.all(np.isfinite(res.x)):
            p[:] = res.x
        warn_unconverged(res, "GradientFunction.minimize")
        return res

    def solution(self):
        """The last forward solve's save points, as an :class:`ODESolution` (no dense output)."""
        return self.recording.solution()


def gradient_function(
    loss, f, u0, tspan, p, *, saveat, sensitivity=None, check_derivatives=True, **solve_kw
) -> GradientFunction:
    """Prepare ``gf(p, u0=None) -> (value, grad_p, grad_u0)`` for repeated calls (training loops).

    Arguments as :func:`value_and_grad`; ``p`` and ``u0`` fix the sizes and the defaults.
    ``check_derivatives`` compares the right-hand side's vector-Jacobian product with
    central differences once, here (a ValueError names the disagreeing entries).
    """
    with feature("ODE gradients", COMPILE_SECONDS["ode"]):
        gf = GradientFunction(loss, f, u0, tspan, p, sensitivity, dict(solve_kw, saveat=saveat), check_derivatives)
    return gf


def value_and_grad(loss, f, u0, tspan, p, *, saveat, sensitivity=None, check_derivatives=True, **solve_kw):
    """The loss on the solution at ``saveat`` and its gradient: ``(value, grad_p, grad_u0)``.

    Args:
        loss: ``sc.SquaredError(data, states=..., weights=...)``, a data array (squared error
            against every state), or a callable ``loss(u, t) -> (value, dvalue/du)`` on the
            saved states ``u`` (n_saves, n_states) at the times ``t``.
        f, u0, tspan, p: as :func:`smallchains.solve`.
        saveat: the times the loss reads.
        sensitivity: ``sc.DiscreteAdjoint()`` (default).
        **solve_kw: the solver options of :func:`smallchains.solve` (solver, rtol, atol, dt,
            jumps, tstops, dtmax, max_steps, controller, ...).

    For many calls with new parameters (training), build the function once with
    :func:`gradient_function`; this one checks and prepares everything on every call.
    """
    return gradient_function(
        loss, f, u0, tspan, p, saveat=saveat, sensitivity=sensitivity, check_derivatives=check_derivatives, **solve_kw
    )(p)
