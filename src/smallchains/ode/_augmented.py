"""Helpers of the augmented solves (adjoints, sensitivities): jump rows and the augmented right-hand side.

An augmented solve integrates a larger state (the ODE's state with its sensitivities, or the
adjoint state λ, μ) with the same compiled Runge–Kutta kernel; its jumps are rows
``(t, kind, idx, val, pidx)`` turned into the kernel's five arrays here.
"""

from __future__ import annotations

import functools

import numpy as np

from .._jit import addresses
from . import _adjoint as ADJ
from . import _kernels as RK


def rows_to_arrays(rows):
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
def augmented_addresses():
    """The compiled augmented right-hand side's addresses (``_adjoint.augmented_rhs``)."""
    return np.array(addresses(ADJ.augmented_rhs, RK.RHS_SIG), dtype=np.int64)


def forward_sensitivity_jumps(jumps, n, Dp):
    """The jumps of the forward-sensitivity system (state, then one block of n per direction)
    along the parameter directions ``Dp`` (k, m), from the schedule's five arrays ``jumps``."""
    jt, jk, ji, jv, jp = jumps
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
    return rows_to_arrays(rows)


def forward_sensitivity_jump_map(jumps, n, k, m):
    """The jumps of the forward-sensitivity system along k directions not yet known, as
    (five arrays, jrow, jbase): every direction gets a row for each tangent jump (a zero dose
    when the direction does not move it), and row r's value is ``jbase[r] * Dp.flat[jrow[r]]``
    where ``jrow[r]`` >= 0 (the others keep their value).  The rows are those of
    :func:`forward_sensitivity_jumps` plus zero doses, in the same order."""
    jt, jk, ji, jv, jp = jumps
    rows, jrow, jbase = [], [], []
    for q in range(jt.shape[0]):
        t, kind, idx, val, pidx = float(jt[q]), int(jk[q]), int(ji[q]), float(jv[q]), int(jp[q])
        rows.append((t, kind, idx, val, pidx))
        jrow.append(-1)
        jbase.append(0.0)
        if kind == RK.J_BOLUS and pidx >= 0:
            for d in range(k):
                rows.append((t, RK.J_BOLUS, n + d * n + idx, 0.0, -1))
                jrow.append(d * m + pidx)
                jbase.append(val)
        elif kind == RK.J_SET:
            for d in range(k):
                rows.append((t, RK.J_SET, n + d * n + idx, 0.0, -1))
                jrow.append(-1)
                jbase.append(0.0)
    return rows_to_arrays(rows), np.array(jrow, dtype=np.int64), np.array(jbase, dtype=np.float64)
