"""A catalogue of bad inputs across every public entry point: each must raise the named exception
type with a message that names the argument (or the row and column), never crash, hang or return
a wrong answer.  One row per case: (id, thunk, exception type, regex the message must match)."""

import os
import re
import subprocess
import sys

import numba
import numpy as np
import pytest

import smallchains as sc

pd = pytest.importorskip("pandas")

rng = np.random.default_rng(0)
X = rng.standard_normal((20, 4)).astype(np.float32)
Y = rng.standard_normal((20, 2)).astype(np.float32)
CHAIN = sc.SimpleChain(4, sc.Dense(8, sc.tanh), sc.Dense(2))
P = CHAIN.init_params(seed=0)
LOSS = sc.add_loss(CHAIN, sc.SquaredLoss(Y))


@numba.njit
def decay(du, u, p, t):
    du[0] = -p[0] * u[0]


@numba.njit
def two(du, u, p, t):
    du[0] = -p[0] * u[0]
    du[1] = p[1] * u[0]


@numba.njit
def writes_beyond(du, u, p, t):
    du[0] = -u[0]
    du[1] = u[0]
    du[5] = 1.0


@numba.njit
def reads_u_beyond(du, u, p, t):
    du[0] = -u[0] + u[3]


@numba.njit
def leaves_du(du, u, p, t):
    du[0] = -u[0]


@numba.njit
def modifies_p(du, u, p, t):
    p[0] = 2.0
    du[0] = -u[0]


@numba.njit
def three_args(du, u, p):
    du[0] = -u[0]


@numba.njit
def nan_rhs(du, u, p, t):
    du[0] = np.log(-u[0])


def nonfinite(v):
    a = P.copy()
    a[0] = v
    return a


def frame(**over):
    rows = [
        dict(ID=1, TIME=0.0, AMT=100.0, DV=np.nan, EVID=1, MDV=1, CMT=1, WT=70.0),
        dict(ID=1, TIME=1.0, AMT=0.0, DV=5.0, EVID=0, MDV=0, CMT=2, WT=70.0),
        dict(ID=1, TIME=2.0, AMT=0.0, DV=4.0, EVID=0, MDV=0, CMT=2, WT=70.0),
    ]
    df = pd.DataFrame(rows)
    for key, val in over.items():
        col, row = key.rsplit("_", 1)
        if col in df and isinstance(val, str):
            df[col] = df[col].astype(object)
        df.loc[int(row), col] = val
    return df


def frame_without(col):
    return frame().drop(columns=[col])


MODEL = lambda **kw: sc.pk.PopulationModel("one_cpt_oral", dict(ka=1.0, CL=0.1, V=5.0), **kw)  # noqa: E731


