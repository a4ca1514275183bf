"""MAP / empirical Bayes: the mode of the joint posterior of the fixed effects, the residual
error, the network weights and every subject's random effects.  Omega is, as ``map_omega`` says,
updated by EM between rounds of the joint fit (``"em"``, the default), kept (``"fixed"``) or put
in the joint objective (``"joint"``).  Its convergence criterion is the gradient's (every partial
derivative, the random effects' too, within ``GRADIENT_TOL``); its covariance step the Hessian of
the joint objective over the parameters and the random effects (their block marginalised)."""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_triangular

from ..covariance import covariance, hessian_from_gradient
from ..estimation import information
from . import register
from .base import GRADIENT_TOL, EstimationMethod, minimize


def posterior_cov(P, x, etas):
    """mean_i M_i^-1, the subjects' Laplace posterior covariances of eta, or None if a solve fails."""
    m = P.model
    L = m.omega_factor(x)
    Linv = solve_triangular(L, np.eye(m.n_eta), lower=True)
    Oinv = Linv.T @ Linv
    res = P.each(lambda s, e: s.data_term(x, e, need=2), list(zip(P.subjects, etas)))
    acc = np.zeros((m.n_eta, m.n_eta))
    for _, out in res:
        if out is None:
            return None
        acc += np.linalg.inv(information(out, Oinv))
    return acc / P.N


def set_omega(m, x, Om):
    """Write Omega into x (its blocks only: diagonal models keep the diagonal); returns the largest
    change of a log sd."""
    ob = m.blocks["omega"]
    q = m.n_eta
    old = x[ob.start : ob.start + q].copy()
    Om = np.where(m.omega_mask, Om, 0.0)
    L = np.linalg.cholesky(Om)
    x[ob.start : ob.start + q] = np.log(np.diag(L))
    if m.tril[0].size:
        x[ob.start + q : ob.stop] = L[m.tril]
    return float(np.max(np.abs(x[ob.start : ob.start + q] - old)))


