"""The compiled interpreter that runs a layer program (see ``_program``).

Every function here is a Numba kernel compiled once per dtype (float32,
float64) and cached on disk; chains of any shape share the machine code.

Status codes returned by the kernels (mapped to exceptions in ``_errors``):
    OK, NONFINITE_INPUT, NONFINITE_LOSS, NONFINITE_GRAD, LABEL_OUT_OF_RANGE,
    NONFINITE_PARAMS, WORK_TOO_SMALL, BAD_SHAPE, NOT_BOUND
"""

from __future__ import annotations

import math
import os
import threading

import numba
import numpy as np
from numba import types
from numba.core.extending import overload

from ._activations import INPLACE, act_inplace
from ._jit import addresses, function_caster, kernel, parallel_kernel
from ._program import (
    F_ACT,
    F_AUX,
    F_BIAS,
    F_BOFF,
    F_D,
    F_KIND,
    F_NIN,
    F_NOUT,
    F_NW,
    F_WOFF,
    F_X,
    F_Y,
    H_ACT,
    H_ADDR,
    H_G1,
    H_G2,
    H_LAYER,
    H_NIN,
    H_NLAYERS,
    H_NOUT,
    H_NPARAMS,
    H_PID,
    H_T,
    H_UNITS,
    KIND_ACTIVATION,
    KIND_AVGPOOL,
    KIND_CONV,
    KIND_DENSE,
    KIND_DROPOUT,
    KIND_MAXPOOL,
)
from .layers.conv import (
    conv_layer_backward,
    conv_layer_forward,
    conv_layer_tangent,
    pool_layer_backward,
    pool_layer_forward,
    pool_layer_tangent,
)
from .layers.dense import (
    dense_forward,
    dense_forward_1,
    dense_pullback_1,
    dense_pullback_input,
    dense_pullback_params,
    dense_tangent,
)

OK = 0
NONFINITE_INPUT = 1
NONFINITE_LOSS = 2
NONFINITE_GRAD = 3
LABEL_OUT_OF_RANGE = 4
NONFINITE_PARAMS = 5
WORK_TOO_SMALL = 6
BAD_SHAPE = 7
NOT_BOUND = 8  # internal: a driver met a program without the addresses of its dtype (see ``bind``)

#: Largest finite float64; ``abs(x) <= FMAX`` is False exactly for NaN and +-Inf.  A
#: comparison survives the fast-math flags, whereas ``math.isfinite`` (``x - x == 0``)
#: is folded to True under ``reassoc``/``nsz``.
FMAX = 1.7976931348623157e308

LOSS_SQUARED = 0
LOSS_ABSOLUTE = 1
LOSS_HUBER = 2
LOSS_LOGITCE = 3


# --------------------------------------------------------------------------- blocks


@kernel
def gather_block(X, idx, use_idx, i0, nb, w, B, wo):
    """w[wo + k*B + s] <- X[row(i0+s), k] for s < nb (rows through ``idx`` when use_idx).

    Transposes a block of rows into the feature-major layout; columns ``nb..B-1``
    are zero-filled.  Returns the number of non-finite values met (0: all finite);
    the count is an integer chain, so it does not serialise the copy the way a
    floating-point ``sum of x*0`` does.
    """
    d = X.shape[1]
    bad = 0
    s0 = 0
    # tiles of 8 samples: the fixed-length inner loop lets LLVM vectorise the transposition
    # (measured 0.76 against 2.9 us for 200 x 24 float32 row by row)
    if use_idx:
        while s0 + 8 <= nb:
            for k in range(d):
                wk = w[wo + k * B + s0 : wo + k * B + s0 + 8]
                for i in range(8):
                    v = X[idx[i0 + s0 + i], k]
                    bad += not (abs(v) <= FMAX)
                    wk[i] = v
            s0 += 8
    else:
        while s0 + 8 <= nb:
            Xt = X[i0 + s0 : i0 + s0 + 8]
            for k in range(d):
                wk = w[wo + k * B + s0 : wo + k * B + s0 + 8]
                for i in range(8):
                    v = Xt[i, k]
                    bad += not (abs(v) <= FMAX)
                    wk[i] = v
            s0 += 8
    for s in range(s0, nb):
        xr = X[idx[i0 + s]] if use_idx else X[i0 + s]
        for k in range(d):
            v = xr[k]
            bad += not (abs(v) <= FMAX)
            w[wo + k * B + s] = v
    if nb < B:
        for k in range(d):
            wk = w[wo + k * B : wo + (k + 1) * B]
            for s in range(nb, B):
                wk[s] = 0
    return bad


