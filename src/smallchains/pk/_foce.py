"""FOCE-I's subject step in compiled code: the algorithm, and the subjects solved exactly.

One compiled call finds a subject's mode eta* and its FOCE-I term; another its gradient.  They
compute what :meth:`smallchains.pk.estimation.SubjectEval.fit_eta` and
:meth:`~smallchains.pk.estimation.SubjectEval.foce_gradient` compute in NumPy, step for step
(the same Fisher scoring with the same line search, the same central differences along the
random effects for the second-order terms), with no Python between the steps: the NumPy path
spends most of its time in Python around solves of a few microseconds.

Everything a subject needs reaches the kernels as data: its dose schedule and observations,
the model's rate matrix A(p) and the population model's parameter map p(log q)
(:mod:`smallchains.pk._parammap`) as addresses of compiled functions (real and complex), so the
kernels are compiled once for every model.  Derivatives in p and log q are complex steps
through those functions and through the exact solution (:func:`smallchains.pk.analytic.
solve_with_jacobian`).

Per subject, in log q space (log q = log q0 + E eta, log q0 = log theta + C beta from the caller):

* :func:`foce_mode`: eta*, l(eta*) + eta*' Omega^-1 eta*, and M = G' diag(w) G + Omega^-1 at eta*;
* :func:`foce_grad`: the term's gradient over log q0, the network weights and the log sigmas,
  and the matrix S with d term / d Omega^-1 = S (so that the caller's chain rule to Omega's
  parameters is one contraction): the caller adds C' g for the covariate effects.

The two are written once, against five operations on a subject (``ev`` its data, ``args`` its
buffers), each an overloaded stub chosen by the layout of ``ev`` when the kernels compile (so
each layout gets its own machine code, cached on disk):

* ``evaluate(ev, args, eta, jac, f, F, V, Vf, dldf, dpsi)`` -> (status, l): the data term at eta;
* ``start(ev, args, eta, f, F, V, Vf, dldf, dpsi, G)`` -> (status, l): the same with G = df/deta;
* ``refresh(ev, args, eta, l, f, F, V, Vf, dldf, dpsi, G)`` -> (status, l): G at the point of the
  last ``evaluate`` (which was at ``eta``, with value ``l``);
* ``point(...)`` as ``start``, leaving what ``xgrad`` needs;
* ``xgrad(ev, args, a, F, glq, gw, scale)`` -> status: glq, gw += scale * the gradient of a' f
  over log q0 and the network weights, at the last ``point``.

This module implements them for subjects solved exactly (``ev`` a flat tuple whose first item is
the addresses array: complex steps through :mod:`smallchains.pk.analytic`);
:mod:`smallchains.pk._foce_ode` for subjects solved by the ODE solver (forward sensitivities
and discrete adjoints through the :class:`~smallchains.ode.recording.Recording` contract).
"""

from __future__ import annotations

import numpy as np
from numba import types
from numba.extending import overload

from .._jit import JIT_OPTIONS, function_caster, kernel
from ..ode import _kernels as RK
from ._censored import M3, M4_CENSORED, obs_term
from ._parammap import as_pmap, as_pmapz
from .analytic import N_WORK, pieces_layout, pieces_with_jacobian, propagate_pieces

#: the complex step (exact derivatives to rounding)
H = 1e-30

RATES_SIG = types.void(types.float64[:, ::1], types.float64[::1])
RATESZ_SIG = types.void(types.complex128[:, ::1], types.complex128[::1])
as_rates = function_caster(types.FunctionType(RATES_SIG))
as_ratesz = function_caster(types.FunctionType(RATESZ_SIG))

#: statuses (besides the solver's RK.OK / RK.NONFINITE)
FAILED = 1
#: the largest move of a random effect in one Fisher-scoring step of the mode search (log scale:
#: a factor e^5 ~ 150 on a parameter); a longer step is shortened along its direction.  From a
#: start where the data are far from the prediction, the scoring step can reach 1e6 and its
#: trial points overflow the parameters
MAX_ETA_STEP = 5.0


@kernel
def _variance(f, s0, s1, kind):
    """(V, dV/df) of an observation with prediction f; s0, s1 the variances exp(2 psi)."""
    if kind == 0:
        return s0 + 0.0 * f, 0.0 * f
    if kind == 1:
        return s0 * f * f, 2.0 * s0 * f
    return s0 + s1 * f * f, 2.0 * s1 * f


@kernel
def _stepped(psi, r, s0, s1):
    """The variances (s0, s1) = exp(2 psi) as complex numbers, log sd ``r`` stepped by i H (one
    residual sd: both are its variance)."""
    z0 = complex(s0)
    z1 = complex(s1)
    if r == 0:
        z0 = np.exp(2.0 * (psi[0] + 1j * H))
        if psi.shape[0] == 1:
            z1 = z0
    else:
        z1 = np.exp(2.0 * (psi[1] + 1j * H))
    return z0, z1


@kernel
def _weight(f, s0, s1, kind):
    """FOCE-I's information weight 1/V + V'^2 / (2 V^2)."""
    V, Vf = _variance(f, s0, s1, kind)
    return 1.0 / V + Vf * Vf / (2.0 * V * V)


@kernel
def _lu(Mw, piv, N):
    """In-place LU factorisation with partial pivoting of Mw[:N, :N] (LAPACK's getrf rule).
    Returns (ok, sign of the permutation)."""
    sign = 1.0
    for c in range(N):
        p = c
        best = abs(Mw[c, c])
        for i in range(c + 1, N):
            if abs(Mw[i, c]) > best:
                best, p = abs(Mw[i, c]), i
        piv[c] = p
        if best == 0.0:
            return False, sign
        if p != c:
            sign = -sign
            for j in range(N):
                Mw[c, j], Mw[p, j] = Mw[p, j], Mw[c, j]
        for i in range(c + 1, N):
            Mw[i, c] /= Mw[c, c]
            for j in range(c + 1, N):
                Mw[i, j] -= Mw[i, c] * Mw[c, j]
    return True, sign


