"""Fitting a population model: individual, naive pooled, MAP / empirical Bayes, FOCE-I.

``sc.pk.fit(model, data, method="foce")`` returns a :class:`FitResult`: estimates with
standard errors, the objective (OFV = -2 log likelihood without the n log 2 pi constant,
NONMEM's convention), AIC and BIC (from the full -2 log likelihood), the random effects of
every subject, eta shrinkage, and the diagnostics PRED, IPRED, IWRES and CWRES.

This module holds the driver (:func:`fit`: checks, starts, restarts, the result); the rest
lives by concern: the result and its file in :mod:`.result`, the table, diagnostics and
warnings in :mod:`.report`, the thread rules in :mod:`.threads`, the optimizer in
:mod:`smallchains._optimize`.  The names they had here are still importable from here.
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
from scipy.linalg import solve_triangular

from .._jit import COMPILE_SECONDS, feature
from .._optimize import kkt as _kkt
from .._optimize import minimize as _drive
from .._warnings import DataWarning
from .covariance import at_bound, check_kind, covariance, hessian_from_gradient
from .estimation import Problem, information
from .laplace import laplace, laplace_gradient
from .population import PopulationModel
from .report import diagnostics as _diagnostics
from .report import parameter_table as _table
from .report import warn_doubtful
from .result import FitError, FitResult, IndividualFits, load, model_from_spec, model_spec
from .threads import blas_single_threaded as _blas_single_threaded
from .threads import number_of_threads as _threads
from .timevarying import check_rule

__all__ = [
    "FitError",
    "FitResult",
    "IndividualFits",
    "fit",
    "load",
    "model_from_spec",
    "model_spec",
    "warn_doubtful",
    "DECREMENT_TOL",
    "GRADIENT_TOL",
    "METHODS",
    "MARGINAL",
    "OPTIMIZERS",
]
METHODS = ("individual", "pooled", "map", "foce", "laplace")
#: the methods that minimise an approximation of the marginal likelihood (an OFV over the modes)
MARGINAL = ("foce", "laplace")
OPTIMIZERS = ("lbfgs", "adam", "adam+lbfgs")


class _Progress:
    def __init__(self, progress, label):
        self.cb = progress
        self.label = label
        self.t0 = time.perf_counter()
        self.n = 0
        self.best = np.inf

    def __call__(self, value):
        self.n += 1
        self.best = min(self.best, value)
        if self.cb is None:
            return
        msg = (
            f"{self.label}: evaluation {self.n}, objective {value:.6g} (best {self.best:.6g}), "
            f"{time.perf_counter() - self.t0:.1f} s"
        )
        if self.cb is True:
            print(msg, flush=True)
        else:
            self.cb(msg)


def _minimize(
    fun_grad,
    z0,
    *,
    optimizer,
    maxiter,
    tol,
    adam_steps,
    adam_lr,
    report,
    stall_tol=1e-2,
    stall_iters=50,
    bounds=None,
    restart_gtol=None,
):
    """Minimise with L-BFGS and/or Adam (:func:`smallchains._optimize.minimize`, the package's
    driver); returns (z, value, converged, message, n_evaluations).

    L-BFGS also stops when the objective improved by less than ``stall_tol`` over the last
    ``stall_iters`` iterations (a -2 log likelihood difference of 0.01 is statistically
    nothing; networks otherwise creep on for thousands of evaluations).  ``bounds``: (lower,
    upper) arrays for z (infinite: none): L-BFGS-B's box; Adam's steps are projected on it.
    ``restart_gtol``: when L-BFGS stops by its relative reduction with a partial derivative (on the
    box: pointing into it) above this, it restarts from the best point, up to three times.  No
    ConvergenceWarning here: the fit says it with its own convergence criterion."""
    res = _drive(
        fun_grad,
        z0,
        method="L-BFGS-B" if optimizer in ("lbfgs", "adam+lbfgs") else None,
        bounds=bounds,
        maxiter=maxiter,
        options={"ftol": tol, "gtol": 1e-7, "maxcor": 20},
        adam_steps=int(adam_steps) if optimizer in ("adam", "adam+lbfgs") else 0,
        adam_lr=adam_lr,
        stall=(stall_tol, stall_iters) if stall_tol else None,
        restart_gtol=restart_gtol,
        on_evaluation=lambda z, f: report(f),
    )
    return res.x, res.fun, bool(res.success), res.message, res.nfev


# --------------------------------------------------------------------------- the fit


def fit(
    model,
    data,
    method="foce",
    *,
    optimizer="lbfgs",
    starts=1,
    restarts=0,
    seed=0,
    x0=None,
    maxiter=500,
    tol=1e-9,
    adam_steps=500,
    adam_lr=0.02,
    threads=None,
    rtol=1e-8,
    atol=1e-10,
    solver=None,
    ss_tol=None,
    se=True,
    progress=None,
    map_omega="em",
    time_varying="nocb",
    analytic=None,
    covariance="sandwich",
):
    """Estimate a population model's parameters from a data set.

    Args:
        model: a :class:`PopulationModel`.
        data: a :class:`Population` from :func:`read_data` (or a ``sc.pkdata`` set).
        method: ``"foce"`` (FOCE-I, the default), ``"laplace"`` (FOCE-I with the exact Hessian
            of each subject's objective: :mod:`smallchains.pk.laplace`; no network weights),
            ``"map"`` (fixed effects, Omega, residual error, network weights and every subject's
            eta jointly: the mode of the joint posterior), ``"pooled"`` (naive pooled: no random
            effects) or ``"individual"`` (each subject alone: its own typical values and
            residual error).
        optimizer: ``"lbfgs"``, ``"adam"`` or ``"adam+lbfgs"`` (Adam's ``adam_steps`` steps at
            ``adam_lr``, then L-BFGS: for networks started far from the optimum).
        starts: the number of starts; starts after the first jitter the log typical values and
            residual errors by N(0, 0.3^2) (seeded); the best objective wins.
        restarts: after the starts, restart this many times from the best estimates perturbed
            (log typical values, log residual sds and log random-effect sds by N(0, 0.1^2),
            seeded), keeping a restart's result only when its objective is lower: a way out of
            poor local optima.  The message lists the restarts' objectives.
        x0: start from these values (``model.names`` layout) instead of ``model.x0``, e.g. a
            previous fit's ``x``.
        threads: subjects are spread over this many threads (default: every core when the
            optional ``threadpoolctl`` is installed to hold NumPy's BLAS to one thread meanwhile,
            else 1).
        rtol, atol, solver: the ODE solver (default ``sc.Vern7()``: tight tolerances are cheap
            with it and keep the FOCE-I objective smooth).
        ss_tol: the relative tolerance of steady states (SS doses; default 10 * rtol): see
            :mod:`smallchains.pk.steady_state`.
        time_varying: covariates that change within a subject change its parameters within the
            solve: ``"nocb"`` (NONMEM's convention, the default: a record's values hold over the
            interval ending at it), ``"locf"``, or ``"baseline"`` (each subject's first values,
            with a DataWarning); see :mod:`smallchains.pk.timevarying`.
        analytic: solve the subjects exactly by matrix exponentials (:mod:`smallchains.pk.analytic`)
            rather than with the ODE solver: ``None`` (default) when the model is linear (declares
            its rate matrix: every built-in linear model), ``True`` to require it, ``False`` for the
            ODE solver.  Subjects with doses that move with dose parameters (ALAGn, Fn, Rn, Dn)
            use the ODE solver either way (logged).
        se: compute standard errors (conditional on network weights, whose own Hessian block is
            singular); parameters at a variance bound are left out (their SEs NaN, said).
        covariance: FOCE-I's covariance step as NONMEM's $COV (:mod:`smallchains.pk.covariance`):
            ``"sandwich"`` R^-1 S R^-1 (the default), ``"R"`` or ``"S"``; R from differences of the
            exact gradient, S from the subjects' exact gradients.  MAP and pooled fits use R (the
            Hessian of their objective).
        map_omega: how MAP treats Omega: ``"em"`` (default) alternates the joint fit at fixed
            Omega with Omega's EM update mean(eta eta' + M^-1) (the conditional modes plus their
            Laplace covariance) until Omega settles; ``"fixed"`` keeps the initial Omega;
            ``"joint"`` puts Omega in the joint objective, whose infimum is at Omega -> 0 when
            the data say little about a random effect (use with care).
        progress: ``True`` to print progress, or a function called with a message.

    FOCE-I minimises the OFV (plus the network weights' L2 prior) with its gradient from the
    subjects' sensitivities (``Problem.foce_gradient``: exact first-order terms, the second-order
    ones by central differences of exact sensitivities along each random effect), each
    evaluation solving every subject's inner problem from the last modes.  A model with a
    neural term starts FOCE-I from a MAP fit (with ``optimizer``), then fits the weights with the
    other parameters by L-BFGS.
    """
    from ..ode.tableau import Vern7

    if not isinstance(model, PopulationModel):
        raise TypeError(f"`model` must be a sc.pk.PopulationModel, got {type(model).__name__}")
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}")
    if map_omega not in ("em", "fixed", "joint"):
        raise ValueError(f"`map_omega` must be 'em', 'fixed' or 'joint', got {map_omega!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"`optimizer` must be one of {OPTIMIZERS}, got {optimizer!r}")
    starts = int(starts)
    if starts < 1:
        raise ValueError(f"`starts` must be >= 1, got {starts}")
    if isinstance(restarts, bool) or not isinstance(restarts, int | np.integer) or restarts < 0:
        raise ValueError(f"`restarts` must be a whole number >= 0, got {restarts!r}")
    if method in ("map", *MARGINAL) and model.n_eta == 0:
        raise ValueError(f"method {method!r} needs random effects: give the model eta=[...] (or use 'pooled')")
    if method == "laplace" and (model.n_weights or model.covariate_network is not None):
        raise ValueError(
            "method 'laplace' differences its objective over every parameter, and this model has network "
            "weights: use method 'foce'"
        )
    solver = Vern7() if solver is None else solver
    settings = {
        "rtol": rtol,
        "atol": atol,
        "solver": type(solver).__name__,
        "ss_tol": ss_tol,
        "time_varying": check_rule(time_varying),
        "analytic": analytic,
        "covariance": check_kind(covariance),
        "map_omega": map_omega,
        "optimizer": optimizer,
        "starts": starts,
        "restarts": int(restarts),
        "seed": seed,
    }
    xs = model.x0.copy() if x0 is None else np.array(x0, dtype=float).reshape(-1)
    if xs.shape != (model.n_x,):
        raise ValueError(f"`x0` must have {model.n_x} entries ({model.names}), got {xs.shape}")
    t_start = time.perf_counter()
    opts = dict(optimizer=optimizer, maxiter=maxiter, tol=tol, adam_steps=adam_steps, adam_lr=adam_lr)
    if method == "individual":
        return _fit_individual(
            model, data, xs, opts, starts, seed, threads, rtol, atol, solver, ss_tol, se, progress, settings, t_start
        )
    with feature("population fits", COMPILE_SECONDS["pk"]):  # (the first objective compiles the kernels)
        P = Problem(
            model,
            data,
            rtol=rtol,
            atol=atol,
            solver=solver,
            ss_tol=ss_tol,
            threads=1,
            time_varying=time_varying,
            analytic=analytic,
        )
        settings["analytic"] = P.analytic
        why = P.diagnose(xs)
    try:
        if why is not None:
            raise FitError(f"the objective is not finite at the initial values: {why}")
        t = time.perf_counter()
        P.diagnose(xs)  # (timed the second time: the first includes one-off warm-up costs)
        per_subject = (time.perf_counter() - t) / P.N
        threads = _threads(threads, per_subject, P.N)
        P.set_threads(threads)
        settings["threads"] = threads
        with _blas_single_threaded(True):
            return _fit_population(
                P, method, xs, opts, starts, seed, se, progress, settings, t_start, map_omega, restarts
            )
    finally:
        P.close()


def _fit_population(P, method, xs, opts, starts, seed, se, progress, settings, t_start, map_omega, restarts=0):
    model = P.model
    rng = np.random.default_rng(seed)
    runs = []
    for k in range(starts):
        x_init = xs.copy()
        if k:
            jit = np.zeros(model.n_x)
            jit[model.blocks["theta"]] = rng.normal(0.0, 0.3, len(model.theta_names))
            jit[model.blocks["psi"]] = rng.normal(0.0, 0.3, len(model.error.names))
            x_init = np.clip(np.where(model.fixed, xs, xs + jit), model.lower, model.upper)
        label = f"{method} start {k + 1}/{starts}" if starts > 1 else method
        runs.append(_run(P, method, x_init, opts, _Progress(progress, label), map_omega))
    best = min(runs, key=lambda r: r["objective"])
    if not np.isfinite(best["objective"]):
        raise FitError(
            f"no start reached a finite objective ({method}); check the initial values, the units "
            "of the data and the error model"
        )
    if restarts:
        seen = []
        for k in range(int(restarts)):
            jit = np.zeros(model.n_x)
            jit[model.blocks["theta"]] = rng.normal(0.0, 0.1, len(model.theta_names))
            jit[model.blocks["psi"]] = rng.normal(0.0, 0.1, len(model.error.names))
            ob = model.blocks["omega"].start
            jit[ob : ob + model.n_eta] = rng.normal(0.0, 0.1, model.n_eta)
            x_init = np.clip(np.where(model.fixed, best["x"], best["x"] + jit), model.lower, model.upper)
            report = _Progress(progress, f"{method} restart {k + 1}/{restarts}")
            again = _run(P, method, x_init, opts, report, map_omega)
            seen.append(again["objective"])
            if again["objective"] < best["objective"]:
                again["n_evaluations"] += best["n_evaluations"]
                best = again
        seen = ", ".join(f"{v:.4f}" for v in seen)
        best = dict(best, message=f"{best['message']}; restarts from the perturbed estimates reached {seen}")
    return _finish(P, method, best, [r["objective"] for r in runs], se, settings, t_start, map_omega)


def _free(model, method, map_omega="em"):
    free = ~model.fixed.copy()
    if method in ("pooled", "individual") or (method == "map" and map_omega != "joint"):
        free[model.blocks["omega"]] = False
    if method == "individual":
        free[model.blocks["beta"]] = False
        free[model.blocks["w"]] = False
        free[model.blocks["wc"]] = False
    return free


def _posterior_cov(P, x, etas):
    """mean_i M_i^-1, the subjects' Laplace posterior covariances of eta, or None if a solve fails."""
    m = P.model
    L = m.omega_factor(x)
    Linv = solve_triangular(L, np.eye(m.n_eta), lower=True)
    Oinv = Linv.T @ Linv
    res = P.each(lambda s, e: s.data_term(x, e, need=2), list(zip(P.subjects, etas)))
    acc = np.zeros((m.n_eta, m.n_eta))
    for _, out in res:
        if out is None:
            return None
        acc += np.linalg.inv(information(out, Oinv))
    return acc / P.N


