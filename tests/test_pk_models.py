"""Built-in compartment models against closed-form solutions and SciPy, their outputs' derivatives,
and their right-hand sides' derivatives (the one-off check against finite differences)."""

from __future__ import annotations

import io

import numba
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import smallchains as sc
from smallchains import pk

pd = pytest.importorskip("pandas")


def subject(text):
    return pk.read_data(pd.read_csv(io.StringIO(text), na_values=["."]))[0]


ORAL = subject(
    "ID,TIME,DV,EVID,AMT,CMT\n1,0,.,1,320,1\n" + "".join(f"1,{t},1,0,.,2\n" for t in (0.5, 1, 2, 4, 8, 12, 24))
)


def test_one_compartment_oral_against_the_bateman_function():
    m = pk.one_cpt_oral()
    ka, CL, V = 1.5, 2.8, 32.0
    t, y = m.simulate(ORAL, dict(ka=ka, CL=CL, V=V))
    k = CL / V
    exact = 320 * ka / (V * (ka - k)) * (np.exp(-k * t) - np.exp(-ka * t))
    np.testing.assert_allclose(y, exact, rtol=1e-7)


def test_one_compartment_iv_infusion():
    s = subject(
        "ID,TIME,DV,EVID,AMT,CMT,RATE\n1,0,.,1,100,1,50\n" + "".join(f"1,{t},1,0,.,1,.\n" for t in (0.5, 1, 2, 3, 6))
    )
    CL, V = 3.0, 20.0
    t, y = pk.one_cpt_iv().simulate(s, [CL, V])
    k = CL / V
    exact = np.where(t <= 2, 50 / CL * (1 - np.exp(-k * t)), 50 / CL * (1 - np.exp(-2 * k)) * np.exp(-k * (t - 2)))
    np.testing.assert_allclose(y, exact, rtol=1e-7)


@pytest.mark.parametrize("name", ["two_cpt_oral", "one_cpt_oral_mm", "one_cpt_oral_emax"])
def test_models_against_scipy(name):
    m = pk.MODELS[name]()
    p = {
        "two_cpt_oral": [1.2, 3.0, 20.0, 5.0, 40.0],
        "one_cpt_oral_mm": [1.2, 30.0, 2.0, 25.0],
        "one_cpt_oral_emax": [1.2, 3.0, 20.0, 0.4, 5.0, 60.0, 4.0],
    }[name]
    p = np.array(p)
    ts = np.array([0.5, 1, 2, 4, 8, 12, 24.0])
    t, Y = m.simulate(ORAL, p, times=ts)

    def f(t, u):
        du = np.empty_like(u)
        m.ode.py(du, u, p, t)
        return du

    u0 = np.zeros(m.n_states)
    u0[0] = 320.0
    ref = solve_ivp(f, (0, 24), u0, method="DOP853", rtol=1e-12, atol=1e-12, t_eval=ts).y.T
    refY = np.stack([m.output(ref, p, np.full(len(ts), k)) for k in range(1, len(m.outputs) + 1)], axis=1)
    np.testing.assert_allclose(Y.reshape(len(ts), -1), refY, rtol=1e-6)


def test_output_jacobians_are_exact():
    m = pk.one_cpt_oral_emax()
    p = np.array([1.2, 3.0, 20.0, 0.4, 5.0, 60.0, 4.0])
    u = np.array([[10.0, 50.0, 1.5], [1.0, 30.0, 2.5]])
    dvid = np.array([1, 2])
    y, ju, jp = m.output_jacobians(u, p, dvid)
    assert y[0] == pytest.approx(50 / 20) and y[1] == pytest.approx(5 + 60 * 2.5 / 6.5)
    np.testing.assert_allclose(ju[0], [0, 1 / 20, 0])
    np.testing.assert_allclose(jp[0, 2], -50 / 400)
    np.testing.assert_allclose(ju[1], [0, 0, 60 * 4 / 6.5**2])
    np.testing.assert_allclose(jp[1, 4:], [1.0, 2.5 / 6.5, -60 * 2.5 / 6.5**2])
    with pytest.raises(ValueError, match="DVID 3"):
        m.output(u, p, [1, 3])


@pytest.mark.parametrize("name", sorted(pk.MODELS))
def test_every_model_differentiates(name):
    """The one-off derivative check of gradient_function passes for each built-in model."""
    m = pk.MODELS[name]()
    p = np.linspace(0.8, 3.0, m.n_params)
    u0 = np.full(m.n_states, 2.0)
    gf = sc.gradient_function(np.ones((3, m.n_states)), m.ode, u0, (0.0, 4.0), p, saveat=[1.0, 2.0, 4.0])
    v, gp, gu = gf(p)
    assert np.all(np.isfinite(gp)) and np.any(gp != 0)


def test_parameter_vector_errors():
    m = pk.one_cpt_oral()
    with pytest.raises(ValueError, match="missing"):
        m.param_vector({"ka": 1.0})
    with pytest.raises(ValueError, match="takes 3 parameters"):
        m.param_vector([1.0, 2.0])


# --------------------------------------------------------------------------- symbolic derivatives


