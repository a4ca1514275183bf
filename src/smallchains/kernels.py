"""Compiled, non-allocating chain operations to call from your own ``@njit`` code.

Every function takes the chain's *program* (``chain.program``, an int64 array
that describes the layers) as its first argument, then in-place outputs, then
inputs, then a workspace.  They are ordinary Numba dispatchers compiled once per
dtype and cached on disk, so your own ``@njit(cache=True)`` solver can call them
and be cached too; a new network shape costs no compilation.

Workspace: a 1-D array of the parameters' dtype with at least
``chain.work_size(batch)`` elements (``batch=1`` for the single-sample
functions).  Every call overwrites it entirely; its contents after a call are
unspecified.  One workspace per thread.

Aliasing contract (all functions): outputs must not overlap each other, the
inputs, the parameters or the workspace.  Inputs are never written.

Example, a hand-written explicit Euler step of a neural ODE and its adjoint::

    import numba, numpy as np, smallchains as sc
    from smallchains import kernels as K

    chain = sc.SimpleChain(2, sc.Dense(50, sc.tanh), sc.Dense(2))
    prog, p = chain.program, chain.init_params(dtype=np.float64)
    work = np.empty(chain.work_size(1))

    @numba.njit
    def euler_adjoint_step(u, lam, gp, h, prog, p, work, du, gu):
        K.forward_into(prog, du, u, p, work)          # du = f(u)
        K.vjp_into(prog, gp, p, lam, u, gu, work)     # gp = lam^T df/dp, gu = lam^T df/du
        ...

Status: each function returns 0 on success, 1 when its input ``x`` holds a
NaN or Inf, 6 when ``work`` is smaller than ``chain.work_size(1)``, and 7 when
another array is shorter than the chain needs or a batch has the wrong shape
(nothing is written then; the checks are a few integer compares, bounds checks
being off inside the kernels).  ``smallchains._errors.raise_for_status`` turns
a status into the exception the Python API raises.
"""

from __future__ import annotations

from . import _engine as E
from ._jit import kernel
from ._program import BLOCK, H_G1, H_NIN, H_NOUT, H_NPARAMS, H_UNITS


@kernel
def work_size(prog, batch):
    """Elements needed by a workspace for ``batch`` samples at a time (blocks of at most BLOCK)."""
    b = min(max(batch, 1), BLOCK)
    return prog[0, H_UNITS] * b


@kernel
def _load_sample(prog, x, p, work):
    """work[:d] <- x after checking sizes and that x is finite; returns a status."""
    if work.shape[0] < prog[0, H_UNITS]:
        return E.WORK_TOO_SMALL
    if x.shape[0] < prog[0, H_NIN] or p.shape[0] < prog[0, H_NPARAMS]:
        return E.BAD_SHAPE
    bad = 0
    for k in range(prog[0, H_NIN]):
        v = x[k]
        bad += not (abs(v) <= E.FMAX)
        work[k] = v
    return E.NONFINITE_INPUT if bad else E.OK


@kernel
def forward_into(prog, y, x, p, work):
    """y <- chain(x) for one sample: ``x`` of shape (d,), ``y`` of shape (m,) (overwritten)."""
    m = prog[0, H_NOUT]
    if y.shape[0] < m:
        return E.BAD_SHAPE
    st = _load_sample(prog, x, p, work)
    if st != E.OK:
        return st
    yo = E.block_forward(prog, p, work, 1, False)
    for j in range(m):
        y[j] = work[yo + j]
    return E.OK


@kernel
def vjp_into(prog, out, p, v, x, out_x, work):
    """out <- v^T d chain/d p at one sample ``x`` (overwritten, length num_params);
    out_x <- v^T d chain/d x (shape (d,)) unless ``out_x`` is None.  ``v`` has shape (m,).

    The forward pass is recomputed inside (nothing is kept between calls).
    """
    if out.shape[0] < prog[0, H_NPARAMS]:
        return E.BAD_SHAPE
    out[:] = 0
    return vjp_accumulate(prog, out, p, v, x, out_x, work)


