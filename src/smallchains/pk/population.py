"""The statistical model of a population: typical values, covariates, random effects, residual error.

For subject i with baseline covariates c_i and random effects eta_i ~ N(0, Omega):

    log q_ik = log theta_k + sum_c beta_kc X_c(c_i) + eta_ik        (log-normal individual values)
    p_i      = individual(q_i)                                       (the structural model's parameters)
    y_ij     = h(u_i(t_ij), p_i) + eps_ij,   eps_ij ~ N(0, V(h))      (residual error)

with X_c = log(c / ref) ("power": q proportional to (c/ref)^beta) or c - ref ("exp": to
exp(beta (c - ref))), or, for a categorical covariate with levels (l_0, l_1, ...), one X per level
after the first (the reference), 1 when c equals it ("categorical": q = theta exp(beta_l), a shift
of log q per level, as NONMEM's IF(SEX.EQ.1) TVCL = TVCL*EXP(THETA(n)) or nlmixr2's
``cl <- exp(tcl + beta*(SEX == 1))``).  V is a^2 (additive), (b h)^2 (proportional) or a^2 + (b h)^2
(combined).  A structural model with a network (a :class:`smallchains.UDE`) adds its weights
to the fixed effects, with a Gaussian prior N(0, s^2) on each (an L2 penalty).

Every estimated quantity lives in one unconstrained vector ``x``: log theta, beta, the
network's weights, log a / log b, and Omega's Cholesky factor L (log of its diagonal, then
the lower off-diagonal entries for a full Omega), Omega = L L^T.
"""

from __future__ import annotations

import numpy as np

from .._complexstep import jacobian
from .dosing import DOSE_PARAM
from .dosing import parse as parse_dose_params
from .models import MODELS, CompartmentModel, zero_output_init

ERRORS = ("additive", "proportional", "combined")


class ErrorModel:
    """The residual error: ``"additive"`` (sd a), ``"proportional"`` (sd b·y) or ``"combined"``
    (variance a^2 + b^2 y^2)."""

    def __init__(self, kind="additive", sigma=None):
        if kind not in ERRORS:
            raise ValueError(f"`error` must be one of {ERRORS}, got {kind!r}")
        self.kind = kind
        self.names = {
            "additive": ["sigma_add"],
            "proportional": ["sigma_prop"],
            "combined": ["sigma_add", "sigma_prop"],
        }[kind]
        default = {"additive": [1.0], "proportional": [0.2], "combined": [0.5, 0.2]}[kind]
        s = default if sigma is None else np.atleast_1d(np.asarray(sigma, dtype=float)).tolist()
        if len(s) != len(self.names):
            raise ValueError(f"a {kind} error model takes {len(self.names)} sigma value(s) {self.names}, got {sigma!r}")
        if not all(np.isfinite(v) and v > 0 for v in s):
            raise ValueError(f"`sigma` values must be positive and finite, got {sigma!r}")
        self.init = np.log(np.asarray(s, dtype=float))

    def variance(self, f, psi):
        """(V, dV/df, dV/dpsi (n, n_psi)) at predictions ``f``, ``psi`` the log sigmas."""
        s2 = np.exp(2.0 * psi)
        if self.kind == "additive":
            V = np.full_like(f, s2[0])
            return V, np.zeros_like(f), 2.0 * V[:, None]
        if self.kind == "proportional":
            V = s2[0] * f * f
            return V, 2.0 * s2[0] * f, 2.0 * V[:, None]
        V = s2[0] + s2[1] * f * f
        return V, 2.0 * s2[1] * f, np.stack([np.full_like(f, 2.0 * s2[0]), 2.0 * s2[1] * f * f], axis=1)

    def information_weight(self, f, psi):
        """(w, dw/df, dw/dpsi (n, n_psi)) with w = 1/V + V'^2 / (2 V^2), the expected information
        of an observation about its prediction (FOCE-I's weights); derivatives by complex step
        (w_j depends on f_j alone)."""
        f = np.asarray(f, dtype=float)
        psi = np.asarray(psi, dtype=float)

        def w(fz, pz):
            V, Vf, _ = self.variance(fz, pz)
            return 1.0 / V + Vf * Vf / (2.0 * V * V)

        dwdf = jacobian(lambda fz: w(fz, psi.astype(complex)), f, np.ones((1, f.shape[0])))[:, 0]
        dwdpsi = jacobian(lambda pz: w(f.astype(complex), pz), psi)
        return w(f, psi), dwdf, dwdpsi


