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
from .._jit import addresses
from .._program import H_NOUT, H_UNITS
from ..chain import SimpleChain
from . import _user as UK
from ._adjoint import JVP_SIG, VJP_SIG
from ._kernels import _OPTS, EVT_SIG, RHS_SIG

_EMPTY_F = np.zeros(1, dtype=np.float64)


def _is_dispatcher(f):
    return isinstance(f, numba.core.dispatcher.Dispatcher)


def _require_dispatcher(f, what, signature):
    if not _is_dispatcher(f):
        raise TypeError(
            f"`{what}` must be a Numba-compiled function {signature}: decorate it with @numba.njit "
            f"(got {type(f).__name__})"
        )


#: The argument lists smallchains calls users' functions with, by their number of arguments.
_EXPECTED = {
    ("f", 4): "f(du, u, p, t) writing du in place",
    ("f", 5): "f(du, u, pm, t, y) writing du in place",
    ("vjp", 6): "vjp(lu, lp, v, u, p, t)",
    ("jvp", 6): "jvp(out, u, p, t, du, dp)",
    ("features", 4): "features(x, u, pm, t) writing x in place",
}


def _compile_user(f, sig, what, name, hint):
    """(c, jit) addresses of a user's function compiled for ``sig``; a clear error if it cannot be."""
    try:
        return addresses(f, sig)
    except TypeError as e:
        if "Signature mismatch" not in str(e) and "missing a required argument" not in str(e):
            raise
        py = getattr(f, "py_func", f)
        try:
            import inspect

            got = f"{py.__name__}{inspect.signature(py)}"
        except (TypeError, ValueError):
            got = name
        raise TypeError(
            f"{what} of {name} has the wrong arguments: it is {got}, but smallchains calls it with "
            f"{len(sig.args)} arguments, as {_EXPECTED.get((what, len(sig.args)), what)}"
        ) from None
    except numba.core.errors.TypingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        useful = [ln for ln in lines if not ln.startswith(("Failed in", "During", "File", "^"))]
        raise TypeError(
            f"{what} of {name} could not be compiled{hint}. Numba said: {(useful or lines or [''])[0]}"
        ) from None


_COMPLEX_HINT = (
    " for complex arrays, which its complex-step derivatives need (no abs/min/max/comparisons on "
    "u or p, no writes of complex values into float arrays)"
)


