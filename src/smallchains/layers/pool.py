"""Pooling (``MaxPool``, ``AvgPool``), ``Flatten`` and ``Dropout`` layers (no parameters).

Their kernels are ``conv.pool_forward``/``pool_pullback``/``pool_tangent`` and, for
dropout, a counter-based mask in ``_engine`` (see :class:`Dropout`).
"""

from __future__ import annotations

import math

import numpy as np

from .._program import (
    F_AUX,
    F_C,
    F_H,
    F_KH,
    F_KIND,
    F_KW,
    F_NOUT,
    F_OC,
    F_OH,
    F_OW,
    F_SH,
    F_SW,
    F_W,
    KIND_AVGPOOL,
    KIND_DROPOUT,
    KIND_FLATTEN,
    KIND_MAXPOOL,
)
from ._base import ParameterFree
from .conv import _pair


def _pool_shape(in_shape, who):
    if len(in_shape) == 3:
        return tuple(int(v) for v in in_shape), False
    if len(in_shape) == 2:  # (C, L): 1-D pooling
        return (int(in_shape[0]), 1, int(in_shape[1])), True
    raise ValueError(
        f"{who} needs image input (channels, height, width) or (channels, length), got shape "
        f"{tuple(in_shape)}; give the chain its input shape, e.g. sc.SimpleChain((1, 28, 28), ...)"
    )


class _Pool(ParameterFree):
    kind = -1
    name = ""

    def __init__(self, k, stride=None):
        self.k_given = k
        self.stride_given = stride
        self.k = _pair("k", k)
        self.stride = self.k if stride is None else _pair("stride", stride)

    def _geometry(self, in_shape):
        (C, H, W), one_d = _pool_shape(in_shape, self.name)
        KH, KW = (1, self.k[1]) if one_d else self.k
        SH, SW = (1, self.stride[1]) if one_d else self.stride
        if H < KH or W < KW:
            raise ValueError(f"{self.name}: the input {H}x{W} is smaller than the pooling window {KH}x{KW}")
        OH = (H - KH) // SH + 1
        OW = (W - KW) // SW + 1
        return C, H, W, KH, KW, SH, SW, OH, OW, one_d

    def output_shape(self, in_shape):
        C, _, _, _, _, _, _, OH, OW, one_d = self._geometry(in_shape)
        return (C, OW) if one_d else (C, OH, OW)

    def macs_per_sample_shape(self, in_shape):
        C, _, _, KH, KW, _, _, OH, OW, _ = self._geometry(in_shape)
        return C * OH * OW * KH * KW

    def program_fields(self, in_shape):
        C, H, W, KH, KW, SH, SW, OH, OW, _ = self._geometry(in_shape)
        return {
            F_KIND: self.kind,
            F_NOUT: C * OH * OW,
            F_C: C,
            F_H: H,
            F_W: W,
            F_OC: C,
            F_OH: OH,
            F_OW: OW,
            F_KH: KH,
            F_KW: KW,
            F_SH: SH,
            F_SW: SW,
            "nparams": 0,
            "d": self.kind == KIND_MAXPOOL,
        }

    def describe(self):
        def js(v):
            return list(v) if isinstance(v, tuple) else v

        return {"kind": type(self).__name__, "k": js(self.k_given), "stride": js(self.stride_given)}

    def __repr__(self):
        st = "" if self.stride_given is None else f", stride={self.stride_given!r}"
        return f"{type(self).__name__}({self.k_given!r}{st})"


class MaxPool(_Pool):
    """Max pooling over k x k windows (``k`` an int or a pair), ``stride`` defaulting to ``k``.

    On (C, L) input (after a ``Conv1D``) it pools along the length with window ``k``.
    The gradient goes to the first maximal element of each window (PyTorch's rule);
    a NaN in a window propagates.
    """

    kind = KIND_MAXPOOL
    name = "MaxPool"


class AvgPool(_Pool):
    """Average pooling over k x k windows (``k`` an int or a pair), ``stride`` defaulting to ``k``."""

    kind = KIND_AVGPOOL
    name = "AvgPool"


class Flatten(ParameterFree):
    """Reshape (C, H, W) features to a flat vector of C*H*W (channel-major, as PyTorch's ``flatten``).

    Free: the block layout is already channel-major, so the layer only renames the buffer.
    """

    kind_name = "flatten"

    def output_shape(self, in_shape):
        return (int(np.prod(in_shape)),)

    def program_fields(self, in_shape):
        return {F_KIND: KIND_FLATTEN, F_NOUT: int(np.prod(in_shape)), "nparams": 0, "alias": True}

    def describe(self):
        return {"kind": "Flatten"}

    def __repr__(self):
        return "Flatten()"


class Dropout(ParameterFree):
    """Zero each feature with probability ``p`` during training, scaling the rest by 1/(1-p).

    Active only inside ``sc.train_batched``/``sc.train_unbatched`` (whose ``seed`` makes the
    masks reproducible: a mask depends on the seed, the step and the sample's position in
    the minibatch, not on the thread count); the identity everywhere else (``chain(X, p)``,
    ``loss(X, p)``, ``sc.valgrad``, ``vjp_into``/``jvp_into``).
    """

    kind_name = "dropout"

    def __init__(self, p):
        if isinstance(p, bool) or not isinstance(p, (float, int, np.floating, np.integer)) or not (0 <= p < 1):
            raise ValueError(f"Dropout: `p` must be a probability in [0, 1), got {p!r}")
        self.p = float(p)

    def output_shape(self, in_shape):
        return tuple(in_shape)

    def program_fields(self, in_shape):
        return {
            F_KIND: KIND_DROPOUT,
            F_NOUT: int(np.prod(in_shape)),
            "nparams": 0,
            "d": True,
            F_AUX: int(math.floor(self.p * 2.0**32)),
        }

    def describe(self):
        return {"kind": "Dropout", "p": self.p}

    def __repr__(self):
        return f"Dropout({self.p!r})"
