"""FOCE-I objective plus gradient for subjects solved by the ODE solver: the compiled subject
step (pk/_foce_ode.py) against the NumPy one, same run, same process.

    python benchmarks/pk_foce_ode.py [--rounds 5]

Three models, each timed as a fit asks (``Problem.foce_value_and_gradient``, modes warm-started
from the previous ones), CPU time (process time), median of ``--rounds``, one thread:

* Theophylline (12 subjects), nlme's one-compartment oral model solved by the ODE solver
  (``analytic=False``; the same model the exact solutions serve in ``pk_vs_nlme.py``);
* a simulated 100-subject study of ``one_cpt_oral_mm`` (Michaelis-Menten elimination: no exact
  solution), random effects on ka, Vmax and V;
* the demo's Theophylline UDE (elimination CL C exp(NN(C)), a 97-weight network): the
  gradient covers the network's weights.

Also printed: each model's largest difference between the two steps (OFV, gradient) and the
machine.  Tolerances: rtol 1e-8, atol 1e-10 (``fit``'s defaults).
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


def mm_study(n):
    model = sc.pk.PopulationModel(
        "one_cpt_oral_mm",
        dict(ka=1.0, Vmax=8.0, Km=4.0, V=30.0),
        eta=["ka", "Vmax", "V"],
        omega_init=[0.2, 0.1, 0.1],
        error="proportional",
        sigma=0.1,
    )
    times = [0.5, 1, 2, 4, 8, 12, 24]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = sc.pk.simulate_regimen(model, model.x0, sc.pk.regimen(200.0), times=times, n=n, seed=1)
    import pandas as pd

    rows = []
    for sid, g in df.groupby("ID", sort=True):
        rows.append(dict(ID=sid, TIME=0.0, AMT=200.0, EVID=1, MDV=1, DV=np.nan))
        rows += [dict(ID=sid, TIME=t, AMT=0.0, EVID=0, MDV=0, DV=v) for t, v in zip(g.TIME, g.DV)]
    data = sc.pk.read_data(pd.DataFrame(rows).sort_values(["ID", "TIME", "EVID"], ascending=[True, True, False]))
    x = model.x0.copy()
    x[model.blocks["theta"]] += 0.05
    return model, data, x


def ude():
    model = sc.pk.demo.theophylline_ude()
    x = model.x0.copy()
    w = model.blocks["w"]
    x[w] += np.random.default_rng(0).normal(0.0, 0.1, w.stop - w.start)
    return model, sc.pkdata.theophylline(), x


def classic():
    model = sc.pk.demo.theophylline_classic()
    return model, sc.pkdata.theophylline(), model.x0.copy()


def bench(label, model, data, x, rounds):
    P = Problem(model, data, threads=1, analytic=False)
    cf = P.compiled_foce
    assert cf is not None and not P.uncovered, "the compiled step should cover every subject"
    state = {"etas": P.foce(x)[1]}

    def compiled():
        v, _, g = P.foce_value_and_gradient(x, state["etas"])
        return v, g

    def numpy_step():
        P.compiled_foce = None
        try:
            v, _, res = P.foce(x, state["etas"])
            return v, P.foce_gradient(x, res)
        finally:
            P.compiled_foce = cf

    vc, gc = compiled()
    vn, gn = numpy_step()
    t_c = median_seconds(compiled, rounds)
    t_n = median_seconds(numpy_step, rounds)
    print(
        f"  {label:<34} {P.N:4d} subj, n_x {model.n_x:3d}   compiled {t_c * 1e3:8.1f} ms   "
        f"NumPy {t_n * 1e3:8.1f} ms   ratio {t_n / t_c:4.1f}x   "
        f"|dOFV|/OFV {abs(vc - vn) / abs(vn):.1e}   |dg|/|g| {np.abs(gc - gn).max() / np.abs(gn).max():.1e}"
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args(argv)
    print(f"FOCE-I objective + gradient, ODE-solved subjects, CPU per call — {time.strftime('%Y-%m-%d')}, {machine()}")
    try:  # (as fit() does: NumPy's BLAS threads would only spin on these tiny matrices)
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    bench("Theophylline, nlme's model by ODE", *classic(), a.rounds)
    bench("one_cpt_oral_mm, simulated", *mm_study(100), a.rounds)
    bench("Theophylline UDE (97 weights)", *ude(), a.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
