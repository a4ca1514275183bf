"""Convolution layers (``Conv``: 2-D on (C, H, W); ``Conv1D``: 1-D on (C, L)) and their kernels.

Layout: the block layout of ``dense.py``: a (C, H, W) image of a block of ``B``
samples occupies ``C*H*W`` units, unit ``(c*H + h)*W + w``, each a row of ``B``
samples, so every inner loop runs over samples (or runs of them) and vectorises.

Cross-correlation as PyTorch computes it: ``y[o, i, j] = b[o] + sum_{c, ki, kj}
W[o, c, ki, kj] * xp[c, i*SH + ki, j*SW + kj]``, ``xp`` the input zero-padded by
(PH0, PH1) rows and (PW0, PW1) columns.  Weights in PyTorch's (OC, C, KH, KW)
order, then the bias.

Runs: with stride 1 along the width, the ``OW`` output positions of an output row
are consecutive units, and the input units that one (c, ki, kj) tap reads for
them are consecutive too, so a whole output row is one contiguous run of
``OW*B`` elements (``B`` elements per position for other strides).  The kernels
loop over runs with register tiles (4 output channels x 4 taps in the forward),
like the dense GEMM kernels.  A padded layer copies its input into a padded
buffer first (and its input cotangent is computed in a padded buffer, whose
interior is copied out), so the inner loops never test bounds.
"""

from __future__ import annotations

import numpy as np

from .._jit import kernel
from .._program import (
    F_BIAS,
    F_BOFF,
    F_C,
    F_D,
    F_H,
    F_HP,
    F_KH,
    F_KIND,
    F_KW,
    F_NW,
    F_OC,
    F_OH,
    F_OW,
    F_PAD,
    F_PGX,
    F_PH,
    F_PW,
    F_SH,
    F_SW,
    F_W,
    F_WOFF,
    F_WP,
    F_X,
    F_Y,
    KIND_CONV,
    KIND_MAXPOOL,
)
from ._base import Layer, as_activation

# --------------------------------------------------------------------------- kernels


