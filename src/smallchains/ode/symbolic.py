"""Exact derivatives of a right-hand side by symbolic differentiation and generated code.

``symbolic_derivatives(f, n_states, n_params)`` runs the Python source of an ``@njit
f(du, u, p, t)`` on sympy symbols (``np.exp`` and friends mapped to sympy's), differentiates
v'f with respect to u and p (and f along du, dp), eliminates common subexpressions, and
compiles the generated code with Numba: ``vjp(lu, lp, v, u, p, t)`` and
``jvp(out, u, p, t, du, dp)`` for :class:`smallchains.ODEFunction`.

Measured (``benchmarks/model_derivatives.py``): a generated vector-Jacobian product costs
0.015-0.018 µs against 0.29-0.49 µs by complex step for the built-in PK models, and a subject's
gradient is 2.0-2.6x faster; making them takes about as long (0.2-0.6 s).  Code sympy cannot
trace (branches on the state, loops over data, calls to other compiled functions) raises
:class:`SymbolicError`; callers fall back to complex step.  Needs sympy (optional).
"""

from __future__ import annotations

import types

import numpy as np

from .._complexstep import jacobian


class SymbolicError(ValueError):
    """The function could not be traced or differentiated symbolically."""


_FUNCS = (
    "exp",
    "log",
    "sqrt",
    "sin",
    "cos",
    "tan",
    "tanh",
    "sinh",
    "cosh",
    "arctan",
    "arcsin",
    "arccos",
    "log1p",
    "expm1",
    "power",
    "pi",
    "e",
)


def _shim(sympy):
    m = types.SimpleNamespace()
    names = {"arctan": "atan", "arcsin": "asin", "arccos": "acos", "power": "Pow", "pi": "pi", "e": "E"}
    for k in _FUNCS:
        setattr(m, k, getattr(sympy, names.get(k, k), None))
    m.log1p = lambda x: sympy.log(1 + x)
    m.expm1 = lambda x: sympy.exp(x) - 1
    m.float64 = lambda x: x
    return m


def _trace(f, n, m):
    syms = {}

    def args(sympy):
        syms["u"] = list(sympy.symbols(f"u0:{n}", real=True))
        syms["p"] = list(sympy.symbols(f"p0:{m}", real=True))
        syms["t"] = sympy.Symbol("t", real=True)
        du = [sympy.Integer(0)] * n
        return (du, syms["u"], syms["p"], syms["t"]), du

    sympy, du = _trace_with(f, args)
    return sympy, syms["u"], syms["p"], syms["t"], du


def _emit(sympy, header, outputs):
    repl, red = sympy.cse([e for _, e in outputs], optimizations="basic")
    lines = list(header)
    lines += [f"    {s} = {sympy.pycode(e, fully_qualified_modules=False)}" for s, e in repl]
    lines += [f"    {target} {sympy.pycode(e, fully_qualified_modules=False)}" for (target, _), e in zip(outputs, red)]
    return "\n".join(lines)


def symbolic_derivatives(f, n_states, n_params):
    """(vjp, jvp, source) generated for ``f``; raises :class:`SymbolicError` when it cannot."""
    try:
        import sympy  # noqa: F401
    except ImportError:
        raise SymbolicError("sympy is not installed") from None
    import numba

    n, m = int(n_states), int(n_params)
    sympy, u, p, t, du = _trace(f, n, m)
    v = list(sympy.symbols(f"v0:{n}", real=True))
    du_dir = list(sympy.symbols(f"du0:{n}", real=True))
    dp_dir = list(sympy.symbols(f"dp0:{m}", real=True))
    s = sum(v[j] * du[j] for j in range(n))
    head = [f"    u{j} = u[{j}]" for j in range(n)] + [f"    p{k} = p[{k}]" for k in range(m)]
    vjp_out = [(f"lu[{j}] =", sympy.diff(s, u[j])) for j in range(n)]
    vjp_out += [(f"lp[{k}] +=", sympy.diff(s, p[k])) for k in range(m)]
    vjp_src = _emit(sympy, ["def vjp(lu, lp, v, u, p, t):"] + head + [f"    v{j} = v[{j}]" for j in range(n)], vjp_out)
    jvp_out = [
        (
            f"out[{i}] =",
            sum(sympy.diff(du[i], u[j]) * du_dir[j] for j in range(n))
            + sum(sympy.diff(du[i], p[k]) * dp_dir[k] for k in range(m)),
        )
        for i in range(n)
    ]
    jvp_src = _emit(
        sympy,
        ["def jvp(out, u, p, t, du, dp):"]
        + head
        + [f"    du{j} = du[{j}]" for j in range(n)]
        + [f"    dp{k} = dp[{k}]" for k in range(m)],
        jvp_out,
    )
    src = vjp_src + "\n\n\n" + jvp_src + "\n"
    ns = _compile_namespace(src, getattr(f, "__name__", "f"))
    return numba.njit(ns["vjp"]), numba.njit(ns["jvp"]), src


