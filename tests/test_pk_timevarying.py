"""Time-varying covariates inside a subject's solve: NOCB (NONMEM's) and LOCF against piecewise closed
forms (an infusion running across a change included), steady states with covariates, gradients
against central differences, and the warnings when covariates are held at baseline."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from helpers import check_foce_derivatives, check_map_gradients

import smallchains as sc
from smallchains import pk
from smallchains.pk.estimation import Problem

pd = pytest.importorskip("pandas")

TOL = dict(rtol=1e-11, atol=1e-13, solver=sc.Vern7())


def population(text):
    return pk.read_data(pd.read_csv(io.StringIO(text), na_values=["."]))


def iv_model():
    """CL = 3 (WT/70)^0.75, V = 30 (WT/70)."""
    m = pk.PopulationModel(
        "one_cpt_iv",
        dict(CL=3.0, V=30.0),
        eta=["CL"],
        covariate_ref={"WT": 70.0},
        covariates={"CL": {"WT": "power"}, "V": {"WT": "power"}},
        error="additive",
    )
    x = m.x0.copy()
    x[m.blocks["beta"]] = [0.75, 1.0]
    return m, x


def params(wt):
    return 3.0 * (wt / 70) ** 0.75, 30.0 * wt / 70


# a bolus at 0 and an infusion 5..11 (rate 20); WT 70 until the record at 8 says 90
DATA = """ID,TIME,DV,EVID,AMT,RATE,WT
1,0,.,1,100,.,70
1,4,1,0,.,.,70
1,5,.,1,120,20,70
1,6,1,0,.,.,70
1,8,.,2,.,.,90
1,9,1,0,.,.,90
1,14,1,0,.,.,90
"""


def closed_form(t, cut):
    """Amounts piecewise: bolus 100 at 0, infusion 20 from 5 to 11; k changes at ``cut``."""
    out = []
    for tt in t:
        a, s = 0.0, 0.0
        events = [0.0, 5.0, 11.0, cut, tt]
        grid = sorted({e for e in events if e <= tt})
        for lo, hi in zip(grid[:-1], grid[1:]):
            if lo == 0.0 and s == 0.0:
                a = 100.0
            wt = 70.0 if lo < cut else 90.0
            k = params(wt)[0] / params(wt)[1]
            r = 20.0 if 5.0 <= lo < 11.0 else 0.0
            a = r / k + (a - r / k) * np.exp(-k * (hi - lo))
            s = 1.0
        out.append(a)
    return np.array(out)


@pytest.mark.parametrize("rule,cut", [("nocb", 6.0), ("locf", 8.0)])
def test_parameters_change_within_the_solve(rule, cut):
    """NOCB: the record at 8 (WT 90) holds over (6, 8], so the change is at 6; LOCF: at 8.  The
    infusion runs across the change; each sample's V is its own interval's."""
    m, x = iv_model()
    P = Problem(m, population(DATA), time_varying=rule, **TOL)
    s = P.subjects[0]
    assert s.piecewise and s.tv is not None
    f = s.predict(x, np.zeros(1))[2]
    t = s.t
    amounts = closed_form(t, cut)
    wt = np.where(t <= cut, 70.0, 90.0) if rule == "nocb" else np.where(t < cut, 70.0, 90.0)
    np.testing.assert_allclose(f, amounts / params(wt)[1], rtol=1e-9)
    P.close()


def test_baseline_keeps_the_first_values_and_says_so():
    m, x = iv_model()
    with pytest.warns(sc.DataWarning, match="changes within subject.*'baseline'"):
        P = Problem(m, population(DATA), time_varying="baseline", **TOL)
    f = P.subjects[0].predict(x, np.zeros(1))[2]
    np.testing.assert_allclose(f, closed_form(P.subjects[0].t, 1e9) / params(70.0)[1], rtol=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error", sc.DataWarning)
        Problem(m, population(DATA), **TOL)  # the default, NOCB, changes nothing silently
    with pytest.raises(ValueError, match="time_varying"):
        Problem(m, population(DATA), time_varying="carry")


def test_a_steady_state_takes_its_own_records_covariates():
    """SS = 1 at 24 (WT 90 on the record, 70 before): the steady state with WT 90's parameters."""
    text = """ID,TIME,DV,EVID,AMT,II,SS,WT
1,0,.,1,100,.,0,70
1,4,1,0,.,.,.,70
1,24,.,1,100,12,1,90
1,30,1,0,.,.,.,90
"""
    m, x = iv_model()
    s = Problem(m, population(text), **TOL).subjects[0]
    f = s.predict(x, np.zeros(1))[2]
    cl70, v70 = params(70.0)
    cl90, v90 = params(90.0)
    k70, k90 = cl70 / v70, cl90 / v90
    peak = 100 / (1 - np.exp(-k90 * 12))
    np.testing.assert_allclose(f, [100 * np.exp(-4 * k70) / v70, peak * np.exp(-6 * k90) / v90], rtol=1e-9)


