"""Pharmacometrics: NONMEM-style data, compartment models with neural terms, population fits.

* :func:`read_data`: NONMEM-style CSV or DataFrame -> :class:`Population` of :class:`Subject`
  with dose schedules for the ODE solvers;
* compartment models (:mod:`smallchains.pk.models`), built in or written in Python, with
  optional neural terms (a :class:`smallchains.UDE`);
* :class:`PopulationModel`: typical values, covariate effects, random effects, residual error;
* :func:`fit`: individual, naive pooled, MAP / empirical Bayes and FOCE-I estimation, with
  standard errors, OFV/AIC/BIC, shrinkage and diagnostics (:class:`FitResult`); the methods
  are classes registered in :mod:`smallchains.pk.methods` (a new method is one class).
"""

from . import demo, methods, plots  # noqa: E402,F401 - sc.pk.plots, sc.pk.demo, sc.pk.methods
from .augment import augment
from .compare import compare
from .data import DataError, Dose, Population, Subject, read_data
from .fit import FitError, FitResult, IndividualFits, fit, load
from .importance import importance_sampling
from .models import (
    MODELS,
    CompartmentModel,
    Ratio,
    one_cpt_iv,
    one_cpt_oral,
    one_cpt_oral_emax,
    one_cpt_oral_mm,
    three_cpt_iv,
    three_cpt_oral,
    two_cpt_iv,
    two_cpt_oral,
)
from .npde import npde
from .population import CovariateNetwork, ErrorModel, PopulationModel
from .regimen import Regimen, regimen
from .simulate import simulate_data, simulate_regimen
from .tables import write_tables

__all__ = [
    "augment",
    "compare",
    "DataError",
    "Dose",
    "Population",
    "Subject",
    "read_data",
    "MODELS",
    "CompartmentModel",
    "Ratio",
    "one_cpt_iv",
    "one_cpt_oral",
    "one_cpt_oral_emax",
    "one_cpt_oral_mm",
    "three_cpt_iv",
    "three_cpt_oral",
    "two_cpt_iv",
    "two_cpt_oral",
    "CovariateNetwork",
    "ErrorModel",
    "PopulationModel",
    "simulate_data",
    "fit",
    "importance_sampling",
    "npde",
    "write_tables",
    "load",
    "FitResult",
    "FitError",
    "IndividualFits",
    "Regimen",
    "regimen",
    "simulate_regimen",
]
