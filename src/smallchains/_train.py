"""Compiled optimizer updates and training loops.

A run of many epochs is one compiled call: gradient (threads over batch
blocks, fixed-order reduction), penalty, finiteness check and optimizer update,
with no Python in between.  The Python layer (``training``) only splits a run
into chunks when a callback or a progress bar asks for it.
"""

from __future__ import annotations

import math

import numpy as np

from . import _engine as E
from ._jit import kernel
from ._program import H_G1, H_NOUT, H_T, H_UNITS

OPT_SGD = 0
OPT_ADAM = 1
OPT_ADAMW = 2
OPT_RMSPROP = 3


@kernel
def opt_update(code, hyper, state, step, p, g):
    """One fused update of ``p`` in place from gradient ``g`` (``g`` is not modified).

    hyper: SGD (lr, momentum, nesterov, weight_decay); Adam/AdamW (lr, beta1, beta2,
    eps, weight_decay); RMSProp (lr, alpha, eps, momentum, weight_decay).
    state: (2, n) moment buffers; step: int64[1] counter (incremented).
    """
    step[0] += 1
    t = step[0]
    n = p.shape[0]
    lr = hyper[0]
    if code == OPT_ADAM or code == OPT_ADAMW:
        b1 = hyper[1]
        b2 = hyper[2]
        eps = hyper[3]
        wd = hyper[4]
        bc1 = 1.0 - b1**t
        bc2 = 1.0 - b2**t
        step_size = lr / bc1
        rb2 = 1.0 / math.sqrt(bc2)
        decay = 1.0 - lr * wd
        for i in range(n):
            gi = g[i]
            if code == OPT_ADAM:
                gi += wd * p[i]
            m = b1 * state[0, i] + (1.0 - b1) * gi
            v = b2 * state[1, i] + (1.0 - b2) * gi * gi
            state[0, i] = m
            state[1, i] = v
            pi = p[i] * decay if code == OPT_ADAMW else p[i]
            p[i] = pi - step_size * m / (math.sqrt(v) * rb2 + eps)
    elif code == OPT_SGD:
        mom = hyper[1]
        nesterov = hyper[2] != 0.0
        wd = hyper[3]
        for i in range(n):
            gi = g[i] + wd * p[i]
            if mom != 0.0:
                b = gi if t == 1 else mom * state[0, i] + gi
                state[0, i] = b
                gi = gi + mom * b if nesterov else b
            p[i] -= lr * gi
    else:  # RMSProp (PyTorch's definition)
        alpha = hyper[1]
        eps = hyper[2]
        mom = hyper[3]
        wd = hyper[4]
        for i in range(n):
            gi = g[i] + wd * p[i]
            v = alpha * state[0, i] + (1.0 - alpha) * gi * gi
            state[0, i] = v
            u = gi / (math.sqrt(v) + eps)
            if mom != 0.0:
                b = mom * state[1, i] + u
                state[1, i] = b
                u = b
            p[i] -= lr * u


@kernel
def _copy(dst, src):
    """dst <- src elementwise (``dst[:] = src`` needs NRT for its overlap temporary)."""
    for i in range(dst.shape[0]):
        dst[i] = src[i]


@kernel
def _guarded_update(val, opt_code, hyper, state, step, p, g, backup):
    """Check the loss and gradient, update ``p``, and undo an update that overflows ``p``.

    ``backup`` holds ``p`` from before the previous update (the caller fills it with
    ``p`` before the first).  On a non-finite loss ``p`` is restored from it, so ``p``
    is left at the last parameters whose loss was finite; on a non-finite gradient
    or an update that overflows, ``p`` keeps its value from before this call.
    Returns a status.
    """
    if not E.is_finite(val):
        _copy(p, backup)
        return E.NONFINITE_LOSS
    if not E.all_finite(g):
        return E.NONFINITE_GRAD
    _copy(backup, p)
    opt_update(opt_code, hyper, state, step, p, g)
    if not E.all_finite(p):
        _copy(p, backup)
        return E.NONFINITE_PARAMS
    return E.OK


@kernel
def _step(
    prog,
    p,
    X,
    idx,
    mode,
    i0,
    i1,
    T,
    labels,
    code,
    lpar,
    pen_code,
    pen_lam,
    opt_code,
    hyper,
    state,
    step,
    g,
    slabs,
    work,
    losses,
    stats,
    backup,
    key,
):
    """One optimizer step on samples [i0, i1): gradient, penalty, checked update.

    ``key``: this step's dropout key (training mode).
    Returns (loss with penalty before the step, status).
    """
    val, st = E.valgrad(prog, p, X, idx, mode, i0, i1, T, labels, code, lpar, g, slabs, work, losses, stats, True, key)
    if st != E.OK:
        return val, st
    val += E.penalty(prog, p, g, pen_code, pen_lam, True)
    return val, _guarded_update(val, opt_code, hyper, state, step, p, g, backup)