class CovariateNetwork:
    """A network from baseline covariates to individual parameters: log q_k += NN(c)_k.

    Args:
        chain: a :class:`smallchains.SimpleChain` with ``len(inputs)`` inputs and ``len(targets)``
            outputs.
        inputs: covariate names (each standardised over the subjects: (c - mean) / sd).
        targets: names in ``theta`` whose log individual values the outputs add to.

    Its weights are fixed effects with the model's Gaussian ``weight_prior``; they start with
    a zero last layer, so the network starts as "no covariate effect".
    """

    def __init__(self, chain, inputs, targets):
        from ..chain import SimpleChain

        if not isinstance(chain, SimpleChain):
            raise TypeError(f"`chain` must be a sc.SimpleChain, got {type(chain).__name__}")
        self.chain = chain
        self.inputs = [str(c) for c in inputs]
        self.targets = [str(k) for k in targets]
        if chain.input_dim != len(self.inputs):
            raise ValueError(f"the chain takes {chain.input_dim} inputs but {len(self.inputs)} covariates are named")
        if chain.output_dim != len(self.targets):
            raise ValueError(f"the chain has {chain.output_dim} outputs but {len(self.targets)} targets are named")

    def init_weights(self, seed=0):
        return zero_output_init(self.chain, seed)

    def __repr__(self):
        return f"CovariateNetwork({self.inputs} -> {self.targets}, {self.chain.num_params} weights)"


def _omega_blocks(omega, eta_names):
    """Omega's blocks as lists of eta indices, from ``"diagonal"``, ``"full"`` or lists of names."""
    q = len(eta_names)
    if isinstance(omega, str):
        if omega == "diagonal":
            return [[j] for j in range(q)]
        if omega == "full":
            return [list(range(q))] if q else []
        raise ValueError(f"`omega` must be 'diagonal', 'full' or a list of blocks of eta names, got {omega!r}")
    try:
        blocks = [[str(k) for k in b] for b in omega]
    except TypeError:
        raise ValueError(
            f"`omega` must be 'diagonal', 'full' or a list of blocks of eta names (e.g. [['CL', 'V']]), got {omega!r}"
        ) from None
    seen = []
    out = []
    for b in blocks:
        if not b:
            raise ValueError(f"`omega`: a block is empty in {omega!r}")
        for k in b:
            if k not in eta_names:
                raise ValueError(f"`omega`: block {b} names {k!r}, which has no random effect (eta: {eta_names})")
            if k in seen:
                raise ValueError(f"`omega`: {k!r} is in two blocks of {omega!r}")
            seen.append(k)
        out.append(sorted(eta_names.index(k) for k in b))
    out += [[j] for j, k in enumerate(eta_names) if k not in seen]
    return sorted(out)


def _levels(k, c, levels):
    """A categorical effect's levels: at least two distinct finite numbers, the first the reference."""
    try:
        out = [float(v) for v in levels]
    except (TypeError, ValueError):
        raise ValueError(
            f"the levels of the categorical effect {k}~{c} must be numbers (recode text with "
            f"read_data(..., categorical=...)), got {levels!r}"
        ) from None
    if len(out) < 2 or len(set(out)) != len(out) or not all(np.isfinite(out)):
        raise ValueError(
            f"the categorical effect {k}~{c} needs two or more distinct finite levels (the first is the "
            f"reference), got {levels!r}"
        )
    return out


