"""The one place that holds smallchains' JIT policy.

Every compiled kernel in the package is decorated through :func:`kernel` or
:func:`parallel_kernel`, so the flags below apply everywhere and can be changed
in one switch:

* ``fastmath``: the LLVM flags that let loops vectorise (reassociation,
  contraction into FMA, reciprocal approximation) but *not* ``nnan``/``ninf``,
  so that NaN and Inf checks inside kernels keep working.
* Strict IEEE mode: set the environment variable ``SMALLCHAINS_STRICT=1``
  before importing smallchains and every kernel (activations included) is
  compiled without fastmath (useful for gradient checks at the last bit).
  Numba's cache key does not include the compilation flags, so strict mode
  does not use the on-disk cache at all (it compiles in every process).
* ``cache=True``: compiled machine code is kept on disk beside the sources (or
  in ``NUMBA_CACHE_DIR``), so a second process starts in well under a second.

Importing smallchains never changes global Numba settings.

Stale caches: Numba validates a cached kernel against its *own* source file
only, yet the machine code of a kernel includes the kernels it calls from other
files.  After any source file of the package changes (an upgrade, a branch
switch, an edit), :func:`purge_stale_caches` removes the package's cached
kernels once, at import, so stale machine code (which can crash) never runs.
"""

from __future__ import annotations

import glob
import hashlib
import os

import numba

STRICT = os.environ.get("SMALLCHAINS_STRICT", "0") not in ("", "0", "false", "False")

#: LLVM fast-math flags used by all kernels (empty in strict mode).
FASTMATH_FLAGS = frozenset() if STRICT else frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

#: Whether kernels are cached on disk (not in strict mode: see above).
CACHE = not STRICT

#: Kernels never allocate, so they are compiled without Numba's reference-counting
#: runtime (NRT).  With it, every call of one compiled function from another
#: increments and decrements the count of each array argument (an indirect call
#: and an atomic instruction each, ~5 ns): 45 ns of a 50 ns helper with four
#: array arguments here, and half of a one-sample vjp.  Without it those calls
#: cost nothing; allocating (``np.empty``) inside a kernel is then a compile
#: error, which is the policy anyway.  (``_nrt`` is Numba's own target option.)
NO_NRT = dict(_nrt=False)

_COMMON = dict(cache=CACHE, boundscheck=False, error_model="numpy", nogil=True, **NO_NRT)


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


def _package_dirs():
    top = os.path.dirname(os.path.abspath(__file__))
    return [root for root, _, files in os.walk(top) if any(f.endswith(".py") for f in files)
            and "__pycache__" not in root]


def _cache_dirs(pkg_dirs):
    root = os.environ.get("NUMBA_CACHE_DIR")
    dirs = [os.path.join(d, "__pycache__") for d in pkg_dirs]
    if root:  # Numba's _CacheLocator.get_suitable_cache_subpath: "<folder>_<sha1 of its path>"
        for d in pkg_dirs:
            full = os.path.abspath(d)
            sub = f"{os.path.split(full)[-1]}_{hashlib.sha1(full.encode()).hexdigest()}"
            dirs.append(os.path.join(root, sub))
    return dirs


def purge_stale_caches() -> bool:
    """Delete the package's cached kernels if any source file changed since they were made.

    Returns True when caches were purged.  Errors (read-only installs) are ignored:
    Numba then keeps using its own per-file validation.
    """
    try:
        pkg_dirs = _package_dirs()
        h = hashlib.sha256(numba.__version__.encode())
        for d in sorted(pkg_dirs):
            for f in sorted(glob.glob(os.path.join(d, "*.py"))):
                h.update(f.encode())
                with open(f, "rb") as fh:
                    h.update(fh.read())
        digest = h.hexdigest()
        stamp_dir = os.path.join(pkg_dirs[0], "__pycache__")
        stamp = os.path.join(stamp_dir, "smallchains-sources.sha256")
        if os.path.exists(stamp):
            with open(stamp) as fh:
                if fh.read().strip() == digest:
                    return False
        for d in _cache_dirs(pkg_dirs):
            for f in glob.glob(os.path.join(d, "*.nbi")) + glob.glob(os.path.join(d, "*.nbc")):
                try:
                    os.remove(f)
                except OSError:
                    pass
        os.makedirs(stamp_dir, exist_ok=True)
        tmp = f"{stamp}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            fh.write(digest)
        os.replace(tmp, stamp)
        return True
    except OSError:
        return False


purge_stale_caches()

