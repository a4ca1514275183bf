"""A run comparison table: several population fits of the same data side by side, as the
model-selection step of an analysis reads them (PsN's ``sumo``/run records, Pirana's run table).

One row per fit: the model and method, the number of estimated parameters, the OFV and ΔOFV
against a reference run, AIC and BIC, the likelihood-ratio test's p-value when the runs are
nested, the covariance step's condition number, the largest eta shrinkage and the convergence
verdict.  ΔOFV compares -2 log likelihoods of the same observations: fits of different data are
refused, naming the run, and fits whose OFVs are different approximations (FOCE-I against
Laplace, say) are compared with a :class:`~smallchains.DoubtfulResultWarning` (an exact OFV, of a
model without random effects, compares with either: each reduces to it without them).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .._warnings import DoubtfulResultWarning

COLUMNS = [
    "run",
    "model",
    "method",
    "ofv_kind",
    "n_params",
    "ofv",
    "dofv",
    "aic",
    "bic",
    "p_if_nested",
    "condition_number",
    "max_shrinkage",
    "converged",
    "covariance",
    "n_subjects",
    "n_obs",
]


def _ofv_kind(method):
    from . import methods

    try:
        return methods.get(method).ofv_kind or ""
    except ValueError:  # (a method no longer registered, e.g. a saved fit of a user's method)
        return ""


def _named(fits, names):
    if isinstance(fits, dict):
        if names is not None:
            raise ValueError("give the runs' names as the dict's keys or as `names`, not both")
        names, fits = list(fits.keys()), list(fits.values())
    else:
        fits = list(fits)
        names = [f"run{k + 1}" for k in range(len(fits))] if names is None else list(names)
    if len(fits) < 1:
        raise ValueError("compare() needs at least one fit")
    if len(names) != len(fits):
        raise ValueError(f"{len(names)} name(s) for {len(fits)} fit(s)")
    names = [str(n) for n in names]
    if len(set(names)) != len(names):
        raise ValueError(f"the runs' names must differ, got {names}")
    return fits, names


def compare(fits, names=None, reference=0):
    """The run comparison table of ``fits`` (a list of :class:`FitResult`, or a dict name -> fit),
    one row per fit, as a pandas DataFrame (``.to_string(index=False)`` prints it).

    Args:
        fits: fits of the same data (the same subjects and observations).
        names: the runs' names (default ``run1``, ``run2``, ... or the dict's keys).
        reference: the run ΔOFV and the p-values are taken against (its index or name; default
            the first).

    Columns: ``run``, ``model`` (the structural model), ``method``, ``ofv_kind`` (what the OFV
    approximates: FOCE-I, Laplace, exact), ``n_params`` (estimated), ``ofv`` (-2 log L without
    n log 2 pi), ``dofv`` (OFV - the reference's), ``aic``, ``bic``, ``p_if_nested`` (the
    likelihood-ratio test of the smaller of the run and the reference within the larger: chi-square
    with the difference in parameters as degrees of freedom; NaN for the same number of parameters.
    Valid only when one model is the other with parameters fixed, with OFVs of one kind, and
    conservative when the fixed value is a variance's bound, 0), ``condition_number`` (of the
    covariance step's correlation matrix, NaN without one), ``max_shrinkage`` (the largest eta
    shrinkage, NaN without random effects), ``converged``, ``covariance`` (the covariance step:
    its kind, ``failed`` or ``none``), ``n_subjects``, ``n_obs``.

    Raises a ValueError for fits of different data (naming the run and what differs) and a
    TypeError for something that is not a population fit (per-subject fits have no common OFV
    to compare).
    """
    import pandas as pd
    from scipy.stats import chi2

    from .result import FitResult

    fits, names = _named(fits, names)
    for name, f in zip(names, fits):
        if not isinstance(f, FitResult):
            raise TypeError(
                f"run {name!r} is a {type(f).__name__}, not a population fit (sc.pk.fit's FitResult with "
                "a population method: 'foce', 'laplace', 'saem', 'map', 'pooled', ...); per-subject fits "
                "have no common OFV"
            )
    if isinstance(reference, str):
        if reference not in names:
            raise ValueError(f"`reference` {reference!r} is not one of the runs {names}")
        ref = names.index(reference)
    else:
        ref = int(reference)
        if not 0 <= ref < len(fits):
            raise ValueError(f"`reference` {reference!r} is not a run's index (0 to {len(fits) - 1})")
    base = fits[ref]
    base_ids = [str(i) for i in base.ids]
    for name, f in zip(names, fits):
        ids = [str(i) for i in f.ids]
        if ids != base_ids or f.n_obs != base.n_obs:
            what = (
                f"subjects {sorted(set(ids) ^ set(base_ids))[:5]} are in one run only"
                if set(ids) != set(base_ids)
                else f"{f.n_obs} observations against {base.n_obs}"
                if f.n_obs != base.n_obs
                else "the subjects in another order"
            )
            raise ValueError(
                f"run {name!r} fitted other data than {names[ref]!r} ({what}): ΔOFV compares fits of the "
                "same observations"
            )
    kinds = [(getattr(f, "settings", None) or {}).get("ofv_kind") or _ofv_kind(f.method) for f in fits]
    # (an exact likelihood, no random effects, is what each approximation reduces to without them)
    if len(set(kinds) - {"exact"}) > 1 or "" in kinds:
        warnings.warn(
            "the runs' OFVs are not all of one kind ("
            + ", ".join(f"{n}: {k or 'not said'}" for n, k in zip(names, kinds))
            + "): their differences mix likelihood approximations, not only models",
            DoubtfulResultWarning,
            stacklevel=2,
        )
    rows = []
    for name, f, kind in zip(names, fits, kinds):
        dofv = float(f.ofv - base.ofv)
        dk = int(f.n_estimated - base.n_estimated)
        if dk == 0 or f is base:
            p = math.nan
        else:  # (the larger model's OFV below the smaller's by dofv)
            drop = -dofv if dk > 0 else dofv
            p = float(chi2.sf(max(drop, 0.0), abs(dk)))
        shrink = list((f.shrinkage or {}).values())
        kind_cov = getattr(f, "cov_kind", None)
        rows.append(
            {
                "run": name,
                "model": f.model.structural.name,
                "method": f.method,
                "ofv_kind": kind,
                "n_params": int(f.n_estimated),
                "ofv": float(f.ofv),
                "dofv": dofv,
                "aic": float(f.aic),
                "bic": float(f.bic),
                "p_if_nested": p,
                "condition_number": float(f.condition_number) if f.cov is not None else math.nan,
                "max_shrinkage": float(np.max(shrink)) if shrink else math.nan,
                "converged": bool(f.converged),
                "covariance": (kind_cov if f.cov is not None else "failed") if kind_cov else "none",
                "n_subjects": int(f.n_subjects),
                "n_obs": int(f.n_obs),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)
