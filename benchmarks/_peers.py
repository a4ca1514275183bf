"""Peer implementations (PyTorch, JAX) of the smallchains benchmark workloads.

Each function here runs one *peer* framework on data handed in by a benchmark
script and returns measured figures as a plain ``dict``, so the caller can put
them side by side with the smallchains figures.  Framework imports are lazy:
importing this module costs nothing, and a script that only wants the torch
peer never imports jax (and vice versa).

Workloads
---------
``*_matexp`` -- the seed workload ("matrix exponential").
    X (n, 4) float32 are 2x2 matrices flattened row-major, Y (n, 4) float32
    are their matrix exponentials (see :func:`matexp_data`).  Model
    4 -> 32 -> 16 -> 4, tanh on the two hidden layers, identity output.
    Glorot-uniform weights, zero biases.  Full-batch Adam (lr=1e-3,
    betas=(0.9, 0.999), eps=1e-8), one optimiser step per epoch on the whole
    training set.

    Loss: mean over samples of the per-sample *sum* of squared errors,
    ``((pred - Y)**2).sum(axis=1).mean()``.  This is the scaling smallchains
    uses; it is 4x the element-wise MSE (``nn.MSELoss``), so the peers write
    the loss out explicitly rather than using a library MSE.

``*_valgrad_readme`` -- one loss + gradient of a 24 -> 8 (tanh) -> 2
    (identity) chain on a batch of 200 (X (200, 24), Y (200, 2)), float32,
    same loss definition; timed with 1 and with 2 threads.

``*_vjp_small`` -- a vector-Jacobian product of a 2 -> 50 (tanh) -> 2
    (identity) network, float64, one sample, with respect to both the
    parameters and the input, for a given cotangent ``v`` (forward included,
    as a VJP needs it).

What each peer does
-------------------
PyTorch (eager by default): what a real user writes -- ``nn.Sequential`` of
    ``nn.Linear``/``nn.Tanh``, ``torch.optim.Adam`` with its defaults (the
    ``foreach`` implementation), and the ``zero_grad(set_to_none=True)`` /
    ``backward()`` / ``step()`` loop.  ``torch.set_num_threads(threads)`` is
    set for the duration of the call and restored afterwards.  Gradients in
    the micro-benchmarks use ``torch.autograd.grad`` (the functional
    counterpart of ``jax.value_and_grad``/``jax.vjp``; no ``.grad``
    accumulation).  ``compile=True`` wraps the model *and* ``optimizer.step``
    in ``torch.compile`` (the recipe of the PyTorch tutorials; needs a C++
    compiler, which is present here).  Eager stays the default: it is what most
    users run and, on this 2-core machine, compile was not faster for these
    tiny tensors (matexp: best chunks ~1.70 ms/epoch compiled vs ~1.45-1.6 ms
    eager; ~2 s compile).

JAX: parameters are a pytree (list of ``(W, b)`` tuples), the loss is a pure
    function, the full training step (``jax.value_and_grad`` + ``optax.adam``
    update + ``optax.apply_updates``) is one ``jax.jit``-compiled function.
    Two variants are timed for the matexp workload:

    * ``"step"``: a Python loop calling the jitted step once per epoch
      (we only block at the end of each timed chunk, as a user loop that
      does not print the loss every epoch would);
    * ``"fori_loop"``: many epochs inside one jitted call via
      ``jax.lax.fori_loop`` (trip count is a traced argument, so one compile
      serves every chunk length).  This removes all Python dispatch cost and
      is the strongest fair JAX variant.

    The faster one is returned as ``us_per_epoch``, the other as
    ``us_per_epoch_alt``; ``variant``/``variant_alt`` name them.
    ``compile_s`` is the wall time of the first call (trace + XLA compile +
    one execution), i.e. what a user waits before the first step.

    Environment: ``JAX_PLATFORMS=cpu``, and float32 (jax default; the
    float64 VJP benchmark enables x64 only inside ``jax.enable_x64(True)``).
    ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` is set for hygiene (it only
    affects GPU backends).  Both variables are set with ``setdefault`` at import of this
    module, so a caller's choice wins.  The jax config option
    ``jax_cpu_enable_async_dispatch`` is set to ``JAX_CPU_ASYNC_DISPATCH``
    (False) by the first jax peer call: jax then runs small, non-parallel CPU
    computations inline on the calling thread instead of handing them to a
    worker thread.  On this 2-core VM that cuts the blocked per-call latency of
    the micro-benchmarks from ~100 us to ~28 us (the thread hand-off/wake-up
    dominated), and leaves the matexp figures unchanged.  The option is read
    when the CPU backend starts, so it only takes effect if no jax computation
    ran in the process before; the micro-benchmarks report the value in force
    under ``async_dispatch``.  No XLA_FLAGS are set: the XLA CPU defaults
    (multi-threaded Eigen on all cores) apply, and a caller's ``XLA_FLAGS``
    pass through untouched.  XLA's thread count cannot be changed after the
    backend starts, so ``threads`` for JAX is enforced by pinning all of the
    process' threads to the first ``threads`` CPUs (``os.sched_setaffinity``)
    for the duration of the call -- the thread pool keeps its size but only
    gets that many cores.

Why this is fair
----------------
* Same architecture, same initial weights: every peer starts from the same
  numpy Glorot-uniform draw (:func:`glorot_params`, seeded), so losses are
  comparable run to run and across frameworks.
* Same optimiser and hyper-parameters (torch ``Adam`` and ``optax.adam`` both
  add ``eps`` to ``sqrt(v_hat)``), same loss, same data, float32 throughout.
* Each peer uses its idiomatic fast path (eager torch as users write it, jit
  for JAX, plus the fully fused ``fori_loop`` variant), with a warm-up
  (JIT compile, allocator, thread pools) excluded from timing.
* Timing: ``time.perf_counter`` around chunks of epochs, median over chunks;
  JAX results are ``block_until_ready``-ed before the clock stops.  The
  micro-benchmarks time every call individually (``perf_counter_ns``) after
  untimed warm-up calls and report the median (and the minimum).
* Reported losses are recomputed at the end, identically for every peer, in
  float64 numpy from the trained float32 weights (:func:`mlp_loss64`).

Epoch accounting (matexp): the first ``warmup`` epochs (default
``max(1, min(20, epochs // 10))``) are real training epochs but untimed; the
rest are split into ``repeats`` timed chunks of ``(epochs - warmup) // repeats`` epochs
(the remainder goes to the last chunk).  Training continues across chunks, so
the returned losses are after exactly ``epochs`` optimiser steps.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
import warnings

import numpy as np

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

#: Value given to jax's ``jax_cpu_enable_async_dispatch`` when a jax peer first
#: runs (only if the jax CPU backend is not initialised yet; see docstring).
JAX_CPU_ASYNC_DISPATCH = False

MATEXP_SIZES = (4, 32, 16, 4)
README_SIZES = (24, 8, 2)
VJP_SIZES = (2, 50, 2)

__all__ = [
    "matexp_data",
    "valgrad_readme_data",
    "glorot_params",
    "mlp_loss64",
    "torch_matexp",
    "jax_matexp",
    "torch_valgrad_readme",
    "jax_valgrad_readme",
    "torch_vjp_small",
    "jax_vjp_small",
]


# ---------------------------------------------------------------------------
# Shared helpers: data, initial weights, reference loss
# ---------------------------------------------------------------------------


def matexp_data(n=10_000, seed=0):
    """Matrix-exponential data set: ``(X, Y, Xt, Yt)``, all float32 (n, 4).

    ``2 n`` random 2x2 matrices with i.i.d. standard-normal entries from
    ``np.random.default_rng(seed)``; the first ``n`` are the training set,
    the last ``n`` the test set.  ``Y = scipy.linalg.expm(A)`` (computed in
    float64, then rounded); matrices are flattened row-major.
    """
    import scipy.linalg

    rng = np.random.default_rng(seed)
    A = rng.standard_normal((2 * n, 2, 2))
    E = scipy.linalg.expm(A)  # batched over the leading axis
    X = A.reshape(2 * n, 4).astype(np.float32)
    Y = E.reshape(2 * n, 4).astype(np.float32)
    return X[:n], Y[:n], X[n:], Y[n:]


def valgrad_readme_data(batch=200, seed=0):
    """Random float32 ``X (batch, 24)``, ``Y (batch, 2)`` for the readme chain."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((batch, README_SIZES[0])).astype(np.float32)
    Y = rng.standard_normal((batch, README_SIZES[-1])).astype(np.float32)
    return X, Y


