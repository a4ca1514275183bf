"""A subject's data term and its gradient in one compiled call (concentration outputs).

l = sum_j l_j(y_j, f_j, V_j) with f_j = u_j[state_j] / p[param_j] (l_j: the normal term, or a
censored one: :mod:`smallchains.pk._censored`; ``y`` rows (y, code, LLOQ)); the forward
solve records its steps, the residual cotangent goes straight into the discrete adjoint.  The
same numbers as the NumPy path of ``estimation.SubjectEval.data_term`` (tested), without the
~70 µs of Python per subject around the two compiled passes.

The recording's passes are called with its bound arguments, ``Recording.fused_args`` =
(before, after) around the parameters (see :mod:`smallchains.ode.recording`):
:func:`record_forward` and :func:`pullback` are the one place that unpacks them.
"""

from __future__ import annotations

import math

from .._jit import kernel
from ..ode import _adjoint as ADJ
from ..ode import _kernels as RK
from ._censored import M3, M4_CENSORED, obs_term

ADDITIVE, PROPORTIONAL, COMBINED = 0, 1, 2
#: statuses beyond the solver's
NONFINITE_OBJECTIVE = 100
#: where the recording's fused ``after`` tuple keeps the saved states, stats, end time
AFTER_US, AFTER_STATS, AFTER_FRES = 1, 15, 16


@kernel
def record_forward(before, p, after):
    """The recording forward solve at ``p`` (a Recording's ``fused_args``); returns the solver's
    status (``STORAGE_FULL``: the caller grows the buffers through ``Recording.record``).  The
    states at the save points are in ``after[AFTER_US]``."""
    return RK.rk_solve(before[0], *before[2:], p, *after[:18])


@kernel
def pullback(before, p, after, g, lam, gp):
    """gp += dL/dp for L = sum(g * states at the save points) on the last :func:`record_forward`
    at ``p`` (the discrete adjoint); lam <- dL/du0."""
    (fa, va, iw, fw, _, A, b, c, _, D, _, iopt) = before[:12]
    (ts, _, _, jt, jk, ji, jv, jp, st_t, st_h, st_u, st_k, st_j, K, _, stats, fres, _, aopt, W, awk, jg) = after
    for k in range(lam.shape[0]):
        lam[k] = 0.0
    aopt[ADJ.A_NSTORED] = stats[RK.S_NSTORED]
    aopt[ADJ.A_NJUMPS] = stats[RK.S_NJUMPS]
    aopt[ADJ.A_STAGES] = 1 if iopt[RK.I_STORE] == RK.STORE_ALL else 0
    ADJ.rk_discrete_adjoint(
        fa, va, iw, fw, A, b, c, D, aopt, fres[RK.R_T], p, st_t, st_h, st_u, st_k, st_j, jt, jk, ji, jv, jp, ts, g,
        lam, gp, W, K, awk, jg,
    )  # fmt: skip


@kernel
def subject_data_term(before, p, after, y, ostate, oparam, ekind, psi, g, gp, lam, f, V, res, grad):
    """Forward, objective and (with ``grad``) adjoint.  ``res[0]`` <- l, ``res[1:]`` <- dl/dpsi;
    ``gp`` <- dl/dp; ``f``, ``V`` <- predictions and their variances.  Returns the solver's
    status (``STORAGE_FULL``: grow the buffers and call again) or ``NONFINITE_OBJECTIVE``."""
    status = record_forward(before, p, after)
    if status != RK.OK:
        return status
    us = after[AFTER_US]
    n_obs = y.shape[0]
    s0 = math.exp(2.0 * psi[0])
    s1 = math.exp(2.0 * psi[1]) if psi.shape[0] > 1 else 0.0
    for k in range(res.shape[0]):
        res[k] = 0.0
    for k in range(gp.shape[0]):
        gp[k] = 0.0
    for j in range(g.shape[0]):
        for i in range(g.shape[1]):
            g[j, i] = 0.0
    total = 0.0
    for j in range(n_obs):
        vol = p[oparam[j]]
        if vol == 0.0:  # (a volume underflowed to 0 at an extreme trial point: no prediction)
            return NONFINITE_OBJECTIVE
        fj = us[j, ostate[j]] / vol
        if ekind == ADDITIVE:
            vj = s0
            vf = 0.0
        elif ekind == PROPORTIONAL:
            vj = s0 * fj * fj
            vf = 2.0 * s0 * fj
        else:
            vj = s1 * fj * fj + s0
            vf = 2.0 * s1 * fj
        if not (vj >= 0.0) or not math.isfinite(vj) or not math.isfinite(fj):
            return NONFINITE_OBJECTIVE
        if vj == 0.0 and y[j, 1] != M3 and y[j, 1] != M4_CENSORED:  # (a density needs V > 0)
            return NONFINITE_OBJECTIVE
        lj, lf, a = obs_term(y[j, 0], int(y[j, 1]), y[j, 2], fj, vj)
        total += lj
        dldf = lf + a * vf
        f[j] = fj
        V[j] = vj
        g[j, ostate[j]] += dldf / vol
        gp[oparam[j]] -= dldf * fj / vol
        if ekind == COMBINED:
            res[1] += a * 2.0 * s0
            res[2] += a * 2.0 * s1 * fj * fj
        else:
            res[1] += a * 2.0 * vj
    res[0] = total
    if not math.isfinite(total):
        return NONFINITE_OBJECTIVE
    if not grad:
        return RK.OK
    pullback(before, p, after, g, lam, gp)
    return RK.OK
