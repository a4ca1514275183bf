"""The Laplace approximation of the population likelihood (NONMEM's ``METHOD=COND LAPLACIAN
INTERACTION``): FOCE-I with the exact Hessian of each subject's objective in place of its
expected information.

Per subject i, with Phi_i(eta) = l_i(eta) + eta' Omega^-1 eta (l_i = -2 log p(y_i | eta) without
2 pi, as in :mod:`smallchains.pk.estimation`) and eta_i* its minimiser:

    -2 log L_i ~= Phi_i(eta_i*) + log|Omega| + log|H_i / 2|,   H_i = d^2 Phi_i / d eta^2 at eta_i*

(the Gaussian integral of exp(-Phi / 2) about the mode).  FOCE-I replaces H_i / 2 by
M_i = G' diag(1/V + V'^2 / (2 V^2)) G + Omega^-1, which drops the second derivatives of the
predictions and the residuals' weight in the Hessian; Laplace keeps them, so it is exact for a
posterior that is Gaussian in eta and closer than FOCE-I when the predictions are strongly
nonlinear in eta and the data sparse.

How it is computed:

* the mode: FOCE-I's (compiled where it applies), then Newton steps with the exact Hessian
  (quadratic convergence) until a step changes no eta by more than 1e-10: the Laplace
  objective, unlike Phi, is not stationary at the mode, so a loosely converged mode would
  make it noisy in the parameters;
* H_i: central differences (h = 1e-5) of the exact gradient of Phi_i in eta (forward
  sensitivities), accurate to about 1e-9;
* the gradient over the parameters: central differences (h = 1e-4) of each subject's term,
  modes warm-started and polished at every point (as NONMEM's outer loop differences its
  objective).  It costs two objective evaluations per estimated parameter, so Laplace refuses
  models with network weights; per-subject terms give the covariance step's S matrix.

Subjects the compiled FOCE-I step covers (:mod:`smallchains.pk._foce` and
:mod:`smallchains.pk._foce_ode`) take the same Newton polish and Hessian in compiled code
(``laplace_subject``, tested equal to this module's NumPy path); the others take
:func:`subject_term`.
"""

from __future__ import annotations

import numpy as np

from .estimation import _inverse_lower

#: central-difference steps: eta (the Hessian), parameters (the gradient)
H_ETA = 1e-5
H_X = 1e-4
#: Newton on the mode stops when no eta moves by more than this
ETA_TOL = 1e-10


def _phi_grad(s, x, Oinv, eta):
    """(Phi, dPhi/deta) of subject ``s`` at ``eta``, or None when its solve fails."""
    l, out = s.data_term(x, eta, need=2)
    if out is None:
        return None
    return l + eta @ Oinv @ eta, out["G"].T @ out["dldf"] + 2.0 * Oinv @ eta


def _hessian(s, x, Oinv, eta, h=H_ETA):
    q = eta.shape[0]
    H = np.empty((q, q))
    for k in range(q):
        e = np.zeros(q)
        e[k] = h
        gp, gm = _phi_grad(s, x, Oinv, eta + e), _phi_grad(s, x, Oinv, eta - e)
        if gp is None or gm is None:
            return None
        H[:, k] = (gp[1] - gm[1]) / (2.0 * h)
    return 0.5 * (H + H.T)


def subject_term(s, x, Oinv, eta0, max_newton=10):
    """(eta*, Phi(eta*), H/2) of subject ``s`` from the mode estimate ``eta0``, or None when a
    solve fails or the Hessian is not positive definite there."""
    eta = np.array(eta0, dtype=float)
    pg = _phi_grad(s, x, Oinv, eta)
    if pg is None:
        return None
    phi, g = pg
    H = _hessian(s, x, Oinv, eta)
    for _ in range(max_newton):
        if H is None:
            return None
        try:
            step = -np.linalg.solve(H, g)
        except np.linalg.LinAlgError:
            return None
        if np.max(np.abs(step)) <= ETA_TOL * (1.0 + np.max(np.abs(eta))):
            break
        alpha, slope = 1.0, g @ step
        while alpha > 1e-6:
            e1 = eta + alpha * step
            pg1 = _phi_grad(s, x, Oinv, e1)
            if pg1 is not None and pg1[0] <= phi + 1e-4 * alpha * slope + 1e-12 * abs(phi):
                break
            alpha *= 0.5
        else:
            break  # (no decrease: at the mode to rounding)
        eta, (phi, g) = e1, pg1
        H = _hessian(s, x, Oinv, eta)
    if H is None or np.any(np.linalg.eigvalsh(H) <= 0):
        return None
    return eta, phi, 0.5 * H