@kernel
def _mix64(z):
    """splitmix64 finaliser (a bijection of uint64 with good avalanche)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@kernel
def dropout_mask(d, do, n, B, key, s0, unit0, thresh):
    """d[do + u*B + s] <- 0 or 1/(1-p) for u < n, s < B: a counter-based hash of (key, s0+s, unit0+u).

    ``thresh`` = floor(p * 2**32); an element is dropped when the hash's top 32 bits are below it.
    The mask of a sample depends on its position ``s0 + s`` in the batch, not on the block or thread.
    """
    keep = 1.0 / (1.0 - thresh / 4294967296.0)
    kk = _mix64(np.uint64(key) + np.uint64(0x9E3779B97F4A7C15))
    for u in range(n):
        dr = d[do + u * B : do + (u + 1) * B]
        ku = _mix64(kk ^ (np.uint64(unit0 + u) * np.uint64(0xD1B54A32D192ED03)))
        one = dr[0] - dr[0] + keep
        zero = dr[0] - dr[0]
        for s in range(B):
            h = _mix64(ku + np.uint64(s0 + s) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)
            dr[s] = zero if h < np.uint64(thresh) else one


@kernel(inline="always")
def _forward_blocks(prog, p, w, B, want_d, key, s0, via):
    L = prog[0, H_NLAYERS]
    yo = 0
    for l in range(1, L + 1):
        kind = prog[l, F_KIND]
        nout = prog[l, F_NOUT]
        act = prog[l, F_ACT]
        xo = prog[l, F_X] * B
        yo = prog[l, F_Y] * B
        do = prog[l, F_D] * B
        if kind == KIND_DENSE:
            if B == 1:
                dense_forward_1(
                    p, prog[l, F_WOFF], prog[l, F_BOFF], prog[l, F_BIAS] != 0, prog[l, F_NIN], nout, w, xo, w, yo
                )
            else:
                dense_forward(
                    p, prog[l, F_WOFF], prog[l, F_BOFF], prog[l, F_BIAS] != 0, prog[l, F_NIN], nout, w, xo, w, yo, B
                )
        elif kind == KIND_CONV:
            layer_op(via, LAYER_CONV_FORWARD, prog, l, p, w, B)
        elif kind == KIND_MAXPOOL or kind == KIND_AVGPOOL:
            layer_op(via, LAYER_POOL_FORWARD, prog, l, w, B, want_d)
        elif kind == KIND_DROPOUT:
            src = w[xo : xo + nout * B]
            dst = w[yo : yo + nout * B]
            if key >= 0:
                dropout_mask(w, do, nout, B, key, s0, l * 1000003, prog[l, F_AUX])
                dv = w[do : do + nout * B]
                for t in range(nout * B):
                    dst[t] = src[t] * dv[t]
            else:
                if want_d:
                    dv = w[do : do + nout * B]
                    for t in range(nout * B):
                        dv[t] = 1
                for t in range(nout * B):
                    dst[t] = src[t]
        elif kind == KIND_ACTIVATION:
            src = w[xo : xo + nout * B]
            dst = w[yo : yo + nout * B]
            for t in range(nout * B):
                dst[t] = src[t]
        # KIND_FLATTEN: the output buffer is the input buffer
        if act != 0:
            activate(via, prog, act, w[yo : yo + nout * B], w[do : do + nout * B], want_d)
    return yo


@kernel(inline="always")
def _backward_blocks(prog, p, gp, w, B, need_input, via):
    L = prog[0, H_NLAYERS]
    cur = prog[0, H_G1] * B
    other = prog[0, H_G2] * B
    for l in range(L, 0, -1):
        kind = prog[l, F_KIND]
        nin = prog[l, F_NIN]
        nout = prog[l, F_NOUT]
        act = prog[l, F_ACT]
        need_gx = l > 1 or need_input
        if act != 0 or kind == KIND_DROPOUT:
            do = prog[l, F_D] * B
            gv = w[cur : cur + nout * B]
            dv = w[do : do + nout * B]
            for t in range(nout * B):
                gv[t] *= dv[t]
        if kind == KIND_DENSE and B == 1:
            dense_pullback_1(
                p,
                gp,
                prog[l, F_WOFF],
                prog[l, F_BOFF],
                prog[l, F_BIAS] != 0,
                nin,
                nout,
                w,
                prog[l, F_X],
                w,
                cur,
                w,
                other,
                need_gx,
            )
        elif kind == KIND_DENSE:
            xo = prog[l, F_X] * B
            dense_pullback_params(
                p, gp, prog[l, F_WOFF], prog[l, F_BOFF], prog[l, F_BIAS] != 0, nin, nout, w, xo, w, cur, B
            )
            if need_gx:
                dense_pullback_input(p, prog[l, F_WOFF], nin, nout, w, cur, w, other, B)
        elif kind == KIND_CONV:
            layer_op(via, LAYER_CONV_BACKWARD, prog, l, p, gp, w, B, cur, other, need_gx)
        elif kind == KIND_MAXPOOL or kind == KIND_AVGPOOL:
            layer_op(via, LAYER_POOL_BACKWARD, prog, l, w, B, cur, other, need_gx)
        else:
            continue  # element-wise layers, dropout, flatten: the cotangent stays in place
        if need_gx:
            tmp = cur
            cur = other
            other = tmp
    return cur if need_input else -1


@kernel(inline="always")
def _tangent_blocks(prog, p, dp, w, B, use_dx, use_dp, via):
    L = prog[0, H_NLAYERS]
    cur = prog[0, H_G1] * B
    other = prog[0, H_G2] * B
    have_dx = use_dx
    if not use_dx:  # a zero input tangent (read by layers before the first with parameters)
        d = prog[0, H_NIN]
        t0 = w[cur : cur + d * B]
        for t in range(d * B):
            t0[t] = 0
    for l in range(1, L + 1):
        kind = prog[l, F_KIND]
        nout = prog[l, F_NOUT]
        act = prog[l, F_ACT]
        swap = False
        if kind == KIND_DENSE:
            xo = prog[l, F_X] * B
            dense_tangent(
                p,
                dp,
                prog[l, F_WOFF],
                prog[l, F_BOFF],
                prog[l, F_BIAS] != 0,
                prog[l, F_NIN],
                nout,
                w,
                xo,
                w,
                cur,
                have_dx,
                use_dp,
                w,
                other,
                B,
            )
            swap = True
            have_dx = True
        elif kind == KIND_CONV:
            layer_op(via, LAYER_CONV_TANGENT, prog, l, p, dp, w, B, cur, other, have_dx, use_dp)
            swap = True
            have_dx = True
        elif kind == KIND_MAXPOOL or kind == KIND_AVGPOOL:
            layer_op(via, LAYER_POOL_TANGENT, prog, l, w, B, cur, other)
            swap = True
        if swap:
            tmp = cur
            cur = other
            other = tmp
        if act != 0 or kind == KIND_DROPOUT:
            do = prog[l, F_D] * B
            gv = w[cur : cur + nout * B]
            dv = w[do : do + nout * B]
            for t in range(nout * B):
                gv[t] *= dv[t]
    return cur


@kernel
def block_forward(prog, p, w, B, want_d):
    """Run the layers on the input block at unit 0 of ``w``; returns the output's element offset.

    Inference mode (dropout off); see :func:`block_forward_train`.
    """
    return _forward_blocks(prog, p, w, B, want_d, -1, 0, DIRECT)


@kernel
def block_forward_train(prog, p, w, B, want_d, key, s0):
    """Run the layers on the input block at unit 0 of ``w``; returns the output's element offset.

    Overwrites every layer buffer of ``w`` (outputs and, when ``want_d``, the saved
    activation derivatives, pooling argmaxes and dropout masks that ``block_backward``
    needs).  ``key >= 0`` switches dropout on (masks from ``key`` and the samples'
    batch positions ``s0 + s``); ``key < 0`` is inference.
    """
    return _forward_blocks(prog, p, w, B, want_d, key, s0, DIRECT)


@kernel
def block_backward(prog, p, gp, w, B, need_input):
    """Pull the output cotangent (at unit H_G1 of ``w``) back through the layers.

    Requires the buffers left by ``block_forward(..., want_d=True)``.  Accumulates
    the parameter cotangent into ``gp`` (+=).  Returns the element offset in ``w``
    of the input cotangent when ``need_input`` (else -1).  Overwrites the two
    cotangent buffers H_G1/H_G2, the padded buffers and the saved derivatives.
    """
    return _backward_blocks(prog, p, gp, w, B, need_input, DIRECT)


@kernel
def block_tangent(prog, p, dp, w, B, use_dx, use_dp):
    """Forward-mode: push the input tangent (at unit H_G1) and ``dp`` through the layers.

    Requires ``block_forward(..., want_d=True)`` on the same input.  Returns the
    element offset of the output tangent.  Overwrites H_G1/H_G2 and the padded
    cotangent buffers.
    """
    return _tangent_blocks(prog, p, dp, w, B, use_dx, use_dp, DIRECT)


# The same three, with the image layers and the activations called through the addresses that
# ``bind`` writes into the program (so that only the kinds and activations a chain has are
# compiled); these are the functions the drivers call through addresses themselves.


@kernel
def forward_bound(prog, p, w, B, want_d, key, s0):
    return _forward_blocks(prog, p, w, B, want_d, key, s0, BOUND)


@kernel
def backward_bound(prog, p, gp, w, B, need_input):
    return _backward_blocks(prog, p, gp, w, B, need_input, BOUND)


@kernel
def tangent_bound(prog, p, dp, w, B, use_dx, use_dp):
    return _tangent_blocks(prog, p, dp, w, B, use_dx, use_dp, BOUND)


# --------------------------------------------------------------------------- calls through addresses
# Numba links a callee's code into each caller and generates its machine code again there,
# and again in each caller of that caller, so a driver five calls deep (training loop, step,
# gradient, thread pool, sample range) used to compile the interpreter five times over, per
# dtype and per argument layout.  The drivers below call the bound block functions through
# addresses instead, which ``bind`` writes into the program's header row, and those reach the
# image layers and activations through addresses too: each piece is compiled once per dtype,
# only for the layer kinds and activations a program has, and the drivers stay small.  The
# public kernels (``smallchains.kernels``) call the DIRECT block functions, so that users' own
# @njit code works with any ``chain.program``.

FN_FORWARD = 0
FN_BACKWARD = 1
FN_TANGENT = 2
_FLOATS = (types.float32, types.float64)
_PROG_T = types.Array(types.int64, 2, "C")


def _block_signatures(dt):
    a = types.Array(dt, 1, "C")
    i8, b1 = types.int64, types.boolean
    return (
        i8(_PROG_T, a, a, i8, b1, i8, i8),  # forward_bound(prog, p, w, B, want_d, key, s0)
        i8(_PROG_T, a, a, a, i8, b1),  # backward_bound(prog, p, gp, w, B, need_input)
        i8(_PROG_T, a, a, a, i8, b1, b1),
    )  # tangent_bound(prog, p, dp, w, B, use_dx, use_dp)


_SIGS = tuple(_block_signatures(dt) for dt in _FLOATS)
_CASTS = tuple(tuple(function_caster(types.FunctionType(sig)) for sig in sigs) for sigs in _SIGS)
_BLOCK_FUNCTIONS = (forward_bound, backward_bound, tangent_bound)

# the image layers' protocol (``layers.conv``) and the activations, as the bound blocks call them
LAYER_CONV_FORWARD, LAYER_CONV_BACKWARD, LAYER_CONV_TANGENT = 0, 1, 2
LAYER_POOL_FORWARD, LAYER_POOL_BACKWARD, LAYER_POOL_TANGENT = 3, 4, 5
_LAYER_FUNCTIONS = (
    conv_layer_forward,
    conv_layer_backward,
    conv_layer_tangent,
    pool_layer_forward,
    pool_layer_backward,
    pool_layer_tangent,
)


def _layer_signatures(dt):
    a = types.Array(dt, 1, "C")
    i8, b1 = types.int64, types.boolean
    return (
        i8(_PROG_T, i8, a, a, i8),  # conv_layer_forward(prog, l, p, w, B)
        i8(_PROG_T, i8, a, a, a, i8, i8, i8, b1),  # conv_layer_backward(prog, l, p, gp, w, B, cur, other, need_gx)
        i8(_PROG_T, i8, a, a, a, i8, i8, i8, b1, b1),  # conv_layer_tangent(.., have_dx, use_dp)
        i8(_PROG_T, i8, a, i8, b1),  # pool_layer_forward(prog, l, w, B, want_d)
        i8(_PROG_T, i8, a, i8, i8, i8, b1),  # pool_layer_backward(prog, l, w, B, cur, other, need_gx)
        i8(_PROG_T, i8, a, i8, i8, i8),
    )  # pool_layer_tangent(prog, l, w, B, cur, other)


_LAYER_SIGS = tuple(_layer_signatures(dt) for dt in _FLOATS)
_LAYER_CASTS = tuple(tuple(function_caster(types.FunctionType(sig)) for sig in sigs) for sigs in _LAYER_SIGS)
_ACT_SIGS = tuple(types.int64(types.Array(dt, 1, "C"), types.Array(dt, 1, "C"), types.boolean) for dt in _FLOATS)
_ACT_CASTS = tuple(function_caster(types.FunctionType(sig)) for sig in _ACT_SIGS)


def _slot(d, fn):
    return H_ADDR + 6 * d + 2 * fn


def _layer_slot(d, k):
    return H_LAYER + 12 * d + 2 * k


def _act_slot(d, code):
    return H_ACT + 16 * d + 2 * (code - 1)


def _dtype_index(prog, p):
    """0 (float32) or 1 (float64) when ``prog`` and ``p`` have the bound signatures' types, else None."""
    if prog != _PROG_T or not isinstance(p, types.Array) or p.ndim != 1 or p.layout != "C":
        return None
    return _FLOATS.index(p.dtype) if p.dtype in _FLOATS else None


