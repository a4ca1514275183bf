"""NONMEM's dose parameters (ALAGn, Fn, Rn, Dn, PREDPP's meaning): each rule against a closed form, and
the population objectives' gradients through moving doses against central differences."""

from __future__ import annotations

import io

import numpy as np
import pytest
from helpers import check_foce_derivatives, check_map_gradients

import smallchains as sc
from smallchains import pk
from smallchains.pk.estimation import Problem

pd = pytest.importorskip("pandas")

TOL = dict(rtol=1e-11, atol=1e-13)


def subject(text):
    return pk.read_data(pd.read_csv(io.StringIO(text), na_values=["."], skipinitialspace=True))[0]


def bateman(t, doses, ka, k, V):
    """Oral one-compartment concentrations from doses (time, amount)."""
    t = np.asarray(t, dtype=float)
    out = np.zeros_like(t)
    for td, a in doses:
        s = np.clip(t - td, 0, None)
        out += a * ka / (V * (ka - k)) * (np.exp(-k * s) - np.exp(-ka * s))
    return out


def infusion(t, start, rate, dur, k, V):
    s = np.asarray(t, dtype=float) - start
    during = rate / (k * V) * (1 - np.exp(-k * np.clip(s, 0, None)))
    after = rate / (k * V) * (1 - np.exp(-k * dur)) * np.exp(-k * (s - dur))
    return np.where(s <= 0, 0.0, np.where(s <= dur, during, after))


ORAL = subject(
    "ID,TIME,DV,EVID,AMT,CMT,II,ADDL\n1,0,.,1,100,1,12,1\n"
    + "".join(f"1,{t},1,0,.,2,.,.\n" for t in (0.25, 0.5, 1, 2, 4, 8, 12.2, 12.6, 14, 24))
)


def test_lag_and_bioavailability_move_and_scale_every_dose():
    """ALAG1 moves both doses (ADDL too), samples before the lagged dose see nothing of it; F1 scales."""
    ka, CL, V, lag, F = 1.3, 4.0, 20.0, 0.7, 0.6
    t, y = pk.one_cpt_oral().simulate(ORAL, [ka, CL, V], dosing={"ALAG1": lag, "F1": F}, **TOL)
    np.testing.assert_allclose(y, bateman(t, [(lag, F * 100), (12 + lag, F * 100)], ka, CL / V, V), rtol=1e-9)


@pytest.mark.parametrize(
    "rate,params,want",
    [
        (25.0, {"F1": 0.8}, (25.0, 0.8 * 100 / 25.0)),  # given rate: F lengthens the infusion
        (-2, {"D1": 5.0, "F1": 0.8}, (0.8 * 100 / 5.0, 5.0)),  # modelled duration: F raises the rate
        (-1, {"R1": 40.0, "F1": 0.8}, (40.0, 0.8 * 100 / 40.0)),  # modelled rate
        (-1, {"R1": 40.0, "ALAG1": 1.5}, (40.0, 100 / 40.0)),  # and a lag moves the start and end
    ],
)
def test_infusions_with_dose_parameters(rate, params, want):
    CL, V = 3.0, 30.0
    s = subject(
        f"ID,TIME,DV,EVID,AMT,CMT,RATE\n1,0,.,1,100,1,{rate}\n"
        + "".join(f"1,{t},1,0,.,1,.\n" for t in (0.5, 1, 2, 3, 4.5, 6, 10))
    )
    t, y = pk.one_cpt_iv().simulate(s, [CL, V], dosing=params, **TOL)
    R, dur = want
    np.testing.assert_allclose(y, infusion(t, params.get("ALAG1", 0.0), R, dur, CL / V, V), rtol=1e-9, atol=1e-12)


