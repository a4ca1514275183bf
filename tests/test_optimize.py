"""The package's optimizer driver (smallchains._optimize): best so far, non-finite values, the
iteration cap, bounds, the stall and restart rules, the evaluation hook; and its three users
(sc.minimize, GradientFunction.minimize, pk.fit) go through it."""

from __future__ import annotations

import warnings

import numba
import numpy as np
import pytest

import smallchains as sc
from smallchains import _optimize as O


def rosenbrock(z):
    a, b = z
    f = (1 - a) ** 2 + 100 * (b - a * a) ** 2
    return f, np.array([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)])


def recording(fg):
    seen = []

    def f(z):
        v, g = fg(z)
        seen.append((z.copy(), v))
        return v, g

    return f, seen


def test_the_best_point_is_returned_when_the_last_one_is_worse():
    """Adam with a large step overshoots: its last point is worse than an earlier one.  And an
    objective that drifts upwards after a few evaluations: SciPy's last point is worse too."""
    f, seen = recording(lambda z: (float(z @ z), 2 * z))
    res = O.minimize(f, np.array([0.3, -0.2]), method=None, adam_steps=15, adam_lr=0.5)
    values = [v for _, v in seen]
    assert values[-1] > min(values)  # (the case this test is about)
    k = int(np.argmin(values))
    assert res.fun == values[k] and np.array_equal(res.x, seen[k][0])

    calls = [0]

    def drifting(z):
        calls[0] += 1
        v, g = rosenbrock(z)
        return v + (1e3 if calls[0] > 6 else 0.0), g

    f, seen = recording(drifting)
    res = O.minimize(f, np.array([-1.2, 1.0]), maxiter=20)
    values = [v for _, v in seen]
    assert values[-1] > min(values)
    k = int(np.argmin(values))
    assert res.fun == values[k] and np.array_equal(res.x, seen[k][0]) and res.nfev == len(seen)


def test_non_finite_values_are_stepped_back_from_and_never_the_best():
    def fg(z):
        if z[0] > 1.5:
            return np.nan, np.full_like(z, np.nan)
        return float((z[0] - 2.0) ** 2), np.array([2 * (z[0] - 2.0)])

    hooked = []
    res = O.minimize(fg, np.array([0.0]), on_evaluation=lambda z, v: hooked.append(v))
    assert np.isfinite(res.fun) and res.x[0] <= 1.5 and res.fun < 4.0
    assert hooked and all(np.isfinite(hooked)) and res.nfev > len(hooked)  # (some were not finite)
    # an Adam phase stops at the first non-finite value, keeping the best point
    res = O.minimize(fg, np.array([1.4]), method=None, adam_steps=50, adam_lr=0.2)
    assert res.x[0] <= 1.5 and np.isfinite(res.fun) and res.nfev < 50
    # nothing finite: not a success, the start returned
    res = O.minimize(lambda z: (np.inf, np.zeros_like(z)), np.array([1.0, 2.0]))
    assert not res.success and res.fun == np.inf and np.array_equal(res.x, [1.0, 2.0])
    assert "finite" in res.message


def test_the_iteration_cap_is_not_convergence_and_warns_when_asked():
    with pytest.warns(sc.ConvergenceWarning, match="tester stopped without converging after 3 iterations"):
        res = O.minimize(rosenbrock, np.array([-1.2, 1.0]), maxiter=3, warn="tester")
    assert not res.success and res.nit == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = O.minimize(rosenbrock, np.array([-1.2, 1.0]), maxiter=3)  # (warn=None: the caller says it)
    assert not res.success
    res = O.minimize(rosenbrock, np.array([-1.2, 1.0]), maxiter=1000, warn="tester")
    assert res.success and np.allclose(res.x, [1.0, 1.0], atol=1e-4)


def test_bounds_are_respected_by_lbfgs_and_adam():
    lo, hi = np.array([-1.0, -np.inf]), np.array([2.0, 0.5])

    def fg(z):
        return float(np.sum((z - 5.0) ** 2)), 2 * (z - 5.0)

    for kw in (dict(), dict(method=None, adam_steps=200, adam_lr=0.5), dict(adam_steps=20, adam_lr=0.5)):
        f, seen = recording(fg)
        res = O.minimize(f, np.array([3.0, -7.0]), bounds=(lo, hi), **kw)  # (a start outside: clipped)
        pts = np.array([z for z, _ in seen])
        assert np.all(pts >= lo) and np.all(pts <= hi), kw
        assert res.x[1] <= 0.5 and res.x[0] <= 2.0
        if kw.get("method", "L-BFGS-B"):
            np.testing.assert_allclose(res.x, [2.0, 0.5])
    # without bounds the same problem goes to the unconstrained optimum
    np.testing.assert_allclose(O.minimize(fg, np.array([3.0, -7.0])).x, [5.0, 5.0])


