"""NONMEM's steady-state doses (SS = 1, 2, 3; constant infusions; SS with ADDL and EVID 4): each rule
against a closed form or an independent sum of single-dose closed forms, the steady state of
multi-state and nonlinear models against long repeated dosing, and the gradients of the population
objectives through steady states against central differences."""

from __future__ import annotations

import io

import numpy as np
import pytest
from helpers import check_foce_derivatives, check_map_gradients

import smallchains as sc
from smallchains import pk
from smallchains.pk.estimation import Problem
from smallchains.pk.steady_state import SteadyStateError

pd = pytest.importorskip("pandas")

TOL = dict(rtol=1e-11, atol=1e-13)


def subject(text):
    return pk.read_data(pd.read_csv(io.StringIO(text), na_values=["."], skipinitialspace=True))[0]


def records(rows, obs):
    """A subject from dose rows (dicts) and observation times."""
    recs = [{"ID": 1, "EVID": 1, "MDV": 1, **r} for r in rows]
    recs += [dict(ID=1, TIME=t, DV=1.0, EVID=0, MDV=0, AMT=0.0) for t in obs]
    recs.sort(key=lambda r: (r["TIME"], r["EVID"] == 0))  # (a sample at a dose time sees the trough)
    return pk.read_data(pd.DataFrame(recs))[0]


# --------------------------------------------------------------------------- closed forms (one compartment)


def iv_bolus(t, doses, k, V):
    """Concentrations from boluses (time, amount): superposition of D e^{-k (t - td)} / V."""
    t = np.asarray(t, dtype=float)
    return sum(np.where(t > td, a * np.exp(-k * (t - td)), 0.0) for td, a in doses) / V


def iv_infusion(t, t_start, rate, dur, k, V):
    s = np.asarray(t, dtype=float) - t_start
    during = rate / (k * V) * (1 - np.exp(-k * np.clip(s, 0, None)))
    after = rate / (k * V) * (1 - np.exp(-k * dur)) * np.exp(-k * (s - dur))
    return np.where(s <= 0, 0.0, np.where(s <= dur, during, after))


def test_the_issues_example_ss1_resets_history():
    """A dose at 0 and an SS = 1 dose at 100 every 6: the sample at 10 sees the first dose only, the one at
    100 (a trough, before the dose) the first dose's decay, and later ones the steady state alone."""
    CL, V = 2.0, 20.0
    k = CL / V
    s = records([dict(TIME=0, AMT=100, SS=0, II=0), dict(TIME=100, AMT=100, SS=1, II=6)], [10, 100, 101, 106, 130])
    t, y = pk.one_cpt_iv().simulate(s, [CL, V], **TOL)
    trough = 100 * np.exp(-k * 6) / (1 - np.exp(-k * 6))
    want = [100 * np.exp(-k * 10) / V, 100 * np.exp(-k * 100) / V] + [
        (trough + 100) * np.exp(-k * (tt - 100)) / V for tt in (101, 106, 130)
    ]
    np.testing.assert_allclose(y, want, rtol=1e-9)


def test_oral_steady_state_is_the_closed_form_bateman_sum():
    ka, CL, V, tau = 1.3, 4.0, 20.0, 12.0
    k = CL / V
    ts = np.linspace(100.25, 112, 12)
    s = records([dict(TIME=100, AMT=100, CMT=1, SS=1, II=tau)], ts)
    _, y = pk.one_cpt_oral().simulate(s, [ka, CL, V], **TOL)
    dt = ts - 100
    decay = np.exp(-k * dt) / (1 - np.exp(-k * tau)) - np.exp(-ka * dt) / (1 - np.exp(-ka * tau))
    want = 100 * ka / (V * (ka - k)) * decay
    np.testing.assert_allclose(y, want, rtol=1e-9)


@pytest.mark.parametrize("dur", [3.0, 12.0, 30.0])  # shorter than II, equal to it, and 2.5 intervals long
def test_infusion_at_steady_state_equals_the_sum_of_every_earlier_infusion(dur):
    """SS = 1 infusions, including ones longer than II (ceil(D / II) copies overlap, and those running at
    the record's time go on after it), against the sum of 3000 single-infusion closed forms."""
    CL, V, tau, amt = 3.0, 30.0, 12.0, 120.0
    k = CL / V
    ts = np.r_[np.linspace(48.5, 90, 15), 96.0]
    s = records([dict(TIME=48, AMT=amt, RATE=amt / dur, SS=1, II=tau)], ts)
    _, y = pk.one_cpt_iv().simulate(s, [CL, V], **TOL)
    want = sum(iv_infusion(ts, 48 - j * tau, amt / dur, dur, k, V) for j in range(3000))
    np.testing.assert_allclose(y, want, rtol=1e-9)