@kernel
def _lu_solve(Mw, piv, b, N):
    """b <- (LU)^-1 b for :func:`_lu`'s factors."""
    for c in range(N):
        p = piv[c]
        if p != c:
            b[c], b[p] = b[p], b[c]
    for i in range(N):
        s = b[i]
        for j in range(i):
            s -= Mw[i, j] * b[j]
        b[i] = s
    for i in range(N - 1, -1, -1):
        s = b[i]
        for j in range(i + 1, N):
            s -= Mw[i, j] * b[j]
        b[i] = s / Mw[i, i]


@kernel
def _solve(Mat, b, x, Mw, piv, scale):
    """x <- (scale Mat)^-1 b (q x q); False when singular."""
    N = b.shape[0]
    for i in range(N):
        x[i] = b[i]
        for j in range(N):
            Mw[i, j] = scale * Mat[i, j]
    ok, _ = _lu(Mw, piv, N)
    if not ok:
        return False
    _lu_solve(Mw, piv, x, N)
    return True


@kernel
def log_q_jacobian(a0, a1, lq, lqz, c, pz, J):
    """J <- dp/dlog q (J.shape[0] parameters) by one complex step per log q through the compiled
    parameter map at addresses (a0, a1) (:mod:`smallchains.pk._parammap`)."""
    pmapz = as_pmapz(a0, a1)
    for k in range(lq.shape[0]):
        for i in range(lq.shape[0]):
            lqz[i] = lq[i]
        lqz[k] += 1j * H
        pmapz(lqz, c, pz)
        for r in range(J.shape[0]):
            J[r, k] = pz[r].imag / H


@kernel
def _evaluate(ev, args, eta, jac, f, F, V, Vf, dldf, dpsi):
    """The subject's data term l = sum (y - f)^2 / V + log V at eta (f, V, V', dl/df, dl/dpsi
    filled) and, with ``jac``, F = df/dlog q (n_obs, n_t).  Returns (status, l)."""
    (fa, lq0, E, c, psi, kind, y, ost, opk, pcs, glob, ts) = ev
    (u0, lq, lqz, p, pz, J, A, Az, dA, us, dus, dus0, wr, vr, wc, vc, pc, oc, pwr, pwc) = args
    n_t, q, m, n, n_obs = lq0.shape[0], eta.shape[0], p.shape[0], A.shape[0], ts.shape[0]
    for i in range(n_t):
        s = lq0[i]
        for k in range(q):
            s += E[i, k] * eta[k]
        lq[i] = s
    pmap = as_pmap(fa[4], fa[5])
    pmap(lq, c, p)
    for k in range(m):
        if not np.isfinite(p[k]):
            return RK.NONFINITE, np.inf
    for a in range(n):
        for b in range(n):
            A[a, b] = 0.0
    rates = as_rates(fa[0], fa[1])
    rates(A, p)
    if jac:
        log_q_jacobian(fa[6], fa[7], lq, lqz, c, pz, J)
        ratesz = as_ratesz(fa[2], fa[3])
        for k in range(m):
            for r in range(m):
                pz[r] = p[r]
            pz[k] += 1j * H
            for a in range(n):
                for b in range(n):
                    Az[a, b] = 0.0
            ratesz(Az, pz)
            for a in range(n):
                for b in range(n):
                    dA[k, a, b] = Az[a, b].imag / H
    st = pieces_with_jacobian(A, dA, p, pcs, glob, us, dus, jac, wr, vr, wc, vc, pc, oc, pwr, pwc)
    if st != RK.OK:
        return st, np.inf
    st, total = data_term(y, us, p, ost, opk, psi, kind, f, V, Vf, dldf, dpsi)
    if st == RK.OK and jac:
        for j in range(n_obs):
            vol = p[opk[j]]
            for i in range(n_t):
                s = 0.0
                for k in range(m):
                    s += dus[j, ost[j], k] * J[k, i]
                F[j, i] = (s - f[j] * J[opk[j], i]) / vol
    return st, total


@kernel
def data_term(y, us, p, ost, opk, psi, kind, f, V, Vf, dldf, dpsi):
    """The data term l = sum_j l_j with f_j = us[j, ost_j] / p[opk_j] and l_j the observation's
    term (:func:`smallchains.pk._censored.obs_term`; ``y`` rows (y, code, LLOQ)): f, V, V', dl/df
    and dl/dpsi filled.  Returns (status, l)."""
    s0 = np.exp(2.0 * psi[0])
    s1 = np.exp(2.0 * psi[psi.shape[0] - 1])
    n_psi = psi.shape[0]
    for r in range(n_psi):
        dpsi[r] = 0.0
    total = 0.0
    for j in range(y.shape[0]):
        vol = p[opk[j]]
        if vol == 0.0:  # (a volume underflowed to 0 at an extreme trial point: no prediction)
            return RK.NONFINITE, np.inf
        fj = us[j, ost[j]] / vol
        f[j] = fj
        Vj, Vfj = _variance(fj, s0, s1, kind)
        if not (np.isfinite(fj) and np.isfinite(Vj) and Vj >= 0.0):
            return RK.NONFINITE, np.inf
        if Vj == 0.0 and y[j, 1] != M3 and y[j, 1] != M4_CENSORED:  # (a density needs V > 0)
            return RK.NONFINITE, np.inf
        V[j], Vf[j] = Vj, Vfj
        lj, lf, a_ = obs_term(y[j, 0], int(y[j, 1]), y[j, 2], fj, Vj)
        total += lj
        dldf[j] = lf + a_ * Vfj
        for r in range(n_psi):  # dV/dpsi_r by complex step
            z0, z1 = _stepped(psi, r, s0, s1)
            Vz, _ = _variance(complex(fj), z0, z1, kind)
            dpsi[r] += a_ * Vz.imag / H
    if not np.isfinite(total):
        return RK.NONFINITE, np.inf
    return RK.OK, total


