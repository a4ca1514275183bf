"""Built-in compartment models, compiled as right-hand sides for the ODE solvers.

States are amounts; the outputs are functions of the state and the individual parameters
(a concentration: the central amount over its volume; an effect: an Emax function of the
effect-compartment concentration).  Every model's right-hand side is an ``@njit``
``f(du, u, p, t)`` with ``p`` the individual parameters in the model's order, so its exact
derivatives come from the package's complex-step kernels; outputs are NumPy expressions
differentiated the same way.

========================  =================================  =========================================
model                     parameters                         states (CMT = index + 1)
========================  =================================  =========================================
``one_cpt_iv()``          CL, V                              central
``one_cpt_oral()``        ka, CL, V                          depot, central
``two_cpt_iv()``          CL, V1, Q, V2                      central, peripheral
``two_cpt_oral()``        ka, CL, V1, Q, V2                  depot, central, peripheral
``three_cpt_iv()``        CL, V1, Q2, V2, Q3, V3             central, peripheral1, peripheral2
``three_cpt_oral()``      ka, CL, V1, Q2, V2, Q3, V3         depot, central, peripheral1, peripheral2
``one_cpt_oral_mm()``     ka, Vmax, Km, V                    depot, central
``one_cpt_oral_emax()``   ka, CL, V, ke0, E0, Emax, EC50     depot, central, effect
========================  =================================  =========================================

Output 1 (DVID 1) is the central concentration; ``one_cpt_oral_emax`` has output 2, the
effect E0 + Emax Ce / (EC50 + Ce), Ce the effect-compartment concentration (its amount
is in units of the central concentration: dCe/dt = ke0 (C - Ce)).
"""

from __future__ import annotations

import numba
import numpy as np

from .._complexstep import jacobian
from ..ode.problem import UDE, ODEFunction
from ..ode.symbolic import checked_derivatives, choose


def zero_output_init(chain, seed=0):
    """A chain's seeded float64 initial weights with the last layer zero (its output starts at 0)."""
    w = chain.init_params(seed=seed, dtype=np.float64)
    for a in list(chain.param_views(w).values())[-1]:
        a[...] = 0.0
    return w


class Ratio:
    """An output that is a state over a parameter (a concentration: amount / volume), with
    analytic derivatives: ``Ratio(state, param)`` is y = u[state] / p[param]."""

    def __init__(self, state, param):
        self.state, self.param = int(state), int(param)

    def __call__(self, u, p):
        return u[:, self.state] / p[self.param]

    def __repr__(self):
        return f"Ratio(state {self.state}, param {self.param})"


