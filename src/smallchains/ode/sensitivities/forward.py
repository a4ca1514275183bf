"""Forward sensitivities: the state's derivatives integrated alongside it, no reverse pass."""

from __future__ import annotations

import numpy as np

from .. import _adjoint as ADJ
from .. import _kernels as RK
from .._augmented import forward_sensitivity_jumps
from ._checks import check_jvp
from .base import ToleranceMethod


class ForwardSensitivity(ToleranceMethod):
    """The forward sensitivity equations: s' = (df/du) s + df/dp for each of the n + m inputs.

    One Jacobian-vector product per input per stage, no reverse pass and no record of the
    steps: memory n (n + m) whatever the length of the solve.  The sensitivities are part
    of the error-controlled state, so they are accurate to the tolerances.  Measured here
    (``benchmarks/sensitivity_choice.py``) it is 1.2-1.6x slower than the discrete adjoint
    at every size tried (n + m from 6 to 96), so it is not the automatic choice; prefer it
    for very long solves with few inputs, where recording the steps costs too much memory.
    """

    name = "forward sensitivity"
    solve_label = "forward sensitivity"
    has_pullback = False

    def derivative_address(self, fn):
        """The right-hand side's Jacobian-vector product."""
        return fn.jvp_addr

    def check_derivatives(self, fn, u0, p, t0, fw):
        check_jvp(fn, u0, p, t0, fw)

    def attach(self, recording):
        """The directions (every initial state, then every parameter) and the augmented jumps."""
        P, n, m = recording._P, recording.n, recording.m
        dirs = np.vstack([np.zeros((n, m)), np.eye(m)])
        return dirs, forward_sensitivity_jumps(P.jumps, n, dirs)

    def gradient(self, recording, loss_gradient):
        """One augmented solve of the state and its n + m sensitivities (error-controlled); the
        recording's saved states, end state and statistics are that solve's."""
        rec = recording
        P, n, m = rec._P, rec.n, rec.m
        dirs, jumps = rec._method_data
        nz = n + n * (n + m)
        z0 = np.zeros(nz)
        z0[:n] = P.u0
        for d in range(n):
            z0[n + d * n + d] = 1.0
        iw, fw = rec._context(ADJ.M_FORWARD, 0, dirs)
        zend, zs = rec._aug_solve(iw, fw, z0, P.t0, P.t1, jumps, self.tolerances(P), P.ts, P.tstops)
        rec._stats_arr[:] = rec._aug_stats
        rec._fres[RK.R_T] = P.t1
        rec._uend[:] = zend[:n]
        rec._us[:] = zs[:, :n]
        value, g = loss_gradient()
        sens = zs[:, n:].reshape(zs.shape[0], n + m, n)
        grad = np.einsum("qj,qdj->d", g, sens)
        return value, grad[n:].copy(), grad[:n].copy()
