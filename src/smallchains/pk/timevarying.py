"""Time-varying covariates inside a subject's solve: the parameters change where the covariates do.

A covariate is piecewise constant between records.  Which record's value holds between two
record times is a convention:

* ``"nocb"`` (next observation carried backward, NONMEM's and the default): the values on a
  record apply to the interval that ends at it, (t_prev, t]; with several records at one time,
  the first of them.  PREDPP advances the system from the previous event to a record with the
  parameters computed from that record's data items.
* ``"locf"`` (last observation carried forward): the values on a record apply from its time on,
  [t, t_next); with several records at one time, the last of them.
* ``"baseline"``: each subject's first values throughout (no cut; a DataWarning says so when a
  covariate the model reads changes within a subject).

The solve is cut wherever the values the model reads change (:func:`cut`): the state is
continuous across a cut, the inputs in force go on, and each piece takes the parameters of
its values; a sample at a cut belongs to the piece whose values hold at its time (under NOCB
the one before, under LOCF the one after; the state is the same).  A steady-state dose's
steady state takes the parameters of the SS record's own values.  Gradients go through every
piece's parameters (see :class:`smallchains.pk.steady_state.PiecewiseSolve`).
"""

from __future__ import annotations

import math

import numpy as np

from .steady_state import Piece

RULES = ("nocb", "locf", "baseline")


def check_rule(rule):
    if rule not in RULES:
        raise ValueError(f"`time_varying` must be one of {RULES} (NONMEM's convention is 'nocb'), got {rule!r}")
    return rule


class CovariateTimeline:
    """The values of covariates ``names`` over a subject's time under ``rule`` (see the module)."""

    def __init__(self, subject, names, rule):
        self.names = list(names)
        T = np.asarray(subject.record_time, dtype=float)
        V = np.column_stack([np.asarray(subject.record_covariates[c], dtype=float) for c in self.names])
        self.rows = {int(r): V[i] for i, r in enumerate(subject.record_row)}
        self.times, first = np.unique(T, return_index=True)
        last = np.r_[first[1:], T.shape[0]] - 1
        self.values = V[first] if rule == "nocb" else V[last]
        self.rule = rule

    def at(self, t):
        """The values in force at time ``t`` (NOCB: at the record times, the interval ending there)."""
        if self.rule == "nocb":
            k = np.searchsorted(self.times, t, side="left")
        else:
            k = np.searchsorted(self.times, t, side="right") - 1
        return self.values[int(np.clip(k, 0, self.values.shape[0] - 1))]

    def cuts(self):
        """The times the values change: after a record time (NOCB) or at it (LOCF)."""
        change = np.any(self.values[1:] != self.values[:-1], axis=1)
        return self.times[:-1][change] if self.rule == "nocb" else self.times[1:][change]

    @property
    def varies(self):
        return bool(np.any(self.values != self.values[0]))


def cut(pieces, times, own_start):
    """Split ``pieces`` (a subject's timeline) at ``times`` strictly inside them: the state carries
    over (``add``), and so do the inputs in force.  ``own_start``: a sample at a cut belongs to the
    piece after it."""
    out = []
    for pc in pieces:
        inside = [c for c in times if pc.t0 < c < pc.t1]
        cur = pc
        for c in inside:
            rate = {}
            for t, kind, state, value in cur.rows:
                if kind == "input" and t < c:
                    rate[state] = rate.get(state, 0.0) + value
            scale = max((abs(v) for t, k, _, v in cur.rows if k == "input"), default=0.0)
            carry = [(c, "input", st, r) for st, r in rate.items() if abs(r) > 1e-12 * scale]
            nxt = Piece(c, rows=carry + [r for r in cur.rows if r[0] >= c], add=True, t1=cur.t1)
            nxt.own_start = own_start
            cur.rows = [r for r in cur.rows if r[0] < c]
            cur.t1 = c
            out.append(cur)
            cur = nxt
        out.append(cur)
    return out


def assign(pieces, timeline, first_time):
    """Give each piece (and each steady state) the index of its covariate values; returns the
    distinct value vectors (n_sets, n_covariates)."""
    sets = []

    def index(v):
        for i, w in enumerate(sets):
            if np.array_equal(v, w):
                return i
        sets.append(np.array(v, dtype=float))
        return len(sets) - 1

    for pc in pieces:
        if timeline.rule == "nocb":
            t = pc.t1 if not math.isinf(pc.t1) else math.inf
            v = timeline.at(t) if not math.isinf(t) else timeline.values[-1]
        else:
            v = timeline.at(pc.t0)
        pc.pset = index(v)
        if pc.steady is not None:
            pc.ss_pset = index(timeline.rows[pc.steady.row])
    return np.array(sets)
