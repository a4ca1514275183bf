"""A fit's output tables as NONMEM writes them, for xpose, Pirana, PsN and nonmem2R users.

:func:`write_tables` writes, in a folder, for run number ``run``:

* ``sdtab<run>``: ID, TIME, TAD, DV, MDV, EVID, AMT, CMT, DVID, BLQ, PRED, IPRED, RES, WRES,
  IWRES, CWRES and NPDE (by simulation, :mod:`smallchains.pk.npde`; ``n_sim=0`` leaves it out);
* ``patab<run>``: ID, TIME, each subject's individual parameters (the structural model's
  names) and ETA1..ETAq (the random effects in the model's ``eta`` order: its conditional modes);
* ``cotab<run>`` and ``catab<run>``: ID, TIME and the continuous or categorical covariates, the
  values in force at each record's time;
* ``run<run>.ext``: the estimates along the run and at its end, as NONMEM's raw output file.

The four tables share their rows: every subject's dose records (EVID 1, or 3 for a reset, 4 for
both; ADDL's implied doses are not records) and observation records, by time, a dose before an
observation at the same time.  Observations left out of the likelihood (BLQ = 1 under the M1
rule) are written with MDV = 1 and BLQ = 1; those in it as censored (M3, M4) with MDV = 0, BLQ =
1, their PRED and IPRED, and residuals (and NPDE) 0.  On records without a fitted observation
(MDV = 1), PRED, IPRED and the residuals are 0, as NONMEM writes residuals there (NONMEM also predicts at those
records; smallchains does not).  The files are NONMEM's layout: ``TABLE NO.  1`` on the first
line, the column names on the second, then one record a line in ``s1PE11.4`` (e.g.
`` 1.2345E+00``), whitespace separated (xpose's ``read_nm_tables`` and PsN read them).

``run<run>.ext``: a title line naming the method, a header ``ITERATION THETA1 ... SIGMA(i,j) ...
OMEGA(i,j) ... OBJ`` (lower triangles, row by row), then one line per iteration of
``FitResult.trace`` (the optimizer's evaluations that lowered the objective, numbered by
evaluation; SAEM's iterations, exploration numbered negative, with the complete-data -2 log
likelihood as OBJ), then NONMEM's special lines: -1000000000 the final estimates and OFV,
-1000000001 their standard errors (1E+10 where not estimated), -1000000004 Omega and Sigma as
standard deviations and correlations, -1000000006 1 for a fixed entry.  THETA1..THETAk are the
typical values (natural scale) in ``theta``'s order, then the covariate effects; SIGMA is the
residual variances (additive a^2, proportional b^2: a combined error's two on the diagonal);
network weights are not written.
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np

from .._atomic import atomic_write
from .report import time_after_dose

_log = logging.getLogger("smallchains.pk")

#: xpose4's rule (``cat.levels``): a numeric covariate with at most this many distinct values,
#: all whole numbers, is categorical (catab); the others are continuous (cotab)
CATEGORICAL_LEVELS = 4

_EXT_TITLE = {
    "foce": "First Order Conditional Estimation with Interaction",
    "laplace": "Laplacian Conditional Estimation with Interaction",
    "saem": "Stochastic Approximation Expectation-Maximization",
    "map": "MAP Estimation (joint posterior mode)",
    "pooled": "Naive Pooled Data",
}


def _field(v):
    v = float(v)
    return f" {'NaN':>11s}" if not math.isfinite(v) else f" {v: .4E}"


def format_table(columns, rows, number=1):
    """NONMEM's table text: ``TABLE NO.`` line, the header, one line per row (``s1PE11.4``)."""
    lines = [f"TABLE NO.  {number}", "".join(f" {c:<11s}" for c in columns)]
    for r in rows:
        lines.append("".join(_field(v) for v in r))
    return "\n".join(lines) + "\n"


