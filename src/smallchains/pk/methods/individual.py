"""Individual fits: each subject alone, its own typical values and residual error (a pooled fit of
that subject's data).  It fits the interface only at the top (:meth:`EstimationMethod.fit`): its
result is an :class:`~smallchains.pk.result.IndividualFits` of per-subject pooled fits, not one
population :class:`FitResult`, so it has no run, objective, convergence criterion or covariance
step of its own (each subject's fit has the pooled method's)."""

from __future__ import annotations

import math
import time
import warnings

import numpy as np

from ..._warnings import DataWarning
from ..result import IndividualFits
from . import register
from .base import EstimationMethod


@register
class Individual(EstimationMethod):
    """Each subject fitted alone (a pooled fit per subject)."""

    name = "individual"

    def fit(self, model, data, x0, setup):
        """A pooled fit per subject (with the fit's options; warnings re-said with the subject's ID):
        an :class:`IndividualFits`.  Subjects without an observation to fit are left out (said)."""
        from ..data import Population
        from ..fit import fit

        xs, opts, settings = x0, setup.opts, setup.settings

        fits = []
        for s in data.subjects:
            pop = Population([s], data.covariate_names, data.columns)
            r = None
            if s.n_obs and (setup.blq != "m1" or np.any(np.asarray(s.blq) == 0)):
                with warnings.catch_warnings(record=True) as caught:  # re-said below with the subject's ID
                    warnings.simplefilter("always")
                    r = fit(
                        model,
                        pop,
                        "pooled",
                        x0=xs,
                        starts=setup.starts,
                        seed=setup.seed,
                        threads=None,
                        rtol=setup.rtol,
                        atol=setup.atol,
                        solver=setup.solver,
                        ss_tol=setup.ss_tol,
                        se=setup.se,
                        progress=setup.progress,
                        time_varying=settings["time_varying"],
                        analytic=settings["analytic"],
                        blq=setup.blq,
                        lloq=setup.lloq,
                        **opts,
                    )
                for w in caught:
                    warnings.warn(f"ID {s.id}: {w.message}", w.category, stacklevel=3)
            fits.append((s.id, r))
        ok = [(i, r) for i, r in fits if r is not None]
        if len(ok) < len(fits):
            from ..estimation import _ids

            warnings.warn(
                f"{len(fits) - len(ok)} subject(s) have no observation to fit (every record MDV = 1 or "
                f"BLQ = 1) and are left out: ID {_ids([i for i, r in fits if r is None])}",
                DataWarning,
                stacklevel=3,
            )
        ofv = float(sum(r.ofv for _, r in ok))
        n_obs = sum(r.n_obs for _, r in ok)
        n_est = sum(r.n_estimated for _, r in ok)
        m2ll = -2.0 * sum(r.loglik for _, r in ok)  # (each fit's constants: censored observations have none)
        diag = {k: np.concatenate([r.diagnostics[k] for _, r in ok]) for k in ok[0][1].diagnostics}
        return IndividualFits(
            model=model,
            method="individual",
            fits=dict(ok),
            ofv=ofv,
            loglik=-0.5 * m2ll,
            aic=m2ll + 2 * n_est,
            bic=m2ll + n_est * math.log(n_obs),
            n_obs=n_obs,
            n_subjects=len(ok),
            n_estimated=n_est,
            diagnostics=diag,
            elapsed=time.perf_counter() - setup.t_start,
            settings=settings,
            skipped=[i for i, r in fits if r is None],
        )
