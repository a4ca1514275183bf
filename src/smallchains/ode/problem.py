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

from .. import _engine as E
from .. import kernels as CK
from .._program import H_G1
from ..chain import SimpleChain
from ._adjoint import VJP_SIG
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


#: the imaginary step of the complex-step derivative: no subtraction, so no cancellation;
#: df/dx = Im f(x + iH) / H exactly to rounding for any analytic f
_CS_H = 1e-30


def _complex_step_vjp(f):
    """vjp(lu, lp, v, u, p, t, iw, fw) of a user's f(du, u, p, t) by complex-step differentiation.

    Costs n_states + n_params evaluations of f in complex arithmetic; ``fw`` must hold
    2 (2 n + m) floats (viewed as complex: du, u, p).
    """

    @numba.njit(**dict(_OPTS, cache=False))
    def vjp(lu, lp, v, u, p, t, iw, fw):
        n = u.shape[0]
        m = p.shape[0]
        z = fw[0:2 * (2 * n + m)].view(np.complex128)
        dz = z[0:n]
        uz = z[n:2 * n]
        pz = z[2 * n:2 * n + m]
        for j in range(n):
            uz[j] = u[j]
        for k in range(m):
            pz[k] = p[k]
        for k in range(n):
            uz[k] = complex(u[k], _CS_H)
            f(dz, uz, pz, t)
            acc = 0.0
            for j in range(n):
                acc += v[j] * dz[j].imag
            lu[k] = acc / _CS_H
            uz[k] = u[k]
        for k in range(m):
            pz[k] = complex(p[k], _CS_H)
            f(dz, uz, pz, t)
            acc = 0.0
            for j in range(n):
                acc += v[j] * dz[j].imag
            lp[k] += acc / _CS_H
            pz[k] = p[k]

    return vjp


def _adapt_vjp(vjp):
    if not _is_dispatcher(vjp):
        raise TypeError("`vjp` must be a Numba-compiled function vjp(lu, lp, v, u, p, t) (lu <- v^T df/du, "
                        f"lp += v^T df/dp): decorate it with @numba.njit (got {type(vjp).__name__})")

    @numba.njit(**dict(_OPTS, cache=False))
    def w(lu, lp, v, u, p, t, iw, fw):
        vjp(lu, lp, v, u, p, t)

    return w


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

    def __init__(self, f, *, n_states=None, n_params=None, vjp=None, name=None):
        self.py = f
        self.rhs = _adapt4(f)
        self.vjp = _complex_step_vjp(f) if vjp is None else _adapt_vjp(vjp)
        self.complex_step = vjp is None
        self.iw = _EMPTY_I
        self.fw = _EMPTY_F
        self.n_states = n_states
        self.n_params = n_params
        self.name = name or getattr(getattr(f, "py_func", f), "__name__", "f")

    def workspace(self, n, m):
        """The float context ``fw`` the right-hand side and its derivatives need for n states, m params."""
        return np.zeros(max(2 * (2 * n + m), 1)) if self.complex_step else self.fw

    @property
    def addr(self):
        """(c, jit) addresses of the right-hand side (compiled on first use), int64 array of 2."""
        a = getattr(self, "_addr", None)
        if a is None:
            a = self._addr = np.array(addresses(self.rhs, RHS_SIG), dtype=np.int64)
        return a

    @property
    def vjp_addr(self):
        """(c, jit) addresses of the vector-Jacobian product (compiled on first use)."""
        a = getattr(self, "_vjp_addr", None)
        if a is None:
            try:
                a = np.array(addresses(self.vjp, VJP_SIG), dtype=np.int64)
            except numba.core.errors.TypingError as e:
                if not self.complex_step:
                    raise
                raise TypeError(
                    f"could not differentiate {self.name} by complex step (it must also compile for complex "
                    "arrays: no abs/min/max/comparisons on u or p, no writes of complex values into float "
                    "arrays); pass vjp=... to sc.ODEFunction with its hand-written vector-Jacobian product. "
                    f"Numba said: {str(e).splitlines()[0]}") from None
            self._vjp_addr = a
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


@numba.njit(**_OPTS)
def _neural_vjp(lu, lp, v, u, p, t, iw, fw):
    prog = iw[2:].reshape((iw[0], iw[1]))
    CK.vjp_accumulate(prog, lp, p, v, u, lu, fw)


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
        self.vjp = _neural_vjp
        self.complex_step = False
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


# --------------------------------------------------------------------------- universal differential equations


@numba.njit(**_OPTS)
def _identity_features(x, u, p, t):
    for j in range(x.shape[0]):
        x[j] = u[j]


