"""Gradients of losses on ODE solutions: every sensitivity method against central finite differences
(of the discrete solution for the discrete adjoint, of a tight-tolerance solve for the others), with
doses, infusions, resets and save points on and between steps; neural ODEs and UDEs; errors."""

from __future__ import annotations

import numba
import numpy as np
import pytest

import smallchains as sc
from smallchains.ode import _adjoint as ADJ
from smallchains.ode import _kernels as RK


@numba.njit
def nonlin(du, u, p, t):
    du[0] = p[0] * u[0] + p[1] * u[1] * u[1] + np.sin(t)
    du[1] = p[2] * u[0] - p[3] * u[1] * np.exp(-0.1 * u[0])


@numba.njit
def nonlin_vjp(lu, lp, v, u, p, t):
    e = np.exp(-0.1 * u[0])
    lu[0] = v[0] * p[0] + v[1] * (p[2] + 0.1 * p[3] * u[1] * e)
    lu[1] = v[0] * 2.0 * p[1] * u[1] - v[1] * p[3] * e
    lp[0] += v[0] * u[0]
    lp[1] += v[0] * u[1] * u[1]
    lp[2] += v[1] * u[0]
    lp[3] -= v[1] * u[1] * e


@numba.njit
def pk2(du, u, p, t):
    """Depot -> central (ka = p[0]), saturable elimination vmax p[1], km p[2]."""
    du[0] = -p[0] * u[0]
    du[1] = p[0] * u[0] - p[1] * u[1] / (p[2] + u[1])


U0 = np.array([1.0, 0.5])
P = np.array([-0.5, 0.3, 0.8, 0.7])
TS = np.linspace(0.0, 3.0, 13)  # includes t0, and times on and between steps
DATA = np.random.default_rng(0).normal(size=(13, 2))


def central_fd(fun, x, eps=1e-6):
    g = np.zeros_like(x)
    for k in range(x.shape[0]):
        a = x.copy()
        b = x.copy()
        a[k] += eps
        b[k] -= eps
        g[k] = (fun(a) - fun(b)) / (2 * eps)
    return g


def rel(a, b):
    """Relative difference; gradients here are O(1-100), so below 1e-3 it is absolute (FD noise is ~1e-11)."""
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-3)


def check_against_fd(gf, p, u0, tol):
    v, gp, gu = gf(p, u0)
    assert np.isfinite(v)
    fp = central_fd(lambda q: gf.value(q, u0), p)
    fu = central_fd(lambda q: gf.value(p, q), u0)
    assert rel(gp, fp) < tol, (gp, fp)
    assert rel(gu, fu) < tol, (gu, fu)
    return gp, gu


EXACT = [sc.DiscreteAdjoint(), sc.ForwardSensitivity()]  # exact for the discrete solution
ALL = [sc.DiscreteAdjoint(), sc.InterpolatingAdjoint(), sc.BacksolveAdjoint(), sc.ForwardSensitivity()]


def check_method(make, sens, p, u0, dt):
    """One gradient check: ``make(**kw)`` builds a gradient function for a problem.

    Exact methods (discrete adjoint, forward sensitivities) with fixed steps ``dt`` against
    central differences of the same discrete solution (1e-7); the continuous adjoints,
    adaptive at 1e-10, against differences of a Vern7 solve at 1e-12 (1e-5).
    """
    if isinstance(sens, (sc.DiscreteAdjoint, sc.ForwardSensitivity)):
        return check_against_fd(make(sensitivity=sens, dt=dt), p, u0, 1e-7)
    tight = make(sensitivity=sc.DiscreteAdjoint(), solver=sc.Vern7(), rtol=1e-12, atol=1e-12)
    fp = central_fd(lambda q: tight.value(q, u0), p, 1e-5)
    fu = central_fd(lambda q: tight.value(p, q), u0, 1e-5)
    _, gp, gu = make(sensitivity=sens, rtol=1e-10, atol=1e-10)(p, u0)
    assert rel(gp, fp) < 1e-5, (gp, fp)
    assert rel(gu, fu) < 1e-5, (gu, fu)
    return gp, gu


def dosing():
    return sc.Jumps().bolus(1.0, 0, 2.0, scale_param=1).infusion(0.5, 1, 1.0, 1.3).set(2.2, 1, 0.4).bolus(1.5, 1, -0.3)


# --------------------------------------------------------------------------- the discrete adjoint

FIXED = [
    (sc.Tsit5(), 0.05),
    (sc.DP5(), 0.1),
    (sc.BS3(), 0.05),
    (sc.Vern7(), 0.1),
    (sc.RK4(), 0.07),
    (sc.Heun(), 0.02),
    (sc.Euler(), 0.01),
]