def glorot_params(sizes, seed=0, dtype=np.float32):
    """Glorot-uniform weights, zero biases: list of ``(W (in, out), b (out,))``.

    ``W ~ U(-a, a)`` with ``a = sqrt(6 / (in + out))`` (same as
    ``torch.nn.init.xavier_uniform_`` and ``jax.nn.initializers.glorot_uniform``).
    Drawn from ``np.random.default_rng(seed)`` so every peer starts from the
    same weights.
    """
    rng = np.random.default_rng(seed)
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        a = np.sqrt(6.0 / (fan_in + fan_out))
        W = rng.uniform(-a, a, size=(fan_in, fan_out)).astype(dtype)
        params.append((W, np.zeros(fan_out, dtype=dtype)))
    return params


def _mlp_forward_np(params, X):
    h = np.asarray(X, dtype=np.float64)
    for W, b in params[:-1]:
        h = np.tanh(h @ np.asarray(W, np.float64) + np.asarray(b, np.float64))
    W, b = params[-1]
    return h @ np.asarray(W, np.float64) + np.asarray(b, np.float64)


def mlp_loss64(params, X, Y):
    """``((pred - Y)**2).sum(axis=1).mean()`` in float64 numpy (tanh hidden,
    identity output), for params given as a list of ``(W (in, out), b)``."""
    d = _mlp_forward_np(params, X) - np.asarray(Y, np.float64)
    return float((d * d).sum(axis=1).mean())


