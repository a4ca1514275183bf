"""The continuous adjoints: λ' = -(df/du)^T λ, μ' = -(df/dp)^T λ solved backwards from the end.

:class:`InterpolatingAdjoint` reads the forward state from the recording's dense output;
:class:`BacksolveAdjoint` re-solves it backwards alongside λ and μ.  Both share one
algorithm (:meth:`ContinuousAdjoint.pullback`); each fills in its hooks.
"""

from __future__ import annotations

import numpy as np

from .. import _adjoint as ADJ
from .. import _kernels as RK
from .._augmented import rows_to_arrays as _rows_to_arrays
from .base import ToleranceMethod


class ContinuousAdjoint(ToleranceMethod):
    """The continuous adjoint's shared algorithm (not a method of its own: see the two below).

    The augmented state is [forward state (backsolve only), λ, μ, (bookkeeping)]; λ jumps by
    the loss's cotangent at each save point and through each dose, backwards from the end.
    What differs between the two methods are the hooks below: where λ starts in the state
    (``lam_off``), the forward record the right-hand side reads (``recorded_steps``), the extra
    jumps of the backward solve (``first_rows``, ``input_rows``, ``rows_after_saves``), the
    initial state (``start``) and which components are error-controlled (``error_control``).
    """

    #: the augmented right-hand side's mode (``_adjoint.M_INTERP`` or ``M_BACKSOLVE``)
    mode = None

    def lam_off(self, n):
        """Where λ starts in the augmented state."""
        return 0

    def recorded_steps(self, rec):
        """How many recorded forward steps the augmented right-hand side reads."""
        return 0

    def first_rows(self, rec, t_end):
        """(context, rows at the end time before everything else) of one backward solve."""
        return None, []

    def input_rows(self, ctx, tau, q):
        """The backward solve's rows for the input jump ``q`` at ``tau`` (λ does not jump there)."""
        return ()

    def rows_after_saves(self, ctx, tau):
        """Rows at ``tau`` after the save points' cotangents."""
        return ()

    def start(self, ctx, n, m):
        """The augmented initial state at the end time."""
        raise NotImplementedError

    def error_control(self, rtol, atol, n, m):
        """The augmented solve's (rtol, atol) from the method's tolerances."""
        return rtol, atol

    def pullback(self, recording, g, jumps):
        """Solve the adjoint system backwards from the end of the last recorded forward solve, λ
        jumping by ``g`` at the save points and through every dose; returns (dL/dp, dL/du0)."""
        rec = recording
        P, n, m = rec._P, rec.n, rec.m
        t_end = float(rec._fres[RK.R_T])
        iw, fw = rec._context(self.mode, self.recorded_steps(rec))
        jt, jk, ji, jv, jp = P.jumps
        nj = int(rec._stats_arr[RK.S_NJUMPS])
        dirn = rec._dirn
        lam_off = self.lam_off(n)
        mu_off = lam_off + n
        jumps_at = {}
        for q in range(nj):
            jumps_at.setdefault(float(jt[q]), []).append(q)
        saves_at = {}
        for i, t in enumerate(P.ts):
            saves_at.setdefault(float(t), []).append(i)
        times = sorted(set(jumps_at) | set(saves_at), key=lambda t: -dirn * t)
        ctx, rows = self.first_rows(rec, t_end)
        for tau in times:
            for q in reversed(jumps_at.get(tau, ())):
                kind = jk[q]
                if kind == RK.J_BOLUS and jp[q] >= 0:
                    rows.append((tau, RK.J_AXPY, mu_off + jp[q], jv[q], lam_off + ji[q]))
                elif kind == RK.J_RESET:
                    rows.extend((tau, RK.J_SET, lam_off + j, 0.0, -1) for j in range(n))
                elif kind == RK.J_SET:
                    rows.append((tau, RK.J_SET, lam_off + ji[q], 0.0, -1))
                elif kind == RK.J_INPUT:
                    rows.extend(self.input_rows(ctx, tau, q))
            for i in saves_at.get(tau, ()):
                rows.extend((tau, RK.J_BOLUS, lam_off + j, g[i, j], -1) for j in range(n) if g[i, j] != 0.0)
            rows.extend(self.rows_after_saves(ctx, tau))
        jumps = _rows_to_arrays(rows)
        z0 = self.start(ctx, n, m)
        # the forward's known discontinuities (and, for Vern7, its save points) bound the adjoint's steps too
        tol = self.error_control(*self.tolerances(P), n, m)
        zend, _ = rec._aug_solve(iw, fw, z0, t_end, P.t0, jumps, tol, tstops=np.ascontiguousarray(P.tstops[::-1]))
        return zend[mu_off : mu_off + m].copy(), zend[lam_off : lam_off + n].copy()