def _set_omega(m, x, Om):
    """Write Omega into x (diagonal models keep the diagonal); returns the largest change of a log sd."""
    ob = m.blocks["omega"]
    q = m.n_eta
    old = x[ob.start : ob.start + q].copy()
    if m.omega_kind == "diagonal":
        Om = np.diag(np.diag(Om))
    L = np.linalg.cholesky(Om)
    x[ob.start : ob.start + q] = np.log(np.diag(L))
    if m.omega_kind == "full" and q > 1:
        x[ob.start + q : ob.stop] = L[m.tril]
    return float(np.max(np.abs(x[ob.start : ob.start + q] - old)))


def _run(P, method, x_init, opts, report, map_omega="em", max_rounds=30, em_tol=1e-3):
    m = P.model
    x = x_init.copy()
    if map_omega == "em" and np.any(m.fixed[m.blocks["omega"]]):
        map_omega = "fixed"  # the user holds (part of) Omega: no EM update
    nets = np.r_[m.blocks["w"].start : m.blocks["w"].stop, m.blocks["wc"].start : m.blocks["wc"].stop]
    stage = None
    if method == "foce" and nets.size and not np.all(m.fixed[nets]):
        stage = _run(P, "map", x, opts, report, map_omega)
        x = stage["x"]
    free = _free(m, method, map_omega)
    idx = np.flatnonzero(free)
    if method == "pooled":

        def fg(z):
            xx = x.copy()
            xx[idx] = z
            v, g = P.pooled(xx, 1)
            return v, g[idx]

        z, f, conv, msg, ne = _minimize(fg, x[idx], report=report, bounds=(m.lower[idx], m.upper[idx]), **opts)
        x[idx] = z
        return {
            "x": x,
            "etas": np.zeros((P.N, m.n_eta)),
            "objective": f,
            "converged": conv,
            "message": msg,
            "n_evaluations": ne,
        }
    if method == "map":
        q = m.n_eta
        nf = idx.shape[0]

        state = {"C": None}

        def fg(z):
            xx = x.copy()
            xx[idx] = z[:nf]
            v, gx, ge = P.map_objective(xx, z[nf:].reshape(P.N, q), 1, state["C"])
            return v, np.concatenate([gx[idx], ge.ravel()])

        z = np.concatenate([x[idx], np.zeros(P.N * q)])
        ne_total = 0
        if map_omega == "em":
            # Omega profiled: mean(eta eta') + C, C the mean Laplace covariance of the etas, updated
            # between rounds (the EM fixed point); C starts from the initial Omega
            state["C"] = m.omega(x)
        # EM rounds stop early (Omega still moves); the last round, Omega settled, runs to the
        # requested tolerance
        final = map_omega != "em"
        em_note = ""
        for rnd in range(max_rounds + 1):
            o = opts if final else dict(opts, maxiter=min(opts["maxiter"], 250), tol=max(opts["tol"], 1e-7))
            box = (np.r_[m.lower[idx], np.full(P.N * q, -np.inf)], np.r_[m.upper[idx], np.full(P.N * q, np.inf)])
            # (the final round restarts L-BFGS short of the gradient criterion; not with networks,
            # whose weights creep on for thousands of evaluations)
            rg = GRADIENT_TOL if final and not nets.size else None
            z, f, conv, msg, ne = _minimize(fg, z, report=report, bounds=box, restart_gtol=rg, **o)
            ne_total += ne
            x[idx] = z[:nf]
            if final:
                break
            etas = z[nf:].reshape(P.N, q)
            change = _set_omega(m, x, P.profiled_omega(etas, state["C"]))
            C = _posterior_cov(P, x, etas)
            if C is None:  # the modes' Laplace covariance failed: this round's estimate is not EM's fixed point
                conv = False
                em_note = (
                    f"; Omega's EM stopped after round {rnd + 1}: the random effects' posterior "
                    "covariance is not positive definite"
                )
                break
            state["C"] = C
            opts = dict(opts, optimizer="lbfgs")  # later rounds start next to the optimum
            final = bool(rnd and change < em_tol)
            if not final and rnd == max_rounds - 1:
                final = True
                em_note = f"; Omega's EM did not settle in {max_rounds} rounds (last change {change:.2g} > {em_tol:g})"
        if map_omega == "em":
            _set_omega(m, x, P.profiled_omega(z[nf:].reshape(P.N, q), state["C"]))
            if em_note:
                conv = False
        return {
            "x": x,
            "etas": z[nf:].reshape(P.N, q).copy(),
            "objective": f,
            "converged": conv,
            "message": msg + (f"; Omega by EM, {rnd + 1} round(s)" if map_omega == "em" else "") + em_note,
            "n_evaluations": ne_total,
            "C": state["C"],  # (the posterior covariance Omega was profiled with in the last round)
        }
    # FOCE-I: the OFV's gradient from the subjects' sensitivities (Problem.foce_gradient), the etas
    # warm-started; network weights with their L2 prior
    state = {"etas": stage["etas"].copy() if method == "foce" and stage is not None else np.zeros((P.N, m.n_eta))}

    def fg(z):
        xx = x.copy()
        xx[idx] = z
        v, etas, res = _ofv(P, method, xx, state["etas"])
        if not np.isfinite(v):
            return np.inf, np.zeros_like(z)
        g = _ofv_gradient(P, method, xx, etas, res, which=idx)
        if g is None:
            return np.inf, np.zeros_like(z)
        state["etas"] = etas
        pen, gw = P.weight_prior(xx)
        g[m.blocks["w"]] += gw[: m.n_weights]
        g[m.blocks["wc"]] += gw[m.n_weights :]
        return v + pen, g[idx]

    o = opts if stage is None else dict(opts, optimizer="lbfgs")  # (after the MAP stage: L-BFGS)
    z, f, conv, msg, ne = _minimize(fg, x[idx], report=report, bounds=(m.lower[idx], m.upper[idx]), **o)
    x[idx] = z
    v, etas, _ = _ofv(P, method, x, state["etas"])
    if stage is not None:
        msg = f"MAP stage ({stage['message']}), then FOCE-I: {msg}"
        ne += stage["n_evaluations"]
    return {
        "x": x,
        "etas": etas,
        "objective": v + P.weight_prior(x)[0],
        "converged": conv,
        "message": msg,
        "n_evaluations": ne,
    }


