"""``SimpleChain``: a feed-forward chain of layers over one flat parameter vector."""

from __future__ import annotations

import math
import os
import threading

import numpy as np

from . import _engine as E
from . import kernels as K
from ._errors import raise_for_status
from ._jit import default_num_threads
from ._program import BLOCK, F_KIND, H_UNITS, KIND_AVGPOOL, KIND_CONV, KIND_MAXPOOL, build_program
from ._validate import FLOATS, MAX_COUNT, as_data, check_out, check_params, positive_int, seed_value, writable
from .layers import Layer

#: Below this many multiply-adds per call the work stays on one thread
#: (starting a parallel region costs tens of microseconds).
SERIAL_MACS = 400_000
#: fewest samples a thread is given (a batch of 32 on 2 cores: two blocks of 16)
MIN_PER_THREAD = 16


class SimpleChain:
    """A chain of layers ``layers[-1](...layers[0](x))`` with parameters in one flat vector.

    Args:
        input_dim: number of input features (a positive integer).
        *layers: layer objects (``sc.Dense``, ``sc.Activation``).

    Example::

        import numpy as np, smallchains as sc
        chain = sc.SimpleChain(4, sc.Dense(32, sc.tanh), sc.Dense(16, sc.tanh), sc.Dense(4))
        p = chain.init_params(seed=0)          # float32 vector of length chain.num_params
        y = chain(np.random.randn(10, 4).astype(np.float32), p)   # shape (10, 4)

    The chain holds no parameters and no mutable state visible to users: the
    workspaces it caches for its kernels are private and never returned.
    """

    def __init__(self, input_dim, *layers):
        if isinstance(input_dim, (tuple, list)):
            if len(input_dim) not in (1, 2, 3):
                raise ValueError(
                    f"`input_dim` must be a feature count, (channels, length) or (channels, height, "
                    f"width), got {input_dim!r}"
                )
            shape = tuple(positive_int("input_dim", v) for v in input_dim)
        else:
            shape = (positive_int("input_dim", input_dim),)
        #: the shape of one sample: (d,), (C, L) or (C, H, W)
        self.input_shape = shape
        #: features per sample (the product of ``input_shape``)
        self.input_dim = int(np.prod(shape))
        if not layers:
            raise ValueError("SimpleChain needs at least one layer, e.g. sc.SimpleChain(4, sc.Dense(4))")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layer {i} is {layer!r}, not a smallchains layer (sc.Dense, sc.Conv, ...)")
        self.layers = tuple(layers)
        rows = []
        shapes = [shape]
        self._macs = 0
        for i, layer in enumerate(self.layers):
            ins = shapes[-1]
            try:
                rows.append(layer.program_fields(ins))
                self._macs += layer.macs_per_sample_shape(ins)
                shapes.append(tuple(layer.output_shape(ins)))
            except ValueError as exc:
                raise ValueError(f"layer {i} ({layer!r}): {exc}") from None
        n_params = sum(int(layer.num_params_shape(ins)) for layer, ins in zip(self.layers, shapes))
        widest = max(int(np.prod(sh, dtype=object)) for sh in shapes)
        if n_params > MAX_COUNT or widest > MAX_COUNT:
            raise ValueError(
                f"this chain would have {n_params:,} parameters and {widest:,} values per sample in its "
                f"widest layer; at most {MAX_COUNT:,} of each are supported (a float32 vector that "
                "long is 8 GiB): use smaller layers"
            )
        self._shapes = tuple(shapes)
        #: the shape of one output sample
        self.output_shape = shapes[-1]
        self.output_dim = int(np.prod(shapes[-1]))
        self.program = build_program(self.input_dim, rows)
        self.num_params = E.num_params(self.program)
        units = int(self.program[0, H_UNITS])
        # samples per block: long sample runs in the inner loops pay more than an L2-sized
        # workspace (LeNet-5 on Fashion-MNIST, 2 threads, batch 256: blocks of 8 -> 1.93 s/epoch,
        # 16 -> 1.49 s, 32 -> 1.04 s, 64 -> 0.87 s, 128 -> 0.87 s); only one or two layers'
        # buffers are hot at a time, so the cap is 8 MB of float32 per thread.
        b = BLOCK
        while b > 8 and units * b * 4 > (8 << 20):
            b //= 2
        self._block = b
        self._work_cache = {}
        self._bound = {}  # (dtype, tangent) -> the process that bound the program

    # ------------------------------------------------------------------ parameters

    def init_params(self, seed=0, dtype=np.float32) -> np.ndarray:
        """A new flat parameter vector: Glorot-uniform weights, zero biases, seeded."""
        dtype = np.dtype(dtype)
        if dtype not in FLOATS:
            raise TypeError(f"`dtype` must be np.float32 or np.float64, got {dtype}")
        rng = np.random.default_rng(seed_value("seed", seed))
        p = np.zeros(self.num_params, dtype=dtype)
        off = 0
        for layer, ins in zip(self.layers, self._shapes):
            k = layer.num_params_shape(ins)
            layer.init_params_shape(p[off : off + k], ins, rng)
            off += k
        return p

    def param_views(self, p) -> dict:
        """Named per-layer views into ``p``: ``{"dense1": (W, b), ...}`` (writes go to ``p``)."""
        check_params(p, self.num_params)
        views = {}
        off = 0
        counts = {}
        for layer, ins in zip(self.layers, self._shapes):
            k = layer.num_params_shape(ins)
            if k:
                counts[layer.kind_name] = counts.get(layer.kind_name, 0) + 1
                views[f"{layer.kind_name}{counts[layer.kind_name]}"] = layer.param_views_shape(p[off : off + k], ins)
            off += k
        return views

    # ------------------------------------------------------------------ workspaces and threads

    def work_size(self, batch=1) -> int:
        """Elements of a workspace for the compiled kernels (``smallchains.kernels``)."""
        return int(K.work_size(self.program, int(batch)))

    def _threads(self, n, num_threads):
        if num_threads is not None:
            nt = positive_int("num_threads", num_threads)
        elif n * max(self._macs, 1) < SERIAL_MACS:
            nt = 1
        else:
            nt = default_num_threads()
        return max(1, min(nt, math.ceil(n / min(self._block, MIN_PER_THREAD))))

    def _workspace(self, dtype, nt, n):
        """Private (work, slabs, losses, stats) for ``nt`` threads; reused across calls.

        Keyed by the calling Python thread too: the kernels release the GIL, so two
        Python threads may use one chain at the same time without sharing buffers.
        """
        B = min(self._block, math.ceil(n / nt))  # each thread's share in one block when it fits
        key = (dtype.char, nt, B, threading.get_ident())
        ws = self._work_cache.get(key)
        if ws is None:
            if len(self._work_cache) > 16:
                self._work_cache.clear()
            units = int(self.program[0, H_UNITS])
            ws = (
                np.zeros((nt, units * B), dtype=dtype),
                np.zeros((nt, self.num_params), dtype=dtype),
                np.zeros(nt, dtype=np.float64),
                np.zeros(nt, dtype=np.int64),
            )
            self._work_cache[key] = ws
        return ws

    @property
    def has_images(self) -> bool:
        """True when the chain has convolution or pooling layers (they compile their own kernels)."""
        kinds = self.program[1:, F_KIND]
        return bool(np.isin(kinds, (KIND_CONV, KIND_MAXPOOL, KIND_AVGPOOL)).any())

    def bound_program(self, dtype, tangent=False) -> np.ndarray:
        """This chain's program with the addresses of its compiled block functions for ``dtype``.

        Internal interface of the package's drivers (``_engine.bind``); the public kernels of
        ``smallchains.kernels`` take ``chain.program`` as it is.  Remembers what it bound (and in
        which process), so that the call costs a dictionary lookup after the first.
        """
        key = (dtype, tangent)  # p.dtype from the callers (a np.float32 type as key would only bind again)
        pid = os.getpid()
        if self._bound.get(key) != pid:
            E.bind(self.program, dtype, tangent)
            self._bound[key] = pid
        return self.program

    # ------------------------------------------------------------------ evaluation

    def __call__(self, X, p, num_threads=None) -> np.ndarray:
        """Outputs for ``X`` of shape (n, d) -> (n, m), or one sample (d,) -> (m,). New array."""
        check_params(p, self.num_params)
        X2, one = as_data("X", X, p.dtype, self.input_dim, shape=self.input_shape)
        n = X2.shape[0]
        nt = self._threads(n, num_threads)
        work, _, _, stats = self._workspace(p.dtype, nt, n)
        Y = np.empty((n, self.output_dim), dtype=p.dtype)
        raise_for_status(E.forward(self.bound_program(p.dtype), writable(p), X2, Y, work, stats), "X")
        return Y[0] if one else Y

    def vjp_into(self, out, p, v, x, out_x=None, num_threads=None):
        """Vector-Jacobian product, in place.

        ``out`` (length ``num_params``, overwritten) <- vᵀ·∂f/∂p at ``x``; when ``out_x`` is
        given it is overwritten with vᵀ·∂f/∂x.  ``x`` is one sample (d,) with ``v`` (m,) and
        ``out_x`` (d,), or a batch (n, d) with ``v`` (n, m) and ``out_x`` (n, d); for a batch
        the parameter cotangent is summed over the samples.  Returns ``out``.

        Aliasing: ``out`` and ``out_x`` must not overlap each other or the inputs.
        """
        check_params(p, self.num_params)
        check_out("out", out, (self.num_params,), p.dtype)
        _no_overlap("out", out, p=p)
        X2, one = as_data("x", x, p.dtype, self.input_dim, shape=self.input_shape)
        n = X2.shape[0]
        V2, vone = as_data("v", v, p.dtype, self.output_dim, what="outputs")
        if V2.shape[0] != n or vone != one:
            raise ValueError(
                f"`v` has shape {np.shape(v)} but `x` has shape {np.shape(x)}; "
                f"pass v of shape {(self.output_dim,) if one else (n, self.output_dim)}"
            )
        want_x = out_x is not None
        if want_x:
            check_out("out_x", out_x, self.input_shape if one else (n, *self.input_shape), p.dtype)
            _no_overlap("out_x", out_x, x=x, out=out)
            GX = out_x.reshape(n, self.input_dim)
        else:
            GX = X2
        nt = self._threads(n, num_threads)
        work, slabs, _, stats = self._workspace(p.dtype, nt, n)
        raise_for_status(
            E.vjp(self.bound_program(p.dtype), writable(p), V2, X2, out, GX, want_x, slabs, work, stats), "x` or `v"
        )
        return out

    def jvp_into(self, out, p, x, dx=None, dp=None):
        """Jacobian-vector product, in place: ``out`` <- ∂f/∂x·dx + ∂f/∂p·dp at ``x``.

        ``x`` one sample (d,) or a batch (n, d); ``dx`` of the same shape or None;
        ``dp`` of length ``num_params`` or None; ``out`` of shape (m,) or (n, m), overwritten.
        Returns ``out``.
        """
        check_params(p, self.num_params)
        X2, one = as_data("x", x, p.dtype, self.input_dim, shape=self.input_shape)
        n = X2.shape[0]
        check_out("out", out, (self.output_dim,) if one else (n, self.output_dim), p.dtype)
        _no_overlap("out", out, x=x, dx=dx)
        use_dx = dx is not None
        if use_dx:
            DX, _ = as_data("dx", dx, p.dtype, self.input_dim, shape=self.input_shape)
            if DX.shape != X2.shape:
                raise ValueError(f"`dx` has shape {np.shape(dx)}; it must have x's shape {np.shape(x)}")
        else:
            DX = X2
        use_dp = dp is not None
        if use_dp:
            if not isinstance(dp, np.ndarray) or dp.ndim != 1 or dp.shape[0] != self.num_params:
                raise ValueError(f"`dp` must be a vector of length {self.num_params}, got shape {np.shape(dp)}")
            if dp.dtype not in FLOATS:
                raise TypeError(f"`dp` has dtype {dp.dtype}; pass float32 or float64 like `p`")
            DP = writable(np.ascontiguousarray(dp, dtype=p.dtype))
        else:
            DP = p = writable(p)
        work, _, _, _ = self._workspace(p.dtype, 1, n)
        Y = np.empty((n, self.output_dim), dtype=p.dtype)
        prog = self.bound_program(p.dtype, tangent=True)
        raise_for_status(
            E.jvp(prog, writable(p), X2, DX, DP, use_dx, use_dp, Y, out.reshape(n, self.output_dim), work[0]), "x"
        )
        return out

    def kernels(self):
        """The compiled kernels and this chain's program, for your own ``@njit`` code.

        Returns a :class:`ChainKernels` (see ``smallchains.kernels`` for the contract).
        """
        return ChainKernels(self)

    def add_loss(self, loss, penalty=None):
        """Attach a loss (and optionally a penalty): the same as ``sc.add_loss(chain, loss)``."""
        from .losses import ChainLoss

        return ChainLoss(self, loss, penalty)

    # ------------------------------------------------------------------ description

    def describe(self) -> dict:
        inp = self.input_shape[0] if len(self.input_shape) == 1 else list(self.input_shape)
        return {"input_dim": inp, "layers": [layer.describe() for layer in self.layers]}

    def __repr__(self):
        inner = ", ".join(repr(layer) for layer in self.layers)
        inp = self.input_shape[0] if len(self.input_shape) == 1 else self.input_shape
        return f"SimpleChain({inp}, {inner})"

    def __len__(self):
        return len(self.layers)

    def summary(self) -> str:
        """A table of the layers: each one's output shape and parameter count, and the totals."""
        rows = [("input", str(tuple(self.input_shape)), "")]
        for layer, ins, outs in zip(self.layers, self._shapes, self._shapes[1:]):
            rows.append((repr(layer), str(tuple(outs)), str(layer.num_params_shape(ins))))
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        lines = [f"{a:<{w0}}  {b:<{w1}}  {c:>8}" for a, b, c in [("layer", "output shape", "params")] + rows]
        lines.append(f"{'total':<{w0}}  {'':<{w1}}  {self.num_params:>8}")
        return "\n".join(lines)


