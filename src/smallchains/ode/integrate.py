"""``solve``: the Python face of the compiled Runge–Kutta solver, its options and its solution."""

from __future__ import annotations

import functools

import numpy as np

from .._jit import COMPILE_SECONDS, feature
from . import _kernels as RK
from ._guard import check_rhs
from .problem import _adapt_event, _no_event, as_ode_function, event_addresses
from .tableau import ButcherTableau, Tsit5

# --------------------------------------------------------------------------- errors


class ODESolveError(RuntimeError):
    """The solver stopped before the end of the time span.

    Attributes: ``t`` (the time reached), ``status`` (a short code) and ``solution``
    (an :class:`ODESolution` up to ``t``; its save points beyond ``t`` are NaN).
    """

    def __init__(self, message, t, status, solution):
        super().__init__(message)
        self.t = t
        self.status = status
        self.solution = solution


class MaxStepsError(ODESolveError):
    pass


class StepSizeUnderflowError(ODESolveError):
    pass


class NonFiniteStateError(ODESolveError):
    pass


_RETCODES = {
    RK.OK: "success",
    RK.MAX_STEPS: "max_steps",
    RK.DT_UNDERFLOW: "dt_underflow",
    RK.NONFINITE: "nonfinite",
    RK.TERMINATED: "terminated",
}


def _raise(status, sol, opts):
    t = sol.t_final
    if status == RK.MAX_STEPS:
        raise MaxStepsError(
            f"the solver took max_steps={opts['max_steps']} steps and reached t = {t:.6g} of "
            f"{opts['t1']:.6g}; raise max_steps, loosen rtol/atol, or check for a stiff or fast-oscillating "
            "problem",
            t,
            "max_steps",
            sol,
        )
    if status == RK.DT_UNDERFLOW:
        raise StepSizeUnderflowError(
            f"the step size fell below dtmin (or the floating-point resolution of t) at t = {t:.6g}; the "
            "problem is probably stiff (use looser tolerances, or rescale time), or the solution blows up "
            "there (a finite-time singularity)",
            t,
            "dt_underflow",
            sol,
        )
    if status == RK.NONFINITE:
        raise NonFiniteStateError(
            f"the state became NaN or Inf at t = {t:.6g} and smaller steps did not help; check the "
            "right-hand side and the parameters (an overflow, a log or sqrt of a negative value, "
            "a division by zero)",
            t,
            "nonfinite",
            sol,
        )
    raise RuntimeError(f"internal error: unknown solver status {status}")  # pragma: no cover


# --------------------------------------------------------------------------- jumps


