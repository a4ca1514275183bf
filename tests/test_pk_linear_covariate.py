"""Linear covariate effects, q = theta (1 + beta (c - ref)): the closed form, exact FOCE-I and MAP
gradients through log(1 + beta X), and a simulated effect recovered by FOCE-I and SAEM."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from helpers import check_foce_gradient, check_map_gradients

import smallchains as sc
from smallchains.pk.estimation import Problem


def model(beta0=0.0):
    m = sc.pk.PopulationModel(
        "one_cpt_oral",
        dict(ka=1.0, CL=3.0, V=30.0),
        eta=["CL", "V"],
        omega_init=0.05,
        error="proportional",
        sigma=0.1,
        covariates={"CL": {"WT": "linear"}, "V": {"WT": "power"}},
        covariate_ref={"WT": 70.0},
    )
    m.x0[m.blocks["beta"].start] = beta0
    return m


@pytest.fixture(scope="module")
def study():
    rng = np.random.default_rng(11)
    n = 40
    wt = rng.uniform(45, 110, n)
    rows = []
    for i in range(n):
        rows.append(dict(ID=i + 1, TIME=0.0, AMT=100.0, EVID=1, MDV=1, CMT=1, DV=np.nan, WT=wt[i]))
        rows += [
            dict(ID=i + 1, TIME=t, AMT=0.0, EVID=0, MDV=0, CMT=2, DV=1.0, WT=wt[i]) for t in (0.5, 1, 2, 4, 8, 12, 24)
        ]
    truth = model()
    truth.x0[truth.blocks["beta"]] = [0.02, 1.0]  # CL = 3 (1 + 0.02 (WT - 70)), V = 30 WT/70
    (data,), _ = sc.pk.simulate_data(truth, sc.pk.read_data(pd.DataFrame(rows)), truth.x0, seed=2)
    return data


def test_linear_effect_closed_form(study):
    m = model(0.015)
    P = Problem(m, study)
    lq = P.logq0(m.x0)
    for s, row in zip(P.subjects, lq, strict=True):
        wt = s.subject.covariate("WT")
        assert row[1] == pytest.approx(math.log(3.0 * (1 + 0.015 * (wt - 70.0))), rel=1e-14)
        assert row[2] == pytest.approx(math.log(30.0), rel=1e-14)  # (the power effect starts at 0)
        assert s.logq(m.x0, np.zeros(2))[1] == pytest.approx(row[1], rel=1e-14)
    assert "CL~WT (linear)" in [r["name"] for r in sc.pk.report.parameter_table(m, m.x0, None, np.zeros(0), True)]


def test_linear_effect_gradients_are_exact(study):
    m = model(0.015)
    data = sc.pk.Population(study.subjects[:5], study.covariate_names, study.columns)
    P = Problem(m, data)
    x = m.x0.copy()
    check_foce_gradient(P, x)
    check_map_gradients(P, x, np.random.default_rng(0).normal(0, 0.2, (P.N, 2)))


@pytest.mark.slow
def test_a_simulated_linear_effect_is_recovered_by_foce_and_saem(study):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = sc.pk.fit(model(), study, "foce")
        s = sc.pk.fit(model(), study, "saem", method_options={"n_explore": 150, "n_smooth": 100})
    row = {r["name"]: r for r in f.table}["CL~WT (linear)"]
    assert f.converged and abs(row["estimate"] - 0.02) < 3 * row["se"] and row["se"] < 0.01
    srow = {r["name"]: r for r in s.table}["CL~WT (linear)"]
    assert abs(srow["estimate"] - row["estimate"]) < 2 * row["se"]


@pytest.mark.slow
def test_an_exp_effect_of_weight_in_kg_converges(study):
    """Regression: from beta = 0 the mode search's first Fisher step reached 7e6 for the heaviest
    subjects (their predictions far from the data), its trial points overflowed, and the fit
    stopped at its start; the step is now capped at MAX_ETA_STEP."""
    m = sc.pk.PopulationModel(
        "one_cpt_oral",
        dict(ka=1.0, CL=3.0, V=30.0),
        eta=["CL", "V"],
        omega_init=0.05,
        error="proportional",
        sigma=0.1,
        covariates={"CL": {"WT": "exp"}, "V": {"WT": "power"}},
        covariate_ref={"WT": 70.0},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = sc.pk.fit(m, study, "foce")
    row = {r["name"]: r for r in f.table}["CL~WT (exp)"]
    # (the truth is linear: 1 + 0.02 X; its log slope at the reference is 0.02)
    assert f.converged and 0.01 < row["estimate"] < 0.03