class CompartmentModel:
    """A compartment model: a compiled right-hand side, named parameters and states, outputs.

    Args:
        name: a label.
        f: ``@njit`` ``f(du, u, p, t)``, amounts, ``p`` the individual parameters in order; or a
            :class:`smallchains.UDE` whose mechanistic parameters are ``params`` (a model with
            a neural term: its weights follow the parameters in ``p``).
        params: parameter names.  states: state names (CMT k is state k - 1).
        outputs: one function ``y(u, p)`` per output (DVID 1, 2, ...), NumPy, vectorised over
            rows of ``u`` (shape (n_obs, n_states)); ``p`` a 1-D parameter vector; or a
            :class:`Ratio` (state / parameter, differentiated analytically).
        dose_cmt: the default dosing compartment (1-based).
        derivatives: how the solver differentiates ``f``: ``"auto"`` (symbolic when sympy can
            trace it, else complex step), ``"symbolic"`` (sympy-generated code, checked against
            complex step at a random point) or ``"complex step"``.  Measured
            (``benchmarks/model_derivatives.py``): generated vector-Jacobian products are 16-32x
            faster than complex steps on the built-in models, a subject's gradient 2.0-2.6x; both
            are exact to rounding.  ``model.derivatives`` says which was used.
        linear: for a linear model du/dt = A(p) u (inputs aside), an ``@njit`` ``rates(A, p)``
            filling A (n_states x n_states, every entry), written so that it also runs on
            complex arrays: the model is then solved exactly by matrix exponentials
            (:mod:`smallchains.pk.analytic`) instead of an ODE solver.  Checked here against
            ``f`` at random states and parameters.
    """

    def __init__(self, name, f, params, states, outputs, dose_cmt=1, derivatives="auto", linear=None):
        self.name = name
        self.params = list(params)
        self.states = list(states)
        self.outputs = list(outputs)
        self.dose_cmt = int(dose_cmt)
        if isinstance(f, UDE):
            mech = [k for k in f.slices if k != "network"]
            if mech != self.params or f.n_mech != len(self.params):
                raise ValueError(
                    f"the UDE's mechanistic parameters {mech} must be `params` {self.params} "
                    "(scalars, in the same order)"
                )
            if f.n_states != len(self.states):
                raise ValueError(f"the UDE has {f.n_states} states but `states` names {len(self.states)}")
            self.ode = f
            self.n_weights = f.chain.num_params
            self.derivatives = f.derivatives  # (the UDE's own choice: sc.UDE(..., derivatives=...))
        elif isinstance(f, ODEFunction):
            raise TypeError("give the model's @njit function f(du, u, p, t) or a sc.UDE, not an ODEFunction")
        else:
            sym, self.derivatives, why = choose(
                derivatives, lambda: checked_derivatives(f, len(self.states), len(self.params))
            )
            if why is not None:
                self.symbolic_error = why
            vjp, jvp = sym if sym is not None else (None, None)
            self.ode = ODEFunction(f, n_states=len(self.states), n_params=len(self.params), name=name, vjp=vjp, jvp=jvp)
            self.n_weights = 0
        self._ratios = all(isinstance(o, Ratio) for o in self.outputs)
        #: the rate-matrix function of a linear model (see ``linear``), or None
        self.linear = None
        if linear is not None:
            if self.n_weights:
                raise ValueError("`linear`: a model with a neural term is not linear; leave `linear` out")
            _check_linear(linear, f, len(self.states), len(self.params), name)
            self.linear = linear

    def rate_matrix(self, p, dA=None):
        """A(p) of a linear model; with ``dA`` (n_params, n, n) also fills dA/dp (complex steps)."""
        n, m = self.n_states, self.n_params
        A = np.zeros((n, n))
        self.linear(A, np.asarray(p[:m], dtype=np.float64))
        if dA is not None:

            def rates(pz):
                Az = np.zeros((n, n), dtype=np.complex128)
                self.linear(Az, np.ascontiguousarray(pz))
                return Az

            dA[:] = np.moveaxis(jacobian(rates, np.asarray(p[:m], dtype=np.float64)), -1, 0)
        return A

    def init_weights(self, seed=0):
        """The network's seeded initial weights, last layer zero (empty without a network).

        A zero last layer makes the network's output 0 at the start: write the neural term so
        that an output of 0 is the mechanistic model (e.g. a factor exp(y) or a term + y), and
        the fit starts from it."""
        if not self.n_weights:
            return np.zeros(0)
        return zero_output_init(self.ode.chain, seed)

    @property
    def n_states(self):
        return len(self.states)

    @property
    def n_params(self):
        return len(self.params)

    def param_vector(self, values, weights=None):
        """The solver's parameter vector from a dict {name: value} (every parameter) or a sequence in
        order, then the network's ``weights`` (a model with a neural term; else none)."""
        if isinstance(values, dict):
            missing = [k for k in self.params if k not in values]
            extra = [k for k in values if k not in self.params]
            if missing or extra:
                raise ValueError(f"{self.name} takes parameters {self.params}; missing {missing}, unknown {extra}")
            p = np.array([float(values[k]) for k in self.params])
        else:
            p = np.asarray(values, dtype=float).reshape(-1)
            if weights is None and self.n_weights and p.shape[0] == self.n_params + self.n_weights:
                return p
            if p.shape[0] != self.n_params:
                raise ValueError(f"{self.name} takes {self.n_params} parameters {self.params}, got {p.shape[0]}")
        if self.n_weights:
            if weights is None:
                raise ValueError(f"{self.name} has a network: give its {self.n_weights} `weights`")
            w = np.asarray(weights, dtype=float).reshape(-1)
            if w.shape[0] != self.n_weights:
                raise ValueError(f"`weights` must have {self.n_weights} entries, got {w.shape[0]}")
            p = np.concatenate([p, w])
        elif weights is not None and np.size(weights):
            raise ValueError(f"{self.name} has no network; `weights` must be None")
        return p

    def output(self, u, p, dvid):
        """Predictions for observations: ``u`` (n_obs, n_states), ``dvid`` (n_obs,) 1-based."""
        u = np.atleast_2d(np.asarray(u))
        dvid = np.asarray(dvid, dtype=np.int64).reshape(-1)
        y = np.empty(u.shape[0], dtype=np.result_type(u, p, float))
        for k, fn in enumerate(self.outputs, start=1):
            m = dvid == k
            if np.any(m):
                y[m] = fn(u[m], p)
        bad = (dvid < 1) | (dvid > len(self.outputs))
        if np.any(bad):
            raise ValueError(f"{self.name} has {len(self.outputs)} output(s); DVID {int(dvid[bad][0])} does not exist")
        return y

    def output_jacobians(self, u, p, dvid):
        """(y, dy/du (n_obs, n_states), dy/dp (n_obs, n_params)) by complex step (exact to rounding);
        analytic for :class:`Ratio` outputs.  ``dy/dp`` covers the named parameters (outputs do
        not depend on network weights)."""
        u = np.atleast_2d(np.asarray(u, dtype=float))
        p = np.asarray(p, dtype=float)
        if self._ratios:
            return self.ratio_jacobians(u, p, *self.ratio_indices(np.asarray(dvid, dtype=np.int64).reshape(-1)))
        y = self.output(u, p, dvid)
        cols = np.zeros((self.n_states, *u.shape))  # (state j of every row)
        for j in range(self.n_states):
            cols[j, :, j] = 1.0
        ju = jacobian(lambda uz: self.output(uz, p, dvid), u, cols)
        jp = jacobian(lambda pz: self.output(u, pz, dvid), p, np.eye(p.shape[0])[: self.n_params])
        return y, ju, jp

    def ratio_indices(self, dvid):
        """For :class:`Ratio` outputs: (state, parameter) index arrays of observations ``dvid``."""
        dvid = np.asarray(dvid, dtype=np.int64)
        bad = (dvid < 1) | (dvid > len(self.outputs))
        if np.any(bad):
            raise ValueError(f"{self.name} has {len(self.outputs)} output(s); DVID {int(dvid[bad][0])} does not exist")
        return (
            np.array([o.state for o in self.outputs], dtype=np.int64)[dvid - 1],
            np.array([o.param for o in self.outputs], dtype=np.int64)[dvid - 1],
        )

    def ratio_jacobians(self, u, p, st, pk):
        """(y, dy/du, dy/dp) of :class:`Ratio` outputs u[state] / p[param] at the rows of ``u``,
        ``st`` and ``pk`` from :meth:`ratio_indices`."""
        n = u.shape[0]
        rows = np.arange(n)
        vol = p[pk]
        y = u[rows, st] / vol
        ju = np.zeros((n, self.n_states))
        ju[rows, st] = 1.0 / vol
        jp = np.zeros((n, self.n_params))
        jp[rows, pk] = -y / vol
        return y, ju, jp

    def simulate(
        self,
        subject,
        p,
        times=None,
        rtol=1e-8,
        atol=1e-8,
        solver=None,
        ss_tol=None,
        weights=None,
        dosing=None,
        analytic=None,
    ):
        """Predicted outputs for a subject: at its observation times (and DVIDs), or all outputs
        at ``times``.  Returns (times, y) with y (n,) or (n, n_outputs).  Steady-state doses
        follow NONMEM's rules (:mod:`smallchains.pk.steady_state`, tolerance ``ss_tol``,
        default 10 * rtol); ``dosing``: NONMEM's dose parameters, e.g. ``{"ALAG1": 0.5, "F1":
        0.8}`` (:mod:`smallchains.pk.dosing`).  ``analytic``: solve exactly (a linear model:
        :mod:`smallchains.pk.analytic`); default when the model is linear, ``False`` for the ODE
        solver (dose parameters always take it)."""
        from .steady_state import PiecewiseSolve, plan

        if analytic and self.linear is None:
            raise ValueError(f"analytic=True, but model {self.name!r} is not linear (no `linear` rate matrix)")
        exact = self if (self.linear is not None and analytic is not False) else None

        p = self.param_vector(p, weights)
        if times is None:
            ts, dvid = subject.obs_time, subject.dvid
        else:
            ts = np.asarray(times, dtype=float)
            dvid = None
        if ts.size == 0:
            return ts, np.zeros(0)
        order = np.argsort(ts, kind="stable")
        solve_kw = dict(rtol=rtol, atol=atol, solver=solver)
        u = np.empty((ts.shape[0], self.n_states))
        if dosing:
            u[order] = self._simulate_dosing(subject, p, ts[order], dosing, solve_kw)
            return self._outputs(u, p, ts, dvid)
        pieces = plan(subject.doses, subject.first_time, ts[order], self.n_states)
        u[order] = PiecewiseSolve(
            self.ode,
            self.n_states,
            pieces,
            ts[order],
            p,
            solve_kw,
            ss_tol=10 * rtol if ss_tol is None else ss_tol,
            check=False,
            exact=exact,
        ).solve(p)
        return self._outputs(u, p, ts, dvid)

    def _outputs(self, u, p, ts, dvid):
        if dvid is not None:
            return ts, self.output(u, p, dvid)
        Y = np.stack([self.output(u, p, np.full(ts.shape[0], k)) for k in range(1, len(self.outputs) + 1)], axis=1)
        return ts, (Y[:, 0] if Y.shape[1] == 1 else Y)

    def _simulate_dosing(self, subject, p, ts, dosing, solve_kw):
        """The states at ``ts`` (sorted) with doses that follow dose parameters (one solve)."""
        from ..ode.recording import Recording
        from ..ode.sensitivity import DiscreteAdjoint
        from .dosing import SubjectDosing, parse

        index = parse(list(dosing))
        sd = SubjectDosing(subject.doses, index, self.n_states)
        pd = np.array([float(v) for v in dosing.values()])
        t0 = subject.first_time
        if ts[0] < t0:
            raise ValueError(f"`times` must not start before the subject's first record ({t0:g})")
        rec = Recording(
            self.ode,
            np.zeros(self.n_states),
            (t0, max(ts[-1], t0)),
            p,
            sensitivity=DiscreteAdjoint(),
            check_derivatives=False,
            **dict(solve_kw, saveat=ts, jumps=sd.jumps),
        )
        tj, vj, _, _ = sd.evaluate(pd)
        rec.move_jumps(tj, vj)
        return rec.forward(np.ascontiguousarray(p, dtype=np.float64)).copy()

    def __repr__(self):
        return f"CompartmentModel({self.name}: params {self.params}, states {self.states})"


