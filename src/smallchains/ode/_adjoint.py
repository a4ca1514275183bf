"""The discrete adjoint: reverse-mode differentiation of the Runge–Kutta steps themselves.

It gives the exact gradient of the *computed* solution (step sizes and the accepted
step sequence held fixed, as every discrete adjoint does), from what the forward solve
stored: each step's start, size and state, and either its stages (``store_stages``)
or nothing more (they are recomputed, one step at a time, from the stored state: the
memory drops from (S + 1) n to n numbers per step for one more forward pass).

One explicit step, stage inputs Y_i = u + h sum_{m<i} A[i, m] K_m, K_i = f(Y_i, t + c_i h),
u' = u + h sum_i b_i K_i, and a save point inside it at fraction θ,
u(θ) = u + h sum_i b_i(θ) K_i (the dense output; slot s is f at the step's end).
Given ū' (the cotangent of u') and the save points' cotangents, with W_i the cotangent of K_i:

    W_i = h b_i ū' + h sum_saves b_i(θ) ḡ   (+ the slot-s term, pulled through f at u')
    for i = s-1 .. 0:  Ȳ_i = W_i^T df/du (Y_i),  p̄ += W_i^T df/dp (Y_i),
                       W_m += h A[i, m] Ȳ_i (m < i),  ū += Ȳ_i
    ū = ū' + sum_saves ḡ + sum_i Ȳ_i

A stage whose cotangent is exactly zero (Tsit5's seventh when no save point falls in the
step) costs nothing.  Jumps are pulled back in reverse order at their times:
a bolus u[i] += v p[k] adds v ū[i] to p̄[k]; a reset or a set zeroes the cotangent it
overwrites; an input switch does not involve u or p.

On request (``jg`` with a row per jump) the pass also returns each jump's value and time
derivatives, for schedules whose doses depend on parameters (a bioavailability, a modelled
rate or duration, a lag).  Value: a bolus or set, ū[i] just after it (times p[k] for a scaled
bolus); an input switch, the sum of every later stage's cotangent W_i[i] (each stage reads
the input in force: the exact derivative of the computed solution).  Time: moving jump q from
τ to τ + dτ lets the state evolve under the dynamics before it for dτ, so dL/dτ =
ū⁺ᵀ (Jφ F⁻ − F⁺) with F∓ = f(u∓, τ) + r∓ the right-hand sides (inputs included) just before and
after it and Jφ the jump map's Jacobian (the identity; a set or a reset zeroes what it overwrites;
``jg[q, 2:]`` returns Jφ F⁻ − F⁺); the adjoint of the continuous solution at the
computed states, as the step sizes move with τ.  Jumps at the solve's start get no time
derivative (0).

Vector–Jacobian products reach the kernel as function pointers of the signature
``VJP_SIG``: ``vjp(lu, lp, v, u, p, t, iw, fw)``: lu <- v^T df/du (overwritten),
lp += v^T df/dp (accumulated).
"""

from __future__ import annotations

from numba import types

from .._jit import function_caster, kernel
from ._kernels import (
    F1,
    F8,
    I1,
    J_BOLUS,
    J_INPUT,
    J_RESET,
    J_SET,
    _axpy,
    _dense_weight,
    apply_jump,
    as_rhs,
    eval_f,
    interp,
    rk_combine,
    rk_stages,
)

VJP_SIG = types.void(F1, F1, F1, F1, F1, F8, I1, F1)
VJP_T = types.FunctionType(VJP_SIG)
as_vjp = function_caster(VJP_T)
#: jvp(out, u, p, t, du, dp, iw, fw): out <- df/du du + df/dp dp
JVP_SIG = types.void(F1, F1, F1, F8, F1, F1, I1, F1)
JVP_T = types.FunctionType(JVP_SIG)
as_jvp = function_caster(JVP_T)

# the augmented right-hand sides solved by rk_solve for the continuous methods
M_INTERP, M_BACKSOLVE, M_FORWARD = 0, 1, 2
# header of their int context (then the model's own iw)
X_F, X_D, X_N, X_M, X_MODE, X_NST, X_S, X_DEG, X_LI, X_LF, X_K = 0, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12
NX = 13

# int options of the adjoint (aopt)
A_S, A_FSAL, A_NSTORED, A_NJUMP0, A_NJUMPS, A_STAGES = range(6)
NAOPT = 6


@kernel(inline="always")
def _zero(x):
    for j in range(x.shape[0]):
        x[j] = 0.0


@kernel(inline="always")
def _all_zero(x):
    for j in range(x.shape[0]):
        if x[j] != 0.0:
            return False
    return True