class Jumps:
    """A schedule of state jumps and input switches at known times (doses, infusions).

    Build it with chained calls; times may come in any order (events at the same time
    keep the order they were added in)::

        jumps = (sc.Jumps().bolus(0.0, 0, 320.0)                # u[0] += 320 at t = 0
                           .infusion(12.0, 1, rate=50.0, duration=2.0)
                           .bolus(24.0, 0, 320.0, scale_param=4))  # u[0] += 320 * p[4]

    The solver stops exactly at each time, applies the jumps, and restarts the method
    there (no stage is reused across a jump).  A save point at a jump's time gets the
    value just before it.  Schedules are data: a new schedule costs no compilation.
    """

    def __init__(self):
        self._rows = []

    def _add(self, t, kind, idx, val, pidx):
        t = float(t)
        if not np.isfinite(t):
            raise ValueError(f"jump time must be finite, got {t!r}")
        if not np.isfinite(val):
            raise ValueError(f"jump amount must be finite, got {val!r}")
        self._rows.append((t, int(kind), int(idx), float(val), int(pidx), len(self._rows)))
        return self

    def bolus(self, t, state, amount, scale_param=None):
        """``u[state] += amount`` (times ``p[scale_param]``, e.g. a bioavailability) at time ``t``."""
        return self._add(t, RK.J_BOLUS, state, amount, -1 if scale_param is None else scale_param)

    def input(self, t, state, rate):
        """From time ``t`` on, add ``rate`` to du[state]/dt (a zero-order input; negative turns one off)."""
        return self._add(t, RK.J_INPUT, state, rate, -1)

    def infusion(self, t, state, rate, duration):
        """A zero-order infusion of ``rate`` into ``state`` from ``t`` to ``t + duration``."""
        if not duration > 0:
            raise ValueError(f"infusion duration must be > 0, got {duration!r}")
        self.input(t, state, rate)
        return self.input(t + duration, state, -rate)

    def reset(self, t):
        """Set every state to zero at time ``t`` (NONMEM's EVID 3); inputs keep running."""
        return self._add(t, RK.J_RESET, 0, 0.0, -1)

    def set(self, t, state, value):
        """``u[state] = value`` at time ``t``."""
        return self._add(t, RK.J_SET, state, value, -1)

    def __len__(self):
        return len(self._rows)

    def arrays(self, n_states, n_params, direction=1.0, order=False):
        """(t, kind, idx, val, pidx) arrays sorted in the direction of integration, after checks
        (with ``order``, also each sorted jump's index in the order the jumps were added)."""
        rows = sorted(self._rows, key=lambda r: (direction * r[0], r[5]))
        for r in rows:
            if r[1] != RK.J_RESET and not 0 <= r[2] < n_states:
                raise ValueError(
                    f"a jump at t = {r[0]:g} targets state {r[2]}, but there are {n_states} states (0..{n_states - 1})"
                )
            if r[4] >= n_params or r[4] < -1:
                raise ValueError(f"a bolus at t = {r[0]:g} scales by p[{r[4]}], but p has {n_params} entries")
        t = np.array([r[0] for r in rows], dtype=np.float64)
        kind = np.array([r[1] for r in rows], dtype=np.int64)
        idx = np.array([r[2] for r in rows], dtype=np.int64)
        val = np.array([r[3] for r in rows], dtype=np.float64)
        pidx = np.array([r[4] for r in rows], dtype=np.int64)
        if order:
            return (t, kind, idx, val, pidx), np.array([r[5] for r in rows], dtype=np.int64)
        return t, kind, idx, val, pidx

    def __repr__(self):
        return f"Jumps({len(self._rows)} events)"


# --------------------------------------------------------------------------- controller


class PIController:
    """The adaptive step-size controller: PI control of the scaled error norm.

    h_new = h / q with q = err^beta1 / err_prev^beta2 / safety, clipped to
    [1/qmax, 1/qmin]; a rejected step shrinks by min(1/qmin, err^beta1/safety).
    The defaults (beta1 = 0.7/(k+1), beta2 = 0.4/(k+1), k the embedded order; safety 0.9,
    qmin 0.2, qmax 10) are OrdinaryDiffEq's.  ``PIController(beta2=0)`` is the classic
    I (integral) controller.
    """

    def __init__(self, beta1=None, beta2=None, safety=0.9, qmin=0.2, qmax=10.0):
        if not 0 < safety <= 1:
            raise ValueError(f"`safety` must be in (0, 1], got {safety!r}")
        if not (0 < qmin < 1 < qmax):
            raise ValueError(f"need 0 < qmin < 1 < qmax, got qmin={qmin!r}, qmax={qmax!r}")
        self.beta1, self.beta2, self.safety, self.qmin, self.qmax = beta1, beta2, safety, qmin, qmax

    def coefficients(self, k):
        b1 = 0.7 / (k + 1) if self.beta1 is None else float(self.beta1)
        b2 = 0.4 / (k + 1) if self.beta2 is None else float(self.beta2)
        return b1, b2

    def __repr__(self):
        return (
            f"PIController(beta1={self.beta1}, beta2={self.beta2}, safety={self.safety}, "
            f"qmin={self.qmin}, qmax={self.qmax})"
        )


