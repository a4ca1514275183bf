"""The covariance step: standard errors of a population fit, as NONMEM's $COVARIANCE defines them.

With OFV = -2 log L (summed over subjects, OFV = sum_i OFV_i):

* **R** is the Hessian of the OFV at the estimates, here central differences of its exact
  gradient (2 gradient evaluations per parameter, not the n^2 objective evaluations of second
  differences of the OFV);
* **S** is sum_i g_i g_i', g_i = d OFV_i / dx the subjects' gradients (exact, from the same
  sensitivities as the fit's gradient);
* the covariance of the estimates is R^-1 S R^-1 (``"sandwich"``, NONMEM's default, robust to a
  misspecified residual model), 2 R^-1 (``"R"``, the inverse observed information: the OFV is
  twice the negative log-likelihood) or 4 S^-1 (``"S"``).  For a well-specified model S ~ 2R
  and the three agree.

Parameters at a bound — a random effect's or a residual error's standard deviation below
:data:`VARIANCE_FLOOR`, whose log-scale parameter heads to minus infinity — are left out
(:func:`at_bound`): their standard errors are NaN, and the others are computed as if they
were fixed, so one variance near zero no longer makes every standard error NaN.

:func:`summarize` reports what NONMEM prints beside it: the correlation matrix of the
estimates and its condition number (largest over smallest eigenvalue).
"""

from __future__ import annotations

import numpy as np

#: A random effect's or a residual error's standard deviation below this is at its lower bound (0)
VARIANCE_FLOOR = 1e-4

KINDS = ("sandwich", "R", "S")


def check_kind(kind):
    if kind not in KINDS:
        raise ValueError(f"`covariance` must be one of {KINDS} (NONMEM's default is 'sandwich'), got {kind!r}")
    return kind


def at_bound(model, x):
    """Indices into ``x`` of the parameters at a variance bound: log standard deviations of random
    effects (Omega's log-diagonal) and of residual errors below log(VARIANCE_FLOOR)."""
    out = []
    ob = model.blocks["omega"]
    if model.n_eta:
        sd = np.sqrt(np.maximum(np.diag(model.omega(x)), 0.0))
        out += [ob.start + j for j in range(model.n_eta) if sd[j] < VARIANCE_FLOOR]
    pb = model.blocks["psi"]
    out += [pb.start + j for j in range(pb.stop - pb.start) if np.exp(x[pb.start + j]) < VARIANCE_FLOOR]
    return sorted(out)


def hessian_from_gradient(grad, z, h=1e-3):
    """The symmetric central-difference Jacobian of ``grad`` at ``z`` (rows: d grad / d z_i), or
    None when a gradient is not available (None or not finite)."""
    n = z.shape[0]
    H = np.empty((n, n))
    for i in range(n):
        e = np.zeros(n)
        e[i] = h
        gp, gm = grad(z + e), grad(z - e)
        if gp is None or gm is None or not (np.all(np.isfinite(gp)) and np.all(np.isfinite(gm))):
            return None
        H[i] = (gp - gm) / (2 * h)
    return 0.5 * (H + H.T)


def covariance(R, S, kind):
    """(covariance or None, why not) from R (the OFV's Hessian) and S (sum of the subjects'
    gradient outer products; may be None for kind "R")."""
    if R is None or not np.all(np.isfinite(R)):
        return None, "the objective's Hessian (R) could not be computed"
    try:
        np.linalg.cholesky(R)
    except np.linalg.LinAlgError:
        return None, (
            "the objective's Hessian (R) is not positive definite (not a minimum, or a parameter is not identified)"
        )
    Rinv = np.linalg.inv(R)
    if kind == "R":
        return 2.0 * Rinv, None
    if S is None or not np.all(np.isfinite(S)):
        return None, "the subjects' gradients (S) could not be computed"
    if kind == "sandwich":
        C = Rinv @ S @ Rinv
        return 0.5 * (C + C.T), None
    try:
        np.linalg.cholesky(S)
    except np.linalg.LinAlgError:
        return None, "S is singular (fewer subjects than parameters, or a parameter no subject informs)"
    return 4.0 * np.linalg.inv(S), None


def summarize(cov):
    """(correlation matrix, condition number) of a covariance matrix (None, nan without one)."""
    if cov is None or cov.size == 0:
        return None, float("nan")
    sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.outer(sd, sd)
    w = np.linalg.eigvalsh(corr) if np.all(np.isfinite(corr)) else np.array([np.nan])
    cond = float(w.max() / w.min()) if w.size and w.min() > 0 else float("inf")
    return corr, cond
