"""Cached kernels that run a user's own compiled functions: right-hand sides, UDE terms, their derivatives.

A user's ``@njit`` functions reach these kernels as addresses, compiled for fixed
signatures (real and, for complex-step derivatives, complex); the kernels themselves
are compiled once and cached, so a new model costs only the compilation of its own
small functions (a few tenths of a second), not of the derivative machinery around them.

Complex step: for analytic code, d f(x)/dx . v = Im f(x + i H v) / H exactly to rounding
(no subtraction, so no cancellation), H = 1e-30.  A Jacobian-vector product is one complex
evaluation; a vector-Jacobian product one per input.

Int context (``iw``) of an ODEFunction, then of a UDE (addresses as (c, jit) pairs)::

    ODEFunction: [flags, f, f_complex, vjp, jvp]            flags: 1 user vjp, 2 user jvp
    UDE:         [n_mech, identity, d, m_out, rows, cols, f, f_complex, g, g_complex, symbolic, fvjp, gvjp,
                  program...]
"""

from __future__ import annotations

import numpy as np
from numba import types

from .. import _engine as E
from .._jit import function_caster, kernel
from .._program import H_G1
from . import _complexpow  # noqa: F401 - exact complex z ** n, before any user code compiles for complex
from ._kernels import F1, F8

C1 = types.complex128[::1]

#: f(du, u, p, t) of a plain right-hand side, and features(x, u, pm, t) of a UDE
F4_SIG = types.void(F1, F1, F1, F8)
F4Z_SIG = types.void(C1, C1, C1, F8)
#: f(du, u, pm, t, y) of a UDE
F5_SIG = types.void(F1, F1, F1, F8, F1)
F5Z_SIG = types.void(C1, C1, C1, F8, C1)
#: a user's own vjp(lu, lp, v, u, p, t) and jvp(out, u, p, t, du, dp)
UVJP_SIG = types.void(F1, F1, F1, F1, F1, F8)
UJVP_SIG = types.void(F1, F1, F1, F8, F1, F1)
#: a UDE's generated derivatives: fvjp(lu, lp, ly, v, u, pm, t, y) (lu, ly overwritten, lp accumulated)
#: and gvjp(lu, lp, xbar, u, pm, t) (lu, lp accumulated)
FVJP_SIG = types.void(F1, F1, F1, F1, F1, F1, F8, F1)
GVJP_SIG = types.void(F1, F1, F1, F1, F1, F8)

as_f4 = function_caster(types.FunctionType(F4_SIG))
as_f4z = function_caster(types.FunctionType(F4Z_SIG))
as_f5 = function_caster(types.FunctionType(F5_SIG))
as_f5z = function_caster(types.FunctionType(F5Z_SIG))
as_uvjp = function_caster(types.FunctionType(UVJP_SIG))
as_ujvp = function_caster(types.FunctionType(UJVP_SIG))
as_fvjp = function_caster(types.FunctionType(FVJP_SIG))
as_gvjp = function_caster(types.FunctionType(GVJP_SIG))

H = 1e-30

# ODEFunction context
U_FLAGS, U_F, U_FZ, U_VJP, U_JVP = 0, 1, 3, 5, 7
NU = 9
FLAG_VJP, FLAG_JVP = 1, 2
# UDE context (D_SYM: 1 when fvjp (and gvjp, with features) are generated code, not complex steps)
D_NM, D_IDENT, D_D, D_MO, D_ROWS, D_COLS, D_F, D_FZ, D_G, D_GZ, D_SYM, D_FV, D_GV = (
    0,
    1,
    2,
    3,
    4,
    5,
    6,
    8,
    10,
    12,
    14,
    15,
    17,
)
ND = 19


# --------------------------------------------------------------------------- complex-step pullbacks
# out[k] (= or +=) v . Im f(..., w + i H e_k, ...) / H over the entries of one complex input wz, whose
# real values are w (the other inputs hold their real values); dz is f's complex output.


@kernel(inline="always")
def _cs_pullback4(fz, out, accumulate, wz, w, v, dz, uz, pz, t):
    for k in range(w.shape[0]):
        wz[k] = complex(w[k], H)
        fz(dz, uz, pz, t)
        acc = 0.0
        for j in range(v.shape[0]):
            acc += v[j] * dz[j].imag
        if accumulate:
            out[k] += acc / H
        else:
            out[k] = acc / H
        wz[k] = w[k]


