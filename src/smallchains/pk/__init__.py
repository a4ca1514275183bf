"""Pharmacometrics: NONMEM-style data, compartment models with neural terms, population fits.

So far: :func:`read_data` (NONMEM-style CSV or DataFrame -> :class:`Population` of
:class:`Subject` with dose schedules for the ODE solvers) and the built-in compartment models
(:mod:`smallchains.pk.models`).
"""

from .data import DataError, Dose, Population, Subject, read_data
from .models import (
    MODELS,
    CompartmentModel,
    one_cpt_iv,
    one_cpt_oral,
    one_cpt_oral_emax,
    one_cpt_oral_mm,
    two_cpt_iv,
    two_cpt_oral,
)

__all__ = ["DataError", "Dose", "Population", "Subject", "read_data", "MODELS", "CompartmentModel", "one_cpt_iv",
           "one_cpt_oral", "one_cpt_oral_emax", "one_cpt_oral_mm", "two_cpt_iv", "two_cpt_oral"]