def _records(result, data, diag):
    """Every table's rows: [(subject, time, kind, payload)] in the order the tables list them."""
    fitted = {}
    for k, i in enumerate(diag["ID"]):
        fitted.setdefault(i, []).append(k)
    m1 = (result.settings or {}).get("blq", "m1") == "m1"
    out = []
    for s in data.subjects:
        rows = {}
        for d in s.doses:
            if d.addl:
                continue
            r = rows.setdefault(d.row, {"time": d.time, "evid": 0, "amt": 0.0, "cmt": d.cmt})
            if d.kind == "reset":
                r["evid"] = 4 if r["evid"] == 1 else 3
            else:
                r["evid"] = 4 if r["evid"] == 3 else 1
                r["amt"] = float(d.amount)
                r["cmt"] = d.cmt
        recs = [(r["time"], 0, n, ("dose", r)) for n, (_, r) in enumerate(sorted(rows.items()))]
        mine = fitted.get(s.id, [])
        n = 0
        for j in range(s.n_obs):
            t = float(s.obs_time[j])
            if m1 and bool(np.asarray(s.blq)[j]):
                recs.append((t, 1, j, ("blq", j)))
                continue
            # the fit's observation rows are this subject's observations (non-BLQ under M1), in order
            recs.append((t, 1, j, ("obs", (j, mine[n]))))
            n += 1
        recs.sort(key=lambda r: (r[0], r[1], r[2]))
        out += [(s, t, kind, payload) for t, _, _, (kind, payload) in recs]
    return out


def _covariate_kinds(data, categorical):
    names = list(data.covariate_names)
    if categorical is not None:
        unknown = [c for c in categorical if c not in names]
        if unknown:
            raise ValueError(f"`categorical` names {unknown[0]!r}, not a numeric covariate of the data {names}")
        cat = [c for c in names if c in categorical]
        return [c for c in names if c not in cat], cat
    cat = []
    for c in names:
        vals = []
        for s in data.subjects:
            if c in s.covariates:
                vals.append(np.asarray(s.covariates[c][1], dtype=float))
        v = np.concatenate(vals) if vals else np.zeros(0)
        v = v[np.isfinite(v)]
        if v.size and np.all(v == np.round(v)) and np.unique(v).size <= CATEGORICAL_LEVELS:
            cat.append(c)
    return [c for c in names if c not in cat], cat


def table_columns(result, data, *, npde=None, categorical=None):
    """{"sdtab": (columns, rows), "patab": ..., "cotab": ..., "catab": ...}: the tables' content
    (see the module's documentation); ``npde`` an :func:`smallchains.pk.npde.npde` dict or None."""
    diag = result.diagnostics
    for s in data.subjects:
        if isinstance(s.id, bool) or not isinstance(s.id, int | float | np.integer | np.floating):
            raise ValueError(
                f"subject ID {s.id!r} is not a number: NONMEM's tables hold numbers only; renumber the IDs"
            )
    recs = _records(result, data, diag)
    m = result.model
    ip = result.individual_params()
    by_id = dict(zip(result.ids, range(len(result.ids)), strict=True))
    cont, cat = _covariate_kinds(data, categorical)
    if data.text_columns:
        _log.info("text columns %s are not numbers: left out of cotab and catab", list(data.text_columns))
    sd_cols = ["ID", "TIME", "TAD", "DV", "MDV", "EVID", "AMT", "CMT", "DVID", "BLQ"]
    sd_cols += ["PRED", "IPRED", "RES", "WRES", "IWRES", "CWRES"] + (["NPDE"] if npde is not None else [])
    params = list(m.param_names)
    pa_cols = ["ID", "TIME"] + params + [f"ETA{j + 1}" for j in range(m.n_eta)]
    sd, pa, co, ca = [], [], [], []
    for s, t, kind, payload in recs:
        sid = float(s.id)
        tad = float(time_after_dose(s, np.array([t]))[0])
        zeros = [0.0] * (6 + (npde is not None))
        if kind == "dose":
            r = payload
            row = [sid, t, tad, 0.0, 1, r["evid"], r["amt"], r["cmt"], 0, 0] + zeros
        elif kind == "blq":
            j = payload
            row = [sid, t, tad, float(s.dv[j]), 1, 0, 0.0, int(s.obs_cmt[j]), int(s.dvid[j]), 1] + zeros
        else:
            j, k = payload
            cens = int(diag["BLQ"][k]) if "BLQ" in diag else 0
            row = [sid, t, tad, float(s.dv[j]), 0, 0, 0.0, int(s.obs_cmt[j]), int(s.dvid[j]), cens]
            row += [float(diag[c][k]) for c in ("PRED", "IPRED")]
            row += [0.0 if cens else float(diag[c][k]) for c in ("RES", "WRES", "IWRES", "CWRES")]
            if npde is not None:
                row.append(0.0 if cens else float(npde["NPDE"][k]))
        sd.append(row)
        if s.id in ip:
            eta = result.etas[by_id[s.id]]
            pa.append([sid, t] + [ip[s.id][p] for p in params] + list(map(float, eta)))
        else:  # (a subject without fitted observations: no individual estimates)
            pa.append([sid, t] + [float("nan")] * (len(params) + m.n_eta))
        co.append([sid, t] + [float(s.covariate(c, t)) if c in s.covariates else float("nan") for c in cont])
        ca.append([sid, t] + [float(s.covariate(c, t)) if c in s.covariates else float("nan") for c in cat])
    return {
        "sdtab": (sd_cols, sd),
        "patab": (pa_cols, pa),
        "cotab": (["ID", "TIME"] + cont, co),
        "catab": (["ID", "TIME"] + cat, ca),
    }


