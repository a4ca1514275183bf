"""Doses that depend on individual parameters: NONMEM's ALAGn, Fn, Rn and Dn (PREDPP's meaning).

For compartment n (CMT = n):

* ``ALAGn``, the absorption lag: every dose into n (ADDL doses included) happens ALAGn after its
  record's time; an infusion's start and end both move.
* ``Fn``, the bioavailability: a bolus gives F * AMT; an infusion with a given RATE runs at that
  rate for F * AMT / RATE; with RATE = -2 it lasts its duration at F * AMT / duration; with
  RATE = -1 it runs at Rn for F * AMT / Rn.
* ``Rn``, the modelled rate (records with RATE = -1), and ``Dn``, the modelled duration (records
  with RATE = -2; without Dn the record's DUR column gives it).

A model declares them as individual parameters (typical value, covariates, random effects) by
these names: see :class:`smallchains.pk.PopulationModel` (``theta`` or ``dosing=``).  The times
and amounts of the subject's jumps then follow the parameters at each evaluation
(:meth:`smallchains.GradientFunction.move_jumps`), and the gradients go through the jumps' values
and times exactly (the adjoint's jump-value and jump-time derivatives, not differences).
"""

from __future__ import annotations

import re

import numpy as np

from ..ode.integrate import Jumps

#: a NONMEM dose parameter's name: ALAG1, F2, R1, D1...
DOSE_PARAM = re.compile(r"^(ALAG|F|R|D)([1-9][0-9]*)$")


def parse(names):
    """{(kind, cmt): position} for the dose parameters among ``names`` (kind "ALAG", "F", "R" or "D")."""
    out = {}
    for i, name in enumerate(names):
        m = DOSE_PARAM.match(str(name))
        if m is None:
            raise ValueError(f"{name!r} is not a dose parameter (ALAGn, Fn, Rn or Dn, n the compartment)")
        out[(m.group(1), int(m.group(2)))] = i
    return out


class SubjectDosing:
    """A subject's doses as a jump schedule whose times and values follow the dose parameters.

    ``evaluate(pd)`` returns each jump's time and value (in the order of ``jumps``) and their
    derivatives with respect to ``pd`` (n_jumps, n_dose_params)."""

    def __init__(self, doses, index, n_states, cmt_to_state=None):
        from .data import DataError

        self.index = dict(index)
        self.n_d = len(self.index)
        self.jumps = Jumps()
        self._rows = []  # per jump: (role, dose) with role "bolus", "on", "off" or "reset"
        for d in doses:
            if d.kind == "reset":
                self.jumps.reset(d.time)
                self._rows.append(("reset", d))
                continue
            if d.ss:
                raise DataError(
                    f"row {d.row}: a steady-state dose into a compartment with dose parameters "
                    f"({self._names(d.cmt)}) is not supported yet; give the regimen from its first dose "
                    "(AMT with II and ADDL)"
                )
            state = (d.cmt - 1) if cmt_to_state is None else cmt_to_state(d.cmt)
            if not 0 <= state < n_states:
                raise DataError(f"row {d.row}: CMT {d.cmt} is not a compartment of this model ({n_states} states)")
            if d.kind == "bolus":
                self.jumps.bolus(d.time, state, d.amount)
                self._rows.append(("bolus", d))
                continue
            if d.mode == "model_rate" and ("R", d.cmt) not in self.index:
                raise DataError(
                    f"row {d.row}: RATE = -1 (the rate defined by the model) but the model has no R{d.cmt}; "
                    f"add R{d.cmt} to its parameters, or give the rate"
                )
            if d.mode == "duration" and ("D", d.cmt) not in self.index and not d.duration > 0:
                raise DataError(
                    f"row {d.row}: RATE = -2 (the duration defined by the model) but the model has no "
                    f"D{d.cmt} and the data no DUR; add D{d.cmt} to its parameters, or a DUR column"
                )
            self.jumps.input(d.time, state, 1.0)
            self.jumps.input(d.time, state, -1.0)
            self._rows += [("on", d), ("off", d)]
        self.n_jumps = len(self._rows)

    def _names(self, cmt):
        return ", ".join(f"{k}{c}" for (k, c) in self.index if c == cmt)

    def _get(self, pd, kind, cmt, default):
        i = self.index.get((kind, cmt))
        return (default, -1) if i is None else (float(pd[i]), i)

    def evaluate(self, pd):
        """(t, val, dt/dpd, dval/dpd); raises ValueError when a duration or rate is not positive."""
        nj = self.n_jumps
        t = np.empty(nj)
        val = np.empty(nj)
        T = np.zeros((nj, self.n_d))
        V = np.zeros((nj, self.n_d))
        for q, (role, d) in enumerate(self._rows):
            if role == "reset":
                t[q], val[q] = d.time, 0.0
                continue
            lag, il = self._get(pd, "ALAG", d.cmt, 0.0)
            F, iF = self._get(pd, "F", d.cmt, 1.0)
            t[q] = d.time + lag
            if il >= 0:
                T[q, il] = 1.0
            if role == "bolus":
                val[q] = F * d.amount
                if iF >= 0:
                    V[q, iF] = d.amount
                continue
            # an infusion: its rate R and duration D, with their derivatives in (F, R_n or D_n)
            a = d.amount
            if d.mode == "model_rate":
                R, iR = self._get(pd, "R", d.cmt, 0.0)
                if not R > 0:
                    raise ValueError(f"row {d.row}: the modelled rate R{d.cmt} = {R:g} must be > 0")
                dur = F * a / R
                dR = {iR: 1.0}
                dD = {iR: -F * a / R**2}
                if iF >= 0:
                    dD[iF] = dD.get(iF, 0.0) + a / R
            elif d.mode == "duration":
                dur, iD = self._get(pd, "D", d.cmt, d.duration)
                if not dur > 0:
                    raise ValueError(f"row {d.row}: the infusion's duration D{d.cmt} = {dur:g} must be > 0")
                R = F * a / dur
                dR = {iD: -R / dur} if iD >= 0 else {}
                if iF >= 0:
                    dR[iF] = dR.get(iF, 0.0) + a / dur
                dD = {iD: 1.0} if iD >= 0 else {}
            else:  # a given rate
                R = d.rate
                dur = F * a / R
                dR = {}
                dD = {iF: a / R} if iF >= 0 else {}
            sign = 1.0 if role == "on" else -1.0
            val[q] = sign * R
            for i, v in dR.items():
                V[q, i] += sign * v
            if role == "off":
                t[q] += dur
                for i, v in dD.items():
                    T[q, i] += v
        return t, val, T, V
