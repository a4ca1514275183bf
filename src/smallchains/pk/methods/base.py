"""The interface every estimation method of :func:`smallchains.pk.fit` implements.

A method is one class, a subclass of :class:`EstimationMethod`, registered under its public name
with :func:`smallchains.pk.methods.register`; ``pk.fit(model, data, method=name)`` looks it up,
makes one instance per fit (with the fit's ``map_omega`` and ``covariance``) and calls
:meth:`EstimationMethod.fit`.  The default :meth:`~EstimationMethod.fit` is the population flow
of :func:`smallchains.pk.fit.fit_population` (one ``Problem``, the starts and restarts, then the
result), which asks the method, in this order:

1. :meth:`~EstimationMethod.check` the model suits it (a ValueError otherwise);
2. :meth:`~EstimationMethod.run` one optimisation from a start (with :func:`minimize`, the
   package's optimizer driver set up as the fit's options say): the estimates, the subjects'
   random effects, the minimised objective, whether the optimizer converged;
3. :meth:`~EstimationMethod.ofv` at the best run's estimates: the reported -2 log likelihood;
4. :meth:`~EstimationMethod.convergence`: whether the method's own criterion holds there
   (``converged`` requires it), with the text the message ends with;
5. :meth:`~EstimationMethod.standard_errors`: the covariance step;
6. :meth:`~EstimationMethod.n_estimated`: the parameter count of AIC and BIC.

Methods whose objective has a gradient over the parameters and a positive definite Hessian at
the optimum (pooled, FOCE-I, Laplace) inherit the Newton-decrement criterion and the R (Hessian)
covariance step from here: they define :meth:`~EstimationMethod.objective_gradient`.
"""

from __future__ import annotations

import time

import numpy as np

from ..._optimize import kkt
from ..._optimize import minimize as _drive
from ..covariance import at_bound, covariance, hessian_from_gradient

#: ``converged`` (FOCE-I, Laplace, pooled) requires the Newton decrement of the minimised objective
#: (-2 log L units) at the estimates, 1/2 g' H^-1 g (g its gradient, H its Hessian over the free
#: parameters), to be at most this: no step can lower the objective by more.  MAP (and network
#: weights) require every partial derivative to be at most :data:`GRADIENT_TOL` instead.
DECREMENT_TOL = 1e-3
GRADIENT_TOL = 1e-2


class Progress:
    """The fit's ``progress`` hook, called with each finite objective value of a run."""

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


