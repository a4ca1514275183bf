"""SAEM: stochastic approximation expectation-maximisation, as Monolix and nlmixr2 run it.

The algorithm (Delyon, Lavielle & Moulines 1999, Ann. Statist. 27:94; Kuhn & Lavielle 2005,
Comput. Stat. Data Anal. 49:1020; the MCMC kernels of Lavielle's *Mixed Effects Models for the
Population Approach*, 2014, ch. 9) on the model log q_i = log theta + C_i beta + E eta_i,
eta_i ~ N(0, Omega).  The latent variables are phi_i, the log individual values of the
parameters with a random effect, in ``n_chains`` Markov chains per subject.  Each iteration k:

1. **Simulation** (E-step): Metropolis-Hastings moves of every chain of every subject, in
   Monolix's three kernels, ``kernels = (n1, n2, n3)`` times each: (1) a proposal from the prior
   N(mu_i, Omega), accepted on the likelihood ratio; (2) a random walk on all components,
   N(0, s^2 Omega), s adapted toward 40% acceptance; (3) a random walk on one component at a time,
   N(0, s_j^2 omega_j^2), each s_j adapted likewise.  The likelihood is the data term
   -2 log p(y_i | eta_i) of the fit's other methods (the compiled step where it applies).
2. **Stochastic approximation** of the complete-data sufficient statistics with step gamma_k:
   gamma_k = 1 for the ``n_explore`` iterations of the exploration phase, then 1/j in the
   j-th of the ``n_smooth`` iterations of the smoothing phase (nlmixr2's nBurn and nEm, Monolix's
   K1 and K2): s1_i = SA of the chains' mean phi_i, s2 = SA of sum_i phi_i phi_i'.
3. **Maximisation** (M-step), in closed form where the model is in the exponential family:
   the typical values and covariate effects of the parameters with a random effect by
   generalised least squares of s1 on the covariate design (weights Omega^-1; ordinary least
   squares per parameter when Omega is diagonal), then Omega = (s2 - sum_i (s1_i mu_i' +
   mu_i s1_i') + sum_i mu_i mu_i') / N (its diagonal for a diagonal Omega).  An additive or
   proportional residual error comes from the SA of sum (y - f)^2 or sum ((y - f)/f)^2 over the
   chains' predictions.  What has no sufficient statistic (a combined error; typical values and
   covariate effects of parameters without a random effect) is maximised numerically (L-BFGS on
   the chains' mean data term at fixed phi) and the SA is applied to the maximiser, as nlmixr2
   does for its combined error.
   During exploration, simulated annealing (Monolix's) keeps each variance of Omega and of the
   residual error at least ``anneal`` times its previous value, so that the chains explore
   before the variances settle.

After the last iteration the **OFV is FOCE-I's objective at the SAEM estimates** (NONMEM's
-2 log L without 2 pi, the modes re-found from the chains' conditional means), so SAEM fits
compare with FOCE-I fits (``ofv_kind = "FOCE-I"``); importance sampling of the marginal
likelihood is not implemented.  The **standard errors** are FOCE-I's covariance step (the
fit's ``covariance``: sandwich, R or S) at the SAEM estimates; the reported random effects are
the FOCE-I modes there.

``converged`` claims that the exploration phase reached a stationary regime: over its last half,
no parameter's trajectory has a linear trend with |z| > :data:`TREND_Z` (the trend's standard
error allows for the trajectory's lag-1 autocorrelation), and every chain ended with a finite
likelihood. Too short an exploration fails it (tested). Options (``pk.fit(..., method="saem",
method_options={...})``): ``n_explore`` (300), ``n_smooth`` (200), ``n_chains`` (None: Monolix's
rule, enough chains per subject for 50 subjects x chains), ``kernels`` ((2, 2, 2)), ``n_warmup``
(5 iterations of the kernels before the first M-step), ``anneal`` (0.95; 1 switches annealing
off). Seeded by the fit's ``seed``: the same seed gives the same estimates, whatever the number
of threads.

Not supported here (refused): network weights (structural or covariate networks), and a full
Omega with only some of its entries fixed.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize as _scipy_minimize

from ..laplace import laplace
from . import register
from .base import EstimationMethod
from .foce import Foce
from .laplace import Laplace
from .map import set_omega

#: ``converged`` requires every parameter's trend over the last half of the exploration phase
#: within this many standard errors
TREND_Z = 3.0
#: ``n_chains=None``: as many chains per subject as make the subjects x chains at least this
#: (Monolix's automatic rule)
MIN_SAMPLES = 50
#: the Metropolis-Hastings random walks adapt their scale toward this acceptance rate
TARGET_ACCEPT = 0.4


def trend_z(traj):
    """|z| of the linear trend of each column of ``traj`` (iterations x parameters): the OLS
    slope over its standard error, inflated by sqrt((1 + r) / (1 - r)) with r the residuals'
    lag-1 autocorrelation (an AR(1) process's effective sample size); 0 for a constant column."""
    n = traj.shape[0]
    t = np.arange(n) - (n - 1) / 2.0
    stt = float(t @ t)
    out = np.zeros(traj.shape[1])
    for k in range(traj.shape[1]):
        y = traj[:, k] - traj[:, k].mean()
        b = float(t @ y) / stt
        r = y - b * t
        s2 = float(r @ r) / max(n - 2, 1)
        if s2 <= 1e-28 * max(1.0, float(traj[:, k] @ traj[:, k]) / n):
            continue
        rho = float(r[1:] @ r[:-1]) / float(r @ r)
        rho = min(max(rho, 0.0), 0.99)
        se = math.sqrt(s2 / stt * (1 + rho) / (1 - rho))
        out[k] = abs(b) / se
    return out


@register
class Saem(EstimationMethod):
    """SAEM (Monolix's and nlmixr2's algorithm): see the module's documentation."""

    name = "saem"
    random_effects = True
    marginal = True  # (its covariance step is FOCE-I's, the fit's `covariance`)
    ofv_kind = "FOCE-I"
    options = {"n_explore": 300, "n_smooth": 200, "n_chains": None, "kernels": (2, 2, 2), "n_warmup": 5, "anneal": 0.95}

    def check(self, model):
        super().check(model)
        if model.n_weights or model.covariate_network is not None:
            raise ValueError(
                "method 'saem' does not estimate network weights (the model has a neural term or a "
                "covariate network): use 'foce' or 'map'"
            )
        ob = model.blocks["omega"]
        fx = model.fixed[ob]
        if model.tril[0].size and fx.any() and not fx.all():
            raise ValueError(
                f"method 'saem' with a {model.omega_kind} Omega fixes all of its entries or none; "
                f"fixed here: {[model.names[i] for i in np.flatnonzero(fx) + ob.start]}"
            )
        o = self.options

        def whole(k, lo):
            v = o[k]
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < lo:
                raise ValueError(f"method 'saem': option {k!r} must be a whole number >= {lo}, got {v!r}")

        whole("n_explore", 2)
        whole("n_smooth", 1)
        if o["n_chains"] is not None:
            whole("n_chains", 1)
        whole("n_warmup", 0)
        ks = o["kernels"]
        if (
            not isinstance(ks, tuple | list)
            or len(ks) != 3
            or not all(isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 0 for v in ks)
            or sum(ks) == 0
        ):
            raise ValueError(
                f"method 'saem': option 'kernels' must be three whole numbers >= 0 (not all 0), got {ks!r}"
            )
        a = o["anneal"]
        if not isinstance(a, int | float) or isinstance(a, bool) or not 0.0 < a <= 1.0:
            raise ValueError(f"method 'saem': option 'anneal' must be a number in (0, 1], got {a!r}")

    def fit(self, model, data, x0, setup):
        self._seed = setup.seed
        self._run_count = 0
        return super().fit(model, data, x0, setup)

    # ------------------------------------------------------------------ one run

    def run(self, P, x_init, opts, report):
        o = self.options
        seed = getattr(self, "_seed", 0)
        self._run_count = getattr(self, "_run_count", 0) + 1
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, self._run_count])
        threads = P.threads
        try:
            run = _Run(P, x_init.copy(), o, rng, report)
            P.set_threads(run.choose_threads())
            return run.go()
        finally:
            P.set_threads(threads)

    def ofv_kind_for(self, P):
        return "Laplace" if P.nonnormal else "FOCE-I"

    def _marginal(self, P):
        """The method whose objective and covariance step stand in for SAEM's: FOCE-I, or
        Laplace when observations are censored (M3, M4: FOCE-I refuses them)."""
        cls = Laplace if P.nonnormal else Foce
        return cls(map_omega=self.map_omega, covariance=self.covariance)

    def ofv(self, P, x, etas):
        """FOCE-I's OFV (Laplace's with censored observations) at the SAEM estimates (the modes
        searched from ``etas``)."""
        v, etas, _ = laplace(P, x, etas) if P.nonnormal else P.foce(x, etas)
        return v, etas

    def convergence(self, P, x, etas, run):
        """The run's stationarity claim (see the module's documentation)."""
        idx, _ = self.se_indices(P, x)
        return bool(run["stationary"]), run["stationarity"], None, idx

    def standard_errors(self, P, x, etas, H=None):
        """FOCE-I's (or Laplace's: :meth:`_marginal`) covariance step at the SAEM estimates."""
        return self._marginal(P).standard_errors(P, x, etas)

    def objective_gradient(self, P, x, etas):
        return self._marginal(P).objective_gradient(P, x, etas)