@kernel
def _directions(ev, args, f, G):
    """G <- df/deta (n_obs, q) at the point of the last :func:`_evaluate` (``f`` its predictions):
    one complex-step pass per random effect, along its direction in log q (the inner loop needs
    no more than these q directions; the full F costs a pass per parameter)."""
    fa, E, c, ost, opk, pcs, glob, ts = ev[0], ev[2], ev[3], ev[7], ev[8], ev[9], ev[10], ev[11]
    (u0, lq, lqz, p, pz, J, A, Az, dA, us, dus, dus0, wr, vr, wc, vc, pc, oc, pwr, pwc) = args
    n_t, n, n_obs, q = lq.shape[0], A.shape[0], ts.shape[0], E.shape[1]
    pmapz = as_pmapz(fa[6], fa[7])
    ratesz = as_ratesz(fa[2], fa[3])
    for k in range(q):
        for i in range(n_t):
            lqz[i] = lq[i] + 1j * H * E[i, k]
        pmapz(lqz, c, pz)
        for a in range(n):
            for b in range(n):
                Az[a, b] = 0.0
        ratesz(Az, pz)
        st = propagate_pieces(Az, pz, pcs, glob, oc, wc[3:], wc[1], wc[2], vc[0], vc[1], vc[2], pwc)
        if st != RK.OK:
            return st
        for j in range(n_obs):
            vol = p[opk[j]]
            G[j, k] = (oc[j, ost[j]].imag / H - f[j] * pz[opk[j]].imag / H) / vol
    return RK.OK


@kernel
def _evaluate_g(ev, args, eta, f, F, V, Vf, dldf, dpsi, G):
    """:func:`_evaluate` without F, then G = df/deta by :func:`_directions`.  Returns (status, l)."""
    st, l = _evaluate(ev, args, eta, False, f, F, V, Vf, dldf, dpsi)
    if st != RK.OK:
        return st, l
    st = _directions(ev, args, f, G)
    return st, (l if st == RK.OK else np.inf)


@kernel
def _point(ev, args, eta, f, F, V, Vf, dldf, dpsi, G):
    """:func:`_evaluate` with F, and G = F E.  Returns (status, l)."""
    st, l = _evaluate(ev, args, eta, True, f, F, V, Vf, dldf, dpsi)
    if st != RK.OK:
        return st, l
    E = ev[2]
    for j in range(F.shape[0]):
        for a in range(E.shape[1]):
            s = 0.0
            for i in range(E.shape[0]):
                s += F[j, i] * E[i, a]
            G[j, a] = s
    return st, l


@kernel
def _xgrad(a, F, glq, scale):
    """glq += scale * F' a (F = df/dlog q at the last :func:`_point`; no network weights)."""
    for i in range(F.shape[1]):
        s = 0.0
        for j in range(F.shape[0]):
            s += F[j, i] * a[j]
        glq[i] += scale * s
    return RK.OK


# ---------------------------------------------------------------- the five operations (see the module's docstring)


def is_exact(ev):
    """Whether (the Numba type of) ``ev`` is the exact solutions' layout (:func:`_views`)."""
    return isinstance(ev[0], types.Array)


def evaluate(ev, args, eta, jac, f, F, V, Vf, dldf, dpsi):
    """The data term at eta (compiled code only; see the module's docstring)."""
    raise NotImplementedError("compiled code only")


def start(ev, args, eta, f, F, V, Vf, dldf, dpsi, G):
    """The data term and G = df/deta at eta (compiled code only)."""
    raise NotImplementedError("compiled code only")


def refresh(ev, args, eta, l, f, F, V, Vf, dldf, dpsi, G):
    """G at the last evaluated point (compiled code only)."""
    raise NotImplementedError("compiled code only")


def point(ev, args, eta, f, F, V, Vf, dldf, dpsi, G):
    """As ``start``, leaving what ``xgrad`` needs (compiled code only)."""
    raise NotImplementedError("compiled code only")


def xgrad(ev, args, a, F, glq, gw, scale):
    """glq, gw += scale * the gradient of a' f at the last ``point`` (compiled code only)."""
    raise NotImplementedError("compiled code only")


@overload(evaluate, jit_options=JIT_OPTIONS)
def _ov_evaluate(ev, args, eta, jac, f, F, V, Vf, dldf, dpsi):
    if is_exact(ev):
        return lambda ev, args, eta, jac, f, F, V, Vf, dldf, dpsi: _evaluate(
            ev, args, eta, jac, f, F, V, Vf, dldf, dpsi
        )


@overload(start, jit_options=JIT_OPTIONS)
def _ov_start(ev, args, eta, f, F, V, Vf, dldf, dpsi, G):
    if is_exact(ev):
        return lambda ev, args, eta, f, F, V, Vf, dldf, dpsi, G: _evaluate_g(ev, args, eta, f, F, V, Vf, dldf, dpsi, G)


@overload(refresh, jit_options=JIT_OPTIONS)
def _ov_refresh(ev, args, eta, l, f, F, V, Vf, dldf, dpsi, G):
    if is_exact(ev):

        def impl(ev, args, eta, l, f, F, V, Vf, dldf, dpsi, G):
            st = _directions(ev, args, f, G)
            return st, (l if st == RK.OK else np.inf)

        return impl


@overload(point, jit_options=JIT_OPTIONS)
def _ov_point(ev, args, eta, f, F, V, Vf, dldf, dpsi, G):
    if is_exact(ev):
        return lambda ev, args, eta, f, F, V, Vf, dldf, dpsi, G: _point(ev, args, eta, f, F, V, Vf, dldf, dpsi, G)


@overload(xgrad, jit_options=JIT_OPTIONS)
def _ov_xgrad(ev, args, a, F, glq, gw, scale):
    if is_exact(ev):
        return lambda ev, args, a, F, glq, gw, scale: _xgrad(a, F, glq, scale)


@kernel
def _information_g(G, w, Oinv, M):
    """M <- G' diag(w) G + Omega^-1."""
    n_obs, q = G.shape
    for a in range(q):
        for b in range(q):
            s = Oinv[a, b]
            for j in range(n_obs):
                s += G[j, a] * w[j] * G[j, b]
            M[a, b] = s


@kernel
def _quad(Oinv, eta):
    q = eta.shape[0]
    s = 0.0
    for a in range(q):
        for b in range(q):
            s += eta[a] * Oinv[a, b] * eta[b]
    return s


