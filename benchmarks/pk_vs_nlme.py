"""Population fits side by side with R's nlme, same run: Theophylline, Phenobarbital, Quinidine.

    python benchmarks/pk_vs_nlme.py [--rounds 3]

nlme fits by maximum likelihood (``method = "ML"``, Lindstrom-Bates), smallchains by FOCE-I
(its covariance step included: ``se=True``); the models are the same (Pinheiro & Bates 2000):

* **Theophylline**: ``nlme(conc ~ SSfol(Dose, Time, lKe, lKa, lCl), fixed = lKe + lKa + lCl ~ 1,
  random = pdDiag(lKa + lCl ~ 1))``; smallchains' ``one_cpt_oral`` in ka, ke and CL (V = CL /
  ke), random effects on ka and CL, additive error (``sc.pk.demo.theophylline_classic``);
* **Phenobarbital**: ``nlme(conc ~ phenoModel(Subject, time, dose, lCl, lV), fixed = lCl + lV ~
  1, random = pdDiag(lCl + lV ~ 1))`` (59 neonates, repeated IV boluses); smallchains'
  ``one_cpt_iv`` with random effects on CL and V, additive error;
* **Quinidine**: ``nlme(conc ~ quinModel(Subject, time, conc, dose, interval, lV, lKa, lCl), fixed =
  lV + lKa + lCl ~ 1, random = pdDiag(lV + lCl ~ 1))`` (136 patients, oral doses, 249 of them
  steady-state doses: NONMEM's SS = 1, see ``pk_nlme_steady_state.py`` for the records' mapping);
  smallchains' ``one_cpt_oral`` with random effects on V and CL, additive error.

Both start from nlme's example starting values.  Printed per data set: the estimates, -2 log L
of each at its own estimates, CPU and wall seconds (median of ``--rounds`` fits; smallchains
after one warm-up fit that loads or compiles its kernels, whose time is printed too), and the
machine; then the same models fitted by Laplace and MAP (``--no-other-methods`` skips them).
Needs R with nlme (``make bench-r`` installs it); without it, says so and exits 0.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _r import INSTALL, have_nlme, nlme_version, rscript  # noqa: E402
from _timing import machine  # noqa: E402

R_FIT = r"""
suppressPackageStartupMessages(library(nlme))
rounds <- as.integer(commandArgs(TRUE)[1])
timed <- function(f) {
  st <- system.time(r <- f(), gcFirst = FALSE)
  list(r = r, cpu = st[["user.self"]] + st[["sys.self"]], wall = st[["elapsed"]])
}
fits <- list(
  theophylline = function() nlme(conc ~ SSfol(Dose, Time, lKe, lKa, lCl), data = Theoph,
    fixed = lKe + lKa + lCl ~ 1, random = pdDiag(lKa + lCl ~ 1),
    start = c(lKe = -2.4, lKa = 0.45, lCl = -3.2), method = "ML"),
  phenobarbital = function() nlme(conc ~ phenoModel(Subject, time, dose, lCl, lV), data = Phenobarb,
    fixed = lCl + lV ~ 1, random = pdDiag(lCl + lV ~ 1), start = c(-5, 0),
    na.action = NULL, naPattern = ~ !is.na(conc), method = "ML"),
  quinidine = function() nlme(conc ~ quinModel(Subject, time, conc, dose, interval, lV, lKa, lCl),
    data = Quinidine, fixed = lV + lKa + lCl ~ 1, random = pdDiag(lV + lCl ~ 1), groups = ~ Subject,
    start = list(fixed = c(5, -0.3, 2)), na.action = NULL, naPattern = ~ !is.na(conc), method = "ML"))