def test_infusion_duration_by_dur_column_and_ss_with_addl():
    """RATE = -2 with DUR at steady state, and ADDL after an SS record: the doses go on, so the samples
    between them stay on the steady-state profile; after the last one, it decays."""
    CL, V, tau, amt, dur = 3.0, 30.0, 8.0, 80.0, 2.0
    k = CL / V
    ts = np.array([1.0, 9.0, 17.0, 23.0, 30.0, 40.0])
    s = records([dict(TIME=0, AMT=amt, RATE=-2, DUR=dur, SS=1, II=tau, ADDL=2)], ts)
    _, y = pk.one_cpt_iv().simulate(s, [CL, V], **TOL)
    starts = [-j * tau for j in range(3000)] + [8.0, 16.0]
    want = sum(iv_infusion(ts, t0, amt / dur, dur, k, V) for t0 in starts)
    np.testing.assert_allclose(y, want, rtol=1e-9)


def test_constant_infusion_at_steady_state():
    """II = 0, AMT = 0, RATE > 0: the equilibrium R / CL, and the infusion goes on (a later bolus adds)."""
    CL, V, R = 2.5, 25.0, 10.0
    k = CL / V
    ts = np.array([5.0, 10.0, 20.0, 30.0])
    s = records([dict(TIME=0, AMT=0, RATE=R, SS=1, II=0), dict(TIME=15, AMT=50, SS=0, II=0)], ts)
    _, y = pk.one_cpt_iv().simulate(s, [CL, V], **TOL)
    np.testing.assert_allclose(y, R / CL + iv_bolus(ts, [(15, 50)], k, V), rtol=1e-9)


def test_ss2_adds_the_steady_state_to_the_current_amounts():
    """SS = 2 (superposition): the earlier bolus keeps decaying and its infusion in progress goes on."""
    CL, V, tau = 2.0, 20.0, 12.0
    k = CL / V
    ts = np.array([10.0, 24.5, 30.0, 40.0])
    s = records(
        [
            dict(TIME=0, AMT=100, SS=0, II=0),
            dict(TIME=20, AMT=60, RATE=10, SS=0, II=0),
            dict(TIME=24, AMT=50, SS=2, II=tau),
        ],
        ts,
    )
    _, y = pk.one_cpt_iv().simulate(s, [CL, V], **TOL)
    trough = 50 * np.exp(-k * tau) / (1 - np.exp(-k * tau))
    ss = np.where(ts > 24, (trough + 50) * np.exp(-k * (ts - 24)) / V, 0.0)
    want = iv_bolus(ts, [(0, 100)], k, V) + iv_infusion(ts, 20, 10, 6, k, V) + ss
    np.testing.assert_allclose(y, want, rtol=1e-9)


def test_ss1_cancels_infusions_in_progress_and_pending_additional_doses():
    """PREDPP: an SS = 1 record zeroes the amounts, cuts infusions in progress and cancels the ADDL doses
    of earlier records still to come; its own ADDL doses are given."""
    CL, V = 2.0, 20.0
    k = CL / V
    ts = np.array([49.0, 60.0, 75.0, 90.0])
    s = records(
        [
            dict(TIME=0, AMT=100, SS=0, II=12, ADDL=10),
            dict(TIME=46, AMT=200, RATE=50, SS=0, II=0),
            dict(TIME=48, AMT=30, SS=1, II=24, ADDL=1),
        ],
        ts,
    )
    _, y = pk.one_cpt_iv().simulate(s, [CL, V], **TOL)
    trough = 30 * np.exp(-k * 24) / (1 - np.exp(-k * 24))
    want = iv_bolus(ts, [(48, trough + 30), (72, 30)], k, V)
    np.testing.assert_allclose(y, want, rtol=1e-9)


