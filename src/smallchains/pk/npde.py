"""Normalised prediction distribution errors (NPDE; Brendel et al. 2006, Pharm. Res. 23:2036;
Comets, Brendel & Mentré 2008, Comput. Methods Programs Biomed. 90:154), as the R package npde
computes them.

K replicates of every subject's observations are simulated from the fitted model (new random
effects from Omega, new residual errors).  For subject i with observations y_i and simulations
y_i^(k): E_i and V_i are the simulations' mean and covariance; the decorrelated observations
are y_i* = V_i^(-1/2) (y_i - E_i), and the simulations y_i^(k)* likewise, with V_i^(-1/2) the
inverse of V_i's Cholesky factor (npde's default, ``decorrelation="cholesky"``) or V_i's inverse
symmetric square root (``"inverse"``).  pde_ij = (1/K) sum_k 1[y_ij^(k)* < y_ij*], with 0 and 1
replaced by 1/K and 1 - 1/K (npde's rule), and npde_ij = Phi^-1(pde_ij).  Without decorrelation
the same on y_ij and y_ij^(k) directly gives pd and npd.  Under the model, the npde are
independent N(0, 1).

The observations are those the fit used (BLQ records left out under the M1 rule), in the rows
of ``FitResult.diagnostics``.  Observations in the fit as censored (M3, M4) get NaN and the
others' NPDE are computed without them: the npde package's imputation of censored
observations (Nguyen et al. 2012) is not implemented, so with many BLQ records the NPDE of the
observed values lean high (the simulations are not censored).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import norm

from .._warnings import DoubtfulResultWarning
from ._censored import M3, M4_CENSORED
from .importance import problem_for

DECORRELATIONS = ("cholesky", "inverse")


def npde_from_simulations(y, sims, decorrelation="cholesky"):
    """(pde, npde, pd, npd) of one subject's observations ``y`` (n,) from its simulations ``sims``
    (K, n); None when the simulations' covariance is not positive definite."""
    y = np.asarray(y, dtype=float)
    sims = np.asarray(sims, dtype=float)
    K = sims.shape[0]
    lo, hi = 1.0 / K, 1.0 - 1.0 / K
    pd = np.clip(np.mean(sims < y[None, :], axis=0), lo, hi)
    E = sims.mean(axis=0)
    D = sims - E
    V = D.T @ D / (K - 1)
    if decorrelation == "cholesky":
        try:
            L = np.linalg.cholesky(V)
        except np.linalg.LinAlgError:
            return None
        W = np.linalg.inv(L)
    else:
        w, U = np.linalg.eigh(V)
        if w.min() <= 0:
            return None
        W = (U / np.sqrt(w)) @ U.T
    ys = W @ (y - E)
    ss = D @ W.T
    pde = np.clip(np.mean(ss < ys[None, :], axis=0), lo, hi)
    return pde, norm.ppf(pde), pd, norm.ppf(pd)


def npde(result, data, *, n_sim=1000, seed=0, decorrelation="cholesky"):
    """NPDE of a fit's observations by ``n_sim`` simulations (see the module's documentation).

    Args:
        result: a population fit; data: the data set it was fitted to.
        n_sim: replicates K (at least 100: pde moves in steps of 1/K).
        seed: the simulations' seed (the same seed, the same NPDE).
        decorrelation: ``"cholesky"`` (npde's default) or ``"inverse"``.

    Returns:
        dict of arrays in the rows of ``result.diagnostics``: ``ID``, ``TIME``, ``PDE``,
        ``NPDE``, ``PD``, ``NPD``.  A subject whose simulations have a singular covariance gets NaN
        (with a DoubtfulResultWarning naming it).
    """
    if decorrelation not in DECORRELATIONS:
        raise ValueError(f"`decorrelation` must be one of {DECORRELATIONS}, got {decorrelation!r}")
    n_sim = int(n_sim)
    if n_sim < 100:
        raise ValueError(f"`n_sim` must be >= 100 (pde moves in steps of 1/n_sim), got {n_sim}")
    P = problem_for(result, data)
    try:
        sims = simulate_observations(P, result.x, n_sim, seed)
        out = {k: [] for k in ("ID", "TIME", "PDE", "NPDE", "PD", "NPD")}
        bad = []
        for s, Y in zip(P.subjects, sims, strict=True):
            d = (s.code != M3) & (s.code != M4_CENSORED)  # (censored observations: NaN)
            r = npde_from_simulations(s.y[d], Y[:, d], decorrelation) if d.any() else None
            if r is None and d.any():
                bad.append(s.subject.id)
            full = tuple(np.full(s.n_obs, np.nan) for _ in range(4))
            if r is not None:
                for a, b in zip(full, r, strict=True):
                    a[d] = b
            r = full
            out["ID"].extend([s.subject.id] * s.n_obs)
            out["TIME"].append(s.t)
            for k, v in zip(("PDE", "NPDE", "PD", "NPD"), r, strict=True):
                out[k].append(v)
    finally:
        P.close()
    if bad:
        warnings.warn(
            f"NPDE are NaN for {len(bad)} subject(s) (ID {bad[:8]}): their simulated observations' "
            "covariance is singular (e.g. identical simulations); raise n_sim or check the model",
            DoubtfulResultWarning,
            stacklevel=2,
        )
    res = {"ID": np.asarray(out["ID"], dtype=object)}
    for k in ("TIME", "PDE", "NPDE", "PD", "NPD"):
        res[k] = np.concatenate(out[k]) if out[k] else np.zeros(0)
    return res


def simulate_observations(P, x, n_sim, seed):
    """[(n_sim, n_i) per subject]: each subject's observations simulated ``n_sim`` times at ``x``
    (random effects from Omega, residual errors from the error model), one population call per
    replicate (the compiled predictions where they apply)."""
    m = P.model
    rng = np.random.default_rng(seed)
    q = m.n_eta
    L = np.linalg.cholesky(m.omega(x)) if q else np.zeros((0, 0))
    off = np.concatenate([[0], np.cumsum([s.n_obs for s in P.subjects])])
    Y = np.empty((n_sim, int(off[-1])))
    for k in range(n_sim):
        etas = rng.standard_normal((P.N, q)) @ L.T
        pr = P.predictions(x, etas)
        for i, (s, r) in enumerate(zip(P.subjects, pr, strict=True)):
            if r is None:
                raise RuntimeError(f"subject {s.subject.id}: the prediction fails at a simulated eta {etas[i]}")
        F = np.concatenate([r[0] for r in pr])
        V = np.concatenate([r[1] for r in pr])
        # (one draw for every subject's residuals: the same stream as a draw per subject in turn)
        Y[k] = F + np.sqrt(np.maximum(V, 0.0)) * rng.standard_normal(F.shape[0])
    return [Y[:, off[i] : off[i + 1]] for i in range(P.N)]