@pytest.mark.parametrize("solver,dt", FIXED, ids=[s.name for s, _ in FIXED])
@pytest.mark.parametrize("store", ["stages", "states"])
def test_discrete_adjoint_is_the_gradient_of_the_discrete_solution(solver, dt, store):
    """Fixed steps: finite differences see the same step sequence, so the agreement is ~1e-9."""
    gf = sc.gradient_function(
        DATA,
        nonlin,
        U0,
        (0.0, 3.0),
        P,
        saveat=TS,
        solver=solver,
        dt=dt,
        jumps=dosing(),
        sensitivity=sc.DiscreteAdjoint(store=store),
    )
    check_against_fd(gf, P, U0, 1e-7)


@pytest.mark.parametrize("solver,dt", FIXED, ids=[s.name for s, _ in FIXED])
def test_forward_sensitivity_is_the_gradient_of_the_discrete_solution(solver, dt):
    gf = sc.gradient_function(
        DATA,
        nonlin,
        U0,
        (0.0, 3.0),
        P,
        saveat=TS,
        solver=solver,
        dt=dt,
        jumps=dosing(),
        sensitivity=sc.ForwardSensitivity(),
    )
    check_against_fd(gf, P, U0, 1e-7)


def test_store_modes_agree_to_rounding():
    out = []
    for store in ("stages", "states"):
        gf = sc.gradient_function(
            DATA, nonlin, U0, (0.0, 3.0), P, saveat=TS, jumps=dosing(), sensitivity=sc.DiscreteAdjoint(store=store)
        )
        out.append(gf(P))
    assert out[0][0] == out[1][0]
    np.testing.assert_allclose(out[0][1], out[1][1], rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(out[0][2], out[1][2], rtol=1e-13, atol=1e-14)


def test_auto_store_falls_back_to_states_under_a_small_budget():
    gf = sc.gradient_function(
        DATA, nonlin, U0, (0.0, 3.0), P, saveat=TS, sensitivity=sc.DiscreteAdjoint(max_memory=2000)
    )
    v, gp, gu = gf(P)
    assert gf.recording._mode == RK.STORE_STATES
    ref = sc.gradient_function(DATA, nonlin, U0, (0.0, 3.0), P, saveat=TS, sensitivity=sc.DiscreteAdjoint())(P)
    assert ref[0] == v
    np.testing.assert_allclose(gp, ref[1], rtol=1e-13)
    with pytest.raises(MemoryError, match="max_memory"):
        sc.gradient_function(
            DATA, nonlin, U0, (0.0, 3.0), P, saveat=TS, sensitivity=sc.DiscreteAdjoint(max_memory=100)
        )(P)


@pytest.mark.parametrize("solver", [sc.Tsit5(), sc.DP5(), sc.BS3(), sc.Vern7()], ids=lambda s: s.name)
@pytest.mark.parametrize("sens", ALL, ids=lambda s: type(s).__name__)
def test_adaptive_gradients_match_the_exact_gradient(solver, sens):
    """Adaptive steps: against finite differences of a tight-tolerance solve (the true gradient)."""
    tight = sc.gradient_function(
        DATA,
        nonlin,
        U0,
        (0.0, 3.0),
        P,
        saveat=TS,
        jumps=dosing(),
        solver=sc.Vern7(),
        rtol=1e-12,
        atol=1e-12,
        sensitivity=sc.DiscreteAdjoint(),
    )
    fp = central_fd(lambda q: tight.value(q), P, 1e-5)
    fu = central_fd(lambda q: tight.value(P, q), U0, 1e-5)
    gf = sc.gradient_function(
        DATA,
        nonlin,
        U0,
        (0.0, 3.0),
        P,
        saveat=TS,
        jumps=dosing(),
        solver=solver,
        rtol=1e-9,
        atol=1e-9,
        sensitivity=sens,
    )
    _, gp, gu = gf(P)
    assert rel(gp, fp) < 1e-5
    assert rel(gu, fu) < 1e-5


def test_methods_agree_with_each_other():
    out = [
        sc.gradient_function(
            DATA, nonlin, U0, (0.0, 3.0), P, saveat=TS, jumps=dosing(), rtol=1e-10, atol=1e-10, sensitivity=s
        )(P)
        for s in ALL
    ]
    for v, gp, gu in out[1:]:
        assert v == pytest.approx(out[0][0], rel=1e-8)
        assert rel(gp, out[0][1]) < 1e-6
        assert rel(gu, out[0][2]) < 1e-6


@pytest.mark.parametrize("sens", ALL, ids=lambda s: type(s).__name__)
def test_backwards_in_time(sens):
    ts = np.linspace(3.0, 0.0, 7)
    jumps = sc.Jumps().bolus(1.0, 0, 2.0, scale_param=1).input(2.0, 1, 1.0).input(1.5, 1, -1.0)

    def make(**kw):
        return sc.gradient_function(DATA[:7], nonlin, U0, (3.0, 0.0), P, saveat=ts, jumps=jumps, **kw)

    check_method(make, sens, P, U0, 0.05)


@pytest.mark.parametrize("sens", ALL, ids=lambda s: type(s).__name__)
def test_reset_zeroes_the_sensitivity_to_the_past(sens):
    ts = np.array([2.0, 2.5, 3.0])  # after the reset only
    p = np.array([1.2, 0.8, 0.5])

    def make(**kw):
        return sc.gradient_function(
            sc.SquaredError(np.ones((3, 1)), states=[1]),
            pk2,
            [0.0, 0.0],
            (0.0, 3.0),
            p,
            saveat=ts,
            jumps=sc.Jumps().bolus(0.0, 0, 5.0).reset(1.5).bolus(1.5, 0, 3.0, scale_param=2),
            **kw,
        )

    _, gp, gu = make(sensitivity=sens, dt=0.01)(p)
    np.testing.assert_array_equal(gu, 0.0)  # nothing before the reset matters
    check_method(make, sens, p, np.zeros(2), 0.01)


@pytest.mark.parametrize("sens", ALL, ids=lambda s: type(s).__name__)
def test_everything_at_once(sens):
    """Doses at t0 and at the end, a save at t0 and at dose times, a reset, an infusion across it."""
    p = np.array([1.2, 0.8, 0.5])
    u0 = np.array([0.3, 0.1])
    ts = np.array([0.0, 0.7, 1.5, 2.0, 2.5, 3.0])
    jumps = (
        sc.Jumps()
        .bolus(0.0, 0, 5.0, scale_param=2)
        .bolus(0.7, 1, 1.0)
        .reset(1.5)
        .bolus(1.5, 0, 3.0, scale_param=2)
        .infusion(1.0, 1, 2.0, 1.5)
        .bolus(3.0, 0, 1.0)
    )

    def make(**kw):
        return sc.gradient_function(np.ones((6, 2)), pk2, u0, (0.0, 3.0), p, saveat=ts, jumps=jumps, **kw)

    check_method(make, sens, p, u0, 0.01)


def test_dose_scale_parameter_gradient_and_observed_states():
    """A bioavailability-scaled oral dose, only the central compartment observed, NaN = missing."""
    data = np.array([[1.0], [np.nan], [2.0], [1.5], [np.nan], [0.7]])
    ts = np.array([0.5, 1.0, 2.0, 4.0, 6.0, 8.0])
    loss = sc.SquaredError(data, states=[1], weights=2.0)
    jumps = sc.Jumps().bolus(0.0, 0, 10.0, scale_param=3).bolus(4.0, 0, 10.0, scale_param=3)
    p = np.array([1.1, 2.0, 3.0, 0.6])

    @numba.njit
    def oral(du, u, p, t):
        du[0] = -p[0] * u[0]
        du[1] = p[0] * u[0] - p[1] * u[1] / (p[2] + u[1])

    gf = sc.gradient_function(loss, oral, [0.0, 0.0], (0.0, 8.0), p, saveat=ts, jumps=jumps, dt=0.02)
    gp, _ = check_against_fd(gf, p, np.zeros(2), 1e-7)
    assert gp[3] != 0.0
    v = gf.value(p)
    sol = sc.solve(oral, [0.0, 0.0], (0.0, 8.0), p, saveat=ts, jumps=jumps, dt=0.02)
    r = sol.u[:, 1] - data[:, 0]
    assert v == pytest.approx(2.0 * np.nansum(r * r), rel=1e-14)


def test_user_loss_callable():
    w = np.linspace(1, 2, 13)

    def loss(u, t):
        r = u[:, 0] * np.cos(t)
        return float(np.sum(w * r**2)), np.stack([2 * w * r * np.cos(t), np.zeros_like(r)], axis=1)

    gf = sc.gradient_function(loss, nonlin, U0, (0.0, 3.0), P, saveat=TS, dt=0.05)
    check_against_fd(gf, P, U0, 1e-7)
    bad = sc.gradient_function(lambda u, t: (0.0, np.zeros(3)), nonlin, U0, (0.0, 3.0), P, saveat=TS, dt=0.05)
    with pytest.raises(ValueError, match="gradient has shape"):
        bad(P)


def test_user_vjp_equals_complex_step():
    da = sc.DiscreteAdjoint()
    a = sc.gradient_function(DATA, nonlin, U0, (0.0, 3.0), P, saveat=TS, jumps=dosing(), sensitivity=da)(P)
    fn = sc.ODEFunction(nonlin, vjp=nonlin_vjp)
    b = sc.gradient_function(DATA, fn, U0, (0.0, 3.0), P, saveat=TS, jumps=dosing(), sensitivity=da)(P)
    assert a[0] == b[0]
    np.testing.assert_allclose(a[1], b[1], rtol=1e-12)
    np.testing.assert_allclose(a[2], b[2], rtol=1e-12)


def test_value_and_grad_one_call():
    v, gp, gu = sc.value_and_grad(DATA, nonlin, U0, (0.0, 3.0), P, saveat=TS, dt=0.05)
    gf = sc.gradient_function(DATA, nonlin, U0, (0.0, 3.0), P, saveat=TS, dt=0.05)
    v2, gp2, gu2 = gf(P)
    assert v == v2
    np.testing.assert_array_equal(gp, gp2)
    np.testing.assert_array_equal(gu, gu2)


# --------------------------------------------------------------------------- networks


def spiral_data(ts):
    @numba.njit
    def truth(du, u, p, t):
        du[0] = u[0] ** 3 * -0.1 + u[1] ** 3 * -2.0
        du[1] = u[0] ** 3 * 2.0 + u[1] ** 3 * -0.1

    return sc.solve(truth, [2.0, 0.0], (0.0, 1.5), saveat=ts, rtol=1e-10, atol=1e-10).u


@numba.njit
def cube(x, u, pm, t):
    for j in range(2):
        x[j] = u[j] ** 3


@numba.njit
def net_only(du, u, pm, t, y):
    du[0] = y[0]
    du[1] = y[1]


def test_neural_ode_gradient():
    ts = np.linspace(0, 1.5, 10)
    chain = sc.SimpleChain(2, sc.Dense(8, sc.tanh), sc.Dense(2))
    p = chain.init_params(seed=3, dtype=np.float64)
    gf = sc.gradient_function(spiral_data(ts), sc.NeuralODE(chain), [2.0, 0.0], (0.0, 1.5), p, saveat=ts, dt=0.05)
    check_against_fd(gf, p, np.array([2.0, 0.0]), 1e-7)


def test_ude_spiral_gradient_and_identity_to_neural_ode():
    ts = np.linspace(0, 1.5, 10)
    chain = sc.SimpleChain(2, sc.Dense(8, sc.tanh), sc.Dense(2))
    ude = sc.UDE(net_only, chain, n_states=2, features=cube)
    p = ude.init_params(seed=1)
    gf = sc.gradient_function(spiral_data(ts), ude, [2.0, 0.0], (0.0, 1.5), p, saveat=ts, dt=0.05)
    check_against_fd(gf, p, np.array([2.0, 0.0]), 1e-7)
    # without features, a UDE that returns y is the neural ODE
    ude2 = sc.UDE(net_only, chain, n_states=2)
    a = sc.gradient_function(spiral_data(ts), ude2, [2.0, 0.0], (0.0, 1.5), p, saveat=ts)(p)
    b = sc.gradient_function(spiral_data(ts), sc.NeuralODE(chain), [2.0, 0.0], (0.0, 1.5), p, saveat=ts)(p)
    assert a[0] == pytest.approx(b[0], rel=1e-14)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(a[2], b[2], rtol=1e-11)


def test_ude_with_mechanistic_parameters_and_doses():
    @numba.njit
    def pk(du, u, pm, t, y):
        du[0] = -pm[0] * u[0]
        du[1] = pm[0] * u[0] - pm[1] * u[1] / (1.0 + u[1]) + 0.1 * y[0]

    @numba.njit
    def feat(x, u, pm, t):
        x[0] = u[1] * pm[2]

    ude = sc.UDE(
        pk, sc.SimpleChain(1, sc.Dense(6, sc.tanh), sc.Dense(1)), n_states=2, params=["ka", "ke", "s"], features=feat
    )
    p = ude.init_params(seed=2, ka=1.1, ke=0.3, s=0.5)
    assert ude.unpack(p)["ka"] == 1.1 and ude.slices["network"].start == 3
    ts = np.linspace(0.5, 10, 12)
    gf = sc.gradient_function(
        sc.SquaredError(np.ones((12, 1)), states=[1]),
        ude,
        [0.0, 0.0],
        (0, 10),
        p,
        saveat=ts,
        dt=0.05,
        jumps=sc.Jumps().bolus(0, 0, 10.0).bolus(5, 0, 10.0),
    )
    check_against_fd(gf, p, np.zeros(2), 1e-7)
    with pytest.raises(KeyError, match="unknown parameter"):
        ude.pack(p, kk=1.0)
    with pytest.raises(ValueError, match="reserved"):
        sc.UDE(pk, sc.SimpleChain(1, sc.Dense(1)), n_states=2, params=["network"], features=feat)
    with pytest.raises(ValueError, match="features"):
        sc.UDE(pk, sc.SimpleChain(1, sc.Dense(1)), n_states=2)


# --------------------------------------------------------------------------- allocation, errors


def test_no_allocation_in_the_forward_and_reverse_kernels():
    from numba.core.runtime import _nrt_python, rtsys

    from smallchains.ode import _user as UK

    # compiled without Numba's runtime: an allocation inside would not even compile
    for fn in (
        RK.rk_solve,
        ADJ.rk_discrete_adjoint,
        ADJ.augmented_rhs,
        ADJ.squared_error,
        UK.user_rhs,
        UK.user_vjp,
        UK.user_jvp,
        UK.ude_rhs,
        UK.ude_vjp,
        UK.ude_jvp,
    ):
        assert fn.targetoptions.get("_nrt") is False, fn
    gf = sc.gradient_function(
        DATA, nonlin, U0, (0.0, 3.0), P, saveat=TS, jumps=dosing(), sensitivity=sc.DiscreteAdjoint()
    )
    gf(P)
    rec = gf.recording
    P_ = rec._P
    g = np.ones_like(rec.states)  # a loss gradient
    gp = np.zeros(4)
    lam = np.zeros(2)

    def kernels():  # (the recording's bound arguments, as its own passes call them)
        RK.rk_solve(*rec._fwd_a, P_.u0, P_.p, *rec._fwd_b)
        ADJ.rk_discrete_adjoint(
            *rec._adj_a, rec.end_time, P_.p, *rec._adj_b, g, lam, gp, *rec._adj_c, rec._jg
        )  # (jump derivatives too)

    kernels()
    enabled = _nrt_python.memsys_stats_enabled()
    _nrt_python.memsys_enable_stats()
    try:
        before = rtsys.get_allocation_stats()
        kernels()
        after = rtsys.get_allocation_stats()
    finally:
        if not enabled:
            _nrt_python.memsys_disable_stats()
    assert after.alloc == before.alloc and after.free == before.free
    assert np.all(np.isfinite(gp)) and np.any(gp != 0)


def test_bad_input():
    with pytest.raises(ValueError, match="saveat"):
        sc.gradient_function(DATA, nonlin, U0, (0.0, 3.0), P, saveat=None)
    with pytest.raises(ValueError, match="events"):
        sc.gradient_function(DATA, nonlin, U0, (0.0, 3.0), P, saveat=TS, event=numba.njit(lambda u, p, t: u[0]))
    with pytest.raises(TypeError, match="sensitivity"):
        sc.gradient_function(DATA, nonlin, U0, (0.0, 3.0), P, saveat=TS, sensitivity="adjoint")
    with pytest.raises(ValueError, match="rows"):
        sc.gradient_function(DATA[:5], nonlin, U0, (0.0, 3.0), P, saveat=TS)
    with pytest.raises(ValueError, match="columns"):
        sc.gradient_function(DATA[:, :1], nonlin, U0, (0.0, 3.0), P, saveat=TS)
    with pytest.raises(ValueError, match="states"):
        sc.gradient_function(sc.SquaredError(DATA[:, :1], states=[5]), nonlin, U0, (0.0, 3.0), P, saveat=TS)
    with pytest.raises(TypeError, match="loss"):
        sc.gradient_function("mse", nonlin, U0, (0.0, 3.0), P, saveat=TS)
    gf = sc.gradient_function(DATA, nonlin, U0, (0.0, 3.0), P, saveat=TS)
    with pytest.raises(ValueError, match="shape"):
        gf(np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        gf(np.full(4, np.nan))
    with pytest.raises(ValueError, match="u0"):
        gf(P, np.zeros(3))
    with pytest.raises(sc.MaxStepsError):
        sc.gradient_function(DATA, nonlin, U0, (0.0, 3.0), P, saveat=TS, max_steps=3)(P)
    with pytest.raises(ValueError, match="store"):
        sc.DiscreteAdjoint(store="everything")


def test_complex_step_refuses_a_non_analytic_rhs():
    @numba.njit
    def kinked(du, u, p, t):
        du[0] = -p[0] * u[0] if u[0] > 0 else 0.0

    with pytest.raises(TypeError, match="complex arrays"):
        sc.gradient_function(np.zeros((3, 1)), kinked, [1.0], (0.0, 1.0), [1.0], saveat=[0.2, 0.5, 1.0])


def test_derivative_check_catches_abs_and_a_wrong_vjp():
    @numba.njit
    def with_abs(du, u, p, t):
        du[0] = -p[0] * abs(u[0])

    with pytest.raises(ValueError, match="complex-step"):
        sc.gradient_function(np.zeros((3, 1)), with_abs, [1.0], (0.0, 1.0), [1.0], saveat=[0.2, 0.5, 1.0])

    @numba.njit
    def wrong_vjp(lu, lp, v, u, p, t):
        nonlin_vjp(lu, lp, v, u, p, t)
        lp[2] += 0.1 * v[1]

    with pytest.raises(ValueError, match=r"du/dp\[2\]"):
        sc.gradient_function(
            DATA, sc.ODEFunction(nonlin, vjp=wrong_vjp), U0, (0.0, 3.0), P, saveat=TS, sensitivity=sc.DiscreteAdjoint()
        )

    @numba.njit
    def wrong_jvp(out, u, p, t, du, dp):
        out[0] = du[0]
        out[1] = du[1] + dp[0]

    with pytest.raises(ValueError, match="Jacobian-vector product of nonlin from the supplied jvp"):
        sc.gradient_function(
            DATA,
            sc.ODEFunction(nonlin, jvp=wrong_jvp),
            U0,
            (0.0, 3.0),
            P,
            saveat=TS,
            sensitivity=sc.ForwardSensitivity(),
        )
    # the check can be skipped
    sc.gradient_function(
        DATA, sc.ODEFunction(nonlin, vjp=wrong_vjp), U0, (0.0, 3.0), P, saveat=TS, check_derivatives=False
    )


@numba.njit
def nonlin_jvp(out, u, p, t, du, dp):
    e = np.exp(-0.1 * u[0])
    out[0] = p[0] * du[0] + 2.0 * p[1] * u[1] * du[1] + dp[0] * u[0] + dp[1] * u[1] * u[1]
    out[1] = (p[2] + 0.1 * p[3] * u[1] * e) * du[0] - p[3] * e * du[1] + dp[2] * u[0] - dp[3] * u[1] * e


def test_user_jvp_equals_complex_step():
    fs = sc.ForwardSensitivity()
    a = sc.gradient_function(DATA, nonlin, U0, (0.0, 3.0), P, saveat=TS, jumps=dosing(), sensitivity=fs)(P)
    b = sc.gradient_function(
        DATA, sc.ODEFunction(nonlin, jvp=nonlin_jvp), U0, (0.0, 3.0), P, saveat=TS, jumps=dosing(), sensitivity=fs
    )(P)
    assert a[0] == pytest.approx(b[0], rel=1e-13)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-11)
    np.testing.assert_allclose(a[2], b[2], rtol=1e-11)


def test_automatic_choice():
    assert isinstance(sc.ode.auto_sensitivity(2, 4), sc.DiscreteAdjoint)
    gf = sc.gradient_function(DATA, nonlin, U0, (0.0, 3.0), P, saveat=TS)
    assert isinstance(gf.sensitivity, sc.DiscreteAdjoint)


def test_complex_step_of_integer_powers_of_negative_states():
    """Numba's own complex z ** 3 goes through exp/log and loses the 1e-30 perturbation."""

    @numba.njit
    def powers(du, u, p, t):
        du[0] = p[0] * u[0] ** 3 + u[1] ** 2
        du[1] = p[1] * u[1] ** -3 + u[0] ** 5

    fn = sc.ODEFunction(powers)
    fn.vjp_addr  # noqa: B018
    u = np.array([-1.5, -0.7])
    p = np.array([0.3, 0.2])
    v = np.array([0.4, -1.1])
    lu, lp = np.zeros(2), np.zeros(2)
    fn.vjp(lu, lp, v, u, p, 0.0, fn.iw, fn.workspace(2, 2))
    J_u = np.array([[3 * p[0] * u[0] ** 2, 2 * u[1]], [5 * u[0] ** 4, -3 * p[1] * u[1] ** -4]])
    J_p = np.array([[u[0] ** 3, 0.0], [0.0, u[1] ** -3]])
    np.testing.assert_allclose(lu, v @ J_u, rtol=1e-14)
    np.testing.assert_allclose(lp, v @ J_p, rtol=1e-14)


def test_own_solver_example_matches_the_library_discrete_adjoint():
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "own_solver_ude.py")
    spec = importlib.util.spec_from_file_location("own_solver_ude", path)
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    loss, gp, ref, ref_gp = ex.main()
    assert loss == pytest.approx(ref, rel=1e-13)
    np.testing.assert_allclose(gp, ref_gp, rtol=1e-11, atol=1e-12 * np.abs(ref_gp).max())


