"""Covariate discovery after a fit, as DeepPumas does it: learn a network from covariates to the
random effects, fold it into the population model, refit jointly.

:func:`augment` takes a fit with random effects and

1. reads each subject's empirical Bayes estimates eta_i (the fit's modes) and how much the data
   say about them: the reliability r_ik = 1 - C_ik / omega_k^2 of each estimate, C_i the Laplace
   posterior covariance M_i^-1 at the mode (r near 0: the estimate is shrunk to 0, the data say
   little; near 1: the data pin it down);
2. trains a :class:`~smallchains.SimpleChain` g from the covariates (standardised as the model's
   :class:`~smallchains.pk.CovariateNetwork` standardises them) to the target parameters' random
   effects by minimising sum_i sum_k r_ik (eta_ik - g_k(c_i))^2 / omega_k^2 + |w|^2 / s^2 (s the
   model's ``weight_prior``): weighted least squares in which a shrunk estimate counts for less,
   on the scale of the population objective, with the same prior on the weights as the refit;
3. builds the same population model with that network added (log q_k += g_k(c)), every other
   parameter at the fit's estimates and the weights at the trained ones, and refits it jointly
   (FOCE-I by default; MAP when the fit has censored observations, which FOCE-I refuses);
4. reports the change in OFV and, per target, the share of the random effect's variance the
   network explains, 1 - omega_k^2(after) / omega_k^2(before).

The refit's result carries ``augmentation`` (a dict: ``delta_ofv``, ``ofv_before``,
``variance_explained``, ``targets``, ``covariates``, ``train_loss``, ``method``), also said by its
``summary()``.  A ΔOFV compares two fits of the same data by the same method; the network's weights
count as parameters in AIC and BIC.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.optimize import minimize as _scipy_minimize

_log = logging.getLogger("smallchains.pk")


def _rebuild(m, fit, network):
    """The fit's population model with ``network`` added, started at the fit's estimates."""
    from .population import PopulationModel

    cov = {}
    for k, c, form in m.covariates:
        name = m.theta_names[k]
        cov.setdefault(name, {})[c] = (
            ("categorical", m.covariate_levels[(name, c)]) if form.startswith("cat=") else form
        )
    m2 = PopulationModel(
        m.structural,
        dict(fit.theta),
        eta=list(m.eta_names),
        omega=m.omega_spec,
        omega_init=fit.omega,
        covariates=cov or None,
        covariate_ref=m.covariate_ref,
        individual=m.individual,
        error=m.error.kind,
        sigma=list(fit.sigma.values()),
        weights=fit.weights if m.n_weights else None,
        weight_prior=m.weight_prior,
        fixed=[n for n, f in zip(m.names, m.fixed, strict=True) if f],
        covariate_network=network,
        dosing=m.dose_params if m.individual is not None else None,
        bounds=m.bounds,
    )
    x0 = m2.x0.copy()
    where = {n: i for i, n in enumerate(m.names)}
    for j, n in enumerate(m2.names):
        if n in where:
            x0[j] = fit.x[where[n]]
    return m2, x0


def _reliability(fit, data):
    """(N, q) 1 - C_ik / omega_k^2 at each subject's mode (C_i = M_i^-1), clipped to [0, 1]."""
    from .estimation import information
    from .importance import problem_for

    m = fit.model
    P = problem_for(fit, data)
    try:
        Oinv = np.linalg.inv(fit.omega)
        om = np.diag(fit.omega)
        by_id = {s.subject.id: s for s in P.subjects}
        out = np.zeros((len(fit.ids), m.n_eta))
        for i, (sid, eta) in enumerate(zip(fit.ids, fit.etas, strict=True)):
            r = by_id[sid].data_term(fit.x, eta, need=2)
            if r[1] is None:
                raise ValueError(
                    f"subject {sid}: the prediction fails at its random effects; cannot weigh its estimate"
                )
            C = np.linalg.inv(information(r[1], Oinv))
            out[i] = np.clip(1.0 - np.diag(C) / om, 0.0, 1.0)
    finally:
        P.close()
    return out