# --------------------------------------------------------------------------- solution


class ODESolution:
    """What :func:`solve` returns.

    Attributes:
        t: the save times (``saveat``), or the step boundaries when no ``saveat`` was given.
        u: the states there, shape (len(t), n_states).
        t_final, u_final: where the solve stopped (the end, or a terminating event).
        retcode: "success" or "terminated" (an event stopped it).
        stats: dict with ``naccept``, ``nreject``, ``nf`` (right-hand side evaluations).

    With ``dense=True`` (the default without ``saveat``), calling ``sol(t)`` evaluates the
    method's own continuous extension anywhere in the span (a scalar or an array of times).
    """

    def __init__(self, t, u, t_final, u_final, retcode, stats, dense_data=None, tableau=None):
        self.t, self.u = t, u
        self.t_final, self.u_final = t_final, u_final
        self.retcode = retcode
        self.stats = stats
        self._dense = dense_data
        self.tableau = tableau

    @property
    def dense(self) -> bool:
        return self._dense is not None

    def __call__(self, t):
        if self._dense is None:
            raise ValueError(
                "this solution has no dense output: solve with dense=True (the default when "
                "no saveat is given) to evaluate it at arbitrary times"
            )
        st_t, st_h, st_u, st_k, nst = self._dense
        tq = np.atleast_1d(np.asarray(t, dtype=np.float64))
        out = np.empty((tq.shape[0], st_u.shape[1]))
        if RK.dense_eval(self.tableau.D, st_t, st_h, st_u, st_k, nst, np.ascontiguousarray(tq), out) != 0:
            lo, hi = st_t[0], st_t[nst - 1] + st_h[nst - 1]
            raise ValueError(f"times must lie in the solved span [{min(lo, hi):g}, {max(lo, hi):g}]")
        return out[0] if np.ndim(t) == 0 else out

    def __repr__(self):
        return (
            f"ODESolution(retcode={self.retcode!r}, t_final={self.t_final:g}, {len(self.t)} saved points, "
            f"{self.stats['naccept']} steps, {self.stats['nreject']} rejected, {self.stats['nf']} f-evaluations)"
        )


# --------------------------------------------------------------------------- solve


def _tol(name, v, n):
    a = np.atleast_1d(np.asarray(v, dtype=np.float64))
    if a.ndim != 1 or a.shape[0] not in (1, n):
        raise ValueError(f"`{name}` must be a scalar or have one entry per state ({n}), got shape {np.shape(v)}")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"`{name}` must be finite and >= 0, got {v!r}")
    return np.ascontiguousarray(a)


def _vector(name, v, n=None):
    a = np.asarray(v)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"`{name}` must be a real array, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float64).reshape(-1) if a.ndim <= 1 else None
    if a is None:
        raise ValueError(f"`{name}` must be a 1-D vector, got shape {np.shape(v)}")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"`{name}` has {a.shape[0]} entries, expected {n}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"`{name}` contains NaN or Inf")
    return a


class _Prepared:
    """Everything the kernel needs, checked once (reused by the sensitivities)."""

    __slots__ = (
        "fn",
        "tab",
        "u0",
        "p",
        "t0",
        "t1",
        "ts",
        "opt",
        "iopt",
        "rtol",
        "atol",
        "tstops",
        "jumps",
        "jorder",
        "ga",
        "g",
        "n",
        "S",
        "max_steps",
    )