# --------------------------------------------------------------------------- review findings


def test_nonfinite_start_and_nonfinite_steps_raise_instead_of_hanging():
    @numba.njit
    def nan_at_start(du, u, p, t):
        du[0] = np.sqrt(u[0] - 2.0)

    with pytest.raises(ValueError, match=r"returns du\[0\] = nan at t = 0"):  # the checked first call
        sc.solve(nan_at_start, [1.0], (0.0, 1.0))
    with pytest.raises(sc.NonFiniteStateError):  # and the solver itself, unchecked
        sc.solve(nan_at_start, [1.0], (0.0, 1.0), check=False)

    @numba.njit
    def nan_after(du, u, p, t):
        du[0] = np.sqrt(-t)  # finite at t = 0 only

    for dt0 in (None, 0.1):
        with pytest.raises(sc.NonFiniteStateError):
            sc.solve(nan_after, [1.0], (0.0, 1.0), dt0=dt0)


def test_derivative_check_enforces_overwrite_and_accumulate():
    @numba.njit
    def overwriting_vjp(lu, lp, v, u, p, t):  # lp[0] = ... where it must be lp[0] += ...
        e = np.exp(-0.1 * u[0])
        nonlin_vjp(lu, lp, v, u, p, t)
        lp[0] = v[0] * u[0]
        lu[1] = lu[1] + 0.0 * e

    with pytest.raises(ValueError, match="add to lp"):
        sc.gradient_function(
            DATA,
            sc.ODEFunction(nonlin, vjp=overwriting_vjp),
            U0,
            (0.0, 3.0),
            P,
            saveat=TS,
            sensitivity=sc.DiscreteAdjoint(),
        )

    @numba.njit
    def accumulating_jvp(out, u, p, t, du, dp):  # out += ... where it must overwrite
        tmp = np.zeros(2)
        nonlin_jvp(tmp, u, p, t, du, dp)
        out[0] += tmp[0]
        out[1] += tmp[1]

    with pytest.raises(ValueError, match="Jacobian-vector"):
        sc.gradient_function(
            DATA,
            sc.ODEFunction(nonlin, jvp=accumulating_jvp),
            U0,
            (0.0, 3.0),
            P,
            saveat=TS,
            sensitivity=sc.ForwardSensitivity(),
        )