def _ofv(P, method, x, etas):
    """(OFV, modes, per-subject results) of the marginal-likelihood method at ``x``: FOCE-I
    (:meth:`Problem.foce`) or Laplace (:func:`smallchains.pk.laplace.laplace`)."""
    return laplace(P, x, etas) if method == "laplace" else P.foce(x, etas)


def _ofv_gradient(P, method, x, etas, res, per_subject=False, which=None):
    """:func:`_ofv`'s gradient over x (Laplace: over the entries ``which``, by differences)."""
    if method == "laplace":
        return laplace_gradient(P, x, etas, which, per_subject)
    return P.foce_gradient(x, res, per_subject=per_subject)


# --------------------------------------------------------------------------- after the fit


#: ``converged`` (FOCE-I, pooled) requires the Newton decrement of the minimised objective (-2 log
#: L units) at the estimates, 1/2 g' H^-1 g (g its gradient, H its Hessian over the free
#: parameters), to be at most this: no step can lower the objective by more.  MAP (and network
#: weights) require every partial derivative to be at most :data:`GRADIENT_TOL` instead.
DECREMENT_TOL = 1e-3
GRADIENT_TOL = 1e-2


def _se_indices(P, method, x, map_omega):
    """(indices of the parameters the covariance step covers, those left out at a variance bound):
    the free ones but network weights (SEs conditional on them; their Hessian block is singular
    along the network's equivalent directions) and the ones at a bound."""
    m = P.model
    free = _free(m, method, map_omega)
    free[m.blocks["w"]] = False
    free[m.blocks["wc"]] = False
    excluded = sorted({i for i in at_bound(m, x) if free[i]} | {i for i in m.at_user_bound(x) if free[i]})
    free[excluded] = False
    return np.flatnonzero(free), excluded