def prepare(
    f,
    u0,
    tspan,
    p,
    *,
    solver=None,
    rtol=1e-6,
    atol=1e-6,
    saveat=None,
    dt=None,
    dt0=None,
    dtmin=0.0,
    dtmax=None,
    max_steps=100_000,
    controller=None,
    jumps=None,
    tstops=None,
    event=None,
    event_direction=0,
    store=False,
    check=True,
):
    fn = as_ode_function(f)
    tab = Tsit5() if solver is None else solver
    if not isinstance(tab, ButcherTableau):
        raise TypeError(f"`solver` must be a method object such as sc.Tsit5(), got {tab!r}")
    u0 = _vector("u0", u0)
    n = u0.shape[0]
    if n == 0:
        raise ValueError("`u0` is empty; an ODE needs at least one state")
    if fn.n_states is not None and n != fn.n_states:
        raise ValueError(f"`u0` has {n} entries but the right-hand side has {fn.n_states} states")
    p = np.zeros(0) if p is None else _vector("p", p)
    if fn.n_params is not None and p.shape[0] != fn.n_params:
        raise ValueError(
            f"`p` has {p.shape[0]} entries but the right-hand side needs {fn.n_params} "
            "(for a neural ODE: chain.init_params(dtype=np.float64))"
        )
    try:
        t0, t1 = (float(v) for v in tspan)
    except (TypeError, ValueError):
        raise ValueError(f"`tspan` must be a pair (t0, t1), got {tspan!r}") from None
    if not (np.isfinite(t0) and np.isfinite(t1)):
        raise ValueError(f"`tspan` must be finite, got {tspan!r}")
    dirn = 1.0 if t1 >= t0 else -1.0
    if saveat is None:
        ts = np.zeros(0)
    else:
        ts = np.ascontiguousarray(np.atleast_1d(np.asarray(saveat, dtype=np.float64)))
        if ts.ndim != 1:
            raise ValueError("`saveat` must be a 1-D array of times")
        if not np.all(np.isfinite(ts)):
            raise ValueError("`saveat` contains NaN or Inf")
        if np.any(np.diff(ts) * dirn < 0):
            raise ValueError(
                "`saveat` must be sorted in the direction of integration "
                f"({'increasing' if dirn > 0 else 'decreasing'} for tspan={tspan})"
            )
        lo, hi = min(t0, t1), max(t0, t1)
        if ts.size and (ts.min() < lo or ts.max() > hi):
            raise ValueError(f"`saveat` times must lie in the span [{lo:g}, {hi:g}]")
    rtol_a = _tol("rtol", rtol, n)
    atol_a = _tol("atol", atol, n)
    if tab.adaptive and dt is None and np.all(rtol_a == 0) and np.all(atol_a == 0):
        raise ValueError("`rtol` and `atol` are both zero; give positive tolerances")
    adaptive = tab.adaptive and dt is None
    if not tab.adaptive and dt is None:
        raise ValueError(f"{tab!r} has no error estimate: give a fixed step `dt`")
    if dt is not None and not (np.isfinite(dt) and dt > 0):
        raise ValueError(f"`dt` must be a positive step size, got {dt!r}")
    ctrl = PIController() if controller is None else controller
    if not isinstance(ctrl, PIController):
        raise TypeError(f"`controller` must be a sc.PIController, got {ctrl!r}")
    k = tab.adaptive_order if tab.adaptive else tab.order
    b1, b2 = ctrl.coefficients(k)
    if max_steps is None or int(max_steps) < 1:
        raise ValueError(f"`max_steps` must be a positive integer, got {max_steps!r}")
    if dtmax is not None and not dtmax > 0:
        raise ValueError(f"`dtmax` must be > 0, got {dtmax!r}")
    if not dtmin >= 0:
        raise ValueError(f"`dtmin` must be >= 0, got {dtmin!r}")
    opt = np.zeros(RK.NOPT)
    opt[RK.O_T0], opt[RK.O_T1] = t0, t1
    if dt0 is not None and not (np.isfinite(dt0) and dt0 > 0):
        raise ValueError(f"`dt0` must be a positive step size, got {dt0!r}")
    opt[RK.O_DT0] = float(dt) if dt is not None else (0.0 if dt0 is None else float(dt0))
    opt[RK.O_DTMIN] = float(dtmin)
    opt[RK.O_DTMAX] = 0.0 if dtmax is None else float(dtmax)
    opt[RK.O_BETA1], opt[RK.O_BETA2] = b1, b2
    opt[RK.O_GAMMA], opt[RK.O_QMIN], opt[RK.O_QMAX] = ctrl.safety, ctrl.qmin, ctrl.qmax
    iopt = np.zeros(RK.NIOPT, dtype=np.int64)
    iopt[RK.I_S] = tab.stages
    iopt[RK.I_FSAL] = int(tab.fsal)
    iopt[RK.I_ADAPTIVE] = int(adaptive)
    iopt[RK.I_MAXSTEPS] = int(max_steps)
    iopt[RK.I_STORE] = int(store)
    iopt[RK.I_ORDER] = k
    if tstops is None:
        stops = np.zeros(0)
    else:
        stops = np.asarray(tstops, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(stops)):
            raise ValueError("`tstops` contains NaN or Inf")
        stops = np.ascontiguousarray(np.sort(stops)[::-1] if dirn < 0 else np.sort(stops))
    if tab.hermite and tab.dense_order < tab.order - 1 and ts.size:
        # a high-order method without its own interpolant (Vern7): step to the save points
        # rather than lose its accuracy to cubic Hermite interpolation between them
        stops = np.unique(np.concatenate([stops, ts]))
        stops = np.ascontiguousarray(stops[::-1] if dirn < 0 else stops)
    if jumps is None:
        jumps = Jumps()
    if not isinstance(jumps, Jumps):
        raise TypeError(f"`jumps` must be a sc.Jumps schedule, got {type(jumps).__name__}")
    jarr, jorder = jumps.arrays(n, p.shape[0], dirn, order=True)
    # Inputs switched on or off before t0 are in force from t0 on (exact: the rate at t0 is their
    # sum), so they are moved to t0 in the schedule itself, for every consumer (the solver, the
    # adjoints' jump conditions).  A bolus, set or reset before t0 has no such meaning (there is
    # no solution before t0 for it to decay along): refused.
    before = (jarr[0] - t0) * dirn < 0.0
    instant = before & (jarr[1] != RK.J_INPUT)
    if np.any(instant):
        k = int(np.flatnonzero(instant)[0])
        kinds = {RK.J_RESET: "reset", RK.J_SET: "set"}
        raise ValueError(
            f"a {kinds.get(int(jarr[1][k]), 'bolus')} at t = {jarr[0][k]:g} lies before the start of the "
            f"solve, t0 = {t0:g}: start the solve at or before it (tspan), or leave it out"
        )
    if np.any(before):
        jarr = (np.where(before, t0, jarr[0]),) + tuple(jarr[1:])
    if event is None:
        g = _no_event_addresses()
        gfun = _no_event
    else:
        gfun = _adapt_event(event)
        g = event_addresses(gfun)
        iopt[RK.I_HASG] = 1
        if event_direction not in (-1, 0, 1):
            raise ValueError(f"`event_direction` must be -1, 0 or 1, got {event_direction!r}")
        iopt[RK.I_GDIR] = int(event_direction)
    if check:
        check_rhs(fn, u0, p, t0)
    P = _Prepared()
    P.fn, P.tab, P.u0, P.p, P.t0, P.t1, P.ts = fn, tab, u0, p, t0, t1, ts
    # P.g keeps the event function's dispatcher alive while the kernel holds its addresses
    P.opt, P.iopt, P.rtol, P.atol, P.tstops, P.jumps, P.ga, P.g = opt, iopt, rtol_a, atol_a, stops, jarr, g, gfun
    P.n, P.S, P.max_steps = n, tab.stages + 1, int(max_steps)
    P.jorder = jorder  # P.jumps[k][i] is the jorder[i]-th jump added to the schedule
    return P


