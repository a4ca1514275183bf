"""BLQ observations in the likelihood (pk/_censored.py: Beal's M3 and M4): each term against its
closed form and its derivatives against differences, the compiled data terms against the NumPy
path, the Laplace terms against the quadrature of the censored likelihood, and the fit's rules
(FOCE-I refuses, the LLOQ's sources, the constants of -2 log L, the tables)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from helpers import check_map_gradients, quadrature_term, small_data
from scipy.special import log_ndtr
from scipy.stats import norm

import smallchains as sc
from smallchains.pk import _censored as C
from smallchains.pk import laplace as LP
from smallchains.pk.estimation import Problem, SubjectEval


def test_log_ndtr_equals_scipy_in_both_tails():
    x = np.linspace(-80.0, 12.0, 921)
    ours = np.array([C.log_ndtr(v) for v in x])
    np.testing.assert_allclose(ours, log_ndtr(x), rtol=1e-13)
    np.testing.assert_allclose([C.mills(v) for v in x], np.exp(norm.logpdf(x) - log_ndtr(x)), rtol=1e-11)


@pytest.mark.parametrize("code", [0, 1, 2, 3])
def test_each_term_equals_its_closed_form_and_its_derivatives_differences(code):
    rng = np.random.default_rng(code)
    for _ in range(50):
        f, V, L, y = rng.uniform(0.05, 5), rng.uniform(0.01, 2), rng.uniform(0.1, 3), rng.uniform(0.1, 5)
        s = math.sqrt(V)
        closed = {
            0: (y - f) ** 2 / V + math.log(V),
            1: -2 * norm.logcdf((L - f) / s),
            2: (y - f) ** 2 / V + math.log(V) + 2 * norm.logcdf(f / s),
            3: -2 * math.log((norm.cdf((L - f) / s) - norm.cdf(-f / s)) / norm.cdf(f / s)),
        }[code]
        l, lf, lV = C.obs_term(y, code, L, f, V)
        assert l == pytest.approx(closed, rel=1e-12, abs=1e-12)
        h = 1e-6
        assert lf == pytest.approx(
            (C.obs_term(y, code, L, f + h, V)[0] - C.obs_term(y, code, L, f - h, V)[0]) / (2 * h), rel=1e-6, abs=1e-6
        )
        assert lV == pytest.approx(
            (C.obs_term(y, code, L, f, V + h)[0] - C.obs_term(y, code, L, f, V - h)[0]) / (2 * h), rel=1e-6, abs=1e-6
        )


def test_censored_terms_in_the_far_tail_stay_finite_and_zero_variance_rules():
    # a prediction 2000 sds above the LLOQ: the probability underflows, its log does not
    l, lf, _ = C.obs_term(0.0, C.M3, 1.0, 200.0, 0.01)
    assert l == pytest.approx(2 * (0.5 * 1990**2 + math.log(1990) + 0.5 * math.log(2 * math.pi)), rel=1e-6)
    assert lf == pytest.approx(2 * 1990 / 0.1, rel=1e-6)
    assert C.obs_term(0.0, C.M4_CENSORED, 1.0, 200.0, 0.01)[0] == pytest.approx(l, rel=1e-9)
    # V = 0: below the LLOQ the event is certain (term 0), above it impossible
    assert C.obs_term(0.0, C.M3, 1.0, 0.0, 0.0) == (0.0, 0.0, 0.0)
    assert C.obs_term(0.0, C.M3, 1.0, 2.0, 0.0)[0] == math.inf


def blq_data(n=12, frac=0.2, lloq_column=False, predose=False):
    """small_data's subjects with the lowest ``frac`` of the observations flagged BLQ = 1 and
    their DV set to the LLOQ (or NaN with an LLOQ column); ``predose`` adds a BLQ sample at time 0."""
    m, data = small_data(n=n, seed=3)
    rows = []
    for s in data.subjects:
        if predose:
            rows.append(dict(ID=s.id, TIME=0.0, AMT=0.0, EVID=0, MDV=0, CMT=2, DV=0.0, BLQ=1))
        rows.append(dict(ID=s.id, TIME=0.0, AMT=100.0, EVID=1, MDV=1, CMT=1, DV=np.nan, BLQ=0))
        rows += [dict(ID=s.id, TIME=t, AMT=0.0, EVID=0, MDV=0, CMT=2, DV=y, BLQ=0) for t, y in zip(s.obs_time, s.dv)]
    df = pd.DataFrame(rows)
    obs = (df.MDV == 0) & (df.BLQ == 0)
    lloq = float(np.quantile(df.DV[obs], frac))
    df.loc[obs & (df.DV < lloq), "BLQ"] = 1
    if lloq_column:
        df["LLOQ"] = lloq
        df.loc[df.BLQ == 1, "DV"] = np.nan
    else:
        df.loc[df.BLQ == 1, "DV"] = lloq
    return m, sc.pk.read_data(df), lloq


@pytest.fixture(scope="module")
def censored():
    return blq_data()


@pytest.mark.parametrize("rule", ["m3", "m4"])
def test_compiled_data_terms_equal_the_numpy_path_and_the_map_gradients_are_exact(censored, rule):
    m, data, _ = censored
    x = m.x0.copy()
    P = Problem(m, data, blq=rule)
    assert P.compiled_foce is not None and P.nonnormal
    etas = np.random.default_rng(1).normal(0.0, 0.2, (P.N, m.n_eta))
    compiled = P.data_terms(x, etas)
    SubjectEval.compiled = False
    try:
        plain = Problem(m, data, blq=rule).data_terms(x, etas)
    finally:
        SubjectEval.compiled = True
    np.testing.assert_allclose(compiled, plain, rtol=1e-12)
    # the terms are the closed forms summed over each subject's observations
    for s, e, lc in zip(P.subjects, etas, compiled):
        f = s.predict(x, e)[2]
        V = m.error.variance(f, x[m.blocks["psi"]])[0]
        sd = np.sqrt(V)
        cens = np.asarray(s.subject.blq)
        if rule == "m3":
            ref = np.where(cens, -2 * norm.logcdf((s.lim - f) / sd), (s.y - f) ** 2 / V + np.log(V))
        else:
            ref = np.where(
                cens,
                -2 * np.log(norm.cdf((s.lim - f) / sd) - norm.cdf(-f / sd)),
                (s.y - f) ** 2 / V + np.log(V),
            ) + 2 * norm.logcdf(f / sd)
        assert lc == pytest.approx(ref.sum(), rel=1e-11)
    check_map_gradients(P, x, etas)


def independent_laplace(s, x, omega2):
    from scipy.optimize import minimize_scalar

    def Phi(e):
        return s.data_term(x, np.array([e]), 0) + e * e / omega2

    e = minimize_scalar(Phi, bounds=(-3.0, 3.0), method="bounded", options={"xatol": 1e-10}).x
    h = 1e-4
    H = (Phi(e + h) - 2 * Phi(e) + Phi(e - h)) / (h * h)
    return Phi(e) + math.log(omega2) + math.log(H / 2)


def test_laplace_terms_with_m3_are_near_the_integral_of_the_censored_likelihood(censored):
    """One random effect (on CL): each subject's Laplace term equals Laplace computed another way
    (Brent's mode, second differences of the values) to 1e-5, and is within 0.15 of the quadrature
    of its censored likelihood (Laplace's own error, measured: 0.022-0.042 for these subjects
    without their BLQ records, up to 0.104 with them, where a censored term skews the posterior)."""
    _, data, _ = censored
    m = sc.pk.PopulationModel(
        "one_cpt_oral", dict(ka=1.2, CL=3.0, V=25.0), eta=["CL"], omega_init=0.1, error="proportional", sigma=0.1
    )
    P = Problem(m, data, blq="m3")
    x = m.x0
    om2 = float(m.omega(x)[0, 0])
    _, _, res = LP.laplace(P, x)
    n_cens = 0
    for s, r in zip(P.subjects, res):
        lap = r[1] + math.log(om2) + math.log(r[2][0, 0])
        assert lap == pytest.approx(independent_laplace(s, x, om2), abs=1e-5)
        assert lap == pytest.approx(quadrature_term(s, x, om2), abs=0.15)
        n_cens += int(np.sum(s.code == C.M3))
    assert n_cens > 5


def test_foce_refuses_censoring_and_m1_warns_with_the_count(censored):
    m, data, _ = censored
    n_blq = sum(int(np.sum(s.blq)) for s in data.subjects)
    with pytest.raises(ValueError, match="NONMEM runs M3 and M4 only with LAPLACIAN.*method='laplace'"):
        sc.pk.fit(m, data, "foce", blq="m3")
    with pytest.warns(sc.DataWarning, match=f"{n_blq} observation\\(s\\) flagged BLQ = 1 are left out"):
        Problem(m, data)
    with pytest.raises(ValueError, match="`blq` must be one of"):
        Problem(m, data, blq="m2")


def test_the_lloq_comes_from_the_argument_the_column_or_the_dv():
    m, with_col, lloq = blq_data(lloq_column=True)
    _, with_dv, _ = blq_data()
    zero = np.zeros((len(with_dv.subjects), m.n_eta))
    a = Problem(m, with_col, blq="m3").data_terms(m.x0, zero)
    b = Problem(m, with_dv, blq="m3").data_terms(m.x0, zero)
    c = Problem(m, with_col, blq="m3", lloq=lloq).data_terms(m.x0, zero)
    np.testing.assert_allclose(a, b, rtol=1e-13)
    np.testing.assert_allclose(a, c, rtol=1e-13)
    assert not np.allclose(a, Problem(m, with_col, blq="m3", lloq=2 * lloq).data_terms(m.x0, zero))
    # DV NaN on a BLQ record and no LLOQ: the error names the subject, the time and the fix
    df = pd.DataFrame(
        [dict(ID=1, TIME=0.0, AMT=100.0, EVID=1, MDV=1, CMT=1, DV=np.nan, BLQ=0)]
        + [dict(ID=1, TIME=t, AMT=0.0, EVID=0, MDV=0, CMT=2, DV=2.0, BLQ=0) for t in (1.0, 2.0)]
        + [dict(ID=1, TIME=24.0, AMT=0.0, EVID=0, MDV=0, CMT=2, DV=np.nan, BLQ=1)]
    )
    d = sc.pk.read_data(df)
    with pytest.raises(ValueError, match=r"subject 1, time 24: a BLQ observation's LLOQ must be a number.*lloq="):
        Problem(m, d, blq="m3")
    df.loc[1, "DV"] = -0.5
    with pytest.raises(ValueError, match=r"subject 1, time 1: DV -0.5 is not > 0, but M4"):
        Problem(m, sc.pk.read_data(df), blq="m4", lloq=0.1)
    with pytest.raises(ValueError, match="`lloq` must be a number"):
        Problem(m, d, blq="m3", lloq="LLOQ")


def test_a_predose_blq_sample_with_zero_variance_has_probability_one():
    """Proportional error, a BLQ sample before the dose (prediction 0, variance 0): M3's term
    there is 0, so the subject's term equals the one without that sample."""
    m, with_pre, _ = blq_data(predose=True)
    _, without, _ = blq_data()
    zero = np.zeros((len(without.subjects), m.n_eta))
    a = Problem(m, with_pre, blq="m3").data_terms(m.x0, zero)
    b = Problem(m, without, blq="m3").data_terms(m.x0, zero)
    np.testing.assert_allclose(a, b, rtol=1e-13)


@pytest.fixture(scope="module")
def m3_fit(censored):
    m, data, _ = censored
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sc.pk.fit(m, data, "laplace", blq="m3")


@pytest.mark.slow
def test_laplace_and_saem_fits_with_m3(censored, m3_fit, tmp_path):
    m, data, _ = censored
    lap = m3_fit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        saem = sc.pk.fit(m, data, "saem", blq="m3", method_options={"n_explore": 150, "n_smooth": 100})
    assert lap.converged
    P = Problem(m, data, blq="m3")
    v, _, _ = LP.laplace(P, lap.x)
    assert lap.ofv == pytest.approx(v, abs=1e-6)
    # -2 log L adds log 2 pi for the observed values only (a censored term is a probability)
    n_cens = int(np.sum(lap.diagnostics["BLQ"]))
    assert n_cens == sum(int(np.sum(s.blq)) for s in data.subjects) > 0
    assert -2 * lap.loglik == pytest.approx(lap.ofv + (lap.n_obs - n_cens) * math.log(2 * math.pi))
    # the censored rows: DV is the LLOQ, residuals NaN; the others' CWRES finite
    d = lap.diagnostics
    cens = d["BLQ"] == 1
    assert np.all(np.isnan(d["CWRES"][cens])) and np.all(np.isfinite(d["CWRES"][~cens]))
    assert np.all(np.isfinite(d["IPRED"]))
    # SAEM: its OFV is Laplace's (FOCE-I refuses censored data), said in the message and the table
    assert "OFV by Laplace" in saem.message and saem.settings["ofv_kind"] == "Laplace"
    assert np.all(np.abs(saem.x[:3] - lap.x[:3]) < 3 * np.sqrt(np.diag(lap.cov))[:3])
    assert list(sc.pk.compare([lap, saem])["ofv_kind"]) == ["Laplace", "Laplace"]
    # sdtab: the censored records are fitted (MDV 0) and flagged BLQ 1, with PRED and IPRED
    lap.write_tables(data, tmp_path, run=1, n_sim=0)
    lines = (tmp_path / "sdtab1").read_text().splitlines()
    cols = lines[1].split()
    rows = np.array([[float(v) for v in ln.split()] for ln in lines[2:]])
    blq = rows[:, cols.index("BLQ")] == 1
    assert blq.sum() == n_cens
    assert np.all(rows[blq, cols.index("MDV")] == 0) and np.all(rows[blq, cols.index("IPRED")] > 0)
    assert np.all(rows[blq, cols.index("CWRES")] == 0)


@pytest.mark.slow
def test_the_censored_vpc_counts_blq_fractions_and_hides_unknown_percentiles(censored, m3_fit):
    _, data, lloq = censored
    v = sc.pk.plots.vpc_data(m3_fit, data, n_sim=100, bins=4, seed=1)
    assert v["lloq"] == pytest.approx(lloq)
    xv, _ = v["points_blq"]
    which = np.clip(np.searchsorted(v["edges"], xv, side="right") - 1, 0, len(v["edges"]) - 2)
    np.testing.assert_allclose(v["blq_observed"], np.bincount(which, minlength=4) / v["n_obs"])
    # the model is the truth: the observed fraction lies within the simulated 98% range in every bin
    lo, hi = np.percentile(v["blq_simulated"], [1, 99], axis=0)
    assert np.all((v["blq_observed"] >= lo) & (v["blq_observed"] <= hi))
    # a percentile below the LLOQ is unknown (NaN), a known one is above it
    for arr in (v["observed"], v["simulated"][0]):
        known = np.isfinite(arr)
        assert np.all(arr[known] >= lloq * (1 - 1e-12))
    low_bin = int(np.argmax(v["blq_observed"]))
    assert v["blq_observed"][low_bin] > 0.05 and np.isnan(v["observed"][low_bin, 0])
    fig = sc.pk.plots.vpc(m3_fit, data, n_sim=50, bins=4)
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "fraction < LLOQ"