def _literal_fn(fn):
    return fn.literal_value if isinstance(fn, types.IntegerLiteral) else None


def bound_fn(prog, p, fn):
    """The block function ``fn`` (FN_FORWARD, FN_BACKWARD, FN_TANGENT) for p's dtype, as bound in ``prog``.

    Compiled code only.  Check :func:`is_bound` first: calling an unbound slot is undefined.
    """
    raise NotImplementedError("only callable from compiled code")


def is_bound(prog, p, fn):
    """True when ``prog`` holds the address of block function ``fn`` for p's dtype (compiled code only)."""
    raise NotImplementedError("only callable from compiled code")


@overload(bound_fn, inline="always")
def _ol_bound_fn(prog, p, fn):
    d, k = _dtype_index(prog, p), _literal_fn(fn)
    if d is None or k is None:
        return None
    cast, slot = _CASTS[d][k], _slot(d, k)

    def impl(prog, p, fn):
        return cast(prog[0, slot], prog[0, slot + 1])

    return impl


@overload(is_bound, inline="always")
def _ol_is_bound(prog, p, fn):
    d, k = _dtype_index(prog, p), _literal_fn(fn)
    if d is None or k is None:
        return None
    slot = _slot(d, k)

    def impl(prog, p, fn):
        return prog[0, slot] != 0 and prog[0, slot + 1] != 0

    return impl


