"""The outcome of a population fit: :class:`FitResult` (views, summary, save / load as checksummed
JSON), :class:`IndividualFits`, the JSON description of a model (:func:`model_spec`,
:func:`model_from_spec`) and :class:`FitError`."""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings

import numpy as np

from .._atomic import atomic_write
from .._warnings import DataWarning
from .covariance import summarize
from .population import PopulationModel


class FitError(RuntimeError):
    """A fit could not start or could not produce a finite objective."""


class FitResult:
    """The outcome of :func:`fit`.

    Attributes:
        model, method: the population model and the estimation method.
        x: the estimates in the model's unconstrained layout (``model.names``).
        etas: (n_subjects, n_eta) the subjects' random effects (the modes of their posteriors).
        ids: the subjects' IDs, in the rows of ``etas``.
        ofv: -2 log likelihood without the constant (FOCE-I approximation with random effects).
        loglik, aic, bic: from the full -2 log likelihood (with n log 2 pi).
        objective: the value the method minimised (e.g. the joint -2 log posterior for MAP).
        n_obs, n_estimated: observations used; parameters estimated.
        table: one dict per reported parameter: name, estimate, se, rse (%), and for log-scale
            parameters the log estimate and its se.
        shrinkage: {eta name: 1 - sd(eta_i) / omega}.
        diagnostics: columns ID, TIME, TAD, DVID, DV, PRED, IPRED, RES, WRES, IWRES, CWRES
            (arrays; NONMEM's names: see :func:`smallchains.pk.report.diagnostics`).
        converged, message, n_evaluations, elapsed, starts (objective of every start).
        trace: the estimates along the run, or None: {"iteration", "x" (rows in ``model.names``'
            layout), "objective", "kind"}: "evaluations" (the optimizer's evaluations that lowered
            the objective) or "saem" (every SAEM iteration, exploration numbered negative, and
            the complete-data -2 log likelihood); NONMEM's .ext file lists it
            (:func:`smallchains.pk.tables.write_tables`).
    """

    def __init__(self, **kw):
        self.__dict__.update(kw)

    # ------------------------------------------------------------------ views

    @property
    def theta(self):
        return self.model.theta(self.x)

    @property
    def omega(self):
        return self.model.omega(self.x)

    @property
    def sigma(self):
        return self.model.sigma(self.x)

    @property
    def weights(self):
        return self.model.weights(self.x).copy()

    @property
    def correlation(self):
        """The correlation matrix of the estimates in ``cov_names`` (None without a covariance)."""
        return summarize(self.cov)[0]

    @property
    def condition_number(self):
        """Largest over smallest eigenvalue of :attr:`correlation` (NONMEM's; nan without one)."""
        return summarize(self.cov)[1]

    def individual_params(self, random_effects=True):
        """{subject id: {parameter: value}} at each subject's random effects (or, with
        ``random_effects=False``, the typical values given its covariates: what PRED uses)."""
        out = {}
        m = self.model
        for sid, C, z, cov, eta in zip(self.ids, self._designs, self._z, self._cov, self.etas):
            logq = m.log_individual(self.x, C, z, eta if random_effects else np.zeros_like(eta))
            pm, _ = m.structural_params(logq, cov)
            out[sid] = dict(zip(m.param_names, pm.tolist()))
        return out

    def simulate(self, regimen, *, times, n=1, covariates=None, seed=0, dvid=1):
        """``n`` new subjects on a new dosing ``regimen`` at these estimates: a tidy DataFrame.

        ``regimen`` from :func:`smallchains.pk.regimen` (e.g. ``regimen(100, ii=12, addl=6)``),
        observed at ``times``; ``covariates`` {name: value or one value per subject}.  Columns ID,
        TIME, DVID, IPRED (no residual error), DV (with it) and ETA_<name> (each subject's random
        effects, drawn from Omega).  See :func:`smallchains.pk.simulate_regimen`.
        """
        from .simulate import simulate_regimen

        return simulate_regimen(
            self.model, self.x, regimen, times=times, n=n, covariates=covariates, seed=seed, dvid=dvid
        )

    def write_tables(self, data, folder, **kw):
        """NONMEM's sdtab, patab, cotab, catab and .ext files of this fit in ``folder``:
        :func:`smallchains.pk.tables.write_tables` (its keywords: run, n_sim, seed, ...)."""
        from .tables import write_tables

        return write_tables(self, data, folder, **kw)

    def to_frame(self, what="table"):
        """The parameter table (``"table"``) or the diagnostics (``"diagnostics"``) as a pandas DataFrame."""
        import pandas as pd

        if what == "table":
            return pd.DataFrame(self.table)
        if what == "diagnostics":
            return pd.DataFrame(self.diagnostics)
        raise ValueError(f"`what` must be 'table' or 'diagnostics', got {what!r}")

    def _censored_note(self):
        rule = (self.settings or {}).get("blq", "m1")
        blq = self.diagnostics.get("BLQ") if isinstance(self.diagnostics, dict) else None
        n = int(np.sum(blq)) if blq is not None else 0
        return f" ({n} censored below the LLOQ: Beal's {rule.upper()})" if rule != "m1" and n else ""

    def summary(self):
        lines = [
            f"{self.method.upper()} fit of {self.model.structural.name}: {self.n_subjects} subjects, "
            f"{self.n_obs} observations{self._censored_note()}",
            f"OFV {self.ofv:.4f}   -2LL {-2 * self.loglik:.4f}   AIC {self.aic:.4f}   BIC {self.bic:.4f}   "
            f"({self.n_estimated} parameters; {'converged' if self.converged else 'NOT converged'}: "
            f"{self.message})",
            f"{'parameter':<22}{'estimate':>12}{'SE':>12}{'RSE%':>9}   {'95% CI':<24}",
        ]
        for row in self.table:
            se = row["se"]
            rse = row["rse"]
            lo, hi = row.get("ci_lower", math.nan), row.get("ci_upper", math.nan)  # (fits saved before CIs: none)
            ci = f"[{lo:.4g}, {hi:.4g}]" if np.isfinite(lo) else ""
            lines.append(f"{row['name']:<22}{row['estimate']:>12.5g}{se:>12.4g}{rse:>9.1f}   {ci}")
        aug = getattr(self, "augmentation", None)
        if aug:
            ve = ", ".join(f"{k} {100 * v:.0f}%" for k, v in aug["variance_explained"].items())
            lines.append(
                f"augmented with a covariate network ({', '.join(aug['covariates'])} -> {', '.join(aug['targets'])}): "
                f"dOFV {aug['delta_ofv']:.3f} from {aug['ofv_before']:.3f}; eta variance explained: {ve}"
            )
        if self.shrinkage:
            lines.append("eta shrinkage: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in self.shrinkage.items()))
        cvs = [f"{r['name']} {r['cv_percent']:.1f}%" for r in self.table if "cv_percent" in r]
        if cvs:
            lines.append("omega as CV: " + ", ".join(cvs))
        corrs = [f"{r['name']} {r['corr']:.3f}" for r in self.table if "corr" in r]
        if corrs:
            lines.append("omega correlations: " + ", ".join(corrs))
        kind = getattr(self, "cov_kind", None)
        if kind:
            if self.cov is not None:
                lines.append(f"covariance step: {kind} (NONMEM's $COV), condition number {self.condition_number:.3g}")
            else:
                lines.append(f"covariance step: {kind}, failed: {getattr(self, 'cov_why', None) or 'not available'}")
            if getattr(self, "cov_excluded", None):
                lines.append(f"  left out at a variance bound (SE NaN): {', '.join(self.cov_excluded)}")
        return "\n".join(lines)

    def __repr__(self):
        return self.summary()

    # ------------------------------------------------------------------ save / load

    def save(self, path):
        """Write the fit as JSON, atomically (a temporary file in the same folder, then renamed)."""
        m = self.model
        doc = {
            "format": "smallchains.pk.fit",
            "version": 2,
            "method": self.method,
            "model": model_spec(m),
            "names": m.names,
            "x": self.x.tolist(),
            "ids": [_jsonable(i) for i in self.ids],
            "etas": self.etas.tolist(),
            "ofv": self.ofv,
            "loglik": self.loglik,
            "aic": self.aic,
            "bic": self.bic,
            "objective": self.objective,
            "n_obs": self.n_obs,
            "n_subjects": self.n_subjects,
            "n_estimated": self.n_estimated,
            "table": self.table,
            "shrinkage": self.shrinkage,
            "converged": self.converged,
            "message": self.message,
            "elapsed": self.elapsed,
            "starts": self.starts,
            "covariate_refs": self.covariate_refs,
            "covariance": None if self.cov is None else self.cov.tolist(),
            "cov_names": self.cov_names,
            "cov_kind": getattr(self, "cov_kind", None),
            "cov_excluded": getattr(self, "cov_excluded", []),
            "cov_why": getattr(self, "cov_why", None),
            "diagnostics": {k: [_jsonable(v) for v in np.asarray(a).tolist()] for k, a in self.diagnostics.items()},
            "designs": [C.tolist() for C in self._designs],
            "z": [np.asarray(z).tolist() for z in self._z],
            "cov": self._cov,
            "settings": self.settings,
            "trace": getattr(self, "trace", None),
        }
        doc["sha256"] = _doc_digest(doc)
        return atomic_write(path, lambda fh: json.dump(doc, fh, indent=1, allow_nan=True), suffix=".json")

    @classmethod
    def load(cls, path, model=None):
        """Read a fit written by :meth:`save`.  Models with a custom ``individual`` function or a
        user-written structural model must be passed as ``model`` (code is not saved)."""
        try:
            with open(path, encoding="utf-8") as fh:
                doc = json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"{os.fspath(path)!r} is not a readable smallchains fit: it is truncated or damaged "
                f"({type(exc).__name__}: {exc})"
            ) from None
        if not isinstance(doc, dict) or doc.get("format") != "smallchains.pk.fit":
            raise ValueError(f"{os.fspath(path)!r} is not a smallchains fit (no 'format': 'smallchains.pk.fit')")
        if doc.get("version", 1) >= 2:
            if doc.get("sha256") != _doc_digest(doc):
                raise ValueError(
                    f"{os.fspath(path)!r} was edited or damaged after it was saved (its checksum does "
                    "not match its content); refit, or restore the file"
                )
        else:
            warnings.warn(
                f"{os.fspath(path)!r} was saved by an older smallchains without a checksum: its content "
                "cannot be verified",
                DataWarning,
                stacklevel=2,
            )
        try:
            return cls._from_doc(doc, model)
        except (KeyError, TypeError) as exc:  # a field missing or of the wrong kind (ValueErrors say their own)
            raise ValueError(
                f"{os.fspath(path)!r} is not a complete smallchains fit ({type(exc).__name__}: {exc})"
            ) from None

    @classmethod
    def _from_doc(cls, doc, model):
        if model is None:
            model = model_from_spec(doc["model"])
        if list(model.names) != list(doc["names"]):
            raise ValueError(f"the model's parameters {model.names} differ from the saved fit's {doc['names']}")
        cov = doc.get("covariance")
        return cls(
            model=model,
            method=doc["method"],
            x=np.asarray(doc["x"], dtype=float),
            ids=doc["ids"],
            etas=np.asarray(doc["etas"], dtype=float).reshape(len(doc["ids"]), model.n_eta),
            ofv=doc["ofv"],
            loglik=doc["loglik"],
            aic=doc["aic"],
            bic=doc["bic"],
            objective=doc["objective"],
            n_obs=doc["n_obs"],
            n_subjects=doc["n_subjects"],
            n_estimated=doc["n_estimated"],
            table=doc["table"],
            shrinkage=doc["shrinkage"],
            converged=doc["converged"],
            message=doc["message"],
            elapsed=doc["elapsed"],
            starts=doc["starts"],
            covariate_refs=doc["covariate_refs"],
            cov=None if cov is None else np.asarray(cov, dtype=float),
            cov_names=doc["cov_names"],
            cov_kind=doc.get("cov_kind"),
            cov_excluded=doc.get("cov_excluded", []),
            cov_why=doc.get("cov_why"),
            diagnostics={k: np.asarray(v) for k, v in doc["diagnostics"].items()},
            _designs=[
                np.asarray(C, dtype=float).reshape(len(model.theta_names), len(model.covariates))
                for C in doc["designs"]
            ],
            _z=doc["z"],
            _cov=doc["cov"],
            settings=doc["settings"],
            n_evaluations=None,
            skipped=[],
            trace=doc.get("trace"),
        )


