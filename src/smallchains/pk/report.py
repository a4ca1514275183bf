"""What a population fit reports beyond its estimates: the parameter table (with the delta method
for Omega's entries), the diagnostics (TAD, PRED, IPRED, RES, WRES, IWRES, CWRES), and :func:`warn_doubtful`
(every reason not to trust a fit, as the package's warnings)."""

from __future__ import annotations

import math
import warnings

import numpy as np

from .._warnings import ConvergenceWarning, DoubtfulResultWarning
from ._censored import M3, M4_CENSORED
from .covariance import VARIANCE_FLOOR
from .methods import has_random_effects

#: the standard normal's 97.5% quantile: 95% intervals are estimate +- Z95 SE
Z95 = 1.959963984540054


def parameter_table(m, x, cov, idx, random_effects):
    """One dict per reported parameter (``FitResult.table``): typical values, covariate effects,
    residual errors and, with ``random_effects``, Omega's entries; SEs from ``cov`` over the
    entries ``idx`` of x (Omega's by the delta method), and 95% Wald intervals ``ci_lower``,
    ``ci_upper`` on the scale the parameter is estimated on: log scale for typical values and
    residual sds (exp(log estimate +- 1.96 SE of the log): positive, asymmetric), the natural scale
    for covariate effects and Omega's covariances (estimate +- 1.96 SE, as NONMEM's SEs give them); NaN
    without a standard error.  Omega's variances take the log scale too (exp(log omega^2 +-
    1.96 SE / omega^2), the delta method: their parameters are logs of the Cholesky factor's
    diagonal), so an interval never holds a negative variance."""
    se_x = np.full(m.n_x, np.nan)
    if cov is not None:
        se_x[idx] = np.sqrt(np.maximum(np.diag(cov), 0.0))
    rows = []

    def row(name, est, se, log=None, log_se=None):
        r = {
            "name": name,
            "estimate": float(est),
            "se": float(se),
            "rse": float(100 * se / abs(est)) if est != 0 and np.isfinite(se) else float("nan"),
        }
        if log is not None:
            r["log_estimate"], r["log_se"] = float(log), float(log_se)
            lo, hi = math.exp(log - Z95 * log_se), math.exp(log + Z95 * log_se)
        else:
            lo, hi = est - Z95 * se, est + Z95 * se
        r["ci_lower"], r["ci_upper"] = (float(lo), float(hi)) if np.isfinite(se) else (math.nan, math.nan)
        r["fixed"] = False
        return r

    for k, name in enumerate(m.theta_names):
        i = m.blocks["theta"].start + k
        r = row(name, math.exp(x[i]), math.exp(x[i]) * se_x[i], x[i], se_x[i])
        r["fixed"] = bool(m.fixed[i])
        rows.append(r)
    for j, (k, c, form) in enumerate(m.covariates):
        i = m.blocks["beta"].start + j
        rows.append(row(f"{m.theta_names[k]}~{c} ({form})", x[i], se_x[i]))
    for j, name in enumerate(m.error.names):
        i = m.blocks["psi"].start + j
        rows.append(row(name, math.exp(x[i]), math.exp(x[i]) * se_x[i], x[i], se_x[i]))
    q = m.n_eta if random_effects else 0
    if q:
        Om = m.omega(x)
        # the delta method for Omega's entries: J of vec(Omega) wrt its block of x
        ob = m.blocks["omega"]
        J = np.empty((q * q, ob.stop - ob.start))
        for k in range(ob.stop - ob.start):
            xz = x.astype(complex)
            xz[ob.start + k] += 1e-30j
            L = np.diag(np.exp(xz[ob.start : ob.start + q]))
            if m.tril[0].size:
                L[m.tril] = xz[ob.start + q : ob.stop]
            J[:, k] = (L @ L.T).imag.ravel() / 1e-30
        Cw = None
        if cov is not None:
            pos = np.searchsorted(idx, np.arange(ob.start, ob.stop))
            ok = (pos < idx.size) & (idx[np.minimum(pos, idx.size - 1)] == np.arange(ob.start, ob.stop))
            if np.all(ok):
                Cw = J @ cov[np.ix_(pos, pos)] @ J.T
        for a in range(q):
            for b in range(a + 1):
                if b != a and not m.omega_mask[a, b]:  # (across blocks: 0 by the model)
                    continue
                se = math.sqrt(max(Cw[a * q + b, a * q + b], 0.0)) if Cw is not None else float("nan")
                name = f"omega2({m.eta_names[a]})" if a == b else f"omega({m.eta_names[a]},{m.eta_names[b]})"
                if a == b:
                    r = row(name, Om[a, a], se, math.log(Om[a, a]), se / Om[a, a])
                else:
                    r = row(name, Om[a, b], se)
                if a == b:  # log-normal parameters: CV = sqrt(exp(omega^2) - 1)
                    r["cv_percent"] = float(100.0 * math.sqrt(math.expm1(Om[a, a])))
                else:
                    r["corr"] = float(Om[a, b] / math.sqrt(Om[a, a] * Om[b, b]))
                rows.append(r)
    return rows