@kernel
def _information(F, E, w, Oinv, G, M):
    """G <- F E; M <- G' diag(w) G + Omega^-1."""
    n_obs, n_t, q = F.shape[0], F.shape[1], E.shape[1]
    for j in range(n_obs):
        for k in range(q):
            s = 0.0
            for i in range(n_t):
                s += F[j, i] * E[i, k]
            G[j, k] = s
    _information_g(G, w, Oinv, M)


@kernel
def _weights(f, psi, kind, w):
    s0 = np.exp(2.0 * psi[0])
    s1 = np.exp(2.0 * psi[psi.shape[0] - 1])
    for j in range(f.shape[0]):
        w[j] = _weight(f[j], s0, s1, kind)


@kernel
def foce_mode(ev, args, wk, Oinv, eta0, tol, max_iter, eta, M, res):
    """The mode eta* of the subject's posterior from ``eta0`` by Fisher scoring with a
    backtracking line search (as ``SubjectEval.fit_eta``): ``eta`` <- eta*, ``M`` <- the
    expected information there, ``res`` <- (l + eta*' Omega^-1 eta*, status (0 or FAILED),
    iterations).  ``ev``/``args``/``wk``: see :class:`PopulationFOCE`."""
    psi, kind = ev[4], ev[5]
    (f, F, V, Vf, dldf, dpsi, w, G, grad, step, e1, Mw, piv) = wk
    q = eta0.shape[0]
    res[1] = FAILED
    for k in range(q):
        eta[k] = eta0[k]
    st, l = start(ev, args, eta, f, F, V, Vf, dldf, dpsi, G)
    if st != RK.OK:
        nonzero = False
        for k in range(q):
            if eta[k] != 0.0:
                nonzero = True
            eta[k] = 0.0
        if not nonzero:
            return
        st, l = start(ev, args, eta, f, F, V, Vf, dldf, dpsi, G)
        if st != RK.OK:
            return
    n_obs = f.shape[0]
    it = 0
    while True:
        obj = l + _quad(Oinv, eta)
        _weights(f, psi, kind, w)
        _information_g(G, w, Oinv, M)
        if it >= max_iter:
            break
        it += 1
        for a in range(q):
            s = 0.0
            for j in range(n_obs):
                s += G[j, a] * dldf[j]
            for b in range(q):
                s += 2.0 * Oinv[a, b] * eta[b]
            grad[a] = s
        if _solve(M, grad, step, Mw, piv, 2.0):
            for a in range(q):
                step[a] = -step[a]
        else:
            for a in range(q):
                step[a] = -grad[a] * 1e-3
        big = 0.0
        for a in range(q):
            big = max(big, abs(step[a]))
        if big > MAX_ETA_STEP:  # (SubjectEval.fit_eta's cap, step for step)
            for a in range(q):
                step[a] *= MAX_ETA_STEP / big
        dec = 0.0
        for a in range(q):
            dec -= grad[a] * step[a]
        if dec < tol:
            break
        alpha = 1.0
        found = False
        while alpha > 1e-10:
            for a in range(q):
                e1[a] = eta[a] + alpha * step[a]
            st1, l1 = evaluate(ev, args, e1, False, f, F, V, Vf, dldf, dpsi)
            if st1 == RK.OK and l1 + _quad(Oinv, e1) <= obj - 1e-4 * alpha * dec:
                found = True
                break
            alpha *= 0.5
        if not found:  # no descent possible: at the mode to rounding (M and obj are the mode's)
            break
        for a in range(q):
            eta[a] = e1[a]
        # (the line search's last evaluation is this point's: f, V, dl/df and the solver's
        # buffers hold it, so only G's directions remain to compute)
        st, l = refresh(ev, args, eta, l1, f, F, V, Vf, dldf, dpsi, G)
        if st != RK.OK:
            return
    res[0] = obj
    res[1] = 0.0
    res[2] = it