GRAD_DATA = """ID,TIME,DV,EVID,AMT,CMT,RATE,II,SS,WT,AGE
1,0,.,1,100,1,.,.,0,60,30
1,1,3.1,0,.,2,.,.,.,60,30
1,3,.,2,.,.,.,.,.,75,30
1,5,2.5,0,.,2,.,.,.,75,30
1,9,1.9,0,.,2,.,.,.,75,31
2,0,.,1,90,2,15,.,0,80,50
2,2,2.2,0,.,2,.,.,.,80,50
2,4,.,2,.,.,.,.,.,95,50
2,7,3.0,0,.,2,.,.,.,95,50
2,24,.,1,100,1,.,12,2,95,50
2,26,4.1,0,.,2,.,.,.,95,50
2,30,3.5,0,.,2,.,.,.,70,50
"""


@pytest.mark.parametrize("rule", ["nocb", "locf"])
def test_gradients_through_time_varying_covariates(rule):
    """MAP and FOCE-I gradients, and G, against central differences: covariate effects, a covariate
    network read per piece, an infusion across a change, an SS = 2 dose."""
    chain = sc.SimpleChain(2, sc.Dense(4, sc.tanh), sc.Dense(1))
    m = pk.PopulationModel(
        "one_cpt_oral",
        dict(ka=1.0, CL=3.0, V=25.0),
        eta=["ka", "CL"],
        omega_init=0.1,
        covariates={"V": {"WT": "power"}},
        error="combined",
        covariate_network=pk.CovariateNetwork(chain, ["WT", "AGE"], ["CL"]),
    )
    P = Problem(m, population(GRAD_DATA), time_varying=rule, inner_tol=1e-24, **TOL)
    assert all(s.tv is not None for s in P.subjects)
    x = m.x0.copy()
    x[m.blocks["beta"]] = 0.8
    x[m.blocks["wc"]] = np.random.default_rng(0).normal(0, 0.3, m.blocks["wc"].stop - m.blocks["wc"].start)
    etas = np.random.default_rng(1).normal(0, 0.2, (P.N, m.n_eta))
    check_map_gradients(P, x, etas)
    check_foce_derivatives(P, x, np.array([0.1, -0.2]))
    P.close()


def test_dose_parameters_with_time_varying_covariates_keep_baseline_with_a_warning():
    m = pk.PopulationModel(
        "one_cpt_oral",
        dict(ka=1.0, CL=3.0, V=25.0, ALAG1=0.3),
        eta=["CL"],
        covariates={"CL": {"WT": "power"}},
        error="additive",
    )
    with pytest.warns(sc.DataWarning, match=r"subject\(s\) 1, 2, which have doses with dose parameters"):
        P = Problem(m, population(GRAD_DATA.replace("2,24,.,1,100,1,.,12,2,", "2,24,.,1,100,1,.,.,0,")), **TOL)
    assert all(s.tv is None and s.tv_baseline for s in P.subjects)