@pytest.mark.parametrize("ss", [1, 2, 3])
def test_evid_4_with_ss_resets_then_sets_the_steady_state(ss):
    """EVID 4: the reset, then the steady state (SS = 2 adds it to the reset amounts: zero)."""
    CL, V, tau = 2.0, 20.0, 12.0
    k = CL / V
    ts = np.array([5.0, 30.0, 41.0])
    s = records([dict(TIME=0, AMT=100, SS=0, II=12, ADDL=5), dict(TIME=24, AMT=50, SS=ss, II=tau, EVID=4)], ts)
    _, y = pk.one_cpt_iv().simulate(s, [CL, V], **TOL)
    trough = 50 * np.exp(-k * tau) / (1 - np.exp(-k * tau))
    want = np.where(ts < 24, iv_bolus(ts, [(0, 100), (12, 100)], k, V), iv_bolus(ts, [(24, trough + 50)], k, V))
    np.testing.assert_allclose(y, want, rtol=1e-9)


def test_a_reset_with_doses_pending_is_refused_naming_the_row():
    for rows in (
        [dict(TIME=0, AMT=100, II=12, ADDL=5), dict(TIME=24, AMT=50, EVID=4)],
        [dict(TIME=0, AMT=100, RATE=2), dict(TIME=24, AMT=50, EVID=4)],
    ):
        s = records(rows, [30.0])
        with pytest.raises(pk.DataError, match=r"row 2: a reset \(EVID 3 or 4\) while"):
            pk.one_cpt_iv().simulate(s, [2.0, 20.0])


# --------------------------------------------------------------------------- any model: Newton on the flow map


def repeated_dosing(model, p, dose, tau, n, ts_after, cmt=1, rate=None):
    """The reference: ``n`` plain doses every tau before the last, sampled after the last."""
    t_last = n * tau
    row = dict(TIME=0, AMT=dose, CMT=cmt, SS=0, II=tau, ADDL=n)
    if rate is not None:
        row["RATE"] = rate
    s = records([row], t_last + np.asarray(ts_after))
    return model.simulate(s, p, solver=sc.Vern7(), **TOL)[1]


@pytest.mark.parametrize(
    "name,p,cmt,rate",
    [
        ("two_cpt_oral", [1.1, 3.0, 20.0, 5.0, 60.0], 1, None),
        ("two_cpt_iv", [3.0, 20.0, 5.0, 60.0], 1, 40.0),
        ("one_cpt_oral_mm", [1.2, 30.0, 2.0, 25.0], 1, None),  # Michaelis-Menten: nonlinear
    ],
)
def test_steady_state_of_any_model_equals_long_repeated_dosing(name, p, cmt, rate):
    m = pk.MODELS[name]()
    dose, tau = 100.0, 12.0
    after = np.array([0.5, 2.0, 6.0, 11.0])
    row = dict(TIME=0, AMT=dose, CMT=cmt, SS=1, II=tau)
    if rate is not None:
        row["RATE"] = rate
    s = records([row], after)
    _, y = m.simulate(s, p, ss_tol=1e-12, solver=sc.Vern7(), **TOL)
    ref = repeated_dosing(m, p, dose, tau, 150, after, cmt=cmt, rate=rate)  # (the slowest decay: e^-0.035 per h)
    np.testing.assert_allclose(y, ref, rtol=1e-8)


def test_nonlinear_constant_infusion_equilibrium_and_its_absence():
    """Michaelis-Menten elimination under a constant infusion R: c = R Km / (Vmax - R); with R >= Vmax
    there is no steady state, and the error names the record."""
    ka, Vmax, Km, V = 1.2, 30.0, 2.0, 25.0
    m = pk.one_cpt_oral_mm()
    s = records([dict(TIME=0, AMT=0, RATE=12.0, CMT=2, SS=1, II=0)], [1.0, 5.0])
    _, y = m.simulate(s, [ka, Vmax, Km, V], ss_tol=1e-12, **TOL)
    np.testing.assert_allclose(y, 12.0 * Km / (Vmax - 12.0), rtol=1e-8)
    s = records([dict(TIME=0, AMT=0, RATE=40.0, CMT=2, SS=1, II=0)], [1.0])
    with pytest.raises(SteadyStateError, match="row 1: no steady state"):
        m.simulate(s, [ka, Vmax, Km, V])


# --------------------------------------------------------------------------- gradients through steady states


