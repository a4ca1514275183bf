"""The compiled Runge–Kutta solvers: tableaus, convergence orders, adaptivity against SciPy's DOP853,
dense output, jumps and infusions against closed-form one-compartment solutions, backwards
integration, terminating events, status errors, neural ODEs."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import smallchains as sc
from smallchains.ode import _kernels as RK

# --------------------------------------------------------------------------- right-hand sides


@numba.njit
def quad_rot(du, u, p, t):
    """u0' = u0² (u0 = a/(1 - a t)); (u1, u2) rotate at rate p[0]."""
    du[0] = u[0] * u[0]
    du[1] = p[0] * u[2]
    du[2] = -p[0] * u[1]


def quad_rot_exact(t, a=1.0, w=1.0):
    t = np.asarray(t, dtype=float)
    return np.stack([a / (1 - a * t), np.sin(w * t + 0.5), np.cos(w * t + 0.5)], axis=-1)


U0_QR = quad_rot_exact(0.0)
P_QR = np.array([1.0])


@numba.njit
def lotka(du, u, p, t):
    du[0] = p[0] * u[0] - p[1] * u[0] * u[1]
    du[1] = -p[2] * u[1] + p[3] * u[0] * u[1]


P_LV = np.array([1.5, 1.0, 3.0, 1.0])


@numba.njit
def vdp(du, u, p, t):
    du[0] = u[1]
    du[1] = p[0] * (1 - u[0] * u[0]) * u[1] - u[0]


@numba.njit
def one_cpt(du, u, p, t):
    """Depot u0 -> central u1 (ka = p[0]), elimination k = p[1] from u1."""
    du[0] = -p[0] * u[0]
    du[1] = p[0] * u[0] - p[1] * u[1]


def reference(f_py, u0, tspan, p, ts):
    r = solve_ivp(lambda t, u: f_py(u, p, t), tspan, u0, method="DOP853", rtol=1e-13, atol=1e-13, t_eval=ts)
    return r.y.T


def lotka_py(u, p, t):
    return [p[0] * u[0] - p[1] * u[0] * u[1], -p[2] * u[1] + p[3] * u[0] * u[1]]


def vdp_py(u, p, t):
    return [u[1], p[0] * (1 - u[0] ** 2) * u[1] - u[0]]


ALL = ["Tsit5", "DP5", "BS3", "Vern7", "RK4", "Heun", "Euler"]
ADAPTIVE = ["Tsit5", "DP5", "BS3", "Vern7", "Heun"]


def method(name):
    return getattr(sc, name)()


# --------------------------------------------------------------------------- tableaus


@pytest.mark.parametrize("name", ALL)
def test_tableau_is_consistent(name):
    tab = method(name)
    assert np.allclose(tab.A.sum(axis=1), tab.c, atol=1e-13)
    assert tab.b.sum() == pytest.approx(1, abs=1e-14)
    if tab.adaptive:
        assert abs(tab.b_err.sum()) < 1e-14
    # the dense weights end at b (slot s, f at the step's end, has weight 0 at θ = 1)
    ends = tab.D.sum(axis=1)
    np.testing.assert_allclose(ends[: tab.stages], tab.b, atol=1e-12)
    assert abs(ends[tab.stages]) < 1e-14
    assert tab.fsal == (name in ("Tsit5", "DP5", "BS3"))


def test_tableau_checks_itself():
    A = [[0, 0], [1, 0]]
    with pytest.raises(ValueError, match="row 1 of A"):
        sc.ButcherTableau(A, [0.5, 0.5], [0, 0.9], 2)
    with pytest.raises(ValueError, match="sum to"):
        sc.ButcherTableau(A, [0.5, 0.6], [0, 1], 2)
    with pytest.raises(ValueError, match="error weights"):
        sc.ButcherTableau(A, [0.5, 0.5], [0, 1], 2, b_err=[0.5, 0.4], err_order=1)
    with pytest.raises(ValueError, match="strictly lower triangular"):
        sc.ButcherTableau([[0, 1], [1, 0]], [0.5, 0.5], [1, 1], 2)
    with pytest.raises(ValueError, match="err_order"):
        sc.ButcherTableau(A, [0.5, 0.5], [0, 1], 2, b_err=[-0.5, 0.5])
    # a user-defined method (the midpoint rule) solves
    mid = sc.ButcherTableau([[0, 0], [0.5, 0]], [0, 1], [0, 0.5], 2, name="Midpoint")
    sol = sc.solve(quad_rot, U0_QR, (0, 0.5), P_QR, solver=mid, dt=1e-3, saveat=[0.5])
    np.testing.assert_allclose(sol.u[0], quad_rot_exact(0.5), rtol=1e-5)


