"""No Numba NRT allocations on the hot paths, and ``smallchains.kernels`` called from user
``@njit`` code (the documented use) gives the same results as ``chain.vjp_into``/``jvp_into``."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from helpers import CHAIN_IDS, make_chain, random_data, random_params, ref_forward, ref_jvp, ref_vjp
from numba.core.runtime import _nrt_python, rtsys

import smallchains as sc
from smallchains import _engine as E
from smallchains import _train as T
from smallchains import kernels as K
from smallchains._program import BLOCK


@pytest.fixture(scope="module", autouse=True)
def nrt_stats():
    """Switch NRT allocation statistics on for this module (off by default in Numba)."""
    was = _nrt_python.memsys_stats_enabled()
    _nrt_python.memsys_enable_stats()
    yield
    if not was:
        _nrt_python.memsys_disable_stats()


def _allocs():
    return rtsys.get_allocation_stats().alloc


def _count(fn):
    """NRT data allocations made by ``fn()`` (after a warm-up call that compiles)."""
    fn()
    before = _allocs()
    fn()
    return _allocs() - before


@numba.njit  # not cached: its machine code embeds the package kernels
def _unbox_only(*args):
    return 0


@numba.njit(_nrt=False)
def _unbox_only_no_nrt(*args):
    return 0


def _extra(kernel, *args):
    """NRT allocations of ``kernel(*args)`` beyond those of merely passing ``args`` into compiled code.

    Calling an NRT-enabled compiled function from Python wraps each NumPy argument in an NRT
    MemInfo (one counted allocation per array, freed on return); the package kernels are
    compiled without NRT (no wrapping).  That boundary cost is measured with a function that
    does nothing, compiled the same way, and subtracted: what remains is allocated by the kernel.
    """
    base = _unbox_only if kernel.targetoptions.get("_nrt", True) else _unbox_only_no_nrt
    return _count(lambda: kernel(*args)) - _count(lambda: base(*args))


@numba.njit  # not cached: its machine code embeds the package kernels
def _allocates(n):
    a = np.zeros(n)
    return a.sum()


def test_allocation_counter_works():
    """Positive control: the counter sees an allocation made in compiled code."""
    assert _count(lambda: _allocates(10)) == 1
    assert _count(lambda: [_allocates(10) for _ in range(5)]) == 5
    assert _extra(_allocates, 10) == 1
    a = np.zeros(3)
    assert _count(lambda: _unbox_only(a, a, a)) == 3  # the per-array boxing cost that _extra subtracts
    assert _count(lambda: _unbox_only_no_nrt(a, a, a)) == 0


def test_kernels_compiled_without_nrt():
    """The policy: package kernels run without reference counting (see smallchains._jit.NO_NRT)."""
    from smallchains import _activations as A

    for fn in (
        E.valgrad,
        E.vjp,
        E.forward,
        E.block_forward,
        E.block_backward,
        K.vjp_into,
        K.forward_into,
        K.jvp_into,
        T.train_full,
        T.train_minibatch,
        A.act_inplace,
        A.act_forward,
    ):
        assert fn.targetoptions.get("_nrt") is False, fn


# --------------------------------------------------------------------------- engine entry points


def _chain_and_data(dtype, n, name="deep_mixed_4_8_7_3"):
    chain = make_chain(name)
    p = random_params(chain, dtype, seed=0)
    X = random_data(chain, n, dtype, seed=1)
    Y = np.random.default_rng(2).standard_normal((n, chain.output_dim)).astype(dtype)
    return chain, p, X, Y


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nt,n", [(1, 5), (1, 2 * BLOCK + 44), (2, 2 * BLOCK + 44)])
@pytest.mark.parametrize("kind", ["squared", "logitce"])
def test_engine_valgrad_does_not_allocate(dtype, nt, n, kind):
    chain, p, X, Y = _chain_and_data(dtype, n)
    if kind == "squared":
        loss = sc.add_loss(chain, sc.SquaredLoss(Y), sc.L2Penalty(0.01))
    else:
        loss = sc.add_loss(chain, sc.LogitCrossEntropyLoss(np.arange(n) % chain.output_dim))
    Tt, labels = loss.loss._targets(p.dtype)
    g = np.empty_like(p)
    work, slabs, losses, stats = chain._workspace(p.dtype, nt, n)
    prog = chain.bound_program(dtype)
    args = (
        prog,
        p,
        X,
        prog[0],
        E.ROWS,
        0,
        n,
        Tt,
        labels,
        loss.loss.code,
        loss._lpar,
        g,
        slabs,
        work,
        losses,
        stats,
        True,
        -1,
    )
    assert _extra(E.valgrad, *args) == 0
    assert _extra(E.penalty, prog, p, g, 2, 0.01, True) == 0
    # the public wrapper computes the same thing (so the measured call is the real one)
    val, st = E.valgrad(*args)
    assert st == 0
    g2 = np.empty_like(p)
    want = sc.valgrad(g2, sc.add_loss(chain, loss.loss), X, p, num_threads=nt)
    assert val == pytest.approx(want, rel=1e-6)
    np.testing.assert_allclose(g, g2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nt", [1, 2])
def test_engine_forward_vjp_jvp_do_not_allocate(dtype, nt):
    n = 2 * BLOCK + 44
    chain, p, X, V = _chain_and_data(dtype, n)
    prog = chain.bound_program(dtype, tangent=True)
    work, slabs, _, stats = chain._workspace(p.dtype, nt, n)
    Y = np.empty((n, chain.output_dim), dtype)
    out = np.empty_like(p)
    GX = np.empty_like(X)
    assert _extra(E.forward, prog, p, X, Y, work, stats) == 0
    assert _extra(E.vjp, prog, p, V, X, out, GX, True, slabs, work, stats) == 0
    DY = np.empty_like(Y)
    assert _extra(E.jvp, prog, p, X, X, p, True, True, Y, DY, work[0]) == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nt", [1, 2])
@pytest.mark.parametrize("opt", ["adam", "sgd", "rmsprop"])
def test_train_full_does_not_allocate(dtype, nt, opt):
    n = 2 * BLOCK + 44
    chain, p, X, Y = _chain_and_data(dtype, n)
    loss = sc.add_loss(chain, sc.SquaredLoss(Y), sc.L1Penalty(1e-3))
    o = {"adam": sc.Adam(1e-3), "sgd": sc.SGD(1e-3, momentum=0.9), "rmsprop": sc.RMSProp(1e-4)}[opt]
    Tt, labels = loss.loss._targets(p.dtype)
    work, slabs, losses, stats = chain._workspace(p.dtype, nt, n)
    g = np.zeros_like(p)
    code, hyper, state, step = o._prepare(p)
    pcode, lam = loss.pen
    epochs = 5
    hist = np.zeros(epochs)

    XT, TT = np.ascontiguousarray(X.T), np.ascontiguousarray(Tt.T)  # train_full takes transposed data
    prog = chain.bound_program(p.dtype)
    args = (
        prog,
        p,
        XT,
        TT,
        labels,
        loss.loss.code,
        loss._lpar,
        pcode,
        lam,
        code,
        hyper,
        state,
        step,
        epochs,
        hist,
        0,
        g,
        slabs,
        work,
        losses,
        stats,
        p.copy(),
        np.array([7], dtype=np.uint64),
    )
    assert _extra(T.train_full, *args) == 0
    assert step[0] == 2 * epochs
    assert T.train_full(*args) == (0, epochs)
    assert np.all(np.isfinite(hist)) and hist[-1] < hist[0]


def test_train_minibatch_does_not_allocate():
    n = 100
    chain, p, X, Y = _chain_and_data(np.float64, n)
    loss = sc.add_loss(chain, sc.SquaredLoss(Y))
    o = sc.Adam(1e-3)
    Tt, labels = loss.loss._targets(p.dtype)
    batch = 16
    work, slabs, losses, stats = chain._workspace(p.dtype, 1, batch)
    g = np.zeros_like(p)
    code, hyper, state, step = o._prepare(p)
    hist = np.zeros(3)
    perm = np.arange(n, dtype=np.int64)
    rng = np.array([12345], dtype=np.uint64)

    prog = chain.bound_program(p.dtype)
    args = (
        prog,
        p,
        X,
        Tt,
        labels,
        loss.loss.code,
        loss._lpar,
        0,
        0.0,
        code,
        hyper,
        state,
        step,
        3,
        batch,
        perm,
        rng,
        hist,
        0,
        g,
        slabs,
        work,
        losses,
        stats,
        np.zeros_like(p),
    )
    assert _extra(T.train_minibatch, *args) == 0
    assert step[0] == 2 * 3 * 7  # ceil(100 / 16) = 7 steps per epoch
    assert T.train_minibatch(*args) == (0, 3)
    assert np.array_equal(np.sort(perm), np.arange(n))  # still a permutation


# --------------------------------------------------------------------------- user njit code


@numba.njit  # not cached: its machine code embeds the package kernels
def user_vjp_loop(prog, gp, p, V, X, gx, work):
    """Sum of one-sample VJPs (parameter cotangents) and per-sample input cotangents."""
    tmp = np.zeros(0, dtype=p.dtype)  # noqa: F841  (a deliberate allocation outside the measured kernels)
    for i in range(X.shape[0]):
        st = K.vjp_into(prog, gp[i], p, V[i], X[i], gx[i], work)
        if st != 0:
            return st
    return 0


@numba.njit  # not cached: its machine code embeds the package kernels
def user_vjp_loop_noalloc(prog, gp, p, V, X, gx, work, reps):
    for _ in range(reps):
        for i in range(X.shape[0]):
            st = K.vjp_into(prog, gp[i], p, V[i], X[i], gx[i], work)
            if st != 0:
                return st
    return 0


@numba.njit  # not cached: its machine code embeds the package kernels
def user_vjp_no_x_loop(prog, gp, p, V, X, work, reps):
    for _ in range(reps):
        for i in range(X.shape[0]):
            st = K.vjp_into(prog, gp[i], p, V[i], X[i], None, work)
            if st != 0:
                return st
    return 0


@numba.njit  # not cached: its machine code embeds the package kernels
def user_vjp_accumulate_loop(prog, acc, p, V, X, work):
    acc[:] = 0
    for i in range(X.shape[0]):
        st = K.vjp_accumulate(prog, acc, p, V[i], X[i], None, work)
        if st != 0:
            return st
    return 0


@numba.njit  # not cached: its machine code embeds the package kernels
def user_forward_loop(prog, Y, X, p, work, reps):
    for _ in range(reps):
        for i in range(X.shape[0]):
            st = K.forward_into(prog, Y[i], X[i], p, work)
            if st != 0:
                return st
    return 0


@numba.njit  # not cached: its machine code embeds the package kernels
def user_jvp_loop(prog, Y, DY, p, X, DX, dp, work, reps):
    for _ in range(reps):
        for i in range(X.shape[0]):
            st = K.jvp_into(prog, Y[i], DY[i], p, X[i], DX[i], dp, work)
            if st != 0:
                return st
    return 0


@numba.njit  # not cached: its machine code embeds the package kernels
def user_jvp_dx_loop(prog, Y, DY, p, X, DX, work):
    for i in range(X.shape[0]):
        st = K.jvp_into(prog, Y[i], DY[i], p, X[i], DX[i], None, work)
        if st != 0:
            return st
    return 0


@numba.njit  # not cached: its machine code embeds the package kernels
def user_jvp_dp_loop(prog, Y, DY, p, X, dp, work):
    for i in range(X.shape[0]):
        st = K.jvp_into(prog, Y[i], DY[i], p, X[i], None, dp, work)
        if st != 0:
            return st
    return 0


@numba.njit  # not cached: its machine code embeds the package kernels
def user_batch(prog, Y, gp, GX, p, V, X, work):
    st = K.forward_batch_into(prog, Y, X, p, work)
    if st != 0:
        return st
    return K.vjp_batch_into(prog, gp, p, V, X, GX, work)


@numba.njit  # not cached: its machine code embeds the package kernels
def user_euler_adjoint(prog, p, u0, h, steps, work, du, gu, gp, lam, us):
    """The module docstring's use: explicit Euler forward, then the discrete adjoint backward."""
    d = u0.shape[0]
    for k in range(d):
        us[0, k] = u0[k]
    for s in range(steps):
        K.forward_into(prog, du, us[s], p, work)
        for k in range(d):
            us[s + 1, k] = us[s, k] + h * du[k]
    gp[:] = 0
    for s in range(steps - 1, -1, -1):
        K.vjp_accumulate(prog, gp, p, lam, us[s], gu, work)  # gp += lam^T df/dp
        for k in range(d):
            lam[k] = lam[k] + h * gu[k]
    for k in range(gp.shape[0]):
        gp[k] *= h
    return 0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", CHAIN_IDS)
