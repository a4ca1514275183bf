"""Gradients of losses on ODE solutions: ``value_and_grad`` and the sensitivity methods.

A loss reads the solution at the save points: L = sum_i g(u(t_i), t_i).  Every method
calls compiled vector–Jacobian (or Jacobian–vector) products of the right-hand side:
the chain kernels for a neural ODE, complex-step derivatives (or the user's own
``vjp``) for a hand-written ``f``; none records a tape in Python.
"""

from __future__ import annotations

import copy
import functools

import numpy as np

from .._jit import COMPILE_SECONDS, addresses, feature
from .._warnings import warn_unconverged
from . import _adjoint as ADJ
from . import _kernels as RK
from .integrate import _RETCODES, ODESolution, _no_event_addresses, _raise, _stats, prepare

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


# --------------------------------------------------------------------------- methods


class SensitivityMethod:
    name = "sensitivity"

    def __repr__(self):
        return f"{type(self).__name__}()"


class DiscreteAdjoint(SensitivityMethod):
    """Reverse-mode differentiation of the Runge–Kutta steps (the default).

    The exact gradient of the computed solution (the accepted steps held fixed), to
    rounding.  The forward solve records every step; the reverse pass pulls the loss's
    cotangents back through each stage, the dense output (save points between steps)
    and the jumps.  Cost: one vector–Jacobian product per stage and step.

    Args:
        store: "auto" (default) keeps every stage when that fits in ``max_memory`` bytes,
            else only each step's starting state, recomputing its stages during the reverse
            pass (one more right-hand side evaluation per stage).  "stages" or "states"
            force one of the two.
        max_memory: the budget for the recorded steps, in bytes (default 512 MB).
    """

    name = "discrete adjoint"

    def __init__(self, store="auto", max_memory=512 * 2**20):
        if store not in ("auto", "stages", "states"):
            raise ValueError(f"`store` must be 'auto', 'stages' or 'states', got {store!r}")
        if not max_memory > 0:
            raise ValueError(f"`max_memory` must be > 0 bytes, got {max_memory!r}")
        self.store = store
        self.max_memory = float(max_memory)

    def __repr__(self):
        return f"DiscreteAdjoint(store={self.store!r}, max_memory={self.max_memory:.3g})"


class _ContinuousMethod(SensitivityMethod):
    def __init__(self, rtol=None, atol=None):
        for name, v in (("rtol", rtol), ("atol", atol)):
            if v is not None and not (np.isfinite(v) and v > 0):
                raise ValueError(f"`{name}` must be a positive number, got {v!r}")
        self.rtol, self.atol = rtol, atol

    def __repr__(self):
        return f"{type(self).__name__}(rtol={self.rtol}, atol={self.atol})"


class InterpolatingAdjoint(_ContinuousMethod):
    """The continuous adjoint, the forward state read from the forward solve's dense output.

    Solves λ' = -(df/du)^T λ and μ' = -(df/dp)^T λ backwards from the end with the same
    method, λ jumping by dL/du at each save point and through each dose (a bolus scaled
    by p[k] adds its amount times λ to μ[k]; a reset or set zeroes λ there).  Accurate to
    the solver tolerances (``rtol``/``atol``, default the forward solve's), not to rounding;
    stores every forward step (like the discrete adjoint's "stages" mode).
    """

    name = "interpolating adjoint"


class BacksolveAdjoint(_ContinuousMethod):
    """The continuous adjoint with the state re-solved backwards alongside λ and μ.

    Needs no record of the forward steps; the backward state is restarted from the forward
    values at every save point and dose time (left limits), which keeps the drift of the
    unstable backward solve in check.  Cheapest in memory, least accurate on dissipative
    problems (the backward state solve is then unstable between save points).
    """

    name = "backsolve adjoint"


class ForwardSensitivity(_ContinuousMethod):
    """The forward sensitivity equations: s' = (df/du) s + df/dp for each of the n + m inputs.

    One Jacobian-vector product per input per stage, no reverse pass and no record of the
    steps: memory n (n + m) whatever the length of the solve.  The sensitivities are part
    of the error-controlled state, so they are accurate to the tolerances.  Measured here
    (``benchmarks/sensitivity_choice.py``) it is 1.2-1.6x slower than the discrete adjoint
    at every size tried (n + m from 6 to 96), so it is not the automatic choice; prefer it
    for very long solves with few inputs, where recording the steps costs too much memory.
    """

    name = "forward sensitivity"


def auto_sensitivity(n_states, n_params):
    """The automatic choice: :class:`DiscreteAdjoint`, whatever the size.

    SciML switches to forward mode below ~100 states plus parameters because its
    reverse mode carries a tape; here both are compiled and a vector-Jacobian product
    costs what n + m Jacobian-vector products cost (complex step), so the adjoint, which
    needs one per stage instead of n + m, is faster at every size measured
    (``benchmarks/sensitivity_choice.py``: n + m = 6: 60 against 97 us; 96: 3.6 against
    4.4 ms; a 252-weight neural ODE: 0.05 against 12 ms).
    """
    return DiscreteAdjoint()


# --------------------------------------------------------------------------- gradient functions


