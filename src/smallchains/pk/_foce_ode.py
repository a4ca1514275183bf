"""FOCE-I's subject step in compiled code for subjects solved by the ODE solver (UDEs, nonlinear
models): the operations of :mod:`smallchains.pk._foce` on a recorded ODE solve.

The mode search and the gradient are :func:`~smallchains.pk._foce.foce_mode` and
:func:`~smallchains.pk._foce.foce_grad`, the same code as for exact solutions; here are the
operations they call, for a subject whose ``ev`` starts with its recording's bound arguments:

* the data term: the recording forward solve (``_kernels.record_forward``) at p = (p_mech(log q),
  network weights), then the same data term as the exact solutions';
* G = df/deta: one forward-sensitivity solve along the random effects' directions in parameter
  space, Dp = (dp_mech/dlog q E, 0) (``Recording.directional_args``), with dp_mech/dlog q by complex
  steps through the compiled parameter map; the data term is taken from that solve's states,
  as the NumPy step (``SubjectEval.data_term(need=2)``) takes it;
* the x-gradient of a' f: one discrete-adjoint pass (``_kernels.pullback``) on the recording
  forward solve at the same point, chained to log q0 through dp_mech/dlog q; the network weights
  get theirs directly.

That is the NumPy step's arithmetic (``SubjectEval.fit_eta`` and ``foce_gradient``), solve for
solve, with no Python between the solves: one compiled call per subject for its mode, one for
its gradient (or one for both).  The solver's step buffers belong to the subject's
:class:`~smallchains.ode.recording.Recording`; when a solve needs more steps than they hold,
the call returns ``STORAGE_FULL`` and runs again through ``Recording.record`` with larger ones.
"""

from __future__ import annotations

import numpy as np
from numba import types
from numba.extending import overload

from .._jit import JIT_OPTIONS, kernel
from ..ode import _kernels as RK
from . import _foce as FO
from ._kernels import AFTER_US, pullback, record_forward
from ._parammap import as_pmap

H = FO.H


def is_ode(ev):
    """Whether (the Numba type of) ``ev`` is this module's layout: its first item is the
    recording's (before, after) arguments."""
    return isinstance(ev[0], types.BaseTuple)


@kernel
def _params(ev, args, eta):
    """p <- (p_mech(log q0 + E eta), the network weights); False when not finite."""
    lq0, E, c, w, fpm = ev[1], ev[2], ev[3], ev[9], ev[10]
    lq, pm, p = args[0], args[2], args[4]
    n_t, q, nm = lq0.shape[0], eta.shape[0], pm.shape[0]
    for i in range(n_t):
        s = lq0[i]
        for k in range(q):
            s += E[i, k] * eta[k]
        lq[i] = s
    as_pmap(fpm[0], fpm[1])(lq, c, pm)
    for r in range(nm):
        if not np.isfinite(pm[r]):
            return False
        p[r] = pm[r]
    for k in range(w.shape[0]):
        p[nm + k] = w[k]
    return True


@kernel
def _evaluate(ev, args, eta, f, V, Vf, dldf, dpsi):
    """The data term by the recording forward solve at eta.  Returns (status, l); a full step
    buffer is also left in ``args``' flag for the caller."""
    rec, psi, kind, y, ost, opk = ev[0], ev[4], ev[5], ev[6], ev[7], ev[8]
    p, flag = args[4], args[10]
    if not _params(ev, args, eta):
        return RK.NONFINITE, np.inf
    st = record_forward(rec[0], p, rec[1])
    if st != RK.OK:
        if st == RK.STORAGE_FULL:
            flag[0] = st
        return st, np.inf
    return FO.data_term(y, rec[1][AFTER_US], p, ost, opk, psi, kind, f, V, Vf, dldf, dpsi)