def _objective_gradient(P, method, x, etas):
    """The minimised objective's gradient over every entry of x (FOCE-I: the OFV with the weights'
    prior; pooled), or None where it cannot be computed."""
    if method == "pooled":
        g = P.pooled(x, 1)[1]
        return g if np.all(np.isfinite(g)) else None
    m = P.model
    v, etas, res = _ofv(P, method, x, etas)
    g = _ofv_gradient(P, method, x, etas, res, which=np.flatnonzero(~m.fixed)) if np.isfinite(v) else None
    if g is None:
        return None
    g = g.copy()
    pen = P.weight_prior(x)[1]
    g[m.blocks["w"]] += pen[: m.n_weights]
    g[m.blocks["wc"]] += pen[m.n_weights :]
    return g


def _convergence(P, method, x, etas, map_omega, C=None):
    """(criterion holds, text, Hessian over the covariance step's parameters or None, those
    parameters' indices) at the estimates: see :data:`DECREMENT_TOL`."""
    m = P.model
    free = np.flatnonzero(_free(m, method, map_omega))
    if method == "map":
        _, gx, ge = P.map_objective(x, etas, 1, C)  # (C: Omega profiled as in the fit's last round)
        g = np.concatenate([gx[free], ge.ravel()])
        names = [m.names[i] for i in free] + [f"eta({k}) of ID {s.subject.id}" for s in P.subjects for k in m.eta_names]
        if not np.all(np.isfinite(g)):
            return False, "gradient criterion NOT met: the gradient is not finite", None, None
        k = int(np.argmax(np.abs(g))) if g.size else 0
        gmax = float(abs(g[k])) if g.size else 0.0
        ok = gmax <= GRADIENT_TOL
        where = f" ({names[k]})" if g.size else ""
        word = "met" if ok else "NOT met"
        text = f"gradient criterion {word}: max |d objective / d parameter| = {gmax:.2g}{where}"
        text += f" (limit {GRADIENT_TOL:g})"
        return ok, text, None, None
    idx, _ = _se_indices(P, method, x, map_omega)
    g = _objective_gradient(P, method, x, etas)
    if g is None:
        return False, "convergence criterion NOT met: the gradient could not be computed at the estimates", None, idx

    def grad(z):
        xx = x.copy()
        xx[idx] = z
        gg = _objective_gradient(P, method, xx, etas)
        return None if gg is None else gg[idx]

    H = hessian_from_gradient(grad, x[idx], h=1e-5 if method == "pooled" else 1e-3) if idx.size else None
    others = np.setdiff1d(free, idx)  # (network weights, parameters at a bound)
    # on a bound set by `bounds`, the gradient must point out of the box (KKT), not vanish
    gmax = _kkt(g[others], x[others], m.lower[others], m.upper[others])
    if idx.size and H is None:
        return False, "convergence criterion NOT met: the objective's Hessian could not be computed", None, idx
    dec = 0.0
    if idx.size:
        w, U = np.linalg.eigh(H)
        if w.min() < -1e-8 * max(abs(w).max(), 1.0):
            return False, "convergence criterion NOT met: the objective's Hessian has a negative eigenvalue", H, idx
        keep = w > 1e-12 * max(w.max(), 1e-300)
        dec = float(0.5 * np.sum((U[:, keep].T @ g[idx]) ** 2 / w[keep]))
    ok = dec <= DECREMENT_TOL and gmax <= GRADIENT_TOL
    text = f"convergence criterion {'met' if ok else 'NOT met'}: Newton decrement {dec:.2g} (limit {DECREMENT_TOL:g})"
    if others.size:
        text += f", max |gradient| of the other parameters {gmax:.2g} (limit {GRADIENT_TOL:g})"
    return ok, text, H, idx