def test_a_lag_can_carry_a_dose_past_another_and_past_a_sample():
    """Doses at 0 (CMT 1, lag 3) and 1 (CMT 2, no lag): the first enters after the second."""
    s = subject("ID,TIME,DV,EVID,AMT,CMT\n1,0,.,1,100,1\n1,1,.,1,50,2\n1,2,1,0,.,2\n1,5,1,0,.,2\n")
    ka, CL, V = 1.3, 4.0, 20.0
    k = CL / V
    t, y = pk.one_cpt_oral().simulate(s, [ka, CL, V], dosing={"ALAG1": 3.0}, **TOL)
    want = bateman(t, [(3.0, 100)], ka, k, V) + np.where(t > 1, 50 * np.exp(-k * (t - 1)) / V, 0.0)
    np.testing.assert_allclose(y, want, rtol=1e-9)


def test_rate_minus_one_and_two_need_the_models_parameter():
    s = subject("ID,TIME,DV,EVID,AMT,CMT,RATE\n1,0,.,1,100,1,-1\n1,2,1,0,.,1,.\n")
    with pytest.raises(pk.DataError, match=r"row 1: RATE = -1 .* no R1"):
        pk.one_cpt_iv().simulate(s, [3.0, 30.0])
    s = subject("ID,TIME,DV,EVID,AMT,CMT,RATE\n1,0,.,1,100,1,-2\n1,2,1,0,.,1,.\n")
    with pytest.raises(pk.DataError, match=r"row 1: RATE = -2 .* no D1 and the data no DUR"):
        pk.one_cpt_iv().simulate(s, [3.0, 30.0])
    m = pk.PopulationModel("one_cpt_iv", dict(CL=3.0, V=30.0), error="additive")
    with pytest.raises(pk.DataError, match=r"row 1: RATE = -2"):
        Problem(
            m,
            pk.read_data(
                pd.read_csv(
                    io.StringIO("ID,TIME,DV,EVID,AMT,CMT,RATE\n1,0,.,1,100,1,-2\n1,2,1,0,.,1,.\n"), na_values=["."]
                )
            ),
        )
    with pytest.raises(ValueError, match="ALAG3"):
        pk.PopulationModel("one_cpt_oral", dict(ka=1.0, CL=3.0, V=30.0, ALAG3=0.5))
    with pytest.raises(ValueError, match="unknown"):
        pk.PopulationModel("one_cpt_oral", dict(ka=1.0, CL=3.0, V=30.0, TLAG=0.5))


# --------------------------------------------------------------------------- gradients


def dosing_population():
    text = """ID,TIME,DV,EVID,AMT,CMT,RATE,II,ADDL
1,0,.,1,100,1,.,12,1
1,0.5,1.2,0,.,2,.,.,.
1,1.5,3.4,0,.,2,.,.,.
1,4,3.1,0,.,2,.,.,.
1,13,2.8,0,.,2,.,.,.
1,16,3.9,0,.,2,.,.,.
2,0,.,1,80,2,-1,.,.
2,1,2.0,0,.,2,.,.,.
2,3,3.5,0,.,2,.,.,.
2,8,2.5,0,.,2,.,.,.
3,0,.,1,120,1,.,.,.
3,0.3,0.5,0,.,2,.,.,.
3,2,4.4,0,.,2,.,.,.
3,2.5,.,1,60,2,20,.,.
3,4,5.2,0,.,2,.,.,.
3,9,3.0,0,.,2,.,.,.
"""
    return pk.read_data(pd.read_csv(io.StringIO(text), na_values=["."]))


def dosing_model():
    """One compartment with a depot: a lag and F on the depot, F on the central compartment (F2 changes
    the given-rate infusion's duration), and a modelled rate R2, with random effects on ka and ALAG1."""
    return pk.PopulationModel(
        "one_cpt_oral",
        dict(ka=1.0, CL=3.0, V=25.0, ALAG1=0.4, F1=0.7, F2=0.9, R2=30.0),
        eta=["ka", "ALAG1", "F2"],
        omega_init=0.1,
        error="combined",
    )