class InterpolatingAdjoint(ContinuousAdjoint):
    """The continuous adjoint, the forward state read from the forward solve's dense output.

    Solves λ' = -(df/du)^T λ and μ' = -(df/dp)^T λ backwards from the end with the same
    method, λ jumping by dL/du at each save point and through each dose (a bolus scaled
    by p[k] adds its amount times λ to μ[k]; a reset or set zeroes λ there).  Accurate to
    the solver tolerances (``rtol``/``atol``, default the forward solve's), not to rounding;
    stores every forward step (like the discrete adjoint's "stages" mode).
    """

    name = "interpolating adjoint"
    mode = ADJ.M_INTERP

    def recorded_steps(self, rec):
        """Every recorded step (the dense output between them is the forward state)."""
        return int(rec._stats_arr[RK.S_NSTORED])

    def first_rows(self, rec, t_end):
        """The stretches of recorded steps between jumps: the steps lo..hi below each jump time,
        which two bookkeeping components of the state (n + m, n + m + 1) point the interpolation to."""
        N = self.recorded_steps(rec)
        n, m = rec.n, rec.m
        st_j = rec._st_j[:N]
        ends = np.flatnonzero(st_j >= 0)
        starts = np.concatenate([[0], ends + 1])
        last_lo = 0 if N == 0 else (int(starts[-1]) if starts[-1] <= N - 1 else int(starts[-2]))
        seg_at = {}
        for k_i, k in enumerate(ends):
            tk = float(rec._st_t[k + 1]) if k + 1 < N else t_end
            seg_at[tk] = (int(starts[k_i]), int(k))
        return (seg_at, last_lo, N, n + m), []

    def rows_after_saves(self, ctx, tau):
        seg_at, _, _, o = ctx
        if tau not in seg_at:
            return ()
        lo, hi = seg_at[tau]
        return ((tau, RK.J_SET, o, float(lo), -1), (tau, RK.J_SET, o + 1, float(hi), -1))

    def start(self, ctx, n, m):
        _, last_lo, N, _ = ctx
        z0 = np.zeros(n + m + 2)
        z0[n + m] = last_lo if N else 0
        z0[n + m + 1] = N - 1
        return z0

    def error_control(self, rtol, atol, n, m):
        """The two stretch markers are bookkeeping, not state: out of the error norm."""
        return np.r_[np.full(n + m, rtol[0]), 0.0, 0.0], np.r_[np.full(n + m, atol[0]), 1e300, 1e300]


class BacksolveAdjoint(ContinuousAdjoint):
    """The continuous adjoint with the state re-solved backwards alongside λ and μ.

    Needs no record of the forward steps; the backward state is restarted from the forward
    values at every save point and dose time (left limits), which keeps the drift of the
    unstable backward solve in check.  Cheapest in memory, least accurate on dissipative
    problems (the backward state solve is then unstable between save points).
    """

    name = "backsolve adjoint"
    mode = ADJ.M_BACKSOLVE

    def lam_off(self, n):
        """After the re-solved forward state."""
        return n

    def first_rows(self, rec, t_end):
        """The inputs running at the end, switched on for the backward state."""
        P, n = rec._P, rec.n
        jt, jk, ji, jv, _ = P.jumps
        nj = int(rec._stats_arr[RK.S_NJUMPS])
        dirn = rec._dirn
        total = np.zeros(n)
        for q in range(nj):
            if jk[q] == RK.J_INPUT and (jt[q] - t_end) * dirn < 0:
                total[ji[q]] += jv[q]
        rows = [(t_end, RK.J_INPUT, j, total[j], -1) for j in range(n) if total[j] != 0.0]
        rowmap = {float(t): i for i, t in enumerate(rec._ts_fwd)}
        return (rec, t_end, rowmap), rows

    def input_rows(self, ctx, tau, q):
        """Backwards, an input that started at ``tau`` stops there (and one that stopped starts)."""
        rec, t_end, _ = ctx
        if tau == t_end:
            return ()
        P = rec._P
        return ((tau, RK.J_INPUT, P.jumps[2][q], -P.jumps[3][q], -1),)

    def rows_after_saves(self, ctx, tau):
        """The backward state restarts from the forward's left limits at save points and doses."""
        rec, _, rowmap = ctx
        if tau == rec._P.t0 or tau not in rowmap:
            return ()
        u_left = rec._us_fwd[rowmap[tau]]
        return [(tau, RK.J_SET, j, u_left[j], -1) for j in range(rec.n)]

    def start(self, ctx, n, m):
        rec = ctx[0]
        z0 = np.zeros(2 * n + m)
        z0[:n] = rec._uend
        return z0

    def storage(self, recording, want):
        """Nothing recorded (one step's buffers, unused)."""
        return RK.STORE_NONE, 1

    def forward_save_times(self, P, dirn):
        """The loss's save points plus the dose times inside the solve (the backward state
        restarts from the forward's left limits there), and the rows of the loss's among them."""
        if not P.jumps[0].shape[0]:
            return P.ts, None
        jt = P.jumps[0]
        lo, hi = min(P.t0, P.t1), max(P.t0, P.t1)
        extra = jt[(jt > lo) & (jt <= hi)] if dirn > 0 else jt[(jt >= lo) & (jt < hi)]
        ext = np.unique(np.concatenate([P.ts, extra]))
        ts_fwd = np.ascontiguousarray(ext if dirn > 0 else ext[::-1])
        key = ts_fwd if dirn > 0 else ts_fwd[::-1]
        pos = np.searchsorted(key, P.ts)
        rows = pos if dirn > 0 else ts_fwd.shape[0] - 1 - pos
        return ts_fwd, rows
