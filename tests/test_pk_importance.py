"""The marginal likelihood by importance sampling (smallchains.pk.importance): each subject's
-2 log L_i against the quadrature of its likelihood over a single random effect, the reported
Monte Carlo standard error against the spread over seeds, and the bad inputs refused."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from helpers import quadrature_term

import smallchains as sc
from smallchains import pk


@pytest.fixture(scope="module")
def fitted():
    d = sc.pkdata.theophylline()
    m = pk.PopulationModel(
        "one_cpt_oral", dict(ka=1.5, CL=0.04, V=0.5), eta=["ka"], omega_init=0.4, error="additive", sigma=0.7
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = pk.fit(m, d, "foce", se=False)
    return r, d


def test_each_subject_matches_the_quadrature_of_its_likelihood(fitted):
    from smallchains.pk.importance import problem_for

    r, d = fitted
    out = pk.importance_sampling(r, d, n_samples=4000, seed=3)
    P = problem_for(r, d)
    try:
        om2 = float(r.omega[0, 0])
        exact = np.array([quadrature_term(s, r.x, om2, grid_points=2001) for s in P.subjects])
    finally:
        P.close()
    err = out["per_subject"] - exact
    assert np.abs(err).max() < 0.02
    assert out["ofv"] == pytest.approx(exact.sum(), abs=4 * out["se"] + 1e-3)
    assert out["m2ll"] == pytest.approx(out["ofv"] + r.n_obs * math.log(2 * math.pi))
    # FOCE-I's OFV is an approximation of the same quantity: near it, not equal
    assert abs(r.ofv - exact.sum()) < 5.0


def test_the_standard_error_matches_the_spread_over_seeds(fitted):
    r, d = fitted
    runs = [pk.importance_sampling(r, d, n_samples=300, seed=s) for s in range(12)]
    spread = np.std([o["ofv"] for o in runs], ddof=1)
    se = np.mean([o["se"] for o in runs])
    assert 0.5 * se < spread < 2.0 * se
    a = pk.importance_sampling(r, d, n_samples=300, seed=4)
    assert a["ofv"] == runs[4]["ofv"]  # (seeded)


def test_bad_inputs_are_refused(fitted):
    r, d = fitted
    with pytest.raises(ValueError, match="`n_samples` must be >= 10"):
        pk.importance_sampling(r, d, n_samples=5)
    with pytest.raises(ValueError, match="`df` must be a number > 2"):
        pk.importance_sampling(r, d, df=1)
    plain = pk.fit(pk.PopulationModel("one_cpt_oral", dict(ka=1.5, CL=0.04, V=0.5)), d, "pooled", se=False)
    with pytest.raises(ValueError, match="the model has none"):
        pk.importance_sampling(plain, d)