@kernel(inline="always")
def _cs_pullback5(fz, out, accumulate, wz, w, v, dz, uz, pz, t, yz):
    for k in range(w.shape[0]):
        wz[k] = complex(w[k], H)
        fz(dz, uz, pz, t, yz)
        acc = 0.0
        for j in range(v.shape[0]):
            acc += v[j] * dz[j].imag
        if accumulate:
            out[k] += acc / H
        else:
            out[k] = acc / H
        wz[k] = w[k]


@kernel(inline="always")
def _real_into(z, x):
    for k in range(x.shape[0]):
        z[k] = x[k]


# --------------------------------------------------------------------------- plain right-hand sides


@kernel
def user_rhs(du, u, p, t, iw, fw):
    f = as_f4(iw[U_F], iw[U_F + 1])
    f(du, u, p, t)


@kernel
def user_vjp(lu, lp, v, u, p, t, iw, fw):
    """lu <- v^T df/du, lp += v^T df/dp: the user's vjp, else complex step (n + m evaluations)."""
    if iw[U_FLAGS] & FLAG_VJP:
        g = as_uvjp(iw[U_VJP], iw[U_VJP + 1])
        g(lu, lp, v, u, p, t)
        return
    fz = as_f4z(iw[U_FZ], iw[U_FZ + 1])
    n = u.shape[0]
    m = p.shape[0]
    z = fw[0 : 2 * (2 * n + m)].view(np.complex128)
    dz = z[0:n]
    uz = z[n : 2 * n]
    pz = z[2 * n : 2 * n + m]
    _real_into(uz, u)
    _real_into(pz, p)
    _cs_pullback4(fz, lu, False, uz, u, v, dz, uz, pz, t)
    _cs_pullback4(fz, lp, True, pz, p, v, dz, uz, pz, t)


@kernel
def user_jvp(out, u, p, t, du, dp, iw, fw):
    """out <- df/du du + df/dp dp: the user's jvp, else one complex-step evaluation."""
    if iw[U_FLAGS] & FLAG_JVP:
        g = as_ujvp(iw[U_JVP], iw[U_JVP + 1])
        g(out, u, p, t, du, dp)
        return
    fz = as_f4z(iw[U_FZ], iw[U_FZ + 1])
    n = u.shape[0]
    m = p.shape[0]
    z = fw[0 : 2 * (2 * n + m)].view(np.complex128)
    dz = z[0:n]
    uz = z[n : 2 * n]
    pz = z[2 * n : 2 * n + m]
    for j in range(n):
        uz[j] = complex(u[j], H * du[j])
    for k in range(m):
        pz[k] = complex(p[k], H * dp[k])
    fz(dz, uz, pz, t)
    for j in range(n):
        out[j] = dz[j].imag / H


# --------------------------------------------------------------------------- universal differential equations
# float context: x (d), y (mo), xbar (d), ybar (mo), the chain's workspace, complex scratch
# 2 (2n + nm + mo + d) floats: dz (n), uz (n), pz (nm), yz (mo), xz (d)


@kernel
def ude_rhs(du, u, p, t, iw, fw):
    f = as_f5(iw[D_F], iw[D_F + 1])
    nm = iw[D_NM]
    d = iw[D_D]
    mo = iw[D_MO]
    prog = iw[ND:].reshape((iw[D_ROWS], iw[D_COLS]))
    x = fw[0:d]
    y = fw[d : d + mo]
    work = fw[2 * d + 2 * mo :]
    pm = p[0:nm]
    if iw[D_IDENT] != 0:
        for j in range(d):
            x[j] = u[j]
    else:
        g = as_f4(iw[D_G], iw[D_G + 1])
        g(x, u, pm, t)
    E.sample_forward(prog, y, x, p[nm:], work)
    f(du, u, pm, t, y)


