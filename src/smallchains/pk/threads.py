"""The thread rules of the population fits: how many threads spread the subjects, and NumPy's BLAS
held to one thread meanwhile."""

from __future__ import annotations

import os


def number_of_threads(threads, per_subject, n_subjects=1, compiled=False):
    """The number of threads.  ``None``: every core when the initial-value check
    (:meth:`Problem.diagnose`, ``per_subject`` seconds a subject) takes more than 0.15 ms a
    subject, or in all more than 0.2 ms when the compiled FOCE-I step covers every subject
    (``compiled``) and 5 ms otherwise, and threadpoolctl can hold NumPy's BLAS to one thread (its
    own worker threads otherwise compete with ours: measured slower than one thread), else 1.
    With ``compiled`` the check is one compiled prediction a subject, and an objective with its
    gradient costs about 10-110 times as much (measured at the initial values, the modes started
    from zero: the least with steady-state doses); the step hands one chunk of subjects to each
    thread per call.  Measured (FOCE-I fits, wall time, one and two threads): Theophylline (check
    0.15 ms) 0.020 and 0.021 s, Phenobarbital (0.25 ms) 0.043 and 0.034 s, Quinidine (0.76 ms)
    0.217 and 0.146 s.  Otherwise the check is an ODE-path prediction a subject, and the NumPy
    step's threads gain only above 5 ms (measured: Phenobarbital's 59 subjects, 2.4 ms, ran
    slower on two threads)."""
    if threads is not None:
        t = int(threads)
        if t < 1:
            raise ValueError(f"`threads` must be >= 1, got {threads!r}")
        return t
    if per_subject < 1.5e-4 and per_subject * n_subjects < (2e-4 if compiled else 5e-3):
        return 1
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        return 1
    return max(1, min(os.cpu_count() or 1, 8))


def blas_single_threaded(on):
    """Hold NumPy's BLAS to one thread during a fit (threadpoolctl, if installed): its matrices are
    a few rows wide, so BLAS's worker threads only spin (measured: a one-thread Theophylline FOCE-I
    fit took twice the CPU time with them, for the same wall time), and when our threads run
    subjects they would compete with them."""
    import contextlib

    global _CONTROLLER
    if not on:
        return contextlib.nullcontext()
    if _CONTROLLER is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            return contextlib.nullcontext()
        # (found once: scanning the loaded libraries costs milliseconds, a limit then microseconds;
        # by the first fit NumPy's and SciPy's BLAS are loaded)
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1)


_CONTROLLER = None