def minimize(
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


def optimizer_scale(P):
    """(n_x,) the scale the optimizer sees each entry of x in (it moves x * scale): 1, but a
    covariate effect whose design values spread with sd > 1 (an "exp" or "linear" effect of a
    covariate in raw units, e.g. weight in kg) moves as beta * sd, so that its gradient is on the
    others' scale and a first step does not leap to parameters that overflow."""
    m = P.model
    scale = np.ones(m.n_x)
    X = P.design
    if X.shape[0] > 1 and X.shape[1]:
        sd = X.std(axis=0)
        scale[m.blocks["beta"]] = np.where(sd > 1.0, sd, 1.0)
    return scale


class FitSetup:
    """The options of one ``pk.fit`` call a method's :meth:`~EstimationMethod.fit` may need:
    ``opts`` (the optimizer's: optimizer, maxiter, tol, adam_steps, adam_lr), ``starts``,
    ``restarts``, ``seed``, ``threads``, ``rtol``, ``atol``, ``solver``, ``ss_tol``,
    ``time_varying``, ``analytic``, ``blq``, ``lloq``, ``se``, ``progress``, ``settings`` (recorded in the result)
    and ``t_start`` (``time.perf_counter()`` when the fit began)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


class EstimationMethod:
    """One estimation method of :func:`smallchains.pk.fit`.

    Class attributes:
        name: the public name (``method=name``); ``aliases``: other names it answers to.
        random_effects: the method estimates Omega and each subject's random effects (the
            model needs ``eta``; the result reports Omega's entries and eta shrinkage).
        marginal: its objective approximates the marginal likelihood (the covariance step may
            be the sandwich or S, as ``covariance`` says; otherwise it is R).
        hessian_step: the step of the central differences of the gradient that give the
            objective's Hessian (convergence criterion, covariance step).
        decrement_judged: ``converged`` is decided by the Newton decrement at the estimates
            (the inherited :meth:`convergence`), so L-BFGS may stop at a looser relative
            reduction (:meth:`default_tol`).
        ofv_kind: what the reported OFV is (e.g. ``"FOCE-I"``, ``"Laplace"``): OFVs of one
            kind compare across runs (:func:`smallchains.pk.compare`); empty: not said.
        options: the method's own options and their defaults (``pk.fit(...,
            method_options={...})`` overrides them; an unknown name is a ValueError; the
            method's :meth:`check` validates the values).

    Instances carry the fit's ``map_omega`` and ``covariance`` options, and ``options`` (the
    defaults updated by the fit's ``method_options``).  A subclass defines
    :meth:`run` and, for the inherited convergence criterion and covariance step,
    :meth:`objective_gradient` and :meth:`ofv`; it overrides what differs.
    """

    name: str = ""
    aliases: tuple = ()
    random_effects = False
    marginal = False
    hessian_step = 1e-3
    decrement_judged = False
    ofv_kind = ""
    options: dict = {}

    def __init__(self, *, map_omega="em", covariance="sandwich", options=None):
        self.map_omega = map_omega
        self.covariance = covariance
        given = {} if options is None else options
        if not isinstance(given, dict):
            raise TypeError(f"`method_options` must be a dict, got {type(given).__name__}")
        unknown = sorted(set(given) - set(type(self).options))
        if unknown:
            have = ", ".join(sorted(type(self).options)) or "none"
            raise ValueError(f"method {self.name!r} has no option {unknown[0]!r} (its options: {have})")
        self.options = {**type(self).options, **given}

    def __repr__(self):
        return f"{type(self).__name__}(map_omega={self.map_omega!r}, covariance={self.covariance!r})"

    # ------------------------------------------------------------------ the fit as a whole

    def default_tol(self, model):
        """L-BFGS's relative-reduction stop when ``fit(tol=None)``: 1e-7 where the Newton
        decrement decides ``converged`` and the model has no network weights (measured: the
        classic fits meet the decrement with 1e-5 to spare, and 1e-9 only adds iterations that
        move -2 log L by 1e-5), else 1e-9 (a gradient criterion: MAP, network weights)."""
        nets = model.n_weights or model.covariate_network is not None
        return 1e-7 if self.decrement_judged and not nets else 1e-9

    def check(self, model):
        """Raise a ValueError when ``model`` does not suit the method."""
        if self.random_effects and model.n_eta == 0:
            raise ValueError(f"method {self.name!r} needs random effects: give the model eta=[...] (or use 'pooled')")

    def check_problem(self, P):
        """Raise a ValueError when the model bound to the data (a ``Problem``) does not suit the
        method (default: nothing to check)."""

    def ofv_kind_for(self, P):
        """What the reported OFV is for this ``Problem`` (default :attr:`ofv_kind`)."""
        return self.ofv_kind

    def fit(self, model, data, x0, setup):
        """The fit from the start ``x0`` with the options ``setup`` (:class:`FitSetup`): a result
        (by default :func:`smallchains.pk.fit.fit_population`'s :class:`FitResult`)."""
        from ..fit import fit_population

        return fit_population(self, model, data, x0, setup)

    # ------------------------------------------------------------------ one run

    def free(self, model):
        """Boolean mask over ``model.names``: the entries of x this method's optimizer moves
        (default: every parameter not fixed but Omega's, which only methods with random effects
        estimate)."""
        free = ~model.fixed.copy()
        if not self.random_effects:
            free[model.blocks["omega"]] = False
        return free

    def minimize_free(self, P, x, value_grad, report, opts):
        """Minimise ``value_grad(x) -> (value, gradient over every entry of x)`` over the entries
        :meth:`free` lets move (the others held at ``x``'s), within the model's bounds, by
        :func:`minimize` with the fit's ``opts``; a gradient of None (a failed evaluation) is read
        as a zero step.  Returns (x at the end, a copy; value; converged; message; evaluations).
        :meth:`last_trace` then gives the evaluations that lowered the objective (a run's
        ``"trace"``: the iteration rows of NONMEM's .ext file)."""
        m = P.model
        x = x.copy()
        idx = np.flatnonzero(self.free(m))
        rows = {"iteration": [], "x": [], "objective": [], "kind": "evaluations"}
        self._trace = rows
        count = [0]
        s = optimizer_scale(P)[idx]

        def fg(u):
            xx = x.copy()
            xx[idx] = u / s
            v, g = value_grad(xx)
            count[0] += 1
            if g is not None and np.isfinite(v) and (not rows["objective"] or v < rows["objective"][-1]):
                rows["iteration"].append(count[0])
                rows["x"].append(xx.tolist())
                rows["objective"].append(float(v))
            return (v, np.zeros_like(u)) if g is None else (v, g[idx] / s)

        box = (m.lower[idx] * s, m.upper[idx] * s)
        z, f, conv, msg, ne = minimize(fg, x[idx] * s, report=report, bounds=box, **opts)
        x[idx] = z / s
        return x, f, conv, msg, ne

    def last_trace(self):
        """The last :meth:`minimize_free`'s trace: {"iteration": evaluation numbers, "x": the
        estimates there, "objective": the values, "kind": "evaluations"}; only the evaluations
        that lowered the objective are kept.  None before any."""
        return getattr(self, "_trace", None)

    def run(self, P, x_init, opts, report):
        """One optimisation of the method's objective on the ``Problem`` ``P`` from ``x_init``
        (optimizer options ``opts`` for :func:`minimize`; ``report`` called with each objective
        value): a dict with ``x``, ``etas`` (n_subjects, n_eta), ``objective``, ``converged``,
        ``message``, ``n_evaluations`` (and optionally what :meth:`convergence` reads back, e.g.
        ``C``)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ at the estimates

    def ofv(self, P, x, etas):
        """(the reported OFV, -2 log L without 2 pi, at x; the subjects' random effects there)."""
        raise NotImplementedError

    def objective_gradient(self, P, x, etas):
        """The gradient over every entry of x of the objective the method minimises, or None
        where it cannot be computed."""
        raise NotImplementedError

    def se_indices(self, P, x):
        """(indices of the parameters the covariance step covers, those left out at a bound):
        the free ones but network weights (SEs conditional on them; their Hessian block is
        singular along the network's equivalent directions) and the ones at a bound."""
        m = P.model
        free = self.free(m)
        free[m.blocks["w"]] = False
        free[m.blocks["wc"]] = False
        excluded = sorted({i for i in at_bound(m, x) if free[i]} | {i for i in m.at_user_bound(x) if free[i]})
        free[excluded] = False
        return np.flatnonzero(free), excluded

    def hessian(self, P, x, etas, idx):
        """The objective's Hessian over the entries ``idx`` of x (central differences of
        :meth:`objective_gradient`), or None."""

        def grad(z):
            xx = x.copy()
            xx[idx] = z
            g = self.objective_gradient(P, xx, etas)
            return None if g is None else g[idx]

        return hessian_from_gradient(grad, x[idx], h=self.hessian_step)

    def convergence(self, P, x, etas, run):
        """(criterion holds, text, Hessian over the covariance step's parameters or None, those
        parameters' indices) at the estimates ``x`` of ``run`` (:meth:`run`'s dict): by default the
        Newton decrement of the objective within :data:`DECREMENT_TOL` and, for the parameters
        the Hessian leaves out (network weights, parameters at a bound), every partial
        derivative not pointing out of the box within :data:`GRADIENT_TOL`."""
        m = P.model
        free = np.flatnonzero(self.free(m))
        idx, _ = self.se_indices(P, x)
        g = self.objective_gradient(P, x, etas)
        if g is None:
            return (
                False,
                "convergence criterion NOT met: the gradient could not be computed at the estimates",
                None,
                idx,
            )
        H = self.hessian(P, x, etas, idx) if idx.size else None
        others = np.setdiff1d(free, idx)  # (network weights, parameters at a bound)
        # on a bound set by `bounds`, the gradient must point out of the box (KKT), not vanish
        gmax = kkt(g[others], x[others], m.lower[others], m.upper[others])
        if idx.size and H is None:
            return False, "convergence criterion NOT met: the objective's Hessian could not be computed", None, idx
        dec = 0.0
        if idx.size:
            w, U = np.linalg.eigh(H)
            if w.min() < -1e-8 * max(abs(w).max(), 1.0):
                return (
                    False,
                    "convergence criterion NOT met: the objective's Hessian has a negative eigenvalue",
                    H,
                    idx,
                )
            keep = w > 1e-12 * max(w.max(), 1e-300)
            dec = float(0.5 * np.sum((U[:, keep].T @ g[idx]) ** 2 / w[keep]))
        ok = dec <= DECREMENT_TOL and gmax <= GRADIENT_TOL
        text = (
            f"convergence criterion {'met' if ok else 'NOT met'}: Newton decrement {dec:.2g} (limit {DECREMENT_TOL:g})"
        )
        if others.size:
            text += f", max |gradient| of the other parameters {gmax:.2g} (limit {GRADIENT_TOL:g})"
        return ok, text, H, idx

    @property
    def covariance_kind(self):
        """The covariance step: ``covariance`` for marginal methods, else R (the Hessian)."""
        return self.covariance if self.marginal else "R"

    def score_matrix(self, P, x, etas, idx):
        """S = sum_i g_i g_i' over the entries ``idx`` (the subjects' gradients), or None."""
        return None

    def standard_errors(self, P, x, etas, H=None):
        """(covariance of the covered parameters or None, their indices, indices left out at a
        bound, why there is no covariance or None): see :mod:`smallchains.pk.covariance`.  ``H``:
        the objective's Hessian over those parameters when already computed."""
        idx, excluded = self.se_indices(P, x)
        if idx.size == 0:
            return None, idx, excluded, None
        if H is None:
            H = self.hessian(P, x, etas, idx)
        kind = self.covariance_kind
        S = self.score_matrix(P, x, etas, idx) if kind != "R" else None
        C, why = covariance(H, S, kind)
        return C, idx, excluded, why

    def n_estimated(self, model):
        """The number of estimated parameters (AIC, BIC)."""
        return int(np.sum(self.free(model)))