# The range functions below serve both the package's drivers (``via=BOUND``: block functions
# through the program's addresses) and the public batch kernels of ``smallchains.kernels``
# (``via=DIRECT``: direct calls, so that any ``chain.program`` works in users' @njit code).
# ``via`` selects the implementation at compile time by its type (None or bool).
BOUND = None
DIRECT = True


def _by_address(via):
    return isinstance(via, (types.NoneType, types.Omitted))


def ready(prog, p, via):
    """False when ``via`` is BOUND and ``prog`` lacks the forward or backward address (compiled code only)."""
    raise NotImplementedError("only callable from compiled code")


def fwd_block(prog, p, w, B, want_d, key, s0, via):
    """``block_forward_train`` called as ``via`` says (compiled code only)."""
    raise NotImplementedError("only callable from compiled code")


def bwd_block(prog, p, gp, w, B, need_input, via):
    """``block_backward`` called as ``via`` says (compiled code only)."""
    raise NotImplementedError("only callable from compiled code")


@overload(ready, inline="always")
def _ol_ready(prog, p, via):
    if not _by_address(via):
        return lambda prog, p, via: True
    return lambda prog, p, via: is_bound(prog, p, FN_FORWARD) and is_bound(prog, p, FN_BACKWARD)


@overload(fwd_block, inline="always")
def _ol_fwd_block(prog, p, w, B, want_d, key, s0, via):
    if not _by_address(via):
        return lambda prog, p, w, B, want_d, key, s0, via: block_forward_train(prog, p, w, B, want_d, key, s0)
    return lambda prog, p, w, B, want_d, key, s0, via: bound_fn(prog, p, FN_FORWARD)(prog, p, w, B, want_d, key, s0)


@overload(bwd_block, inline="always")
def _ol_bwd_block(prog, p, gp, w, B, need_input, via):
    if not _by_address(via):
        return lambda prog, p, gp, w, B, need_input, via: block_backward(prog, p, gp, w, B, need_input)
    return lambda prog, p, gp, w, B, need_input, via: bound_fn(prog, p, FN_BACKWARD)(prog, p, gp, w, B, need_input)


def layer_op(via, k, *args):
    """Image-layer function ``k`` (LAYER_*) of ``layers.conv`` on ``args``, called as ``via`` says."""
    raise NotImplementedError("only callable from compiled code")