def _no_overlap(name, buf, **others):
    for other_name, a in others.items():
        if isinstance(a, np.ndarray) and np.may_share_memory(buf, a):
            raise ValueError(f"`{name}` shares memory with `{other_name}`; in-place outputs need their own arrays")


class ChainKernels:
    """A chain's program plus the compiled functions of ``smallchains.kernels``.

    Attributes: ``program`` (pass it first to every function), ``forward_into``,
    ``vjp_into``, ``vjp_accumulate``, ``jvp_into``, ``forward_batch_into``,
    ``vjp_batch_into`` (Numba dispatchers), ``num_params``, ``input_dim``,
    ``output_dim``; ``work_size(batch)`` and ``new_work(batch, dtype)``.
    """

    forward_into = staticmethod(K.forward_into)
    vjp_into = staticmethod(K.vjp_into)
    vjp_accumulate = staticmethod(K.vjp_accumulate)
    jvp_into = staticmethod(K.jvp_into)
    forward_batch_into = staticmethod(K.forward_batch_into)
    vjp_batch_into = staticmethod(K.vjp_batch_into)

    def __init__(self, chain: SimpleChain):
        self.program = chain.program
        self.num_params = chain.num_params
        self.input_dim = chain.input_dim
        self.output_dim = chain.output_dim

    def work_size(self, batch=1) -> int:
        return int(K.work_size(self.program, int(batch)))

    def new_work(self, batch=1, dtype=np.float64) -> np.ndarray:
        return np.zeros(self.work_size(batch), dtype=dtype)
