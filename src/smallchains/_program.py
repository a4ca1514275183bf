"""The layer program: how a chain is described to the compiled kernels.

A chain is compiled once, for all shapes, into a small interpreter (see
``_engine``).  What varies between chains is data: an ``int64`` array, the
*program*, with one header row and one row per layer.  Kernels read sizes,
offsets and activation codes from it, so a network shape never seen before
costs no compilation at all.

Header row (row 0):
    H_NLAYERS, H_NIN, H_NOUT, H_NPARAMS, H_UNITS, H_G1, H_G2, H_MAXW, H_T

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

NFIELDS = 16

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

# layer fields
F_KIND = 0
F_NIN = 1
F_NOUT = 2
F_ACT = 3
F_BIAS = 4
F_WOFF = 5
F_BOFF = 6
F_Y = 7  # unit offset of the layer's output buffer
F_D = 8  # unit offset of the saved activation derivative (-1: none)
F_X = 9  # unit offset of the layer's input buffer

# layer kinds
KIND_DENSE = 0
KIND_ACTIVATION = 1

#: Samples per block inside the kernels (the batch is split into blocks of at most this size).
BLOCK = 256


def build_program(nin: int, rows: list[tuple[int, int, int, int, int]]) -> np.ndarray:
    """Lay out a program from ``(kind, nout, act, has_bias, nparams)`` rows.

    Returns the int64 program array; parameter offsets are assigned in order
    (each dense layer: ``W`` row-major ``nout x nin``, then ``b``).
    """
    L = len(rows)
    prog = np.zeros((L + 1, NFIELDS), dtype=np.int64)
    unit = nin  # the input block occupies units [0, nin)
    poff = 0
    width = nin
    maxw = nin
    xu = 0
    for i, (kind, nout, act, has_bias, nparams) in enumerate(rows, start=1):
        r = prog[i]
        r[F_KIND] = kind
        r[F_NIN] = width
        r[F_NOUT] = nout
        r[F_ACT] = act
        r[F_BIAS] = has_bias
        r[F_WOFF] = poff
        r[F_BOFF] = poff + nout * width if kind == KIND_DENSE else poff
        poff += nparams
        r[F_X] = xu
        r[F_Y] = unit
        unit += nout
        if act != 0:
            r[F_D] = unit
            unit += nout
        else:
            r[F_D] = -1
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