@kernel
def _sensitivities(ev, args, eta, f, V, Vf, dldf, dpsi, G):
    """The data term and G = df/deta from one forward-sensitivity solve at eta (J = dp_mech/dlog q
    left in ``args`` for :func:`_xgrad`).  Returns (status, l)."""
    E, c, psi, kind, y, ost, opk, fpm, dargs = ev[2], ev[3], ev[4], ev[5], ev[6], ev[7], ev[8], ev[10], ev[11]
    (lq, lqz, pm, pz, p, J) = args[:6]
    dbefore, z0, dafter, dp, jrow, jbase = dargs
    if not _params(ev, args, eta):
        return RK.NONFINITE, np.inf
    n_t, q, nm, m = lq.shape[0], E.shape[1], pm.shape[0], p.shape[0]
    FO.log_q_jacobian(fpm[2], fpm[3], lq, lqz, c, pz, J)
    for d in range(q):
        for r in range(nm):
            s = 0.0
            for i in range(n_t):
                s += J[r, i] * E[i, d]
            dp[d, r] = s
        for r in range(nm, m):
            dp[d, r] = 0.0
    jv = dafter[6]
    for r in range(jrow.shape[0]):
        if jrow[r] >= 0:
            jv[r] = jbase[r] * dp[jrow[r] // m, jrow[r] % m]
    st = RK.rk_solve(*dbefore, z0, p, *dafter)
    if st != RK.OK:
        return st, np.inf
    uz = dafter[1]
    st, l = FO.data_term(y, uz, p, ost, opk, psi, kind, f, V, Vf, dldf, dpsi)
    if st != RK.OK:
        return st, l
    n = z0.shape[0] // (1 + q)
    for j in range(y.shape[0]):
        vol = p[opk[j]]
        for d in range(q):
            G[j, d] = (uz[j, n + d * n + ost[j]] - f[j] * dp[d, opk[j]]) / vol
    return RK.OK, l


@kernel
def _point(ev, args, eta, f, V, Vf, dldf, dpsi, G):
    """:func:`_sensitivities`, then the recording forward solve at the same p (for :func:`_xgrad`)."""
    st, l = _sensitivities(ev, args, eta, f, V, Vf, dldf, dpsi, G)
    if st != RK.OK:
        return st, l
    rec, p, flag = ev[0], args[4], args[10]
    st = record_forward(rec[0], p, rec[1])
    if st != RK.OK:
        if st == RK.STORAGE_FULL:
            flag[0] = st
        return st, np.inf
    return RK.OK, l


@kernel
def _xgrad(ev, args, a, glq, gw, scale):
    """glq, gw += scale * (d/dlog q0, d/dw) of a' f at the last :func:`_point`: one adjoint pass."""
    rec, ost, opk = ev[0], ev[7], ev[8]
    (p, J, _, g, lam, gp) = args[4:10]
    us = rec[1][AFTER_US]
    nm = J.shape[0]
    for j in range(g.shape[0]):
        for i in range(g.shape[1]):
            g[j, i] = 0.0
    for r in range(gp.shape[0]):
        gp[r] = 0.0
    for j in range(a.shape[0]):
        vol = p[opk[j]]
        g[j, ost[j]] += a[j] / vol
        gp[opk[j]] -= a[j] * us[j, ost[j]] / (vol * vol)
    pullback(rec[0], p, rec[1], g, lam, gp)
    for i in range(glq.shape[0]):
        s = 0.0
        for r in range(nm):
            s += gp[r] * J[r, i]
        glq[i] += scale * s
    for k in range(gw.shape[0]):
        gw[k] += scale * gp[nm + k]
    return RK.OK


@overload(FO.evaluate, jit_options=JIT_OPTIONS)
def _ov_evaluate(ev, args, eta, jac, f, F, V, Vf, dldf, dpsi):
    if is_ode(ev):
        return lambda ev, args, eta, jac, f, F, V, Vf, dldf, dpsi: _evaluate(ev, args, eta, f, V, Vf, dldf, dpsi)


@overload(FO.start, jit_options=JIT_OPTIONS)
def _ov_start(ev, args, eta, f, F, V, Vf, dldf, dpsi, G):
    if is_ode(ev):
        return lambda ev, args, eta, f, F, V, Vf, dldf, dpsi, G: _sensitivities(ev, args, eta, f, V, Vf, dldf, dpsi, G)


@overload(FO.refresh, jit_options=JIT_OPTIONS)
def _ov_refresh(ev, args, eta, l, f, F, V, Vf, dldf, dpsi, G):
    if is_ode(ev):  # (the NumPy step takes the point's data term from the sensitivity solve too)
        return lambda ev, args, eta, l, f, F, V, Vf, dldf, dpsi, G: _sensitivities(
            ev, args, eta, f, V, Vf, dldf, dpsi, G
        )


@overload(FO.point, jit_options=JIT_OPTIONS)
def _ov_point(ev, args, eta, f, F, V, Vf, dldf, dpsi, G):
    if is_ode(ev):
        return lambda ev, args, eta, f, F, V, Vf, dldf, dpsi, G: _point(ev, args, eta, f, V, Vf, dldf, dpsi, G)


@overload(FO.xgrad, jit_options=JIT_OPTIONS)
def _ov_xgrad(ev, args, a, F, glq, gw, scale):
    if is_ode(ev):
        return lambda ev, args, a, F, glq, gw, scale: _xgrad(ev, args, a, glq, gw, scale)


# ---------------------------------------------------------------- one compiled call per subject


@kernel
def subject_mode(ev, args, wk, gw, Oinv, eta0, tol, max_iter, eta, M, res):
    """The subject's mode, M and log|M| (``_foce.mode_logdet``); returns ``STORAGE_FULL`` when a
    solve needed more steps than the buffers hold (call again with larger ones), else OK."""
    args[10][0] = RK.OK
    FO.mode_logdet(ev, args, wk, Oinv, eta0, tol, max_iter, eta, M, res)
    return args[10][0]


@kernel
def subject_laplace(ev, args, wk, gw, Oinv, eta0, h, eta_tol, max_newton, eta, M, res):
    """Laplace's subject term (``_foce.laplace_subject``).  Returns as :func:`subject_mode`."""
    args[10][0] = RK.OK
    FO.laplace_subject(ev, args, wk, gw, Oinv, eta0, h, eta_tol, max_newton, eta, M, res)
    return args[10][0]


@kernel
def subject_gradient(ev, args, wk, gw, Oinv, eta, h, glq, gwt, gpsi, S, ok):
    """The gradient of the subject's FOCE-I term at its mode (``_foce.foce_grad``): ok[0] = 1 when
    it succeeded.  Returns as :func:`subject_mode`."""
    args[10][0] = RK.OK
    ok[0] = 1.0 if FO.foce_grad(ev, args, wk, gw, Oinv, eta, h, glq, gwt, gpsi, S) else 0.0
    return args[10][0]


@kernel
def subject_mode_gradient(ev, args, wk, gw, Oinv, eta0, tol, max_iter, h, eta, M, res, glq, gwt, gpsi, S, ok):
    """:func:`subject_mode` then, when it succeeded with |M| > 0, :func:`subject_gradient`."""
    args[10][0] = RK.OK
    ok[0] = 0.0
    FO.mode_logdet(ev, args, wk, Oinv, eta0, tol, max_iter, eta, M, res)
    if args[10][0] != RK.OK or res[1] != 0.0 or res[4] <= 0.0:
        return args[10][0]
    if FO.foce_grad(ev, args, wk, gw, Oinv, eta, h, glq, gwt, gpsi, S):
        ok[0] = 1.0
    return args[10][0]


class ODESubjects:
    """The subjects solved by the ODE solver that the compiled step covers, each with its own
    buffers (its recording's, and the step's), for one compiled call per subject.

    ``subjects``: (recording, y, ost, opk, c) per subject (its :class:`~smallchains.ode.recording.
    Recording` of the forward solve, observations, :class:`Ratio` output indices, the covariates
    the parameter map reads); ``E`` the random effects' design; ``fpm`` the parameter map's
    addresses (:class:`~smallchains.pk._parammap.ParamMap`); ``kind`` the error model; ``n_psi``
    the number of log sigmas; ``n_mech`` the mechanistic parameters; the rest of the solver's
    parameters are the network weights (set with :meth:`set`).

    The same interface as :class:`~smallchains.pk._foce.PopulationFOCE` for what FOCE-I asks
    (``index``, ``ooff``, ``n_psi``, ``n_w``, :meth:`set`, :meth:`chunks`, :meth:`modes`,
    :meth:`modes_gradients`, :meth:`gradients`, :meth:`laplace_terms`); ``exact`` is False: the
    batched data terms and predictions are the exact solutions' only (MAP's data terms of these
    subjects are one compiled call each already: ``_kernels.subject_data_term``)."""

    exact = False

    def __init__(self, subjects, E, fpm, kind, n_psi, n_mech):
        self.N = len(subjects)
        self.E = np.ascontiguousarray(E, dtype=np.float64)
        self.n_t, self.q = self.E.shape
        self.n_psi = n_psi
        self.kind = np.int64(kind)
        self.fpm = np.asarray(fpm, dtype=np.int64)
        self.m = subjects[0][0].m
        self.n_w = self.m - n_mech
        self.n_mech = n_mech
        n_obs = [y.shape[0] for _, y, *_ in subjects]
        self.ooff = np.concatenate([[0], np.cumsum(n_obs)]).astype(np.int64)
        self.psi = np.zeros(n_psi)
        self.w = np.zeros(self.n_w)
        self.LQ0 = np.zeros((self.N, self.n_t))
        self._subjects = []
        for rec, y, ost, opk, c in subjects:
            no, n = y.shape[0], rec.n
            q, n_t, m, nm = self.q, self.n_t, self.m, n_mech
            z = np.zeros
            args = (z(n_t), z(n_t, dtype=np.complex128), z(nm), z(nm, dtype=np.complex128), z(m), z((nm, n_t)),
                    z((nm, q)), z((no, n)), z(n), z(m), np.zeros(1, dtype=np.int64))  # fmt: skip
            wk = (z(no), z((no, 0)), z(no), z(no), z(no), z(n_psi), z(no), z((no, q)), z(q), z(q), z(q), z((q, q)),
                  z(q, dtype=np.int64))  # fmt: skip
            gw = (z(no), z(no), z((no, q)), z(no), z(n_psi), z((q, q)), z((no, q)), z(no), z(no), z(no),
                  z((no, n_psi)), z(q), z((q, q)), z((q, n_t + n_psi)), z(n_t), z((no, q)), z(q), z((q, self.n_w)),
                  z(self.n_w))  # fmt: skip
            data = (
                np.ascontiguousarray(c, dtype=np.float64),
                np.ascontiguousarray(y, dtype=np.float64),
                np.ascontiguousarray(ost, dtype=np.int64),
                np.ascontiguousarray(opk, dtype=np.int64),
            )
            self._subjects.append((rec, data, tuple(rec.directional_args(q)), args, wk, gw))

    def __reduce__(self):
        raise TypeError(
            "the compiled FOCE-I step holds this process's addresses of compiled functions and cannot be "
            "copied to another process: build the Problem (or fit) in the process that uses it"
        )

    def set(self, LQ0, psi, w=None):
        """The subjects' log theta + C beta (N, n_t), the log sigmas and the network weights."""
        self.LQ0[:] = LQ0
        self.psi[:] = psi
        if self.n_w:
            self.w[:] = w

    def chunks(self, k):
        """One item per subject (the threads take them one at a time: solves differ in cost)."""
        return [(i, i, i + 1) for i in range(self.N)]

    def _run(self, i, kernel, *rest):
        """``kernel(ev, args, wk, gw, *rest)`` for subject i through its recording (grown and
        run again while a solve needs more steps than its buffers hold)."""
        rec, (c, y, ost, opk), dargs, args, wk, gw = self._subjects[i]

        def run(r):
            ev = (r.fused_args, self.LQ0[i], self.E, c, self.psi, self.kind, y, ost, opk, self.w, self.fpm, dargs)
            return kernel(ev, args, wk, gw, *rest)

        return rec.record(run)

    def modes(self, chunk, Oinv, ETA0, tol, out, max_iter=60):
        """Modes of the subjects ``chunk`` = (c, lo, hi) into ``out`` = (ETA, MS, RES, G_ALL) (as
        ``_foce.modes``)."""
        ETA, MS, RES, G_ALL = out
        _, lo, hi = chunk
        for i in range(lo, hi):
            self._run(i, subject_mode, Oinv, ETA0[i], tol, max_iter, ETA[i], MS[i], RES[i])
            if G_ALL.shape[0] and RES[i, 1] == 0.0:
                G_ALL[self.ooff[i] : self.ooff[i + 1]] = self._subjects[i][4][7]

    def modes_gradients(self, chunk, Oinv, ETA0, tol, h, out, max_iter=60):
        """Modes and gradients into ``out`` = (ETA, MS, RES, G_ALL, GLQ, GPSI, SS, OK, GW) (as
        ``_foce.modes_gradients``, GW the network weights' gradients)."""
        ETA, MS, RES, G_ALL, GLQ, GPSI, SS, OK, GW = out
        _, lo, hi = chunk
        for i in range(lo, hi):
            self._run(
                i, subject_mode_gradient, Oinv, ETA0[i], tol, max_iter, h, ETA[i], MS[i], RES[i], GLQ[i], GW[i],
                GPSI[i], SS[i], OK[i : i + 1],
            )  # fmt: skip

    def laplace_terms(self, chunk, Oinv, ETA0, h, eta_tol, out, max_newton=10):
        """Laplace terms into ``out`` = (ETA, MS, RES) (as ``_foce.laplace_terms``)."""
        ETA, MS, RES = out
        _, lo, hi = chunk
        for i in range(lo, hi):
            self._run(i, subject_laplace, Oinv, ETA0[i], h, eta_tol, max_newton, ETA[i], MS[i], RES[i])

    def gradients(self, chunk, Oinv, ETA, h, out):
        """Gradients at the modes ETA into ``out`` = (GLQ, GPSI, SS, OK, GW) (as ``_foce.gradients``)."""
        GLQ, GPSI, SS, OK, GW = out
        _, lo, hi = chunk
        for i in range(lo, hi):
            self._run(i, subject_gradient, Oinv, ETA[i], h, GLQ[i], GW[i], GPSI[i], SS[i], OK[i : i + 1])
