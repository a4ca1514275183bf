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

import contextlib
import glob
import hashlib
import os
import pickle
import threading
import time
import warnings

import numba
import numpy as np
from numba import types
from numba.core import caching, cgutils
from numba.core import serialize as numba_serialize
from numba.core.extending import intrinsic
from numba.core.registry import CPUDispatcher
from numba.experimental.function_type import _get_jit_address, _get_wrapper_address

from . import _log
from ._atomic import atomic_write
from ._warnings import CompileCacheWarning

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

#: the options of :func:`kernel`, for implementations Numba compiles from an ``overload``
JIT_OPTIONS = dict(_COMMON, fastmath=set(FASTMATH_FLAGS) or False)


def kernel(fn=None, **overrides):
    """Decorate a serial compiled kernel with the package's JIT policy."""
    opts = dict(JIT_OPTIONS)
    opts.update(overrides)
    if fn is None:
        return lambda f: _njit(f, opts)
    return _njit(fn, opts)


def parallel_kernel(fn=None, **overrides):
    """Decorate a kernel that uses ``numba.prange`` (threads over batch blocks)."""
    overrides.setdefault("parallel", True)
    return kernel(fn, **overrides)


# --------------------------------------------------------------------------------------------
# Calls through addresses.  Numba links the code of every compiled function a kernel calls
# into that kernel and optimises and generates machine code for the whole tree again, for
# every caller and every caller of a caller.  A kernel called through its address instead is
# compiled once; its callers stay small.  The address must reach the caller as data (an
# int64), since a cached kernel cannot hold a process's addresses.
# --------------------------------------------------------------------------------------------


def function_caster(ftype):
    """An intrinsic ``(c_addr, jit_addr) -> first-class function`` of Numba type ``ftype``.

    The addresses come from :func:`addresses` for the same signature; calling the result
    with other addresses is undefined behaviour, so callers check them first.
    """

    @intrinsic
    def cast(typingctx, c_addr, jit_addr):
        def codegen(context, builder, signature, args):
            sfunc = cgutils.create_struct_proxy(ftype)(context, builder)
            vp = context.get_value_type(types.voidptr)
            sfunc.c_addr = builder.inttoptr(args[0], vp)
            sfunc.py_addr = cgutils.get_null_value(vp)
            sfunc.jit_addr = builder.inttoptr(args[1], vp)
            return sfunc._getvalue()

        return ftype(types.int64, types.int64), codegen

    return cast


def addresses(dispatcher, sig):
    """(c_addr, jit_addr) of ``dispatcher`` compiled for ``sig`` (compiled or loaded now if needed).

    The caller must keep ``dispatcher`` alive while the addresses are in use.
    """
    if sig not in dispatcher.overloads:
        dispatcher.compile(sig)
    return np.int64(_get_wrapper_address(dispatcher, sig)), np.int64(_get_jit_address(dispatcher, sig))


def default_num_threads() -> int:
    """Threads used by default: the cores Numba may use (``NUMBA_NUM_THREADS``)."""
    return int(numba.config.NUMBA_NUM_THREADS)


def _package_dirs():
    top = os.path.dirname(os.path.abspath(__file__))
    return [
        root for root, _, files in os.walk(top) if any(f.endswith(".py") for f in files) and "__pycache__" not in root
    ]


def _cache_dirs(pkg_dirs):
    root = os.environ.get("NUMBA_CACHE_DIR")
    dirs = [os.path.join(d, "__pycache__") for d in pkg_dirs]
    if root:  # Numba's _CacheLocator.get_suitable_cache_subpath: "<folder>_<sha1 of its path>"
        for d in pkg_dirs:
            full = os.path.abspath(d)
            sub = f"{os.path.split(full)[-1]}_{hashlib.sha1(full.encode()).hexdigest()}"
            dirs.append(os.path.join(root, sub))
    return dirs