def test_builtin_models_get_symbolic_derivatives_equal_to_complex_step():
    from smallchains.ode.symbolic import complex_step_jacobian

    rng = np.random.default_rng(7)
    for make in sc.pk.MODELS.values():
        model = make()
        assert model.derivatives == "symbolic", model.name
        cs = sc.pk.CompartmentModel(
            model.name, model.ode.py, model.params, model.states, model.outputs, derivatives="complex step"
        )
        assert cs.derivatives == "complex step"
        n, m = model.n_states, model.n_params
        u, p, v = rng.uniform(0.1, 3, n), rng.uniform(0.1, 3, m), rng.normal(size=n)
        lu, lp = np.zeros(n), np.full(m, 0.5)
        model.ode.user_vjp(lu, lp, v, u, p, 0.0)
        J = complex_step_jacobian(lambda out, uz, pz, f=model.ode.py.py_func: f(out, uz, pz, 0.0), n, [u, p])
        np.testing.assert_allclose(lu, v @ J[:, :n], rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(lp, 0.5 + v @ J[:, n:], rtol=1e-13, atol=1e-14)  # accumulates
        du, dp = rng.normal(size=n), rng.normal(size=m)
        out = np.full(n, np.nan)
        model.ode.user_jvp(out, u, p, 0.0, du, dp)
        np.testing.assert_allclose(out, J @ np.r_[du, dp], rtol=1e-13, atol=1e-14)


@numba.njit
def _branchy(du, u, p, t):
    if u[0] > 1.0:
        du[0] = -p[0] * u[0]
    else:
        du[0] = -p[0]


@numba.njit
def _with_functions(du, u, p, t):
    du[0] = -p[0] * np.exp(-u[0]) + np.sqrt(p[1]) * u[0] ** 2


def test_symbolic_falls_back_to_complex_step_and_handles_numpy_functions():
    m = sc.pk.CompartmentModel("branchy", _branchy, ["k"], ["a"], [sc.pk.Ratio(0, 0)])
    assert m.derivatives == "complex step" and "truth value" in m.symbolic_error
    with pytest.raises(ValueError, match="could not be traced"):
        sc.pk.CompartmentModel("branchy", _branchy, ["k"], ["a"], [sc.pk.Ratio(0, 0)], derivatives="symbolic")
    m = sc.pk.CompartmentModel("fns", _with_functions, ["a", "b"], ["x"], [sc.pk.Ratio(0, 0)])
    assert m.derivatives == "symbolic"
    lu, lp = np.zeros(1), np.zeros(2)
    m.ode.user_vjp(lu, lp, np.array([1.0]), np.array([0.3]), np.array([2.0, 4.0]), 0.0)
    np.testing.assert_allclose(lu, [2 * np.exp(-0.3) + 2 * 0.3 * 2], rtol=1e-14)
    np.testing.assert_allclose(lp, [-np.exp(-0.3), 0.09 / 4], rtol=1e-14)


@numba.njit
def _ude_f(du, u, pm, t, y):
    c = u[1] / pm[2]
    du[0] = -pm[0] * u[0]
    du[1] = pm[0] * u[0] - pm[1] * c * np.exp(y[0]) + 0.1 * y[1] * np.sqrt(pm[2])


@numba.njit
def _ude_g(x, u, pm, t):
    x[0] = u[1] / pm[2] / 10.0
    x[1] = u[0] * u[1] / (1.0 + pm[0])


@numba.njit
def _ude_branchy(du, u, pm, t, y):
    if u[0] > 0.5:
        du[0] = -pm[0] * u[0]
    else:
        du[0] = -pm[0] * u[0] * 2.0
    du[1] = pm[0] * u[0] - pm[1] * u[1] / pm[2] * np.exp(y[0])


def test_ude_generated_derivatives_give_the_complex_step_gradient():
    chain = sc.SimpleChain(2, sc.Dense(5, sc.tanh), sc.Dense(2))
    ts = np.linspace(0.5, 12.0, 8)
    jumps = sc.Jumps().bolus(0.0, 0, 4.0)
    grads = {}
    for kind in ("symbolic", "complex step"):
        ude = sc.UDE(_ude_f, chain, n_states=2, params=["ka", "CL", "V"], features=_ude_g, derivatives=kind)
        assert ude.derivatives == kind
        p = ude.init_params(seed=3, ka=1.3, CL=0.4, V=2.0)
        data = np.random.default_rng(0).uniform(0, 1, (8, 2))
        grads[kind] = sc.value_and_grad(
            data, ude, np.zeros(2), (0.0, 12.0), p, saveat=ts, jumps=jumps, rtol=1e-9, atol=1e-9
        )
    assert grads["symbolic"][0] == grads["complex step"][0]
    np.testing.assert_allclose(grads["symbolic"][1], grads["complex step"][1], rtol=1e-10, atol=1e-12)
    ude = sc.UDE(
        _ude_branchy, sc.SimpleChain(2, sc.Dense(3, sc.tanh), sc.Dense(1)), n_states=2, params=["ka", "CL", "V"]
    )
    assert ude.derivatives == "complex step" and "truth value" in ude.symbolic_error
