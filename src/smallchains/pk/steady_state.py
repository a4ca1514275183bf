"""NONMEM's steady-state doses (the SS data item): a subject's solve cut into pieces, each
started from a steady state computed for the model at hand.

PREDPP's rules (NONMEM help, "SS data item"), implemented exactly:

* **SS = 1**: the compartment amounts are reset to the steady state reached by giving the
  record's dose (same amount, compartment, rate or duration) every II forever; the dose at
  the record's time is part of it.  Amounts from earlier doses are zeroed out, infusions in
  progress and pending additional doses (ADDL of earlier records) are cancelled.
* **SS = 2**: the amounts become the steady-state amounts *plus* whatever the amounts would
  have been at that time without the steady-state dose (superposition: exact for linear
  kinetics, which is NONMEM's own caveat; for a nonlinear model it computes exactly this
  sum, which is not a steady state of the model).  Infusions in progress and pending doses
  continue.
* **SS = 3**: as SS = 1 (NONMEM uses the existing state only as a starting guess for its
  iterative routines; the result is the same steady state).
* **II = 0, AMT = 0, RATE > 0**: a constant infusion at steady state: the amounts are the
  equilibrium under that input, which then keeps running (until a later SS = 1 dose cuts it).
* An infusion longer than II overlaps the next ones: at steady state ceil(D / II) copies run
  at once, and the ones still running at the record's time continue after it.
* EVID 4 with SS: the reset, then the steady state (SS = 2 after a reset is SS = 1).  A reset
  while an infusion runs or while an earlier record's additional doses are pending (PREDPP
  re-initialises the system) is refused, naming the record.

The steady state of any model, nonlinear and UDEs included, is the fixed point u* = Phi(u*)
of the flow map over one dosing interval (for a constant infusion, over a unit of time under
the constant input: its fixed point is the equilibrium), found by Newton's method with the
map's Jacobian from discrete-adjoint passes (one per state); a linear model converges in one
step.  When Newton fails, the intervals are repeated until the state stops changing (NONMEM's
empirical steady state with its SSTOL-style test), and otherwise :class:`SteadyStateError`
names the record.  Derivatives: the implicit function theorem, du*/dp = (I - Phi_u)^-1 Phi_p,
exact for the discrete flow map; gradients (adjoint) and forward sensitivities of the
predictions chain through the pieces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..ode.integrate import Jumps
from ..ode.recording import Recording
from ..ode.sensitivity import DiscreteAdjoint

#: the horizon (in the data's time unit) of the flow map whose fixed point is a constant infusion's equilibrium
CONSTANT_INFUSION_HORIZON = 1.0


class SteadyStateError(RuntimeError):
    """The steady state of a dose record could not be computed (no fixed point was found)."""

    def __init__(self, message, row):
        super().__init__(message)
        self.row = row


@dataclass
class Periodic:
    """The regimen an SS record's steady state is reached under: ``amount`` into ``state`` every
    ``ii`` as a bolus (``duration`` 0) or an infusion of ``rate`` for ``duration``; ``ii`` 0 and
    ``duration`` inf: a constant infusion."""

    state: int
    amount: float
    ii: float
    duration: float
    rate: float
    row: int

    @property
    def horizon(self):
        return self.ii if self.ii > 0 else CONSTANT_INFUSION_HORIZON

    def running(self):
        """How long each earlier infusion still runs at a dose time, at steady state: D - j II
        for the j >= 1 copies started j intervals before and not finished (none for boluses)."""
        if self.duration == 0 or math.isinf(self.duration):
            return []
        out, j = [], 1
        while j * self.ii < self.duration:
            out.append(self.duration - j * self.ii)
            j += 1
        return out

    def jumps(self, t_end):
        """The schedule of one interval ending at ``t_end`` (a dose at its start)."""
        T = self.horizon
        t0 = t_end - T
        J = Jumps()
        if self.duration == 0:
            J.bolus(t0, self.state, self.amount)
            return J
        J.input(t0, self.state, self.rate)
        if not math.isinf(self.duration) and self.duration < T:
            J.input(t0 + self.duration, self.state, -self.rate)
        for rest in self.running():
            J.input(t0, self.state, self.rate)
            if rest < T:
                J.input(t0 + rest, self.state, -self.rate)
        return J


@dataclass
class Piece:
    """One solve of a subject: from ``t0`` (zero state, or a steady state, plus the previous
    piece's state at ``t0`` when ``add``) with its own jumps ``rows`` (t, kind, state, value)."""

    t0: float
    rows: list = field(default_factory=list)
    steady: Periodic | None = None
    add: bool = False
    t1: float = math.inf  # where the next piece starts
    obs: np.ndarray | None = None  # indices of the observations it predicts
    end_save: bool = False  # the next piece adds this one's state at t1
    own_start: bool = False  # a sample at t0 belongs to this piece (LOCF covariate cuts), not the one before
    pset: int = 0  # which parameter set the piece's dynamics take (time-varying covariates)
    ss_pset: int = 0  # and which its steady state takes

    def jumps(self):
        J = Jumps()
        for t, kind, state, value in self.rows:
            if kind == "bolus":
                J.bolus(t, state, value)
            elif kind == "input":
                J.input(t, state, value)
            else:
                J.reset(t)
        return J


def timeline(doses, first_time, n_states, cmt_to_state=None):
    """Cut a subject's doses (``Subject.doses``, time order) into pieces at its steady-state doses."""
    from .data import DataError

    pieces = [Piece(first_time)]
    active = []  # infusions of the current piece: (start, end, state, rate)
    cancelled = set()
    last_reset = None
    for i, d in enumerate(doses):
        if i in cancelled:
            continue
        cur = pieces[-1]
        if d.kind == "reset":
            ss_next = i + 1 < len(doses) and doses[i + 1].row == d.row and doses[i + 1].ss
            running = [a for a in active if a[1] > d.time]
            pending = [
                j
                for j in range(i + 1, len(doses))
                if j not in cancelled and doses[j].addl > 0 and doses[j].row < d.row and doses[j].time > d.time
            ]
            if (running or pending) and not ss_next:
                what = (
                    "an infusion is still running"
                    if running
                    else f"row {doses[pending[0]].row}'s additional doses (ADDL) are still pending"
                )
                raise DataError(
                    f"row {d.row}: a reset (EVID 3 or 4) while {what}: NONMEM re-initialises the system "
                    "there, which smallchains does not reproduce; end the infusion or the ADDL doses "
                    "before the reset"
                )
            cur.rows.append((d.time, "reset", 0, 0.0))
            last_reset = d.time
            active = []
            continue
        state = (d.cmt - 1) if cmt_to_state is None else cmt_to_state(d.cmt)
        if n_states is not None and not 0 <= state < n_states:
            raise DataError(f"row {d.row}: CMT {d.cmt} is not a compartment of this model ({n_states} states)")
        if d.kind == "infusion" and not (d.duration > 0 and d.rate > 0):
            rate = d.mode == "model_rate"
            what = "rate" if rate else "duration"
            need = f"R{d.cmt}" if rate else f"D{d.cmt} and the data no DUR"
            raise DataError(
                f"row {d.row}: RATE = {-1 if rate else -2} takes the infusion's {what} from the model, "
                f"which has no {need} (a dose parameter: see smallchains.pk.dosing)"
            )
        if d.ss:
            ss = d.ss
            if ss == 2 and last_reset is not None and last_reset == d.time:
                ss = 1  # a reset at this time (EVID 4, or EVID 3 before it): the steady state adds to nothing
            new = Piece(d.time, add=ss == 2)
            new.steady = Periodic(state, d.amount, d.ii, d.duration, d.rate, d.row)
            if ss == 2:
                # the same-time boluses of earlier records and the infusions running now act on the state
                # the steady state adds to (the previous piece's last save is taken before them)
                new.rows = [r for r in cur.rows if r[0] == d.time and r[1] == "bolus"]
                active = [a for a in active if a[1] > d.time]
                for _, end, st, rate in active:
                    new.rows.append((d.time, "input", st, rate))
                    if not math.isinf(end):
                        new.rows.append((end, "input", st, -rate))
            else:
                active = []
                # pending additional doses of earlier records are cancelled (PREDPP)
                cancelled.update(
                    j
                    for j in range(i + 1, len(doses))
                    if doses[j].addl > 0 and doses[j].row < d.row and doses[j].time > d.time
                )
            cur.t1 = d.time
            pieces.append(new)
            cur = new
            for rest in new.steady.running():  # the earlier infusions still running at steady state
                cur.rows += [(d.time, "input", state, d.rate), (d.time + rest, "input", state, -d.rate)]
                active.append((d.time, d.time + rest, state, d.rate))
        if d.kind == "bolus":
            cur.rows.append((d.time, "bolus", state, d.amount))
        else:
            cur.rows.append((d.time, "input", state, d.rate))
            end = d.time + d.duration
            if not math.isinf(end):
                cur.rows.append((end, "input", state, -d.rate))
            active.append((d.time, end, state, d.rate))
    return pieces


def plan(doses, first_time, obs_time, n_states, cmt_to_state=None, covariates=None):
    """The pieces that predict ``obs_time`` (sorted), with their observations assigned.

    A piece predicts the observations in (t0, t1] (the first one from its start on): a sample
    at a dose time sees the state before the dose, so one at a steady-state dose's time belongs
    to the piece before.  Pieces nothing depends on are left out.  ``covariates``: a
    :class:`smallchains.pk.timevarying.CovariateTimeline`; the pieces are then cut where its
    values change, and each gets the index of its values (``pset``; see ``timevarying.assign``)."""
    pieces = timeline(doses, first_time, n_states, cmt_to_state)
    if covariates is not None and covariates.varies:
        from .timevarying import cut

        pieces = cut(pieces, covariates.cuts(), own_start=covariates.rule == "locf")
    t = np.asarray(obs_time, dtype=float)
    if t.size and (t[0] < first_time or np.any(np.diff(t) < 0)):
        raise ValueError(
            f"observation times must be sorted and not before the subject's first record "
            f"({first_time:g}); got {t[0]:g} first"
        )
    for k, pc in enumerate(pieces):
        lo = np.searchsorted(t, pc.t0, side="left" if k == 0 or pc.own_start else "right")
        nxt = pieces[k + 1] if k + 1 < len(pieces) else None
        side = "left" if nxt is not None and nxt.own_start else "right"
        hi = np.searchsorted(t, pc.t1, side=side) if not math.isinf(pc.t1) else t.shape[0]
        pc.obs = np.arange(lo, hi)
    needed = [False] * len(pieces)
    for k in range(len(pieces) - 1, -1, -1):
        later = k + 1 < len(pieces) and needed[k + 1] and pieces[k + 1].add
        pieces[k].end_save = later
        needed[k] = pieces[k].obs.shape[0] > 0 or later
    return [pc for pc, need in zip(pieces, needed) if need]


def _recording(ode, n, tspan, p0, solve_kw, saveat, jumps, check):
    """A piece's (or a steady state's interval's) recorded ODE solve, differentiated by the
    discrete adjoint (see :mod:`smallchains.ode.recording`)."""
    return Recording(
        ode,
        np.zeros(n),
        tspan,
        p0,
        sensitivity=DiscreteAdjoint(),
        check_derivatives=check,
        **dict(solve_kw, saveat=saveat, jumps=jumps),
    )


class _ODEPiece:
    """A piece's ODE solve (a :class:`~smallchains.ode.recording.Recording`) with the interface of
    :class:`smallchains.pk.analytic.AnalyticSolve`: ``run(p, u0)``, ``us``, ``pullback(g)`` ->
    (dL/dp, dL/du0), ``directional_sensitivities(p, Dp, u0=, Du0=)``."""

    def __init__(self, gf):
        self.gf = gf
        self.m = gf.m

    @property
    def us(self):
        return self.gf.states

    def run(self, p, u0):
        return self.gf.forward(p, u0)

    def pullback(self, g):
        return self.gf.pullback(g)

    def directional_sensitivities(self, p, Dp, u0=None, Du0=None):
        return self.gf.directional_sensitivities(p, Dp, u0=u0, Du0=Du0)


class SteadyState:
    """u*(p) and du*/dp for one SS record (see the module's docstring)."""

    max_newton = 50
    max_intervals = 2000

    def __init__(self, ode, n, periodic, t_end, p0, solve_kw, tol):
        self.periodic = periodic
        self.n = n
        self.tol = tol
        T = periodic.horizon
        self.gf = _recording(ode, n, (t_end - T, t_end), p0, solve_kw, np.array([t_end]), periodic.jumps(t_end), False)
        self.atol = np.broadcast_to(self.gf.atol, (n,)).copy()
        self.u = np.zeros(n)  # the last steady state: the next call's starting guess

    def _map(self, p, u, jacobians=True):
        gf = self.gf
        phi = gf.forward(p, np.ascontiguousarray(u, dtype=np.float64))[-1].copy()
        if not jacobians:
            return phi, None, None
        n = self.n
        Pu = np.empty((n, n))
        Pp = np.empty((n, gf.m))
        g = np.zeros((1, n))
        for j in range(n):
            g[0, :] = 0.0
            g[0, j] = 1.0
            Pp[j], Pu[j] = gf.pullback(g)
        return phi, Pu, Pp

    def _converged(self, step, u):
        return bool(np.all(np.abs(step) <= self.tol * np.abs(u) + self.atol))

    def __call__(self, p):
        """(u*, du*/dp): the state just before the dose at steady state, and its derivative."""
        n = self.n
        eye = np.eye(n)
        u = self.u.copy()
        for _ in range(self.max_newton):
            phi, Pu, Pp = self._map(p, u)
            try:
                step = np.linalg.solve(eye - Pu, phi - u)
            except np.linalg.LinAlgError:
                break
            if not np.all(np.isfinite(step)):
                break
            u = u + step
            if self._converged(step, u):
                return self._done(u, Pu, Pp)
        # Newton failed: repeat the interval until the state stops changing (empirical steady state)
        u = np.zeros(n)
        for _ in range(self.max_intervals):
            phi, _, _ = self._map(p, u, jacobians=False)
            if not np.all(np.isfinite(phi)):
                break
            step, u = phi - u, phi
            if self._converged(step, u):
                phi, Pu, Pp = self._map(p, u)
                return self._done(u, Pu, Pp)
        raise SteadyStateError(
            f"row {self.periodic.row}: no steady state found for this dose (Newton's method on "
            f"the one-interval flow map failed and {self.max_intervals} repeated intervals did "
            f"not converge to ss_tol={self.tol:g}); does the model reach one at these parameters "
            f"(e.g. a dosing rate above a saturable elimination's capacity)?",
            self.periodic.row,
        )

    def _done(self, u, Pu, Pp):
        try:
            D = np.linalg.solve(np.eye(self.n) - Pu, Pp)
        except np.linalg.LinAlgError:
            raise SteadyStateError(
                f"row {self.periodic.row}: the steady state is not isolated (I - dPhi/du is "
                f"singular), so its derivatives are undefined",
                self.periodic.row,
            ) from None
        self.u = u.copy()
        return u, D


class PiecewiseSolve:
    """A subject's solve as a chain of pieces (see :func:`plan`), with the interface a subject's
    evaluator uses.  Parameters come as sets ``P`` (n_sets, m): piece k's dynamics take
    ``P[pset]``, its steady state ``P[ss_pset]`` (time-varying covariates; one set otherwise).

    ``solve(P)`` -> the states at the observations; ``pullback(g)`` -> (dL/dP (n_sets, m), dL/du0
    of the first piece) for the cotangent ``g`` on those states (after ``solve``);
    ``directional_sensitivities(P, Dp)`` -> (states, their derivatives along ``Dp`` (n_sets, k,
    m): direction d moves set s by Dp[s, d])."""

    def __init__(self, ode, n, pieces, obs_time, p0, solve_kw, *, ss_tol, check=True, exact=None):
        self.n = n
        self.pieces = pieces
        self.n_obs = int(np.asarray(obs_time).shape[0])
        self.m = int(np.asarray(p0).shape[0])
        #: the linear CompartmentModel whose exact solutions the pieces use (pk/analytic.py), or None
        self.exact = exact
        self.gfs, self.steady = [], []
        for pc in pieces:
            ts = np.asarray(obs_time, dtype=float)[pc.obs]
            if pc.end_save:
                ts = np.r_[ts, pc.t1]
            if exact is not None:
                from .analytic import AnalyticSolve, AnalyticSteadyState

                self.gfs.append(AnalyticSolve(exact, pc.jumps(), pc.t0, ts, self.m, u0_grad=True))
                self.steady.append(None if pc.steady is None else AnalyticSteadyState(exact, pc.steady, pc.t0, self.m))
                continue
            t1 = max(float(ts.max()), pc.t0)
            self.gfs.append(_ODEPiece(_recording(ode, n, (pc.t0, t1), p0, solve_kw, ts, pc.jumps(), check)))
            check = False
            self.steady.append(
                None if pc.steady is None else SteadyState(ode, n, pc.steady, pc.t0, p0, solve_kw, ss_tol)
            )
        self.n_sets = 1 + max(max(pc.pset, pc.ss_pset) for pc in pieces)
        self._D = [None] * len(pieces)

    def _sets(self, P):
        P = np.asarray(P, dtype=np.float64)
        P = P[None, :] if P.ndim == 1 else P
        if P.shape != (self.n_sets, self.m):
            raise ValueError(f"parameters: {self.n_sets} set(s) of {self.m}, got shape {P.shape}")
        return P

    def _start(self, k, P, prev):
        """The initial state of piece k (and du0/dp of its steady state's set)."""
        pc = self.pieces[k]
        u0 = np.zeros(self.n)
        D = None
        if self.steady[k] is not None:
            ustar, D = self.steady[k](np.ascontiguousarray(P[pc.ss_pset]))
            u0 += ustar
        if pc.add:
            u0 += prev
        self._D[k] = D
        return u0

    def solve(self, P):
        P = self._sets(P)
        us = np.empty((self.n_obs, self.n))
        prev = None
        for k, (pc, gf) in enumerate(zip(self.pieces, self.gfs)):
            uk = gf.run(np.ascontiguousarray(P[pc.pset]), self._start(k, P, prev))
            k_obs = pc.obs.shape[0]
            us[pc.obs] = uk[:k_obs]
            prev = uk[-1].copy() if pc.end_save else None
        return us

    def pullback(self, g):
        g = np.asarray(g, dtype=np.float64)
        GP = np.zeros((self.n_sets, self.m))
        carry, lam = None, None
        for k in range(len(self.pieces) - 1, -1, -1):
            pc, gf = self.pieces[k], self.gfs[k]
            gk = np.zeros(gf.us.shape)
            k_obs = pc.obs.shape[0]
            gk[:k_obs] = g[pc.obs]
            if pc.end_save and carry is not None:
                gk[-1] += carry
            gpk, lam = gf.pullback(gk)
            GP[pc.pset] += gpk
            if self._D[k] is not None:
                GP[pc.ss_pset] += self._D[k].T @ lam
            carry = lam if pc.add else None
        return GP, lam

    def directional_sensitivities(self, P, Dp, jump_tangents=None):
        if jump_tangents is not None:  # (dose parameters in pieces are refused when the subject is bound)
            raise ValueError("moving jumps are not supported across the pieces of a solve")
        P = self._sets(P)
        Dp = np.asarray(Dp, dtype=np.float64)
        Dp = np.broadcast_to(Dp[None] if Dp.ndim == 2 else Dp, (self.n_sets,) + Dp.shape[-2:])
        q = Dp.shape[1]
        us = np.empty((self.n_obs, self.n))
        S = np.empty((self.n_obs, q, self.n))
        prev = prev_S = None
        for k, (pc, gf) in enumerate(zip(self.pieces, self.gfs)):
            u0 = self._start(k, P, prev)
            Du0 = np.zeros((q, self.n))
            if self._D[k] is not None:
                Du0 += (self._D[k] @ Dp[pc.ss_pset].T).T
            if pc.add:
                Du0 += prev_S
            uk, Sk = gf.directional_sensitivities(
                np.ascontiguousarray(P[pc.pset]), np.ascontiguousarray(Dp[pc.pset]), u0=u0, Du0=Du0
            )
            k_obs = pc.obs.shape[0]
            us[pc.obs] = uk[:k_obs]
            S[pc.obs] = Sk[:k_obs]
            prev, prev_S = (uk[-1].copy(), Sk[-1].copy()) if pc.end_save else (None, None)
        return us, S
