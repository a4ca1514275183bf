"""BLQ data by Beal's M1 (dropped) against M3 (censored likelihood): bias and error of the
estimates over simulated studies, and the CPU time of each fit, same run.

    python benchmarks/pk_blq.py [--replicates 10] [--subjects 40] [--censored 0.3]

Each replicate simulates a one-compartment oral study (``--subjects`` subjects, 100 mg, samples at
0.5, 1, 2, 4, 8, 12, 24 and 36 h; random effects on CL and V, additive + proportional error) at
known values, sets the LLOQ at the ``--censored`` quantile of the observations and flags those
below it BLQ = 1 (their DV the LLOQ), then fits the model by Laplace with ``blq="m1"`` and with
``blq="m3"`` (and SAEM with M3 on the first replicate).  Printed: per parameter the mean relative
error (bias) and the root mean squared relative error over the replicates, for each rule, and
the median CPU seconds of a fit.  There is no M3 peer on this machine (NONMEM, Monolix and
nlmixr2 are not packaged here): the reference is the truth the data were simulated from.
Beal (2001) and Ahn et al. (2008) report the pattern to expect: M1 biases the estimates when the
late samples are censored (which way depends on the design); M3 removes most of the bias.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import machine  # noqa: E402

import smallchains as sc  # noqa: E402

TRUTH = dict(ka=1.0, CL=2.0, V=20.0)
TIMES = (0.5, 1, 2, 4, 8, 12, 24, 36)


def model(theta=TRUTH, omega=0.09, sigma=(0.05, 0.15)):
    return sc.pk.PopulationModel(
        "one_cpt_oral", dict(theta), eta=["CL", "V"], omega_init=omega, error="combined", sigma=list(sigma)
    )


def study(n, censored, seed):
    """(data, LLOQ, fraction BLQ) of one simulated study."""
    truth = model()
    rows = []
    for i in range(n):
        rows.append(dict(ID=i + 1, TIME=0.0, AMT=100.0, EVID=1, MDV=1, CMT=1, DV=np.nan))
        rows += [dict(ID=i + 1, TIME=t, AMT=0.0, EVID=0, MDV=0, CMT=2, DV=1.0) for t in TIMES]
    (sim,), _ = sc.pk.simulate_data(truth, sc.pk.read_data(pd.DataFrame(rows)), truth.x0, seed=seed)
    out = []
    for s in sim.subjects:
        out.append(dict(ID=s.id, TIME=0.0, AMT=100.0, EVID=1, MDV=1, CMT=1, DV=np.nan, BLQ=0))
        out += [dict(ID=s.id, TIME=t, AMT=0.0, EVID=0, MDV=0, CMT=2, DV=y, BLQ=0) for t, y in zip(s.obs_time, s.dv)]
    df = pd.DataFrame(out)
    obs = df.MDV == 0
    lloq = float(np.quantile(df.DV[obs], censored))
    df.loc[obs & (df.DV < lloq), "BLQ"] = 1
    df.loc[df.BLQ == 1, "DV"] = lloq
    return sc.pk.read_data(df), lloq, float((df.BLQ[obs] == 1).mean())


def estimates(r):
    row = {t["name"]: t["estimate"] for t in r.table}
    return {
        "CL": row["CL"],
        "V": row["V"],
        "ka": row["ka"],
        "omega2(CL)": row["omega2(CL)"],
        "omega2(V)": row["omega2(V)"],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicates", type=int, default=10)
    ap.add_argument("--subjects", type=int, default=40)
    ap.add_argument("--censored", type=float, default=0.3)
    a = ap.parse_args()
    print(machine())
    truth = {**TRUTH, "omega2(CL)": 0.09, "omega2(V)": 0.09}
    start = dict(ka=1.5, CL=3.0, V=15.0)
    err = {"m1": {k: [] for k in truth}, "m3": {k: [] for k in truth}}
    cpu = {"m1": [], "m3": []}
    fracs = []
    for rep in range(a.replicates):
        data, lloq, frac = study(a.subjects, a.censored, seed=100 + rep)
        fracs.append(frac)
        for rule in ("m1", "m3"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t = time.process_time()
                r = sc.pk.fit(model(start, 0.2), data, "laplace", blq=rule)
                cpu[rule].append(time.process_time() - t)
            for k, v in estimates(r).items():
                err[rule][k].append(v / truth[k] - 1.0)
            if rep == 0 and rule == "m3":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t = time.process_time()
                    s = sc.pk.fit(model(start, 0.2), data, "saem", blq="m3", seed=1)
                    cpu_s = time.process_time() - t
                lap, sa = estimates(r), estimates(s)
                print(f"replicate 1, LLOQ {lloq:.4g} ({100 * frac:.0f}% BLQ): Laplace M3 OFV {r.ofv:.3f}, SAEM M3 OFV "
                      f"{s.ofv:.3f} (Laplace's objective at its estimates), SAEM CPU {cpu_s:.2f} s")  # fmt: skip
                print("  " + ", ".join(f"{k} {lap[k]:.4g} / {sa[k]:.4g}" for k in lap) + "  (Laplace / SAEM)")
    print(
        f"{a.replicates} replicates of {a.subjects} subjects, {len(TIMES)} samples each; BLQ fraction "
        f"{100 * statistics.mean(fracs):.0f}% (mean)"
    )
    print(
        f"{'parameter':12s} {'truth':>8s} {'M1 bias %':>10s} {'M1 RMSE %':>10s} {'M3 bias %':>10s} {'M3 RMSE %':>10s}"
    )
    for k in truth:
        e1, e3 = np.array(err["m1"][k]), np.array(err["m3"][k])
        print(
            f"{k:12s} {truth[k]:8.3g} {100 * e1.mean():10.1f} {100 * np.sqrt(np.mean(e1**2)):10.1f} "
            f"{100 * e3.mean():10.1f} {100 * np.sqrt(np.mean(e3**2)):10.1f}"
        )
    print(
        f"CPU seconds per Laplace fit (median): M1 {statistics.median(cpu['m1']):.3f}, "
        f"M3 {statistics.median(cpu['m3']):.3f}"
    )


if __name__ == "__main__":
    main()
