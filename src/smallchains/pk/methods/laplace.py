"""Laplace (NONMEM's ``METHOD=COND LAPLACIAN INTERACTION``): FOCE-I with the exact Hessian of each
subject's objective.  The objective and its gradient (central differences over the estimated
parameters) live in :mod:`smallchains.pk.laplace`; this class wraps them as a method.  Models with
network weights are refused (two objective evaluations per parameter)."""

from __future__ import annotations

from ..laplace import laplace, laplace_gradient
from . import register
from .marginal import MarginalMethod


@register
class Laplace(MarginalMethod):
    """The Laplace approximation of the marginal likelihood."""

    name = "laplace"
    ofv_kind = "Laplace"

    def check(self, model):
        super().check(model)
        if model.n_weights or model.covariate_network is not None:
            raise ValueError(
                "method 'laplace' differences its objective over every parameter, and this model has network "
                "weights: use method 'foce'"
            )

    def ofv_terms(self, P, x, etas):
        return laplace(P, x, etas)

    def ofv_gradient(self, P, x, etas, res, per_subject=False, which=None):
        return laplace_gradient(P, x, etas, which, per_subject)
