"""Training loops and optimizers: train_unbatched, train_batched, minimize; optimizer updates
against NumPy re-implementations of PyTorch's definitions."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import random_params, ref_valgrad

import smallchains as sc

# --------------------------------------------------------------------------- problems


def _regression(n=64, dtype=np.float64, seed=0):
    chain = sc.SimpleChain(3, sc.Dense(16, sc.tanh), sc.Dense(8, sc.gelu), sc.Dense(2))
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, (n, 3)).astype(dtype)
    Y = np.stack([np.sin(2 * X[:, 0]) * X[:, 1], X[:, 2] ** 2 - X[:, 0]], axis=1).astype(dtype)
    p = chain.init_params(seed=seed, dtype=dtype)
    return chain, p, X, Y, sc.add_loss(chain, sc.SquaredLoss(Y))


# --------------------------------------------------------------------------- NumPy optimizers (PyTorch's rules)


def np_adam(p, grads, lr, betas, eps, wd, decoupled):
    p = p.astype(np.float64).copy()
    b1, b2 = betas
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        if decoupled:
            p = p * (1 - lr * wd)
        elif wd:
            g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        bc1 = 1 - b1**t
        bc2 = 1 - b2**t
        denom = np.sqrt(v) / np.sqrt(bc2) + eps
        p = p - (lr / bc1) * m / denom
    return p


def np_sgd(p, grads, lr, momentum, nesterov, wd):
    p = p.astype(np.float64).copy()
    buf = None
    for g in grads:
        d = g.astype(np.float64) + wd * p
        if momentum:
            buf = d.copy() if buf is None else momentum * buf + d
            d = d + momentum * buf if nesterov else buf
        p = p - lr * d
    return p


def np_rmsprop(p, grads, lr, alpha, eps, momentum, wd):
    p = p.astype(np.float64).copy()
    sq = np.zeros_like(p)
    buf = np.zeros_like(p)
    for g in grads:
        g = g.astype(np.float64) + wd * p
        sq = alpha * sq + (1 - alpha) * g * g
        avg = np.sqrt(sq) + eps
        if momentum:
            buf = momentum * buf + g / avg
            p = p - lr * buf
        else:
            p = p - lr * g / avg
    return p


OPT_CASES = {
    "adam": (lambda: sc.Adam(1e-2), lambda p, gs: np_adam(p, gs, 1e-2, (0.9, 0.999), 1e-8, 0.0, False)),
    "adam_wd": (
        lambda: sc.Adam(3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
        lambda p, gs: np_adam(p, gs, 3e-3, (0.8, 0.99), 1e-6, 0.1, False),
    ),
    "adamw": (
        lambda: sc.AdamW(1e-2, weight_decay=0.05),
        lambda p, gs: np_adam(p, gs, 1e-2, (0.9, 0.999), 1e-8, 0.05, True),
    ),
    "sgd": (lambda: sc.SGD(0.1), lambda p, gs: np_sgd(p, gs, 0.1, 0.0, False, 0.0)),
    "sgd_wd": (lambda: sc.SGD(0.1, weight_decay=0.01), lambda p, gs: np_sgd(p, gs, 0.1, 0.0, False, 0.01)),
    "sgd_momentum": (lambda: sc.SGD(0.05, momentum=0.9), lambda p, gs: np_sgd(p, gs, 0.05, 0.9, False, 0.0)),
    "sgd_nesterov": (
        lambda: sc.SGD(0.05, momentum=0.8, nesterov=True, weight_decay=0.02),
        lambda p, gs: np_sgd(p, gs, 0.05, 0.8, True, 0.02),
    ),
    "rmsprop": (lambda: sc.RMSProp(1e-2), lambda p, gs: np_rmsprop(p, gs, 1e-2, 0.99, 1e-8, 0.0, 0.0)),
    "rmsprop_momentum_wd": (
        lambda: sc.RMSProp(5e-3, alpha=0.9, eps=1e-6, momentum=0.7, weight_decay=0.03),
        lambda p, gs: np_rmsprop(p, gs, 5e-3, 0.9, 1e-6, 0.7, 0.03),
    ),
}
OPT_IDS = list(OPT_CASES)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", OPT_IDS)
def test_optimizer_update_matches_pytorch_rule(case, dtype):
    make, ref = OPT_CASES[case]
    rng = np.random.default_rng(7)
    p0 = rng.standard_normal(23).astype(dtype)
    grads = [rng.standard_normal(23).astype(dtype) * (0.1 + k) for k in range(6)]
    opt = make()
    p = p0.copy()
    for k, g in enumerate(grads):
        gc = g.copy()
        opt.update(p, g)
        np.testing.assert_array_equal(g, gc)  # the gradient is not modified
        assert opt.steps_taken == k + 1
        want = ref(p0, grads[: k + 1])
        if dtype == np.float64:
            np.testing.assert_allclose(p, want, rtol=1e-12, atol=1e-14)
        else:
            np.testing.assert_allclose(p, want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(p, p0)  # the optimizer moved


@pytest.mark.parametrize("case", OPT_IDS)
def test_optimizer_reset(case):
    make, ref = OPT_CASES[case]
    rng = np.random.default_rng(1)
    p0 = rng.standard_normal(5)
    grads = [rng.standard_normal(5) for _ in range(3)]
    opt = make()
    p = p0.copy()
    for g in grads:
        opt.update(p, g)
    opt.reset()
    assert opt.steps_taken == 0
    p = p0.copy()
    for g in grads:
        opt.update(p, g)
    np.testing.assert_allclose(p, ref(p0, grads), rtol=1e-12, atol=1e-14)


def test_optimizer_state_tied_to_parameter_vector():
    opt = sc.Adam()
    opt.update(np.zeros(4), np.ones(4))
    with pytest.raises(ValueError, match="reset"):
        opt.update(np.zeros(5), np.ones(5))
    with pytest.raises(ValueError, match="reset"):
        opt.update(np.zeros(4, np.float32), np.ones(4, np.float32))


@pytest.mark.parametrize("case", OPT_IDS)
def test_train_unbatched_equals_python_loop_of_valgrad_and_update(case):
    """The compiled loop = valgrad (with penalty) + opt.update per epoch, and hist = loss before each step."""
    make, _ = OPT_CASES[case]
    chain, p0, X, Y, _ = _regression(n=40)
    loss = sc.add_loss(chain, sc.SquaredLoss(Y), sc.L2Penalty(1e-3))
    p = p0.copy()
    hist = sc.train_unbatched(loss, X, p, make(), epochs=7)
    q = p0.copy()
    opt = make()
    g = np.empty_like(q)
    want_hist = []
    for _ in range(7):
        want_hist.append(sc.valgrad(g, loss, X, q))
        opt.update(q, g)
    np.testing.assert_allclose(hist, want_hist, rtol=1e-13)
    np.testing.assert_allclose(p, q, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("case", OPT_IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_optimizer_state_survives_across_calls(case, dtype):
    make, _ = OPT_CASES[case]
    chain, p0, X, Y, loss = _regression(n=50, dtype=dtype)
    p1 = p0.copy()
    opt1 = make()
    h1 = np.concatenate([sc.train_unbatched(loss, X, p1, opt1, 5), sc.train_unbatched(loss, X, p1, opt1, 5)])
    p2 = p0.copy()
    opt2 = make()
    h2 = sc.train_unbatched(loss, X, p2, opt2, 10)
    assert opt1.steps_taken == opt2.steps_taken == 10
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(h1, h2)
    # and a fresh optimizer for the second half gives something else (the state matters)
    p3 = p0.copy()
    sc.train_unbatched(loss, X, p3, make(), 5)
    sc.train_unbatched(loss, X, p3, make(), 5)
    if case not in ("sgd", "sgd_wd"):  # plain SGD has no state
        assert not np.array_equal(p3, p2)
    else:
        np.testing.assert_array_equal(p3, p2)


# --------------------------------------------------------------------------- train_unbatched


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_train_unbatched_reduces_loss(dtype):
    chain, p, X, Y, loss = _regression(n=64, dtype=dtype)
    p0 = p.copy()
    l0 = loss(X, p0)
    hist = sc.train_unbatched(loss, X, p, sc.Adam(1e-2), epochs=300)
    assert isinstance(hist, np.ndarray) and hist.dtype == np.float64 and hist.shape == (300,)
    assert hist[0] == pytest.approx(l0, rel=1e-6 if dtype == np.float32 else 1e-13)
    assert np.all(np.isfinite(hist))
    assert p.dtype == dtype and not np.array_equal(p, p0)
    final = loss(X, p)
    assert final < 0.2 * l0
    assert hist[-1] < 0.25 * hist[0]
    assert np.mean(np.diff(hist) < 0) > 0.8  # mostly monotone
    assert final <= hist[-1] * 1.01  # history = loss before each step


def test_train_zero_epochs():
    chain, p, X, Y, loss = _regression()
    p0 = p.copy()
    hist = sc.train_unbatched(loss, X, p, sc.Adam(), epochs=0)
    assert hist.shape == (0,)
    np.testing.assert_array_equal(p, p0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_valgrad_threads_agree_on_large_n(dtype):
    chain, p, X, Y, loss = _regression(n=1500, dtype=dtype)
    p = random_params(chain, dtype, seed=4)
    g1 = np.empty_like(p)
    g2 = np.empty_like(p)
    v1 = sc.valgrad(g1, loss, X, p, num_threads=1)
    v2 = sc.valgrad(g2, loss, X, p, num_threads=2)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    assert v1 == pytest.approx(v2, rel=tol)
    np.testing.assert_allclose(g1, g2, rtol=tol * 100, atol=tol * np.abs(g1).max())
    # and both agree with the NumPy reference
    rv, rg = ref_valgrad(chain, p, X, "squared", Y)
    assert v1 == pytest.approx(rv, rel=tol * 10)
    np.testing.assert_allclose(g2, rg, rtol=tol * 100, atol=tol * 10 * np.abs(rg).max())
    # repeated threaded calls are deterministic (fixed-order reduction)
    g3 = np.empty_like(p)
    assert sc.valgrad(g3, loss, X, p, num_threads=2) == v2
    np.testing.assert_array_equal(g3, g2)


def test_training_threads_agree():
    chain, p0, X, Y, loss = _regression(n=1200)
    p1 = p0.copy()
    p2 = p0.copy()
    h1 = sc.train_unbatched(loss, X, p1, sc.Adam(1e-2), 8, num_threads=1)
    h2 = sc.train_unbatched(loss, X, p2, sc.Adam(1e-2), 8, num_threads=2)
    assert not np.array_equal(p1, p0)
    np.testing.assert_allclose(p1, p2, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(h1, h2, rtol=1e-11)
    p3 = p0.copy()
    sc.train_unbatched(loss, X, p3, sc.Adam(1e-2), 8, num_threads=2)
    np.testing.assert_array_equal(p3, p2)


def test_callback_epochs_and_arguments():
    chain, p, X, Y, loss = _regression()
    p0 = p.copy()
    calls = []
    hist = sc.train_unbatched(
        loss, X, p, sc.Adam(1e-2), 10, callback=lambda e, l, q: calls.append((e, l, q is p, q.copy())), callback_every=3
    )
    assert [c[0] for c in calls] == [3, 6, 9, 10]
    for e, l, same, _q in calls:
        assert same
        assert l == hist[e - 1]
    # the parameters seen by the callback after 3 epochs are those of a 3-epoch run
    q3 = p0.copy()
    sc.train_unbatched(loss, X, q3, sc.Adam(1e-2), 3)
    np.testing.assert_array_equal(calls[0][3], q3)
    # chunking the run for the callback does not change the result
    q10 = p0.copy()
    np.testing.assert_array_equal(sc.train_unbatched(loss, X, q10, sc.Adam(1e-2), 10), hist)
    np.testing.assert_array_equal(q10, p)


def test_callback_default_every_tenth():
    chain, p, X, Y, loss = _regression()
    seen = []
    sc.train_unbatched(loss, X, p, sc.SGD(1e-2), 20, callback=lambda e, l, q: seen.append(e))
    assert seen == list(range(2, 21, 2))
    seen.clear()
    sc.train_batched(loss, X, p, sc.SGD(1e-2), 5, batch_size=16, callback=lambda e, l, q: seen.append(e))
    assert seen == [1, 2, 3, 4, 5]


# --------------------------------------------------------------------------- train_batched


def test_train_batched_seeds():
    chain, p0, X, Y, loss = _regression(n=100)
    runs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        p = p0.copy()
        h = sc.train_batched(loss, X, p, sc.Adam(1e-2), 6, batch_size=16, seed=seed)
        runs[name] = (p, h)
    np.testing.assert_array_equal(runs["a"][0], runs["b"][0])
    np.testing.assert_array_equal(runs["a"][1], runs["b"][1])
    assert not np.array_equal(runs["a"][0], runs["c"][0])
    assert not np.array_equal(runs["a"][1], runs["c"][1])


def test_train_batched_callback_chunks_do_not_change_result():
    """The shuffling stream continues across the chunks a callback splits the run into."""
    chain, p0, X, Y, loss = _regression(n=50)
    p1 = p0.copy()
    h1 = sc.train_batched(loss, X, p1, sc.Adam(1e-2), 6, batch_size=8, seed=3)
    p2 = p0.copy()
    h2 = sc.train_batched(
        loss, X, p2, sc.Adam(1e-2), 6, batch_size=8, seed=3, callback=lambda *a: None, callback_every=1
    )
    np.testing.assert_array_equal(h1, h2)
    np.testing.assert_array_equal(p1, p2)


def test_train_batched_steps_and_last_partial_batch():
    """n=10, batch_size=4: minibatches of 4, 4, 2 (3 steps per epoch).

    Sample s is the unit vector e_s with target 1 for a linear model w (w=0 at the start), so
    the gradient of a minibatch b touches only its own samples' coordinates: one SGD step gives
    w_s = 2*lr/|b| for every sample s of b, whatever the shuffle.  So after one epoch every
    coordinate is non-zero (every sample used) and exactly two equal 2*lr/2 (the partial batch,
    averaged over its own size).
    """
    chain = sc.SimpleChain(10, sc.Dense(1, bias=False))
    X = np.eye(10)
    loss = sc.add_loss(chain, sc.SquaredLoss(np.ones((10, 1))))
    p = np.zeros(10)
    opt = sc.SGD(0.01)
    hist = sc.train_batched(loss, X, p, opt, 1, batch_size=4, seed=0)
    assert opt.steps_taken == 3
    assert hist[0] == pytest.approx(1.0, rel=1e-14)  # every minibatch loss is 1 at w = 0
    np.testing.assert_allclose(np.sort(p), [0.005] * 8 + [0.01] * 2, rtol=1e-12)
    sc.train_batched(loss, X, p, opt, 4, batch_size=4, seed=0)
    assert opt.steps_taken == 15
    # batch larger than n: one full batch per epoch
    opt2 = sc.SGD(0.01)
    sc.train_batched(loss, X, np.zeros(10), opt2, 3, batch_size=64)
    assert opt2.steps_taken == 3


def test_train_batched_full_batch_equals_unbatched():
    chain, p0, X, Y, loss = _regression(n=40)
    p1 = p0.copy()
    h1 = sc.train_batched(loss, X, p1, sc.SGD(0.05, momentum=0.9), 5, batch_size=40, seed=0)
    p2 = p0.copy()
    h2 = sc.train_unbatched(loss, X, p2, sc.SGD(0.05, momentum=0.9), 5)
    np.testing.assert_allclose(p1, p2, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(h1, h2, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_train_batched_reduces_loss(dtype):
    chain, p, X, Y, loss = _regression(n=200, dtype=dtype)
    l0 = loss(X, p)
    hist = sc.train_batched(loss, X, p, sc.Adam(5e-3), 40, batch_size=32, seed=1)
    assert hist.shape == (40,) and np.all(np.isfinite(hist))
    assert loss(X, p) < 0.2 * l0
    assert hist[-1] < 0.3 * hist[0]


def test_train_batched_threads():
    chain, p0, X, Y, loss = _regression(n=600)
    p1 = p0.copy()
    p2 = p0.copy()
    sc.train_batched(loss, X, p1, sc.Adam(1e-2), 3, batch_size=300, seed=0, num_threads=1)
    sc.train_batched(loss, X, p2, sc.Adam(1e-2), 3, batch_size=300, seed=0, num_threads=2)
    np.testing.assert_allclose(p1, p2, rtol=1e-9, atol=1e-11)


def test_train_classification_with_penalty():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 2))
    y = (X[:, 0] * X[:, 1] > 0).astype(np.int16)
    chain = sc.SimpleChain(2, sc.Dense(16, sc.relu), sc.Dense(2))
    p = chain.init_params(seed=0, dtype=np.float64)
    loss = sc.add_loss(chain, sc.LogitCrossEntropyLoss(y), sc.L1Penalty(1e-4))
    acc0, l0 = sc.accuracy_and_loss(loss, X, p)
    sc.train_unbatched(loss, X, p, sc.Adam(2e-2), 300)
    acc1, l1 = sc.accuracy_and_loss(loss, X, p)
    assert l1 < 0.5 * l0
    assert acc1 > 0.9 and acc1 > acc0


# --------------------------------------------------------------------------- divergence


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("batched", [False, True])
def test_training_diverged_error(dtype, batched):
    chain, p, X, Y, loss = _regression(n=50, dtype=dtype)
    p0 = p.copy()
    train = (
        (lambda q, opt, ep: sc.train_batched(loss, X, q, opt, ep, batch_size=50, seed=0))
        if batched
        else (lambda q, opt, ep: sc.train_unbatched(loss, X, q, opt, ep))
    )
    with pytest.raises(sc.TrainingDivergedError) as info:
        train(p, sc.SGD(1e6), 200)
    err = info.value
    assert isinstance(err, FloatingPointError)
    e = err.epoch
    assert 0 < e < 200
    assert f"epoch {e}" in str(err)
    assert np.all(np.isfinite(p))
    assert len(err.history) == e
    # the loss became non-finite at epoch e, so the update that led there is undone:
    # p holds the parameters of an (e-1)-epoch run, the last with a finite loss
    assert "loss is not finite" in str(err)
    q = p0.copy()
    h = train(q, sc.SGD(1e6), e - 1)
    np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(err.history[: e - 1], h)
    assert np.isfinite(loss(X, p))


@pytest.mark.parametrize("batched", [False, True])
def test_training_stops_at_first_infinite_loss(batched):
    chain, p, X, Y, loss = _regression(n=50, dtype=np.float64)
    with pytest.raises(sc.TrainingDivergedError) as info:
        if batched:
            sc.train_batched(loss, X, p, sc.SGD(1e6), 200, batch_size=50, seed=0)
        else:
            sc.train_unbatched(loss, X, p, sc.SGD(1e6), 200)
    assert np.all(np.isfinite(info.value.history))  # every recorded loss is finite
    assert np.isfinite(loss(X, p))  # p: the last parameters with a finite loss


def test_training_diverged_leaves_p_finite_when_the_update_overflows():
    chain, p, X, Y, loss = _regression(n=50, dtype=np.float32)
    with pytest.raises(sc.TrainingDivergedError):
        sc.train_unbatched(loss, X, p, sc.SGD(1e39), 20)
    assert np.all(np.isfinite(p))


# --------------------------------------------------------------------------- minimize


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_minimize_lbfgs(dtype):
    chain, p, X, Y, loss = _regression(n=80, dtype=dtype)
    p_id = id(p)
    l0 = loss(X, p)
    res = sc.minimize(loss, X, p, maxiter=200)
    assert id(p) == p_id and p.dtype == dtype
    l1 = loss(X, p)
    assert l1 < 0.1 * l0
    assert res.fun == pytest.approx(l1, rel=1e-4 if dtype == np.float32 else 1e-10)
    np.testing.assert_allclose(p, res.x.astype(dtype), rtol=1e-6)
    assert res.nit > 1


# --------------------------------------------------------------------------- validation set and history


def _classification(n=120, seed=0):
    chain = sc.SimpleChain(4, sc.Dense(12, sc.relu), sc.Dense(3))
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)
    return chain, chain.init_params(seed=seed), X, y


@pytest.mark.parametrize("batched", [False, True])
def test_validation_curves_equal_evaluation_after_each_epoch(batched):
    chain, p0, X, y = _classification()
    Xv, yv = X[:40] + 0.1, y[:40]
    loss = sc.add_loss(chain, sc.LogitCrossEntropyLoss(y))
    train = (
        (lambda lo, p, e, **kw: sc.train_batched(lo, X, p, sc.Adam(1e-2), e, batch_size=32, seed=3, **kw))
        if batched
        else (lambda lo, p, e, **kw: sc.train_unbatched(lo, X, p, sc.Adam(1e-2), e, **kw))
    )
    p = p0.copy()
    h = train(loss, p, 3, validation=(Xv, yv))
    assert isinstance(h, sc.History) and h.shape == (3,)
    assert h.val_loss.shape == (3,) and h.val_accuracy.shape == (3,)
    # the same run without validation gives the same parameters and training losses
    q = p0.copy()
    h2 = train(loss, q, 3)
    np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(np.asarray(h), np.asarray(h2))
    assert h2.val_loss is None and h2.val_accuracy is None
    # each epoch's validation figures are the evaluation of that epoch's parameters
    for e in range(3):
        r = p0.copy()
        train(loss, r, e + 1)
        acc, vl = sc.accuracy_and_loss(loss, Xv, yv, r)
        assert h.val_accuracy[e] == pytest.approx(acc) and h.val_loss[e] == pytest.approx(vl, rel=1e-6)
    # a slice is plain data, not a mislabelled history
    assert h[:2].val_loss is None


def test_validation_regression_accuracy_is_nan():
    chain, p, X, Y, loss = _regression(n=40)
    h = sc.train_batched(loss, X, p, sc.Adam(1e-2), 2, batch_size=16, validation=(X[:10], Y[:10]))
    assert np.all(np.isnan(h.val_accuracy)) and np.all(np.isfinite(h.val_loss))
    assert h.val_loss[1] == pytest.approx(sc.accuracy_and_loss(loss, X[:10], Y[:10], p)[1], rel=1e-9)


def test_validation_bad_input():
    chain, p, X, y = _classification()
    loss = sc.add_loss(chain, sc.LogitCrossEntropyLoss(y))
    with pytest.raises(TypeError, match="validation"):
        sc.train_batched(loss, X, p, sc.Adam(), 1, validation=X[:10])
    with pytest.raises(ValueError, match="validation"):
        sc.train_batched(loss, X, p, sc.Adam(), 1, validation=(X[:10], y[:9]))
    with pytest.raises(ValueError, match="validation"):
        sc.train_batched(loss, X, p, sc.Adam(), 1, validation=(X[:10, :3], y[:10]))
    with pytest.raises(ValueError, match="validation"):
        sc.train_batched(loss, X, p, sc.Adam(), 1, validation=(X[:10], np.full(10, 7)))


def test_progress_bar_without_tqdm(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import fails as if tqdm were missing
    chain, p, X, y = _classification()
    loss = sc.add_loss(chain, sc.LogitCrossEntropyLoss(y))
    sc.train_batched(loss, X, p, sc.Adam(1e-2), 4, progress=True, validation=(X[:20], y[:20]))
    err = capsys.readouterr().err
    assert "4/4 epochs" in err and "val_acc=" in err and err.endswith("\n")