def activate(via, prog, code, zs, ds, want_d):
    """Activation ``code`` in place on ``zs`` (derivative into ``ds`` when ``want_d``), called as ``via`` says."""
    raise NotImplementedError("only callable from compiled code")


def _star(args):
    return args[0].types if len(args) == 1 and isinstance(args[0], types.BaseTuple) else args


@overload(layer_op, jit_options=dict(_nrt=False))
def _ol_layer_op(via, k, *args):
    k = _literal_fn(k)
    if k is None:
        return None
    direct = _LAYER_FUNCTIONS[k]
    if not _by_address(via):

        def impl(via, k, *args):
            return direct(*args)

        return impl
    d = _FLOATS.index(_star(args)[2].dtype)
    cast, slot = _LAYER_CASTS[d][k], _layer_slot(d, k)

    def impl(via, k, *args):
        prog = args[0]
        return cast(prog[0, slot], prog[0, slot + 1])(*args)

    return impl


@overload(activate, inline="always")
def _ol_activate(via, prog, code, zs, ds, want_d):
    if not _by_address(via):
        return lambda via, prog, code, zs, ds, want_d: act_inplace(code, zs, ds, want_d)
    d = _FLOATS.index(zs.dtype)
    cast, base = _ACT_CASTS[d], _act_slot(d, 1)

    def impl(via, prog, code, zs, ds, want_d):
        s = base + 2 * (code - 1)
        cast(prog[0, s], prog[0, s + 1])(zs, ds, want_d)

    return impl


_bound_addresses = {}
_bind_lock = threading.Lock()


def _address(key, fn, sig):
    """(c, jit) addresses of ``fn`` for ``sig``, compiled (or loaded) once per process."""
    if key not in _bound_addresses:
        _bound_addresses[key] = addresses(fn, sig)
    return _bound_addresses[key]


def bind(prog, dtype, tangent=False):
    """Write into ``prog``'s header the addresses of the block functions for ``dtype``; returns ``prog``.

    Compiles (or loads from the cache) the bound block functions for ``dtype`` (forward and
    backward; the tangent too when ``tangent``) on first use in a process, and the functions
    of the activations and image layers this program has: a dense chain never compiles the
    convolution kernels, a tanh chain never the other activations.  The block functions'
    slots are written last (the tangent's last of all), so a program whose backward (or
    tangent) slot is set has everything it calls.
    Every Python entry point that hands a program to a driver of this module binds it first.
    Addresses belong to a process: a program copied into another process (pickled) is
    rebound there, since the header also records the process that wrote them.
    """
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise TypeError(f"the kernels run in float32 or float64, got {np.dtype(dtype)}")
    d = 0 if np.dtype(dtype) == np.float32 else 1
    head = prog[0]
    pid = os.getpid()
    if _is_bound(head, pid, d, tangent):
        return prog
    with _bind_lock:  # a chain used from several Python threads: one writer, readers see whole sets
        if not _is_bound(head, pid, d, tangent):
            _write_addresses(prog, head, pid, d, tangent)
    return prog


def _is_bound(head, pid, d, tangent):
    # the block slots are written last, backward after forward and the tangent last of all
    return (
        head[H_PID] == pid
        and head[_slot(d, FN_BACKWARD) + 1] != 0
        and (not tangent or head[_slot(d, FN_TANGENT) + 1] != 0)
    )


def _write_addresses(prog, head, pid, d, tangent):
    if head[H_PID] != pid:
        head[H_ADDR:] = 0
        head[H_PID] = pid
    rows = prog[1 : head[H_NLAYERS] + 1]
    for code in sorted({int(c) for c in rows[:, F_ACT]} - {0}):
        s = _act_slot(d, code)
        head[s], head[s + 1] = _address(("act", d, code), INPLACE[code], _ACT_SIGS[d])
    kinds = {int(k) for k in rows[:, F_KIND]}
    ops = []
    if KIND_CONV in kinds:
        ops += [LAYER_CONV_FORWARD, LAYER_CONV_BACKWARD] + ([LAYER_CONV_TANGENT] if tangent else [])
    if KIND_MAXPOOL in kinds or KIND_AVGPOOL in kinds:
        ops += [LAYER_POOL_FORWARD, LAYER_POOL_BACKWARD] + ([LAYER_POOL_TANGENT] if tangent else [])
    for k in ops:
        s = _layer_slot(d, k)
        head[s], head[s + 1] = _address(("layer", d, k), _LAYER_FUNCTIONS[k], _LAYER_SIGS[d][k])
    for k in (FN_FORWARD, FN_BACKWARD, FN_TANGENT) if tangent else (FN_FORWARD, FN_BACKWARD):
        s = _slot(d, k)
        head[s], head[s + 1] = _address(("block", d, k), _BLOCK_FUNCTIONS[k], _SIGS[d][k])


