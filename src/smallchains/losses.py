"""Losses and penalties.

One scaling everywhere: a loss is the **mean over samples of the per-sample
loss**, and the per-sample loss sums over the outputs.  ``loss(X, p)``,
``sc.valgrad``, the training histories and ``accuracy_and_loss`` all report
this same number (plus the penalty, when one is attached).

* ``SquaredLoss(Y)``:  mean_s  sum_j (f(x_s)_j - Y[s, j])^2
* ``AbsoluteLoss(Y)``: mean_s  sum_j |f(x_s)_j - Y[s, j]|
* ``HuberLoss(Y, delta=1)``: mean_s sum_j h(r), h(r) = r^2/2 if |r| <= delta else delta*(|r| - delta/2)
* ``LogitCrossEntropyLoss(y)``: mean_s (logsumexp(z_s) - z_s[y_s]) with integer labels 0..K-1
  (fused log-softmax on the chain's raw outputs, the logits)
* ``L1Penalty(lam)``: lam * sum |W|;  ``L2Penalty(lam)``: lam * sum W^2, over the weight
  matrices (biases are not penalised).
"""

from __future__ import annotations

import numpy as np

from . import _engine as E
from . import _train as T
from ._errors import raise_for_status
from ._validate import as_data, check_out, check_params, writable


class Loss:
    """Base class: a loss bound to its targets."""

    code = -1

    def _lpar(self):
        return np.zeros(1)

    def num_samples(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError


class _RegressionLoss(Loss):
    def __init__(self, Y):
        Y = np.asarray(Y)
        if Y.dtype.kind not in "f" or Y.dtype.itemsize < 4:
            raise TypeError(f"targets `Y` have dtype {Y.dtype}; pass float32 or float64 targets")
        if Y.ndim == 1:
            Y = Y.reshape(-1, 1)
        if Y.ndim != 2 or Y.shape[0] == 0:
            raise ValueError(f"targets `Y` have shape {Y.shape}; pass an array of shape (n, outputs)")
        if not np.isfinite(Y).all():
            raise ValueError("targets `Y` contain NaN or Inf; remove or impute those samples first")
        self.Y = np.array(Y, copy=True)  # the loss owns its targets: later edits of `Y` do not leak in
        self._cache = {}

    def num_samples(self):
        return self.Y.shape[0]

    def _check_chain(self, chain):
        if self.Y.shape[1] != chain.output_dim:
            raise ValueError(
                f"targets have {self.Y.shape[1]} columns but the chain has {chain.output_dim} "
                f"outputs; pass targets of shape (n, {chain.output_dim})"
            )

    def _targets(self, dtype):
        T_ = self._cache.get(dtype.char)
        if T_ is None:
            T_ = np.ascontiguousarray(self.Y, dtype=dtype)
            self._cache[dtype.char] = T_
        return T_, _NO_LABELS

    def __repr__(self):
        return f"{type(self).__name__}(<targets {self.Y.shape}>)"


_NO_LABELS = np.zeros(1, dtype=np.int64)


class SquaredLoss(_RegressionLoss):
    """Squared error: mean over samples of sum over outputs of (prediction - target)^2."""

    code = E.LOSS_SQUARED


class AbsoluteLoss(_RegressionLoss):
    """Absolute error: mean over samples of sum over outputs of |prediction - target|."""

    code = E.LOSS_ABSOLUTE


class HuberLoss(_RegressionLoss):
    """Huber loss with threshold ``delta`` (quadratic inside, linear outside)."""

    code = E.LOSS_HUBER

    def __init__(self, Y, delta=1.0):
        super().__init__(Y)
        if (
            isinstance(delta, bool)
            or not isinstance(delta, (int, float, np.integer, np.floating))
            or not (np.isfinite(delta) and delta > 0)
        ):
            raise ValueError(f"`delta` must be a positive number, got {delta!r}")
        self.delta = float(delta)

    def _lpar(self):
        return np.array([self.delta])


class LogitCrossEntropyLoss(Loss):
    """Cross-entropy of the softmax of the chain's outputs (logits) against integer labels 0..K-1."""

    code = E.LOSS_LOGITCE

    def __init__(self, labels):
        y = np.asarray(labels)
        if y.dtype.kind not in "iu":
            raise TypeError(
                f"`labels` have dtype {y.dtype}; pass integer class labels 0..K-1 (e.g. labels.astype(np.int64))"
            )
        if y.ndim != 1 or y.shape[0] == 0:
            raise ValueError(f"`labels` have shape {y.shape}; pass a 1-D array of n integer labels")
        if y.dtype.kind == "u" and int(y.max()) > np.iinfo(np.int64).max:
            raise ValueError(f"label {int(y.max())} is too large; labels must be integers in 0..K-1")
        self.labels = np.array(y, dtype=np.int64, copy=True)  # later edits of `labels` do not leak in
        self._dummy = {}

    def num_samples(self):
        return self.labels.shape[0]

    def _check_chain(self, chain):
        K = chain.output_dim
        lo, hi = int(self.labels.min()), int(self.labels.max())
        if lo < 0 or hi >= K:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"label {bad} is out of range for a chain with {K} outputs; labels must be integers in 0..{K - 1}"
            )

    def _targets(self, dtype):
        d = self._dummy.get(dtype.char)
        if d is None:
            d = self._dummy[dtype.char] = np.zeros((1, 1), dtype=dtype)
        return d, self.labels

    def __repr__(self):
        return f"LogitCrossEntropyLoss(<{self.labels.shape[0]} labels>)"


