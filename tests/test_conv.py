"""Convolution, pooling, flatten and dropout layers: forward against naive NumPy references,
pullbacks against central finite differences (float64), forward mode against reverse mode,
thread invariance, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

import smallchains as sc
from smallchains.layers.conv import Conv, Conv1D
from smallchains.layers.pool import AvgPool, Dropout, Flatten, MaxPool

# --------------------------------------------------------------------------- NumPy reference


def _pads(layer, H, W):
    return layer._pads(H, W)


def ref_conv(layer, x, Wt, b):
    """Naive loops: x (n, C, H, W), Wt (OC, C, KH, KW)."""
    n, C, H, W = x.shape
    (ph0, ph1), (pw0, pw1) = _pads(layer, H, W)
    xp = np.zeros((n, C, H + ph0 + ph1, W + pw0 + pw1))
    xp[:, :, ph0 : ph0 + H, pw0 : pw0 + W] = x
    KH, KW = Wt.shape[2:]
    SH, SW = layer.stride
    OH = (xp.shape[2] - KH) // SH + 1
    OW = (xp.shape[3] - KW) // SW + 1
    y = np.zeros((n, Wt.shape[0], OH, OW))
    for o in range(Wt.shape[0]):
        for i in range(OH):
            for j in range(OW):
                patch = xp[:, :, i * SH : i * SH + KH, j * SW : j * SW + KW]
                y[:, o, i, j] = np.einsum("nckl,ckl->n", patch, Wt[o]) + (b[o] if b is not None else 0.0)
    return layer.activation(y)


def ref_pool(layer, x, is_max):
    one_d = x.ndim == 3
    if one_d:
        x = x[:, :, None, :]
    C, H, W = x.shape[1:]
    _, _, _, KH, KW, SH, SW, OH, OW, _ = layer._geometry((C, W) if one_d else (C, H, W))
    y = np.zeros((x.shape[0], C, OH, OW))
    for i in range(OH):
        for j in range(OW):
            win = x[:, :, i * SH : i * SH + KH, j * SW : j * SW + KW].reshape(x.shape[0], C, -1)
            y[:, :, i, j] = win.max(axis=2) if is_max else win.mean(axis=2)
    return y[:, :, 0, :] if one_d else y


def ref_forward(chain, X, p):
    views = chain.param_views(p)
    counts = {}
    x = X.astype(np.float64)
    for layer in chain.layers:
        name = layer.kind_name
        if isinstance(layer, (Conv, sc.Dense)):
            counts[name] = counts.get(name, 0) + 1
            Wt, b = views[f"{name}{counts[name]}"]
            Wt = Wt.astype(np.float64)
            b = None if b is None else b.astype(np.float64)
        if isinstance(layer, Conv1D):
            y = ref_conv(layer, x[:, :, None, :], Wt[:, :, None, :], b)
            x = y[:, :, 0, :]
        elif isinstance(layer, Conv):
            x = ref_conv(layer, x, Wt, b)
        elif isinstance(layer, MaxPool):
            x = ref_pool(layer, x, True)
        elif isinstance(layer, AvgPool):
            x = ref_pool(layer, x, False)
        elif isinstance(layer, Flatten):
            x = x.reshape(x.shape[0], -1)
        elif isinstance(layer, Dropout):
            pass
        elif isinstance(layer, sc.Activation):
            x = layer.f(x)
        else:
            x = layer.activation(x @ Wt.T + (b if b is not None else 0.0))
    return x


# --------------------------------------------------------------------------- chains under test

CHAINS = {
    "conv_pool_dense": lambda: sc.SimpleChain((2, 7, 6), Conv(3, 3, sc.tanh), MaxPool(2), Flatten(), sc.Dense(3)),
    "padded_strided": lambda: sc.SimpleChain(
        (1, 9, 8),
        Conv(5, (3, 2), sc.softplus, stride=(2, 1), padding=(1, 2)),
        Conv(2, 2, stride=2),
        Flatten(),
        sc.Dense(2, sc.tanh),
    ),
    "same_even": lambda: sc.SimpleChain(
        (3, 6, 5), Conv(4, (2, 4), sc.silu, padding="same"), AvgPool(2), Conv(6, 1, bias=False), Flatten(), sc.Dense(4)
    ),
    "overlap_pool": lambda: sc.SimpleChain(
        (2, 8, 8),
        Conv(7, 3, sc.relu, padding=1),
        MaxPool(3, stride=2),
        Flatten(),
        Dropout(0.3),
        sc.Dense(5, sc.gelu),
        sc.Dense(2),
    ),
    "conv1d": lambda: sc.SimpleChain(
        (3, 17), Conv1D(4, 3, sc.tanh, padding="same"), MaxPool(2), Conv1D(2, 2, stride=2), Flatten(), sc.Dense(3)
    ),
    "single_channel_wide": lambda: sc.SimpleChain(
        (1, 5, 13), Conv(9, (5, 3), sc.elu, stride=(1, 3)), Flatten(), sc.Dense(2)
    ),
}
IDS = sorted(CHAINS)


def _data(chain, n, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *chain.input_shape))


def _params(chain, seed):
    p = chain.init_params(seed=seed, dtype=np.float64)
    p += 0.1 * np.random.default_rng(seed + 1).standard_normal(p.shape)  # nonzero biases
    return p


@pytest.mark.parametrize("name", IDS)
@pytest.mark.parametrize("n", [1, 3, 40])
def test_forward_matches_numpy(name, n):
    chain = CHAINS[name]()
    p = _params(chain, 0)
    X = _data(chain, n, 1)
    y = chain(X, p)
    np.testing.assert_allclose(y, ref_forward(chain, X, p), rtol=1e-12, atol=1e-12)
    # float32 too
    y32 = chain(X.astype(np.float32), p.astype(np.float32))
    np.testing.assert_allclose(y32, y, rtol=2e-4, atol=2e-4)


def test_output_shapes_match_pytorch_rules():
    assert Conv(6, 5).output_shape((1, 28, 28)) == (6, 24, 24)
    assert Conv(4, 3, stride=2, padding=1).output_shape((3, 7, 9)) == (4, 4, 5)
    assert Conv(4, (2, 4), padding="same").output_shape((3, 6, 5)) == (4, 6, 5)
    assert MaxPool(2).output_shape((6, 24, 24)) == (6, 12, 12)
    assert MaxPool(3, stride=2).output_shape((7, 8, 8)) == (7, 3, 3)
    assert Conv1D(4, 3, stride=2).output_shape((3, 17)) == (4, 8)
    chain = sc.SimpleChain(
        (1, 28, 28),
        Conv(6, 5, sc.relu),
        MaxPool(2),
        Conv(16, 5, sc.relu),
        MaxPool(2),
        Flatten(),
        sc.Dense(120, sc.relu),
        sc.Dense(84, sc.relu),
        sc.Dense(10),
    )
    assert chain.output_dim == 10
    assert chain.num_params == 6 * 25 + 6 + 16 * 150 + 16 + 256 * 120 + 120 + 120 * 84 + 84 + 84 * 10 + 10


def _fd_grad(f, z, eps=1e-6):
    g = np.zeros_like(z)
    for i in range(z.size):
        old = z.flat[i]
        z.flat[i] = old + eps
        a = f()
        z.flat[i] = old - eps
        b = f()
        z.flat[i] = old
        g.flat[i] = (a - b) / (2 * eps)
    return g


@pytest.mark.parametrize("name", IDS)
@pytest.mark.parametrize("n", [1, 4])
def test_vjp_matches_finite_differences(name, n):
    chain = CHAINS[name]()
    p = _params(chain, 2)
    X = _data(chain, n, 3)
    V = np.random.default_rng(4).standard_normal((n, chain.output_dim))
    out = np.empty_like(p)
    gx = np.empty_like(X)
    chain.vjp_into(out, p, V, X, gx)

    def f():
        return float(np.sum(V * ref_forward(chain, X, p)))

    np.testing.assert_allclose(out, _fd_grad(f, p), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gx, _fd_grad(f, X), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", IDS)
def test_jvp_consistent_with_vjp(name):
    chain = CHAINS[name]()
    p = _params(chain, 5)
    n = 3
    X = _data(chain, n, 6)
    rng = np.random.default_rng(7)
    dX = rng.standard_normal(X.shape)
    dp = rng.standard_normal(p.shape)
    V = rng.standard_normal((n, chain.output_dim))
    jv = np.empty((n, chain.output_dim))
    chain.jvp_into(jv, p, X, dX, dp)
    gp, gx = np.empty_like(p), np.empty_like(X)
    chain.vjp_into(gp, p, V, X, gx)
    lhs = np.sum(V * jv)
    rhs = gp @ dp + np.sum(gx * dX)
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))
    # each tangent alone too
    jx = np.empty_like(jv)
    chain.jvp_into(jx, p, X, dX, None)
    assert abs(np.sum(V * jx) - np.sum(gx * dX)) <= 1e-10 * max(1.0, abs(lhs))
    jp = np.empty_like(jv)
    chain.jvp_into(jp, p, X, None, dp)
    assert abs(np.sum(V * jp) - gp @ dp) <= 1e-10 * max(1.0, abs(lhs))


@pytest.mark.parametrize("name", ["conv_pool_dense", "overlap_pool", "conv1d"])
def test_gradient_invariant_to_threads(name):
    chain = CHAINS[name]()
    p = _params(chain, 8)
    X = _data(chain, 300, 9)
    Y = np.random.default_rng(10).integers(0, chain.output_dim, 300)
    loss = sc.add_loss(chain, sc.LogitCrossEntropyLoss(Y))
    g1, g2 = np.empty_like(p), np.empty_like(p)
    v1 = sc.valgrad(g1, loss, X, p, num_threads=1)
    v2 = sc.valgrad(g2, loss, X, p, num_threads=2)
    assert abs(v1 - v2) <= 1e-12 * abs(v1)
    np.testing.assert_allclose(g1, g2, rtol=1e-10, atol=1e-13)


def test_maxpool_gradient_goes_to_first_maximum():
    chain = sc.SimpleChain((1, 2, 2), MaxPool(2), Flatten())
    p = chain.init_params(dtype=np.float64)
    X = np.array([[[[1.0, 3.0], [3.0, 2.0]]]])
    gx = np.empty_like(X)
    chain.vjp_into(np.empty_like(p), p, np.ones((1, 1)), X, gx)
    np.testing.assert_array_equal(gx, [[[[0.0, 1.0], [0.0, 0.0]]]])


def test_dropout_is_identity_outside_training():
    chain = sc.SimpleChain(6, Dropout(0.5), sc.Dense(2))
    p = chain.init_params(dtype=np.float64)
    X = np.random.default_rng(0).standard_normal((4, 6))
    np.testing.assert_allclose(chain(X, p), ref_forward(chain, X, p), rtol=1e-14)


# --------------------------------------------------------------------------- bad input


def test_image_smaller_than_kernel():
    with pytest.raises(ValueError, match="smaller than the kernel"):
        sc.SimpleChain((1, 4, 4), Conv(2, 5))
    with pytest.raises(ValueError, match="smaller than the pooling window"):
        sc.SimpleChain((1, 4, 4), Conv(2, 3), MaxPool(3))


def test_wrong_channel_count_and_flat_input():
    chain = sc.SimpleChain((1, 6, 6), Conv(2, 3), Flatten(), sc.Dense(2))
    p = chain.init_params()
    with pytest.raises(ValueError, match=r"samples of shape \(1, 6, 6\)"):
        chain(np.zeros((3, 3, 6, 6), np.float32), p)
    with pytest.raises(ValueError, match="Flatten"):
        sc.SimpleChain((1, 6, 6), Conv(2, 3), sc.Dense(2))
    with pytest.raises(ValueError, match="image input"):
        sc.SimpleChain(10, Conv(2, 3))
    # flat (n, C*H*W) data is refused for an image chain, with the expected shape named
    with pytest.raises(ValueError, match=r"\(n, 1, 6, 6\)"):
        chain(np.zeros((3, 36), np.float32), p)


def test_bad_layer_arguments():
    with pytest.raises(ValueError):
        Conv(0, 3)
    with pytest.raises(TypeError):
        Conv(2, 2.5)
    with pytest.raises(ValueError):
        Conv(2, 3, padding="full")
    with pytest.raises(ValueError):
        Conv(2, 3, stride=0)
    with pytest.raises(ValueError):
        Dropout(1.0)
    with pytest.raises(ValueError):
        MaxPool(0)


def test_labels_out_of_range_on_conv_chain():
    chain = sc.SimpleChain((1, 6, 6), Conv(2, 3), Flatten(), sc.Dense(3))
    p = chain.init_params()
    X = np.zeros((4, 1, 6, 6), np.float32)
    with pytest.raises(ValueError, match="label 3 is out of range"):
        sc.add_loss(chain, sc.LogitCrossEntropyLoss(np.array([0, 1, 2, 3])))
    loss = sc.add_loss(chain, sc.LogitCrossEntropyLoss(np.array([0, 1, 2, 2])))
    assert np.isfinite(loss(X, p))


def test_dropout_in_training_is_seeded_and_thread_invariant():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 8))
    Y = rng.standard_normal((64, 2))
    chain = sc.SimpleChain(8, sc.Dense(16, sc.tanh), Dropout(0.5), sc.Dense(2))
    loss = sc.add_loss(chain, sc.SquaredLoss(Y))

    def run(seed, nt, drop=True):
        c = chain if drop else sc.SimpleChain(8, sc.Dense(16, sc.tanh), sc.Dense(2))
        lo = sc.add_loss(c, sc.SquaredLoss(Y))
        p = c.init_params(seed=1, dtype=np.float64)
        h = sc.train_batched(lo, X, p, sc.SGD(0.05), epochs=3, batch_size=16, seed=seed, num_threads=nt)
        return p, h

    p1, h1 = run(0, 1)
    p2, h2 = run(0, 2)
    p3, _ = run(1, 1)
    p4, _ = run(0, 1, drop=False)
    np.testing.assert_allclose(p1, p2, rtol=1e-12, atol=1e-14)  # masks do not depend on threads
    assert not np.allclose(p1, p3)  # another seed, other masks
    assert not np.allclose(p1, p4)  # dropout changed the training
    # outside training the chain is deterministic
    assert loss(X, p1) == loss(X, p1)


def test_dropout_mask_rate_and_scale():
    from smallchains import _engine as E

    w = np.zeros(200 * 64)
    E.dropout_mask(w, 0, 200, 64, 12345, 0, 7, int(0.3 * 2**32))
    kept = w != 0
    assert abs(kept.mean() - 0.7) < 0.02
    np.testing.assert_allclose(w[kept], 1 / 0.7)


def test_lenet_learns_fashion_mnist_in_one_pass():
    """Real data: one pass over 10,000 training images gives > 0.7 test accuracy."""
    try:
        Xtr, ytr, Xte, yte = sc.datasets.fashion_mnist()
    except FileNotFoundError:
        pytest.skip("Fashion-MNIST files not installed (apt-get install dataset-fashion-mnist)")
    chain = sc.SimpleChain(
        (1, 28, 28),
        Conv(6, 5, sc.relu),
        MaxPool(2),
        Conv(16, 5, sc.relu),
        MaxPool(2),
        Flatten(),
        sc.Dense(120, sc.relu),
        sc.Dense(84, sc.relu),
        sc.Dense(10),
    )
    p = chain.init_params(seed=0)
    loss = sc.add_loss(chain, sc.LogitCrossEntropyLoss(ytr[:10_000]))
    hist = sc.train_batched(loss, Xtr[:10_000], p, sc.Adam(1e-3), epochs=1, batch_size=32, seed=0)
    acc, test_loss = sc.accuracy_and_loss(loss, Xte[:2000], yte[:2000], p)
    assert acc > 0.7, (acc, test_loss, hist)
    proba = sc.predict_proba(chain, Xte[:2000], p)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    pred = sc.predict(chain, Xte[:2000], p)
    assert pred.dtype == np.int64 and np.array_equal(pred, proba.argmax(axis=1))
    assert abs(np.mean(pred == yte[:2000]) - acc) < 1e-12
