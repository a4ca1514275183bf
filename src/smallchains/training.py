"""Training loops: full-batch, minibatch, and SciPy's quasi-Newton methods.

``train_unbatched`` and ``train_batched`` run the whole loop of epochs in one
compiled call (gradient over threads, fixed-order reduction, penalty, update).
They return to Python only every ``callback_every`` epochs when a callback or
a progress bar is asked for; with neither, a run is one call.
"""

from __future__ import annotations

import numpy as np

from . import _engine as E
from . import _train as T
from ._errors import TrainingDivergedError, raise_for_status, status_message
from ._jit import COMPILE_SECONDS, feature
from ._validate import positive_int
from .losses import ChainLoss, _rebind, accuracy_and_loss, valgrad
from .optimizers import Optimizer

#: Default minibatch size of ``train_batched`` per thread: long enough sample runs for the
#: kernels, many updates per epoch (the seed article's LeNet used 16 x threads); larger
#: batches trade updates for throughput (see ``train_batched``).
DEFAULT_BATCH_PER_THREAD = 32


def _check(loss, X, p, opt, epochs):
    if not isinstance(loss, ChainLoss):
        raise TypeError(f"`loss` must come from sc.add_loss(chain, loss), got {type(loss).__name__}")
    if not isinstance(opt, Optimizer):
        raise TypeError(f"`opt` must be an optimizer such as sc.Adam(1e-3), got {opt!r}")
    epochs = positive_int("epochs", epochs, minimum=0)
    X2, T_, labels = loss._data(X, p)
    if not p.flags.writeable:
        raise ValueError("`p` is read-only; training updates it in place: pass a writable copy (p.copy())")
    _require_finite(p)
    return X2, T_, labels, epochs


def _require_finite(p):
    if not E.all_finite(p):
        raise ValueError("`p` contains NaN or Inf; start from finite parameters (chain.init_params())")


def _stream_state(seed):
    """The shuffling stream's 64-bit state from an int seed or a ``np.random.Generator``.

    An int restarts the same stream on every call; a Generator advances, so calling
    ``train_batched(..., seed=rng)`` repeatedly shuffles differently each time.
    """
    if isinstance(seed, np.random.Generator):
        return seed.integers(0, 2**63, dtype=np.uint64)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer or a np.random.Generator, got {seed!r}")
    return np.random.SeedSequence(int(seed)).generate_state(1, np.uint64)[0]


def _buffers(loss, p, opt, batch, num_threads, epochs):
    """(settings, buffers, history) passed to the training kernels, in their argument order."""
    chain = loss.chain
    nt = chain._threads(batch, num_threads)
    work, slabs, losses, stats = chain._workspace(p.dtype, nt, batch)
    code, hyper, state, step = opt._prepare(p)
    pcode, lam = loss.pen
    settings = (loss.loss.code, loss._lpar, pcode, lam, code, hyper, state, step)
    backup = p.copy()  # p before the previous update (see _train._guarded_update)
    buffers = (np.zeros_like(p), slabs, work, losses, stats, backup)
    return settings, buffers, np.zeros(epochs)


class History(np.ndarray):
    """Per-epoch training losses (a float64 array), with the validation curves as attributes.

    ``val_loss`` and ``val_accuracy``: float64 arrays of the same length, the loss (with the
    penalty) and the accuracy on the validation set after each epoch (accuracy is NaN for
    regression losses); ``None`` when no validation set was given.  Arrays derived from a
    History (slices, arithmetic) are plain data and carry ``None``.
    """

    def __array_finalize__(self, obj):
        self.val_loss = None
        self.val_accuracy = None


class _TextBar:
    """A minimal progress bar on stderr, used when tqdm is not installed."""

    def __init__(self, total):
        import sys

        self.total, self.n, self.post, self.out = total, 0, "", sys.stderr

    def update(self, k):
        self.n += k
        width = 30
        full = width * self.n // max(self.total, 1)
        self.out.write(f"\r[{'#' * full}{'.' * (width - full)}] {self.n}/{self.total} epochs {self.post}")
        self.out.flush()

    def set_postfix_str(self, text, refresh=True):
        self.post = text

    def close(self):
        self.out.write("\n")
        self.out.flush()


