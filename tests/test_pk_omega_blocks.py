"""Block-diagonal Omega (NONMEM's $OMEGA BLOCK): the layout, the refusals, exact gradients, the
nesting of diagonal within block within full, and the estimates' round trip through a file."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from helpers import check_foce_gradient, check_map_gradients

import smallchains as sc
from smallchains.pk.estimation import Problem


def model(omega, omega_init=0.1):
    return sc.pk.PopulationModel(
        "one_cpt_oral",
        dict(ka=1.2, CL=3.0, V=25.0),
        eta=["ka", "CL", "V"],
        omega=omega,
        omega_init=omega_init,
        error="proportional",
        sigma=0.1,
    )


@pytest.fixture(scope="module")
def study():
    """20 subjects simulated with CL and V correlated (r = 0.7), ka independent of both."""
    truth = model([["CL", "V"]], np.array([[0.09, 0, 0], [0, 0.09, 0.063], [0, 0.063, 0.09]]))
    rows = []
    for i in range(20):
        rows.append(dict(ID=i + 1, TIME=0.0, AMT=100.0, EVID=1, MDV=1, CMT=1, DV=np.nan))
        rows += [dict(ID=i + 1, TIME=t, AMT=0.0, EVID=0, MDV=0, CMT=2, DV=1.0) for t in (0.5, 1, 2, 4, 8, 12, 24)]
    (data,), _ = sc.pk.simulate_data(truth, sc.pk.read_data(pd.DataFrame(rows)), truth.x0, seed=5)
    return data


def test_layout_and_omega_of_a_block_model():
    m = model([["V", "CL"]], np.array([[0.2, 0, 0], [0, 0.1, 0.05], [0, 0.05, 0.3]]))
    assert m.omega_kind == "block" and m.omega_spec == [["ka"], ["CL", "V"]]
    assert [n for n in m.names if n.startswith("L(") or n.startswith("log omega")] == [
        "log omega(ka)",
        "log omega(CL)",
        "log omega(V)",
        "L(V,CL)",
    ]
    Om = m.omega(m.x0)
    np.testing.assert_allclose(Om, [[0.2, 0, 0], [0, 0.1, 0.05], [0, 0.05, 0.3]], atol=1e-15)
    # a two-block model of two random effects is the full one
    full = sc.pk.PopulationModel("one_cpt_oral", dict(ka=1.2, CL=3.0, V=25.0), eta=["CL", "V"], omega="full")
    two = sc.pk.PopulationModel("one_cpt_oral", dict(ka=1.2, CL=3.0, V=25.0), eta=["CL", "V"], omega=[["CL", "V"]])
    assert two.names == full.names and two.omega_kind == "block"
    np.testing.assert_array_equal(two.omega(two.x0), full.omega(full.x0))
    assert model([["CL"], ["V"]]).omega_kind == "diagonal"


def test_bad_blocks_are_refused_by_name():
    with pytest.raises(ValueError, match="block \\['CL', 'Q'\\] names 'Q', which has no random effect"):
        model([["CL", "Q"]])
    with pytest.raises(ValueError, match="'CL' is in two blocks"):
        model([["CL", "V"], ["ka", "CL"]])
    with pytest.raises(ValueError, match="a block is empty"):
        model([[]])
    with pytest.raises(ValueError, match="must be 'diagonal', 'full' or a list of blocks"):
        model("banded")
    with pytest.raises(ValueError, match="covariance between ka and CL, which are in different blocks"):
        model([["CL", "V"]], np.array([[0.1, 0.02, 0], [0.02, 0.1, 0], [0, 0, 0.1]]))


def test_block_gradients_are_exact(study):
    m = model([["CL", "V"]], np.array([[0.1, 0, 0], [0, 0.1, 0.04], [0, 0.04, 0.1]]))
    data = sc.pk.Population(study.subjects[:4], study.covariate_names, study.columns)
    P = Problem(m, data)
    x = m.x0.copy()
    check_foce_gradient(P, x)
    etas = np.random.default_rng(2).normal(0, 0.2, (P.N, 3))
    check_map_gradients(P, x, etas)


@pytest.mark.slow
def test_diagonal_block_and_full_fits_are_nested(study, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits = {k: sc.pk.fit(model(k), study, "foce") for k in ("diagonal", "full")}
        fits["block"] = sc.pk.fit(model([["CL", "V"]]), study, "foce")
        saem = sc.pk.fit(model([["CL", "V"]]), study, "saem", method_options={"n_explore": 100, "n_smooth": 50})
    assert fits["full"].ofv <= fits["block"].ofv + 1e-3 <= fits["diagonal"].ofv + 2e-3
    b = fits["block"]
    assert b.converged and b.omega[0, 1] == 0.0 and b.omega[0, 2] == 0.0 and b.omega[1, 2] != 0.0
    rows = {r["name"]: r for r in b.table}
    assert "omega(V,CL)" in rows and "omega(CL,ka)" not in rows
    assert rows["omega(V,CL)"]["corr"] > 0.3 and np.isfinite(rows["omega(V,CL)"]["se"])
    # SAEM keeps the blocks (its M-step maximises over block-diagonal matrices)
    assert saem.omega[0, 1] == 0.0 and saem.omega[0, 2] == 0.0
    assert abs(saem.omega[1, 2] - b.omega[1, 2]) < 3 * rows["omega(V,CL)"]["se"]
    # the file rebuilds the blocks; NONMEM's .ext marks the entries across blocks fixed
    b.save(tmp_path / "fit.json")
    back = sc.pk.load(tmp_path / "fit.json")
    assert back.model.omega_spec == [["ka"], ["CL", "V"]]
    np.testing.assert_allclose(back.omega, b.omega)
    b.write_tables(study, tmp_path, run=2, n_sim=0)
    ext = (tmp_path / "run2.ext").read_text().splitlines()
    head = ext[1].split()
    fixed = next(ln.split() for ln in ext if ln.split()[0] == "-1000000006")
    assert fixed[head.index("OMEGA(2,1)")] == "1" or float(fixed[head.index("OMEGA(2,1)")]) == 1.0
    assert float(fixed[head.index("OMEGA(3,2)")]) == 0.0


@pytest.mark.slow
def test_cli_omega_block(tmp_path):
    from smallchains import cli

    csv = tmp_path / "theo.csv"
    sc.pkdata.theophylline(as_frame=True).to_csv(csv, index=False)
    out = tmp_path / "fit"
    args = ["fit", str(csv), "--model", "one_cpt_oral", "--theta", "ka=1.5,CL=0.04,V=0.5", "--eta", "ka,CL,V"]
    assert cli.main([*args, "--omega-block", "CL,V", "--out", str(out), "--no-plots", "--npde-sims", "0"]) == 0
    back = sc.pk.load(out / "fit.json")
    assert back.model.omega_spec == [["ka"], ["CL", "V"]]
    assert back.omega[0, 1] == 0.0 and back.omega[1, 2] != 0.0