def _median_time(fn, k=5):
    """The median wall time of ``k`` calls of ``fn`` (after one untimed call)."""
    import time

    fn()
    ts = []
    for _ in range(k):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


class _Run:
    """One SAEM run: the chains, the statistics, the iterations."""

    def __init__(self, P, x, o, rng, report):
        self.P, self.x, self.o, self.rng, self.report = P, x, o, rng, report
        m = P.model
        self.m = m
        self.q = q = m.n_eta
        self.N = P.N
        self.rows = np.array([int(np.flatnonzero(m.E[:, j])[0]) for j in range(q)])
        free = ~m.fixed
        tb, bb, pb, ob = (m.blocks[k] for k in ("theta", "beta", "psi", "omega"))
        X = P.design  # (N, n_beta)
        # the GLS design of the random-effect parameters: mu_i = D_i c, c = their log theta and betas
        coef = []
        lin = m.linear_effects  # (log(1 + beta X): not linear in beta, maximised numerically)
        for j, k in enumerate(self.rows):
            coef.append((j, tb.start + k, None))
            for jj, (kk, _, _) in enumerate(m.covariates):
                if kk == k and not lin[jj]:
                    coef.append((j, bb.start + jj, jj))
        self.B = np.zeros((len(m.covariates), len(m.theta_names)))
        for jj, (kk, _, _) in enumerate(m.covariates):
            self.B[jj, kk] = 1.0
        D = np.zeros((self.N, q, len(coef)))
        for a, (j, _, jj) in enumerate(coef):
            D[:, j, a] = 1.0 if jj is None else X[:, jj]
        self.D = D
        self.coef_x = np.array([i for _, i, _ in coef], dtype=np.int64)
        self.coef_free = free[self.coef_x]
        # what has no sufficient statistic: parameters without a random effect (and their
        # covariate effects), the residual error unless additive or proportional alone
        eta_params = set(self.rows.tolist())
        others = [tb.start + k for k in range(len(m.theta_names)) if k not in eta_params]
        others += [bb.start + jj for jj, (kk, _, _) in enumerate(m.covariates) if kk not in eta_params or lin[jj]]
        others = [i for i in others if free[i]]
        psi = [i for i in range(pb.start, pb.stop) if free[i]]
        # (censored observations (M3, M4) have no residual to sum: the error is maximised numerically)
        self.closed_error = (
            bool(psi) and not others and m.error.kind in ("additive", "proportional") and not P.nonnormal
        )
        self.numeric = np.array(others + ([] if self.closed_error else psi), dtype=np.int64)
        self.psi_free = np.array(psi, dtype=np.int64)
        self.omega_fixed = m.fixed[ob]
        self.omega_all_fixed = bool(self.omega_fixed.all())
        n_chains = int(o["n_chains"]) if o["n_chains"] is not None else max(1, math.ceil(MIN_SAMPLES / self.N))
        mu = self.mu()
        self.phi = np.repeat(mu[None], n_chains, axis=0)  # (chains, N, q)
        self.l = np.full((n_chains, self.N), np.inf)
        self.s_rw = 1.0  # kernel 2's scale
        self.s_cw = np.ones(q)  # kernel 3's scales
        self.n_eval = 0

    def choose_threads(self):
        """1 or the fit's number of threads, whichever makes an iteration's population calls
        faster: the E-step's data terms and the numeric M-step's data sums with gradients, timed
        (medians of 5 calls each) and weighted by their counts per iteration (a thread hand-off
        costs more than a small population's data terms)."""
        P = self.P
        if P.threads == 1:
            return 1
        n1, n2, n3 = (int(v) for v in self.o["kernels"])
        n_e = n1 + n2 + n3 * self.q
        n_m = 11 if self.numeric.size else 0  # (L-BFGS's typical evaluations per M-step, measured)
        x, e = self.x, np.zeros((self.N, self.q))
        best, best_t = P.threads, np.inf
        for th in (P.threads, 1):
            P.set_threads(th)
            t = n_e * _median_time(lambda: P.data_terms(x, e))
            if n_m:
                t += n_m * _median_time(lambda: P.data_sum(x, e, 1))
            if t < best_t:
                best, best_t = th, t
        return best

    # ------------------------------------------------------------------ pieces

    def offset(self):
        """(N, q) the linear covariate effects' log(1 + beta X) in the random-effect parameters (0 without)."""
        m = self.m
        if not m.linear_effects.any():
            return np.zeros((self.N, self.q))
        T = m.effect_terms(self.P.design, self.x[m.blocks["beta"]])
        T[:, ~m.linear_effects] = 0.0
        return (T @ self.B)[:, self.rows]

    def mu(self):
        """(N, q) the random-effect parameters' log theta + C beta at the current x."""
        return self.P.logq0(self.x)[:, self.rows]

    def terms(self, eta):
        self.n_eval += 1
        return self.P.data_terms(self.x, eta)

    def estep(self, adapt):
        """The Metropolis-Hastings kernels on every chain at the current x."""
        m, q, N, rng = self.m, self.q, self.N, self.rng
        n1, n2, n3 = (int(v) for v in self.o["kernels"])
        Om = m.omega(self.x)
        L = np.linalg.cholesky(Om)
        Linv = np.linalg.inv(L)
        sd = np.sqrt(np.diag(Om))
        mu = self.mu()
        acc2 = [0, 0]
        acc3 = np.zeros((2, q))

        def quad(e):
            z = e @ Linv.T
            return np.sum(z * z, axis=1)

        for c in range(self.phi.shape[0]):
            eta = self.phi[c] - mu
            l = self.terms(eta)
            pq = quad(eta)
            for _ in range(n1):
                e1 = rng.standard_normal((N, q)) @ L.T
                l1 = self.terms(e1)
                u = np.log(rng.uniform(size=N))
                ok = np.isfinite(l1) & ((u < -0.5 * (l1 - l)) | ~np.isfinite(l))
                eta[ok], l[ok] = e1[ok], l1[ok]
                pq = quad(eta)
            for _ in range(n2):
                e1 = eta + self.s_rw * (rng.standard_normal((N, q)) @ L.T)
                l1 = self.terms(e1)
                p1 = quad(e1)
                u = np.log(rng.uniform(size=N))
                ok = np.isfinite(l1) & ((u < -0.5 * (l1 + p1 - l - pq)) | ~np.isfinite(l))
                eta[ok], l[ok], pq[ok] = e1[ok], l1[ok], p1[ok]
                acc2[0] += int(ok.sum())
                acc2[1] += N
            for _ in range(n3):
                for j in range(q):
                    e1 = eta.copy()
                    e1[:, j] += self.s_cw[j] * sd[j] * rng.standard_normal(N)
                    l1 = self.terms(e1)
                    p1 = quad(e1)
                    u = np.log(rng.uniform(size=N))
                    ok = np.isfinite(l1) & ((u < -0.5 * (l1 + p1 - l - pq)) | ~np.isfinite(l))
                    eta[ok], l[ok], pq[ok] = e1[ok], l1[ok], p1[ok]
                    acc3[0, j] += ok.sum()
                    acc3[1, j] += N
            self.phi[c] = eta + mu
            self.l[c] = l
        if adapt:  # (Monolix's rule: scale by 1 + 0.4 (rate - target))
            if acc2[1]:
                self.s_rw *= 1.0 + 0.4 * (acc2[0] / acc2[1] - TARGET_ACCEPT)
            if n3:
                self.s_cw *= 1.0 + 0.4 * (acc3[0] / acc3[1] - TARGET_ACCEPT)
        logdet = 2.0 * float(np.sum(np.log(np.diag(L))))
        pq_all = np.mean([np.sum(quad(self.phi[c] - mu)) for c in range(self.phi.shape[0])])
        return float(np.mean(self.l.sum(axis=1)) + pq_all + N * logdet)

    def error_statistic(self):
        """The chains' mean sum of (y - f)^2 (additive) or ((y - f)/f)^2 (proportional)."""
        P, m = self.P, self.m
        mu = self.mu()
        tot = 0.0
        for c in range(self.phi.shape[0]):
            pr = P.predictions(self.x, self.phi[c] - mu)
            self.n_eval += 1
            for s, r in zip(P.subjects, pr, strict=True):
                if r is None:
                    return None
                res = s.y - r[0]
                if m.error.kind == "proportional":
                    res = res / r[0]
                tot += float(res @ res)
        v = tot / self.phi.shape[0]
        return v if math.isfinite(v) else None

    def maximise_numeric(self, etas_by_chain):
        """argmin over the entries ``numeric`` of x of the chains' mean data term (phi held)."""
        P, m, idx = self.P, self.m, self.numeric
        x = self.x

        def fg(z):
            xx = x.copy()
            xx[idx] = z
            v, g = 0.0, np.zeros(idx.size)
            for e in etas_by_chain:
                r = P.data_sum(xx, e, 1)
                self.n_eval += 1
                if not np.isfinite(r[0]):
                    return 1e300, np.zeros(idx.size)
                v += r[0]
                g += r[1][idx]
            return v / len(etas_by_chain), g / len(etas_by_chain)

        bounds = list(
            zip(
                np.where(np.isfinite(m.lower[idx]), m.lower[idx], None),
                np.where(np.isfinite(m.upper[idx]), m.upper[idx], None),
            )
        )
        res = _scipy_minimize(fg, x[idx], jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 30})
        return res.x if np.all(np.isfinite(res.x)) and res.fun < 1e300 else x[idx].copy()

    def mstep(self, s1, s2, s_err, z_num, anneal):
        """The M-step from the statistics (s1 (N, q), s2 (q, q), the error statistic, the numeric
        maximiser): writes x."""
        m, x, D, N = self.m, self.x, self.D, self.N
        Om_old = m.omega(x)
        W = np.linalg.inv(Om_old)
        c = x[self.coef_x].copy()
        f = self.coef_free
        if f.any():
            Df, Dx = D[:, :, f], D[:, :, ~f]
            target = s1 - self.offset() - Dx @ c[~f]
            A = np.einsum("iqa,qr,irb->ab", Df, W, Df)
            b = np.einsum("iqa,qr,ir->a", Df, W, target)
            c[f] = np.linalg.lstsq(A, b, rcond=None)[0]
            x[self.coef_x] = np.clip(c, m.lower[self.coef_x], m.upper[self.coef_x])
            c = x[self.coef_x]
        mu = D @ c + self.offset()
        if not self.omega_all_fixed:
            Om = (s2 - s1.T @ mu - mu.T @ s1 + mu.T @ mu) / N
            Om = 0.5 * (Om + Om.T)
            Om = np.where(m.omega_mask, Om, 0.0)  # (the blocks' maximiser: the likelihood factorises over them)
            if m.omega_kind == "diagonal" or self.q == 1:
                d = np.diag(Om).copy()
                d = np.where(self.omega_fixed[: self.q], np.diag(Om_old), d)
                Om = np.diag(d)
            if anneal < 1.0:
                d_old, d = np.diag(Om_old), np.diag(Om)
                d_new = np.maximum(d, anneal * d_old)
                scale = np.sqrt(d_new / np.maximum(d, 1e-300))
                Om = Om * np.outer(scale, scale)
            w = np.linalg.eigvalsh(Om)
            if w.min() > 1e-12 * max(w.max(), 1e-300):
                set_omega(m, x, Om)
        if s_err is not None and self.psi_free.size:
            i = self.psi_free[0]
            new = 0.5 * math.log(max(s_err / self.P.n_obs, 1e-300))
            if anneal < 1.0:
                new = max(new, x[i] + 0.5 * math.log(anneal))
            x[i] = min(max(new, m.lower[i]), m.upper[i])
        if z_num is not None:
            psi_set = set(self.psi_free.tolist())
            for k, i in enumerate(self.numeric):
                v = z_num[k]
                if anneal < 1.0 and int(i) in psi_set:
                    v = max(v, x[i] + 0.5 * math.log(anneal))
                x[i] = v

    # ------------------------------------------------------------------ the iterations

    def go(self):
        P, m, o = self.P, self.m, self.o
        K1, K2 = int(o["n_explore"]), int(o["n_smooth"])
        anneal = float(o["anneal"])
        q = self.q
        for _ in range(int(o["n_warmup"])):
            self.estep(adapt=True)
        s1 = np.zeros((self.N, q))
        s2 = np.zeros((q, q))
        s_err = None
        z_num = self.x[self.numeric].copy() if self.numeric.size else None
        traj = np.empty((K1 + K2, m.n_x))
        values = np.empty(K1 + K2)
        cm = np.zeros((self.N, q))  # the conditional means of eta over the smoothing phase
        value = np.inf
        for k in range(K1 + K2):
            explore = k < K1
            value = self.estep(adapt=explore)
            values[k] = value
            self.report(value)
            g = 1.0 if explore else 1.0 / (k - K1 + 1)
            S1 = self.phi.mean(axis=0)
            S2 = np.einsum("cnq,cnr->qr", self.phi, self.phi) / self.phi.shape[0]
            s1 += g * (S1 - s1)
            s2 += g * (S2 - s2)
            if self.closed_error:
                e = self.error_statistic()
                if e is not None:
                    s_err = e if s_err is None else s_err + g * (e - s_err)
            if self.numeric.size:
                mu = self.mu()
                zs = self.maximise_numeric([self.phi[c] - mu for c in range(self.phi.shape[0])])
                z_num = zs if explore else z_num + g * (zs - z_num)
            self.mstep(s1, s2, s_err, z_num, anneal if explore else 1.0)
            traj[k] = self.x
            if not explore:
                cm += g * ((S1 - self.mu()) - cm)
        # the claim: stationary over the last half of the exploration phase
        free = np.flatnonzero(~m.fixed)
        window = traj[K1 // 2 : K1][:, free]
        z = trend_z(window)
        kmax = int(np.argmax(z)) if z.size else 0
        zmax = float(z[kmax]) if z.size else 0.0
        finite = bool(np.all(np.isfinite(self.l)))
        stationary = zmax <= TREND_Z and finite
        where = f" ({m.names[free[kmax]]})" if z.size else ""
        text = (
            f"stationarity criterion {'met' if stationary else 'NOT met'}: max |trend z| over the last "
            f"{window.shape[0]} exploration iterations {zmax:.2g}{where} (limit {TREND_Z:g})"
        )
        if not finite:
            text += "; a chain ended with a non-finite likelihood"
        v, etas, _ = laplace(P, self.x, cm) if P.nonnormal else P.foce(self.x, cm)
        msg = (
            f"SAEM: {K1} exploration + {K2} smoothing iterations, {self.phi.shape[0]} chain(s), "
            f"{self.n_eval} population evaluations; OFV by {'Laplace' if P.nonnormal else 'FOCE-I'} at the "
            "SAEM estimates"
        )
        return {
            "x": self.x,
            "etas": etas,
            "objective": float(v),
            "converged": bool(np.isfinite(v)),
            "message": msg,
            "n_evaluations": self.n_eval,
            "stationary": stationary,
            "stationarity": text,
            # (NONMEM's numbering in .ext: the exploration (burn-in) iterations negative)
            "trace": {
                "iteration": list(range(-K1, 0)) + list(range(K2)),
                "x": traj.tolist(),
                "objective": values.tolist(),
                "kind": "saem",
            },
        }