# --------------------------------------------------------------------------- convergence orders


@numba.njit
def bernoulli(du, u, p, t):
    """u' = -u + sin(t) u² (a Bernoulli equation with a closed form)."""
    du[0] = -u[0] + np.sin(t) * u[0] * u[0]


def bernoulli_exact(t):
    return 1 / (1.5 * np.exp(t) + (np.sin(t) + np.cos(t)) / 2)


@pytest.mark.parametrize("name", ALL)
def test_convergence_order(name):
    """The log2 ratio of global errors between halved fixed steps approaches the method's order."""
    tab = method(name)
    T = 3.0
    Ns = {"Vern7": (8, 16, 32), "Tsit5": (32, 64, 128), "DP5": (32, 64, 128)}.get(name, (64, 128, 256))
    errs = []
    for N in Ns:
        sol = sc.solve(bernoulli, [0.5], (0, T), None, solver=tab, dt=T / N, saveat=[T])
        errs.append(abs(sol.u[0, 0] - bernoulli_exact(T)))
        assert sol.stats["naccept"] == N
    slopes = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert tab.order - 0.3 < slopes[-1] < tab.order + 1.5, (errs, slopes)


@pytest.mark.parametrize("name", ["Tsit5", "DP5", "BS3", "RK4"])
def test_dense_output_order(name):
    """Interpolated values between steps converge at the interpolant's order (4 own, 3 Hermite)."""
    tab = method(name)
    T = 0.5
    Ns = (8, 16, 32, 64)
    errs = []
    for N in Ns:
        h = T / N
        mids = (np.arange(N) + 0.37) * h
        sol = sc.solve(quad_rot, U0_QR, (0, T), P_QR, solver=tab, dt=h, saveat=mids)
        errs.append(np.max(np.abs(sol.u - quad_rot_exact(mids))))
    slope = np.polyfit(np.log(T / np.array(Ns)), np.log(errs), 1)[0]
    expect = 3 if tab.hermite else 4
    assert slope > expect - 0.3, (errs, slope)


# --------------------------------------------------------------------------- adaptive solves


@pytest.mark.parametrize("name", ADAPTIVE)
@pytest.mark.parametrize("problem", ["lotka", "vdp"])
def test_adaptive_against_dop853(name, problem):
    f, fpy, u0, p, T = (
        (lotka, lotka_py, [1.0, 1.0], P_LV, 10.0)
        if problem == "lotka"
        else (vdp, vdp_py, [2.0, 0.0], np.array([1.0]), 10.0)
    )
    ts = np.linspace(0, T, 41)
    ref = reference(fpy, u0, (0, T), p, ts)
    tol = 1e-5 if name == "Heun" else 1e-8
    sol = sc.solve(f, u0, (0, T), p, solver=method(name), rtol=tol, atol=tol, saveat=ts)
    err = np.max(np.abs(sol.u - ref))
    assert err < 300 * tol, err
    # tighter tolerance -> smaller error and more steps
    sol2 = sc.solve(f, u0, (0, T), p, solver=method(name), rtol=tol / 100, atol=tol / 100, saveat=ts)
    assert np.max(np.abs(sol2.u - ref)) < err / 5
    assert sol2.stats["naccept"] > sol.stats["naccept"]


def test_step_counts_are_sensible():
    """Tsit5 at 1e-6 on Lotka–Volterra over 10 time units: tens of steps, few rejections (like
    OrdinaryDiffEq's Tsit5)."""
    sol = sc.solve(lotka, [1.0, 1.0], (0, 10.0), P_LV, rtol=1e-6, atol=1e-6)
    assert 30 < sol.stats["naccept"] < 150
    assert sol.stats["nreject"] <= 0.2 * sol.stats["naccept"]
    # FSAL: 6 new evaluations per accepted or rejected step, + first stage + initial-step probe
    assert sol.stats["nf"] == 6 * (sol.stats["naccept"] + sol.stats["nreject"]) + 2