@kernel
def _jump_adjoint(q, jkind, jidx, jval, jpidx, lam, gp):
    """Pull the cotangent ``lam`` of the state after jump ``q`` back to before it."""
    kind = jkind[q]
    if kind == J_BOLUS:
        if jpidx[q] >= 0:
            gp[jpidx[q]] += jval[q] * lam[jidx[q]]
    elif kind == J_RESET:
        _zero(lam)
    elif kind == J_SET:
        lam[jidx[q]] = 0.0


@kernel
def _jump_record(q, jkind, jidx, jpidx, p, lam, racc, jg):
    """jg[q, 0] <- dL/d(value of jump q); jg[q, 1] <- dL/d(its time) from jg[q, 2:] = F- - F+
    (``lam`` is the cotangent just after the jump, ``racc`` the later stages' input cotangents)."""
    kind = jkind[q]
    i = jidx[q]
    if kind == J_BOLUS:
        jg[q, 0] = lam[i] * (p[jpidx[q]] if jpidx[q] >= 0 else 1.0)
    elif kind == J_INPUT:
        jg[q, 0] = racc[i]
    elif kind == J_SET:
        jg[q, 0] = lam[i]
    acc = 0.0
    for j in range(lam.shape[0]):
        acc += lam[j] * jg[q, 2 + j]
    jg[q, 1] = acc


@kernel
def _rate_before(njumps_applied, jkind, jidx, jval, rate):
    """The piecewise-constant input after the first ``njumps_applied`` jumps (summed as forward does)."""
    _zero(rate)
    has = False
    for q in range(jkind.shape[0]):
        if jkind[q] == J_INPUT:
            has = True
    for q in range(njumps_applied):
        if jkind[q] == J_INPUT:
            rate[jidx[q]] += jval[q]
    return has


