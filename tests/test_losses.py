"""Losses and penalties: values against NumPy, gradients (sc.valgrad) against references
and central finite differences, accuracy_and_loss."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    central_diff_grad,
    make_chain,
    random_data,
    random_params,
    ref_forward,
    ref_loss,
    ref_penalty,
    ref_valgrad,
    weight_mask,
)

import smallchains as sc
from smallchains._program import BLOCK

DTYPES = [np.float32, np.float64]
VTOL = {np.float32: 2e-5, np.float64: 1e-12}
FD = dict(rtol=1e-6, atol=1e-7)
LOSS_KINDS = ["squared", "absolute", "huber", "logitce"]


def _problem(kind, n=37, dtype=np.float64, seed=0, name="deep_mixed_4_8_7_3", delta=0.7):
    """(chain, p, X, sc loss object, targets) with residuals on both sides of Huber's delta."""
    chain = make_chain(name)
    p = random_params(chain, dtype, seed=seed)
    X = random_data(chain, n, dtype, seed=seed + 1)
    rng = np.random.default_rng(seed + 2)
    m = chain.output_dim
    if kind == "logitce":
        T = rng.integers(0, m, size=n)
        return chain, p, X, sc.LogitCrossEntropyLoss(T), T
    T = (1.5 * rng.standard_normal((n, m))).astype(dtype)
    if kind == "squared":
        L = sc.SquaredLoss(T)
    elif kind == "absolute":
        L = sc.AbsoluteLoss(T)
    else:
        L = sc.HuberLoss(T, delta=delta)
    return chain, p, X, L, T


def _penalty(spec):
    if spec is None:
        return None
    kind, lam = spec
    return sc.L1Penalty(lam) if kind == "l1" else sc.L2Penalty(lam)


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", LOSS_KINDS)
@pytest.mark.parametrize("n", [1, 37, 300, 2 * BLOCK + 44])
def test_loss_value_matches_numpy(kind, dtype, n):
    chain, p, X, L, T = _problem(kind, n=n, dtype=dtype)
    loss = sc.add_loss(chain, L)
    Yhat = ref_forward(chain, p, X)
    want, _ = ref_loss(kind, Yhat, T, delta=0.7)
    got = loss(X, p)
    assert isinstance(got, float)
    assert got == pytest.approx(want, rel=VTOL[dtype], abs=VTOL[dtype])
    g = np.empty_like(p)
    for nt in (1, 2):
        assert sc.valgrad(g, loss, X, p, num_threads=nt) == pytest.approx(want, rel=VTOL[dtype], abs=VTOL[dtype])


def test_loss_scaling_is_mean_over_samples_of_sum_over_outputs():
    """Explicit numbers: the documented scaling, independent of the reference helpers."""
    chain = sc.SimpleChain(1, sc.Dense(2, bias=True))
    p = np.array([0.0, 0.0, 1.0, -2.0])  # W = 0, b = (1, -2): outputs are (1, -2) for every sample
    X = np.zeros((4, 1))
    Y = np.zeros((4, 2))
    assert sc.add_loss(chain, sc.SquaredLoss(Y))(X, p) == pytest.approx(1 + 4)
    assert sc.add_loss(chain, sc.AbsoluteLoss(Y))(X, p) == pytest.approx(1 + 2)
    # Huber delta=1.5: |1| inside (0.5), |-2| outside (1.5*(2-0.75) = 1.875)
    assert sc.add_loss(chain, sc.HuberLoss(Y, delta=1.5))(X, p) == pytest.approx(0.5 + 1.875)
    lab = np.array([0, 1, 0, 1])
    lse = np.log(np.exp(1) + np.exp(-2))
    want = np.mean([lse - 1, lse + 2, lse - 1, lse + 2])
    assert sc.add_loss(chain, sc.LogitCrossEntropyLoss(lab))(X, p) == pytest.approx(want, rel=1e-14)


@pytest.mark.parametrize("delta", [0.1, 1.0, 3.0])
def test_huber_delta(delta):
    chain, p, X, _, T = _problem("huber", n=50)
    loss = sc.add_loss(chain, sc.HuberLoss(T, delta=delta))
    Yhat = ref_forward(chain, p, X)
    R = np.abs(Yhat - T)
    assert (R < delta).any() or delta == 0.1  # both branches exercised where possible
    assert (R > delta).any()
    want, gY = ref_loss("huber", Yhat, T, delta=delta)
    assert loss(X, p) == pytest.approx(want, rel=1e-12)
    g = np.empty_like(p)
    sc.valgrad(g, loss, X, p)
    _, gref = ref_valgrad(chain, p, X, "huber", T, delta=delta)
    np.testing.assert_allclose(g, gref, rtol=1e-10, atol=1e-12)


