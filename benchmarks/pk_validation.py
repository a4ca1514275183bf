"""Every figure of the validation report in docs/pharmacometrics.md, printed by one command.

The tests assert bounds on the same fits (tests/test_pk_fit.py, tests/test_pk_tools.py); this
prints the values themselves, with the times they took on this machine:

1. Theophylline, nlme's model by FOCE-I: estimates against Pinheiro & Bates' published fit,
   nlme's estimates scored on our objective, a Nelder-Mead search from ours; the FOCE-I gradient
   against central differences of the OFV.
2. Simulation and recovery: a UDE whose network is a Michaelis-Menten elimination.
3. Phenobarbital: no covariates, weight on CL and V, a covariate network (FOCE-I), and the
   neural-elimination variant against the weight model (MAP).
4. The Theophylline UDE by FOCE-I (network weights included) against the classic model.
5. Threads: 2 against 1 on the MAP gradient and the FOCE-I objective.

    python benchmarks/pk_validation.py        (about three minutes)
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from scipy.optimize import minimize

import smallchains as sc
from smallchains.pk import validation as V
from smallchains.pk.demo import theophylline_classic, theophylline_ude
from smallchains.pk.estimation import Problem
from smallchains.pk.fit import _blas_single_threaded

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import median_per_call  # noqa: E402


def timed_fit(*args, **kw):
    t0 = time.perf_counter()
    r = sc.pk.fit(*args, **kw)
    return r, time.perf_counter() - t0


def est(r, name):
    return next(row for row in r.table if row["name"] == name)


def theophylline(theo):
    print("== Theophylline, nlme's model (fm2Theo.nlme), FOCE-I")
    sc.pk.fit(theophylline_classic(), theo, "foce", maxiter=2, se=False)  # (compiles: not in the time below)
    r, dt = timed_fit(theophylline_classic(), theo, "foce")
    th = r.theta
    for k, ref in (("ka", 1.57), ("ke", 0.088), ("CL", 0.040)):
        print(f"  {k:3s} {th[k]:.4g}  (nlme {ref}, {100 * (th[k] / ref - 1):+.1f}%)   log {np.log(th[k]):.3f}")
    om = r.omega
    print(
        f"  sd(eta ka) {np.sqrt(om[0, 0]):.3f}  sd(eta CL) {np.sqrt(om[1, 1]):.3f}  residual sd "
        f"{r.sigma['sigma_add']:.3f}   (nlme 0.64, 0.17, 0.70)"
    )
    print(f"  OFV {r.ofv:.2f}  -2LL {-2 * r.loglik:.2f}  fit {dt:.1f} s, {r.n_evaluations} evaluations")
    m = r.model
    P = Problem(m, theo)
    x_nlme = np.array([0.45, -2.43, -3.21, np.log(0.70), np.log(0.64), np.log(0.17)])
    print(
        f"  nlme's estimates on our FOCE-I objective: OFV {P.foce(x_nlme)[0]:.2f} "
        f"({P.foce(x_nlme)[0] - r.ofv:+.2f} against ours)"
    )
    etas = r.etas
    nm = minimize(
        lambda z: P.foce(z, etas)[0], r.x, method="Nelder-Mead", options=dict(xatol=1e-6, fatol=1e-8, maxiter=3000)
    )
    print(f"  Nelder-Mead from ours: OFV {nm.fun:.4f} ({nm.fun - r.ofv:+.1e}, {nm.nfev} evaluations)")
    P.close()
    # the FOCE-I gradient against central differences of the OFV
    x = r.x + np.array([0.03, -0.02, 0.02, 0.05, 0.05, -0.05])
    for inner, h in ((1e-24, 1e-4), (1e-10, 1e-5)):
        P = Problem(m, theo, rtol=1e-11, atol=1e-13, inner_tol=inner)
        v, e, res = P.foce(x)
        t0 = time.perf_counter()
        g = P.foce_gradient(x, res)
        tg = time.perf_counter() - t0
        t0 = time.perf_counter()
        gf = np.array([(P.foce(x + h * d, e)[0] - P.foce(x - h * d, e)[0]) / (2 * h) for d in np.eye(m.n_x)])
        tf = time.perf_counter() - t0
        rel = np.abs(g - gf) / np.maximum(np.abs(gf), 1e-12)
        print(
            f"  FOCE-I gradient vs central differences of the OFV (inner tolerance {inner:g}, step {h:g}): "
            f"max |diff| / max |grad| {np.abs(g - gf).max() / np.abs(gf).max():.1e}, worst entry "
            f"{rel.max():.1e} relative; gradient {tg * 1e3:.0f} ms, differences {tf * 1e3:.0f} ms"
        )
        P.close()
    return r


def recovery():
    print("== Simulation and recovery: Michaelis-Menten elimination by a 1->8->8->1 network (MAP)")
    data, drawn = V.mm_recovery_data()
    m, chain = V.mm_recovery_model()
    r, dt = timed_fit(m, data, "map", optimizer="adam+lbfgs", adam_steps=300, adam_lr=0.02, se=False)
    conc = np.concatenate([s.dv for s in data])
    cs = np.linspace(max(conc.min(), 0.05), conc.max(), 100)
    t = V.MM_TRUTH
    true = t["Vmax"] * cs / (t["Km"] + cs)
    err = np.abs(V.mm_elimination_rates(chain, r.weights, cs) / true - 1).max()
    om = np.diag(r.omega)
    print(f"  elimination rate over {cs[0]:.2g}-{cs[-1]:.3g}: max error {100 * err:.1f}%")
    print(
        f"  omega2 {om[0]:.3f}, {om[1]:.3f} (true {t['omega2'][0]}, {t['omega2'][1]}: "
        f"{100 * (om[0] / t['omega2'][0] - 1):+.0f}%, {100 * (om[1] / t['omega2'][1] - 1):+.0f}%; variance of "
        f"the effects drawn {np.var(drawn[:, 0]):.3f}, {np.var(drawn[:, 1]):.3f})"
    )
    print(f"  ka {r.theta['ka']:.3f}, V {r.theta['V']:.2f}   fit {dt:.1f} s")


def phenobarbital(pheno):
    print("== Phenobarbital (59 neonates)")
    models = V.phenobarbital_models()
    for name in ("plain", "weight"):
        r, dt = timed_fit(models[name], pheno, "foce")
        extra = ""
        if name == "weight":
            extra = "   " + ", ".join(
                f"{k} {est(r, k)['estimate']:.2f} (SE {est(r, k)['se']:.2f})" for k in ("CL~WT (power)", "V~WT (power)")
            )
        print(f"  {name:18s} FOCE-I  OFV {r.ofv:.1f}  AIC {r.aic:.1f}  {dt:.1f} s{extra}")
    r, dt = timed_fit(models["covariate_network"], pheno, "foce", se=False)
    print(
        f"  covariate network  FOCE-I (weights included, after a MAP stage)  OFV {r.ofv:.1f}  AIC {r.aic:.1f}  "
        f"{dt:.1f} s"
    )
    mech, dt0 = timed_fit(models["weight"], pheno, "map", se=False)
    nn, dt1 = timed_fit(models["ude"], pheno, "map", optimizer="adam+lbfgs", adam_steps=200, se=False)
    print(f"  weight model MAP   OFV {mech.ofv:.2f}  AIC {mech.aic:.1f}  {dt0:.1f} s")
    print(
        f"  neural elimination MAP   OFV {nn.ofv:.2f}  AIC {nn.aic:.1f}  {dt1:.1f} s  "
        f"({nn.n_estimated - mech.n_estimated} more parameters)"
    )
    return models


def theophylline_ude_foce(theo, classic):
    print("== Theophylline UDE by FOCE-I (weights included)")
    r, dt = timed_fit(theophylline_ude(), theo, "foce", optimizer="adam+lbfgs", adam_steps=300, adam_lr=0.02, se=False)
    print(f"  OFV {r.ofv:.2f}  AIC {r.aic:.1f}  (classic: {classic.ofv:.2f}, {classic.aic:.1f})  {dt:.1f} s")


def threads(theo, pheno, models):
    print("== Threads: 2 against 1 (ms; MAP gradient, FOCE-I objective at the initial values)")
    for name, m, d in (
        ("Theophylline UDE", theophylline_ude(), theo),
        ("Theophylline classic", theophylline_classic(), theo),
        ("Phenobarbital weight", models["weight"], pheno),
    ):
        row = []
        for th in (1, 2):
            P = Problem(m, d, threads=th)
            etas = np.full((P.N, m.n_eta), 0.1)
            with _blas_single_threaded(th > 1):
                P.map_objective(m.x0, etas, 1)
                P.foce(m.x0)
                a = median_per_call(lambda P=P, x=m.x0, e=etas: P.map_objective(x, e, 1), 10, 5, scale=1e3)
                b = median_per_call(lambda P=P, x=m.x0: P.foce(x), 2, 5, scale=1e3)
            P.close()
            row.append((a, b))
        (a1, b1), (a2, b2) = row
        print(
            f"  {name:22s} MAP gradient {a1:7.2f} -> {a2:7.2f} ({a1 / a2:.2f}x)   FOCE-I {b1:7.1f} -> {b2:7.1f} "
            f"({b1 / b2:.2f}x)"
        )


def main():
    theo = sc.pkdata.theophylline()
    pheno = sc.pkdata.phenobarbital()
    classic = theophylline(theo)
    recovery()
    models = phenobarbital(pheno)
    theophylline_ude_foce(theo, classic)
    threads(theo, pheno, models)


if __name__ == "__main__":
    main()
