"""The discrete adjoint: reverse-mode differentiation of the recorded Runge–Kutta steps."""

from __future__ import annotations

import numpy as np

from .. import _adjoint as ADJ
from .. import _kernels as RK
from .base import SensitivityMethod


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
    jump_derivatives = True

    def __init__(self, store="auto", max_memory=512 * 2**20):
        if store not in ("auto", "stages", "states"):
            raise ValueError(f"`store` must be 'auto', 'stages' or 'states', got {store!r}")
        if not max_memory > 0:
            raise ValueError(f"`max_memory` must be > 0 bytes, got {max_memory!r}")
        self.store = store
        self.max_memory = float(max_memory)

    def __repr__(self):
        return f"DiscreteAdjoint(store={self.store!r}, max_memory={self.max_memory:.3g})"

    def storage(self, recording, want):
        """Every stage when ``store`` says so (or "auto" and it fits the budget), else each
        step's starting state only, as many steps as the budget holds."""
        rec = recording
        n, S = rec.n, rec._P.S
        if self.store == "stages" or (self.store == "auto" and want * ((S + 1) * n * 8.0 + 24.0) <= self.max_memory):
            return RK.STORE_ALL, want
        cap = min(want, int(self.max_memory // (n * 8.0 + 24.0)))
        if cap <= rec._cap and rec._mode == RK.STORE_STATES and cap < want:
            raise MemoryError(
                f"recording more than {rec._cap} steps needs more than {self.max_memory:.3g} "
                "bytes, the DiscreteAdjoint budget (max_memory); raise max_memory, loosen the "
                "tolerances or lower max_steps"
            )
        if cap < 1:
            raise MemoryError(f"max_memory={self.max_memory:.3g} bytes cannot hold even one step")
        return RK.STORE_STATES, cap

    def pullback(self, recording, g, jumps):
        """One compiled reverse pass over the recorded steps (``_adjoint.rk_discrete_adjoint``)
        with the recording's bound arguments; with ``jumps`` also each jump's (d/dvalue,
        d/dtime), (n_jumps, 2) in the order the jumps were added."""
        rec = recording
        gp = np.zeros(rec.m)
        lam = np.zeros(rec.n)
        aopt, stats = rec._aopt, rec._stats_arr
        aopt[ADJ.A_NSTORED] = stats[RK.S_NSTORED]
        aopt[ADJ.A_NJUMPS] = stats[RK.S_NJUMPS]
        aopt[ADJ.A_STAGES] = int(rec._mode == RK.STORE_ALL)
        jg = rec._jg if jumps else rec._no_jg
        ADJ.rk_discrete_adjoint(
            *rec._adj_a, float(rec._fres[RK.R_T]), rec._P.p, *rec._adj_b, g, lam, gp, *rec._adj_c, jg
        )
        if jumps:
            out = np.empty((jg.shape[0], 2))
            out[rec._P.jorder] = jg[:, :2]
            return gp, lam, out
        return gp, lam