def _doc_digest(doc):
    """SHA-256 of a fit document's content (every field but the digest itself, keys sorted)."""
    body = {k: v for k, v in doc.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, allow_nan=True).encode("utf-8")).hexdigest()


def _jsonable(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return v


def model_spec(m):
    """A JSON description of a population model (enough to rebuild built-in ones)."""
    from .models import MODELS

    builtin = (
        m.structural.name in MODELS
        and m.structural.n_weights == 0
        and m.individual is None
        and m.covariate_network is None
    )
    return {
        "structural": m.structural.name,
        "builtin": builtin,
        "theta_names": m.theta_names,
        "eta": m.eta_names,
        "omega": m.omega_spec,
        "covariates": [[m.theta_names[k], c, form] for k, c, form in m.covariates],
        "covariate_ref": m.covariate_ref,
        "covariate_levels": [[k, c, lv] for (k, c), lv in m.covariate_levels.items()],
        "error": m.error.kind,
        "weight_prior": m.weight_prior,
        "fixed": [n for n, f in zip(m.names, m.fixed) if f],
        "bounds": {k: list(v) for k, v in m.bounds.items()},
        "x0": m.x0.tolist(),
    }


def model_from_spec(spec):
    if not spec.get("builtin"):
        raise ValueError(
            f"this fit's model ({spec['structural']}, with a custom `individual` function or a "
            "network or a user-written model) cannot be rebuilt from the file: pass model=..."
        )
    x0 = np.asarray(spec["x0"])
    theta = dict(zip(spec["theta_names"], np.exp(x0[: len(spec["theta_names"])])))
    cov = {}
    levels = {(k, c): lv for k, c, lv in spec.get("covariate_levels", [])}
    for k, c, form in spec["covariates"]:
        cov.setdefault(k, {})[c] = ("categorical", levels[(k, c)]) if form.startswith("cat=") else form
    m = PopulationModel(
        spec["structural"],
        theta,
        eta=spec["eta"],
        omega=spec["omega"],
        covariates=cov,
        covariate_ref=spec["covariate_ref"],
        error=spec["error"],
        weight_prior=spec["weight_prior"],
    )
    m.x0 = x0.copy()
    for name in spec["fixed"]:
        m.fixed[m.names.index(name)] = True
    m.set_bounds(spec.get("bounds", {}))
    return m


load = FitResult.load


class IndividualFits:
    """Each subject fitted alone (``fits``: {id: FitResult of a pooled fit to that subject})."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def estimates(self):
        """{id: {theta name: estimate}}."""
        return {i: r.theta for i, r in self.fits.items()}

    def summary(self):
        names = self.model.theta_names + self.model.error.names
        lines = [
            f"individual fits of {self.model.structural.name}: {self.n_subjects} subjects, OFV {self.ofv:.4f}",
            f"{'ID':<10}" + "".join(f"{n:>12}" for n in names),
        ]
        for i, r in self.fits.items():
            vals = list(r.theta.values()) + list(r.sigma.values())
            lines.append(f"{str(i):<10}" + "".join(f"{v:>12.5g}" for v in vals))
        return "\n".join(lines)

    def __repr__(self):
        return self.summary()
