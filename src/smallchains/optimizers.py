"""Optimizers over the flat parameter vector.

Each optimizer is a small object holding its hyperparameters and its state
(moment buffers and step count).  The update itself is one fused compiled loop
(``_train.opt_update``) run inside the training kernels.  The state survives
across calls of ``train_unbatched``/``train_batched``, so training can be
resumed; it is created on first use for the parameter vector's length and dtype
and ``reset()`` clears it.
"""

from __future__ import annotations

import numpy as np

from . import _train as T
from ._validate import check_params


class Optimizer:
    """Base class: ``code``, ``hyper`` (float64 array) and lazily created state."""

    code = -1

    def __init__(self):
        self.state = None
        self.step = np.zeros(1, dtype=np.int64)

    def _hyper(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def reset(self):
        """Forget the moment buffers and the step count."""
        self.state = None
        self.step[:] = 0

    @property
    def steps_taken(self) -> int:
        return int(self.step[0])

    def _prepare(self, p: np.ndarray):
        if self.state is None:
            self.state = np.zeros((2, p.shape[0]), dtype=p.dtype)
        elif self.state.shape[1] != p.shape[0] or self.state.dtype != p.dtype:
            raise ValueError(
                f"{type(self).__name__} holds state for {self.state.shape[1]} {self.state.dtype} parameters "
                f"but `p` has {p.shape[0]} {p.dtype}; call opt.reset() or use a new optimizer for another model"
            )
        return self.code, self._hyper(), self.state, self.step

    def update(self, p: np.ndarray, g: np.ndarray) -> None:
        """Apply one update to ``p`` in place from gradient ``g`` (for hand-written loops)."""
        check_params(p, np.shape(p)[0] if np.ndim(p) == 1 else -1)
        if not isinstance(g, np.ndarray) or g.shape != p.shape or g.dtype.kind != "f":
            raise ValueError(
                f"`g` must be a float array of the shape {p.shape} of `p`, got {getattr(g, 'shape', type(g).__name__)}"
            )
        code, hyper, state, step = self._prepare(p)
        T.opt_update(code, hyper, state, step, p, np.ascontiguousarray(g, dtype=p.dtype))


def _check_lr(lr):
    if not (isinstance(lr, (int, float, np.floating)) and np.isfinite(lr) and lr > 0):
        raise ValueError(f"`lr` (the learning rate) must be a positive finite number, got {lr!r}")
    return float(lr)


def _number(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v):
        raise ValueError(f"`{name}` must be a finite number, got {v!r}")
    return float(v)


def _check_unit(name, v):
    if not (0.0 <= _number(name, v) < 1.0):
        raise ValueError(f"`{name}` must be in [0, 1), got {v!r}")
    return float(v)


def _check_decay(v):
    if _number("weight_decay", v) < 0:
        raise ValueError(f"`weight_decay` must be >= 0, got {v!r}")
    return float(v)


def _check_eps(v):
    if _number("eps", v) <= 0:
        raise ValueError(f"`eps` must be > 0, got {v!r}")
    return float(v)


class Adam(Optimizer):
    """Adam (Kingma & Ba), PyTorch's definition; ``weight_decay`` adds ``wd * p`` to the gradient.

    Example: ``sc.train_unbatched(loss, X, p, sc.Adam(1e-3), epochs=1000)``.
    """

    code = T.OPT_ADAM

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__()
        self.lr = _check_lr(lr)
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"`betas` must be a pair (beta1, beta2), got {betas!r}")
        self.betas = (_check_unit("betas[0]", betas[0]), _check_unit("betas[1]", betas[1]))
        self.eps = _check_eps(eps)
        self.weight_decay = _check_decay(weight_decay)

    def _hyper(self):
        return np.array([self.lr, self.betas[0], self.betas[1], self.eps, self.weight_decay])

    def __repr__(self):
        return (
            f"{type(self).__name__}(lr={self.lr}, betas={self.betas}, eps={self.eps}, weight_decay={self.weight_decay})"
        )


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): ``p *= 1 - lr*wd`` each step."""

    code = T.OPT_ADAMW

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(lr, betas, eps, weight_decay)


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, PyTorch's definition."""

    code = T.OPT_SGD

    def __init__(self, lr=1e-2, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__()
        self.lr = _check_lr(lr)
        self.momentum = _check_unit("momentum", momentum)
        if nesterov and self.momentum == 0:
            raise ValueError("Nesterov momentum needs `momentum` > 0")
        self.nesterov = bool(nesterov)
        self.weight_decay = _check_decay(weight_decay)

    def _hyper(self):
        return np.array([self.lr, self.momentum, float(self.nesterov), self.weight_decay])

    def __repr__(self):
        return f"SGD(lr={self.lr}, momentum={self.momentum}, nesterov={self.nesterov})"


class RMSProp(Optimizer):
    """RMSProp, PyTorch's definition (``alpha`` the smoothing constant)."""

    code = T.OPT_RMSPROP

    def __init__(self, lr=1e-3, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0):
        super().__init__()
        self.lr = _check_lr(lr)
        self.alpha = _check_unit("alpha", alpha)
        self.eps = _check_eps(eps)
        self.momentum = _check_unit("momentum", momentum)
        self.weight_decay = _check_decay(weight_decay)

    def _hyper(self):
        return np.array([self.lr, self.alpha, self.eps, self.momentum, self.weight_decay])

    def __repr__(self):
        return f"RMSProp(lr={self.lr}, alpha={self.alpha}, momentum={self.momentum})"