def _check_linear(rates, f, n, m, name):
    """``rates`` must be a compiled function whose A(p) u is f(u, p) at random points (real and complex)."""
    if not hasattr(rates, "py_func"):
        raise TypeError(f"`linear` must be an @numba.njit function rates(A, p), got {type(rates).__name__}")
    rng = np.random.default_rng(12345)
    for _ in range(3):
        p = rng.uniform(0.5, 2.0, m)
        u = rng.uniform(0.5, 2.0, n)
        A = np.zeros((n, n))
        try:
            rates(A, p)
            Ac = np.zeros((n, n), dtype=np.complex128)
            rates(Ac, p.astype(np.complex128))
        except Exception as e:
            raise ValueError(f"model {name!r}: `linear` rates(A, p) failed on real or complex arrays: {e}") from e
        du = np.zeros(n)
        f(du, u, p, 0.0)
        if not np.allclose(A @ u, du, rtol=1e-12, atol=1e-12 * np.abs(du).max()):
            raise ValueError(
                f"model {name!r}: `linear` A(p) u = {A @ u} but f(u, p) = {du} at p = {p}, u = {u}: "
                "the rate matrix must be the model's (f linear in u, without inputs)"
            )


# --------------------------------------------------------------------------- right-hand sides


@numba.njit
def _one_cpt_iv(du, u, p, t):
    du[0] = -p[0] / p[1] * u[0]