def augment(fit, data, covariates, *, targets=None, chain=None, hidden=8, seed=0, method=None, **fit_kw):
    """Learn a covariate network from ``fit``'s random effects and refit with it (see the module's
    documentation).

    Args:
        fit: a population fit with random effects (a :class:`FitResult`) and no covariate network.
        data: the data set it was fitted to.
        covariates: the baseline covariates the network reads (names in the data).
        targets: the parameters whose log values the network shifts (default: those with a random
            effect); each must have one.
        chain: the network (a :class:`~smallchains.SimpleChain` with ``len(covariates)`` inputs and
            ``len(targets)`` outputs); default ``Dense(hidden, tanh)`` then ``Dense(len(targets))``.
        seed: the network's initial weights.
        method: the refit's method (default ``"foce"``; ``"map"`` when the fit has censored
            observations).
        fit_kw: more keywords for :func:`smallchains.pk.fit` (default: the fit's solver settings).

    Returns:
        the refit's :class:`FitResult`, with ``augmentation`` (see the module's documentation).
    """
    from ..chain import SimpleChain
    from ..layers import Dense
    from .fit import fit as pk_fit
    from .population import CovariateNetwork

    m = fit.model
    if not m.n_eta or not getattr(fit, "etas", np.zeros((0, 0))).size:
        raise ValueError("augment() needs a fit with random effects (eta): its estimates are what the network learns")
    if m.covariate_network is not None:
        raise ValueError("the fit's model has a covariate network already; augment the fit without one")
    covariates = [str(c) for c in covariates]
    if not covariates:
        raise ValueError("`covariates` must name at least one covariate of the data")
    missing = [c for c in covariates if c not in data.covariate_names]
    if missing:
        raise ValueError(f"covariate {missing[0]!r} is not in the data (its covariates: {list(data.covariate_names)})")
    targets = list(m.eta_names) if targets is None else [str(k) for k in targets]
    bad = [k for k in targets if k not in m.eta_names]
    if bad or not targets:
        raise ValueError(
            f"`targets` must be parameters with a random effect ({m.eta_names}), got {bad[0] if bad else targets!r}"
        )
    if chain is None:
        chain = SimpleChain(len(covariates), Dense(int(hidden), "tanh"), Dense(len(targets)))
    network = CovariateNetwork(chain, covariates, targets)
    m2, x0 = _rebuild(m, fit, network)

    # the training data: standardised covariates as the model computes them, the estimates, their reliability
    _, Z, _ = m2.covariate_design(data)
    row = {s.id: i for i, s in enumerate(data.subjects)}
    Z = np.ascontiguousarray([Z[row[sid]] for sid in fit.ids], dtype=np.float64)
    cols = [m.eta_names.index(k) for k in targets]
    Y = np.ascontiguousarray(fit.etas[:, cols], dtype=np.float64)
    om = np.diag(fit.omega)[cols]
    W = _reliability(fit, data)[:, cols] / om  # (N, n_targets): r_ik / omega_k^2
    s2 = m.weight_prior**2 if m.weight_prior is not None else np.inf
    g = np.zeros(chain.num_params)

    def loss(p):
        p = np.ascontiguousarray(p)
        R = chain(Z, p) - Y
        val = float(np.sum(W * R * R) + p @ p / s2)
        chain.vjp_into(g, p, np.ascontiguousarray(2.0 * W * R), Z)
        return val, g + 2.0 * p / s2

    p0 = network.init_weights(seed)
    res = _scipy_minimize(loss, p0, jac=True, method="L-BFGS-B", options={"maxiter": 2000})
    x0[m2.blocks["wc"]] = res.x
    _log.info(
        "augment: network trained on %d subjects' random effects (%s), weighted loss %.4g -> %.4g",
        len(fit.ids),
        ", ".join(targets),
        loss(p0)[0],
        res.fun,
    )

    settings = fit.settings or {}
    blq = settings.get("blq", "m1")
    if method is None:
        method = "map" if blq != "m1" else "foce"
    kw = dict(
        rtol=settings.get("rtol", 1e-8),
        atol=settings.get("atol", 1e-10),
        time_varying=settings.get("time_varying", "nocb"),
        blq=blq,
        lloq=settings.get("lloq"),
    )
    kw.update(fit_kw)
    fit2 = pk_fit(m2, data, method, x0=x0, **kw)
    om_after = np.diag(fit2.omega)[cols]
    fit2.augmentation = {
        "covariates": covariates,
        "targets": targets,
        "method": method,
        "ofv_before": float(fit.ofv),
        "delta_ofv": float(fit2.ofv - fit.ofv),
        "variance_explained": {k: float(1.0 - a / b) for k, a, b in zip(targets, om_after, om, strict=True)},
        "train_loss": float(res.fun),
    }
    return fit2