@pytest.mark.parametrize("sens", ALL[1:], ids=lambda s: type(s).__name__)
def test_jumps_before_t0_in_every_method(sens):
    """An input switched on before t0 is in force at t0 (every method agrees); a bolus or a set
    before t0 has no solution to act on and is refused, naming its time."""
    ts = np.linspace(1.5, 4.0, 6)
    p = np.array([1.2, 0.8, 0.5])
    jumps = sc.Jumps().infusion(0.5, 0, 3.0, 2.0)  # on from 0.5 to 2.5
    kw = dict(saveat=ts, jumps=jumps, rtol=1e-10, atol=1e-10)
    ref = sc.gradient_function(np.ones((6, 2)), pk2, [0.3, 0.1], (1.0, 4.0), p, sensitivity=sc.DiscreteAdjoint(), **kw)(
        p
    )
    got = sc.gradient_function(np.ones((6, 2)), pk2, [0.3, 0.1], (1.0, 4.0), p, sensitivity=sens, **kw)(p)
    plain = sc.gradient_function(
        np.ones((6, 2)), pk2, [0.3, 0.1], (1.0, 4.0), p, sensitivity=sens, **dict(kw, jumps=None)
    )(p)
    assert abs(got[0] - plain[0]) > 1e-3  # the infusion counts
    assert rel(got[1], ref[1]) < 1e-6
    assert rel(got[2], ref[2]) < 1e-6
    for early in (sc.Jumps().bolus(0.5, 0, 10.0, scale_param=2), sc.Jumps().set(0.7, 1, 0.3)):
        with pytest.raises(ValueError, match="at t = 0.[57] lies before the start of the solve, t0 = 1"):
            sc.gradient_function(
                np.ones((6, 2)), pk2, [0.3, 0.1], (1.0, 4.0), p, sensitivity=sens, **dict(kw, jumps=early)
            )