def laplace(P, x, etas0=None):
    """(OFV, etas, per-subject (eta*, Phi*, H/2, {})) of problem ``P`` at ``x``; OFV = inf when
    a subject fails (the format of :meth:`Problem.foce`)."""
    m = P.model
    q = m.n_eta
    etas0 = np.zeros((P.N, q)) if etas0 is None else etas0
    v, etas, _ = P.foce(x, etas0)
    if not np.isfinite(v):
        return np.inf, etas0.copy(), [None] * P.N
    with np.errstate(over="ignore"):
        L = m.omega_factor(x)
    Linv = _inverse_lower(L)
    Oinv = Linv.T @ Linv
    logdetO = 2.0 * np.sum(np.log(np.diag(L)))
    res = [None] * P.N
    cf = P.compiled_foce
    if cf is not None:  # (the compiled step's subjects: one kernel call per thread)
        ix = cf.index
        P.set_compiled(x)
        E0 = np.ascontiguousarray(etas[ix])
        out = (np.zeros_like(E0), np.zeros((len(ix), q, q)), np.zeros((len(ix), 3)))
        P.each(lambda c, lo, hi: cf.laplace_terms((c, lo, hi), Oinv, E0, H_ETA, ETA_TOL, out), cf.chunks(P.threads))
        ETA, MS, RES = out
        for k, i in enumerate(ix):
            if RES[k, 1] == 0.0:
                res[i] = (ETA[k], RES[k, 0], MS[k])
    rest = P.uncovered
    for i, r in zip(rest, P.each(lambda i: subject_term(P.subjects[i], x, Oinv, etas[i]), rest)):
        res[i] = r
    if any(r is None for r in res):
        return np.inf, etas0.copy(), res
    ofv = 0.0
    for i, (eta, phi, M2) in enumerate(res):
        etas[i] = eta
        ofv += phi + logdetO + np.linalg.slogdet(M2)[1]
    res = [(eta, phi, M2, {}) for eta, phi, M2 in res]
    return (float(ofv), etas, res) if np.isfinite(ofv) else (np.inf, etas0.copy(), res)


def terms(P, x, etas0):
    """Each subject's Laplace term Phi* + log|Omega| + log|H/2| at ``x`` (N,), or None."""
    v, _, res = laplace(P, x, etas0)
    if not np.isfinite(v):
        return None
    logdetO = 2.0 * np.sum(np.log(np.diag(P.model.omega_factor(x))))
    return np.array([phi + logdetO + np.linalg.slogdet(M2)[1] for _, phi, M2, _ in res])


def laplace_gradient(P, x, etas, which=None, per_subject=False, h=H_X):
    """d OFV / dx by central differences of the subjects' terms (entries ``which``, default all;
    the others 0), modes warm-started from ``etas``; with ``per_subject`` also the (N, n_x)
    per-subject gradients.  None when a term cannot be evaluated."""
    m = P.model
    if m.n_weights or m.blocks["wc"].stop > m.blocks["wc"].start:
        raise ValueError(
            "method 'laplace' differences its objective over every parameter, and this model has network "
            "weights: use method 'foce'"
        )
    which = np.arange(m.n_x) if which is None else np.asarray(which)
    G = np.zeros((P.N, m.n_x))
    for k in which:
        e = np.zeros(m.n_x)
        e[k] = h
        tp, tm = terms(P, x + e, etas), terms(P, x - e, etas)
        if tp is None or tm is None:
            return None
        G[:, k] = (tp - tm) / (2.0 * h)
    g = G.sum(axis=0)
    return (g, G) if per_subject else g
