"""The compiled FOCE-I subject step (pk/_foce.py) against the NumPy path it replaces, and
against central differences of the OFV."""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import pathlib
import warnings

import numpy as np
import pandas as pd
import pytest
from helpers import central_differences

import smallchains as sc
from smallchains.pk.estimation import Problem, SubjectEval


@pytest.fixture(scope="module")
def theoph():
    return sc.pkdata.theophylline()


@pytest.fixture(scope="module")
def pheno():
    return sc.pkdata.phenobarbital()


def theophylline_nlme():
    """nlme's Theophylline model in ka, ke, CL (V = CL / ke): an ``individual`` function."""
    return sc.pk.demo.theophylline_classic()


def covariate_model(error="combined", omega="full"):
    """Covariates of both forms, individual(q, cov) reading a covariate, three random effects."""

    def individual(q, cov):
        return {"ka": q["ka"], "CL": q["CL"], "V": q["V"] * (cov["WT"] / 70.0) ** 0.1}

    sigma = {"additive": 0.5, "proportional": 0.15, "combined": [0.3, 0.1]}[error]
    m = sc.pk.PopulationModel(
        "one_cpt_oral",
        dict(ka=1.3, CL=0.04, V=0.5),
        eta=["ka", "CL", "V"],
        omega=omega,
        omega_init=np.array([[0.3, 0.02, 0.0], [0.02, 0.1, 0.01], [0.0, 0.01, 0.05]]) if omega == "full" else 0.1,
        covariates={"CL": {"WT": "power"}, "V": {"WT": "exp"}},
        individual=individual,
        error=error,
        sigma=sigma,
    )
    x = m.x0.copy()
    x[m.blocks["beta"]] = [0.75, 0.01]
    return m, x


def drop_time_zero(data):
    """The subjects without their observations at time 0 (where a proportional error's variance is 0)."""
    subs = []
    for s in data.subjects:
        keep = s.obs_time > 0
        subs.append(
            dataclasses.replace(
                s, obs_time=s.obs_time[keep], dv=s.dv[keep], dvid=s.dvid[keep], obs_cmt=s.obs_cmt[keep], blq=s.blq[keep]
            )
        )
    return sc.pk.Population(subs, data.covariate_names, data.columns)


def both_paths(P, x, etas0):
    """(compiled, NumPy) results of foce and foce_gradient(per_subject=True) at x."""
    got = P.foce(x, etas0)
    gg = P.foce_gradient(x, got[2], per_subject=True)
    saved = P.compiled_foce
    P.compiled_foce = None
    try:
        ref = P.foce(x, etas0)
        gr = P.foce_gradient(x, ref[2], per_subject=True)
    finally:
        P.compiled_foce = saved
    return (got, gg), (ref, gr)