def test_logitce_large_logits_are_stable():
    chain = sc.SimpleChain(2, sc.Dense(3))
    p = np.array([300.0, 0, 0, 300.0, -300.0, -300.0, 0, 0, 0])
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    lab = np.array([0, 2, 1])
    loss = sc.add_loss(chain, sc.LogitCrossEntropyLoss(lab))
    want, gY = ref_loss("logitce", chain(X, p), lab)
    g = np.empty_like(p)
    val = sc.valgrad(g, loss, X, p)
    assert np.isfinite(val) and np.all(np.isfinite(g))
    assert val == pytest.approx(want, rel=1e-12)


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("penalty", [None, ("l1", 0.03), ("l2", 0.05)], ids=["nopen", "l1", "l2"])
@pytest.mark.parametrize("kind", LOSS_KINDS)
@pytest.mark.parametrize("name", ["deep_mixed_4_8_7_3", "act_layer_middle", "nobias_rbf_4k"])
def test_valgrad_vs_reference_and_fd(kind, penalty, name):
    chain, p, X, L, T = _problem(kind, n=23, name=name)
    loss = sc.add_loss(chain, L, _penalty(penalty))
    g = np.full_like(p, np.nan)
    val = sc.valgrad(g, loss, X, p)
    rval, rg = ref_valgrad(chain, p, X, kind, T, delta=0.7, penalty=penalty)
    assert val == pytest.approx(rval, rel=1e-12)
    np.testing.assert_allclose(g, rg, rtol=1e-10, atol=1e-12)
    fd = central_diff_grad(lambda q: loss(X, q), p)
    np.testing.assert_allclose(g, fd, **FD)


