"""Steady-state dosing against an independent reference: nlme's ``quinModel`` on the Quinidine data.

R's nlme package ships the Quinidine data (136 patients, 1471 records, oral doses, 249 of them
steady-state doses marked by a non-missing ``interval``) and ``nlme:::quinModel``, a compiled C
function (``nlme_one_comp_open`` in nlme's src/nlmefit.c) predicting a one-compartment model with
first-order absorption and NONMEM-style steady-state doses.  This script reads the data with
``smallchains.pk.read_data`` (as NONMEM records), predicts every observation with the built-in
``sc.pk.one_cpt_oral()`` and compares with quinModel for three parameter sets (V, ka, CL).

What quinModel computes (nlme 3.1-162, src/nlmefit.c; the R wrapper is
``.C(nlme_one_comp_open, n, resp = dose, cbind(Subject, time, conc, dose, interval, exp(lV),
exp(lKa), exp(lCl - lV)))$resp``): records are walked in order, a subject starts where
``Subject`` changes; the state is (C, Ca): the central and the depot amounts over V.

* first record of a subject: ``C = 0, Ca = dose / V`` (a plain dose), or, when ``interval`` is
  given, the steady state below; the returned value is 0 (even for an observation);
* dose record (``dose`` not NA), ``interval`` NA: the state is advanced to the record's time
  and ``dose / V`` is added to the depot -- a NONMEM bolus into the depot, EVID 1, CMT 1;
* dose record with ``interval = tau``: the state is *replaced* (whatever came before is
  discarded) by the steady state of that dose given every tau forever, just after the dose:
  ``C = D ka / (V (ka - ke)) (1 / (1 - exp(-ke tau)) - 1 / (1 - exp(-ka tau)))`` (the central
  trough) and ``Ca = D / (V (1 - exp(-ka tau)))`` (the depot just after a dose) -- NONMEM's
  SS = 1 with II = tau (a reset to steady state, not SS = 2, which would add it);
  only this one dose is at steady state: later records follow it as single doses (the data
  give the regimen's later doses as their own records);
* observation (``dose`` NA, ``conc`` not NA): the prediction at the record's time from the last
  dose (after that dose if at the same time and after it in record order) -- EVID 0, MDV 0;
* a record with neither (time-varying covariate records): returns 0 and changes nothing --
  EVID 2, MDV 1;
* a record with both a dose and a concentration would be a dose whose concentration is ignored
  (returned 0); the Quinidine data have none, nor an observation at the time of a dose (checked
  below), nor a subject whose first record is an observation.  Subject 46's first record is
  empty, which leaves quinModel's depot at NA until its first dose, a steady-state one that
  replaces the state (so nothing propagates).

quinModel returns one value per record: the prediction on observation records, 0 elsewhere.
Its ke is exp(lCl - lV) = CL / V; smallchains' one_cpt_oral takes (ka, CL, V) in amounts.

    python benchmarks/pk_nlme_steady_state.py [--repeats 7] [--write-reference]

``--write-reference`` also writes tests/data/quinidine_subset.csv (the NONMEM records of a few
subjects with steady-state doses) and tests/data/quinidine_nlme_reference.csv (40 of quinModel's
predictions for their observations at V = 100, ka = 0.5, CL = 10).  Needs R with nlme
(``apt-get install -y r-base-core r-cran-nlme``); without them it says so and exits 0.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _r import INSTALL, have_nlme, nlme_version, rscript  # noqa: E402
from _timing import machine, median_seconds  # noqa: E402

#: (V, ka, CL) in the data's units (L, 1/h, L/h; doses in mg, concentrations in mg/L)
PARAMETER_SETS = [(100.0, 0.5, 10.0), (250.0, 1.5, 20.0), (60.0, 0.2, 4.0)]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE_N = 40

R_EXPORT = r"""
suppressPackageStartupMessages(library(nlme))
q <- as.data.frame(Quinidine)
out <- data.frame(Subject = as.character(q$Subject), time = q$time, conc = q$conc, dose = q$dose,
                  interval = q$interval)
