"""Bad input to the compiled kernels and training that used to crash or mislead."""

import numpy as np
import pytest

import smallchains as sc
from smallchains import _engine as E
from smallchains import kernels as K


@pytest.fixture
def net():
    chain = sc.SimpleChain(2, sc.Dense(8, sc.tanh), sc.Dense(3))
    return chain, chain.init_params(dtype=np.float64)


def test_kernels_refuse_short_arrays_with_a_status(net):
    chain, p = net
    prog, work = chain.program, np.zeros(chain.work_size(1))
    x, v = np.ones(2), np.ones(3)
    out = np.zeros(chain.num_params)
    assert K.vjp_into(prog, np.zeros(5), p, v, x, None, work) == E.BAD_SHAPE
    assert K.vjp_into(prog, out, p[:5], v, x, None, work) == E.BAD_SHAPE
    assert K.vjp_into(prog, out, p, v[:1], x, None, work) == E.BAD_SHAPE
    assert K.vjp_into(prog, out, p, v, x[:1], None, work) == E.BAD_SHAPE
    assert K.vjp_into(prog, out, p, v, x, np.zeros(1), work) == E.BAD_SHAPE
    assert K.forward_into(prog, np.zeros(1), x, p, work) == E.BAD_SHAPE
    assert K.jvp_into(prog, np.zeros(3), np.zeros(3), p, x, np.zeros(1), None, work) == E.BAD_SHAPE
    assert K.vjp_into(prog, out, p, v, x, None, work[:3]) == E.WORK_TOO_SMALL
    X = np.ones((300, 2))
    wb = np.zeros(chain.work_size(300))
    assert K.forward_batch_into(prog, np.zeros((1, 3)), X, p, wb) == E.BAD_SHAPE
    assert K.forward_batch_into(prog, np.zeros((300, 3)), np.ones((300, 400)), p, wb) == E.BAD_SHAPE
    assert K.vjp_batch_into(prog, out, p, np.ones((2, 3)), X, None, wb) == E.BAD_SHAPE
    # and a correct call still works
    assert K.vjp_into(prog, out, p, v, x, None, work) == E.OK
    assert np.all(np.isfinite(out)) and np.any(out != 0)


def test_valgrad_and_vjp_refuse_aliased_outputs(net):
    chain, p = net
    X = np.ones((4, 2))
    loss = sc.add_loss(chain, sc.SquaredLoss(np.zeros((4, 3))))
    with pytest.raises(ValueError, match="`g` shares memory with `p`"):
        sc.valgrad(p, loss, X, p)
    with pytest.raises(ValueError, match="`out` shares memory with `p`"):
        chain.vjp_into(p, p, np.ones(3), np.ones(2))


def test_optimizer_update_validates(net):
    _, p = net
    with pytest.raises(ValueError, match="`g`"):
        sc.Adam().update(p, np.zeros(3))
    with pytest.raises(TypeError, match="`p`"):
        sc.Adam().update(np.zeros(4, np.int64), np.zeros(4))
    with pytest.raises(ValueError, match="betas"):
        sc.Adam(betas=0.9)
    with pytest.raises(ValueError, match="weight_decay"):
        sc.SGD(weight_decay=-1)
    with pytest.raises(ValueError, match="eps"):
        sc.RMSProp(eps=0)


def test_labels_are_copied_and_training_names_the_range():
    chain = sc.SimpleChain(2, sc.Dense(3))
    y = np.array([0, 1, 2, 1])
    loss = sc.add_loss(chain, sc.LogitCrossEntropyLoss(y))
    y[0] = 7  # edits after binding do not leak into the loss
    p = chain.init_params(dtype=np.float64)
    X = np.ones((4, 2))
    sc.train_unbatched(loss, X, p, sc.Adam(), 2)
    with pytest.raises(ValueError, match="too large"):
        sc.LogitCrossEntropyLoss(np.array([2**63], dtype=np.uint64))


def test_training_refuses_non_finite_parameters(net):
    chain, p = net
    p[0] = np.nan
    loss = sc.add_loss(chain, sc.SquaredLoss(np.zeros((4, 3))))
    with pytest.raises(ValueError, match="`p` contains NaN"):
        sc.train_unbatched(loss, np.ones((4, 2)), p, sc.Adam(), 2)


def test_train_batched_generator_seed_resumes_the_stream(net):
    chain, p0 = net
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 2))
    Y = rng.standard_normal((40, 3))
    loss = sc.add_loss(chain, sc.SquaredLoss(Y))
    a, b = p0.copy(), p0.copy()
    sc.train_batched(loss, X, a, sc.SGD(0.01), 2, batch_size=8, seed=3)
    sc.train_batched(loss, X, b, sc.SGD(0.01), 2, batch_size=8, seed=3)
    np.testing.assert_array_equal(a, b)  # an int seed is reproducible
    from smallchains.training import _stream_state

    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    s1 = [_stream_state(g1) for _ in range(3)]
    assert len(set(s1)) == 3  # a Generator advances between calls ...
    assert s1 == [_stream_state(g2) for _ in range(3)]  # ... reproducibly
    assert _stream_state(7) == _stream_state(7)  # an int restarts its stream
    c, d = p0.copy(), p0.copy()
    o1, o2 = sc.SGD(0.01), sc.SGD(0.01)
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(2):
        sc.train_batched(loss, X, c, o1, 1, batch_size=8, seed=g1)
        sc.train_batched(loss, X, d, o2, 1, batch_size=8, seed=g2)
    np.testing.assert_array_equal(c, d)
    with pytest.raises(ValueError, match="`seed`"):
        sc.train_batched(loss, X, d, o2, 1, batch_size=8, seed=-1)