CASES = [
    # ---------------------------------------------------------------- networks
    ("chain input 0", lambda: sc.SimpleChain(0, sc.Dense(2)), ValueError, "input_dim"),
    ("chain input -3", lambda: sc.SimpleChain(-3, sc.Dense(2)), ValueError, "input_dim"),
    ("chain input float", lambda: sc.SimpleChain(2.5, sc.Dense(2)), ValueError, "input_dim"),
    ("chain input str", lambda: sc.SimpleChain("4", sc.Dense(2)), ValueError, "input_dim"),
    ("chain huge", lambda: sc.SimpleChain(2**40, sc.Dense(2**40)), ValueError, "input_dim|parameters"),
    ("chain huge layer", lambda: sc.SimpleChain(2**20, sc.Dense(2**20)), ValueError, "parameters"),
    ("chain no layers", lambda: sc.SimpleChain(4), ValueError, "layer"),
    ("chain not a layer", lambda: sc.SimpleChain(4, "dense"), TypeError, "layer 0"),
    ("dense 0", lambda: sc.Dense(0), ValueError, "out"),
    ("dense float", lambda: sc.Dense(2.0), ValueError, "out"),
    ("dense activation", lambda: sc.Dense(2, "tanhh"), (ValueError, TypeError), "tanhh|activation"),
    ("init seed -1", lambda: CHAIN.init_params(seed=-1), ValueError, "seed"),
    ("init seed str", lambda: CHAIN.init_params(seed="a"), ValueError, "seed"),
    ("init dtype", lambda: CHAIN.init_params(dtype=np.int32), TypeError, "dtype"),
    ("call p wrong length", lambda: CHAIN(X, P[:-1]), ValueError, "`p`"),
    ("call p int", lambda: CHAIN(X, P.astype(np.int64)), TypeError, "`p`"),
    ("call X columns", lambda: CHAIN(X[:, :3], P), ValueError, "`X`|`x`"),
    ("call X int", lambda: CHAIN(X.astype(np.int64), P), TypeError, "`X`|`x`"),
    ("call X nan", lambda: CHAIN(np.where(X > 2, np.nan, X), P), ValueError, "`X`|`x`"),
    (
        "vjp out shape",
        lambda: CHAIN.vjp_into(np.empty(3, np.float32), P, np.ones(2, np.float32), X[0]),
        ValueError,
        "`out`",
    ),
    ("vjp v shape", lambda: CHAIN.vjp_into(np.empty_like(P), P, np.ones(3, np.float32), X[0]), ValueError, "`v`"),
    # ---------------------------------------------------------------- training
    ("train epochs -1", lambda: sc.train_unbatched(LOSS, X, P.copy(), sc.Adam(), -1), ValueError, "epochs"),
    ("train epochs float", lambda: sc.train_unbatched(LOSS, X, P.copy(), sc.Adam(), 2.5), ValueError, "epochs"),
    ("train p nan", lambda: sc.train_unbatched(LOSS, X, nonfinite(np.nan), sc.Adam(), 1), ValueError, "`p`"),
    ("train p inf", lambda: sc.train_unbatched(LOSS, X, nonfinite(np.inf), sc.Adam(), 1), ValueError, "`p`"),
    ("train opt", lambda: sc.train_unbatched(LOSS, X, P.copy(), "adam", 1), TypeError, "`opt`"),
    ("train loss", lambda: sc.train_unbatched(CHAIN, X, P.copy(), sc.Adam(), 1), TypeError, "`loss`"),
    ("train X rows", lambda: sc.train_unbatched(LOSS, X[:10], P.copy(), sc.Adam(), 1), ValueError, "rows|`X`"),
    (
        "train threads 0",
        lambda: sc.train_unbatched(LOSS, X, P.copy(), sc.Adam(), 1, num_threads=0),
        ValueError,
        "num_threads",
    ),
    (
        "batched batch 0",
        lambda: sc.train_batched(LOSS, X, P.copy(), sc.Adam(), 1, batch_size=0),
        ValueError,
        "batch_size",
    ),
    ("batched seed -1", lambda: sc.train_batched(LOSS, X, P.copy(), sc.Adam(), 1, seed=-1), ValueError, "seed"),
    (
        "callback_every 0",
        lambda: sc.train_unbatched(LOSS, X, P.copy(), sc.Adam(), 2, callback=print, callback_every=0),
        ValueError,
        "callback_every",
    ),
    (
        "validation pair",
        lambda: sc.train_unbatched(LOSS, X, P.copy(), sc.Adam(), 1, validation=X),
        TypeError,
        "validation",
    ),
    ("minimize p nan", lambda: sc.minimize(LOSS, X, nonfinite(np.nan)), ValueError, "`p`"),
    ("minimize p inf", lambda: sc.minimize(LOSS, X, nonfinite(-np.inf)), ValueError, "`p`"),
    ("minimize loss", lambda: sc.minimize(CHAIN, X, P.copy()), TypeError, "`loss`"),
    ("valgrad g shape", lambda: sc.valgrad(np.empty(3, np.float32), LOSS, X, P), ValueError, "`g`|gradient"),
    ("adam lr", lambda: sc.Adam(-1.0), ValueError, "lr"),
    ("sgd momentum", lambda: sc.SGD(0.1, momentum=-0.5), ValueError, "momentum"),
    (
        "squared loss nan",
        lambda: sc.add_loss(CHAIN, sc.SquaredLoss(np.full((20, 2), np.nan))).loss,
        ValueError,
        "target|Y|nan|NaN",
    ),
    # ---------------------------------------------------------------- saving
    (
        "save missing folder",
        lambda: sc.save("/nonexistent-folder/x.npz", CHAIN, P),
        FileNotFoundError,
        "nonexistent-folder/x.npz",
    ),
    ("save p wrong", lambda: sc.save("/tmp/sc-bad.npz", CHAIN, P[:-1]), ValueError, "`p`"),
    ("save chain", lambda: sc.save("/tmp/sc-bad.npz", "chain", P), TypeError, "`chain`"),
    ("save path type", lambda: sc.save(3, CHAIN, P), TypeError, "`path`"),
    ("load missing", lambda: sc.load("/nonexistent-folder/x.npz"), FileNotFoundError, "path"),
    ("pk load missing", lambda: sc.pk.load("/nonexistent-folder/fit.json"), FileNotFoundError, "fit.json"),
    # ---------------------------------------------------------------- ODE solving
    ("solve p None read", lambda: sc.solve(decay, [1.0], (0, 1)), ValueError, r"reads p\[0\].*`p` is empty"),
    ("solve p short", lambda: sc.solve(two, [1.0, 0.0], (0, 1), [1.0]), ValueError, r"reads p\[1\]"),
    ("solve writes du[5]", lambda: sc.solve(writes_beyond, [1.0, 0.0], (0, 1)), ValueError, r"writes du\[5\]"),
    ("solve reads u[3]", lambda: sc.solve(reads_u_beyond, [1.0], (0, 1)), ValueError, r"reads u\[3\]"),
    ("solve leaves du", lambda: sc.solve(leaves_du, [1.0, 2.0], (0, 1)), ValueError, r"du\[1\] unwritten"),
    ("solve modifies p", lambda: sc.solve(modifies_p, [1.0], (0, 1), [1.0]), ValueError, "modifies its input `p`"),
    ("solve arity", lambda: sc.solve(three_args, [1.0], (0, 1)), TypeError, r"f\(du, u, p, t\)"),
    ("solve nan rhs", lambda: sc.solve(nan_rhs, [1.0], (0, 1)), ValueError, r"du\[0\] = nan"),
    ("solve not njit", lambda: sc.solve(lambda du, u, p, t: None, [1.0], (0, 1)), TypeError, "njit"),
    ("solve u0 empty", lambda: sc.solve(decay, [], (0, 1), [1.0]), ValueError, "u0"),
    ("solve u0 nan", lambda: sc.solve(decay, [np.nan], (0, 1), [1.0]), ValueError, "u0"),
    ("solve p nan", lambda: sc.solve(decay, [1.0], (0, 1), [np.nan]), ValueError, "`p`"),
    ("solve tspan", lambda: sc.solve(decay, [1.0], 1.0, [1.0]), ValueError, "tspan"),
    ("solve tspan inf", lambda: sc.solve(decay, [1.0], (0, np.inf), [1.0]), ValueError, "tspan"),
    ("solve rtol", lambda: sc.solve(decay, [1.0], (0, 1), [1.0], rtol=-1), ValueError, "rtol"),
    ("solve zero tols", lambda: sc.solve(decay, [1.0], (0, 1), [1.0], rtol=0, atol=0), ValueError, "rtol"),
    ("solve saveat order", lambda: sc.solve(decay, [1.0], (0, 1), [1.0], saveat=[0.5, 0.2]), ValueError, "saveat"),
    ("solve saveat span", lambda: sc.solve(decay, [1.0], (0, 1), [1.0], saveat=[2.0]), ValueError, "saveat"),
    ("solve dt", lambda: sc.solve(decay, [1.0], (0, 1), [1.0], solver=sc.RK4()), ValueError, "dt"),
    ("solve solver", lambda: sc.solve(decay, [1.0], (0, 1), [1.0], solver="tsit5"), TypeError, "solver"),
    ("solve max_steps", lambda: sc.solve(decay, [1.0], (0, 1), [1.0], max_steps=0), ValueError, "max_steps"),
    ("solve jumps type", lambda: sc.solve(decay, [1.0], (0, 1), [1.0], jumps=[1]), TypeError, "jumps"),
    (
        "jump before t0",
        lambda: sc.solve(decay, [1.0], (0, 1), [1.0], jumps=sc.Jumps().bolus(-1.0, 0, 1.0)),
        ValueError,
        "t = -1.*before the start",
    ),
    (
        "jump state",
        lambda: sc.solve(decay, [1.0], (0, 1), [1.0], jumps=sc.Jumps().bolus(0.5, 3, 1.0)),
        ValueError,
        "state 3",
    ),
    ("jump time nan", lambda: sc.Jumps().bolus(np.nan, 0, 1.0), ValueError, "jump time"),
    ("infusion duration", lambda: sc.Jumps().infusion(0.0, 0, 1.0, 0.0), ValueError, "duration"),
    (
        "grad loss shape",
        lambda: sc.value_and_grad(np.ones((3, 2)), decay, [1.0], (0, 1), np.array([1.0]), saveat=[0.2, 0.5, 1.0]),
        ValueError,
        "data|loss|states",
    ),
    (
        "grad p short",
        lambda: sc.value_and_grad(np.ones((3, 2)), two, [1.0, 0.0], (0, 1), np.array([1.0]), saveat=[0.2, 0.5, 1.0]),
        ValueError,
        r"reads p\[1\]",
    ),
    ("neural ode chain", lambda: sc.NeuralODE(sc.SimpleChain(2, sc.Dense(3))), ValueError, "outputs"),
    ("controller", lambda: sc.PIController(safety=2.0), ValueError, "safety"),
    # ---------------------------------------------------------------- data reading
    ("data no ID", lambda: sc.pk.read_data(frame_without("ID")), sc.pk.DataError, "ID"),
    ("data no TIME", lambda: sc.pk.read_data(frame_without("TIME")), sc.pk.DataError, "TIME"),
    ("data time nan", lambda: sc.pk.read_data(frame(TIME_1=np.nan)), sc.pk.DataError, "row .*TIME"),
    ("data time decreasing", lambda: sc.pk.read_data(frame(TIME_2=0.5)), sc.pk.DataError, "row .*TIME"),
    ("data evid 7", lambda: sc.pk.read_data(frame(EVID_1=7)), sc.pk.DataError, "row .*EVID"),
    ("data amt 0 dose", lambda: sc.pk.read_data(frame(AMT_0=0.0)), sc.pk.DataError, "row .*AMT"),
    ("data amt on obs", lambda: sc.pk.read_data(frame(AMT_1=5.0)), sc.pk.DataError, "row .*AMT"),
    ("data mdv 2", lambda: sc.pk.read_data(frame(MDV_1=2)), sc.pk.DataError, "row .*MDV"),
    ("data dv missing", lambda: sc.pk.read_data(frame(DV_1=np.nan)), sc.pk.DataError, "row .*DV"),
    ("data dv text", lambda: sc.pk.read_data(frame(DV_1="abc")), sc.pk.DataError, "row .*DV"),
    ("data cmt 0", lambda: sc.pk.read_data(frame(CMT_0=0)), sc.pk.DataError, "row .*CMT"),
    ("data ss 4", lambda: sc.pk.read_data(frame(SS_0=4, II_0=12.0)), sc.pk.DataError, "row .*SS"),
    ("data ss no ii", lambda: sc.pk.read_data(frame(SS_0=1)), sc.pk.DataError, "row .*II > 0"),
    ("data ss on obs", lambda: sc.pk.read_data(frame(SS_1=1)), sc.pk.DataError, "row .*not a dose"),
    ("data addl no ii", lambda: sc.pk.read_data(frame(ADDL_0=2)), sc.pk.DataError, "row .*II"),
    ("data rate -3", lambda: sc.pk.read_data(frame(RATE_0=-3)), sc.pk.DataError, "row .*RATE"),
    (
        "data rate -1 no R1",
        lambda: sc.pk.one_cpt_iv().simulate(sc.pk.read_data(frame(RATE_0=-1))[0], [1.0, 2.0]),
        sc.pk.DataError,
        "row 1: RATE = -1 .*R1",
    ),
    ("data missing file", lambda: sc.pk.read_data("/nonexistent-folder/data.csv"), FileNotFoundError, "data.csv"),
    ("data empty", lambda: sc.pk.read_data(frame().iloc[:0]), sc.pk.DataError, "empty"),
    ("data covariate", lambda: sc.pk.read_data(frame(), covariates=["AGE"]), sc.pk.DataError, "AGE"),
    # ---------------------------------------------------------------- population models and fits
    ("model structural", lambda: sc.pk.PopulationModel("three_cpt", dict(ka=1.0)), (ValueError, KeyError), "three_cpt"),
    ("model theta", lambda: MODEL().__class__("one_cpt_oral", dict(ka=1.0, CL=0.1)), ValueError, "V"),
    ("model theta <= 0", lambda: sc.pk.PopulationModel("one_cpt_oral", dict(ka=-1.0, CL=0.1, V=5.0)), ValueError, "ka"),
    ("model eta", lambda: MODEL(eta=["Q"]), ValueError, "Q"),
    ("model error", lambda: MODEL(error="multiplicative"), ValueError, "error|multiplicative"),
    ("model omega", lambda: MODEL(eta=["ka"], omega="banded"), ValueError, "omega"),
    ("fit method", lambda: sc.pk.fit(MODEL(eta=["ka"]), sc.pk.read_data(frame()), "fo"), ValueError, "method"),
    (
        "fit method option",
        lambda: sc.pk.fit(MODEL(eta=["ka"]), sc.pk.read_data(frame()), "saem", method_options={"n_iter": 5}),
        ValueError,
        "no option 'n_iter'.*n_explore",
    ),
    (
        "fit method options type",
        lambda: sc.pk.fit(MODEL(eta=["ka"]), sc.pk.read_data(frame()), "saem", method_options=[("n_explore", 5)]),
        TypeError,
        "method_options",
    ),
    (
        "saem option value",
        lambda: sc.pk.fit(MODEL(eta=["ka"]), sc.pk.read_data(frame()), "saem", method_options={"n_explore": 0.5}),
        ValueError,
        "'n_explore' must be a whole number",
    ),
    (
        "saem kernels",
        lambda: sc.pk.fit(MODEL(eta=["ka"]), sc.pk.read_data(frame()), "saem", method_options={"kernels": (0, 0, 0)}),
        ValueError,
        "'kernels' must be three",
    ),
    (
        "saem anneal",
        lambda: sc.pk.fit(MODEL(eta=["ka"]), sc.pk.read_data(frame()), "saem", method_options={"anneal": 1.5}),
        ValueError,
        "'anneal' must be a number in",
    ),
    ("fit model", lambda: sc.pk.fit("model", sc.pk.read_data(frame()), "pooled"), TypeError, "model"),
    ("fit data", lambda: sc.pk.fit(MODEL(), frame(), "pooled"), TypeError, "data"),
    ("fit starts", lambda: sc.pk.fit(MODEL(), sc.pk.read_data(frame()), "pooled", starts=0), ValueError, "starts"),
    ("fit x0", lambda: sc.pk.fit(MODEL(), sc.pk.read_data(frame()), "pooled", x0=[1.0]), ValueError, "x0"),
    (
        "fit optimizer",
        lambda: sc.pk.fit(MODEL(), sc.pk.read_data(frame()), "pooled", optimizer="bfgs"),
        ValueError,
        "optimizer",
    ),
    ("fit map no eta", lambda: sc.pk.fit(MODEL(), sc.pk.read_data(frame()), "map"), ValueError, "eta"),
    ("fit threads", lambda: sc.pk.fit(MODEL(), sc.pk.read_data(frame()), "pooled", threads=0), ValueError, "threads"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_a_named_error(case):
    _, thunk, exc, pattern = case
    with pytest.raises(exc) as info:
        thunk()
    assert re.search(pattern, str(info.value)), f"message does not name the argument: {info.value}"


def test_catalogue_is_large():
    assert len(CASES) + len(CLI_CASES) >= 80


# ---------------------------------------------------------------- the command line (in-process and as a command)

CLI_CASES = [
    (
        "cli sigma",
        ["fit", "DATA", "--model", "one_cpt_oral", "--theta", "ka=1,CL=0.1,V=5", "--sigma", "abc"],
        "--sigma",
    ),
    ("cli theta", ["fit", "DATA", "--model", "one_cpt_oral", "--theta", "ka=x"], "--theta"),
    ("cli model", ["fit", "DATA", "--model", "nope", "--theta", "ka=1"], "nope"),
    ("cli no theta", ["fit", "DATA", "--model", "one_cpt_oral"], "--theta"),
    (
        "cli out unwritable",
        ["fit", "DATA", "--model", "one_cpt_oral", "--theta", "ka=1,CL=0.1,V=5", "--out", "/proc/no-such-dir/out"],
        "--out",
    ),
    (
        "cli covariate",
        ["fit", "DATA", "--model", "one_cpt_oral", "--theta", "ka=1,CL=0.1,V=5", "--covariate", "CL"],
        "--covariate",
    ),
    ("cli warmup", ["warmup", "gpu"], "gpu"),
    ("cli demo", ["demo", "mnist"], "mnist"),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(case, tmp_path, capsys):
    from smallchains.cli import main

    data = tmp_path / "data.csv"
    frame().to_csv(data, index=False)
    argv = [str(data) if a == "DATA" else a for a in case[1]]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert re.search(re.escape(case[2]), str(info.value)), info.value


def test_cli_unwritable_out_fails_before_the_fit(tmp_path, monkeypatch):
    from smallchains import cli

    ran = []
    monkeypatch.setattr(sc.pk, "fit", lambda *a, **k: ran.append(1))
    data = tmp_path / "data.csv"
    frame().to_csv(data, index=False)
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    if os.access(ro, os.W_OK):  # root ignores permission bits: use a path under a file instead
        ro = tmp_path / "data.csv" / "out"
    with pytest.raises(SystemExit, match="--out"):
        cli.main(["fit", str(data), "--model", "one_cpt_oral", "--theta", "ka=1,CL=0.1,V=5", "--out", str(ro)])
    assert not ran


def test_missing_extra_is_named(monkeypatch):
    """Without pandas, the data functions and the command line name the extra to install."""
    code = (
        "import sys; sys.modules['pandas'] = None\n"
        "import smallchains as sc\n"
        "try:\n    sc.pkdata.theophylline()\nexcept ImportError as e:\n    print('IMPORT', e)\n"
        "from smallchains.cli import main\n"
        "try:\n    main(['fit', 'x.csv', '--model', 'one_cpt_oral', '--theta', 'ka=1,CL=0.1,V=5'])\n"
        "except SystemExit as e:\n    print('EXIT', e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "IMPORT" in r.stdout and "smallchains[data]" in r.stdout, r.stdout
    assert "EXIT" in r.stdout and "smallchains[data]" in r.stdout.split("EXIT", 1)[1], r.stdout
