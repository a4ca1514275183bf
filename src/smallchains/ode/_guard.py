"""A checked first call of a right-hand side, before the compiled solver runs it.

Numba compiles without bounds checks, so a right-hand side that reads ``p[3]`` when ``p`` has
two entries reads whatever lies beyond (a wrong answer), and one that writes ``du[7]`` with two
states overwrites memory.  The first evaluation of each model at each size therefore runs on
guarded buffers: ``du``, ``u`` and ``p`` are views into arrays padded on both sides, the
padding of ``u`` and ``p`` holding NaN and that of ``du`` a sentinel.  A changed guard, an
input modified, an entry of ``du`` left unwritten or a NaN from finite inputs is refused with
a message naming the index.  ``check=False`` (``sc.solve``, ``sc.gradient_function``) skips it.
"""

from __future__ import annotations

import numpy as np

GUARD = 8
_SENTINEL = 1.2345678901234567e300


def _padded(values, fill):
    """(buffer, view of it holding ``values``, the view's offset in the buffer).

    NumPy gives an empty slice its base's data pointer, so the view of an empty vector starts
    at the buffer's first element: reads beyond it then land at offset 0, not GUARD."""
    buf = np.full(values.shape[0] + 2 * GUARD, fill)
    buf[GUARD : GUARD + values.shape[0]] = values
    view = buf[GUARD : GUARD + values.shape[0]]
    return buf, view, (view.ctypes.data - buf.ctypes.data) // buf.itemsize


def _evaluate(fn, u0, p, t, fill, nan_at=None):
    """Evaluate ``fn`` with ``du`` guarded by the sentinel and ``u``, ``p`` padded with ``fill``;
    ``nan_at=(label, index)`` puts one NaN at that index past the end of ``u`` or ``p``.
    Returns (du's buffer, u, p as the function left them)."""
    n, m = u0.shape[0], p.shape[0]
    du_buf = np.full(n + 2 * GUARD, _SENTINEL)
    du = du_buf[GUARD : GUARD + n]
    bufs = {"u": _padded(u0, fill), "p": _padded(p, fill)}
    if nan_at is not None:
        buf, _, off = bufs[nan_at[0]]
        buf[off + nan_at[1]] = np.nan
    u, pv = bufs["u"][1], bufs["p"][1]
    fn.rhs(du, u, pv, t, fn.iw, fn.workspace(n, m))
    return du_buf, u, pv


def check_rhs(fn, u0, p, t):
    """Evaluate ``fn`` once at (u0, p, t) on guarded buffers; ValueError naming what went wrong."""
    n, m = u0.shape[0], p.shape[0]
    key = (n, m)
    done = fn.__dict__.setdefault("_guard_checked", set())
    if key in done or not (np.all(np.isfinite(u0)) and np.all(np.isfinite(p))):
        return
    name = f"the right-hand side {fn.name}"
    fn.addr  # noqa: B018 - compiles the user's pieces and sets their addresses in fn.iw
    du_buf, u_after, p_after = _evaluate(fn, u0, p, t, np.nan)
    du = du_buf[GUARD : GUARD + n]
    lo = [GUARD - j for j in range(1, GUARD + 1) if du_buf[GUARD - j] != _SENTINEL]
    hi = [j for j in range(GUARD) if du_buf[GUARD + n + j] != _SENTINEL]
    if hi or lo:
        where = f"du[{n + hi[0]}]" if hi else f"the memory just before du (offset -{GUARD - lo[0] + 1})"
        raise ValueError(
            f"{name} writes {where}, but the system has {n} state(s) (du[0]..du[{n - 1}]): it "
            "would overwrite other memory; check the indices, or pass u0 with the right length"
        )
    if not np.array_equal(u_after, u0) or not np.array_equal(p_after, p):
        which = "u" if not np.array_equal(u_after, u0) else "p"
        raise ValueError(f"{name} modifies its input `{which}`; a right-hand side must only write du")
    unset = np.flatnonzero(du == _SENTINEL)
    if unset.size:
        raise ValueError(
            f"{name} leaves du[{unset[0]}] unwritten (it must write every entry of du, e.g. "
            f"du[{unset[0]}] = 0.0 for a constant state)"
        )
    if np.all(np.isfinite(du)):
        done.add(key)
        return
    # a NaN from finite inputs: out-of-bounds reads of u or p (their padding is NaN), or f itself
    baseline = _evaluate(fn, u0, p, t, 0.5)[0]  # every padding finite
    for label, size in (("p", m), ("u", n)) if np.all(np.isfinite(baseline)) else ():
        for k in range(GUARD):
            if not np.all(np.isfinite(_evaluate(fn, u0, p, t, 0.5, (label, size + k))[0])):
                hint = (
                    "pass the parameters: sc.solve(f, u0, tspan, p)"
                    if label == "p" and size == 0
                    else f"pass `{label}` with every entry the function reads"
                )
                have = f"has {size} entries ({label}[0]..{label}[{size - 1}])" if size else "is empty"
                raise ValueError(f"{name} reads {label}[{size + k}], but `{label}` {have}: {hint}")
    bad = np.flatnonzero(~np.isfinite(du))
    raise ValueError(
        f"{name} returns du[{bad[0]}] = {du[bad[0]]} at t = {t:g} from finite u0 and p; the solve "
        "cannot start (check the formula, e.g. a division by zero or the log of a negative number)"
    )