@kernel
def block_loss(code, lpar, w, yo, go, to, m, B, nb, labels, idx, use_idx, i0, scale, want_grad):
    """Sum over the block's ``nb`` samples of the per-sample loss of the output at ``yo``.

    Regression targets are read from the block at ``to`` (gathered by ``gather_block``);
    cross-entropy labels from ``labels`` through the row index.  When ``want_grad``,
    writes the cotangent (times ``scale``) into ``w[go : go+m*B]``, zero for the
    padding samples.  Returns (loss_sum as float64, status).
    """
    total = 0.0
    if code == LOSS_LOGITCE:
        for s in range(nb):
            r = idx[i0 + s] if use_idx else i0 + s
            lab = labels[r]
            if lab < 0 or lab >= m:
                return total, LABEL_OUT_OF_RANGE
            zmax = -np.inf
            for j in range(m):
                z = w[yo + j * B + s]
                if z > zmax:
                    zmax = z
            se = 0.0
            for j in range(m):
                se += math.exp(w[yo + j * B + s] - zmax)
            lse = zmax + math.log(se)
            total += lse - w[yo + lab * B + s]
            if want_grad:
                for j in range(m):
                    pj = math.exp(w[yo + j * B + s] - lse)
                    if j == lab:
                        pj -= 1.0
                    w[go + j * B + s] = pj * scale
    else:
        # scalars in the block's dtype (a float64 scalar would widen the float32 loops)
        w[go] = 2.0 * scale
        two_scale = w[go]
        w[go] = scale
        sc = w[go]
        w[go] = lpar[0]
        delta = w[go]
        w[go] = 0.5 * lpar[0]
        half_delta = w[go]
        for j in range(m):
            yr = w[yo + j * B : yo + j * B + nb]
            tr = w[to + j * B : to + j * B + nb]
            gr = w[go + j * B : go + j * B + nb]
            acc = yr[0] - yr[0]
            if code == LOSS_SQUARED:
                for s in range(nb):
                    res = yr[s] - tr[s]
                    acc += res * res
                    if want_grad:
                        gr[s] = two_scale * res
            elif code == LOSS_ABSOLUTE:
                for s in range(nb):
                    res = yr[s] - tr[s]
                    acc += abs(res)
                    if want_grad:
                        gr[s] = sc if res > 0 else (-sc if res < 0 else res - res)
            else:  # Huber
                for s in range(nb):
                    res = yr[s] - tr[s]
                    a = abs(res)
                    inside = a <= delta
                    acc += res * res * 0.5 if inside else delta * (a - half_delta)
                    if want_grad:
                        gr[s] = sc * (res if inside else (delta if res > 0 else -delta))
            total += acc
    if want_grad and nb < B:
        for j in range(m):
            gr = w[go + j * B : go + (j + 1) * B]
            for s in range(nb, B):
                gr[s] = 0
    return total, OK


# --------------------------------------------------------------------------- ranges (one thread)


@kernel
def copy_cols(XT, i0, nb, w, wo, B):
    """w[wo + k*B + s] <- XT[k, i0+s] for s < nb from pre-transposed (k, n) data; pads with 0.

    Returns the number of non-finite values met."""
    bad = 0
    for k in range(XT.shape[0]):
        src = XT[k, i0 : i0 + nb]
        wk = w[wo + k * B : wo + (k + 1) * B]
        for s in range(nb):
            v = src[s]
            bad += not (abs(v) <= FMAX)
            wk[s] = v
        for s in range(nb, B):
            wk[s] = 0
    return bad


#: How ``valgrad`` reads the samples: rows of (n, d) arrays in order, rows through a
#: permutation ``idx`` (minibatches), or columns of pre-transposed (d, n) arrays
#: (full-batch training transposes the data once per call instead of every epoch).
ROWS = 0
ROWS_IDX = 1
COLUMNS = 2


@kernel
def reduce_slabs(out, slabs):
    """out <- sum over threads of slabs[t] in thread order (deterministic, no atomics)."""
    n = out.shape[0]
    s0 = slabs[0]
    for i in range(n):
        out[i] = s0[i]
    for t in range(1, slabs.shape[0]):
        st = slabs[t]
        for i in range(n):
            out[i] += st[i]


@kernel
def first_error(stats):
    """The first non-OK status in thread order, or OK."""
    for t in range(stats.shape[0]):
        if stats[t] != OK:
            return stats[t]
    return OK


@kernel
def valgrad_range(prog, p, X, idx, mode, i0, i1, T, labels, code, lpar, scale, gp, w, B, want_grad, key):
    """Loss sum over samples [i0, i1) read as ``mode`` says; accumulates scale*dL/dp into ``gp``.

    ``key >= 0``: training mode (dropout masks from ``key`` and the sample positions)."""
    if not (is_bound(prog, p, FN_FORWARD) and is_bound(prog, p, FN_BACKWARD)):
        return 0.0, NOT_BOUND
    fwd = bound_fn(prog, p, FN_FORWARD)
    bwd = bound_fn(prog, p, FN_BACKWARD)
    use_idx = mode == ROWS_IDX
    total = 0.0
    m = prog[0, H_NOUT]
    go = prog[0, H_G1] * B
    to = prog[0, H_T] * B
    i = i0
    while i < i1:
        nb = min(B, i1 - i)
        if mode == COLUMNS:
            chk = copy_cols(X, i, nb, w, 0, B)
            if code != LOSS_LOGITCE:
                copy_cols(T, i, nb, w, to, B)
        else:
            chk = gather_block(X, idx, use_idx, i, nb, w, B, 0)
            if code != LOSS_LOGITCE:
                gather_block(T, idx, use_idx, i, nb, w, B, to)
        if chk != 0:
            return total, NONFINITE_INPUT
        yo = fwd(prog, p, w, B, want_grad, key, i)
        val, st = block_loss(code, lpar, w, yo, go, to, m, B, nb, labels, idx, use_idx, i, scale, want_grad)
        if st != OK:
            return total, st
        total += val
        if want_grad:
            bwd(prog, p, gp, w, B, False)
        i += nb
    return total, OK


@parallel_kernel
def _valgrad_threads(
    prog, p, X, idx, mode, i0, i1, T, labels, code, lpar, scale, slabs, work, B, losses, stats, want_grad, key
):
    nt = slabs.shape[0]
    n = i1 - i0
    chunk = (n + nt - 1) // nt
    for t in numba.prange(nt):
        a = i0 + t * chunk
        b = min(i1, a + chunk)
        slab = slabs[t]
        slab[:] = 0
        losses[t] = 0.0
        stats[t] = OK
        if a < b:
            losses[t], stats[t] = valgrad_range(
                prog, p, X, idx, mode, a, b, T, labels, code, lpar, scale, slab, work[t], B, want_grad, key
            )