def test_kkt_reads_only_the_partial_derivatives_pointing_into_the_box():
    z = np.array([0.0, 1.0, 0.5])
    lo, hi = np.zeros(3), np.ones(3)
    assert O.kkt(np.array([3.0, -2.0, 0.25]), z, lo, hi) == 0.25  # (out of the box at both bounds)
    assert O.kkt(np.array([-3.0, 2.0, 0.25]), z, lo, hi) == 3.0
    assert O.kkt(np.array([-3.0, 2.0, 0.25]), z, None, None) == 3.0


def test_the_stall_rule_stops_as_converged():
    f, seen = recording(rosenbrock)
    res = O.minimize(f, np.array([-1.2, 1.0]), options={"ftol": 1e-15, "gtol": 1e-12}, stall=(5.0, 3))
    assert res.success and "improved by < 5 over the last 3 iterations" in res.message
    full = O.minimize(rosenbrock, np.array([-1.2, 1.0]), options={"ftol": 1e-15, "gtol": 1e-12})
    assert res.nfev < full.nfev


@pytest.mark.parametrize("how", ["options", "tol"])
def test_the_restart_rule_restarts_short_of_the_gradient_limit(how):
    """The loose stop given as options' ftol or as ``tol`` (SciPy's L-BFGS-B reads it as ftol):
    each restart tightens it 1000x."""
    kw = {"options": {"ftol": 1e-3, "gtol": 1e-7, "maxcor": 20}}
    if how == "tol":
        kw = {"options": {"gtol": 1e-7, "maxcor": 20}, "tol": 1e-3}
    res = O.minimize(rosenbrock, np.array([-1.2, 1.0]), **kw)
    assert res.success and np.abs(rosenbrock(res.x)[1]).max() > 1e-2 and res.restarts == 0
    res = O.minimize(rosenbrock, np.array([-1.2, 1.0]), restart_gtol=1e-2, **kw)
    assert res.success and np.abs(rosenbrock(res.x)[1]).max() <= 1e-2
    assert 1 <= res.restarts <= 3 and "restarted" in res.message


def test_the_evaluation_hook_can_stop_the_run():
    res = O.minimize(rosenbrock, np.array([-1.2, 1.0]), on_evaluation=lambda z, v: v < 1.0)
    assert res.success and res.message == "stopped by the callback" and res.fun < 1.0
    assert np.array_equal(rosenbrock(res.x)[0], res.fun)


def spy(monkeypatch):
    calls = []
    real = O.minimize

    def wrapped(*a, **k):
        calls.append(k)
        return real(*a, **k)

    monkeypatch.setattr(O, "minimize", wrapped)
    return calls


def test_sc_minimize_goes_through_the_driver(monkeypatch):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    chain = sc.SimpleChain(3, sc.Dense(4, sc.tanh), sc.Dense(1))
    loss = sc.add_loss(chain, sc.SquaredLoss(np.sin(X[:, :1])))
    p = chain.init_params(seed=0)
    calls = spy(monkeypatch)
    res = sc.minimize(loss, X, p, maxiter=50)
    assert len(calls) == 1 and calls[0]["warn"] == "sc.minimize"
    assert np.array_equal(p, res.x.astype(p.dtype)) and np.isfinite(res.fun)


@numba.njit
def decay(du, u, p, t):
    du[0] = -p[0] * u[0]


def test_gradient_function_minimize_goes_through_the_driver(monkeypatch):
    ts = np.linspace(0.0, 2.0, 9)
    data = np.exp(-0.7 * ts)[:, None]
    p = np.array([0.2])
    gf = sc.gradient_function(data, decay, np.array([1.0]), (0.0, 2.0), p, saveat=ts)
    calls = spy(monkeypatch)
    seen = []
    res = gf.minimize(p, callback=lambda q, v: seen.append(v) or v < 1e-6)
    assert len(calls) == 1 and res.success
    assert res.message == "stopped by the callback" and seen[-1] < 1e-6
    assert p[0] == pytest.approx(0.7, rel=1e-2) and res.fun == min(seen)
