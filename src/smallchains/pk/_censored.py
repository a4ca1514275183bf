"""One observation's term of -2 log p(y | eta): observed, or censored below the LLOQ (M3, M4).

Beal's methods for observations below the limit of quantification L (Beal, "Ways to fit a PK
model with some data below the quantification limit", J Pharmacokinet Pharmacodyn 28 (2001)
481-504), with prediction f and residual variance V (s = sqrt V) and Phi the standard normal
distribution function:

* code 0, observed:               (y - f)^2 / V + log V          (the normal term without log 2 pi)
* code 1, M3, censored:           -2 log Phi((L - f) / s)        (P(Y < L))
* code 2, M4, observed:           (y - f)^2 / V + log V + 2 log Phi(f / s)
* code 3, M4, censored:           -2 log[Phi((L - f) / s) - Phi(-f / s)] + 2 log Phi(f / s)

M4 conditions every observation of the fit on Y > 0 (Beal's method for positive quantities):
an observed value by its density over P(Y > 0), a censored one by P(0 < Y < L) / P(Y > 0).  The
censored terms are -2 log of a probability, the observed ones -2 log of a density without the
log 2 pi constant: NONMEM's convention for a likelihood row (F_FLAG = 1) beside normal rows.

A censored observation whose variance is 0 (a proportional error where the model predicts 0,
e.g. before the first dose) with f < L has probability 1: its term is 0.

:func:`obs_term` returns the term with its partial derivatives in f and V (the callers chain V's
dependence on f and on the residual error's parameters); :func:`log_ndtr` is log Phi, accurate
in both tails.
"""

from __future__ import annotations

import math

import numpy as np

from .._jit import kernel

OBSERVED, M3, M4_OBSERVED, M4_CENSORED = 0, 1, 2, 3
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@kernel
def log_ndtr(x):
    """log Phi(x): log1p(-Phi(-x)) above 0, log Phi(x) by erfc down to -37 (no underflow), below
    that the asymptotic series of the Mills ratio (five terms: relative error under 1e-15)."""
    if x > 0.0:
        return math.log1p(-0.5 * math.erfc(x / math.sqrt(2.0)))
    if x > -37.0:
        return math.log(0.5 * math.erfc(-x / math.sqrt(2.0)))
    z2 = 1.0 / (x * x)
    series = 1.0 - z2 * (1.0 - 3.0 * z2 * (1.0 - 5.0 * z2 * (1.0 - 7.0 * z2 * (1.0 - 9.0 * z2))))
    return -0.5 * x * x - math.log(-x) - _LOG_SQRT_2PI + math.log(series)


@kernel
def mills(x):
    """phi(x) / Phi(x), the inverse Mills ratio (finite for every x: ~ -x as x -> -inf)."""
    if x <= -37.0:
        z2 = 1.0 / (x * x)
        return -x / (1.0 - z2 * (1.0 - 3.0 * z2 * (1.0 - 5.0 * z2 * (1.0 - 7.0 * z2 * (1.0 - 9.0 * z2)))))
    return math.exp(-0.5 * x * x - _LOG_SQRT_2PI - log_ndtr(x))


@kernel
def obs_term(y, code, lim, f, V):
    """(l, dl/df, dl/dV) of one observation (see the module's docstring); l = inf when the
    observation is impossible under (f, V)."""
    if code == OBSERVED:
        r = y - f
        return r * r / V + math.log(V), -2.0 * r / V, 1.0 / V - r * r / (V * V)
    if V == 0.0:
        if f < lim:
            return 0.0, 0.0, 0.0
        return np.inf, 0.0, 0.0
    s = math.sqrt(V)
    if code == M3:
        z = (lim - f) / s
        lam = mills(z)
        return -2.0 * log_ndtr(z), 2.0 * lam / s, lam * z / V
    u = f / s
    lu = mills(u)
    if code == M4_OBSERVED:
        r = y - f
        l = r * r / V + math.log(V) + 2.0 * log_ndtr(u)
        return l, -2.0 * r / V + 2.0 * lu / s, 1.0 / V - r * r / (V * V) - lu * u / V
    # M4, censored: D = Phi(z) - Phi(-u), z = (L - f) / s > -u
    z = (lim - f) / s
    lz = log_ndtr(z)
    lmu = log_ndtr(-u)
    logD = lz + math.log1p(-math.exp(lmu - lz))
    pz = math.exp(-0.5 * z * z - _LOG_SQRT_2PI - logD)  # phi(z) / D
    pu = math.exp(-0.5 * u * u - _LOG_SQRT_2PI - logD)  # phi(u) / D = phi(-u) / D
    l = -2.0 * logD + 2.0 * log_ndtr(u)
    dldf = -2.0 * (pu - pz) / s + 2.0 * lu / s
    dldV = (pz * z + pu * u) / V - lu * u / V
    return l, dldf, dldV


@kernel
def obs_terms(y, code, lim, f, V, l, lf, lV):
    """:func:`obs_term` over arrays (the NumPy path's call): l, lf, lV <- the terms and their
    partial derivatives in f and V."""
    for j in range(y.shape[0]):
        l[j], lf[j], lV[j] = obs_term(y[j], code[j], lim[j], f[j], V[j])