write.csv(out, commandArgs(TRUE)[1], row.names = FALSE, na = "")
"""

R_PREDICT = r"""
suppressPackageStartupMessages(library(nlme))
a <- commandArgs(TRUE)
P <- read.csv(a[1]); rounds <- as.integer(a[3]); calls <- as.integer(a[4])
q <- Quinidine  # the grouped data as nlme's examples use them (Subject: a factor, contiguous blocks)
n <- nrow(q)
preds <- matrix(NA_real_, n, nrow(P)); secs <- numeric(nrow(P))
for (k in seq_len(nrow(P))) {
  lV <- rep(log(P$V[k]), n); lKa <- rep(log(P$ka[k]), n); lCl <- rep(log(P$CL[k]), n)
  f <- function() nlme:::quinModel(q$Subject, q$time, q$conc, q$dose, q$interval, lV, lKa, lCl)
  preds[, k] <- f()
  per <- replicate(rounds, {
    st <- system.time(for (j in seq_len(calls)) f(), gcFirst = FALSE)
    (st[["user.self"]] + st[["sys.self"]]) / calls
  })
  secs[k] <- median(per)
}
con <- file(a[2], "w")
writeLines(paste(sprintf("%.17g", secs), collapse = ","), con)
for (i in seq_len(n)) writeLines(paste(sprintf("%.17g", preds[i, ]), collapse = ","), con)
close(con)
"""


def export_quinidine(tmp):
    import pandas as pd

    path = os.path.join(tmp, "quinidine.csv")
    rscript(R_EXPORT, path)
    return pd.read_csv(path)


def to_nonmem(q):
    """quinModel's records as NONMEM records (ID, TIME, AMT, DV, MDV, EVID, CMT, SS, II), one for one.

    ==============================  ================================================================
    Quinidine record                NONMEM record (the meaning quinModel gives it)
    ==============================  ================================================================
    dose D, interval NA             EVID 1, AMT D, CMT 1 (depot), SS 0, II 0, MDV 1, DV .
    dose D, interval tau            EVID 1, AMT D, CMT 1, SS 1, II tau, MDV 1, DV .  (reset to the
                                    steady state of D every tau, just after the dose)
    conc y (dose NA)                EVID 0, MDV 0, DV y, AMT 0, CMT . (the default output: the
                                    central concentration), SS 0, II 0
    neither                         EVID 2, MDV 1 (changes nothing), AMT 0, DV ., CMT .
    ==============================  ================================================================
    """
    import pandas as pd

    dose, conc, interval = q["dose"].to_numpy(), q["conc"].to_numpy(), q["interval"].to_numpy()
    has_dose, has_conc, has_ii = ~np.isnan(dose), ~np.isnan(conc), ~np.isnan(interval)
    if np.any(has_dose & has_conc):
        raise SystemExit(
            "a record has both a dose and a concentration: quinModel ignores such a concentration; "
            "the mapping below does not cover it"
        )
    if np.any(has_ii & ~has_dose):
        raise SystemExit("a record has an interval but no dose")
    sid = q["Subject"].astype(int).to_numpy()
    first = np.r_[True, sid[1:] != sid[:-1]]
    if np.any(first & has_conc):
        raise SystemExit("a subject starts with an observation, which quinModel predicts as 0")
    evid = np.where(has_dose, 1, np.where(has_conc, 0, 2))
    return pd.DataFrame(
        {
            "ID": sid,
            "TIME": q["time"].to_numpy(),
            "AMT": np.where(has_dose, dose, 0.0),
            "DV": np.where(has_conc, conc, np.nan),
            "MDV": np.where(evid == 0, 0, 1),
            "EVID": evid,
            "CMT": np.where(has_dose, 1.0, np.nan),
            "SS": np.where(has_ii, 1, 0),
            "II": np.where(has_ii, interval, 0.0),
        }
    )


def nlme_predictions(tmp, rounds, calls):
    """quinModel's predictions, (n_records, n_sets), and its median CPU seconds per call (whole data)."""
    import pandas as pd

    ppath, opath = os.path.join(tmp, "params.csv"), os.path.join(tmp, "preds.csv")
    pd.DataFrame(PARAMETER_SETS, columns=["V", "ka", "CL"]).to_csv(ppath, index=False)
    rscript(R_PREDICT, ppath, opath, rounds, calls)
    with open(opath) as fh:
        secs = np.array([float(x) for x in fh.readline().split(",")])
        preds = np.loadtxt(io.StringIO(fh.read()), delimiter=",", ndmin=2)
    return preds, secs


def ours(model, pop, p, rtol, atol, analytic=False):
    return [model.simulate(s, p, rtol=rtol, atol=atol, analytic=analytic)[1] for s in pop]


