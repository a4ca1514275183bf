"""Exact solutions of linear compartment models, with exact derivatives.

A linear compartment model (one, two or three compartments, IV or with first-order
absorption: NONMEM's ADVAN1-4, 11 and 12) is du/dt = A(p) u + r(t), with r the zero-order
inputs in force (infusions).  Between two events the exact solution is

    u(t + dt) = e^{A dt} u(t) + (integral_0^dt e^{A s} ds) r,

both terms read off one matrix exponential of the augmented matrix [[A, r], [0, 0]] dt
(Van Loan 1978).  The exponential is computed by Higham's scaling and squaring with Pade
approximants of degree 3 to 13 (Higham 2005, "The scaling and squaring method for the matrix
exponential revisited", SIAM J. Matrix Anal. Appl. 26(4); the algorithm of SciPy's and
MATLAB's expm), accurate to rounding, so these are the models' closed-form solutions, not an
integration with a step-size control: no tolerance, and no special case when two rate
constants coincide (ka = k, where the textbook sums of exponentials divide by zero).  The
smallest systems skip the exponential's general algorithm: one compartment (with or without an
infusion) and first-order absorption into one compartment (A lower triangular, 2 x 2) use their
closed forms, written with phi1(z) = (e^z - 1) / z, which a series keeps accurate near z = 0,
so ka = k needs no special case there either.

Derivatives with respect to the parameters are complex steps through the whole computation
(A(p + ih e_k), h = 1e-30: exact to rounding, every operation being analytic), one complex
pass per parameter, all in one compiled call without allocation.  Boluses, bolus scales
(``Jumps.bolus(..., scale_param=)``), infusions as input switches, resets (EVID 3) and set
values follow the :class:`smallchains.Jumps` schedule exactly as the ODE solvers read it: a
save point at a jump's time sees the state just before the jump.

:class:`AnalyticSolve` offers a subject's solve with the interface the population code uses
for a solve (``solve``, ``pullback``, ``directional_sensitivities``); it is chosen for models
that declare their rate matrix (``CompartmentModel(..., linear=rates)``, every built-in linear
model does), and tested against the ODE path to 1e-10 (``tests/test_pk_analytic.py``).
"""

from __future__ import annotations

import math

import numpy as np

from .._jit import kernel
from ..ode import _kernels as RK

#: the complex step (exact derivatives to rounding for analytic code)
H = 1e-30

# Higham (2005), table 2.3: the largest 1-norm for which the Pade approximant of degree m
# meets double-precision accuracy, and the approximants' coefficients.
_THETA = np.array([1.495585217958292e-2, 2.539398330063230e-1, 9.504178996162932e-1, 2.097847961257068e0])
_B3 = np.array([120.0, 60.0, 12.0, 1.0])
_B5 = np.array([30240.0, 15120.0, 3360.0, 420.0, 30.0, 1.0])
_B7 = np.array([17297280.0, 8648640.0, 1995840.0, 277200.0, 25200.0, 1512.0, 56.0, 1.0])
_B9 = np.array(
    [17643225600.0, 8821612800.0, 2075673600.0, 302702400.0, 30270240.0, 2162160.0, 110880.0, 3960.0, 90.0, 1.0]
)
_B13 = np.array(
    [
        64764752532480000.0,
        32382376266240000.0,
        7771770303897600.0,
        1187353796428800.0,
        129060195264000.0,
        10559470521600.0,
        670442572800.0,
        33522128640.0,
        1323241920.0,
        40840800.0,
        960960.0,
        16380.0,
        182.0,
        1.0,
    ]
)
_THETA13 = 5.371920351148152

#: workspace matrices an exponential needs (see :func:`expm`)
N_WORK = 8


@kernel
def _mm(A, B, C, N):
    """C <- A B on the leading N x N blocks."""
    for i in range(N):
        for j in range(N):
            s = A[i, 0] * B[0, j]
            for k in range(1, N):
                s += A[i, k] * B[k, j]
            C[i, j] = s