def _ext_layout(m):
    """(column names, function x -> values, the Omega and Sigma entries as (kind, i, j) lists)."""
    q = m.n_eta
    n_s = len(m.error.names)
    n_th = len(m.theta_names) + len(m.covariates)
    names = [f"THETA{k + 1}" for k in range(n_th)]
    sig = [(i, j) for i in range(n_s) for j in range(i + 1)]
    om = [(i, j) for i in range(q) for j in range(i + 1)]
    names += [f"SIGMA({i + 1},{j + 1})" for i, j in sig] + [f"OMEGA({i + 1},{j + 1})" for i, j in om]
    return names, sig, om


def _ext_values(m, x, sig, om, form="estimate"):
    th = np.exp(x[m.blocks["theta"]])
    beta = x[m.blocks["beta"]]
    s2 = np.exp(2 * x[m.blocks["psi"]])
    Om = m.omega(x) if m.n_eta else np.zeros((0, 0))
    vals = list(th) + list(beta)
    for i, j in sig:
        v = s2[i] if i == j else 0.0
        vals.append(math.sqrt(v) if form == "sd" and i == j else v)
    for i, j in om:
        if form == "sd":
            v = math.sqrt(Om[i, i]) if i == j else Om[i, j] / math.sqrt(Om[i, i] * Om[j, j])
        else:
            v = Om[i, j]
        vals.append(float(v))
    return vals


