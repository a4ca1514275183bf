"""NPDE (smallchains.pk.npde): the decorrelation and the pde against a naive computation, their
distribution under the model that simulated the data (N(0, 1)), a misspecified error model
detected, seeding, and the bad inputs refused."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import small_data
from scipy.stats import kstest, norm

from smallchains import pk
from smallchains.pk.npde import npde_from_simulations


def naive(y, sims):
    K, n = sims.shape
    E = np.array([sims[:, j].mean() for j in range(n)])
    V = np.cov(sims, rowvar=False).reshape(n, n)
    L = np.linalg.cholesky(V)
    ys = np.linalg.solve(L, y - E)
    pde = np.empty(n)
    for j in range(n):
        count = 0
        for k in range(K):
            sk = np.linalg.solve(L, sims[k] - E)
            count += sk[j] < ys[j]
        pde[j] = min(max(count / K, 1 / K), 1 - 1 / K)
    return pde


def test_pde_and_decorrelation_equal_a_naive_computation():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(4, 4))
    sims = rng.normal(size=(300, 4)) @ A.T + 2.0
    y = sims[7] + rng.normal(size=4) * 0.5
    pde, nd, pd, npd = npde_from_simulations(y, sims)
    np.testing.assert_allclose(pde, naive(y, sims), atol=1e-12)
    np.testing.assert_allclose(nd, norm.ppf(pde))
    np.testing.assert_allclose(pd, np.clip((sims < y).mean(axis=0), 1 / 300, 1 - 1 / 300))
    # an observation beyond every simulation: pde at npde's bound 1 - 1/K, npde finite
    far = npde_from_simulations(y + 100.0, sims)
    assert np.all(np.isfinite(far[1])) and far[2].max() == pytest.approx(1 - 1 / 300)
    # the symmetric decorrelation whitens the simulations too
    pde_i, *_ = npde_from_simulations(y, sims, "inverse")
    assert pde_i.shape == (4,) and np.all((pde_i > 0) & (pde_i < 1))
    assert npde_from_simulations(y, np.ones((300, 4))) is None


@pytest.fixture(scope="module")
def fits():
    m, d = small_data(n=30, seed=11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        good = pk.fit(m, d, "foce", se=False)
        # the residual sd held at a third of the one that simulated the data
        bad_m = pk.PopulationModel(
            "one_cpt_oral",
            dict(ka=1.2, CL=3.0, V=25.0),
            eta=["ka", "CL"],
            omega_init=0.1,
            error="proportional",
            sigma=0.033,
            fixed=["sigma_prop"],
        )
        bad = pk.fit(bad_m, d, "foce", se=False)
    return good, bad, d


def test_npde_are_standard_normal_under_the_model_and_not_when_misspecified(fits):
    good, bad, d = fits
    g = pk.npde(good, d, n_sim=500, seed=1)
    assert g["NPDE"].shape == (good.n_obs,)
    np.testing.assert_array_equal(g["ID"], good.diagnostics["ID"])
    np.testing.assert_allclose(g["TIME"], good.diagnostics["TIME"])
    assert abs(g["NPDE"].mean()) < 0.2
    assert 0.75 < g["NPDE"].var() < 1.3
    assert kstest(g["NPDE"], "norm").pvalue > 0.01
    b = pk.npde(bad, d, n_sim=500, seed=1)
    assert b["NPDE"].var() > 2.0
    assert kstest(b["NPDE"], "norm").pvalue < 1e-4
    again = pk.npde(good, d, n_sim=500, seed=1)
    np.testing.assert_array_equal(again["NPDE"], g["NPDE"])


def test_npde_refuses_bad_arguments(fits):
    good, _, d = fits
    with pytest.raises(ValueError, match="`n_sim` must be >= 100"):
        pk.npde(good, d, n_sim=50)
    with pytest.raises(ValueError, match="`decorrelation` must be one of"):
        pk.npde(good, d, decorrelation="polar")