def _rows_to_arrays(rows):
    """Jump rows (t, kind, idx, val, pidx), already in the order of application, as kernel arrays."""
    if not rows:
        z = np.zeros(0)
        zi = np.zeros(0, dtype=np.int64)
        return z, zi, zi, z, zi
    t, kind, idx, val, pidx = zip(*rows)
    return (
        np.array(t, dtype=np.float64),
        np.array(kind, dtype=np.int64),
        np.array(idx, dtype=np.int64),
        np.array(val, dtype=np.float64),
        np.array(pidx, dtype=np.int64),
    )


@functools.lru_cache(maxsize=1)
def _augmented_addresses():
    return np.array(addresses(ADJ.augmented_rhs, RK.RHS_SIG), dtype=np.int64)


def _check_jvp(fn, u0, p, t, fw, tol=1e-5):
    """Compare the Jacobian-vector product with central differences along a random direction, once."""
    fn.jvp_addr  # noqa: B018 - compiled before the kernel is called
    n, m = u0.shape[0], p.shape[0]
    rng = np.random.default_rng(54321)
    u = u0 + 0.05 * (1.0 + np.abs(u0)) * rng.uniform(0.5, 1.0, n)
    du = rng.normal(size=n)
    dp = rng.normal(size=m) * (1e-2 + np.abs(p)) * 0.1
    out = rng.normal(size=n) * 1e3  # must be overwritten
    fn.jvp(out, u, p, t, du, dp, fn.iw, fw)
    e = 1e-6
    a = np.empty(n)
    b = np.empty(n)
    fn.rhs(a, u + e * du, p + e * dp, t, fn.iw, fw)
    fn.rhs(b, u - e * du, p - e * dp, t, fn.iw, fw)
    fd = (a - b) / (2 * e)
    scale = max(np.abs(fd).max(initial=0.0), 1e-8)
    if not np.all(np.isfinite(out)) or np.any(np.abs(out - fd) > tol * scale + 1e-7 * np.abs(fd)):
        how = (
            "complex-step differentiation (is the code analytic?)"
            if getattr(fn, "complex_step_jvp", False)
            else "the supplied jvp"
        )
        raise ValueError(
            f"the Jacobian-vector product of {fn.name} from {how} disagrees with finite "
            f"differences (jvp {out[:6]}, differences {fd[:6]}); fix it, pass jvp=..., or "
            "check_derivatives=False to skip this check"
        )


def _check_vjp(fn, u0, p, t, fw, tol=1e-5):
    """Compare the right-hand side's vector-Jacobian product with central differences, once.

    Complex-step derivatives are exact for analytic code but silently wrong for code
    that is not (``abs`` of a state drops the derivative's sign); a hand-written vjp may
    simply be wrong.  Checked near ``u0`` (shifted, so that states starting at zero do
    not hide terms) for the states and at most 40 parameters.
    """
    fn.vjp_addr  # noqa: B018 - compiled before the kernel is called
    n, m = u0.shape[0], p.shape[0]
    rng = np.random.default_rng(12345)
    u = u0 + 0.05 * (1.0 + np.abs(u0)) * rng.uniform(0.5, 1.0, n)
    v = rng.normal(size=n)
    # lu must be overwritten and lp accumulated into: start both from garbage and check that
    lu = rng.normal(size=n) * 1e3
    lp0 = rng.normal(size=m)
    lp = lp0.copy()
    fn.vjp(lu, lp, v, u, p, t, fn.iw, fw)
    lp = lp - lp0
    da = np.empty(n)
    db = np.empty(n)

    def fd(x, k, which):
        e = 1e-6 * max(1.0, abs(x[k]))
        a = x.copy()
        b = x.copy()
        a[k] += e
        b[k] -= e
        if which == "u":
            fn.rhs(da, a, p, t, fn.iw, fw)
            fn.rhs(db, b, p, t, fn.iw, fw)
        else:
            fn.rhs(da, u, a, t, fn.iw, fw)
            fn.rhs(db, u, b, t, fn.iw, fw)
        return float(v @ (da - db)) / (2 * e)

    fu = np.array([fd(u, k, "u") for k in range(n)])
    ks = np.arange(m) if m <= 40 else np.sort(rng.choice(m, 40, replace=False))
    fp = np.array([fd(p, k, "p") for k in ks])
    scale = max(np.abs(fu).max(initial=0.0), np.abs(fp).max(initial=0.0), 1e-8)
    bad_u = np.abs(lu - fu) > tol * scale + 1e-7 * np.abs(fu)
    bad_p = np.abs(lp[ks] - fp) > tol * scale + 1e-7 * np.abs(fp)
    if np.any(bad_u) or np.any(bad_p) or not (np.all(np.isfinite(lu)) and np.all(np.isfinite(lp))):
        how = (
            "complex-step differentiation (is the code analytic? abs(), min/max or branches on the state break it)"
            if getattr(fn, "complex_step", False)
            else "the supplied vjp"
        )
        where = [f"du/du[{k}]" for k in np.flatnonzero(bad_u)] + [f"du/dp[{ks[k]}]" for k in np.flatnonzero(bad_p)]
        raise ValueError(
            f"the derivatives of {fn.name} from {how} disagree with finite differences at "
            f"{', '.join(where[:6]) or 'non-finite values'} (vjp {np.r_[lu, lp[ks]][:6]}, "
            f"differences {np.r_[fu, fp][:6]}); a vjp must overwrite lu and add to lp; fix it "
            "or pass vjp=..., or check_derivatives=False to skip this check"
        )