@kernel(inline="always")
def _tap(k, KK, KW, H, W, row, col):
    """Unit offset, in a (C, H, W) image, of tap k = (c*KH + ki)*KW + kj at output origin (row, col)."""
    c = k // KK
    r = k - c * KK
    return (c * H + row + r // KW) * W + col + r % KW


@kernel
def pad_copy(x, xo, C, H, W, xp, po, HP, WP, PH, PW, B):
    """xp (C, HP, WP) <- x (C, H, W) placed at row PH, column PW, zeros around (overwrites)."""
    n = C * HP * WP * B
    z = xp[po : po + n]
    for t in range(n):
        z[t] = 0
    for c in range(C):
        for h in range(H):
            src = x[xo + ((c * H + h) * W) * B : xo + ((c * H + h) * W + W) * B]
            dst = xp[po + ((c * HP + h + PH) * WP + PW) * B : po + ((c * HP + h + PH) * WP + PW + W) * B]
            for t in range(W * B):
                dst[t] = src[t]


@kernel
def unpad_copy(xp, po, HP, WP, PH, PW, C, H, W, x, xo, B):
    """x (C, H, W) <- the interior of xp (C, HP, WP) at row PH, column PW (overwrites x)."""
    for c in range(C):
        for h in range(H):
            src = xp[po + ((c * HP + h + PH) * WP + PW) * B : po + ((c * HP + h + PH) * WP + PW + W) * B]
            dst = x[xo + ((c * H + h) * W) * B : xo + ((c * H + h) * W + W) * B]
            for t in range(W * B):
                dst[t] = src[t]


@kernel
def conv_forward(A, woff, boff, has_bias, init, C, H, W, OC, OH, OW, KH, KW, SH, SW, x, xo, y, yo, B):
    """y (OC, OH, OW) (=|+=) conv(A[woff:], x (C, H, W)) (+ bias A[boff:] when ``init``).

    ``init``: overwrite ``y`` with the bias (zeros without one) first; else accumulate.
    ``x`` is the (already padded) input at element offset ``xo``.  ``x``/``y`` must not overlap.
    """
    K = C * KH * KW
    KK = KH * KW
    if init:
        for o in range(OC):
            bv = A[boff + o] if has_bias else A[woff] - A[woff]
            yr = y[yo + o * OH * OW * B : yo + (o + 1) * OH * OW * B]
            for t in range(OH * OW * B):
                yr[t] = bv
    if SW == 1:
        npos = OH
        run = OW * B
    else:
        npos = OH * OW
        run = B
    for pb in range(npos):
        if SW == 1:
            i = pb
            j = 0
        else:
            i = pb // OW
            j = pb - i * OW
        ybase = yo + (i * OW + j) * B
        xrow = i * SH
        xcol = j * SW
        o = 0
        while o < OC:
            four = o + 4 <= OC
            y0 = y[ybase + o * OH * OW * B : ybase + o * OH * OW * B + run]
            if four:
                y1 = y[ybase + (o + 1) * OH * OW * B : ybase + (o + 1) * OH * OW * B + run]
                y2 = y[ybase + (o + 2) * OH * OW * B : ybase + (o + 2) * OH * OW * B + run]
                y3 = y[ybase + (o + 3) * OH * OW * B : ybase + (o + 3) * OH * OW * B + run]
            k = 0
            while k < K:
                # four taps k..k+3 (missing ones read tap k with weight 0)
                m1 = k + 1 < K
                m2 = k + 2 < K
                m3 = k + 3 < K
                x0 = x[xo + _tap(k, KK, KW, H, W, xrow, xcol) * B :][:run]
                x1 = x[xo + _tap(k + 1 if m1 else k, KK, KW, H, W, xrow, xcol) * B :][:run]
                x2 = x[xo + _tap(k + 2 if m2 else k, KK, KW, H, W, xrow, xcol) * B :][:run]
                x3 = x[xo + _tap(k + 3 if m3 else k, KK, KW, H, W, xrow, xcol) * B :][:run]
                zero = A[woff] - A[woff]
                b = woff + o * K + k
                a00 = A[b]
                a01 = A[b + 1] if m1 else zero
                a02 = A[b + 2] if m2 else zero
                a03 = A[b + 3] if m3 else zero
                if four:
                    a10 = A[b + K]
                    a11 = A[b + K + 1] if m1 else zero
                    a12 = A[b + K + 2] if m2 else zero
                    a13 = A[b + K + 3] if m3 else zero
                    a20 = A[b + 2 * K]
                    a21 = A[b + 2 * K + 1] if m1 else zero
                    a22 = A[b + 2 * K + 2] if m2 else zero
                    a23 = A[b + 2 * K + 3] if m3 else zero
                    a30 = A[b + 3 * K]
                    a31 = A[b + 3 * K + 1] if m1 else zero
                    a32 = A[b + 3 * K + 2] if m2 else zero
                    a33 = A[b + 3 * K + 3] if m3 else zero
                    for t in range(run):
                        v0 = x0[t]
                        v1 = x1[t]
                        v2 = x2[t]
                        v3 = x3[t]
                        y0[t] += a00 * v0 + a01 * v1 + a02 * v2 + a03 * v3
                        y1[t] += a10 * v0 + a11 * v1 + a12 * v2 + a13 * v3
                        y2[t] += a20 * v0 + a21 * v1 + a22 * v2 + a23 * v3
                        y3[t] += a30 * v0 + a31 * v1 + a32 * v2 + a33 * v3
                else:
                    for t in range(run):
                        y0[t] += a00 * x0[t] + a01 * x1[t] + a02 * x2[t] + a03 * x3[t]
                k += 4
            o += 4 if four else 1


@kernel
def conv_pullback_params(gp, woff, boff, has_bias, C, H, W, OC, OH, OW, KH, KW, SH, SW, x, xo, g, go, B):
    """gp[W] += sum over positions and samples of g (OC, OH, OW) x taps of x; gp[b] += sums of g."""
    K = C * KH * KW
    KK = KH * KW
    if has_bias:
        for o in range(OC):
            gr = g[go + o * OH * OW * B : go + (o + 1) * OH * OW * B]
            acc = gr[0] - gr[0]
            for t in range(OH * OW * B):
                acc += gr[t]
            gp[boff + o] += acc
    if SW == 1:
        npos = OH
        run = OW * B
    else:
        npos = OH * OW
        run = B
    o = 0
    while o < OC:
        four = o + 4 <= OC
        k = 0
        while k < K:
            m1 = k + 1 < K
            m2 = k + 2 < K
            m3 = k + 3 < K
            kk1 = k + 1 if m1 else k
            kk2 = k + 2 if m2 else k
            kk3 = k + 3 if m3 else k
            z = x[xo] - x[xo]
            a00 = a01 = a02 = a03 = z
            a10 = a11 = a12 = a13 = z
            a20 = a21 = a22 = a23 = z
            a30 = a31 = a32 = a33 = z
            for pb in range(npos):
                if SW == 1:
                    i = pb
                    j = 0
                else:
                    i = pb // OW
                    j = pb - i * OW
                gbase = go + (i * OW + j) * B
                xrow = i * SH
                xcol = j * SW
                x0 = x[xo + _tap(k, KK, KW, H, W, xrow, xcol) * B :][:run]
                x1 = x[xo + _tap(kk1, KK, KW, H, W, xrow, xcol) * B :][:run]
                x2 = x[xo + _tap(kk2, KK, KW, H, W, xrow, xcol) * B :][:run]
                x3 = x[xo + _tap(kk3, KK, KW, H, W, xrow, xcol) * B :][:run]
                g0 = g[gbase + o * OH * OW * B :][:run]
                if four:
                    g1 = g[gbase + (o + 1) * OH * OW * B :][:run]
                    g2 = g[gbase + (o + 2) * OH * OW * B :][:run]
                    g3 = g[gbase + (o + 3) * OH * OW * B :][:run]
                    for t in range(run):
                        v0 = x0[t]
                        v1 = x1[t]
                        v2 = x2[t]
                        v3 = x3[t]
                        u0 = g0[t]
                        u1 = g1[t]
                        u2 = g2[t]
                        u3 = g3[t]
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
                else:
                    for t in range(run):
                        u0 = g0[t]
                        a00 += u0 * x0[t]
                        a01 += u0 * x1[t]
                        a02 += u0 * x2[t]
                        a03 += u0 * x3[t]
            b = woff + o * K + k
            gp[b] += a00
            if m1:
                gp[b + 1] += a01
            if m2:
                gp[b + 2] += a02
            if m3:
                gp[b + 3] += a03
            if four:
                for r, (q0, q1, q2, q3) in enumerate(
                    ((a10, a11, a12, a13), (a20, a21, a22, a23), (a30, a31, a32, a33))
                ):
                    bb = b + (r + 1) * K
                    gp[bb] += q0
                    if m1:
                        gp[bb + 1] += q1
                    if m2:
                        gp[bb + 2] += q2
                    if m3:
                        gp[bb + 3] += q3
            k += 4
        o += 4 if four else 1


@kernel
def conv_pullback_input(A, woff, C, H, W, OC, OH, OW, KH, KW, SH, SW, g, go, gx, gxo, B):
    """gx (C, H, W) <- conv-transpose of g (OC, OH, OW) (overwrites; ``gx`` padded if the layer is)."""
    K = C * KH * KW
    KK = KH * KW
    n = C * H * W * B
    z = gx[gxo : gxo + n]
    for t in range(n):
        z[t] = 0
    if SW == 1:
        npos = OH
        run = OW * B
    else:
        npos = OH * OW
        run = B
    zero = A[woff] - A[woff]
    for pb in range(npos):
        if SW == 1:
            i = pb
            j = 0
        else:
            i = pb // OW
            j = pb - i * OW
        gbase = go + (i * OW + j) * B
        xrow = i * SH
        xcol = j * SW
        for k in range(K):
            dst = gx[gxo + _tap(k, KK, KW, H, W, xrow, xcol) * B :][:run]
            o = 0
            while o < OC:
                g0 = g[gbase + o * OH * OW * B :][:run]
                a0 = A[woff + o * K + k]
                m1 = o + 1 < OC
                m2 = o + 2 < OC
                m3 = o + 3 < OC
                g1 = g[gbase + (o + 1 if m1 else o) * OH * OW * B :][:run]
                g2 = g[gbase + (o + 2 if m2 else o) * OH * OW * B :][:run]
                g3 = g[gbase + (o + 3 if m3 else o) * OH * OW * B :][:run]
                a1 = A[woff + (o + 1) * K + k] if m1 else zero
                a2 = A[woff + (o + 2) * K + k] if m2 else zero
                a3 = A[woff + (o + 3) * K + k] if m3 else zero
                for t in range(run):
                    dst[t] += a0 * g0[t] + a1 * g1[t] + a2 * g2[t] + a3 * g3[t]
                o += 4


@kernel
def pool_forward(is_max, C, H, W, OH, OW, KH, KW, SH, SW, x, xo, y, yo, d, do, want_d, B):
    """Max or average pooling: y (C, OH, OW) <- pool of x (C, H, W); max saves the argmax tap in d."""
    KK = KH * KW
    inv = 1.0 / KK
    for c in range(C):
        for i in range(OH):
            for j in range(OW):
                u = (c * OH + i) * OW + j
                yr = y[yo + u * B : yo + (u + 1) * B]
                x0 = x[xo + ((c * H + i * SH) * W + j * SW) * B :][:B]
                for s in range(B):
                    yr[s] = x0[s]
                if is_max:
                    dr = d[do + u * B : do + (u + 1) * B]
                    if want_d:
                        for s in range(B):
                            dr[s] = 0
                    for e in range(1, KK):
                        xe = x[xo + ((c * H + i * SH + e // KW) * W + j * SW + e % KW) * B :][:B]
                        fe = yr[0] - yr[0] + e
                        if want_d:
                            for s in range(B):
                                v = xe[s]
                                take = not (v <= yr[s])  # NaN propagates
                                yr[s] = v if take else yr[s]
                                dr[s] = fe if take else dr[s]
                        else:
                            for s in range(B):
                                v = xe[s]
                                yr[s] = v if not (v <= yr[s]) else yr[s]
                else:
                    for e in range(1, KK):
                        xe = x[xo + ((c * H + i * SH + e // KW) * W + j * SW + e % KW) * B :][:B]
                        for s in range(B):
                            yr[s] += xe[s]
                    sc = yr[0] - yr[0] + inv
                    for s in range(B):
                        yr[s] *= sc


@kernel
def pool_pullback(is_max, C, H, W, OH, OW, KH, KW, SH, SW, g, go, d, do, gx, gxo, B):
    """gx (C, H, W) <- pullback of pooling (overwrites): max routes g to the saved argmax tap."""
    KK = KH * KW
    inv = 1.0 / KK
    n = C * H * W * B
    z = gx[gxo : gxo + n]
    for t in range(n):
        z[t] = 0
    for c in range(C):
        for i in range(OH):
            for j in range(OW):
                u = (c * OH + i) * OW + j
                gr = g[go + u * B : go + (u + 1) * B]
                if is_max:
                    dr = d[do + u * B : do + (u + 1) * B]
                for e in range(KK):
                    ge = gx[gxo + ((c * H + i * SH + e // KW) * W + j * SW + e % KW) * B :][:B]
                    if is_max:
                        fe = gr[0] - gr[0] + e
                        zz = gr[0] - gr[0]
                        for s in range(B):
                            ge[s] += gr[s] if dr[s] == fe else zz
                    else:
                        sc = gr[0] - gr[0] + inv
                        for s in range(B):
                            ge[s] += gr[s] * sc


@kernel
def pool_tangent(is_max, C, H, W, OH, OW, KH, KW, SH, SW, dx, dxo, d, do, t, to, B):
    """Forward-mode tangent of pooling: t (C, OH, OW) <- dx at the argmax tap (max) or the mean of dx."""
    KK = KH * KW
    inv = 1.0 / KK
    for c in range(C):
        for i in range(OH):
            for j in range(OW):
                u = (c * OH + i) * OW + j
                tr = t[to + u * B : to + (u + 1) * B]
                if is_max:
                    dr = d[do + u * B : do + (u + 1) * B]
                    for s in range(B):
                        tr[s] = 0
                    for e in range(KK):
                        xe = dx[dxo + ((c * H + i * SH + e // KW) * W + j * SW + e % KW) * B :][:B]
                        fe = tr[0] - tr[0] + e
                        for s in range(B):
                            tr[s] = xe[s] if dr[s] == fe else tr[s]
                else:
                    for s in range(B):
                        tr[s] = 0
                    for e in range(KK):
                        xe = dx[dxo + ((c * H + i * SH + e // KW) * W + j * SW + e % KW) * B :][:B]
                        for s in range(B):
                            tr[s] += xe[s]
                    sc = tr[0] - tr[0] + inv
                    for s in range(B):
                        tr[s] *= sc


# --------------------------------------------------------------------------- the layers' protocol
# What the interpreter (``_engine``) runs for layer ``l`` of a program: each function reads the
# layer's geometry and buffer offsets from its program row.  They are separate kernels so that the
# interpreter can call them through addresses and compile them only for chains that have images.
# ``cur``/``other``: element offsets of the incoming cotangent (or tangent) and of the buffer the
# layer writes its input cotangent (or output tangent) into.


@kernel
def conv_geometry(prog, l):
    return (
        prog[l, F_C],
        prog[l, F_H],
        prog[l, F_W],
        prog[l, F_OC],
        prog[l, F_OH],
        prog[l, F_OW],
        prog[l, F_KH],
        prog[l, F_KW],
        prog[l, F_SH],
        prog[l, F_SW],
    )


@kernel
def conv_layer_forward(prog, l, p, w, B):
    """Convolution layer ``l``: its output buffer <- conv(input) (through the zero-padded copy when padded)."""
    C, H, W, OC, OH, OW, KH, KW, SH, SW = conv_geometry(prog, l)
    xo = prog[l, F_X] * B
    yo = prog[l, F_Y] * B
    if prog[l, F_PAD] >= 0:
        po = prog[l, F_PAD] * B
        HP = prog[l, F_HP]
        WP = prog[l, F_WP]
        pad_copy(w, xo, C, H, W, w, po, HP, WP, prog[l, F_PH], prog[l, F_PW], B)
        conv_forward(
            p,
            prog[l, F_WOFF],
            prog[l, F_BOFF],
            prog[l, F_BIAS] != 0,
            True,
            C,
            HP,
            WP,
            OC,
            OH,
            OW,
            KH,
            KW,
            SH,
            SW,
            w,
            po,
            w,
            yo,
            B,
        )
    else:
        conv_forward(
            p,
            prog[l, F_WOFF],
            prog[l, F_BOFF],
            prog[l, F_BIAS] != 0,
            True,
            C,
            H,
            W,
            OC,
            OH,
            OW,
            KH,
            KW,
            SH,
            SW,
            w,
            xo,
            w,
            yo,
            B,
        )
    return 0


@kernel
def conv_layer_backward(prog, l, p, gp, w, B, cur, other, need_gx):
    """Convolution layer ``l``: gp += its parameter cotangent; w[other..] <- input cotangent when ``need_gx``."""
    C, H, W, OC, OH, OW, KH, KW, SH, SW = conv_geometry(prog, l)
    padded = prog[l, F_PAD] >= 0
    if padded:
        xin = prog[l, F_PAD] * B
        HP = prog[l, F_HP]
        WP = prog[l, F_WP]
    else:
        xin = prog[l, F_X] * B
        HP = H
        WP = W
    conv_pullback_params(
        gp,
        prog[l, F_WOFF],
        prog[l, F_BOFF],
        prog[l, F_BIAS] != 0,
        C,
        HP,
        WP,
        OC,
        OH,
        OW,
        KH,
        KW,
        SH,
        SW,
        w,
        xin,
        w,
        cur,
        B,
    )
    if need_gx:
        if padded:
            pg = prog[l, F_PGX] * B
            conv_pullback_input(p, prog[l, F_WOFF], C, HP, WP, OC, OH, OW, KH, KW, SH, SW, w, cur, w, pg, B)
            unpad_copy(w, pg, HP, WP, prog[l, F_PH], prog[l, F_PW], C, H, W, w, other, B)
        else:
            conv_pullback_input(p, prog[l, F_WOFF], C, H, W, OC, OH, OW, KH, KW, SH, SW, w, cur, w, other, B)
    return 0


@kernel
def conv_layer_tangent(prog, l, p, dp, w, B, cur, other, have_dx, use_dp):
    """Convolution layer ``l``: w[other..] <- db + conv(dW, x) (when ``use_dp``) + conv(W, dx) (when ``have_dx``)."""
    C, H, W, OC, OH, OW, KH, KW, SH, SW = conv_geometry(prog, l)
    woff = prog[l, F_WOFF]
    boff = prog[l, F_BOFF]
    hb = prog[l, F_BIAS] != 0
    padded = prog[l, F_PAD] >= 0
    HP = prog[l, F_HP] if padded else H
    WP = prog[l, F_WP] if padded else W
    xin = prog[l, F_PAD] * B if padded else prog[l, F_X] * B
    for o in range(OC):
        tr = w[other + o * OH * OW * B : other + (o + 1) * OH * OW * B]
        bv = dp[boff + o] if (use_dp and hb) else dp[0] - dp[0]
        for t in range(OH * OW * B):
            tr[t] = bv
    if use_dp:
        conv_forward(dp, woff, boff, False, False, C, HP, WP, OC, OH, OW, KH, KW, SH, SW, w, xin, w, other, B)
    if have_dx:
        if padded:
            pg = prog[l, F_PGX] * B
            pad_copy(w, cur, C, H, W, w, pg, HP, WP, prog[l, F_PH], prog[l, F_PW], B)
            conv_forward(p, woff, boff, False, False, C, HP, WP, OC, OH, OW, KH, KW, SH, SW, w, pg, w, other, B)
        else:
            conv_forward(p, woff, boff, False, False, C, H, W, OC, OH, OW, KH, KW, SH, SW, w, cur, w, other, B)
    return 0


@kernel
def pool_layer_forward(prog, l, w, B, want_d):
    """Pooling layer ``l``: output <- max or mean over each window (argmaxes saved when ``want_d``)."""
    C, H, W, OC, OH, OW, KH, KW, SH, SW = conv_geometry(prog, l)
    pool_forward(
        prog[l, F_KIND] == KIND_MAXPOOL,
        C,
        H,
        W,
        OH,
        OW,
        KH,
        KW,
        SH,
        SW,
        w,
        prog[l, F_X] * B,
        w,
        prog[l, F_Y] * B,
        w,
        prog[l, F_D] * B,
        want_d,
        B,
    )
    return 0


@kernel
def pool_layer_backward(prog, l, w, B, cur, other, need_gx):
    """Pooling layer ``l``: w[other..] <- its input cotangent when ``need_gx`` (pooling has no parameters)."""
    if need_gx:
        C, H, W, OC, OH, OW, KH, KW, SH, SW = conv_geometry(prog, l)
        pool_pullback(
            prog[l, F_KIND] == KIND_MAXPOOL, C, H, W, OH, OW, KH, KW, SH, SW, w, cur, w, prog[l, F_D] * B, w, other, B
        )
    return 0


@kernel
def pool_layer_tangent(prog, l, w, B, cur, other):
    """Pooling layer ``l``: w[other..] <- its output tangent from the input tangent at ``cur``."""
    C, H, W, OC, OH, OW, KH, KW, SH, SW = conv_geometry(prog, l)
    pool_tangent(
        prog[l, F_KIND] == KIND_MAXPOOL, C, H, W, OH, OW, KH, KW, SH, SW, w, cur, w, prog[l, F_D] * B, w, other, B
    )
    return 0


# --------------------------------------------------------------------------- layers


def _pair(name, v, allow_zero=False):
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        v = (int(v), int(v))
    if (
        not isinstance(v, (tuple, list))
        or len(v) != 2
        or not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in v)
    ):
        raise TypeError(f"`{name}` must be an int or a pair of ints, got {v!r}")
    lo = 0 if allow_zero else 1
    if any(a < lo for a in v):
        raise ValueError(f"`{name}` must be {'>= 0' if allow_zero else '>= 1'}, got {v!r}")
    return (int(v[0]), int(v[1]))


def image_shape(in_shape, who):
    """(C, H, W) from a layer's input shape; a clear error for flat inputs."""
    if len(in_shape) == 3:
        return tuple(int(v) for v in in_shape)
    raise ValueError(
        f"{who} needs image input (channels, height, width), got shape {tuple(in_shape)}; "
        "give the chain its input shape, e.g. sc.SimpleChain((1, 28, 28), ...)"
    )


class Conv(Layer):
    """2-D convolution (cross-correlation, as PyTorch's ``Conv2d``) on (channels, height, width) input.

    Args:
        out_channels: number of output channels.
        kernel_size: an int or a pair (KH, KW).
        activation: an element-wise activation fused into the layer (default identity).
        stride: an int or a pair (default 1).
        padding: an int, a pair, or ``"same"`` (output size = ceil(input / stride); for an even
            kernel the extra row/column goes at the bottom/right, as PyTorch does).
        bias: whether the layer has a bias per output channel.

    Parameters: ``W`` of shape (out_channels, channels, KH, KW) then ``b``.  Glorot-uniform
    initialisation (fan_in = C*KH*KW, fan_out = out_channels*KH*KW), zero bias.

    Example::

        chain = sc.SimpleChain((1, 28, 28), sc.Conv(6, 5, sc.relu), sc.MaxPool(2), sc.Flatten(), sc.Dense(10))
    """

    kind_name = "conv"

    def __init__(self, out_channels, kernel_size, activation=None, stride=1, padding=0, bias=True):
        if isinstance(out_channels, bool) or not isinstance(out_channels, (int, np.integer)) or out_channels < 1:
            raise ValueError(f"Conv: `out_channels` must be a positive integer, got {out_channels!r}")
        self.out_channels = int(out_channels)
        self.kernel_size = _pair("kernel_size", kernel_size)
        self.activation = as_activation(activation)
        self.stride = _pair("stride", stride)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"`padding` must be an int, a pair, 'same' or 'valid', got {padding!r}")
            self.padding = padding if padding == "same" else (0, 0)
        else:
            self.padding = _pair("padding", padding, allow_zero=True)
        self.bias = bool(bias)

    # geometry -------------------------------------------------------------
    def _pads(self, H, W):
        """((top, bottom), (left, right)) zero padding for an H x W input."""
        KH, KW = self.kernel_size
        SH, SW = self.stride
        if self.padding == "same":
            pads = []
            for n, k, s in ((H, KH, SH), (W, KW, SW)):
                out = -(-n // s)
                total = max((out - 1) * s + k - n, 0)
                pads.append((total // 2, total - total // 2))
            return tuple(pads)
        PH, PW = self.padding
        return ((PH, PH), (PW, PW))

    def _geometry(self, in_shape):
        C, H, W = image_shape(in_shape, "Conv")
        (ph0, ph1), (pw0, pw1) = self._pads(H, W)
        HP, WP = H + ph0 + ph1, W + pw0 + pw1
        KH, KW = self.kernel_size
        SH, SW = self.stride
        if HP < KH or WP < KW:
            raise ValueError(
                f"Conv: the input image {H}x{W} (padded {HP}x{WP}) is smaller than the kernel "
                f"{KH}x{KW}; use a smaller kernel_size or more padding"
            )
        OH = (HP - KH) // SH + 1
        OW = (WP - KW) // SW + 1
        return C, H, W, HP, WP, ph0, pw0, OH, OW

    def output_shape(self, in_shape):
        _, _, _, _, _, _, _, OH, OW = self._geometry(in_shape)
        return (self.out_channels, OH, OW)

    def num_params_shape(self, in_shape):
        C = image_shape(in_shape, "Conv")[0]
        KH, KW = self.kernel_size
        return self.out_channels * C * KH * KW + (self.out_channels if self.bias else 0)

    def macs_per_sample_shape(self, in_shape):
        C, _, _, _, _, _, _, OH, OW = self._geometry(in_shape)
        KH, KW = self.kernel_size
        return self.out_channels * OH * OW * C * KH * KW

    def program_fields(self, in_shape):
        C, H, W, HP, WP, ph0, pw0, OH, OW = self._geometry(in_shape)
        KH, KW = self.kernel_size
        SH, SW = self.stride
        padded = (HP, WP) != (H, W)
        nw = self.out_channels * C * KH * KW
        from .._program import F_ACT, F_BIAS, F_KIND, F_NOUT

        return {
            F_KIND: KIND_CONV,
            F_NOUT: self.out_channels * OH * OW,
            F_ACT: self.activation.code,
            F_BIAS: int(self.bias),
            F_NW: nw,
            F_C: C,
            F_H: H,
            F_W: W,
            F_OC: self.out_channels,
            F_OH: OH,
            F_OW: OW,
            F_KH: KH,
            F_KW: KW,
            F_SH: SH,
            F_SW: SW,
            F_PH: ph0,
            F_PW: pw0,
            F_HP: HP,
            F_WP: WP,
            "nparams": Conv.num_params_shape(self, in_shape),
            "d": self.activation.code != 0,
            "pad": C * HP * WP if padded else 0,
            "pgx": C * HP * WP if padded else 0,
        }

    def init_params_shape(self, view, in_shape, rng):
        C = image_shape(in_shape, "Conv")[0]
        KH, KW = self.kernel_size
        nw = self.out_channels * C * KH * KW
        limit = np.sqrt(6.0 / ((C + self.out_channels) * KH * KW))
        view[:nw] = rng.uniform(-limit, limit, size=nw)
        view[nw:] = 0

    def param_views_shape(self, view, in_shape):
        C = image_shape(in_shape, "Conv")[0]
        KH, KW = self.kernel_size
        nw = self.out_channels * C * KH * KW
        W = view[:nw].reshape(self.out_channels, C, KH, KW)
        return (W, view[nw:] if self.bias else None)

    def describe(self):
        pad = self.padding if isinstance(self.padding, str) else list(self.padding)
        return {
            "kind": "Conv",
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "activation": self.activation.name,
            "stride": list(self.stride),
            "padding": pad,
            "bias": self.bias,
        }

    def __repr__(self):
        act = "" if self.activation.code == 0 else f", {self.activation!r}"
        extra = ""
        if self.stride != (1, 1):
            extra += f", stride={self.stride}"
        if self.padding not in ((0, 0),):
            extra += f", padding={self.padding!r}"
        if not self.bias:
            extra += ", bias=False"
        return f"Conv({self.out_channels}, {self.kernel_size}{act}{extra})"


class Conv1D(Conv):
    """1-D convolution (PyTorch's ``Conv1d``) on (channels, length) input, data (n, C, L).

    Args: ``out_channels``, ``kernel_size`` (int), ``activation``, ``stride`` (int),
    ``padding`` (int or ``"same"``), ``bias``.  Computed as a 2-D convolution of height 1.
    """

    kind_name = "conv1d"

    def __init__(self, out_channels, kernel_size, activation=None, stride=1, padding=0, bias=True):
        def one(name, v):
            if isinstance(v, (tuple, list)) and len(v) == 1:
                v = v[0]
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"Conv1D: `{name}` must be an int, got {v!r}")
            return int(v)

        k = one("kernel_size", kernel_size)
        s = one("stride", stride)
        if isinstance(padding, str):
            pad = padding
        else:
            pad = (0, one("padding", padding))
        super().__init__(out_channels, (1, k), activation, (1, s), pad, bias)
        if padding == "same":
            self.padding = "same"

    def _pads(self, H, W):
        (_, _), (pw0, pw1) = super()._pads(1, W)
        return ((0, 0), (pw0, pw1))

    @staticmethod
    def _as2d(in_shape):
        if len(in_shape) != 2:
            raise ValueError(
                f"Conv1D needs input (channels, length), got shape {tuple(in_shape)}; "
                "give the chain its input shape, e.g. sc.SimpleChain((3, 100), ...)"
            )
        return (in_shape[0], 1, in_shape[1])

    def output_shape(self, in_shape):
        oc, _, ow = super().output_shape(self._as2d(in_shape))
        return (oc, ow)

    def num_params_shape(self, in_shape):
        return super().num_params_shape(self._as2d(in_shape))

    def macs_per_sample_shape(self, in_shape):
        return super().macs_per_sample_shape(self._as2d(in_shape))

    def program_fields(self, in_shape):
        return super().program_fields(self._as2d(in_shape))

    def init_params_shape(self, view, in_shape, rng):
        super().init_params_shape(view, self._as2d(in_shape), rng)

    def param_views_shape(self, view, in_shape):
        W, b = super().param_views_shape(view, self._as2d(in_shape))
        return (W.reshape(W.shape[0], W.shape[1], W.shape[3]), b)

    def describe(self):
        pad = self.padding if isinstance(self.padding, str) else self.padding[1]
        return {
            "kind": "Conv1D",
            "out_channels": self.out_channels,
            "kernel_size": self.kernel_size[1],
            "activation": self.activation.name,
            "stride": self.stride[1],
            "padding": pad,
            "bias": self.bias,
        }

    def __repr__(self):
        act = "" if self.activation.code == 0 else f", {self.activation!r}"
        return (
            f"Conv1D({self.out_channels}, {self.kernel_size[1]}{act}, stride={self.stride[1]}, "
            f"padding={self.padding if isinstance(self.padding, str) else self.padding[1]!r})"
        )
