"""The Recording contract (smallchains/ode/recording.py): what other packages may use, and that it is right.

Numbers: the pullback and the directional sensitivities against central differences in float64
(fixed steps, so the discrete solution is a smooth function of its inputs and the differences
are clean), for every adjoint method.  Architecture: ``smallchains.pk`` reads no attribute of
an ``ode`` object outside :data:`Recording.PUBLIC`, and neither the recording nor
``GradientFunction`` switches on the sensitivity method's type.
"""

from __future__ import annotations

import ast
import inspect
import pathlib

import numba
import numpy as np
import pytest

import smallchains as sc
from smallchains.ode import recording as recmod
from smallchains.ode import sensitivities
from smallchains.ode.recording import Recording

SRC = pathlib.Path(sc.__file__).parent


@numba.njit
def nonlin(du, u, p, t):
    du[0] = p[0] * u[0] + p[1] * u[1] * u[1] + np.sin(t)
    du[1] = p[2] * u[0] - p[3] * u[1] * np.exp(-0.1 * u[0])


U0 = np.array([1.0, 0.5])
P = np.array([-0.5, 0.3, 0.8, 0.7])
TS = np.array([0.0, 0.35, 1.0, 1.3, 2.05, 3.0])  # on and between the steps


def schedule():
    j = sc.Jumps()
    j.bolus(0.7, 0, 0.5, scale_param=1)  # amount 0.5 * p[1]
    j.infusion(1.1, 1, 0.4, 0.8)
    j.bolus(2.2, 1, -0.3)
    return j


def fixed(method=None):
    """RK4 with a fixed step: the solution is smooth in (p, u0), so central differences are exact to ~1e-9."""
    return Recording(
        nonlin, U0, (0.0, 3.0), P, saveat=TS, jumps=schedule(), solver=sc.RK4(), dt=0.05, sensitivity=method
    )


def states(rec, p, u0=U0):
    rec.set_inputs(p, u0)
    return rec.forward().copy()


def test_forward_matches_solve_and_exposes_its_results():
    rec = fixed()
    u = states(rec, P)
    sol = sc.solve(nonlin, U0, (0.0, 3.0), P, saveat=TS, jumps=schedule(), solver=sc.RK4(), dt=0.05)
    np.testing.assert_array_equal(u, sol.u)
    np.testing.assert_array_equal(rec.states, sol.u)
    np.testing.assert_array_equal(rec.times, TS)
    np.testing.assert_array_equal(rec.end_state, sol.u_final)
    assert rec.end_time == 3.0
    assert rec.stats == sol.stats and rec.stats["naccept"] >= 60
    assert (rec.n, rec.m) == (2, 4)
    # forward(p, u0): the trusted fast path gives the same numbers as set_inputs + forward()
    u2 = rec.forward(np.ascontiguousarray(P * 1.1), np.ascontiguousarray(U0 * 0.9)).copy()
    np.testing.assert_array_equal(u2, states(rec, P * 1.1, U0 * 0.9))
    s = rec.solution()
    np.testing.assert_array_equal(s.u, u2)
    with pytest.raises(ValueError, match="shape"):
        rec.set_inputs(P[:3])
    with pytest.raises(ValueError, match="NaN"):
        rec.set_inputs(P * np.nan)


