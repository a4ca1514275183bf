"""The spiral neural ODE: one loss + gradient, smallchains against diffrax and torchdiffeq in one run.

DiffEqFlux's definition: data from du/dt = (u^3)^T A, A = [[-0.1, 2], [-2, -0.1]] (row
vectors), u0 = [2, 0], t in [0, 1.5], 30 save points; model du/dt = NN(u^3) with
NN = Dense(2 -> 50, tanh) then Dense(50 -> 2); loss = sum_i ||u(t_i) - data_i||^2;
rtol = atol = 1e-6; float64.  Every framework starts from the same weights (the
smallchains initialisation, copied), so the step counts are comparable.

  smallchains   Tsit5, sc.DiscreteAdjoint (the default) and sc.BacksolveAdjoint when present
  diffrax       Tsit5 + PIDController, RecursiveCheckpointAdjoint and BacksolveAdjoint, jitted
  torchdiffeq   dopri5 (it has no Tsit5), odeint_adjoint and odeint with backpropagation

Times are medians of several rounds.  Also measured: the compile time of a new
right-hand side (a fresh process, the package's kernels cached on disk, the model's
functions new), against diffrax's first-call (trace + XLA compile) time.

    python benchmarks/neural_ode.py [--no-peers] [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
import time

import numba
import numpy as np
import scipy.optimize  # noqa: F401 - imported outside the training clock

import smallchains as sc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import machine, median_per_call  # noqa: E402

A_TRUE = np.array([[-0.1, 2.0], [-2.0, -0.1]])
U0 = np.array([2.0, 0.0])
TSPAN = (0.0, 1.5)
TS = np.linspace(0.0, 1.5, 30)
TOL = 1e-6


@numba.njit
def _truth(du, u, p, t):
    # (u^3)^T A with row vectors: du_j = sum_i u_i^3 A[i, j]
    du[0] = u[0] ** 3 * -0.1 + u[1] ** 3 * -2.0
    du[1] = u[0] ** 3 * 2.0 + u[1] ** 3 * -0.1


@numba.njit
def cube(x, u, pm, t):
    for j in range(2):
        x[j] = u[j] ** 3


@numba.njit
def network_only(du, u, pm, t, y):
    du[0] = y[0]
    du[1] = y[1]


def spiral_data():
    return sc.solve(_truth, U0, TSPAN, saveat=TS, solver=sc.Vern7(), rtol=1e-12, atol=1e-12).u


def spiral_model(seed=0):
    chain = sc.SimpleChain(2, sc.Dense(50, sc.tanh), sc.Dense(2))
    ude = sc.UDE(network_only, chain, n_states=2, features=cube)
    return ude, ude.init_params(seed=seed)


def _median_ms(fn, rounds, calls):
    return median_per_call(fn, calls, rounds, scale=1e3)


def weights(ude, p):
    (W1, b1), (W2, b2) = ude.chain.param_views(p[ude.slices["network"]]).values()
    return [
        np.array(W1, dtype=np.float64),
        np.array(b1, dtype=np.float64),
        np.array(W2, dtype=np.float64),
        np.array(b2, dtype=np.float64),
    ]


# --------------------------------------------------------------------------- smallchains


#: diffrax's PIDController(rtol, atol) is an I controller, factor err^(-1/5) for Tsit5
DIFFRAX_LIKE = sc.PIController(beta1=0.2, beta2=0.0)


def bench_smallchains(data, quick):
    ude, p = spiral_model()
    rows = []
    methods = [("DiscreteAdjoint", sc.DiscreteAdjoint())]
    for name in ("InterpolatingAdjoint", "BacksolveAdjoint", "ForwardSensitivity"):
        if hasattr(sc, name):
            methods.append((name, getattr(sc, name)()))
    for ctrl_name, ctrl in (("PI (default)", None), ("I, as diffrax", DIFFRAX_LIKE)):
        for name, sens in methods:
            gf = sc.gradient_function(
                data, ude, U0, TSPAN, p, saveat=TS, rtol=TOL, atol=TOL, sensitivity=sens, controller=ctrl
            )
            val, gp, _ = gf(p)
            ms = _median_ms(lambda gf=gf: gf(p), rounds=5 if quick else 9, calls=100 if quick else 400)
            rows.append(
                dict(
                    framework="smallchains",
                    method=f"Tsit5 + {name}, {ctrl_name}",
                    ms=ms,
                    loss=val,
                    steps=gf.stats["naccept"],
                    rejected=gf.stats["nreject"],
                    grad=gp,
                )
            )
    return rows


_COMPILE_SNIPPET = textwrap.dedent("""
    import time
    t0 = time.perf_counter()
    import numba, numpy as np, smallchains as sc
    t1 = time.perf_counter()
    @numba.njit
    def feats_{tag}(x, u, pm, t):
        for j in range(2):
            x[j] = u[j] ** 3 + 0.0 * {tag}
    @numba.njit
    def f_{tag}(du, u, pm, t, y):
        du[0] = y[0]
        du[1] = y[1]
    ude = sc.UDE(f_{tag}, sc.SimpleChain(2, sc.Dense(50, sc.tanh), sc.Dense(2)), n_states=2, features=feats_{tag})
    p = ude.init_params(seed=0)
    ts = np.linspace(0, 1.5, 30)
    gf = sc.gradient_function(np.zeros((30, 2)), ude, [2.0, 0.0], (0, 1.5), p, saveat=ts, rtol=1e-6, atol=1e-6)
    gf(p)
    t2 = time.perf_counter()
    print(t1 - t0, t2 - t1)