@kernel
def foce_grad(ev, args, wk, gw, Oinv, eta, h, g_lq, g_w, g_psi, S):
    """The gradient of the subject's FOCE-I term l(eta*) + eta*' Omega^-1 eta* + log|M| at its
    mode ``eta`` (as ``SubjectEval.foce_gradient``): ``g_lq`` <- d/dlog q0 (n_t), ``g_w`` <-
    d/d(network weights) (none for exact solutions), ``g_psi`` <- d/dpsi, ``S`` <- the q x q
    matrix whose contraction with d Omega^-1/dx_r gives d/dx_r.  Returns False when a solve
    fails or a matrix is singular (or the solver's status through ``args``: see ``_foce_ode``)."""
    E, psi, kind = ev[2], ev[4], ev[5]
    (f, F, V, Vf, dldf, dpsi, w, G, grad, step, e1, Mw, piv) = wk
    (f0, acol, G0, dldf0, dpsi0, Minv, Acot, dvec, cvec, dWdf, dWdpsi, dlogM, Hm, B, T1, dG, col, Bw, T1w) = gw
    n_obs, n_t, q, n_psi, n_w = f.shape[0], E.shape[0], eta.shape[0], psi.shape[0], g_w.shape[0]
    st, _ = point(ev, args, eta, f, F, V, Vf, dldf, dpsi, G)
    if st != RK.OK:
        return False
    _weights(f, psi, kind, w)
    _information_g(G, w, Oinv, Mw)
    for a in range(q):  # Minv column by column (LU of M once)
        for b in range(q):
            Minv[a, b] = Mw[a, b]
    ok, _ = _lu(Minv, piv, q)
    if not ok:
        return False
    for b in range(q):
        for a in range(q):
            col[a] = 1.0 if a == b else 0.0
        _lu_solve(Minv, piv, col, q)
        for a in range(q):
            Mw[a, b] = col[a]
    for a in range(q):
        for b in range(q):
            Minv[a, b] = Mw[a, b]
    for j in range(n_obs):
        f0[j] = f[j]
        dldf0[j] = dldf[j]
        for k in range(q):
            G0[j, k] = G[j, k]
    for r in range(n_psi):
        dpsi0[r] = dpsi[r]
    # the information weights' derivatives (complex steps)
    s0 = np.exp(2.0 * psi[0])
    s1 = np.exp(2.0 * psi[n_psi - 1])
    for j in range(n_obs):
        dWdf[j] = _weight(f0[j] + 1j * H, complex(s0), complex(s1), kind).imag / H
        for r in range(n_psi):
            z0, z1 = _stepped(psi, r, s0, s1)
            dWdpsi[j, r] = _weight(complex(f0[j]), z0, z1, kind).imag / H
    # A = 2 W G Minv, d_j = G_j' Minv G_j, c = d W'; d log|M| / d eta = G' c (+ through G below)
    for j in range(n_obs):
        dj = 0.0
        for a in range(q):
            s = 0.0
            for b in range(q):
                s += G0[j, b] * Minv[b, a]
            Acot[j, a] = 2.0 * w[j] * s
            dj += s * G0[j, a]
        dvec[j] = dj
        cvec[j] = dj * dWdf[j]
    for k in range(q):
        s = 0.0
        for j in range(n_obs):
            s += G0[j, k] * cvec[j]
        dlogM[k] = s
    # at the mode: the x-gradient of Phi and of log|M| through W, (dl/df + c)' f
    for i in range(n_t):
        g_lq[i] = 0.0
        T1[i] = 0.0
    for i in range(n_w):
        g_w[i] = 0.0
        T1w[i] = 0.0
    for j in range(n_obs):
        acol[j] = dldf0[j] + cvec[j]
    if xgrad(ev, args, acol, F, g_lq, g_w, 1.0) != RK.OK:
        return False
    for a in range(q):
        for b in range(q):
            Hm[a, b] = 2.0 * Oinv[a, b]
    nb = n_t + n_psi
    for k in range(q):
        for i in range(nb):
            B[k, i] = 0.0
        for i in range(n_w):
            Bw[k, i] = 0.0
    # the second-order pieces: central differences along each eta of exact first-order ones
    # (T1 = sum_k d/deta_k grad_x(A_k' f): log|M| through G; B = d/deta grad_x Phi; H)
    for k in range(q):
        for j in range(n_obs):
            for a in range(q):
                dG[j, a] = 0.0
        for sgn in (1.0, -1.0):
            for a in range(q):
                e1[a] = eta[a]
            e1[k] += sgn * h
            st, _ = point(ev, args, e1, f, F, V, Vf, dldf, dpsi, G)
            if st != RK.OK:
                return False
            wt = sgn / (2.0 * h)
            for j in range(n_obs):
                acol[j] = Acot[j, k]
                for a in range(q):
                    dG[j, a] += wt * G[j, a]
                    Hm[a, k] += wt * G[j, a] * dldf[j]
            if xgrad(ev, args, acol, F, T1, T1w, wt) != RK.OK:
                return False
            if xgrad(ev, args, dldf, F, B[k, :n_t], Bw[k], wt) != RK.OK:
                return False
            for r in range(n_psi):
                B[k, n_t + r] += wt * dpsi[r]
        s = 0.0
        for j in range(n_obs):
            for a in range(q):
                s += Acot[j, a] * dG[j, a]
        dlogM[k] += s
    for a in range(q):
        for b in range(a + 1, q):
            v = 0.5 * (Hm[a, b] + Hm[b, a])
            Hm[a, b] = v
            Hm[b, a] = v
    if not _solve(Hm, dlogM, grad, Mw, piv, 1.0):  # grad <- u = H^-1 d log|M| / d eta
        return False
    for i in range(n_t):
        s = g_lq[i] + T1[i]
        for k in range(q):
            s -= grad[k] * B[k, i]
        g_lq[i] = s
    for i in range(n_w):
        s = g_w[i] + T1w[i]
        for k in range(q):
            s -= grad[k] * Bw[k, i]
        g_w[i] = s
    for r in range(n_psi):
        s = dpsi0[r]
        for j in range(n_obs):
            s += dvec[j] * dWdpsi[j, r]
        for k in range(q):
            s -= grad[k] * B[k, n_t + r]
        g_psi[r] = s
    for a in range(q):
        for b in range(q):
            S[a, b] = eta[a] * eta[b] + Minv[a, b] - 2.0 * grad[a] * eta[b]
    return True


@kernel
def _views(pack, ws, i):
    """Subject i's data (``ev``) and the workspaces cut to its observations (see :class:`PopulationFOCE`)."""
    (fa, LQ0, E, CV, psi, kind, Y, OST, OPK, PCS, GLOB, TS, OOFF, POFF) = pack
    o0, o1, c0, c1 = OOFF[i], OOFF[i + 1], POFF[i], POFF[i + 1]
    k = o1 - o0
    pcs = (PCS[0][c0:c1], PCS[1][c0:c1], PCS[2][c0:c1], PCS[3][c0:c1], PCS[4][c0:c1], PCS[5][c0:c1],
           PCS[6][c0:c1], PCS[7][c0:c1], PCS[8][c0:c1], PCS[9][c0:c1])  # fmt: skip
    ev = (fa, LQ0[i], E, CV[i], psi, kind, Y[o0:o1], OST[o0:o1], OPK[o0:o1], pcs, GLOB, TS[o0:o1])
    a, w, g = ws
    args = (a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9][:k], a[10][:k], a[11][:k], a[12], a[13],
            a[14], a[15], a[16], a[17][:k], a[18], a[19])  # fmt: skip
    wk = (w[0][:k], w[1][:k], w[2][:k], w[3][:k], w[4][:k], w[5], w[6][:k], w[7][:k], w[8], w[9], w[10], w[11],
          w[12])  # fmt: skip
    gw = (g[0][:k], g[1][:k], g[2][:k], g[3][:k], g[4], g[5], g[6][:k], g[7][:k], g[8][:k], g[9][:k], g[10][:k],
          g[11], g[12], g[13], g[14], g[15][:k], g[16], g[17], g[18])  # fmt: skip
    return ev, args, wk, gw


