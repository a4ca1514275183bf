"""Population objectives and their gradients, subject by subject, from the ODE sensitivities.

Per subject i with observations y_ij and predictions f_ij:

    l_i(eta) = sum_j [ (y_ij - f_ij)^2 / V_ij + log V_ij ]            (-2 log p(y_i | eta), no 2 pi)

BLQ records are left out (M1), or enter as censored (M3, M4: their terms in pk/_censored.py).

* naive pooled: sum_i l_i(0) (one set of parameters for everyone);
* MAP / empirical Bayes: sum_i [ l_i(eta_i) + eta_i' Omega^-1 eta_i + log|Omega| ] over the
  fixed effects, Omega, the residual error and every eta_i jointly, plus |w|^2/s^2 for network
  weights;
* FOCE-I: sum_i [ l_i(eta_i*) + eta_i*' Omega^-1 eta_i* + log|Omega| + log|M_i| ] with eta_i*
  the mode of subject i's posterior (found by Fisher scoring in an inner loop) and
  M_i = G' diag(1/V + V'^2 / (2 V^2)) G + Omega^-1, G = df/deta at eta_i* (the expected
  information; V at the individual predictions: the "interaction").  This is the Laplace
  approximation of -2 log of the marginal likelihood, NONMEM's FOCE-I objective.

A subject's gradient costs one forward solve and one discrete-adjoint pass; the Jacobian G
of its predictions with respect to its random effects costs one forward-sensitivity solve
along the q directions the random effects move the parameters in.  Each
subject owns its solver buffers, so subjects run in parallel threads (the compiled passes
release the GIL).
"""

from __future__ import annotations

import itertools
import logging
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.linalg import solve_triangular

from .._jit import addresses
from .._warnings import DataWarning
from ..ode import _kernels as RK
from ..ode.integrate import ODESolveError
from ..ode.recording import Recording
from ..ode.sensitivity import DiscreteAdjoint
from . import _kernels as PK
from ._censored import M3, M4_CENSORED, M4_OBSERVED, obs_terms
from ._foce import MAX_ETA_STEP, RATES_SIG, RATESZ_SIG, PopulationFOCE
from ._foce_ode import ODESubjects
from ._parammap import param_map
from .analytic import AnalyticSolve
from .dosing import SubjectDosing
from .steady_state import PiecewiseSolve, SteadyStateError, plan
from .timevarying import CovariateTimeline, assign, check_rule


def information(out, Oinv):
    """M = G' diag(1/V + V'^2 / (2 V^2)) G + Omega^-1: the expected information of a subject's
    posterior in eta (``out`` from ``data_term(..., need=2)``; its weights ``w`` instead where
    given: censored observations, see :meth:`SubjectEval.data_term`)."""
    w = out.get("w")
    if w is None:
        w = 1.0 / out["V"] + out["Vf"] ** 2 / (2.0 * out["V"] ** 2)
    return out["G"].T @ (w[:, None] * out["G"]) + Oinv


def _censored_weights(s, f, psi):
    """FOCE-I's information weights with censored terms (M3, M4): the normal density's expected
    information where observed (M1's rows), half the curvature d^2 l_j / df_j^2 (V following f;
    central differences, floored at 0) elsewhere."""
    m = s.model
    V, Vf, _ = m.error.variance(f, psi)
    w = 1.0 / np.where(V > 0, V, np.inf) + Vf**2 / (2.0 * np.where(V > 0, V, np.inf) ** 2)
    other = s.code != 0
    h = 1e-5 * np.maximum(np.abs(f), 1e-6)
    d = []
    for sgn in (1.0, -1.0):
        fs = f + sgn * h
        Vs, Vfs, _ = m.error.variance(fs, psi)
        lj, lf, lV = (np.empty(f.shape[0]) for _ in range(3))
        obs_terms(s.y, s.code, s.lim, fs, Vs, lj, lf, lV)
        d.append(lf + lV * Vfs)
    curv = (d[0] - d[1]) / (2.0 * h)
    return np.where(other, np.maximum(0.5 * np.where(np.isfinite(curv), curv, 0.0), 0.0), w)