""")


def compile_time_new_rhs():
    """(import s, new model to first gradient s) in a fresh process with the package cache warm."""
    out = None
    for tag in (1, 2):  # the first run warms the package cache if needed; the second is the measurement
        code = _COMPILE_SNIPPET.replace("{tag}", str(tag + int(time.time()) % 100000 * 10))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    imp, first = (float(v) for v in out.split())
    return imp, first


# --------------------------------------------------------------------------- diffrax


def bench_diffrax(data, W, quick):
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    jax.config.update("jax_enable_x64", True)
    import diffrax
    import jax.numpy as jnp

    params = tuple(jnp.asarray(w) for w in W)
    y0 = jnp.asarray(U0)
    ts = jnp.asarray(TS)
    dat = jnp.asarray(data)

    def f(t, y, args):
        W1, b1, W2, b2 = args
        return W2 @ jnp.tanh(W1 @ y**3 + b1) + b2

    term = diffrax.ODETerm(f)
    rows = []
    for name, adj in (
        ("RecursiveCheckpointAdjoint", diffrax.RecursiveCheckpointAdjoint()),
        ("BacksolveAdjoint", diffrax.BacksolveAdjoint()),
    ):

        def loss(params, adj=adj):
            sol = diffrax.diffeqsolve(
                term,
                diffrax.Tsit5(),
                TSPAN[0],
                TSPAN[1],
                None,
                y0,
                args=params,
                saveat=diffrax.SaveAt(ts=ts),
                stepsize_controller=diffrax.PIDController(rtol=TOL, atol=TOL),
                adjoint=adj,
                max_steps=4096,
            )
            return jnp.sum((sol.ys - dat) ** 2), (sol.stats["num_accepted_steps"], sol.stats["num_rejected_steps"])

        vg = jax.jit(jax.value_and_grad(loss, has_aux=True))
        t0 = time.perf_counter()
        (val, (na, nr)), g = vg(params)
        jax.block_until_ready(g)
        compile_s = time.perf_counter() - t0

        def call(vg=vg):
            jax.block_until_ready(vg(params))

        ms = _median_ms(call, rounds=5 if quick else 7, calls=20 if quick else 100)
        gW1, gb1, gW2, gb2 = (np.asarray(x) for x in g)
        rows.append(
            dict(
                framework="diffrax",
                method=f"Tsit5 + {name}",
                ms=ms,
                loss=float(val),
                steps=int(na),
                rejected=int(nr),
                compile_s=compile_s,
                grad=np.concatenate([gW1.ravel(), gb1, gW2.ravel(), gb2]),
            )
        )
    return rows


# --------------------------------------------------------------------------- torchdiffeq


def bench_torchdiffeq(data, W, quick):
    import torch
    from torchdiffeq import odeint, odeint_adjoint

    class Spiral(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(2, 50), torch.nn.Tanh(), torch.nn.Linear(50, 2)).double()
            with torch.no_grad():
                self.net[0].weight.copy_(torch.from_numpy(W[0]))
                self.net[0].bias.copy_(torch.from_numpy(W[1]))
                self.net[2].weight.copy_(torch.from_numpy(W[2]))
                self.net[2].bias.copy_(torch.from_numpy(W[3]))
            self.nfe = 0

        def forward(self, t, y):
            self.nfe += 1
            return self.net(y**3)

    func = Spiral()
    y0 = torch.tensor(U0, dtype=torch.float64)
    ts = torch.tensor(TS, dtype=torch.float64)
    dat = torch.tensor(data, dtype=torch.float64)
    rows = []
    for name, integ in (("odeint_adjoint", odeint_adjoint), ("odeint (backprop)", odeint)):

        def call(integ=integ):
            func.zero_grad(set_to_none=True)
            ys = integ(func, y0, ts, rtol=TOL, atol=TOL, method="dopri5")
            loss = ((ys - dat) ** 2).sum()
            loss.backward()
            return float(loss)

        func.nfe = 0
        val = call()
        nfe = func.nfe
        ms = _median_ms(call, rounds=3 if quick else 5, calls=2 if quick else 5)
        g = [
            x.grad.detach().numpy().ravel()
            for x in (func.net[0].weight, func.net[0].bias, func.net[2].weight, func.net[2].bias)
        ]
        rows.append(
            dict(
                framework="torchdiffeq",
                method=f"dopri5 + {name}",
                ms=ms,
                loss=val,
                steps=None,
                nfe=nfe,
                grad=np.concatenate(g),
            )
        )
    return rows


# --------------------------------------------------------------------------- training


def train_spiral(data, adam_iters=300, lr=0.05, target=0.1, lbfgs_iters=300):
    """DiffEqFlux's recipe: Adam(0.05) for 300 iterations, then L-BFGS; the time to reach ``target``."""
    ude, p = spiral_model()
    gf = sc.gradient_function(data, ude, U0, TSPAN, p, saveat=TS, rtol=TOL, atol=TOL)
    sc.Adam(lr).update(p.copy(), gf(p)[1])  # warm-up: compile the optimizer's kernel outside the clock
    opt = sc.Adam(lr)
    hit = {}
    evals = [0]
    t0 = time.perf_counter()
    for _ in range(adam_iters):
        v, g, _ = gf(p)
        evals[0] += 1
        if v < target and not hit:
            hit.update(t=time.perf_counter() - t0, phase="Adam", evals=evals[0])
        opt.update(p, g)
    t_adam = time.perf_counter() - t0
    v_adam = gf.value(p)

    def watch(theta, value):
        evals[0] += 1
        if value < target and not hit:
            hit.update(t=time.perf_counter() - t0, phase="L-BFGS", evals=evals[0])
        return False

    res = gf.minimize(p, maxiter=lbfgs_iters, callback=watch)
    total = time.perf_counter() - t0
    return dict(
        hit=hit,
        t_adam=t_adam,
        loss_adam=v_adam,
        loss_final=float(res.fun),
        total=total,
        evals=evals[0],
        steps=gf.stats["naccept"],
    )


