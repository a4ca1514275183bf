"""Pharmacometrics: NONMEM-style data, compartment models with neural terms, population fits.

So far: :func:`read_data` (NONMEM-style CSV or DataFrame -> :class:`Population` of
:class:`Subject` with dose schedules for the ODE solvers).
"""

from .data import DataError, Dose, Population, Subject, read_data

__all__ = ["DataError", "Dose", "Population", "Subject", "read_data"]
