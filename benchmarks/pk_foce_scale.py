"""A 1,000-subject two-compartment oral study: one FOCE-I objective plus its gradient, compiled
subject step against the NumPy one, same run.

    python benchmarks/pk_foce_scale.py [--subjects 1000] [--rounds 5]

The study is simulated from ``two_cpt_oral`` (ka, CL, V1, Q, V2; random effects on ka, CL and
V1, proportional error): 100 mg at time 0 and again at 24 h, nine samples per subject.  Timed:
``Problem.foce`` (every subject's mode, warm-started from the previous modes as in a fit) and
``Problem.foce_gradient``, CPU time (process time, so other load does not count), median of
``--rounds``, one thread; and wall time on two threads.  The NumPy step is timed on the first
100 subjects and scaled (it is linear in subjects).  Also printed: the largest difference between the two paths' OFV and
gradient on those 100 subjects, and the machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import machine, median_seconds  # noqa: E402

import smallchains as sc  # noqa: E402
from smallchains.pk.estimation import Problem  # noqa: E402


def study(n):
    model = sc.pk.PopulationModel(
        "two_cpt_oral",
        dict(ka=1.2, CL=4.0, V1=30.0, Q=6.0, V2=60.0),
        eta=["ka", "CL", "V1"],
        omega_init=[0.2, 0.1, 0.1],
        error="proportional",
        sigma=0.1,
    )
    times = [0.5, 1, 2, 4, 8, 12, 24.5, 30, 48]
    reg = sc.pk.regimen(100.0) + sc.pk.regimen(100.0, time=24.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = sc.pk.simulate_regimen(model, model.x0, reg, times=times, n=n, seed=1)
    rows = []
    for sid, g in df.groupby("ID", sort=True):
        rows.append(dict(ID=sid, TIME=0.0, AMT=100.0, EVID=1, MDV=1, DV=np.nan))
        rows.append(dict(ID=sid, TIME=24.0, AMT=100.0, EVID=1, MDV=1, DV=np.nan))
        rows += [dict(ID=sid, TIME=t, AMT=0.0, EVID=0, MDV=0, DV=v) for t, v in zip(g.TIME, g.DV)]
    import pandas as pd

    data = sc.pk.read_data(pd.DataFrame(rows).sort_values(["ID", "TIME", "EVID"], ascending=[True, True, False]))
    return model, data


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args(argv)
    print(f"FOCE-I objective + gradient, {a.subjects} subjects — {time.strftime('%Y-%m-%d')}, {machine()}")
    try:  # (as fit() does: NumPy's BLAS threads would only spin on these tiny matrices)
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    model, data = study(a.subjects)
    x = model.x0.copy()
    x[model.blocks["theta"]] += 0.05  # (not at the simulation's values)
    P = Problem(model, data, threads=1)
    assert P.compiled_foce is not None and len(P.compiled_foce.index) == P.N
    state = {"etas": P.foce(x)[1]}

    def both(P):  # (as fits ask for them: one compiled call per thread where the step covers every subject)
        v, _, g = P.foce_value_and_gradient(x, state["etas"])
        return v, g

    t_c = median_seconds(lambda: both(P), a.rounds)
    P.set_threads(2)
    t_2 = median_seconds(lambda: both(P), a.rounds, time.perf_counter)
    P.set_threads(1)
    sub = sc.pk.Population(data.subjects[:100], data.covariate_names, data.columns)
    Pc = Problem(model, sub, threads=1)
    Pn = Problem(model, sub, threads=1)
    Pn.compiled_foce = None
    vc, gc = both(Pc)
    vn, gn = both(Pn)
    t_n = median_seconds(lambda: both(Pn), max(1, a.rounds // 2)) * P.N / Pn.N
    print(f"  {P.N} subjects, {P.n_obs} observations, two_cpt_oral (3 states), q = 3")
    print(f"  compiled step: {t_c:8.3f} s CPU per objective + gradient, one thread (target <= 0.3 s)")
    print(f"                 {t_2:8.3f} s wall on two threads")
    print(f"  NumPy step:    {t_n:8.3f} s CPU (100 subjects, scaled)   ratio {t_n / t_c:.1f}x")
    print(f"  100 subjects: |OFV difference| {abs(vc - vn):.2e}, max |gradient difference| / max |g| "
          f"{np.abs(gc - gn).max() / np.abs(gn).max():.2e}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