def _number(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


class SubjectEval:
    """One subject bound to a population model: solver buffers, observations, covariate design."""

    compiled = True  # the one-call compiled data term when the outputs allow (False: the NumPy path)

    def __init__(
        self,
        model,
        subject,
        X_row,
        Z_row,
        *,
        rtol,
        atol,
        solver,
        ss_tol,
        check,
        controller=None,
        time_varying="nocb",
        refs=None,
        analytic=None,
        blq="m1",
        lloq=None,
    ):
        st = model.structural
        self.model = model
        self.subject = subject
        flag = np.asarray(subject.blq) != 0
        keep = ~flag if blq == "m1" else np.ones_like(flag)
        self.t = np.ascontiguousarray(subject.obs_time[keep], dtype=float)
        self.dvid = np.ascontiguousarray(subject.dvid[keep], dtype=np.int64)
        self.n_obs = int(self.t.shape[0])
        #: each observation's likelihood (pk/_censored.py: 0 observed, 1 M3, 2 and 3 M4) and LLOQ
        self.code, self.lim, y = censoring(subject, blq, lloq)
        #: (y, code, LLOQ) per observation, the compiled data terms' input (y = LLOQ where censored)
        self.obs = np.ascontiguousarray(np.column_stack([y, self.code, self.lim]), dtype=np.float64)
        self.y = np.ascontiguousarray(y, dtype=float)
        #: whether any observation's term is not the normal density's (FOCE-I's weights assume it)
        self.nonnormal = bool(np.any(self.code != 0))
        if np.any(~np.isfinite(self.y)):
            raise ValueError(f"subject {subject.id}: an observation's DV is missing (NaN); set MDV = 1 there")
        bad = (self.dvid < 1) | (self.dvid > len(st.outputs))
        if np.any(bad):
            raise ValueError(
                f"subject {subject.id}: DVID {int(self.dvid[bad][0])}, but {st.name} has {len(st.outputs)} output(s)"
            )
        self.t0 = t0 = subject.first_time
        t1 = max(float(self.t.max()), t0)
        # the covariate design: log q = log theta + C beta + E eta
        n_t = len(model.theta_names)
        self.C = np.zeros((n_t, len(model.covariates)))
        for j, (k, _, _) in enumerate(model.covariates):
            self.C[k, j] = X_row[j]
        self.z = np.ascontiguousarray(Z_row, dtype=np.float64)
        self.cov = {c: _number(subject.covariate(c)) for c in subject.covariates}
        self.cov.setdefault("DOSE", subject.first_dose)  # (no DOSE column: the first dose's amount)
        cn = model.covariate_network
        if cn is not None:
            self._gwc = np.zeros(cn.chain.num_params)
        self.n_mech = st.n_params
        #: doses that follow the model's dose parameters (pk/dosing.py), or None
        self.dosing = None
        if model.dose_index and any(
            d.kind != "reset" and (d.mode != "rate" or any(c == d.cmt for _, c in model.dose_index))
            for d in subject.doses
        ):
            self.dosing = SubjectDosing(subject.doses, model.dose_index, st.n_states)
            self._dj = None  # the last evaluation's (d time / d pd, d value / d pd) of the jumps
        p0, _ = self.params(model.x0, np.zeros(model.n_eta), jac=False)
        solve_kw = dict(rtol=rtol, atol=atol, solver=solver, controller=controller)
        #: the covariates the model reads, when they change within the solve (pk/timevarying.py), or None;
        #: ``tv_baseline``: they change but the subject keeps its first values (with dose parameters)
        self.tv, self.tv_baseline = None, False
        read = [c for c in model.covariates_read(sorted(subject.covariates)) if c in subject.covariates]
        if time_varying != "baseline" and read and subject.record_time is not None:
            tl = CovariateTimeline(subject, read, time_varying)
            if tl.varies and self.dosing is not None:
                self.tv_baseline = True
            elif tl.varies:
                self.tv = tl
        pieces = plan(subject.doses, t0, self.t, st.n_states, covariates=self.tv) if self.dosing is None else None
        if self.tv is not None:
            values = assign(pieces, self.tv, t0)
            self.cov_sets = [dict(self.cov, **dict(zip(read, map(float, v)))) for v in values]
            designs = [model.design_row(c, refs) for c in self.cov_sets]
            self.C_sets = np.zeros((len(designs), n_t, len(model.covariates)))
            for i, (X, _) in enumerate(designs):
                for j, (k, _, _) in enumerate(model.covariates):
                    self.C_sets[i, k, j] = X[j]
            self.z_sets = np.array([Z for _, Z in designs])
            self.obs_set = np.zeros(self.n_obs, dtype=np.int64)
            for pc in pieces:
                self.obs_set[pc.obs] = pc.pset
            p0 = self.params_sets(model.x0, np.zeros(model.n_eta))[0][0]
        #: a subject with steady-state doses or time-varying covariates is solved in pieces
        #: (pk/steady_state.py); others in one solve
        self.piecewise = pieces is not None and (len(pieces) > 1 or pieces[0].steady is not None)
        #: solved exactly by matrix exponentials (a linear model: pk/analytic.py), not by an ODE solver
        self.analytic = bool(analytic) and self.dosing is None
        if self.piecewise:
            self.gf = PiecewiseSolve(
                st.ode,
                st.n_states,
                pieces,
                self.t,
                p0,
                solve_kw,
                ss_tol=10 * rtol if ss_tol is None else ss_tol,
                check=check,
                exact=st if self.analytic else None,
            )
        elif self.analytic:
            self.gf = AnalyticSolve(st, pieces[0].jumps(), t0, self.t, p0.shape[0])
        else:
            jumps = pieces[0].jumps() if self.dosing is None else self.dosing.jumps
            self.gf = Recording(  # (the solve's recording: smallchains.ode.recording)
                st.ode,
                np.zeros(st.n_states),
                (t0, t1),
                p0,
                sensitivity=DiscreteAdjoint(),
                check_derivatives=check,
                **dict(solve_kw, saveat=self.t, jumps=jumps),
            )
        self.n_mech = st.n_params
        self._ratio = None
        self._fast = None
        if st._ratios:
            self._ratio = st.ratio_indices(self.dvid)
        if st._ratios and not self.piecewise and self.dosing is None and not self.analytic:
            # the one-call compiled data term and gradient (pk/_kernels.py)
            self._fast = dict(
                ekind=("additive", "proportional", "combined").index(model.error.kind),
                g=np.zeros((self.n_obs, st.n_states)),
                gp=np.zeros(self.gf.m),
                lam=np.zeros(st.n_states),
                f=np.zeros(self.n_obs),
                V=np.zeros(self.n_obs),
                res=np.zeros(1 + len(model.error.names)),
            )
            self._data_args = (self.obs, *self._ratio, self._fast["ekind"])

    def logq(self, x, eta):
        return self.model.log_individual(x, self.C, self.z, eta)

    def covariate_network_grad(self, x, dlogq, z=None):
        """d/d(covariate network weights) from d/dlogq (at the network inputs ``z``, default the baseline)."""
        m = self.model
        cn = m.covariate_network
        return cn.chain.vjp_into(
            self._gwc,
            np.ascontiguousarray(x[m.blocks["wc"]]),
            np.ascontiguousarray(dlogq[m.cn_targets]),
            self.z if z is None else z,
        ).copy()

    def add_x_grad(self, g, x, dlogq, dw, dpsi=None):
        """g += the gradient over x (theta, beta, covariate network, weights, log sigmas) from the
        subject's d/dlogq (n_theta,), or one row per parameter set (time-varying covariates), d/dw
        and d/dpsi."""
        m = self.model
        g[m.blocks["w"]] += dw
        if dpsi is not None:
            g[m.blocks["psi"]] += dpsi
        rows = [(dlogq, self.C, self.z)] if np.ndim(dlogq) == 1 else zip(dlogq, self.C_sets, self.z_sets)
        beta = x[m.blocks["beta"]]
        for d, C, z in rows:
            g[m.blocks["theta"]] += d
            g[m.blocks["beta"]] += m.effect_derivatives(C, beta).T @ d
            if m.covariate_network is not None:
                g[m.blocks["wc"]] += self.covariate_network_grad(x, d, z)

    def params_sets(self, x, eta):
        """Time-varying covariates: (P (n_sets, m) for the solver, dp_mech/dlogq (n_sets, n_mech, n_theta))."""
        m = self.model
        w = x[m.blocks["w"]]
        P, Js = [], []
        for C, z, cov in zip(self.C_sets, self.z_sets, self.cov_sets):
            pm, J = m.structural_params(m.log_individual(x, C, z, eta), cov)
            P.append(np.concatenate([pm, w]))
            Js.append(J)
        return np.array(P), np.array(Js)

    def _x_pull(self, r, c):
        """(d/dlogq, d/dw) of c' f for the cotangent ``c`` (n_obs,) on the predictions of the last
        :meth:`predict` (``r``): one adjoint pass."""
        P, J, f, fu, fp = r[:5]
        nm = self.n_mech
        if self.tv is not None:
            GP, _ = self.gf.pullback(c[:, None] * fu)
            for k in range(GP.shape[0]):
                sel = self.obs_set == k
                GP[k, :nm] += fp[sel].T @ c[sel]
            return np.einsum("smt,sm->st", J[:, :nm], GP[:, :nm]), GP[:, nm:].sum(axis=0)
        gp, dlogq = self._pullback(J, c[:, None] * fu)
        gp[:nm] += fp.T @ c
        return dlogq + J[:nm].T @ gp[:nm], gp[nm:]

    def x_grads(self, x, eta, cotangents):
        """For each cotangent c (n_obs,), the gradient of c' f(x, eta) over x (one forward solve,
        one adjoint pass per cotangent); None when the solve fails."""
        r = self.predict(x, eta)
        if r is None:
            return None
        out = []
        for c in cotangents:
            g = np.zeros(self.model.n_x)
            self.add_x_grad(g, x, *self._x_pull(r, c))
            out.append(g)
        return out

    def _pullback(self, J, cot):
        """(dL/dp of the solver's parameters, dL/dlogq through the doses) for the cotangent ``cot``
        on the saved states of the last solve."""
        if self.dosing is None:
            gp = self.gf.pullback(cot)[0]
            return (gp[0] if gp.ndim == 2 else gp), 0.0  # (a PiecewiseSolve's one parameter set)
        gp, _, jd = self.gf.pullback(cot, jumps=True)
        Tj, Vj = self._dj
        return gp, J[self.n_mech :].T @ (Tj.T @ jd[:, 1] + Vj.T @ jd[:, 0])

    def foce_gradient(self, x, fitted, Oinv, dOinv, h=1e-4):
        """d/dx of the subject's FOCE-I term l(eta*) + eta*' Omega^-1 eta* + log|M| (log|Omega|
        left to the caller) at its mode eta* (``fitted``: what :meth:`fit_eta` returned), with
        ``dOinv`` (n_omega, q, q) the derivatives of Omega^-1 over x's Omega block.

        d/dx = partial_x Phi + partial_x log|M| + (partial_eta log|M|)' d eta*/dx, Phi = l + eta' Omega^-1 eta
        (its eta-gradient is 0 at the mode), d eta*/dx = -H^-1 partial_eta partial_x Phi, H the exact
        Hessian of Phi in eta.  First-order pieces are exact (adjoint gradients, forward
        sensitivities G); the second-order ones (dG/dx, dG/deta, H, the mixed Hessian) are
        central differences along each eta direction of exact first-order quantities, using
        d/deta_k grad_x(a' f) = grad_x(a' G_k) for the x-derivatives of G.  Costs 2q forward-
        sensitivity solves, 2q forward solves with two adjoint passes each, and one more forward
        solve and adjoint pass.  Returns None when a solve fails."""
        m = self.model
        eta, _, M, out = fitted
        q = eta.shape[0]
        psi = x[m.blocks["psi"]]
        f, G, dldf = out["f"], out["G"], out["dldf"]
        Minv = np.linalg.inv(M)
        Wd, dWdf, dWdpsi = m.error.information_weight(f, psi)
        A = 2.0 * Wd[:, None] * (G @ Minv)  # d log|M| = sum_k A_k' dG_k + sum_j d_j dW_j (+ Omega^-1's part)
        d = np.einsum("jk,kl,jl->j", G, Minv, G)
        c = d * dWdf
        dlogM_eta = G.T @ c
        H = 2.0 * Oinv.copy()
        B = np.zeros((q, m.n_x))  # d/deta d/dx Phi
        T1 = np.zeros(m.n_x)  # sum_k d/deta_k grad_x(A_k' f) = sum_k grad_x(A_k' G_k): log|M| through G
        for k in range(q):
            dG = np.zeros_like(G)
            for sgn in (1.0, -1.0):
                e = eta.copy()
                e[k] += sgn * h
                _, o1 = self.data_term(x, e, need=2)
                gr = None if o1 is None else self.x_grads(x, e, [A[:, k], o1["dldf"]])
                if gr is None:
                    return None
                w = sgn / (2.0 * h)
                dG += w * o1["G"]
                H[:, k] += w * (o1["G"].T @ o1["dldf"])
                T1 += w * gr[0]
                B[k] += w * gr[1]
                B[k, m.blocks["psi"]] += w * o1["dpsi"]
            dlogM_eta[k] += np.sum(A * dG)
        ob = m.blocks["omega"]
        for r in range(ob.stop - ob.start):
            B[:, ob.start + r] += 2.0 * dOinv[r] @ eta
        H = 0.5 * (H + H.T)
        try:
            u = np.linalg.solve(H, dlogM_eta)
        except np.linalg.LinAlgError:
            return None
        # at the mode: grad_x Phi and log|M| through W, by one adjoint pass with both cotangents
        gr = self.x_grads(x, eta, [dldf + c])
        if gr is None:
            return None
        g = gr[0] + T1 - u @ B
        g[m.blocks["psi"]] += out["dpsi"] + d @ dWdpsi
        for r in range(ob.stop - ob.start):
            g[ob.start + r] += eta @ dOinv[r] @ eta + np.sum(Minv * dOinv[r])
        return g

    def params(self, x, eta, jac=True):
        """(p for the solver, dp_mech/dlogq; None with ``jac=False``, when it may be skipped)."""
        m = self.model
        pm, J = m.structural_params(self.logq(x, eta), self.cov, jac)
        if self.dosing is not None:  # (the dose parameters follow the mechanistic ones)
            self._pd = pm[self.n_mech :]
        return np.concatenate([pm[: self.n_mech], x[m.blocks["w"]]]), J

    def predict(self, x, eta, directions=False):
        """(p, dp/dlogq, f, df/du, df/dp_mech[, G]) at the observations, or None when the solve
        fails; with ``directions`` also G = df/deta from forward sensitivities along the
        random effects' directions in parameter space (one solve, same steps as the plain one)."""
        m = self.model
        if self.tv is not None:
            return self._predict_sets(x, eta, directions)
        p, J = self.params(x, eta)
        if not np.all(np.isfinite(p)):
            return None
        nm = self.n_mech
        try:
            tangents = None
            if self.dosing is not None:
                tj, vj, Tj, Vj = self.dosing.evaluate(self._pd)
                self.gf.move_jumps(tj, vj)
                self._dj = (Tj, Vj)
            if directions:
                JE = J @ m.E  # d(p_mech, p_dose) / deta
                Dp = np.zeros((m.n_eta, p.shape[0]))
                Dp[:, :nm] = JE[:nm].T
                if self.dosing is not None:
                    tangents = (Vj @ JE[nm:], Tj @ JE[nm:])
                us, S = self.gf.directional_sensitivities(p, Dp, jump_tangents=tangents)
            elif self.piecewise or self.analytic:
                us = self.gf.solve(p)
            else:
                us = self.gf.forward(p)  # (fresh, contiguous, float64 and finite: checked above)
        except (ODESolveError, SteadyStateError, ValueError, ArithmeticError):  # (a trial step the model cannot take)
            return None
        if self._ratio is not None:  # concentrations: analytic, index arrays fixed per subject
            f, fu, fp = m.structural.ratio_jacobians(us, p, *self._ratio)
        else:
            f, fu, fp = m.structural.output_jacobians(us, p, self.dvid)
        if not directions:
            return p, J, f, fu, fp
        G = np.einsum("js,jks->jk", fu, S) + fp @ JE[:nm]
        return p, J, f, fu, fp, G

    def _predict_sets(self, x, eta, directions):
        """:meth:`predict` with time-varying covariates: P (n_sets, m) and J (n_sets, ...) in place of p
        and J, each observation's outputs at its own set's parameters."""
        m, st, nm = self.model, self.model.structural, self.n_mech
        P, J = self.params_sets(x, eta)
        if not np.all(np.isfinite(P)):
            return None
        try:
            if directions:
                JE = J[:, :nm] @ m.E  # (n_sets, n_mech, q)
                Dp = np.zeros((P.shape[0], m.n_eta, P.shape[1]))
                Dp[:, :, :nm] = JE.transpose(0, 2, 1)
                us, S = self.gf.directional_sensitivities(P, Dp)
            else:
                us = self.gf.solve(P)
        except (ODESolveError, SteadyStateError, ValueError, ArithmeticError):
            return None
        f = np.empty(self.n_obs)
        fu = np.zeros((self.n_obs, st.n_states))
        fp = np.zeros((self.n_obs, nm))
        for k in range(P.shape[0]):
            sel = self.obs_set == k
            if not sel.any():
                continue
            if self._ratio is not None:
                f[sel], fu[sel], fp[sel] = st.ratio_jacobians(us[sel], P[k], *(a[sel] for a in self._ratio))
            else:
                f[sel], fu[sel], fp[sel] = st.output_jacobians(us[sel], P[k], self.dvid[sel])
        if not directions:
            return P, J, f, fu, fp
        G = np.einsum("js,jks->jk", fu, S) + np.einsum("jm,jmk->jk", fp, JE[self.obs_set])
        return P, J, f, fu, fp, G

    def kernel(self, p, psi, gp, res, grad=True):
        """The compiled data term at solver parameters ``p`` (concentration outputs): ``res`` <-
        (l, dl/dpsi) and, with ``grad``, ``gp`` <- dl/dp (one forward solve and one discrete
        adjoint, pk/_kernels.py).  Returns True when the objective is finite."""
        fz = self._fast

        def run(rec):  # (rec.fused_args: bound by the recording, rebound when its storage grows)
            before, after = rec.fused_args
            return PK.subject_data_term(
                before, p, after, *self._data_args, psi, fz["g"], gp, fz["lam"], fz["f"], fz["V"], res, grad
            )

        return self.gf.record(run) == RK.OK

    def _data_term_compiled(self, x, eta, need):
        """``data_term(x, eta, need)`` (need 0 or 1) by :meth:`kernel`."""
        m = self.model
        p, J = self.params(x, eta)
        if not np.isfinite(p).all():
            return (np.inf, None) if need else np.inf
        fz = self._fast
        res, gp = fz["res"], fz["gp"]
        if not self.kernel(p, np.ascontiguousarray(x[m.blocks["psi"]]), gp, res, need == 1):
            return (np.inf, None) if need else np.inf
        if not need:
            return float(res[0])
        out = {
            "f": fz["f"].copy(),
            "V": fz["V"].copy(),
            "dpsi": res[1:].copy(),
            "J": J,
            "dlogq": J.T @ gp[: self.n_mech],
            "dw": gp[self.n_mech :].copy(),
        }
        return float(res[0]), out

    def data_term(self, x, eta, need=0):
        """-2 log p(y | eta) without 2 pi, and with ``need`` = 1 its gradients
        (d/dlogq, d/dw, d/dpsi), with ``need`` = 2 what FOCE needs instead (f, V, V', G)."""
        if need < 2 and self._fast is not None and self.compiled:
            return self._data_term_compiled(x, eta, need)
        m = self.model
        r = self.predict(x, eta, directions=need == 2)
        if r is None:
            return (np.inf, None) if need else np.inf
        p, J, f, fu, fp = r[:5]
        psi = x[m.blocks["psi"]]
        V, Vf, Vpsi = m.error.variance(f, psi)
        if self.nonnormal:
            dens = (self.code != M3) & (self.code != M4_CENSORED)
            if not (np.isfinite(V.sum() + f.sum()) and V.min() >= 0 and np.all(V[dens] > 0)):
                return (np.inf, None) if need else np.inf
            lj, lf, a = (np.empty(self.n_obs) for _ in range(3))
            obs_terms(self.y, self.code, self.lim, f, V, lj, lf, a)
            l = float(lj.sum())
            if not np.isfinite(l):
                return (np.inf, None) if need else np.inf
            if need == 0:
                return l
            dldf = lf + a * Vf
        else:
            if not (np.isfinite(V.sum() + f.sum()) and V.min() > 0):
                return (np.inf, None) if need else np.inf
            res = self.y - f
            l = float(np.sum(res * res / V + np.log(V)))
            if need == 0:
                return l
            a = 1.0 / V - res * res / (V * V)
            dldf = -2.0 * res / V + a * Vf
        out = {"f": f, "V": V, "Vf": Vf, "dldf": dldf, "dpsi": Vpsi.T @ a, "J": J}
        if need == 1:
            out["dlogq"], out["dw"] = self._x_pull(r, dldf)
        else:
            out["G"] = r[5]
            if self.nonnormal:
                out["w"] = _censored_weights(self, f, psi)
        return l, out

    def fit_eta(self, x, Oinv, eta0, *, tol=1e-10, max_iter=60):
        """The mode of the subject's posterior in eta (Fisher scoring with a backtracking line
        search).  Returns (eta, l_data + eta' Oinv eta, M, pieces) or None when it fails."""
        eta = np.array(eta0, dtype=float)
        q = eta.shape[0]
        l, out = self.data_term(x, eta, need=2)
        if out is None and np.any(eta != 0):
            eta = np.zeros(q)
            l, out = self.data_term(x, eta, need=2)
        if out is None:
            return None
        for _ in range(max_iter):
            obj = l + eta @ Oinv @ eta
            M = information(out, Oinv)
            grad = out["G"].T @ out["dldf"] + 2.0 * Oinv @ eta
            try:
                step = -np.linalg.solve(2.0 * M, grad)
            except np.linalg.LinAlgError:
                step = -grad * 1e-3
            big = float(np.max(np.abs(step))) if q else 0.0
            if big > MAX_ETA_STEP:  # (a step of 1e6 from a poor start: its trial points overflow)
                step = step * (MAX_ETA_STEP / big)
            dec = -grad @ step
            if dec < tol:
                return eta, obj, M, out
            alpha = 1.0
            while alpha > 1e-10:
                e1 = eta + alpha * step
                l1 = self.data_term(x, e1, need=0)
                obj1 = l1 + e1 @ Oinv @ e1
                if obj1 <= obj - 1e-4 * alpha * dec:
                    break
                alpha *= 0.5
            else:
                return eta, obj, M, out  # no descent possible: at the mode to rounding
            eta = e1
            l, out = self.data_term(x, eta, need=2)
            if out is None:
                return None
        return eta, l + eta @ Oinv @ eta, information(out, Oinv), out


_log = logging.getLogger("smallchains.pk")


BLQ_RULES = ("m1", "m3", "m4")


def censoring(subject, blq, lloq):
    """(code, LLOQ, y) for the observations a fit of ``subject`` keeps under the BLQ rule ``blq``
    (pk/_censored.py's codes; LLOQ NaN where not used; y = LLOQ on censored records).  The LLOQ
    comes from ``lloq`` (a number), else the data's LLOQ column, else the BLQ records' DV (the
    convention of nlmixr2 and Monolix); one that is missing, or not > 0 under M4, is an error
    naming the subject and time, as is an observation <= 0 under M4."""
    flag = np.asarray(subject.blq) != 0
    if blq == "m1":
        keep = ~flag
        return (
            np.zeros(int(keep.sum()), dtype=np.int64),
            np.full(int(keep.sum()), np.nan),
            subject.dv[keep].astype(float),
        )
    n = flag.shape[0]
    y = subject.dv.astype(float).copy()
    if lloq is not None:
        lim, source = np.full(n, float(lloq)), f"lloq={lloq!r}"
    elif subject.lloq is not None:
        lim, source = subject.lloq.astype(float).copy(), "the LLOQ column"
    else:
        lim, source = y.copy(), "the DV of the BLQ record (no LLOQ column, no `lloq`)"
    code = np.zeros(n, dtype=np.int64)
    code[flag] = M3 if blq == "m3" else M4_CENSORED
    if blq == "m4":
        code[~flag] = M4_OBSERVED
    for j in np.flatnonzero(flag):
        if not np.isfinite(lim[j]) or (blq == "m4" and not lim[j] > 0):
            need = "a number > 0 (M4)" if blq == "m4" else "a number"
            raise ValueError(
                f"subject {subject.id}, time {subject.obs_time[j]:g}: a BLQ observation's LLOQ must be {need}, and "
                f"{source} gives {lim[j]:g}; give fit(..., lloq=<number>) or an LLOQ column"
            )
    if blq == "m4":
        bad = np.flatnonzero(~flag & ~(y > 0))
        if bad.size:
            j = int(bad[0])
            raise ValueError(
                f"subject {subject.id}, time {subject.obs_time[j]:g}: DV {y[j]:g} is not > 0, but M4 conditions "
                "every observation on Y > 0 (a positive quantity); use blq='m3'"
            )
    lim = np.where(flag, lim, np.nan)
    y[flag] = lim[flag]
    return code, lim, y


def _inverse_lower(L):
    """L^-1 of a small lower-triangular matrix with a positive diagonal (forward substitution:
    SciPy's solve_triangular costs more in argument checks than the work at these sizes)."""
    q = L.shape[0]
    Li = np.zeros_like(L)
    for i in range(q):
        Li[i, i] = 1.0 / L[i, i]
        for j in range(i):
            Li[i, j] = -(L[i, j:i] @ Li[j:i, j]) / L[i, i]
    return Li


def _use_analytic(structural, analytic):
    """Whether subjects are solved exactly (pk/analytic.py): ``analytic`` None means when the model is
    linear; True requires it."""
    if analytic is None:
        return structural.linear is not None
    if analytic and structural.linear is None:
        raise ValueError(
            f"analytic=True, but model {structural.name!r} declares no rate matrix (CompartmentModel(..., "
            "linear=rates)): only linear models have exact solutions; leave `analytic` out"
        )
    return bool(analytic)


def _ids(ids, k=8):
    ids = list(ids)
    return ", ".join(str(i) for i in ids[:k]) + (f" and {len(ids) - k} more" if len(ids) > k else "")


def warn_data_use(model, data, skipped, time_varying="nocb", kept_baseline=(), blq="m1"):
    """Warn (DataWarning) about every datum a fit leaves out or reads differently from the file:
    subjects with nothing to fit, BLQ observations under M1 (left out), and covariates
    that change within a subject but are held at its first value (``time_varying="baseline"``, or
    the subjects ``kept_baseline``: dose parameters with time-varying covariates)."""
    if skipped:
        warnings.warn(
            f"{len(skipped)} subject(s) have no observation to fit (every record MDV = 1"
            f"{' or BLQ = 1 under M1' if blq == 'm1' else ''}) "
            f"and are left out of the fit: ID {_ids(skipped)}",
            DataWarning,
            stacklevel=3,
        )
    n_blq = sum(int(np.sum(np.asarray(s.blq) != 0)) for s in data.subjects if s.id not in skipped)
    if n_blq and blq != "m1":
        _log.info("%d BLQ observation(s) enter the likelihood as censored (%s)", n_blq, blq.upper())
    elif n_blq:
        who = [s.id for s in data.subjects if s.id not in skipped and np.any(np.asarray(s.blq) != 0)]
        warnings.warn(
            f"{n_blq} observation(s) flagged BLQ = 1 are left out of the likelihood (M1; fit(..., "
            f"blq='m3') keeps them as censored): ID {_ids(who)}",
            DataWarning,
            stacklevel=3,
        )
    if kept_baseline:
        warnings.warn(
            f"covariates the model reads change within subject(s) {_ids(kept_baseline)}, which have "
            "doses with dose parameters (ALAGn, Fn, Rn, Dn): time-varying covariates and dose parameters "
            "together are not supported yet, so these subjects keep their first covariate values",
            DataWarning,
            stacklevel=3,
        )
    if time_varying != "baseline":
        return
    names = set().union(*(s.covariates for s in data.subjects)) if data.subjects else set()
    for c in model.covariates_read(sorted(names)):
        varying = []
        for s in data.subjects:
            if c in s.covariates:
                v = np.asarray(s.covariates[c][1], dtype=float)
                v = v[np.isfinite(v)]
                if v.size > 1 and np.any(v != v[0]):
                    varying.append(s.id)
        if varying:
            warnings.warn(
                f"covariate {c!r} changes within subject(s) {_ids(varying)}; with time_varying="
                f"'baseline' the fit uses each subject's first value (the default 'nocb' changes the "
                f"parameters within the solve, as NONMEM does)",
                DataWarning,
                stacklevel=3,
            )


class Problem:
    """A population model bound to a data set: one evaluator per subject with observations."""

    def __init__(
        self,
        model,
        data,
        *,
        rtol=1e-8,
        atol=1e-10,
        solver=None,
        ss_tol=None,
        threads=None,
        controller=None,
        inner_tol=1e-10,
        time_varying="nocb",
        analytic=None,
        blq="m1",
        lloq=None,
    ):
        from .data import Population

        if not isinstance(data, Population):
            raise TypeError(f"`data` must be a sc.pk.Population from sc.pk.read_data, got {type(data).__name__}")
        self.model = model
        self.data = data
        if blq not in BLQ_RULES:
            raise ValueError(f"`blq` must be one of {BLQ_RULES} (Beal's M1, M3, M4), got {blq!r}")
        if lloq is not None and (isinstance(lloq, bool) or not isinstance(lloq, int | float) or not np.isfinite(lloq)):
            raise ValueError(f"`lloq` must be a number (or None: the LLOQ column or the BLQ records' DV), got {lloq!r}")
        #: the BLQ rule (pk/_censored.py) and the LLOQ given
        self.blq, self.lloq = blq, lloq
        self.inner_tol = inner_tol  # FOCE-I's inner loop stops when the Fisher-scoring decrement is below it
        X, Z, self.covariate_refs = model.covariate_design(data)  # (a Population: its text columns name errors)
        self.analytic = _use_analytic(model.structural, analytic)
        self.subjects = []
        self.skipped = []
        check = True
        kept = []
        for i, s in enumerate(data.subjects):
            if s.n_obs == 0 or (blq == "m1" and not np.any(np.asarray(s.blq) == 0)):
                self.skipped.append(s.id)
                continue
            kept.append(i)
            self.subjects.append(
                SubjectEval(
                    model,
                    s,
                    X[i],
                    Z[i],
                    rtol=rtol,
                    atol=atol,
                    solver=solver,
                    ss_tol=ss_tol,
                    check=check,
                    controller=controller,
                    time_varying=check_rule(time_varying),
                    refs=self.covariate_refs,
                    analytic=self.analytic,
                    blq=blq,
                    lloq=lloq,
                )
            )
            check = False
        if not self.subjects:
            raise ValueError("no subject has an observation (MDV = 0, BLQ = 0) to fit")
        warn_data_use(
            model, data, self.skipped, time_varying, [s.subject.id for s in self.subjects if s.tv_baseline], blq
        )
        if self.analytic:
            ode = [s.subject.id for s in self.subjects if not s.analytic]
            if ode:
                _log.info(
                    "%d subject(s) (ID %s) solved by the ODE solver, not exactly: doses that move with "
                    "dose parameters (ALAG, F, R, D) are not in the exact solutions yet",
                    len(ode),
                    _ids(ode),
                )
        self.n_obs = sum(s.n_obs for s in self.subjects)
        #: the observations that enter by a density (not censored): the log 2 pi constants of -2 log L
        self.n_density = sum(int(np.sum((s.code != M3) & (s.code != M4_CENSORED))) for s in self.subjects)
        #: whether any observation's term is not the normal density's (M3, M4): FOCE-I refuses
        self.nonnormal = any(s.nonnormal for s in self.subjects)
        self.N = len(self.subjects)
        # the batched form of every subject's log q = log theta + C beta + E eta, and the compiled
        # data terms' outputs, a row per subject (see _compiled_terms)
        self._X = X[kept]
        self._B = np.zeros((len(model.covariates), len(model.theta_names)))
        for j, (k, _, _) in enumerate(model.covariates):
            self._B[j, k] = 1.0
        n_p = self.subjects[0].gf.m
        self._P = np.zeros((self.N, n_p))
        self._GP = np.zeros((self.N, n_p))
        self._RES = np.zeros((self.N, 1 + len(model.error.names)))
        self._pool = None
        self._od_cache = None  # (Omega's parameters, omega_inverse_derivatives there)
        self.set_threads(1 if threads is None else threads)
        #: the compiled FOCE-I step (pk/_foce.py) over the subjects it covers, or None
        self.compiled_foce = self._compiled_foce()

    def _compiled_foce(self):
        """The compiled FOCE-I step over the subjects it covers (its ``index``):
        :class:`PopulationFOCE` when the subjects are solved exactly, :class:`ODESubjects` when
        by the ODE solver; or None with the reason logged when it covers none.  Not covered
        (NumPy step): steady states, time-varying covariates, dose parameters, non-ratio outputs,
        an ``individual`` that cannot be compiled, a covariate network."""
        m = self.model
        st = m.structural
        why = None
        if not SubjectEval.compiled:
            return None
        if m.covariate_network is not None or m.dose_index or m.n_eta == 0:
            why = "the model has a covariate network, dose parameters or no random effect"
        if why is None:
            pm, why = param_map(m)
        if why is not None:
            _log.info("FOCE-I's subject step runs in NumPy: %s", why)
            return None
        x0 = m.x0
        index, packed, ours, theirs = [], [], [], []
        for i, s in enumerate(self.subjects):
            c = pm.covariates(s.cov)
            if not (s.analytic == self.analytic and s.dosing is None and s._ratio is not None):
                continue
            if s.piecewise and not (s.analytic and s.tv is None):  # (ODE steady states; time-varying covariates)
                continue
            if c is None:
                continue
            ours.append(pm(s.logq(x0, np.zeros(m.n_eta)), c))
            theirs.append(s.params(x0, np.zeros(m.n_eta), jac=False)[0][: s.n_mech])
            index.append(i)
            packed.append((s.gf, s.obs, *s._ratio, c))
        if not index:
            return None
        if not np.allclose(np.array(ours), np.array(theirs), rtol=1e-12, atol=0.0):
            _log.info("FOCE-I's subject step runs in NumPy: the compiled `individual` differs from the function")
            return None
        if len(index) < self.N:
            _log.info(
                "FOCE-I's subject step runs in NumPy for %d subject(s) (steady states, time-varying covariates "
                "or dose parameters) and compiled for %d",
                self.N - len(index),
                len(index),
            )
        kind = ("additive", "proportional", "combined").index(m.error.kind)
        if self.analytic:
            fa = np.array(
                addresses(st.linear, RATES_SIG) + addresses(st.linear, RATESZ_SIG) + tuple(pm.addr), dtype=np.int64
            )
            cf = PopulationFOCE(packed, m.E, fa, kind, len(m.error.names), st.n_states, st.n_params)
        else:
            cf = ODESubjects(packed, m.E, pm.addr, kind, len(m.error.names), st.n_params)
        cf.index = np.array(index)
        return cf

    def set_compiled(self, x):
        """Give the compiled step its subjects' log q0, the log sigmas and the network weights at ``x``."""
        m = self.model
        cf = self.compiled_foce
        cf.set(self.logq0(x)[cf.index], x[m.blocks["psi"]], x[m.blocks["w"]])

    @property
    def uncovered(self):
        """Indices of the subjects the compiled FOCE-I step does not cover (they take the NumPy step)."""
        cf = self.compiled_foce
        return list(range(self.N)) if cf is None else sorted(set(range(self.N)) - set(cf.index.tolist()))

    @property
    def design(self):
        """(N, n_beta) the subjects' covariate design: log q_k = log theta_k + sum_j design[i, j]
        beta_j over the covariate effects j on parameter k (+ E eta) (read-only)."""
        v = self._X.view()
        v.flags.writeable = False
        return v

    def linear_effect_bounds(self, margin=0.01):
        """{index in x: (lower, upper)}: each linear covariate effect's beta kept where 1 + beta X
        >= ``margin`` for every subject's design value X (log(1 + beta X) is defined there)."""
        m = self.model
        out = {}
        for j in np.flatnonzero(m.linear_effects):
            X = self._X[:, j]
            hi_x, lo_x = float(X.max()), float(X.min())
            lo = (margin - 1.0) / hi_x if hi_x > 0 else -np.inf
            hi = (margin - 1.0) / lo_x if lo_x < 0 else np.inf
            out[m.blocks["beta"].start + int(j)] = (lo, hi)
        return out

    def logq0(self, x):
        """(N, n_theta) every subject's log theta + C beta (the compiled FOCE-I's subjects: no network)."""
        m = self.model
        return x[m.blocks["theta"]] + m.effect_terms(self._X, x[m.blocks["beta"]]) @ self._B

    def set_threads(self, threads):
        """Spread the subjects over ``threads`` threads (each subject owns its buffers)."""
        self.close()
        self.threads = max(1, int(threads))
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    def predictions(self, x, etas, directions=False):
        """Every subject's (f, V, G) at ``x`` and its row of ``etas`` (None: zeros): predictions
        at its observations, their residual variances (not checked: may be <= 0 or not finite)
        and, with ``directions``, G = df/deta (else None); None for a subject whose solve fails.
        One compiled call per thread for the subjects the compiled FOCE-I step covers, the NumPy
        path for the others and for any whose compiled prediction is not finite with V > 0."""
        m = self.model
        q = m.n_eta
        etas = np.zeros((self.N, q)) if etas is None else np.asarray(etas, dtype=float).reshape(self.N, q)
        out = [None] * self.N
        cf = self.compiled_foce
        rest = list(range(self.N))
        if cf is not None and cf.exact:
            ix = cf.index
            self.set_compiled(x)
            n_o = int(cf.ooff[-1])
            buf = (np.zeros(n_o), np.zeros(n_o), np.zeros((n_o if directions else 0, q)), np.zeros(len(ix)))
            E = np.ascontiguousarray(etas[ix])
            self.each(
                lambda c, lo, hi: cf.predictions((c, lo, hi), E, int(bool(directions)), buf), cf.chunks(self.threads)
            )
            F, V, G, OK = buf
            for k, i in enumerate(ix):
                if OK[k]:
                    sl = slice(cf.ooff[k], cf.ooff[k + 1])
                    out[i] = (F[sl], V[sl], G[sl] if directions else None)
            rest = [i for i in range(self.N) if out[i] is None]
        psi = x[m.blocks["psi"]]

        def numpy_path(i):
            r = self.subjects[i].predict(x, etas[i], directions=directions)
            if r is None:
                return None
            return r[2], m.error.variance(r[2], psi)[0], r[5] if directions else None

        for i, r in zip(rest, self.each(numpy_path, rest)):
            out[i] = r
        return out

    def diagnose(self, x):
        """None when every subject's objective is finite at ``x`` (eta = 0), else a message why not."""
        m = self.model
        pr = self.predictions(x, None)

        def fine(s, r):
            if r is None or not np.isfinite(r[0].sum() + r[1].sum()):
                return False
            if not s.nonnormal:
                return r[1].min() > 0
            return np.isfinite(s.data_term(x, np.zeros(m.n_eta)))

        if all(fine(s, r) for s, r in zip(self.subjects, pr, strict=True)):
            return None
        psi = x[m.blocks["psi"]]
        for s in self.subjects:
            r = s.predict(x, np.zeros(m.n_eta))
            if r is None:
                p, _ = s.params(x, np.zeros(m.n_eta), jac=False)
                return (
                    f"subject {s.subject.id}: the ODE solve fails at the initial values "
                    f"({dict(zip(m.structural.params, np.round(p[: s.n_mech], 6)))})"
                )
            f = r[2]
            if not np.all(np.isfinite(f)):
                j = int(np.flatnonzero(~np.isfinite(f))[0])
                return f"subject {s.subject.id}, time {s.t[j]:g}: the prediction is {f[j]}"
            V, _, _ = m.error.variance(f, psi)
            dens = (s.code != M3) & (s.code != M4_CENSORED)
            if np.any((V <= 0) & dens):
                j = int(np.flatnonzero((V <= 0) & dens)[0])
                return (
                    f"subject {s.subject.id}, time {s.t[j]:g}: the prediction is {f[j]:g}, so the "
                    f"{m.error.kind} error model gives it zero variance (an observation there has zero "
                    "likelihood); use error='combined', or leave out observations where the model "
                    "predicts exactly 0 (e.g. before the first dose)"
                )
            if s.nonnormal and not np.isfinite(s.data_term(x, np.zeros(m.n_eta))):
                return (
                    f"subject {s.subject.id}: a censored (BLQ) observation has probability 0 at the initial "
                    "values (a prediction above its LLOQ with zero residual variance); use error='combined'"
                )
        return None

    def each(self, fn, items=None):
        """[fn(item) for item in items] (a tuple item is spread over fn's arguments), over the
        threads: each thread takes the next item until none is left (one hand-off per thread,
        not per item; the compiled passes release the GIL)."""
        items = self.subjects if items is None else items

        def call(it):
            return fn(*it) if isinstance(it, tuple) else fn(it)

        if self._pool is None:
            return [call(it) for it in items]
        n = len(items)
        out = [None] * n
        ticket = itertools.count()  # (next() on it is atomic under the GIL)

        def work():
            while True:
                i = next(ticket)
                if i >= n:
                    return
                out[i] = call(items[i])

        futures = [self._pool.submit(work) for _ in range(self.threads - 1)]
        try:
            work()
        finally:  # (no worker may still run on a subject's buffers once this returns or raises)
            for f in futures:
                f.exception()
        for f in futures:
            f.result()
        return out

    def close(self):
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    # ------------------------------------------------------------------ priors

    def weight_prior(self, x):
        """|w|^2 / s^2 over the network weights (structural, then covariate network) and its gradient."""
        m = self.model
        w = np.concatenate([x[m.blocks["w"]], x[m.blocks["wc"]]])
        if not w.size or m.weight_prior is None:
            return 0.0, np.zeros(w.size)
        s2 = m.weight_prior**2
        return float(w @ w / s2), 2.0 * w / s2

    def _compiled_terms(self, x, etas, need):
        """Every subject's data term by its compiled call (concentration outputs), with the
        per-subject algebra done once for all subjects: (sum of data terms, and with ``need`` its
        gradient over x and the (N, q) gradient over the etas); None when the compiled path does
        not apply, (inf, ...) when a subject's objective is not finite."""
        if not SubjectEval.compiled or self.model.dose_index:
            return None
        cf = self.compiled_foce
        if cf is not None and cf.exact and len(cf.index) == self.N:
            return self._exact_terms(x, etas, need)
        if any(s._fast is None for s in self.subjects):
            return None
        m = self.model
        cn = m.covariate_network
        LOGQ = x[m.blocks["theta"]] + m.effect_terms(self._X, x[m.blocks["beta"]]) @ self._B + etas @ m.E.T
        if cn is not None:
            wc = np.ascontiguousarray(x[m.blocks["wc"]])
            for i, s in enumerate(self.subjects):
                LOGQ[i, m.cn_targets] += cn.chain(s.z, wc)
        PM, J = m.structural_params_all(LOGQ, [s.cov for s in self.subjects])
        nm = PM.shape[1]
        P, GP, RES = self._P, self._GP, self._RES
        P[:, :nm] = PM
        P[:, nm:] = x[m.blocks["w"]]
        gx = np.zeros(m.n_x)
        if not np.isfinite(P).all():
            return (np.inf, gx, np.zeros_like(etas)) if need else np.inf
        psi = np.ascontiguousarray(x[m.blocks["psi"]])
        subjects = self.subjects
        ok = self.each(lambda i: subjects[i].kernel(P[i], psi, GP[i], RES[i], bool(need)), range(self.N))
        if not all(ok):
            return (np.inf, gx, np.zeros_like(etas)) if need else np.inf
        total = float(RES[:, 0].sum())
        if not need:
            return total
        DLOGQ = np.einsum("nmt,nm->nt", J, GP[:, :nm])
        self._chain_log_q(x, gx, DLOGQ, RES[:, 1:])
        gx[m.blocks["w"]] = GP[:, nm:].sum(axis=0)
        if cn is not None:
            for i, s in enumerate(subjects):
                gx[m.blocks["wc"]] += s.covariate_network_grad(x, DLOGQ[i])
        return total, gx, DLOGQ @ m.E

    def _exact_terms(self, x, etas, need):
        """:meth:`_compiled_terms` for subjects solved exactly, by the compiled FOCE-I step's
        batched data-term kernel (pk/_foce.py): every subject covered, no network weights."""
        m = self.model
        cf = self.compiled_foce
        self.set_compiled(x)
        N = self.N
        out = (np.zeros(N), np.zeros((N, len(m.theta_names))), np.zeros((N, cf.n_psi)), np.zeros(N))
        E = np.ascontiguousarray(etas, dtype=np.float64)
        self.each(lambda c, lo, hi: cf.data_terms((c, lo, hi), E, int(bool(need)), out), cf.chunks(self.threads))
        L, DLQ, DPSI, OK = out
        gx = np.zeros(m.n_x)
        if not OK.all():
            return (np.inf, gx, np.zeros_like(etas)) if need else np.inf
        total = float(L.sum())
        if not need:
            return total
        self._chain_log_q(x, gx, DLQ, DPSI)
        return total, gx, DLQ @ m.E

    def data_terms(self, x, etas):
        """Every subject's data term l_i = -2 log p(y_i | eta_i) without 2 pi, at ``x`` and its row
        of ``etas`` (N, q): an (N,) array, inf where the solve fails or l_i is not finite.  One
        compiled call per thread where the compiled step solves every subject exactly, else each
        subject's :meth:`SubjectEval.data_term` (compiled for ODE subjects with concentration
        outputs).  SAEM's Metropolis-Hastings steps call this."""
        m = self.model
        etas = np.ascontiguousarray(np.asarray(etas, dtype=np.float64).reshape(self.N, m.n_eta))
        cf = self.compiled_foce
        if SubjectEval.compiled and not m.dose_index and cf is not None and cf.exact and len(cf.index) == self.N:
            self.set_compiled(x)
            N = self.N
            out = (np.zeros(N), np.zeros((N, len(m.theta_names))), np.zeros((N, cf.n_psi)), np.zeros(N))
            self.each(lambda c, lo, hi: cf.data_terms((c, lo, hi), etas, 0, out), cf.chunks(self.threads))
            L, OK = out[0], out[3]
        else:
            L = np.array(self.each(lambda s, e: s.data_term(x, e, 0), list(zip(self.subjects, etas))), dtype=float)
            OK = np.ones(self.N)
        return np.where((OK != 0) & np.isfinite(L), L, np.inf)

    def _chain_log_q(self, x, out, DLQ, DPSI, rows=None):
        """Chain the subjects' derivatives over their log q0 = log theta + C beta (DLQ, a row
        per subject) and over the log sigmas (DPSI) into x's theta, beta and psi entries: ``out``
        (n_x,) gets the sums over subjects, ``out`` (N, n_x) a row per subject (those of the
        subjects ``rows``, default all)."""
        m = self.model
        X = self._X if rows is None else self._X[rows]
        DB = m.effect_derivatives(X, x[m.blocks["beta"]]) * (DLQ @ self._B.T)
        blocks = (m.blocks["theta"], m.blocks["beta"], m.blocks["psi"])
        if out.ndim == 1:
            for b, d in zip(blocks, (DLQ, DB, DPSI), strict=True):
                out[b] = d.sum(axis=0)
            return
        r = slice(None) if rows is None else rows
        for b, d in zip(blocks, (DLQ, DB, DPSI), strict=True):
            out[r, b] = d

    # ------------------------------------------------------------------ naive pooled

    def pooled(self, x, need=1):
        m = self.model
        pen, gw = self.weight_prior(x)
        r = self.data_sum(x, np.zeros((self.N, m.n_eta)), need)
        if not need:
            return r + pen
        g = r[1]
        g[m.blocks["w"]] += gw[: m.n_weights]
        g[m.blocks["wc"]] += gw[m.n_weights :]
        return r[0] + pen, g

    def data_sum(self, x, etas, need=1):
        """sum_i l_i(eta_i) at ``x`` and the (N, q) ``etas``, and with ``need`` its gradient over
        x (random effects held): the data part of the pooled and MAP objectives, without priors
        (the compiled data terms where they apply).  inf (and a zero gradient) when a subject fails."""
        m = self.model
        etas = np.asarray(etas, dtype=float).reshape(self.N, m.n_eta)
        r = self._compiled_terms(x, etas, need)
        if r is not None:
            return r if not need else (r[0], r[1])
        res = self.each(lambda s, e: s.data_term(x, e, need), list(zip(self.subjects, etas)))
        if not need:
            return float(sum(res))
        g = np.zeros(m.n_x)
        total = 0.0
        for s, (l, out) in zip(self.subjects, res):
            if out is None:
                return np.inf, g
            total += l
            s.add_x_grad(g, x, out["dlogq"], out["dw"], out["dpsi"])
        return total, g

    # ------------------------------------------------------------------ joint MAP

    def profiled_omega(self, etas, C):
        """Omega = mean(eta eta') + C (its blocks only: the diagonal of diagonal models; the
        maximiser over block-diagonal matrices, as the likelihood factorises over the blocks)."""
        Om = etas.T @ etas / self.N + C
        return np.where(self.model.omega_mask, Om, 0.0)

    def map_objective(self, x, etas, need=1, C=None):
        """Joint -2 log posterior over x and the etas (N, q); with ``need`` its gradients (gx, getas).

        With ``C`` (q, q), Omega is profiled: Omega = mean(eta eta') + C, the EM update with C the
        mean posterior covariance of the etas, so the prior term cannot collapse (Omega >= C);
        Omega's entries of x are then ignored."""
        m = self.model
        if C is not None:
            Om = self.profiled_omega(etas, C)
            L = np.linalg.cholesky(Om)
        else:
            with np.errstate(over="ignore"):
                L = m.omega_factor(x)
        if not (np.isfinite(L).all() and np.all(np.diag(L) > 0) and np.isfinite(etas).all()):
            return (np.inf, np.zeros(m.n_x), np.zeros_like(etas)) if need else np.inf
        Z = solve_triangular(L, etas.T, lower=True)  # (q, N): L^-1 eta_i
        logdet = 2.0 * np.sum(np.log(np.diag(L)))
        prior = float(np.sum(Z * Z)) + self.N * logdet
        pen, gw = self.weight_prior(x)
        r = self._compiled_terms(x, etas, need)
        if r is not None and not need:
            return r + prior + pen
        if r is not None:
            total, gx, ge = r
            total += prior + pen
        else:
            res = self.each(lambda s, e: s.data_term(x, e, need), list(zip(self.subjects, etas)))
            if not need:
                return float(sum(res)) + prior + pen
            gx = np.zeros(m.n_x)
            ge = np.zeros_like(etas)
            total = prior + pen
            for i, (s, (l, out)) in enumerate(zip(self.subjects, res)):
                if out is None:
                    return np.inf, gx, ge
                total += l
                s.add_x_grad(gx, x, out["dlogq"], out["dw"], out["dpsi"])
                ge[i] = m.E.T @ np.atleast_2d(out["dlogq"]).sum(axis=0)
        if not np.isfinite(total):
            return np.inf, gx, ge
        gx[m.blocks["w"]] += gw[: m.n_weights]
        gx[m.blocks["wc"]] += gw[m.n_weights :]
        # the Gaussian prior: d/deta_i = 2 L^-T z_i; d/dL = -2 L^-T Z Z^T, + N * 2 / L_kk on the diagonal
        LiT_Z = solve_triangular(L.T, Z, lower=False)  # (q, N): Omega^-1 eta_i
        ge += 2.0 * LiT_Z.T
        if C is not None:  # Omega(eta): + 2 Omega^-1 C Omega^-1 eta_i (diagonal models: C's diagonal)
            Cd = np.where(m.omega_mask, C, 0.0)
            ge += 2.0 * (solve_triangular(L.T, solve_triangular(L, Cd @ LiT_Z, lower=True), lower=False)).T
            return total, gx, ge
        dL = -2.0 * LiT_Z @ Z.T
        q = m.n_eta
        ob = m.blocks["omega"]
        if q:
            diag = np.diag(dL) * np.diag(L) + 2.0 * self.N
            gx[ob.start : ob.start + q] = diag
            if m.tril[0].size:
                gx[ob.start + q : ob.stop] = dL[m.tril]
        return total, gx, ge

    # ------------------------------------------------------------------ FOCE-I

    def omega_inverse_derivatives(self, x):
        """(Omega^-1, d Omega^-1 / d x_omega (n_omega, q, q), log|Omega|) from Omega's Cholesky
        factor L (d L^-1 = -L^-1 dL L^-1), or None when they are not finite."""
        m = self.model
        ob = m.blocks["omega"]
        key = x[ob].tobytes()  # (the gradient after an objective at the same Omega: computed once)
        if self._od_cache is None or self._od_cache[0] != key:
            self._od_cache = (key, self._omega_inverse_derivatives(x))
        return self._od_cache[1]

    def _omega_inverse_derivatives(self, x):
        m = self.model
        q = m.n_eta
        ob = m.blocks["omega"]
        with np.errstate(over="ignore"):
            L = m.omega_factor(x)
        if not (np.isfinite(L).all() and np.all(np.diag(L) > 0)):
            return None
        Linv = _inverse_lower(L)
        dOinv = np.empty((ob.stop - ob.start, q, q))
        rows, cols = np.r_[np.arange(q), m.tril[0]], np.r_[np.arange(q), m.tril[1]]
        for r in range(dOinv.shape[0]):
            a, b = rows[r], cols[r]
            dL = np.zeros((q, q))
            dL[a, b] = L[a, b] if a == b else 1.0  # (log diagonal; plain off-diagonal entries)
            dLinv = -Linv @ dL @ Linv
            dOinv[r] = dLinv.T @ Linv + Linv.T @ dLinv
        Oinv = Linv.T @ Linv
        if not (np.isfinite(Oinv).all() and np.isfinite(dOinv).all()):
            return None
        return Oinv, dOinv, 2.0 * float(np.sum(np.log(np.diag(L))))

    def foce_gradient(self, x, res, h=1e-4, per_subject=False):
        """d OFV / dx at ``x`` from ``foce(x)``'s per-subject results ``res`` (see
        :meth:`SubjectEval.foce_gradient`); None when a subject's solve fails.  With
        ``per_subject``, (the gradient, (N, n_x) each subject's term's gradient): the OFV is their
        sum, and their outer products make the covariance step's S matrix."""
        m = self.model
        od = self.omega_inverse_derivatives(x)
        if od is None or any(r is None for r in res):
            return None
        Oinv, dOinv, _ = od
        cf = self.compiled_foce
        G = np.zeros((self.N, m.n_x))
        done = np.zeros(self.N, dtype=bool)
        if cf is not None and all(res[i][3].get("compiled") for i in cf.index):
            ix = cf.index
            self.set_compiled(x)
            ETA = np.ascontiguousarray([res[i][0] for i in ix])
            n_t, q = m.E.shape
            out = (
                np.zeros((len(ix), n_t)),
                np.zeros((len(ix), cf.n_psi)),
                np.zeros((len(ix), q, q)),
                np.zeros(len(ix)),
                np.zeros((len(ix), cf.n_w)),
            )
            self.each(lambda c, lo, hi: cf.gradients((c, lo, hi), Oinv, ETA, h, out), cf.chunks(self.threads))
            GLQ, GPSI, SS, OK, GW = out
            if not OK.all():
                return None
            self._chain_log_q(x, G, GLQ, GPSI, rows=ix)
            G[ix, m.blocks["w"]] = GW
            G[ix, m.blocks["omega"]] = np.einsum("rab,nab->nr", dOinv, SS)
            done[ix] = True
        rest = np.flatnonzero(~done)
        gs = self.each(lambda i: self.subjects[i].foce_gradient(x, res[i], Oinv, dOinv, h), list(rest))
        if any(g is None for g in gs):
            return None
        if len(rest):
            G[rest] = np.array(gs)
        ob = m.blocks["omega"]
        G[:, ob.start : ob.start + m.n_eta] += 2.0  # each subject's log|Omega| = 2 sum log L_kk
        g = G.sum(axis=0)
        if not np.isfinite(g).all():
            return None
        return (g, G) if per_subject else g

    def foce_value_and_gradient(self, x, etas0):
        """(OFV, etas, d OFV / dx) at ``x``, the modes warm-started at ``etas0``: :meth:`foce`
        and :meth:`foce_gradient` together, in one compiled call per thread when the compiled
        step covers every subject (else the two calls).  (inf, etas0, None) when the OFV is not
        finite, (OFV, etas, None) when only its gradient fails."""
        cf = self.compiled_foce
        if cf is None or len(cf.index) != self.N:
            v, etas, res = self.foce(x, etas0)
            return (v, etas, None) if not np.isfinite(v) else (v, etas, self.foce_gradient(x, res))
        m = self.model
        q, n_t = m.n_eta, m.E.shape[0]
        od = self.omega_inverse_derivatives(x)
        if od is None:
            return np.inf, etas0.copy(), None
        Oinv, dOinv, logdetO = od
        self.set_compiled(x)
        N = self.N
        E0 = np.ascontiguousarray(etas0, dtype=float)
        out = (
            np.zeros((N, q)),
            np.zeros((N, q, q)),
            np.zeros((N, 5)),
            np.zeros((0, q)),
            np.zeros((N, n_t)),
            np.zeros((N, cf.n_psi)),
            np.zeros((N, q, q)),
            np.zeros(N),
            np.zeros((N, cf.n_w)),
        )
        self.each(
            lambda c, lo, hi: cf.modes_gradients((c, lo, hi), Oinv, E0, self.inner_tol, 1e-4, out),
            cf.chunks(self.threads),
        )
        ETA, _, RES, _, GLQ, GPSI, SS, OK, GW = out
        if np.any(RES[:, 1] != 0.0) or np.any(RES[:, 4] <= 0.0):
            return np.inf, etas0.copy(), None
        ofv = float(RES[:, 0].sum() + RES[:, 3].sum() + N * logdetO)
        if not np.isfinite(ofv):
            return np.inf, etas0.copy(), None
        if not OK.all():
            return ofv, ETA, None
        G = np.zeros(m.n_x)
        self._chain_log_q(x, G, GLQ, GPSI)
        G[m.blocks["w"]] = GW.sum(axis=0)
        G[m.blocks["omega"]] = np.einsum("rab,ab->r", dOinv, SS.sum(axis=0))
        ob = m.blocks["omega"]
        G[ob.start : ob.start + q] += 2.0 * N  # each subject's log|Omega| = 2 sum log L_kk
        return (ofv, ETA, G) if np.isfinite(G).all() else (ofv, ETA, None)

    def foce(self, x, etas0=None):
        """(OFV, etas, per-subject (l, M, pieces)) at ``x``; OFV = inf if a subject fails."""
        m = self.model
        q = m.n_eta
        etas0 = np.zeros((self.N, q)) if etas0 is None else etas0
        with np.errstate(over="ignore"):
            L = m.omega_factor(x)
        if not (np.isfinite(L).all() and np.all(np.diag(L) > 0)):  # (an optimiser's trial step)
            return np.inf, etas0.copy(), [None] * self.N
        Linv = _inverse_lower(L)
        Oinv = Linv.T @ Linv
        if not np.isfinite(Oinv).all():
            return np.inf, etas0.copy(), [None] * self.N
        logdetO = 2.0 * np.sum(np.log(np.diag(L)))
        cf = self.compiled_foce
        res = [None] * self.N
        logdets = {}
        if cf is not None:
            ix = cf.index
            self.set_compiled(x)
            E0 = np.ascontiguousarray(etas0[ix])
            out = (np.zeros_like(E0), np.zeros((len(ix), q, q)), np.zeros((len(ix), 5)), np.zeros((cf.ooff[-1], q)))
            self.each(lambda c, lo, hi: cf.modes((c, lo, hi), Oinv, E0, self.inner_tol, out), cf.chunks(self.threads))
            ETA, MS, RES, GA = out
            for k, i in enumerate(ix):
                if RES[k, 1] == 0.0:
                    res[i] = (ETA[k], RES[k, 0], MS[k], {"compiled": True, "G": GA[cf.ooff[k] : cf.ooff[k + 1]]})
                    logdets[i] = (RES[k, 4], RES[k, 3])
        rest = self.uncovered
        for i, r in zip(
            rest, self.each(lambda i: self.subjects[i].fit_eta(x, Oinv, etas0[i], tol=self.inner_tol), rest)
        ):
            res[i] = r
        etas = np.zeros((self.N, q))
        ofv = 0.0
        for i, r in enumerate(res):
            if r is None:
                return np.inf, etas0.copy(), res
            eta, obj, M, _ = r
            sign, logdetM = logdets[i] if i in logdets else np.linalg.slogdet(M)
            if sign <= 0:
                return np.inf, etas0.copy(), res
            etas[i] = eta
            ofv += obj + logdetO + logdetM
        if not np.isfinite(ofv):
            return np.inf, etas0.copy(), res
        return float(ofv), etas, res
