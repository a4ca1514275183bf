"""NM-TRAN's day-time translation: TIME from dates (DATE, DAT1, DAT2, DAT3) and clock times.

The rules, as NONMEM's documentation states them (NONMEM Users Guide IV, NM-TRAN, section
II.C.2 "Day-Time Translation"; Guide VIII, the on-line help for the DATE data item and for
``$DATA LAST20``):

* The translation happens when the data have a date data item, or when a TIME value holds a
  ":" (a clock time).  Then every TIME is a clock time: ``hh:mm``, ``hh:mm:ss`` (NONMEM 7.3 on)
  or decimal hours ``hh.fr`` (``14:45`` and ``14.75`` are the same), on a 24-hour clock.
  Hours may run past 24 (Guide IV's ``33:22``, the next day's 09:22, with no date column).
  (smallchains' own check: minutes and seconds below 60.)
* The date item's label gives its format: DATE month/day/year, DAT1 day/month/year, DAT2
  year/month/day, DAT3 year/day/month.  Any character that is not a digit, a comma or a blank
  separates the fields (``10/1/86``, ``10-1-1986``, ``86.10.1``).  Two fields are the month and
  the day (in the label's order, the year left out: year 0, not a leap year; month <= 12 and
  day <= 31); one field is a day number, any integer, 0 and negative included, ordered as the
  integers.  The year has one to four digits; one- and two-digit years are placed by LAST20:
  a year <= LAST20 is 20yy, a year > LAST20 is 19yy (default LAST20 = 50: 00-50 are 2000-2050,
  51-99 are 1951-1999; LAST20 = -1 puts every two-digit year in the 1900s).  Leap years are
  the Gregorian ones (2000 is one, 1900 is not).
* The time origin: in population data, "the clock time in the first data record of an
  individual record is translated to relative time 0" (Guide IV, II.C.2), an individual record
  being the contiguous records of one ID.  Every other record's TIME is then (its date minus
  the first record's date) x 24 + (its clock time minus the first record's clock time), in
  hours.  NM-TRAN writes relative times with two decimals (``xxxxx.xx``), so they are rounded
  to 0.01 h here too: 9:15 then 14:40 the same day is 5.42 (the help's example).
* "If PREDPP is used, then a time on a reset or reset-dose event record [EVID 3 or 4] is
  translated to relative time 0" (Guide IV, II.C.2): the time restarts there.
  :func:`relative_times` implements it (``restart``); :func:`translate_times`, for
  :func:`smallchains.pk.read_data`, refuses such a record after the first of its subject,
  naming it, since a subject's records are one time line in smallchains.

The records are the ones kept after ``ignore``/``accept`` (NONMEM's IGNORE/ACCEPT), so the
origin is the first kept record of each subject (the NONMEM data set's first record of the
individual record; the Guide does not spell out the order of the two steps).  NM-TRAN's
single-subject data (no ID) take the first record of the data set as the origin; read_data
always has an ID.

Pure functions: :func:`parse_date`, :func:`parse_clock`, :func:`expand_year`,
:func:`relative_times`, :func:`nmtran_round`; :func:`translate_times` applies them to a data
frame and raises :class:`smallchains.pk.DataError` naming the row, the column, the value and
the expected format.
"""

from __future__ import annotations

import datetime
import math
import numbers
import re

import numpy as np

from .data import DataError

#: the date data items and the order of their fields (NM-TRAN's $INPUT labels)
DATE_ITEMS = {"DATE": "mdy", "DAT1": "dmy", "DAT2": "ymd", "DAT3": "ydm"}

#: the accepted forms, for error messages
DATE_FORMATS = {
    "DATE": "month/day/year (e.g. 10/1/86 or 10-01-1986), month/day (10/1) or a day number",
    "DAT1": "day/month/year (e.g. 1/10/86 or 01-10-1986), day/month (1/10) or a day number",
    "DAT2": "year/month/day (e.g. 86/10/1 or 1986-10-01), month/day (10/1) or a day number",
    "DAT3": "year/day/month (e.g. 86/1/10 or 1986-01-10), day/month (1/10) or a day number",
}
CLOCK_FORMAT = "a clock time hh:mm or hh:mm:ss (e.g. 08:30, 8:45:29) or decimal hours (e.g. 8.5)"

_DAY = re.compile(r"[+-]?\d+")
# fields separated by any one character that is not a digit, a comma or a blank
_FIELDS = re.compile(r"(\d+)[^\d\s,](\d+)(?:[^\d\s,](\d+))?")
_CLOCK = re.compile(r"(\d+):(\d{1,2})(?::(\d{1,2}))?")
# days before each month in a year that is not a leap year (the year-less month/day form: year 0)
_BEFORE_MONTH = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)


def expand_year(year: int, digits: int, last20: int = 50) -> int:
    """The calendar year of a date's year field of ``digits`` digits (NM-TRAN's LAST20 rule).

    One- and two-digit years <= ``last20`` are in the 2000s, those > ``last20`` in the 1900s;
    three- and four-digit years are taken as written.
    """
    if digits > 2:
        return year
    return 2000 + year if year <= last20 else 1900 + year