def _standard_errors(P, method, x, etas, map_omega="em", kind="sandwich", H=None):
    """(covariance of the covered parameters or None, their indices, indices left out at a
    variance bound, why there is no covariance or None): see :mod:`smallchains.pk.covariance`.
    ``H``: the objective's Hessian over those parameters when already computed."""
    m = P.model
    idx, excluded = _se_indices(P, method, x, map_omega)
    if idx.size == 0:
        return None, idx, excluded, None

    def put(z):
        xx = x.copy()
        xx[idx] = z
        return xx

    if method == "map":
        nf, q = idx.shape[0], m.n_eta

        def grad(z):
            _, gx, ge = P.map_objective(put(z[:nf]), z[nf:].reshape(P.N, q), 1)
            return np.concatenate([gx[idx], ge.ravel()])

        C, why = covariance(hessian_from_gradient(grad, np.concatenate([x[idx], etas.ravel()]), h=1e-5), None, "R")
        return (None if C is None else C[:nf, :nf]), idx, excluded, why
    if H is None:

        def grad(z):
            g = _objective_gradient(P, method, put(z), etas)
            return None if g is None else g[idx]

        H = hessian_from_gradient(grad, x[idx], h=1e-5 if method == "pooled" else 1e-3)
    S = None
    if method in MARGINAL and kind != "R":
        _, etas, res = _ofv(P, method, x, etas)
        out = _ofv_gradient(P, method, x, etas, res, per_subject=True, which=idx)
        if out is not None:
            G = out[1][:, idx]
            S = G.T @ G
    C, why = covariance(H, S, kind if method in MARGINAL else "R")
    return C, idx, excluded, why