@kernel
def mode_logdet(ev, args, wk, Oinv, eta0, tol, max_iter, eta, M, res):
    """:func:`foce_mode`, then res[3] <- log|M| and res[4] <- the sign of |M| (0: singular)."""
    foce_mode(ev, args, wk, Oinv, eta0, tol, max_iter, eta, M, res)
    if res[1] != 0.0:
        return
    q = eta0.shape[0]
    Mw, piv = wk[11], wk[12]
    for a in range(q):
        for b in range(q):
            Mw[a, b] = M[a, b]
    ok, sign = _lu(Mw, piv, q)
    logdet = 0.0
    if ok:
        for a in range(q):
            if Mw[a, a] < 0.0:
                sign = -sign
            logdet += np.log(abs(Mw[a, a]))
    res[3] = logdet
    res[4] = sign if ok else 0.0


@kernel
def _subject_mode(pack, ws, i, Oinv, ETA0, tol, max_iter, ETA, MS, RES, G_ALL):
    """:func:`foce_mode` for subject i with log|M| and its sign (see :func:`modes`); returns the
    subject's views for a gradient that follows."""
    OOFF = pack[12]
    q = ETA0.shape[1]
    ev, args, wk, gw = _views(pack, ws, i)
    mode_logdet(ev, args, wk, Oinv, ETA0[i], tol, max_iter, ETA[i], MS[i], RES[i])
    if RES[i, 1] != 0.0:
        return ev, args, wk, gw
    if G_ALL.shape[0]:
        G = wk[7]
        for j in range(OOFF[i + 1] - OOFF[i]):
            for a in range(q):
                G_ALL[OOFF[i] + j, a] = G[j, a]
    return ev, args, wk, gw


@kernel
def modes(pack, ws, Oinv, ETA0, tol, max_iter, ETA, MS, RES, G_ALL, lo, hi):
    """:func:`foce_mode` for subjects lo..hi-1: ETA[i], MS[i] (M), RES[i] = (term, status,
    iterations, log|M|, sign of |M|), G_ALL's rows of subject i = df/deta at its mode (G_ALL
    with no rows: not kept)."""
    for i in range(lo, hi):
        _subject_mode(pack, ws, i, Oinv, ETA0, tol, max_iter, ETA, MS, RES, G_ALL)


@kernel
def modes_gradients(pack, ws, Oinv, ETA0, tol, max_iter, h, ETA, MS, RES, G_ALL, GLQ, GPSI, SS, OK, lo, hi):
    """:func:`modes` then :func:`gradients` subject by subject, in one call (an objective with
    its gradient, as the optimizer asks for them): OK[i] = 1 when both succeeded with |M| > 0."""
    for i in range(lo, hi):
        ev, args, wk, gw = _subject_mode(pack, ws, i, Oinv, ETA0, tol, max_iter, ETA, MS, RES, G_ALL)
        OK[i] = 0.0
        if RES[i, 1] != 0.0 or RES[i, 4] <= 0.0:
            continue
        if foce_grad(ev, args, wk, gw, Oinv, ETA[i], h, GLQ[i], gw[18], GPSI[i], SS[i]):  # (no weights)
            OK[i] = 1.0


@kernel
def gradients(pack, ws, Oinv, ETA, h, GLQ, GPSI, SS, OK, lo, hi):
    """:func:`foce_grad` for subjects lo..hi-1 (OK[i] = 1 when it succeeded)."""
    for i in range(lo, hi):
        ev, args, wk, gw = _views(pack, ws, i)
        OK[i] = 1.0 if foce_grad(ev, args, wk, gw, Oinv, ETA[i], h, GLQ[i], gw[18], GPSI[i], SS[i]) else 0.0


@kernel
def data_terms(pack, ws, ETA, need, L, DLQ, DPSI, OK, lo, hi):
    """The data terms l_i at the given etas for subjects lo..hi-1 (MAP and pooled objectives):
    L[i] = l_i and, with ``need``, DLQ[i] = dl_i/dlog q (n_t) and DPSI[i] = dl_i/dpsi; OK[i] = 1
    when finite."""
    for i in range(lo, hi):
        ev, args, wk, gw = _views(pack, ws, i)
        f, F, V, Vf, dldf, dpsi = wk[0], wk[1], wk[2], wk[3], wk[4], wk[5]
        st, l = _evaluate(ev, args, ETA[i], need != 0, f, F, V, Vf, dldf, dpsi)
        OK[i] = 1.0 if st == RK.OK else 0.0
        L[i] = l
        if st != RK.OK or need == 0:
            continue
        for t in range(F.shape[1]):
            s = 0.0
            for j in range(F.shape[0]):
                s += F[j, t] * dldf[j]
            DLQ[i, t] = s
        for r in range(dpsi.shape[0]):
            DPSI[i, r] = dpsi[r]


@kernel
def predictions(pack, ws, ETA, directions, F_ALL, V_ALL, G_ALL, OK, lo, hi):
    """Predictions at the given etas for subjects lo..hi-1 (diagnostics, the initial-value
    check): F_ALL and V_ALL's rows of subject i = f and the residual variance V at its
    observations, with ``directions`` G_ALL's rows = df/deta; OK[i] = 1 when finite with V > 0
    (else the caller asks the NumPy path why)."""
    OOFF = pack[12]
    for i in range(lo, hi):
        ev, args, wk, gw = _views(pack, ws, i)
        f, F, V, Vf, dldf, dpsi, G = wk[0], wk[1], wk[2], wk[3], wk[4], wk[5], wk[7]
        st, _ = _evaluate(ev, args, ETA[i], False, f, F, V, Vf, dldf, dpsi)
        if st == RK.OK and directions:
            st = _directions(ev, args, f, G)
        OK[i] = 1.0 if st == RK.OK else 0.0
        if st != RK.OK:
            continue
        o0 = OOFF[i]
        for j in range(OOFF[i + 1] - o0):
            F_ALL[o0 + j] = f[j]
            V_ALL[o0 + j] = V[j]
            if directions:
                for a in range(G.shape[1]):
                    G_ALL[o0 + j, a] = G[j, a]


