"""The covariance step (pk/covariance.py): R from the exact gradient against second differences of
the OFV, S against one-subject problems, the three forms, boundaries left out, the reports."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from helpers import small_data

import smallchains as sc
from smallchains import pk
from smallchains.pk import covariance as CV
from smallchains.pk.estimation import Problem

pd = pytest.importorskip("pandas")


def test_r_from_the_exact_gradient_equals_second_differences_of_the_ofv():
    m, data = small_data()
    P = Problem(m, data, inner_tol=1e-20)
    x = m.x0.copy()
    _, etas, _ = P.foce(x)

    def grad(z):
        v, _, res = P.foce(z, etas)
        return P.foce_gradient(z, res)

    R = CV.hessian_from_gradient(grad, x, h=1e-3)
    h = 1e-2
    n = x.shape[0]
    H = np.empty((n, n))
    f = lambda z: P.foce(z, etas)[0]  # noqa: E731
    for i in range(n):
        for j in range(n):
            ei, ej = np.eye(n)[i] * h, np.eye(n)[j] * h
            H[i, j] = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (4 * h * h)
    np.testing.assert_allclose(R, H, rtol=2e-3, atol=2e-3 * np.abs(H).max())
    P.close()


def test_s_is_the_sum_of_each_subjects_own_gradient_outer_product():
    m, data = small_data(n=4)
    P = Problem(m, data)
    x = m.x0.copy()
    _, etas, res = P.foce(x)
    g, G = P.foce_gradient(x, res, per_subject=True)
    np.testing.assert_allclose(G.sum(axis=0), g)
    for i, s in enumerate(data.subjects):  # each subject alone: its OFV is its term of the sum
        Pi = Problem(m, pk.Population([s], data.covariate_names, data.columns))
        _, _, ri = Pi.foce(x, etas[i : i + 1])
        np.testing.assert_allclose(Pi.foce_gradient(x, ri), G[i], rtol=1e-6, atol=1e-8)


def test_the_three_forms_and_their_units():
    """For a quadratic OFV = (x - a)' R (x - a) / 1 summed over subjects whose gradients make S = 2R,
    the three covariances agree with 2 R^-1 (the inverse information)."""
    rng = np.random.default_rng(0)
    A = rng.normal(size=(3, 3))
    R = A @ A.T + 3 * np.eye(3)
    S = 2 * R
    want = 2 * np.linalg.inv(R)
    for kind in CV.KINDS:
        C, why = CV.covariance(R, S, kind)
        assert why is None
        np.testing.assert_allclose(C, want, rtol=1e-12)
    C, why = CV.covariance(-R, S, "sandwich")
    assert C is None and "not positive definite" in why
    with pytest.raises(ValueError, match="`covariance` must be one of"):
        CV.check_kind("robust")


def test_a_variance_at_its_bound_is_left_out_and_the_other_ses_remain():
    """sd(eta ka) = 1e-6 (at the bound): left out of the covariance step, whose other SEs are
    finite; before, the singular Hessian made every SE NaN."""
    from smallchains.pk.fit import _standard_errors

    m, data = small_data(n=10)
    x = m.x0.copy()
    ob = m.blocks["omega"].start
    x[ob] = math.log(1e-6)
    assert CV.at_bound(m, x) == [ob]
    P = Problem(m, data)
    _, etas, _ = P.foce(x)
    for kind in CV.KINDS:
        C, idx, excluded, why = _standard_errors(P, "foce", x, etas, kind=kind)
        assert excluded == [ob] and ob not in idx and why is None
        assert C.shape == (idx.size, idx.size) and np.all(np.isfinite(C)) and np.all(np.diag(C) > 0)
    P.close()
    r = type("R", (), {})()
    r.method, r.converged, r.n_obs, r.n_estimated = "foce", True, 100, 5
    r.cov_names, r.cov, r.cov_excluded, r.cov_why, r.correlation = ["CL"], np.eye(1), [m.names[ob]], None, np.eye(1)
    r.model, r.x, r.sigma = m, x, {"sigma_prop": 0.1}
    from smallchains.pk.fit import warn_doubtful

    with pytest.warns(sc.DoubtfulResultWarning, match=r"left out log omega\(ka\) \(at a variance bound"):
        warn_doubtful(r, True)


def test_reports_cv_correlations_condition_number_and_they_survive_save(tmp_path):
    m, data = small_data(n=10)
    full = pk.PopulationModel(
        "one_cpt_oral",
        dict(ka=1.2, CL=3.0, V=25.0),
        eta=["ka", "CL"],
        omega="full",
        omega_init=0.1,
        error="proportional",
        sigma=0.1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = pk.fit(full, data, "foce")
    rows = {row["name"]: row for row in r.table}
    Om = r.omega
    assert rows["omega2(ka)"]["cv_percent"] == pytest.approx(100 * math.sqrt(math.exp(Om[0, 0]) - 1))
    assert rows["omega(CL,ka)"]["corr"] == pytest.approx(Om[1, 0] / math.sqrt(Om[0, 0] * Om[1, 1]))
    C = r.correlation
    assert C.shape == (len(r.cov_names),) * 2 and np.allclose(np.diag(C), 1.0)
    w = np.linalg.eigvalsh(C)
    assert r.condition_number == pytest.approx(w.max() / w.min())
    text = r.summary()
    assert "covariance step: sandwich" in text and "omega as CV" in text
    assert f"omega correlations: omega(CL,ka) {rows['omega(CL,ka)']['corr']:.3f}" in text
    # 95% intervals: log scale for typical values, residual sds and Omega's variances (delta
    # method: SE(log omega^2) = SE / omega^2), natural scale for Omega's covariances
    z = 1.959963984540054
    ka, om, oc = rows["ka"], rows["omega2(CL)"], rows["omega(CL,ka)"]
    assert (ka["ci_lower"], ka["ci_upper"]) == pytest.approx(
        (math.exp(ka["log_estimate"] - z * ka["log_se"]), math.exp(ka["log_estimate"] + z * ka["log_se"]))
    )
    assert ka["ci_lower"] < ka["estimate"] < ka["ci_upper"]
    s = om["se"] / om["estimate"]
    assert (om["ci_lower"], om["ci_upper"]) == pytest.approx(
        (om["estimate"] * math.exp(-z * s), om["estimate"] * math.exp(z * s))
    )
    assert (oc["ci_lower"], oc["ci_upper"]) == pytest.approx(
        (oc["estimate"] - z * oc["se"], oc["estimate"] + z * oc["se"])
    )
    assert f"[{ka['ci_lower']:.4g}, {ka['ci_upper']:.4g}]" in text and "95% CI" in text
    path = tmp_path / "fit.json"
    r.save(path)
    back = pk.load(path)
    assert back.cov_kind == "sandwich" and back.condition_number == pytest.approx(r.condition_number)
    assert back.table == r.table and back.summary() == text


def test_highly_correlated_estimates_are_warned():
    """A covariance whose CL-V correlation is 0.98: the warning names the pair and the value."""
    r = type("R", (), {})()
    r.method, r.converged, r.n_obs, r.n_estimated, r.cov_names = "foce", True, 100, 2, ["CL", "V"]
    r.cov = np.array([[1.0, 0.98], [0.98, 1.0]])
    r.cov_excluded, r.cov_why = [], None
    r.model = pk.PopulationModel("one_cpt_iv", dict(CL=1.0, V=10.0), error="additive")
    r.sigma = {"sigma_add": 1.0}
    r.x = r.model.x0.copy()
    r.correlation = CV.summarize(r.cov)[0]
    from smallchains.pk.fit import warn_doubtful

    with pytest.warns(sc.DoubtfulResultWarning, match=r"highly correlated: V and CL \(\+0.980\)"):
        warn_doubtful(r, True)


def test_fit_refuses_an_unknown_covariance_form():
    m, data = small_data(n=3)
    with pytest.raises(ValueError, match="`covariance` must be one of"):
        pk.fit(m, data, "foce", covariance="robust")
