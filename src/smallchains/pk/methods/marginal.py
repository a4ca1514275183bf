"""What FOCE-I and Laplace share: a method minimising an approximation of the marginal likelihood
(the OFV over the subjects' modes, plus the network weights' L2 prior), by L-BFGS on its gradient,
the modes warm-started from one evaluation to the next; its covariance step is NONMEM's $COV (the
sandwich R^-1 S R^-1 by default, S from the subjects' gradients).

A subclass defines the OFV and its gradient (:meth:`MarginalMethod.ofv_terms`,
:meth:`MarginalMethod.ofv_gradient`); it may add a first stage (:meth:`MarginalMethod.stage`).
"""

from __future__ import annotations

import numpy as np

from .base import EstimationMethod


class MarginalMethod(EstimationMethod):
    """Base of the marginal-likelihood methods (FOCE-I, Laplace)."""

    random_effects = True
    marginal = True
    decrement_judged = True

    def ofv_terms(self, P, x, etas):
        """(OFV, modes, per-subject results for :meth:`ofv_gradient`) at ``x``, the modes'
        search started from ``etas``."""
        raise NotImplementedError

    def ofv_gradient(self, P, x, etas, res, per_subject=False, which=None):
        """The OFV's gradient over x (at least over the entries ``which``), or with
        ``per_subject`` (total, per-subject rows); None where it cannot be computed."""
        raise NotImplementedError

    def ofv_and_gradient(self, P, x, etas, which):
        """(OFV, modes, its gradient over x (at least over ``which``) or None) at ``x``: by
        default :meth:`ofv_terms` then :meth:`ofv_gradient`; a subclass may do both at once."""
        v, etas, res = self.ofv_terms(P, x, etas)
        return v, etas, (self.ofv_gradient(P, x, etas, res, which=which) if np.isfinite(v) else None)

    def stage(self, P, x, opts, report):
        """A first stage run before the OFV's (its :meth:`run` dict), or None (the default)."""
        return None

    def stage_message(self, stage, message):
        return message

    def run(self, P, x_init, opts, report):
        m = P.model
        x = x_init.copy()
        stage = self.stage(P, x, opts, report)
        if stage is not None:
            x = stage["x"]
        idx = np.flatnonzero(self.free(m))
        # the modes warm-started from the last evaluation's; network weights with their L2 prior
        state = {"etas": stage["etas"].copy() if stage is not None else np.zeros((P.N, m.n_eta))}

        def value_grad(xx):
            v, etas, g = self.ofv_and_gradient(P, xx, state["etas"], idx)
            if not np.isfinite(v) or g is None:
                return np.inf, None
            state["etas"] = etas
            pen, gw = P.weight_prior(xx)
            g[m.blocks["w"]] += gw[: m.n_weights]
            g[m.blocks["wc"]] += gw[m.n_weights :]
            return v + pen, g

        o = opts if stage is None else dict(opts, optimizer="lbfgs")  # (after a first stage: L-BFGS)
        x, f, conv, msg, ne = self.minimize_free(P, x, value_grad, report, o)
        v, etas, _ = self.ofv_terms(P, x, state["etas"])
        if stage is not None:
            msg = self.stage_message(stage, msg)
            ne += stage["n_evaluations"]
        return {
            "x": x,
            "etas": etas,
            "objective": v + P.weight_prior(x)[0],
            "converged": conv,
            "message": msg,
            "n_evaluations": ne,
            "trace": self.last_trace(),
        }

    def ofv(self, P, x, etas):
        v, etas, _ = self.ofv_terms(P, x, etas)
        return v, etas

    def objective_gradient(self, P, x, etas):
        """The OFV's gradient with the weights' prior's, over every entry of x."""
        m = P.model
        _, _, g = self.ofv_and_gradient(P, x, etas, np.flatnonzero(~m.fixed))
        if g is None:
            return None
        g = g.copy()
        pen = P.weight_prior(x)[1]
        g[m.blocks["w"]] += pen[: m.n_weights]
        g[m.blocks["wc"]] += pen[m.n_weights :]
        return g

    def score_matrix(self, P, x, etas, idx):
        _, etas, res = self.ofv_terms(P, x, etas)
        out = self.ofv_gradient(P, x, etas, res, per_subject=True, which=idx)
        if out is None:
            return None
        G = out[1][:, idx]
        return G.T @ G
