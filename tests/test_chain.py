"""SimpleChain: forward, vjp_into, jvp_into against NumPy references and finite differences;
parameters (init_params, param_views, num_params)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    ACTIVATION_IDS,
    ALL_ACTIVATIONS,
    CHAIN_IDS,
    SMOOTH_ACTIVATIONS,
    central_diff_dir,
    central_diff_grad,
    layer_slices,
    make_chain,
    random_data,
    random_params,
    ref_forward,
    ref_jvp,
    ref_num_params,
    ref_vjp,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import smallchains as sc
from smallchains._program import BLOCK  # samples per block inside the kernels
from smallchains.layers import Layer

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}
# gradients are sums over layers/samples of products: a little more room than the forward pass
GTOL = {np.float32: dict(rtol=1e-4, atol=1e-4), np.float64: dict(rtol=1e-10, atol=1e-11)}
FD = dict(rtol=1e-6, atol=1e-7)  # central differences with h=1e-6 in float64
# block boundaries of the kernels (BLOCK samples per block) and the fixed sizes 127/128/129/300
BATCHES = sorted({1, 3, 127, 128, 129, 300, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK + 44})


def _scaled_atol(ref, tol):
    """Absolute tolerance relative to the scale of the reference values."""
    return dict(rtol=tol["rtol"], atol=tol["atol"] * max(1.0, float(np.max(np.abs(ref), initial=0.0))))


# --------------------------------------------------------------------------- canonical lists are complete


def test_all_activations_is_complete():
    assert {a.name for a in ALL_ACTIVATIONS} == set(sc.ACTIVATIONS)
    assert len(ALL_ACTIVATIONS) == len(sc.ACTIVATIONS)
    for a in ALL_ACTIVATIONS:
        assert getattr(sc, a.name) is a
        assert isinstance(a, sc.ActivationFunction)


def _all_subclasses(cls):
    out = set()
    for c in cls.__subclasses__():
        out.add(c)
        out |= _all_subclasses(c)
    return out


def test_chain_factories_cover_every_layer_kind_and_activation():
    from test_conv import CHAINS as IMAGE_CHAINS

    from smallchains.layers._base import ParameterFree
    from smallchains.layers.pool import _Pool

    kinds = set()
    acts = set()
    for name in CHAIN_IDS:
        chain = make_chain(name)
        for layer in chain.layers:
            kinds.add(type(layer))
            acts.add((layer.activation if isinstance(layer, sc.Dense) else layer.f).name)
    for factory in IMAGE_CHAINS.values():  # image layers: tests/test_conv.py
        kinds |= {type(layer) for layer in factory().layers}
    concrete = _all_subclasses(Layer) - {ParameterFree, _Pool}
    assert concrete <= kinds, f"layer kinds without a test chain: {concrete - kinds}"
    assert set(sc.ACTIVATIONS) <= acts, f"activations without a test chain: {set(sc.ACTIVATIONS) - acts}"


# --------------------------------------------------------------------------- the references themselves


@pytest.mark.parametrize("name", CHAIN_IDS)
def test_reference_backward_matches_finite_differences(name):
    """The NumPy reference vjp/jvp are themselves checked against central differences."""
    chain = make_chain(name)
    p = random_params(chain, seed=1)
    X = random_data(chain, 4, seed=2)
    V = np.random.default_rng(3).standard_normal((4, chain.output_dim))
    gp, gx = ref_vjp(chain, p, V, X)
    fd_p = central_diff_grad(lambda q: np.sum(V * ref_forward(chain, q, X)), p)
    fd_x = central_diff_grad(lambda x: np.sum(V * ref_forward(chain, p, x)), X)
    np.testing.assert_allclose(gp, fd_p, **FD)
    np.testing.assert_allclose(gx, fd_x, **FD)
    dX = np.random.default_rng(4).standard_normal(X.shape)
    dp = np.random.default_rng(5).standard_normal(p.shape)
    fd = central_diff_dir(lambda x: ref_forward(chain, p, x), X, dX) + central_diff_dir(
        lambda q: ref_forward(chain, q, X), p, dp
    )
    np.testing.assert_allclose(ref_jvp(chain, p, X, dX, dp), fd, **FD)


# --------------------------------------------------------------------------- forward


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ALL_ACTIVATIONS, ids=ACTIVATION_IDS)
@pytest.mark.parametrize("n", BATCHES)
def test_forward_matches_reference(act, dtype, n):
    chain = sc.SimpleChain(3, sc.Dense(5, act), sc.Dense(7, act), sc.Dense(2))
    p = random_params(chain, dtype, seed=n)
    X = random_data(chain, n, dtype, seed=n + 1, scale=1.5)
    ref = ref_forward(chain, p, X)
    Y = chain(X, p)
    assert Y.shape == (n, 2) and Y.dtype == dtype
    np.testing.assert_allclose(Y, ref, **_scaled_atol(ref, TOL[dtype]))
    if n > BLOCK:  # several blocks split over two threads
        np.testing.assert_allclose(chain(X, p, num_threads=2), ref, **_scaled_atol(ref, TOL[dtype]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("widths", [(1,), (3,), (5, 7), (7, 1, 3), (4,), (8, 4), (12, 16, 8), (4, 5, 8)])
@pytest.mark.parametrize("bias", [True, False])
def test_forward_widths(widths, dtype, bias):
    acts = [sc.tanh, sc.gelu, sc.softplus]
    layers = [sc.Dense(w, acts[i % 3], bias=bias) for i, w in enumerate(widths)]
    chain = sc.SimpleChain(widths[0] if widths[0] != 1 else 2, *layers)
    p = random_params(chain, dtype, seed=7)
    for n in (1, 5, BLOCK + 2):
        X = random_data(chain, n, dtype, seed=n)
        ref = ref_forward(chain, p, X)
        np.testing.assert_allclose(chain(X, p), ref, **_scaled_atol(ref, TOL[dtype]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", CHAIN_IDS)
def test_forward_canonical_chains(name, dtype):
    chain = make_chain(name)
    p = random_params(chain, dtype, seed=3)
    X = random_data(chain, BLOCK + 1, dtype, seed=4)
    ref = ref_forward(chain, p, X)
    np.testing.assert_allclose(chain(X, p), ref, **_scaled_atol(ref, TOL[dtype]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ALL_ACTIVATIONS, ids=ACTIVATION_IDS)
def test_standalone_activation_layer(act, dtype):
    chain = sc.SimpleChain(5, sc.Activation(act))
    assert chain.num_params == 0 and chain.output_dim == 5
    p = chain.init_params(dtype=dtype)
    X = random_data(chain, 131, dtype, seed=1, scale=2.0)
    ref = act(X.astype(np.float64))
    np.testing.assert_allclose(chain(X, p), ref, **_scaled_atol(ref, TOL[dtype]))
    # fused Dense activation == Dense followed by an Activation layer
    fused = sc.SimpleChain(3, sc.Dense(5, act))
    split = sc.SimpleChain(3, sc.Dense(5), sc.Activation(act))
    q = random_params(fused, dtype, seed=2)
    Xq = random_data(fused, 7, dtype, seed=3)
    np.testing.assert_allclose(split(Xq, q), fused(Xq, q), **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_sample_forward(dtype):
    chain = make_chain("deep_mixed_4_8_7_3")
    p = random_params(chain, dtype, seed=0)
    X = random_data(chain, 6, dtype, seed=1)
    Y = chain(X, p)
    for i in range(6):
        y = chain(X[i], p)
        assert y.shape == (3,) and y.dtype == dtype
        np.testing.assert_allclose(y, Y[i], **TOL[dtype])
        np.testing.assert_allclose(y, ref_forward(chain, p, X[i]), **TOL[dtype])


def test_forward_returns_new_array_and_leaves_inputs():
    chain = make_chain("tanh_3_5_2")
    p = random_params(chain, seed=0)
    X = random_data(chain, 4, seed=1)
    p0, X0 = p.copy(), X.copy()
    Y1 = chain(X, p)
    Y2 = chain(X, p)
    assert Y1 is not Y2 and not np.shares_memory(Y1, Y2)
    Y1[:] = 123.0
    np.testing.assert_array_equal(Y2, chain(X, p))
    np.testing.assert_array_equal(p, p0)
    np.testing.assert_array_equal(X, X0)


# --------------------------------------------------------------------------- vjp_into


@pytest.mark.parametrize("name", CHAIN_IDS)
def test_vjp_batch_vs_reference_and_fd(name):
    chain = make_chain(name)
    p = random_params(chain, seed=11)
    X = random_data(chain, 5, seed=12)
    V = np.random.default_rng(13).standard_normal((5, chain.output_dim))
    out = np.empty_like(p)
    out_x = np.empty_like(X)
    ret = chain.vjp_into(out, p, V, X, out_x)
    assert ret is out
    gp, gx = ref_vjp(chain, p, V, X)
    np.testing.assert_allclose(out, gp, **GTOL[np.float64])
    np.testing.assert_allclose(out_x, gx, **GTOL[np.float64])
    # against finite differences of the compiled forward pass itself
    fd_p = central_diff_grad(lambda q: np.sum(V * chain(X, q)), p)
    fd_x = central_diff_grad(lambda x: np.sum(V * chain(x, p)), X)
    np.testing.assert_allclose(out, fd_p, **FD)
    np.testing.assert_allclose(out_x, fd_x, **FD)


@pytest.mark.parametrize("name", CHAIN_IDS)
def test_vjp_one_sample_vs_reference_and_fd(name):
    chain = make_chain(name)
    p = random_params(chain, seed=21)
    x = random_data(chain, None, seed=22)
    v = np.random.default_rng(23).standard_normal(chain.output_dim)
    out = np.empty_like(p)
    out_x = np.empty_like(x)
    chain.vjp_into(out, p, v, x, out_x)
    gp, gx = ref_vjp(chain, p, v, x)
    assert gx.shape == x.shape
    np.testing.assert_allclose(out, gp, **GTOL[np.float64])
    np.testing.assert_allclose(out_x, gx, **GTOL[np.float64])
    np.testing.assert_allclose(out, central_diff_grad(lambda q: v @ chain(x, q), p), **FD)
    np.testing.assert_allclose(out_x, central_diff_grad(lambda y: v @ chain(y, p), x), **FD)
    # without out_x: same parameter cotangent
    out2 = np.full_like(p, np.nan)
    chain.vjp_into(out2, p, v, x)
    np.testing.assert_array_equal(out2, out)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", sorted({1, 127, 128, 129, 300, BLOCK - 1, BLOCK + 1, 2 * BLOCK + 44}))
@pytest.mark.parametrize("num_threads", [1, 2])
def test_vjp_batch_sizes_and_threads(n, dtype, num_threads):
    chain = sc.SimpleChain(5, sc.Dense(7, sc.tanh), sc.Dense(4, sc.silu), sc.Dense(3))
    p = random_params(chain, dtype, seed=n)
    X = random_data(chain, n, dtype, seed=n + 1)
    V = np.random.default_rng(n + 2).standard_normal((n, 3)).astype(dtype)
    out = np.full_like(p, np.nan)
    out_x = np.full_like(X, np.nan)
    chain.vjp_into(out, p, V, X, out_x, num_threads=num_threads)
    gp, gx = ref_vjp(chain, p, V, X)
    np.testing.assert_allclose(out, gp, **_scaled_atol(gp, GTOL[dtype]))
    np.testing.assert_allclose(out_x, gx, **_scaled_atol(gx, GTOL[dtype]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ALL_ACTIVATIONS, ids=ACTIVATION_IDS)
def test_vjp_every_activation(act, dtype):
    chain = sc.SimpleChain(3, sc.Dense(5, act), sc.Dense(4, act, bias=False), sc.Dense(2))
    p = random_params(chain, dtype, seed=5)
    X = random_data(chain, BLOCK + 2, dtype, seed=6, scale=1.5)
    V = np.random.default_rng(7).standard_normal((BLOCK + 2, 2)).astype(dtype)
    out = np.empty_like(p)
    out_x = np.empty_like(X)
    chain.vjp_into(out, p, V, X, out_x)
    gp, gx = ref_vjp(chain, p, V, X)
    np.testing.assert_allclose(out, gp, **_scaled_atol(gp, GTOL[dtype]))
    np.testing.assert_allclose(out_x, gx, **_scaled_atol(gx, GTOL[dtype]))


@pytest.mark.parametrize("act", SMOOTH_ACTIVATIONS, ids=[a.name for a in SMOOTH_ACTIVATIONS])
def test_vjp_every_smooth_activation_vs_fd(act):
    chain = sc.SimpleChain(2, sc.Dense(3, act), sc.Activation(act), sc.Dense(2))
    p = random_params(chain, seed=8)
    X = random_data(chain, 3, seed=9, scale=1.5)
    V = np.random.default_rng(10).standard_normal((3, 2))
    out = np.empty_like(p)
    out_x = np.empty_like(X)
    chain.vjp_into(out, p, V, X, out_x)
    np.testing.assert_allclose(out, central_diff_grad(lambda q: np.sum(V * chain(X, q)), p), **FD)
    np.testing.assert_allclose(out_x, central_diff_grad(lambda x: np.sum(V * chain(x, p)), X), **FD)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_threads", [1, 2])
def test_vjp_overwrites_garbage(dtype, num_threads):
    chain = make_chain("deep_mixed_4_8_7_3")
    p = random_params(chain, dtype, seed=0)
    for n in (1, 2 * BLOCK + 44):
        X = random_data(chain, n, dtype, seed=1)
        V = np.random.default_rng(2).standard_normal((n, 3)).astype(dtype)
        clean = np.zeros_like(p)
        clean_x = np.zeros_like(X)
        chain.vjp_into(clean, p, V, X, clean_x, num_threads=num_threads)
        for fill in (np.nan, 1e30, -7.0):
            out = np.full_like(p, fill)
            out_x = np.full_like(X, fill)
            chain.vjp_into(out, p, V, X, out_x, num_threads=num_threads)
            np.testing.assert_array_equal(out, clean)
            np.testing.assert_array_equal(out_x, clean_x)
        gp, gx = ref_vjp(chain, p, V, X)
        np.testing.assert_allclose(clean, gp, **_scaled_atol(gp, GTOL[dtype]))
        np.testing.assert_allclose(clean_x, gx, **_scaled_atol(gx, GTOL[dtype]))


def test_vjp_does_not_modify_inputs():
    chain = make_chain("act_layer_middle")
    p = random_params(chain, seed=0)
    X = random_data(chain, 7, seed=1)
    V = np.random.default_rng(2).standard_normal((7, chain.output_dim))
    copies = [a.copy() for a in (p, X, V)]
    chain.vjp_into(np.empty_like(p), p, V, X, np.empty_like(X))
    chain.vjp_into(np.empty_like(p), p, V, X)
    for a, c in zip((p, X, V), copies):
        np.testing.assert_array_equal(a, c)


def test_vjp_batch_is_sum_of_one_sample_vjps():
    chain = make_chain("tanh_3_5_2")
    p = random_params(chain, seed=3)
    X = random_data(chain, 9, seed=4)
    V = np.random.default_rng(5).standard_normal((9, 2))
    total = np.zeros_like(p)
    one = np.empty_like(p)
    for i in range(9):
        chain.vjp_into(one, p, V[i], X[i])
        total += one
    out = np.empty_like(p)
    chain.vjp_into(out, p, V, X)
    np.testing.assert_allclose(out, total, rtol=1e-12, atol=1e-13)


# --------------------------------------------------------------------------- jvp_into


@pytest.mark.parametrize("name", CHAIN_IDS)
@pytest.mark.parametrize("mode", ["dx", "dp", "both"])
def test_jvp_vs_fd_and_reference(name, mode):
    chain = make_chain(name)
    p = random_params(chain, seed=31)
    rng = np.random.default_rng(32)
    for n in (None, 4, BLOCK + 2):
        X = random_data(chain, n, seed=33)
        dX = rng.standard_normal(X.shape) if mode in ("dx", "both") else None
        dp = rng.standard_normal(p.shape) if mode in ("dp", "both") else None
        out = np.full((chain.output_dim,) if n is None else (n, chain.output_dim), np.nan)
        ret = chain.jvp_into(out, p, X, dx=dX, dp=dp)
        assert ret is out
        fd = np.zeros_like(out)
        if dX is not None:
            fd = fd + central_diff_dir(lambda x: chain(x, p), X, dX)
        if dp is not None:
            fd = fd + central_diff_dir(lambda q, X=X: chain(X, q), p, dp)
        np.testing.assert_allclose(out, fd, **FD)
        ref = ref_jvp(chain, p, X, dX, dp)
        np.testing.assert_allclose(out, ref, **_scaled_atol(ref, GTOL[np.float64]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_jvp_float32_vs_reference(dtype):
    chain = make_chain("deep_mixed_4_8_7_3")
    p = random_params(chain, dtype, seed=0)
    X = random_data(chain, 200, dtype, seed=1)
    rng = np.random.default_rng(2)
    dX = rng.standard_normal(X.shape).astype(dtype)
    dp = rng.standard_normal(p.shape).astype(dtype)
    out = np.full((200, 3), np.nan, dtype=dtype)
    chain.jvp_into(out, p, X, dx=dX, dp=dp)
    ref = ref_jvp(chain, p, X, dX, dp)
    np.testing.assert_allclose(out, ref, **_scaled_atol(ref, GTOL[dtype]))


@pytest.mark.parametrize("name", [c for c in CHAIN_IDS if c != "activations_only"])
def test_jvp_zero_tangent_gives_zero(name):
    """No tangent at all (dx=None, dp=None) is the zero tangent: out must be overwritten with 0."""
    chain = make_chain(name)
    p = random_params(chain, seed=0)
    X = random_data(chain, 3, seed=1)
    # poison the cached workspace with a previous call
    chain.jvp_into(np.empty((3, chain.output_dim)), p, X, dx=np.full_like(X, 5.0))
    out = np.full((3, chain.output_dim), np.nan)
    chain.jvp_into(out, p, X)
    np.testing.assert_array_equal(out, 0.0)


@pytest.mark.parametrize("dp", [None, np.zeros(0)], ids=["no_tangent", "dp_only"])
def test_jvp_without_dx_on_activation_only_chain_is_zero(dp):
    chain = make_chain("activations_only")
    p = chain.init_params(dtype=np.float64)
    X = random_data(chain, 3, seed=1)
    chain.jvp_into(np.empty((3, chain.output_dim)), p, X, dx=np.full_like(X, 5.0))
    out = np.full((3, chain.output_dim), np.nan)
    chain.jvp_into(out, p, X, dp=dp)
    np.testing.assert_array_equal(out, 0.0)


@pytest.mark.parametrize("name", CHAIN_IDS)
def test_jvp_vjp_adjoint_identity(name):
    """<v, J_x dx + J_p dp> == <J_x^T v, dx> + <J_p^T v, dp>."""
    chain = make_chain(name)
    p = random_params(chain, seed=41)
    X = random_data(chain, 6, seed=42)
    rng = np.random.default_rng(43)
    dX = rng.standard_normal(X.shape)
    dp = rng.standard_normal(p.shape)
    V = rng.standard_normal((6, chain.output_dim))
    Jd = np.empty_like(V)
    chain.jvp_into(Jd, p, X, dx=dX, dp=dp)
    gp = np.empty_like(p)
    gx = np.empty_like(X)
    chain.vjp_into(gp, p, V, X, gx)
    lhs = np.sum(V * Jd)
    rhs = np.sum(gx * dX) + gp @ dp
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs), np.abs(V * Jd).sum())


# --------------------------------------------------------------------------- hypothesis


@st.composite
def chain_specs(draw):
    d = draw(st.integers(1, 6))
    nlayers = draw(st.integers(1, 3))
    layers = []
    for _ in range(nlayers):
        if draw(st.integers(0, 4)) == 0:
            layers.append(("act", draw(st.sampled_from(ACTIVATION_IDS))))
        else:
            layers.append(
                ("dense", draw(st.integers(1, 9)), draw(st.sampled_from(ACTIVATION_IDS)), draw(st.booleans()))
            )
    n = draw(st.sampled_from([1, 2, 5, 128, 129, BLOCK, BLOCK + 1, 2 * BLOCK + 4]))
    seed = draw(st.integers(0, 2**16))
    return d, layers, n, seed


def _build(d, specs):
    layers = []
    for s in specs:
        if s[0] == "act":
            layers.append(sc.Activation(s[1]))
        else:
            layers.append(sc.Dense(s[1], s[2], bias=s[3]))
    return sc.SimpleChain(d, *layers)


@settings(max_examples=30, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(chain_specs())
def test_hypothesis_forward_vjp_jvp(spec):
    d, specs, n, seed = spec
    chain = _build(d, specs)
    assert chain.num_params == ref_num_params(chain)
    p = random_params(chain, seed=seed)
    X = random_data(chain, n, seed=seed + 1)
    rng = np.random.default_rng(seed + 2)
    ref = ref_forward(chain, p, X)
    np.testing.assert_allclose(chain(X, p), ref, **_scaled_atol(ref, TOL[np.float64]))
    V = rng.standard_normal((n, chain.output_dim))
    out = np.full_like(p, np.nan)
    out_x = np.full_like(X, np.nan)
    chain.vjp_into(out, p, V, X, out_x)
    gp, gx = ref_vjp(chain, p, V, X)
    np.testing.assert_allclose(out, gp, **_scaled_atol(gp, GTOL[np.float64]))
    np.testing.assert_allclose(out_x, gx, **_scaled_atol(gx, GTOL[np.float64]))
    dX = rng.standard_normal(X.shape)
    dp = rng.standard_normal(p.shape)
    o = np.full_like(ref, np.nan)
    chain.jvp_into(o, p, X, dx=dX, dp=dp)
    rj = ref_jvp(chain, p, X, dX, dp)
    np.testing.assert_allclose(o, rj, **_scaled_atol(rj, GTOL[np.float64]))


@settings(max_examples=15, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(chain_specs())
def test_hypothesis_float32_forward(spec):
    d, specs, n, seed = spec
    chain = _build(d, specs)
    p = random_params(chain, np.float32, seed=seed)
    X = random_data(chain, n, np.float32, seed=seed + 1)
    ref = ref_forward(chain, p, X)
    np.testing.assert_allclose(chain(X, p), ref, **_scaled_atol(ref, TOL[np.float32]))


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("name", CHAIN_IDS)
def test_num_params(name):
    chain = make_chain(name)
    assert chain.num_params == ref_num_params(chain)
    assert chain.init_params().shape == (chain.num_params,)


def test_num_params_explicit():
    chain = sc.SimpleChain(4, sc.Dense(32, sc.tanh), sc.Dense(16, sc.tanh), sc.Dense(4))
    assert chain.num_params == 4 * 32 + 32 + 32 * 16 + 16 + 16 * 4 + 4
    assert sc.SimpleChain(3, sc.Dense(5, bias=False)).num_params == 15
    assert sc.SimpleChain(3, sc.Activation(sc.relu)).num_params == 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_init_params_seeded_dtype_glorot_zero_bias(dtype):
    chain = sc.SimpleChain(40, sc.Dense(60, sc.tanh), sc.Activation(sc.relu), sc.Dense(30), sc.Dense(3, bias=False))
    p = chain.init_params(seed=5, dtype=dtype)
    assert p.dtype == dtype and p.shape == (chain.num_params,) and p.flags.c_contiguous
    np.testing.assert_array_equal(p, chain.init_params(seed=5, dtype=dtype))
    assert not np.array_equal(p, chain.init_params(seed=6, dtype=dtype))
    layers, _ = layer_slices(chain)
    for _layer, nin, nout, ws, bs in layers:
        if ws is None:
            continue
        W = p[ws]
        limit = np.sqrt(6.0 / (nin + nout))
        assert np.all(np.abs(W) <= limit * (1 + 1e-6))
        # uniform over the whole interval: extremes near the bounds, mean near 0, variance limit^2/3
        assert W.max() > 0.9 * limit and W.min() < -0.9 * limit
        assert abs(W.mean()) < 0.1 * limit
        assert abs(W.var() / (limit**2 / 3) - 1) < 0.2
        assert len(np.unique(W)) > 0.9 * W.size
        if bs is not None:
            np.testing.assert_array_equal(p[bs], 0.0)


def test_init_params_default_and_bad_dtype():
    chain = make_chain("tanh_3_5_2")
    assert chain.init_params().dtype == np.float32
    np.testing.assert_array_equal(
        chain.init_params(seed=1), chain.init_params(seed=1, dtype=np.float64).astype(np.float32)
    )
    for bad in (np.float16, np.int64, np.complex128):
        with pytest.raises(TypeError, match="dtype"):
            chain.init_params(dtype=bad)


def test_param_views_names_shapes_and_writes():
    chain = sc.SimpleChain(3, sc.Dense(5, sc.tanh), sc.Activation(sc.relu), sc.Dense(4, bias=False), sc.Dense(2))
    p = chain.init_params(seed=0, dtype=np.float64)
    views = chain.param_views(p)
    assert list(views) == ["dense1", "dense2", "dense3"]
    W1, b1 = views["dense1"]
    W2, b2 = views["dense2"]
    W3, b3 = views["dense3"]
    assert W1.shape == (5, 3) and b1.shape == (5,)
    assert W2.shape == (4, 5) and b2 is None
    assert W3.shape == (2, 4) and b3.shape == (2,)
    for a in (W1, b1, W2, W3, b3):
        assert np.shares_memory(a, p)
    # the layout: W row-major (out, in), then b, layer after layer
    layers, _ = layer_slices(chain)
    dense = [s for s in layers if s[3] is not None]
    for (W, b), (_layer, _nin, _nout, ws, bs) in zip([views[k] for k in views], dense):
        np.testing.assert_array_equal(W.ravel(), p[ws])
        if bs is not None:
            np.testing.assert_array_equal(b, p[bs])
    # writes go into p and change the chain's output as the reference predicts
    W1[1, 2] = 0.75
    b1[3] = -0.5
    b3[:] = 2.0
    assert p[ws_of(layers, 0)][1 * 3 + 2] == 0.75
    assert p[layers[0][4]][3] == -0.5
    np.testing.assert_array_equal(p[layers[3][4]], 2.0)
    X = random_data(chain, 4, seed=1)
    np.testing.assert_allclose(chain(X, p), ref_forward(chain, p, X), rtol=1e-12, atol=1e-12)


def ws_of(layers, i):
    return layers[i][3]


def test_param_views_rejects_wrong_vector():
    chain = make_chain("tanh_3_5_2")
    with pytest.raises(ValueError, match="p"):
        chain.param_views(np.zeros(chain.num_params + 1))


def test_describe_len_repr():
    chain = sc.SimpleChain(3, sc.Dense(5, sc.tanh), sc.Activation(sc.relu), sc.Dense(2, bias=False))
    assert len(chain) == 3
    assert chain.input_dim == 3 and chain.output_dim == 2
    d = chain.describe()
    assert d["input_dim"] == 3
    assert [layer["kind"] for layer in d["layers"]] == ["Dense", "Activation", "Dense"]
    assert d["layers"][0]["activation"] == "tanh" and d["layers"][2]["bias"] is False
    assert "Dense(5, sc.tanh)" in repr(chain)


def test_activation_by_name_equals_object():
    for a in ALL_ACTIVATIONS:
        assert sc.Dense(3, a.name).activation == a
        assert sc.Activation(a.name).f == a
    assert sc.Dense(3).activation == sc.identity


def test_summary_lists_layers_shapes_and_parameter_counts():
    chain = sc.SimpleChain((1, 12, 12), sc.Conv(4, 3, sc.relu), sc.MaxPool(2), sc.Flatten(), sc.Dense(7))
    lines = chain.summary().splitlines()
    assert lines[0].split() == ["layer", "output", "shape", "params"]
    assert "(4, 10, 10)" in lines[2] and lines[2].split()[-1] == str(4 * 9 + 4)
    assert "(4, 5, 5)" in lines[3] and lines[3].split()[-1] == "0"
    assert "(100,)" in lines[4]
    assert lines[5].split()[-1] == str(100 * 7 + 7)
    assert lines[-1].split() == ["total", str(chain.num_params)]
    assert chain.num_params == 40 + 707
