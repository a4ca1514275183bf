"""SAEM (smallchains.pk.methods.saem): the M-step's closed forms against direct computations,
the estimates against FOCE-I's within their standard errors (Theophylline; a simulated study with
a covariate, a full Omega and a fixed parameter), seeded reproducibility whatever the number of
threads, and the `converged` claim (stationarity of the exploration phase): true on a long enough
run, false on one too short to get there."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import small_data

import smallchains as sc
from smallchains import pk
from smallchains.pk.estimation import Problem
from smallchains.pk.methods.saem import TREND_Z, Saem, _Run, trend_z

pd = pytest.importorskip("pandas")

SHORT = {"n_explore": 20, "n_smooth": 10}


@pytest.fixture(scope="module")
def data():
    return small_data(n=12)


def _quiet_fit(*a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sc.ConvergenceWarning)
        return pk.fit(*a, **k)


# --------------------------------------------------------------------------- pieces


def test_trend_z_sees_a_drift_and_not_noise():
    rng = np.random.default_rng(0)
    n = 200
    noise = np.zeros(n)
    for k in range(1, n):  # AR(1), rho 0.8: autocorrelated but stationary
        noise[k] = 0.8 * noise[k - 1] + rng.standard_normal()
    drift = noise + np.linspace(0.0, 15.0, n)
    z = trend_z(np.column_stack([noise, drift, np.ones(n)]))
    assert z[0] < TREND_Z < z[1]
    assert z[2] == 0.0


def test_the_m_step_is_the_complete_data_maximum(data):
    """From given statistics, the M-step's typical values and covariate effects are the GLS
    solution and Omega the complete-data maximum, computed here directly (and the likelihood of
    the complete data is maximal there: any nearby value is worse)."""
    rng = np.random.default_rng(1)
    m = pk.PopulationModel(
        "one_cpt_oral",
        dict(ka=1.2, CL=3.0, V=25.0),
        eta=["ka", "CL"],
        omega="full",
        omega_init=[[0.1, 0.02], [0.02, 0.1]],
        covariates={"CL": {"WT": "power"}},
        error="proportional",
        sigma=0.1,
    )
    frame = pd.DataFrame(
        [
            dict(
                ID=i + 1, TIME=t, AMT=100.0 * (t == 0), EVID=int(t == 0), MDV=int(t == 0), CMT=1 + (t > 0), DV=1.0, WT=w
            )
            for i, w in enumerate(rng.uniform(50, 100, 10).round())
            for t in (0.0, 1.0, 4.0)
        ]
    )
    P = Problem(m, pk.read_data(frame))
    try:
        run = _Run(P, m.x0.copy(), dict(Saem.options, n_chains=2), rng, lambda v: None)
        phi = rng.normal(size=(P.N, 2)) * 0.3 + [0.2, 1.1]
        s1 = phi
        s2 = phi.T @ phi
        run.mstep(s1, s2, None, None, 1.0)
        x = run.x
        X = P.design[:, 0]
        # ka: the mean; CL: GLS with Omega^-1 of the previous Omega (here the initial one) as weights
        W = np.linalg.inv(m.omega(m.x0))
        D = np.zeros((P.N, 2, 3))
        D[:, 0, 0] = 1.0
        D[:, 1, 1] = 1.0
        D[:, 1, 2] = X
        A = np.einsum("iqa,qr,irb->ab", D, W, D)
        b = np.einsum("iqa,qr,ir->a", D, W, phi)
        c = np.linalg.solve(A, b)
        tb, bb = m.blocks["theta"], m.blocks["beta"]
        np.testing.assert_allclose([x[tb.start], x[tb.start + 1], x[bb.start]], c, rtol=1e-10)
        mu = D @ c
        R = phi - mu
        np.testing.assert_allclose(m.omega(x), R.T @ R / P.N, rtol=1e-10, atol=1e-14)

        # the complete-data log likelihood of the random effects is maximal at the M-step's values
        def ll(theta_ka, om):
            r = R.copy()
            r[:, 0] += c[0] - theta_ka
            sign, logdet = np.linalg.slogdet(om)
            return -0.5 * (np.einsum("iq,qr,ir->", r, np.linalg.inv(om), r) + P.N * logdet)

        Om = m.omega(x)
        best = ll(c[0], Om)
        for d_ka in (-1e-3, 1e-3):
            assert ll(c[0] + d_ka, Om) < best
        for E in (np.diag([1e-3, 0]), np.diag([0, -1e-3]), np.array([[0, 1e-3], [1e-3, 0]])):
            assert ll(c[0], Om + E) < best
    finally:
        P.close()


def test_the_residual_statistic_is_the_proportional_maximum(data):
    """The proportional error's M-step: b^2 = mean(((y - f)/f)^2) over the observations."""
    m, d = data
    P = Problem(m, d)
    try:
        rng = np.random.default_rng(2)
        run = _Run(P, m.x0.copy(), dict(Saem.options, n_chains=1), rng, lambda v: None)
        run.phi[0] += rng.normal(scale=0.2, size=run.phi[0].shape)
        s = run.error_statistic()
        pr = P.predictions(m.x0, run.phi[0] - run.mu())
        want = sum(float(np.sum(((sub.y - r[0]) / r[0]) ** 2)) for sub, r in zip(P.subjects, pr))
        assert s == pytest.approx(want, rel=1e-12)
        run.mstep(run.phi[0], run.phi[0].T @ run.phi[0], s, None, 1.0)
        assert np.exp(2 * run.x[m.blocks["psi"]][0]) == pytest.approx(want / P.n_obs, rel=1e-12)
    finally:
        P.close()


