"""The continuous adjoints: λ' = -(df/du)^T λ, μ' = -(df/dp)^T λ solved backwards from the end.

:class:`InterpolatingAdjoint` reads the forward state from the recording's dense output;
:class:`BacksolveAdjoint` re-solves it backwards alongside λ and μ.  Both share one
algorithm (:meth:`ContinuousAdjoint.pullback`), parametrised by the class's ``_backsolve``.
"""

from __future__ import annotations

import numpy as np

from .. import _adjoint as ADJ
from .. import _kernels as RK
from .._augmented import rows_to_arrays as _rows_to_arrays
from .base import ToleranceMethod


class ContinuousAdjoint(ToleranceMethod):
    """The continuous adjoint's shared algorithm (not a method of its own: see the two below)."""

    _backsolve = False

    def pullback(self, recording, g, jumps):
        """Solve the adjoint system backwards from the end of the last recorded forward solve, λ
        jumping by ``g`` at the save points and through every dose; returns (dL/dp, dL/du0)."""
        rec = recording
        P, n, m = rec._P, rec.n, rec.m
        backsolve = self._backsolve
        mode = ADJ.M_BACKSOLVE if backsolve else ADJ.M_INTERP
        N = 0 if backsolve else int(rec._stats_arr[RK.S_NSTORED])
        t_end = float(rec._fres[RK.R_T])
        iw, fw = rec._context(mode, N)
        jt, jk, ji, jv, jp = P.jumps
        nj = int(rec._stats_arr[RK.S_NJUMPS])
        dirn = rec._dirn
        lam_off = n if backsolve else 0
        mu_off = lam_off + n
        # stretches of steps between jumps (interpolating): the steps lo..hi below each jump time
        seg_at = {}
        if not backsolve:
            st_j = rec._st_j[:N]
            ends = np.flatnonzero(st_j >= 0)
            starts = np.concatenate([[0], ends + 1])
            last_lo = 0 if N == 0 else (int(starts[-1]) if starts[-1] <= N - 1 else int(starts[-2]))
            for k_i, k in enumerate(ends):
                tk = float(rec._st_t[k + 1]) if k + 1 < N else t_end
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
            rowmap = {float(t): i for i, t in enumerate(rec._ts_fwd)}
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
                u_left = rec._us_fwd[rowmap[tau]]
                rows.extend((tau, RK.J_SET, j, u_left[j], -1) for j in range(n))
            if not backsolve and tau in seg_at:
                lo, hi = seg_at[tau]
                rows.append((tau, RK.J_SET, n + m, float(lo), -1))
                rows.append((tau, RK.J_SET, n + m + 1, float(hi), -1))
        jumps = _rows_to_arrays(rows)
        if backsolve:
            z0 = np.zeros(2 * n + m)
            z0[:n] = rec._uend
        else:
            z0 = np.zeros(n + m + 2)
            z0[n + m] = last_lo if N else 0
            z0[n + m + 1] = N - 1
        # the forward's known discontinuities (and, for Vern7, its save points) bound the adjoint's steps too
        rtol, atol = self.tolerances(P)
        if not backsolve:  # the two stretch markers are bookkeeping, not state: out of the error norm
            rtol = np.r_[np.full(n + m, rtol[0]), 0.0, 0.0]
            atol = np.r_[np.full(n + m, atol[0]), 1e300, 1e300]
        zend, _ = rec._aug_solve(
            iw, fw, z0, t_end, P.t0, jumps, (rtol, atol), tstops=np.ascontiguousarray(P.tstops[::-1])
        )
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


class BacksolveAdjoint(ContinuousAdjoint):
    """The continuous adjoint with the state re-solved backwards alongside λ and μ.

    Needs no record of the forward steps; the backward state is restarted from the forward
    values at every save point and dose time (left limits), which keeps the drift of the
    unstable backward solve in check.  Cheapest in memory, least accurate on dissipative
    problems (the backward state solve is then unstable between save points).
    """

    name = "backsolve adjoint"
    _backsolve = True

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