def _chunks(epochs, callback, callback_every, progress, per_epoch):
    """Epoch chunk sizes between returns to Python, and the progress bar (or None)."""
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=epochs, unit="epoch")
        except ImportError:
            bar = _TextBar(epochs)
    if callback is not None and callback_every is None:
        callback_every = max(1, epochs // 10)
    if callback_every is not None:
        step = positive_int("callback_every", callback_every)
    elif bar is not None:
        step = max(1, epochs // 100)
    else:
        step = max(epochs, 1)
    if per_epoch:
        step = 1
    return step, bar


def _validation_loss(loss, validation, p):
    """A ChainLoss bound to the validation targets, and the validation inputs (checked now)."""
    if validation is None:
        return None, None
    if not (isinstance(validation, (tuple, list)) and len(validation) == 2):
        raise TypeError(
            "`validation` must be a pair (X_val, y_val): inputs and their labels "
            f"(or targets for regression losses), got {type(validation).__name__}"
        )
    Xv, yv = validation
    try:
        vloss = _rebind(loss, yv)
        vloss._data(Xv, p)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"`validation`: {exc}") from None
    return vloss, Xv


def _run(
    kernel_call,
    epochs,
    hist,
    callback,
    callback_every,
    progress,
    p,
    k_out=None,
    validation=(None, None),
    what="training",
    images=False,
):
    seconds = COMPILE_SECONDS["cnn" if images else "training"]
    with feature(f"{np.dtype(p.dtype).name} {what}", seconds):
        if progress:  # compile (a zero-epoch call) before the bar starts: its rate must not include it
            kernel_call(0, 0)
        return _epochs(kernel_call, epochs, hist, callback, callback_every, progress, p, k_out, validation)


def _epochs(kernel_call, epochs, hist, callback, callback_every, progress, p, k_out, validation):
    vloss, Xv = validation
    step, bar = _chunks(epochs, callback, callback_every, progress, vloss is not None)
    hist = hist.view(History)
    if vloss is not None:
        hist.val_loss = np.full(epochs, np.nan)
        hist.val_accuracy = np.full(epochs, np.nan)
    done = 0
    try:
        while done < epochs:
            k = min(step, epochs - done)
            status, completed = kernel_call(k, done)
            if status != 0:
                e = done + int(completed)
                if status in (E.NONFINITE_LOSS, E.NONFINITE_GRAD, E.NONFINITE_PARAMS):
                    raise TrainingDivergedError(
                        f"training stopped at epoch {e}: {status_message(status)}; `p` holds the last "
                        f"parameters whose loss and update were finite",
                        e,
                        hist[:e].copy(),
                    )
                raise_for_status(status, "X", k_out)
            done += k
            post = f"loss={hist[done - 1]:.4g}"
            if vloss is not None:
                acc, vl = accuracy_and_loss(vloss, Xv, p)
                hist.val_loss[done - 1] = vl
                hist.val_accuracy[done - 1] = acc
                post += f" val_loss={vl:.4g}" + (f" val_acc={acc:.4f}" if acc == acc else "")
            if bar is not None:
                bar.set_postfix_str(post, refresh=False)
                bar.update(k)
            if callback is not None:
                callback(done, float(hist[done - 1]), p)
    finally:
        if bar is not None:
            bar.close()
    return hist


def train_unbatched(
    loss,
    X,
    p,
    opt,
    epochs,
    *,
    num_threads=None,
    callback=None,
    callback_every=None,
    progress=False,
    seed=0,
    validation=None,
) -> History:
    """Full-batch training: one gradient step on all of ``X`` per epoch; ``p`` updated in place.

    Args:
        loss: from ``sc.add_loss(chain, sc.SquaredLoss(Y))``; its targets match the rows of ``X``.
        X: (n, d) float data.  p: the flat parameter vector (updated in place).
        opt: an optimizer (``sc.Adam(1e-3)``); its state carries over to later calls.
        epochs: number of steps.
        num_threads: threads splitting the batch (default: all cores, one thread for tiny work).
        callback: ``callback(epochs_done, loss, p)`` every ``callback_every`` epochs
            (default: ten times per run).  progress: a progress bar (tqdm's when installed, else a
            plain one on stderr).
        seed: the dropout masks' stream (an int or a ``np.random.Generator``; only chains with
            ``sc.Dropout`` use it).
        validation: optional ``(X_val, y_val)`` evaluated after every epoch (inference mode:
            dropout off); the curves land in ``history.val_loss`` / ``history.val_accuracy``.

    Returns:
        :class:`History`: a float64 array of length ``epochs``, the loss (with penalty) before
        each step, with the validation curves as attributes.

    Raises:
        TrainingDivergedError: on a non-finite loss, gradient or update.  ``p`` is left at the
            last parameters whose loss was finite (an update that produced a non-finite loss is
            undone); the optimizer's moments keep that last step.
    """
    X2, T_, labels, epochs = _check(loss, X, p, opt, epochs)
    val = _validation_loss(loss, validation, p)
    chain = loss.chain
    n = X2.shape[0]
    settings, buffers, hist = _buffers(loss, p, opt, n, num_threads, epochs)
    XT = np.ascontiguousarray(X2.T)  # transposed once per call (see _train.train_full)
    TT = np.ascontiguousarray(T_.T) if loss.loss.code != E.LOSS_LOGITCE else T_

    rng = np.array([_stream_state(seed)], dtype=np.uint64)

    def call(k, h0):
        return T.train_full(chain.bound_program(p.dtype), p, XT, TT, labels, *settings, k, hist, h0, *buffers, rng)

    return _run(
        call, epochs, hist, callback, callback_every, progress, p, chain.output_dim, val, images=chain.has_images
    )


def train_batched(
    loss,
    X,
    p,
    opt,
    epochs,
    *,
    batch_size=None,
    seed=0,
    num_threads=None,
    callback=None,
    callback_every=None,
    progress=False,
    validation=None,
) -> History:
    """Minibatch training: each epoch reshuffles the samples (seeded) and steps once per minibatch.

    The samples are read through the permutation (the data set is never copied or
    reordered); the last partial minibatch is used, not dropped; threads split each
    minibatch (each thread's share is one block of the workspace when it fits).

    ``batch_size`` defaults to 32 x threads (64 on two cores): the kernels' inner loops run
    over the samples of a thread's share, so larger batches are faster per epoch (LeNet-5,
    2 cores: about 1.8 s per Fashion-MNIST epoch at batch 32, 0.9 s at 256), while smaller
    ones make more updates per epoch and need fewer epochs (the seed article's LeNet used
    16 x threads); 32 per thread is the middle of that trade.
    ``seed``: an int (each call restarts that shuffling stream, so two calls of 5 epochs
    shuffle like two first 5 epochs) or a ``np.random.Generator`` (advanced by each call;
    use it to resume training).  ``validation=(X_val, y_val)``: evaluated after every epoch.

    Returns a :class:`History`: per-epoch mean minibatch losses (each minibatch's loss taken
    before its step) with ``val_loss`` and ``val_accuracy``.  Other arguments as
    ``train_unbatched``.
    """
    X2, T_, labels, epochs = _check(loss, X, p, opt, epochs)
    val = _validation_loss(loss, validation, p)
    chain = loss.chain
    n = X2.shape[0]
    if batch_size is None:
        from ._jit import default_num_threads

        batch_size = DEFAULT_BATCH_PER_THREAD * (num_threads or default_num_threads())
    batch = min(positive_int("batch_size", batch_size), n)
    settings, buffers, hist = _buffers(loss, p, opt, batch, num_threads, epochs)
    perm = np.arange(n, dtype=np.int64)
    rng = np.array([_stream_state(seed)], dtype=np.uint64)

    def call(k, h0):
        prog = chain.bound_program(p.dtype)
        return T.train_minibatch(prog, p, X2, T_, labels, *settings, k, batch, perm, rng, hist, h0, *buffers)

    return _run(
        call,
        epochs,
        hist,
        callback,
        callback_every,
        progress,
        p,
        chain.output_dim,
        val,
        what="minibatch training",
        images=chain.has_images,
    )


def minimize(loss, X, p, method="L-BFGS-B", *, maxiter=1000, tol=None, options=None, num_threads=None):
    """Minimise ``loss`` over ``p`` with ``scipy.optimize.minimize`` and the exact gradient.

    ``p`` is updated in place with the result (the best point evaluated); returns SciPy's
    ``OptimizeResult``.  The objective is evaluated in the parameters' dtype and handed to SciPy as
    float64.  The rules (best so far, non-finite values, the ConvergenceWarning at the iteration
    cap) are the package's driver's: :mod:`smallchains._optimize`.
    """
    from ._optimize import minimize as drive

    if not isinstance(loss, ChainLoss):
        raise TypeError(f"`loss` must come from sc.add_loss(chain, loss), got {type(loss).__name__}")
    X2, _, _ = loss._data(X, p)
    _require_finite(p)
    work_p = p.copy()
    g = np.empty_like(p)

    def fun(theta):
        work_p[:] = theta
        val = valgrad(g, loss, X2, work_p, num_threads)
        return val, g.astype(np.float64)

    res = drive(fun, p, method=method, maxiter=maxiter, tol=tol, options=options, warn="sc.minimize")
    if np.all(np.isfinite(res.x)):
        p[:] = res.x
    return res
