"""Simulating observations from a population model: data sets for simulation studies and VPCs."""

from __future__ import annotations

import dataclasses

import numpy as np

from .data import Population
from .estimation import Problem


def simulate_data(model, data, x=None, *, seed=0, etas=None, n=1, rtol=1e-8, atol=1e-10, solver=None,
                  ss_intervals=30, residual=True):
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
    plain = Population([dataclasses.replace(s, blq=np.zeros_like(s.blq)) for s in data.subjects],
                       data.covariate_names, data.columns)
    P = Problem(model, plain, rtol=rtol, atol=atol, solver=solver, ss_intervals=ss_intervals)
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