#: the diagnostics' columns, NONMEM's names
DIAGNOSTICS = ("ID", "TIME", "TAD", "DVID", "DV", "BLQ", "PRED", "IPRED", "RES", "WRES", "IWRES", "CWRES")


def _whitened(r, C):
    """C^(-1/2) r with the symmetric square root (the decorrelation of WRES and CWRES)."""
    w, U = np.linalg.eigh(C)
    return U @ ((U.T @ r) / np.sqrt(np.maximum(w, 1e-300)))


def time_after_dose(subject, t):
    """Time since the latest dose at or before each time ``t`` (0 at a dose's time, as NONMEM's
    usual TAD = TIME - TDOS with the dose record first; the prediction there is still the state
    before that dose, by the data rules); NaN before the first dose.  Resets are not doses."""
    times = np.sort([d.time for d in subject.doses if d.kind != "reset"])
    k = np.searchsorted(times, t, side="right") - 1
    return np.where(k >= 0, t - times[np.maximum(k, 0)] if times.size else np.nan, np.nan)


def diagnostics(P, x, etas):
    """The diagnostics table (:data:`DIAGNOSTICS`, NONMEM's names): TAD (:func:`time_after_dose`),
    PRED and IPRED, RES = DV - PRED, WRES (FO: DV - PRED whitened by G0 Omega G0' + diag V at
    eta = 0, as NONMEM's WRES), IWRES and CWRES (Hooker et al. 2007: FOCE-linearised at each
    subject's etas).  BLQ = 1 marks observations in the likelihood as censored (M3, M4): DV is
    their LLOQ, and their residuals are NaN (the whitening is over the other observations)."""
    m = P.model
    Om = m.omega(x)
    cols = {k: [] for k in DIAGNOSTICS}
    at0 = P.predictions(x, None, directions=m.n_eta > 0)
    at_eta = P.predictions(x, etas, directions=m.n_eta > 0)
    for s, eta, r0, out in zip(P.subjects, etas, at0, at_eta, strict=True):
        nan = np.full(s.n_obs, np.nan)
        d = (s.code != M3) & (s.code != M4_CENSORED)  # (residuals of the observed values only)
        y = s.y[d]

        def ok(r, d=d):
            return r is not None and np.isfinite(r[0].sum() + r[1].sum()) and np.all(r[1][d] > 0)

        pred = r0[0] if r0 is not None else nan
        wres = nan.copy()
        if ok(r0) and m.n_eta:
            G0 = r0[2][d]
            wres[d] = _whitened(y - r0[0][d], G0 @ Om @ G0.T + np.diag(r0[1][d]))
        elif ok(r0):
            wres[d] = (y - r0[0][d]) / np.sqrt(r0[1][d])
        iwres, cwres = nan.copy(), nan.copy()
        if not ok(out):
            ipred = nan
        else:
            ipred, V = out[0], out[1][d]
            iwres[d] = (y - ipred[d]) / np.sqrt(V)
            if m.n_eta:
                G = out[2][d]
                cwres[d] = _whitened(y - (ipred[d] - G @ eta), G @ Om @ G.T + np.diag(V))
            else:
                cwres = iwres
        res = np.where(d, s.y - pred, np.nan)
        cols["ID"].extend([s.subject.id] * s.n_obs)
        cols["TIME"].append(s.t)
        cols["TAD"].append(time_after_dose(s.subject, s.t))
        cols["DVID"].append(s.dvid)
        cols["DV"].append(s.y)
        cols["BLQ"].append((~d).astype(np.int64))
        cols["PRED"].append(pred)
        cols["IPRED"].append(ipred)
        cols["RES"].append(res)
        cols["WRES"].append(wres)
        cols["IWRES"].append(iwres)
        cols["CWRES"].append(cwres)
    out = {"ID": np.asarray(cols["ID"], dtype=object)}
    for k in DIAGNOSTICS[1:]:
        out[k] = np.concatenate(cols[k])
    out["DVID"] = out["DVID"].astype(np.int64)
    return out


