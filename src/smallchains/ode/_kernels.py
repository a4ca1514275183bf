"""Compiled Runge–Kutta kernels: the adaptive step loop, dense output, jumps, events.

Right-hand sides reach these kernels as function pointers of one fixed signature
(``RHS_SIG``), passed as two int64 addresses (Numba's C wrapper and its jit entry,
see :func:`addresses`) and turned back into callables inside, so the solver is
compiled once, cached on disk, and shared by every right-hand side; a new model
costs only the compilation of its own function.  Passing a Numba dispatcher as a
first-class function argument instead costs ~30 µs per call in Numba's type
resolution; two integers cost nothing.  Calling through the pointer costs ~5 ns.

Conventions (all float64):
  f(du, u, p, t, iw, fw)   du <- f(u, p, t); ``iw``/``fw`` are the model's own
                           int64 / float64 context arrays (program, workspace).
  g(u, p, t, iw, fw) -> x  a terminating event: the solve stops where x crosses zero.

The tableau arrives as arrays: ``A`` (S, S), ``b``, ``c``, ``e`` (error weights
b - b_hat), ``D`` (S, deg): stage i's dense-output weight at fraction θ of a step
is sum_k D[i, k] θ^(k+1).  S = stages + 1: slot ``s`` holds f at the step's end
(the FSAL stage for FSAL methods, an extra evaluation otherwise, which is the
next step's first stage anyway), so Hermite interpolation fits the same form.

Schedule of jumps (sorted in the direction of integration, applied in order):
  kind 0 (bolus)   u[idx] += val * (p[pidx] if pidx >= 0 else 1)
  kind 1 (input)   rate[idx] += val: a piecewise-constant input added to du
  kind 2 (reset)   u[:] = 0, rates kept
  kind 3 (set)     u[idx] = val
  kind 4 (axpy)    u[idx] += val * u[pidx]   (internal: the continuous adjoints' jump conditions)
A save point at the time of a jump gets the value before it (left limit).
"""

from __future__ import annotations

import math

from numba import types

from .._jit import _COMMON, FASTMATH_FLAGS, function_caster, kernel

# --------------------------------------------------------------------------- types and codes

F8 = types.float64
F1 = types.float64[::1]
I1 = types.int64[::1]

RHS_SIG = types.void(F1, F1, F1, F8, I1, F1)
RHS_T = types.FunctionType(RHS_SIG)
EVT_SIG = F8(F1, F1, F8, I1, F1)
EVT_T = types.FunctionType(EVT_SIG)

# status
OK = 0
MAX_STEPS = 1
DT_UNDERFLOW = 2
NONFINITE = 3
STORAGE_FULL = 4
TERMINATED = 5  # success: a terminating event stopped the solve

# jump kinds
J_BOLUS = 0
J_INPUT = 1
J_RESET = 2
J_SET = 3
J_AXPY = 4  # internal (adjoint solves): u[idx] += val * u[pidx]

# float options (opt) and int options (iopt)
O_T0, O_T1, O_DT0, O_DTMIN, O_DTMAX, O_BETA1, O_BETA2, O_GAMMA, O_QMIN, O_QMAX, O_QREJ = range(11)
NOPT = 11
I_S, I_FSAL, I_ADAPTIVE, I_MAXSTEPS, I_STORE, I_HASG, I_GDIR, I_ORDER = range(8)
NIOPT = 8
# stats (int64 out)
S_STATUS, S_NACCEPT, S_NREJECT, S_NF, S_NSTORED, S_NSAVED, S_NJUMPS = range(7)
NSTATS = 7
# iopt[I_STORE]: what to record per accepted step
STORE_NONE, STORE_ALL, STORE_STATES = 0, 1, 2
# float results (fres)
R_T = 0

FMAX = 1.7976931348623157e308

#: the package's JIT options, for the wrappers compiled per model in problem.py
_OPTS = dict(_COMMON, fastmath=set(FASTMATH_FLAGS) or False)


as_rhs = function_caster(RHS_T)
as_event = function_caster(EVT_T)


# --------------------------------------------------------------------------- small helpers


@kernel(inline="always")
def _finite(x):
    return abs(x) <= FMAX


@kernel
def eval_f(f, du, u, p, t, iw, fw, rate, has_rate):
    """du <- f(u, p, t) (+ the piecewise-constant input ``rate``)."""
    f(du, u, p, t, iw, fw)
    if has_rate:
        for j in range(du.shape[0]):
            du[j] += rate[j]