@numba.njit
def _one_cpt_oral(du, u, p, t):
    du[0] = -p[0] * u[0]
    du[1] = p[0] * u[0] - p[1] / p[2] * u[1]


@numba.njit
def _two_cpt_iv(du, u, p, t):
    c1 = u[0] / p[1]
    c2 = u[1] / p[3]
    du[0] = -p[0] * c1 - p[2] * (c1 - c2)
    du[1] = p[2] * (c1 - c2)


@numba.njit
def _two_cpt_oral(du, u, p, t):
    c1 = u[1] / p[2]
    c2 = u[2] / p[4]
    du[0] = -p[0] * u[0]
    du[1] = p[0] * u[0] - p[1] * c1 - p[3] * (c1 - c2)
    du[2] = p[3] * (c1 - c2)


@numba.njit
def _one_cpt_oral_mm(du, u, p, t):
    c = u[1] / p[3]
    du[0] = -p[0] * u[0]
    du[1] = p[0] * u[0] - p[1] * c / (p[2] + c)


@numba.njit
def _one_cpt_oral_emax(du, u, p, t):
    du[0] = -p[0] * u[0]
    du[1] = p[0] * u[0] - p[1] / p[2] * u[1]
    du[2] = p[3] * (u[1] / p[2] - u[2])


