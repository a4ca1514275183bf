"""NONMEM-style pharmacometric data: one row per event, read into subjects with dose schedules.

Columns (case-insensitive; only ID and TIME are required):

==========  ============================================================================
ID          subject identifier (records of one subject must be contiguous)
TIME        event time; non-decreasing within a subject
DV          the observation (ignored when MDV = 1 or EVID != 0)
MDV         1: no observation on this record (default: 1 for EVID != 0, else 0 unless DV
            is missing)
EVID        0 observation, 1 dose, 2 other (e.g. a covariate change), 3 reset (all
            compartments to zero), 4 reset then dose (default: 1 where AMT > 0, else 0)
AMT         dose amount (EVID 1 and 4)
CMT         compartment, 1-based (default 1 for doses; for observations 0 = the model's
            default output)
RATE        0 or missing: bolus; > 0: zero-order infusion at that rate (duration AMT/RATE);
            -1: at the model's rate Rn; -2: for the model's duration Dn, or DUR without one
DUR         infusion duration (RATE = -2, for a model without Dn)
II, ADDL    ADDL additional doses every II after this one
SS          0 or missing: an ordinary dose; 1 (and 3): every compartment is reset to the steady
            state of the dose given every II forever; 2: that steady state is added to the
            current amounts; II = 0 with AMT = 0 and RATE > 0: a constant infusion at steady state
            (see smallchains.pk.steady_state for PREDPP's rules)
DVID        which output an observation is of, 1-based (default 1)
BLQ / CENS  1 when the observation is below the limit of quantification: left out of a fit
            (M1, with a DataWarning) or in its likelihood as censored (``fit(..., blq="m3")``
            or ``"m4"``: see smallchains.pk._censored)
LLOQ        the observation's lower limit of quantification (M3, M4; else ``fit(lloq=...)``
            or the DV of the BLQ records)
others      covariates: constant or time-varying, carried forward from record to record (text
            columns are left out with a DataWarning naming them)

Comment records (NONMEM's $DATA IGNORE=c) are dropped with a DataWarning: ``ignore="#"`` by
default, ``"C"`` or ``"@"`` (any letter) on request.
==========  ============================================================================

Validation errors name the row (1-based, as in the file, header excluded), the column and
the rule, e.g. ``row 17: II must be > 0 when ADDL > 0``.
"""

from __future__ import annotations

import math
import operator
import warnings
from dataclasses import dataclass, field

import numpy as np

from .._optional import require
from .._warnings import DataWarning

STANDARD = (
    "ID",
    "TIME",
    "DV",
    "MDV",
    "EVID",
    "AMT",
    "CMT",
    "RATE",
    "DUR",
    "II",
    "ADDL",
    "SS",
    "DVID",
    "BLQ",
    "CENS",
    "LLOQ",
    "DATE",
    "DAT1",
    "DAT2",
    "DAT3",
)


class DataError(ValueError):
    """A NONMEM-style data set broke a rule; the message names the row, the column and the rule."""


@dataclass
class Dose:
    """One dosing event (after ADDL expansion): ``kind`` is "bolus", "infusion" or "reset".

    ``rate`` is an infusion's rate (``duration`` inf: a constant infusion at steady state);
    ``ss`` the SS item (0, 1, 2 or 3; on the record's own dose only, not its ADDL copies);
    ``addl`` 0 for the record's dose, k for its k-th additional dose; ``row`` the record;
    ``mode``: how an infusion is given (see :mod:`smallchains.pk.dosing`: RATE = -1 and -2 take
    the model's Rn and Dn, so their ``rate`` or ``duration`` is NaN here)."""

    time: float
    kind: str
    amount: float = 0.0
    cmt: int = 1
    duration: float = 0.0
    ss: int = 0
    ii: float = 0.0
    row: int = 0
    rate: float = 0.0
    addl: int = 0
    mode: str = "rate"  # an infusion's: "rate" (given), "duration" (RATE = -2), "model_rate" (RATE = -1)