def _ude_functions(f, features):
    """The rhs and vjp wrappers of a UDE, compiled for this (f, features) pair."""
    opts = dict(_OPTS, cache=False)

    @numba.njit(**opts)
    def rhs(du, u, p, t, iw, fw):
        nm = iw[0]
        d = iw[2]
        mo = iw[3]
        prog = iw[6:].reshape((iw[4], iw[5]))
        x = fw[0:d]
        y = fw[d:d + mo]
        work = fw[2 * d + 2 * mo:]
        pm = p[0:nm]
        features(x, u, pm, t)
        CK.forward_into(prog, y, x, p[nm:], work)
        f(du, u, pm, t, y)

    @numba.njit(**opts)
    def vjp(lu, lp, v, u, p, t, iw, fw):
        n = u.shape[0]
        nm = iw[0]
        ident = iw[1] != 0
        d = iw[2]
        mo = iw[3]
        prog = iw[6:].reshape((iw[4], iw[5]))
        x = fw[0:d]
        y = fw[d:d + mo]
        xbar = fw[d + mo:2 * d + mo]
        ybar = fw[2 * d + mo:2 * d + 2 * mo]
        nwork = fw.shape[0] - (2 * d + 2 * mo) - 2 * (2 * n + nm + mo + d)
        work = fw[2 * d + 2 * mo:2 * d + 2 * mo + nwork]
        z = fw[2 * d + 2 * mo + nwork:].view(np.complex128)
        dz = z[0:n]
        uz = z[n:2 * n]
        pz = z[2 * n:2 * n + nm]
        yz = z[2 * n + nm:2 * n + nm + mo]
        xz = z[2 * n + nm + mo:2 * n + nm + mo + d]
        pm = p[0:nm]
        pn = p[nm:]
        features(x, u, pm, t)
        # the network's forward pass, its derivatives kept in ``work`` for the pullback below
        for k in range(d):
            work[k] = x[k]
        yo = E.block_forward(prog, pn, work, 1, True)
        for k in range(mo):
            y[k] = work[yo + k]
        for j in range(n):
            uz[j] = u[j]
        for k in range(nm):
            pz[k] = p[k]
        for k in range(mo):
            yz[k] = y[k]
        # the mechanistic part, by complex step in u, p_mech and the network's output y
        for k in range(n):
            uz[k] = complex(u[k], _CS_H)
            f(dz, uz, pz, t, yz)
            acc = 0.0
            for j in range(n):
                acc += v[j] * dz[j].imag
            lu[k] = acc / _CS_H
            uz[k] = u[k]
        for k in range(nm):
            pz[k] = complex(p[k], _CS_H)
            f(dz, uz, pz, t, yz)
            acc = 0.0
            for j in range(n):
                acc += v[j] * dz[j].imag
            lp[k] += acc / _CS_H
            pz[k] = p[k]
        for k in range(mo):
            yz[k] = complex(y[k], _CS_H)
            f(dz, uz, pz, t, yz)
            acc = 0.0
            for j in range(n):
                acc += v[j] * dz[j].imag
            ybar[k] = acc / _CS_H
            yz[k] = y[k]
        # the network, by its compiled pullback (from the forward pass above)
        g1 = prog[0, H_G1]
        for k in range(mo):
            work[g1 + k] = ybar[k]
        xo = E.block_backward(prog, pn, lp[nm:], work, 1, True)
        for k in range(d):
            xbar[k] = work[xo + k]
        # the features
        if ident:
            for k in range(n):
                lu[k] += xbar[k]
        else:
            for k in range(n):
                uz[k] = complex(u[k], _CS_H)
                features(xz, uz, pz, t)
                acc = 0.0
                for j in range(d):
                    acc += xbar[j] * xz[j].imag
                lu[k] += acc / _CS_H
                uz[k] = u[k]
            for k in range(nm):
                pz[k] = complex(p[k], _CS_H)
                features(xz, uz, pz, t)
                acc = 0.0
                for j in range(d):
                    acc += xbar[j] * xz[j].imag
                lp[k] += acc / _CS_H
                pz[k] = p[k]

    return rhs, vjp