@numba.njit(cache=True)
def _one_cpt_iv_rates(A, p):
    A[0, 0] = -p[0] / p[1]


@numba.njit(cache=True)
def _one_cpt_oral_rates(A, p):
    A[0, 0] = -p[0]
    A[0, 1] = 0.0
    A[1, 0] = p[0]
    A[1, 1] = -p[1] / p[2]


@numba.njit(cache=True)
def _two_cpt_iv_rates(A, p):
    A[0, 0] = -(p[0] + p[2]) / p[1]
    A[0, 1] = p[2] / p[3]
    A[1, 0] = p[2] / p[1]
    A[1, 1] = -p[2] / p[3]


@numba.njit(cache=True)
def _two_cpt_oral_rates(A, p):
    for i in range(3):
        for j in range(3):
            A[i, j] = 0.0
    A[0, 0] = -p[0]
    A[1, 0] = p[0]
    A[1, 1] = -(p[1] + p[3]) / p[2]
    A[1, 2] = p[3] / p[4]
    A[2, 1] = p[3] / p[2]
    A[2, 2] = -p[3] / p[4]


@numba.njit
def _three_cpt_iv(du, u, p, t):  # p = CL, V1, Q2, V2, Q3, V3
    c1 = u[0] / p[1]
    c2 = u[1] / p[3]
    c3 = u[2] / p[5]
    du[0] = -p[0] * c1 - p[2] * (c1 - c2) - p[4] * (c1 - c3)
    du[1] = p[2] * (c1 - c2)
    du[2] = p[4] * (c1 - c3)


@numba.njit
def _three_cpt_oral(du, u, p, t):  # p = ka, CL, V1, Q2, V2, Q3, V3
    c1 = u[1] / p[2]
    c2 = u[2] / p[4]
    c3 = u[3] / p[6]
    du[0] = -p[0] * u[0]
    du[1] = p[0] * u[0] - p[1] * c1 - p[3] * (c1 - c2) - p[5] * (c1 - c3)
    du[2] = p[3] * (c1 - c2)
    du[3] = p[5] * (c1 - c3)


@numba.njit(cache=True)
def _three_cpt_iv_rates(A, p):
    for i in range(3):
        for j in range(3):
            A[i, j] = 0.0
    A[0, 0] = -(p[0] + p[2] + p[4]) / p[1]
    A[0, 1] = p[2] / p[3]
    A[0, 2] = p[4] / p[5]
    A[1, 0] = p[2] / p[1]
    A[1, 1] = -p[2] / p[3]
    A[2, 0] = p[4] / p[1]
    A[2, 2] = -p[4] / p[5]