@kernel
def _phi_grad(ev, args, wk, Oinv, eta, g):
    """(status, Phi = l + eta' Omega^-1 eta) at ``eta``, ``g`` <- dPhi/deta = G' dl/df + 2 Omega^-1 eta."""
    f, F, V, Vf, dldf, dpsi, G = wk[0], wk[1], wk[2], wk[3], wk[4], wk[5], wk[7]
    st, l = start(ev, args, eta, f, F, V, Vf, dldf, dpsi, G)
    if st != RK.OK:
        return st, np.inf
    q = eta.shape[0]
    for a in range(q):
        s = 0.0
        for j in range(f.shape[0]):
            s += G[j, a] * dldf[j]
        for b in range(q):
            s += 2.0 * Oinv[a, b] * eta[b]
        g[a] = s
    return RK.OK, l + _quad(Oinv, eta)


@kernel
def _phi_hessian(ev, args, wk, Oinv, eta, h, e1, gp, gm, H):
    """H <- the symmetrised central differences (step h) of dPhi/deta at ``eta``; False on failure."""
    q = eta.shape[0]
    for k in range(q):
        for sgn in (1.0, -1.0):
            for a in range(q):
                e1[a] = eta[a]
            e1[k] += sgn * h
            st, _ = _phi_grad(ev, args, wk, Oinv, e1, gp if sgn > 0 else gm)
            if st != RK.OK:
                return False
        for a in range(q):
            H[a, k] = (gp[a] - gm[a]) / (2.0 * h)
    for a in range(q):
        for b in range(a + 1, q):
            v = 0.5 * (H[a, b] + H[b, a])
            H[a, b] = v
            H[b, a] = v
    return True


@kernel
def laplace_subject(ev, args, wk, gw, Oinv, eta0, h, eta_tol, max_newton, eta, M, res):
    """Laplace's subject term (as ``pk.laplace.subject_term``) from the mode estimate ``eta0``:
    Newton with the exact Hessian (central differences, step h, of the exact eta-gradient) until
    no eta moves by more than eta_tol; ``eta`` <- the mode, ``M`` <- H/2, ``res`` <- (Phi at the
    mode, status (0 or FAILED), log|H/2|)."""
    g, step, e1, Mw, piv = wk[8], wk[9], wk[10], wk[11], wk[12]
    gp, gm, H, Lc = gw[11], gw[16], gw[12], gw[5]
    q = eta.shape[0]
    res[1] = FAILED
    for a in range(q):
        eta[a] = eta0[a]
    st, phi = _phi_grad(ev, args, wk, Oinv, eta, g)
    if st != RK.OK or not _phi_hessian(ev, args, wk, Oinv, eta, h, e1, gp, gm, H):
        return
    for _ in range(max_newton):
        if not _solve(H, g, step, Mw, piv, 1.0):
            return
        big = 0.0
        scale = 0.0
        slope = 0.0
        for a in range(q):
            step[a] = -step[a]
            big = max(big, abs(step[a]))
            scale = max(scale, abs(eta[a]))
            slope += g[a] * step[a]
        if big <= eta_tol * (1.0 + scale):
            break
        alpha = 1.0
        found = False
        while alpha > 1e-6:
            for a in range(q):
                e1[a] = eta[a] + alpha * step[a]
            st1, phi1 = _phi_grad(ev, args, wk, Oinv, e1, gp)
            if st1 == RK.OK and phi1 <= phi + 1e-4 * alpha * slope + 1e-12 * abs(phi):
                found = True
                break
            alpha *= 0.5
        if not found:  # (no decrease: at the mode to rounding)
            break
        for a in range(q):
            eta[a] = e1[a]
        st, phi = _phi_grad(ev, args, wk, Oinv, eta, g)
        if st != RK.OK or not _phi_hessian(ev, args, wk, Oinv, eta, h, e1, gp, gm, H):
            return
    # H/2 and its log-determinant by Cholesky (positive definite, else the term fails)
    logdet = 0.0
    for a in range(q):
        for b in range(q):
            M[a, b] = 0.5 * H[a, b]
    for a in range(q):
        for b in range(a + 1):
            s = M[a, b]
            for k in range(b):
                s -= Lc[a, k] * Lc[b, k]
            if a == b:
                if not s > 0.0:
                    return
                Lc[a, a] = np.sqrt(s)
                logdet += 2.0 * np.log(Lc[a, a])
            else:
                Lc[a, b] = s / Lc[b, b]
    res[0] = phi
    res[1] = 0.0
    res[2] = logdet


@kernel
def laplace_terms(pack, ws, Oinv, ETA0, h, eta_tol, max_newton, ETA, MS, RES, lo, hi):
    """:func:`laplace_subject` for subjects lo..hi-1 (ETA[i], MS[i], RES[i])."""
    for i in range(lo, hi):
        ev, args, wk, gw = _views(pack, ws, i)
        laplace_subject(ev, args, wk, gw, Oinv, ETA0[i], h, eta_tol, max_newton, ETA[i], MS[i], RES[i])