@dataclass
class Subject:
    """The records of one subject.

    Attributes:
        id: the subject's ID value.
        obs_time, dv, dvid, obs_cmt, blq: the observations (MDV = 0 records), in record order.
        lloq: each observation's LLOQ column value (NaN without one), or None: no LLOQ column.
        doses: the dosing and reset events in time order (ADDL expanded; SS kept as a flag).
        covariates: name -> (times, values): the values in force from each time on.
        first_time: the time of the subject's first record.
    """

    id: object
    obs_time: np.ndarray
    dv: np.ndarray
    dvid: np.ndarray
    obs_cmt: np.ndarray
    blq: np.ndarray
    doses: list = field(default_factory=list)
    covariates: dict = field(default_factory=dict)
    first_time: float = 0.0
    #: every record's time and file row, and each covariate's value on every record (carried
    #: forward, leading gaps back-filled): what time-varying covariates are computed from
    record_time: np.ndarray | None = None
    record_row: np.ndarray | None = None
    record_covariates: dict = field(default_factory=dict)
    lloq: np.ndarray | None = None

    @property
    def n_obs(self) -> int:
        return int(self.obs_time.shape[0])

    @property
    def first_dose(self):
        """The amount of the subject's first dose (NaN without one): its DOSE when the data have no
        DOSE column (``individual(q, cov)`` and covariate effects can read it)."""
        for d in self.doses:
            if d.kind != "reset":
                return float(d.amount)
        return math.nan

    def covariate(self, name, t=None):
        """The covariate's value at time(s) ``t`` (carried forward), or its first value when ``t`` is None."""
        if name == "DOSE" and name not in self.covariates:
            return self.first_dose
        if name not in self.covariates:
            raise KeyError(f"subject {self.id} has no covariate {name!r}; it has {list(self.covariates)}")
        times, values = self.covariates[name]
        if t is None:
            return values[0]
        idx = np.searchsorted(times, np.asarray(t, dtype=float), side="right") - 1
        return values[np.clip(idx, 0, len(values) - 1)]

    def schedule(self, cmt_to_state=None, n_states=None):
        """The subject's doses as one :class:`smallchains.Jumps` schedule and the time to start solving.

        Steady-state doses cut a subject's solve into pieces, each started from a steady state
        (see :mod:`smallchains.pk.steady_state`): for such a subject this raises DataError
        naming the record; use :func:`smallchains.pk.steady_state.plan` instead.

        Args:
            cmt_to_state: maps a CMT number to a state index (default CMT - 1).
            n_states: checks every dose targets an existing state.

        Returns:
            (jumps, t_start): the schedule, and the time of the subject's first record.
        """
        from .steady_state import timeline

        pieces = timeline(self.doses, self.first_time, n_states, cmt_to_state)
        if len(pieces) > 1:
            raise DataError(
                f"row {pieces[1].steady.row}: a steady-state dose starts a new piece of the solve, "
                "which one Jumps schedule cannot express; use smallchains.pk.steady_state.plan"
            )
        return pieces[0].jumps(), self.first_time

    def __repr__(self):
        return (
            f"Subject(id={self.id!r}, {self.n_obs} observations, {len(self.doses)} doses, "
            f"covariates={list(self.covariates)})"
        )


class Population:
    """Subjects read from a NONMEM-style data set: iterable, indexable, with a summary."""

    def __init__(self, subjects, covariate_names, columns, text_columns=()):
        self.subjects = list(subjects)
        self.covariate_names = list(covariate_names)
        self.columns = list(columns)
        #: columns read as text and so left out of the covariates (see read_data's ``categorical``)
        self.text_columns = list(text_columns)

    def __len__(self):
        return len(self.subjects)

    def __iter__(self):
        return iter(self.subjects)

    def __getitem__(self, i):
        return self.subjects[i]

    @property
    def n_obs(self) -> int:
        return sum(s.n_obs for s in self.subjects)

    @property
    def ids(self):
        return [s.id for s in self.subjects]

    def __repr__(self):
        return (
            f"Population({len(self)} subjects, {self.n_obs} observations, "
            f"{sum(len(s.doses) for s in self)} dose events, covariates={self.covariate_names})"
        )


# --------------------------------------------------------------------------- reading


