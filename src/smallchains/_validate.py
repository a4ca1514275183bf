"""Checks and coercions done in Python before entering compiled code.

Policy (documented in docs/chain-api.md):
* Parameters ``p`` are never copied: they must be a 1-D C-contiguous float32 or
  float64 array of length ``chain.num_params``; the compute dtype is ``p.dtype``.
* Data arrays (``X``, ``v``, targets) of the other float precision are converted
  to ``p.dtype`` (a copy); non-contiguous ones are copied to C order.  Integer,
  boolean, float16 and complex data are refused with a TypeError.
* NaN/Inf in data are detected inside the kernels (no extra pass) and raised
  as ValueError.
* Output buffers written in place must already have the right shape, dtype and
  be C-contiguous: a copy would silently lose the result.
"""

from __future__ import annotations

import numpy as np

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def check_params(p, num_params: int, name: str = "p") -> np.ndarray:
    if not isinstance(p, np.ndarray):
        raise TypeError(
            f"`{name}` must be a NumPy array of length {num_params} (from chain.init_params()), got {type(p).__name__}"
        )
    if p.dtype not in FLOATS:
        raise TypeError(
            f"`{name}` has dtype {p.dtype}; parameters must be float32 or float64 "
            f"(use chain.init_params(dtype=np.float32) or p.astype(np.float32))"
        )
    if p.ndim != 1 or p.shape[0] != num_params:
        raise ValueError(
            f"`{name}` has shape {p.shape} but the chain has {num_params} parameters; "
            f"pass a 1-D vector of length {num_params} (chain.init_params())"
        )
    if not p.flags.c_contiguous:
        raise ValueError(
            f"`{name}` is not contiguous; parameters are updated in place, so pass "
            f"np.ascontiguousarray({name}) and keep that array"
        )
    return p


def writable(a: np.ndarray) -> np.ndarray:
    """``a``, or a copy of it when it is read-only (the compiled drivers take writable arrays only)."""
    return a if a.flags.writeable else a.copy()


def as_data(name: str, a, dtype, ncols: int | None, *, allow_1d: bool = True, what="features", shape=None):
    """Return ``(array2d, was_1d)`` as C-contiguous ``dtype`` with ``ncols`` columns."""
    if not isinstance(a, np.ndarray):
        try:
            a = np.asarray(a)
        except Exception as exc:  # pragma: no cover - exotic inputs
            raise TypeError(f"`{name}` must be an array, got {type(a).__name__}") from exc
    if a.dtype.kind != "f" or a.dtype.itemsize < 4 or a.dtype.itemsize > 8:
        raise TypeError(
            f"`{name}` has dtype {a.dtype}; pass float32 or float64 data "
            f"(e.g. {name}.astype(np.{np.dtype(dtype).name}))"
        )
    if shape is not None and len(shape) > 1:  # image / sequence samples: (n, *shape) or one sample
        shape = tuple(shape)
        k = len(shape)
        if a.ndim == k + 1 and a.shape[1:] == shape:
            a = a.reshape(a.shape[0], -1)
        elif a.ndim == k and a.shape == shape and allow_1d:
            a = a.reshape(-1)
        else:
            raise ValueError(
                f"`{name}` has shape {a.shape}; the chain takes samples of shape {shape}, so pass "
                f"an array of shape (n, {', '.join(map(str, shape))})"
                + (f" or one sample of shape {shape}" if allow_1d else "")
            )
    was_1d = a.ndim == 1
    if was_1d and allow_1d:
        a = a.reshape(1, -1)
    if a.ndim != 2:
        shape = f"(n, {ncols})" if ncols is not None else "(n, k)"
        raise ValueError(
            f"`{name}` has shape {a.shape}; pass an array of shape {shape}"
            + (f" or one sample of shape ({ncols},)" if allow_1d and ncols else "")
        )
    if ncols is not None and a.shape[1] != ncols:
        side = "input" if what == "features" else "output"
        raise ValueError(
            f"`{name}` has {a.shape[1]} {what} but the chain's {side} is {ncols}; pass an array of shape (n, {ncols})"
        )
    if a.shape[0] == 0:
        raise ValueError(f"`{name}` is empty (shape {a.shape}); pass at least one sample")
    if a.dtype != dtype or not a.flags.c_contiguous:
        a = np.ascontiguousarray(a, dtype=dtype)
    return a, was_1d


def check_out(name: str, a, shape, dtype) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"`{name}` must be a NumPy array of shape {shape} and dtype {np.dtype(dtype)}")
    if a.shape != tuple(shape):
        raise ValueError(f"`{name}` has shape {a.shape}; it must have shape {tuple(shape)}")
    if a.dtype != dtype:
        raise TypeError(f"`{name}` has dtype {a.dtype}; it must have the parameters' dtype {np.dtype(dtype)}")
    if not a.flags.c_contiguous or not a.flags.writeable:
        raise ValueError(f"`{name}` must be a writeable C-contiguous array (it is written in place)")
    return a


#: The largest size (features, units, channels, epochs...) accepted anywhere: a count past it
#: cannot be allocated on any machine and would overflow the kernels' int64 arithmetic.
MAX_COUNT = 2**31 - 1


def positive_int(name: str, v, minimum: int = 1, maximum: int = MAX_COUNT) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {v!r}")
    if v > maximum:
        raise ValueError(f"`{name}` = {v} is larger than the largest supported value, {maximum}")
    return int(v)


def seed_value(name: str, seed):
    """A seed for ``np.random.default_rng``: a non-negative integer or a ``np.random.Generator``."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`{name}` must be a non-negative integer or a np.random.Generator, got {seed!r}")
    return int(seed)