def ss_population():
    """Three subjects: SS = 1 oral with ADDL and an earlier dose, SS = 2 on top of a running infusion into
    the depot, and an SS infusion longer than II; samples before and after."""
    text = """ID,TIME,DV,EVID,AMT,CMT,RATE,II,ADDL,SS,WT
1,0,.,1,100,1,.,.,.,0,60
1,4,2.1,0,.,2,.,.,.,.,60
1,48,.,1,150,1,.,12,1,1,60
1,49,6.0,0,.,2,.,.,.,.,60
1,55,4.5,0,.,2,.,.,.,.,60
1,66,4.0,0,.,2,.,.,.,.,60
2,0,.,1,120,1,30,.,.,0,80
2,2,1.5,0,.,2,.,.,.,.,80
2,3,.,1,80,1,.,8,.,2,80
2,5,5.0,0,.,2,.,.,.,.,80
2,10,3.2,0,.,2,.,.,.,.,80
3,0,.,1,200,2,10,12,.,1,70
3,1,9.0,0,.,2,.,.,.,.,70
3,6,8.0,0,.,2,.,.,.,.,70
3,20,7.0,0,.,2,.,.,.,.,70
"""
    return pk.read_data(pd.read_csv(io.StringIO(text), na_values=["."]))


def ss_model():
    return pk.PopulationModel(
        "one_cpt_oral", dict(ka=1.0, CL=3.0, V=25.0), eta=["ka", "CL", "V"], omega_init=0.1, error="combined"
    )


def test_map_gradient_through_steady_states_matches_central_differences():
    m = ss_model()
    P = Problem(m, ss_population(), rtol=1e-11, atol=1e-13, solver=sc.Vern7(), ss_tol=1e-13)
    assert all(s.piecewise for s in P.subjects)
    x = m.x0.copy()
    etas = np.random.default_rng(1).normal(0, 0.2, (P.N, m.n_eta))
    check_map_gradients(P, x, etas)
    P.close()


def test_foce_sensitivities_and_gradient_through_steady_states():
    """G = df/deta by forward sensitivities started from du*/dp (and chained through SS = 2) against
    differences of the predictions; the FOCE-I gradient against central differences of the OFV."""
    m = ss_model()
    P = Problem(m, ss_population(), rtol=1e-11, atol=1e-13, solver=sc.Vern7(), ss_tol=1e-13, inner_tol=1e-24)
    check_foce_derivatives(P, m.x0.copy(), np.array([0.1, -0.2, 0.15]))
    P.close()


def test_a_population_with_steady_states_fits():
    """Simulated from known parameters with steady-state designs, a FOCE-I fit recovers them."""
    m = ss_model()
    rows = []
    rng = np.random.default_rng(3)
    for i in range(24):
        rows.append(
            dict(
                ID=i + 1,
                TIME=0.0,
                AMT=100.0 + 10 * (i % 3),
                EVID=1,
                MDV=1,
                CMT=1,
                SS=1 + (i % 2),
                II=12.0,
                ADDL=1,
                DV=np.nan,
            )
        )
        rows += [
            dict(ID=i + 1, TIME=t, AMT=0.0, EVID=0, MDV=0, CMT=2, SS=0, II=0.0, ADDL=0, DV=1.0)
            for t in np.sort(rng.uniform(0.2, 24, 6))
        ]
    design = pk.read_data(pd.DataFrame(rows))
    truth = m.x0.copy()
    (data,), _ = pk.simulate_data(m, design, truth, seed=4)
    with np.errstate(all="ignore"):
        r = pk.fit(m, data, "foce", se=False)
    est, want = r.model.theta(r.x), m.theta(truth)
    np.testing.assert_allclose([est[k] for k in want], list(want.values()), rtol=0.25)


def test_quinidine_against_nlmes_quinmodel():
    """16 Quinidine patients (107 steady-state doses among the 136 of nlme's data, NONMEM records made by
    benchmarks/pk_nlme_steady_state.py) against nlme's quinModel, an independent closed form in C with
    NONMEM's SS = 1 rule (40 predictions, 29 after a steady-state dose; V 100, ka 0.5, CL 10)."""
    from pathlib import Path

    here = Path(__file__).parent / "data"
    pop = pk.read_data(here / "quinidine_subset.csv")
    ref = pd.read_csv(here / "quinidine_nlme_reference.csv")
    m = pk.one_cpt_oral()
    got = []
    for s in pop:
        got += list(m.simulate(s, dict(ka=0.5, CL=10.0, V=100.0), rtol=1e-10, atol=1e-12)[1])
    assert len(got) == len(ref) == 40
    np.testing.assert_allclose(got, ref["PRED"].to_numpy(), rtol=1e-8)
