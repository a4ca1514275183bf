"""Hypothesis fuzzing of the main entry points: random shapes and values must give finite results
(or a named ValueError/TypeError/DataError), never a crash or a non-finite output from finite input."""

import numba
import numpy as np
import pytest

hyp = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import smallchains as sc  # noqa: E402

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ACTS = ["identity", "tanh", "relu", "sigmoid", "softplus", "gelu", "silu", "elu"]


@SETTINGS
@given(
    d=st.integers(1, 9),
    widths=st.lists(st.integers(1, 17), min_size=1, max_size=3),
    acts=st.lists(st.sampled_from(ACTS), min_size=3, max_size=3),
    n=st.integers(1, 70),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**31),
)
def test_chain_forward_and_gradient(d, widths, acts, n, dtype, seed):
    layers = [sc.Dense(w, sc.ACTIVATIONS[a]) for w, a in zip(widths, acts)]
    chain = sc.SimpleChain(d, *layers)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    Y = rng.standard_normal((n, widths[-1])).astype(dtype)
    p = chain.init_params(seed=seed, dtype=dtype)
    out = chain(X, p)
    assert out.shape == (n, widths[-1]) and np.all(np.isfinite(out))
    g = np.empty_like(p)
    v = sc.valgrad(g, sc.add_loss(chain, sc.SquaredLoss(Y)), X, p)
    assert np.isfinite(v) and np.all(np.isfinite(g))


@numba.njit
def linear(du, u, p, t):
    n = u.shape[0]
    for i in range(n):
        s = 0.0
        for j in range(n):
            s += p[i * n + j] * u[j]
        du[i] = s


@SETTINGS
@given(n=st.integers(1, 4), seed=st.integers(0, 2**31), t1=st.floats(0.1, 3.0))
def test_solve_and_gradient_of_random_linear_systems(n, seed, t1):
    """du/dt = A u with a random stable-ish A: finite solution equal to expm(A t) u0, finite gradient."""
    import scipy.linalg

    rng = np.random.default_rng(seed)
    A = rng.normal(0, 0.7, (n, n)) - np.eye(n)
    u0 = rng.normal(0, 1, n)
    ts = np.linspace(0, t1, 4)
    sol = sc.solve(linear, u0, (0.0, t1), A.ravel(), saveat=ts, rtol=1e-9, atol=1e-11)
    exact = np.array([scipy.linalg.expm(A * t) @ u0 for t in ts])
    np.testing.assert_allclose(sol.u, exact, rtol=1e-6, atol=1e-8)
    value, gp, gu0 = sc.value_and_grad(exact + 0.1, linear, u0, (0.0, t1), A.ravel(), saveat=ts, rtol=1e-8, atol=1e-10)
    assert np.isfinite(value) and np.all(np.isfinite(gp)) and np.all(np.isfinite(gu0))


pd = pytest.importorskip("pandas")

row = st.fixed_dictionaries(
    {
        "TIME": st.one_of(st.floats(-1, 50, allow_nan=False), st.just(np.nan)),
        "AMT": st.one_of(st.just(0.0), st.floats(0, 100, allow_nan=False), st.just(np.nan)),
        "DV": st.one_of(st.floats(-5, 50, allow_nan=False), st.just(np.nan)),
        "EVID": st.sampled_from([0, 0, 1, 2, 3, 4, 5]),
        "MDV": st.sampled_from([0, 1, np.nan]),
        "CMT": st.sampled_from([1, 2, 0, np.nan]),
    }
)


@SETTINGS
@given(rows=st.lists(row, min_size=1, max_size=12), ids=st.lists(st.integers(1, 3), min_size=12, max_size=12))
def test_read_data_on_random_frames(rows, ids):
    df = pd.DataFrame(rows)
    df.insert(0, "ID", ids[: len(rows)])
    try:
        pop = sc.pk.read_data(df)
    except sc.pk.DataError as e:
        assert "row" in str(e) or "column" in str(e) or "data" in str(e)
        return
    for s in pop.subjects:
        assert np.all(np.isfinite(s.obs_time)) and np.all(np.isfinite(s.dv))
        assert np.all(np.diff(s.obs_time) >= 0)
