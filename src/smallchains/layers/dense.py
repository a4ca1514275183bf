"""Dense-layer kernels on feature-major blocks.

Layout used by every block kernel: a block of ``B`` samples of a ``k``-feature
quantity is stored feature-major in a flat 1-D array, element ``(feature f,
sample s)`` at ``buf[off + f*B + s]``.  The batch is therefore the contiguous
dimension, and LLVM vectorises the inner loops across samples.  The weight
matrix ``W`` (``nout x nin``, row-major, PyTorch's layout) and the bias ``b``
live inside the flat parameter vector ``p`` at offsets ``woff`` and ``boff``.

All functions here write only the output ranges named in their docstrings and
never allocate.  Tiles of four rows share each load of the input row, which
keeps the inner loop at one load per four fused multiply-adds.
"""

from __future__ import annotations

from .._jit import kernel


@kernel
def dense_forward(p, woff, boff, has_bias, nin, nout, x, xo, y, yo, B):
    """y[yo : yo+nout*B] <- W @ x[xo : xo+nin*B] (+ b).  ``x`` and ``y`` must not overlap."""
    for j in range(nout):
        r = yo + j * B
        if has_bias:
            bj = p[boff + j]
            for s in range(B):
                y[r + s] = bj
        else:
            for s in range(B):
                y[r + s] = 0
    j = 0
    while j + 4 <= nout:
        r0 = yo + j * B
        r1 = r0 + B
        r2 = r1 + B
        r3 = r2 + B
        w = woff + j * nin
        for k in range(nin):
            w0 = p[w + k]
            w1 = p[w + nin + k]
            w2 = p[w + 2 * nin + k]
            w3 = p[w + 3 * nin + k]
            xr = xo + k * B
            for s in range(B):
                xv = x[xr + s]
                y[r0 + s] += w0 * xv
                y[r1 + s] += w1 * xv
                y[r2 + s] += w2 * xv
                y[r3 + s] += w3 * xv
        j += 4
    while j < nout:
        r0 = yo + j * B
        w = woff + j * nin
        for k in range(nin):
            w0 = p[w + k]
            xr = xo + k * B
            for s in range(B):
                y[r0 + s] += w0 * x[xr + s]
        j += 1


@kernel
def dense_pullback_params(p, gp, woff, boff, has_bias, nin, nout, x, xo, g, go, B):
    """gp[W] += g @ x.T and gp[b] += g.sum(axis=samples); accumulates, never overwrites.

    ``g`` is the cotangent of the layer's pre-activation output (nout x B at ``go``),
    ``x`` the layer input (nin x B at ``xo``).  ``p`` is not read (kept for symmetry).
    """
    if has_bias:
        for j in range(nout):
            r = go + j * B
            acc = g[r] - g[r]
            for s in range(B):
                acc += g[r + s]
            gp[boff + j] += acc
    j = 0
    while j + 4 <= nout:
        r0 = go + j * B
        r1 = r0 + B
        r2 = r1 + B
        r3 = r2 + B
        w = woff + j * nin
        for k in range(nin):
            xr = xo + k * B
            a0 = x[xr] - x[xr]
            a1 = a0
            a2 = a0
            a3 = a0
            for s in range(B):
                xv = x[xr + s]
                a0 += g[r0 + s] * xv
                a1 += g[r1 + s] * xv
                a2 += g[r2 + s] * xv
                a3 += g[r3 + s] * xv
            gp[w + k] += a0
            gp[w + nin + k] += a1
            gp[w + 2 * nin + k] += a2
            gp[w + 3 * nin + k] += a3
        j += 4
    while j < nout:
        r0 = go + j * B
        w = woff + j * nin
        for k in range(nin):
            xr = xo + k * B
            a0 = x[xr] - x[xr]
            for s in range(B):
                a0 += g[r0 + s] * x[xr + s]
            gp[w + k] += a0
        j += 1