def test_map_gradient_through_dose_parameters_matches_central_differences():
    m = dosing_model()
    assert m.dose_params == ["ALAG1", "F1", "F2", "R2"]
    P = Problem(m, dosing_population(), rtol=1e-11, atol=1e-13, solver=sc.Vern7())
    assert all(s.dosing is not None for s in P.subjects)
    x = m.x0.copy()
    etas = np.random.default_rng(2).normal(0, 0.2, (P.N, m.n_eta))
    check_map_gradients(P, x, etas)
    P.close()


def test_foce_sensitivities_and_gradient_through_dose_parameters():
    m = dosing_model()
    P = Problem(m, dosing_population(), rtol=1e-11, atol=1e-13, solver=sc.Vern7(), inner_tol=1e-24)
    check_foce_derivatives(P, m.x0.copy(), np.array([0.1, -0.2, 0.15]))
    P.close()


def test_individual_returns_dose_parameters_and_a_fit_recovers_a_lag():
    """individual(q) returns ALAG1 (declared in dosing=); data simulated with a lag of 0.8 h: FOCE-I finds it."""
    m = pk.PopulationModel(
        "one_cpt_oral",
        dict(ka=1.2, CL=3.0, V=25.0, tlag=0.8),
        eta=["CL", "V"],
        individual=lambda q: {"ka": q["ka"], "CL": q["CL"], "V": q["V"], "ALAG1": q["tlag"]},
        dosing=["ALAG1"],
        omega_init=0.05,
        error="proportional",
        sigma=0.1,
    )
    rng = np.random.default_rng(5)
    rows = []
    for i in range(20):
        rows.append(dict(ID=i + 1, TIME=0.0, AMT=100.0, EVID=1, MDV=1, CMT=1, DV=np.nan))
        rows += [
            dict(ID=i + 1, TIME=t, AMT=0.0, EVID=0, MDV=0, CMT=2, DV=1.0)
            for t in np.sort(np.r_[rng.uniform(1.0, 2.0, 3), rng.uniform(2, 24, 4)])
        ]
    (data,), _ = pk.simulate_data(m, pk.read_data(pd.DataFrame(rows)), m.x0, seed=6)
    start = m.x0.copy()
    start[m.blocks["theta"]] += np.log([1.3, 0.8, 1.2, 0.6])
    with np.errstate(all="ignore"):
        r = pk.fit(m, data, "foce", x0=start, se=False)
    assert r.model.theta(r.x)["tlag"] == pytest.approx(0.8, rel=0.1)
    assert list(r.individual_params()[1]) == ["ka", "CL", "V", "ALAG1"]


def test_dose_is_available_to_the_parameter_model_without_a_dose_column():
    """individual(q, cov) reads cov["DOSE"] and covariate effects may use DOSE: the subject's first dose
    amount when the data have no DOSE column."""
    text = "ID,TIME,DV,EVID,AMT,CMT\n1,0,.,1,100,1\n1,2,3,0,.,2\n2,0,.,1,300,1\n2,2,5,0,.,2\n"
    data = pk.read_data(pd.read_csv(io.StringIO(text), na_values=["."]))
    assert [s.first_dose for s in data] == [100.0, 300.0] and data[1].covariate("DOSE") == 300.0
    seen = []

    def individual(q, cov):
        seen.append(float(np.real(cov["DOSE"])))
        return {"ka": q["ka"], "CL": q["CL"] * (cov["DOSE"] / 100) ** 0.5, "V": q["V"]}

    m = pk.PopulationModel("one_cpt_oral", dict(ka=1.0, CL=3.0, V=25.0), individual=individual, eta=["CL"])
    Problem(m, data).map_objective(m.x0, np.zeros((2, 1)), 0)
    assert {100.0, 300.0} <= set(seen)
    m2 = pk.PopulationModel(
        "one_cpt_oral",
        dict(ka=1.0, CL=3.0, V=25.0),
        eta=["CL"],
        covariates={"CL": {"DOSE": "power"}},
        covariate_ref={"DOSE": 100.0},
    )
    P = Problem(m2, data)
    np.testing.assert_allclose([s.C[1, 0] for s in P.subjects], [0.0, np.log(3.0)])
