"""Covariate discovery (pk/augment.py): on a simulated study whose clearance follows body weight
through a known nonlinear function (and age does nothing), the learned network recovers that
function, explains most of CL's random-effect variance and lowers the OFV; bad requests are
refused by name."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import smallchains as sc


def effect(wt):
    """The true log shift of CL by weight: sigmoidal, not a power law."""
    return 0.5 * np.tanh((wt - 70.0) / 8.0)


@pytest.fixture(scope="module")
def study():
    rng = np.random.default_rng(7)
    n = 40
    wt, age = rng.uniform(45, 100, n), rng.uniform(20, 80, n)
    rows = []
    for i in range(n):
        cov = dict(WT=wt[i], AGE=age[i])
        rows.append(dict(ID=i + 1, TIME=0.0, AMT=100.0, EVID=1, MDV=1, CMT=1, DV=np.nan, **cov))
        rows += [
            dict(ID=i + 1, TIME=t, AMT=0.0, EVID=0, MDV=0, CMT=2, DV=1.0, **cov) for t in (0.5, 1, 2, 4, 8, 12, 24)
        ]
    truth = sc.pk.PopulationModel(
        "one_cpt_oral",
        dict(ka=1.0, CL=3.0, V=30.0),
        eta=["CL", "V"],
        omega_init=0.04,
        error="proportional",
        sigma=0.1,
        individual=lambda q, c: {"ka": q["ka"], "CL": q["CL"] * np.exp(effect(c["WT"])), "V": q["V"]},
    )
    (data,), _ = sc.pk.simulate_data(truth, sc.pk.read_data(pd.DataFrame(rows)), truth.x0, seed=3)
    base = sc.pk.PopulationModel(
        "one_cpt_oral", dict(ka=1.0, CL=3.0, V=30.0), eta=["CL", "V"], omega_init=0.1, error="proportional", sigma=0.1
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = sc.pk.fit(base, data, "foce")
    return data, fit, dict(zip(range(1, n + 1), wt, strict=True))


@pytest.mark.slow
def test_augment_recovers_a_nonlinear_weight_effect_on_clearance(study):
    data, fit, wt = study
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit2 = sc.pk.augment(fit, data, ["WT", "AGE"], targets=["CL"])
    a = fit2.augmentation
    assert a["targets"] == ["CL"] and a["covariates"] == ["WT", "AGE"] and a["method"] == "foce"
    assert a["delta_ofv"] == pytest.approx(fit2.ofv - fit.ofv) and a["delta_ofv"] < -30
    ve = a["variance_explained"]["CL"]
    assert ve == pytest.approx(1 - fit2.omega[0, 0] / fit.omega[0, 0]) and ve > 0.5
    # the typical CL the network gives each subject follows the true function of weight
    typ = fit2.individual_params(random_effects=False)
    learned = np.log([typ[i]["CL"] for i in fit2.ids])
    true = np.log(3.0) + effect(np.array([wt[i] for i in fit2.ids]))
    assert np.corrcoef(learned, true)[0, 1] > 0.95
    assert np.max(np.abs(learned - true)) < 0.3
    assert "augmented with a covariate network (WT, AGE -> CL)" in fit2.summary()


@pytest.mark.slow
def test_augment_refuses_what_it_cannot_learn(study):
    data, fit, _ = study
    with pytest.raises(ValueError, match="covariate 'HT' is not in the data"):
        sc.pk.augment(fit, data, ["HT"])
    with pytest.raises(ValueError, match="`targets` must be parameters with a random effect"):
        sc.pk.augment(fit, data, ["WT"], targets=["ka"])
    with pytest.raises(ValueError, match="at least one covariate"):
        sc.pk.augment(fit, data, [])
    chain = sc.SimpleChain(1, sc.Dense(2))
    with pytest.raises(ValueError, match="the chain has 2 outputs but 1 targets"):
        sc.pk.augment(fit, data, ["WT"], targets=["CL"], chain=chain)