@kernel
def _solve_in_place(Q, R, N):
    """R <- Q^-1 R (N x N each) by Gaussian elimination with partial pivoting on the real
    parts (the pivots a complex-step pass chooses are the real pass's); Q is overwritten.
    Returns False when Q is singular."""
    for c in range(N):
        piv = c
        best = abs(Q[c, c].real)
        for i in range(c + 1, N):
            v = abs(Q[i, c].real)
            if v > best:
                best, piv = v, i
        if best == 0.0:
            return False
        if piv != c:
            for j in range(N):
                Q[c, j], Q[piv, j] = Q[piv, j], Q[c, j]
                R[c, j], R[piv, j] = R[piv, j], R[c, j]
        for i in range(c + 1, N):
            f = Q[i, c] / Q[c, c]
            if f != 0.0:
                for j in range(c, N):
                    Q[i, j] -= f * Q[c, j]
                for j in range(N):
                    R[i, j] -= f * R[c, j]
    for c in range(N - 1, -1, -1):
        for j in range(N):
            s = R[c, j]
            for k in range(c + 1, N):
                s -= Q[c, k] * R[k, j]
            R[c, j] = s / Q[c, c]
    return True


@kernel
def expm(M, N, W, out):
    """out[:N, :N] <- e^M on the leading N x N block of M (left unchanged), by Higham's (2005)
    scaling and squaring; W (N_WORK, >= N, >= N) is workspace of M's dtype.  The degree and
    the scaling follow the 1-norm of M's real part, so a complex-step pass takes the real
    pass's branches.  Returns False when the Pade denominator is singular (M not finite)."""
    norm = 0.0
    for j in range(N):
        s = 0.0
        for i in range(N):
            s += abs(M[i, j].real)
        if not s < np.inf:  # (NaN or Inf)
            return False
        norm = max(norm, s)
    A2, A4, A6, U, V, T, X = W[0], W[1], W[2], W[3], W[4], W[5], W[6]
    sq = 0
    m = 13
    for d in range(4):
        if norm <= _THETA[d]:
            m = 3 + 2 * d
            break
    scale = 1.0
    if m == 13 and norm > _THETA13:
        sq = int(np.ceil(np.log2(norm / _THETA13)))
        scale = 0.5**sq
    for i in range(N):
        for j in range(N):
            X[i, j] = M[i, j] * scale
    _mm(X, X, A2, N)
    if m == 13:
        b = _B13
        _mm(A2, A2, A4, N)
        _mm(A4, A2, A6, N)
        for i in range(N):
            for j in range(N):
                T[i, j] = b[13] * A6[i, j] + b[11] * A4[i, j] + b[9] * A2[i, j]
        _mm(A6, T, U, N)
        for i in range(N):
            for j in range(N):
                U[i, j] += b[7] * A6[i, j] + b[5] * A4[i, j] + b[3] * A2[i, j]
            U[i, i] += b[1]
        for i in range(N):
            for j in range(N):
                T[i, j] = b[12] * A6[i, j] + b[10] * A4[i, j] + b[8] * A2[i, j]
        _mm(A6, T, V, N)
        for i in range(N):
            for j in range(N):
                V[i, j] += b[6] * A6[i, j] + b[4] * A4[i, j] + b[2] * A2[i, j]
            V[i, i] += b[0]
    else:
        b = _B3 if m == 3 else (_B5 if m == 5 else (_B7 if m == 7 else _B9))
        # U' = sum b[2k+1] A^(2k), V = sum b[2k] A^(2k), powers of A2 built in turn (in A4)
        for i in range(N):
            for j in range(N):
                U[i, j] = b[3] * A2[i, j]
                V[i, j] = b[2] * A2[i, j]
                A4[i, j] = A2[i, j]
            U[i, i] += b[1]
            V[i, i] += b[0]
        for k in range(2, (m + 1) // 2):
            _mm(A4, A2, T, N)
            for i in range(N):
                for j in range(N):
                    A4[i, j] = T[i, j]
                    U[i, j] += b[2 * k + 1] * T[i, j]
                    V[i, j] += b[2 * k] * T[i, j]
    _mm(X, U, T, N)  # U = A U'
    for i in range(N):
        for j in range(N):
            U[i, j] = T[i, j]
            X[i, j] = V[i, j] - U[i, j]  # the denominator
            out[i, j] = V[i, j] + U[i, j]
    if not _solve_in_place(X, out, N):
        return False
    for _ in range(sq):
        _mm(out, out, T, N)
        for i in range(N):
            for j in range(N):
                out[i, j] = T[i, j]
    return True


#: coefficients of (e^z - 1) / z = sum z^k / (k + 1)!, k = 0..17 (|z| <= 1/2: truncation < 1e-22)
_PHI1 = np.array([1.0 / math.factorial(k + 1) for k in range(18)])


@kernel
def phi1(z):
    """(e^z - 1) / z, accurate near 0 (and 1 at 0): the series for |Re z| <= 1/2, else the
    quotient (its cancellation is then below 3 ulp).  Analytic, so complex steps pass through;
    the branch follows the real part, as a complex-step pass must."""
    if abs(z.real) > 0.5:
        return (np.exp(z) - 1.0) / z
    s = _PHI1[17] + 0.0 * z
    for k in range(16, -1, -1):
        s = s * z + _PHI1[k]
    return s


@kernel
def _advance_small(A, u, r, dt, n, has_r):
    """The closed forms of the smallest systems, or False when none applies: one state (with or
    without an input: u <- e^(a) u + r dt phi1(a), a = A dt) and two states with A[0, 1] = 0 and
    no input (first-order absorption into one compartment: e^(A dt) = [[e^a, 0], [c dt phi, e^b]],
    phi = (e^a - e^b) / (a - b) = e^b phi1(a - b), exact also when a = b)."""
    if n == 1:
        a = A[0, 0] * dt
        if has_r:
            u[0] = np.exp(a) * u[0] + r[0] * dt * phi1(a)
        else:
            u[0] = np.exp(a) * u[0]
        return True
    if n == 2 and not has_r and A[0, 1] == 0.0:
        a = A[0, 0] * dt
        b = A[1, 1] * dt
        ea, eb = np.exp(a), np.exp(b)
        d = a - b
        phi = (ea - eb) / d if abs(d.real) > 0.5 else eb * phi1(d)
        u0 = u[0]
        u[0] = ea * u0
        u[1] = A[1, 0] * dt * phi * u0 + eb * u[1]
        return True
    return False


@kernel
def _advance(A, u, r, dt, W, M, E, tmp):
    """u <- u(dt) under du/dt = A u + r (exact: a closed form for the smallest systems, else the
    augmented exponential).  False on failure."""
    n = u.shape[0]
    has_r = False
    for i in range(n):
        if r[i] != 0.0:
            has_r = True
    if n <= 2 and _advance_small(A, u, r, dt, n, has_r):
        for i in range(n):
            if not np.isfinite(u[i].real):
                return False
        return True
    N = n + 1 if has_r else n
    for i in range(N):
        for j in range(N):
            M[i, j] = 0.0
    for i in range(n):
        for j in range(n):
            M[i, j] = A[i, j] * dt
        if has_r:
            M[i, n] = r[i] * dt
    if not expm(M, N, W, E):
        return False
    for i in range(n):
        s = E[i, n] if has_r else 0.0 * E[i, 0]
        for j in range(n):
            s += E[i, j] * u[j]
        tmp[i] = s
    for i in range(n):
        u[i] = tmp[i]
    return True


@kernel
def propagate(A, p, u0, t0, jt, jkind, jidx, jval, jpidx, ts, out, W, M, E, u, r, tmp):
    """out[j] <- u(ts[j]) for du/dt = A u + r(t), u(t0) = u0, with the jumps (jt, jkind, jidx,
    jval, jpidx) sorted by time (a save point at a jump's time sees the state before it).
    Every array is of A's dtype except the schedule's; returns an RK status."""
    n = u0.shape[0]
    for i in range(n):
        u[i] = u0[i]
        r[i] = 0.0
    t = t0
    i, j = 0, 0
    n_j, n_obs = jt.shape[0], ts.shape[0]
    while j < n_obs:
        jump = i < n_j and jt[i] < ts[j]
        target = jt[i] if jump else ts[j]
        if target > t:
            if not _advance(A, u, r, target - t, W, M, E, tmp):
                return RK.NONFINITE
            t = target
        if jump:
            k, idx = jkind[i], jidx[i]
            if k == RK.J_BOLUS:
                if jpidx[i] >= 0:
                    u[idx] += jval[i] * p[jpidx[i]]
                else:
                    u[idx] += jval[i]
            elif k == RK.J_INPUT:
                r[idx] += jval[i]
            elif k == RK.J_RESET:
                for q in range(n):
                    u[q] = 0.0
            else:  # J_SET
                u[idx] = jval[i]
            i += 1
        else:
            for q in range(n):
                out[j, q] = u[q]
            j += 1
    return RK.OK


@kernel
def solve_with_jacobian(
    A, dA, p, u0, t0, jt, jkind, jidx, jval, jpidx, ts, us, dus, jac, dus0, jac_u0, wr, vr, wc, vc, pc, oc
):
    """us <- the states at ts from u0 at t0; with ``jac``, dus[:, :, k] <- d us / d p_k by one
    complex step along dA[k] = dA/dp_k (and e_k for the bolus scales) per parameter; with
    ``jac_u0``, dus0[:, :, i] <- d us / d u0_i likewise.  Workspaces: wr real (N_WORK + 2, n + 1,
    n + 1), vr real (3, n), wc complex (N_WORK + 3, n + 1, n + 1), vc complex (4, n), pc complex
    (len(p),), oc complex (n_obs, n).  Returns an RK status."""
    n = u0.shape[0]
    st = propagate(A, p, u0, t0, jt, jkind, jidx, jval, jpidx, ts, us, wr[2:], wr[0], wr[1], vr[0], vr[1], vr[2])
    if st != RK.OK:
        return st
    m = p.shape[0]
    Ac, u0c = wc[0], vc[3]
    for k in range(m + n):
        if k < m and not jac:
            continue
        if k >= m and not jac_u0:
            break
        for a in range(n):
            u0c[a] = u0[a]
            for b in range(n):
                Ac[a, b] = A[a, b]
                if k < m:
                    Ac[a, b] += 1j * H * dA[k, a, b]
        for q in range(m):
            pc[q] = p[q]
        if k < m:
            pc[k] += 1j * H
        else:
            u0c[k - m] += 1j * H
        st = propagate(Ac, pc, u0c, t0, jt, jkind, jidx, jval, jpidx, ts, oc, wc[3:], wc[1], wc[2], vc[0], vc[1], vc[2])
        if st != RK.OK:
            return st
        for j in range(ts.shape[0]):
            for q in range(n):
                if k < m:
                    dus[j, q, k] = oc[j, q].imag / H
                else:
                    dus0[j, q, k - m] = oc[j, q].imag / H
    return RK.OK


#: a steady state whose I - e^(A II) has a 1-norm condition number above this fails (as
#: :class:`AnalyticSteadyState`'s check: e^(A II) has an eigenvalue at 1, to rounding)
SS_COND_MAX = 1e12


@kernel
def _exp_at(A, T, n, W, M, E, u, r):
    """E[:n, :n] <- e^(A T): column by column by the closed forms of the smallest systems
    (:func:`_advance_small`) where they apply, else by :func:`expm`.  False on failure."""
    small = n <= 2
    if small:
        for j in range(n):
            for i in range(n):
                u[i] = 1.0 if i == j else 0.0
                r[i] = 0.0
            if not _advance_small(A, u, r, T, n, False):
                small = False
                break
            for i in range(n):
                E[i, j] = u[i]
    if not small:
        for i in range(n):
            for j in range(n):
                M[i, j] = A[i, j] * T
        if not expm(M, n, W, E):
            return False
    for i in range(n):
        for j in range(n):
            if not np.isfinite(E[i, j].real):
                return False
    return True


@kernel
def _steady_start(A, p, s, glob, W, M, E, u, r, tmp, pw, start):
    """start += u*, the amounts just before the dose at steady state of periodic regimen ``s``
    (``glob``'s steady-state table; see :func:`propagate_pieces`): u* = (I - Phi)^-1 c with
    Phi = e^(A II) and c the amounts after one interval from zero (one dose), as
    :class:`AnalyticSteadyState` computes it.  Any dtype (complex steps differentiate it).
    Returns an RK status (NONFINITE when I - Phi is singular to rounding)."""
    JT, JK, JI, JV, JP, TSP, SST0, SSS, SSJ0, SSJ1 = glob
    pout, vec, Q, R = pw
    c = vec[2]
    n = start.shape[0]  # (A may be a larger workspace: its leading n x n block)
    a, b, ts = SSJ0[s], SSJ1[s], SSS[s]
    for i in range(n):
        c[i] = 0.0
    st = propagate(
        A, p, c, SST0[s], JT[a:b], JK[a:b], JI[a:b], JV[a:b], JP[a:b], TSP[ts : ts + 1], pout, W, M, E, u, r, tmp
    )
    if st != RK.OK:
        return st
    T = TSP[ts] - SST0[s]
    for i in range(n):
        c[i] = pout[0, i]
    if not _exp_at(A, T, n, W, M, E, u, r):
        return RK.NONFINITE
    qnorm = 0.0
    for j in range(n):
        col = 0.0
        for i in range(n):
            Q[i, j] = (1.0 if i == j else 0.0) - E[i, j]
            R[i, j] = 1.0 if i == j else 0.0
            col += abs(Q[i, j].real)
        qnorm = max(qnorm, col)
    if not _solve_in_place(Q, R, n):
        return RK.NONFINITE
    rnorm = 0.0
    for j in range(n):
        col = 0.0
        for i in range(n):
            col += abs(R[i, j].real)
        rnorm = max(rnorm, col)
    if not qnorm * rnorm <= SS_COND_MAX:
        return RK.NONFINITE
    for i in range(n):
        s_ = 0.0 * c[0]
        for j in range(n):
            s_ += R[i, j] * c[j]
        start[i] += s_
    return RK.OK


@kernel
def propagate_pieces(A, p, pcs, glob, out, W, M, E, u, r, tmp, pw):
    """out[j] <- the amounts at a subject's observation j, its solve cut into pieces at its
    steady-state doses (:func:`smallchains.pk.steady_state.plan`; one piece when it has none).

    ``pcs``: the subject's pieces, arrays (t0, jumps from, to, saves from, to, first observation,
    number of observations, end saved, adds, steady state or -1): piece k starts at t0 from
    zero, plus u* of its steady state when it has one (SS = 1: a reset to it), plus the previous
    piece's amounts at t0 when it adds (SS = 2), and runs its own jumps; its save times are its
    observations', then its end when the next piece adds to it.  ``glob``: every subject's
    jumps (five arrays), save times, and the steady-state table (window start, save index,
    jumps from, to).  ``pw``: (piece saves (rows, n), (3, n), (n, n), (n, n)) of A's dtype.
    Any dtype (the complex steps of the derivatives run through it).  Returns an RK status."""
    T0, J0, J1, S0, S1, O, NOBS, SAVE, ADD, SSI = pcs
    JT, JK, JI, JV, JP, TSP = glob[0], glob[1], glob[2], glob[3], glob[4], glob[5]
    pout, vec = pw[0], pw[1]
    prev, start = vec[0], vec[1]
    n = out.shape[1]  # (A may be a larger workspace: its leading n x n block)
    for k in range(T0.shape[0]):
        for i in range(n):
            start[i] = 0.0
        if SSI[k] >= 0:
            st = _steady_start(A, p, SSI[k], glob, W, M, E, u, r, tmp, pw, start)
            if st != RK.OK:
                return st
        if ADD[k]:
            for i in range(n):
                start[i] += prev[i]
        a, b, s0, s1 = J0[k], J1[k], S0[k], S1[k]
        st = propagate(
            A, p, start, T0[k], JT[a:b], JK[a:b], JI[a:b], JV[a:b], JP[a:b], TSP[s0:s1], pout, W, M, E, u, r, tmp
        )
        if st != RK.OK:
            return st
        o = O[k]
        for j in range(NOBS[k]):
            for i in range(n):
                out[o + j, i] = pout[j, i]
        if SAVE[k]:
            for i in range(n):
                prev[i] = pout[s1 - s0 - 1, i]
    return RK.OK


@kernel
def pieces_with_jacobian(A, dA, p, pcs, glob, us, dus, jac, wr, vr, wc, vc, pc, oc, pwr, pwc):
    """us <- :func:`propagate_pieces` and, with ``jac``, dus[:, :, k] <- d us / d p_k by one
    complex step along dA[k] (and e_k for the bolus scales) per parameter (as
    :func:`solve_with_jacobian`).  Returns an RK status."""
    n = us.shape[1]
    st = propagate_pieces(A, p, pcs, glob, us, wr[2:], wr[0], wr[1], vr[0], vr[1], vr[2], pwr)
    if st != RK.OK or not jac:
        return st
    m = p.shape[0]
    Ac = wc[0]
    for k in range(m):
        for a in range(n):
            for b in range(n):
                Ac[a, b] = A[a, b] + 1j * H * dA[k, a, b]
        for q in range(m):
            pc[q] = p[q]
        pc[k] += 1j * H
        st = propagate_pieces(Ac, pc, pcs, glob, oc, wc[3:], wc[1], wc[2], vc[0], vc[1], vc[2], pwc)
        if st != RK.OK:
            return st
        for j in range(us.shape[0]):
            for q in range(n):
                dus[j, q, k] = oc[j, q].imag / H
    return RK.OK


def pieces_layout(solves):
    """The arrays :func:`propagate_pieces` reads, for subjects each solved by an
    :class:`AnalyticSolve` (one piece) or a :class:`~smallchains.pk.steady_state.PiecewiseSolve`
    of exact pieces with one parameter set: (the pieces' ten arrays, ``glob``'s ten arrays, the
    pieces' offsets per subject (N + 1), the most save points of a piece, every subject's
    observation times).  Jump and save indices are global; observation indices are the
    subject's own."""
    cols = [[] for _ in range(10)]
    jumps = [[] for _ in range(5)]
    tsp, ss = [], [[] for _ in range(4)]
    poff, rows, tobs = [0], 1, []
    nj = ns = 0

    def add_jumps(sched, times):
        nonlocal nj, ns
        for k in range(5):
            jumps[k].append(np.asarray(sched[k]))
        tsp.append(np.asarray(times, dtype=np.float64))
        a, s = nj, ns
        nj += len(sched[0])
        ns += len(times)
        return a, nj, s, ns

    for sv in solves:
        if isinstance(sv, AnalyticSolve):
            parts = [(sv, 0, sv.ts.shape[0], False, False, None)]
        else:
            if sv.exact is None or sv.n_sets != 1:
                raise ValueError("propagate_pieces takes exact pieces with one parameter set")
            parts = []
            for pc, ex, stdy in zip(sv.pieces, sv.gfs, sv.steady):
                obs = np.asarray(pc.obs)
                lo = int(obs[0]) if obs.size else 0
                if obs.size and not np.array_equal(obs, np.arange(lo, lo + obs.size)):
                    raise ValueError("a piece's observations must be contiguous")
                parts.append((ex, lo, int(obs.size), bool(pc.end_save), bool(pc.add), stdy))
        for ex, lo, k_obs, save, add, stdy in parts:
            s_idx = -1
            if stdy is not None:
                one = stdy.solve
                a, b, s, _ = add_jumps(one.sched, one.ts)
                for lst, v in zip(ss, (one.t0, s, a, b)):
                    lst.append(v)
                s_idx = len(ss[0]) - 1
            a, b, s0, s1 = add_jumps(ex.sched, ex.ts)
            rows = max(rows, s1 - s0)
            tobs.append(ex.ts[:k_obs])
            for lst, v in zip(cols, (ex.t0, a, b, s0, s1, lo, k_obs, int(save), int(add), s_idx)):
                lst.append(v)
        poff.append(len(cols[0]))
    pcs = tuple(np.ascontiguousarray(c, dtype=np.float64 if k == 0 else np.int64) for k, c in enumerate(cols))
    glob = (
        *(
            np.ascontiguousarray(np.concatenate(j), dtype=dt)
            for j, dt in zip(jumps, (np.float64, np.int64, np.int64, np.float64, np.int64))
        ),
        np.ascontiguousarray(np.concatenate(tsp), dtype=np.float64),
        np.ascontiguousarray(ss[0], dtype=np.float64),
        *(np.ascontiguousarray(c, dtype=np.int64) for c in ss[1:]),
    )
    return pcs, glob, np.array(poff, dtype=np.int64), rows, np.concatenate(tobs).astype(np.float64)


class AnalyticSolve:
    """A subject's (or a piece's) exact solve of a linear model (``model.linear``) from the amounts
    ``u0`` (default zero) at ``t0`` under the dose schedule ``jumps``, saved at ``save_times``;
    the interface of a solve for :mod:`smallchains.pk.estimation` and
    :class:`smallchains.pk.steady_state.PiecewiseSolve`:

    * ``solve(p)`` / ``run(p, u0)``: the amounts at the save times (n_saves, n_states);
    * ``pullback(cot)``: (d/dp, d/du0) of sum(cot * us) at the last run's parameters and start
      (d/du0 only with ``u0_grad``, else None);
    * ``directional_sensitivities(p, Dp, u0=None, Du0=None)``: (us, S) with S[j, d] the
      derivative of us[j] along parameter direction Dp[d] and start direction Du0[d].

    ``p`` may hold more entries than the model's parameters (they are ignored; their gradient
    is 0)."""

    def __init__(self, model, jumps, t0, save_times, m, u0_grad=False):
        n, mm = model.n_states, model.n_params
        self.model = model
        self.n, self.m, self.mm = n, int(m), mm
        self.t0 = float(t0)
        self.ts = np.ascontiguousarray(save_times, dtype=np.float64)
        self.sched = jumps.arrays(n, mm)
        self.u0_grad = bool(u0_grad)
        n_obs = self.ts.shape[0]
        N = n + 1
        self.us = np.zeros((n_obs, n))
        self.dus = np.zeros((n_obs, n, mm))
        self.dus0 = np.zeros((n_obs, n, n))
        self.dA = np.zeros((mm, n, n))
        self.zero = np.zeros(n)
        self.u0 = self.zero
        self._w = (
            np.zeros((N_WORK + 2, N, N)),
            np.zeros((3, n)),
            np.zeros((N_WORK + 3, N, N), dtype=np.complex128),
            np.zeros((4, n), dtype=np.complex128),
            np.zeros(mm, dtype=np.complex128),
            np.zeros((n_obs, n), dtype=np.complex128),
        )
        self._p = None
        self._jac = False

    def run(self, p, u0=None, jac=False):
        p = np.ascontiguousarray(p[: self.mm], dtype=np.float64)
        u0 = self.zero if u0 is None else np.ascontiguousarray(u0, dtype=np.float64)
        if not (np.all(np.isfinite(p)) and np.all(np.isfinite(u0))):
            self._p = None
            raise ArithmeticError(f"non-finite parameters {p} or initial amounts {u0}")
        A = self.model.rate_matrix(p, self.dA if jac else None)
        ju0 = jac and self.u0_grad
        st = solve_with_jacobian(
            A, self.dA, p, u0, self.t0, *self.sched, self.ts, self.us, self.dus, jac, self.dus0, ju0, *self._w
        )
        if st != RK.OK or not np.all(np.isfinite(self.us)):
            self._p = None
            raise ArithmeticError(f"the exact solution is not finite at p = {p}")
        self._p, self.u0, self._jac = p, u0, jac
        return self.us

    def solve(self, p):
        return self.run(p)

    def jacobian(self):
        """(d us / dp (n_saves, n_states, n_params), d us / du0 (n_saves, n_states, n_states) or
        None) at the last run's parameters and start."""
        if self._p is None:
            raise RuntimeError("jacobian() before a successful solve")
        if not self._jac:
            self.run(self._p, self.u0, jac=True)
        return self.dus, (self.dus0 if self.u0_grad else None)

    def pullback(self, cot):
        dus, dus0 = self.jacobian()
        g = np.zeros(self.m)
        g[: self.mm] = np.einsum("js,jsk->k", cot, dus)
        return g, (None if dus0 is None else np.einsum("js,jsk->k", cot, dus0))

    def directional_sensitivities(self, p, Dp, u0=None, Du0=None, jump_tangents=None):
        if jump_tangents is not None:
            raise NotImplementedError("the exact solution does not move doses (dose parameters use the ODE path)")
        if Du0 is not None and not self.u0_grad:
            raise ValueError("directions in the initial amounts need AnalyticSolve(..., u0_grad=True)")
        self.run(p, u0, jac=True)
        S = np.einsum("jsk,dk->jds", self.dus, np.asarray(Dp)[:, : self.mm])
        if Du0 is not None:
            S += np.einsum("jsi,di->jds", self.dus0, np.asarray(Du0))
        return self.us, S


class AnalyticSteadyState:
    """The steady state of a linear model under a periodic regimen, in closed form: over one
    interval the amounts follow an affine map phi(u) = Phi u + c (Phi = e^{A II}, c the response
    to one interval's doses from zero), so u* = (I - Phi)^-1 c, and du*/dp = (I - Phi)^-1
    d phi/dp at u* (the implicit function theorem, exact).  The interface of
    :class:`smallchains.pk.steady_state.SteadyState`: ``ss(p)`` -> (u*, du*/dp), u* the amounts
    just before the dose at steady state."""

    def __init__(self, model, periodic, t_end, m):
        self.periodic = periodic
        self.n = model.n_states
        T = periodic.horizon
        self.solve = AnalyticSolve(model, periodic.jumps(t_end), t_end - T, np.array([t_end]), m, u0_grad=True)
        self.m = int(m)

    def __call__(self, p):
        from .steady_state import SteadyStateError

        one = self.solve
        try:
            c = one.run(p, None, jac=True)[0].copy()
            Phi = one.dus0[0].copy()
            if np.linalg.cond(np.eye(self.n) - Phi) > 1e12:  # (Phi has an eigenvalue at 1, to rounding)
                raise np.linalg.LinAlgError
            ustar = np.linalg.solve(np.eye(self.n) - Phi, c)
            one.run(p, ustar, jac=True)  # (d phi / dp at u*)
            D = np.zeros((self.n, self.m))
            D[:, : one.mm] = np.linalg.solve(np.eye(self.n) - Phi, one.dus[0])
        except np.linalg.LinAlgError:
            raise SteadyStateError(
                f"row {self.periodic.row}: this dose has no steady state at these parameters (I - e^(A II) is "
                "singular: a compartment the dose reaches is never eliminated)",
                self.periodic.row,
            ) from None
        if not (np.all(np.isfinite(ustar)) and np.all(np.isfinite(D))):
            raise SteadyStateError(f"row {self.periodic.row}: the steady state is not finite", self.periodic.row)
        return ustar, D
