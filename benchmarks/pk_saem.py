"""SAEM against FOCE-I (ours) and R's nlme (Lindstrom-Bates ML), same run: estimates and time.

    python benchmarks/pk_saem.py [--rounds 1] [--no-simulated]

There is no SAEM peer on this machine (nlmixr2, Monolix and saemix are not packaged here), so the
peer is nlme on the same models as ``pk_vs_nlme.py`` (Theophylline, Phenobarbital, Quinidine),
and the reference for SAEM's estimates is FOCE-I's: each estimate's distance from FOCE-I's in
FOCE-I standard errors, SAEM's OFV (FOCE-I's objective at the SAEM estimates) against FOCE-I's
minimum, and nlme's -2 log L.  Then a simulated 40-subject two-compartment study (three doses by
ADDL/II, weight on CL, a full Omega on ka, CL, V1, combined error, Q and V2 without random
effects so that SAEM's numeric M-step runs) fitted by both methods from a start away from the
truth.  CPU seconds (process time; medians of ``--rounds`` after a warm-up fit for the public
data sets; one fit each for the simulated study), SAEM with its defaults (300 + 200 iterations,
Monolix's number of chains), covariance steps included.  Needs R with nlme for the nlme columns
(``make bench-r``); without it, prints ours alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _r import have_nlme, nlme_version  # noqa: E402
from _timing import machine  # noqa: E402
from pk_vs_nlme import nlme_fits, ours  # noqa: E402

import smallchains as sc  # noqa: E402


def timed_fit(model, data, method, rounds, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if rounds > 1:
            sc.pk.fit(model, data, method, **kw)  # (warm-up)
        cpu = []
        for _ in range(max(rounds, 1)):
            t = time.process_time()
            r = sc.pk.fit(model, data, method, **kw)
            cpu.append(time.process_time() - t)
    return r, statistics.median(cpu)


def compare(f, s, cpu_f, cpu_s, nlme=None):
    print(f"{'parameter':22s} {'FOCE-I':>11s} {'SE':>9s} {'SAEM':>11s} {'(SAEM-FOCE)/SE':>15s}")
    worst = 0.0
    for r1, r2 in zip(f.table, s.table, strict=True):
        d = (r2["estimate"] - r1["estimate"]) / r1["se"] if r1["se"] > 0 else float("nan")
        worst = max(worst, abs(d)) if np.isfinite(d) else worst
        print(f"{r1['name']:22s} {r1['estimate']:11.5g} {r1['se']:9.3g} {r2['estimate']:11.5g} {d:15.2f}")
    print(f"largest |SAEM - FOCE-I| / SE: {worst:.2f}")
    line = f"OFV: FOCE-I {f.ofv:.4f}, SAEM (FOCE-I objective at its estimates) {s.ofv:.4f}"
    if nlme is not None:
        line += f"; -2 log L: nlme {nlme['m2ll'][0]:.3f}, FOCE-I {-2 * f.loglik:.3f}, SAEM {-2 * s.loglik:.3f}"
    print(line)
    t = f"CPU s: FOCE-I {cpu_f:.3f}, SAEM {cpu_s:.3f}"
    if nlme is not None:
        t += f", nlme {nlme['cpu'][0]:.3f} (SAEM / nlme {cpu_s / nlme['cpu'][0]:.1f}x)"
    print(t)
    print(f"SAEM: {'converged' if s.converged else 'NOT converged'} ({s.message})")


def simulated():
    import pandas as pd

    rng = np.random.default_rng(1)
    rows = []
    for i in range(40):
        wt = float(np.round(rng.uniform(50, 100), 1))
        rows.append(dict(ID=i + 1, TIME=0.0, AMT=100.0, EVID=1, MDV=1, CMT=1, DV=np.nan, II=12.0, ADDL=2, WT=wt))
        rows += [
            dict(ID=i + 1, TIME=t, AMT=0.0, EVID=0, MDV=0, CMT=2, DV=1.0, II=0.0, ADDL=0, WT=wt)
            for t in (0.5, 1, 2, 4, 8, 11.9, 24.5, 26, 30, 36, 48, 60)
        ]
    m = sc.pk.PopulationModel(
        "two_cpt_oral",
        dict(ka=1.0, CL=4.0, V1=30.0, Q=2.0, V2=50.0),
        eta=["ka", "CL", "V1"],
        omega="full",
        omega_init=np.array([[0.2, 0, 0], [0, 0.09, 0.03], [0, 0.03, 0.06]]),
        covariates={"CL": {"WT": "power"}},
        error="combined",
        sigma=[0.05, 0.1],
    )
    x = m.x0.copy()
    x[m.blocks["beta"]] = 0.75
    (sim,), _ = sc.pk.simulate_data(m, sc.pk.read_data(pd.DataFrame(rows)), x, seed=5)
    start = x.copy()
    start[m.blocks["theta"]] += 0.2
    start[m.blocks["beta"]] = 0.0
    return m, sim, start, x


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--no-simulated", dest="sim", action="store_false")
    a = ap.parse_args(argv)
    print(f"SAEM vs FOCE-I and nlme — {time.strftime('%Y-%m-%d')}, {machine()}")
    why = have_nlme()
    ref = None
    if why is None:
        print(f"reference: {nlme_version()}, method = 'ML'")
        ref = nlme_fits(max(a.rounds, 1))
    else:
        print(f"nlme columns skipped: {why}")
    for name in ("theophylline", "phenobarbital", "quinidine"):
        model, data = ours(name)
        f, cpu_f = timed_fit(model, data, "foce", max(a.rounds, 3))
        s, cpu_s = timed_fit(model, data, "saem", a.rounds)
        print(f"\n{name}: {f.n_subjects} subjects, {f.n_obs} observations")
        compare(f, s, cpu_f, cpu_s, None if ref is None else ref[name])
    if a.sim:
        m, sim, start, truth = simulated()
        f, cpu_f = timed_fit(m, sim, "foce", 1, x0=start)
        s, cpu_s = timed_fit(m, sim, "saem", 1, x0=start)
        print(f"\nsimulated two-compartment study: {f.n_subjects} subjects, {f.n_obs} observations")
        compare(f, s, cpu_f, cpu_s)
        tv = {k: round(v, 4) for k, v in m.theta(truth).items()}
        print(f"truth: {tv}, CL~WT {truth[m.blocks['beta']][0]:.2f}, sigma {np.exp(truth[m.blocks['psi']]).round(3)}")
        print(f"true Omega diagonal {np.diag(m.omega(truth)).round(4)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
