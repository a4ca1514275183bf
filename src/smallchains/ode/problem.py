"""Right-hand sides for the compiled solvers: user functions, neural ODEs.

A right-hand side reaches the kernels as a function pointer of one signature,
``f(du, u, p, t, iw, fw)`` (``iw``/``fw``: the model's int64 / float64 context:
a network's program and workspace).  ``ODEFunction`` wraps a user's SciML-style
``@numba.njit`` function ``f(du, u, p, t)`` into that form; ``NeuralODE(chain)``
builds one whose right-hand side is the chain, evaluated by the package's
compiled, non-allocating kernels.
"""

from __future__ import annotations

import numba
import numpy as np

from .. import kernels as CK
from ..chain import SimpleChain
from ._kernels import _OPTS, EVT_SIG, RHS_SIG, addresses

_EMPTY_I = np.zeros(1, dtype=np.int64)
_EMPTY_F = np.zeros(1, dtype=np.float64)


def _is_dispatcher(f):
    return isinstance(f, numba.core.dispatcher.Dispatcher)


def _adapt4(f, what="f"):
    """A 6-argument pointer-callable wrapper of a user's ``f(du, u, p, t)``."""
    if not _is_dispatcher(f):
        raise TypeError(f"`{what}` must be a Numba-compiled function: decorate it with @numba.njit "
                        f"(got {type(f).__name__}); the signature is {what}(du, u, p, t), writing du in place")

    @numba.njit(**dict(_OPTS, cache=False))
    def rhs(du, u, p, t, iw, fw):
        f(du, u, p, t)

    return rhs


def _adapt_event(g):
    if not _is_dispatcher(g):
        raise TypeError("`event` must be a Numba-compiled function g(u, p, t) -> float: decorate it with "
                        f"@numba.njit (got {type(g).__name__})")

    @numba.njit(**dict(_OPTS, cache=False))
    def ev(u, p, t, iw, fw):
        return g(u, p, t)

    return ev


@numba.njit(**_OPTS)
def _no_event(u, p, t, iw, fw):
    return 1.0


def event_addresses(g):
    """(c, jit) addresses of an event function (compiled now), as an int64 array of 2."""
    return np.array(addresses(g, EVT_SIG), dtype=np.int64)


class ODEFunction:
    """A right-hand side ``f(du, u, p, t)`` for :func:`smallchains.solve`.

    Args:
        f: a ``@numba.njit`` function writing du/dt into ``du`` in place (SciML's
            convention).  It may call other compiled code, smallchains' kernels included.
        n_states, n_params: optional sizes, checked against ``u0`` and ``p`` at solve time.

    Plain ``@njit`` functions may also be passed to :func:`solve` directly; they are
    wrapped on the fly (a wrapper costs ~0.1 s of compilation once per function).
    """

    def __init__(self, f, *, n_states=None, n_params=None, name=None):
        self.py = f
        self.rhs = _adapt4(f)
        self.iw = _EMPTY_I
        self.fw = _EMPTY_F
        self.n_states = n_states
        self.n_params = n_params
        self.name = name or getattr(getattr(f, "py_func", f), "__name__", "f")

    @property
    def addr(self):
        """(c, jit) addresses of the right-hand side (compiled on first use), int64 array of 2."""
        a = getattr(self, "_addr", None)
        if a is None:
            a = self._addr = np.array(addresses(self.rhs, RHS_SIG), dtype=np.int64)
        return a

    def __repr__(self):
        return f"ODEFunction({self.name})"


# --------------------------------------------------------------------------- neural ODEs


def _pack_program(prog):
    return np.concatenate([np.array(prog.shape, dtype=np.int64), prog.ravel()]).astype(np.int64)


@numba.njit(**_OPTS)
def _neural_rhs(du, u, p, t, iw, fw):
    prog = iw[2:].reshape((iw[0], iw[1]))
    CK.forward_into(prog, du, u, p, fw)


class NeuralODE(ODEFunction):
    """du/dt = chain(u): a neural ODE whose parameters are the chain's (float64).

    The chain's input and output sizes must both equal the number of states.  The
    right-hand side runs the chain's compiled one-sample kernels on a private
    workspace; nothing is compiled for a new architecture.
    """

    def __init__(self, chain):
        if not isinstance(chain, SimpleChain):
            raise TypeError(f"`chain` must be a sc.SimpleChain, got {type(chain).__name__}")
        if chain.input_dim != chain.output_dim:
            raise ValueError(f"a neural ODE needs as many outputs as inputs (du/dt has the shape of u): "
                             f"the chain maps {chain.input_dim} -> {chain.output_dim}")
        self.chain = chain
        self.py = None
        self.rhs = _neural_rhs
        self.iw = _pack_program(chain.program)
        self.fw = np.zeros(max(chain.work_size(1), 1))
        self.n_states = chain.input_dim
        self.n_params = chain.num_params
        self.name = "NeuralODE"

    def __repr__(self):
        return f"NeuralODE({self.chain!r})"


def as_ode_function(f):
    if isinstance(f, ODEFunction):
        return f
    if isinstance(f, SimpleChain):
        return NeuralODE(f)
    return _cached_wrap(f)


_WRAPPED = {}


def _cached_wrap(f):
    key = id(f)
    hit = _WRAPPED.get(key)
    if hit is not None and hit[0] is f:
        return hit[1]
    fn = ODEFunction(f)
    if len(_WRAPPED) > 64:
        _WRAPPED.clear()
    _WRAPPED[key] = (f, fn)
    return fn