_CAP_HINTS = {}


@functools.lru_cache(maxsize=1)
def _no_event_addresses():
    return event_addresses(_no_event)


def solver_args(P, fa, iw, fw, ga, opt, iopt, rtol, atol, ts, us, tstops, jumps, storage, K, wk, stats, fres, uend):
    """``RK.rk_solve``'s arguments around ``(u0, p)``, as two tuples ``(before, after)``.

    The one statement of the kernel's argument layout on the Python side: the plain solve
    (:func:`run`), the recording solve and the augmented (adjoint, sensitivity) solves of
    :class:`smallchains.ode.recording.Recording` all call ``rk_solve(*before, u0, p, *after)``.
    ``P`` gives the tableau; ``jumps`` is the five arrays of a schedule, ``storage`` the five
    buffers of the recorded steps (``st_t, st_h, st_u, st_k, st_j``).
    """
    tab = P.tab
    before = (fa, iw, fw, ga, tab.A, tab.b, tab.c, tab.b_err_or_zero, tab.D, opt, iopt, rtol, atol)
    return before, (ts, us, tstops, *jumps, *storage, K, wk, stats, fres, uend)


def run(P, store, cap=None):
    """Run the kernel; returns (status, stats, fres, us_save, uend, storage or None)."""
    n, S = P.n, P.S
    P.iopt[RK.I_STORE] = int(store)
    us = np.full((P.ts.shape[0], n), np.nan)
    uend = np.empty(n)
    stats = np.zeros(RK.NSTATS, dtype=np.int64)
    fres = np.zeros(2)
    K = np.zeros((S, n))
    wk = np.zeros(5 * n + S)
    fw = P.fn.workspace(n, P.p.shape[0])  # per call: solves of one model may run in several threads
    key = (id(P.fn), P.tab.name)
    if store:
        cap = cap or _CAP_HINTS.get(key, 64)
        cap = min(cap, P.max_steps)
    else:
        cap = 0
    while True:
        st_t = np.empty(cap)
        st_h = np.empty(cap)
        st_u = np.empty((cap, n))
        st_k = np.empty((cap, S, n))
        st_j = np.empty(cap, dtype=np.int64)
        before, after = solver_args(
            P,
            P.fn.addr,
            P.fn.iw,
            fw,
            P.ga,
            P.opt,
            P.iopt,
            P.rtol,
            P.atol,
            P.ts,
            us,
            P.tstops,
            P.jumps,
            (st_t, st_h, st_u, st_k, st_j),
            K,
            wk,
            stats,
            fres,
            uend,
        )
        status = RK.rk_solve(*before, P.u0, P.p, *after)
        if status != RK.STORAGE_FULL:
            break
        cap = min(max(2 * cap, 64), P.max_steps + 1)
        us[:] = np.nan
    if store:
        _CAP_HINTS[key] = max(64, int(stats[RK.S_NSTORED] * 1.25) + 8)
        if len(_CAP_HINTS) > 256:
            _CAP_HINTS.clear()
        storage = (st_t, st_h, st_u, st_k, st_j, int(stats[RK.S_NSTORED]))
    else:
        storage = None
    return int(status), stats, fres, us, uend, storage


