"""FOCE-I (NONMEM's ``METHOD=1 INTERACTION``): the OFV of :meth:`Problem.foce
<smallchains.pk.estimation.Problem.foce>` with its gradient from the subjects' sensitivities
(:meth:`Problem.foce_gradient`).  A model with a neural term starts from a MAP fit (its weights
are hard to find from the OFV alone), then fits the weights with the other parameters."""

from __future__ import annotations

import numpy as np

from . import register
from .map import Map
from .marginal import MarginalMethod


@register
class Foce(MarginalMethod):
    """FOCE-I: the default method."""

    name = "foce"
    ofv_kind = "FOCE-I"

    def check_problem(self, P):
        if P.nonnormal:
            raise ValueError(
                f"method 'foce' with blq={P.blq!r}: FOCE-I's objective weighs each observation by the expected "
                "information of a normal density, and censored (BLQ) observations have none; NONMEM runs M3 and "
                "M4 only with LAPLACIAN.  Use method='laplace' (or 'saem', 'map')"
            )

    def ofv_terms(self, P, x, etas):
        return P.foce(x, etas)

    def ofv_gradient(self, P, x, etas, res, per_subject=False, which=None):
        return P.foce_gradient(x, res, per_subject=per_subject)

    def ofv_and_gradient(self, P, x, etas, which):
        # (one compiled call per thread where the compiled step covers every subject)
        return P.foce_value_and_gradient(x, etas)

    def stage(self, P, x, opts, report):
        m = P.model
        nets = np.r_[m.blocks["w"].start : m.blocks["w"].stop, m.blocks["wc"].start : m.blocks["wc"].stop]
        if nets.size and not np.all(m.fixed[nets]):
            return Map(map_omega=self.map_omega, covariance=self.covariance).run(P, x, opts, report)
        return None

    def stage_message(self, stage, message):
        return f"MAP stage ({stage['message']}), then FOCE-I: {message}"
