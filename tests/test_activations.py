"""Tests of the vectorisable activation kernels in ``smallchains._activations``."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba import njit
from numba.core.runtime import _nrt_python, rtsys

import smallchains as sc
from smallchains import _activations as A

CODES = list(range(len(A.ACTIVATION_NAMES)))
DTYPES = [np.float32, np.float64]
# the goals the module promises (MAX_ERRORS documents what is actually reached)
TARGET = {np.float32: (6e-7, 1e-6), np.float64: (1e-14, 1e-14)}
HYP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_codes_and_names():
    names = ("identity", "tanh", "relu", "sigmoid", "softplus", "gelu", "silu", "elu", "rbf")
    assert A.ACTIVATION_NAMES == names
    for code, name in enumerate(names):
        assert getattr(A, "ACT_" + name.upper()) == code
    assert set(A.MAX_ERRORS) == set(names) == set(A.MAX_DERIV_ERRORS)
    assert "nnan" not in A.FASTMATH_FLAGS and "ninf" not in A.FASTMATH_FLAGS


def _run(code, x, want_d=True):
    z = np.array(x, copy=True)
    d = np.empty_like(z)
    A.act_forward(code, z, 0, z.size, d, 0, want_d)
    return z, d


def _errors(v, ref):
    """(max abs error where |ref| <= 1, max rel error where |ref| > 1)."""
    e = np.abs(v.astype(np.float64) - ref)
    small = np.abs(ref) <= 1
    a = float(e[small].max()) if small.any() else 0.0
    r = float((e[~small] / np.abs(ref[~small])).max()) if (~small).any() else 0.0
    return a, r


def _documented_points(dtype):
    """The dense grid and special points of the documented measurement."""
    grid = np.linspace(-20.0, 20.0, 2_000_001)
    logs = np.geomspace(1e-30, 30.0, 20001)
    tiny = np.finfo(dtype).tiny
    special = [
        0.0,
        tiny,
        1e-45 if dtype is np.float32 else 5e-324,
        0.8813735870195430,
        0.34657359,
        1.0397208,
        3.5 * np.sqrt(2),
        3.0 * np.sqrt(2),
    ]
    return np.concatenate([grid, special, logs, -logs]).astype(dtype)


_POINTS = {}


def _points(dtype):
    if dtype not in _POINTS:
        _POINTS[dtype] = _documented_points(dtype)
    return _POINTS[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("code", CODES, ids=list(A.ACTIVATION_NAMES))
def test_accuracy_dense_grid(code, dtype):
    x = _points(dtype)
    xr = x.astype(np.float64)
    y, d = _run(code, x)
    assert y.dtype == dtype and d.dtype == dtype
    ey = _errors(y, A.reference(code, xr))
    ed = _errors(d, A.reference_derivative(code, xr))
    name, key = A.ACTIVATION_NAMES[code], np.dtype(dtype).name
    abs_goal, rel_goal = TARGET[dtype]
    # within the goals ...
    assert ey[0] <= abs_goal and ey[1] <= rel_goal, ey
    assert ed[0] <= abs_goal and ed[1] <= rel_goal, ed
    # ... and the documented numbers are not optimistic
    doc_y, doc_d = A.MAX_ERRORS[name][key], A.MAX_DERIV_ERRORS[name][key]
    assert ey[0] <= doc_y[0] and ey[1] <= doc_y[1], (ey, doc_y)
    assert ed[0] <= doc_d[0] and ed[1] <= doc_d[1], (ed, doc_d)
    # the forward-only loop is optimised separately (may differ by an ulp)
    y2, _ = _run(code, x, want_d=False)
    ey2 = _errors(y2, A.reference(code, xr))
    assert ey2[0] <= doc_y[0] and ey2[1] <= doc_y[1], (ey2, doc_y)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@HYP
@given(data=st.data())
def test_accuracy_random_points(dtype, data):
    width = 32 if dtype is np.float32 else 64
    xs = data.draw(st.lists(st.floats(-60, 60, width=width), min_size=1, max_size=50))
    x = np.array(xs, dtype=dtype)
    abs_goal, rel_goal = TARGET[dtype]
    for code in CODES:
        y, d = _run(code, x)
        for v, ref in ((y, A.reference(code, x)), (d, A.reference_derivative(code, x))):
            e = np.abs(v.astype(np.float64) - ref)
            assert np.all(e <= np.maximum(abs_goal, rel_goal * np.abs(ref))), (code, x, v, ref)


@pytest.mark.parametrize("code", CODES, ids=list(A.ACTIVATION_NAMES))
def test_derivative_vs_finite_differences(code):
    x = np.linspace(-8.0, 8.0, 4001)
    x = x[np.abs(x) > 1e-3]  # relu/elu have a kink (or a kink in f'') at 0
    h = 1e-5 * np.maximum(1.0, np.abs(x))
    fd = (A.reference(code, x + h) - A.reference(code, x - h)) / (2 * h)
    _, d = _run(code, x)
    np.testing.assert_allclose(d, fd, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(A.reference_derivative(code, x), fd, rtol=1e-7, atol=1e-8)


LARGE = [1e30, 1e20, 1e10, 1e4, 1e3, 100.0, 89.0, 87.5, 50.0]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("code", CODES, ids=list(A.ACTIVATION_NAMES))
def test_large_infinite_and_nan_inputs(code, dtype):
    x = np.array([-v for v in LARGE] + LARGE, dtype=dtype)
    y, d = _run(code, x)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(d))
    ref, dref = A.reference(code, x), A.reference_derivative(code, x)
    np.testing.assert_allclose(y, ref, rtol=4e-7, atol=1e-30)
    np.testing.assert_allclose(d, dref, rtol=4e-7, atol=1e-30)

    # +-inf: every function and derivative here has a limit
    xi = np.array([-np.inf, np.inf], dtype=dtype)
    y, d = _run(code, xi)
    expect_y = {
        0: [-np.inf, np.inf],
        1: [-1, 1],
        2: [0, np.inf],
        3: [0, 1],
        4: [0, np.inf],
        5: [0, np.inf],
        6: [0, np.inf],
        7: [-1, np.inf],
        8: [0, 0],
    }[code]
    expect_d = {0: [1, 1], 1: [0, 0], 2: [0, 1], 3: [0, 0], 4: [0, 1], 5: [0, 1], 6: [0, 1], 7: [0, 1], 8: [0, 0]}[code]
    np.testing.assert_array_equal(y, np.array(expect_y, dtype))
    np.testing.assert_array_equal(d, np.array(expect_d, dtype))
    np.testing.assert_array_equal(A.reference(code, xi), expect_y)
    np.testing.assert_array_equal(A.reference_derivative(code, xi), expect_d)

    # NaN propagates (identity's derivative is defined as 1)
    xn = np.array([np.nan, 1.0, np.nan], dtype=dtype)
    y, d = _run(code, xn)
    assert np.isnan(y[0]) and np.isnan(y[2]) and not np.isnan(y[1])
    if code == A.ACT_IDENTITY:
        np.testing.assert_array_equal(d, 1)
    else:
        assert np.isnan(d[0]) and np.isnan(d[2]) and not np.isnan(d[1])
    assert np.isnan(A.reference(code, xn)[0])


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_exp_expm1_kernels_full_range(dtype):
    """The private exp/expm1 stay within ~1 ulp over the whole range -- guards
    the non-reassociable Cody-Waite and expm1 steps against LLVM rewrites."""

    @njit(fastmath=A.FASTMATH_FLAGS, error_model="numpy")
    def run(x, e, em1):
        for i in range(x.size):
            e[i] = A._exp(x[i])
            em1[i] = A._expm1(x[i])

    lo = -87.0 if dtype is np.float32 else -708.0
    logs = np.geomspace(1e-30, 0.5, 2000)
    x = np.concatenate([np.linspace(lo, -lo, 200001), logs, -logs]).astype(dtype)
    e, em1 = np.empty_like(x), np.empty_like(x)
    run(x, e, em1)
    xr = x.astype(np.float64)
    eps = np.finfo(dtype).eps
    assert np.max(np.abs(e / np.exp(xr) - 1)) <= 2 * eps
    nz = xr != 0
    assert np.max(np.abs(em1[nz] / np.expm1(xr[nz]) - 1)) <= 2 * eps


def test_float32_loop_vectorises_without_promotion():
    @njit(fastmath=A.FASTMATH_FLAGS, error_model="numpy", boundscheck=False)
    def loop(z, y, d):
        for i in range(z.shape[0]):
            y[i], d[i] = A._gelu_yd(z[i])

    z = np.linspace(-3, 3, 64).astype(np.float32)
    y, d = np.empty_like(z), np.empty_like(z)
    loop(z, y, d)
    llvm = "\n".join(loop.inspect_llvm().values())
    assert re.search(r"<\d+ x float>", llvm), "no float32 vector code"
    assert "fpext" not in llvm and " double " not in llvm, "float32 promoted to float64"
    assert not re.search(r"call [^\n]*@(expf?|erff?|erfcf?|tanhf?|logf?)\(", llvm)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@HYP
@given(
    code=st.sampled_from(CODES),
    n=st.integers(0, 40),
    off=st.integers(0, 9),
    doff=st.integers(0, 9),
    yoff=st.integers(0, 9),
    pad=st.integers(0, 9),
    want_d=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_offsets_and_out_of_place_agree(dtype, code, n, off, doff, yoff, pad, want_d, seed):
    rng = np.random.default_rng(seed)
    z0 = (rng.standard_normal(off + n + pad) * 4).astype(dtype)
    sentinel = dtype(-12345.0)

    # in place
    z = z0.copy()
    d = np.full(doff + n + pad, sentinel, dtype)
    A.act_forward(code, z, off, n, d, doff, want_d)
    y_ref = A.reference(code, z0[off : off + n])
    np.testing.assert_array_equal(z[:off], z0[:off])
    np.testing.assert_array_equal(z[off + n :], z0[off + n :])
    tol = dict(rtol=1e-6, atol=4e-7) if dtype is np.float32 else dict(rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(z[off : off + n], y_ref, **tol)
    if want_d:
        assert np.all(d[:doff] == sentinel) and np.all(d[doff + n :] == sentinel)
        # the derivative's own documented accuracy (tanh' in float32 saturates to 0 where the
        # true value is ~5e-7: within its measured 5.5e-7, outside the values' 4e-7)
        name = next(k for k, v in sc.ACTIVATIONS.items() if v.code == code)
        dabs, drel = A.MAX_DERIV_ERRORS[name]["float32" if dtype is np.float32 else "float64"]
        dtol = dict(rtol=max(tol["rtol"], 1.01 * drel), atol=max(tol["atol"], 1.01 * dabs))
        np.testing.assert_allclose(d[doff : doff + n], A.reference_derivative(code, z0[off : off + n]), **dtol)
    else:
        assert np.all(d == sentinel)

    # out of place: same values bit for bit, z untouched
    zz = z0.copy()
    y = np.full(yoff + n + pad, sentinel, dtype)
    d2 = np.full(doff + n + pad, sentinel, dtype)
    A.act_forward_to(code, zz, off, y, yoff, n, d2, doff, want_d)
    np.testing.assert_array_equal(zz, z0)
    np.testing.assert_array_equal(y[yoff : yoff + n], z[off : off + n])
    assert np.all(y[:yoff] == sentinel) and np.all(y[yoff + n :] == sentinel)
    np.testing.assert_array_equal(d2, d)

    # act_forward_to with y the very same range as z is act_forward
    z3 = z0.copy()
    d3 = np.full(doff + n + pad, sentinel, dtype)
    A.act_forward_to(code, z3, off, z3, off, n, d3, doff, want_d)
    np.testing.assert_array_equal(z3, z)
    np.testing.assert_array_equal(d3, d)


def test_identity_fills_ones_and_leaves_z():
    z = np.arange(6, dtype=np.float64)
    d = np.zeros(8)
    A.act_forward(A.ACT_IDENTITY, z, 1, 4, d, 2, True)
    np.testing.assert_array_equal(z, np.arange(6))
    np.testing.assert_array_equal(d, [0, 0, 1, 1, 1, 1, 0, 0])


def test_bad_code_and_ranges_raise():
    z = np.zeros(4)
    with pytest.raises(ValueError):
        A.act_forward(99, z, 0, 4, z, 0, False)
    with pytest.raises(IndexError):
        A.act_forward(A.ACT_TANH, z, 1, 4, z, 0, False)
    with pytest.raises(IndexError):
        A.act_forward(A.ACT_TANH, z, 0, 4, np.zeros(3), 0, True)
    with pytest.raises(ValueError):
        A.reference(99, z)


@njit
def _drive(z, d, y, reps):
    """Calls the kernels ``reps`` times from compiled code, so that the NRT
    meminfos created when Python arrays enter ``_drive`` are not counted."""
    for _ in range(reps):
        for code in range(9):
            A.act_forward(code, z, 0, z.size, d, 0, True)
            A.act_forward(code, z, 0, z.size, d, 0, False)
            A.act_forward_to(code, z, 0, y, 0, z.size, d, 0, True)
            A.act_forward_to(code, z, 0, y, 0, z.size, d, 0, False)
    return reps


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_no_nrt_allocations(dtype):
    @njit
    def allocates(n):
        return np.empty(n).size

    z = np.linspace(-4, 4, 1000).astype(dtype)
    d, y = np.empty_like(z), np.empty_like(z)
    _drive(z, d, y, 1)  # warm up
    allocates(3)

    def count(fn, *args):
        before = rtsys.get_allocation_stats()
        fn(*args)
        after = rtsys.get_allocation_stats()
        return after.alloc - before.alloc, after.mi_alloc - before.mi_alloc

    _nrt_python.memsys_enable_stats()
    try:
        assert count(allocates, 3)[0] > 0  # the counters are live
        boundary = count(_drive, z, d, y, 0)  # meminfos for the 3 arguments only
        assert count(_drive, z, d, y, 5) == boundary
        # and from Python: the kernels are compiled without NRT, so a call does not
        # even wrap its array arguments in meminfos
        assert count(A.act_forward, A.ACT_GELU, z, 0, z.size, d, 0, True) == (0, 0)
        assert count(A.act_forward_to, A.ACT_GELU, z, 0, y, 0, z.size, d, 0, True) == (0, 0)
        assert count(A.act_inplace, A.ACT_GELU, z, d, True) == (0, 0)
    finally:
        _nrt_python.memsys_disable_stats()
