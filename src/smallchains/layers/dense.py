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

Indexing rule (measured: 5 vs 33 GFLOP/s): inner loops index 1-D *views* that
start at the row (``x[xo + k*B : ...]``) with the bare loop counter.  An index
of the form ``offset + s`` with a runtime offset keeps Numba's negative-index
wraparound check in the loop, and LLVM then does not vectorise it.
"""

from __future__ import annotations

from .._jit import kernel


@kernel
def gemm_acc(A, aoff, sr, sc, R, C, x, xo, y, yo, B):
    """y[r, s] += sum_c A[aoff + r*sr + c*sc] * x[c, s] for r < R, c < C (blocks of B samples).

    ``x`` holds C rows and ``y`` R rows of B samples at element offsets ``xo``/``yo``.
    With (sr, sc) = (nin, 1) ``A`` is W; with (1, nin) it is W transposed.  Register
    tile: 4 output rows x 4 reduction rows, so each inner iteration does 16 FMAs
    for 4 loads of ``x``, 4 loads and 4 stores of ``y`` (measured 65-95 GFLOP/s
    per core in float32 against 35-50 for a 4 x 1 tile).  ``x`` and ``y`` must not overlap.
    """
    r = 0
    while r + 4 <= R:
        y0 = y[yo + r * B : yo + (r + 1) * B]
        y1 = y[yo + (r + 1) * B : yo + (r + 2) * B]
        y2 = y[yo + (r + 2) * B : yo + (r + 3) * B]
        y3 = y[yo + (r + 3) * B : yo + (r + 4) * B]
        a = aoff + r * sr
        c = 0
        while c + 4 <= C:
            b = a + c * sc
            a00 = A[b]
            a01 = A[b + sc]
            a02 = A[b + 2 * sc]
            a03 = A[b + 3 * sc]
            a10 = A[b + sr]
            a11 = A[b + sr + sc]
            a12 = A[b + sr + 2 * sc]
            a13 = A[b + sr + 3 * sc]
            a20 = A[b + 2 * sr]
            a21 = A[b + 2 * sr + sc]
            a22 = A[b + 2 * sr + 2 * sc]
            a23 = A[b + 2 * sr + 3 * sc]
            a30 = A[b + 3 * sr]
            a31 = A[b + 3 * sr + sc]
            a32 = A[b + 3 * sr + 2 * sc]
            a33 = A[b + 3 * sr + 3 * sc]
            x0 = x[xo + c * B : xo + (c + 1) * B]
            x1 = x[xo + (c + 1) * B : xo + (c + 2) * B]
            x2 = x[xo + (c + 2) * B : xo + (c + 3) * B]
            x3 = x[xo + (c + 3) * B : xo + (c + 4) * B]
            for s in range(B):
                v0 = x0[s]
                v1 = x1[s]
                v2 = x2[s]
                v3 = x3[s]
                y0[s] += a00 * v0 + a01 * v1 + a02 * v2 + a03 * v3
                y1[s] += a10 * v0 + a11 * v1 + a12 * v2 + a13 * v3
                y2[s] += a20 * v0 + a21 * v1 + a22 * v2 + a23 * v3
                y3[s] += a30 * v0 + a31 * v1 + a32 * v2 + a33 * v3
            c += 4
        while c < C:
            b = a + c * sc
            a00 = A[b]
            a10 = A[b + sr]
            a20 = A[b + 2 * sr]
            a30 = A[b + 3 * sr]
            x0 = x[xo + c * B : xo + (c + 1) * B]
            for s in range(B):
                v0 = x0[s]
                y0[s] += a00 * v0
                y1[s] += a10 * v0
                y2[s] += a20 * v0
                y3[s] += a30 * v0
            c += 1
        r += 4
    while r < R:
        y0 = y[yo + r * B : yo + (r + 1) * B]
        a = aoff + r * sr
        c = 0
        while c + 4 <= C:
            b = a + c * sc
            a00 = A[b]
            a01 = A[b + sc]
            a02 = A[b + 2 * sc]
            a03 = A[b + 3 * sc]
            x0 = x[xo + c * B : xo + (c + 1) * B]
            x1 = x[xo + (c + 1) * B : xo + (c + 2) * B]
            x2 = x[xo + (c + 2) * B : xo + (c + 3) * B]
            x3 = x[xo + (c + 3) * B : xo + (c + 4) * B]
            for s in range(B):
                y0[s] += a00 * x0[s] + a01 * x1[s] + a02 * x2[s] + a03 * x3[s]
            c += 4
        while c < C:
            a00 = A[a + c * sc]
            x0 = x[xo + c * B : xo + (c + 1) * B]
            for s in range(B):
                y0[s] += a00 * x0[s]
            c += 1
        r += 1


@kernel
def fill_rows(y, yo, R, B, v, voff, use_v):
    """y[r, s] <- v[voff + r] (or 0 when not use_v) for r < R, s < B."""
    for r in range(R):
        yr = y[yo + r * B : yo + (r + 1) * B]
        if use_v:
            vr = v[voff + r]
            for s in range(B):
                yr[s] = vr
        else:
            for s in range(B):
                yr[s] = 0


@kernel
def dense_forward(p, woff, boff, has_bias, nin, nout, x, xo, y, yo, B):
    """y[yo : yo+nout*B] <- W @ x[xo : xo+nin*B] (+ b).  ``x`` and ``y`` must not overlap."""
    fill_rows(y, yo, nout, B, p, boff, has_bias)
    gemm_acc(p, woff, nin, 1, nout, nin, x, xo, y, yo, B)


@kernel
def gemm_nt_acc(g, go, R, x, xo, C, B, out, oo, ld):
    """out[oo + r*ld + c] += sum_s g[r, s] * x[c, s] for r < R, c < C (blocks of B samples).

    Register tile: 4 x 4 dot products share 8 loads per 16 FMAs (measured ~100
    GFLOP/s per core in float32 against ~60 for a 4 x 1 tile).
    """
    r = 0
    while r + 4 <= R:
        g0 = g[go + r * B : go + (r + 1) * B]
        g1 = g[go + (r + 1) * B : go + (r + 2) * B]
        g2 = g[go + (r + 2) * B : go + (r + 3) * B]
        g3 = g[go + (r + 3) * B : go + (r + 4) * B]
        c = 0
        while c + 4 <= C:
            x0 = x[xo + c * B : xo + (c + 1) * B]
            x1 = x[xo + (c + 1) * B : xo + (c + 2) * B]
            x2 = x[xo + (c + 2) * B : xo + (c + 3) * B]
            x3 = x[xo + (c + 3) * B : xo + (c + 4) * B]
            z = x0[0] - x0[0]
            a00 = a01 = a02 = a03 = z
            a10 = a11 = a12 = a13 = z
            a20 = a21 = a22 = a23 = z
            a30 = a31 = a32 = a33 = z
            for s in range(B):
                u0 = g0[s]
                u1 = g1[s]
                u2 = g2[s]
                u3 = g3[s]
                v0 = x0[s]
                v1 = x1[s]
                v2 = x2[s]
                v3 = x3[s]
                a00 += u0 * v0
                a01 += u0 * v1
                a02 += u0 * v2
                a03 += u0 * v3
                a10 += u1 * v0
                a11 += u1 * v1
                a12 += u1 * v2
                a13 += u1 * v3
                a20 += u2 * v0
                a21 += u2 * v1
                a22 += u2 * v2
                a23 += u2 * v3
                a30 += u3 * v0
                a31 += u3 * v1
                a32 += u3 * v2
                a33 += u3 * v3
            o = oo + r * ld + c
            out[o] += a00
            out[o + 1] += a01
            out[o + 2] += a02
            out[o + 3] += a03
            o += ld
            out[o] += a10
            out[o + 1] += a11
            out[o + 2] += a12
            out[o + 3] += a13
            o += ld
            out[o] += a20
            out[o + 1] += a21
            out[o + 2] += a22
            out[o + 3] += a23
            o += ld
            out[o] += a30
            out[o + 1] += a31
            out[o + 2] += a32
            out[o + 3] += a33
            c += 4
        while c < C:
            x0 = x[xo + c * B : xo + (c + 1) * B]
            z = x0[0] - x0[0]
            a00 = a10 = a20 = a30 = z
            for s in range(B):
                v0 = x0[s]
                a00 += g0[s] * v0
                a10 += g1[s] * v0
                a20 += g2[s] * v0
                a30 += g3[s] * v0
            o = oo + r * ld + c
            out[o] += a00
            out[o + ld] += a10
            out[o + 2 * ld] += a20
            out[o + 3 * ld] += a30
            c += 1
        r += 4
    while r < R:
        g0 = g[go + r * B : go + (r + 1) * B]
        c = 0
        while c + 4 <= C:
            x0 = x[xo + c * B : xo + (c + 1) * B]
            x1 = x[xo + (c + 1) * B : xo + (c + 2) * B]
            x2 = x[xo + (c + 2) * B : xo + (c + 3) * B]
            x3 = x[xo + (c + 3) * B : xo + (c + 4) * B]
            z = x0[0] - x0[0]
            a00 = a01 = a02 = a03 = z
            for s in range(B):
                u0 = g0[s]
                a00 += u0 * x0[s]
                a01 += u0 * x1[s]
                a02 += u0 * x2[s]
                a03 += u0 * x3[s]
            o = oo + r * ld + c
            out[o] += a00
            out[o + 1] += a01
            out[o + 2] += a02
            out[o + 3] += a03
            c += 4
        while c < C:
            x0 = x[xo + c * B : xo + (c + 1) * B]
            a00 = x0[0] - x0[0]
            for s in range(B):
                a00 += g0[s] * x0[s]
            out[oo + r * ld + c] += a00
            c += 1
        r += 1


@kernel
def dense_pullback_params(p, gp, woff, boff, has_bias, nin, nout, x, xo, g, go, B):
    """gp[W] += g @ x.T and gp[b] += g.sum(axis=samples); accumulates, never overwrites.

    ``g`` is the cotangent of the layer's pre-activation output (nout x B at ``go``),
    ``x`` the layer input (nin x B at ``xo``).  ``p`` is not read (kept for symmetry).
    """
    if has_bias:
        for j in range(nout):
            gr = g[go + j * B : go + (j + 1) * B]
            acc = gr[0] - gr[0]
            for s in range(B):
                acc += gr[s]
            gp[boff + j] += acc
    gemm_nt_acc(g, go, nout, x, xo, nin, B, gp, woff, nin)


@kernel
def dense_pullback_input(p, woff, nin, nout, g, go, gx, gxo, B):
    """gx[gxo : gxo+nin*B] <- W.T @ g[go : go+nout*B] (overwrites).  ``g`` and ``gx`` must not overlap."""
    fill_rows(gx, gxo, nin, B, p, 0, False)
    gemm_acc(p, woff, 1, nin, nin, nout, g, go, gx, gxo, B)


@kernel
def dense_tangent(p, dp, woff, boff, has_bias, nin, nout, x, xo, dx, dxo, use_dx, use_dp, t, to, B):
    """Forward-mode tangent of the pre-activation: t <- W @ dx + dW @ x (+ db) (overwrites t).

    ``dp`` is the parameter tangent (same layout as ``p``); ``use_dx``/``use_dp`` switch the
    two terms off (a term that is off is not read).  ``t`` must not overlap ``x`` or ``dx``.
    """
    fill_rows(t, to, nout, B, dp, boff, use_dp and has_bias)
    if use_dx:
        gemm_acc(p, woff, nin, 1, nout, nin, dx, dxo, t, to, B)
    if use_dp:
        gemm_acc(dp, woff, nin, 1, nout, nin, x, xo, t, to, B)


# --------------------------------------------------------------------------- one sample (B = 1)
# Matrix-vector forms for the neural-ODE case (one state at a time): rows of W are
# contiguous, so the forward is a dot product per output and the pullback one
# pass over W that updates the parameter and input cotangents together.


@kernel
def dense_forward_1(p, woff, boff, has_bias, nin, nout, x, xo, y, yo):
    """y[yo + j] <- sum_k W[j, k] x[xo + k] (+ b[j]) for one sample."""
    xv = x[xo : xo + nin]
    yv = y[yo : yo + nout]
    W = p[woff : woff + nout * nin]
    if has_bias:
        b = p[boff : boff + nout]
        for j in range(nout):
            yv[j] = b[j]
    else:
        for j in range(nout):
            yv[j] = 0
    if nin <= 4:  # short rows: accumulate column by column (vectorises over j)
        for k in range(nin):
            xk = xv[k]
            for j in range(nout):
                yv[j] += W[j * nin + k] * xk
    else:
        for j in range(nout):
            acc = yv[j]
            base = j * nin
            for k in range(nin):
                acc += W[base + k] * xv[k]
            yv[j] = acc


@kernel
def dense_pullback_1(p, gp, woff, boff, has_bias, nin, nout, x, xo, g, go, gx, gxo, need_gx):
    """One sample: gp[W] += g x^T, gp[b] += g; gx <- W^T g (overwritten) when ``need_gx``."""
    xv = x[xo : xo + nin]
    gv = g[go : go + nout]
    W = p[woff : woff + nout * nin]
    GW = gp[woff : woff + nout * nin]
    if has_bias:
        gb = gp[boff : boff + nout]
        for j in range(nout):
            gb[j] += gv[j]
    if nin <= 4:  # short rows: one long loop per column beats nout loops of nin iterations
        for k in range(nin):
            xk = xv[k]
            for j in range(nout):
                GW[j * nin + k] += gv[j] * xk
    else:
        for j in range(nout):
            gj = gv[j]
            base = j * nin
            for k in range(nin):
                GW[base + k] += gj * xv[k]
    if need_gx:
        gxv = gx[gxo : gxo + nin]
        if nin <= 4:
            for k in range(nin):
                acc = gv[0] - gv[0]
                for j in range(nout):
                    acc += W[j * nin + k] * gv[j]
                gxv[k] = acc
        else:
            for k in range(nin):
                gxv[k] = 0
            for j in range(nout):
                gj = gv[j]
                base = j * nin
                for k in range(nin):
                    gxv[k] += W[base + k] * gj


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
        view[self.out * nin :] = 0

    def param_views(self, view, nin):
        W = view[: self.out * nin].reshape(self.out, nin)
        if self.bias:
            return (W, view[self.out * nin :])
        return (W, None)

    def describe(self):
        return {"kind": "Dense", "out": self.out, "activation": self.activation.name, "bias": self.bias}

    def __repr__(self):
        act = "" if self.activation.code == 0 else f", {self.activation!r}"
        nb = "" if self.bias else ", bias=False"
        return f"Dense({self.out}{act}{nb})"