class PopulationModel:
    """A structural model with typical values, covariate effects, random effects and residual error.

    Args:
        structural: a :class:`CompartmentModel` (or the name of a built-in one); with a
            network (built on a :class:`smallchains.UDE`) its weights are fitted too.
        theta: ``{name: initial typical value}`` (positive; estimated on the log scale).
        eta: names in ``theta`` that get a random effect (log-normal).
        omega: ``"diagonal"`` or ``"full"`` covariance of the random effects, or its blocks: a
            list of lists of names in ``eta``, e.g. ``[["CL", "V"]]`` (NONMEM's ``$OMEGA BLOCK(2)``
            for CL and V): full within a block, zero across blocks; a random effect in no block
            is a block of its own.
        omega_init: initial variance(s): a scalar, one per random effect, or a matrix.
        covariates: ``{theta name: {covariate: "power" | "exp" | ("categorical", levels)}}``, e.g.
            ``{"CL": {"WT": "power"}}`` for CL = theta (WT/ref)^beta, or ``{"CL": {"SEX":
            ("categorical", [0, 1])}}`` for CL = theta exp(beta_1 [SEX = 1]): one effect a level
            after the first (the reference); a subject with another value is an error.
        covariate_ref: ``{covariate: reference value}``; default the median over the subjects.
        individual: a function ``q -> {structural parameter: value}`` from the individual values
            by name (plain arithmetic, it is differentiated by complex step), or
            ``(q, cov) -> {...}`` to also read the subject's baseline covariates (e.g. to pass
            weight into a network's input through a structural parameter); default: the
            names of ``theta`` are the structural parameters.  E.g. nlme's Theophylline
            model in ka, ke, CL: ``lambda q: {"ka": q["ka"], "CL": q["CL"], "V": q["CL"] / q["ke"]}``.
        covariate_network: a :class:`CovariateNetwork` mapping covariates to individual values.
        error: ``"additive"``, ``"proportional"`` or ``"combined"``; ``sigma`` its initial sd(s).
        weights: initial network weights (default: the network's seeded initialisation).
        weight_prior: the prior sd of each network weight (L2 penalty |w|^2 / s^2 in the
            objective); ``None`` for none.
        fixed: names of parameters held at their initial values (e.g. ``["ka"]``).
        bounds: ``{name: (lower, upper)}`` on the natural scale for typical values (names in
            ``theta``) and residual sds (``"sigma_add"``, ``"sigma_prop"``); either end may be
            None.  The optimiser stays within them (L-BFGS-B's box, projected Adam steps); an
            estimate that ends on a bound is reported (``sc.DoubtfulResultWarning``) and left out
            of the covariance step, and the convergence check asks the gradient there to point
            out of the box (Karush-Kuhn-Tucker) instead of vanishing.
        dosing: the dose parameters ``individual`` returns besides the structural ones: NONMEM's
            ``ALAGn``, ``Fn``, ``Rn``, ``Dn`` for compartment n (lag, bioavailability, modelled
            rate and duration; see :mod:`smallchains.pk.dosing`).  Without ``individual``, name
            them in ``theta`` instead (e.g. ``theta=dict(ka=1, CL=3, V=30, ALAG1=0.5)``).
    """

    def __init__(
        self,
        structural,
        theta,
        *,
        eta=(),
        omega="diagonal",
        omega_init=0.1,
        covariates=None,
        covariate_ref=None,
        individual=None,
        error="additive",
        sigma=None,
        weights=None,
        weight_prior=1.0,
        fixed=(),
        seed=0,
        covariate_network=None,
        dosing=None,
        bounds=None,
    ):
        if isinstance(structural, str):
            if structural not in MODELS:
                raise ValueError(f"unknown model {structural!r}; the built-in models are {sorted(MODELS)}")
            structural = MODELS[structural]()
        if not isinstance(structural, CompartmentModel):
            raise TypeError(f"`structural` must be a sc.pk.CompartmentModel or a model name, got {structural!r}")
        self.structural = structural
        if not isinstance(theta, dict) or not theta:
            raise ValueError("`theta` must be a dict {name: initial typical value}")
        self.theta_names = [str(k) for k in theta]
        t0 = np.array([float(v) for v in theta.values()])
        if not np.all(np.isfinite(t0)) or np.any(t0 <= 0):
            raise ValueError(
                f"`theta` initial values must be positive and finite (they are estimated on the log scale), got {theta}"
            )
        self.individual = individual
        self._individual_cov = False
        if individual is None:
            if dosing is not None:
                raise ValueError(
                    "`dosing` names the dose parameters `individual` returns; without `individual`, "
                    "give them in `theta` (e.g. ALAG1=0.5, F1=0.8)"
                )
            dosing = [k for k in self.theta_names if k not in structural.params and DOSE_PARAM.match(k)]
            missing = [k for k in structural.params if k not in theta]
            extra = [k for k in theta if k not in structural.params and k not in dosing]
            if missing or extra:
                raise ValueError(
                    f"{structural.name} takes parameters {structural.params} (and the dose parameters "
                    f"ALAGn, Fn, Rn, Dn); `theta` misses {missing} and has unknown {extra} (give "
                    "`individual=` to map other quantities to the model's parameters)"
                )
            self._perm = np.array([self.theta_names.index(k) for k in list(structural.params) + dosing])
            self._perm_rows = np.arange(self._perm.shape[0])
        elif not callable(individual):
            raise TypeError("`individual` must be a function q -> {parameter: value}")
        else:
            import inspect

            try:
                n_args = len(inspect.signature(individual).parameters)
            except (TypeError, ValueError):
                n_args = 1
            if n_args not in (1, 2):
                raise TypeError("`individual` must take (q) or (q, cov)")
            self._individual_cov = n_args == 2
        #: NONMEM's dose parameters (ALAGn, Fn, Rn, Dn) after the structural ones in param_names
        self.dose_params = [str(k) for k in (dosing or [])]
        try:
            self.dose_index = parse_dose_params(self.dose_params)
        except ValueError as e:
            raise ValueError(f"`dosing`: {e}") from None
        if len(self.dose_index) != len(self.dose_params):
            raise ValueError(f"`dosing` names a parameter twice: {self.dose_params}")
        for kind, c in self.dose_index:
            if c > structural.n_states:
                raise ValueError(
                    f"dose parameter {kind}{c}: {structural.name} has {structural.n_states} "
                    f"compartments (CMT 1..{structural.n_states})"
                )
        self.param_names = list(structural.params) + self.dose_params
        self.eta_names = [str(k) for k in eta]
        for k in self.eta_names:
            if k not in self.theta_names:
                raise ValueError(f"random effect on {k!r}, which is not in `theta` {self.theta_names}")
        if len(set(self.eta_names)) != len(self.eta_names):
            raise ValueError(f"`eta` lists a name twice: {self.eta_names}")
        q = len(self.eta_names)
        self.n_eta = q
        self.E = np.zeros((len(self.theta_names), q))
        for j, k in enumerate(self.eta_names):
            self.E[self.theta_names.index(k), j] = 1.0
        #: Omega's blocks (lists of eta indices) and the mask of its free entries (q x q)
        self.omega_blocks = _omega_blocks(omega, self.eta_names)
        self.omega_mask = np.zeros((q, q), dtype=bool)
        for b in self.omega_blocks:
            self.omega_mask[np.ix_(b, b)] = True
        if omega in ("diagonal", "full"):
            self.omega_kind = omega
        else:
            self.omega_kind = "block" if any(len(b) > 1 for b in self.omega_blocks) else "diagonal"
        #: ``omega`` as given (the kind, or the blocks by name): what rebuilds the model
        self.omega_spec = (
            omega if isinstance(omega, str) else [[self.eta_names[i] for i in b] for b in self.omega_blocks]
        )
        om = np.asarray(omega_init, dtype=float)
        if om.ndim == 0:
            om = np.eye(q) * float(om)
        elif om.ndim == 1:
            if om.shape[0] != q:
                raise ValueError(f"`omega_init` has {om.shape[0]} variances for {q} random effects")
            om = np.diag(om)
        if om.shape != (q, q):
            raise ValueError(f"`omega_init` must be a scalar, {q} variances or a {q}x{q} matrix, got shape {om.shape}")
        if q:
            if self.omega_kind == "diagonal":
                om = np.diag(np.diag(om))
            elif np.any(om[~self.omega_mask] != 0):
                a, b = (int(v) for v in np.argwhere(om * ~self.omega_mask)[0])
                raise ValueError(
                    f"`omega_init` has a covariance between {self.eta_names[a]} and {self.eta_names[b]}, which "
                    f"are in different blocks of `omega` {self.omega_spec}; give 0 there"
                )
            try:
                L0 = np.linalg.cholesky(om)
            except np.linalg.LinAlgError:
                raise ValueError("`omega_init` must be symmetric positive definite") from None
        else:
            L0 = np.zeros((0, 0))
        self.covariates = []  # (theta index, covariate name, form: "power", "exp", "linear" or "cat=<level>")
        #: {(theta name, covariate): [reference level, other levels...]} of categorical effects
        self.covariate_levels = {}
        for k, effects in (covariates or {}).items():
            if k not in self.theta_names:
                raise ValueError(f"covariate effect on {k!r}, which is not in `theta` {self.theta_names}")
            if not isinstance(effects, dict):
                raise TypeError(
                    f"`covariates[{k!r}]` must be a dict {{covariate: 'power' | 'exp' | ('categorical', levels)}}"
                )
            for c, form in effects.items():
                if isinstance(form, tuple | list) and len(form) == 2 and form[0] == "categorical":
                    levels = _levels(k, c, form[1])
                    self.covariate_levels[(k, str(c))] = levels
                    for lv in levels[1:]:
                        self.covariates.append((self.theta_names.index(k), str(c), f"cat={lv:g}"))
                    continue
                if form not in ("power", "exp", "linear"):
                    raise ValueError(
                        f"covariate form for {k}~{c} must be 'power', 'exp', 'linear' or ('categorical', [levels]), "
                        f"got {form!r}"
                    )
                self.covariates.append((self.theta_names.index(k), str(c), form))
        #: which covariate effects are linear, q = theta (1 + beta (c - ref)): log(1 + beta X) in log q
        self.linear_effects = np.array([f == "linear" for _, _, f in self.covariates], dtype=bool)
        self.covariate_ref = dict(covariate_ref or {})
        self.error = ErrorModel(error, sigma)
        # the network, if any
        self.n_weights = structural.n_weights
        if self.n_weights:
            if weights is None:
                weights = structural.init_weights(seed)
            w0 = np.asarray(weights, dtype=float).reshape(-1)
            if w0.shape[0] != self.n_weights:
                raise ValueError(f"`weights` must have {self.n_weights} entries, got {w0.shape[0]}")
        else:
            w0 = np.zeros(0)
        if weight_prior is not None and not (np.isfinite(weight_prior) and weight_prior > 0):
            raise ValueError(f"`weight_prior` must be a positive sd or None, got {weight_prior!r}")
        self.weight_prior = weight_prior
        if covariate_network is not None and not isinstance(covariate_network, CovariateNetwork):
            raise TypeError(f"`covariate_network` must be a sc.pk.CovariateNetwork, got {covariate_network!r}")
        self.covariate_network = covariate_network
        n_wc = 0
        if covariate_network is not None:
            for k in covariate_network.targets:
                if k not in self.theta_names:
                    raise ValueError(f"covariate network target {k!r} is not in `theta` {self.theta_names}")
            self.cn_targets = np.array([self.theta_names.index(k) for k in covariate_network.targets])
            n_wc = covariate_network.chain.num_params
        # the layout of x
        n_t, n_c, n_w, n_s = len(self.theta_names), len(self.covariates), self.n_weights, len(self.error.names)
        # Omega's Cholesky factor: its log diagonal, then its free entries below the diagonal (row
        # by row; a block-diagonal L gives a block-diagonal Omega)
        low = np.tril_indices(q, -1)
        keep = self.omega_mask[low]
        self.tril = (low[0][keep], low[1][keep])
        n_off = int(keep.sum())
        sizes = [("theta", n_t), ("beta", n_c), ("w", n_w), ("wc", n_wc), ("psi", n_s), ("omega", q + n_off)]
        self.blocks = {}
        o = 0
        for name, sz in sizes:
            self.blocks[name] = slice(o, o + sz)
            o += sz
        self.n_x = o
        x0 = np.zeros(o)
        x0[self.blocks["theta"]] = np.log(t0)
        x0[self.blocks["w"]] = w0
        if n_wc:
            x0[self.blocks["wc"]] = covariate_network.init_weights(seed)
        x0[self.blocks["psi"]] = self.error.init
        if q:
            x0[self.blocks["omega"]] = np.concatenate([np.log(np.diag(L0)), L0[self.tril] if n_off else []])
        self.x0 = x0
        self.names = (
            ["log " + k for k in self.theta_names]
            + [
                f"beta {self.theta_names[k]}~{c}" + (f" {f}" if f.startswith("cat=") else "")
                for k, c, f in self.covariates
            ]
            + [f"w[{i}]" for i in range(n_w)]
            + [f"wc[{i}]" for i in range(n_wc)]
            + ["log " + s for s in self.error.names]
            + [f"log omega({k})" for k in self.eta_names]
            + [f"L({self.eta_names[a]},{self.eta_names[b]})" for a, b in zip(*self.tril)][:n_off]
        )
        self.fixed = np.zeros(o, dtype=bool)
        for k in fixed:
            idx = self._name_index(k)
            self.fixed[idx] = True
        self.lower = np.full(o, -np.inf)
        self.upper = np.full(o, np.inf)
        self.bounds = {}
        self.set_bounds(bounds or {})

    def set_bounds(self, bounds):
        """Set ``{name: (lower, upper)}`` natural-scale bounds (see the class); checked against
        the initial values."""
        allowed = self.theta_names + self.error.names
        for k, b in dict(bounds).items():
            if k not in allowed:
                raise ValueError(
                    f"`bounds` names {k!r}; bounds apply to typical values {self.theta_names} and residual "
                    f"sds {self.error.names}"
                )
            try:
                lo, hi = b
            except (TypeError, ValueError):
                raise ValueError(
                    f"`bounds[{k!r}]` must be a pair (lower, upper) (None for no bound), got {b!r}"
                ) from None
            lo = None if lo is None else float(lo)
            hi = None if hi is None else float(hi)
            if (lo is not None and not (np.isfinite(lo) and lo > 0)) or (hi is not None and not (hi > 0)):
                raise ValueError(
                    f"`bounds[{k!r}]` = {b!r}: bounds are on positive quantities (estimated on the log scale); "
                    "give positive values or None"
                )
            if lo is not None and hi is not None and not lo < hi:
                raise ValueError(f"`bounds[{k!r}]` = {b!r}: the lower bound must be below the upper one")
            i = (
                self.theta_names.index(k)
                if k in self.theta_names
                else self.blocks["psi"].start + self.error.names.index(k)
            )
            v = float(np.exp(self.x0[i]))
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                raise ValueError(f"the initial value of {k} ({v:g}) is outside its bounds {b!r}")
            self.lower[i] = -np.inf if lo is None else np.log(lo)
            self.upper[i] = np.inf if hi is None or np.isinf(hi) else np.log(hi)
            self.bounds[k] = (lo, hi)

    def at_user_bound(self, x, rtol=1e-7):
        """{index into x: -1 (lower) or +1 (upper)} of the entries on a bound set by ``bounds``."""
        out = {}
        for i in np.flatnonzero(np.isfinite(self.lower) | np.isfinite(self.upper)):
            tol = rtol * max(1.0, abs(x[i]))
            if x[i] <= self.lower[i] + tol:
                out[int(i)] = -1
            elif x[i] >= self.upper[i] - tol:
                out[int(i)] = 1
        return out

    # ------------------------------------------------------------------ layout helpers

    def _name_index(self, k):
        k = str(k)
        if k in self.theta_names:
            return self.blocks["theta"].start + self.theta_names.index(k)
        if k in self.error.names:
            return self.blocks["psi"].start + self.error.names.index(k)
        if k == "weights":
            return np.arange(self.blocks["w"].start, self.blocks["w"].stop)
        if k == "covariate_network":
            return np.arange(self.blocks["wc"].start, self.blocks["wc"].stop)
        for i, nm in enumerate(self.names):
            if nm == k:
                return i
        raise ValueError(f"cannot fix {k!r}: not a parameter name ({self.theta_names + self.error.names})")

    def omega_factor(self, x):
        """Omega's Cholesky factor L (q x q) from ``x``."""
        q = self.n_eta
        v = x[self.blocks["omega"]]
        L = np.diag(np.exp(v[:q]))
        if self.tril[0].size:
            L[self.tril] = v[q:]
        return L

    def omega(self, x):
        L = self.omega_factor(x)
        return L @ L.T

    def theta(self, x):
        return dict(zip(self.theta_names, np.exp(x[self.blocks["theta"]])))

    def sigma(self, x):
        return dict(zip(self.error.names, np.exp(x[self.blocks["psi"]])))

    def weights(self, x):
        return x[self.blocks["w"]]

    def covariates_read(self, available):
        """The covariate names the model reads (from ``available``): its covariate effects, its
        covariate network's inputs, and every covariate when ``individual`` takes ``(q, cov)``."""
        if self._individual_cov:
            return list(available)
        names = [c for _, c, _ in self.covariates]
        if self.covariate_network is not None:
            names += list(self.covariate_network.inputs)
        return list(dict.fromkeys(names))

    # ------------------------------------------------------------------ individual parameters

    @staticmethod
    def _baseline(subjects, c, why):
        vals = []
        for s in subjects:
            if c not in s.covariates and c != "DOSE":  # (DOSE: the first dose's amount without a column)
                if c in getattr(subjects, "text_columns", ()):
                    raise ValueError(
                        f"covariate {c!r} is a text column of the data, left out when it was read; map "
                        f"it to numbers with sc.pk.read_data(..., categorical={{{c!r}: {{...}}}}); {why}"
                    )
                raise ValueError(f"subject {s.id} has no covariate {c!r} (it has {list(s.covariates)}); {why}")
            vals.append(float(s.covariate(c)))
        vals = np.asarray(vals)
        if not np.all(np.isfinite(vals)):
            raise ValueError(f"covariate {c!r} is missing (NaN) for some subjects; {why}")
        return vals

    def _category(self, vals, k, c, form, ids):
        """1 where ``vals`` equal the level of ``form`` ("cat=<level>"), else 0; a value not among
        the effect's levels is a ValueError naming the subject."""
        levels = self.covariate_levels[(self.theta_names[k], c)]
        bad = ~np.isin(vals, levels)
        if np.any(bad):
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"subject {ids[min(i, len(ids) - 1)]}: {c} = {vals[i]:g} is not one of the levels {levels} of "
                f"the categorical effect {self.theta_names[k]}~{c}; add the level or recode the covariate"
            )
        return (vals == float(form[4:])).astype(float)

    def covariate_design(self, subjects):
        """Per subject: the covariate columns X (n_subjects, n_beta), the covariate network's
        standardised inputs Z (n_subjects, n_inputs), and the references used {name: value}
        (for the network: {name: (mean, sd)})."""
        refs = {}
        X = np.zeros((len(subjects), len(self.covariates)))
        for j, (k, c, form) in enumerate(self.covariates):
            vals = self._baseline(subjects, c, f"the model uses {self.theta_names[k]}~{c}")
            if form.startswith("cat="):
                X[:, j] = self._category(vals, k, c, form, [s.id for s in subjects])
                continue
            ref = float(self.covariate_ref.get(c, np.median(vals)))
            refs[c] = ref
            if form == "power":  # ("exp" and "linear": c - ref)
                if np.any(vals <= 0) or ref <= 0:
                    raise ValueError(
                        f"a power covariate effect needs positive values: {c!r} has {vals.min():g} (use form 'exp')"
                    )
                X[:, j] = np.log(vals / ref)
            else:
                X[:, j] = vals - ref
        cn = self.covariate_network
        Z = np.zeros((len(subjects), 0 if cn is None else len(cn.inputs)))
        if cn is not None:
            for j, c in enumerate(cn.inputs):
                vals = self._baseline(subjects, c, "the covariate network reads it")
                mean, sd = self.covariate_ref.get("network " + c, (float(vals.mean()), float(vals.std())))
                sd = sd if sd > 0 else 1.0
                refs["network " + c] = (mean, sd)
                Z[:, j] = (vals - mean) / sd
        return X, Z, refs

    def design_row(self, cov, refs):
        """One subject's covariate design (X row, Z row) at covariate values ``cov`` {name: value},
        with the references ``refs`` of :meth:`covariate_design` (time-varying covariates)."""
        X = np.zeros(len(self.covariates))
        for j, (k, c, form) in enumerate(self.covariates):
            v = float(cov[c])
            if form.startswith("cat="):
                X[j] = self._category(np.array([v]), k, c, form, ["(a record)"])[0]
                continue
            if form == "power":
                if not v > 0:
                    raise ValueError(
                        f"a power covariate effect needs positive values: {c!r} is {v:g} on a record (use form 'exp')"
                    )
                X[j] = np.log(v / refs[c])
            else:
                X[j] = v - refs[c]
        cn = self.covariate_network
        Z = np.zeros(0 if cn is None else len(cn.inputs))
        for j, c in enumerate(() if cn is None else cn.inputs):
            mean, sd = refs["network " + c]
            Z[j] = (float(cov[c]) - mean) / sd
        return X, Z

    def effect_terms(self, X, beta):
        """Each covariate effect's term in log q at the design values ``X`` (any shape ending in
        n_beta): beta X, or log(1 + beta X) for a linear effect (NaN where 1 + beta X <= 0)."""
        T = X * beta
        if self.linear_effects.any():
            with np.errstate(invalid="ignore", divide="ignore"):
                lin = np.log1p(T[..., self.linear_effects])
            T[..., self.linear_effects] = np.where(1.0 + T[..., self.linear_effects] > 0, lin, np.nan)
        return T

    def effect_derivatives(self, X, beta):
        """d/dbeta of :meth:`effect_terms`: X, or X / (1 + beta X) for a linear effect."""
        if not self.linear_effects.any():
            return X
        D = np.array(X, dtype=float, copy=True)
        Xl = D[..., self.linear_effects]
        D[..., self.linear_effects] = Xl / (1.0 + Xl * beta[self.linear_effects])
        return D

    def log_individual(self, x, C, z, eta):
        """A subject's log individual values log q = log theta + C beta + E eta (+ the covariate
        network's output; a linear effect adds log(1 + beta X) instead of beta X), ``C`` its
        covariate design (n_theta, n_beta), ``z`` its network inputs."""
        beta = x[self.blocks["beta"]]
        lq = x[self.blocks["theta"]] + self.effect_terms(C, beta).sum(axis=1) + self.E @ eta
        cn = self.covariate_network
        if cn is not None:
            lq[self.cn_targets] += cn.chain(np.asarray(z, dtype=float), np.ascontiguousarray(x[self.blocks["wc"]]))
        return lq

    def structural_params(self, logq, cov=None, jac=True):
        """(p_mech, dp_mech/dlogq (n_mech, n_theta)) from the log individual values (``cov``: the
        subject's baseline covariates, for an ``individual(q, cov)``); with dose parameters, p_mech
        and its rows continue with them (``param_names``).  ``jac=False``: the Jacobian may be
        None (with an ``individual``, whose complex-step passes are then skipped)."""
        if self.individual is None:
            P, J = self.structural_params_all(logq[None, :], None)
            return P[0], J[0]
        with np.errstate(over="ignore"):  # (an optimiser's trial step: inf parameters fail the solve cleanly)
            q = np.exp(logq)
        p = self._call_individual(q, cov)
        if not jac:
            return p.real.astype(float), None
        J = jacobian(lambda qz: self._call_individual(qz, cov), q, np.diag(q))  # d/dlogq = q d/dq
        return p.real.astype(float), J

    def structural_params_all(self, LOGQ, covs):
        """:meth:`structural_params` for every row of ``LOGQ`` (N, n_theta), ``covs`` the
        subjects' covariate dicts: (P (N, n_mech), J (N, n_mech, n_theta))."""
        if self.individual is None:
            with np.errstate(over="ignore"):  # (an optimiser's trial step: inf parameters fail the solve cleanly)
                P = np.exp(LOGQ[:, self._perm])
            J = np.zeros((LOGQ.shape[0], P.shape[1], LOGQ.shape[1]))
            J[:, self._perm_rows, self._perm] = P
            return P, J
        r = [self.structural_params(lq, c) for lq, c in zip(LOGQ, covs)]
        return np.array([a for a, _ in r]), np.array([b for _, b in r])

    def _call_individual(self, q, cov):
        qd = dict(zip(self.theta_names, q))
        out = self.individual(qd, cov or {}) if self._individual_cov else self.individual(qd)
        if not isinstance(out, dict):
            raise TypeError(f"`individual` must return a dict {{parameter: value}}, got {type(out).__name__}")
        try:
            return np.array([out[k] for k in self.param_names], dtype=q.dtype)
        except KeyError as e:
            raise ValueError(
                f"`individual` must return every parameter of {self.structural.name} "
                f"{self.structural.params} and the dose parameters in `dosing` {self.dose_params}; "
                f"{e} is missing"
            ) from None

    def __repr__(self):
        return (
            f"PopulationModel({self.structural.name}: theta {self.theta_names}, eta {self.eta_names} "
            f"({self.omega_kind}), {self.error.kind} error, {self.n_weights} network weights)"
        )
