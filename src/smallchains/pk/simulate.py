"""Simulating observations from a population model: data sets for simulation studies and VPCs."""

from __future__ import annotations

import dataclasses

import numpy as np

from .data import Population
from .estimation import Problem


def simulate_data(
    model,
    data,
    x=None,
    *,
    seed=0,
    etas=None,
    n=1,
    rtol=1e-8,
    atol=1e-10,
    solver=None,
    ss_tol=None,
    residual=True,
    time_varying="nocb",
):
    """New data sets like ``data`` (same doses, times, covariates) with simulated observations.

    Each subject draws eta ~ N(0, Omega) (or uses the rows of ``etas``) and each observation
    adds residual error from the model's error model (unless ``residual=False``).

    Args:
        model: a :class:`PopulationModel`; ``x`` its parameters (default ``model.x0``).
        data: the design (a :class:`Population`).
        n: the number of replicate data sets.

    Returns:
        (populations, etas): a list of ``n`` :class:`Population` and the random effects used
        (n, n_subjects, n_eta).  BLQ records are simulated too (their BLQ flag is kept).
    """
    from ..ode.tableau import Vern7

    x = model.x0 if x is None else np.asarray(x, dtype=float)
    if x.shape != (model.n_x,):
        raise ValueError(f"`x` must have {model.n_x} entries ({model.names}), got {x.shape}")
    n = int(n)
    if n < 1:
        raise ValueError(f"`n` must be >= 1, got {n}")
    solver = Vern7() if solver is None else solver
    # every record of every subject is simulated: bind a copy with the BLQ flags cleared
    plain = Population(
        [dataclasses.replace(s, blq=np.zeros_like(s.blq)) for s in data.subjects], data.covariate_names, data.columns
    )
    P = Problem(model, plain, rtol=rtol, atol=atol, solver=solver, ss_tol=ss_tol, time_varying=time_varying)
    rng = np.random.default_rng(seed)
    q = model.n_eta
    Om = model.omega(x)
    L = np.linalg.cholesky(Om) if q else np.zeros((0, 0))
    by_id = {s.subject.id: s for s in P.subjects}
    out, all_etas = [], np.zeros((n, len(data.subjects), q))
    psi = x[model.blocks["psi"]]
    for r in range(n):
        subjects = []
        for i, s in enumerate(data.subjects):
            ev = by_id.get(s.id)
            if etas is not None:
                eta = np.asarray(etas, dtype=float)[i]
            else:
                eta = L @ rng.standard_normal(q)
            all_etas[r, i] = eta
            if ev is None:
                subjects.append(s)
                continue
            res = ev.predict(x, eta)
            if res is None:
                raise RuntimeError(f"the ODE solve failed simulating subject {s.id} (eta {eta})")
            f = res[2]
            dv = f.copy()
            if residual:
                V, _, _ = model.error.variance(f, psi)
                dv = f + np.sqrt(V) * rng.standard_normal(f.shape[0])
            subjects.append(dataclasses.replace(s, dv=dv))
        out.append(Population(subjects, data.covariate_names, data.columns))
    P.close()
    return out, all_etas


def simulate_regimen(
    model, x, regimen, *, times, n=1, covariates=None, seed=0, dvid=1, rtol=1e-8, atol=1e-10, solver=None
):
    """``n`` new subjects on ``regimen`` (see :func:`smallchains.pk.regimen`), observed at ``times``.

    Each subject draws eta ~ N(0, Omega) at the parameters ``x``; the observations are the model's
    output ``dvid`` with residual error (``DV``) and without (``IPRED``).  ``covariates``: {name:
    value} for every subject, or {name: sequence of ``n`` values}.  Returns a tidy DataFrame with
    columns ID, TIME, DVID, IPRED, DV and ETA_<name> per random effect.  The subjects are built as
    NONMEM records and read by :func:`read_data`, so they follow the data rules exactly.
    """
    import pandas as pd

    from .data import read_data
    from .regimen import Regimen

    if not isinstance(regimen, Regimen):
        raise TypeError(f"`regimen` must come from sc.pk.regimen(...), got {type(regimen).__name__}")
    if len(regimen) == 0:
        raise ValueError("`regimen` has no doses")
    n = int(n)
    if n < 1:
        raise ValueError(f"`n` must be >= 1, got {n}")
    ts = np.asarray(times, dtype=float).ravel()
    if ts.size == 0 or not np.all(np.isfinite(ts)):
        raise ValueError(f"`times` must be finite observation times, got {times!r}")
    ts = np.sort(ts)
    first = regimen.dose_times()[0]
    if ts[0] < first:
        raise ValueError(f"`times` start at {ts[0]:g}, before the first dose at {first:g}")
    cov = {}
    for name, v in (covariates or {}).items():
        arr = np.asarray(v, dtype=float)
        if arr.ndim == 0:
            arr = np.full(n, float(arr))
        if arr.shape != (n,) or not np.all(np.isfinite(arr)):
            raise ValueError(
                f"covariate {name!r} must be one finite number or {n} of them (one per subject), got {v!r}"
            )
        cov[name] = arr
    rows = []
    for i in range(n):
        recs = [dict(r) for r in regimen.rows()]
        recs += [{"EVID": 0, "TIME": t, "DV": 0.0, "MDV": 0, "DVID": dvid} for t in ts]
        recs.sort(key=lambda r: (r["TIME"], r["EVID"] == 0))  # a dose before a sample at its time
        for r in recs:
            r["ID"] = i + 1
            for name, arr in cov.items():
                r[name] = arr[i]
        rows += recs
    pop = read_data(pd.DataFrame(rows), covariates=list(cov))
    (noisy,), etas = simulate_data(model, pop, x, seed=seed, rtol=rtol, atol=atol, solver=solver)
    (clean,), _ = simulate_data(model, pop, x, etas=etas[0], residual=False, rtol=rtol, atol=atol, solver=solver)
    out = {"ID": [], "TIME": [], "DVID": [], "IPRED": [], "DV": []}
    eta_names = list(model.eta_names)
    for name in eta_names:
        out[f"ETA_{name}"] = []
    for i, (a, b) in enumerate(zip(noisy, clean)):
        k = a.n_obs
        out["ID"] += [a.id] * k
        out["TIME"] += a.obs_time.tolist()
        out["DVID"] += a.dvid.tolist()
        out["IPRED"] += b.dv.tolist()
        out["DV"] += a.dv.tolist()
        for j, name in enumerate(eta_names):
            out[f"ETA_{name}"] += [float(etas[0, i, j])] * k
    return pd.DataFrame(out)
