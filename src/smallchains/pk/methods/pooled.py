"""Naive pooled: every observation from one typical subject (no random effects); the objective is
-2 log L of the pooled data plus the network weights' L2 prior, minimised on its exact gradient."""

from __future__ import annotations

import numpy as np

from . import register
from .base import EstimationMethod


@register
class Pooled(EstimationMethod):
    """The naive pooled fit."""

    name = "pooled"
    ofv_kind = "exact"  # (no random effects: the likelihood itself)
    hessian_step = 1e-5
    decrement_judged = True

    def run(self, P, x_init, opts, report):
        m = P.model
        x, f, conv, msg, ne = self.minimize_free(P, x_init, lambda xx: P.pooled(xx, 1), report, opts)
        return {
            "x": x,
            "etas": np.zeros((P.N, m.n_eta)),
            "objective": f,
            "converged": conv,
            "message": msg,
            "n_evaluations": ne,
            "trace": self.last_trace(),
        }

    def ofv(self, P, x, etas):
        return P.pooled(x, 0) - P.weight_prior(x)[0], etas

    def objective_gradient(self, P, x, etas):
        g = P.pooled(x, 1)[1]
        return g if np.all(np.isfinite(g)) else None