def _chunks(epochs, repeats, warmup):
    """Split ``epochs`` into an untimed warm-up and ``repeats`` timed chunks."""
    if warmup is None:
        warmup = min(20, epochs // 10)
    warmup = max(1, warmup)  # the first (possibly compiling) epoch is untimed
    repeats = max(1, min(repeats, epochs - warmup))
    if epochs - warmup < 1:
        raise ValueError("need at least warmup + 1 epochs")
    k = (epochs - warmup) // repeats
    sizes = [k] * repeats
    sizes[-1] += (epochs - warmup) - k * repeats
    return warmup, sizes


def _median_call_us(fn, repeats, warmup=None):
    """Median (and min) wall time of ``fn()`` in microseconds, each call
    timed individually after ``warmup`` untimed calls."""
    if warmup is None:
        warmup = max(10, repeats // 10)
    for _ in range(warmup):
        fn()
    ts = []
    pc = time.perf_counter_ns
    for _ in range(repeats):
        t0 = pc()
        fn()
        ts.append(pc() - t0)
    return statistics.median(ts) / 1e3, min(ts) / 1e3


@contextlib.contextmanager
def _torch_threads(n):
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _set_affinity_all_threads(cpus):
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:  # thread exited meanwhile
            pass


@contextlib.contextmanager
def _cpu_limit(n):
    """Pin every thread of this process to the first ``n`` allowed CPUs
    (restored on exit).  No-op if ``n`` is None or not below the CPU count,
    or if the platform has no ``sched_setaffinity``."""
    if n is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    old = os.sched_getaffinity(0)
    if n >= len(old):
        yield
        return
    _set_affinity_all_threads(set(sorted(old)[:n]))
    try:
        yield
    finally:
        _set_affinity_all_threads(old)


# ---------------------------------------------------------------------------
# PyTorch
# ---------------------------------------------------------------------------


def _torch_mlp(params, act_last=False):
    """``nn.Sequential`` of ``Linear``/``Tanh`` loaded with numpy ``params``."""
    import torch
    from torch import nn

    layers = []
    for i, (W, b) in enumerate(params):
        lin = nn.Linear(W.shape[0], W.shape[1], dtype=torch.from_numpy(W).dtype)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        if i < len(params) - 1 or act_last:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def _torch_params_np(model):
    from torch import nn

    return [
        (m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy()) for m in model if isinstance(m, nn.Linear)
    ]


def torch_matexp(X, Y, Xt, Yt, epochs, lr=1e-3, seed=0, threads=2, repeats=3, compile=False, warmup=None):
    """Train the matexp MLP with PyTorch; return measured figures.

    Returns a dict: ``us_per_epoch`` (median over the timed chunks),
    ``us_per_epoch_chunks`` (all chunks), ``train_loss``, ``test_loss``
    (float64, after exactly ``epochs`` steps), ``initial_loss``, ``epochs``,
    ``threads``, ``compile`` and, with ``compile=True``, ``compile_s`` (wall
    time of the first epoch, which triggers compilation).  If compilation
    fails, a ``RuntimeWarning`` is issued and the eager figures are returned
    (``compile`` False, the error under ``compile_error``).
    """
    import torch

    params0 = glorot_params(MATEXP_SIZES, seed=seed)
    warmup, sizes = _chunks(epochs, repeats, warmup)
    with _torch_threads(threads):
        torch.manual_seed(seed)
        model = _torch_mlp(params0)
        Xtr = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        Ytr = torch.from_numpy(np.ascontiguousarray(Y, dtype=np.float32))
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
        net, opt_step = model, optimizer.step
        if compile:
            net = torch.compile(model)
            opt_step = torch.compile(optimizer.step)

        def epoch():
            optimizer.zero_grad(set_to_none=True)
            loss = ((net(Xtr) - Ytr) ** 2).sum(dim=1).mean()
            loss.backward()
            opt_step()

        t0 = time.perf_counter()
        try:
            epoch()
        except Exception as exc:  # noqa: BLE001 - torch.compile backend failure
            if not compile:
                raise
            warnings.warn(
                f"torch.compile failed ({type(exc).__name__}: {exc}); falling back to eager",
                RuntimeWarning,
                stacklevel=2,
            )
            out = torch_matexp(
                X, Y, Xt, Yt, epochs, lr=lr, seed=seed, threads=threads, repeats=repeats, compile=False, warmup=warmup
            )
            out["compile_error"] = f"{type(exc).__name__}: {exc}"
            return out
        first_s = time.perf_counter() - t0
        for _ in range(warmup - 1):
            epoch()
        chunk_us = []
        for k in sizes:
            t0 = time.perf_counter()
            for _ in range(k):
                epoch()
            chunk_us.append((time.perf_counter() - t0) / k * 1e6)

    params = _torch_params_np(model)
    out = {
        "us_per_epoch": statistics.median(chunk_us),
        "us_per_epoch_chunks": chunk_us,
        "train_loss": mlp_loss64(params, X, Y),
        "test_loss": mlp_loss64(params, Xt, Yt),
        "initial_loss": mlp_loss64(params0, X, Y),
        "epochs": epochs,
        "threads": threads,
        "compile": bool(compile),
    }
    if compile:
        out["compile_s"] = first_s
    return out


def torch_valgrad_readme(X, Y, repeats=2000, seed=0):
    """Time one loss + gradient (forward + backward) of the 24->8 tanh->2
    chain on ``X (200, 24)``, ``Y (200, 2)``, float32, with PyTorch.

    Returns ``us_1thread``, ``us_2threads`` (median µs per call over
    ``repeats`` individually timed calls), ``us_min_1thread``,
    ``us_min_2threads`` and ``loss`` (float).
    """
    import torch

    model = _torch_mlp(glorot_params(README_SIZES, seed=seed))
    params = list(model.parameters())
    Xtr = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    Ytr = torch.from_numpy(np.ascontiguousarray(Y, dtype=np.float32))

    def valgrad():
        loss = ((model(Xtr) - Ytr) ** 2).sum(dim=1).mean()
        grads = torch.autograd.grad(loss, params)
        return loss, grads

    out = {}
    for n, key in ((1, "1thread"), (2, "2threads")):
        with _torch_threads(n):
            med, mn = _median_call_us(valgrad, repeats)
        out["us_" + key], out["us_min_" + key] = med, mn
    out["loss"] = valgrad()[0].item()
    return out


def torch_vjp_small(repeats=5000, seed=0, threads=1):
    """Time a VJP of the 2->50 tanh->2 network (float64, one sample) w.r.t.
    parameters and input, with ``torch.autograd.grad(out, [x, *params],
    grad_outputs=v)`` (forward included).  Returns ``us`` (median),
    ``us_min`` and ``threads``."""
    import torch

    rng = np.random.default_rng(seed + 1)
    model = _torch_mlp(glorot_params(VJP_SIZES, seed=seed, dtype=np.float64))
    params = list(model.parameters())
    x = torch.from_numpy(rng.standard_normal(VJP_SIZES[0])).requires_grad_(True)
    v = torch.from_numpy(rng.standard_normal(VJP_SIZES[-1]))
    inputs = [x, *params]

    def vjp():
        return torch.autograd.grad(model(x), inputs, grad_outputs=v)

    with _torch_threads(threads):
        med, mn = _median_call_us(vjp, repeats)
    return {"us": med, "us_min": mn, "threads": threads}


# ---------------------------------------------------------------------------
# JAX
# ---------------------------------------------------------------------------


def _import_jax():
    """Import jax; before the CPU backend starts, apply JAX_CPU_ASYNC_DISPATCH."""
    import jax

    try:
        from jax._src import xla_bridge

        started = xla_bridge.backends_are_initialized()
    except (ImportError, AttributeError):  # private API moved: assume not
        started = False
    if not started:
        jax.config.update("jax_cpu_enable_async_dispatch", bool(JAX_CPU_ASYNC_DISPATCH))
    return jax


def _jax_async_dispatch(jax):
    return bool(jax.config.read("jax_cpu_enable_async_dispatch"))


def _jax_mlp(params, x):
    import jax.numpy as jnp

    for W, b in params[:-1]:
        x = jnp.tanh(x @ W + b)
    W, b = params[-1]
    return x @ W + b


def _jax_loss(params, X, Y):
    import jax.numpy as jnp

    return jnp.mean(jnp.sum((_jax_mlp(params, X) - Y) ** 2, axis=1))


def _jax_to_np(params):
    return [(np.asarray(W), np.asarray(b)) for W, b in params]


def jax_matexp(X, Y, Xt, Yt, epochs, lr=1e-3, seed=0, threads=2, repeats=3, warmup=None):
    """Train the matexp MLP with JAX + optax; return measured figures.

    Both variants (``"step"``: Python loop over a jitted step;
    ``"fori_loop"``: epochs inside one jitted ``lax.fori_loop``) train from
    the same initial weights for exactly ``epochs`` steps.  Returns a dict:
    ``us_per_epoch`` / ``variant`` / ``compile_s`` / ``us_per_epoch_chunks``
    for the faster variant, the same with suffix ``_alt`` for the other,
    ``train_loss``, ``test_loss`` (float64, faster variant; ``*_alt`` for the
    other), ``initial_loss``, ``epochs``, ``threads``, ``async_dispatch``.
    """
    jax = _import_jax()
    import jax.numpy as jnp
    import optax

    params0 = glorot_params(MATEXP_SIZES, seed=seed)
    warmup, sizes = _chunks(epochs, repeats, warmup)
    opt = optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8)

    def step(params, opt_state, X, Y):
        loss, grads = jax.value_and_grad(_jax_loss)(params, X, Y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def run_n(params, opt_state, X, Y, n):
        def body(_, carry):
            p, s, _loss = step(*carry[:2], X, Y)
            return p, s

        return jax.lax.fori_loop(0, n, body, (params, opt_state))

    step_jit = jax.jit(step)
    run_n_jit = jax.jit(run_n)

    def train_step_variant(p, s, Xj, Yj):
        t0 = time.perf_counter()
        p, s, _ = step_jit(p, s, Xj, Yj)
        jax.block_until_ready(p)
        compile_s = time.perf_counter() - t0
        for _ in range(warmup - 1):
            p, s, _ = step_jit(p, s, Xj, Yj)
        jax.block_until_ready(p)
        chunk_us = []
        for k in sizes:
            t0 = time.perf_counter()
            for _ in range(k):
                p, s, _ = step_jit(p, s, Xj, Yj)
            jax.block_until_ready(p)
            chunk_us.append((time.perf_counter() - t0) / k * 1e6)
        return p, compile_s, chunk_us

    def train_fori_variant(p, s, Xj, Yj):
        t0 = time.perf_counter()
        p, s = run_n_jit(p, s, Xj, Yj, warmup)
        jax.block_until_ready(p)
        compile_s = time.perf_counter() - t0
        chunk_us = []
        for k in sizes:
            t0 = time.perf_counter()
            p, s = run_n_jit(p, s, Xj, Yj, k)
            jax.block_until_ready(p)
            chunk_us.append((time.perf_counter() - t0) / k * 1e6)
        return p, compile_s, chunk_us

    results = []
    with _cpu_limit(threads):
        Xj = jnp.asarray(X, dtype=jnp.float32)
        Yj = jnp.asarray(Y, dtype=jnp.float32)
        for name, train in (("step", train_step_variant), ("fori_loop", train_fori_variant)):
            p = [(jnp.asarray(W), jnp.asarray(b)) for W, b in params0]
            s = opt.init(p)
            p, compile_s, chunk_us = train(p, s, Xj, Yj)
            pn = _jax_to_np(p)
            results.append(
                {
                    "variant": name,
                    "us_per_epoch": statistics.median(chunk_us),
                    "us_per_epoch_chunks": chunk_us,
                    "compile_s": compile_s,
                    "train_loss": mlp_loss64(pn, X, Y),
                    "test_loss": mlp_loss64(pn, Xt, Yt),
                }
            )

    best, alt = sorted(results, key=lambda r: r["us_per_epoch"])
    out = dict(best)
    out.update({k + "_alt": v for k, v in alt.items()})
    out.update(
        {
            "initial_loss": mlp_loss64(params0, X, Y),
            "epochs": epochs,
            "threads": threads,
            "async_dispatch": _jax_async_dispatch(jax),
        }
    )
    return out


def jax_valgrad_readme(X, Y, repeats=2000, seed=0):
    """Time one jitted ``jax.value_and_grad`` of the 24->8 tanh->2 chain on
    ``X (200, 24)``, ``Y (200, 2)``, float32 (``block_until_ready`` on the
    result).  "1 thread" pins the process to one CPU (see module docstring).
    Returns the same keys as :func:`torch_valgrad_readme` plus ``compile_s``
    and ``async_dispatch`` (the jax setting in force).
    """
    jax = _import_jax()
    import jax.numpy as jnp

    params = [(jnp.asarray(W), jnp.asarray(b)) for W, b in glorot_params(README_SIZES, seed=seed)]
    Xj = jnp.asarray(X, dtype=jnp.float32)
    Yj = jnp.asarray(Y, dtype=jnp.float32)
    valgrad = jax.jit(jax.value_and_grad(_jax_loss))

    t0 = time.perf_counter()
    jax.block_until_ready(valgrad(params, Xj, Yj))
    out = {"compile_s": time.perf_counter() - t0}

    def call():
        return jax.block_until_ready(valgrad(params, Xj, Yj))

    for n, key in ((1, "1thread"), (2, "2threads")):
        with _cpu_limit(n):
            med, mn = _median_call_us(call, repeats)
        out["us_" + key], out["us_min_" + key] = med, mn
    out["loss"] = float(call()[0])
    out["async_dispatch"] = _jax_async_dispatch(jax)
    return out


def jax_vjp_small(repeats=5000, seed=0, threads=1):
    """Time a jitted ``jax.vjp`` of the 2->50 tanh->2 network (float64, one
    sample) w.r.t. parameters and input, for a fixed cotangent ``v``
    (forward included; ``block_until_ready`` on the cotangents).  Returns
    ``us`` (median), ``us_min``, ``threads``, ``compile_s``,
    ``async_dispatch``."""
    jax = _import_jax()
    import jax.numpy as jnp

    rng = np.random.default_rng(seed + 1)
    p_np = glorot_params(VJP_SIZES, seed=seed, dtype=np.float64)
    x_np = rng.standard_normal(VJP_SIZES[0])
    v_np = rng.standard_normal(VJP_SIZES[-1])

    with jax.enable_x64(True):
        params = [(jnp.asarray(W), jnp.asarray(b)) for W, b in p_np]
        x = jnp.asarray(x_np)
        v = jnp.asarray(v_np)
        assert x.dtype == jnp.float64

        @jax.jit
        def vjp(params, x, v):
            _, pullback = jax.vjp(_jax_mlp, params, x)
            return pullback(v)  # (d params, d x)

        t0 = time.perf_counter()
        jax.block_until_ready(vjp(params, x, v))
        compile_s = time.perf_counter() - t0

        def call():
            return jax.block_until_ready(vjp(params, x, v))

        with _cpu_limit(threads):
            med, mn = _median_call_us(call, repeats)
    return {
        "us": med,
        "us_min": mn,
        "threads": threads,
        "compile_s": compile_s,
        "async_dispatch": _jax_async_dispatch(jax),
    }


# ---------------------------------------------------------------------------
# Sanity run
# ---------------------------------------------------------------------------


def _main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile for matexp")
    ap.add_argument("--skip-micro", action="store_true")
    a = ap.parse_args(argv)

    X, Y, Xt, Yt = matexp_data()
    print(
        f"matexp data: train {X.shape}, test {Xt.shape}; "
        f"initial loss {mlp_loss64(glorot_params(MATEXP_SIZES), X, Y):.4f}"
    )

    def show(name, r):
        extra = ""
        if "variant" in r:
            extra = (
                f"  [{r['variant']}; alt {r['variant_alt']} "
                f"{r['us_per_epoch_alt']:.0f} us/epoch; "
                f"compile {r['compile_s']:.2f}s / {r['compile_s_alt']:.2f}s]"
            )
        elif "compile_s" in r:
            extra = f"  [compile {r['compile_s']:.2f}s]"
        chunks = ", ".join(f"{c:.0f}" for c in r["us_per_epoch_chunks"])
        print(
            f"{name:14s} {r['us_per_epoch']:8.0f} us/epoch (chunks {chunks})  "
            f"train {r['train_loss']:.4g}  test {r['test_loss']:.4g}{extra}"
        )

    kw = dict(epochs=a.epochs, threads=a.threads, repeats=a.repeats)
    print(f"-- matexp, {a.epochs} epochs, {a.threads} threads")
    show("torch eager", torch_matexp(X, Y, Xt, Yt, **kw))
    if a.compile:
        try:
            show("torch compile", torch_matexp(X, Y, Xt, Yt, compile=True, **kw))
        except Exception as e:  # noqa: BLE001 - report and carry on
            print(f"torch compile  failed: {type(e).__name__}: {e}")
    show("jax", jax_matexp(X, Y, Xt, Yt, **kw))

    if a.skip_micro:
        return
    Xr, Yr = valgrad_readme_data()
    print("-- valgrad readme (24->8 tanh->2, batch 200, float32), us/call median")
    for name, fn in (("torch", torch_valgrad_readme), ("jax", jax_valgrad_readme)):
        r = fn(Xr, Yr, repeats=3000)
        print(f"{name:6s} 1 thread {r['us_1thread']:7.1f}   2 threads {r['us_2threads']:7.1f}   loss {r['loss']:.5f}")
    print("-- vjp small (2->50 tanh->2, float64, 1 sample), us/call median")
    for name, fn in (("torch", torch_vjp_small), ("jax", jax_vjp_small)):
        r = fn(repeats=5000)
        print(f"{name:6s} {r['us']:7.1f}  (min {r['us_min']:.1f})")


if __name__ == "__main__":
    _main()