def _frame(data):
    pd = require("pandas", "reading NONMEM-style data")
    if isinstance(data, pd.DataFrame):
        df = data.copy()
        # "." and blank cells are missing, as in a CSV file (NONMEM's convention)
        for c in df.columns:
            if df[c].dtype == object or pd.api.types.is_string_dtype(df[c]):
                text = df[c].astype(str).str.strip()
                missing = df[c].notna() & ((text == ".") | (text == ""))
                if missing.any():
                    df[c] = df[c].astype(object).where(~missing, np.nan)
                    try:  # a numeric column that held "." is numeric, as read_csv makes it
                        df[c] = pd.to_numeric(df[c])
                    except (ValueError, TypeError):
                        pass
        return df
    if data is None or not (isinstance(data, (str, bytes)) or hasattr(data, "read") or hasattr(data, "__fspath__")):
        raise TypeError(f"`data` must be a path to a CSV file or a pandas DataFrame, got {type(data).__name__}")
    try:
        df = pd.read_csv(data, na_values=["."], skipinitialspace=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"no data file at {data!r}") from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"the data file is not UTF-8 text ({exc.reason} at byte {exc.start}; a UTF-16 file from "
            f"Excel?): save it as 'CSV UTF-8', or read it yourself, e.g. pd.read_csv(path, "
            f"encoding='utf-16'), and pass the DataFrame"
        ) from None
    if df.shape[1] == 1 and ";" in str(df.columns[0]):
        raise DataError(
            f"the data file's header {str(df.columns[0])!r} is separated by ';' (a CSV with decimal "
            f"commas?): read it with pd.read_csv(path, sep=';', decimal=',', na_values=['.']) and pass "
            f"the DataFrame"
        )
    return df


def _describe(rule):
    return getattr(rule, "__name__", None) or repr(rule)


def _pd():
    return require("pandas", "reading NONMEM-style data")


def _comment_rows(df, ignore):
    """Rows NONMEM's IGNORE=c drops: the first field starts with ``c`` ("@": with any letter or "@")."""
    first = df.iloc[:, 0]
    text = first.where(first.notna(), "").astype(str).str.lstrip()
    if ignore == "@":
        return text.str.match(r"[A-Za-z@]").to_numpy()
    return text.str.startswith(ignore).to_numpy()


def _numeric(df, col, rows):
    import pandas as pd

    v = pd.to_numeric(df[col], errors="coerce")
    bad = v.isna() & df[col].notna() & (df[col].astype(str).str.strip() != "")
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"row {rows[i]}: {col} must be a number, got {df[col].iloc[i]!r}")
    return np.array(v.to_numpy(dtype=float))  # a writable copy (pandas may hand out a read-only view)


_OPS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def _split_ignore(ignore):
    """(comment character or None, [filters]) from read_data's ``ignore``."""
    if ignore is None:
        return None, []
    items = list(ignore) if isinstance(ignore, (list, tuple)) else [ignore]
    chars = [x for x in items if isinstance(x, str)]
    filters = [x for x in items if not isinstance(x, str)]
    if len(chars) > 1 or any(len(c) != 1 for c in chars):
        raise TypeError(
            f"`ignore`: at most one comment character such as '#', 'C' or '@' (NONMEM's IGNORE=c), got {chars}"
        )
    for f in filters:
        if not (callable(f) or isinstance(f, dict)):
            raise TypeError(
                f"`ignore`: a comment character, a dict of conditions such as {{'DV': ('==', 0)}} "
                f"or a function of the data frame, got {f!r}"
            )
    return (chars[0] if chars else "#"), filters