def test_default_u0_is_not_a_view_of_the_callers_array():
    u0 = U0.copy()
    gf = sc.gradient_function(DATA, nonlin, u0, (0.0, 3.0), P, saveat=TS)
    v = gf(P)[0]
    u0[0] = 5.0
    assert gf(P)[0] == v


def test_interpolating_adjoint_with_an_empty_span():
    gf = sc.gradient_function(
        np.ones((1, 2)), nonlin, U0, (1.0, 1.0), P, saveat=[1.0], sensitivity=sc.InterpolatingAdjoint()
    )
    v, gp, gu = gf(P)
    np.testing.assert_allclose(gu, 2 * (U0 - 1.0))
    np.testing.assert_array_equal(gp, 0.0)


def test_jumps_at_the_end_time_take_no_extra_step():
    a = sc.solve(pk2, [1.0, 0.0], (0.0, 2.0), [1.2, 0.8, 0.5])
    b = sc.solve(pk2, [1.0, 0.0], (0.0, 2.0), [1.2, 0.8, 0.5], jumps=sc.Jumps().bolus(2.0, 0, 5.0))
    assert b.stats["naccept"] == a.stats["naccept"]
    assert b.t[-1] == 2.0 and b.t[-2] < 2.0
    assert b.u_final[0] == pytest.approx(a.u_final[0] + 5.0)