def _stats(stats):
    return {"naccept": int(stats[RK.S_NACCEPT]), "nreject": int(stats[RK.S_NREJECT]), "nf": int(stats[RK.S_NF])}


def solve(
    f,
    u0,
    tspan,
    p=None,
    *,
    solver=None,
    rtol=1e-6,
    atol=1e-6,
    saveat=None,
    dense=None,
    dt=None,
    dt0=None,
    dtmin=0.0,
    dtmax=None,
    max_steps=100_000,
    controller=None,
    jumps=None,
    tstops=None,
    event=None,
    event_direction=0,
    check=True,
) -> ODESolution:
    """Solve du/dt = f(u, p, t) from ``u0`` over ``tspan = (t0, t1)`` (t1 < t0 integrates backwards).

    Args:
        f: a ``@numba.njit`` function ``f(du, u, p, t)`` writing du in place, an
            :class:`ODEFunction`, a :class:`NeuralODE`, or a chain (a neural ODE).
        u0: the initial state.  p: the parameter vector (float64).
        solver: a method object: ``sc.Tsit5()`` (default), ``sc.DP5()``, ``sc.BS3()``, ``sc.Vern7()``,
            or with ``dt`` the fixed-step ``sc.RK4()``, ``sc.Heun()``, ``sc.Euler()``.
        rtol, atol: tolerances, scalars or one per state (adaptive methods).
        saveat: times at which to return the state (from the method's dense output);
            without it, the step boundaries are returned and ``dense`` defaults to True.
        dense: keep every step so that ``sol(t)`` can be evaluated anywhere.
        dt: a fixed step size: required by the fixed-step methods; with an adaptive method
            it turns adaptivity off.  dt0: the first step of an adaptive solve (default:
            Hairer's automatic choice).  dtmin, dtmax: bounds on the adaptive step.
        max_steps: the budget of step attempts (accepted and rejected).
        controller: a :class:`PIController` (default OrdinaryDiffEq's coefficients).
        jumps: a :class:`Jumps` schedule (doses, infusions, resets).
        tstops: times the solver must step to exactly (known discontinuities).
        event: a ``@numba.njit`` ``g(u, p, t) -> float``: the solve stops where g crosses zero
            (located on the dense output); ``event_direction`` 1/-1 only upward/downward crossings.
        check: evaluate ``f`` once on guarded buffers before solving (once per model and size):
            Numba has no bounds checks, so a right-hand side that reads ``p`` beyond its length or
            writes ``du`` beyond the number of states is refused here, with the index, instead of
            returning a wrong answer or overwriting memory.  ``check=False`` skips it.

    Returns:
        :class:`ODESolution`.

    Raises:
        MaxStepsError, StepSizeUnderflowError (probably stiff), NonFiniteStateError: each names
        the time reached and a remedy, and carries the partial solution.
    """
    with feature("ODE solving", COMPILE_SECONDS["ode"]):
        P = prepare(
            f,
            u0,
            tspan,
            p,
            solver=solver,
            rtol=rtol,
            atol=atol,
            saveat=saveat,
            dt=dt,
            dt0=dt0,
            dtmin=dtmin,
            dtmax=dtmax,
            max_steps=max_steps,
            controller=controller,
            jumps=jumps,
            tstops=tstops,
            event=event,
            event_direction=event_direction,
            check=check,
        )
        if dense is None:
            dense = saveat is None
        store = bool(dense) or saveat is None
        status, stats, fres, us, uend, storage = run(P, store)
    t_final = float(fres[RK.R_T])
    if saveat is None:
        st_t, st_h, st_u, st_k, st_j, nst = storage
        t = np.concatenate([[P.t0], st_t[:nst] + st_h[:nst]])
        ends = np.empty((nst, P.n))
        for i in range(nst):  # each step's own end value (the left limit where a jump follows)
            ends[i] = _step_end(P.tab, st_u[i], st_h[i], st_k[i])
        if nst:
            t[-1] = t_final
            if status == RK.TERMINATED:
                ends[-1] = uend
        u = np.concatenate([P.u0[None, :], ends])
    else:
        t, u = P.ts.copy(), us
    sol = ODESolution(
        t,
        u,
        t_final,
        uend.copy(),
        _RETCODES.get(status, "failure"),
        _stats(stats),
        storage[:4] + (storage[5],) if (storage is not None and dense) else None,
        P.tab,
    )
    if status not in (RK.OK, RK.TERMINATED):
        _raise(status, sol, {"max_steps": P.max_steps, "t1": P.t1})
    return sol


def _step_end(tab, u, h, K):
    return u + h * (tab.b @ K[: tab.stages])
