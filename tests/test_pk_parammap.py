"""The recorded and compiled parameter map p(log q) (pk/_parammap.py) against the Python function."""

from __future__ import annotations

import math

import numpy as np
import pytest

import smallchains as sc
from smallchains.pk._parammap import param_map


def model(individual, theta=None, eta=("CL",)):
    return sc.pk.PopulationModel(
        "one_cpt_oral", theta or dict(ka=1.5, CL=0.04, V=0.5), eta=list(eta), individual=individual
    )


def test_no_individual_is_the_exponential_of_the_named_values():
    m = sc.pk.PopulationModel("one_cpt_oral", dict(V=0.5, ka=1.5, CL=0.04), eta=["CL"])  # (another order)
    pm, why = param_map(m)
    assert why is None
    lq = np.log([0.5, 1.5, 0.04])
    np.testing.assert_array_equal(pm(lq, np.zeros(0)), m.structural_params(lq)[0])


def test_arithmetic_numpy_functions_and_covariates_equal_the_python_function():
    def individual(q, cov):
        return {
            "ka": np.exp(np.log(q["ka"])) + 0.0 * q["V"],
            "CL": q["CL"] * (cov["WT"] / 70.0) ** 0.75 * np.sqrt(cov["AGE"] / 40),
            "V": 1.0 / (1.0 / q["V"]) - (-2.0 - 2.0) * 0.0 + q["V"] ** 2 / q["V"] - q["V"],
        }

    m = model(individual)
    pm, why = param_map(m)
    assert why is None and pm.keys == ["WT", "AGE"]
    rng = np.random.default_rng(3)
    for _ in range(5):
        lq = rng.normal(0, 1, 3)
        cov = {"WT": rng.uniform(40, 100), "AGE": rng.uniform(20, 80)}
        p, J = m.structural_params(lq, cov)
        c = pm.covariates(cov)
        np.testing.assert_allclose(pm(lq, c), p, rtol=1e-14)
        # the complex version gives the same Jacobian by complex steps
        Jz = np.empty_like(J)
        for k in range(3):
            z = lq.astype(complex)
            z[k] += 1e-30j
            out = np.zeros(3, dtype=complex)
            pm._disp(z, c, out)
            Jz[:, k] = out.imag / 1e-30
        np.testing.assert_allclose(Jz, J, rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize(
    "individual,what",
    [
        (lambda q: {"ka": q["ka"], "CL": q["CL"], "V": math.exp(math.log(q["V"]))}, "conversion"),
        (lambda q: {"ka": q["ka"], "CL": q["CL"], "V": q["V"] if q["V"] > 1 else 1.0}, "comparison"),
        (lambda q: {"ka": q["ka"], "CL": q["CL"], "V": abs(q["V"])}, "comparison"),
        (lambda q: {"ka": q["ka"], "CL": q["CL"], "V": np.arcsinh(q["V"])}, "numpy.arcsinh"),
    ],
)
def test_what_cannot_be_recorded_is_refused_with_the_reason(individual, what):
    pm, why = param_map(model(individual))
    assert pm is None and what in why


def test_a_text_covariate_leaves_the_subject_uncovered():
    pm, why = param_map(model(lambda q, cov: {"ka": q["ka"], "CL": q["CL"] * cov["WT"] / 70, "V": q["V"]}))
    assert why is None
    assert pm.covariates({"WT": "heavy"}) is None and pm.covariates({}) is None
    assert pm.covariates({"WT": 70.0}).tolist() == [70.0]