@kernel(inline="always")
def _axpy(a, x, y):
    """y += a * x (skipped when a == 0: the tableau's zeros cost nothing)."""
    if a != 0.0:
        for j in range(y.shape[0]):
            y[j] += a * x[j]


@kernel(inline="always")
def _dense_weight(D, i, theta):
    """b_i(θ) = sum_k D[i, k] θ^(k+1)."""
    w = 0.0
    tp = theta
    for k in range(D.shape[1]):
        w += D[i, k] * tp
        tp *= theta
    return w


@kernel
def interp(D, K, S, u, h, theta, out):
    """out <- u + h * sum_i b_i(θ) K[i]: the dense output of a step at fraction θ."""
    for j in range(u.shape[0]):
        out[j] = u[j]
    for i in range(S):
        _axpy(h * _dense_weight(D, i, theta), K[i], out)


@kernel
def wrms(x, u, v, rtol, atol, scalar_tol):
    """sqrt(mean((x_j / (atol_j + rtol_j max(|u_j|, |v_j|)))^2)): the scaled error norm."""
    n = x.shape[0]
    acc = 0.0
    for j in range(n):
        if scalar_tol:
            sc = atol[0] + rtol[0] * max(abs(u[j]), abs(v[j]))
        else:
            sc = atol[j] + rtol[j] * max(abs(u[j]), abs(v[j]))
        r = x[j] / sc
        acc += r * r
    return math.sqrt(acc / max(n, 1))


@kernel
def apply_jump(kind, idx, val, pidx, u, p, rate):
    if kind == J_BOLUS:
        u[idx] += val * (p[pidx] if pidx >= 0 else 1.0)
    elif kind == J_INPUT:
        rate[idx] += val
    elif kind == J_RESET:
        for j in range(u.shape[0]):
            u[j] = 0.0
    elif kind == J_SET:
        u[idx] = val
    else:  # J_AXPY: u[idx] += val * u[pidx] (the adjoints' dose-scale quadrature)
        u[idx] += val * u[pidx]


@kernel
def rk_stages(f, iw, fw, A, c, s, u, p, t, h, K, ytmp, rate, has_rate):
    """Stages 1..s-1 of a step from u at t (K[0] = f(u, t) given); returns evaluations made."""
    n = u.shape[0]
    for i in range(1, s):
        for j in range(n):
            ytmp[j] = u[j]
        for m in range(i):
            _axpy(h * A[i, m], K[m], ytmp)
        eval_f(f, K[i], ytmp, p, t + c[i] * h, iw, fw, rate, has_rate)
    return s - 1


@kernel
def rk_combine(wts, s, u, h, K, out):
    """out <- u + h * sum_i wts[i] K[i]."""
    for j in range(u.shape[0]):
        out[j] = u[j]
    for i in range(s):
        _axpy(h * wts[i], K[i], out)


@kernel
def initial_step(f, iw, fw, u0, f0, p, t0, dirn, order, rtol, atol, scalar_tol, tmp, f1, rate, has_rate):
    """Hairer, Nørsett & Wanner's starting step size (Solving ODEs I, II.4); costs one evaluation."""
    n = u0.shape[0]
    d0 = 0.0
    d1 = 0.0
    for j in range(n):
        sc = (atol[0] if scalar_tol else atol[j]) + abs(u0[j]) * (rtol[0] if scalar_tol else rtol[j])
        d0 += (u0[j] / sc) ** 2
        d1 += (f0[j] / sc) ** 2
    d0 = math.sqrt(d0 / n)
    d1 = math.sqrt(d1 / n)
    if d0 < 1e-5 or d1 < 1e-5:
        h0 = 1e-6
    else:
        h0 = 0.01 * d0 / d1
    for j in range(n):
        tmp[j] = u0[j] + dirn * h0 * f0[j]
    eval_f(f, f1, tmp, p, t0 + dirn * h0, iw, fw, rate, has_rate)
    d2 = 0.0
    for j in range(n):
        sc = (atol[0] if scalar_tol else atol[j]) + abs(u0[j]) * (rtol[0] if scalar_tol else rtol[j])
        d2 += ((f1[j] - f0[j]) / sc) ** 2
    d2 = math.sqrt(d2 / n) / h0
    dm = max(d1, d2)
    if dm <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / dm) ** (1.0 / (order + 1))
    return min(100.0 * h0, h1)