@kernel
def valgrad(prog, p, X, idx, mode, i0, i1, T, labels, code, lpar, g, slabs, work, losses, stats, want_grad, key):
    """Mean loss over samples [i0, i1) and, when ``want_grad``, its gradient written into ``g``.

    ``mode``: ROWS (X (n, d), T (n, m)), ROWS_IDX (the same through the permutation
    ``idx``) or COLUMNS (XT (d, n), TT (m, n), pre-transposed).

    Splits the range over ``slabs.shape[0]`` threads (one slab and one workspace
    row each); the slabs are reduced into ``g`` in thread order, so the result
    does not depend on scheduling.  ``key``: -1 for inference, else the dropout key of
    this step (training).  Returns (mean loss, status).
    """
    nt = slabs.shape[0]
    B = work.shape[1] // prog[0, H_UNITS]
    n = i1 - i0
    scale = 1.0 / n
    if nt == 1 or n <= B:
        if want_grad:
            g[:] = 0
        total, st = valgrad_range(
            prog, p, X, idx, mode, i0, i1, T, labels, code, lpar, scale, g, work[0], B, want_grad, key
        )
        return total * scale, st
    _valgrad_threads(
        prog, p, X, idx, mode, i0, i1, T, labels, code, lpar, scale, slabs, work, B, losses, stats, want_grad, key
    )
    total = 0.0
    for t in range(nt):
        if stats[t] != OK:
            return total, stats[t]
        total += losses[t]
    if want_grad:
        reduce_slabs(g, slabs)
    return total * scale, OK


@kernel
def forward_range(prog, p, X, Y, i0, i1, w, B, via):
    """Y[i0:i1] <- chain(X[i0:i1]) (row-major (n, m)); returns status.  ``via``: BOUND or DIRECT."""
    if not ready(prog, p, via):
        return NOT_BOUND
    m = prog[0, H_NOUT]
    dummy = prog[0]  # any int64 vector: not read when use_idx is False
    i = i0
    while i < i1:
        nb = min(B, i1 - i)
        if gather_block(X, dummy, False, i, nb, w, B, 0) != 0:
            return NONFINITE_INPUT
        yo = fwd_block(prog, p, w, B, False, -1, 0, via)
        for s in range(nb):
            for j in range(m):
                Y[i + s, j] = w[yo + j * B + s]
        i += nb
    return OK


@parallel_kernel
def _forward_threads(prog, p, X, Y, work, B, stats):
    nt = work.shape[0]
    n = X.shape[0]
    chunk = (n + nt - 1) // nt
    for t in numba.prange(nt):
        a = t * chunk
        b = min(n, a + chunk)
        stats[t] = OK
        if a < b:
            stats[t] = forward_range(prog, p, X, Y, a, b, work[t], B, BOUND)


@kernel
def forward(prog, p, X, Y, work, stats):
    """Y <- chain(X) for a (n, d) batch, threads over ``work.shape[0]``; returns status."""
    B = work.shape[1] // prog[0, H_UNITS]
    n = X.shape[0]
    if work.shape[0] == 1 or n <= B:
        return forward_range(prog, p, X, Y, 0, n, work[0], B, BOUND)
    _forward_threads(prog, p, X, Y, work, B, stats)
    return first_error(stats)


@kernel
def vjp_range(prog, p, V, X, i0, i1, gp, GX, want_x, w, B, via):
    """gp += sum over samples of V[s]^T dchain/dp; GX[s] <- V[s]^T dchain/dx when want_x.

    ``via``: BOUND or DIRECT (see ``fwd_block``)."""
    if not ready(prog, p, via):
        return NOT_BOUND
    d = prog[0, H_NIN]
    go = prog[0, H_G1] * B
    dummy = prog[0]  # any int64 vector: not read when use_idx is False
    i = i0
    while i < i1:
        nb = min(B, i1 - i)
        if gather_block(X, dummy, False, i, nb, w, B, 0) != 0:
            return NONFINITE_INPUT
        fwd_block(prog, p, w, B, True, -1, 0, via)
        if gather_block(V, dummy, False, i, nb, w, B, go) != 0:  # the cotangent, zero-padded
            return NONFINITE_INPUT
        xo = bwd_block(prog, p, gp, w, B, want_x, via)
        if want_x:
            for s in range(nb):
                for k in range(d):
                    GX[i + s, k] = w[xo + k * B + s]
        i += nb
    return OK


@parallel_kernel
def _vjp_threads(prog, p, V, X, slabs, GX, want_x, work, B, stats):
    nt = work.shape[0]
    n = X.shape[0]
    chunk = (n + nt - 1) // nt
    for t in numba.prange(nt):
        a = t * chunk
        b = min(n, a + chunk)
        slab = slabs[t]
        slab[:] = 0
        stats[t] = OK
        if a < b:
            stats[t] = vjp_range(prog, p, V, X, a, b, slab, GX, want_x, work[t], B, BOUND)


@kernel
def vjp(prog, p, V, X, out, GX, want_x, slabs, work, stats):
    """out <- sum_s V[s]^T dchain/dp (overwrites); GX <- per-sample input cotangents."""
    B = work.shape[1] // prog[0, H_UNITS]
    n = X.shape[0]
    nt = work.shape[0]
    if nt == 1 or n <= B:
        out[:] = 0
        return vjp_range(prog, p, V, X, 0, n, out, GX, want_x, work[0], B, BOUND)
    _vjp_threads(prog, p, V, X, slabs, GX, want_x, work, B, stats)
    st = first_error(stats)
    if st == OK:
        reduce_slabs(out, slabs)
    return st


