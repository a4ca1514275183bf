"""NM-TRAN's day-time translation in read_data: DATE/DAT1/DAT2/DAT3 and clock times become hours since
each subject's first record (NONMEM Users Guide IV, II.C.2; help for the DATE data item and LAST20),
checked against NONMEM's own examples and hand-computed times."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

from smallchains.pk import DataError, read_data
from smallchains.pk.dates import expand_year, nmtran_round, parse_clock, parse_date, relative_times

pd = pytest.importorskip("pandas")


def frame(text, **kw):
    return pd.read_csv(io.StringIO(text), na_values=["."], skipinitialspace=True, **kw)


def times(pop):
    """Each subject's record times as read (observations and doses), by subject."""
    return {s.id: sorted([float(t) for t in s.obs_time] + [d.time for d in s.doses]) for s in pop}


def read_quiet(data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "text column" (or any other) warning for the date column
        return read_data(data, **kw)


# ---------------------------------------------------------------- NONMEM's own examples


def test_help_example_for_the_date_data_item():
    # NONMEM help, DATE data item: the NM-TRAN data set and the NONMEM data set it becomes
    data = frame("""ID,DATE,TIME,AMT,DV
1,10-1-86,9:15,100,.
1,10-1-86,14:40,.,5
1,10-2-86,8:30,.,4
2,10-12,8,100,.
2,10-14,10,.,3
""")
    pop = read_quiet(data)
    assert times(pop) == {1: [0.0, 5.42, 23.25], 2: [0.0, 50.0]}
    assert [s.first_time for s in pop] == [0.0, 0.0]
    assert pop.covariate_names == [] and pop.text_columns == []


GUIDE_IV_ID2 = ["8:00", "8:16", "8:31", "9:00", "9:55", "11:30", "13:01", "15:02", "17:00", "20:00"]
# the same records as relative times, as Guide IV's Appendix II data set has them
GUIDE_IV_ID2_HOURS = [0.0, 0.27, 0.52, 1.0, 1.92, 3.5, 5.02, 7.03, 9.0, 12.0, 24.3]


def test_guide_iv_month_day_dates_give_the_guides_relative_times():
    # Guide IV, II.C.2: month/day dates and clock times modulo 24 h for individual 2
    lines = ["ID,DATE,TIME,AMT,DV", "2,10/1,8:00,4.4,."]
    lines += [f"2,10/1,{t},.,1" for t in GUIDE_IV_ID2[1:]] + ["2,10/2,08:18,.,1"]
    pop = read_quiet(frame("\n".join(lines) + "\n"))
    assert times(pop)[2] == GUIDE_IV_ID2_HOURS


def test_guide_iv_clock_times_without_dates_may_pass_24_hours():
    # Guide IV, II.C.2: clock times with no date column, 32:18 being the next day's 08:18
    lines = ["ID,TIME,AMT,DV", "2,8:00,4.4,."] + [f"2,{t},.,1" for t in GUIDE_IV_ID2[1:]] + ["2,32:18,.,1"]
    pop = read_quiet(frame("\n".join(lines) + "\n"))
    assert times(pop)[2] == GUIDE_IV_ID2_HOURS


# ---------------------------------------------------------------- each format, hand-computed


@pytest.mark.parametrize(
    "item,first,second",
    [
        ("DATE", "12/31/2023", "01/01/2024"),  # month/day/year, four-digit years
        ("DATE", "12-31-23", "1-1-24"),  # "-" and two-digit years
        ("DAT1", "31/12/2023", "1/1/2024"),  # day/month/year
        ("DAT1", "31.12.23", "01.01.24"),  # "." separates the fields of a text column
        ("DAT2", "2023/12/31", "2024-01-01"),  # year/month/day
        ("DAT3", "2023/31/12", "24/1/1"),  # year/day/month
    ],
)
def test_each_date_format_across_new_year(item, first, second):
    # 22:00 on Dec 31, 2023 to 02:30 on Jan 1, 2024: 4.5 h
    data = pd.DataFrame(
        {"ID": [1, 1], item: [first, second], "TIME": ["22:00", "02:30"], "AMT": [100, 0], "DV": [np.nan, 1.0]}
    )
    assert times(read_quiet(data))[1] == [0.0, 4.5]


@pytest.mark.parametrize(
    "item,dates",
    [
        ("DATE", ["2/28/2024", "3/1/2024"]),  # 2024 is a leap year: two days
        ("DAT1", ["28/2/2024", "1/3/2024"]),
        ("DAT2", ["2024/2/28", "2024/3/1"]),
        ("DAT3", ["2024/28/2", "2024/1/3"]),
    ],
)
def test_leap_day_counts(item, dates):
    data = pd.DataFrame({"ID": [1, 1], item: dates, "TIME": [8.0, 8.0], "AMT": [100, 0], "DV": [np.nan, 1.0]})
    assert times(read_quiet(data))[1] == [0.0, 48.0]


@pytest.mark.parametrize(
    "item,dates,hours",
    [
        ("DATE", ["1/31", "2/1"], 24.0),  # month/day (no year: year 0, not a leap year)
        ("DATE", ["2/28", "3/1"], 24.0),
        ("DAT1", ["31/1", "1/2"], 24.0),  # day/month
        ("DAT2", ["1/31", "2/1"], 24.0),  # year left out: month/day
        ("DAT3", ["31/1", "1/2"], 24.0),  # year left out: day/month
        ("DATE", ["-1", "0"], 24.0),  # day numbers, negative and 0 allowed
        ("DATE", [1, 8], 7 * 24.0),  # a column pandas read as numbers: day numbers
    ],
)
def test_dates_without_a_year(item, dates, hours):
    data = pd.DataFrame({"ID": [1, 1], item: dates, "TIME": ["08:00", "08:00"], "AMT": [100, 0], "DV": [np.nan, 1.0]})
    assert times(read_quiet(data))[1] == [0.0, hours]


def test_clock_time_forms_and_rounding():
    # hh:mm, hh:mm:ss (NONMEM 7.3) and decimal hours, rounded to 0.01 h as NM-TRAN writes them
    data = pd.DataFrame(
        {
            "ID": [1] * 4,
            "DATE": ["5/6/24"] * 4,
            "TIME": ["8:00", "8:45:29", 14.75, "23:59:59"],
            "AMT": [100, 0, 0, 0],
            "DV": [np.nan, 1.0, 1.0, 1.0],
        }
    )
    # 0:45:29 = 0.758 h; 14.75 - 8 = 6.75; 15:59:59 = 15.9997 h
    assert times(read_quiet(data))[1] == [0.0, 0.76, 6.75, 16.0]
    assert parse_clock("8:45:29") == pytest.approx(8 + 45 / 60 + 29 / 3600)
    assert nmtran_round([5.41666, 0.005, -0.005, 2.0]).tolist() == [5.42, 0.01, -0.01, 2.0]


def test_date_change_across_midnight():
    data = frame("""ID,DAT2,TIME,AMT,DV
7,2024-03-01,23:30,100,.
7,2024-03-02,00:15,.,2
7,2024-03-02,23:45,.,1
7,2024-03-04,0:00,.,1
""")
    assert times(read_quiet(data))[7] == [0.0, 0.75, 24.25, 48.5]


# ---------------------------------------------------------------- two-digit years and LAST20


def test_expand_year_last20():
    assert [expand_year(y, 2) for y in (0, 50, 51, 99)] == [2000, 2050, 1951, 1999]
    assert [expand_year(y, 2, last20=-1) for y in (0, 50, 99)] == [1900, 1950, 1999]
    assert expand_year(5, 1) == 2005 and expand_year(986, 3) == 986 and expand_year(1986, 4) == 1986
    assert parse_date("12/31/50") == ("calendar", parse_date("12/31/2050")[1])
    assert parse_date("12/31/51") == ("calendar", parse_date("12/31/1951")[1])
    assert parse_date("12/31/51", last20=51) == ("calendar", parse_date("12/31/2051")[1])


def test_two_digit_years_on_both_sides_of_last20():
    # NONMEM's year-2000 note: 02-28-00 to 03-01-00 is 48 h when 00 is 2000 (a leap year), 24 h when 1900
    data = frame("ID,DATE,TIME,AMT,DV\n1,02-28-00,8:00,100,.\n1,03-01-00,8:00,.,1\n")
    assert times(read_quiet(data))[1] == [0.0, 48.0]  # default LAST20 = 50: 2000
    assert times(read_quiet(data, last20=-1))[1] == [0.0, 24.0]  # every two-digit year in the 1900s
    # 99 and 00: 1999 -> 2000 by default (2 h); with LAST20 = 99 both are 20yy and the time goes back
    data = frame("ID,DATE,TIME,AMT,DV\n1,12/31/99,23:00,100,.\n1,01/01/00,01:00,.,1\n")
    assert times(read_quiet(data))[1] == [0.0, 2.0]
    with pytest.raises(DataError, match=r"row 2: TIME goes back within ID 1"):
        read_data(data, last20=99)
    # 50 is 2050 and 51 is 1951 by default; LAST20 = 51 makes 51 2051: a year and a day later
    data = frame("ID,DATE,TIME,AMT,DV\n1,12/31/50,8:00,100,.\n1,1/1/51,8:00,.,1\n")
    with pytest.raises(DataError, match=r"row 2: TIME goes back"):
        read_data(data)
    assert times(read_quiet(data, last20=51))[1] == [0.0, 24.0]
    with pytest.raises(TypeError, match="last20"):
        read_data(data, last20="50")


# ---------------------------------------------------------------- several subjects, origins


def test_several_subjects_each_start_at_zero():
    data = frame("""ID,DAT1,TIME,AMT,DV,WT
1,01/03/2024,08:00,100,.,70
1,01/03/2024,10:30,.,4,70
1,02/03/2024,08:00,.,2,70
2,15/06/2023,21:00,50,.,60
2,16/06/2023,03:00,.,1,60
3,15/06/2023,07:15,50,.,80
""")
    pop = read_quiet(data)
    assert times(pop) == {1: [0.0, 2.5, 24.0], 2: [0.0, 6.0], 3: [0.0]}
    assert pop.covariate_names == ["WT"]  # the date column is consumed, WT stays a covariate
    assert [d.time for d in pop[1].doses] == [0.0]


def test_relative_times_restart_on_reset_records():
    # the pure function does NM-TRAN's reset rule: TIME restarts at 0 on EVID 3/4 records
    t = relative_times([0, 0, 1, 1], [8.0, 9.0, 8.0, 10.0], starts=[0], restart=[False, False, True, False])
    assert t.tolist() == [0.0, 1.0, 0.0, 2.0]
    t = relative_times([0, 0, 5], [8.0, 9.5, 1.0], starts=[0, 2], decimals=None)
    assert t.tolist() == [0.0, 1.5, 0.0]


def test_origin_is_the_first_record_kept_by_ignore():
    data = frame("""ID,DATE,TIME,AMT,DV,FLAG
1,3/1/24,07:00,.,9,1
1,3/1/24,08:00,100,.,0
1,3/1/24,09:30,.,4,0
""")
    with pytest.warns(UserWarning, match="dropped"):
        pop = read_data(data, ignore={"FLAG": ("==", 1)})
    assert times(pop)[1] == [0.0, 1.5]


# ---------------------------------------------------------------- errors naming the row


@pytest.mark.parametrize(
    "text,message",
    [
        (
            "ID,DATE,TIME,AMT,DV\n1,3/1/24,8:00,100,.\n1,13/1/24,9:00,.,1\n",
            r"row 2: DATE '13/1/24' is not a date \(month 13 is not 1-12\); expected month/day/year",
        ),
        (
            "ID,DAT1,TIME,AMT,DV\n1,1/3/24,8:00,100,.\n1,30/2/24,9:00,.,1\n",
            r"row 2: DAT1 '30/2/24' is not a date \(day is out of range for month.*expected day/month/year",
        ),
        (
            "ID,DAT2,TIME,AMT,DV\n1,24/3/1,8:00,100,.\n1,24/3/1,8h30,.,1\n",
            r"row 2: TIME '8h30' is not a clock time .*expected a clock time hh:mm",
        ),
        ("ID,TIME,AMT,DV\n1,8:00,100,.\n1,8:75,.,1\n", r"row 2: TIME '8:75' is not a clock time \(minutes"),
        ("ID,DATE,TIME,AMT,DV\n1,3/1/24,8:00,100,.\n1,.,9:00,.,1\n", r"row 2: DATE is missing"),
        ("ID,DATE,TIME,AMT,DV\n1,3/1/24,8:00,100,.\n1,March 2,9:00,.,1\n", r"row 2: DATE 'March 2' is not a date"),
        ("ID,DATE,TIME,AMT,DV\n1,3/1/24,8:00,100,.\n1,3/1/12024,9:00,.,1\n", r"row 2: DATE .* more than four digits"),
        (
            "ID,DATE,TIME,AMT,DV\n1,3/1/24,8:00,100,.\n1,3/2,9:00,.,1\n",
            r"row 2: DATE '3/2' is a month-day date but the first record of ID 1 \(row 1\) has a calendar date",
        ),
        (
            "ID,TIME,AMT,DV\n1,23:00,100,.\n1,01:00,.,1\n",
            r"row 2: TIME goes back within ID 1 \('01:00' after '23:00'\); a clock time past midnight needs a date",
        ),
        ("ID,DATE,TIME,AMT,DV\n1,3/1/24,8:00,100,.\n1,3/1/24,,.,1\n", r"row 2: TIME is missing"),
        ("ID,DATE,DAT2,TIME,AMT,DV\n1,3/1/24,24/3/1,8:00,100,.\n", r"more than one date column"),
        (
            "ID,DATE,TIME,EVID,AMT,DV\n1,3/1/24,8:00,1,100,.\n1,3/2/24,8:00,4,100,.\n",
            r"row 2: a reset record \(EVID 4\) after the first record of ID 1 .* restarts TIME at 0",
        ),
    ],
)
def test_errors_name_the_row_column_value_and_format(text, message):
    with pytest.raises(DataError, match=message):
        read_data(frame(text))


def test_error_rows_count_comment_records_as_in_the_file(tmp_path):
    path = tmp_path / "dated.csv"
    path.write_text("ID,DATE,TIME,AMT,DV\n#1,3/1/24,7:00,.,.\n1,3/1/24,8:00,100,.\n1,3/1/24,9:3O,.,1\n")
    with pytest.warns(UserWarning, match="comment"), pytest.raises(DataError, match=r"row 3: TIME '9:3O'"):
        read_data(str(path))


def test_a_numeric_date_with_a_fraction_is_refused():
    data = pd.DataFrame({"ID": [1, 1], "DATE": [10.1, 10.2], "TIME": [8.0, 9.0], "AMT": [100, 0], "DV": [np.nan, 1.0]})
    with pytest.raises(DataError, match=r"row 1: DATE 10.1 is not a date \(a number with a fraction"):
        read_data(data)


def test_a_reset_on_the_first_record_is_fine():
    data = frame("ID,DATE,TIME,EVID,AMT,DV\n1,3/1/24,8:00,4,100,.\n1,3/1/24,9:00,0,.,1\n")
    assert times(read_quiet(data))[1] == [0.0, 0.0, 1.0]  # the reset and the dose at 0


# ---------------------------------------------------------------- inputs, and what does not change


def test_csv_file_with_dates_and_clock_times(tmp_path):
    path = tmp_path / "nmtran.csv"
    path.write_text(
        "ID,Date,Time,AMT,DV,SEX\n"  # column names are case-insensitive
        "1,10/1/86,9:15,100,.,M\n1,10/1/86,14:40,.,5,M\n1,10/2/86,8:30,.,4,M\n"
        "2,10/12/86,8,100,.,F\n2,10/14/86,10,.,3,F\n"
    )
    pop = read_data(str(path), categorical={"SEX": {"M": 0, "F": 1}})
    assert times(pop) == {1: [0.0, 5.42, 23.25], 2: [0.0, 50.0]}
    assert pop.covariate_names == ["SEX"] and "DATE" in pop.columns


def test_dataframe_with_clock_times_only():
    data = pd.DataFrame(
        {"ID": ["a", "a", "b"], "TIME": ["08:30", "10:00", "07:05"], "AMT": [1.0, 0, 1.0], "DV": [np.nan, 2.0, np.nan]}
    )
    assert times(read_quiet(data)) == {"a": [0.0, 1.5], "b": [0.0]}


def test_numeric_time_without_dates_is_read_as_it_is():
    # no date column and no ":": TIME is read as numbers, not rounded, not moved to start at 0
    data = frame("ID,TIME,AMT,DV\n1,0.5,100,.\n1,1.333333,.,3\n1,7.0049,.,2\n2,2.25,50,.\n2,3.125,.,1\n")
    pop = read_quiet(data)
    np.testing.assert_array_equal(pop[0].obs_time, [1.333333, 7.0049])
    assert pop[0].first_time == 0.5 and pop[1].first_time == 2.25
    assert [d.time for d in pop[1].doses] == [2.25]
    with pytest.raises(DataError, match=r"row 2: TIME must be a number, got 'soon'"):
        read_data(frame("ID,TIME,AMT,DV\n1,0,100,.\n1,soon,.,3\n"))