@kernel
def _beyond(a, b, dirn):
    """True when time a lies strictly beyond time b in the direction of integration."""
    return (a - b) * dirn > 0.0


# --------------------------------------------------------------------------- the solver


@kernel
def rk_solve(
    fa,
    iw,
    fw,
    ga,
    A,
    b,
    c,
    e,
    D,
    opt,
    iopt,
    rtol,
    atol,
    u0,
    p,
    ts_save,
    us_save,
    tstops,
    jt,
    jkind,
    jidx,
    jval,
    jpidx,
    st_t,
    st_h,
    st_u,
    st_k,
    st_j,
    K,
    wk,
    stats,
    fres,
    uend,
):
    """Integrate from opt[O_T0] to opt[O_T1]; see the module docstring for the conventions.

    Writes the save points into ``us_save`` (nsave, n), the final state into ``uend``,
    statistics into ``stats`` and the time reached into ``fres``.  With ``iopt[I_STORE]``
    (STORE_ALL, or STORE_STATES: all but ``st_k``) it records every accepted step for the
    dense solution and the adjoints: ``st_t``/``st_h`` (start, signed size), ``st_u`` (state at the start),
    ``st_k`` (the S stage derivatives), ``st_j`` (jumps applied at the step's end: index
    one past the last jump applied there, or -1).  ``fa``/``ga``: the (c, jit) addresses of the
    right-hand side and of the event function (int64 arrays of 2).  Returns the status.
    """
    f = as_rhs(fa[0], fa[1])
    g = as_event(ga[0], ga[1])
    n = u0.shape[0]
    s = iopt[I_S]
    S = K.shape[0]
    fsal = iopt[I_FSAL] != 0
    adaptive = iopt[I_ADAPTIVE] != 0
    max_steps = iopt[I_MAXSTEPS]
    store = iopt[I_STORE] != 0
    store_k = iopt[I_STORE] == STORE_ALL
    has_g = iopt[I_HASG] != 0
    gdir = iopt[I_GDIR]
    order = iopt[I_ORDER]
    t0 = opt[O_T0]
    t1 = opt[O_T1]
    dtmin = opt[O_DTMIN]
    dtmax = opt[O_DTMAX]
    beta1 = opt[O_BETA1]
    beta2 = opt[O_BETA2]
    gamma = opt[O_GAMMA]
    qmin = opt[O_QMIN]
    qmax = opt[O_QMAX]
    scalar_tol = rtol.shape[0] == 1 and atol.shape[0] == 1
    nsave = ts_save.shape[0]
    njump = jt.shape[0]
    nstop = tstops.shape[0]
    cap = st_t.shape[0]

    u = wk[0:n]
    unew = wk[n : 2 * n]
    ytmp = wk[2 * n : 3 * n]
    errv = wk[3 * n : 4 * n]
    rate = wk[4 * n : 5 * n]
    for j in range(n):
        u[j] = u0[j]
        rate[j] = 0.0
    for i in range(NSTATS):
        stats[i] = 0
    has_rate = False
    for q in range(njump):
        if jkind[q] == J_INPUT:
            has_rate = True
    dirn = 1.0 if t1 >= t0 else -1.0
    t = t0
    nf = 0
    naccept = 0
    nreject = 0
    nstored = 0
    isave = 0
    ijump = 0
    istop = 0
    status = OK
    fres[R_T] = t0

    # save points at t0 (before any jump at t0), skip tstops at or behind t0
    while isave < nsave and not _beyond(ts_save[isave], t0, dirn):
        for j in range(n):
            us_save[isave, j] = u[j]
        isave += 1
    while istop < nstop and not _beyond(tstops[istop], t0, dirn):
        istop += 1
    while ijump < njump and not _beyond(jt[ijump], t0, dirn):
        apply_jump(jkind[ijump], jidx[ijump], jval[ijump], jpidx[ijump], u, p, rate)
        ijump += 1
    stats[S_NJUMPS] = ijump

    if t1 == t0:
        for j in range(n):
            uend[j] = u[j]
        stats[S_NSAVED] = isave
        return OK

    eval_f(f, K[0], u, p, t, iw, fw, rate, has_rate)
    nf += 1
    if has_g:
        gold = g(u, p, t, iw, fw)
    else:
        gold = 0.0
    ok_start = True
    for j in range(n):
        if not _finite(K[0][j]):
            ok_start = False
    h = opt[O_DT0]
    if h <= 0.0:
        if adaptive and ok_start:
            h = initial_step(f, iw, fw, u, K[0], p, t, dirn, order, rtol, atol, scalar_tol, ytmp, errv, rate, has_rate)
            nf += 1
            if not (h > 0.0 and h <= FMAX):  # a NaN or Inf at the trial point: start small, let rejection work
                h = 1e-6 * abs(t1 - t0)
        else:
            h = abs(t1 - t0)
    h = min(h, dtmax) if dtmax > 0.0 else h
    h = dirn * h
    errold = 1e-4
    last_rejected = False
    eps = 2.220446049250313e-16
    troot = t0
    th = 1.0

    # the smallest meaningful step: a few ulps of the times involved (never zero, even at t = 0)
    hfloor = 4.0 * eps * max(abs(t0), abs(t1), abs(t1 - t0))
    while True:
        if not ok_start:  # f(u0) is not finite: no step can succeed
            status = NONFINITE
            break
        # the next barrier: the end, a jump time or a stop time
        tb = t1
        bkind = 0  # 0 end, 1 jump, 2 stop
        if ijump < njump and not _beyond(jt[ijump], tb, dirn):
            tb = jt[ijump]
            bkind = 1
        if istop < nstop and _beyond(tb, tstops[istop], dirn):
            tb = tstops[istop]
            bkind = 2
        remaining = tb - t
        if dtmax > 0.0 and abs(h) > dtmax:
            h = dirn * dtmax
        hprop = h
        land = False
        if abs(h) >= abs(remaining) or abs(remaining - h) <= 100.0 * eps * max(abs(t), abs(tb)):
            h = remaining
            land = True
        if (not land) and not (abs(h) >= max(dtmin, hfloor)):  # (NaN-safe)
            status = DT_UNDERFLOW
            break

        nf += rk_stages(f, iw, fw, A, c, s, u, p, t, h, K, ytmp, rate, has_rate)
        rk_combine(b, s, u, h, K, unew)
        ok_values = True
        for j in range(n):
            if not _finite(unew[j]):
                ok_values = False
        accept = True
        q11 = 1.0
        err = 0.0
        if adaptive:
            if ok_values:
                for j in range(n):
                    errv[j] = 0.0
                for i in range(s):
                    _axpy(h * e[i], K[i], errv)
                err = wrms(errv, u, unew, rtol, atol, scalar_tol)
                if not _finite(err):
                    ok_values = False
            if not ok_values:
                accept = False
            else:
                q11 = err**beta1
                accept = err <= 1.0
            if not accept:
                nreject += 1
                if ok_values:
                    h = h / min(1.0 / qmin, q11 / gamma)
                else:
                    h = h * 0.25
                last_rejected = True
                if not (abs(h) >= max(dtmin, hfloor)):  # (NaN-safe)
                    status = NONFINITE if not ok_values else DT_UNDERFLOW
                    break
                if naccept + nreject >= max_steps:
                    status = MAX_STEPS
                    break
                continue
        elif not ok_values:
            status = NONFINITE
            break

        # ---- accepted
        tnew = tb if land else t + h
        if fsal:
            pass  # K[s - 1] = f(unew, t + h) already, copied to slot s below
        else:
            eval_f(f, K[s], unew, p, tnew, iw, fw, rate, has_rate)
            nf += 1
        if fsal:
            Ks1 = K[s - 1]
            Ks = K[s]
            for j in range(n):
                Ks[j] = Ks1[j]

        # terminating event: a sign change of g over the step, located on the dense output
        stop_here = False
        if has_g:
            gnew = g(unew, p, tnew, iw, fw)
            crossed = (gold < 0.0 and gnew >= 0.0) or (gold > 0.0 and gnew <= 0.0)
            if crossed and gdir != 0:
                crossed = (gdir > 0 and gnew >= gold) or (gdir < 0 and gnew <= gold)
            if crossed:
                # Illinois (modified regula falsi) on θ in [0, 1]
                lo = 0.0
                hi = 1.0
                glo = gold
                ghi = gnew
                side = 0
                th = 1.0
                for _ in range(100):
                    th = (lo * ghi - hi * glo) / (ghi - glo) if ghi != glo else 0.5 * (lo + hi)
                    if not (th > lo and th < hi):
                        th = 0.5 * (lo + hi)
                    interp(D, K, S, u, h, th, ytmp)
                    gm = g(ytmp, p, t + th * h, iw, fw)
                    if gm == 0.0 or (hi - lo) * abs(h) <= 4.0 * eps * max(abs(t), abs(tnew)):
                        break
                    if (gm < 0.0) == (glo < 0.0):
                        lo = th
                        glo = gm
                        if side == 1:
                            ghi *= 0.5
                        side = 1
                    else:
                        hi = th
                        ghi = gm
                        if side == -1:
                            glo *= 0.5
                        side = -1
                troot = t + th * h
                stop_here = True

        tend = troot if stop_here else tnew
        # save points in (t, tend]
        while isave < nsave and not _beyond(ts_save[isave], tend, dirn):
            ts = ts_save[isave]
            if ts == tnew:
                for j in range(n):
                    us_save[isave, j] = unew[j]
            else:
                interp(D, K, S, u, h, (ts - t) / h, ytmp)
                for j in range(n):
                    us_save[isave, j] = ytmp[j]
            isave += 1
        if store:
            if nstored >= cap:
                status = STORAGE_FULL
                break
            st_t[nstored] = t
            st_h[nstored] = h
            st_j[nstored] = -1
            for j in range(n):
                st_u[nstored, j] = u[j]
            if store_k:
                for i in range(S):
                    Ki = K[i]
                    for j in range(n):
                        st_k[nstored, i, j] = Ki[j]
            nstored += 1
        naccept += 1
        if stop_here:
            interp(D, K, S, u, h, th, unew)
            for j in range(n):
                u[j] = unew[j]
            t = troot
            status = TERMINATED
            break

        # controller: next step size (PI, Söderlind's form as in OrdinaryDiffEq)
        if adaptive:
            q = q11 / (errold**beta2)
            q = max(1.0 / qmax, min(1.0 / qmin, q / gamma))
            if last_rejected:
                q = max(q, 1.0)  # no increase right after a rejection
            hnext = h / q
            errold = max(err, 1e-4)
        else:
            hnext = h
        last_rejected = False
        t = tnew
        for j in range(n):
            u[j] = unew[j]
        Ks = K[s]
        K0 = K[0]
        for j in range(n):
            K0[j] = Ks[j]
        if has_g:
            gold = g(u, p, t, iw, fw)

        if land:
            if bkind == 0:
                break
            restart = False
            while ijump < njump and jt[ijump] == t:
                apply_jump(jkind[ijump], jidx[ijump], jval[ijump], jpidx[ijump], u, p, rate)
                ijump += 1
                restart = True
            if t == t1:  # jumps at the end time: applied, and nothing left to integrate
                if restart and store:
                    st_j[nstored - 1] = ijump
                break
            while istop < nstop and not _beyond(tstops[istop], t, dirn):
                istop += 1
            if restart:
                if store:
                    st_j[nstored - 1] = ijump
                eval_f(f, K[0], u, p, t, iw, fw, rate, has_rate)
                nf += 1
                if has_g:
                    gold = g(u, p, t, iw, fw)
            # a step clipped to land on a barrier does not shrink the next one
            if abs(hnext) < abs(hprop):
                hnext = hprop
        h = hnext
        if naccept + nreject >= max_steps:
            status = MAX_STEPS
            break

    for j in range(n):
        uend[j] = u[j]
    stats[S_STATUS] = status
    stats[S_NACCEPT] = naccept
    stats[S_NREJECT] = nreject
    stats[S_NF] = nf
    stats[S_NSTORED] = nstored
    stats[S_NSAVED] = isave
    stats[S_NJUMPS] = ijump
    fres[R_T] = t
    return status


@kernel
def dense_eval(D, st_t, st_h, st_u, st_k, nstored, tq, out):
    """out[q] <- the dense solution at tq[q] (left limit at jump times); returns 0 or 1 (out of range)."""
    S = st_k.shape[1]
    if nstored == 0:
        return 1
    dirn = 1.0 if st_h[0] >= 0 else -1.0
    tstart = st_t[0]
    tlast = st_t[nstored - 1] + st_h[nstored - 1]
    for q in range(tq.shape[0]):
        x = tq[q]
        if (x - tstart) * dirn < 0.0 or (x - tlast) * dirn > 0.0:
            return 1
        # the first step whose end is at or beyond x
        lo = 0
        hi = nstored - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if (st_t[mid] + st_h[mid] - x) * dirn >= 0.0:
                hi = mid
            else:
                lo = mid + 1
        k = lo
        th = (x - st_t[k]) / st_h[k]
        interp(D, st_k[k], S, st_u[k], st_h[k], th, out[q])
    return 0