def assert_paths_agree(P, x, etas0=None):
    assert P.compiled_foce is not None and P.compiled_foce.index.tolist() == list(range(P.N))
    etas0 = np.zeros((P.N, P.model.n_eta)) if etas0 is None else etas0
    (got, gg), (ref, gr) = both_paths(P, x, etas0)
    assert all(r[3].get("compiled") for r in got[2])
    assert not any(r[3].get("compiled") for r in ref[2])
    assert got[0] == pytest.approx(ref[0], rel=1e-10)
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-8, atol=1e-9)
    for a, b in zip(got[2], ref[2]):
        np.testing.assert_allclose(a[2], b[2], rtol=1e-9)  # M
        np.testing.assert_allclose(a[3]["G"], b[3]["G"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gg[0], gr[0], rtol=1e-8, atol=1e-8 * np.abs(gr[0]).max())
    np.testing.assert_allclose(gg[1], gr[1], rtol=1e-8, atol=1e-8 * np.abs(gr[1]).max())


def test_compiled_step_equals_numpy_on_theophylline_nlme_model(theoph):
    m = theophylline_nlme()
    P = Problem(m, theoph)
    x = m.x0.copy()
    assert_paths_agree(P, x)
    x[m.blocks["omega"]] += 0.3  # elsewhere, warm-started from scattered modes
    assert_paths_agree(P, x, np.random.default_rng(0).normal(0, 0.3, (P.N, 2)))
    # far starts: Fisher scoring's line search halves its steps (the compiled loop reuses the
    # line search's last evaluation; the NumPy loop evaluates the accepted point again)
    assert_paths_agree(P, x, np.random.default_rng(0).normal(0, 2.5, (P.N, 2)))


def test_compiled_step_equals_numpy_on_phenobarbital(pheno):
    """Repeated IV boluses (59 neonates), random effects on CL and V, no ``individual``."""
    m = sc.pk.PopulationModel(
        "one_cpt_iv", dict(CL=math.exp(-5.0), V=1.0), eta=["CL", "V"], error="additive", sigma=2.0, omega_init=0.2
    )
    assert_paths_agree(Problem(m, pheno), m.x0)


@pytest.mark.parametrize("error,omega", [("combined", "full"), ("proportional", "diagonal"), ("additive", "full")])
def test_compiled_step_equals_numpy_with_covariates_and_error_models(theoph, error, omega):
    m, x = covariate_model(error, omega)
    P = Problem(m, drop_time_zero(theoph))
    assert_paths_agree(P, x, np.random.default_rng(1).normal(0, 0.2, (P.N, 3)))


def test_compiled_gradient_matches_central_differences_of_the_ofv(theoph):
    m, x = covariate_model("combined", "full")
    data = sc.pk.Population(theoph.subjects[:5], theoph.covariate_names, theoph.columns)
    P = Problem(m, data, inner_tol=1e-14)
    assert P.compiled_foce is not None and P.compiled_foce.index.tolist() == list(range(P.N))
    v, etas, res = P.foce(x)
    g = P.foce_gradient(x, res)
    gf = central_differences(lambda z: P.foce(z, etas)[0], x, h=1e-4)
    np.testing.assert_allclose(g, gf, rtol=1e-4, atol=1e-5 * np.abs(gf).max())


# NONMEM's steady-state doses (pk/steady_state.py): SS = 1 boluses into the depot then SS = 2 (the
# steady state added to the amounts there), an SS = 1 infusion shorter than II, one longer than
# II (overlapping copies run on), a constant infusion at steady state (II = 0) then a plain dose
STEADY_STATES = """ID,TIME,DV,MDV,EVID,AMT,RATE,CMT,SS,II
1,0,.,1,1,100,0,1,1,12
1,2,5,0,0,.,.,2,0,0
1,6,3,0,0,.,.,2,0,0
1,12,.,1,1,100,0,1,2,12
1,14,6,0,0,.,.,2,0,0
1,20,4,0,0,.,.,2,0,0
2,0,.,1,1,200,50,2,1,8
2,1,4,0,0,.,.,2,0,0
2,5,3,0,0,.,.,2,0,0
2,9,3.5,0,0,.,.,2,0,0
3,0,.,1,1,300,20,2,1,10
3,3,4,0,0,.,.,2,0,0
3,12,4,0,0,.,.,2,0,0
4,0,.,1,1,0,10,2,1,0
4,2,4,0,0,.,.,2,0,0
4,5,.,1,1,50,0,1,0,0
4,7,5,0,0,.,.,2,0,0
"""


@pytest.mark.parametrize(
    "name,theta,eta",
    [
        ("one_cpt_oral", dict(ka=1.0, CL=3.0, V=30.0), ["ka", "CL", "V"]),  # (closed-form e^(A II))
        ("two_cpt_oral", dict(ka=1.0, CL=3.0, V1=30.0, Q=2.0, V2=50.0), ["CL", "V1"]),  # (Pade e^(A II))
    ],
)
def test_compiled_step_equals_numpy_with_steady_state_doses(name, theta, eta):
    data = sc.pk.read_data(pd.read_csv(io.StringIO(STEADY_STATES), na_values=["."]))
    m = sc.pk.PopulationModel(name, theta, eta=eta, error="combined", sigma=[0.3, 0.1])
    P = Problem(m, data)
    assert all(s.piecewise for s in P.subjects)  # (each subject's solve is cut at its SS doses)
    assert_paths_agree(P, m.x0, np.random.default_rng(5).normal(0, 0.2, (P.N, len(eta))))


def test_map_terms_predictions_and_laplace_terms_with_steady_states_equal_numpy():
    """The other batched kernels on steady-state subjects: MAP's data terms and gradient, the
    predictions with G, and Laplace's terms, against the NumPy path."""
    from smallchains.pk import laplace as LP

    data = sc.pk.read_data(pd.read_csv(io.StringIO(STEADY_STATES), na_values=["."]))
    m = sc.pk.PopulationModel(
        "one_cpt_oral", dict(ka=1.0, CL=3.0, V=30.0), eta=["ka", "CL", "V"], error="combined", sigma=[0.3, 0.1]
    )
    P = Problem(m, data)
    x = m.x0
    etas = np.random.default_rng(6).normal(0, 0.2, (P.N, 3))
    got = P.map_objective(x, etas, 1), P.predictions(x, etas, directions=True), LP.laplace(P, x)
    saved = P.compiled_foce
    P.compiled_foce = None
    try:
        ref = P.map_objective(x, etas, 1), P.predictions(x, etas, directions=True), LP.laplace(P, x)
    finally:
        P.compiled_foce = saved
    assert got[0][0] == pytest.approx(ref[0][0], rel=1e-12)
    for a, b in zip(got[0][1:], ref[0][1:]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10 * np.abs(b).max())
    for a, b in zip(got[1], ref[1], strict=True):
        np.testing.assert_allclose(a[0], b[0], rtol=1e-12)
        np.testing.assert_allclose(a[2], b[2], rtol=1e-8, atol=1e-12 * np.abs(b[2]).max())
    assert got[2][0] == pytest.approx(ref[2][0], rel=1e-9)
    np.testing.assert_allclose(got[2][1], ref[2][1], atol=1e-8)


def test_compiled_step_equals_numpy_on_quinidine_records():
    """A few Quinidine patients (steady-state oral doses, as nlme's quinModel reads them)."""
    data = sc.pk.read_data(pd.read_csv(pathlib.Path(__file__).parent / "data" / "quinidine_subset.csv"))
    m = sc.pk.PopulationModel("one_cpt_oral", dict(ka=0.74, CL=7.4, V=150.0), eta=["V", "CL"], sigma=1.0)
    P = Problem(m, data)
    assert any(s.piecewise for s in P.subjects)
    assert_paths_agree(P, m.x0)


def test_subjects_the_compiled_step_does_not_cover_take_the_numpy_path(theoph):
    """A subject whose covariates change within its solve takes the NumPy step, the others
    the compiled one, and the mixed OFV and gradient equal the all-NumPy ones."""
    m, x = covariate_model("combined", "diagonal")
    subs = list(drop_time_zero(theoph).subjects[:4])
    tv = sc.pk.read_data(
        pd.read_csv(
            io.StringIO(
                "ID,TIME,DV,EVID,AMT,CMT,WT\n99,0,.,1,4,1,70\n99,1,6,0,.,2,70\n99,2,.,2,.,.,90\n99,4,5,0,.,2,90\n"
            ),
            na_values=["."],
        )
    )
    data = sc.pk.Population(subs + list(tv.subjects), theoph.covariate_names, theoph.columns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        P = Problem(m, data)
    assert P.subjects[4].tv is not None
    assert P.compiled_foce.index.tolist() == [0, 1, 2, 3]
    (got, gg), (ref, gr) = both_paths(P, x, np.zeros((P.N, 3)))
    assert got[0] == pytest.approx(ref[0], rel=1e-10)
    np.testing.assert_allclose(gg[0], gr[0], rtol=1e-8, atol=1e-8 * np.abs(gr[0]).max())


def test_a_fit_takes_the_compiled_step_and_finds_the_numpy_estimates(theoph):
    m = theophylline_nlme()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = sc.pk.fit(m, theoph, "foce", se=False)
        try:
            SubjectEval.compiled = False
            ref = sc.pk.fit(m, theoph, "foce", se=False)
        finally:
            SubjectEval.compiled = True
    assert r.converged and ref.converged
    assert -2 * r.loglik == pytest.approx(-2 * ref.loglik, abs=1e-6)
    np.testing.assert_allclose(r.x, ref.x, rtol=1e-5, atol=1e-6)


def test_an_individual_function_that_cannot_be_compiled_is_logged_and_fitted_in_numpy(theoph, caplog):
    def individual(q):
        return {"ka": q["ka"], "CL": q["CL"], "V": max(q["V"], 0.1)}  # (a branch)

    m = sc.pk.PopulationModel("one_cpt_oral", dict(ka=1.5, CL=0.04, V=0.5), eta=["CL"], individual=individual)
    data = sc.pk.Population(theoph.subjects[:3], theoph.covariate_names, theoph.columns)
    with caplog.at_level(logging.INFO, logger="smallchains.pk"):
        P = Problem(m, data)
    assert P.compiled_foce is None
    assert "runs in NumPy" in caplog.text and "comparison" in caplog.text
    v, etas, res = P.foce(m.x0)
    assert np.isfinite(v) and P.foce_gradient(m.x0, res) is not None


@pytest.mark.parametrize("error", ["combined", "additive"])
def test_map_and_pooled_terms_of_exact_subjects_equal_numpy(theoph, error):
    """The MAP objective's and the pooled objective's data terms by the batched compiled kernel
    (every subject exact) against the per-subject NumPy path: values and gradients."""
    m, x = covariate_model(error, "full")
    P = Problem(m, drop_time_zero(theoph))
    assert P.compiled_foce is not None and len(P.compiled_foce.index) == P.N
    etas = np.random.default_rng(4).normal(0, 0.2, (P.N, 3))
    got = P.map_objective(x, etas, 1), P.map_objective(x, etas, 0), P.pooled(x, 1)
    saved = P.compiled_foce
    P.compiled_foce = None
    try:
        assert P._compiled_terms(x, etas, 1) is None  # (the NumPy path below)
        ref = P.map_objective(x, etas, 1), P.map_objective(x, etas, 0), P.pooled(x, 1)
    finally:
        P.compiled_foce = saved
    assert got[0][0] == pytest.approx(ref[0][0], rel=1e-12)
    assert got[1] == pytest.approx(ref[1], rel=1e-12)
    assert got[2][0] == pytest.approx(ref[2][0], rel=1e-12)
    for a, b in zip(got[0][1:] + got[2][1:], ref[0][1:] + ref[2][1:]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10 * np.abs(b).max())


def test_the_compiled_step_refuses_to_be_copied_to_another_process(theoph):
    import pickle

    P = Problem(theophylline_nlme(), theoph)
    with pytest.raises(TypeError, match="cannot be copied to another process"):
        pickle.dumps(P.compiled_foce)


@pytest.mark.parametrize("error", ["combined", "proportional"])
def test_compiled_predictions_equal_numpy(theoph, error):
    """The diagnostics' and the initial check's predictions (f, V, G = df/deta) by the batched
    kernel against the per-subject NumPy path."""
    m, x = covariate_model(error, "full")
    P = Problem(m, drop_time_zero(theoph))
    assert P.compiled_foce is not None and len(P.compiled_foce.index) == P.N
    etas = np.random.default_rng(5).normal(0, 0.2, (P.N, 3))
    got = P.predictions(x, etas, directions=True), P.predictions(x, None)
    saved = P.compiled_foce
    P.compiled_foce = None
    try:
        ref = P.predictions(x, etas, directions=True), P.predictions(x, None)
    finally:
        P.compiled_foce = saved
    for a_all, b_all in zip(got, ref, strict=True):
        for a, b in zip(a_all, b_all, strict=True):
            np.testing.assert_allclose(a[0], b[0], rtol=1e-12)
            np.testing.assert_allclose(a[1], b[1], rtol=1e-12)
            if b[2] is None:
                assert a[2] is None
            else:
                np.testing.assert_allclose(a[2], b[2], rtol=1e-8, atol=1e-12 * np.abs(b[2]).max())


def test_the_initial_check_names_a_zero_variance_with_the_compiled_step(theoph):
    """A proportional error with an observation at time 0 (prediction 0, variance 0): the
    compiled check fails and the NumPy loop names the subject, time and fix."""
    m, x = covariate_model("proportional", "diagonal")
    P = Problem(m, theoph)
    assert P.compiled_foce is not None
    why = P.diagnose(x)
    assert why is not None and "zero variance" in why and f"subject {theoph.subjects[0].id}, time 0" in why
    assert Problem(m, drop_time_zero(theoph)).diagnose(x) is None


def test_objective_and_gradient_in_one_call_equal_the_two_calls(theoph):
    """``foce_value_and_gradient`` (modes and gradients in one compiled call per thread) against
    ``foce`` then ``foce_gradient``; and a failing subject makes the OFV inf."""
    m, x = covariate_model("combined", "full")
    P = Problem(m, drop_time_zero(theoph))
    assert P.compiled_foce is not None and len(P.compiled_foce.index) == P.N
    etas0 = np.random.default_rng(6).normal(0, 0.2, (P.N, 3))
    v, etas, g = P.foce_value_and_gradient(x, etas0)
    v2, etas2, res = P.foce(x, etas0)
    g2 = P.foce_gradient(x, res)
    assert v == pytest.approx(v2, rel=1e-13)
    np.testing.assert_allclose(etas, etas2, rtol=0, atol=0)
    np.testing.assert_allclose(g, g2, rtol=1e-11, atol=1e-12 * np.abs(g2).max())
    bad = x.copy()
    bad[m.blocks["theta"]] = 800.0  # (exp overflows: every subject's solve fails)
    v, etas, g = P.foce_value_and_gradient(bad, etas0)
    assert v == np.inf and g is None and np.array_equal(etas, etas0)
