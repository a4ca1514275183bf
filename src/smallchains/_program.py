"""The layer program: how a chain is described to the compiled kernels.

A chain is compiled once, for all shapes, into a small interpreter (see
``_engine``).  What varies between chains is data: an ``int64`` array, the
*program*, with one header row and one row per layer.  Kernels read sizes,
offsets and activation codes from it, so a network shape never seen before
costs no compilation at all.

Header row (row 0):
    H_NLAYERS, H_NIN, H_NOUT, H_NPARAMS, H_UNITS, H_G1, H_G2, H_MAXW, H_T,
    then the addresses of compiled functions, written by ``_engine.bind`` for the
    dtypes in use: the block functions (``H_ADDR``), the process that wrote them
    (``H_PID``), the activations (``H_ACT``) and the image layers' functions (``H_LAYER``).

Layer rows (1..NLAYERS):
    F_KIND, F_NIN, F_NOUT, F_ACT, F_BIAS, F_WOFF, F_BOFF, F_Y, F_D, F_X

Workspace offsets (``H_G1``, ``H_G2``, ``F_Y``, ``F_D``, ``F_X``) are in
*units*: a unit is one feature of a block of ``B`` samples, so the element
(feature f, sample s) of a buffer at unit offset ``u`` sits at
``work[(u + f) * B + s]``.  A workspace for blocks of ``B`` samples holds
``H_UNITS * B`` elements.
"""

from __future__ import annotations

import numpy as np

NFIELDS = 78  # the header row's address slots need 78 columns; layer rows use 28

# header fields
H_NLAYERS = 0
H_NIN = 1
H_NOUT = 2
H_NPARAMS = 3
H_UNITS = 4
H_G1 = 5
H_G2 = 6
H_MAXW = 7
H_T = 8  # unit offset of the gathered regression targets (NOUT units)
#: (c, jit) address pairs of the block functions, per dtype (float32, float64) and function
#: (forward, backward, tangent): slot H_ADDR + 6 * dtype + 2 * function (+ 1 for jit)
H_ADDR = 9
H_PID = 21  # the process whose addresses the address slots hold
#: activation code c (1..8) for dtype d: slot H_ACT + 16 * d + 2 * (c - 1)
H_ACT = 22
#: image-layer function k (``_engine.LAYER_*``, 0..5) for dtype d: slot H_LAYER + 12 * d + 2 * k
H_LAYER = 54

# layer fields
F_KIND = 0
F_NIN = 1
F_NOUT = 2
F_ACT = 3
F_BIAS = 4
F_WOFF = 5
F_BOFF = 6
F_Y = 7  # unit offset of the layer's output buffer
F_D = 8  # unit offset of the saved activation derivative / pooling argmax / dropout mask (-1: none)
F_X = 9  # unit offset of the layer's input buffer
F_NW = 10  # number of weights (the entries a weight penalty applies to), from F_WOFF
# geometry of image layers (Conv, pooling): input (C, H, W), output (OC, OH, OW),
# kernel (KH, KW), stride (SH, SW), zero padding (PH, PW)
F_C = 11
F_H = 12
F_W = 13
F_OC = 14
F_OH = 15
F_OW = 16
F_KH = 17
F_KW = 18
F_SH = 19
F_SW = 20
F_PH = 21
F_PW = 22
F_PAD = 23  # unit offset of the zero-padded input copy (C, H+2PH, W+2PW) (-1: no padding)
F_PGX = 24  # unit offset of the padded input cotangent (-1: none)
F_AUX = 25  # dropout: probability of dropping, in units of 2**-32
F_HP = 26  # padded input height (H + both paddings)
F_WP = 27  # padded input width

# layer kinds
KIND_DENSE = 0
KIND_ACTIVATION = 1
KIND_CONV = 2
KIND_MAXPOOL = 3
KIND_AVGPOOL = 4
KIND_FLATTEN = 5
KIND_DROPOUT = 6

#: Samples per block inside the kernels (the batch is split into blocks of at most this size).
BLOCK = 256


def build_program(nin: int, rows: list) -> np.ndarray:
    """Lay out a program from layer rows.

    A row is either a tuple ``(kind, nout, act, has_bias, nparams)`` (dense and
    element-wise layers) or a dict of field values (``F_*`` keys) with the extra
    keys ``"d"`` (needs a saved-derivative buffer of NOUT units), ``"pad"``
    (units of a padded input copy, 0 for none), ``"pgx"`` (units of a padded
    input cotangent) and ``"alias"`` (output is the input buffer itself).
    Parameter offsets are assigned in order (each layer: weights, then bias).
    """
    L = len(rows)
    prog = np.zeros((L + 1, NFIELDS), dtype=np.int64)
    unit = nin  # the input block occupies units [0, nin)
    poff = 0
    width = nin
    maxw = nin
    xu = 0
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            kind, nout, act, has_bias, nparams = row
            row = {F_KIND: kind, F_NOUT: nout, F_ACT: act, F_BIAS: has_bias, "nparams": nparams, "d": act != 0}
            if kind == KIND_DENSE:
                row[F_NW] = nout * width
        r = prog[i]
        for k, v in row.items():
            if isinstance(k, int):
                r[k] = v
        kind, nout = r[F_KIND], r[F_NOUT]
        r[F_NIN] = width
        r[F_WOFF] = poff
        r[F_BOFF] = poff + r[F_NW]
        poff += row["nparams"]
        r[F_X] = xu
        if row.get("alias"):
            r[F_Y] = xu
        else:
            r[F_Y] = unit
            unit += nout
        if row.get("d"):
            r[F_D] = unit
            unit += nout
        else:
            r[F_D] = -1
        r[F_PAD] = -1
        r[F_PGX] = -1
        if row.get("pad"):
            r[F_PAD] = unit
            unit += row["pad"]
        if row.get("pgx"):
            r[F_PGX] = unit
            unit += row["pgx"]
        xu = r[F_Y]
        width = nout
        maxw = max(maxw, nout)
    h = prog[0]
    h[H_NLAYERS] = L
    h[H_NIN] = nin
    h[H_NOUT] = width
    h[H_NPARAMS] = poff
    h[H_G1] = unit
    h[H_G2] = unit + maxw
    h[H_T] = unit + 2 * maxw
    h[H_UNITS] = unit + 2 * maxw + width
    h[H_MAXW] = maxw
    return prog