@kernel
def rk_discrete_adjoint(
    fa,
    va,
    iw,
    fw,
    A,
    b,
    c,
    D,
    aopt,
    t_final,
    p,
    st_t,
    st_h,
    st_u,
    st_k,
    st_j,
    jt,
    jkind,
    jidx,
    jval,
    jpidx,
    ts_save,
    gsave,
    lam,
    gp,
    W,
    K,
    wk,
    jg,
):
    """Reverse pass over the stored steps.  On return ``lam`` = dL/du0 and ``gp`` += dL/dp.

    ``jg`` (n_jumps, 2 + n) or (0, ...): each jump's dL/d(value), dL/d(time) and F⁻ − F⁺
    (see the module's docstring); filled only when it has a row per jump.

    ``gsave`` (nsave, n): dL/du at the save points ``ts_save``.  ``lam`` holds dL/du at
    the end of the solve on entry (zero when the loss only reads save points).
    ``aopt``: A_S stages, A_FSAL, A_NSTORED steps, A_NJUMP0 jumps applied at t0,
    A_NJUMPS jumps applied in all, A_STAGES (1: ``st_k`` holds the stages, 0: recompute).
    Workspaces: W, K (S, n); wk (11 n).
    """
    f = as_rhs(fa[0], fa[1])
    vjp = as_vjp(va[0], va[1])
    n = lam.shape[0]
    s = aopt[A_S]
    S = W.shape[0]
    fsal = aopt[A_FSAL] != 0
    N = aopt[A_NSTORED]
    njump0 = aopt[A_NJUMP0]
    ijump = aopt[A_NJUMPS]
    have_stages = aopt[A_STAGES] != 0
    nsave = ts_save.shape[0]

    y = wk[0:n]
    lu = wk[n : 2 * n]
    ubar = wk[2 * n : 3 * n]
    unew = wk[3 * n : 4 * n]
    rate = wk[4 * n : 5 * n]
    racc = wk[6 * n : 7 * n]  # sum of the stage cotangents of the steps after the current point
    wu = wk[7 * n : 8 * n]
    wr = wk[8 * n : 9 * n]
    fA = wk[9 * n : 10 * n]
    fB = wk[10 * n : 11 * n]
    want = jg.shape[0] > 0 and jg.shape[0] == jt.shape[0]
    if want:
        _zero(racc)
        for q in range(jg.shape[0]):
            for j in range(jg.shape[1]):
                jg[q, j] = 0.0
    has_rate = False
    rate_jumps = -1  # jumps included in ``rate``

    dirn = 1.0
    if N > 0:
        dirn = 1.0 if st_h[0] >= 0.0 else -1.0
    isave = nsave - 1

    for nstep in range(N - 1, -1, -1):
        t = st_t[nstep]
        h = st_h[nstep]
        tnew = st_t[nstep + 1] if nstep + 1 < N else t_final
        u = st_u[nstep]
        # jumps applied at this step's end, in reverse
        if st_j[nstep] >= 0:
            if want and ijump > njump0 and jt[ijump - 1] == tnew:
                # F- - F+ of each jump at tnew: walk them forward from the step's end state
                first = ijump
                while first > njump0 and jt[first - 1] == tnew:
                    first -= 1
                if have_stages:
                    rk_combine(b, s, u, h, st_k[nstep], wu)
                else:
                    if rate_jumps != first:
                        has_rate = _rate_before(first, jkind, jidx, jval, rate)
                        rate_jumps = first
                    eval_f(f, K[0], u, p, t, iw, fw, rate, has_rate)
                    rk_stages(f, iw, fw, A, c, s, u, p, t, h, K, y, rate, has_rate)
                    rk_combine(b, s, u, h, K, wu)
                _rate_before(first, jkind, jidx, jval, wr)
                eval_f(f, fA, wu, p, tnew, iw, fw, wr, True)
                for q in range(first, ijump):
                    apply_jump(jkind[q], jidx[q], jval[q], jpidx[q], wu, p, wr)
                    eval_f(f, fB, wu, p, tnew, iw, fw, wr, True)
                    # (the jump map's Jacobian applied to F-: identity, but a set or reset overwrites)
                    if jkind[q] == J_SET:
                        fA[jidx[q]] = 0.0
                    elif jkind[q] == J_RESET:
                        _zero(fA)
                    for j in range(n):
                        jg[q, 2 + j] = fA[j] - fB[j]
                        fA[j] = fB[j]
            while ijump > njump0 and jt[ijump - 1] == tnew:
                ijump -= 1
                if want:
                    _jump_record(ijump, jkind, jidx, jpidx, p, lam, racc, jg)
                _jump_adjoint(ijump, jkind, jidx, jval, jpidx, lam, gp)
        # the stages of this step
        if have_stages:
            Ks = st_k[nstep]
        else:
            if rate_jumps != ijump:
                has_rate = _rate_before(ijump, jkind, jidx, jval, rate)
                rate_jumps = ijump
            eval_f(f, K[0], u, p, t, iw, fw, rate, has_rate)
            rk_stages(f, iw, fw, A, c, s, u, p, t, h, K, y, rate, has_rate)
            Ks = K
        for i in range(S):
            _zero(W[i])
        _zero(ubar)
        # save points inside the step (t, tnew]
        while isave >= 0 and (ts_save[isave] - t) * dirn > 0.0:
            ts = ts_save[isave]
            gq = gsave[isave]
            if ts == tnew:
                for j in range(n):
                    lam[j] += gq[j]
            else:
                th = (ts - t) / h
                for i in range(S):
                    _axpy(h * _dense_weight(D, i, th), gq, W[i])
                for j in range(n):
                    ubar[j] += gq[j]
            isave -= 1
        # slot s: f at the step's end (FSAL: the last stage itself)
        if fsal:
            _axpy(1.0, W[s], W[s - 1])
        elif not _all_zero(W[s]):
            if want:
                _axpy(1.0, W[s], racc)
            rk_combine(b, s, u, h, Ks, unew)
            vjp(lu, gp, W[s], unew, p, tnew, iw, fw)
            for j in range(n):
                lam[j] += lu[j]
        for i in range(s):
            _axpy(h * b[i], lam, W[i])
        for j in range(n):
            ubar[j] += lam[j]
        for i in range(s - 1, -1, -1):
            Wi = W[i]
            if want:
                _axpy(1.0, Wi, racc)
            if _all_zero(Wi):
                continue
            for j in range(n):
                y[j] = u[j]
            for m in range(i):
                _axpy(h * A[i, m], Ks[m], y)
            vjp(lu, gp, Wi, y, p, t + c[i] * h, iw, fw)
            for j in range(n):
                ubar[j] += lu[j]
            for m in range(i):
                _axpy(h * A[i, m], lu, W[m])
        for j in range(n):
            lam[j] = ubar[j]

    # jumps at t0 (applied before the first step), then save points at t0
    while ijump > 0:
        ijump -= 1
        if want:
            _jump_record(ijump, jkind, jidx, jpidx, p, lam, racc, jg)
            for j in range(n):
                jg[ijump, 2 + j] = 0.0  # (no time derivative at the start)
        _jump_adjoint(ijump, jkind, jidx, jval, jpidx, lam, gp)
    while isave >= 0:
        gq = gsave[isave]
        for j in range(n):
            lam[j] += gq[j]
        isave -= 1
    return 0