def _condition_mask(df, rule, which):
    """Rows where the rule holds: any of a dict's conditions (NONMEM's commas are .OR.), or a callable's mask."""
    n = len(df)
    if callable(rule):
        mask = np.asarray(rule(df))
        if mask.shape != (n,) or mask.dtype != bool:
            raise TypeError(
                f"`{which}`: the function must return a boolean array of one value per record "
                f"({n}), got {mask.dtype} of shape {mask.shape}"
            )
        return mask
    mask = np.zeros(n, dtype=bool)
    for column, conds in rule.items():
        name = str(column).upper() if str(column).upper() in STANDARD else str(column)
        if name not in df.columns:
            raise DataError(
                f"`{which}` names column {column!r}, which is not in the data (columns: {list(df.columns)})"
            )
        conds = [conds] if isinstance(conds, tuple) and len(conds) == 2 and isinstance(conds[0], str) else conds
        for cond in conds:
            if not (isinstance(cond, tuple) and len(cond) == 2 and cond[0] in _OPS):
                raise TypeError(
                    f"`{which}`: a condition is (operator, value) with an operator among "
                    f"{list(_OPS)}, e.g. ('==', 0); got {cond!r} for {column!r}"
                )
            op, value = cond
            if isinstance(value, str):
                if op not in ("==", "!="):
                    raise TypeError(f"`{which}`: text ({value!r}) can only be compared with '==' or '!='")
                lhs = df[name].where(df[name].notna(), ".").astype(str).str.strip().to_numpy()
            else:
                # numerically, a missing value ("." or blank) counts as 0: how NONMEM reads "."
                lhs = _pd().to_numeric(df[name], errors="coerce").fillna(0.0).to_numpy(dtype=float)
            mask |= _OPS[op](lhs, value)
    return mask


def _drop(df, file_rows, drop, why):
    if drop.any():
        where = file_rows[drop]
        warnings.warn(
            f"{int(drop.sum())} record(s) dropped by {why}: row(s) {', '.join(map(str, where[:8]))}"
            f"{' ...' if len(where) > 8 else ''}",
            DataWarning,
            stacklevel=3,
        )
        df = df.loc[~drop].reset_index(drop=True)
        file_rows = file_rows[~drop]
    return df, file_rows


