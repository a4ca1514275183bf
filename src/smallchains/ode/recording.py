"""A recorded forward solve: the internal contract between ``smallchains.ode`` and its users.

Semi-public, as ``equinox.internal`` is to diffrax: not part of the user-facing API (that is
``sc.solve``, ``sc.gradient_function`` and :class:`~smallchains.ode.sensitivity.GradientFunction`),
but the one interface other smallchains packages (``smallchains.pk``) drive the ODE solver
and its derivatives through.  Everything such a package may touch is listed in
:data:`Recording.PUBLIC` and documented below; the rest (names with a leading underscore) is
``ode``'s own and may change (``tests/test_ode_recording.py`` scans ``pk`` for reads of it).

Why one object: a population fit solves each subject thousands of times, asking for the
states at the observations, cotangent pullbacks on them, directional (forward) sensitivities
along the random effects, and moves of doses whose times and amounts depend on parameters.
A :class:`Recording` checks the problem once, owns every buffer those compiled passes read
and write (the save points, the recorded steps, grown on demand and then reused), and binds
the compiled kernels' argument tuples once — in :meth:`Recording._bind`, the only place they
are assembled, rebuilt only when the step buffers grow — so that a call costs a few
attribute reads on top of the compiled work.

What the recorded steps are for is the sensitivity method's business: the method object (see
:mod:`smallchains.ode.sensitivities`) chooses what to store of each step, where to save, and
how to turn a cotangent on the saved states into gradients (``pullback``).

The documented interface (:data:`Recording.PUBLIC`):

``n``, ``m``
    the numbers of states and of parameters.
``method``
    the sensitivity method object.
``states``
    (n_saves, n) the last solve's states at the save points (a buffer: overwritten by the next solve).
``times``, ``end_state``, ``end_time``, ``stats``, ``adjoint_stats``, ``rtol``, ``atol``
    the save times, the state and time where the last solve stopped, its step counts, those
    of the last augmented solve, the (per-state) tolerances.
``set_inputs(p, u0=None)``
    checked new parameters (and initial state; default the one given at construction).
``forward(p=None, u0=None)``
    the recording forward solve (at new inputs, trusted, when given); returns ``states``.
``record(run)``
    run a caller's compiled pass that records into these buffers (see ``fused_args``),
    growing the step storage until it fits.
``fused_args``
    the bound arguments of a compiled pass that solves forward and runs the discrete adjoint
    in one call (``pk/_kernels.subject_data_term``'s layout).
``pullback(g, jumps=False)``
    (dL/dp, dL/du0[, jump derivatives]) of sum(g * states) on the last forward solve.
``directional_sensitivities(p, Dp, u0=None, Du0=None, jump_tangents=None)``
    the states and their derivatives along parameter directions, in one solve.
``directional_args(k)``
    the bound arguments of that solve for a compiled caller that writes the k directions
    itself (:class:`DirectionalArgs`): a population fit's inner loop solves each subject's
    sensitivities along its random effects many times, with new directions each time.
``move_jumps(t, val)``
    new times and values for the schedule's jumps.
``solution()``
    the last forward solve as an :class:`~smallchains.ode.integrate.ODESolution`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _adjoint as ADJ
from . import _kernels as RK
from ._augmented import augmented_addresses, forward_sensitivity_jump_map, forward_sensitivity_jumps, rows_to_arrays
from .integrate import _RETCODES, ODESolution, _no_event_addresses, _raise, _stats, prepare, solver_args
from .sensitivities import SensitivityMethod, auto_sensitivity


def _plain_forward(rec):
    """The recording forward solve with the bound arguments (``record``'s ``run``)."""
    P = rec._P
    return RK.rk_solve(*rec._fwd_a, P.u0, P.p, *rec._fwd_b)


def _checked(name, x, n):
    x = np.asarray(x)
    if x.shape != (n,):
        raise ValueError(f"`{name}` must have shape ({n},), got {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"`{name}` contains NaN or Inf")
    return x


class DirectionalArgs(NamedTuple):
    """A forward-sensitivity solve along k parameter directions, bound for compiled callers
    (:meth:`Recording.directional_args`).

    The caller writes the directions into ``dp`` (k, m; a view into the bound context) and,
    for each row r of the augmented schedule with ``jrow[r]`` >= 0, the jump value
    ``jbase[r] * dp.flat[jrow[r]]`` into ``after[6]`` (a dose scaled by a parameter has a
    tangent dose along each direction); then ``RK.rk_solve(*before, z0, p, *after)`` leaves
    the states at the save points in ``after[1]`` (n_saves, n (1 + k)): the state, then the
    derivative along each direction (n each).  The tolerances leave the sensitivities out of
    the error control, as :meth:`Recording.directional_sensitivities` does (same arrays)."""

    before: tuple
    z0: np.ndarray
    after: tuple
    dp: np.ndarray
    jrow: np.ndarray
    jbase: np.ndarray


class Recording:
    """One ODE problem's recorded forward solve and its derivatives (see the module's docstring).

    Args:
        f, u0, tspan, p: as :func:`smallchains.solve`; ``u0`` is the default initial state and
            ``p`` fixes the number of parameters.
        saveat: the save times (required: the states there are what gets differentiated).
        sensitivity: the method object (default :func:`~smallchains.ode.sensitivities.auto_sensitivity`'s).
        check_derivatives: compare the method's derivative kernel with central differences once.
        **solve_kw: the solver options of :func:`smallchains.solve` (no ``event``: gradients
            through a terminating event are not supported).

    Not reentrant: it owns its buffers, so use one per thread.
    """

    #: the attributes and methods other packages may use (the rest is ``ode``'s)
    PUBLIC = frozenset(
        {
            "n",
            "m",
            "method",
            "states",
            "times",
            "end_state",
            "end_time",
            "stats",
            "adjoint_stats",
            "rtol",
            "atol",
            "set_inputs",
            "forward",
            "record",
            "fused_args",
            "pullback",
            "directional_sensitivities",
            "directional_args",
            "move_jumps",
            "solution",
        }
    )

    def __init__(self, f, u0, tspan, p, *, saveat, sensitivity=None, check_derivatives=True, **solve_kw):
        if solve_kw.get("event") is not None:
            raise ValueError(
                "gradients through terminating events are not supported (the event time would "
                "depend on the parameters); integrate to a fixed end instead"
            )
        # (dense output is internal here: the methods record what they need)
        solve_kw = {k: v for k, v in solve_kw.items() if k not in ("event", "dense")}
        if saveat is None:
            raise ValueError("`saveat` is required: the loss reads the solution at the save points")
        if p is None:
            raise ValueError("`p` is required: the parameters to differentiate with respect to")
        if sensitivity is not None and not isinstance(sensitivity, SensitivityMethod):
            raise TypeError(f"`sensitivity` must be a method object such as sc.DiscreteAdjoint(), got {sensitivity!r}")
        P = prepare(f, u0, tspan, p, saveat=saveat, **solve_kw)
        method = auto_sensitivity(P.n, P.p.shape[0]) if sensitivity is None else sensitivity
        self._P = P
        self._u0 = P.u0 = P.u0.copy()  # the default initial state (not a view of the caller's array)
        fn = P.fn
        n, m, S = P.n, P.p.shape[0], P.S
        #: the numbers of states and of parameters
        self.n, self.m = n, m
        #: the sensitivity method object
        self.method = method
        self._fw = fn.workspace(n, m)
        self._fa = fn.addr
        self._va = method.derivative_address(fn)
        if check_derivatives:  # (the check calls the kernels directly: their user pieces are compiled first)
            method.check_derivatives(fn, P.u0, P.p, P.t0, self._fw)
        self._dirn = 1.0 if P.t1 >= P.t0 else -1.0
        self._ts_fwd, self._rows = method.forward_save_times(P, self._dirn)
        tab = P.tab
        self._aopt = np.zeros(ADJ.NAOPT, dtype=np.int64)
        self._aopt[ADJ.A_S] = tab.stages
        self._aopt[ADJ.A_FSAL] = int(tab.fsal)
        self._aopt[ADJ.A_NJUMP0] = int(np.sum((P.jumps[0] - P.t0) * self._dirn <= 0.0))
        self._K = np.zeros((S, n))
        self._W = np.zeros((S, n))
        self._wk = np.zeros(5 * n + S)
        self._awk = np.zeros(11 * n)
        self._no_jg = np.zeros((0, 2 + n))  # (no jump derivatives requested)
        nj = P.jumps[0].shape[0]
        self._jg = np.zeros((nj, 2 + n))
        # the schedule as added (inputs before t0 already moved to t0), for move_jumps
        inv = np.empty(nj, dtype=np.int64)
        inv[P.jorder] = np.arange(nj)
        self._jumps0 = tuple(a[inv].copy() for a in P.jumps)
        self._stats_arr = np.zeros(RK.NSTATS, dtype=np.int64)
        self._fres = np.zeros(2)
        self._uend = np.empty(n)
        self._us_fwd = np.empty((self._ts_fwd.shape[0], n))
        self._us = self._us_fwd if self._rows is None else np.empty((P.ts.shape[0], n))
        self._aug_stats = np.zeros(RK.NSTATS, dtype=np.int64)
        self._cap = 0
        self._mode = None
        self._last_steps = 0
        #: the step counts of the last augmented solve (adjoint, sensitivities)
        self.adjoint_stats = {}
        self._method_data = method.attach(self)
        self._pullback = method.pullback
        self._fwd_a = self._fwd_b = self._adj_a = self._adj_b = self._adj_c = self.fused_args = None

    # ------------------------------------------------------------------ buffers and bound arguments

    def _storage(self, want):
        """Step buffers for ``want`` steps, as the method says (fewer under a memory budget);
        reallocated (and the arguments rebound) only when they grow or change kind."""
        mode, cap = self.method.storage(self, want)
        if mode == self._mode and cap <= self._cap:
            return  # (big enough: keep the buffers, so the bound arguments stay valid)
        n, S = self.n, self._P.S
        self._st_t = np.empty(cap)
        self._st_h = np.empty(cap)
        self._st_u = np.empty((cap, n))
        self._st_k = np.empty((cap if mode == RK.STORE_ALL else 1, S, n))
        self._st_j = np.empty(cap, dtype=np.int64)
        self._cap, self._mode = cap, mode
        self._bind()

    def _bind(self):
        """Assemble the compiled kernels' argument tuples: the one place they are built.

        ``_fwd_a, _fwd_b``: ``rk_solve(*_fwd_a, u0, p, *_fwd_b)`` (the recording forward solve);
        ``_adj_a, _adj_b, _adj_c``: ``rk_discrete_adjoint(*_adj_a, t_end, p, *_adj_b, g, lam, gp,
        *_adj_c, jg)``; ``fused_args`` = (before, after): ``kernel(*before, p, *after, ...)`` with
        ``before`` = (fa, va, iw, fw, ga, A, b, c, e, D, opt, iopt, rtol, atol, u0 default) and
        ``after`` = (ts, us, tstops, the five jump arrays, the five step buffers, K, wk, stats,
        fres, uend, aopt, W, awk, jg (empty: no jump derivatives)).  The arrays are bound, not
        copied: the inputs' values change in place (``move_jumps``, ``iopt``)."""
        P = self._P
        tab = P.tab
        store = (self._st_t, self._st_h, self._st_u, self._st_k, self._st_j)
        a, b = solver_args(
            P,
            self._fa,
            P.fn.iw,
            self._fw,
            P.ga,
            P.opt,
            P.iopt,
            P.rtol,
            P.atol,
            self._ts_fwd,
            self._us_fwd,
            P.tstops,
            P.jumps,
            store,
            self._K,
            self._wk,
            self._stats_arr,
            self._fres,
            self._uend,
        )
        self._fwd_a, self._fwd_b = a, b
        self._adj_a = (self._fa, self._va, P.fn.iw, self._fw, tab.A, tab.b, tab.c, tab.D, self._aopt)
        self._adj_b = (*store, *P.jumps, P.ts)
        self._adj_c = (self._W, self._K, self._awk)
        #: (before, after) the arguments of a fused forward + discrete-adjoint kernel around ``p``
        self.fused_args = (
            (self._fa, self._va) + a[1:] + (self._u0,),
            b + (self._aopt, self._W, self._awk, self._no_jg),
        )

    # ------------------------------------------------------------------ the documented interface

    @property
    def states(self):
        """(n_saves, n): the last solve's states at the save points (a buffer, reused)."""
        return self._us

    @property
    def times(self):
        """The save times (the ``saveat`` given)."""
        return self._P.ts

    @property
    def end_state(self):
        """The state where the last solve stopped (a buffer, reused)."""
        return self._uend

    @property
    def end_time(self):
        """The time where the last solve stopped."""
        return float(self._fres[RK.R_T])

    @property
    def stats(self):
        """The last solve's step counts: {"naccept", "nreject", "nf"}."""
        return _stats(self._stats_arr)

    @property
    def rtol(self):
        """The forward solve's relative tolerances (one, or one per state)."""
        return self._P.rtol

    @property
    def atol(self):
        """The forward solve's absolute tolerances (one, or one per state)."""
        return self._P.atol

    def set_inputs(self, p, u0=None):
        """New parameters and initial state (default: the one given at construction), checked
        (shapes, finiteness) and kept as contiguous float64 arrays."""
        P = self._P
        P.p = _checked("p", p, self.m)
        P.u0 = self._u0 if u0 is None else _checked("u0", u0, self.n)

    def record(self, run):
        """Call ``run(self)`` (a compiled pass that records the forward steps into these buffers,
        e.g. through :attr:`fused_args`) with storage grown until it fits; returns its status.
        The storage starts at 1.25 times the last solve's steps, so a fit's repeated solves
        allocate nothing after the first few."""
        P = self._P
        want = max(64, int(self._last_steps * 1.25) + 8) if self._last_steps else 64
        while True:
            self._storage(min(want, P.max_steps + 1))
            P.iopt[RK.I_STORE] = self._mode
            status = run(self)
            if status != RK.STORAGE_FULL:
                break
            want = max(2 * self._cap, 64)
        self._last_steps = int(self._stats_arr[RK.S_NSTORED])
        return status

    def forward(self, p=None, u0=None):
        """The recording forward solve; returns :attr:`states` (raises an ODESolveError when
        the solve fails).  With ``p``: solve at these parameters and ``u0`` (default: the
        initial state given at construction), trusted to be contiguous, float64, finite and
        of the right lengths (the hot path of a fit: :meth:`set_inputs` checks); without,
        at the inputs last set."""
        P = self._P
        if p is not None:
            P.p = p
            P.u0 = self._u0 if u0 is None else u0
        status = self.record(_plain_forward)
        if self._rows is not None:
            self._us[:] = self._us_fwd[self._rows]
        if status != RK.OK:
            sol = ODESolution(
                P.ts.copy(),
                self._us.copy(),
                float(self._fres[RK.R_T]),
                self._uend.copy(),
                _RETCODES.get(status, "failure"),
                self.stats,
            )
            _raise(status, sol, {"max_steps": P.max_steps, "t1": P.t1})
        return self._us

    def pullback(self, g, jumps=False):
        """(dL/dp, dL/du0) of L = sum(g * u) at the save points of the last forward solve.

        ``g`` (n_saves, n) is a cotangent on the saved states: after one :meth:`forward`,
        several pullbacks give several rows of a Jacobian (e.g. of each observation) without
        solving forward again.  The method's own reverse pass (adjoint methods only).

        With ``jumps`` (methods with ``jump_derivatives``: the DiscreteAdjoint), also each
        jump's (d/dvalue, d/dtime) as a (n_jumps, 2) array in the order the jumps were added
        (see ``smallchains.ode._adjoint``): the derivatives through doses that depend on
        parameters.
        """
        method = self.method
        if not method.has_pullback:
            raise TypeError(
                "pullback needs an adjoint method (DiscreteAdjoint, InterpolatingAdjoint or "
                f"BacksolveAdjoint), not {type(method).__name__}"
            )
        g = np.ascontiguousarray(g, dtype=np.float64)
        if g.shape != self._us.shape:
            raise ValueError(f"the cotangent has shape {g.shape}; expected {self._us.shape}")
        if jumps and not method.jump_derivatives:
            raise TypeError("jump derivatives need the DiscreteAdjoint")
        return self._pullback(self, g, jumps)

    def move_jumps(self, t, val):
        """Give the schedule's jumps new times and values (arrays in the order the jumps were
        added to the :class:`Jumps`; kinds and targets stay): for doses that depend on
        parameters (a lag moves a dose, a bioavailability scales it).  The arrays the compiled
        passes read are updated in place, re-sorted by time (same-time jumps keep the order
        they were added in).  Differentiated by the DiscreteAdjoint only."""
        P = self._P
        t = np.asarray(t, dtype=np.float64)
        val = np.asarray(val, dtype=np.float64)
        nj = self._jumps0[0].shape[0]
        if t.shape != (nj,) or val.shape != (nj,) or not (np.all(np.isfinite(t)) and np.all(np.isfinite(val))):
            raise ValueError(f"move_jumps needs {nj} finite times and values, got shapes {t.shape}, {val.shape}")
        _, kind, idx, _, pidx = self._jumps0
        before = (t - P.t0) * self._dirn < 0.0
        if np.any(before & (kind != RK.J_INPUT)):
            k = int(np.flatnonzero(before & (kind != RK.J_INPUT))[0])
            raise ValueError(f"a jump moved to t = {t[k]:g}, before the start of the solve t0 = {P.t0:g}")
        t = np.where(before, P.t0, t)
        order = np.lexsort((np.arange(nj), self._dirn * t))
        for dst, src in zip(P.jumps, (t, kind, idx, val, pidx)):
            dst[:] = src[order]
        P.jorder[:] = order
        self._aopt[ADJ.A_NJUMP0] = int(np.sum((P.jumps[0] - P.t0) * self._dirn <= 0.0))

    def directional_sensitivities(self, p, Dp, u0=None, Du0=None, jump_tangents=None):
        """The saved states and their derivatives along parameter directions, in one solve.

        ``Dp`` (k, m): k directions in parameter space; ``Du0`` (k, n), optional: the initial
        state's derivative along each (when u0 itself depends on p, e.g. a steady state).
        Returns ``(u, S)`` with ``u`` (n_saves, n) and ``S`` (n_saves, k, n) = du(t_i)/dp · Dp[d]
        (plus du(t_i)/du0 · Du0[d]).  ``jump_tangents`` (dval, dtime), each (n_jumps, k) in the
        order the jumps were added: the jumps' values and times along each direction (doses
        that depend on parameters; a moving time costs one more forward and reverse pass, for
        F- - F+ at each jump).  The sensitivities are left out of the error control
        (tolerances rescaled), so the steps, and ``u``, are those of the plain forward solve:
        ``S`` is the exact derivative of that discrete solution with the steps held fixed, as
        the discrete adjoint's gradient is.  Costs one solve with k Jacobian-vector products
        per stage: cheaper than one adjoint pass per saved value when k is small (e.g. the
        random effects of a subject).  Any method: the recorded forward solve is left intact.
        """
        self.set_inputs(p, u0)
        P, n, m = self._P, self.n, self.m
        Dp = np.ascontiguousarray(np.atleast_2d(np.asarray(Dp, dtype=np.float64)))
        if Dp.ndim != 2 or Dp.shape[1] != m:
            raise ValueError(f"`Dp` must have shape (k, {m}), got {np.shape(Dp)}")
        k = Dp.shape[0]
        iw, fw = self._context(ADJ.M_FORWARD, 0, Dp, da=P.fn.jvp_addr)
        nz = n * (1 + k)
        z0 = np.zeros(nz)
        z0[:n] = P.u0
        if Du0 is not None:
            Du0 = np.asarray(Du0, dtype=np.float64)
            if Du0.shape != (k, n) or not np.all(np.isfinite(Du0)):
                raise ValueError(f"`Du0` must be finite with shape ({k}, {n}), got {Du0.shape}")
            z0[n:] = Du0.ravel()
        jumps = forward_sensitivity_jumps(P.jumps, n, Dp)
        if jump_tangents is not None:
            jumps = self._jump_tangent_rows(jumps, Dp, *jump_tangents)
        tol = self._sensitivity_tolerances(k)
        _, zs = self._aug_solve(iw, fw, z0, P.t0, P.t1, jumps, tol, P.ts, P.tstops, keep_dt0=True)
        return zs[:, :n].copy(), zs[:, n:].reshape(zs.shape[0], k, n)

    def directional_args(self, k):
        """The arguments of :meth:`directional_sensitivities`' solve along ``k`` directions
        (initial state and schedule as given at construction, no jump tangents), bound once for
        a compiled caller that writes the directions itself: a :class:`DirectionalArgs`.  Its
        buffers are its own (call again for another set); the solve's steps are those of
        :meth:`directional_sensitivities` with the same directions."""
        P, n, m = self._P, self.n, self.m
        k = int(k)
        if k < 1:
            raise ValueError(f"`k` must be a positive number of directions, got {k}")
        iw, fw = self._context(ADJ.M_FORWARD, 0, np.zeros((k, m)), da=P.fn.jvp_addr)
        nz = n * (1 + k)
        z0 = np.zeros(nz)
        z0[:n] = self._u0
        jumps, jrow, jbase = forward_sensitivity_jump_map(P.jumps, n, k, m)
        before, after = self._aug_args(
            iw,
            fw,
            nz,
            P.t0,
            P.t1,
            jumps,
            self._sensitivity_tolerances(k),
            P.ts,
            P.tstops,
            True,
            np.zeros(RK.NSTATS, dtype=np.int64),
        )
        dp = fw[fw.shape[0] - k * m :].reshape(k, m)
        return DirectionalArgs(before, z0, after, dp, jrow, jbase)

    def _sensitivity_tolerances(self, k):
        """(rtol, atol) of a forward-sensitivity solve along k directions: the state's scaled so
        that the error norm over the n (1 + k) components equals the plain solve's, the
        sensitivities' out of the error control."""
        P, n = self._P, self.n
        scale = np.sqrt(n / (n * (1 + k)))
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
        return rtol, atol

    def solution(self):
        """The last forward solve's save points, as an :class:`ODESolution` (no dense output)."""
        P = self._P
        return ODESolution(
            P.ts.copy(), self._us.copy(), float(self._fres[RK.R_T]), self._uend.copy(), "success", self.stats
        )

    # ------------------------------------------------------------------ augmented solves (for the methods)

    def _jump_tangent_rows(self, base, Dp, dval, dtime):
        """``base`` (the forward-sensitivity jumps) plus the tangent jumps of moving values and times."""
        P, n = self._P, self.n
        k = Dp.shape[0]
        nj = P.jumps[0].shape[0]
        dval = np.asarray(dval, dtype=np.float64).reshape(nj, k)[P.jorder]
        dtime = np.asarray(dtime, dtype=np.float64).reshape(nj, k)[P.jorder]
        delta = None
        if np.any(dtime != 0.0):  # F- - F+ at each jump, from one forward and one reverse pass
            self.forward()
            self.pullback(np.zeros(self._us.shape), jumps=True)
            delta = self._jg[:, 2:].copy()
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
        rows.sort(key=lambda r: self._dirn * r[0])  # (stable: a jump's tangents stay after it)
        return rows_to_arrays(rows)

    def _context(self, mode, N, Dp=None, da=None):
        """The augmented right-hand side's int and float context (see ``_adjoint.augmented_rhs``):
        the first ``N`` recorded steps (interpolating adjoint), ``Dp`` (k, m) the parameter
        directions of forward sensitivities; ``da`` the derivative kernel's address (default the
        method's)."""
        P, n, m = self._P, self.n, self.m
        S, deg = P.tab.D.shape
        miw = P.fn.iw
        da = self._va if da is None else da
        k = 0 if Dp is None else Dp.shape[0]
        nfw = self._fw.shape[0]
        head = np.array(
            [self._fa[0], self._fa[1], da[0], da[1], n, m, mode, N, S, deg, miw.shape[0], nfw, k], dtype=np.int64
        )
        iw = np.concatenate([head, miw]).astype(np.int64)
        tail = 2 * N + N * n + N * S * n + S * deg + 2 * n + m
        fw = np.zeros(nfw + tail + k * m)
        if k:
            fw[nfw + tail :] = Dp.ravel()
        if N:
            o = nfw
            fw[o : o + N] = self._st_t[:N]
            o += N
            fw[o : o + N] = self._st_h[:N]
            o += N
            fw[o : o + N * n] = self._st_u[:N].ravel()
            o += N * n
            fw[o : o + N * S * n] = self._st_k[:N].ravel()
            o += N * S * n
            fw[o : o + S * deg] = P.tab.D.ravel()
        return iw, fw

    def _aug_args(self, iw, fw, nz, t_from, t_to, jumps, tol, ts, tstops, keep_dt0, stats):
        """``rk_solve``'s (before, after) around (z0, p) for an augmented system of ``nz`` states
        (context ``iw``, ``fw``) over [t_from, t_to], saved at ``ts``, with fresh buffers: no
        recording, no event, the plain solve's initial step kept or (``keep_dt0`` False,
        adaptive) chosen anew."""
        P = self._P
        S = P.S
        opt = P.opt.copy()
        opt[RK.O_T0], opt[RK.O_T1] = t_from, t_to
        iopt = P.iopt.copy()
        iopt[RK.I_STORE] = RK.STORE_NONE
        iopt[RK.I_HASG] = 0
        if iopt[RK.I_ADAPTIVE] and not keep_dt0:
            opt[RK.O_DT0] = 0.0
        rtol, atol = tol
        st1 = np.zeros(1)
        return solver_args(
            P,
            augmented_addresses(),
            iw,
            fw,
            _no_event_addresses(),
            opt,
            iopt,
            rtol,
            atol,
            ts,
            np.full((ts.shape[0], nz), np.nan),
            tstops,
            jumps,
            (st1, st1, np.zeros((1, nz)), np.zeros((1, S, nz)), np.zeros(1, dtype=np.int64)),
            np.zeros((S, nz)),
            np.zeros(5 * nz + S),
            stats,
            np.zeros(2),
            np.empty(nz),
        )

    def _aug_solve(self, iw, fw, z0, t_from, t_to, jumps, tol, ts_save=None, tstops=None, keep_dt0=False):
        """Solve the augmented system (context ``iw``, ``fw``) from ``z0`` over [t_from, t_to] with
        ``jumps`` (five arrays) and tolerances ``tol`` = (rtol, atol); returns (end state, states
        at ``ts_save``).  Its step counts go to :attr:`adjoint_stats`."""
        P = self._P
        ts = np.zeros(0) if ts_save is None else ts_save
        stats = self._aug_stats
        stats[:] = 0
        before, after = self._aug_args(
            iw,
            fw,
            z0.shape[0],
            t_from,
            t_to,
            jumps,
            tol,
            ts,
            np.zeros(0) if tstops is None else tstops,
            keep_dt0,
            stats,
        )
        us, fres, zend = after[1], after[16], after[17]
        status = RK.rk_solve(*before, z0, P.p, *after)
        self.adjoint_stats = _stats(stats)
        if status != RK.OK:
            sol = ODESolution(
                ts.copy(), us, float(fres[RK.R_T]), zend, _RETCODES.get(status, "failure"), dict(self.adjoint_stats)
            )
            try:
                _raise(status, sol, {"max_steps": P.max_steps, "t1": t_to})
            except Exception as e:
                raise type(e)(f"the {self.method.solve_label} solve failed: {e}", e.t, e.status, e.solution) from None
        return zend, us