@numba.njit(cache=True)
def _three_cpt_oral_rates(A, p):
    for i in range(4):
        for j in range(4):
            A[i, j] = 0.0
    A[0, 0] = -p[0]
    A[1, 0] = p[0]
    A[1, 1] = -(p[1] + p[3] + p[5]) / p[2]
    A[1, 2] = p[3] / p[4]
    A[1, 3] = p[5] / p[6]
    A[2, 1] = p[3] / p[2]
    A[2, 2] = -p[3] / p[4]
    A[3, 1] = p[5] / p[2]
    A[3, 3] = -p[5] / p[6]


@numba.njit(cache=True)
def _one_cpt_oral_emax_rates(A, p):
    for i in range(3):
        for j in range(3):
            A[i, j] = 0.0
    A[0, 0] = -p[0]
    A[1, 0] = p[0]
    A[1, 1] = -p[1] / p[2]
    A[2, 1] = p[3] / p[2]
    A[2, 2] = -p[3]


def one_cpt_iv(derivatives="auto"):
    return CompartmentModel(
        "one_cpt_iv",
        _one_cpt_iv,
        ["CL", "V"],
        ["central"],
        [Ratio(0, 1)],
        derivatives=derivatives,
        linear=_one_cpt_iv_rates,
    )


def one_cpt_oral(derivatives="auto"):
    return CompartmentModel(
        "one_cpt_oral",
        _one_cpt_oral,
        ["ka", "CL", "V"],
        ["depot", "central"],
        [Ratio(1, 2)],
        derivatives=derivatives,
        linear=_one_cpt_oral_rates,
    )


def two_cpt_iv(derivatives="auto"):
    return CompartmentModel(
        "two_cpt_iv",
        _two_cpt_iv,
        ["CL", "V1", "Q", "V2"],
        ["central", "peripheral"],
        [Ratio(0, 1)],
        derivatives=derivatives,
        linear=_two_cpt_iv_rates,
    )


def two_cpt_oral(derivatives="auto"):
    return CompartmentModel(
        "two_cpt_oral",
        _two_cpt_oral,
        ["ka", "CL", "V1", "Q", "V2"],
        ["depot", "central", "peripheral"],
        [Ratio(1, 2)],
        derivatives=derivatives,
        linear=_two_cpt_oral_rates,
    )


def three_cpt_iv(derivatives="auto"):
    return CompartmentModel(
        "three_cpt_iv",
        _three_cpt_iv,
        ["CL", "V1", "Q2", "V2", "Q3", "V3"],
        ["central", "peripheral1", "peripheral2"],
        [Ratio(0, 1)],
        derivatives=derivatives,
        linear=_three_cpt_iv_rates,
    )


def three_cpt_oral(derivatives="auto"):
    return CompartmentModel(
        "three_cpt_oral",
        _three_cpt_oral,
        ["ka", "CL", "V1", "Q2", "V2", "Q3", "V3"],
        ["depot", "central", "peripheral1", "peripheral2"],
        [Ratio(1, 2)],
        derivatives=derivatives,
        linear=_three_cpt_oral_rates,
    )


def one_cpt_oral_mm(derivatives="auto"):
    return CompartmentModel(
        "one_cpt_oral_mm",
        _one_cpt_oral_mm,
        ["ka", "Vmax", "Km", "V"],
        ["depot", "central"],
        [Ratio(1, 3)],
        derivatives=derivatives,
    )


def one_cpt_oral_emax(derivatives="auto"):
    return CompartmentModel(
        "one_cpt_oral_emax",
        _one_cpt_oral_emax,
        ["ka", "CL", "V", "ke0", "E0", "Emax", "EC50"],
        ["depot", "central", "effect"],
        [Ratio(1, 2), lambda u, p: p[4] + p[5] * u[:, 2] / (p[6] + u[:, 2])],
        derivatives=derivatives,
        linear=_one_cpt_oral_emax_rates,
    )


MODELS = {
    f.__name__: f
    for f in (
        one_cpt_iv,
        one_cpt_oral,
        two_cpt_iv,
        two_cpt_oral,
        three_cpt_iv,
        three_cpt_oral,
        one_cpt_oral_mm,
        one_cpt_oral_emax,
    )
}