def read_data(
    data, *, covariates=None, rename=None, ignore="#", accept=None, categorical=None, last20=50
) -> Population:
    """Read a NONMEM-style data set (a CSV path or a pandas DataFrame) into a :class:`Population`.

    Args:
        data: a path to a CSV file or a DataFrame ("." and empty cells are missing in both).
        covariates: the covariate columns (default: every numeric column that is not a
            standard NONMEM column; text columns left out are named in a DataWarning).
        rename: optional {their column name: standard name}, e.g. {"SUBJ": "ID", "CONC": "DV"}.
        ignore: NONMEM's $DATA IGNORE, any of (or a list of):

            * a comment character (IGNORE=c): records whose first field starts with it are
              dropped.  "#" by default, as in NONMEM; "C" (IGNORE=C); "@" for any first
              non-blank character that is a letter or "@" (IGNORE=@).
            * conditions (IGNORE=(list)): a dict {column: (operator, value)} or {column:
              [(op, value), ...]}, operators "==", "!=", "<", "<=", ">", ">="; a record is dropped
              when any condition holds (NONMEM's commas are .OR.).  Numbers compare numerically
              with a missing value counting as 0, as NONMEM reads "."; text values compare as
              text with "==" or "!=".  Every record is tested, dose records included, as in NONMEM.
            * a function of the data frame returning one boolean per record (True: drop).

            None keeps every record.  Each drop is counted in a DataWarning naming its rule and rows.
        accept: NONMEM's ACCEPT=(list): conditions or a function as above; only records for which
            one holds are kept.  Not together with ``ignore`` conditions (NONMEM refuses both lists).
        categorical: text covariates as numbers, e.g. ``{"SEX": {"M": 0, "F": 1}}``; a value
            the mapping lacks is an error naming its row (missing cells stay missing).
        last20: NM-TRAN's LAST20 for one- and two-digit years in a date column: years <= last20
            are 20yy, the others 19yy (default 50; -1: all 19yy).

    Dates and clock times (NM-TRAN's day-time translation, :mod:`smallchains.pk.dates`): with a
    date column (DATE month/day/year, DAT1 day/month/year, DAT2 year/month/day, DAT3
    year/day/month; month/day or a day number also), or with clock times ``hh:mm`` /
    ``hh:mm:ss`` in TIME, TIME becomes the hours since the subject's first record, whose TIME is
    0 (NONMEM Users Guide IV, II.C.2: "the clock time in the first data record of an individual
    record is translated to relative time 0"), rounded to 0.01 h as NM-TRAN writes it; e.g.
    10/1/86 9:15 then 14:40 then 10/2/86 8:30 reads as 0, 5.42, 23.25.  The date column is
    consumed (not a covariate).  Numeric TIME without a date column is read as it is.

    Raises:
        DataError naming the row, the column and the rule broken.
    """
    comment, filters = _split_ignore(ignore)
    accepts = [] if accept is None else (list(accept) if isinstance(accept, (list, tuple)) else [accept])
    for f in accepts:
        if not (callable(f) or isinstance(f, dict)):
            raise TypeError(
                f"`accept`: a dict of conditions such as {{'DV': ('>', 0)}} or a function of the data frame, got {f!r}"
            )
    if filters and accepts:
        raise ValueError(
            "give conditions in `ignore` or in `accept`, not both (NONMEM refuses IGNORE=(list) "
            "with ACCEPT=(list)); a comment character in `ignore` is fine"
        )
    df = _frame(data)
    file_rows = _frame_rows_read = np.arange(1, len(df) + 1)  # 1-based, as in the file (header excluded)
    if comment is not None and len(df) and df.shape[1]:
        drop = _comment_rows(df, comment)
        if drop.any():
            df, file_rows = _drop(df, file_rows, drop, f"the comment character {comment!r} (NONMEM's IGNORE={comment})")
            pd = _pd()
            for c in df.columns:  # columns that were text only because of the comments: numbers again
                if df[c].dtype == object or pd.api.types.is_string_dtype(df[c]):
                    try:
                        df[c] = pd.to_numeric(df[c])
                    except (ValueError, TypeError):
                        pass
    if rename:
        df = df.rename(columns=dict(rename))
    df.columns = [str(c).strip() for c in df.columns]
    upper = {}
    for c in df.columns:
        if c.upper() in upper:
            raise DataError(
                f"the data have columns {upper[c.upper()]!r} and {c!r}, which differ only by case: "
                f"column names are read case-insensitively (NONMEM's items); rename or drop one"
            )
        upper[c.upper()] = c
    for std in STANDARD:
        if std in upper and upper[std] != std:
            df = df.rename(columns={upper[std]: std})
    for req in ("ID", "TIME"):
        if req not in df.columns:
            raise DataError(f"the data have no {req} column (columns: {list(df.columns)})")
    if "DV" not in df.columns and "AMT" not in df.columns:
        raise DataError("the data have neither a DV nor an AMT column: nothing to fit or to dose")
    for column, mapping in (categorical or {}).items():
        if column not in df.columns:
            raise DataError(
                f"`categorical` names column {column!r}, which is not in the data (columns: {list(df.columns)})"
            )
        if not isinstance(mapping, dict) or not all(isinstance(v, (int, float)) for v in mapping.values()):
            raise TypeError(
                f"`categorical[{column!r}]` must map each text value to a number, e.g. "
                f"{{'M': 0, 'F': 1}}; got {mapping!r}"
            )
        present = df[column].notna()
        text = df[column].where(present, "").astype(str).str.strip()
        keys = {str(k).strip(): float(v) for k, v in mapping.items()}
        unknown = present.to_numpy() & ~text.isin(list(keys)).to_numpy()
        if unknown.any():
            i = int(np.flatnonzero(unknown)[0])
            raise DataError(
                f"row {file_rows[i]}: {column} is {df[column].iloc[i]!r}, which `categorical` does not "
                f"map (it maps {list(keys)})"
            )
        df[column] = np.where(present.to_numpy(), text.map(keys).to_numpy(dtype=float, na_value=np.nan), np.nan)
    for rule in filters:
        df, file_rows = _drop(df, file_rows, _condition_mask(df, rule, "ignore"), f"ignore={_describe(rule)}")
    if accepts:
        keep = np.zeros(len(df), dtype=bool)
        for rule in accepts:
            keep |= _condition_mask(df, rule, "accept")
        df, file_rows = _drop(df, file_rows, ~keep, f"accept={_describe(accepts)}")
    first = df.columns[0] if len(df.columns) else None
    # NONMEM's comment column: a first column named C whose comment records hold "C" (IGNORE=C)
    if comment is not None and first is not None and first.upper() == "C" and len(df):
        text = df[first].where(df[first].notna(), "").astype(str).str.lstrip()
        lettered = text.str.match(r"[A-Za-z@#]").to_numpy()
        if lettered.any():
            i = int(np.flatnonzero(lettered)[0])
            raise DataError(
                f"row {file_rows[i]}: the first column ({first}) holds {df[first].iloc[i]!r}: a NONMEM "
                f"comment record? pass ignore={text.iloc[i][0]!r} (NONMEM's IGNORE="
                f"{text.iloc[i][0]}) to drop such records, or remove them"
            )
    n = len(df)
    if n == 0:
        dropped = len(_frame_rows_read) - len(file_rows)
        raise DataError(
            "the data set is empty" + (f" once {dropped} record(s) are dropped by `ignore`/`accept`" if dropped else "")
        )
    rows = file_rows

    def col(name, default):
        return _numeric(df, name, rows) if name in df.columns else np.full(n, default, dtype=float)

    ids = df["ID"].to_numpy()
    if df["ID"].isna().any():
        raise DataError(f"row {rows[int(np.flatnonzero(df['ID'].isna().to_numpy())[0])]}: ID is missing")
    from .dates import translate_times  # NM-TRAN's day-time translation: dates and clock times

    time = translate_times(df, rows, last20)
    time = _numeric(df, "TIME", rows) if time is None else time
    amt = col("AMT", 0.0)
    amt = np.where(np.isnan(amt), 0.0, amt)
    dv = col("DV", np.nan)
    evid_given = "EVID" in df.columns
    evid = col("EVID", np.nan)
    mdv_given = "MDV" in df.columns
    mdv = col("MDV", np.nan)
    cmt = col("CMT", np.nan)
    rate = col("RATE", 0.0)
    rate = np.where(np.isnan(rate), 0.0, rate)
    dur = col("DUR", np.nan)
    ii = col("II", 0.0)
    ii = np.where(np.isnan(ii), 0.0, ii)
    addl = col("ADDL", 0.0)
    addl = np.where(np.isnan(addl), 0.0, addl)
    ss = col("SS", 0.0)
    ss = np.where(np.isnan(ss), 0.0, ss)
    dvid = col("DVID", 1.0)
    dvid = np.where(np.isnan(dvid), 1.0, dvid)
    blq_col = "BLQ" if "BLQ" in df.columns else ("CENS" if "CENS" in df.columns else None)
    blq = col(blq_col, 0.0) if blq_col else np.zeros(n)
    blq = np.where(np.isnan(blq), 0.0, blq)
    lloq = col("LLOQ", np.nan) if "LLOQ" in df.columns else None

    if covariates is None:
        import pandas as pd

        covariates = [
            c for c in df.columns if c not in STANDARD and pd.api.types.is_numeric_dtype(df[c]) and df[c].notna().any()
        ]  # (an empty column, e.g. NONMEM's C column once comments go)
        text_cols = [c for c in df.columns if c not in STANDARD and c not in covariates and df[c].notna().any()]
        if text_cols:
            warnings.warn(
                f"column(s) {text_cols} hold text, not numbers, and are left out of the covariates "
                f"(map them to numbers with read_data(..., categorical={{{text_cols[0]!r}: {{...}}}}), "
                "e.g. {'M': 0, 'F': 1})",
                DataWarning,
                stacklevel=2,
            )
    else:
        covariates = list(covariates)
        for c in covariates:
            if c not in df.columns:
                raise DataError(f"covariate column {c!r} is not in the data (columns: {list(df.columns)})")
    cov = {c: _numeric(df, c, rows) for c in covariates}

    # ---- record-level rules
    for i in range(n):
        r = rows[i]
        if not math.isfinite(time[i]):
            raise DataError(f"row {r}: TIME is missing or not finite")
        e = evid[i]
        if math.isnan(e):
            if amt[i] < 0:
                raise DataError(f"row {r}: AMT must be > 0 on a dose record (or 0 / missing on others), got {amt[i]:g}")
            constant = amt[i] == 0 and ss[i] != 0 and rate[i] > 0  # a constant infusion at steady state
            e = 1.0 if amt[i] > 0 or constant else 0.0
            evid[i] = e
        if e not in (0.0, 1.0, 2.0, 3.0, 4.0):
            raise DataError(f"row {r}: EVID must be 0, 1, 2, 3 or 4, got {e:g}")
        if ss[i] not in (0.0, 1.0, 2.0, 3.0):
            raise DataError(f"row {r}: SS must be 0, 1, 2 or 3, got {ss[i]:g}")
        if ss[i] != 0.0:
            if e not in (1.0, 4.0):
                raise DataError(
                    f"row {r}: SS = {ss[i]:g} on a record that is not a dose (EVID {int(e)}); SS "
                    "belongs on dose records (EVID 1 or 4)"
                )
            if ii[i] == 0.0 and not (amt[i] == 0.0 and rate[i] > 0):
                raise DataError(
                    f"row {r}: a steady-state dose (SS = {ss[i]:g}) needs II > 0 (the dosing interval), "
                    "or AMT = 0 with RATE > 0 and II = 0 for a constant infusion at steady state"
                )
            if ii[i] > 0 and rate[i] > 0 and amt[i] == 0.0:
                raise DataError(
                    f"row {r}: AMT = 0 with RATE > 0 is a constant infusion at steady state, which "
                    f"needs II = 0 (got II = {ii[i]:g})"
                )
        if e in (1.0, 4.0):
            if not (amt[i] > 0 or (amt[i] == 0 and ss[i] != 0 and rate[i] > 0 and ii[i] == 0)):
                raise DataError(f"row {r}: AMT must be > 0 on a dose record (EVID {int(e)}), got {amt[i]:g}")
        elif amt[i] != 0 and evid_given:
            raise DataError(f"row {r}: AMT must be 0 or missing when EVID is {int(e)}, got {amt[i]:g}")
        if math.isnan(mdv[i]):
            mdv[i] = 0.0 if (e == 0.0 and (not math.isnan(dv[i]) or blq[i] == 1.0)) else 1.0
        if mdv[i] not in (0.0, 1.0):
            raise DataError(f"row {r}: MDV must be 0 or 1, got {mdv[i]:g}")
        if e != 0.0 and mdv[i] == 0.0 and mdv_given:
            raise DataError(f"row {r}: MDV must be 1 on a non-observation record (EVID {int(e)})")
        if e == 0.0 and mdv[i] == 0.0 and not math.isfinite(dv[i]) and blq[i] != 1.0:
            # (a BLQ record may leave DV out: its LLOQ comes from the LLOQ column or the fit)
            raise DataError(f"row {r}: DV is missing on an observation record (set MDV = 1 to skip it)")
        if not (addl[i] >= 0 and addl[i] == int(addl[i])):
            raise DataError(f"row {r}: ADDL must be a whole number >= 0, got {addl[i]:g}")
        if addl[i] > 0 and not ii[i] > 0:
            raise DataError(f"row {r}: II must be > 0 when ADDL > 0")
        if ii[i] < 0:
            raise DataError(f"row {r}: II must be >= 0, got {ii[i]:g}")
        if e in (1.0, 4.0):
            if rate[i] == -2.0:  # (the model's Dn, or DUR when the model has none: checked when fitted)
                if not math.isnan(dur[i]) and not dur[i] > 0:
                    raise DataError(f"row {r}: DUR must be > 0 when RATE = -2, got {dur[i]:g}")
            elif rate[i] < 0 and rate[i] != -1.0:
                raise DataError(f"row {r}: RATE must be >= 0, -2 (with DUR) or -1, got {rate[i]:g}")
            c = cmt[i]
            if not math.isnan(c) and not (c >= 1 and c == int(c)):
                raise DataError(f"row {r}: CMT must be a whole number >= 1 on a dose record, got {c:g}")
        if not (dvid[i] >= 1 and dvid[i] == int(dvid[i])):
            raise DataError(f"row {r}: DVID must be a whole number >= 1, got {dvid[i]:g}")
        if blq[i] not in (0.0, 1.0):
            raise DataError(f"row {r}: {blq_col} must be 0 or 1, got {blq[i]:g}")

    # ---- subjects: contiguous blocks, non-decreasing time
    subjects = []
    starts = [0] + [i for i in range(1, n) if ids[i] != ids[i - 1]]
    seen = {}
    for k, a in enumerate(starts):
        b = starts[k + 1] if k + 1 < len(starts) else n
        sid = ids[a]
        if sid in seen:
            raise DataError(
                f"row {rows[a]}: ID {sid} appears in two separate blocks (rows {seen[sid][0]}-"
                f"{seen[sid][1]} and from row {rows[a]}); keep each subject's records together"
            )
        seen[sid] = (rows[a], rows[b - 1])
        for i in range(a + 1, b):
            if time[i] < time[i - 1]:
                raise DataError(
                    f"row {rows[i]}: TIME decreases within ID {sid} ({time[i]:g} after "
                    f"{time[i - 1]:g}); sort each subject's records by TIME"
                )
        subjects.append(
            _subject(
                sid, range(a, b), rows, time, dv, mdv, evid, amt, cmt, rate, dur, ii, addl, ss, dvid, blq, cov, lloq
            )
        )
    text_columns = [
        c
        for c in df.columns
        if c not in STANDARD
        and c not in covariates
        and not _pd().api.types.is_numeric_dtype(df[c])
        and df[c].notna().any()
    ]
    return Population(subjects, covariates, df.columns, text_columns)