def complex_step_jacobian(call, n_out, arrays, H=None):
    """The Jacobian (n_out, sum of sizes) of ``call(out, *arrays)`` by complex step, in NumPy:
    the reference generated derivatives are checked against (:func:`smallchains._complexstep.jacobian`
    over the arrays laid end to end)."""
    sizes = [np.asarray(a).shape[0] for a in arrays]
    cuts = np.cumsum(sizes)[:-1]

    def fn(z):
        out = np.zeros(n_out, dtype=complex)
        call(out, *np.split(z, cuts))
        return out

    return jacobian(fn, np.concatenate([np.asarray(a, dtype=float) for a in arrays]))


def _compile_namespace(src, what):
    ns = {"np": np}
    for k in ("exp", "log", "sqrt", "sin", "cos", "tan", "tanh", "sinh", "cosh", "log1p", "expm1"):
        ns[k] = getattr(np, k)
    ns.update(atan=np.arctan, asin=np.arcsin, acos=np.arccos, pi=np.pi, E=np.e)
    try:
        exec(compile(src, f"<symbolic derivatives of {what}>", "exec"), ns)
    except SyntaxError as e:  # pragma: no cover - sympy printed something Python cannot read
        raise SymbolicError(f"the generated code does not parse: {e}") from None
    return ns


def _trace_with(fn_obj, args_builder):
    import sympy

    py = getattr(fn_obj, "py_func", fn_obj)
    shim = _shim(sympy)
    glb = dict(py.__globals__)
    for name, val in list(glb.items()):
        if val is np or getattr(val, "__name__", None) == "math":
            glb[name] = shim
    fn = types.FunctionType(py.__code__, glb, py.__name__, py.__defaults__, py.__closure__)
    args, out = args_builder(sympy)
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 - any failure means "not traceable"
        raise SymbolicError(f"{py.__name__} could not be traced with symbols ({type(e).__name__}: {e})") from None
    return sympy, [sympy.sympify(o) for o in out]


def ude_symbolic_derivatives(f, features, n, nm, d, mo):
    """Generated ``fvjp(lu, lp, ly, v, u, pm, t, y)`` for a UDE's ``f(du, u, pm, t, y)`` and, with
    ``features(x, u, pm, t)``, ``gvjp(lu, lp, xbar, u, pm, t)`` (else None); and the source.
    fvjp overwrites lu and ly and accumulates into lp; gvjp accumulates into lu and lp."""
    try:
        import sympy  # noqa: F401
    except ImportError:
        raise SymbolicError("sympy is not installed") from None
    import numba

    syms = {}

    def f_args(sympy):
        syms["u"] = list(sympy.symbols(f"u0:{n}", real=True))
        syms["p"] = list(sympy.symbols(f"p0:{max(nm, 1)}", real=True))[:nm]
        syms["y"] = list(sympy.symbols(f"y0:{mo}", real=True))
        syms["t"] = sympy.Symbol("t", real=True)
        du = [sympy.Integer(0)] * n
        return (du, syms["u"], syms["p"], syms["t"], syms["y"]), du

    sympy, du = _trace_with(f, f_args)
    u, p, y = syms["u"], syms["p"], syms["y"]
    v = list(sympy.symbols(f"v0:{n}", real=True))
    s = sum(v[j] * du[j] for j in range(n))
    head = (
        [f"    u{j} = u[{j}]" for j in range(n)]
        + [f"    p{k} = pm[{k}]" for k in range(nm)]
        + [f"    y{k} = y[{k}]" for k in range(mo)]
        + [f"    v{j} = v[{j}]" for j in range(n)]
    )
    outs = (
        [(f"lu[{j}] =", sympy.diff(s, u[j])) for j in range(n)]
        + [(f"lp[{k}] +=", sympy.diff(s, p[k])) for k in range(nm)]
        + [(f"ly[{k}] =", sympy.diff(s, y[k])) for k in range(mo)]
    )
    src = _emit(sympy, ["def fvjp(lu, lp, ly, v, u, pm, t, y):"] + head, outs) + "\n"
    gsrc = ""
    if features is not None:

        def g_args(sympy):
            x = [sympy.Integer(0)] * d
            return (x, syms["u"], syms["p"], syms["t"]), x

        _, xs = _trace_with(features, g_args)
        xb = list(sympy.symbols(f"xb0:{d}", real=True))
        sg = sum(xb[j] * xs[j] for j in range(d))
        ghead = (
            [f"    u{j} = u[{j}]" for j in range(n)]
            + [f"    p{k} = pm[{k}]" for k in range(nm)]
            + [f"    xb{j} = xbar[{j}]" for j in range(d)]
        )
        gouts = [(f"lu[{j}] +=", sympy.diff(sg, u[j])) for j in range(n)] + [
            (f"lp[{k}] +=", sympy.diff(sg, p[k])) for k in range(nm)
        ]
        gsrc = _emit(sympy, ["def gvjp(lu, lp, xbar, u, pm, t):"] + ghead, gouts) + "\n"
    full = src + ("\n\n" + gsrc if gsrc else "")
    ns = _compile_namespace(full, getattr(f, "__name__", "f"))
    return numba.njit(ns["fvjp"]), (numba.njit(ns["gvjp"]) if gsrc else None), full