def _finish(P, method, run, starts, se, settings, t_start, map_omega="em"):
    m = P.model
    x, etas = run["x"], run["etas"]
    if method in ("map", *MARGINAL):
        ofv, etas, _ = _ofv(P, "laplace" if method == "laplace" else "foce", x, etas)
    else:
        ofv = P.pooled(x, 0) - P.weight_prior(x)[0]
    ok, text, H, _ = _convergence(P, method, x, run["etas"], map_omega, run.get("C"))
    converged = bool(run["converged"] and ok)
    message = f"{run['message']}; {text}"
    kind = settings.get("covariance", "sandwich") if method in MARGINAL else "R"
    if se:
        cov, idx, excluded, cov_why = _standard_errors(P, method, x, etas, map_omega, kind, H)
    else:
        cov, idx, excluded, cov_why = None, np.zeros(0, dtype=np.int64), [], None
    n_est = int(np.sum(_free(m, method, "fixed")))
    if method == "map" and map_omega != "fixed":
        n_est += int(np.sum(~m.fixed[m.blocks["omega"]]))
    m2ll = ofv + P.n_obs * math.log(2 * math.pi)
    shrink = {}
    if m.n_eta and method in ("map", *MARGINAL):
        om = np.sqrt(np.diag(m.omega(x)))
        sd = etas.std(axis=0, ddof=1) if P.N > 1 else np.full(m.n_eta, np.nan)
        shrink = {k: float(1 - sd[j] / om[j]) for j, k in enumerate(m.eta_names)}
    result = FitResult(
        model=m,
        method=method,
        x=x,
        ids=[s.subject.id for s in P.subjects],
        etas=etas,
        ofv=float(ofv),
        loglik=-0.5 * m2ll,
        aic=m2ll + 2 * n_est,
        bic=m2ll + n_est * math.log(P.n_obs),
        objective=float(run["objective"]),
        n_obs=P.n_obs,
        n_subjects=P.N,
        n_estimated=n_est,
        table=_table(m, x, cov, idx, method),
        shrinkage=shrink,
        diagnostics=_diagnostics(P, x, etas),
        converged=converged,
        message=message,
        n_evaluations=run["n_evaluations"],
        elapsed=time.perf_counter() - t_start,
        starts=starts,
        covariate_refs=P.covariate_refs,
        cov=cov,
        cov_names=[m.names[i] for i in idx],
        cov_kind=kind if se else None,
        cov_excluded=[m.names[i] for i in excluded],
        cov_why=cov_why,
        _designs=[s.C for s in P.subjects],
        _z=[s.z for s in P.subjects],
        _cov=[s.cov for s in P.subjects],
        settings=settings,
        skipped=P.skipped,
    )
    warn_doubtful(result, se)
    return result