@pytest.mark.parametrize("kind", LOSS_KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_valgrad_threads_and_blocks(kind, dtype):
    """n spans three blocks; the threaded path must give the reference gradient."""
    chain, p, X, L, T = _problem(kind, n=2 * BLOCK + 44, dtype=dtype)
    loss = sc.add_loss(chain, L, sc.L2Penalty(0.01))
    _, rg = ref_valgrad(chain, p, X, kind, T, delta=0.7, penalty=("l2", 0.01))
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    for nt in (1, 2):
        g = np.full_like(p, np.nan)
        sc.valgrad(g, loss, X, p, num_threads=nt)
        np.testing.assert_allclose(g, rg, **tol)


@pytest.mark.parametrize("kind", ["l1", "l2"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_penalty_applies_to_weights_only(kind, dtype):
    chain, p, X, L, T = _problem("squared", n=11, dtype=dtype)
    lam = 0.25
    plain = sc.add_loss(chain, L)
    pen = sc.add_loss(chain, L, sc.L1Penalty(lam) if kind == "l1" else sc.L2Penalty(lam))
    mask = weight_mask(chain)
    assert (~mask).any()  # the chain has biases
    W = p[mask].astype(np.float64)
    expected = lam * (np.abs(W).sum() if kind == "l1" else (W**2).sum())
    tol = VTOL[dtype] * 10
    assert pen(X, p) - plain(X, p) == pytest.approx(expected, rel=tol, abs=tol)
    g0 = np.empty_like(p)
    g1 = np.empty_like(p)
    sc.valgrad(g0, plain, X, p)
    sc.valgrad(g1, pen, X, p)
    np.testing.assert_array_equal(g1[~mask], g0[~mask])  # biases: no penalty gradient
    _, pg = ref_penalty(chain, p, kind, lam)
    np.testing.assert_allclose(
        (g1 - g0)[mask],
        pg[mask],
        rtol=1e-5 if dtype == np.float32 else 1e-12,
        atol=1e-6 if dtype == np.float32 else 1e-14,
    )
    # changing the biases does not change the penalty
    q = p.copy()
    q[~mask] += 3.0
    assert pen(X, q) - plain(X, q) == pytest.approx(expected, rel=tol, abs=tol)


def test_valgrad_overwrites_g_and_with_penalty():
    chain, p, X, L, T = _problem("squared", n=300)
    loss = sc.add_loss(chain, L).with_penalty(sc.L1Penalty(0.1))
    for nt in (1, 2):
        g1 = np.full_like(p, 1e30)
        g2 = np.full_like(p, -3.0)
        sc.valgrad(g1, loss, X, p, num_threads=nt)
        sc.valgrad(g2, loss, X, p, num_threads=nt)
        np.testing.assert_array_equal(g1, g2)
        _, rg = ref_valgrad(chain, p, X, "squared", T, penalty=("l1", 0.1))
        np.testing.assert_allclose(g1, rg, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_loss_call_equals_valgrad_value(kind, dtype):
    chain, p, X, L, T = _problem(kind, n=150, dtype=dtype)
    loss = sc.add_loss(chain, L, sc.L2Penalty(0.02))
    g = np.empty_like(p)
    v = sc.valgrad(g, loss, X, p, num_threads=1)
    # the same number up to rounding (the value-only pass is compiled separately)
    assert loss(X, p) == pytest.approx(v, rel=1e-6 if dtype == np.float32 else 1e-13)
    assert sc.valgrad(g, loss, X, p, num_threads=2) == pytest.approx(v, rel=1e-6 if dtype == np.float32 else 1e-13)


# --------------------------------------------------------------------------- labels


@pytest.mark.parametrize("ldtype", [np.int8, np.int32, np.uint16, np.int64, np.uint8, np.int16])
def test_label_dtypes(ldtype):
    chain, p, X, _, T = _problem("logitce", n=40)
    base = sc.add_loss(chain, sc.LogitCrossEntropyLoss(T.astype(np.int64)))
    loss = sc.add_loss(chain, sc.LogitCrossEntropyLoss(T.astype(ldtype)))
    g0 = np.empty_like(p)
    g1 = np.empty_like(p)
    v0 = sc.valgrad(g0, base, X, p)
    v1 = sc.valgrad(g1, loss, X, p)
    assert v0 == v1
    np.testing.assert_array_equal(g0, g1)
    want, _ = ref_loss("logitce", ref_forward(chain, p, X), T)
    assert v1 == pytest.approx(want, rel=1e-12)
    acc0 = sc.accuracy_and_loss(base, X, p)
    acc1 = sc.accuracy_and_loss(loss, X, p)
    assert acc0 == acc1


# --------------------------------------------------------------------------- accuracy_and_loss


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [9, 130, 2 * BLOCK + 44])
def test_accuracy_and_loss_classification(dtype, n):
    chain, p, X, L, T = _problem("logitce", n=n, dtype=dtype)
    loss = sc.add_loss(chain, L)
    acc, val = sc.accuracy_and_loss(loss, X, p)
    Yhat = ref_forward(chain, p, X)
    want_acc = np.mean(np.argmax(Yhat, axis=1) == T)
    assert 0 < want_acc < 1  # a non-trivial accuracy
    assert acc == pytest.approx(want_acc, abs=1e-12)
    assert val == pytest.approx(ref_loss("logitce", Yhat, T)[0], rel=VTOL[dtype])
    assert val == pytest.approx(loss(X, p), rel=VTOL[dtype])


def test_accuracy_perfect_and_zero():
    chain = sc.SimpleChain(3, sc.Dense(3, bias=False))
    p = np.eye(3).ravel()  # logits = x
    X = np.eye(3)[[0, 1, 2, 2, 1]] * 5.0
    right = np.array([0, 1, 2, 2, 1])
    wrong = (right + 1) % 3
    assert sc.accuracy_and_loss(sc.add_loss(chain, sc.LogitCrossEntropyLoss(right)), X, p)[0] == 1.0
    assert sc.accuracy_and_loss(sc.add_loss(chain, sc.LogitCrossEntropyLoss(wrong)), X, p)[0] == 0.0


def test_accuracy_and_loss_other_data():
    chain, p, X, L, T = _problem("logitce", n=60, seed=3)
    loss = sc.add_loss(chain, L, sc.L2Penalty(0.01))
    X2 = random_data(chain, 25, seed=99)
    T2 = np.random.default_rng(98).integers(0, chain.output_dim, size=25).astype(np.int32)
    acc, val = sc.accuracy_and_loss(loss, X2, T2, p)
    Yhat = ref_forward(chain, p, X2)
    assert acc == pytest.approx(np.mean(np.argmax(Yhat, axis=1) == T2), abs=1e-12)
    pv, _ = ref_penalty(chain, p, "l2", 0.01)
    assert val == pytest.approx(ref_loss("logitce", Yhat, T2)[0] + pv, rel=1e-12)
    # the original loss is unchanged
    assert sc.accuracy_and_loss(loss, X, p)[1] == pytest.approx(loss(X, p), rel=1e-12)


@pytest.mark.parametrize("kind", ["squared", "absolute", "huber"])
def test_accuracy_is_nan_for_regression(kind):
    chain, p, X, L, T = _problem(kind, n=20)
    loss = sc.add_loss(chain, L)
    acc, val = sc.accuracy_and_loss(loss, X, p)
    assert np.isnan(acc)
    assert val == pytest.approx(loss(X, p), rel=1e-12)
    X2 = random_data(chain, 9, seed=5)
    T2 = np.random.default_rng(6).standard_normal((9, chain.output_dim))
    acc2, val2 = sc.accuracy_and_loss(loss, X2, T2, p)
    assert np.isnan(acc2)
    assert val2 == pytest.approx(ref_loss(kind, ref_forward(chain, p, X2), T2, delta=0.7)[0], rel=1e-12)


def test_regression_1d_targets_for_one_output():
    chain = make_chain("act_layer_first")  # one output
    p = random_params(chain, seed=0)
    X = random_data(chain, 12, seed=1)
    y = np.random.default_rng(2).standard_normal(12)
    v1 = sc.add_loss(chain, sc.SquaredLoss(y))(X, p)
    v2 = sc.add_loss(chain, sc.SquaredLoss(y.reshape(-1, 1)))(X, p)
    assert v1 == v2
    assert v1 == pytest.approx(ref_loss("squared", ref_forward(chain, p, X), y.reshape(-1, 1))[0], rel=1e-12)


def test_add_loss_method_and_function_agree():
    chain, p, X, L, T = _problem("squared", n=10)
    a = sc.add_loss(chain, L, sc.L2Penalty(0.1))
    b = chain.add_loss(L, sc.L2Penalty(0.1))
    assert a(X, p) == b(X, p)
