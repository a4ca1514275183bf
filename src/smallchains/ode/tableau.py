"""Explicit Runge–Kutta methods as data: Butcher tableaus that check themselves.

``ButcherTableau(A, b, c, ...)`` validates its own consistency when built (A strictly
lower triangular, rows of A summing to c, weights summing to one, error weights
summing to zero, the FSAL property when claimed, dense-output weights that end at b).
The methods below are instances with published coefficients:

========  =====  ======  ==========  =======================================
method    order  stages  adaptive    dense output
========  =====  ======  ==========  =======================================
Tsit5     5(4)   7 FSAL  yes         free 4th-order interpolant (Tsitouras)
DP5       5(4)   7 FSAL  yes         free 4th-order interpolant (Dormand–Prince)
BS3       3(2)   4 FSAL  yes         cubic Hermite (3rd order)
Vern7     7(6)   10      yes         cubic Hermite (3rd order; Verner's own
                                     interpolant needs extra stages, not built:
                                     ``saveat`` points become step ends instead)
RK4       4      4       no (fixed)  cubic Hermite
Heun      2(1)   2       yes         cubic Hermite
Euler     1      1       no (fixed)  cubic Hermite
========  =====  ======  ==========  =======================================
"""

from __future__ import annotations

import numpy as np

from ._coefficients import TABLEAUS

# cubic Hermite in the form b_i(θ) = sum_k D[i, k] θ^(k+1): u(θ) = u0 + h [h01(θ) Σ b_i k_i
# + h10(θ) k_1 + h11(θ) f(u1)], h01 = 3θ² - 2θ³, h10 = θ - 2θ² + θ³, h11 = θ³ - θ².
_H01 = np.array([0.0, 3.0, -2.0])
_H10 = np.array([1.0, -2.0, 1.0])
_H11 = np.array([0.0, -1.0, 1.0])


class ButcherTableau:
    """An explicit Runge–Kutta method: ``A`` (s, s), ``b``, ``c`` and optional extras.

    Args:
        A, b, c: the tableau (A strictly lower triangular).
        order: the order of ``b``.
        b_err: error weights b - b̂ of an embedded pair (None: fixed steps only).
        err_order: the order of b̂.
        dense: (s, deg) polynomial coefficients of the method's own dense output,
            b_i(θ) = Σ_k dense[i][k] θ^(k+1); None: cubic Hermite is used.
        dense_order: the order of that interpolant.
        name: for messages.

    Raises ``ValueError`` naming the condition that fails (tolerance 1e-12).
    """

    def __init__(
        self, A, b, c, order, *, b_err=None, err_order=None, dense=None, dense_order=None, name="ButcherTableau"
    ):
        A = np.array(A, dtype=np.float64)
        b = np.array(b, dtype=np.float64)
        c = np.array(c, dtype=np.float64)
        s = b.shape[0]
        self.name = name
        if A.shape != (s, s) or c.shape != (s,):
            raise ValueError(f"{name}: A must be ({s}, {s}) and c ({s},) for {s} weights, got A {A.shape}, c {c.shape}")
        if np.any(np.triu(A) != 0):
            raise ValueError(f"{name}: A must be strictly lower triangular (an explicit method)")
        tol = 1e-12
        if np.max(np.abs(A.sum(axis=1) - c)) > tol:
            i = int(np.argmax(np.abs(A.sum(axis=1) - c)))
            raise ValueError(f"{name}: row {i} of A sums to {A[i].sum()!r}, not c[{i}] = {c[i]!r}")
        if abs(b.sum() - 1.0) > tol:
            raise ValueError(f"{name}: the weights b sum to {b.sum()!r}, not 1")
        if b_err is not None:
            b_err = np.array(b_err, dtype=np.float64)
            if b_err.shape != (s,):
                raise ValueError(f"{name}: b_err must have {s} entries, got {b_err.shape}")
            if abs(b_err.sum()) > tol:
                raise ValueError(f"{name}: the error weights b - b_hat sum to {b_err.sum()!r}, not 0")
            if err_order is None:
                raise ValueError(f"{name}: give err_order, the order of the embedded method")
        self.A, self.b, self.c, self.b_err = A, b, c, b_err
        self.order = int(order)
        self.err_order = None if err_order is None else int(err_order)
        self.stages = s
        self.fsal = bool(s > 1 and c[-1] == 1.0 and np.allclose(A[-1], b, rtol=0, atol=tol))
        # the dense-output weights of the S = s + 1 slots (slot s: f at the step's end)
        if dense is not None:
            dense = np.array(dense, dtype=np.float64)
            if dense.shape[0] != s:
                raise ValueError(f"{name}: dense must have one row per stage ({s}), got {dense.shape}")
            if np.max(np.abs(dense.sum(axis=1) - b)) > 1e-10:
                raise ValueError(f"{name}: the dense-output weights at θ = 1 must equal b")
            D = np.zeros((s + 1, dense.shape[1]))
            D[:s] = dense
            self.dense_order = int(dense_order) if dense_order is not None else None
            self.hermite = False
        else:
            D = np.zeros((s + 1, 3))
            D[:s] = b[:, None] * _H01[None, :]
            D[0] += _H10
            D[s] = _H11
            self.dense_order = min(3, self.order)
            self.hermite = True
        self.D = np.ascontiguousarray(D)
        self.b_err_or_zero = np.zeros(s) if b_err is None else b_err
        # the controller works with the lower of the two orders (OrdinaryDiffEq's convention)
        self.adaptive_order = None if b_err is None else min(self.order, self.err_order)

    @property
    def adaptive(self) -> bool:
        return self.b_err is not None

    def __repr__(self):
        return f"sc.{self.name}()"

    def __eq__(self, other):
        return (
            isinstance(other, ButcherTableau)
            and self.name == other.name
            and np.array_equal(self.A, other.A)
            and np.array_equal(self.b, other.b)
        )

    def __hash__(self):
        return hash((self.name, self.stages, self.order))


def _make(name):
    d = TABLEAUS[name]
    return ButcherTableau(
        d["A"],
        d["b"],
        d["c"],
        d["order"],
        b_err=d.get("b_err"),
        err_order=d.get("err_order"),
        dense=d.get("dense"),
        dense_order=d.get("dense_order"),
        name=name,
    )


def Tsit5():
    """Tsitouras' 5(4) pair (2011), FSAL, with its free 4th-order interpolant: the default."""
    return _make("Tsit5")


def DP5():
    """Dormand–Prince 5(4) (DOPRI5, MATLAB's ode45), FSAL, with its 4th-order dense output."""
    return _make("DP5")


def BS3():
    """Bogacki–Shampine 3(2) (MATLAB's ode23), FSAL; for loose tolerances."""
    return _make("BS3")


def Vern7():
    """Verner's 'most efficient' 7(6) pair; for tight tolerances (rtol below ~1e-8)."""
    return _make("Vern7")


def RK4():
    """The classic 4th-order method; fixed steps (give ``dt``)."""
    return _make("RK4")


def Heun():
    """Heun's 2nd-order method with the Euler error estimate; adaptive or fixed steps."""
    return _make("Heun")


def Euler():
    """Explicit Euler; fixed steps (give ``dt``)."""
    return _make("Euler")
