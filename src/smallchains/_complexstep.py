"""Complex-step derivatives in NumPy: the one helper behind the package's Python-side Jacobians.

For a function that is real-analytic in its input (arithmetic and the usual elementary
functions, written so that complex arrays pass through), d f(x) . d = Im f(x + i H d) / H
exactly to rounding: no subtraction, so no cancellation, whatever the size of H (1e-30 here).
Compiled kernels do the same inside their loops (pk/_foce.py, pk/analytic.py, ode/_user.py).
"""

from __future__ import annotations

import numpy as np

#: the complex step
H = 1e-30


def jacobian(fn, x, directions=None):
    """Derivatives of ``fn`` at ``x`` along ``directions`` (k, *x.shape) (default: the unit
    vectors of a 1-D ``x``), stacked last: shape (*fn(x).shape, k).  ``fn`` must accept a complex
    array of ``x``'s shape."""
    x = np.asarray(x)
    xz = x.astype(complex)
    if directions is None:
        directions = np.eye(x.size).reshape((x.size, *x.shape))
    cols = [np.imag(fn(xz + (1j * H) * d)) / H for d in directions]
    return np.stack(cols, axis=-1) if cols else np.zeros((*np.shape(fn(xz)), 0))