@register
class Map(EstimationMethod):
    """The joint posterior mode, Omega by EM (or fixed, or joint)."""

    name = "map"
    random_effects = True
    ofv_kind = "FOCE-I"  # (FOCE-I's OFV at the MAP estimates: see ofv)
    max_rounds = 30
    em_tol = 1e-3

    def free(self, model):
        free = ~model.fixed.copy()
        if self.map_omega != "joint":
            free[model.blocks["omega"]] = False
        return free

    def run(self, P, x_init, opts, report):
        m = P.model
        max_rounds, em_tol = self.max_rounds, self.em_tol
        x = x_init.copy()
        map_omega = self.map_omega
        if map_omega == "em" and np.any(m.fixed[m.blocks["omega"]]):
            map_omega = "fixed"  # the user holds (part of) Omega: no EM update
        nets = np.r_[m.blocks["w"].start : m.blocks["w"].stop, m.blocks["wc"].start : m.blocks["wc"].stop]
        idx = np.flatnonzero(self.free(m))
        q = m.n_eta
        nf = idx.shape[0]

        state = {"C": None}

        def fg(z):
            xx = x.copy()
            xx[idx] = z[:nf]
            v, gx, ge = P.map_objective(xx, z[nf:].reshape(P.N, q), 1, state["C"])
            return v, np.concatenate([gx[idx], ge.ravel()])

        z = np.concatenate([x[idx], np.zeros(P.N * q)])
        ne_total = 0
        if map_omega == "em":
            # Omega profiled: mean(eta eta') + C, C the mean Laplace covariance of the etas, updated
            # between rounds (the EM fixed point); C starts from the initial Omega
            state["C"] = m.omega(x)
        # EM rounds stop early (Omega still moves); the last round, Omega settled, runs to the
        # requested tolerance
        final = map_omega != "em"
        em_note = ""
        for rnd in range(max_rounds + 1):
            o = opts if final else dict(opts, maxiter=min(opts["maxiter"], 250), tol=max(opts["tol"], 1e-7))
            box = (np.r_[m.lower[idx], np.full(P.N * q, -np.inf)], np.r_[m.upper[idx], np.full(P.N * q, np.inf)])
            # (the final round restarts L-BFGS short of the gradient criterion; not with networks,
            # whose weights creep on for thousands of evaluations)
            rg = GRADIENT_TOL if final and not nets.size else None
            z, f, conv, msg, ne = minimize(fg, z, report=report, bounds=box, restart_gtol=rg, **o)
            ne_total += ne
            x[idx] = z[:nf]
            if final:
                break
            etas = z[nf:].reshape(P.N, q)
            change = set_omega(m, x, P.profiled_omega(etas, state["C"]))
            C = posterior_cov(P, x, etas)
            if C is None:  # the modes' Laplace covariance failed: this round's estimate is not EM's fixed point
                conv = False
                em_note = (
                    f"; Omega's EM stopped after round {rnd + 1}: the random effects' posterior "
                    "covariance is not positive definite"
                )
                break
            state["C"] = C
            opts = dict(opts, optimizer="lbfgs")  # later rounds start next to the optimum
            final = bool(rnd and change < em_tol)
            if not final and rnd == max_rounds - 1:
                final = True
                em_note = f"; Omega's EM did not settle in {max_rounds} rounds (last change {change:.2g} > {em_tol:g})"
        if map_omega == "em":
            set_omega(m, x, P.profiled_omega(z[nf:].reshape(P.N, q), state["C"]))
            if em_note:
                conv = False
        return {
            "x": x,
            "etas": z[nf:].reshape(P.N, q).copy(),
            "objective": f,
            "converged": conv,
            "message": msg + (f"; Omega by EM, {rnd + 1} round(s)" if map_omega == "em" else "") + em_note,
            "n_evaluations": ne_total,
            "C": state["C"],  # (the posterior covariance Omega was profiled with in the last round)
        }

    def ofv_kind_for(self, P):
        return "Laplace" if P.nonnormal else "FOCE-I"

    def ofv(self, P, x, etas):
        """FOCE-I's OFV (Laplace's with censored observations: M3, M4) at the MAP estimates (the
        modes re-found from the MAP ones)."""
        from ..laplace import laplace

        v, etas, _ = laplace(P, x, etas) if P.nonnormal else P.foce(x, etas)
        return v, etas

    def convergence(self, P, x, etas, run):
        """Every partial derivative of the joint objective (Omega profiled as in the fit's last
        round), over the free parameters and every random effect, within :data:`GRADIENT_TOL`."""
        m = P.model
        free = np.flatnonzero(self.free(m))
        _, gx, ge = P.map_objective(x, etas, 1, run.get("C"))
        g = np.concatenate([gx[free], ge.ravel()])
        names = [m.names[i] for i in free] + [f"eta({k}) of ID {s.subject.id}" for s in P.subjects for k in m.eta_names]
        if not np.all(np.isfinite(g)):
            return False, "gradient criterion NOT met: the gradient is not finite", None, None
        k = int(np.argmax(np.abs(g))) if g.size else 0
        gmax = float(abs(g[k])) if g.size else 0.0
        ok = gmax <= GRADIENT_TOL
        where = f" ({names[k]})" if g.size else ""
        word = "met" if ok else "NOT met"
        text = f"gradient criterion {word}: max |d objective / d parameter| = {gmax:.2g}{where}"
        text += f" (limit {GRADIENT_TOL:g})"
        return ok, text, None, None

    def standard_errors(self, P, x, etas, H=None):
        """R: the Hessian of the joint objective over the covered parameters and the random
        effects; the parameters' block of its inverse."""
        m = P.model
        idx, excluded = self.se_indices(P, x)
        if idx.size == 0:
            return None, idx, excluded, None
        nf, q = idx.shape[0], m.n_eta

        def grad(z):
            xx = x.copy()
            xx[idx] = z[:nf]
            _, gx, ge = P.map_objective(xx, z[nf:].reshape(P.N, q), 1)
            return np.concatenate([gx[idx], ge.ravel()])

        C, why = covariance(hessian_from_gradient(grad, np.concatenate([x[idx], etas.ravel()]), h=1e-5), None, "R")
        return (None if C is None else C[:nf, :nf]), idx, excluded, why

    def n_estimated(self, model):
        """The free parameters, Omega's free entries too unless ``map_omega="fixed"``."""
        n = int(np.sum(~model.fixed & self._not_omega(model)))
        if self.map_omega != "fixed":
            n += int(np.sum(~model.fixed[model.blocks["omega"]]))
        return n

    @staticmethod
    def _not_omega(model):
        mask = np.ones(model.n_x, dtype=bool)
        mask[model.blocks["omega"]] = False
        return mask
