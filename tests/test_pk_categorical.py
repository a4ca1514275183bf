"""Categorical covariate effects (PopulationModel covariates={"CL": {"SEX": ("categorical",
levels)}}): one effect a level after the reference, log q shifted by it (closed form), a value
outside the levels refused naming the subject, a simulated effect recovered by FOCE-I, the model
saved and rebuilt, and the command line's form."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from smallchains import pk

pd = pytest.importorskip("pandas")


def frame(n=30, seed=0, levels=(0, 1, 2)):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        grp = levels[i % len(levels)]
        rows.append(
            dict(ID=i + 1, TIME=0.0, AMT=100.0, EVID=1, MDV=1, CMT=1, DV=np.nan, GRP=grp, WT=rng.uniform(50, 90))
        )
        for t in (0.5, 1, 2, 4, 8, 12, 24):
            rows.append(dict(ID=i + 1, TIME=t, AMT=0.0, EVID=0, MDV=0, CMT=2, DV=1.0, GRP=grp, WT=rows[-1]["WT"]))
    return pd.DataFrame(rows)


def model(**kw):
    return pk.PopulationModel(
        "one_cpt_oral",
        dict(ka=1.2, CL=3.0, V=25.0),
        eta=["ka", "CL"],
        covariates={"CL": {"GRP": ("categorical", [0, 1, 2]), "WT": "power"}},
        error="proportional",
        sigma=0.1,
        **kw,
    )


def test_one_effect_a_level_after_the_reference_and_its_closed_form():
    m = model()
    assert [n for n in m.names if n.startswith("beta")] == ["beta CL~GRP cat=1", "beta CL~GRP cat=2", "beta CL~WT"]
    data = pk.read_data(frame())
    X, _, refs = m.covariate_design(data)
    grp = np.array([s.covariate("GRP") for s in data.subjects])
    np.testing.assert_array_equal(X[:, 0], grp == 1)
    np.testing.assert_array_equal(X[:, 1], grp == 2)
    assert "GRP" not in refs
    # CL of a subject at eta = 0: theta exp(beta_level) (WT at its reference)
    x = m.x0.copy()
    b = m.blocks["beta"]
    x[b] = [math.log(1.5), math.log(0.5), 0.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = pk.fit(m, data, "pooled", x0=x, maxiter=1, se=False)
    r.x = x
    typ = r.individual_params(random_effects=False)
    for s in data.subjects:
        want = 3.0 * {0: 1.0, 1: 1.5, 2: 0.5}[int(s.covariate("GRP"))] * (s.covariate("WT") / refs["WT"]) ** 0.0
        assert typ[s.id]["CL"] == pytest.approx(want, rel=1e-12)


def test_bad_levels_and_values_are_refused():
    with pytest.raises(ValueError, match="two or more distinct finite levels"):
        pk.PopulationModel("one_cpt_oral", dict(ka=1, CL=3, V=25), covariates={"CL": {"GRP": ("categorical", [1])}})
    with pytest.raises(ValueError, match="must be numbers"):
        pk.PopulationModel(
            "one_cpt_oral", dict(ka=1, CL=3, V=25), covariates={"CL": {"GRP": ("categorical", ["a", "b"])}}
        )
    with pytest.raises(ValueError, match=r"'power', 'exp', 'linear' or \('categorical'"):
        pk.PopulationModel("one_cpt_oral", dict(ka=1, CL=3, V=25), covariates={"CL": {"GRP": "cat"}})
    m = pk.PopulationModel(
        "one_cpt_oral", dict(ka=1, CL=3, V=25), eta=["CL"], covariates={"CL": {"GRP": ("categorical", [0, 1])}}
    )
    with pytest.raises(ValueError, match=r"subject 3: GRP = 2 is not one of the levels \[0.0, 1.0\]"):
        pk.fit(m, pk.read_data(frame()), "foce")


def test_a_simulated_effect_is_recovered_and_the_model_saved(tmp_path):
    m = model(omega_init=0.09)
    x = m.x0.copy()
    x[m.blocks["beta"]] = [math.log(1.6), math.log(0.6), 0.75]
    (sim,), _ = pk.simulate_data(m, pk.read_data(frame(n=45, seed=1)), x, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = pk.fit(m, sim, "foce")
    rows = {t["name"]: t for t in r.table}
    for name, truth in (("CL~GRP (cat=1)", math.log(1.6)), ("CL~GRP (cat=2)", math.log(0.6))):
        assert abs(rows[name]["estimate"] - truth) < 2.5 * rows[name]["se"], name
    r.save(tmp_path / "fit.json")
    back = pk.load(tmp_path / "fit.json")
    assert back.model.covariate_levels == {("CL", "GRP"): [0.0, 1.0, 2.0]}
    assert back.model.names == m.names
    np.testing.assert_array_equal(back.x, r.x)


def test_the_command_line_form():
    from smallchains.cli import _covariates

    assert _covariates(["CL~SEX:cat=0/1", "V~WT"]) == {"CL": {"SEX": ("categorical", ["0", "1"])}, "V": {"WT": "power"}}
