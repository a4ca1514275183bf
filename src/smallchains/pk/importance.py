"""The marginal likelihood by importance sampling, as Monolix and nlmixr2 compute it after SAEM.

For subject i, L_i = int p(y_i | eta) N(eta; 0, Omega) d eta is estimated by
(1/K) sum_k p(y_i | eta_k) N(eta_k; 0, Omega) / g_i(eta_k) with eta_k drawn from g_i, a
multivariate Student t with ``df`` degrees of freedom centred at the subject's conditional mode
with scale M_i^-1 (FOCE-I's posterior covariance: M_i = G' diag(1/V + V'^2/(2V^2)) G + Omega^-1);
heavy tails keep the weights' variance finite where the posterior is wider than its Laplace
approximation.  The OFV is sum_i -2 log L_i without the 2 pi of each observation (NONMEM's
convention, as every OFV of the package), and its Monte Carlo standard error is the delta
method's, 2 sqrt(sum_i var(w_i) / (K mean(w_i)^2)).  With enough samples it converges to the
exact marginal likelihood that FOCE-I and Laplace approximate (tested against quadrature), so it
settles which of two estimates (e.g. FOCE-I's and SAEM's) has the higher likelihood.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from scipy.special import gammaln, logsumexp

from .estimation import Problem, information

_log = logging.getLogger("smallchains.pk")


def problem_for(result, data):
    """A :class:`Problem` binding ``result``'s model to ``data`` with the fit's solver settings."""
    from ..ode import tableau

    s = result.settings
    name = s.get("solver") or "Vern7"
    if name not in tableau.TABLEAUS:
        _log.info("the fit's solver %r is not a built-in tableau: binding the data with Vern7", name)
        name = "Vern7"
    solver = getattr(tableau, name)
    return Problem(
        result.model,
        data,
        rtol=s.get("rtol", 1e-8),
        atol=s.get("atol", 1e-10),
        solver=solver(),
        ss_tol=s.get("ss_tol"),
        time_varying=s.get("time_varying", "nocb"),
        analytic=s.get("analytic"),
        blq=s.get("blq", "m1"),
        lloq=s.get("lloq"),
    )


def importance_sampling(result, data, *, n_samples=2000, seed=0, df=5.0):
    """-2 log L by importance sampling at a fit's estimates (see the module's documentation).

    Args:
        result: a population fit with random effects (:class:`FitResult`).
        data: the data set it was fitted to.
        n_samples: draws per subject (K).
        seed: the draws' seed (the same seed, the same value).
        df: the t proposal's degrees of freedom (> 2).

    Returns:
        dict: ``ofv`` (-2 log L without 2 pi per observation), ``se`` (its Monte Carlo standard
        error), ``m2ll`` (-2 log L with the constant), ``n_samples``, ``per_subject`` (each
        subject's -2 log L_i, in the fit's subject order).
    """
    m = result.model
    if not m.n_eta:
        raise ValueError("importance sampling integrates over random effects: the model has none")
    n_samples = int(n_samples)
    if n_samples < 10:
        raise ValueError(f"`n_samples` must be >= 10, got {n_samples}")
    if not (isinstance(df, int | float) and df > 2):
        raise ValueError(f"`df` must be a number > 2 (a proposal with finite variance), got {df!r}")
    P = problem_for(result, data)
    try:
        by_id = dict(zip(result.ids, result.etas, strict=True))
        start = np.array([by_id.get(s.subject.id, np.zeros(m.n_eta)) for s in P.subjects])
        return _sample(P, result.x, start, n_samples, seed, float(df))
    finally:
        P.close()


def _sample(P, x, etas0, K, seed, df):
    m = P.model
    q, N = m.n_eta, P.N
    Om = m.omega(x)
    Lo = np.linalg.cholesky(Om)
    Oinv = np.linalg.inv(Om)
    log_norm = -0.5 * (q * math.log(2 * math.pi) + 2.0 * np.sum(np.log(np.diag(Lo))))
    _, modes, _ = P.foce(x, etas0)
    chol = np.empty((N, q, q))
    logdet = np.empty(N)
    for i, (s, e) in enumerate(zip(P.subjects, modes, strict=True)):
        _, out = s.data_term(x, e, need=2)
        if out is None:
            raise ValueError(f"subject {s.subject.id}: its prediction fails at its mode")
        C = np.linalg.inv(information(out, Oinv))
        chol[i] = np.linalg.cholesky(0.5 * (C + C.T))
        logdet[i] = 2.0 * np.sum(np.log(np.diag(chol[i])))
    # the t proposal's log density's constant, per subject
    t_const = gammaln((df + q) / 2) - gammaln(df / 2) - 0.5 * q * math.log(df * math.pi) - 0.5 * logdet
    rng = np.random.default_rng(seed)
    logw = np.empty((K, N))
    for k in range(K):
        z = rng.standard_normal((N, q))
        u = rng.chisquare(df, N)
        d = np.einsum("nab,nb->na", chol, z) * np.sqrt(df / u)[:, None]
        eta = modes + d
        delta = np.sum(z * z, axis=1) * (df / u)  # (eta - mode)' C^-1 (eta - mode)
        log_g = t_const - 0.5 * (df + q) * np.log1p(delta / df)
        l = P.data_terms(x, eta)
        quad = np.einsum("na,ab,nb->n", eta, Oinv, eta)
        logw[k] = -0.5 * l - 0.5 * quad + log_norm - log_g
    lse = logsumexp(logw, axis=0) - math.log(K)  # log L_i (without the 2 pi of the observations)
    w = np.exp(logw - lse[None, :])  # (weights over their mean)
    var_rel = np.var(w, axis=0, ddof=1) / K  # the variance of the mean over the mean squared
    per = -2.0 * lse
    return {
        "ofv": float(per.sum()),
        "se": float(2.0 * math.sqrt(float(var_rel.sum()))),
        "m2ll": float(per.sum() + P.n_obs * math.log(2 * math.pi)),
        "n_samples": K,
        "per_subject": per,
    }