class PopulationFOCE:
    """The subjects the compiled step covers, packed for the batched kernels.

    ``subjects``: (solve, y, ost, opk, c) per subject: its exact solve (an
    :class:`~smallchains.pk.analytic.AnalyticSolve`, or a
    :class:`~smallchains.pk.steady_state.PiecewiseSolve` of exact pieces with one parameter set:
    steady-state doses), observations, :class:`Ratio` output indices and the covariates the
    parameter map reads; ``E`` the random effects' design; ``fa``
    int64[8] the (c, jit) addresses of the rate matrix (real, complex) and the parameter map
    (real, complex); ``kind`` the error model (0 additive, 1 proportional, 2 combined).

    Subjects are processed in chunks (one per thread), each chunk with its own workspace sized
    for the longest subject; the kernels release the GIL."""

    #: solved exactly (the batched data terms, predictions and Laplace terms are available)
    exact = True
    #: no network weights
    n_w = 0

    def __init__(self, subjects, E, fa, kind, n_psi, n, m):
        self.N = len(subjects)
        self.n, self.m = n, m
        self.n_t, self.q = E.shape
        self.n_psi = n_psi
        n_obs = [y.shape[0] for _, y, *_ in subjects]
        self.ooff = np.concatenate([[0], np.cumsum(n_obs)]).astype(np.int64)
        self.n_max = max(n_obs)
        pcs, glob, self.poff, self.rows, tobs = pieces_layout([sv for sv, *_ in subjects])
        self.LQ0 = np.zeros((self.N, self.n_t))
        self.psi = np.zeros(n_psi)
        CV = np.array([c for *_, c in subjects], dtype=np.float64).reshape(self.N, -1)
        self.pack = (
            fa,
            self.LQ0,
            np.ascontiguousarray(E, dtype=np.float64),
            np.ascontiguousarray(CV),
            self.psi,
            np.int64(kind),
            np.concatenate([y for _, y, *_ in subjects]).astype(np.float64),
            np.concatenate([o for _, _, o, _, _ in subjects]).astype(np.int64),
            np.concatenate([o for _, _, _, o, _ in subjects]).astype(np.int64),
            pcs,
            glob,
            tobs,
            self.ooff,
            self.poff,
        )
        self._ws = {}
        self._chunks = {}

    def __reduce__(self):
        raise TypeError(
            "the compiled FOCE-I step holds this process's addresses of compiled functions and cannot be "
            "copied to another process: build the Problem (or fit) in the process that uses it"
        )

    def _workspace(self, k):
        if k not in self._ws:
            n, m, n_t, q, n_psi, no = self.n, self.m, self.n_t, self.q, self.n_psi, self.n_max
            N = n + 1
            z = np.zeros
            c = np.complex128
            self._ws[k] = (
                (z(n), z(n_t), z(n_t, dtype=c), z(m), z(m, dtype=c), z((m, n_t)), z((n, n)), z((n, n), dtype=c),
                 z((m, n, n)), z((no, n)), z((no, n, m)), z((no, n, n)), z((N_WORK + 2, N, N)), z((3, n)),
                 z((N_WORK + 3, N, N), dtype=c), z((4, n), dtype=c), z(m, dtype=c), z((no, n), dtype=c),
                 (z((self.rows, n)), z((3, n)), z((n, n)), z((n, n))),
                 (z((self.rows, n), dtype=c), z((3, n), dtype=c), z((n, n), dtype=c), z((n, n), dtype=c))),
                (z(no), z((no, n_t)), z(no), z(no), z(no), z(n_psi), z(no), z((no, q)), z(q), z(q), z(q), z((q, q)),
                 z(q, dtype=np.int64)),
                (z(no), z(no), z((no, q)), z(no), z(n_psi), z((q, q)), z((no, q)), z(no), z(no), z(no),
                 z((no, n_psi)), z(q), z((q, q)), z((q, n_t + n_psi)), z(n_t), z((no, q)), z(q), z((q, 0)), z(0)),
            )  # fmt: skip
        return self._ws[k]

    def chunks(self, k):
        """``k`` contiguous (chunk index, lo, hi) ranges of subjects."""
        if k not in self._chunks:
            b = np.linspace(0, self.N, min(k, self.N) + 1).round().astype(int)
            self._chunks[k] = [(c, int(b[c]), int(b[c + 1])) for c in range(len(b) - 1)]
        return self._chunks[k]

    def set(self, LQ0, psi, w=None):
        """The subjects' log theta + C beta (N, n_t) and the log sigmas for the next calls (no
        network weights ``w``)."""
        self.LQ0[:] = LQ0
        self.psi[:] = psi

    # (a parameter that underflows to exactly 0 at an extreme trial point, e.g. a rate in the exact
    # solution, is a float division by zero in compiled code: the chunk's subjects fail, as a
    # non-finite objective does, and the optimizer steps back)

    def modes(self, chunk, Oinv, ETA0, tol, out, max_iter=60):
        """Modes of one chunk ``(c, lo, hi)`` into ``out`` = (ETA, MS, RES, G_ALL) (see :func:`modes`)."""
        c, lo, hi = chunk
        try:
            modes(self.pack, self._workspace(c), Oinv, ETA0, tol, max_iter, *out, lo, hi)
        except ZeroDivisionError:
            out[2][lo:hi, 1] = FAILED

    def modes_gradients(self, chunk, Oinv, ETA0, tol, h, out, max_iter=60):
        """Modes and gradients of one chunk into ``out`` = (ETA, MS, RES, G_ALL, GLQ, GPSI, SS,
        OK, GW) (see :func:`modes_gradients`; G_ALL may have no rows; GW, the network weights'
        gradients, has no columns)."""
        c, lo, hi = chunk
        try:
            modes_gradients(self.pack, self._workspace(c), Oinv, ETA0, tol, max_iter, h, *out[:8], lo, hi)
        except ZeroDivisionError:
            out[2][lo:hi, 1] = FAILED
            out[7][lo:hi] = 0.0

    def data_terms(self, chunk, ETA, need, out):
        """Data terms of one chunk into ``out`` = (L, DLQ, DPSI, OK) (see :func:`data_terms`)."""
        c, lo, hi = chunk
        try:
            data_terms(self.pack, self._workspace(c), ETA, need, *out, lo, hi)
        except ZeroDivisionError:
            out[0][lo:hi] = np.inf
            out[3][lo:hi] = 0.0

    def predictions(self, chunk, ETA, directions, out):
        """Predictions of one chunk into ``out`` = (F, V, G, OK) (see :func:`predictions`)."""
        c, lo, hi = chunk
        try:
            predictions(self.pack, self._workspace(c), ETA, directions, *out, lo, hi)
        except ZeroDivisionError:
            out[3][lo:hi] = 0.0

    def laplace_terms(self, chunk, Oinv, ETA0, h, eta_tol, out, max_newton=10):
        """Laplace terms of one chunk into ``out`` = (ETA, MS, RES) (see :func:`laplace_terms`)."""
        c, lo, hi = chunk
        try:
            laplace_terms(self.pack, self._workspace(c), Oinv, ETA0, h, eta_tol, max_newton, *out, lo, hi)
        except ZeroDivisionError:
            out[2][lo:hi, 1] = FAILED

    def gradients(self, chunk, Oinv, ETA, h, out):
        """Gradients of one chunk into ``out`` = (GLQ, GPSI, SS, OK, GW) (see :func:`gradients`;
        GW has no columns)."""
        c, lo, hi = chunk
        try:
            gradients(self.pack, self._workspace(c), Oinv, ETA, h, *out[:4], lo, hi)
        except ZeroDivisionError:
            out[3][lo:hi] = 0.0