def _adapt_event(g):
    if not _is_dispatcher(g):
        raise TypeError(
            "`event` must be a Numba-compiled function g(u, p, t) -> float: decorate it with "
            f"@numba.njit (got {type(g).__name__})"
        )

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
    """A right-hand side ``f(du, u, p, t)`` for :func:`smallchains.solve` and the sensitivities.

    Args:
        f: a ``@numba.njit`` function writing du/dt into ``du`` in place (SciML's
            convention).  It may call other compiled code, smallchains' kernels included.
        n_states, n_params: optional sizes, checked against ``u0`` and ``p`` at solve time.
        vjp: optional ``@njit`` ``vjp(lu, lp, v, u, p, t)``: lu <- v^T df/du (overwrite),
            lp += v^T df/dp (accumulate).  Default: complex-step differentiation of ``f``
            (exact to rounding for analytic code; n_states + n_params complex evaluations).
        jvp: optional ``@njit`` ``jvp(out, u, p, t, du, dp)``: out <- df/du du + df/dp dp.
            Default: complex step (one complex evaluation).

    Plain ``@njit`` functions may also be passed to :func:`solve` directly; they are
    wrapped on the fly.  Only ``f`` itself is compiled for a new model (and, when
    derivatives are asked for, its complex version): the solver and derivative kernels
    around it are compiled once and cached.
    """

    def __init__(self, f, *, n_states=None, n_params=None, vjp=None, jvp=None, name=None):
        _require_dispatcher(f, "f", "f(du, u, p, t) writing du in place")
        if vjp is not None:
            _require_dispatcher(vjp, "vjp", "vjp(lu, lp, v, u, p, t) (lu <- v^T df/du, lp += v^T df/dp)")
        if jvp is not None:
            _require_dispatcher(jvp, "jvp", "jvp(out, u, p, t, du, dp) (out <- df/du du + df/dp dp)")
        self.py = f
        self.user_vjp = vjp
        self.user_jvp = jvp
        self.rhs, self.vjp, self.jvp = UK.user_rhs, UK.user_vjp, UK.user_jvp
        self.complex_step = vjp is None
        self.complex_step_jvp = jvp is None
        self.iw = np.zeros(UK.NU, dtype=np.int64)
        self.iw[UK.U_FLAGS] = (UK.FLAG_VJP if vjp is not None else 0) | (UK.FLAG_JVP if jvp is not None else 0)
        self.fw = _EMPTY_F
        self.n_states = n_states
        self.n_params = n_params
        self.name = name or getattr(getattr(f, "py_func", f), "__name__", "f")

    def workspace(self, n, m):
        """The float context ``fw`` the right-hand side and its derivatives need for n states, m params."""
        return np.zeros(max(2 * (2 * n + m), 1))

    def _set(self, slot, fn, sig, what, hint=""):
        self.iw[slot : slot + 2] = _compile_user(fn, sig, what, self.name, hint)

    def _kernel_addr(self, attr, disp, sig):
        a = getattr(self, attr, None)
        if a is None:
            a = np.array(addresses(disp, sig), dtype=np.int64)
            setattr(self, attr, a)
        return a

    @property
    def addr(self):
        """(c, jit) addresses of the right-hand side (its pieces compiled on first use), int64 array of 2."""
        if getattr(self, "_addr", None) is None:
            self._set(UK.U_F, self.py, UK.F4_SIG, "f")
        return self._kernel_addr("_addr", self.rhs, RHS_SIG)

    @property
    def vjp_addr(self):
        """(c, jit) addresses of the vector-Jacobian product (compiled on first use)."""
        if getattr(self, "_vjp_addr", None) is None:
            if self.user_vjp is not None:
                self._set(UK.U_VJP, self.user_vjp, UK.UVJP_SIG, "vjp")
            elif not self.iw[UK.U_FZ]:
                self._set(UK.U_FZ, self.py, UK.F4Z_SIG, "f", _COMPLEX_HINT + "; or pass vjp=... to sc.ODEFunction")
        return self._kernel_addr("_vjp_addr", self.vjp, VJP_SIG)

    @property
    def jvp_addr(self):
        """(c, jit) addresses of the Jacobian-vector product (compiled on first use)."""
        if getattr(self, "_jvp_addr", None) is None:
            if self.user_jvp is not None:
                self._set(UK.U_JVP, self.user_jvp, UK.UJVP_SIG, "jvp")
            elif not self.iw[UK.U_FZ]:
                self._set(UK.U_FZ, self.py, UK.F4Z_SIG, "f", _COMPLEX_HINT + "; or pass jvp=... to sc.ODEFunction")
        return self._kernel_addr("_jvp_addr", self.jvp, JVP_SIG)

    def compile(self, derivatives=("vjp",)):
        """Compile the right-hand side (and the named derivatives, "vjp" and/or "jvp") now.

        After this, ``self.rhs``, ``self.vjp`` and ``self.jvp`` (compiled kernels of the fixed
        signatures ``rhs(du, u, p, t, iw, fw)``, ``vjp(lu, lp, v, u, p, t, iw, fw)``,
        ``jvp(out, u, p, t, du, dp, iw, fw)``) may be called from your own ``@njit`` code
        with ``iw = self.iw`` and ``fw = self.workspace(n_states, n_params)``.  Returns self.
        """
        self.addr  # noqa: B018
        for d in derivatives:
            if d not in ("vjp", "jvp"):
                raise ValueError(f"derivatives must be 'vjp' and/or 'jvp', got {d!r}")
            getattr(self, f"{d}_addr")
        return self

    def __repr__(self):
        return f"ODEFunction({self.name})"


# --------------------------------------------------------------------------- neural ODEs


def _pack_program(prog):
    return np.concatenate([np.array(prog.shape, dtype=np.int64), prog.ravel()]).astype(np.int64)


@numba.njit(**_OPTS)
def _neural_rhs(du, u, p, t, iw, fw):
    prog = iw[2:].reshape((iw[0], iw[1]))
    E.sample_forward(prog, du, u, p, fw)


@numba.njit(**_OPTS)
def _neural_vjp(lu, lp, v, u, p, t, iw, fw):
    prog = iw[2:].reshape((iw[0], iw[1]))
    E.sample_vjp(prog, lp, p, v, u, lu, fw)