class Penalty:
    code = 0

    def __init__(self, lam):
        if (
            isinstance(lam, bool)
            or not isinstance(lam, (int, float, np.integer, np.floating))
            or not (np.isfinite(lam) and lam >= 0)
        ):
            raise ValueError(f"penalty strength must be a non-negative number, got {lam!r}")
        self.lam = float(lam)

    def __repr__(self):
        return f"{type(self).__name__}({self.lam})"


class L1Penalty(Penalty):
    """lam * sum of |weights| (biases excluded)."""

    code = 1


class L2Penalty(Penalty):
    """lam * sum of weights^2 (biases excluded); gradient 2*lam*W."""

    code = 2


class ChainLoss:
    """A chain with a loss (and an optional penalty) attached: ``sc.add_loss(chain, loss)``.

    ``loss(X, p)`` returns the mean loss over the samples (plus the penalty).
    The rows of ``X`` must correspond to the loss's targets.
    """

    def __init__(self, chain, loss, penalty=None):
        from .chain import SimpleChain

        if not isinstance(chain, SimpleChain):
            raise TypeError(f"add_loss: `chain` must be a SimpleChain, got {type(chain).__name__}")
        if isinstance(loss, Penalty):
            raise TypeError("add_loss: pass the penalty as `penalty=`, and a loss (sc.SquaredLoss(Y), ...) first")
        if not isinstance(loss, Loss):
            raise TypeError(f"add_loss: `loss` must be a loss such as sc.SquaredLoss(Y), got {loss!r}")
        if penalty is not None and not isinstance(penalty, Penalty):
            raise TypeError(f"add_loss: `penalty` must be sc.L1Penalty or sc.L2Penalty, got {penalty!r}")
        loss._check_chain(chain)
        self.chain = chain
        self.loss = loss
        self.penalty = penalty
        self._lpar = loss._lpar()

    @property
    def pen(self):
        return (0, 0.0) if self.penalty is None else (self.penalty.code, self.penalty.lam)

    def _data(self, X, p):
        """Validated (X2, T, labels) for parameters ``p``."""
        check_params(p, self.chain.num_params)
        X2, _ = as_data("X", X, p.dtype, self.chain.input_dim, allow_1d=False, shape=self.chain.input_shape)
        n = self.loss.num_samples()
        if X2.shape[0] != n:
            raise ValueError(
                f"`X` has {X2.shape[0]} samples but the loss has targets for {n}; "
                f"pass the X that matches the targets, or a new loss for new data"
            )
        T_, labels = self.loss._targets(p.dtype)
        return X2, T_, labels

    def __call__(self, X, p) -> float:
        X2, T_, labels = self._data(X, p)
        value, _ = _value(self, X2, T_, labels, p, None, None)
        return value

    def with_penalty(self, penalty):
        return ChainLoss(self.chain, self.loss, penalty)

    def __repr__(self):
        pen = "" if self.penalty is None else f", penalty={self.penalty!r}"
        return f"add_loss({self.chain!r}, {self.loss!r}{pen})"