def ext_text(result, number=1):
    """The ``.ext`` file's text (see the module's documentation)."""
    m = result.model
    names, sig, om = _ext_layout(m)
    title = _EXT_TITLE.get(result.method, f"{result.method} (smallchains)")
    goal = "FINAL VALUE OF LIKELIHOOD FUNCTION" if result.method == "saem" else "MINIMUM VALUE OF OBJECTIVE FUNCTION"
    lines = [
        f"TABLE NO.     {number}: {title}: Goal Function={goal}: Problem=1 Subproblem=0 Superproblem1=0 "
        "Iteration1=0 Superproblem2=0 Iteration2=0",
        " ITERATION    " + "".join(f"{c:<13s}" for c in names + ["OBJ"]).rstrip(),
    ]

    def line(it, vals):
        return f"{it:13d}" + "".join(" " + (f"{v: .5E}" if math.isfinite(v) else f"{'NaN':>12s}") for v in vals)

    tr = getattr(result, "trace", None)
    if tr:
        for it, xx, obj in zip(tr["iteration"], tr["x"], tr["objective"], strict=True):
            lines.append(line(int(it), _ext_values(m, np.asarray(xx, dtype=float), sig, om) + [float(obj)]))
    lines.append(line(-1000000000, _ext_values(m, result.x, sig, om) + [float(result.ofv)]))
    # standard errors, from the parameter table (1E+10: not estimated, as NONMEM writes)
    se = {r["name"]: r["se"] for r in result.table}
    big = 1.0e10
    th_names = list(m.theta_names) + [f"{m.theta_names[k]}~{c} ({form})" for k, c, form in m.covariates]
    ses = [se.get(n, big) if np.isfinite(se.get(n, np.nan)) else big for n in th_names]
    s = np.exp(result.x[m.blocks["psi"]])
    for i, j in sig:
        v = se.get(m.error.names[i], np.nan) if i == j else np.nan
        ses.append(2.0 * s[i] * v if i == j and np.isfinite(v) else big)
    en = m.eta_names
    for i, j in om:
        key = f"omega2({en[i]})" if i == j else f"omega({en[i]},{en[j]})"
        v = se.get(key, np.nan)
        ses.append(v if np.isfinite(v) else big)
    lines.append(line(-1000000001, ses + [0.0]))
    lines.append(line(-1000000004, _ext_values(m, result.x, sig, om, form="sd") + [float(result.ofv)]))
    fixed = [int(m.fixed[m.blocks["theta"].start + k]) for k in range(len(m.theta_names))]
    fixed += [int(m.fixed[m.blocks["beta"].start + k]) for k in range(len(m.covariates))]
    fixed += [int(m.fixed[m.blocks["psi"].start + i]) if i == j else 1 for i, j in sig]
    ob = m.blocks["omega"].start
    tril = {(int(a), int(b)): n for n, (a, b) in enumerate(zip(*m.tril, strict=True))}
    for i, j in om:
        if i == j:
            fixed.append(int(m.fixed[ob + i]))
        elif (i, j) in tril:
            fixed.append(int(m.fixed[ob + m.n_eta + tril[(i, j)]]))
        else:
            fixed.append(1)
    lines.append(line(-1000000006, [float(v) for v in fixed] + [0.0]))
    return "\n".join(lines) + "\n"


def write_tables(result, data, folder, *, run=1, n_sim=1000, seed=0, categorical=None, decorrelation="cholesky"):
    """Write sdtab, patab, cotab, catab and the .ext file of a fit in ``folder`` (created if
    needed; each file atomically): see the module's documentation.

    Args:
        result: a population fit (:class:`FitResult`); data: the data set it was fitted to.
        run: the run number in the file names (``sdtab1``, ``run1.ext``: xpose's ``runno``).
        n_sim: simulations for the NPDE column (0: no NPDE column).
        seed: the NPDE simulations' seed.
        categorical: the covariates written to catab (default: xpose4's rule, whole numbers with
            at most :data:`CATEGORICAL_LEVELS` distinct values); the other numeric ones go to cotab.
        decorrelation: the NPDE's (``"cholesky"``, npde's default, or ``"inverse"``).

    Returns:
        the paths written, in the order above.
    """
    from .result import FitResult

    if not isinstance(result, FitResult):
        raise TypeError(f"`result` must be a population fit (sc.pk.fit's FitResult), got {type(result).__name__}")
    if isinstance(run, bool) or not isinstance(run, int | np.integer) or run < 0:
        raise ValueError(f"`run` must be a whole number >= 0, got {run!r}")
    n_sim = int(n_sim)
    if n_sim != 0 and n_sim < 100:
        raise ValueError(f"`n_sim` must be 0 (no NPDE) or >= 100, got {n_sim}")
    nd = None
    if n_sim:
        from .npde import npde

        nd = npde(result, data, n_sim=n_sim, seed=seed, decorrelation=decorrelation)
    tabs = table_columns(result, data, npde=nd, categorical=categorical)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for name in ("sdtab", "patab", "cotab", "catab"):
        cols, rows = tabs[name]
        text = format_table(cols, rows)
        paths.append(atomic_write(os.path.join(folder, f"{name}{run}"), lambda fh, t=text: fh.write(t)))
    ext = ext_text(result)
    paths.append(atomic_write(os.path.join(folder, f"run{run}.ext"), lambda fh: fh.write(ext)))
    return paths