@numba.njit(**_OPTS)
def _neural_jvp(out, u, p, t, du, dp, iw, fw):
    prog = iw[2:].reshape((iw[0], iw[1]))
    units = prog[0, H_UNITS]
    E.sample_jvp(prog, fw[units : units + prog[0, H_NOUT]], out, p, u, du, dp, fw[0:units])


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
            raise ValueError(
                f"a neural ODE needs as many outputs as inputs (du/dt has the shape of u): "
                f"the chain maps {chain.input_dim} -> {chain.output_dim}"
            )
        self.chain = chain
        self.py = None
        self.rhs = _neural_rhs
        self.vjp = _neural_vjp
        self.jvp = _neural_jvp
        self.complex_step = self.complex_step_jvp = False
        self.iw = _pack_program(chain.program)
        self.fw = np.zeros(chain.work_size(1) + chain.output_dim)
        self.n_states = chain.input_dim
        self.n_params = chain.num_params
        self.name = "NeuralODE"

    def workspace(self, n, m):
        return np.zeros_like(self.fw)

    def _bind(self, tangent=False):
        """Bind the chain's program packed in ``iw`` (the network's compiled block functions)."""
        E.bind(self.iw[2:].reshape(self.iw[0], self.iw[1]), np.float64, tangent)

    @property
    def addr(self):
        self._bind()
        return self._kernel_addr("_addr", self.rhs, RHS_SIG)

    @property
    def vjp_addr(self):
        self._bind()
        return self._kernel_addr("_vjp_addr", self.vjp, VJP_SIG)

    @property
    def jvp_addr(self):
        self._bind(tangent=True)
        return self._kernel_addr("_jvp_addr", self.jvp, JVP_SIG)

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

        derivatives: how ``f`` and ``features`` are differentiated in vector-Jacobian products:
            ``"auto"`` (sympy-generated code when their source can be traced, checked against
            complex step; else complex step), ``"symbolic"`` or ``"complex step"``;
            ``ude.derivatives`` says which was used.

    Derivatives: the network by its compiled pullback; ``f`` and ``features`` by generated code
    or by complex-step differentiation (exact to rounding; they must then also compile for
    complex arrays, so no ``abs``, ``min``/``max`` or comparisons on u or p), costing one
    complex evaluation per state, mechanistic parameter and network output.  Jacobian-vector
    products use one complex evaluation of each.

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

    def __init__(self, f, chain, *, n_states, params=(), features=None, name=None, derivatives="auto"):
        _require_dispatcher(f, "f", "f(du, u, pm, t, y)")
        if features is not None:
            _require_dispatcher(features, "features", "features(x, u, pm, t)")
        if not isinstance(chain, SimpleChain):
            raise TypeError(f"`chain` must be a sc.SimpleChain, got {type(chain).__name__}")
        n = int(n_states)
        if n < 1:
            raise ValueError(f"`n_states` must be >= 1, got {n_states!r}")
        if features is None and chain.input_dim != n:
            raise ValueError(
                f"the chain takes {chain.input_dim} inputs but there are {n} states: give "
                "features=... mapping the state to the network's input"
            )
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
        self.user_vjp = self.user_jvp = None
        self.rhs, self.vjp, self.jvp = UK.ude_rhs, UK.ude_vjp, UK.ude_jvp
        self.complex_step_jvp = True
        d, mo = chain.input_dim, chain.output_dim
        prog = chain.program
        head = np.zeros(UK.ND, dtype=np.int64)
        head[[UK.D_NM, UK.D_IDENT, UK.D_D, UK.D_MO, UK.D_ROWS, UK.D_COLS]] = (
            off,
            int(features is None),
            d,
            mo,
            prog.shape[0],
            prog.shape[1],
        )
        self.iw = np.concatenate([head, prog.ravel()]).astype(np.int64)
        self._nwork = max(chain.work_size(1), 1)
        self.fw = np.zeros(2 * d + 2 * mo + self._nwork + 2 * (2 * n + off + mo + d))
        self.n_states = n
        self.n_params = off + chain.num_params
        self.name = name or getattr(getattr(f, "py_func", f), "__name__", "UDE")
        # the mechanistic part's and the features' vector-Jacobian products: generated code when
        # sympy can trace them (measured 16-32x faster than complex steps on PK models), else
        # complex steps; the Jacobian-vector products stay complex steps
        from .symbolic import checked_ude_derivatives, choose

        self._sym, self.derivatives, why = choose(
            derivatives, lambda: checked_ude_derivatives(f, features, n, off, d, mo)
        )
        if why is not None:
            self.symbolic_error = why
        self.complex_step = self.derivatives == "complex step"  # (the VJP's method, for error messages)

    def workspace(self, n, m):
        return np.zeros_like(self.fw)

    def _bind(self, tangent=False):
        """Bind the chain's program packed in ``iw`` (the network's compiled block functions)."""
        E.bind(self.iw[UK.ND :].reshape(self.iw[UK.D_ROWS], self.iw[UK.D_COLS]), np.float64, tangent)

    @property
    def addr(self):
        self._bind()
        if getattr(self, "_addr", None) is None:
            self._set(UK.D_F, self.py, UK.F5_SIG, "f")
            if self.features is not None:
                self._set(UK.D_G, self.features, UK.F4_SIG, "features")
        return self._kernel_addr("_addr", self.rhs, RHS_SIG)

    def _complex(self):
        if not self.iw[UK.D_FZ]:
            self._set(UK.D_FZ, self.py, UK.F5Z_SIG, "f", _COMPLEX_HINT)
            if self.features is not None:
                self._set(UK.D_GZ, self.features, UK.F4Z_SIG, "features", _COMPLEX_HINT)

    @property
    def vjp_addr(self):
        self._bind()
        if getattr(self, "_vjp_addr", None) is None:
            self.addr  # noqa: B018 - the real-valued pieces too
            if self._sym is not None:
                fv, gv = self._sym
                self._set(UK.D_FV, fv, UK.FVJP_SIG, "generated vjp of f")
                if gv is not None:
                    self._set(UK.D_GV, gv, UK.GVJP_SIG, "generated vjp of features")
                self.iw[UK.D_SYM] = 1
            else:
                self._complex()
        return self._kernel_addr("_vjp_addr", self.vjp, VJP_SIG)

    @property
    def jvp_addr(self):
        self._bind(tangent=True)
        if getattr(self, "_jvp_addr", None) is None:
            self.addr  # noqa: B018
            self._complex()
        return self._kernel_addr("_jvp_addr", self.jvp, JVP_SIG)

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