@kernel
def jvp(prog, p, X, DX, dp, use_dx, use_dp, Y, DY, w):
    """Y <- chain(X) and DY <- dchain/dx . DX + dchain/dp . dp, row-major batches; one thread."""
    if not (is_bound(prog, p, FN_FORWARD) and is_bound(prog, p, FN_TANGENT)):
        return NOT_BOUND
    fwd = bound_fn(prog, p, FN_FORWARD)
    tan = bound_fn(prog, p, FN_TANGENT)
    B = w.shape[0] // prog[0, H_UNITS]
    m = prog[0, H_NOUT]
    d = prog[0, H_NIN]
    g1 = prog[0, H_G1] * B
    dummy = prog[0]  # any int64 vector: not read when use_idx is False
    n = X.shape[0]
    i = 0
    while i < n:
        nb = min(B, n - i)
        if gather_block(X, dummy, False, i, nb, w, B, 0) != 0:
            return NONFINITE_INPUT
        yo = fwd(prog, p, w, B, True, -1, 0)
        if use_dx:
            for k in range(d):
                for s in range(nb):
                    w[g1 + k * B + s] = DX[i + s, k]
                for s in range(nb, B):
                    w[g1 + k * B + s] = 0
        to = tan(prog, p, dp, w, B, use_dx, use_dp)
        for s in range(nb):
            for j in range(m):
                Y[i + s, j] = w[yo + j * B + s]
                DY[i + s, j] = w[to + j * B + s]
        i += nb
    return OK


# --------------------------------------------------------------------------- one sample, bound
# The right-hand sides of neural ODEs and UDEs: one sample through the bound block functions.
# Callers (``ode``) size ``work`` and the vectors when they build their contexts, so these
# check only the binding; the public, checked versions are ``smallchains.kernels``'.


@kernel
def sample_forward(prog, y, x, p, work):
    """y <- chain(x) for one sample; returns a status."""
    if not is_bound(prog, p, FN_FORWARD):
        return NOT_BOUND
    for k in range(prog[0, H_NIN]):
        work[k] = x[k]
    yo = bound_fn(prog, p, FN_FORWARD)(prog, p, work, 1, False, -1, 0)
    for j in range(prog[0, H_NOUT]):
        y[j] = work[yo + j]
    return OK


@kernel
def sample_vjp(prog, lp, p, v, x, lx, work):
    """lp += v^T dchain/dp and lx <- v^T dchain/dx at one sample ``x``; returns a status."""
    if not (is_bound(prog, p, FN_FORWARD) and is_bound(prog, p, FN_BACKWARD)):
        return NOT_BOUND
    for k in range(prog[0, H_NIN]):
        work[k] = x[k]
    bound_fn(prog, p, FN_FORWARD)(prog, p, work, 1, True, -1, 0)
    g1 = prog[0, H_G1]
    for j in range(prog[0, H_NOUT]):
        work[g1 + j] = v[j]
    xo = bound_fn(prog, p, FN_BACKWARD)(prog, p, lp, work, 1, True)
    for k in range(prog[0, H_NIN]):
        lx[k] = work[xo + k]
    return OK


@kernel
def sample_jvp(prog, y, out, p, x, dx, dp, work):
    """y <- chain(x) and out <- dchain/dx . dx + dchain/dp . dp at one sample; returns a status."""
    if not (is_bound(prog, p, FN_FORWARD) and is_bound(prog, p, FN_TANGENT)):
        return NOT_BOUND
    d = prog[0, H_NIN]
    for k in range(d):
        work[k] = x[k]
    yo = bound_fn(prog, p, FN_FORWARD)(prog, p, work, 1, True, -1, 0)
    g1 = prog[0, H_G1]
    for k in range(d):
        work[g1 + k] = dx[k]
    use_dp = False  # (a direction that moves no weight, e.g. a random effect's: no weight tangents)
    for k in range(dp.shape[0]):
        if dp[k] != 0.0:
            use_dp = True
            break
    to = bound_fn(prog, p, FN_TANGENT)(prog, p, dp, work, 1, True, use_dp)
    for j in range(prog[0, H_NOUT]):
        y[j] = work[yo + j]
        out[j] = work[to + j]
    return OK


# --------------------------------------------------------------------------- penalties


@kernel
def penalty(prog, p, g, code, lam, want_grad):
    """Value of the weight penalty (L1: code 1, L2: code 2; biases excluded); adds its gradient to g."""
    if code == 0:
        return 0.0
    L = prog[0, H_NLAYERS]
    total = 0.0
    for l in range(1, L + 1):
        a = prog[l, F_WOFF]
        b = a + prog[l, F_NW]
        if code == 1:
            for i in range(a, b):
                v = p[i]
                total += abs(v)
                if want_grad:
                    g[i] += lam if v > 0 else (-lam if v < 0 else 0.0)
        else:
            for i in range(a, b):
                v = p[i]
                total += v * v
                if want_grad:
                    g[i] += 2.0 * lam * v
    return lam * total


@kernel
def is_finite(x):
    return abs(x) <= FMAX


@kernel
def all_finite(g):
    """True when every entry of ``g`` is finite (one vectorised pass)."""
    bad = 0
    for i in range(g.shape[0]):
        bad += not (abs(g[i]) <= FMAX)
    return bad == 0


def num_params(prog):
    return int(prog[0, H_NPARAMS])