@numba.njit
def _sat(du, u, p, t):
    du[0] = -p[0] * u[0]
    du[1] = p[0] * u[0] - p[1] / p[2] * u[1] * u[1] / (1 + u[1])


@pytest.mark.parametrize("solver", [sc.Tsit5(), sc.Vern7()])
def test_pullbacks_and_directional_sensitivities_agree(solver):
    """Jacobian rows by several pullbacks on one forward solve = columns by directional forward
    sensitivities (same steps as the plain solve, so the same states)."""
    ts = np.linspace(0.5, 20, 12)
    jumps = sc.Jumps().bolus(0.0, 0, 4.0, scale_param=3).bolus(6.0, 0, 2.0).set(9.0, 1, 0.5)
    p = np.array([1.3, 0.5, 2.0, 0.8])
    gf = sc.gradient_function(
        lambda u, t: (0.0, np.zeros_like(u)),
        _sat,
        np.zeros(2),
        (0, 20),
        p,
        saveat=ts,
        jumps=jumps,
        rtol=1e-8,
        atol=1e-10,
        solver=solver,
    )
    gf.value(p)
    us, steps = gf.recording.states.copy(), gf.stats["naccept"]
    Dp = np.array([[1, 0, 0, 0], [0, 1, 0.5, 0], [0, 0, 0, 1.0]])
    u2, S = gf.directional_sensitivities(p, Dp)
    np.testing.assert_allclose(u2, us, rtol=0, atol=1e-13)
    assert gf.adjoint_stats["naccept"] == steps
    for j in (2, 7, 11):  # (pullbacks on the recorded forward solve, which the directional solve leaves intact)
        g = np.zeros_like(us)
        g[j, 1] = 1.0
        a = gf.pullback(g)[0] @ Dp.T
        b = gf.pullback(g)[0] @ Dp.T  # repeated pullbacks on the same forward solve agree
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, S[j, :, 1], rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        gf.pullback(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="Dp"):
        gf.directional_sensitivities(p, np.zeros((2, 3)))


