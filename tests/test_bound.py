"""The drivers call the interpreter's block functions through addresses bound in the program.

``_engine.bind`` writes them; these tests check what a binding promises: a driver refuses an
unbound program with a status (never calls a null address), a program carried into another
process is rebound, the public one-sample kernels need no binding, and calls between kernels
are specialised on argument types, not on constant values.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import smallchains as sc
from smallchains import _engine as E
from smallchains import kernels as K
from smallchains._errors import raise_for_status
from smallchains._jit import kernel
from smallchains._program import H_ACT, H_ADDR, H_LAYER, H_PID


def _chain():
    return sc.SimpleChain(3, sc.Dense(5, sc.tanh), sc.Dense(2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unbound_program_is_refused_by_status(dtype):
    chain = _chain()
    p = chain.init_params(seed=1, dtype=dtype)
    X = np.random.default_rng(0).standard_normal((7, 3)).astype(dtype)
    Y = np.empty((7, 2), dtype)
    prog = chain.program.copy()
    prog[0, H_ADDR : H_PID + 1] = 0
    work = np.zeros((1, chain.work_size(7)), dtype)
    stats = np.zeros(1, np.int64)
    assert E.forward(prog, p, X, Y, work, stats) == E.NOT_BOUND
    with pytest.raises(ValueError, match="without being bound"):
        raise_for_status(E.NOT_BOUND)
    # bound, the same call gives the chain's output
    assert E.forward(E.bind(prog, dtype), p, X, Y, work, stats) == E.OK
    np.testing.assert_array_equal(Y, chain(X, p))


def test_bind_is_per_dtype_and_per_process():
    chain = _chain()
    prog = chain.program.copy()
    prog[0, H_ADDR : H_PID + 1] = 0
    E.bind(prog, np.float32)
    assert prog[0, H_PID] == os.getpid()
    assert (prog[0, H_ADDR : H_ADDR + 4] != 0).all()  # float32 forward and backward
    assert (prog[0, H_ADDR + 4 : H_ADDR + 12] == 0).all()  # no tangent, nothing for float64
    E.bind(prog, np.float64, tangent=True)
    assert (prog[0, H_ADDR + 6 : H_ADDR + 12] != 0).all()
    # addresses written by another process (a pickled program) are dropped and rebound
    prog[0, H_PID] = -1
    prog[0, H_ADDR : H_ADDR + 12] = 12345
    E.bind(prog, np.float32)
    assert prog[0, H_PID] == os.getpid()
    fresh = E.bind(chain.program.copy(), np.float32)
    np.testing.assert_array_equal(prog[0, H_ADDR : H_ADDR + 4], fresh[0, H_ADDR : H_ADDR + 4])
    assert (prog[0, H_ADDR + 4 : H_ADDR + 12] == 0).all()
    with pytest.raises(TypeError, match="float32 or float64"):
        E.bind(prog, np.int32)


def _set(head, start, n):
    """Which of the n (c, jit) slot pairs from ``start`` are filled."""
    return [bool(head[start + 2 * i] and head[start + 2 * i + 1]) for i in range(n)]


def test_bind_compiles_only_what_the_chain_has():
    dense = sc.SimpleChain(3, sc.Dense(5, sc.tanh), sc.Dense(4, sc.relu), sc.Dense(2))
    head = E.bind(dense.program.copy(), np.float64)[0]
    acts = _set(head, H_ACT + 16, 8)  # float64
    assert acts == [True, True, False, False, False, False, False, False]  # tanh (1), relu (2)
    assert not any(_set(head, H_ACT, 8)) and not any(_set(head, H_LAYER, 12))  # no float32, no images
    img = sc.SimpleChain((1, 6, 6), sc.Conv(2, (3, 3), sc.sigmoid), sc.MaxPool((2, 2)), sc.Flatten(), sc.Dense(2))
    prog = E.bind(img.program.copy(), np.float32)
    layer = _set(prog[0], H_LAYER, 6)  # float32: conv fwd, bwd, tangent, pool fwd, bwd, tangent
    assert layer == [True, True, False, True, True, False]
    assert _set(prog[0], H_ACT, 8) == [False, False, True, False, False, False, False, False]  # sigmoid: 3
    E.bind(prog, np.float32, tangent=True)
    assert all(_set(prog[0], H_LAYER, 6))
    # the bound drivers and the public (direct) kernels agree on that chain
    p = img.init_params(seed=4)
    X = np.random.default_rng(5).random((9, 36)).astype(np.float32)
    Y = np.empty((9, 2), np.float32)
    assert K.forward_batch_into(img.program, Y, X, p, np.zeros(img.work_size(9), np.float32)) == E.OK
    np.testing.assert_allclose(img(X.reshape(9, 1, 6, 6), p), Y, rtol=1e-6)


def test_public_kernels_need_no_binding():
    chain = _chain()
    p = chain.init_params(seed=2, dtype=np.float64)
    prog = chain.program.copy()
    prog[0, H_ADDR : H_PID + 1] = 0
    X = np.random.default_rng(1).standard_normal((4, 3))
    Y = np.empty((4, 2))
    assert K.forward_batch_into(prog, Y, X, p, np.zeros(chain.work_size(4))) == E.OK
    np.testing.assert_allclose(Y, chain(X, p), rtol=1e-15)
    y = np.empty(2)
    assert K.forward_into(prog, y, X[0], p, np.zeros(chain.work_size(1))) == E.OK
    np.testing.assert_allclose(y, Y[0], rtol=1e-15)


def test_read_only_parameters_still_evaluate():
    chain = _chain()
    p = chain.init_params(seed=3)
    X = np.random.default_rng(2).standard_normal((5, 3)).astype(np.float32)
    want = chain(X, p)
    p.flags.writeable = False
    np.testing.assert_array_equal(chain(X, p), want)
    loss = sc.add_loss(chain, sc.SquaredLoss(np.zeros((5, 2), np.float32)))
    with pytest.raises(ValueError, match="read-only"):
        sc.train_unbatched(loss, X, p, sc.Adam(1e-3), epochs=1)


def _leaf(x, i, flag):
    return x[i] if flag else -x[i]


_leaf_k = kernel(_leaf, cache=False)


def _caller(x, n):
    return _leaf_k(x, 0, True) + _leaf_k(x, n, False) + _leaf_k(x, 1, flag=True)


def test_one_specialisation_per_argument_type():
    # a kernel called with a constant in one place and a variable in another is compiled once
    # (Numba's own dispatcher compiles one specialisation per literal value)
    x = np.arange(4.0)
    assert kernel(_caller, cache=False)(x, 2) == 0.0 - 2.0 + 1.0
    assert len(_leaf_k.signatures) == 1


def test_first_use_from_two_threads():
    # both threads bind the same fresh program at once; neither may see a half-written set
    from concurrent.futures import ThreadPoolExecutor

    for seed in range(5):
        chain = sc.SimpleChain(3, sc.Dense(6, sc.silu), sc.Dense(2))
        p = chain.init_params(seed=seed, dtype=np.float64)
        X = np.random.default_rng(seed).standard_normal((40, 3))
        with ThreadPoolExecutor(2) as ex:
            outs = list(ex.map(lambda c: c[0](c[1], c[2], num_threads=1), [(chain, X, p)] * 4))
        for o in outs[1:]:
            np.testing.assert_array_equal(o, outs[0])
