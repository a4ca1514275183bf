"""NONMEM's output tables (smallchains.pk.tables): read back as xpose reads them (the title
line, the header, whitespace-separated numbers), every column against the fit it came from:
rows (doses, observations, BLQ records), diagnostics, individual parameters and ETAs, the
covariates' split, and the .ext file's iterations, estimates, standard errors and fixed flags."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import smallchains as sc
from smallchains import pk

pd = pytest.importorskip("pandas")


def read_nm_table(path):
    with open(path) as fh:
        first = fh.readline()
    assert first.startswith("TABLE NO.")
    return pd.read_csv(path, skiprows=1, sep=r"\s+")


def read_ext(path):
    with open(path) as fh:
        first = fh.readline()
    assert first.startswith("TABLE NO.") and "Goal Function=" in first
    return first, pd.read_csv(path, skiprows=1, sep=r"\s+")


@pytest.fixture(scope="module")
def study():
    """A 16-subject oral study with ADDL doses, weight and sex, some observations BLQ."""
    rng = np.random.default_rng(5)
    rows = []
    for i in range(16):
        wt, sex = float(rng.uniform(50, 100)), int(i % 2)
        rows.append(dict(ID=i + 1, TIME=0.0, AMT=100.0, EVID=1, MDV=1, CMT=1, DV=np.nan, II=12, ADDL=1, WT=wt, SEX=sex))
        for t in (1, 2, 4, 8, 12.5, 16, 24, 36):
            rows.append(dict(ID=i + 1, TIME=t, AMT=0, EVID=0, MDV=0, CMT=2, DV=1.0, II=0, ADDL=0, WT=wt, SEX=sex))
    m = pk.PopulationModel(
        "one_cpt_oral",
        dict(ka=1.2, CL=3.0, V=25.0),
        eta=["ka", "CL"],
        omega="full",
        omega_init=[[0.1, 0.02], [0.02, 0.1]],
        covariates={"CL": {"WT": "power"}},
        error="combined",
        sigma=[0.05, 0.1],
    )
    (sim,), _ = pk.simulate_data(m, pk.read_data(pd.DataFrame(rows)), m.x0, seed=2)
    frame = pd.DataFrame(rows)
    obs = frame.index[frame.MDV == 0]
    dv = np.concatenate([s.dv for s in sim.subjects])
    frame.loc[obs, "DV"] = dv
    frame["BLQ"] = 0
    frame.loc[(frame.MDV == 0) & (frame.TIME == 36) & (frame.ID <= 3), "BLQ"] = 1
    data = pk.read_data(frame)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = pk.fit(m, data, "foce")
    return fit, data


def test_sdtab_rows_and_columns_are_the_fit(study, tmp_path):
    fit, data = study
    paths = fit.write_tables(data, tmp_path, run=7, n_sim=200, seed=1)
    assert [p.rsplit("/", 1)[1] for p in paths] == ["sdtab7", "patab7", "cotab7", "catab7", "run7.ext"]
    sd = read_nm_table(tmp_path / "sdtab7")
    want = ["ID", "TIME", "TAD", "DV", "MDV", "EVID", "AMT", "CMT", "DVID", "BLQ", "PRED", "IPRED", "RES", "WRES"]
    assert list(sd.columns) == want + ["IWRES", "CWRES", "NPDE"]
    # one dose record a subject (ADDL implied doses are not records), 8 observations, 3 of them BLQ
    assert len(sd) == 16 * 9
    doses = sd[sd.EVID == 1]
    assert len(doses) == 16 and np.all(doses.AMT == 100.0) and np.all(doses.MDV == 1)
    blq = sd[sd.BLQ == 1]
    assert len(blq) == 3 and np.all(blq.MDV == 1) and np.all(blq.TIME == 36)
    fitted = sd[sd.MDV == 0]
    assert len(fitted) == fit.n_obs
    d = fit.diagnostics
    for c in ("TIME", "DV", "TAD", "PRED", "IPRED", "RES", "WRES", "IWRES", "CWRES"):
        np.testing.assert_allclose(fitted[c].to_numpy(), np.asarray(d[c], dtype=float), rtol=6e-5, atol=1e-12)
    np.testing.assert_array_equal(fitted.ID.to_numpy(), np.asarray(d["ID"], dtype=float))
    nd = pk.npde(fit, data, n_sim=200, seed=1)
    np.testing.assert_allclose(fitted.NPDE.to_numpy(), nd["NPDE"], rtol=6e-5, atol=1e-12)
    # the second dose (ADDL) makes TAD restart at 12
    s1 = fitted[fitted.ID == 5]
    assert s1.TAD[s1.TIME == 16].item() == pytest.approx(4.0)
    # no NPDE column without simulations
    fit.write_tables(data, tmp_path / "plain", n_sim=0)
    assert "NPDE" not in read_nm_table(tmp_path / "plain" / "sdtab1").columns


def test_patab_cotab_catab(study, tmp_path):
    fit, data = study
    fit.write_tables(data, tmp_path, n_sim=0)
    pa = read_nm_table(tmp_path / "patab1")
    assert list(pa.columns) == ["ID", "TIME", "ka", "CL", "V", "ETA1", "ETA2"]
    ip = fit.individual_params()
    for k, sid in enumerate(fit.ids):
        rows = pa[pa.ID == sid]
        assert len(rows) == 9
        np.testing.assert_allclose(rows[["ETA1", "ETA2"]].to_numpy()[0], fit.etas[k], rtol=6e-5, atol=1e-9)
        np.testing.assert_allclose(
            rows[["ka", "CL", "V"]].to_numpy()[0], [ip[sid][p] for p in ("ka", "CL", "V")], rtol=6e-5
        )
    co = read_nm_table(tmp_path / "cotab1")
    ca = read_nm_table(tmp_path / "catab1")
    assert list(co.columns) == ["ID", "TIME", "WT", "DOSE"] or list(co.columns) == ["ID", "TIME", "WT"]
    assert list(ca.columns) == ["ID", "TIME", "SEX"]
    assert set(ca.SEX) == {0.0, 1.0}
    fit.write_tables(data, tmp_path / "b", n_sim=0, categorical=[])
    assert "SEX" in read_nm_table(tmp_path / "b" / "cotab1").columns
    with pytest.raises(ValueError, match="`categorical` names 'AGE'"):
        fit.write_tables(data, tmp_path / "c", n_sim=0, categorical=["AGE"])
    with pytest.raises(ValueError, match="`n_sim` must be 0"):
        fit.write_tables(data, tmp_path / "c", n_sim=10)
    with pytest.raises(ValueError, match="`run` must be"):
        fit.write_tables(data, tmp_path / "c", run=-1)


def test_ext_file(study, tmp_path):
    fit, data = study
    fit.write_tables(data, tmp_path, n_sim=0)
    title, ext = read_ext(tmp_path / "run1.ext")
    assert "First Order Conditional Estimation with Interaction" in title
    m = fit.model
    cols = ["ITERATION", "THETA1", "THETA2", "THETA3", "THETA4", "SIGMA(1,1)", "SIGMA(2,1)", "SIGMA(2,2)"]
    assert list(ext.columns) == cols + ["OMEGA(1,1)", "OMEGA(2,1)", "OMEGA(2,2)", "OBJ"]
    it = ext[ext.ITERATION > 0]
    assert len(it) == len(fit.trace["iteration"]) > 3
    assert np.all(np.diff(it.OBJ.to_numpy()) <= 0)  # (the evaluations that lowered the objective)
    assert np.all(np.diff(fit.trace["objective"]) < 0)
    final = ext[ext.ITERATION == -1000000000].iloc[0]
    th = fit.theta
    np.testing.assert_allclose([final.THETA1, final.THETA2, final.THETA3], [th["ka"], th["CL"], th["V"]], rtol=1e-5)
    assert final.THETA4 == pytest.approx(fit.x[m.blocks["beta"]][0], rel=1e-5)
    s = fit.sigma
    assert final["SIGMA(1,1)"] == pytest.approx(s["sigma_add"] ** 2, rel=1e-5)
    assert final["SIGMA(2,2)"] == pytest.approx(s["sigma_prop"] ** 2, rel=1e-5)
    assert final["SIGMA(2,1)"] == 0.0
    Om = fit.omega
    assert [final["OMEGA(1,1)"], final["OMEGA(2,1)"], final["OMEGA(2,2)"]] == pytest.approx(
        [Om[0, 0], Om[1, 0], Om[1, 1]], rel=1e-5
    )
    assert final.OBJ == pytest.approx(fit.ofv, rel=1e-5)  # (s1PE12.5: six significant digits)
    se = ext[ext.ITERATION == -1000000001].iloc[0]
    tab = {r["name"]: r["se"] for r in fit.table}
    assert se.THETA2 == pytest.approx(tab["CL"], rel=1e-4)
    assert se["SIGMA(2,2)"] == pytest.approx(2 * s["sigma_prop"] * tab["sigma_prop"], rel=1e-4)
    assert se["SIGMA(2,1)"] == 1e10  # (not estimated)
    assert se["OMEGA(2,1)"] == pytest.approx(tab["omega(CL,ka)"], rel=1e-4)
    sdc = ext[ext.ITERATION == -1000000004].iloc[0]
    assert sdc["OMEGA(2,1)"] == pytest.approx(Om[1, 0] / math.sqrt(Om[0, 0] * Om[1, 1]), rel=1e-4)
    assert sdc["SIGMA(1,1)"] == pytest.approx(s["sigma_add"], rel=1e-5)
    fx = ext[ext.ITERATION == -1000000006].iloc[0]
    assert fx["SIGMA(2,1)"] == 1 and fx.THETA1 == 0 and fx["OMEGA(2,1)"] == 0


def test_ext_of_a_saem_fit_numbers_exploration_negative(tmp_path):
    m, d = pk.demo.theophylline_classic(), sc.pkdata.theophylline()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = pk.fit(m, d, "saem", se=False, method_options={"n_explore": 6, "n_smooth": 4})
    r.write_tables(d, tmp_path, n_sim=0)
    title, ext = read_ext(tmp_path / "run1.ext")
    assert "Stochastic Approximation" in title and "LIKELIHOOD" in title
    assert ext.ITERATION.tolist()[:10] == [-6, -5, -4, -3, -2, -1, 0, 1, 2, 3]
    # a saved and reloaded fit keeps its trace
    r.save(tmp_path / "fit.json")
    again = pk.load(tmp_path / "fit.json", model=m)
    assert again.trace["iteration"] == r.trace["iteration"]
