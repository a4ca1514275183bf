"""The ``smallchains`` command line.

smallchains fit DATA.csv --model one_cpt_oral --theta ka=1.5,CL=0.04,V=0.5 --eta ka,CL --out DIR
smallchains demo theophylline [--out DIR]
smallchains warmup [training cnn ode pk]     (compile the kernels now, once per install)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time


class _Throttled:
    """Progress lines at most every ``every`` seconds (long fits), to stderr."""

    def __init__(self, every=2.0):
        self.every = every
        self.last = 0.0

    def __call__(self, msg):
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            print(msg, file=sys.stderr, flush=True)


def _pairs(text, what):
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        if "=" not in item:
            raise SystemExit(f"error: {what} takes name=value pairs separated by commas, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise SystemExit(f"error: {what}: {k.strip()} = {v!r} is not a number") from None
    return out


def _fixed(text, theta):
    """--fix NAME[=VALUE],...: the names to hold (PopulationModel's ``fixed``); a value sets a typical
    value's initial (and so final) value, overriding --theta."""
    names = []
    for item in filter(None, (s.strip() for s in (text or "").split(","))):
        name, _, value = (t.strip() for t in item.partition("="))
        if value:
            if name not in theta:
                raise SystemExit(
                    f"error: --fix {item!r}: a value can only be given for a typical value in --theta "
                    f"({', '.join(theta)}); fix residual errors with their --sigma value"
                )
            try:
                theta[name] = float(value)
            except ValueError:
                raise SystemExit(f"error: --fix: {name} = {value!r} is not a number") from None
        names.append(name)
    return names


def _bounds(items):
    """--bound NAME=LOWER:UPPER (repeatable; an empty end is no bound): PopulationModel's ``bounds``."""
    out = {}
    for item in items or ():
        name, eq, rng = (t.strip() for t in item.partition("="))
        lo, colon, hi = (t.strip() for t in rng.partition(":"))
        if not (name and eq and colon):
            raise SystemExit(f"error: --bound {item!r}: write NAME=LOWER:UPPER, e.g. CL=0.001:10 or ka=:50")
        try:
            out[name] = (float(lo) if lo else None, float(hi) if hi else None)
        except ValueError:
            raise SystemExit(f"error: --bound {item!r}: the bounds are not numbers") from None
    return out


def _covariates(items):
    out = {}
    for item in items or ():
        try:
            target, rest = item.split("~", 1)
            cov, form = (rest.split(":", 1) + ["power"])[:2]
        except ValueError:
            raise SystemExit(
                f"error: --covariate takes PARAM~COV[:power|exp|linear|cat=L0/L1/...], got {item!r}"
            ) from None
        form = form.strip()
        if form.startswith("cat="):  # (a categorical effect: its levels, the first the reference)
            form = ("categorical", [v for v in form[4:].split("/") if v])
        out.setdefault(target.strip(), {})[cov.strip()] = form
    return out


def _numbers(text, what):
    out = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        try:
            out.append(float(item))
        except ValueError:
            raise SystemExit(
                f"error: {what}: {item!r} is not a number ({what} takes numbers separated by "
                "commas, e.g. 0.5 or 0.5,0.1)"
            ) from None
    if not out:
        raise SystemExit(f"error: {what} is empty; give numbers separated by commas")
    return out


def _check_out(folder):
    """Create the output folder now and check that files can be written into it."""
    from ._atomic import check_target

    try:
        os.makedirs(folder, exist_ok=True)
        check_target(os.path.join(folder, "fit.json"))
    except OSError as e:
        raise SystemExit(f"error: --out {folder!r}: {e.strerror or e}") from None


def _write_text(path, text):
    from ._atomic import atomic_write

    atomic_write(path, lambda fh: fh.write(text))


def cmd_compare(a):
    import warnings

    from . import pk

    fits, names = [], []
    for path in a.fits:
        if not os.path.isfile(path):
            raise SystemExit(f"error: no fit file {path!r}")
        try:
            fits.append(pk.load(path))
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
        stem = os.path.splitext(os.path.basename(path))[0]
        names.append(os.path.basename(os.path.dirname(os.path.abspath(path))) if stem == "fit" else stem)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            table = pk.compare(fits, names=names, reference=0 if a.reference is None else a.reference)
        except (ValueError, TypeError) as e:
            raise SystemExit(f"error: {e}") from None
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if a.out:
        _write_text(a.out, table.to_csv(index=False))
    return 0


def _option_value(text):
    """A --method-option value: none, a whole number, a number, or several separated by commas (a tuple)."""
    t = text.strip()
    if t.lower() == "none":
        return None
    if "," in t:
        return tuple(_option_value(v) for v in t.split(","))
    for kind in (int, float):
        try:
            return kind(t)
        except ValueError:
            pass
    return t


def _method_options(items):
    out = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"error: --method-option {item!r}: write NAME=VALUE, e.g. n_explore=500")
        out[name.strip()] = _option_value(value)
    return out or None