# --------------------------------------------------------------------------- jump values and times


def test_jump_value_and_time_derivatives_match_central_differences():
    """dL/d(value) and dL/d(time) of every jump (a scaled bolus, an infusion's start and end, a set, a
    bolus) from one reverse pass, against central differences of the loss with the jump moved."""
    gf = sc.gradient_function(
        DATA,
        nonlin,
        U0,
        (0.0, 3.0),
        P,
        saveat=TS,
        jumps=dosing(),
        rtol=1e-12,
        atol=1e-12,
        sensitivity=sc.DiscreteAdjoint(),
        solver=sc.Vern7(),
    )
    t0 = np.array([1.1, 0.6, 1.9, 2.2, 1.4])  # as added; off the save points (a save at a jump sees before it)
    v0 = np.array([2.0, 1.0, -1.0, 0.4, -0.3])
    gf.move_jumps(t0, v0)
    value, gp, _ = gf(P)
    gf.forward()
    _, g = gf._loss_gradient()
    _, _, jd = gf.pullback(g, jumps=True)

    def loss(t, v):
        gf.move_jumps(t, v)
        return gf.value(P)

    h = 1e-6
    for q, e in enumerate(np.eye(5)):
        dv = (loss(t0, v0 + h * e) - loss(t0, v0 - h * e)) / (2 * h)
        dt = (loss(t0 + h * e, v0) - loss(t0 - h * e, v0)) / (2 * h)
        assert jd[q, 0] == pytest.approx(dv, rel=1e-6, abs=1e-8), (q, "value")
        assert jd[q, 1] == pytest.approx(dt, rel=1e-5, abs=1e-7), (q, "time")
    gf.move_jumps(t0, v0)
    assert gf.value(P) == pytest.approx(value, rel=1e-14)