def warn_doubtful(r, se_requested):
    """Warn about every reason not to trust a fit as it is (the package's warning classes)."""
    what = f"{r.method} fit"
    if not r.converged:
        warnings.warn(
            f"the {what} did not converge ({r.message}); the estimates are where the optimizer "
            "stopped: raise maxiter, try other starts or simplify the model",
            ConvergenceWarning,
            stacklevel=3,
        )
    if r.n_obs < r.n_estimated:
        warnings.warn(
            f"the {what} estimates {r.n_estimated} parameters from {r.n_obs} observations: the "
            "estimates are not identified by the data",
            DoubtfulResultWarning,
            stacklevel=3,
        )
    if se_requested and len(r.cov_names) and r.cov is None:
        why = getattr(r, "cov_why", None) or "the objective's Hessian at the estimate is not positive definite"
        warnings.warn(
            f"the {what}'s standard errors are NaN: {why}",
            DoubtfulResultWarning,
            stacklevel=3,
        )
    m_bounds = r.model.at_user_bound(r.x)
    if m_bounds:
        names = [
            f"{r.model.names[i]} = {r.x[i]:.6g} ({'lower' if side < 0 else 'upper'})" for i, side in m_bounds.items()
        ]
        warnings.warn(
            f"the {what} ended on the bounds given for {', '.join(names)} (log scale): the bound, not the "
            "data, sets these estimates, and they have no standard error; widen the bound or fix the parameter",
            DoubtfulResultWarning,
            stacklevel=3,
        )
    if se_requested and getattr(r, "cov_excluded", None):
        warnings.warn(
            f"the {what}'s covariance step left out {', '.join(r.cov_excluded)} (at a variance bound or "
            "a given bound: their standard errors are NaN; the others are conditional on them)",
            DoubtfulResultWarning,
            stacklevel=3,
        )
    corr = r.correlation
    if corr is not None:
        n = corr.shape[0]
        high = [
            f"{r.cov_names[a]} and {r.cov_names[b]} ({corr[a, b]:+.3f})"
            for a in range(n)
            for b in range(a)
            if abs(corr[a, b]) > 0.95
        ]
        if high:
            warnings.warn(
                f"the {what}'s estimates are highly correlated: {'; '.join(high)} (|r| > 0.95): the data "
                "hardly tell them apart; consider fixing or reparameterising one",
                DoubtfulResultWarning,
                stacklevel=3,
            )
    m = r.model
    if m.n_eta and has_random_effects(r.method):
        sd = np.sqrt(np.maximum(np.diag(m.omega(r.x)), 0.0))
        low = [k for j, k in enumerate(m.eta_names) if sd[j] < VARIANCE_FLOOR]
        if low:
            warnings.warn(
                f"the {what}'s random-effect variance of {', '.join(low)} is at its lower bound "
                f"(sd < {VARIANCE_FLOOR:g}): the data do not support it; fix it to 0 (drop the "
                "random effect) or check the model",
                DoubtfulResultWarning,
                stacklevel=3,
            )
    low = [f"{k} = {v:.2g}" for k, v in r.sigma.items() if v < VARIANCE_FLOOR]
    if low:
        warnings.warn(
            f"the {what}'s residual error parameter {', '.join(low)} is at its lower bound: the data "
            "do not support that error component (drop it, e.g. error='proportional')",
            DoubtfulResultWarning,
            stacklevel=3,
        )