@kernel
def _shuffle(perm, rng):
    """Fisher-Yates shuffle of ``perm`` in place with a splitmix64 stream (state ``rng[0]``)."""
    n = perm.shape[0]
    for i in range(n - 1, 0, -1):
        rng[0] += np.uint64(0x9E3779B97F4A7C15)
        z = rng[0]
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
        j = np.int64(z % np.uint64(i + 1))
        tmp = perm[i]
        perm[i] = perm[j]
        perm[j] = tmp


@kernel
def _step_key(rng, i):
    """A non-negative dropout key for the step on samples from position ``i`` (from the stream state)."""
    z = E._mix64(rng[0] + np.uint64(i) * np.uint64(0xD1B54A32D192ED03) + np.uint64(0x632BE59BD9B4E019))
    return np.int64(z >> np.uint64(1))


@kernel
def train_full(
    prog,
    p,
    XT,
    TT,
    labels,
    code,
    lpar,
    pen_code,
    pen_lam,
    opt_code,
    hyper,
    state,
    step,
    epochs,
    hist,
    h0,
    g,
    slabs,
    work,
    losses,
    stats,
    backup,
    rng,
):
    """``epochs`` full-batch steps.  hist[h0+e] <- loss (with penalty) before step e.

    ``XT`` (d, n) and ``TT`` (m, n, or any 2-D array for cross-entropy) are the data
    transposed once by the caller, so epochs copy contiguous columns instead of
    transposing rows every time.

    Returns (status, epochs completed).  On a failure ``p`` is left as
    ``_guarded_update`` says (the last parameters whose loss was finite).
    """
    n = XT.shape[1]
    idx = prog[0]
    for e in range(epochs):
        rng[0] += np.uint64(0x9E3779B97F4A7C15)  # one dropout key per epoch
        val, st = _step(
            prog,
            p,
            XT,
            idx,
            E.COLUMNS,
            0,
            n,
            TT,
            labels,
            code,
            lpar,
            pen_code,
            pen_lam,
            opt_code,
            hyper,
            state,
            step,
            g,
            slabs,
            work,
            losses,
            stats,
            backup,
            _step_key(rng, 0),
        )
        if st != E.OK:
            return st, e
        hist[h0 + e] = val
    return E.OK, epochs


@kernel
def train_minibatch(
    prog,
    p,
    X,
    T,
    labels,
    code,
    lpar,
    pen_code,
    pen_lam,
    opt_code,
    hyper,
    state,
    step,
    epochs,
    batch,
    perm,
    rng,
    hist,
    h0,
    g,
    slabs,
    work,
    losses,
    stats,
    backup,
):
    """``epochs`` passes of shuffled minibatches of size ``batch`` (the last partial batch used).

    hist[h0+e] <- mean over the epoch's samples of the minibatch losses (each taken
    before its step, penalty included).  Returns (status, epochs completed).
    """
    n = X.shape[0]
    for e in range(epochs):
        _shuffle(perm, rng)
        total = 0.0
        i = 0
        while i < n:
            j = min(n, i + batch)
            val, st = _step(
                prog,
                p,
                X,
                perm,
                E.ROWS_IDX,
                i,
                j,
                T,
                labels,
                code,
                lpar,
                pen_code,
                pen_lam,
                opt_code,
                hyper,
                state,
                step,
                g,
                slabs,
                work,
                losses,
                stats,
                backup,
                _step_key(rng, i),
            )
            if st != E.OK:
                return st, e
            total += val * (j - i)
            i = j
        hist[h0 + e] = total / n
    return E.OK, epochs


@kernel
def evaluate(prog, p, X, T, labels, code, lpar, work):
    """(mean loss, accuracy, status) over all of X; one thread.  Accuracy only for cross-entropy."""
    if not E.ready(prog, p, E.BOUND):
        return 0.0, 0.0, E.NOT_BOUND
    n = X.shape[0]
    B = work.shape[0] // prog[0, H_UNITS]
    m = prog[0, H_NOUT]
    idx = prog[0]
    total = 0.0
    correct = 0
    i = 0
    while i < n:
        nb = min(B, n - i)
        if E.gather_block(X, idx, False, i, nb, work, B, 0) != 0:
            return 0.0, 0.0, E.NONFINITE_INPUT
        to = prog[0, H_T] * B
        if code != E.LOSS_LOGITCE:
            E.gather_block(T, idx, False, i, nb, work, B, to)
        yo = E.fwd_block(prog, p, work, B, False, -1, 0, E.BOUND)
        val, st = E.block_loss(code, lpar, work, yo, prog[0, H_G1] * B, to, m, B, nb, labels, idx, False, i, 1.0, False)
        if st != E.OK:
            return 0.0, 0.0, st
        total += val
        if code == E.LOSS_LOGITCE:
            for s in range(nb):
                best = 0
                bv = work[yo + s]
                for jj in range(1, m):
                    v = work[yo + jj * B + s]
                    if v > bv:
                        bv = v
                        best = jj
                if best == labels[i + s]:
                    correct += 1
        i += nb
    return total / n, correct / n, E.OK
