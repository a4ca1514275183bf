"""The package's warning categories (one place, no dependencies).

Every warning smallchains emits is a subclass of :class:`SmallchainsWarning`, so that
users can silence, log or escalate them as a group or one kind at a time::

    import warnings, smallchains as sc
    warnings.simplefilter("error", sc.SmallchainsWarning)   # every doubtful result raises
    warnings.simplefilter("ignore", sc.CompileCacheWarning)  # but not a recompiled cache entry

Progress and compile notices are not warnings: they go to the ``logging`` logger
``"smallchains"`` (see :mod:`smallchains._log`).
"""

from __future__ import annotations

import warnings


class SmallchainsWarning(UserWarning):
    """Base class of every warning smallchains emits."""


class CompileCacheWarning(SmallchainsWarning):
    """A cached compiled kernel could not be used (unreadable, corrupt or stale); it was recompiled."""


class DataWarning(SmallchainsWarning):
    """A datum was dropped, changed or interpreted in a way the user may not expect."""


class ConvergenceWarning(SmallchainsWarning):
    """An iterative method stopped at its cap or without meeting its convergence test."""


class DoubtfulResultWarning(SmallchainsWarning):
    """A result was computed but should not be trusted as it is (NaN standard errors,
    a variance at its bound, fewer observations than parameters, ...)."""


def warn_unconverged(res, who: str) -> None:
    """A ConvergenceWarning when SciPy's optimizer stopped without success (iteration cap, failed
    line search); ``res`` is SciPy's ``OptimizeResult``."""
    if not res.success:
        warnings.warn(
            f"{who} stopped without converging after {getattr(res, 'nit', '?')} iterations: {res.message} "
            "(raise maxiter, or check the loss and the starting point)",
            ConvergenceWarning,
            stacklevel=3,
        )