# --------------------------------------------------------------------------- main


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    args = ap.parse_args(argv)
    data = spiral_data()
    ude, p0 = spiral_model()
    W = weights(ude, p0)
    print(f"spiral neural ODE — {time.strftime('%Y-%m-%d')}, {machine()}")
    print(
        f"rtol=atol={TOL:g}, {len(TS)} save points, float64, "
        f"{ude.chain.num_params} weights, one loss + gradient per call (median ms)"
    )
    rows = bench_smallchains(data, args.quick)
    if not args.no_peers:
        for fn in (bench_diffrax, bench_torchdiffeq):
            try:
                rows += fn(data, W, args.quick)
            except ImportError as e:
                print(f"  [{fn.__name__[6:]} not installed: {e}; pip install -e '.[bench]']")
    ref = rows[0]["grad"][ude.slices["network"]] if rows else None
    for r in rows:
        steps = f"{r['steps']} steps" if r.get("steps") is not None else f"{r['nfe']} f-evals"
        rej = f" ({r['rejected']} rejected)" if r.get("rejected") else ""
        comp = f", compile {r['compile_s']:.2f} s" if "compile_s" in r else ""
        g = r["grad"][ude.slices["network"]] if r["framework"] == "smallchains" else r["grad"]
        rel = np.abs(g - ref).max() / np.abs(ref).max()
        print(
            f"  {r['framework']:<12} {r['method']:<46} {r['ms']:10.3f} ms   loss {r['loss']:.6f}   "
            f"{steps}{rej}{comp}   grad vs ours {rel:.1e}"
        )
    ours = min(r["ms"] for r in rows if r["framework"] == "smallchains")
    for fw in ("diffrax", "torchdiffeq"):
        peer = [r for r in rows if r["framework"] == fw]
        if peer:
            best = min(peer, key=lambda r: r["ms"])
            print(f"  ratio: {fw} best ({best['method']}) / smallchains best = {best['ms'] / ours:.1f}x")
            for r in peer:
                if "adjoint" in r["method"].lower() and r is not best:
                    print(f"  ratio: {fw} {r['method']} / smallchains best = {r['ms'] / ours:.1f}x")
    tr = train_spiral(data)
    h = tr["hit"]
    reached = (
        f"loss < 0.1 after {h['t']:.2f} s ({h['phase']}, {h['evals']} gradient evaluations)"
        if h
        else "loss 0.1 not reached"
    )
    print(
        f"  training (Adam 0.05 x 300, then L-BFGS x 300): {reached}; Adam phase {tr['t_adam']:.2f} s "
        f"-> loss {tr['loss_adam']:.4f}; final loss {tr['loss_final']:.2e} after {tr['evals']} evaluations, "
        f"{tr['total']:.2f} s; {tr['steps']} steps per solve at the end"
    )
    imp, first = compile_time_new_rhs()
    print(
        f"  new right-hand side, fresh process: import {imp:.2f} s, model to first gradient {first:.2f} s "
        "(package kernels cached)"
    )


if __name__ == "__main__":
    main()