@kernel
def dense_pullback_input(p, woff, nin, nout, g, go, gx, gxo, B):
    """gx[gxo : gxo+nin*B] <- W.T @ g[go : go+nout*B] (overwrites).  ``g`` and ``gx`` must not overlap."""
    for t in range(nin * B):
        gx[gxo + t] = 0
    k = 0
    while k + 4 <= nin:
        r0 = gxo + k * B
        r1 = r0 + B
        r2 = r1 + B
        r3 = r2 + B
        for j in range(nout):
            w = woff + j * nin + k
            w0 = p[w]
            w1 = p[w + 1]
            w2 = p[w + 2]
            w3 = p[w + 3]
            gr = go + j * B
            for s in range(B):
                gv = g[gr + s]
                gx[r0 + s] += w0 * gv
                gx[r1 + s] += w1 * gv
                gx[r2 + s] += w2 * gv
                gx[r3 + s] += w3 * gv
        k += 4
    while k < nin:
        r0 = gxo + k * B
        for j in range(nout):
            w0 = p[woff + j * nin + k]
            gr = go + j * B
            for s in range(B):
                gx[r0 + s] += w0 * g[gr + s]
        k += 1


@kernel
def dense_tangent(p, dp, woff, boff, has_bias, nin, nout, x, xo, dx, dxo, use_dx, use_dp, t, to, B):
    """Forward-mode tangent of the pre-activation: t <- W @ dx + dW @ x (+ db) (overwrites t).

    ``dp`` is the parameter tangent (same layout as ``p``); ``use_dx``/``use_dp`` switch the
    two terms off (a term that is off is not read).  ``t`` must not overlap ``x`` or ``dx``.
    """
    for j in range(nout):
        r = to + j * B
        if use_dp and has_bias:
            bj = dp[boff + j]
            for s in range(B):
                t[r + s] = bj
        else:
            for s in range(B):
                t[r + s] = 0
    for j in range(nout):
        r0 = to + j * B
        w = woff + j * nin
        for k in range(nin):
            if use_dx:
                w0 = p[w + k]
                xr = dxo + k * B
                for s in range(B):
                    t[r0 + s] += w0 * dx[xr + s]
            if use_dp:
                d0 = dp[w + k]
                xr = xo + k * B
                for s in range(B):
                    t[r0 + s] += d0 * x[xr + s]


# --------------------------------------------------------------------------- the layer object

import numpy as np  # noqa: E402

from .._program import KIND_DENSE  # noqa: E402
from ._base import Layer, as_activation  # noqa: E402


class Dense(Layer):
    """Fully connected layer ``y = f(W x + b)`` with ``W`` of shape (out, in).

    Args:
        out: number of output units (a positive integer).
        activation: an element-wise activation (``sc.tanh``, ``sc.relu`` ...), fused
            into the layer's kernels; default ``sc.identity``.
        bias: whether the layer has a bias vector ``b``.

    Parameters in the flat vector, in this order: ``W`` row-major, then ``b``.
    Initialisation: Glorot (Xavier) uniform for ``W``, zeros for ``b``.

    Example::

        chain = sc.SimpleChain(4, sc.Dense(32, sc.tanh), sc.Dense(4))
    """

    kind_name = "dense"

    def __init__(self, out, activation=None, bias=True):
        if isinstance(out, bool) or not isinstance(out, (int, np.integer)) or out < 1:
            raise ValueError(f"Dense: `out` must be a positive integer, got {out!r}")
        self.out = int(out)
        self.activation = as_activation(activation)
        self.bias = bool(bias)

    def output_size(self, nin):
        return self.out

    def num_params(self, nin):
        return self.out * nin + (self.out if self.bias else 0)

    def macs_per_sample(self, nin):
        return self.out * nin

    def program_row(self, nin):
        return (KIND_DENSE, self.out, self.activation.code, int(self.bias), self.num_params(nin))

    def init_params(self, view, nin, rng):
        limit = np.sqrt(6.0 / (nin + self.out))
        view[: self.out * nin] = rng.uniform(-limit, limit, size=self.out * nin)
        view[self.out * nin:] = 0

    def param_views(self, view, nin):
        W = view[: self.out * nin].reshape(self.out, nin)
        if self.bias:
            return (W, view[self.out * nin:])
        return (W, None)

    def describe(self):
        return {"kind": "Dense", "out": self.out, "activation": self.activation.name, "bias": self.bias}

    def __repr__(self):
        act = "" if self.activation.code == 0 else f", {self.activation!r}"
        nb = "" if self.bias else ", bias=False"
        return f"Dense({self.out}{act}{nb})"
