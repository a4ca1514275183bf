"""Estimation methods as objects (smallchains.pk.methods): the registry, a method added as one
class and run end-to-end by pk.fit, and each method's `converged` claim against its stated
criterion (computed here independently: the gradient from the Problem, the Hessian by central
differences of it)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import small_data

import smallchains as sc
from smallchains import pk
from smallchains.pk import methods
from smallchains.pk.estimation import Problem
from smallchains.pk.methods import DECREMENT_TOL, GRADIENT_TOL, EstimationMethod

pd = pytest.importorskip("pandas")


@pytest.fixture(scope="module")
def data():
    return small_data()


# --------------------------------------------------------------------------- the registry


def test_the_registry_maps_every_public_name_to_its_class():
    from smallchains.pk.methods.foce import Foce
    from smallchains.pk.methods.individual import Individual
    from smallchains.pk.methods.laplace import Laplace
    from smallchains.pk.methods.map import Map
    from smallchains.pk.methods.pooled import Pooled
    from smallchains.pk.methods.saem import Saem

    want = {"individual": Individual, "pooled": Pooled, "map": Map, "foce": Foce, "laplace": Laplace, "saem": Saem}
    assert set(want) <= set(methods.names())
    for name, cls in want.items():
        assert methods.get(name) is cls and cls.name == name and issubclass(cls, EstimationMethod)
    # fit()'s METHODS are the registry's names
    from smallchains.pk.fit import METHODS

    assert set(METHODS) == set(want)
    with pytest.raises(ValueError, match=r"`method` must be one of .*'foce'.*got 'fo'"):
        methods.get("fo")
    with pytest.raises(ValueError, match="`method` must be one of"):
        methods.get(["foce"])  # (unhashable: the same error)


def test_register_checks_names_and_answers_to_aliases():
    with pytest.raises(TypeError, match="EstimationMethod subclass"):
        methods.register(object)

    class Nameless(EstimationMethod):
        pass

    with pytest.raises(ValueError, match="non-empty string `name`"):
        methods.register(Nameless)

    class Clash(EstimationMethod):
        name = "foce"

    with pytest.raises(ValueError, match="'foce' is taken by smallchains.pk.methods.foce.Foce"):
        methods.register(Clash)
    assert methods.get("foce").__name__ == "Foce"

    class Aliased(EstimationMethod):
        name = "aliased_test"
        aliases = ("aliased-test", "at")

    methods.register(Aliased)
    try:
        assert methods.get("at") is Aliased and methods.get("aliased-test") is Aliased
        assert "aliased_test" in methods.names() and "at" not in methods.names()
    finally:
        methods.unregister("at")
    assert "aliased_test" not in methods.names()
    with pytest.raises(ValueError, match="`method` must be one of"):
        methods.get("aliased_test")


def test_fit_rejects_a_model_the_method_does_not_suit(data):
    m, d = data
    plain = pk.PopulationModel("one_cpt_oral", dict(ka=1.2, CL=3.0, V=25.0), error="proportional")
    for name in ("map", "foce", "laplace", "saem"):
        with pytest.raises(ValueError, match=f"method '{name}' needs random effects"):
            pk.fit(plain, d, name)
    with pytest.raises(ValueError, match="`method` must be one of"):
        pk.fit(m, d, "fo")


# --------------------------------------------------------------------------- adding a method


class WeightedPooled(EstimationMethod):
    """A method written outside the package: the naive pooled objective, minimised by the
    package's driver; the convergence criterion and the covariance step are inherited."""

    name = "pooled_test"
    hessian_step = 1e-5
    decrement_judged = True  # (the inherited Newton-decrement criterion: L-BFGS may stop at 1e-7)

    def run(self, P, x_init, opts, report):
        x, f, conv, msg, ne = self.minimize_free(P, x_init, lambda xx: P.pooled(xx, 1), report, opts)
        etas = np.zeros((P.N, P.model.n_eta))
        return dict(x=x, etas=etas, objective=f, converged=conv, message=msg, n_evaluations=ne)

    def ofv(self, P, x, etas):
        return P.pooled(x, 0), etas

    def objective_gradient(self, P, x, etas):
        g = P.pooled(x, 1)[1]
        return g if np.all(np.isfinite(g)) else None


@pytest.fixture
def custom_method():
    methods.register(WeightedPooled)
    yield WeightedPooled
    methods.unregister("pooled_test")


def test_a_method_added_as_one_class_runs_end_to_end(data, custom_method, tmp_path):
    m, d = data
    seen = []
    r = pk.fit(m, d, "pooled_test", progress=seen.append)
    ref = pk.fit(m, d, "pooled")
    assert r.method == "pooled_test" and isinstance(r, pk.FitResult)
    assert r.converged and "convergence criterion met: Newton decrement" in r.message
    np.testing.assert_allclose(r.x, ref.x, rtol=1e-6, atol=1e-8)
    assert r.ofv == pytest.approx(ref.ofv, rel=1e-10)
    assert r.cov is not None and r.cov_kind == "R" and np.all(np.isfinite([row["se"] for row in r.table]))
    assert r.n_estimated == ref.n_estimated and not r.shrinkage
    assert seen and seen[0].startswith("pooled_test: evaluation 1")
    assert "POOLED_TEST fit" in r.summary()
    r.save(tmp_path / "fit.json")
    back = pk.load(tmp_path / "fit.json")
    assert back.method == "pooled_test" and np.array_equal(back.x, r.x)