# --------------------------------------------------------------------------- fits


def test_seeded_runs_repeat_whatever_the_threads(data):
    m, d = data
    a = _quiet_fit(m, d, "saem", method_options=SHORT, seed=4, threads=1, se=False)
    b = _quiet_fit(m, d, "saem", method_options=SHORT, seed=4, threads=2, se=False)
    c = _quiet_fit(m, d, "saem", method_options=SHORT, seed=5, threads=1, se=False)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)
    assert a.settings["method_options"]["n_explore"] == 20


def test_too_short_an_exploration_is_not_claimed_converged(data):
    m, d = data
    start = m.x0.copy()
    start[m.blocks["theta"]] += 0.7  # far from the estimates: the first iterations still travel
    with pytest.warns(sc.ConvergenceWarning, match="stationarity criterion NOT met"):
        r = pk.fit(m, d, "saem", x0=start, method_options={"n_explore": 6, "n_smooth": 4}, se=False)
    assert not r.converged


@pytest.mark.slow
def test_saem_agrees_with_foce_on_theophylline():
    """nlme's Theophylline model (ka, CL with random effects, ke without: its M-step is numeric):
    SAEM's estimates within a quarter of FOCE-I's standard errors, its OFV (FOCE-I's at the
    SAEM estimates) within 0.05 of FOCE-I's minimum, and the stationarity claim true."""
    d = sc.pkdata.theophylline()
    m = pk.demo.theophylline_classic()
    f = pk.fit(m, d, "foce")
    with warnings.catch_warnings():
        warnings.simplefilter("error", sc.ConvergenceWarning)
        s = pk.fit(m, d, "saem", seed=1)
    assert s.converged and "stationarity criterion met" in s.message
    assert "OFV by FOCE-I" in s.message
    for r1, r2 in zip(f.table, s.table, strict=True):
        assert r1["name"] == r2["name"]
        assert abs(r2["estimate"] - r1["estimate"]) < 0.25 * r1["se"], r1["name"]
    assert f.ofv <= s.ofv < f.ofv + 0.05
    assert s.cov is not None and s.cov_kind == "sandwich"
    # a comparison table takes both (same kind of OFV)
    t = pk.compare([f, s])
    assert list(t["ofv_kind"]) == ["FOCE-I", "FOCE-I"]


@pytest.mark.slow
def test_saem_recovers_a_simulated_study_with_covariate_full_omega_and_a_fixed_parameter():
    """A 40-subject one-compartment study, CL ~ WT (power), a full Omega on ka and CL, V fixed,
    proportional error: SAEM within FOCE-I's standard errors (a half), and both near the truth."""
    rng = np.random.default_rng(3)
    rows = []
    for i in range(40):
        wt = float(rng.uniform(45, 110))
        rows.append(dict(ID=i + 1, TIME=0.0, AMT=100.0, EVID=1, MDV=1, CMT=1, DV=np.nan, WT=wt))
        rows += [
            dict(ID=i + 1, TIME=t, AMT=0.0, EVID=0, MDV=0, CMT=2, DV=1.0, WT=wt) for t in (0.5, 1, 2, 4, 8, 12, 24)
        ]
    m = pk.PopulationModel(
        "one_cpt_oral",
        dict(ka=1.2, CL=3.0, V=25.0),
        eta=["ka", "CL"],
        omega="full",
        omega_init=[[0.2, 0.05], [0.05, 0.1]],
        covariates={"CL": {"WT": "power"}},
        error="proportional",
        sigma=0.1,
        fixed=["V"],
    )
    x = m.x0.copy()
    x[m.blocks["beta"]] = 0.75
    (sim,), _ = pk.simulate_data(m, pk.read_data(pd.DataFrame(rows)), x, seed=7)
    start = x.copy()
    start[m.blocks["theta"].start : m.blocks["theta"].start + 2] += 0.3
    start[m.blocks["beta"]] = 0.0
    f = pk.fit(m, sim, "foce", x0=start)
    s = pk.fit(m, sim, "saem", x0=start, seed=2)
    assert s.converged
    iv = m.names.index("log V")
    assert s.x[iv] == start[iv]  # (fixed)
    for r1, r2 in zip(f.table, s.table, strict=True):
        if np.isfinite(r1["se"]):
            assert abs(r2["estimate"] - r1["estimate"]) < 0.5 * r1["se"], r1["name"]
    (b_s,) = [r for r in s.table if r["name"].startswith("CL~WT")]
    (b_f,) = [r for r in f.table if r["name"].startswith("CL~WT")]
    assert abs(b_s["estimate"] - 0.75) < 2.5 * b_f["se"]


def test_saem_refuses_what_it_does_not_estimate(data):
    _, d = data
    part = pk.PopulationModel(
        "one_cpt_oral",
        dict(ka=1.2, CL=3.0, V=25.0),
        eta=["ka", "CL"],
        omega="full",
        omega_init=[[0.1, 0.02], [0.02, 0.1]],
        fixed=["L(CL,ka)"],
    )
    with pytest.raises(ValueError, match="full Omega fixes all of its entries or none"):
        pk.fit(part, d, "saem")
    ude = pk.demo.theophylline_ude()
    with pytest.raises(ValueError, match="does not estimate network weights"):
        pk.fit(ude, sc.pkdata.theophylline(), "saem")
