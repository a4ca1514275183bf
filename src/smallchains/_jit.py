"""The one place that holds smallchains' JIT policy.

Every compiled kernel in the package is decorated through :func:`kernel` or
:func:`parallel_kernel`, so the flags below apply everywhere and can be changed
in one switch:

* ``fastmath``: the LLVM flags that let loops vectorise (reassociation,
  contraction into FMA, reciprocal approximation) but *not* ``nnan``/``ninf``,
  so that NaN and Inf checks inside kernels keep working.
* Strict IEEE mode: set the environment variable ``SMALLCHAINS_STRICT=1``
  before importing smallchains and every kernel is compiled without fastmath
  (useful for gradient checks at the last bit).  It uses its own on-disk cache
  entries, because Numba keys its cache on the compilation flags.
* ``cache=True``: compiled machine code is kept on disk beside the sources (or
  in ``NUMBA_CACHE_DIR``), so a second process starts in well under a second.

Importing smallchains never changes global Numba settings.
"""

from __future__ import annotations

import os

import numba

STRICT = os.environ.get("SMALLCHAINS_STRICT", "0") not in ("", "0", "false", "False")

#: LLVM fast-math flags used by all kernels (empty in strict mode).
FASTMATH_FLAGS = frozenset() if STRICT else frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

_COMMON = dict(cache=True, boundscheck=False, error_model="numpy", nogil=True)


def kernel(fn=None, **overrides):
    """Decorate a serial compiled kernel with the package's JIT policy."""
    opts = dict(_COMMON, fastmath=set(FASTMATH_FLAGS) or False)
    opts.update(overrides)
    if fn is None:
        return lambda f: numba.njit(**opts)(f)
    return numba.njit(**opts)(fn)


def parallel_kernel(fn=None, **overrides):
    """Decorate a kernel that uses ``numba.prange`` (threads over batch blocks)."""
    overrides.setdefault("parallel", True)
    return kernel(fn, **overrides)


def default_num_threads() -> int:
    """Threads used by default: the cores Numba may use (``NUMBA_NUM_THREADS``)."""
    return int(numba.config.NUMBA_NUM_THREADS)