def parse_date(value, item: str = "DATE", last20: int = 50) -> tuple[str, int]:
    """A date data item as ``(kind, day number)``.

    ``kind`` is "calendar" (day, month and year: the proleptic Gregorian day number), "month-day"
    (no year: days since the start of year 0, which is not a leap year) or "day" (a day number,
    any integer).  Day numbers of one kind differ by the days between the dates.

    Args:
        value: the field as written (a str), or an integer (a day number, e.g. a column pandas
            read as numbers).
        item: "DATE", "DAT1", "DAT2" or "DAT3": the field order (month/day/year, day/month/year,
            year/month/day, year/day/month).
        last20: NM-TRAN's LAST20 for one- and two-digit years.

    Raises:
        ValueError saying what is wrong (not the row: see :func:`translate_times`).
    """
    order = DATE_ITEMS[item]
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return "day", int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if math.isfinite(value) and float(value).is_integer():
            return "day", int(value)
        raise ValueError(
            "a number with a fraction: the column was read as numbers, so a '.' between the "
            "fields cannot be told from a decimal point; separate them with '/' or '-', or pass "
            "the column as text"
        )
    if not isinstance(value, str):
        raise ValueError(f"a {type(value).__name__}, not a date written as text")
    text = value.strip()
    if _DAY.fullmatch(text):
        return "day", int(text)
    m = _FIELDS.fullmatch(text)
    if not m:
        raise ValueError("not two or three fields of digits separated by one character such as '/' or '-'")
    if m.group(3) is None:  # month and day, the year left out
        fields = dict(zip(order.replace("y", ""), (m.group(1), m.group(2))))
        month, day = int(fields["m"]), int(fields["d"])
        if not 1 <= month <= 12:
            raise ValueError(f"month {month} is not 1-12")
        if not 1 <= day <= 31:
            raise ValueError(f"day {day} is not 1-31")
        return "month-day", _BEFORE_MONTH[month - 1] + day
    fields = dict(zip(order, m.groups()))
    if len(fields["y"]) > 4:
        raise ValueError(f"the year {fields['y']!r} has more than four digits")
    year = expand_year(int(fields["y"]), len(fields["y"]), last20)
    month, day = int(fields["m"]), int(fields["d"])
    if not 1 <= month <= 12:
        raise ValueError(f"month {month} is not 1-12")
    try:
        return "calendar", datetime.date(year, month, day).toordinal()
    except ValueError as exc:
        raise ValueError(f"{exc} (year {year}, month {month}, day {day})") from None


def parse_clock(value) -> float:
    """A clock time in hours: ``hh:mm``, ``hh:mm:ss`` or decimal hours (a number or its text).

    Hours may exceed 24 (NM-TRAN's ``33:22``); minutes and seconds must be below 60.

    Raises:
        ValueError saying what is wrong.
    """
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"a {type(value).__name__}, not a time")
    text = value.strip()
    m = _CLOCK.fullmatch(text)
    if m:
        hours, minutes, seconds = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
        if minutes >= 60 or seconds >= 60:
            raise ValueError("minutes and seconds must be below 60")
        return hours + minutes / 60.0 + seconds / 3600.0
    try:
        hours = float(text)
    except ValueError:
        raise ValueError("not hh:mm, hh:mm:ss or a number") from None
    if not math.isfinite(hours):
        raise ValueError("not a finite number")
    return hours


def nmtran_round(hours, decimals: int = 2):
    """Round half away from zero to ``decimals`` decimals, as NM-TRAN writes relative times (xxxxx.xx)."""
    x = np.asarray(hours, dtype=float)
    scale = 10.0**decimals
    return np.sign(x) * np.floor(np.abs(x) * scale + 0.5 + 1e-9) / scale


def relative_times(days, hours, starts, restart=None, decimals: int | None = 2) -> np.ndarray:
    """NM-TRAN's relative times: hours since the first record of each individual record.

    Args:
        days: each record's day number (e.g. from :func:`parse_date`; zeros without dates).
        hours: each record's clock time in hours (e.g. from :func:`parse_clock`).
        starts: the index of the first record of each individual record (ascending, from 0).
        restart: optional booleans, True on reset and reset-dose records (EVID 3 and 4): the
            time restarts at 0 there, as NM-TRAN does when PREDPP is used.
        decimals: round as NM-TRAN writes them (2); None: no rounding.

    Returns:
        (days - days[origin]) * 24 + hours - hours[origin] for each record, its origin being the
        first record of its individual record (or the last restart before it).
    """
    days = np.asarray(days, dtype=float)
    hours = np.asarray(hours, dtype=float)
    n = hours.shape[0]
    origin = np.zeros(n, dtype=bool)
    origin[np.asarray(starts, dtype=int)] = True
    if restart is not None:
        origin |= np.asarray(restart, dtype=bool)
    if n and not origin[0]:
        raise ValueError("the first record must start an individual record (starts[0] == 0)")
    idx = np.maximum.accumulate(np.where(origin, np.arange(n), 0))
    t = (days - days[idx]) * 24.0 + (hours - hours[idx])
    return t if decimals is None else nmtran_round(t, decimals)