def _subject(sid, idx, rows, time, dv, mdv, evid, amt, cmt, rate, dur, ii, addl, ss, dvid, blq, cov, lloq=None):
    idx = list(idx)
    obs = [i for i in idx if evid[i] == 0.0 and mdv[i] == 0.0]
    doses = []
    for i in idx:
        e = evid[i]
        if e in (3.0, 4.0):
            doses.append(Dose(time[i], "reset", row=int(rows[i])))
        if e in (1.0, 4.0):
            c = 1 if math.isnan(cmt[i]) else int(cmt[i])
            mode = "rate"
            if rate[i] == 0.0:
                kind, d = "bolus", 0.0
            elif rate[i] == -2.0:  # the model's Dn, else DUR (NaN: none)
                kind, d, mode = "infusion", float(dur[i]), "duration"
            elif rate[i] == -1.0:  # the model's Rn
                kind, d, mode = "infusion", math.nan, "model_rate"
            else:
                kind, d = "infusion", float(amt[i] / rate[i])
            if amt[i] == 0.0:  # (validated: SS with II = 0 and RATE > 0) a constant infusion at steady state
                doses.append(Dose(time[i], "infusion", 0.0, c, math.inf, int(ss[i]), 0.0, int(rows[i]), float(rate[i])))
                continue
            for k in range(int(addl[i]) + 1):
                doses.append(
                    Dose(
                        time[i] + k * ii[i],
                        kind,
                        float(amt[i]),
                        c,
                        d,
                        int(ss[i]) if k == 0 else 0,
                        float(ii[i]),
                        int(rows[i]),
                        float(amt[i]) / d if d > 0 else math.nan,
                        k,
                        mode,
                    )
                )
    doses.sort(key=lambda d: d.time)  # stable: same-time events keep their record order
    covs, rec_cov = {}, {}
    for name, v in cov.items():
        vals = v[idx]
        if np.all(np.isnan(vals)):
            raise DataError(f"row {rows[idx[0]]}: covariate {name} is missing on every record of ID {sid}")
        # carried forward; missing leading values take the first value given
        filled = vals.copy()
        first = int(np.flatnonzero(~np.isnan(filled))[0])
        filled[:first] = filled[first]
        for j in range(1, len(filled)):
            if np.isnan(filled[j]):
                filled[j] = filled[j - 1]
        t = time[idx]
        keep = np.r_[True, filled[1:] != filled[:-1]]
        covs[name] = (t[keep].copy(), filled[keep].copy())
        rec_cov[name] = filled
    return Subject(
        id=sid.item() if hasattr(sid, "item") else sid,
        obs_time=time[obs].copy(),
        dv=dv[obs].copy(),
        dvid=dvid[obs].astype(np.int64),
        obs_cmt=np.where(np.isnan(cmt[obs]), 0, cmt[obs]).astype(np.int64),
        blq=blq[obs] == 1.0,
        lloq=None if lloq is None else lloq[obs].copy(),
        doses=doses,
        covariates=covs,
        first_time=float(time[idx[0]]),
        record_time=time[idx].copy(),
        record_row=np.asarray(rows)[idx].astype(np.int64),
        record_covariates=rec_cov,
    )