def _fit_individual(
    model, data, xs, opts, starts, seed, threads, rtol, atol, solver, ss_tol, se, progress, settings, t_start
):
    from .data import Population

    fits = []
    for s in data.subjects:
        pop = Population([s], data.covariate_names, data.columns)
        r = None
        if np.any(np.asarray(s.blq) == 0):
            with warnings.catch_warnings(record=True) as caught:  # re-said below with the subject's ID
                warnings.simplefilter("always")
                r = fit(
                    model,
                    pop,
                    "pooled",
                    x0=xs,
                    starts=starts,
                    seed=seed,
                    threads=None,
                    rtol=rtol,
                    atol=atol,
                    solver=solver,
                    ss_tol=ss_tol,
                    se=se,
                    progress=progress,
                    time_varying=settings["time_varying"],
                    analytic=settings["analytic"],
                    **opts,
                )
            for w in caught:
                warnings.warn(f"ID {s.id}: {w.message}", w.category, stacklevel=3)
        fits.append((s.id, r))
    ok = [(i, r) for i, r in fits if r is not None]
    if len(ok) < len(fits):
        from .estimation import _ids

        warnings.warn(
            f"{len(fits) - len(ok)} subject(s) have no observation to fit (every record MDV = 1 or "
            f"BLQ = 1) and are left out: ID {_ids([i for i, r in fits if r is None])}",
            DataWarning,
            stacklevel=3,
        )
    ofv = float(sum(r.ofv for _, r in ok))
    n_obs = sum(r.n_obs for _, r in ok)
    n_est = sum(r.n_estimated for _, r in ok)
    m2ll = ofv + n_obs * math.log(2 * math.pi)
    diag = {k: np.concatenate([r.diagnostics[k] for _, r in ok]) for k in ok[0][1].diagnostics}
    return IndividualFits(
        model=model,
        method="individual",
        fits=dict(ok),
        ofv=ofv,
        loglik=-0.5 * m2ll,
        aic=m2ll + 2 * n_est,
        bic=m2ll + n_est * math.log(n_obs),
        n_obs=n_obs,
        n_subjects=len(ok),
        n_estimated=n_est,
        diagnostics=diag,
        elapsed=time.perf_counter() - t_start,
        settings=settings,
        skipped=[i for i, r in fits if r is None],
    )