# --------------------------------------------------------------------------- checked, with a fallback

MODES = ("auto", "symbolic", "complex step")


def choose(derivatives, make):
    """Apply a ``derivatives=`` choice: returns (what ``make()`` built or None, the method used,
    why symbolic failed or None).  ``"auto"`` falls back to complex step on :class:`SymbolicError`;
    ``"symbolic"`` raises it."""
    if derivatives not in MODES:
        raise ValueError(f"`derivatives` must be 'auto', 'symbolic' or 'complex step', got {derivatives!r}")
    if derivatives == "complex step":
        return None, "complex step", None
    try:
        return make(), "symbolic", None
    except SymbolicError as e:
        if derivatives == "symbolic":
            raise
        return None, "complex step", str(e)


def _verified(compare):
    """Run ``compare(rng)`` -> (generated, complex step) at a random point; SymbolicError unless they agree
    (generated code that does not compile or run counts as a failure: the caller falls back)."""
    try:
        got, ref = compare(np.random.default_rng(12345))
    except Exception as e:  # noqa: BLE001
        raise SymbolicError(f"the generated derivatives could not be checked ({type(e).__name__}: {e})") from None
    if not np.allclose(got, ref, rtol=1e-10, atol=1e-12):
        raise SymbolicError(
            "the generated derivatives disagree with complex step (the traced code differs from the compiled one?)"
        )


def checked_derivatives(f, n, m):
    """:func:`symbolic_derivatives` (vjp, jvp), compiled and checked against complex step."""
    vjp, jvp, _ = symbolic_derivatives(f, n, m)

    def compare(rng):
        u, p, v = rng.uniform(0.5, 2.0, n), rng.uniform(0.5, 2.0, m), rng.normal(size=n)
        du, dp = rng.normal(size=n), rng.normal(size=m)
        lu, lp, out = np.zeros(n), np.zeros(m), np.zeros(n)
        vjp(lu, lp, v, u, p, 0.5)
        jvp(out, u, p, 0.5, du, dp)
        J = complex_step_jacobian(lambda o, uz, pz: f.py_func(o, uz, pz, 0.5), n, [u, p])
        return np.r_[lu, lp, out], np.r_[v @ J, J @ np.r_[du, dp]]

    _verified(compare)
    return vjp, jvp


def checked_ude_derivatives(f, features, n, nm, d, mo):
    """:func:`ude_symbolic_derivatives` (fvjp, gvjp), compiled and checked against complex step."""
    fv, gv, _ = ude_symbolic_derivatives(f, features, n, nm, d, mo)

    def compare(rng):
        u, pm, y, v = (
            rng.uniform(0.5, 2.0, n),
            rng.uniform(0.5, 2.0, nm),
            rng.uniform(-1.0, 1.0, mo),
            rng.normal(size=n),
        )
        lu, lp, ly = np.zeros(n), np.zeros(nm), np.zeros(mo)
        fv(lu, lp, ly, v, u, pm, 0.5, y)
        got = np.r_[lu, lp, ly]
        ref = v @ complex_step_jacobian(lambda o, uz, pz, yz: f.py_func(o, uz, pz, 0.5, yz), n, [u, pm, y])
        if gv is not None:
            xb = rng.normal(size=d)
            lu2, lp2 = np.zeros(n), np.zeros(nm)
            gv(lu2, lp2, xb, u, pm, 0.5)
            got = np.r_[got, lu2, lp2]
            ref = np.r_[ref, xb @ complex_step_jacobian(lambda o, uz, pz: features.py_func(o, uz, pz, 0.5), d, [u, pm])]
        return got, ref

    _verified(compare)
    return fv, gv
