"""A neural ODE solved with hand-written RK4 and its exact discrete adjoint, in ``@njit`` code.

The model is ``du/dt = NN(u; p)`` with a 2 -> 16 tanh -> 2 chain in float64.  The solver
is fixed-step classical Runge-Kutta (RK4); the loss is

    L(p, u0) = sum_i || u(t_i) - data_i ||^2

over the saved times ``t_i``.  The gradient is the *discrete adjoint*: the reverse pass
through the RK4 stages, so it is the exact gradient of the computed solution (up to
rounding), not an approximation of the continuous adjoint.

Every network evaluation goes through ``smallchains.kernels`` with the chain's
``program`` and one workspace of ``chain.work_size(1)`` elements allocated once:

* ``forward_into(prog, y, x, p, work)``                 y <- NN(x)
* ``vjp_accumulate(prog, gp, p, v, x, gx, work)``      gp += v^T dNN/dp,  gx <- v^T dNN/dx

All buffers are allocated in Python by :func:`make_buffers`; the compiled functions
allocate nothing (``tests/test_rk4_example.py`` checks it with Numba's NRT counters).

    python examples/rk4_adjoint.py
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.linalg

import smallchains as sc
from smallchains import kernels as K

# The solver below is compiled without ``cache=True`` on purpose: Numba keys a function's
# disk cache on its own source file only, so a cached copy of this file would keep stale
# machine code of the smallchains kernels it inlines if those were edited later.

# --------------------------------------------------------------------------- forward solve


@numba.njit
def rk4_solve(prog, p, u0, h, U, stages, k, work):
    """Integrate du/dt = NN(u) with ``U.shape[0] - 1`` RK4 steps of size ``h``.

    Writes ``U[n]`` (the state after n steps, ``U[0] = u0``) and ``stages[n, s]`` (the
    input of stage ``s`` of step ``n``, kept for the reverse pass).  ``k`` (4, d) holds
    the stage derivatives; ``work`` is the chain's workspace.  Returns the kernels'
    status: 0, or 1 when a stage input is not finite (then the buffers are unspecified).
    """
    d = u0.shape[0]
    nsteps = U.shape[0] - 1
    for j in range(d):
        U[0, j] = u0[j]
    for n in range(nsteps):
        u = U[n]
        x = stages[n]
        # stage s evaluates NN at x[s] = u + c_s h k[s-1]   (c = 0, 1/2, 1/2, 1)
        for j in range(d):
            x[0, j] = u[j]
        if K.forward_into(prog, k[0], x[0], p, work) != 0:
            return 1
        for j in range(d):
            x[1, j] = u[j] + 0.5 * h * k[0, j]
        if K.forward_into(prog, k[1], x[1], p, work) != 0:
            return 1
        for j in range(d):
            x[2, j] = u[j] + 0.5 * h * k[1, j]
        if K.forward_into(prog, k[2], x[2], p, work) != 0:
            return 1
        for j in range(d):
            x[3, j] = u[j] + h * k[2, j]
        if K.forward_into(prog, k[3], x[3], p, work) != 0:
            return 1
        for j in range(d):
            U[n + 1, j] = u[j] + h / 6.0 * (k[0, j] + 2.0 * k[1, j] + 2.0 * k[2, j] + k[3, j])
    return 0


@numba.njit
def trajectory_loss(U, data, save_every):
    """sum_i ||U[(i+1)*save_every] - data[i]||^2."""
    total = 0.0
    for i in range(data.shape[0]):
        n = (i + 1) * save_every
        for j in range(data.shape[1]):
            r = U[n, j] - data[i, j]
            total += r * r
    return total


# --------------------------------------------------------------------------- reverse pass


@numba.njit
def rk4_adjoint(prog, p, h, U, stages, data, save_every, gp, gu0, lam, kbar, xbar, work):
    """Gradient of :func:`trajectory_loss` through the RK4 steps recorded by :func:`rk4_solve`.

    Overwrites ``gp`` (dL/dp, length num_params) and ``gu0`` (dL/du0).  ``lam``, ``kbar``,
    ``xbar`` (d,) are scratch.  Returns the kernels' status (0 on success).

    One step u' = u + h/6 (k1 + 2 k2 + 2 k3 + k4), k_s = NN(x_s), pulled back with the
    cotangent lam = dL/du':

        kbar4 = h/6 lam,             xbar4 = kbar4^T dNN/dx at x4
        kbar3 = h/3 lam + h xbar4,   xbar3 = ...        at x3
        kbar2 = h/3 lam + h/2 xbar3, xbar2 = ...        at x2
        kbar1 = h/6 lam + h/2 xbar2, xbar1 = ...        at x1
        dL/du = lam + xbar1 + xbar2 + xbar3 + xbar4,    gp += sum_s kbar_s^T dNN/dp at x_s
    """
    d = gu0.shape[0]
    nsteps = U.shape[0] - 1
    nsave = data.shape[0]
    gp[:] = 0.0
    for j in range(d):
        lam[j] = 0.0
    for n in range(nsteps, 0, -1):
        # the loss term at this step, if it is a save point
        if n % save_every == 0 and n // save_every <= nsave:
            i = n // save_every - 1
            for j in range(d):
                lam[j] += 2.0 * (U[n, j] - data[i, j])
        x = stages[n - 1]
        # Stage 4.  gu0 is scratch until the end: it gathers dL/du of this step.
        for j in range(d):
            kbar[j] = h / 6.0 * lam[j]
        if K.vjp_accumulate(prog, gp, p, kbar, x[3], xbar, work) != 0:
            return 1
        for j in range(d):
            gu0[j] = lam[j] + xbar[j]
            kbar[j] = h / 3.0 * lam[j] + h * xbar[j]
        # Stage 3
        if K.vjp_accumulate(prog, gp, p, kbar, x[2], xbar, work) != 0:
            return 1
        for j in range(d):
            gu0[j] += xbar[j]
            kbar[j] = h / 3.0 * lam[j] + 0.5 * h * xbar[j]
        # Stage 2
        if K.vjp_accumulate(prog, gp, p, kbar, x[1], xbar, work) != 0:
            return 1
        for j in range(d):
            gu0[j] += xbar[j]
            kbar[j] = h / 6.0 * lam[j] + 0.5 * h * xbar[j]
        # Stage 1
        if K.vjp_accumulate(prog, gp, p, kbar, x[0], xbar, work) != 0:
            return 1
        for j in range(d):
            lam[j] = gu0[j] + xbar[j]
    for j in range(d):
        gu0[j] = lam[j]
    return 0


@numba.njit
def loss_and_grad(prog, p, u0, h, data, save_every, gp, gu0, U, stages, k, lam, kbar, xbar, work):
    """Solve, then pull back: returns (loss, status); ``gp``, ``gu0`` overwritten with the gradient."""
    st = rk4_solve(prog, p, u0, h, U, stages, k, work)
    if st != 0:
        return np.nan, st
    loss = trajectory_loss(U, data, save_every)
    st = rk4_adjoint(prog, p, h, U, stages, data, save_every, gp, gu0, lam, kbar, xbar, work)
    return loss, st


@numba.njit
def loss_only(prog, p, u0, h, data, save_every, U, stages, k, work):
    """The loss alone (for finite differences); NaN when a kernel reports a non-finite input."""
    if rk4_solve(prog, p, u0, h, U, stages, k, work) != 0:
        return np.nan
    return trajectory_loss(U, data, save_every)


# --------------------------------------------------------------------------- problem set-up (Python)

#: The known linear ODE du/dt = A u that generates the data (a damped rotation).
A_TRUE = np.array([[-0.1, 2.0], [-2.0, -0.1]])
U0_TRUE = np.array([2.0, 0.0])


def make_problem(t_end=1.5, nsteps=150, nsave=15, seed=0):
    """The chain, its float64 parameters, u0, the step size and the data ``u(t_i)``, i = 1..nsave."""
    if nsteps % nsave:
        raise ValueError("nsteps must be a multiple of nsave")
    chain = sc.SimpleChain(2, sc.Dense(16, sc.tanh), sc.Dense(2))
    p = chain.init_params(seed=seed, dtype=np.float64)
    h = t_end / nsteps
    save_every = nsteps // nsave
    t = h * save_every * np.arange(1, nsave + 1)
    data = np.stack([scipy.linalg.expm(A_TRUE * ti) @ U0_TRUE for ti in t])
    return dict(chain=chain, p=p, u0=U0_TRUE.copy(), h=h, nsteps=nsteps, save_every=save_every, data=data)


def make_buffers(chain, nsteps):
    """Every buffer the compiled functions use, allocated once."""
    d = chain.input_dim
    return dict(
        gp=np.zeros(chain.num_params),
        gu0=np.zeros(d),
        U=np.zeros((nsteps + 1, d)),
        stages=np.zeros((nsteps, 4, d)),
        k=np.zeros((4, d)),
        lam=np.zeros(d),
        kbar=np.zeros(d),
        xbar=np.zeros(d),
        work=np.zeros(chain.work_size(1)),
    )


def value_and_gradient(prob, buf, p=None, u0=None):
    """(loss, dL/dp, dL/du0) with the discrete adjoint; the gradients are copies."""
    p = prob["p"] if p is None else p
    u0 = prob["u0"] if u0 is None else u0
    b = buf
    loss, st = loss_and_grad(
        prob["chain"].program,
        p,
        u0,
        prob["h"],
        prob["data"],
        prob["save_every"],
        b["gp"],
        b["gu0"],
        b["U"],
        b["stages"],
        b["k"],
        b["lam"],
        b["kbar"],
        b["xbar"],
        b["work"],
    )
    if st != 0:
        raise FloatingPointError("the solution left the finite range (a kernel returned status 1)")
    return loss, b["gp"].copy(), b["gu0"].copy()


def finite_difference_gradient(prob, buf, eps=1e-6):
    """Central differences of the loss with respect to (p, u0), concatenated."""
    b = buf
    args = (prob["h"], prob["data"], prob["save_every"], b["U"], b["stages"], b["k"], b["work"])
    prog = prob["chain"].program
    theta = np.concatenate([prob["p"], prob["u0"]])
    npar = prob["p"].shape[0]
    g = np.empty_like(theta)
    for i in range(theta.shape[0]):
        tp, tm = theta.copy(), theta.copy()
        tp[i] += eps
        tm[i] -= eps
        fp = loss_only(prog, tp[:npar], tp[npar:], *args)
        fm = loss_only(prog, tm[:npar], tm[npar:], *args)
        g[i] = (fp - fm) / (2 * eps)
    return g


def main():
    prob = make_problem()
    chain = prob["chain"]
    buf = make_buffers(chain, prob["nsteps"])
    print(
        f"{chain}: {chain.num_params} parameters, {prob['nsteps']} RK4 steps of h = {prob['h']:.3g}, "
        f"{prob['data'].shape[0]} saved states"
    )
    loss, gp, gu0 = value_and_gradient(prob, buf)
    adj = np.concatenate([gp, gu0])
    fd = finite_difference_gradient(prob, buf)
    rel = np.linalg.norm(adj - fd) / np.linalg.norm(fd)
    print(f"loss = {loss:.6f}")
    print(f"dL/du0 (adjoint)  = {gu0}")
    print(f"dL/du0 (central finite differences) = {fd[-2:]}")
    print(f"relative error of the whole gradient (parameters and u0): {rel:.2e}")
    return rel


if __name__ == "__main__":
    main()