def cache_folders() -> list[str]:
    """The folders where Numba keeps the package's compiled kernels (they may not exist yet).

    Beside the sources (``__pycache__`` of each package folder) unless ``NUMBA_CACHE_DIR`` is
    set, in which case Numba uses ``$NUMBA_CACHE_DIR/<folder>_<sha1 of its path>``.
    """
    dirs = _cache_dirs(_package_dirs())
    if os.environ.get("NUMBA_CACHE_DIR"):
        return dirs[len(dirs) // 2 :]
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
        atomic_write(stamp, lambda fh: fh.write(digest))
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# The on-disk cache, made safe.
#
# Two failure modes of Numba's own cache took whole processes down (issue: the first run):
#
# 1. Parallel kernels and the threading layer.  A kernel compiled with ``parallel=True``
#    calls symbols of Numba's threading layer (``allocate_sched``, ``do_scheduling``...),
#    which exist only once the layer is launched.  Numba launches it when it compiles a
#    parallel kernel, or when it loads one from the cache *whose entry records that it needs
#    it* (``reload_init``).  A serial kernel compiled in a process where its parallel callee
#    came from the cache does not record it, so the next process that loads the serial
#    kernel from the cache never launches the layer: "LLVM ERROR: Symbol not found:
#    allocate_sched", or a segfault.  Fix at the root: the threading layer is launched
#    before any kernel of the package is loaded or compiled (``_CheckedCache.load_overload``
#    runs before both).  Launching it costs a few milliseconds, once.
# 2. A truncated or altered cache file raised raw pickle errors, or could hand corrupt
#    machine code to LLVM.  Every entry now carries a SHA-256 of its payload, checked before
#    anything is unpickled or linked; an entry that fails the check (or fails to load for
#    any other reason) is deleted and the kernel recompiled, with a CompileCacheWarning.
# --------------------------------------------------------------------------------------------

_threads_launched = False


def ensure_threading_layer() -> None:
    """Launch Numba's threading layer once (public ``numba.get_num_threads`` does it)."""
    global _threads_launched
    if not _threads_launched:
        numba.get_num_threads()
        _threads_launched = True


_PAYLOAD_FORMAT = "smallchains-checked-1"


class _CheckedImpl(caching.CompileResultCacheImpl):
    """Numba's compile-result cache with a checksum around each entry's payload."""

    def reduce(self, cres):
        blob = numba_serialize.dumps(super().reduce(cres))
        return (_PAYLOAD_FORMAT, hashlib.sha256(blob).hexdigest(), blob)

    def rebuild(self, target_context, payload):
        if not (isinstance(payload, tuple) and len(payload) == 3 and payload[0] == _PAYLOAD_FORMAT):
            raise _CorruptEntry("not written by this version of smallchains")
        _, digest, blob = payload
        if not isinstance(blob, bytes) or hashlib.sha256(blob).hexdigest() != digest:
            raise _CorruptEntry("checksum mismatch")
        return super().rebuild(target_context, pickle.loads(blob))


class _CorruptEntry(Exception):
    pass


class _CheckedCache(caching.FunctionCache):
    _impl_class = _CheckedImpl

    def load_overload(self, sig, target_context):
        ensure_threading_layer()
        try:
            cres = super().load_overload(sig, target_context)
        except Exception as exc:  # any unreadable entry: drop it and compile afresh
            self._drop_entries()
            warnings.warn(
                f"smallchains: the cached compiled code of {self._py_func.__module__}.{self._py_func.__qualname__} "
                f"could not be used ({type(exc).__name__}: {exc}); it was deleted and is being recompiled. "
                f"Cache folder: {self.cache_path}",
                CompileCacheWarning,
                stacklevel=2,
            )
            cres = None
        if cres is None:
            compile_notice(self._py_func)
        return cres

    def _drop_entries(self):
        base = self._impl.filename_base
        for path in glob.glob(os.path.join(glob.escape(self.cache_path), glob.escape(base) + "*")):
            if path.endswith((".nbi", ".nbc")):
                try:
                    os.remove(path)
                except OSError:
                    pass


class _Dispatcher(CPUDispatcher):
    """Numba's CPU dispatcher with the checked on-disk cache above, specialised on types only.

    Numba compiles a kernel called from compiled code once per *literal* argument: a call
    ``f(x, 0)`` and a call ``f(x, i)`` gave two complete compilations of ``f`` (and of all it
    calls), which doubled the cold start of training.  The package's kernels never ask for
    literal arguments, so calls between them are typed on the arguments' plain types.
    """

    def enable_caching(self):
        self._cache = _CheckedCache(self.py_func)

    def get_call_template(self, args, kws):
        args = tuple(types.unliteral(a) for a in args)
        kws = {k: types.unliteral(v) for k, v in kws.items()}
        return super().get_call_template(args, kws)


def _njit(fn, opts):
    opts = dict(opts)
    cache = opts.pop("cache", False)
    opts["nopython"] = True
    disp = _Dispatcher(py_func=fn, locals={}, targetoptions=opts)
    if cache:
        disp.enable_caching()
    return disp


# --------------------------------------------------------------------------------------------
# Compile notices.  A first call that compiles says so *before* compiling, through logging
# ("smallchains.compile"), once per feature: entry points wrap their compiled calls in
# ``feature("float32 training", seconds)``; the checked cache calls ``compile_notice`` on
# every cache miss, i.e. just before Numba compiles a kernel.
# --------------------------------------------------------------------------------------------

_compile_log = _log.get("compile")

#: Cold compile time of a feature's first call (one dtype, one entry point) on a 2-core AMD EPYC,
#: said in the compile notices (benchmarks/latency.py's first results, 2026-12-03: seed-network
#: epoch 17.5-19.2 s, LeNet minibatch 22.8-24.9 s, neural-ODE gradient 16.8-19.0 s, pk fit 13-17 s).
COMPILE_SECONDS = {"training": 20, "cnn": 25, "ode": 20, "pk": 15}
_local = threading.local()
_announced_plain = False


def compile_notice(py_func) -> None:
    """Called by the cache just before a kernel is compiled: announce the feature once."""
    global _announced_plain
    stack = getattr(_local, "stack", None)
    name = f"{py_func.__module__}.{py_func.__qualname__}"
    if not stack and not _announced_plain:  # outside any named feature: one notice per process
        _announced_plain = True
        _compile_log.info(
            "compiling smallchains kernels on first use (once per install; about 15-30 s per "
            "feature on 2 cores; `smallchains warmup` does it ahead of time)"
        )
    if stack:
        ctx = stack[-1]
        if not ctx["announced"]:
            ctx["announced"] = True
            ctx["t0"] = time.perf_counter()
            about = f": about {ctx['seconds']:.0f} s" if ctx["seconds"] else ""
            _compile_log.info("compiling smallchains kernels for %s, once per install%s", ctx["name"], about)
        ctx["kernels"] += 1
    _compile_log.debug("compiling %s", name)


@contextlib.contextmanager
def feature(name: str, seconds: float | None = None):
    """Name the feature whose kernels a block may compile (for the compile notice).

    ``seconds``: the typical cold compile time of that feature on a 2-core machine, said in
    the notice.  Nested features are announced under the innermost name.
    """
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    ctx = {"name": name, "seconds": seconds, "announced": False, "kernels": 0, "t0": 0.0}
    stack.append(ctx)
    try:
        yield ctx
    finally:
        stack.pop()
        if ctx["announced"]:
            _compile_log.info(
                "compiled %d smallchains kernels for %s in %.1f s (cached on disk for later runs)",
                ctx["kernels"],
                name,
                time.perf_counter() - ctx["t0"],
            )


purge_stale_caches()
