"""Bad input raises ValueError/TypeError naming the argument; accepted coercions give right results."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_chain, random_data, random_params, ref_forward, ref_valgrad, ref_vjp

import smallchains as sc


@pytest.fixture
def setup():
    chain = sc.SimpleChain(3, sc.Dense(5, sc.tanh), sc.Dense(2))
    p = random_params(chain, np.float64, seed=0)
    X = random_data(chain, 20, np.float64, seed=1)
    Y = np.random.default_rng(2).standard_normal((20, 2))
    loss = sc.add_loss(chain, sc.SquaredLoss(Y))
    return chain, p, X, Y, loss


def _train_calls(loss, X, p):
    return [
        lambda: sc.train_unbatched(loss, X, p, sc.Adam(), 2),
        lambda: sc.train_batched(loss, X, p, sc.Adam(), 2, batch_size=8),
        lambda: sc.minimize(loss, X, p, maxiter=2),
    ]


# --------------------------------------------------------------------------- data shape / dtype


def test_wrong_feature_count(setup):
    chain, p, X, Y, loss = setup
    bad = np.zeros((20, 4))
    with pytest.raises(ValueError, match=r"`X` has 4 features.*3"):
        chain(bad, p)
    with pytest.raises(ValueError, match="`X`"):
        loss(bad, p)
    with pytest.raises(ValueError, match="`X`"):
        sc.valgrad(np.empty_like(p), loss, bad, p)
    for call in _train_calls(loss, bad, p):
        with pytest.raises(ValueError, match="`X`"):
            call()
    with pytest.raises(ValueError, match="`x`"):
        chain.vjp_into(np.empty_like(p), p, np.zeros((20, 2)), bad)
    with pytest.raises(ValueError, match="`x`"):
        chain.jvp_into(np.empty((20, 2)), p, bad)
    with pytest.raises(ValueError, match="`X`"):
        chain(np.zeros(4), p)  # one sample of the wrong size
    with pytest.raises(ValueError, match="`X`"):
        chain(np.zeros((2, 3, 1)), p)  # 3-D


@pytest.mark.parametrize("bad_dtype", [np.int64, np.int32, np.float16, np.bool_, np.complex128, np.uint8])
def test_bad_data_dtype(setup, bad_dtype):
    chain, p, X, Y, loss = setup
    Xb = X.astype(bad_dtype) if bad_dtype is not np.complex128 else X + 0j
    with pytest.raises(TypeError, match=r"`X` has dtype"):
        chain(Xb, p)
    with pytest.raises(TypeError, match=r"`X` has dtype"):
        sc.valgrad(np.empty_like(p), loss, Xb, p)
    with pytest.raises(TypeError, match=r"`X` has dtype"):
        loss(Xb, p)
    for call in _train_calls(loss, Xb, p):
        with pytest.raises(TypeError, match=r"`X` has dtype"):
            call()
    with pytest.raises(TypeError, match=r"`x` has dtype"):
        chain.vjp_into(np.empty_like(p), p, np.zeros((20, 2)), Xb)
    with pytest.raises(TypeError, match=r"`v` has dtype"):
        chain.vjp_into(np.empty_like(p), p, np.zeros((20, 2)).astype(bad_dtype), X)
    with pytest.raises(TypeError, match=r"`x` has dtype"):
        chain.jvp_into(np.empty((20, 2)), p, Xb)
    with pytest.raises(TypeError, match=r"`dx` has dtype"):
        chain.jvp_into(np.empty((20, 2)), p, X, dx=Xb)


@pytest.mark.parametrize("bad_dtype", [np.int64, np.float16, np.bool_])
def test_bad_target_dtype(setup, bad_dtype):
    chain, p, X, Y, loss = setup
    with pytest.raises(TypeError, match="`Y`"):
        sc.SquaredLoss(Y.astype(bad_dtype))
    with pytest.raises(TypeError, match="`Y`"):
        sc.HuberLoss(Y.astype(bad_dtype))


def test_nonfinite_targets_rejected(setup):
    chain, p, X, Y, loss = setup
    for v in (np.nan, np.inf):
        Yb = Y.copy()
        Yb[3, 1] = v
        with pytest.raises(ValueError, match="`Y`"):
            sc.AbsoluteLoss(Yb)


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("bad", ["int", "float16", "bool", "2d", "short", "long", "list", "noncontig"])
def test_bad_parameter_vector(setup, bad):
    chain, p, X, Y, loss = setup
    n = chain.num_params
    q, exc = {
        "int": (np.zeros(n, np.int64), TypeError),
        "float16": (np.zeros(n, np.float16), TypeError),
        "bool": (np.zeros(n, np.bool_), TypeError),
        "2d": (np.zeros((1, n)), ValueError),
        "short": (np.zeros(n - 1), ValueError),
        "long": (np.zeros(n + 1), ValueError),
        "list": (list(p), TypeError),
        "noncontig": (np.zeros(2 * n)[::2], ValueError),
    }[bad]
    calls = [
        lambda: chain(X, q),
        lambda: loss(X, q),
        lambda: sc.valgrad(np.empty(n), loss, X, q),
        lambda: chain.vjp_into(np.empty(n), q, np.zeros((20, 2)), X),
        lambda: chain.jvp_into(np.empty((20, 2)), q, X, dx=X),
        lambda: sc.accuracy_and_loss(loss, X, q),
        lambda: chain.param_views(q),
        *_train_calls(loss, X, q),
    ]
    for call in calls:
        with pytest.raises(exc, match="`p`"):
            call()


def test_noncontiguous_p_is_refused_not_copied(setup):
    chain, p, X, Y, loss = setup
    big = np.zeros(2 * chain.num_params)
    big[::2] = p
    with pytest.raises(ValueError, match="contiguous"):
        sc.train_unbatched(loss, X, big[::2], sc.SGD(0.1), 1)
    np.testing.assert_array_equal(big[1::2], 0.0)


def test_bad_gradient_buffer(setup):
    chain, p, X, Y, loss = setup
    for g in (np.empty(chain.num_params + 1), np.empty(2 * chain.num_params)[::2]):
        with pytest.raises(ValueError, match="`g`"):
            sc.valgrad(g, loss, X, p)
    for g in (np.empty(chain.num_params, np.float32), None):  # wrong dtype or type: TypeError
        with pytest.raises(TypeError, match="`g`"):
            sc.valgrad(g, loss, X, p)


# --------------------------------------------------------------------------- NaN / Inf


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [(0, 0), (19, 2), (7, 1)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_nonfinite_X(setup, bad, where, dtype):
    chain, p, X, Y, loss = setup
    p = p.astype(dtype)
    Xb = X.astype(dtype)
    Xb[where] = bad
    with pytest.raises(ValueError, match=r"`X` contains NaN or Inf"):
        chain(Xb, p)
    with pytest.raises(ValueError, match=r"`X` contains NaN or Inf"):
        chain(Xb[where[0]], p)
    with pytest.raises(ValueError, match=r"`X` contains NaN or Inf"):
        loss(Xb, p)
    with pytest.raises(ValueError, match=r"`X` contains NaN or Inf"):
        sc.valgrad(np.empty_like(p), loss, Xb, p)
    with pytest.raises(ValueError, match=r"`X` contains NaN or Inf"):
        sc.accuracy_and_loss(loss, Xb, p)
    for i, call in enumerate(_train_calls(loss, Xb, p)):
        p0 = p.copy()
        with pytest.raises(ValueError, match=r"`X` contains NaN or Inf"):
            call()
        if i == 1:
            # minibatch training may have stepped on the clean minibatches before the bad one
            assert np.all(np.isfinite(p))
        else:
            np.testing.assert_array_equal(p, p0)
    with pytest.raises(ValueError, match=r"`x` or `v` contains NaN or Inf"):
        chain.vjp_into(np.empty_like(p), p, np.zeros((20, 2), dtype), Xb, np.empty_like(Xb))
    with pytest.raises(ValueError, match=r"`x` or `v` contains NaN or Inf"):
        chain.vjp_into(np.empty_like(p), p, np.zeros(2, dtype), Xb[where[0]])
    with pytest.raises(ValueError, match=r"`x` or `v` contains NaN or Inf"):  # a NaN cotangent too
        chain.vjp_into(np.empty_like(p), p, np.full((20, 2), np.nan, dtype), np.zeros_like(Xb))
    with pytest.raises(ValueError, match=r"`x` contains NaN or Inf"):
        chain.jvp_into(np.empty((20, 2), dtype), p, Xb, dx=np.ones_like(Xb))


@pytest.mark.parametrize("num_threads", [1, 2])
def test_nonfinite_X_large_batch_threads(num_threads):
    """NaN in a late block of a threaded call is still found."""
    chain = make_chain("deep_mixed_4_8_7_3")
    p = random_params(chain, seed=0)
    X = random_data(chain, 1000, seed=1)
    X[871, 2] = np.nan
    loss = sc.add_loss(chain, sc.SquaredLoss(np.zeros((1000, 3))))
    with pytest.raises(ValueError, match="`X` contains NaN"):
        chain(X, p, num_threads=num_threads)
    with pytest.raises(ValueError, match="`X` contains NaN"):
        sc.valgrad(np.empty_like(p), loss, X, p, num_threads=num_threads)
    with pytest.raises(ValueError, match="`x` or `v` contains NaN"):
        chain.vjp_into(np.empty_like(p), p, np.zeros((1000, 3)), X, num_threads=num_threads)
    with pytest.raises(ValueError, match="`X` contains NaN"):
        sc.train_unbatched(loss, X, p, sc.Adam(), 1, num_threads=num_threads)


# --------------------------------------------------------------------------- labels and targets


@pytest.mark.parametrize("bad_label", [-1, 2, 7])
def test_labels_out_of_range(setup, bad_label):
    chain, p, X, Y, loss = setup
    lab = np.zeros(20, dtype=np.int64)
    lab[5] = bad_label
    with pytest.raises(ValueError, match=rf"label {bad_label} is out of range"):
        sc.add_loss(chain, sc.LogitCrossEntropyLoss(lab))
    ok = sc.add_loss(chain, sc.LogitCrossEntropyLoss(np.zeros(20, dtype=np.int64)))
    with pytest.raises(ValueError, match=rf"label {bad_label}"):
        sc.accuracy_and_loss(ok, X, lab, p)


@pytest.mark.parametrize(
    "labels", [np.zeros(20), np.zeros(20, np.float32), np.array(["a"] * 20), np.zeros(20, np.bool_)]
)
def test_non_integer_labels(labels):
    with pytest.raises(TypeError, match="`labels`"):
        sc.LogitCrossEntropyLoss(labels)


def test_labels_shape():
    with pytest.raises(ValueError, match="`labels`"):
        sc.LogitCrossEntropyLoss(np.zeros((20, 1), np.int64))
    with pytest.raises(ValueError, match="`labels`"):
        sc.LogitCrossEntropyLoss(np.zeros(0, np.int64))


def test_mismatched_rows(setup):
    chain, p, X, Y, loss = setup
    X2 = X[:15]
    with pytest.raises(ValueError, match=r"`X` has 15 samples.*20"):
        loss(X2, p)
    with pytest.raises(ValueError, match=r"`X` has 15 samples"):
        sc.valgrad(np.empty_like(p), loss, X2, p)
    for call in _train_calls(loss, X2, p):
        with pytest.raises(ValueError, match=r"`X` has 15 samples"):
            call()
    closs = sc.add_loss(chain, sc.LogitCrossEntropyLoss(np.zeros(20, np.int64)))
    with pytest.raises(ValueError, match=r"`X` has 15 samples"):
        sc.accuracy_and_loss(closs, X2, p)
    with pytest.raises(ValueError, match="samples"):
        sc.accuracy_and_loss(closs, X2, np.zeros(20, np.int64), p)


def test_targets_wrong_columns(setup):
    chain, p, X, Y, loss = setup
    with pytest.raises(ValueError, match="targets have 3 columns"):
        sc.add_loss(chain, sc.SquaredLoss(np.zeros((20, 3))))


def test_vjp_v_shape_mismatch(setup):
    chain, p, X, Y, loss = setup
    out = np.empty_like(p)
    with pytest.raises(ValueError, match="`v`"):
        chain.vjp_into(out, p, np.zeros((19, 2)), X)
    with pytest.raises(ValueError, match="`v`"):
        chain.vjp_into(out, p, np.zeros((20, 3)), X)
    with pytest.raises(ValueError, match="`v`"):
        chain.vjp_into(out, p, np.zeros((1, 2)), X[0])  # one sample x needs v of shape (m,)


# --------------------------------------------------------------------------- output buffers


def test_vjp_bad_out_buffers(setup):
    chain, p, X, Y, loss = setup
    V = np.zeros((20, 2))
    n = chain.num_params
    with pytest.raises(ValueError, match="`out`"):
        chain.vjp_into(np.empty(n + 1), p, V, X)
    with pytest.raises(TypeError, match="`out`"):
        chain.vjp_into(np.empty(n, np.float32), p, V, X)
    with pytest.raises(ValueError, match="`out`"):
        chain.vjp_into(np.empty(2 * n)[::2], p, V, X)
    with pytest.raises(TypeError, match="`out`"):
        chain.vjp_into([0.0] * n, p, V, X)
    with pytest.raises(ValueError, match="`out_x`"):
        chain.vjp_into(np.empty(n), p, V, X, np.empty((20, 4)))
    with pytest.raises(ValueError, match="`out_x`"):
        chain.vjp_into(np.empty(n), p, V, X, np.empty((3,)))
    with pytest.raises(TypeError, match="`out_x`"):
        chain.vjp_into(np.empty(n), p, V, X, np.empty((20, 3), np.float32))
    with pytest.raises(ValueError, match="`out_x`"):
        chain.vjp_into(np.empty(n), p, V, X, np.empty((3, 20)).T)
    with pytest.raises(ValueError, match="`out_x`"):
        chain.vjp_into(np.empty(n), p, V[0], X[0], np.empty((1, 3)))
    ro = np.empty(n)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="`out`"):
        chain.vjp_into(ro, p, V, X)


def test_jvp_bad_buffers(setup):
    chain, p, X, Y, loss = setup
    with pytest.raises(ValueError, match="`out`"):
        chain.jvp_into(np.empty((20, 3)), p, X, dx=X)
    with pytest.raises(ValueError, match="`out`"):
        chain.jvp_into(np.empty((2,)), p, X, dx=X)
    with pytest.raises(TypeError, match="`out`"):
        chain.jvp_into(np.empty((20, 2), np.float32), p, X, dx=X)
    with pytest.raises(ValueError, match="`out`"):
        chain.jvp_into(np.empty((2, 20)).T, p, X, dx=X)
    with pytest.raises(ValueError, match="`dx`"):
        chain.jvp_into(np.empty((20, 2)), p, X, dx=X[:5])
    with pytest.raises(ValueError, match="`dx`"):
        chain.jvp_into(np.empty(2), p, X[0], dx=X[:2])
    with pytest.raises(ValueError, match="`dp`"):
        chain.jvp_into(np.empty((20, 2)), p, X, dp=np.zeros(chain.num_params + 1))
    with pytest.raises(ValueError, match="`dp`"):
        chain.jvp_into(np.empty((20, 2)), p, X, dp=np.zeros((1, chain.num_params)))


# --------------------------------------------------------------------------- accepted coercions


def test_noncontiguous_X_is_copied(setup):
    chain, p, X, Y, loss = setup
    big = np.zeros((40, 6))
    big[::2, ::2] = X
    Xn = big[::2, ::2]
    assert not Xn.flags.c_contiguous
    np.testing.assert_allclose(chain(Xn, p), ref_forward(chain, p, X), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(chain(X.T.copy().T, p), ref_forward(chain, p, X), rtol=1e-12, atol=1e-12)  # F order
    g = np.empty_like(p)
    v = sc.valgrad(g, loss, Xn, p)
    rv, rg = ref_valgrad(chain, p, X, "squared", Y)
    assert v == pytest.approx(rv, rel=1e-12)
    np.testing.assert_allclose(g, rg, rtol=1e-10, atol=1e-12)
    V = np.random.default_rng(0).standard_normal((40, 2))[::2]
    out = np.empty_like(p)
    ox = np.empty((20, 3))
    chain.vjp_into(out, p, V, Xn, ox)
    gp, gx = ref_vjp(chain, p, V, X)
    np.testing.assert_allclose(out, gp, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ox, gx, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(big[1::2], 0.0)  # nothing written through the view
    q = p.copy()
    sc.train_unbatched(loss, Xn, q, sc.SGD(0.01), 3)
    r = p.copy()
    sc.train_unbatched(loss, X, r, sc.SGD(0.01), 3)
    np.testing.assert_array_equal(q, r)


def test_float64_X_with_float32_p_is_converted(setup):
    chain, p, X, Y, loss = setup
    p32 = p.astype(np.float32)
    Y_ = chain(X, p32)
    assert Y_.dtype == np.float32
    np.testing.assert_array_equal(Y_, chain(X.astype(np.float32), p32))
    g = np.empty_like(p32)
    v = sc.valgrad(g, loss, X, p32)
    g2 = np.empty_like(p32)
    assert v == sc.valgrad(g2, loss, X.astype(np.float32), p32)
    np.testing.assert_array_equal(g, g2)
    rv, _ = ref_valgrad(chain, p32, X.astype(np.float32), "squared", Y.astype(np.float32))
    assert v == pytest.approx(rv, rel=1e-5)
    # float32 data with float64 parameters: computed in float64
    Y64 = chain(X.astype(np.float32), p)
    assert Y64.dtype == np.float64
    np.testing.assert_allclose(Y64, ref_forward(chain, p, X.astype(np.float32)), rtol=1e-12, atol=1e-12)


def test_list_input_accepted(setup):
    chain, p, X, Y, loss = setup
    np.testing.assert_array_equal(chain(X.tolist(), p), chain(X, p))


def test_empty_X(setup):
    chain, p, X, Y, loss = setup
    with pytest.raises(ValueError, match="`X` is empty"):
        chain(np.zeros((0, 3)), p)
    with pytest.raises(ValueError, match="`x` is empty"):
        chain.vjp_into(np.empty_like(p), p, np.zeros((0, 2)), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="`x` is empty"):
        chain.jvp_into(np.empty((0, 2)), p, np.zeros((0, 3)), dx=np.zeros((0, 3)))
    with pytest.raises(ValueError, match="`Y`"):
        sc.SquaredLoss(np.zeros((0, 2)))


# --------------------------------------------------------------------------- layers and chains


@pytest.mark.parametrize("out", [0, -3, 3.5, "4", None, True, np.float64(2.0)])
def test_bad_dense_size(out):
    with pytest.raises(ValueError, match="`out`"):
        sc.Dense(out)


def test_dense_numpy_integer_size_accepted():
    assert sc.Dense(np.int32(4)).out == 4


@pytest.mark.parametrize("act", ["tanhh", "ReLU", np.tanh, lambda x: x, 3, object()])
def test_bad_activation(act):
    with pytest.raises(TypeError, match="`activation`"):
        sc.Dense(3, act)
    with pytest.raises(TypeError, match="`f`"):
        sc.Activation(act)


def test_bad_chains():
    with pytest.raises(ValueError, match="at least one layer"):
        sc.SimpleChain(4)
    with pytest.raises(TypeError):
        sc.SimpleChain()
    for bad in (0, -1, 2.5, "3", None):
        with pytest.raises(ValueError, match="`input_dim`"):
            sc.SimpleChain(bad, sc.Dense(2))
    with pytest.raises(TypeError, match="layer 1"):
        sc.SimpleChain(4, sc.Dense(3), np.tanh)
    with pytest.raises(TypeError, match="layer 0"):
        sc.SimpleChain(4, sc.tanh)
    assert sc.SimpleChain((4,), sc.Dense(2)).input_dim == 4


def test_bad_loss_and_optimizer_arguments(setup):
    chain, p, X, Y, loss = setup
    with pytest.raises(TypeError, match="`loss`"):
        sc.valgrad(np.empty_like(p), sc.SquaredLoss(Y), X, p)
    with pytest.raises(TypeError, match="`loss`"):
        sc.train_unbatched(sc.SquaredLoss(Y), X, p, sc.Adam(), 1)
    with pytest.raises(TypeError, match="`opt`"):
        sc.train_unbatched(loss, X, p, "adam", 1)
    with pytest.raises(TypeError, match="penalty"):
        sc.add_loss(chain, sc.L2Penalty(0.1))
    with pytest.raises(TypeError, match="`penalty`"):
        sc.add_loss(chain, sc.SquaredLoss(Y), 0.1)
    with pytest.raises(ValueError, match="`epochs`"):
        sc.train_unbatched(loss, X, p, sc.Adam(), -1)
    with pytest.raises(ValueError, match="`epochs`"):
        sc.train_unbatched(loss, X, p, sc.Adam(), 2.5)
    with pytest.raises(ValueError, match="`batch_size`"):
        sc.train_batched(loss, X, p, sc.Adam(), 1, batch_size=0)
    with pytest.raises(ValueError, match="`num_threads`"):
        chain(X, p, num_threads=0)
    for bad in (0, -1e-3, np.inf, np.nan, "0.1"):
        with pytest.raises(ValueError, match="learning rate"):
            sc.Adam(bad)
        with pytest.raises(ValueError, match="learning rate"):
            sc.SGD(bad)
    with pytest.raises(ValueError, match="momentum"):
        sc.SGD(0.1, momentum=1.0)
    with pytest.raises(ValueError, match="Nesterov"):
        sc.SGD(0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        sc.Adam(betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="delta"):
        sc.HuberLoss(Y, delta=0)
    for bad in (-1.0, np.nan):
        with pytest.raises(ValueError, match="penalty"):
            sc.L1Penalty(bad)