def cmd_fit(a):
    import importlib

    from . import pk

    for name in a.imports or ():  # (e.g. a module that registers an estimation method)
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise SystemExit(f"error: --import {name}: {e}") from None
    if a.method not in pk.methods.names():
        raise SystemExit(
            f"error: --method {a.method!r} is not a registered estimation method; registered: "
            f"{', '.join(pk.methods.names())} (a module of yours that registers one: --import MODULE)"
        )
    if a.model not in pk.MODELS:
        raise SystemExit(f"error: unknown model {a.model!r}; the built-in models are {', '.join(sorted(pk.MODELS))}")
    st = pk.MODELS[a.model]()
    if not a.theta:
        raise SystemExit(
            f"error: --theta is required: initial values for {', '.join(st.params)}, e.g. "
            f"--theta {','.join(p + '=1.0' for p in st.params)}"
        )
    sigma = None if a.sigma is None else _numbers(a.sigma, "--sigma")
    if a.out:  # before the fit: an unwritable --out must not cost the fit's work
        _check_out(a.out)
    if a.npde_sims != 0 and a.npde_sims < 100:
        raise SystemExit(f"error: --npde-sims must be 0 (no NPDE) or >= 100, got {a.npde_sims}")
    try:
        data = pk.read_data(a.data)
        theta = _pairs(a.theta, "--theta")
        fixed = _fixed(a.fix, theta)
        model = pk.PopulationModel(
            st,
            theta,
            fixed=fixed,
            eta=[e.strip() for e in (a.eta or "").split(",") if e.strip()],
            omega=[[k.strip() for k in b.split(",") if k.strip()] for b in a.omega_block] if a.omega_block else a.omega,
            omega_init=a.omega_init,
            covariates=_covariates(a.covariate),
            error=a.error,
            sigma=sigma,
            bounds=_bounds(a.bound),
        )
    except (ValueError, TypeError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"data: {data}")
    method = a.method if (a.method != "foce" or model.n_eta) else "pooled"
    if method != a.method:
        print("(no random effects given with --eta: a naive pooled fit)")
    try:
        r = pk.fit(
            model,
            data,
            method,
            starts=a.starts,
            restarts=a.restarts,
            threads=a.threads,
            progress=_Throttled(),
            method_options=_method_options(a.method_options),
            blq=a.blq,
            lloq=a.lloq,
        )
    except (pk.FitError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    print(r.summary())
    if a.out:
        _write_text(os.path.join(a.out, "summary.txt"), r.summary() + "\n")
        if method == "individual":
            print(f"written to {a.out}: summary.txt")
            return 0
        r.save(os.path.join(a.out, "fit.json"))
        r.to_frame("table").to_csv(os.path.join(a.out, "parameters.csv"), index=False)
        r.to_frame("diagnostics").to_csv(os.path.join(a.out, "diagnostics.csv"), index=False)
        tables = r.write_tables(data, a.out, n_sim=a.npde_sims)
        plots = [] if a.no_plots else pk.plots.save_report(r, data, a.out, n_sim=a.vpc_sims)
        print(
            f"written to {a.out}: fit.json, summary.txt, parameters.csv, diagnostics.csv"
            + "".join(f", {os.path.basename(p)}" for p in tables + plots)
        )
    return 0


def cmd_demo(a):
    from .pk import demo

    if a.dataset != "theophylline":
        raise SystemExit(f"error: the demo data sets are: theophylline (got {a.dataset!r})")
    if a.out:
        _check_out(a.out)
    demo.run(out=a.out, progress=_Throttled())
    return 0


def cmd_warmup(a):
    from . import warmup

    features = warmup.FEATURES if a.features == ["all"] else a.features
    unknown = [f for f in features if f not in warmup.FEATURES]
    if unknown:
        raise SystemExit(
            f"error: unknown feature(s) {', '.join(unknown)}; choose from: all, {', '.join(warmup.FEATURES)}"
        )
    warmup.warmup(features, progress=not a.quiet)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="smallchains", description="Pharmacometric fits with smallchains.")
    sub = ap.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="fit a population model to a NONMEM-style CSV")
    f.add_argument("data", help="NONMEM-style CSV (ID, TIME, DV, MDV, EVID, AMT, CMT, ...)")
    f.add_argument("--model", required=True, help="a built-in model, e.g. one_cpt_oral")
    f.add_argument("--theta", help="initial typical values: name=value,...")
    f.add_argument("--eta", help="parameters with random effects: name,...")
    f.add_argument("--omega", default="diagonal", choices=["diagonal", "full"])
    f.add_argument(
        "--omega-block",
        action="append",
        metavar="ETA,ETA,...",
        help="a block of Omega (NONMEM's $OMEGA BLOCK): the random effects named covary; repeatable; the "
        "others stay diagonal (overrides --omega)",
    )
    f.add_argument("--omega-init", type=float, default=0.1, help="initial variance of each random effect")
    f.add_argument(
        "--covariate",
        action="append",
        help="PARAM~COV[:power|exp|linear|cat=L0/L1/...] (cat: a shift of log PARAM per level after the reference L0), "
        "repeatable",
    )
    f.add_argument("--error", default="additive", choices=["additive", "proportional", "combined"])
    f.add_argument("--sigma", help="initial residual sd(s), comma-separated")
    f.add_argument(
        "--fix",
        help="parameters held at their initial values: NAME[=VALUE],... (typical values, e.g. ka=1.5, "
        "or residual errors such as sigma_add)",
    )
    f.add_argument(
        "--bound",
        action="append",
        help="NAME=LOWER:UPPER bounds on a typical value or residual sd (natural scale; an empty end is "
        "no bound), repeatable",
    )
    f.add_argument(
        "--method",
        default="foce",
        help="an estimation method registered in smallchains.pk.methods (built in: foce, laplace, saem, map, "
        "pooled, individual; default foce)",
    )
    f.add_argument(
        "--import",
        dest="imports",
        action="append",
        metavar="MODULE",
        help="import MODULE first, e.g. one that registers an estimation method (repeatable)",
    )
    f.add_argument(
        "--method-option",
        dest="method_options",
        action="append",
        metavar="NAME=VALUE",
        help="an option of the method, e.g. n_explore=500 for saem (a number, none, or numbers separated "
        "by commas), repeatable",
    )
    f.add_argument(
        "--blq",
        default="m1",
        choices=["m1", "m3", "m4"],
        help="BLQ records (BLQ or CENS = 1): m1 leaves them out (default), m3 and m4 keep them as censored "
        "(Beal's methods; with laplace, saem, map)",
    )
    f.add_argument(
        "--lloq", type=float, default=None, help="the LLOQ of the BLQ records (default: the LLOQ column, else their DV)"
    )
    f.add_argument("--starts", type=int, default=1)
    f.add_argument("--restarts", type=int, default=0, help="restarts from the perturbed estimates (best kept)")
    f.add_argument("--threads", type=int, default=None)
    f.add_argument("--out", help="folder for the fit, tables and plots")
    f.add_argument("--no-plots", action="store_true")
    f.add_argument("--vpc-sims", type=int, default=200)
    f.add_argument(
        "--npde-sims",
        type=int,
        default=1000,
        help="simulations for the NPDE column of sdtab1 (0: none; NONMEM's tables sdtab1, patab1, cotab1, "
        "catab1 and run1.ext are written with --out)",
    )
    f.set_defaults(run=cmd_fit)
    c = sub.add_parser("compare", help="compare saved fits (fit.json from `smallchains fit --out`) side by side")
    c.add_argument("fits", nargs="+", help="fit files; each run is named by its file (or its folder, for fit.json)")
    c.add_argument("--reference", default=None, help="the run ΔOFV is taken against (a name; default the first)")
    c.add_argument("--out", help="also write the table to this CSV file")
    c.set_defaults(run=cmd_compare)
    d = sub.add_parser("demo", help="fit the classic and a neural model to a public data set")
    d.add_argument("dataset", help="theophylline")
    d.add_argument("--out", default=None, help="folder for fits and plots")
    d.set_defaults(run=cmd_demo)
    w = sub.add_parser("warmup", help="compile smallchains' kernels now (once per install), with a progress bar")
    w.add_argument(
        "features",
        nargs="*",
        default=["all"],
        help="which: all (default), training, cnn, ode, pk (several may be given)",
    )
    w.add_argument("--quiet", action="store_true", help="no progress bar")
    w.set_defaults(run=cmd_warmup)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return a.run(a)
    except ImportError as e:
        from ._optional import EXTRAS

        missing = (getattr(e, "name", None) or "").split(".")[0]
        if missing not in EXTRAS:
            raise
        raise SystemExit(
            f"error: `smallchains {a.command}` needs the optional package {missing!r}: "
            f"pip install 'smallchains[{EXTRAS[missing]}]'"
        ) from None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
