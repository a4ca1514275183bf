"""Built-in compartment models against closed-form solutions and SciPy, their outputs' derivatives,
and their right-hand sides' derivatives (the one-off check against finite differences)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from scipy.integrate import solve_ivp

import smallchains as sc
from smallchains import pk

pd = pytest.importorskip("pandas")


def subject(text):
    return pk.read_data(pd.read_csv(io.StringIO(text), na_values=["."]))[0]


ORAL = subject("ID,TIME,DV,EVID,AMT,CMT\n1,0,.,1,320,1\n" + "".join(f"1,{t},1,0,.,2\n" for t in
                                                                   (0.5, 1, 2, 4, 8, 12, 24)))


def test_one_compartment_oral_against_the_bateman_function():
    m = pk.one_cpt_oral()
    ka, CL, V = 1.5, 2.8, 32.0
    t, y = m.simulate(ORAL, dict(ka=ka, CL=CL, V=V))
    k = CL / V
    exact = 320 * ka / (V * (ka - k)) * (np.exp(-k * t) - np.exp(-ka * t))
    np.testing.assert_allclose(y, exact, rtol=1e-7)


def test_one_compartment_iv_infusion():
    s = subject("ID,TIME,DV,EVID,AMT,CMT,RATE\n1,0,.,1,100,1,50\n" + "".join(f"1,{t},1,0,.,1,.\n" for t in
                                                                         (0.5, 1, 2, 3, 6)))
    CL, V = 3.0, 20.0
    t, y = pk.one_cpt_iv().simulate(s, [CL, V])
    k = CL / V
    exact = np.where(t <= 2, 50 / CL * (1 - np.exp(-k * t)), 50 / CL * (1 - np.exp(-2 * k)) * np.exp(-k * (t - 2)))
    np.testing.assert_allclose(y, exact, rtol=1e-7)


@pytest.mark.parametrize("name", ["two_cpt_oral", "one_cpt_oral_mm", "one_cpt_oral_emax"])
def test_models_against_scipy(name):
    m = pk.MODELS[name]()
    p = {"two_cpt_oral": [1.2, 3.0, 20.0, 5.0, 40.0], "one_cpt_oral_mm": [1.2, 30.0, 2.0, 25.0],
         "one_cpt_oral_emax": [1.2, 3.0, 20.0, 0.4, 5.0, 60.0, 4.0]}[name]
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
    np.testing.assert_allclose(ju[1], [0, 0, 60 * 4 / 6.5 ** 2])
    np.testing.assert_allclose(jp[1, 4:], [1.0, 2.5 / 6.5, -60 * 2.5 / 6.5 ** 2])
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