@pytest.mark.parametrize("method", [sc.DiscreteAdjoint(), sc.DiscreteAdjoint(store="states")])
def test_discrete_pullback_equals_central_differences(method):
    """sum(g * u(p, u0)) differentiated by one pullback, against central differences (float64)."""
    rec = fixed(method)
    g = np.random.default_rng(3).normal(size=(TS.shape[0], 2))
    states(rec, P)
    gp, gu = rec.pullback(g)
    h = 1e-6
    fp = [np.sum(g * (states(rec, P + h * e) - states(rec, P - h * e))) / (2 * h) for e in np.eye(4)]
    fu = [np.sum(g * (states(rec, P, U0 + h * e) - states(rec, P, U0 - h * e))) / (2 * h) for e in np.eye(2)]
    np.testing.assert_allclose(gp, fp, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(gu, fu, rtol=1e-7, atol=1e-9)
    # a pullback reads the recorded solve: after forward at P it is the same, bit for bit
    states(rec, P * 1.2)
    states(rec, P)
    gp2, gu2 = rec.pullback(g)
    np.testing.assert_array_equal(gp2, gp)
    np.testing.assert_array_equal(gu2, gu)
    # the jump derivatives come in the order the jumps were added: d/dvalue of the scaled bolus
    _, _, jd = rec.pullback(g, jumps=True)
    assert jd.shape == (4, 2)  # (an infusion is two jumps)


@pytest.mark.parametrize("method", [sc.InterpolatingAdjoint(rtol=1e-11, atol=1e-11), sc.BacksolveAdjoint()])
def test_continuous_pullbacks_approach_central_differences(method):
    """The continuous adjoints are accurate to their tolerances, not to rounding: tight solve, loose bound."""
    rec = Recording(nonlin, U0, (0.0, 3.0), P, saveat=TS, jumps=schedule(), rtol=1e-11, atol=1e-11, sensitivity=method)
    g = np.random.default_rng(4).normal(size=(TS.shape[0], 2))
    states(rec, P)
    gp, gu = rec.pullback(g)
    h = 1e-4  # (adaptive steps: larger differences, so that the steps' changes stay below the bound)
    fp = [np.sum(g * (states(rec, P + h * e) - states(rec, P - h * e))) / (2 * h) for e in np.eye(4)]
    np.testing.assert_allclose(gp, fp, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="DiscreteAdjoint"):
        rec.pullback(g, jumps=True)


def test_directional_sensitivities_equal_central_differences():
    rec = fixed()
    rng = np.random.default_rng(5)
    Dp = rng.normal(size=(3, 4))
    Du0 = rng.normal(size=(3, 2))
    u, S = rec.directional_sensitivities(P, Dp, u0=U0, Du0=Du0)
    np.testing.assert_array_equal(u, states(rec, P))  # the steps of the plain forward solve
    assert S.shape == (TS.shape[0], 3, 2)
    h = 1e-6
    for d in range(3):
        fd = (states(rec, P + h * Dp[d], U0 + h * Du0[d]) - states(rec, P - h * Dp[d], U0 - h * Du0[d])) / (2 * h)
        np.testing.assert_allclose(S[:, d], fd, rtol=1e-7, atol=1e-9)
    # and they agree with pullbacks: g' S[:, d] = (dL/dp) . Dp[d] + (dL/du0) . Du0[d]
    g = rng.normal(size=(TS.shape[0], 2))
    states(rec, P)
    gp, gu = rec.pullback(g)
    np.testing.assert_allclose(np.einsum("qj,qdj->d", g, S), Dp @ gp + Du0 @ gu, rtol=1e-11, atol=1e-12)


def test_directional_args_solve_what_directional_sensitivities_solve():
    """The bound arguments for a compiled caller: directions written into ``dp`` and the
    scaled bolus's tangent values from ``jrow``/``jbase`` give directional_sensitivities'
    numbers, for new directions each time, from the same buffers."""
    from smallchains.ode import _kernels as RK

    rec = fixed()
    a = rec.directional_args(3)
    assert np.any(a.jrow >= 0)  # (the bolus scaled by p[1] has tangent doses)
    rng = np.random.default_rng(6)
    for _ in range(2):
        Dp = rng.normal(size=(3, 4))
        a.dp[:] = Dp
        jv = a.after[6]
        sel = a.jrow >= 0
        jv[sel] = a.jbase[sel] * a.dp.ravel()[a.jrow[sel]]
        assert RK.rk_solve(*a.before, a.z0, P, *a.after) == RK.OK
        z = a.after[1]
        u, S = rec.directional_sensitivities(P, Dp)
        np.testing.assert_allclose(z[:, :2], u, rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(z[:, 2:].reshape(-1, 3, 2), S, rtol=1e-13, atol=1e-14)
    with pytest.raises(ValueError, match="positive"):
        rec.directional_args(0)


def test_move_jumps_changes_the_solve_in_place():
    rec = fixed()
    base = states(rec, P)
    t = np.array([0.7, 1.1, 1.9, 2.2])  # as added: the bolus, the infusion's start and end, the bolus
    v = np.array([0.5, 0.4, -0.4, -0.3])
    rec.move_jumps(t, v)
    np.testing.assert_allclose(states(rec, P), base, rtol=1e-14, atol=1e-15)  # (1.1 + 0.8 is not 1.9)
    rec.move_jumps(t + 0.1, v * 2)
    moved = states(rec, P)
    j = sc.Jumps()
    j.bolus(0.8, 0, 1.0, scale_param=1)
    j.infusion(1.2, 1, 0.8, 0.8)
    j.bolus(2.3, 1, -0.6)
    ref = sc.solve(nonlin, U0, (0.0, 3.0), P, saveat=TS, jumps=j, solver=sc.RK4(), dt=0.05).u
    np.testing.assert_allclose(moved, ref, rtol=1e-13, atol=1e-14)
    with pytest.raises(ValueError, match="finite times"):
        rec.move_jumps(t[:2], v[:2])


def test_forward_sensitivity_has_no_pullback_but_a_gradient():
    gf = sc.gradient_function(
        np.ones((TS.shape[0], 2)), nonlin, U0, (0.0, 3.0), P, saveat=TS, jumps=schedule(),
        rtol=1e-10, atol=1e-10, sensitivity=sc.ForwardSensitivity(),
    )  # fmt: skip
    v, gp, gu = gf(P)
    ref = sc.gradient_function(
        np.ones((TS.shape[0], 2)), nonlin, U0, (0.0, 3.0), P, saveat=TS, jumps=schedule(), rtol=1e-10, atol=1e-10
    )(P)
    assert v == pytest.approx(ref[0], rel=1e-8)
    np.testing.assert_allclose(gp, ref[1], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gu, ref[2], rtol=1e-6, atol=1e-8)
    assert gf.recording.method is gf.sensitivity
    with pytest.raises(TypeError, match="adjoint method"):
        gf.recording.pullback(np.zeros((TS.shape[0], 2)))


def test_gradient_function_is_a_loss_on_a_recording():
    """gf(p) is the loss and one pullback of its gradient on the recording: the same numbers."""
    data = np.random.default_rng(6).normal(size=(TS.shape[0], 2))
    gf = sc.gradient_function(data, nonlin, U0, (0.0, 3.0), P, saveat=TS, jumps=schedule())
    v, gp, gu = gf(P)
    rec = gf.recording
    u = rec.forward(P.copy())
    assert v == np.sum((u - data) ** 2)
    gp2, gu2 = rec.pullback(2.0 * (u - data))
    np.testing.assert_array_equal(gp, gp2)
    np.testing.assert_array_equal(gu, gu2)
    assert gf.stats == rec.stats


# --------------------------------------------------------------------------- the contract itself


def test_public_list_is_real_and_documented():
    """Every name in Recording.PUBLIC exists on a recording and is documented in the module's docstring
    and by its own docstring or a comment; nothing public-looking lies outside the list."""
    rec = fixed()
    states(rec, P)
    doc = recmod.__doc__
    for name in Recording.PUBLIC:
        assert hasattr(rec, name), name
        assert f"``{name}" in doc, f"{name} is not in the module's documented interface"
        member = inspect.getattr_static(Recording, name, None)
        if member is not None:  # (methods and properties: their own docstrings say what they do)
            assert (getattr(member, "__doc__", None) or "").strip(), name
    extra = {k for k in dir(rec) if not k.startswith("_")} - Recording.PUBLIC - {"PUBLIC"}
    assert not extra, f"public-looking names outside Recording.PUBLIC: {sorted(extra)}"


#: the names bound to ode objects in pk (a Recording, a GradientFunction, or pk's own wrappers of them)
RECEIVERS = {"gf", "rec", "recording"}


def _pk_wrapper_names():
    """The public methods and properties of pk's own solve objects (AnalyticSolve, PiecewiseSolve,
    _ODEPiece), which share the receiver names with the recordings they wrap (duck typing in
    estimation.py and steady_state.py); their data attributes are not allowed through a receiver."""
    names = set()
    for path in (SRC / "pk").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name in ("AnalyticSolve", "PiecewiseSolve", "_ODEPiece"):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and not item.name.startswith("_"):
                        names.add(item.name)
    return names


def _tail(node):
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def contract_violations(source, allowed, filename="<pk>"):
    """(line, text) of every attribute read or write on a receiver (``gf``, ``self.gf``, ``rec``,
    ``x.recording``, ...) outside ``allowed``, and of every Recording/GradientFunction built into a
    name the scan does not watch."""
    tree = ast.parse(source)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _tail(node.value) in RECEIVERS and node.attr not in allowed:
            out.append((node.lineno, f"{filename}:{node.lineno}: {ast.unparse(node)}"))
    # a recording must land in a watched name (directly, or returned by a helper whose calls do)
    makers = {"Recording", "GradientFunction"}
    changed = True
    while changed:
        changed = False
        for fn in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name not in makers]:
            for ret in [r for r in ast.walk(fn) if isinstance(r, ast.Return) and isinstance(r.value, ast.Call)]:
                if _tail(ret.value.func) in makers:
                    makers.add(fn.name)
                    changed = True
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and _tail(node.value.func) in makers:
            for t in node.targets:
                if _tail(t) not in RECEIVERS:
                    out.append((node.lineno, f"{filename}:{node.lineno}: recording bound to {ast.unparse(t)}"))
    return out


def test_the_scan_catches_violations():
    allowed = Recording.PUBLIC | _pk_wrapper_names()
    bad = "gf.P.p = p\nself.gf._us\nx = s.gf.st_t\nsomething = Recording(f, u0, ts, p, saveat=ts)\n"
    found = contract_violations(bad, allowed)
    assert sorted(line for line, _ in found) == [1, 2, 3, 4], found
    good = "u = self.gf.forward(p)\ng = rec.pullback(c)\nself.gf = Recording(f, u0, ts, p, saveat=ts)\n"
    assert contract_violations(good, allowed) == []


def test_pk_reads_no_internal_field_of_an_ode_object():
    allowed = Recording.PUBLIC | _pk_wrapper_names()
    internals = {k for k in dir(Recording) if k.startswith("_")} | {"P", "us", "st_t", "fa", "va", "aopt"}
    assert not (allowed & internals - {"us"}), "a wrapper name shadows a Recording internal"
    found = []
    for path in sorted((SRC / "pk").glob("*.py")):
        found += [text for _, text in contract_violations(path.read_text(), allowed, path.name)]
    assert not found, "pk reads ode internals:\n" + "\n".join(found)


def test_no_type_switch_on_the_sensitivity_method():
    """Method-specific behaviour lives in the method classes: no isinstance(..., <a method class>) in
    the recording, the gradient function or the methods' package."""
    methods = set(sensitivities.__all__) - {"SensitivityMethod", "auto_sensitivity"}
    files = [
        SRC / "ode" / "recording.py",
        SRC / "ode" / "sensitivity.py",
        *(SRC / "ode" / "sensitivities").glob("*.py"),
    ]
    hits = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and _tail(node.func) == "isinstance" and len(node.args) == 2:
                classes = {_tail(e) for e in ast.walk(node.args[1])}
                if classes & methods:
                    hits.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    assert not hits, hits