class UDE(ODEFunction):
    """A universal differential equation: known mechanistic terms plus a network.

    du/dt = f(u, p_mech, t, y) with y = chain(features(u, p_mech, t)).  The parameter
    vector is one flat float64 array: the named mechanistic parameters first, in the
    order given, then the network's weights (slice ``"network"``).

    Args:
        f: ``@numba.njit`` ``f(du, u, pm, t, y)`` writing du in place; ``pm`` holds the
            mechanistic parameters, ``y`` the network's output at this state.
        chain: a :class:`smallchains.SimpleChain`.
        n_states: the number of states.
        params: the mechanistic parameters' names (each a scalar), or a dict name -> size.
        features: ``@numba.njit`` ``features(x, u, pm, t)`` writing the network's input ``x``
            (length ``chain.input_dim``); default ``x = u``.

    Derivatives: the network by its compiled pullback; ``f`` and ``features`` by complex-step
    differentiation (exact to rounding; they must also compile for complex arrays, so no
    ``abs``, ``min``/``max`` or comparisons on u or p), costing one complex evaluation per
    state, mechanistic parameter and network output.

    Example (the spiral of DiffEqFlux's tutorial: du/dt = NN(u^3))::

        @numba.njit
        def cube(x, u, pm, t):
            for j in range(2):
                x[j] = u[j] ** 3

        @numba.njit
        def f(du, u, pm, t, y):
            du[0] = y[0]
            du[1] = y[1]

        ude = sc.UDE(f, sc.SimpleChain(2, sc.Dense(50, sc.tanh), sc.Dense(2)), n_states=2, features=cube)
        p = ude.init_params(seed=0)
    """

    def __init__(self, f, chain, *, n_states, params=(), features=None, name=None):
        if not _is_dispatcher(f):
            raise TypeError("`f` must be a Numba-compiled function f(du, u, pm, t, y): decorate it with "
                            f"@numba.njit (got {type(f).__name__})")
        if features is not None and not _is_dispatcher(features):
            raise TypeError("`features` must be a Numba-compiled function features(x, u, pm, t): decorate it "
                            f"with @numba.njit (got {type(features).__name__})")
        if not isinstance(chain, SimpleChain):
            raise TypeError(f"`chain` must be a sc.SimpleChain, got {type(chain).__name__}")
        n = int(n_states)
        if n < 1:
            raise ValueError(f"`n_states` must be >= 1, got {n_states!r}")
        if features is None and chain.input_dim != n:
            raise ValueError(f"the chain takes {chain.input_dim} inputs but there are {n} states: give "
                             "features=... mapping the state to the network's input")
        sizes = dict(params) if isinstance(params, dict) else {str(k): 1 for k in params}
        self.slices = {}
        off = 0
        for k, sz in sizes.items():
            if k == "network":
                raise ValueError("'network' is reserved for the network's weights; rename that parameter")
            sz = int(sz)
            if sz < 1:
                raise ValueError(f"parameter {k!r} must have size >= 1, got {sz}")
            self.slices[k] = slice(off, off + sz)
            off += sz
        self.n_mech = off
        self.slices["network"] = slice(off, off + chain.num_params)
        self.chain = chain
        self.py = f
        self.features = features
        self.rhs, self.vjp = _ude_functions(f, _identity_features if features is None else features)
        self.complex_step = False
        d, mo = chain.input_dim, chain.output_dim
        prog = chain.program
        self.iw = np.concatenate([np.array([off, int(features is None), d, mo, prog.shape[0], prog.shape[1]],
                                           dtype=np.int64), prog.ravel()]).astype(np.int64)
        self._nwork = max(chain.work_size(1), 1)
        self.fw = np.zeros(2 * d + 2 * mo + self._nwork + 2 * (2 * n + off + mo + d))
        self.n_states = n
        self.n_params = off + chain.num_params
        self.name = name or getattr(getattr(f, "py_func", f), "__name__", "UDE")

    def workspace(self, n, m):
        return np.zeros_like(self.fw)

    def init_params(self, seed=0, **values):
        """A flat parameter vector: the network initialised (seeded), mechanistic values given by name (else 0)."""
        p = np.zeros(self.n_params)
        p[self.slices["network"]] = self.chain.init_params(seed=seed, dtype=np.float64)
        return self.pack(p, **values)

    def pack(self, p=None, **values):
        """Write named values into (a copy of) ``p``: ``ude.pack(p, ka=1.2, network=w)``."""
        out = np.zeros(self.n_params) if p is None else np.array(p, dtype=np.float64, copy=True)
        if out.shape != (self.n_params,):
            raise ValueError(f"`p` must have shape ({self.n_params},), got {out.shape}")
        for k, v in values.items():
            if k not in self.slices:
                raise KeyError(f"unknown parameter {k!r}; the names are {list(self.slices)}")
            sl = self.slices[k]
            v = np.asarray(v, dtype=np.float64).reshape(-1)
            if v.shape[0] != sl.stop - sl.start:
                raise ValueError(f"parameter {k!r} has {sl.stop - sl.start} entries, got {v.shape[0]}")
            out[sl] = v
        return out

    def unpack(self, p):
        """``{name: value}`` views of ``p`` (scalars as floats; ``"network"`` as the weight vector)."""
        p = np.asarray(p)
        out = {}
        for k, sl in self.slices.items():
            v = p[sl]
            out[k] = float(v[0]) if (k != "network" and v.shape[0] == 1) else v
        return out

    def __repr__(self):
        names = [k for k in self.slices if k != "network"]
        return f"UDE({self.name}, mechanistic={names}, chain={self.chain!r})"