def test_a_method_without_a_run_says_so(data):
    class Unfinished(EstimationMethod):
        name = "unfinished_test"

    methods.register(Unfinished)
    try:
        with pytest.raises(NotImplementedError):
            pk.fit(data[0], data[1], "unfinished_test")
    finally:
        methods.unregister("unfinished_test")


# --------------------------------------------------------------------------- converged = the stated criterion


def central_hessian(grad, x, h=1e-4):
    n = x.shape[0]
    H = np.array([(grad(x + h * e) - grad(x - h * e)) / (2 * h) for e in np.eye(n)])
    return 0.5 * (H + H.T)


def newton_decrement(g, H):
    return 0.5 * g @ np.linalg.solve(H, g)


@pytest.mark.parametrize("name", ["pooled", "foce", "laplace", "map"])
def test_converged_claims_hold_by_the_stated_criterion(data, name):
    """The criterion recomputed independently at the estimates: the Newton decrement of the
    minimised objective (pooled, FOCE-I, Laplace: :data:`DECREMENT_TOL`), the largest partial
    derivative of the joint objective (MAP: :data:`GRADIENT_TOL`).  Away from the estimates the
    method's own test says NOT met."""
    m, d = data
    with warnings.catch_warnings():
        warnings.simplefilter("error", sc.ConvergenceWarning)
        r = pk.fit(m, d, name, se=False)
    assert r.converged and "criterion met" in r.message
    P = Problem(m, d)
    free = np.flatnonzero(methods.get(name)().free(m))
    try:
        if name == "map":
            # the criterion is on the joint objective with Omega profiled as in the fit's last EM
            # round (its C is not kept in the result): the method's own run gives it
            est = methods.get("map")()
            opts = dict(optimizer="lbfgs", maxiter=500, tol=1e-9, adam_steps=500, adam_lr=0.02)
            run = est.run(P, m.x0.copy(), opts, lambda v: None)
            np.testing.assert_allclose(run["x"], r.x, rtol=1e-6, atol=1e-6)
            _, gx, ge = P.map_objective(run["x"], run["etas"], 1, run["C"])
            gmax = np.abs(np.concatenate([gx[free], ge.ravel()])).max()
            assert 0 < gmax <= GRADIENT_TOL
            assert est.convergence(P, run["x"], run["etas"], run)[0]
        else:
            if name == "pooled":

                def grad(z):
                    xx = r.x.copy()
                    xx[free] = z
                    return P.pooled(xx, 1)[1][free]

            elif name == "foce":

                def grad(z):
                    xx = r.x.copy()
                    xx[free] = z
                    _, _, res = P.foce(xx, r.etas)
                    return P.foce_gradient(xx, res)[free]

            else:
                from smallchains.pk.laplace import laplace, laplace_gradient

                def grad(z):
                    xx = r.x.copy()
                    xx[free] = z
                    _, etas, _ = laplace(P, xx, r.etas)
                    return laplace_gradient(P, xx, etas, free)[free]

            g = grad(r.x[free])
            H = central_hessian(grad, r.x[free], h=1e-5 if name == "pooled" else 1e-3)
            assert np.all(np.linalg.eigvalsh(H) > 0)
            assert newton_decrement(g, H) <= DECREMENT_TOL
        # the method's own test fails away from the optimum
        est = methods.get(name)()
        x_off = r.x.copy()
        x_off[m.blocks["theta"].start] += 0.3
        ok, text, _, _ = est.convergence(P, x_off, r.etas, {})
        assert not ok and "NOT met" in text
    finally:
        P.close()


def test_the_default_stop_follows_the_convergence_criterion(data):
    """L-BFGS's default relative reduction: 1e-7 for methods judged by the Newton decrement
    without network weights, 1e-9 for MAP (a gradient criterion)."""
    m, _ = data
    assert methods.get("foce")().default_tol(m) == 1e-7
    assert methods.get("laplace")().default_tol(m) == 1e-7
    assert methods.get("pooled")().default_tol(m) == 1e-7
    assert methods.get("map")().default_tol(m) == 1e-9


def test_the_threads_rule_reads_the_check_time_and_the_compiled_coverage(monkeypatch):
    """Every core when the initial check takes > 0.15 ms a subject, or > 0.2 ms in all with the
    compiled step covering every subject (> 5 ms on the NumPy step); 1 otherwise; a given
    number is kept, and a number below 1 is refused."""
    pytest.importorskip("threadpoolctl")
    from smallchains.pk.threads import number_of_threads

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert number_of_threads(None, 5e-6, 12, compiled=True) == 1  # (Theophylline: 0.06 ms in all)
    assert number_of_threads(None, 1.5e-5, 12, compiled=True) == 1  # (0.18 ms in all)
    assert number_of_threads(None, 5e-6, 136, compiled=True) == 2  # (Quinidine: 0.7 ms in all)
    assert number_of_threads(None, 5e-6, 1000, compiled=True) == 2  # (5 ms in all)
    assert number_of_threads(None, 4e-5, 59, compiled=False) == 1  # (2.4 ms on the NumPy step)
    assert number_of_threads(None, 4e-5, 59, compiled=True) == 2
    assert number_of_threads(None, 2e-4, 1) == 2
    assert number_of_threads(3, 0.0, 1) == 3
    with pytest.raises(ValueError, match="`threads` must be >= 1"):
        number_of_threads(0, 0.0, 1)
