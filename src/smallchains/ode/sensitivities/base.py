"""The sensitivity-method protocol: what a method object does to a :class:`~smallchains.ode.recording.Recording`.

A method is an object (no per-problem state: one may serve many recordings) whose methods the
recording and :class:`~smallchains.ode.sensitivity.GradientFunction` call at fixed points, so
neither switches on the method's type:

at construction (once per recording)
    ``derivative_address(fn)``: the derivative kernel the method's passes call (a vjp for the
    adjoints, a jvp for forward sensitivities); ``check_derivatives(...)``: compare it with
    central differences; ``forward_save_times(P, dirn)``: where the recording forward solve
    saves (the backsolve adjoint adds the dose times); ``attach(recording)``: per-recording
    data the method keeps (returned, stored by the recording as ``method_data``).
on every forward solve
    ``storage(recording, want)``: what to record of each step and for how many steps.
on every gradient
    ``gradient(recording, loss_gradient)`` -> (value, dL/dp, dL/du0); the adjoints' default is
    one recording forward solve, the loss's cotangent, and ``pullback(recording, g, jumps)``.

Capabilities are class attributes: ``has_pullback`` (a vector-Jacobian product on the saved
states), ``jump_derivatives`` (d/d(value, time) of every jump from the pullback).

Adding a method is adding one subclass in one module of this package, and exporting it.
"""

from __future__ import annotations

import numpy as np

from .. import _kernels as RK
from ._checks import check_vjp


class SensitivityMethod:
    """Base of the sensitivity methods (see the module's docstring for the protocol).

    The defaults are those of an adjoint method reading a fully recorded forward solve.
    """

    name = "sensitivity"
    #: the word for its augmented solve in error messages ("the adjoint solve failed: ...")
    solve_label = "adjoint"
    #: offers a vector-Jacobian product on the saved states of a recorded forward solve
    has_pullback = True
    #: the pullback can also give each jump's (d/dvalue, d/dtime)
    jump_derivatives = False

    def __repr__(self):
        return f"{type(self).__name__}()"

    # ------------------------------------------------------------------ construction

    def derivative_address(self, fn):
        """The addresses of the derivative kernel this method's passes call (``fn``'s vjp)."""
        return fn.vjp_addr

    def check_derivatives(self, fn, u0, p, t0, fw):
        """Compare that kernel with central differences near ``u0`` once; ValueError when they disagree."""
        fn.vjp_addr  # noqa: B018 - compiled before the kernel is called
        check_vjp(fn, u0, p, t0, fw)

    def forward_save_times(self, P, dirn):
        """``(ts_fwd, rows)``: the recording forward solve's save times and, when they are more
        than the loss's, the rows of the loss's save points among them (else None)."""
        return P.ts, None

    def attach(self, recording):
        """Per-recording data of this method (kept by the recording as ``method_data``)."""
        return None

    # ------------------------------------------------------------------ forward

    def storage(self, recording, want):
        """``(store mode, capacity)`` of the step buffers for a forward solve of ``want`` steps:
        every stage of every step by default (what the reverse passes read)."""
        return RK.STORE_ALL, want

    # ------------------------------------------------------------------ gradients

    def gradient(self, recording, loss_gradient):
        """(value, dL/dp, dL/du0) at the recording's current inputs: one recording forward
        solve, ``loss_gradient() -> (value, g)`` on its saved states, and one pullback of g."""
        recording.forward()
        value, g = loss_gradient()
        gp, lam = self.pullback(recording, g, False)
        return value, gp, lam

    def pullback(self, recording, g, jumps):
        """(dL/dp, dL/du0[, jump derivatives]) of sum(g * u) on the last recorded forward solve
        (``g`` checked by the caller: contiguous float64, one row per save point)."""
        raise NotImplementedError(f"{type(self).__name__} has no pullback")


class ToleranceMethod(SensitivityMethod):
    """A method whose augmented solve is error-controlled: its own ``rtol``/``atol`` (default
    the forward solve's)."""

    def __init__(self, rtol=None, atol=None):
        for name, v in (("rtol", rtol), ("atol", atol)):
            if v is not None and not (np.isfinite(v) and v > 0):
                raise ValueError(f"`{name}` must be a positive number, got {v!r}")
        self.rtol, self.atol = rtol, atol

    def __repr__(self):
        return f"{type(self).__name__}(rtol={self.rtol}, atol={self.atol})"

    def tolerances(self, P):
        """The augmented solve's (rtol, atol), each a one-element array."""
        rtol = self.rtol if self.rtol is not None else float(P.rtol.min())
        atol = self.atol if self.atol is not None else float(P.atol.min())
        return np.array([rtol]), np.array([atol])
