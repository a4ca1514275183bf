"""The run comparison table (pk/compare.py): every column against the fits it reads, the
likelihood-ratio test against SciPy's chi-square, and each refusal."""

from __future__ import annotations

import math
import warnings

import pytest
from scipy.stats import chi2

import smallchains as sc
from smallchains import DoubtfulResultWarning, cli

pytest.importorskip("pandas")


@pytest.fixture(scope="module")
def theoph():
    return sc.pkdata.theophylline()


@pytest.fixture(scope="module")
def runs(theoph):
    """Three nested models of Theophylline: pooled, eta on CL, etas on ka and CL (FOCE-I)."""
    theta = dict(ka=1.5, CL=0.04, V=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pooled = sc.pk.fit(sc.pk.PopulationModel("one_cpt_oral", theta), theoph, "pooled")
        one = sc.pk.fit(sc.pk.PopulationModel("one_cpt_oral", theta, eta=["CL"]), theoph, "foce")
        two = sc.pk.fit(sc.pk.PopulationModel("one_cpt_oral", theta, eta=["ka", "CL"]), theoph, "foce")
    return one, two, pooled


def test_the_table_reads_each_fit(runs):
    one, two, _ = runs
    t = sc.pk.compare({"base": one, "ka": two})
    assert list(t.run) == ["base", "ka"]
    assert list(t.columns) == sc.pk.compare.__globals__["COLUMNS"]
    for row, f in zip(t.itertuples(), (one, two)):
        assert row.ofv == f.ofv and row.aic == f.aic and row.bic == f.bic
        assert row.n_params == f.n_estimated and row.n_obs == f.n_obs == 132 and row.n_subjects == 12
        assert row.method == "foce" and row.ofv_kind == "FOCE-I" and row.model == "one_cpt_oral"
        assert row.converged == f.converged
        assert row.condition_number == pytest.approx(f.condition_number)
        assert row.max_shrinkage == pytest.approx(max(f.shrinkage.values()))
        assert row.covariance == f.cov_kind
    assert t.dofv.iloc[0] == 0.0 and t.dofv.iloc[1] == pytest.approx(two.ofv - one.ofv)
    assert t.dofv.iloc[1] < -10  # (a random effect on ka: a large drop on these data)
    # the likelihood-ratio test: one more parameter (omega(ka)), chi-square with 1 degree of freedom
    assert math.isnan(t.p_if_nested.iloc[0])
    assert t.p_if_nested.iloc[1] == pytest.approx(chi2.sf(one.ofv - two.ofv, 1))


def test_the_reference_may_be_any_run_and_the_test_reads_which_is_larger(runs):
    one, two, _ = runs
    t = sc.pk.compare([one, two], names=["a", "b"], reference="b")
    assert t.dofv.iloc[1] == 0.0 and t.dofv.iloc[0] == pytest.approx(one.ofv - two.ofv)
    assert t.p_if_nested.iloc[0] == pytest.approx(chi2.sf(one.ofv - two.ofv, 1))  # (a is within b)
    assert sc.pk.compare([one, two], reference=1).equals(sc.pk.compare([one, two], reference="run2"))


def test_ofvs_of_different_approximations_are_compared_with_a_warning(runs, theoph):
    one, two, pooled = runs
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (exact against FOCE-I: what FOCE-I reduces to without etas)
        t = sc.pk.compare([pooled, one])
    assert t.ofv_kind.tolist() == ["exact", "FOCE-I"] and t.max_shrinkage.isna().tolist() == [True, False]
    assert t.dofv.iloc[1] < 0 and t.p_if_nested.iloc[1] == pytest.approx(chi2.sf(pooled.ofv - one.ofv, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lap = sc.pk.fit(two.model, theoph, "laplace", se=False)
    with pytest.warns(DoubtfulResultWarning, match=r"run1: FOCE-I, run2: Laplace\): their differences mix"):
        t = sc.pk.compare([two, lap])
    assert t.ofv_kind.tolist() == ["FOCE-I", "Laplace"] and t.covariance.tolist() == ["sandwich", "none"]


def test_refusals(runs, theoph):
    one, two, _ = runs
    sub = sc.pk.Population(theoph.subjects[:6], theoph.covariate_names, theoph.columns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = sc.pk.fit(one.model, sub, "foce", se=False)
    with pytest.raises(ValueError, match=r"run 'run2' fitted other data than 'run1' \(subjects .* in one run only\)"):
        sc.pk.compare([one, small])
    with pytest.raises(ValueError, match="the runs' names must differ"):
        sc.pk.compare([one, two], names=["a", "a"])
    with pytest.raises(ValueError, match="1 name"):
        sc.pk.compare([one, two], names=["a"])
    with pytest.raises(ValueError, match="`reference` 'c' is not one of the runs"):
        sc.pk.compare([one, two], reference="c")
    with pytest.raises(ValueError, match="not a run's index"):
        sc.pk.compare([one, two], reference=2)
    with pytest.raises(ValueError, match="at least one fit"):
        sc.pk.compare([])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ind = sc.pk.fit(sc.pk.PopulationModel("one_cpt_oral", dict(ka=1.5, CL=0.04, V=0.5)), sub, "individual")
    with pytest.raises(TypeError, match="run 'run2' is a IndividualFits, not a population fit"):
        sc.pk.compare([one, ind])


def test_the_command_line_compares_saved_fits(runs, tmp_path, capsys):
    one, two, _ = runs
    one.save(tmp_path / "base.json")
    two.save(tmp_path / "ka.json")
    assert cli.main(["compare", str(tmp_path / "base.json"), str(tmp_path / "ka.json")]) == 0
    out = capsys.readouterr().out
    assert "base" in out and "ka" in out and "dofv" in out
    assert f"{two.ofv - one.ofv:.3f}" in out
    with pytest.raises(SystemExit, match="nope.json"):
        cli.main(["compare", str(tmp_path / "base.json"), str(tmp_path / "nope.json")])