def test_forward_sensitivities_along_moving_jumps():
    """directional_sensitivities with jump tangents (values and times depending on the direction)
    against central differences of the saved states."""
    gf = sc.gradient_function(
        DATA,
        nonlin,
        U0,
        (0.0, 3.0),
        P,
        saveat=TS,
        jumps=dosing(),
        rtol=1e-12,
        atol=1e-12,
        sensitivity=sc.DiscreteAdjoint(),
        solver=sc.Vern7(),
    )
    t0 = np.array([1.1, 0.6, 1.9, 2.2, 1.4])
    v0 = np.array([2.0, 1.0, -1.0, 0.4, -0.3])
    Dp = np.array([[0.3, -0.2, 0.1, 0.5]])
    dval = np.array([[0.7], [0.4], [-0.4], [0.0], [0.2]])
    dtime = np.array([[0.5], [-0.3], [0.2], [0.0], [0.6]])
    gf.move_jumps(t0, v0)
    us, S = gf.directional_sensitivities(P, Dp, jump_tangents=(dval, dtime))

    def states(s):
        gf.move_jumps(t0 + s * dtime[:, 0], v0 + s * dval[:, 0])
        gf.value(P + s * Dp[0])
        return gf.recording.states.copy()

    h = 1e-6
    fd = (states(h) - states(-h)) / (2 * h)
    np.testing.assert_allclose(S[:, 0, :], fd, rtol=1e-5, atol=1e-7)