@kernel
def squared_error(us, data, w, cols, g):
    """sum w_c (us[i, cols[c]] - data[i, c])^2 over finite data; g <- its gradient in us (overwritten)."""
    for i in range(g.shape[0]):
        for j in range(g.shape[1]):
            g[i, j] = 0.0
    val = 0.0
    for i in range(data.shape[0]):
        for c in range(data.shape[1]):
            d = data[i, c]
            if abs(d) <= 1.7976931348623157e308:
                r = us[i, cols[c]] - d
                val += w[c] * r * r
                g[i, cols[c]] += 2.0 * w[c] * r
    return val


# --------------------------------------------------------------------------- continuous methods


@kernel
def dense_segment(D, st_t, st_h, st_u, st_k, lo, hi, t, out):
    """out <- the dense solution at t from the steps lo..hi only (one stretch between two jumps).

    Times outside the stretch (rounding, or a trial point of the first step) get its end values.
    """
    dirn = 1.0 if st_h[lo] >= 0.0 else -1.0
    a = lo
    b = hi
    while a < b:
        mid = (a + b) // 2
        if (st_t[mid] + st_h[mid] - t) * dirn >= 0.0:
            b = mid
        else:
            a = mid + 1
    th = min(max((t - st_t[a]) / st_h[a], 0.0), 1.0)  # no extrapolation beyond the stretch
    interp(D, st_k[a], st_k.shape[1], st_u[a], st_h[a], th, out)


@kernel
def augmented_rhs(dz, z, p, t, iw, fw):
    """The right-hand side of the continuous adjoints and of the forward sensitivities.

    Interpolating adjoint, z = [λ (n), μ (m), lo, hi]: u(t) from the forward dense output on
    the steps lo..hi;  λ' = -(df/du)^T λ,  μ' = -(df/dp)^T λ.
    Backsolve adjoint, z = [u (n), λ (n), μ (m)]: u' = f(u) as well (solved backwards).
    Forward sensitivities along k directions, z = [u (n), s_0 .. s_{k-1} (n each)]:
    s_d' = df/du s_d + df/dp Dp[d], Dp (k, m) in the context (after the scratch); s_d(t0)
    is the direction's initial state perturbation.
    """
    vjp = as_vjp(iw[X_D], iw[X_D + 1])
    f = as_rhs(iw[X_F], iw[X_F + 1])
    n = iw[X_N]
    m = iw[X_M]
    mode = iw[X_MODE]
    N = iw[X_NST]
    S = iw[X_S]
    deg = iw[X_DEG]
    li = iw[X_LI]
    lf = iw[X_LF]
    miw = iw[NX : NX + li]
    mfw = fw[0:lf]
    o = lf
    st_t = fw[o : o + N]
    o += N
    st_h = fw[o : o + N]
    o += N
    st_u = fw[o : o + N * n].reshape((N, n))
    o += N * n
    st_k = fw[o : o + N * S * n].reshape((N, S, n))
    o += N * S * n
    D = fw[o : o + S * deg].reshape((S, deg))
    o += S * deg
    utmp = fw[o : o + n]
    o += n
    lu = fw[o : o + n]
    o += n
    # (then m scratch entries, then the directions Dp of the forward sensitivities)
    if mode == M_FORWARD:
        jvp = as_jvp(iw[X_D], iw[X_D + 1])
        k = iw[X_K]
        o += m
        Dp = fw[o : o + k * m].reshape((k, m))
        u = z[0:n]
        f(dz[0:n], u, p, t, miw, mfw)
        for d in range(k):
            jvp(dz[n + d * n : n + (d + 1) * n], u, p, t, z[n + d * n : n + (d + 1) * n], Dp[d], miw, mfw)
        return
    if mode == M_BACKSOLVE:
        u = z[0:n]
        lam = z[n : 2 * n]
        dmu = dz[2 * n : 2 * n + m]
        f(dz[0:n], u, p, t, miw, mfw)
        _zero(dmu)
        vjp(lu, dmu, lam, u, p, t, miw, mfw)
        for j in range(n):
            dz[n + j] = -lu[j]
    else:
        lam = z[0:n]
        dmu = dz[n : n + m]
        lo = int(z[n + m])
        hi = int(z[n + m + 1])
        dense_segment(D, st_t, st_h, st_u, st_k, lo, hi, t, utmp)
        _zero(dmu)
        vjp(lu, dmu, lam, utmp, p, t, miw, mfw)
        for j in range(n):
            dz[j] = -lu[j]
        dz[n + m] = 0.0
        dz[n + m + 1] = 0.0
    for k in range(m):
        dmu[k] = -dmu[k]