@kernel
def ude_vjp(lu, lp, v, u, p, t, iw, fw):
    """The mechanistic part and the features by complex step, the network by its pullback."""
    g = as_f4(iw[D_G], iw[D_G + 1])
    gz = as_f4z(iw[D_GZ], iw[D_GZ + 1])
    fz = as_f5z(iw[D_FZ], iw[D_FZ + 1])
    n = u.shape[0]
    nm = iw[D_NM]
    ident = iw[D_IDENT] != 0
    d = iw[D_D]
    mo = iw[D_MO]
    prog = iw[ND:].reshape((iw[D_ROWS], iw[D_COLS]))
    x = fw[0:d]
    y = fw[d : d + mo]
    xbar = fw[d + mo : 2 * d + mo]
    ybar = fw[2 * d + mo : 2 * d + 2 * mo]
    nwork = fw.shape[0] - (2 * d + 2 * mo) - 2 * (2 * n + nm + mo + d)
    work = fw[2 * d + 2 * mo : 2 * d + 2 * mo + nwork]
    z = fw[2 * d + 2 * mo + nwork :].view(np.complex128)
    dz = z[0:n]
    uz = z[n : 2 * n]
    pz = z[2 * n : 2 * n + nm]
    yz = z[2 * n + nm : 2 * n + nm + mo]
    xz = z[2 * n + nm + mo : 2 * n + nm + mo + d]
    pm = p[0:nm]
    pn = p[nm:]
    if ident:
        for j in range(d):
            x[j] = u[j]
    else:
        g(x, u, pm, t)
    # the network's forward pass, its derivatives kept in ``work`` for the pullback below
    if not E.ready(prog, pn, E.BOUND):
        lu[:] = np.nan  # never reached: UDE.vjp_addr binds the program (NaN: the solver stops, named)
        return
    for k in range(d):
        work[k] = x[k]
    yo = E.fwd_block(prog, pn, work, 1, True, -1, 0, E.BOUND)
    for k in range(mo):
        y[k] = work[yo + k]
    sym = iw[D_SYM] != 0
    if sym:  # the mechanistic part by generated code
        fv = as_fvjp(iw[D_FV], iw[D_FV + 1])
        fv(lu, lp[0:nm], ybar, v, u, pm, t, y)
    else:
        _real_into(uz, u)
        _real_into(pz, pm)
        _real_into(yz, y)
        _cs_pullback5(fz, lu, False, uz, u, v, dz, uz, pz, t, yz)
        _cs_pullback5(fz, lp, True, pz, pm, v, dz, uz, pz, t, yz)
        _cs_pullback5(fz, ybar, False, yz, y, v, dz, uz, pz, t, yz)
    # the network, by its compiled pullback (from the forward pass above)
    g1 = prog[0, H_G1]
    for k in range(mo):
        work[g1 + k] = ybar[k]
    xo = E.bwd_block(prog, pn, lp[nm:], work, 1, True, E.BOUND)
    for k in range(d):
        xbar[k] = work[xo + k]
    # the features
    if ident:
        for k in range(n):
            lu[k] += xbar[k]
        return
    if sym:
        gv = as_gvjp(iw[D_GV], iw[D_GV + 1])
        gv(lu, lp[0:nm], xbar, u, pm, t)
        return
    _real_into(uz, u)
    _real_into(pz, pm)
    _cs_pullback4(gz, lu, True, uz, u, xbar, xz, uz, pz, t)
    _cs_pullback4(gz, lp, True, pz, pm, xbar, xz, uz, pz, t)


@kernel
def ude_jvp(out, u, p, t, du, dp, iw, fw):
    """Features and mechanistic part by one complex evaluation each, the network by its tangent."""
    gz = as_f4z(iw[D_GZ], iw[D_GZ + 1])
    fz = as_f5z(iw[D_FZ], iw[D_FZ + 1])
    n = u.shape[0]
    nm = iw[D_NM]
    d = iw[D_D]
    mo = iw[D_MO]
    prog = iw[ND:].reshape((iw[D_ROWS], iw[D_COLS]))
    x = fw[0:d]
    y = fw[d : d + mo]
    dx = fw[d + mo : 2 * d + mo]
    dy = fw[2 * d + mo : 2 * d + 2 * mo]
    nwork = fw.shape[0] - (2 * d + 2 * mo) - 2 * (2 * n + nm + mo + d)
    work = fw[2 * d + 2 * mo : 2 * d + 2 * mo + nwork]
    z = fw[2 * d + 2 * mo + nwork :].view(np.complex128)
    dz = z[0:n]
    uz = z[n : 2 * n]
    pz = z[2 * n : 2 * n + nm]
    yz = z[2 * n + nm : 2 * n + nm + mo]
    xz = z[2 * n + nm + mo : 2 * n + nm + mo + d]
    for j in range(n):
        uz[j] = complex(u[j], H * du[j])
    for k in range(nm):
        pz[k] = complex(p[k], H * dp[k])
    if iw[D_IDENT] != 0:
        for j in range(d):
            x[j] = u[j]
            dx[j] = du[j]
    else:
        gz(xz, uz, pz, t)
        for j in range(d):
            x[j] = xz[j].real
            dx[j] = xz[j].imag / H
    E.sample_jvp(prog, y, dy, p[nm:], x, dx, dp[nm:], work)
    for k in range(mo):
        yz[k] = complex(y[k], H * dy[k])
    fz(dz, uz, pz, t, yz)
    for j in range(n):
        out[j] = dz[j].imag / H
