"""Your own solver on the package's compiled derivatives: a UDE, explicit Euler, its discrete adjoint.

The model is a one-compartment pharmacokinetic system with an unknown elimination
term learned by a network (a universal differential equation)::

    depot'   = -ka * depot
    central' =  ka * depot - NN(central)            NN: 1 -> 8 tanh -> 1

built with ``sc.UDE``.  ``ude.compile()`` makes its compiled kernels available to your own
``@njit`` code with fixed signatures:

    rhs(du, u, p, t, iw, fw)            du <- f(u, p, t)
    vjp(lu, lp, v, u, p, t, iw, fw)     lu <- v^T df/du,  lp += v^T df/dp

(the mechanistic part differentiated by complex step, the network by its compiled pullback).
The hand-written solver below is explicit Euler with a dose at t = 0 and its exact discrete
adjoint; the result equals ``sc.gradient_function(..., solver=sc.Euler(), dt=h,
sensitivity=sc.DiscreteAdjoint())`` to rounding (``tests/test_ode_sensitivity.py`` checks it).

    python examples/own_solver_ude.py
"""

from __future__ import annotations

import numba
import numpy as np

import smallchains as sc


@numba.njit
def pk(du, u, pm, t, y):
    du[0] = -pm[0] * u[0]
    du[1] = pm[0] * u[0] - y[0]


@numba.njit
def central(x, u, pm, t):
    x[0] = u[1]


def build():
    ude = sc.UDE(
        pk, sc.SimpleChain(1, sc.Dense(8, sc.tanh), sc.Dense(1)), n_states=2, params=["ka"], features=central
    ).compile()
    return ude, ude.init_params(seed=0, ka=1.2)


def make_solver(ude):
    rhs, vjp = ude.rhs, ude.vjp  # compiled kernels: callable from @njit code as globals or closures

    @numba.njit
    def euler_loss_and_grad(p, u0, h, nsteps, save_every, data, iw, fw, U, du, lam, lu, gp):
        """Euler steps u_{k+1} = u_k + h f(u_k); loss sum_i ||u(t_i) - data_i||^2 every save_every steps."""
        n = u0.shape[0]
        for j in range(n):
            U[0, j] = u0[j]
        for k in range(nsteps):
            rhs(du, U[k], p, k * h, iw, fw)
            for j in range(n):
                U[k + 1, j] = U[k, j] + h * du[j]
        loss = 0.0
        for i in range(data.shape[0]):
            for j in range(n):
                r = U[(i + 1) * save_every, j] - data[i, j]
                loss += r * r
        # reverse pass: lam = dL/du_k
        for j in range(n):
            lam[j] = 0.0
        for k in range(gp.shape[0]):
            gp[k] = 0.0
        for k in range(nsteps, 0, -1):
            if k % save_every == 0:
                i = k // save_every - 1
                for j in range(n):
                    lam[j] += 2.0 * (U[k, j] - data[i, j])
            for j in range(n):
                du[j] = h * lam[j]  # the cotangent of f(u_{k-1})
            vjp(lu, gp, du, U[k - 1], p, (k - 1) * h, iw, fw)
            for j in range(n):
                lam[j] += lu[j]
        return loss

    return euler_loss_and_grad


def main():
    ude, p = build()
    h, nsteps, save_every = 0.01, 1000, 100
    dose = 100.0
    u0 = np.array([dose, 0.0])  # the dose at t = 0, as the initial depot amount
    ts = np.arange(1, 11) * save_every * h
    data = np.random.default_rng(0).uniform(10, 40, (10, 2))
    solver = make_solver(ude)
    n, m = 2, ude.n_params
    U = np.empty((nsteps + 1, n))
    du, lam, lu, gp = np.empty(n), np.empty(n), np.empty(n), np.empty(m)
    loss = solver(p, u0, h, nsteps, save_every, data, ude.iw, ude.workspace(n, m), U, du, lam, lu, gp)
    ref, ref_gp, _ = sc.value_and_grad(
        data, ude, u0, (0.0, nsteps * h), p, saveat=ts, solver=sc.Euler(), dt=h, sensitivity=sc.DiscreteAdjoint()
    )
    print(f"hand-written Euler: loss {loss:.6f}; sc.value_and_grad: {ref:.6f}")
    print(
        f"gradient: max relative difference {np.abs(gp - ref_gp).max() / np.abs(ref_gp).max():.1e} "
        f"over {m} parameters (dL/dka = {gp[0]:.6f})"
    )
    return loss, gp, ref, ref_gp


if __name__ == "__main__":
    main()