for (nm in names(fits)) {
  runs <- lapply(seq_len(rounds), function(i) timed(fits[[nm]]))
  r <- runs[[1]]$r
  cat(nm, "cpu", median(sapply(runs, `[[`, "cpu")), "\n")
  cat(nm, "wall", median(sapply(runs, `[[`, "wall")), "\n")
  cat(nm, "m2ll", -2 * as.numeric(logLik(r)), "\n")
  cat(nm, "fixed", fixef(r), "\n")
  cat(nm, "sd", as.numeric(VarCorr(r)[, "StdDev"]), "\n")
}
"""


def nlme_fits(rounds):
    out = {}
    for line in rscript(R_FIT, rounds).stdout.splitlines():
        name, key, *vals = line.split()
        out.setdefault(name, {})[key] = [float(v) for v in vals]
    return out


_DATA = {}


def ours(name):
    import smallchains as sc

    if name == "theophylline":
        model = sc.pk.demo.theophylline_classic()  # (nlme's starting values below)
        model.x0[model.blocks["theta"]] = [0.45, -2.4, -3.2]
        return model, sc.pkdata.theophylline()
    if name == "quinidine":
        import tempfile

        from pk_nlme_steady_state import export_quinidine, to_nonmem

        if "quinidine" not in _DATA:
            with tempfile.TemporaryDirectory() as tmp:
                _DATA["quinidine"] = sc.pk.read_data(to_nonmem(export_quinidine(tmp)))
        model = sc.pk.PopulationModel(
            "one_cpt_oral",
            dict(ka=math.exp(-0.3), CL=math.exp(2.0), V=math.exp(5.0)),
            eta=["V", "CL"],
            error="additive",
            sigma=1.0,
        )
        return model, _DATA["quinidine"]
    model = sc.pk.PopulationModel(
        "one_cpt_iv", dict(CL=math.exp(-5.0), V=1.0), eta=["CL", "V"], error="additive", sigma=2.0, omega_init=0.2
    )
    return model, sc.pkdata.phenobarbital()


def fit_ours(name, rounds, method="foce"):
    import smallchains as sc

    model, data = ours(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.process_time()
        sc.pk.fit(model, data, method)  # (warm-up: loads or compiles the kernels)
        first = time.process_time() - t
        cpu, wall = [], []
        for _ in range(rounds):
            c, w = time.process_time(), time.perf_counter()
            r = sc.pk.fit(model, data, method)
            cpu.append(time.process_time() - c)
            wall.append(time.perf_counter() - w)
    return r, statistics.median(cpu), statistics.median(wall), first


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--no-other-methods",
        dest="other_methods",
        action="store_false",
        help="time FOCE-I only (by default Laplace and MAP fits are timed too)",
    )
    a = ap.parse_args(argv)
    print(f"population fits vs nlme — {time.strftime('%Y-%m-%d')}, {machine()}")
    why = have_nlme()
    if why is not None:
        print(f"skipped: {why}; install R and nlme ({INSTALL}, or `make bench-r`)")
        return 0
    print(f"reference: {nlme_version()}, method = 'ML'; smallchains FOCE-I with its covariance step (sandwich)")
    ref = nlme_fits(a.rounds)
    for name, names, nlme_names in (
        ("theophylline", ["ke", "ka", "CL"], ["lKe", "lKa", "lCl"]),
        ("phenobarbital", ["CL", "V"], ["lCl", "lV"]),
        ("quinidine", ["V", "ka", "CL"], ["lV", "lKa", "lCl"]),
    ):
        r, cpu, wall, first = fit_ours(name, a.rounds)
        n = ref[name]
        th = r.theta
        om = r.omega
        print(f"\n{name}: {r.n_subjects} subjects, {r.n_obs} observations")
        print(f"{'':24s} {'nlme':>12s} {'smallchains':>12s}")
        for k, (ours_name, nlme_name) in enumerate(zip(names, nlme_names, strict=True)):
            label = f"log {ours_name} ({nlme_name})"
            print(f"{label:24s} {n['fixed'][k]:12.4f} {math.log(th[ours_name]):12.4f}")
        sds = [math.sqrt(om[j, j]) for j in range(om.shape[0])] + list(r.sigma.values())
        for k, label in enumerate([f"sd(eta {e})" for e in r.model.eta_names] + ["residual sd"]):
            print(f"{label:24s} {n['sd'][k]:12.4f} {sds[k]:12.4f}")
        print(f"{'-2 log L':24s} {n['m2ll'][0]:12.3f} {-2 * r.loglik:12.3f}")
        print(f"{'CPU s (median)':24s} {n['cpu'][0]:12.3f} {cpu:12.3f}   ratio {cpu / n['cpu'][0]:.1f}x")
        print(f"{'wall s (median)':24s} {n['wall'][0]:12.3f} {wall:12.3f}   (first fit, compiling: {first:.1f} s CPU)")
        print(f"smallchains: {'converged' if r.converged else 'NOT converged'} ({r.message})")
        if a.other_methods:
            print("other smallchains methods (same models and starts, covariance step included):")
            for method in ("laplace", "map"):
                r, cpu, wall, _ = fit_ours(name, a.rounds, method)
                what = "-2 log L" if method == "laplace" else "objective"
                value = -2 * r.loglik if method == "laplace" else r.objective
                print(
                    f"  {method:8s} {what} {value:10.3f}   CPU {cpu:.3f} s ({cpu / n['cpu'][0]:.1f}x nlme's FOCE)"
                    f"   wall {wall:.3f} s   {'converged' if r.converged else 'NOT converged'}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
