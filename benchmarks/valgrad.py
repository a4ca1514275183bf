"""Micro-benchmarks of the non-allocating gradient paths, peers in the same run.

1. ``sc.valgrad`` on the SimpleChains README case: 24 -> 8 tanh -> 2, batch 200,
   float32 (SimpleChains reported 5.7 µs); called from Python.
2. ``vjp_into`` for one sample of a 2 -> 50 tanh -> 2 chain, float64 (the
   neural-ODE case), called from Python (``chain.vjp_into``) and from compiled
   code (``smallchains.kernels.vjp_into`` inside an ``@njit`` loop).
Peers: PyTorch (``torch.autograd.grad``) and JAX (jitted ``value_and_grad`` /
``vjp``).  Also prints the Numba NRT allocations of the compiled hot paths.

    python benchmarks/valgrad.py [--no-peers]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numba
import numpy as np
from numba.core.runtime import rtsys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _peers  # noqa: E402
from _timing import machine, median_per_call  # noqa: E402

import smallchains as sc  # noqa: E402
from smallchains import kernels as K  # noqa: E402


def _median_us(fn, calls=2000, rounds=7):
    return median_per_call(fn, calls, rounds)


@numba.njit
def _vjp_loop(n, prog, out, p, v, x, out_x, work):
    s = 0
    for _ in range(n):
        s += K.vjp_into(prog, out, p, v, x, out_x, work)
    return s


def _nrt_allocs(fn):
    """NRT allocations made by ``fn()`` (statistics switched on for the measurement)."""
    from numba.core.runtime import _nrt_python

    enabled = _nrt_python.memsys_stats_enabled()
    _nrt_python.memsys_enable_stats()
    try:
        a0 = rtsys.get_allocation_stats().alloc
        fn()
        return rtsys.get_allocation_stats().alloc - a0
    finally:
        if not enabled:
            _nrt_python.memsys_disable_stats()


def readme_valgrad():
    X, Y = _peers.valgrad_readme_data(200, seed=0)
    chain = sc.SimpleChain(24, sc.Dense(8, sc.tanh), sc.Dense(2))
    p = chain.init_params(seed=0)
    loss = sc.add_loss(chain, sc.SquaredLoss(Y))
    g = np.empty_like(p)
    us = _median_us(lambda: sc.valgrad(g, loss, X, p))
    return {"us": us, "loss": sc.valgrad(g, loss, X, p)}


def small_vjp():
    chain = sc.SimpleChain(2, sc.Dense(50, sc.tanh), sc.Dense(2))
    p = chain.init_params(seed=0, dtype=np.float64)
    rng = np.random.default_rng(1)
    x, v = rng.standard_normal(2), rng.standard_normal(2)
    out, out_x = np.empty_like(p), np.empty(2)
    py_us = _median_us(lambda: chain.vjp_into(out, p, v, x, out_x), calls=5000)
    prog, work = chain.program, np.empty(chain.work_size(1))
    n = 200_000
    _vjp_loop(10, prog, out, p, v, x, out_x, work)
    per = []
    for _ in range(7):
        t0 = time.perf_counter()
        _vjp_loop(n, prog, out, p, v, x, out_x, work)
        per.append((time.perf_counter() - t0) / n * 1e6)
    allocs = _nrt_allocs(lambda: _vjp_loop(1000, prog, out, p, v, x, out_x, work))
    # the call from Python itself boxes its array arguments (7 here); the loop adds none
    base = _nrt_allocs(lambda: _vjp_loop(0, prog, out, p, v, x, out_x, work))
    return {"python_us": py_us, "compiled_us": statistics.median(per), "allocs_per_1000_calls": allocs - base}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-peers", action="store_true")
    args = ap.parse_args(argv)
    print(f"valgrad / vjp micro-benchmarks — {time.strftime('%Y-%m-%d')}, {machine()}")
    r = readme_valgrad()
    print(f"valgrad 24->8 tanh->2, batch 200, float32: smallchains {r['us']:.2f} µs/call (loss {r['loss']:.5f})")
    v = small_vjp()
    print(
        f"vjp_into 2->50 tanh->2, one sample, float64: smallchains {v['python_us']:.2f} µs from Python, "
        f"{v['compiled_us']:.3f} µs from compiled code, {v['allocs_per_1000_calls']} NRT allocations "
        f"in 1000 compiled calls"
    )
    if not args.no_peers:
        X, Y = _peers.valgrad_readme_data(200, seed=0)
        for name, fv, fj in (
            ("pytorch", _peers.torch_valgrad_readme, _peers.torch_vjp_small),
            ("jax", _peers.jax_valgrad_readme, _peers.jax_vjp_small),
        ):
            try:
                a = fv(X, Y)
                b = fj()
            except ImportError as exc:
                print(f"{name}: skipped ({exc})")
                continue
            best = min(a["us_1thread"], a["us_2threads"])
            print(
                f"valgrad readme: {name} {best:.1f} µs/call (1 thread {a['us_1thread']:.1f}, "
                f"2 threads {a['us_2threads']:.1f}) -> ratio {best / r['us']:.1f}x"
            )
            print(
                f"vjp small: {name} {b['us']:.1f} µs/call -> ratio {b['us'] / v['python_us']:.1f}x vs our "
                f"Python call, {b['us'] / v['compiled_us']:.0f}x vs our compiled call"
            )
    return r, v


if __name__ == "__main__":
    main()