def _missing(v) -> bool:
    """A missing cell: None, NaN, pandas' NA or NaT, or "." / blank text (NONMEM's null item)."""
    import pandas as pd

    if isinstance(v, str):
        return v.strip() in ("", ".")
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def translate_times(df, rows, last20: int = 50):
    """NM-TRAN's day-time translation of a NONMEM-style data frame's TIME (for ``read_data``).

    Args:
        df: the records (standard columns upper-case: ID, TIME, and optionally one of DATE,
            DAT1, DAT2, DAT3, and EVID).
        rows: each record's row in the file (1-based, header excluded), for error messages.
        last20: NM-TRAN's LAST20 for one- and two-digit years.

    Returns:
        The relative times (hours, rounded to 0.01 as NM-TRAN writes them; a missing TIME stays
        NaN for the caller's check), or None when no translation applies (no date column and no
        TIME with a ":"): then TIME is read as numbers, unchanged.

    Raises:
        DataError naming the row, the column, the value and the expected format; or a reset
        (EVID 3/4) record after the first record of a subject (NM-TRAN restarts TIME there);
        or a time that goes back within a subject.
    """
    if isinstance(last20, bool) or not isinstance(last20, numbers.Integral):
        raise TypeError(f"`last20` must be an integer (NM-TRAN's LAST20, default 50), got {last20!r}")
    items = [c for c in df.columns if str(c).upper() in DATE_ITEMS]
    if len(items) > 1:
        raise DataError(
            f"the data have more than one date column ({items}); NM-TRAN takes one date data item "
            "(DATE, DAT1, DAT2 or DAT3)"
        )
    raw_time = df["TIME"].to_numpy(dtype=object)
    clock = any(isinstance(v, str) and ":" in v for v in raw_time)
    if not items and not clock:
        return None
    n = len(df)
    rows = np.asarray(rows)
    hours = np.full(n, np.nan)
    for i, v in enumerate(raw_time):
        if _missing(v):
            continue  # missing: the caller's "TIME is missing" error names the row
        try:
            hours[i] = parse_clock(v)
        except ValueError as exc:
            raise DataError(
                f"row {rows[i]}: TIME {v!r} is not a clock time ({exc}); expected {CLOCK_FORMAT}"
                + (f", with the date in {items[0]}" if items else "")
            ) from None
    ids = df["ID"].to_numpy()
    starts = [0] + [i for i in range(1, n) if ids[i] != ids[i - 1]]
    days = np.zeros(n)
    kinds = [None] * n
    column = items[0] if items else None
    if column is not None:
        item = str(column).upper()
        for i, v in enumerate(df[column].to_numpy(dtype=object)):
            if _missing(v):
                raise DataError(
                    f"row {rows[i]}: {column} is missing; with a date column every record needs a "
                    f"date ({DATE_FORMATS[item]})"
                )
            try:
                kinds[i], days[i] = parse_date(v, item, last20)
            except ValueError as exc:
                raise DataError(
                    f"row {rows[i]}: {column} {v!r} is not a date ({exc}); expected {DATE_FORMATS[item]}"
                ) from None
    if "EVID" in df.columns:
        evid = _evid(df["EVID"])
        for k, a in enumerate(starts):
            b = starts[k + 1] if k + 1 < len(starts) else n
            for i in range(a + 1, b):
                if evid[i] in (3.0, 4.0):
                    raise DataError(
                        f"row {rows[i]}: a reset record (EVID {int(evid[i])}) after the first record of "
                        f"ID {ids[i]} with dates or clock times: NM-TRAN restarts TIME at 0 on it "
                        "(NONMEM Users Guide IV, II.C.2), which one time line per subject cannot "
                        "hold; give TIME as elapsed hours (numbers, no date column) instead"
                    )
    time = relative_times(days, hours, starts)

    def when(j):
        return f"{raw_time[j]!r}" + (f" on {df[column].iloc[j]!r}" if column is not None else "")

    hint = (
        "sort each subject's records by date and time"
        if column is not None
        else "a clock time past midnight needs a date column (DATE, DAT1, DAT2 or DAT3) or hours past 24 (e.g. 25:30)"
    )
    for k, a in enumerate(starts):
        b = starts[k + 1] if k + 1 < len(starts) else n
        prev = a
        for i in range(a + 1, b):
            if column is not None and kinds[i] != kinds[a]:
                raise DataError(
                    f"row {rows[i]}: {column} {df[column].iloc[i]!r} is a {kinds[i]} date but the "
                    f"first record of ID {ids[i]} (row {rows[a]}) has a {kinds[a]} date "
                    f"({df[column].iloc[a]!r}); write every date of a subject the same way"
                )
            if math.isnan(time[i]):
                continue
            if not math.isnan(time[prev]) and time[i] < time[prev]:
                raise DataError(
                    f"row {rows[i]}: TIME goes back within ID {ids[i]} ({when(i)} after {when(prev)}); {hint}"
                )
            prev = i
    return time


def _evid(column):
    import pandas as pd

    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