@kernel
def vjp_accumulate(prog, out, p, v, x, out_x, work):
    """As :func:`vjp_into` but ``out += v^T d chain/d p`` (accumulates; adjoint quadratures)."""
    d = prog[0, H_NIN]
    m = prog[0, H_NOUT]
    if out.shape[0] < prog[0, H_NPARAMS] or v.shape[0] < m:
        return E.BAD_SHAPE
    if out_x is not None:
        if out_x.shape[0] < d:
            return E.BAD_SHAPE
    st = _load_sample(prog, x, p, work)
    if st != E.OK:
        return st
    E.block_forward(prog, p, work, 1, True)
    g1 = prog[0, H_G1]
    for j in range(m):
        work[g1 + j] = v[j]
    if out_x is None:
        E.block_backward(prog, p, out, work, 1, False)
    else:
        xo = E.block_backward(prog, p, out, work, 1, True)
        for k in range(d):
            out_x[k] = work[xo + k]
    return E.OK


@kernel
def jvp_into(prog, y, out, p, x, dx, dp, work):
    """Forward mode at one sample: y <- chain(x), out <- d chain/d x . dx + d chain/d p . dp.

    ``dx`` (shape (d,)) or ``dp`` (length num_params) may be None (a zero tangent).
    """
    d = prog[0, H_NIN]
    m = prog[0, H_NOUT]
    if y.shape[0] < m or out.shape[0] < m:
        return E.BAD_SHAPE
    if dx is not None:
        if dx.shape[0] < d:
            return E.BAD_SHAPE
    if dp is not None:
        if dp.shape[0] < prog[0, H_NPARAMS]:
            return E.BAD_SHAPE
    st = _load_sample(prog, x, p, work)
    if st != E.OK:
        return st
    yo = E.block_forward(prog, p, work, 1, True)
    g1 = prog[0, H_G1]
    if dx is not None:
        for k in range(d):
            work[g1 + k] = dx[k]
    if dp is None:
        to = E.block_tangent(prog, p, p, work, 1, dx is not None, False)
    else:
        to = E.block_tangent(prog, p, dp, work, 1, dx is not None, True)
    for j in range(m):
        y[j] = work[yo + j]
        out[j] = work[to + j]
    return E.OK


@kernel
def forward_batch_into(prog, Y, X, p, work):
    """Y <- chain(X) for a batch: ``X`` (n, d), ``Y`` (n, m), one thread."""
    B = min(work.shape[0] // prog[0, H_UNITS], BLOCK)
    if B < 1:
        return E.WORK_TOO_SMALL
    n = X.shape[0]
    if (
        X.shape[1] != prog[0, H_NIN]
        or Y.shape[0] < n
        or Y.shape[1] != prog[0, H_NOUT]
        or p.shape[0] < prog[0, H_NPARAMS]
    ):
        return E.BAD_SHAPE
    return E.forward_range(prog, p, X, Y, 0, X.shape[0], work, B, E.DIRECT)


@kernel
def vjp_batch_into(prog, out, p, V, X, out_x, work):
    """out <- sum_s V[s]^T d chain/d p (overwritten); out_x[s] <- V[s]^T d chain/d x unless None."""
    B = min(work.shape[0] // prog[0, H_UNITS], BLOCK)
    if B < 1:
        return E.WORK_TOO_SMALL
    n = X.shape[0]
    if (
        X.shape[1] != prog[0, H_NIN]
        or V.shape[0] < n
        or V.shape[1] != prog[0, H_NOUT]
        or p.shape[0] < prog[0, H_NPARAMS]
        or out.shape[0] < prog[0, H_NPARAMS]
    ):
        return E.BAD_SHAPE
    if out_x is not None:
        if out_x.shape[0] < n or out_x.shape[1] != prog[0, H_NIN]:
            return E.BAD_SHAPE
    out[:] = 0
    if out_x is None:
        return E.vjp_range(prog, p, V, X, 0, X.shape[0], out, X, False, work, B, E.DIRECT)  # X: not written
    return E.vjp_range(prog, p, V, X, 0, X.shape[0], out, out_x, True, work, B, E.DIRECT)
