"""Dosing regimens for simulation: ``sc.pk.regimen(...)``, composable with ``+`` (as Pumas' DosageRegimen).

A regimen is a list of NONMEM dose records (AMT, TIME, CMT, II, ADDL, RATE or DUR); it becomes
data through :func:`smallchains.pk.read_data`, so a simulated regimen obeys exactly the rules a
data set does (ADDL expansion, infusions, compartments).  ``FitResult.simulate`` uses it to
simulate new subjects on a new regimen without building a NONMEM frame with dummy DVs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class DoseRecord:
    """One NONMEM dose record (EVID 1): ``addl`` more doses every ``ii`` after ``time``."""

    amt: float
    time: float
    cmt: int
    ii: float
    addl: int
    rate: float
    duration: float
    ss: int = 0

    def as_row(self):
        row = {
            "EVID": 1,
            "AMT": self.amt,
            "TIME": self.time,
            "CMT": self.cmt,
            "II": self.ii,
            "ADDL": self.addl,
            "RATE": 0.0,
            "DUR": float("nan"),
            "MDV": 1,
            "SS": self.ss,
        }
        if self.rate > 0:
            row["RATE"] = self.rate
        elif self.duration > 0:
            row["RATE"], row["DUR"] = -2.0, self.duration
        return row


class Regimen:
    """Dose records in time order; ``a + b`` is both regimens' doses together."""

    def __init__(self, records=()):
        self.records = tuple(sorted(records, key=lambda r: r.time))

    def __add__(self, other):
        if not isinstance(other, Regimen):
            return NotImplemented
        return Regimen(self.records + other.records)

    def __len__(self):
        return len(self.records)

    def dose_times(self):
        """Every dose time after ADDL expansion, sorted."""
        return sorted(r.time + k * r.ii for r in self.records for k in range(r.addl + 1))

    def rows(self):
        """The records as NONMEM data rows (dicts of AMT, TIME, CMT, II, ADDL, RATE, DUR, EVID, MDV, SS)."""
        return [r.as_row() for r in self.records]

    def __repr__(self):
        parts = []
        for r in self.records:
            how = f", rate={r.rate:g}" if r.rate > 0 else (f", duration={r.duration:g}" if r.duration > 0 else "")
            rep = f", ii={r.ii:g}, addl={r.addl}" if r.addl else (f", ii={r.ii:g}" if r.ss else "")
            ss = f", ss={r.ss}" if r.ss else ""
            parts.append(f"regimen({r.amt:g}, time={r.time:g}, cmt={r.cmt}{rep}{how}{ss})")
        return " + ".join(parts) if parts else "Regimen()"


def _number(name, v, *, positive=False, nonneg=False):
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a number, got {v!r}") from None
    if not math.isfinite(f) or (positive and not f > 0) or (nonneg and not f >= 0):
        need = "> 0" if positive else (">= 0" if nonneg else "finite")
        raise ValueError(f"`{name}` must be {need}, got {v!r}")
    return f


def regimen(amt, time=0.0, *, cmt=1, ii=0.0, addl=0, rate=None, duration=None, ss=0) -> Regimen:
    """A dose of ``amt`` at ``time`` into compartment ``cmt`` (1-based), then ``addl`` more every ``ii``.

    ``rate`` (amount per time) or ``duration`` makes it a zero-order infusion (give one of them);
    neither: a bolus.  Combine regimens with ``+``, e.g. a loading dose then maintenance:
    ``regimen(200) + regimen(100, time=12, ii=12, addl=9)``.

    ``ss``: NONMEM's SS item: 1, every compartment is reset at ``time`` to the steady state of
    this dose given every ``ii`` forever; 2, that steady state is added to the amounts from the
    regimen's earlier doses (see :mod:`smallchains.pk.steady_state`).
    """
    amt = _number("amt", amt, positive=True)
    time = _number("time", time)
    if isinstance(cmt, bool) or not isinstance(cmt, int) or cmt < 1:
        raise ValueError(f"`cmt` must be a whole number >= 1 (NONMEM's CMT, 1-based), got {cmt!r}")
    if isinstance(addl, bool) or not isinstance(addl, int) or addl < 0:
        raise ValueError(f"`addl` must be a whole number >= 0 (the doses after the first), got {addl!r}")
    ii = _number("ii", ii, nonneg=True)
    if addl > 0 and not ii > 0:
        raise ValueError(f"`ii` (the dosing interval) must be > 0 when addl > 0, got {ii!r}")
    ss = 0 if ss in (None, False) else ss
    if isinstance(ss, bool) or ss not in (0, 1, 2):
        raise ValueError(f"`ss` must be 0, 1 (reset to the steady state) or 2 (add the steady state), got {ss!r}")
    if ss and not ii > 0:
        raise ValueError(f"`ii` (the dosing interval) must be > 0 for a steady-state dose (ss={ss}), got {ii!r}")
    if rate is not None and duration is not None:
        raise ValueError("give `rate` or `duration` for an infusion, not both")
    r = _number("rate", rate, positive=True) if rate is not None else 0.0
    d = _number("duration", duration, positive=True) if duration is not None else 0.0
    return Regimen([DoseRecord(amt, time, cmt, ii, addl, r, d, int(ss))])
