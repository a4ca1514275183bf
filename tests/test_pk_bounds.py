"""Parameter bounds (PopulationModel(bounds=...)): checked, obeyed by the optimiser, reported
when active, left out of the covariance step, and the convergence check's KKT condition."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import smallchains as sc


@pytest.fixture(scope="module")
def theoph():
    return sc.pkdata.theophylline()


def model(CL=0.04, **kw):
    return sc.pk.PopulationModel(
        "one_cpt_oral", dict(ka=1.5, CL=CL, V=0.5), eta=["ka", "CL"], error="additive", sigma=0.7, **kw
    )


@pytest.mark.parametrize(
    "bounds,match",
    [
        ({"Q": (1, 2)}, "bounds apply to typical values"),
        ({"CL": (0, 1)}, "positive"),
        ({"CL": (0.5, 0.1)}, "lower bound must be below"),
        ({"CL": (0.05, 1)}, "initial value of CL"),
        ({"CL": 0.1}, "pair"),
        ({"sigma_add": (None, 0.1)}, "initial value of sigma_add"),
    ],
)
def test_bad_bounds_are_refused_by_name(bounds, match):
    with pytest.raises(ValueError, match=match):
        model(bounds=bounds)


def test_a_binding_bound_is_obeyed_reported_and_left_out_of_the_covariance_step(theoph):
    free = sc.pk.fit(model(), theoph, "foce")
    assert free.theta["CL"] > 0.036
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = sc.pk.fit(model(CL=0.03, bounds={"CL": (None, 0.036), "ka": (0.1, 100)}), theoph, "foce")
    assert r.theta["CL"] == pytest.approx(0.036, rel=1e-9)
    assert r.ofv > free.ofv  # (the bound costs likelihood)
    msgs = [str(w.message) for w in caught if issubclass(w.category, sc.DoubtfulResultWarning)]
    assert any("ended on the bounds given for log CL" in t and "upper" in t for t in msgs)
    # the gradient points out of the box there (KKT), so the fit converged, and the other SEs remain
    assert r.converged, r.message
    rows = {row["name"]: row for row in r.table}
    assert math.isnan(rows["CL"]["se"]) and np.isfinite(rows["ka"]["se"]) and np.isfinite(rows["V"]["se"])
    assert "log CL" in r.cov_excluded


def test_a_bound_that_does_not_bind_changes_nothing(theoph):
    data = sc.pk.Population(theoph.subjects[:6], theoph.covariate_names, theoph.columns)
    a = sc.pk.fit(model(), data, "foce", se=False)
    b = sc.pk.fit(model(bounds={"CL": (0.001, 1.0), "sigma_add": (0.01, 10)}), data, "foce", se=False)
    assert b.converged and a.converged
    assert b.ofv == pytest.approx(a.ofv, abs=1e-6)
    np.testing.assert_allclose(b.x, a.x, atol=1e-4)  # (the box changes L-BFGS-B's path, within its tolerance)


def test_map_and_pooled_fits_obey_bounds_and_a_saved_fit_keeps_them(theoph, tmp_path):
    data = sc.pk.Population(theoph.subjects[:6], theoph.covariate_names, theoph.columns)
    m = model(bounds={"V": (0.45, None)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for method in ("pooled", "map"):
            r = sc.pk.fit(m, data, method, se=False)
            assert r.theta["V"] >= 0.45 * (1 - 1e-12)
            if method == "map":  # (unbounded, MAP puts V at 0.433 here: the bound binds)
                assert r.theta["V"] == pytest.approx(0.45, rel=1e-9)
    r.save(tmp_path / "fit.json")
    back = sc.pk.load(tmp_path / "fit.json")
    assert back.model.bounds == {"V": (0.45, None)}
    assert np.isfinite(back.model.lower).sum() == 1 and back.model.lower[2] == pytest.approx(math.log(0.45))