def write_reference(nm, pred_first):
    """Whole subjects with steady-state doses, in data order, whose observations add up to 40."""
    obs = nm["EVID"].to_numpy() == 0
    chosen, total = [], 0
    for sid, block in nm.groupby("ID", sort=False):
        k = int((block["EVID"] == 0).sum())
        if (block["SS"] == 1).any() and k and total + k <= REFERENCE_N:
            chosen.append(sid)
            total += k
        if total == REFERENCE_N:
            break
    assert total == REFERENCE_N, total
    keep = nm["ID"].isin(chosen).to_numpy()
    sub = nm.loc[keep]
    ref = nm.loc[keep & obs, ["ID", "TIME"]].copy()
    ref["PRED"] = [f"{v:.17g}" for v in pred_first[keep & obs]]  # (text: every digit, TIME as read)
    os.makedirs(os.path.join(ROOT, "tests", "data"), exist_ok=True)
    p_sub = os.path.join(ROOT, "tests", "data", "quinidine_subset.csv")
    p_ref = os.path.join(ROOT, "tests", "data", "quinidine_nlme_reference.csv")
    sub.to_csv(p_sub, index=False, na_rep=".", float_format="%.10g")
    ref.to_csv(p_ref, index=False)
    print(
        f"wrote {os.path.relpath(p_sub, ROOT)} ({len(sub)} records, subjects {chosen}) and "
        f"{os.path.relpath(p_ref, ROOT)} ({len(ref)} predictions, V, ka, CL = {PARAMETER_SETS[0]})"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7, help="timing rounds on each side (median)")
    ap.add_argument("--r-calls", type=int, default=200, help="quinModel calls per timed round")
    ap.add_argument("--write-reference", action="store_true", help="write the tests/data reference files")
    a = ap.parse_args()

    why = have_nlme()
    if why is not None:
        print(f"skipped: {why}.  This comparison needs R and its nlme package, e.g. on Debian/Ubuntu:\n    {INSTALL}")
        return 0

    import smallchains as sc

    print(f"machine: {machine()}")
    print(f"reference: {nlme_version()}, nlme:::quinModel (C, closed form)")
    with tempfile.TemporaryDirectory() as tmp:
        q = export_quinidine(tmp)
        nm = to_nonmem(q)
        preds, r_secs = nlme_predictions(tmp, a.repeats, a.r_calls)
        if a.write_reference:
            write_reference(nm, preds[:, 0])
        path = os.path.join(tmp, "quinidine_nonmem.csv")
        nm.to_csv(path, index=False, na_rep=".")
        obs = nm["EVID"].to_numpy() == 0
        t = nm["TIME"].to_numpy()
        same_time_dose = sum(
            bool(np.any((nm["ID"] == i) & (nm["EVID"] == 1) & (nm["TIME"] == tt)))
            for i, tt in zip(nm["ID"][obs], t[obs], strict=True)
        )
        print(
            f"data: {nm['ID'].nunique()} subjects, {len(nm)} records, {int(obs.sum())} observations, "
            f"{int((nm['EVID'] == 1).sum())} doses of which {int(nm['SS'].sum())} SS = 1 "
            f"({nm.loc[nm['SS'] == 1, 'ID'].nunique()} subjects), {int((nm['EVID'] == 2).sum())} EVID 2 records, "
            f"{same_time_dose} observations at the time of a dose"
        )
        pop = sc.pk.read_data(path)

    model = sc.pk.one_cpt_oral()
    assert model.params == ["ka", "CL", "V"], model.params
    ids = nm["ID"].to_numpy()[obs]
    assert [s.id for s in pop] == list(dict.fromkeys(nm["ID"])), "subject order"
    assert np.array_equal(np.concatenate([s.obs_time for s in pop]), t[obs]), "observation times"
    print(
        f"{'V':>5s} {'ka':>4s} {'CL':>4s}   {'max rel diff: exact':>19s} {'ODE':>9s} {'ODE tight':>9s}   "
        f"{'CPU: nlme':>9s} {'exact':>9s} {'ODE':>9s}"
    )
    worst = []
    for k, (V, ka, CL) in enumerate(PARAMETER_SETS):
        p = {"ka": ka, "CL": CL, "V": V}
        ref = preds[obs, k]

        def rel(y, ref=ref):
            return np.abs(np.concatenate(y) - ref) / np.abs(ref)

        exact = rel(ours(model, pop, p, 1e-8, 1e-8, analytic=True))
        ode = rel(ours(model, pop, p, 1e-8, 1e-8))
        tight = rel(ours(model, pop, p, 1e-10, 1e-12))
        s_exact = median_seconds(lambda p=p: ours(model, pop, p, 1e-8, 1e-8, analytic=True), a.repeats)
        s_ode = median_seconds(lambda p=p: ours(model, pop, p, 1e-8, 1e-8), a.repeats)
        print(
            f"{V:5g} {ka:4g} {CL:4g}   {exact.max():19.2e} {ode.max():9.2e} {tight.max():9.2e}   "
            f"{r_secs[k] * 1e3:6.3f} ms {s_exact * 1e3:6.2f} ms {s_ode * 1e3:6.1f} ms"
        )
        i = int(np.argmax(exact))
        y = np.concatenate(ours(model, pop, p, 1e-8, 1e-8, analytic=True))
        worst.append((exact[i], ids[i], t[obs][i], ref[i], y[i], p))
    print(
        "(relative differences over all observations: smallchains' exact solution (matrix exponentials, "
        "closed-form steady states), its ODE path at the default rtol = atol = 1e-8 and at rtol 1e-10, atol 1e-12; "
        f"CPU time per prediction of all 136 subjects: median of {a.repeats} rounds, R's system.time over "
        f"{a.r_calls} calls a round, time.process_time for smallchains)"
    )
    e, sid, tt, r, o, p = max(worst, key=lambda w: w[0])
    print(f"largest difference: ID {sid}, TIME {tt:g}, nlme {r:.10g}, smallchains {o:.10g} ({e:.1e}) at {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