def test_kernels_from_njit_match_chain_methods(name, dtype):
    chain = make_chain(name)
    p = random_params(chain, dtype, seed=3)
    n = 6
    X = random_data(chain, n, dtype, seed=4)
    rng = np.random.default_rng(5)
    V = rng.standard_normal((n, chain.output_dim)).astype(dtype)
    work = np.empty(chain.work_size(1), dtype)
    tol = dict(rtol=1e-12, atol=1e-13) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)

    # forward
    Y = np.full((n, chain.output_dim), np.nan, dtype)
    assert user_forward_loop(chain.program, Y, X, p, work, 1) == 0
    np.testing.assert_allclose(Y, chain(X, p), **tol)

    # vjp, sample by sample, with and without the input cotangent
    gp = np.full((n, chain.num_params), np.nan, dtype)
    gx = np.full_like(X, np.nan)
    assert user_vjp_loop(chain.program, gp, p, V, X, gx, work) == 0
    gp2 = np.full_like(gp, np.nan)
    assert user_vjp_no_x_loop(chain.program, gp2, p, V, X, work, 1) == 0
    out = np.empty_like(p)
    ox = np.empty_like(X[0])
    for i in range(n):
        chain.vjp_into(out, p, V[i], X[i], ox)
        np.testing.assert_allclose(gp[i], out, **tol)
        np.testing.assert_allclose(gp2[i], out, **tol)
        np.testing.assert_allclose(gx[i], ox, **tol)
    acc = np.full_like(p, np.nan)
    assert user_vjp_accumulate_loop(chain.program, acc, p, V, X, work) == 0
    chain.vjp_into(out, p, V, X)
    np.testing.assert_allclose(acc, out, **tol)

    # batch kernels (one thread) with a batch workspace
    wb = np.empty(chain.work_size(n), dtype)
    Yb = np.full_like(Y, np.nan)
    gpb = np.full_like(p, np.nan)
    GX = np.full_like(X, np.nan)
    assert user_batch(chain.program, Yb, gpb, GX, p, V, X, wb) == 0
    np.testing.assert_allclose(Yb, chain(X, p), **tol)
    gx_all = np.empty_like(X)
    chain.vjp_into(out, p, V, X, gx_all)
    np.testing.assert_allclose(gpb, out, **tol)
    np.testing.assert_allclose(GX, gx_all, **tol)

    # jvp with both tangents, and each alone
    DX = rng.standard_normal(X.shape).astype(dtype)
    dp = rng.standard_normal(p.shape).astype(dtype)
    DY = np.full_like(Y, np.nan)
    Yj = np.full_like(Y, np.nan)
    assert user_jvp_loop(chain.program, Yj, DY, p, X, DX, dp, work, 1) == 0
    want = np.empty_like(Y)
    chain.jvp_into(want, p, X, dx=DX, dp=dp)
    np.testing.assert_allclose(DY, want, **tol)
    np.testing.assert_allclose(Yj, chain(X, p), **tol)
    assert user_jvp_dx_loop(chain.program, Yj, DY, p, X, DX, work) == 0
    chain.jvp_into(want, p, X, dx=DX)
    np.testing.assert_allclose(DY, want, **tol)
    assert user_jvp_dp_loop(chain.program, Yj, DY, p, X, dp, work) == 0
    chain.jvp_into(want, p, X, dp=dp)
    np.testing.assert_allclose(DY, want, **tol)

    if dtype == np.float64:  # and all of it against the NumPy references
        np.testing.assert_allclose(Y, ref_forward(chain, p, X), rtol=1e-12, atol=1e-12)
        rp, rx = ref_vjp(chain, p, V, X)
        np.testing.assert_allclose(acc, rp, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(GX, rx, rtol=1e-10, atol=1e-12)
        assert user_jvp_loop(chain.program, Yj, DY, p, X, DX, dp, work, 1) == 0
        np.testing.assert_allclose(DY, ref_jvp(chain, p, X, DX, dp), rtol=1e-10, atol=1e-12)


def test_kernels_report_nonfinite_input():
    chain = make_chain("tanh_3_5_2")
    p = random_params(chain, seed=0)
    X = random_data(chain, 3, seed=1)
    X[1, 2] = np.nan
    work = np.empty(chain.work_size(1))
    Y = np.empty((3, 2))
    assert user_forward_loop(chain.program, Y, X, p, work, 1) == 1
    gp = np.empty((3, chain.num_params))
    assert user_vjp_loop(chain.program, gp, p, np.ones((3, 2)), X, np.empty_like(X), work) == 1
    assert user_jvp_loop(chain.program, Y, Y.copy(), p, X, X.copy(), p.copy(), work, 1) == 1
    assert (
        user_batch(chain.program, Y, p.copy(), np.empty_like(X), p, np.ones((3, 2)), X, np.empty(chain.work_size(3)))
        == 1
    )


def test_chain_kernels_object():
    chain = make_chain("deep_mixed_4_8_7_3")
    ck = chain.kernels()
    assert ck.program is chain.program
    assert (ck.num_params, ck.input_dim, ck.output_dim) == (chain.num_params, 4, 3)
    assert ck.work_size(1) == chain.work_size(1) > 0
    assert chain.work_size(4 * BLOCK) == chain.work_size(BLOCK) == BLOCK * chain.work_size(1) > 0
    w = ck.new_work(7, np.float32)
    assert w.dtype == np.float32 and w.shape == (chain.work_size(7),)


def test_chain_kernels_attributes_are_the_dispatchers():
    chain = make_chain("deep_mixed_4_8_7_3")
    ck = chain.kernels()
    for attr in ("forward_into", "vjp_into", "vjp_accumulate", "jvp_into", "forward_batch_into", "vjp_batch_into"):
        assert getattr(ck, attr) is getattr(K, attr), attr


def test_chain_kernels_forward_into_callable():
    chain = make_chain("deep_mixed_4_8_7_3")
    ck = chain.kernels()
    p = random_params(chain, seed=0)
    x = random_data(chain, None, seed=1)
    y = np.empty(3)
    assert ck.forward_into(ck.program, y, x, p, ck.new_work()) == 0
    np.testing.assert_allclose(y, chain(x, p), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_user_njit_kernels_do_not_allocate(dtype):
    chain = make_chain("deep_mixed_4_8_7_3")
    p = random_params(chain, dtype, seed=3)
    n = 20
    X = random_data(chain, n, dtype, seed=4)
    V = np.random.default_rng(5).standard_normal((n, 3)).astype(dtype)
    work = np.empty(chain.work_size(1), dtype)
    prog = chain.program
    gp = np.empty((n, chain.num_params), dtype)
    gx = np.empty_like(X)
    Y = np.empty((n, 3), dtype)
    DY = np.empty_like(Y)
    dp = np.ones_like(p)
    assert _extra(user_vjp_loop_noalloc, prog, gp, p, V, X, gx, work, 50) == 0
    assert _extra(user_vjp_no_x_loop, prog, gp, p, V, X, work, 50) == 0
    assert _extra(user_forward_loop, prog, Y, X, p, work, 50) == 0
    assert _extra(user_jvp_loop, prog, Y, DY, p, X, X, dp, work, 50) == 0
    acc = np.empty_like(p)
    assert _extra(user_vjp_accumulate_loop, prog, acc, p, V, X, work) == 0
    wb = np.empty(chain.work_size(n), dtype)
    assert _extra(user_batch, prog, Y, acc, gx, p, V, X, wb) == 0
    # the measurement sees an allocation inside user code (user_vjp_loop makes one on purpose)
    assert _extra(user_vjp_loop, prog, gp, p, V, X, gx, work) == 1


def test_user_euler_adjoint_matches_finite_differences():
    """The module docstring's neural-ODE adjoint, written with the kernels, is exact for its discretisation."""
    chain = sc.SimpleChain(2, sc.Dense(12, sc.tanh), sc.Dense(2))
    p = random_params(chain, seed=0)
    u0 = np.array([0.5, -0.3])
    h, steps = 0.05, 20
    work = np.empty(chain.work_size(1))

    def final_state(q):
        u = u0.copy()
        for _ in range(steps):
            u = u + h * ref_forward(chain, q, u)
        return u

    w = np.array([1.0, -2.0])  # objective w . u_N
    gp = np.empty_like(p)
    us = np.empty((steps + 1, 2))
    lam = w.copy()
    user_euler_adjoint(chain.program, p, u0, h, steps, work, np.empty(2), np.empty(2), gp, lam, us)
    np.testing.assert_allclose(us[-1], final_state(p), rtol=1e-12)
    from helpers import central_diff_grad

    fd = central_diff_grad(lambda q: w @ final_state(q), p)
    np.testing.assert_allclose(gp, fd, rtol=1e-6, atol=1e-8)
    assert (
        _extra(user_euler_adjoint, chain.program, p, u0, h, steps, work, np.empty(2), np.empty(2), gp, w.copy(), us)
        == 0
    )
