"""Exceptions and the mapping from kernel status codes to them (one table)."""

from __future__ import annotations

from . import _engine as E


class TrainingDivergedError(FloatingPointError):
    """Training met a non-finite loss or gradient.

    Attributes:
        epoch: the (0-based) epoch at which it happened.
        history: the loss history up to (not including) that epoch.

    The parameters are left at the last values whose loss was finite: the update
    that produced a non-finite loss, or that made the parameters themselves
    non-finite, is undone.  With ``train_batched`` the minibatch steps taken earlier
    in the failing epoch are kept.  The optimizer's moment buffers are not rolled back.
    """

    def __init__(self, message, epoch, history):
        super().__init__(message)
        self.epoch = epoch
        self.history = history


_MESSAGES = {
    E.NONFINITE_INPUT: "`{x}` contains NaN or Inf; clean or impute the data first "
    "(e.g. X[~np.isfinite(X)] = 0, or drop those rows)",
    E.NONFINITE_LOSS: "the loss is not finite; check the targets for NaN/Inf or lower the learning rate",
    E.NONFINITE_GRAD: "the gradient is not finite; lower the learning rate or rescale the data",
    E.NONFINITE_PARAMS: "the update made the parameters non-finite; lower the learning rate",
    E.WORK_TOO_SMALL: "the workspace is too small; allocate chain.work_size(batch) elements",
    E.BAD_SHAPE: "an array passed to a compiled kernel has the wrong length or shape for the chain "
    "(see the shapes in smallchains.kernels)",
    E.LABEL_OUT_OF_RANGE: "a label is outside 0..{k}; labels must be integers in 0..K-1 for K outputs",
    E.NOT_BOUND: "internal error: a chain's program reached a compiled driver without being bound to its "
    "dtype (smallchains._engine.bind); please report this",
}


def raise_for_status(status: int, x="X", k=None) -> None:
    """Raise the exception that a kernel's status code stands for (nothing when OK)."""
    if status == E.OK:
        return
    msg = _MESSAGES.get(int(status), f"internal error: unknown kernel status {status}")
    raise ValueError(msg.format(x=x, k=None if k is None else k - 1))


def status_message(status: int, x="X", k=None) -> str:
    return _MESSAGES.get(int(status), f"status {status}").format(x=x, k=None if k is None else k - 1)
