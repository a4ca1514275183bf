"""A population model's map from log individual values to structural parameters, as compiled code.

The compiled FOCE-I (:mod:`smallchains.pk._foce`) moves a subject's random effects inside
compiled code, so it needs p(log q) there too.  Without ``individual`` the map is
p_k = exp(log q[perm_k]).  With an ``individual`` function (plain arithmetic on the values
by name, as :class:`~smallchains.pk.PopulationModel` documents) the function is run once on
symbolic values that record each operation, and the recorded expressions become the body of
a small generated ``@njit`` function ``pmap(lq, c, p)``: ``lq`` the log individual values,
``c`` the numeric baseline covariates the function reads (``individual(q, cov)``), ``p`` the
output.  It is compiled for real and complex inputs (complex steps give dp/dlog q exactly) and
reaches the kernels as addresses.

A function that branches on a value, calls ``math`` functions, or reads a text covariate
cannot be recorded; :func:`param_map` then returns the reason, and the fit uses the NumPy path.
The generated map is checked against the Python function at the initial values before use.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types

from .._jit import addresses, function_caster
from ..ode import _complexpow  # noqa: F401 - exact complex z ** n in the generated code

F1 = types.float64[::1]
C1 = types.complex128[::1]
PMAP_SIG = types.void(F1, F1, F1)
PMAPZ_SIG = types.void(C1, F1, C1)
as_pmap = function_caster(types.FunctionType(PMAP_SIG))
as_pmapz = function_caster(types.FunctionType(PMAPZ_SIG))


class Untraceable(Exception):
    """The function does something other than arithmetic on its inputs."""


_UFUNCS = {
    "exp": "np.exp({0})",
    "log": "np.log({0})",
    "sqrt": "np.sqrt({0})",
    "expm1": "np.expm1({0})",
    "log1p": "np.log1p({0})",
    "tanh": "np.tanh({0})",
    "sinh": "np.sinh({0})",
    "cosh": "np.cosh({0})",
    "sin": "np.sin({0})",
    "cos": "np.cos({0})",
    "arctan": "np.arctan({0})",
    "negative": "(-{0})",
    "positive": "({0})",
    "square": "({0} * {0})",
    "reciprocal": "(1.0 / {0})",
    "add": "({0} + {1})",
    "subtract": "({0} - {1})",
    "multiply": "({0} * {1})",
    "true_divide": "({0} / {1})",
    "divide": "({0} / {1})",
    "power": "({0} ** {1})",
    "float_power": "({0} ** {1})",
}


def _src(v):
    if isinstance(v, Sym):
        return v.src
    if isinstance(v, (bool, np.bool_)):
        raise Untraceable("a boolean in the arithmetic")
    if isinstance(v, (int, float, np.integer, np.floating)):
        return repr(float(v))
    raise Untraceable(f"an operand of type {type(v).__name__}")


class Sym:
    """A recorded value: ``src`` is the expression that computes it."""

    __slots__ = ("src",)
    __array_priority__ = 1000

    def __init__(self, src):
        self.src = src

    def _bin(self, other, fmt, swap=False):
        a, b = (_src(other), self.src) if swap else (self.src, _src(other))
        return Sym(fmt.format(a, b))

    def __add__(self, o):
        return self._bin(o, "({0} + {1})")

    def __radd__(self, o):
        return self._bin(o, "({0} + {1})", True)

    def __sub__(self, o):
        return self._bin(o, "({0} - {1})")

    def __rsub__(self, o):
        return self._bin(o, "({0} - {1})", True)

    def __mul__(self, o):
        return self._bin(o, "({0} * {1})")

    def __rmul__(self, o):
        return self._bin(o, "({0} * {1})", True)

    def __truediv__(self, o):
        return self._bin(o, "({0} / {1})")

    def __rtruediv__(self, o):
        return self._bin(o, "({0} / {1})", True)

    def __pow__(self, o):
        return self._bin(o, "({0} ** {1})")

    def __rpow__(self, o):
        return self._bin(o, "({0} ** {1})", True)

    def __neg__(self):
        return Sym(f"(-{self.src})")

    def __pos__(self):
        return self

    def _refuse(self, *_):
        raise Untraceable("a comparison or conversion of a value (a branch, min/max, math.*, int())")

    __bool__ = __float__ = __int__ = __index__ = __lt__ = __le__ = __gt__ = __ge__ = __eq__ = __ne__ = _refuse
    __abs__ = __round__ = __floor__ = __ceil__ = __mod__ = __floordiv__ = _refuse
    __hash__ = None

    def __array_ufunc__(self, ufunc, method, *inputs, **kw):
        fmt = _UFUNCS.get(ufunc.__name__)
        if method != "__call__" or kw or fmt is None:
            raise Untraceable(f"numpy.{ufunc.__name__}")
        return Sym(fmt.format(*(_src(v) for v in inputs)))


class _CovReader(dict):
    """The covariate dict an ``individual(q, cov)`` sees while it is recorded: each key read
    becomes an input ``c[j]``."""

    def __init__(self):
        super().__init__()
        self.keys_read = []

    def __getitem__(self, k):
        if k not in self.keys_read:
            self.keys_read.append(k)
        return Sym(f"c[{self.keys_read.index(k)}]")

    def get(self, k, default=None):
        return self[k]

    def __contains__(self, k):
        return True


#: generated source -> (its compiled dispatcher, its addresses)
_COMPILED = {}


class ParamMap:
    """The compiled map: ``addr`` (int64[4]: real then complex (c, jit) addresses), ``keys`` the
    covariates it reads (pack each subject's with :meth:`covariates`), ``source`` its code."""

    def __init__(self, source, keys, n_out):
        self.source = source
        self.keys = list(keys)
        self.n_out = n_out
        if source not in _COMPILED:  # (one compilation per map and process; kept alive: the addresses point into it)
            ns = {"np": np, "njit": njit}
            exec(compile(source, "<smallchains parameter map>", "exec"), ns)
            disp = njit(fastmath=False)(ns["pmap"])
            _COMPILED[source] = (disp, addresses(disp, PMAP_SIG) + addresses(disp, PMAPZ_SIG))
        self._disp, addr = _COMPILED[source]
        self.addr = np.array(addr, dtype=np.int64)

    def covariates(self, cov):
        """The vector ``c`` of a subject's covariates (dict) the map reads; None when one is not a number."""
        try:
            c = np.array([float(cov[k]) for k in self.keys], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            return None
        return c if np.all(np.isfinite(c)) else None

    def __call__(self, lq, c):
        p = np.zeros(self.n_out)
        self._disp(np.ascontiguousarray(lq, dtype=np.float64), c, p)
        return p


def _emit(n_t, body):
    lines = ["def pmap(lq, c, p):"]
    lines += [f"    q{i} = np.exp(lq[{i}])" for i in range(n_t)]
    lines += [f"    p[{k}] = {src}" for k, src in enumerate(body)]
    if len(lines) == 1:
        lines.append("    pass")
    return "\n".join(lines) + "\n"


def param_map(model):
    """(:class:`ParamMap`, None) for ``model`` (a PopulationModel), or (None, the reason it cannot be compiled)."""
    names = model.theta_names
    n_t = len(names)
    if model.individual is None:
        body = [f"q{int(j)}" for j in model._perm]
        return ParamMap(_emit(n_t, body), (), len(body)), None
    q = {k: Sym(f"q{i}") for i, k in enumerate(names)}
    cov = _CovReader()
    try:
        out = model.individual(q, cov) if model._individual_cov else model.individual(q)
        if not isinstance(out, dict):
            return None, "`individual` does not return a dict"
        body = [_src(out[k]) for k in model.param_names]
    except Untraceable as e:
        return None, f"`individual` cannot be compiled: it uses {e}"
    except Exception as e:  # (anything else the function does on recorded values)
        return None, f"`individual` cannot be compiled ({type(e).__name__}: {e})"
    return ParamMap(_emit(n_t, body), cov.keys_read, len(body)), None