def test_dense_solution_everywhere():
    sol = sc.solve(lotka, [1.0, 1.0], (0, 10.0), P_LV, rtol=1e-9, atol=1e-9)
    assert sol.dense and sol.t[0] == 0 and sol.t[-1] == 10
    tq = np.linspace(0, 10, 333)
    ref = reference(lotka_py, [1.0, 1.0], (0, 10.0), P_LV, tq)
    assert np.max(np.abs(sol(tq) - ref)) < 1e-6
    at = reference(lotka_py, [1.0, 1.0], (0, 10.0), P_LV, [3.3])[0]
    assert sol(3.3).shape == (2,) and np.max(np.abs(sol(3.3) - at)) < 1e-6  # a scalar time gives one state
    np.testing.assert_allclose(sol(sol.t), sol.u, atol=1e-12)
    with pytest.raises(ValueError, match="span"):
        sol(10.5)
    nodense = sc.solve(lotka, [1.0, 1.0], (0, 10.0), P_LV, saveat=[5.0])
    with pytest.raises(ValueError, match="dense"):
        nodense(1.0)


def test_per_component_tolerances_and_dtmax():
    sol = sc.solve(lotka, [1.0, 1.0], (0, 10.0), P_LV, rtol=[1e-8, 1e-8], atol=[1e-8, 1e-8])
    sol_s = sc.solve(lotka, [1.0, 1.0], (0, 10.0), P_LV, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(sol.u_final, sol_s.u_final, rtol=0, atol=0)
    capped = sc.solve(lotka, [1.0, 1.0], (0, 10.0), P_LV, dtmax=0.01)
    assert capped.stats["naccept"] >= 1000
    assert np.max(np.diff(capped.t)) <= 0.01 + 1e-12


def test_backwards_in_time():
    T = 0.5
    uT = quad_rot_exact(T)
    ts = np.linspace(T, 0, 6)
    sol = sc.solve(quad_rot, uT, (T, 0.0), P_QR, rtol=1e-10, atol=1e-10, saveat=ts)
    np.testing.assert_allclose(sol.u, quad_rot_exact(ts), atol=1e-8)
    assert sol.t_final == 0.0
    fixed = sc.solve(quad_rot, uT, (T, 0.0), P_QR, solver=sc.RK4(), dt=1e-3, saveat=[0.0])
    np.testing.assert_allclose(fixed.u[0], U0_QR, atol=1e-9)
    with pytest.raises(ValueError, match="sorted"):
        sc.solve(quad_rot, uT, (T, 0.0), P_QR, saveat=[0.0, 0.5])


def test_tstops_are_hit_exactly():
    stops = [0.123456, 0.3, 0.41]
    sol = sc.solve(quad_rot, U0_QR, (0, 0.5), P_QR, tstops=stops)
    for s in stops:
        assert np.any(sol.t == s)


# --------------------------------------------------------------------------- jumps (doses)


def test_repeated_iv_boluses_closed_form():
    k = 0.3
    p = np.array([0.0, k])
    doses = [0.0, 6.0, 12.0, 18.0]
    jumps = sc.Jumps()
    for d in doses:
        jumps.bolus(d, 1, 100.0)
    ts = np.linspace(0, 30, 61)
    sol = sc.solve(one_cpt, [0.0, 0.0], (0, 30.0), p, rtol=1e-10, atol=1e-10, saveat=ts, jumps=jumps)
    exact = np.zeros_like(ts)
    for d in doses:
        exact += np.where(ts > d, 100.0 * np.exp(-k * (ts - d)), 0.0)  # left limit at a dose time
    np.testing.assert_allclose(sol.u[:, 1], exact, rtol=1e-8, atol=1e-8)


def test_oral_dose_with_bioavailability_parameter():
    ka, k, F = 1.2, 0.2, 0.7
    p = np.array([ka, k, F])
    jumps = sc.Jumps().bolus(0.0, 0, 320.0, scale_param=2).bolus(10.0, 0, 320.0, scale_param=2)
    ts = np.linspace(0, 24, 49)
    sol = sc.solve(one_cpt, [0.0, 0.0], (0, 24.0), p, rtol=1e-10, atol=1e-10, saveat=ts, jumps=jumps)

    def bateman(t):
        t = np.maximum(t, 0)
        return F * 320 * ka / (ka - k) * (np.exp(-k * t) - np.exp(-ka * t))

    exact = bateman(ts) + np.where(ts > 10, bateman(ts - 10), 0)
    np.testing.assert_allclose(sol.u[:, 1], exact, rtol=1e-7, atol=1e-8)


def test_infusion_closed_form_and_reset():
    k, R, dur = 0.25, 40.0, 3.0
    p = np.array([0.0, k])
    jumps = sc.Jumps().infusion(1.0, 1, rate=R, duration=dur)
    ts = np.linspace(0, 12, 97)
    sol = sc.solve(one_cpt, [0.0, 0.0], (0, 12.0), p, rtol=1e-10, atol=1e-10, saveat=ts, jumps=jumps)
    on = (ts > 1) & (ts <= 1 + dur)
    exact = np.where(on, R / k * (1 - np.exp(-k * (ts - 1))), 0.0)
    end = R / k * (1 - np.exp(-k * dur))
    exact = np.where(ts > 1 + dur, end * np.exp(-k * (ts - 1 - dur)), exact)
    np.testing.assert_allclose(sol.u[:, 1], exact, rtol=1e-8, atol=1e-8)
    # a reset (EVID 3) zeroes the states; the infusion, still running, refills from zero
    jumps = sc.Jumps().bolus(0.0, 1, 50.0).input(0.0, 1, 10.0).reset(5.0)
    sol = sc.solve(one_cpt, [0.0, 0.0], (0, 8.0), p, rtol=1e-10, atol=1e-10, saveat=[5.0, 8.0], jumps=jumps)
    before = 50 * np.exp(-k * 5) + 10 / k * (1 - np.exp(-k * 5))
    assert sol.u[0, 1] == pytest.approx(before, rel=1e-8)  # left limit: just before the reset
    assert sol.u[1, 1] == pytest.approx(10 / k * (1 - np.exp(-k * 3)), rel=1e-8)


def test_jumps_restart_the_method():
    """A dose between steps forces a step end there and a fresh first stage afterwards."""
    p = np.array([0.0, 0.3])
    jumps = sc.Jumps().bolus(0.0, 1, 100.0).bolus(3.3, 1, 100.0)
    sol = sc.solve(one_cpt, [0.0, 0.0], (0, 10.0), p, jumps=jumps)
    i = int(np.argmin(np.abs(sol.t - 3.3)))
    assert sol.t[i] == 3.3
    # the left limit at the dose, then the post-dose value as the next step's start
    assert sol.u[i, 1] == pytest.approx(100 * np.exp(-0.3 * 3.3), rel=1e-5)
    assert sol(3.3 + 1e-9)[1] == pytest.approx(100 * np.exp(-0.3 * 3.3) + 100, rel=1e-5)


def test_jump_validation():
    with pytest.raises(ValueError, match="state 5"):
        sc.solve(one_cpt, [0.0, 0.0], (0, 1.0), [1.0, 1.0], jumps=sc.Jumps().bolus(0.5, 5, 1.0))
    with pytest.raises(ValueError, match="p\\[3\\]"):
        sc.solve(one_cpt, [0.0, 0.0], (0, 1.0), [1.0, 1.0], jumps=sc.Jumps().bolus(0.5, 0, 1.0, scale_param=3))
    with pytest.raises(ValueError, match="duration"):
        sc.Jumps().infusion(0.0, 0, 1.0, duration=0)
    with pytest.raises(ValueError, match="finite"):
        sc.Jumps().bolus(np.nan, 0, 1.0)
    with pytest.raises(TypeError, match="Jumps"):
        sc.solve(one_cpt, [0.0, 0.0], (0, 1.0), [1.0, 1.0], jumps=[(0.5, 0, 1.0)])


# --------------------------------------------------------------------------- events


@numba.njit
def ball(du, u, p, t):
    du[0] = u[1]
    du[1] = -p[0]


@numba.njit
def ground(u, p, t):
    return u[0]


def test_terminating_event_located_on_dense_output():
    g, h0 = 9.81, 10.0
    ts = np.linspace(0, 5, 11)
    sol = sc.solve(ball, [h0, 0.0], (0, 5.0), [g], saveat=ts, event=ground)
    t_hit = np.sqrt(2 * h0 / g)
    assert sol.retcode == "terminated"
    assert sol.t_final == pytest.approx(t_hit, abs=1e-10)
    assert abs(sol.u_final[0]) < 1e-9
    saved = ts <= t_hit
    np.testing.assert_allclose(sol.u[saved, 0], h0 - g * ts[saved] ** 2 / 2, atol=1e-9)
    assert np.all(np.isnan(sol.u[~saved]))
    # only upward crossings: this downward one is ignored
    up = sc.solve(ball, [h0, 0.0], (0, 5.0), [g], event=ground, event_direction=1)
    assert up.retcode == "success" and up.t_final == 5.0


# --------------------------------------------------------------------------- failures


@numba.njit
def blowup(du, u, p, t):
    du[0] = u[0] * u[0]


@numba.njit
def nan_after_half(du, u, p, t):
    du[0] = -u[0] if t < 0.5 else np.nan


def test_status_errors_name_the_time_and_a_remedy():
    with pytest.raises(sc.MaxStepsError, match="max_steps=20") as ei:
        sc.solve(lotka, [1.0, 1.0], (0, 10.0), P_LV, rtol=1e-10, atol=1e-10, max_steps=20)
    assert 0 < ei.value.t < 10 and ei.value.solution.retcode == "max_steps"
    with pytest.raises((sc.StepSizeUnderflowError, sc.NonFiniteStateError), match="t = 0.99|t = 1") as ei:
        sc.solve(blowup, [1.0], (0, 2.0), None)
    assert ei.value.t == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(sc.NonFiniteStateError, match="NaN or Inf at t = 0.5"):
        sc.solve(nan_after_half, [1.0], (0, 1.0), None)
    with pytest.raises(sc.NonFiniteStateError):
        sc.solve(nan_after_half, [1.0], (0, 1.0), None, solver=sc.RK4(), dt=0.01)


def test_bad_input_is_refused_clearly():
    def plain(du, u, p, t):
        du[0] = 0

    with pytest.raises(TypeError, match="numba.njit"):
        sc.solve(plain, [1.0], (0, 1), None)
    with pytest.raises(ValueError, match="u0.*NaN"):
        sc.solve(lotka, [np.nan, 1.0], (0, 1), P_LV)
    with pytest.raises(ValueError, match="tspan"):
        sc.solve(lotka, [1.0, 1.0], 1.0, P_LV)
    with pytest.raises(ValueError, match="rtol"):
        sc.solve(lotka, [1.0, 1.0], (0, 1), P_LV, rtol=[1e-6, 1e-6, 1e-6])
    with pytest.raises(ValueError, match="dt"):
        sc.solve(lotka, [1.0, 1.0], (0, 1), P_LV, solver=sc.RK4())
    with pytest.raises(ValueError, match="span"):
        sc.solve(lotka, [1.0, 1.0], (0, 1), P_LV, saveat=[0.5, 2.0])
    with pytest.raises(TypeError, match="Tsit5"):
        sc.solve(lotka, [1.0, 1.0], (0, 1), P_LV, solver="tsit5")
    with pytest.raises(ValueError, match="both zero"):
        sc.solve(lotka, [1.0, 1.0], (0, 1), P_LV, rtol=0, atol=0)


# --------------------------------------------------------------------------- neural ODEs


def test_neural_ode_matches_scipy_with_the_chain_in_python():
    chain = sc.SimpleChain(2, sc.Dense(16, sc.tanh), sc.Dense(2))
    p = chain.init_params(seed=3, dtype=np.float64)
    ts = np.linspace(0, 1.5, 30)
    sol = sc.solve(sc.NeuralODE(chain), [2.0, 0.0], (0, 1.5), p, rtol=1e-10, atol=1e-10, saveat=ts)
    ref = solve_ivp(
        lambda t, u: chain(u, p), (0, 1.5), [2.0, 0.0], method="DOP853", rtol=1e-13, atol=1e-13, t_eval=ts
    ).y.T
    np.testing.assert_allclose(sol.u, ref, atol=1e-8)
    # a chain passed directly is a neural ODE too
    np.testing.assert_array_equal(sc.solve(chain, [2.0, 0.0], (0, 1.5), p, rtol=1e-10, atol=1e-10, saveat=ts).u, sol.u)
    with pytest.raises(ValueError, match="init_params"):
        sc.solve(sc.NeuralODE(chain), [2.0, 0.0], (0, 1.5), p[:-1])
    with pytest.raises(ValueError, match="outputs as inputs"):
        sc.NeuralODE(sc.SimpleChain(2, sc.Dense(3)))


def test_solver_kernel_compiled_without_nrt():
    """No allocation is possible in the step loop: the kernels are compiled without Numba's runtime."""
    for k in (RK.rk_solve, RK.dense_eval, RK.interp, RK.rk_stages):
        assert k.targetoptions.get("_nrt") is False
