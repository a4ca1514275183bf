"""Population UDE on Theophylline: one gradient of the population objective, and a fit,
smallchains against diffrax + equinox + optax (jitted, vmapped over subjects) in one run.

The model is the demo's (``sc.pk.demo.theophylline_ude``): one compartment, first-order
absorption, elimination CL·C·exp(NN(C/10)) with NN = Dense(1->8, tanh), Dense(8->8, tanh),
Dense(8->1) (97 weights); random effects on ka and CL; additive error.  The objective is the
joint MAP one (every subject's eta with its Gaussian prior, the weights' L2 prior):

    sum_i [ sum_j (y_ij - f_ij)^2 / s^2 + log s^2 + eta_i' Omega^-1 eta_i ] + N log|Omega| + |w|^2

and its gradient with respect to the fixed effects, the weights, the residual sd, Omega and
every eta_i (127 numbers).  Both sides start from the same values (the weights: the demo's
initialisation plus a seeded perturbation, so the network is not zero) and use Tsit5 with the
same tolerances; the objective values are printed side by side to show they compute the same
thing.  Times are medians of several rounds.

Fits: (a) the same loop on both sides, Adam (lr 0.01) for a fixed number of steps on this
objective (Omega fixed), from the same start; (b) smallchains' own ``sc.pk.fit(..., "map")``
(Adam then L-BFGS, Omega by EM), the full Theophylline UDE fit, wall time (target < 30 s).

    python benchmarks/pk.py [--no-peers] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import smallchains as sc
from smallchains.pk.estimation import Problem

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import median_per_call  # noqa: E402

RTOL, ATOL = 1e-6, 1e-8


def setup():
    data = sc.pkdata.theophylline()
    model = sc.pk.demo.theophylline_ude()
    x = model.x0.copy()
    rng = np.random.default_rng(0)
    w = model.blocks["w"]
    x[w] += rng.normal(0.0, 0.1, w.stop - w.start)
    etas = rng.normal(0.0, 0.2, (len(data), model.n_eta))
    return data, model, x, etas


def ours(data, model, x, etas, threads, solver, rtol, atol, calls, rounds, controller=None):
    P = Problem(model, data, solver=solver, rtol=rtol, atol=atol, threads=threads, controller=controller)
    from smallchains.pk.fit import _blas_single_threaded

    with _blas_single_threaded(threads > 1):
        v, gx, ge = P.map_objective(x, etas, 1)
        ms = median_per_call(lambda: P.map_objective(x, etas, 1), calls, rounds, scale=1e3)
    steps = int(np.mean([s.gf.stats["naccept"] for s in P.subjects]))
    P.close()
    return v, np.concatenate([gx, ge.ravel()]), ms, steps


def adam_loop_ours(data, model, x, etas, steps, lr, threads):
    P = Problem(model, data, solver=sc.Tsit5(), rtol=RTOL, atol=ATOL, threads=threads)
    from smallchains.pk.fit import _blas_single_threaded

    nx = model.n_x
    z = np.concatenate([x, etas.ravel()])
    opt = sc.Adam(lr)
    t0 = time.perf_counter()
    with _blas_single_threaded(threads > 1):
        for _ in range(steps):
            v, gx, ge = P.map_objective(z[:nx], z[nx:].reshape(etas.shape), 1)
            g = np.concatenate([gx, ge.ravel()])
            g[model.blocks["omega"]] = 0.0  # Omega fixed, as on the peer's side
            opt.update(z, g)
        v = P.map_objective(z[:nx], z[nx:].reshape(etas.shape), 0)
    P.close()
    return time.perf_counter() - t0, v


def peer(data, model, x, etas, steps, lr, calls, rounds):
    import jax

    jax.config.update("jax_enable_x64", True)
    import diffrax
    import equinox as eqx
    import jax.numpy as jnp
    import optax

    chain = model.structural.ode.chain
    shapes = [tuple(a.shape for a in layer) for layer in chain.param_views(np.zeros(chain.num_params)).values()]
    n_obs = [s.n_obs for s in data]
    assert len(set(n_obs)) == 1, "the vmapped peer needs equal observation counts"
    T = jnp.asarray(np.stack([s.obs_time for s in data]))
    Y = jnp.asarray(np.stack([s.dv for s in data]))
    D = jnp.asarray(np.array([s.doses[0].amount for s in data]))
    T1 = jnp.asarray(np.array([s.obs_time.max() for s in data]))
    b = model.blocks
    N = len(data)

    def nn(w, c):
        h = jnp.array([c / 10.0])
        o = 0
        for k, (ws, bs) in enumerate(shapes):
            W = w[o : o + ws[0] * ws[1]].reshape(ws)
            o += ws[0] * ws[1]
            bb = w[o : o + bs[0]]
            o += bs[0]
            h = W @ h + bb
            if k < len(shapes) - 1:
                h = jnp.tanh(h)
        return h[0]

    def rhs(t, u, args):
        ka, cl, v, w = args
        c = u[1] / v
        return jnp.stack([-ka * u[0], ka * u[0] - cl * c * jnp.exp(nn(w, c))])

    term = diffrax.ODETerm(rhs)

    def subject(lth, w, eta, d, ts, t1):
        ka = jnp.exp(lth[0] + eta[0])
        cl = jnp.exp(lth[1] + eta[1])
        v = jnp.exp(lth[2])
        sol = diffrax.diffeqsolve(
            term,
            diffrax.Tsit5(),
            0.0,
            t1,
            None,
            jnp.array([d, 0.0]),
            args=(ka, cl, v, w),
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL),
            max_steps=10000,
        )
        return sol.ys[:, 1] / v, sol.stats["num_accepted_steps"]

    def objective(z):
        xx, et = z[: model.n_x], z[model.n_x :].reshape(N, model.n_eta)
        lth, w = xx[b["theta"]], xx[b["w"]]
        s2 = jnp.exp(2.0 * xx[b["psi"]][0])
        om = jnp.exp(2.0 * xx[b["omega"]])
        f, _ = jax.vmap(subject, in_axes=(None, None, 0, 0, 0, 0))(lth, w, et, D, T, T1)
        data_term = jnp.sum((Y - f) ** 2 / s2 + jnp.log(s2))
        prior = jnp.sum(et**2 / om) + N * jnp.sum(jnp.log(om))
        return data_term + prior + jnp.sum(w**2) / model.weight_prior**2

    vg = eqx.filter_jit(jax.value_and_grad(objective))
    z0 = jnp.asarray(np.concatenate([x, etas.ravel()]))
    t0 = time.perf_counter()
    v, g = vg(z0)
    jax.block_until_ready(g)
    compile_s = time.perf_counter() - t0
    ms = median_per_call(lambda: jax.block_until_ready(vg(z0)), calls, rounds, scale=1e3)
    lth, w = z0[b["theta"]], z0[b["w"]]
    _, nsteps = jax.vmap(subject, in_axes=(None, None, 0, 0, 0, 0))(lth, w, z0[model.n_x :].reshape(N, 2), D, T, T1)
    # the Adam loop, jitted step
    opt = optax.adam(lr)
    mask = np.ones(z0.shape[0])
    mask[b["omega"]] = 0.0
    mask = jnp.asarray(mask)

    @eqx.filter_jit
    def step(z, state):
        val, g = jax.value_and_grad(objective)(z)
        upd, state = opt.update(g * mask, state, z)
        return optax.apply_updates(z, upd), state, val

    z, state = z0, opt.init(z0)
    t0 = time.perf_counter()
    z, state, _ = step(z, state)
    jax.block_until_ready(z)
    step_compile = time.perf_counter() - t0
    z, state = z0, opt.init(z0)
    t0 = time.perf_counter()
    for _ in range(steps):
        z, state, _ = step(z, state)
    jax.block_until_ready(z)
    loop_s = time.perf_counter() - t0
    return (
        float(v),
        np.asarray(g),
        ms,
        compile_s,
        int(np.mean(np.asarray(nsteps))),
        loop_s,
        step_compile,
        float(objective(z)),
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    calls, rounds = (5, 3) if a.quick else (20, 7)
    adam_steps = 100 if a.quick else 500
    data, model, x, etas = setup()
    print(
        f"Theophylline ({len(data)} subjects, {data.n_obs} observations), UDE with {model.n_weights} network "
        f"weights; MAP objective gradient over {model.n_x + etas.size} numbers; Tsit5, rtol {RTOL}, atol {ATOL}"
    )
    # the reference: Vern7 at rtol 1e-13 (its distance to each row's objective is that row's error)
    vref, _, _, _ = ours(data, model, x, etas, 1, sc.Vern7(), 1e-13, 1e-15, 1, 1)
    print(f"reference    Vern7, rtol 1e-13: objective {vref:.8f}")
    rows = {}
    for label, ctrl in (
        ("PI controller (our default)", None),
        ("I controller (as diffrax)", sc.PIController(beta1=0.2, beta2=0.0)),
    ):
        for threads in (1, 2):
            v, g, ms, steps = ours(
                data, model, x, etas, threads, sc.Tsit5(), RTOL, ATOL, calls, rounds, controller=ctrl
            )
            rows[label, threads] = ms
            print(
                f"smallchains  Tsit5, {label}, {threads} thread(s) {ms:8.3f} ms   objective {v:.8f} "
                f"(error {abs(v - vref):.1e})   {steps} steps/subject"
            )
        if ctrl is not None:
            g_equal = g  # compared with the peer's gradient below (same controller)
    g = g_equal
    pi_best = min(rows["PI controller (our default)", t] for t in (1, 2))
    i_best = min(rows["I controller (as diffrax)", t] for t in (1, 2))
    t_ours, v_ours = adam_loop_ours(data, model, x, etas, adam_steps, 0.01, 2)
    print(
        f"smallchains  Adam x {adam_steps} (lr 0.01, Omega fixed)        {t_ours:8.2f} s    final objective "
        f"{v_ours:.6f}"
    )
    if not a.no_peers:
        try:
            pv, pg, pms, comp, psteps, loop_s, step_comp, pfin = peer(
                data, model, x, etas, adam_steps, 0.01, calls, rounds
            )
        except ImportError as e:
            print(f"(peers not installed: {e}; pip install -e '.[bench]')")
        else:
            rel = np.max(np.abs(pg - g)) / np.max(np.abs(pg))
            print(
                f"diffrax      Tsit5 + RecursiveCheckpointAdjoint, vmap, jit {pms:8.3f} ms   objective {pv:.8f} "
                f"(error {abs(pv - vref):.1e})   {psteps} steps/subject, compile {comp:.2f} s, max |grad diff| / "
                f"max |grad| {rel:.1e} (vs ours, I controller)"
            )
            print(
                f"diffrax      Adam x {adam_steps} (optax, jitted step)          {loop_s:8.2f} s    final objective "
                f"{pfin:.6f}   (+ compile {step_comp:.2f} s)"
            )
            print(f"ratio per gradient, same controller (I): diffrax / smallchains = {pms / i_best:.1f}x")
            print(
                f"ratio per gradient, our default controller (PI, more accurate): diffrax / smallchains = "
                f"{pms / pi_best:.1f}x"
            )
            print(f"ratio Adam loop: diffrax / smallchains = {loop_s / t_ours:.1f}x")
    t0 = time.perf_counter()
    r = sc.pk.fit(
        sc.pk.demo.theophylline_ude(), data, "map", optimizer="adam+lbfgs", adam_steps=300, adam_lr=0.02, se=False
    )
    t_fit = time.perf_counter() - t0
    print(
        f"smallchains  full UDE fit (sc.pk.fit, MAP: Adam 300 + L-BFGS, Omega by EM)  {t_fit:.1f} s  "
        f"({r.n_evaluations} gradient evaluations, OFV {r.ofv:.2f}; target < 30 s)"
    )


if __name__ == "__main__":
    main()