def _plain_forward(gf):
    P = gf.P
    return RK.rk_solve(
        gf.fa,
        P.fn.iw,
        gf.fw,
        P.ga,
        P.tab.A,
        P.tab.b,
        P.tab.c,
        P.tab.b_err_or_zero,
        P.tab.D,
        P.opt,
        P.iopt,
        P.rtol,
        P.atol,
        P.u0,
        P.p,
        gf.ts_fwd,
        gf.us_fwd,
        P.tstops,
        *P.jumps,
        gf.st_t,
        gf.st_h,
        gf.st_u,
        gf.st_k,
        gf.st_j,
        gf.K,
        gf.wk,
        gf.stats_arr,
        gf.fres,
        gf.uend,
    )


class GradientFunction:
    """``(value, grad_p, grad_u0) = gf(p, u0=None)``: a loss on an ODE solution and its gradient.

    Built once by :func:`gradient_function` (inputs checked, options fixed, buffers
    allocated), then called many times: the per-call Python cost is a few microseconds
    on top of the compiled forward and reverse passes.  ``gf.stats`` holds the last
    forward solve's step counts; ``gf.solution()`` the last solve's save points.

    Not reentrant: it owns its buffers, so use one per thread (e.g. one per subject
    group); the compiled passes release the GIL, so threads do run in parallel.
    """

    def __init__(self, loss, f, u0, tspan, p, sensitivity, solve_kw, check_derivatives=True):
        if "event" in solve_kw and solve_kw["event"] is not None:
            raise ValueError(
                "gradients through terminating events are not supported (the event time would "
                "depend on the parameters); integrate to a fixed end instead"
            )
        # (dense output is internal here: the adjoints record what they need)
        solve_kw = {k: v for k, v in solve_kw.items() if k not in ("event", "dense")}
        if solve_kw.get("saveat") is None:
            raise ValueError("`saveat` is required: the loss reads the solution at the save points")
        if p is None:
            raise ValueError("`p` is required: the parameters to differentiate with respect to")
        if sensitivity is not None and not isinstance(sensitivity, SensitivityMethod):
            raise TypeError(f"`sensitivity` must be a method object such as sc.DiscreteAdjoint(), got {sensitivity!r}")
        P = prepare(f, u0, tspan, p, **solve_kw)
        self.sensitivity = auto_sensitivity(P.n, P.p.shape[0]) if sensitivity is None else sensitivity
        self.P = P
        self.u0 = P.u0 = P.u0.copy()  # the default initial state (not a view of the caller's array)
        self.loss = _as_loss(loss)
        if isinstance(self.loss, SquaredError):
            self.loss = copy.copy(self.loss)  # its compiled arguments are fixed for this problem
            self.loss.check(P.ts.shape[0], P.n)
        fn = P.fn
        self.fn = fn
        n, m, S = P.n, P.p.shape[0], P.S
        self.n, self.m = n, m
        self.fw = fn.workspace(n, m)
        self.fa = fn.addr
        sens = self.sensitivity
        if isinstance(sens, ForwardSensitivity):
            self.va = fn.jvp_addr
        else:
            self.va = fn.vjp_addr
        if check_derivatives:
            # (the check calls the kernels directly: their user pieces must be compiled first)
            if isinstance(sens, ForwardSensitivity):
                _check_jvp(fn, P.u0, P.p, P.t0, self.fw)
            else:
                fn.vjp_addr  # noqa: B018
                _check_vjp(fn, P.u0, P.p, P.t0, self.fw)
        self.dirn = 1.0 if P.t1 >= P.t0 else -1.0
        # the save times of the forward solve: the loss's, plus the dose times for the backsolve
        # adjoint (its state restarts from the forward's left limits there)
        self.ts_fwd = P.ts
        self.rows = None
        if isinstance(sens, BacksolveAdjoint) and P.jumps[0].shape[0]:
            jt = P.jumps[0]
            lo, hi = min(P.t0, P.t1), max(P.t0, P.t1)
            extra = jt[(jt > lo) & (jt <= hi)] if self.dirn > 0 else jt[(jt >= lo) & (jt < hi)]
            ext = np.unique(np.concatenate([P.ts, extra]))
            self.ts_fwd = np.ascontiguousarray(ext if self.dirn > 0 else ext[::-1])
            key = self.ts_fwd if self.dirn > 0 else self.ts_fwd[::-1]
            pos = np.searchsorted(key, P.ts)
            self.rows = pos if self.dirn > 0 else self.ts_fwd.shape[0] - 1 - pos
        if isinstance(sens, ForwardSensitivity):
            self._fs_dirs = np.vstack([np.zeros((P.n, P.p.shape[0])), np.eye(P.p.shape[0])])
            self._fs_jumps = self._forward_sensitivity_jumps(self._fs_dirs)
        tab = P.tab
        self.aopt = np.zeros(ADJ.NAOPT, dtype=np.int64)
        self.aopt[ADJ.A_S] = tab.stages
        self.aopt[ADJ.A_FSAL] = int(tab.fsal)
        jt = P.jumps[0]
        dirn = 1.0 if P.t1 >= P.t0 else -1.0
        self.aopt[ADJ.A_NJUMP0] = int(np.sum((jt - P.t0) * dirn <= 0.0))
        self.K = np.zeros((S, n))
        self.W = np.zeros((S, n))
        self.wk = np.zeros(5 * n + S)
        self.awk = np.zeros(11 * n)
        self.no_jg = np.zeros((0, 2 + n))  # (no jump derivatives requested)
        nj = P.jumps[0].shape[0]
        self.jg = np.zeros((nj, 2 + n))
        # the schedule as added (inputs before t0 already moved to t0), for move_jumps
        inv = np.empty(nj, dtype=np.int64)
        inv[P.jorder] = np.arange(nj)
        self._jumps0 = tuple(a[inv].copy() for a in P.jumps)
        self.stats_arr = np.zeros(RK.NSTATS, dtype=np.int64)
        self.fres = np.zeros(2)
        self.uend = np.empty(n)
        self.us_fwd = np.empty((self.ts_fwd.shape[0], n))
        self.us = self.us_fwd if self.rows is None else np.empty((P.ts.shape[0], n))
        self._g = np.empty((P.ts.shape[0], n))
        self._cap = 0
        self._mode = None
        self._last_steps = 0
        self.stats = {}

    # buffers for the recorded steps, grown on demand and reused between calls
    def _storage(self, want):
        """Buffers for ``want`` steps (fewer if the budget says so); returns the capacity."""
        n, S = self.n, self.P.S
        sens = self.sensitivity
        per_all = (S + 1) * n * 8.0 + 24.0
        per_states = n * 8.0 + 24.0
        if isinstance(sens, BacksolveAdjoint):
            mode, cap = RK.STORE_NONE, 1
        elif (
            not isinstance(sens, DiscreteAdjoint)
            or sens.store == "stages"
            or (sens.store == "auto" and want * per_all <= sens.max_memory)
        ):
            mode, cap = RK.STORE_ALL, want
        else:
            mode = RK.STORE_STATES
            cap = min(want, int(sens.max_memory // per_states))
            if cap <= self._cap and self._mode == RK.STORE_STATES and cap < want:
                raise MemoryError(
                    f"recording more than {self._cap} steps needs more than {sens.max_memory:.3g} "
                    "bytes, the DiscreteAdjoint budget (max_memory); raise max_memory, loosen the "
                    "tolerances or lower max_steps"
                )
            if cap < 1:
                raise MemoryError(f"max_memory={sens.max_memory:.3g} bytes cannot hold even one step")
        if mode == self._mode and cap <= self._cap:
            return self._cap  # (big enough: keep the buffers, so compiled callers' bound arguments stay valid)
        self.st_t = np.empty(cap)
        self.st_h = np.empty(cap)
        self.st_u = np.empty((cap, n))
        self.st_k = np.empty((cap if mode == RK.STORE_ALL else 1, S, n))
        self.st_j = np.empty(cap, dtype=np.int64)
        self._cap, self._mode = cap, mode
        return cap

    @staticmethod
    def _checked(name, x, n):
        x = np.asarray(x)
        if x.shape != (n,):
            raise ValueError(f"`{name}` must have shape ({n},), got {x.shape}")
        x = np.ascontiguousarray(x, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise ValueError(f"`{name}` contains NaN or Inf")
        return x

    def _set_inputs(self, p, u0):
        self.P.p = self._checked("p", p, self.m)
        self.P.u0 = self.u0 if u0 is None else self._checked("u0", u0, self.n)

    def record(self, run):
        """Call ``run(self)`` (a compiled pass that records the forward steps into this object's
        buffers) with storage grown until it fits; returns its status.  ``forward`` is
        ``record`` of the plain solve; other compiled passes (e.g. a subject's whole objective in
        ``smallchains.pk``) reuse the same buffers and growth rule."""
        P = self.P
        want = max(64, int(self._last_steps * 1.25) + 8) if self._last_steps else 64
        while True:
            self._storage(min(want, P.max_steps + 1))
            P.iopt[RK.I_STORE] = self._mode
            status = run(self)
            if status != RK.STORAGE_FULL:
                break
            want = max(2 * self._cap, 64)
        self._last_steps = int(self.stats_arr[RK.S_NSTORED])
        return status

    def forward(self):
        """Run the recording forward solve; returns the status."""
        P = self.P
        status = self.record(_plain_forward)
        self.stats = _stats(self.stats_arr)
        if self.rows is not None:
            self.us[:] = self.us_fwd[self.rows]
        if status != RK.OK:
            sol = ODESolution(
                P.ts.copy(),
                self.us.copy(),
                float(self.fres[RK.R_T]),
                self.uend.copy(),
                _RETCODES.get(status, "failure"),
                dict(self.stats),
            )
            _raise(status, sol, {"max_steps": P.max_steps, "t1": P.t1})
        return status

    def value(self, p, u0=None):
        """The loss alone, from the forward solve of the adjoint methods (for ForwardSensitivity
        this solve differs from the augmented one inside ``gf(p)``, so the values may differ in
        the last digits allowed by the tolerances)."""
        self._set_inputs(p, u0)
        self.forward()
        if isinstance(self.loss, SquaredError):
            return float(self.loss.into(self.us, self._g))
        v, _ = self.loss(self.us.copy(), self.P.ts.copy())
        return float(v)

    def _loss_gradient(self):
        if isinstance(self.loss, SquaredError):
            g = self._g
            value = self.loss.into(self.us, g)
        else:
            value, g = self.loss(self.us.copy(), self.P.ts.copy())  # copies: the buffers are reused
            g = np.ascontiguousarray(g, dtype=np.float64)
            if g.shape != self.us.shape:
                raise ValueError(
                    f"the loss's gradient has shape {g.shape}; expected {self.us.shape} (one row "
                    "per save point, one column per state)"
                )
            if not np.all(np.isfinite(g)):
                raise ValueError("the loss's gradient contains NaN or Inf")
        return float(value), g

    def __call__(self, p, u0=None):
        self._set_inputs(p, u0)
        if isinstance(self.sensitivity, ForwardSensitivity):
            return self._forward_sensitivity()
        self.forward()
        value, g = self._loss_gradient()
        gp, lam = self.pullback(g)
        return value, gp, lam

    def move_jumps(self, t, val):
        """Give the schedule's jumps new times and values (arrays in the order the jumps were
        added to the :class:`Jumps`; kinds and targets stay): for doses that depend on
        parameters (a lag moves a dose, a bioavailability scales it).  The arrays the compiled
        passes read are updated in place, re-sorted by time (same-time jumps keep the order
        they were added in).  DiscreteAdjoint only."""
        P = self.P
        t = np.asarray(t, dtype=np.float64)
        val = np.asarray(val, dtype=np.float64)
        nj = self._jumps0[0].shape[0]
        if t.shape != (nj,) or val.shape != (nj,) or not (np.all(np.isfinite(t)) and np.all(np.isfinite(val))):
            raise ValueError(f"move_jumps needs {nj} finite times and values, got shapes {t.shape}, {val.shape}")
        _, kind, idx, _, pidx = self._jumps0
        before = (t - P.t0) * self.dirn < 0.0
        if np.any(before & (kind != RK.J_INPUT)):
            k = int(np.flatnonzero(before & (kind != RK.J_INPUT))[0])
            raise ValueError(f"a jump moved to t = {t[k]:g}, before the start of the solve t0 = {P.t0:g}")
        t = np.where(before, P.t0, t)
        order = np.lexsort((np.arange(nj), self.dirn * t))
        for dst, src in zip(P.jumps, (t, kind, idx, val, pidx)):
            dst[:] = src[order]
        P.jorder[:] = order
        self.aopt[ADJ.A_NJUMP0] = int(np.sum((P.jumps[0] - P.t0) * self.dirn <= 0.0))

    def pullback(self, g, jumps=False):
        """(grad_p, grad_u0) of sum(g * u) at the save points of the last forward solve.

        ``g`` (n_saves, n_states) is a cotangent on the saved states: with ``gf.forward()``
        run once, several pullbacks give several rows of a Jacobian (e.g. of each
        observation) without solving forward again.  Adjoint methods only.

        With ``jumps`` (DiscreteAdjoint), also each jump's (d/dvalue, d/dtime) as a (n_jumps,
        2) array in the order the jumps were added (see ``smallchains.ode._adjoint``): the
        derivatives through doses that depend on parameters.
        """
        if isinstance(self.sensitivity, ForwardSensitivity):
            raise TypeError(
                "pullback needs an adjoint method (DiscreteAdjoint, InterpolatingAdjoint or "
                "BacksolveAdjoint), not ForwardSensitivity"
            )
        g = np.ascontiguousarray(g, dtype=np.float64)
        if g.shape != self.us.shape:
            raise ValueError(f"the cotangent has shape {g.shape}; expected {self.us.shape}")
        if jumps and not isinstance(self.sensitivity, DiscreteAdjoint):
            raise TypeError("jump derivatives need the DiscreteAdjoint")
        if isinstance(self.sensitivity, DiscreteAdjoint):
            gp = np.zeros(self.m)
            lam = np.zeros(self.n)
            self.aopt[ADJ.A_NSTORED] = self.stats_arr[RK.S_NSTORED]
            self.aopt[ADJ.A_NJUMPS] = self.stats_arr[RK.S_NJUMPS]
            self.aopt[ADJ.A_STAGES] = int(self._mode == RK.STORE_ALL)
            P = self.P
            ADJ.rk_discrete_adjoint(
                self.fa,
                self.va,
                P.fn.iw,
                self.fw,
                P.tab.A,
                P.tab.b,
                P.tab.c,
                P.tab.D,
                self.aopt,
                float(self.fres[RK.R_T]),
                P.p,
                self.st_t,
                self.st_h,
                self.st_u,
                self.st_k,
                self.st_j,
                *P.jumps,
                P.ts,
                g,
                lam,
                gp,
                self.W,
                self.K,
                self.awk,
                self.jg if jumps else self.no_jg,
            )
            if jumps:
                out = np.empty((self.jg.shape[0], 2))
                out[P.jorder] = self.jg[:, :2]
                return gp, lam, out
            return gp, lam
        return self._continuous_adjoint(g)

    # ------------------------------------------------------------------ continuous methods

    def _context(self, mode, N, Dp=None, da=None):
        """The augmented right-hand side's int and float context (see ``_adjoint.augmented_rhs``);
        ``Dp`` (k, m): the parameter directions of forward sensitivities; ``da`` the derivative
        kernel's address (default this solve's: a jvp for forward sensitivities, else a vjp)."""
        P, n, m = self.P, self.n, self.m
        S, deg = P.tab.D.shape
        miw = P.fn.iw
        da = self.va if da is None else da
        k = 0 if Dp is None else Dp.shape[0]
        head = np.array(
            [self.fa[0], self.fa[1], da[0], da[1], n, m, mode, N, S, deg, miw.shape[0], self.fw.shape[0], k],
            dtype=np.int64,
        )
        iw = np.concatenate([head, miw]).astype(np.int64)
        tail = 2 * N + N * n + N * S * n + S * deg + 2 * n + m
        fw = np.zeros(self.fw.shape[0] + tail + k * m)
        if k:
            fw[self.fw.shape[0] + tail :] = Dp.ravel()
        if N:
            o = self.fw.shape[0]
            fw[o : o + N] = self.st_t[:N]
            o += N
            fw[o : o + N] = self.st_h[:N]
            o += N
            fw[o : o + N * n] = self.st_u[:N].ravel()
            o += N * n
            fw[o : o + N * S * n] = self.st_k[:N].ravel()
            o += N * S * n
            fw[o : o + S * deg] = P.tab.D.ravel()
        return iw, fw

    def _tolerances(self):
        sens, P = self.sensitivity, self.P
        rtol = sens.rtol if sens.rtol is not None else float(P.rtol.min())
        atol = sens.atol if sens.atol is not None else float(P.atol.min())
        return np.array([rtol]), np.array([atol])

    def _aug_solve(self, iw, fw, z0, t_from, t_to, jumps, ts_save=None, tstops=None, tol=None, keep_dt0=False):
        P = self.P
        nz = z0.shape[0]
        S = P.S
        opt = P.opt.copy()
        opt[RK.O_T0], opt[RK.O_T1] = t_from, t_to
        iopt = P.iopt.copy()
        iopt[RK.I_STORE] = RK.STORE_NONE
        iopt[RK.I_HASG] = 0
        if iopt[RK.I_ADAPTIVE] and not keep_dt0:
            opt[RK.O_DT0] = 0.0
        rtol, atol = self._tolerances() if tol is None else tol
        ts = np.zeros(0) if ts_save is None else ts_save
        us = np.full((ts.shape[0], nz), np.nan)
        stats = np.zeros(RK.NSTATS, dtype=np.int64)
        fres = np.zeros(2)
        zend = np.empty(nz)
        st1 = np.zeros(1)
        status = RK.rk_solve(
            _augmented_addresses(),
            iw,
            fw,
            _no_event_addresses(),
            P.tab.A,
            P.tab.b,
            P.tab.c,
            P.tab.b_err_or_zero,
            P.tab.D,
            opt,
            iopt,
            rtol,
            atol,
            z0,
            P.p,
            ts,
            us,
            np.zeros(0) if tstops is None else tstops,
            *jumps,
            st1,
            st1,
            np.zeros((1, nz)),
            np.zeros((1, S, nz)),
            np.zeros(1, dtype=np.int64),
            np.zeros((S, nz)),
            np.zeros(5 * nz + S),
            stats,
            fres,
            zend,
        )
        self.adjoint_stats = _stats(stats)
        if status != RK.OK:
            sol = ODESolution(
                ts.copy(), us, float(fres[RK.R_T]), zend, _RETCODES.get(status, "failure"), dict(self.adjoint_stats)
            )
            what = "forward sensitivity" if isinstance(self.sensitivity, ForwardSensitivity) else "adjoint"
            try:
                _raise(status, sol, {"max_steps": P.max_steps, "t1": t_to})
            except Exception as e:
                raise type(e)(f"the {what} solve failed: {e}", e.t, e.status, e.solution) from None
        return zend, us

    def _continuous_adjoint(self, g):
        P, n, m = self.P, self.n, self.m
        backsolve = isinstance(self.sensitivity, BacksolveAdjoint)
        mode = ADJ.M_BACKSOLVE if backsolve else ADJ.M_INTERP
        N = 0 if backsolve else int(self.stats_arr[RK.S_NSTORED])
        t_end = float(self.fres[RK.R_T])
        iw, fw = self._context(mode, N)
        jt, jk, ji, jv, jp = P.jumps
        nj = int(self.stats_arr[RK.S_NJUMPS])
        dirn = self.dirn
        lam_off = n if backsolve else 0
        mu_off = lam_off + n
        # stretches of steps between jumps (interpolating): the steps lo..hi below each jump time
        seg_at = {}
        if not backsolve:
            st_j = self.st_j[:N]
            ends = np.flatnonzero(st_j >= 0)
            starts = np.concatenate([[0], ends + 1])
            last_lo = 0 if N == 0 else (int(starts[-1]) if starts[-1] <= N - 1 else int(starts[-2]))
            for k_i, k in enumerate(ends):
                tk = float(self.st_t[k + 1]) if k + 1 < N else t_end
                seg_at[tk] = (int(starts[k_i]), int(k))
        jumps_at = {}
        for q in range(nj):
            jumps_at.setdefault(float(jt[q]), []).append(q)
        saves_at = {}
        for i, t in enumerate(P.ts):
            saves_at.setdefault(float(t), []).append(i)
        times = sorted(set(jumps_at) | set(saves_at), key=lambda t: -dirn * t)
        rows = []
        if backsolve:
            rowmap = {float(t): i for i, t in enumerate(self.ts_fwd)}
            total = np.zeros(n)
            for q in range(nj):
                if jk[q] == RK.J_INPUT and (jt[q] - t_end) * dirn < 0:
                    total[ji[q]] += jv[q]
            for j in range(n):
                if total[j] != 0.0:
                    rows.append((t_end, RK.J_INPUT, j, total[j], -1))
        for tau in times:
            for q in reversed(jumps_at.get(tau, ())):
                kind = jk[q]
                if kind == RK.J_BOLUS and jp[q] >= 0:
                    rows.append((tau, RK.J_AXPY, mu_off + jp[q], jv[q], lam_off + ji[q]))
                elif kind == RK.J_RESET:
                    rows.extend((tau, RK.J_SET, lam_off + j, 0.0, -1) for j in range(n))
                elif kind == RK.J_SET:
                    rows.append((tau, RK.J_SET, lam_off + ji[q], 0.0, -1))
                elif kind == RK.J_INPUT and backsolve and tau != t_end:
                    rows.append((tau, RK.J_INPUT, ji[q], -jv[q], -1))
            for i in saves_at.get(tau, ()):
                rows.extend((tau, RK.J_BOLUS, lam_off + j, g[i, j], -1) for j in range(n) if g[i, j] != 0.0)
            if backsolve and tau != P.t0 and tau in rowmap:
                u_left = self.us_fwd[rowmap[tau]]
                rows.extend((tau, RK.J_SET, j, u_left[j], -1) for j in range(n))
            if not backsolve and tau in seg_at:
                lo, hi = seg_at[tau]
                rows.append((tau, RK.J_SET, n + m, float(lo), -1))
                rows.append((tau, RK.J_SET, n + m + 1, float(hi), -1))
        jumps = _rows_to_arrays(rows)
        if backsolve:
            z0 = np.zeros(2 * n + m)
            z0[:n] = self.uend
        else:
            z0 = np.zeros(n + m + 2)
            z0[n + m] = last_lo if N else 0
            z0[n + m + 1] = N - 1
        # the forward's known discontinuities (and, for Vern7, its save points) bound the adjoint's steps too
        rtol, atol = self._tolerances()
        if not backsolve:  # the two stretch markers are bookkeeping, not state: out of the error norm
            rtol = np.r_[np.full(n + m, rtol[0]), 0.0, 0.0]
            atol = np.r_[np.full(n + m, atol[0]), 1e300, 1e300]
        zend, _ = self._aug_solve(
            iw, fw, z0, t_end, P.t0, jumps, tstops=np.ascontiguousarray(P.tstops[::-1]), tol=(rtol, atol)
        )
        return zend[mu_off : mu_off + m].copy(), zend[lam_off : lam_off + n].copy()

    def _forward_sensitivity_jumps(self, Dp):
        """The jumps of the forward-sensitivity system along the directions Dp (k, m)."""
        P, n = self.P, self.n
        jt, jk, ji, jv, jp = P.jumps
        rows = []
        for q in range(jt.shape[0]):
            t, kind, idx, val, pidx = float(jt[q]), int(jk[q]), int(ji[q]), float(jv[q]), int(jp[q])
            rows.append((t, kind, idx, val, pidx))
            if kind == RK.J_BOLUS and pidx >= 0:
                rows.extend(
                    (t, RK.J_BOLUS, n + d * n + idx, val * Dp[d, pidx], -1)
                    for d in range(Dp.shape[0])
                    if Dp[d, pidx] != 0.0
                )
            elif kind == RK.J_SET:
                rows.extend((t, RK.J_SET, n + d * n + idx, 0.0, -1) for d in range(Dp.shape[0]))
        return _rows_to_arrays(rows)

    def _jump_tangent_rows(self, base, Dp, dval, dtime):
        """``base`` (the forward-sensitivity jumps) plus the tangent jumps of moving values and times."""
        P, n = self.P, self.n
        k = Dp.shape[0]
        nj = P.jumps[0].shape[0]
        dval = np.asarray(dval, dtype=np.float64).reshape(nj, k)[P.jorder]
        dtime = np.asarray(dtime, dtype=np.float64).reshape(nj, k)[P.jorder]
        delta = None
        if np.any(dtime != 0.0):  # F- - F+ at each jump, from one forward and one reverse pass
            self.forward()
            self.pullback(np.zeros(self.us.shape), jumps=True)
            delta = self.jg[:, 2:].copy()
        jt, jk, ji, jv, jp = P.jumps
        rows = list(zip(*(a.tolist() for a in base)))
        for q in range(nj):
            t, kind, idx = float(jt[q]), int(jk[q]), int(ji[q])
            for d in range(k):
                if dval[q, d] != 0.0:
                    if kind == RK.J_BOLUS:
                        rows.append(
                            (t, RK.J_BOLUS, n + d * n + idx, dval[q, d] * (P.p[jp[q]] if jp[q] >= 0 else 1.0), -1)
                        )
                    elif kind == RK.J_INPUT:
                        rows.append((t, RK.J_INPUT, n + d * n + idx, dval[q, d], -1))
                    else:
                        raise ValueError("only boluses and inputs can have values that depend on parameters")
                if delta is not None and dtime[q, d] != 0.0:
                    rows.extend(
                        (t, RK.J_BOLUS, n + d * n + j, delta[q, j] * dtime[q, d], -1)
                        for j in range(n)
                        if delta[q, j] != 0.0
                    )
        rows.sort(key=lambda r: self.dirn * r[0])  # (stable: a jump's tangents stay after it)
        return _rows_to_arrays(rows)

    def _forward_sensitivity(self):
        P, n, m = self.P, self.n, self.m
        nz = n + n * (n + m)
        z0 = np.zeros(nz)
        z0[:n] = P.u0
        for d in range(n):
            z0[n + d * n + d] = 1.0
        iw, fw = self._context(ADJ.M_FORWARD, 0, self._fs_dirs)
        zend, zs = self._aug_solve(iw, fw, z0, P.t0, P.t1, self._fs_jumps, P.ts, P.tstops)
        self.stats = self.adjoint_stats
        self.fres[RK.R_T] = P.t1
        self.uend[:] = zend[:n]
        self.us[:] = zs[:, :n]
        value, g = self._loss_gradient()
        sens = zs[:, n:].reshape(zs.shape[0], n + m, n)
        grad = np.einsum("qj,qdj->d", g, sens)
        return value, grad[n:].copy(), grad[:n].copy()

    def directional_sensitivities(self, p, Dp, u0=None, Du0=None, jump_tangents=None):
        """The saved states and their derivatives along parameter directions, in one solve.

        ``Dp`` (k, m): k directions in parameter space; ``Du0`` (k, n), optional: the initial
        state's derivative along each (when u0 itself depends on p, e.g. a steady state).
        Returns ``(u, S)`` with ``u`` (n_saves, n) and ``S`` (n_saves, k, n) = du(t_i)/dp · Dp[d]
        (plus du(t_i)/du0 · Du0[d]).  ``jump_tangents`` (dval, dtime), each (n_jumps, k) in the
        order the jumps were added: the jumps' values and times along each direction (doses
        that depend on parameters; a moving time costs one more forward and reverse pass, for
        F- - F+ at each jump).  The sensitivities are
        left out of the error control (tolerances rescaled), so the steps, and ``u``, are
        those of the plain forward solve: ``S`` is the exact derivative of that discrete
        solution with the steps held fixed, as the discrete adjoint's gradient is.
        Costs one solve with k Jacobian-vector products per stage: cheaper than one adjoint
        pass per saved value when k is small (e.g. the random effects of a subject).
        """
        self._set_inputs(p, u0)
        P, n, m = self.P, self.n, self.m
        Dp = np.ascontiguousarray(np.atleast_2d(np.asarray(Dp, dtype=np.float64)))
        if Dp.ndim != 2 or Dp.shape[1] != m:
            raise ValueError(f"`Dp` must have shape (k, {m}), got {np.shape(Dp)}")
        k = Dp.shape[0]
        iw, fw = self._context(ADJ.M_FORWARD, 0, Dp, da=self.fn.jvp_addr)
        nz = n * (1 + k)
        z0 = np.zeros(nz)
        z0[:n] = P.u0
        if Du0 is not None:
            Du0 = np.asarray(Du0, dtype=np.float64)
            if Du0.shape != (k, n) or not np.all(np.isfinite(Du0)):
                raise ValueError(f"`Du0` must be finite with shape ({k}, {n}), got {Du0.shape}")
            z0[n:] = Du0.ravel()
        scale = np.sqrt(n / nz)
        rtol = (
            np.r_[P.rtol * scale, np.zeros(n * k)]
            if P.rtol.shape[0] == n
            else np.r_[np.full(n, P.rtol[0] * scale), np.zeros(n * k)]
        )
        atol = (
            np.r_[P.atol * scale, np.full(n * k, 1e300)]
            if P.atol.shape[0] == n
            else np.r_[np.full(n, P.atol[0] * scale), np.full(n * k, 1e300)]
        )
        jumps = self._forward_sensitivity_jumps(Dp)
        if jump_tangents is not None:
            jumps = self._jump_tangent_rows(jumps, Dp, *jump_tangents)
        _, zs = self._aug_solve(iw, fw, z0, P.t0, P.t1, jumps, P.ts, P.tstops, tol=(rtol, atol), keep_dt0=True)
        return zs[:, :n].copy(), zs[:, n:].reshape(zs.shape[0], k, n)

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
        P = self.P
        return ODESolution(
            P.ts.copy(), self.us.copy(), float(self.fres[RK.R_T]), self.uend.copy(), "success", dict(self.stats)
        )


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