def _value(closs, X2, T_, labels, p, g, num_threads):
    chain = closs.chain
    n = X2.shape[0]
    nt = chain._threads(n, num_threads)
    work, slabs, losses, stats = chain._workspace(p.dtype, nt, n)
    want = g is not None
    gg = g if want else slabs[0]
    prog = chain.bound_program(p.dtype)
    val, st = E.valgrad(
        prog,
        writable(p),
        X2,
        prog[0],
        E.ROWS,
        0,
        n,
        T_,
        labels,
        closs.loss.code,
        closs._lpar,
        gg,
        slabs,
        work,
        losses,
        stats,
        want,
        -1,
    )
    raise_for_status(st, "X", chain.output_dim)
    code, lam = closs.pen
    if code:
        val += E.penalty(chain.program, p, gg, code, lam, want)
    return float(val), st


def add_loss(chain, loss, penalty=None) -> ChainLoss:
    """Attach ``loss`` (and an optional ``penalty``) to ``chain``; see :class:`ChainLoss`."""
    return ChainLoss(chain, loss, penalty)


def valgrad(g, loss, X, p, num_threads=None) -> float:
    """Write dL/dp into ``g`` (overwritten) and return L, the mean loss plus penalty.

    ``g`` must be a C-contiguous array like ``p``.  After the first call for a
    given batch size nothing is allocated (workspaces are cached on the chain).
    """
    if not isinstance(loss, ChainLoss):
        raise TypeError(f"`loss` must come from sc.add_loss(chain, loss), got {type(loss).__name__}")
    X2, T_, labels = loss._data(X, p)
    check_out("g", g, p.shape, p.dtype)
    if np.may_share_memory(g, p) or np.may_share_memory(g, X):
        raise ValueError("`g` shares memory with `p` or `X`; the gradient needs its own array (np.empty_like(p))")
    value, _ = _value(loss, X2, T_, labels, p, g, num_threads)
    return value


def accuracy_and_loss(loss, X, *args):
    """``(accuracy, mean loss)`` of ``loss`` on ``X``: ``accuracy_and_loss(loss, X, p)``.

    ``accuracy_and_loss(loss, X, y, p)`` evaluates on other data with targets ``y``
    (labels for cross-entropy, outputs for regression losses).  Accuracy is the
    fraction of samples whose largest logit is the label; it is NaN for regression
    losses, which have no accuracy.  The loss includes the penalty when one is attached.
    """
    if not isinstance(loss, ChainLoss):
        raise TypeError(f"`loss` must come from sc.add_loss(chain, loss), got {type(loss).__name__}")
    if len(args) == 1:
        (p,) = args
        closs = loss
    elif len(args) == 2:
        y, p = args
        closs = _rebind(loss, y)
    else:
        raise TypeError("use accuracy_and_loss(loss, X, p) or accuracy_and_loss(loss, X, y, p)")
    X2, T_, labels = closs._data(X, p)
    chain = closs.chain
    work, _, _, _ = chain._workspace(p.dtype, 1, X2.shape[0])
    prog = chain.bound_program(p.dtype)
    value, acc, st = T.evaluate(prog, writable(p), X2, T_, labels, closs.loss.code, closs._lpar, work[0])
    raise_for_status(st, "X", chain.output_dim)
    code, lam = closs.pen
    if code:
        value += E.penalty(chain.program, p, p, code, lam, False)
    if closs.loss.code != E.LOSS_LOGITCE:
        acc = float("nan")
    return float(acc), float(value)


def _rebind(closs, y):
    old = closs.loss
    if isinstance(old, LogitCrossEntropyLoss):
        new = LogitCrossEntropyLoss(y)
    elif isinstance(old, HuberLoss):
        new = HuberLoss(y, old.delta)
    else:
        new = type(old)(y)
    return ChainLoss(closs.chain, new, closs.penalty)


def predict_proba(chain, X, p, num_threads=None) -> np.ndarray:
    """Class probabilities: the softmax of the chain's outputs (logits), shape (n, classes).

    Computed in float64 from the logits with the max subtracted (no overflow).
    """
    Z = np.asarray(chain(X, p, num_threads=num_threads), dtype=np.float64)
    one = Z.ndim == 1
    Z = Z.reshape(1, -1) if one else Z
    Z = Z - Z.max(axis=1, keepdims=True)
    np.exp(Z, out=Z)
    Z /= Z.sum(axis=1, keepdims=True)
    return Z[0] if one else Z


def predict(chain, X, p, num_threads=None) -> np.ndarray:
    """Predicted class per sample: the index of the largest logit (int64, shape (n,))."""
    Z = chain(X, p, num_threads=num_threads)
    return np.asarray(Z.argmax(axis=-1), dtype=np.int64)
