"""Regimens (sc.pk.regimen) and simulating new subjects on them (FitResult.simulate), against closed forms."""

from __future__ import annotations

import numpy as np
import pytest

import smallchains as sc


def _model():
    return sc.pk.PopulationModel("one_cpt_oral", dict(ka=1.5, CL=0.4, V=5.0), eta=["CL"], error="additive")


def _closed_form(t, ka, k, V, boluses, infusions):
    """One-compartment oral: boluses (time, amount) into the depot, infusions (start, amount, duration) into
    the central compartment; the central concentration."""
    c = np.zeros_like(t)
    for td, D in boluses:
        s = t - td
        c += np.where(s > 0, D * ka / (V * (ka - k)) * (np.exp(-k * s) - np.exp(-ka * s)), 0.0)
    for t0, D, dur in infusions:
        R = D / dur
        s = np.clip(t - t0, 0.0, dur)
        after = np.clip(t - t0 - dur, 0.0, None)
        c += R / k * (1 - np.exp(-k * s)) * np.exp(-k * after) / V
    return c


def test_simulated_subjects_follow_the_closed_form():
    m = _model()
    fit = sc.pk.FitResult(model=m, x=m.x0)
    reg = sc.pk.regimen(100, ii=12, addl=2) + sc.pk.regimen(50, time=6, cmt=2, duration=1.0)
    times = np.array([0.5, 6.5, 8.4, 12.0, 16.3, 24.2, 40.0])
    df = fit.simulate(reg, times=times, n=4, seed=3)
    assert list(df.columns) == ["ID", "TIME", "DVID", "IPRED", "DV", "ETA_CL"]
    assert df["ID"].tolist() == [i for i in (1, 2, 3, 4) for _ in times]
    th = m.theta(m.x0)
    for _, g in df.groupby("ID"):
        eta = g["ETA_CL"].iloc[0]
        k = th["CL"] * np.exp(eta) / th["V"]
        want = _closed_form(
            g["TIME"].to_numpy(), th["ka"], k, th["V"], [(0, 100), (12, 100), (24, 100)], [(6, 50, 1.0)]
        )
        np.testing.assert_allclose(g["IPRED"].to_numpy(), want, rtol=1e-6)
    assert df["ETA_CL"].nunique() == 4
    assert not np.allclose(df["DV"], df["IPRED"])  # residual error is added
    again = fit.simulate(reg, times=times, n=4, seed=3)
    np.testing.assert_array_equal(again["DV"], df["DV"])  # reproducible by seed
    # a sample at a dose time sees the trough (the state before the dose), as in the data rules
    at12 = df[df["TIME"] == 12.0]["IPRED"].to_numpy()
    assert np.all(at12 < df[df["TIME"] == 8.4]["IPRED"].to_numpy())


def test_regimens_compose_and_refuse_bad_arguments():
    r = sc.pk.regimen(200) + sc.pk.regimen(100, time=12, ii=12, addl=2, rate=50)
    assert len(r) == 2 and r.dose_times() == [0.0, 12.0, 24.0, 36.0]
    assert r.rows()[1]["RATE"] == 50 and repr(r).startswith("regimen(200, time=0")
    bad = [
        (dict(amt=0), ValueError, "`amt`"),
        (dict(amt="x"), TypeError, "`amt`"),
        (dict(amt=1, cmt=0), ValueError, "`cmt`"),
        (dict(amt=1, addl=2), ValueError, "`ii`"),
        (dict(amt=1, addl=-1), ValueError, "`addl`"),
        (dict(amt=1, rate=1, duration=2), ValueError, "not both"),
        (dict(amt=1, ss=3, ii=12), ValueError, "`ss`"),
        (dict(amt=1, ss=1), ValueError, "`ii`"),
        (dict(amt=1, time=float("nan")), ValueError, "`time`"),
    ]
    for kw, err, match in bad:
        with pytest.raises(err, match=match):
            sc.pk.regimen(**kw)
    m = _model()
    fit = sc.pk.FitResult(model=m, x=m.x0)
    with pytest.raises(TypeError, match="`regimen`"):
        fit.simulate([(100, 0)], times=[1.0])
    with pytest.raises(ValueError, match="before the first dose"):
        fit.simulate(sc.pk.regimen(100, time=5), times=[1.0, 6.0])
    with pytest.raises(ValueError, match="covariate 'WT'"):
        fit.simulate(sc.pk.regimen(100), times=[1.0], n=2, covariates={"WT": [70.0]})
