"""Fitting a population model: individual, naive pooled, MAP / empirical Bayes, FOCE-I.

``sc.pk.fit(model, data, method="foce")`` returns a :class:`FitResult`: estimates with
standard errors, the objective (OFV = -2 log likelihood without the n log 2 pi constant,
NONMEM's convention), AIC and BIC (from the full -2 log likelihood), the random effects of
every subject, eta shrinkage, and the diagnostics PRED, IPRED, IWRES and CWRES.

This module holds the driver (:func:`fit`: checks, starts, restarts, the result); the rest
lives by concern: the estimation methods, one class each, in :mod:`.methods`; the result and its
file in :mod:`.result`; the table, diagnostics and warnings in :mod:`.report`; the thread rules in
:mod:`.threads`; the optimizer in :mod:`smallchains._optimize`.  The names they had here are
still importable from here.
"""

from __future__ import annotations

import math
import time

import numpy as np

from .._jit import COMPILE_SECONDS, feature
from . import methods
from .covariance import check_kind
from .estimation import Problem
from .methods import DECREMENT_TOL, GRADIENT_TOL, FitSetup, Progress, minimize
from .methods.map import posterior_cov
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
#: the built-in methods' names (``methods.names()`` lists those registered since)
METHODS = methods.names()
#: the methods that minimise an approximation of the marginal likelihood (an OFV over the modes)
MARGINAL = ("foce", "laplace")
OPTIMIZERS = ("lbfgs", "adam", "adam+lbfgs")


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
    tol=None,
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
    method_options=None,
    blq="m1",
    lloq=None,
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
            residual error); or the name of a method registered with
            :func:`smallchains.pk.methods.register` (one class: see :mod:`smallchains.pk.methods`).
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
        maxiter: L-BFGS's iteration cap (reaching it: not converged, with a warning).
        tol: L-BFGS's relative-reduction stop (SciPy's ``ftol``).  Default: 1e-7 for FOCE-I,
            Laplace and pooled fits without network weights, whose ``converged`` is then decided
            by the Newton decrement at the estimates (:data:`DECREMENT_TOL`; measured: the
            classic fits meet it with 1e-5 to spare, and 1e-9 only adds L-BFGS iterations that
            move -2 log L by 1e-5), else 1e-9 (MAP, network weights: a gradient criterion).
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
        method_options: the method's own options (a dict; see the method's ``options``), e.g.
            ``{"n_explore": 500}`` for ``"saem"``; an unknown name is a ValueError.
        blq: how observations flagged BLQ (or CENS) = 1 enter (Beal's methods,
            :mod:`smallchains.pk._censored`): ``"m1"`` (the default) leaves them out, with a
            DataWarning that counts them; ``"m3"`` keeps each as censored, P(Y < LLOQ); ``"m4"``
            as P(0 < Y < LLOQ | Y > 0), conditioning every observation on Y > 0 (positive
            quantities).  M3 and M4 run with ``"laplace"``, ``"saem"``, ``"map"``, ``"pooled"``
            and ``"individual"``; ``"foce"`` refuses them, as NONMEM runs them only with
            LAPLACIAN.  SAEM's and MAP's OFV is then Laplace's.
        lloq: the lower limit of quantification of every BLQ observation (M3, M4); default the
            data's LLOQ column, else the BLQ records' DV (the convention of nlmixr2 and Monolix).

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
    # (a ValueError if the method or one of its options is unknown)
    estimator = methods.get(method)(map_omega=map_omega, covariance=covariance, options=method_options)
    if map_omega not in ("em", "fixed", "joint"):
        raise ValueError(f"`map_omega` must be 'em', 'fixed' or 'joint', got {map_omega!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"`optimizer` must be one of {OPTIMIZERS}, got {optimizer!r}")
    starts = int(starts)
    if starts < 1:
        raise ValueError(f"`starts` must be >= 1, got {starts}")
    if isinstance(restarts, bool) or not isinstance(restarts, int | np.integer) or restarts < 0:
        raise ValueError(f"`restarts` must be a whole number >= 0, got {restarts!r}")
    estimator.check(model)
    solver = Vern7() if solver is None else solver
    settings = {
        "rtol": rtol,
        "atol": atol,
        "solver": getattr(solver, "name", type(solver).__name__),
        "ss_tol": ss_tol,
        "time_varying": check_rule(time_varying),
        "analytic": analytic,
        "covariance": check_kind(covariance),
        "map_omega": map_omega,
        "optimizer": optimizer,
        "starts": starts,
        "restarts": int(restarts),
        "seed": seed,
        "blq": blq,
        "lloq": lloq,
    }
    if estimator.options:
        settings["method_options"] = dict(estimator.options)
    if tol is None:
        tol = estimator.default_tol(model)
    xs = model.x0.copy() if x0 is None else np.array(x0, dtype=float).reshape(-1)
    if xs.shape != (model.n_x,):
        raise ValueError(f"`x0` must have {model.n_x} entries ({model.names}), got {xs.shape}")
    t_start = time.perf_counter()
    opts = dict(optimizer=optimizer, maxiter=maxiter, tol=tol, adam_steps=adam_steps, adam_lr=adam_lr)
    setup = FitSetup(
        opts=opts,
        starts=starts,
        restarts=int(restarts),
        seed=seed,
        threads=threads,
        rtol=rtol,
        atol=atol,
        solver=solver,
        ss_tol=ss_tol,
        time_varying=time_varying,
        analytic=analytic,
        blq=blq,
        lloq=lloq,
        se=se,
        progress=progress,
        settings=settings,
        t_start=t_start,
    )
    return estimator.fit(model, data, xs, setup)


def fit_population(method, model, data, xs, setup):
    """The population flow of :meth:`EstimationMethod.fit <smallchains.pk.methods.EstimationMethod.fit>`:
    one ``Problem`` over the subjects (threads as :func:`.threads.number_of_threads` says), the
    method's runs from every start and restart, the best one's result (:func:`finish`)."""
    settings = setup.settings
    with feature("population fits", COMPILE_SECONDS["pk"]):  # (the first objective compiles the kernels)
        P = Problem(
            model,
            data,
            rtol=setup.rtol,
            atol=setup.atol,
            solver=setup.solver,
            ss_tol=setup.ss_tol,
            threads=1,
            time_varying=setup.time_varying,
            analytic=setup.analytic,
            blq=setup.blq,
            lloq=setup.lloq,
        )
        settings["analytic"] = P.analytic
        settings["ofv_kind"] = method.ofv_kind_for(P)
        # a linear covariate effect's beta stays where 1 + beta (c - ref) > 0 for these subjects:
        # the model's bounds tightened for this fit (restored after it)
        held = {i: (model.lower[i], model.upper[i]) for i in P.linear_effect_bounds()}
        for i, (lo, hi) in P.linear_effect_bounds().items():
            model.lower[i], model.upper[i] = max(model.lower[i], lo), min(model.upper[i], hi)
            xs = xs.copy()
            xs[i] = min(max(xs[i], model.lower[i]), model.upper[i])
        try:
            method.check_problem(P)
            why = P.diagnose(xs)
        except BaseException:
            P.close()
            for i, (lo, hi) in held.items():
                model.lower[i], model.upper[i] = lo, hi
            raise
    try:
        if why is not None:
            raise FitError(f"the objective is not finite at the initial values: {why}")
        t = time.perf_counter()
        P.diagnose(xs)  # (timed the second time: the first includes one-off warm-up costs)
        per_subject = (time.perf_counter() - t) / P.N
        threads = _threads(setup.threads, per_subject, P.N, compiled=not P.uncovered)
        P.set_threads(threads)
        settings["threads"] = threads
        with _blas_single_threaded(True):
            return _fit_population(P, method, xs, setup)
    finally:
        P.close()
        for i, (lo, hi) in held.items():
            model.lower[i], model.upper[i] = lo, hi


def _fit_population(P, method, xs, setup):
    model = P.model
    opts, starts, restarts, progress = setup.opts, setup.starts, setup.restarts, setup.progress
    name = method.name
    rng = np.random.default_rng(setup.seed)
    runs = []
    for k in range(starts):
        x_init = xs.copy()
        if k:
            jit = np.zeros(model.n_x)
            jit[model.blocks["theta"]] = rng.normal(0.0, 0.3, len(model.theta_names))
            jit[model.blocks["psi"]] = rng.normal(0.0, 0.3, len(model.error.names))
            x_init = np.clip(np.where(model.fixed, xs, xs + jit), model.lower, model.upper)
        label = f"{name} start {k + 1}/{starts}" if starts > 1 else name
        runs.append(method.run(P, x_init, opts, Progress(progress, label)))
    best = min(runs, key=lambda r: r["objective"])
    if not np.isfinite(best["objective"]):
        raise FitError(
            f"no start reached a finite objective ({name}); check the initial values, the units "
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
            report = Progress(progress, f"{name} restart {k + 1}/{restarts}")
            again = method.run(P, x_init, opts, report)
            seen.append(again["objective"])
            if again["objective"] < best["objective"]:
                again["n_evaluations"] += best["n_evaluations"]
                best = again
        seen = ", ".join(f"{v:.4f}" for v in seen)
        best = dict(best, message=f"{best['message']}; restarts from the perturbed estimates reached {seen}")
    return finish(P, method, best, [r["objective"] for r in runs], setup.se, setup.settings, setup.t_start)


def finish(P, method, run, starts, se, settings, t_start):
    """The :class:`FitResult` of the best ``run`` (:meth:`EstimationMethod.run`'s dict) of
    ``method``: the OFV, the convergence criterion, the covariance step, the table, shrinkage and
    diagnostics; then :func:`warn_doubtful`."""
    m = P.model
    x = run["x"]
    ofv, etas = method.ofv(P, x, run["etas"])
    ok, text, H, _ = method.convergence(P, x, run["etas"], run)
    converged = bool(run["converged"] and ok)
    message = f"{run['message']}; {text}"
    kind = method.covariance_kind
    if se:
        cov, idx, excluded, cov_why = method.standard_errors(P, x, etas, H)
    else:
        cov, idx, excluded, cov_why = None, np.zeros(0, dtype=np.int64), [], None
    n_est = method.n_estimated(m)
    m2ll = ofv + P.n_density * math.log(2 * math.pi)  # (censored observations' terms are probabilities)
    shrink = {}
    if m.n_eta and method.random_effects:
        om = np.sqrt(np.diag(m.omega(x)))
        sd = etas.std(axis=0, ddof=1) if P.N > 1 else np.full(m.n_eta, np.nan)
        shrink = {k: float(1 - sd[j] / om[j]) for j, k in enumerate(m.eta_names)}
    result = FitResult(
        model=m,
        method=method.name,
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
        table=_table(m, x, cov, idx, method.random_effects),
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
        trace=run.get("trace"),
    )
    warn_doubtful(result, se)
    return result


# --------------------------------------------------------------------------- names kept for callers


def _standard_errors(P, method, x, etas, map_omega="em", kind="sandwich", H=None):
    """The covariance step of ``method`` (a name) at x: :meth:`EstimationMethod.standard_errors`."""
    return methods.get(method)(map_omega=map_omega, covariance=kind).standard_errors(P, x, etas, H)


_posterior_cov = posterior_cov
_minimize = minimize
_Progress = Progress
