"""The compiled FOCE-I subject step for subjects solved by the ODE solver (pk/_foce_ode.py):
against the NumPy step it replaces (to 1e-8) and against central differences of the OFV, on a
nonlinear-by-ODE classic model, a universal differential equation (network weights in the
gradient) and a mixed population."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pandas as pd
import pytest
from helpers import central_differences
from test_pk_foce import both_paths, covariate_model, drop_time_zero, theophylline_nlme

import smallchains as sc
from smallchains.pk._foce_ode import ODESubjects
from smallchains.pk.estimation import Problem, information


@pytest.fixture(scope="module")
def theoph():
    return sc.pkdata.theophylline()


def subset(data, k):
    return sc.pk.Population(data.subjects[:k], data.covariate_names, data.columns)


def ude(seed=0):
    """The demo's Theophylline UDE with its network's weights moved off their start."""
    m = sc.pk.demo.theophylline_ude()
    x = m.x0.copy()
    w = m.blocks["w"]
    x[w] += np.random.default_rng(seed).normal(0.0, 0.1, w.stop - w.start)
    return m, x


def assert_paths_agree(P, x, etas0=None):
    """The compiled and the NumPy step give the same OFV (to 1e-8, relative) and modes; at the
    same modes, the same M, G and per-subject gradients (to 1e-8).  (The modes themselves agree
    to about the square root of the inner loop's tolerance, not to rounding: near the mode the
    line search decides on differences of the OFV at the level of an ODE solve's rounding.)"""
    cf = P.compiled_foce
    assert isinstance(cf, ODESubjects) and cf.index.tolist() == list(range(P.N))
    etas0 = np.zeros((P.N, P.model.n_eta)) if etas0 is None else etas0
    got = P.foce(x, etas0)
    gg = P.foce_gradient(x, got[2], per_subject=True)
    assert all(r[3].get("compiled") for r in got[2])
    P.compiled_foce = None
    try:
        ref = P.foce(x, etas0)
        Oinv = P.omega_inverse_derivatives(x)[0]
        same = []  # the NumPy step's pieces at the compiled modes
        for s, eta in zip(P.subjects, got[1]):
            l, out = s.data_term(x, eta, need=2)
            same.append((eta, l + eta @ Oinv @ eta, information(out, Oinv), out))
        gr = P.foce_gradient(x, same, per_subject=True)
    finally:
        P.compiled_foce = cf
    assert got[0] == pytest.approx(ref[0], rel=1e-8)
    np.testing.assert_allclose(got[1], ref[1], rtol=0, atol=1e-5)
    for a, b in zip(got[2], same):
        assert a[1] == pytest.approx(b[1], rel=1e-10, abs=1e-9)
        np.testing.assert_allclose(a[2], b[2], rtol=1e-9)  # M
        np.testing.assert_allclose(a[3]["G"], b[3]["G"], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(gg[0], gr[0], rtol=1e-8, atol=1e-8 * np.abs(gr[0]).max())
    np.testing.assert_allclose(gg[1], gr[1], rtol=1e-8, atol=1e-8 * np.abs(gr[1]).max())


def test_the_ode_path_takes_the_compiled_step(theoph):
    m = theophylline_nlme()
    P = Problem(m, theoph, analytic=False)
    assert isinstance(P.compiled_foce, ODESubjects) and not P.uncovered
    assert P.compiled_foce.n_w == 0


def test_compiled_ode_step_equals_numpy_on_theophylline_nlme_model(theoph):
    m = theophylline_nlme()
    P = Problem(m, theoph, analytic=False)
    x = m.x0.copy()
    assert_paths_agree(P, x)
    x[m.blocks["omega"]] += 0.3
    assert_paths_agree(P, x, np.random.default_rng(0).normal(0, 0.3, (P.N, 2)))
    assert_paths_agree(P, x, np.random.default_rng(0).normal(0, 2.5, (P.N, 2)))  # line searches that halve


@pytest.mark.parametrize("error,omega", [("combined", "full"), ("proportional", "diagonal")])
def test_compiled_ode_step_equals_numpy_with_covariates_and_error_models(theoph, error, omega):
    m, x = covariate_model(error, omega)
    P = Problem(m, subset(drop_time_zero(theoph), 6), analytic=False)
    assert_paths_agree(P, x, np.random.default_rng(1).normal(0, 0.2, (P.N, 3)))


def test_compiled_ode_step_equals_numpy_on_a_ude_with_network_weights(theoph):
    m, x = ude()
    P = Problem(m, subset(theoph, 6), rtol=1e-8, atol=1e-10)
    cf = P.compiled_foce
    assert isinstance(cf, ODESubjects) and cf.n_w == m.n_weights > 0
    assert_paths_agree(P, x, np.random.default_rng(2).normal(0, 0.2, (P.N, m.n_eta)))
    g = P.foce_gradient(x, P.foce(x)[2])
    assert np.abs(g[m.blocks["w"]]).max() > 0  # (the weights' gradient is there, not zeros)


def test_compiled_ode_gradient_matches_central_differences_of_the_ofv(theoph):
    """FOCE-I's gradient by the compiled ODE step (adjoints, forward sensitivities and
    differences along eta) against central differences of the OFV at fixed warm starts, on the
    mechanistic parameters, Omega, sigma and a few network weights."""
    m, x = ude(1)
    P = Problem(m, subset(theoph, 4), rtol=1e-10, atol=1e-12, inner_tol=1e-14)
    v, etas, res = P.foce(x)
    g = P.foce_gradient(x, res)
    w = m.blocks["w"]
    idx = np.r_[np.arange(w.start), np.arange(w.start, w.start + 4), np.arange(w.stop, m.n_x)]

    def ofv(z):
        full = x.copy()
        full[idx] = z
        return P.foce(full, etas)[0]

    gf = central_differences(ofv, x[idx], h=1e-4)
    np.testing.assert_allclose(g[idx], gf, rtol=2e-4, atol=1e-5 * np.abs(gf).max())


def test_objective_and_gradient_in_one_call_equal_the_two_calls_on_the_ode_path(theoph):
    m, x = ude(3)
    P = Problem(m, subset(theoph, 5))
    etas0 = np.random.default_rng(3).normal(0, 0.2, (P.N, m.n_eta))
    v, etas, res = P.foce(x, etas0)
    g = P.foce_gradient(x, res)
    v1, etas1, g1 = P.foce_value_and_gradient(x, etas0)
    assert v1 == pytest.approx(v, rel=1e-13)
    np.testing.assert_allclose(etas1, etas, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g1, g, rtol=1e-10, atol=1e-12 * np.abs(g).max())


def test_steady_state_subjects_keep_the_numpy_step_beside_compiled_ode_subjects(theoph):
    m = theophylline_nlme()
    obs = sc.pk.read_data(
        pd.read_csv(
            io.StringIO("ID,TIME,DV,EVID,AMT,CMT,II,SS\n99,0,.,1,4,1,24,1\n99,1,6,0,.,2,.,.\n99,4,5,0,.,2,.,.\n")
        )
    )
    data = sc.pk.Population(list(theoph.subjects[:3]) + list(obs.subjects), theoph.covariate_names, theoph.columns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        P = Problem(m, data, analytic=False)
    assert isinstance(P.compiled_foce, ODESubjects) and P.compiled_foce.index.tolist() == [0, 1, 2]
    (got, gg), (ref, gr) = both_paths(P, m.x0, np.zeros((P.N, 2)))
    assert got[0] == pytest.approx(ref[0], rel=1e-10)
    np.testing.assert_allclose(gg[0], gr[0], rtol=1e-8, atol=1e-8 * np.abs(gr[0]).max())


@pytest.mark.slow
def test_a_ude_fit_by_the_compiled_ode_step_finds_the_numpy_estimates(theoph):
    """A FOCE-I fit of a small UDE (a 1->2->2->1 network: 13 weights) by both steps."""
    from smallchains.pk.estimation import SubjectEval

    m = sc.pk.demo.theophylline_ude(hidden=2)
    x = m.x0.copy()
    w = m.blocks["w"]
    x[w] += np.random.default_rng(4).normal(0.0, 0.1, w.stop - w.start)
    data = subset(theoph, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = sc.pk.fit(m, data, "foce", x0=x, se=False)
        try:
            SubjectEval.compiled = False
            ref = sc.pk.fit(m, data, "foce", x0=x, se=False)
        finally:
            SubjectEval.compiled = True
    assert r.converged and ref.converged
    # (two L-BFGS runs whose line searches see OFV differences at an ODE solve's rounding: 1e-4
    # apart on an Intel AVX-512 machine, 1.4e-4 measured on an AMD EPYC (AVX2))
    assert -2 * r.loglik == pytest.approx(-2 * ref.loglik, abs=5e-4)
    # (the network's weights are not all identified: flat directions may end apart; the rest may not)
    rest = np.r_[np.arange(w.start), np.arange(w.stop, m.n_x)]
    np.testing.assert_allclose(r.x[rest], ref.x[rest], rtol=1e-3, atol=1e-3)
