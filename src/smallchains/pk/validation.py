"""The cases of the validation report (docs/pharmacometrics.md), in one place for the tests that
assert them and for ``benchmarks/pk_validation.py``, which prints every figure the report quotes.

* :func:`mm_recovery_data` / :func:`mm_recovery_model`: data simulated from a one-compartment
  model with Michaelis-Menten elimination, and a UDE whose network is the whole elimination;
* :func:`phenobarbital_models`: the Phenobarbital models compared in the report (no covariates,
  weight on CL and V, a covariate network, a neural elimination).
"""

from __future__ import annotations

import numba
import numpy as np

from .. import tanh
from ..chain import SimpleChain
from ..layers import Dense
from ..ode.problem import UDE
from .models import CompartmentModel, Ratio
from .population import CovariateNetwork, PopulationModel

#: the Michaelis-Menten truth of the recovery study
MM_TRUTH = dict(ka=1.0, Vmax=30.0, Km=5.0, V=20.0, omega2=(0.1, 0.05))


def mm_recovery_data(seed=11):
    """(data, random effects drawn): 60 subjects, oral doses of 100, 300 and 1000, 11 samples each,
    simulated from one_cpt_oral_mm (:data:`MM_TRUTH`, random effects on ka and V, combined error)."""
    import pandas as pd

    from .data import read_data
    from .simulate import simulate_data

    rows = []
    sid = 0
    for dose in (100.0, 300.0, 1000.0):
        for _ in range(20):
            sid += 1
            rows.append(dict(ID=sid, TIME=0.0, DV=np.nan, MDV=1, EVID=1, AMT=dose, CMT=1))
            rows += [
                dict(ID=sid, TIME=t, DV=0.0, MDV=0, EVID=0, AMT=0.0, CMT=2)
                for t in (0.5, 1, 2, 4, 6, 8, 12, 16, 24, 36, 48)
            ]
    design = read_data(pd.DataFrame(rows))
    t = MM_TRUTH
    truth = PopulationModel(
        "one_cpt_oral_mm",
        dict(ka=t["ka"], Vmax=t["Vmax"], Km=t["Km"], V=t["V"]),
        eta=["ka", "V"],
        omega_init=list(t["omega2"]),
        error="combined",
        sigma=[0.05, 0.1],
    )
    (data,), etas = simulate_data(truth, design, seed=seed)
    return data, etas[0]


@numba.njit
def _nn_elimination(du, u, pm, t, y):  # pm = [ka, V]; the elimination rate is C exp(NN(C / 10))
    c = u[1] / pm[1]
    du[0] = -pm[0] * u[0]
    du[1] = pm[0] * u[0] - c * np.exp(y[0])


@numba.njit
def _concentration_over_10(x, u, pm, t):
    x[0] = u[1] / pm[1] / 10.0


def mm_recovery_model():
    """(model, chain): one compartment, first-order absorption, elimination C exp(NN(C/10)) with
    NN a 1->8->8->1 tanh chain; random effects on ka and V, combined error."""
    chain = SimpleChain(1, Dense(8, tanh), Dense(8, tanh), Dense(1))
    ude = UDE(_nn_elimination, chain, n_states=2, params=["ka", "V"], features=_concentration_over_10)
    st = CompartmentModel("nn_elimination", ude, ["ka", "V"], ["depot", "central"], [Ratio(1, 1)])
    m = PopulationModel(
        st,
        dict(ka=0.7, V=15.0),
        eta=["ka", "V"],
        omega_init=0.2,
        error="combined",
        sigma=[0.1, 0.2],
        weights=chain.init_params(seed=0, dtype=np.float64),
    )
    return m, chain


def mm_elimination_rates(chain, weights, conc):
    """The fitted network's elimination rate C exp(NN(C/10)) at concentrations ``conc``."""
    return np.array([c * np.exp(chain(np.array([c / 10.0]), weights)[0]) for c in conc])


@numba.njit
def _pheno_nn_elimination(du, u, pm, t, y):  # pm = [CL, V]; elimination CL * C * exp(NN(C / 30))
    du[0] = -pm[0] * (u[0] / pm[1]) * np.exp(y[0])


@numba.njit
def _pheno_concentration(x, u, pm, t):
    x[0] = u[0] / pm[1] / 30.0


def phenobarbital_models():
    """{name: PopulationModel} on one_cpt_iv, proportional error, random effects on CL and V:
    ``plain`` (no covariates), ``weight`` (WT on CL and V, power), ``covariate_network`` (a
    2->4->2 network from WT and APGAR to log CL and log V), ``ude`` (the weight model whose
    elimination CL C exp(NN(C/30)) a 1->4->1 network may reshape)."""
    base = dict(eta=["CL", "V"], omega_init=0.1, error="proportional", sigma=0.1)
    wt = {"CL": {"WT": "power"}, "V": {"WT": "power"}}
    theta = dict(CL=0.005, V=1.0)
    net = CovariateNetwork(SimpleChain(2, Dense(4, tanh), Dense(2)), inputs=["WT", "APGAR"], targets=["CL", "V"])
    chain = SimpleChain(1, Dense(4, tanh), Dense(1))
    ude = UDE(_pheno_nn_elimination, chain, n_states=1, params=["CL", "V"], features=_pheno_concentration)
    st = CompartmentModel("one_cpt_iv_nn_elimination", ude, ["CL", "V"], ["central"], [Ratio(0, 1)])
    return {
        "plain": PopulationModel("one_cpt_iv", theta, **base),
        "weight": PopulationModel("one_cpt_iv", theta, covariates=wt, **base),
        "covariate_network": PopulationModel("one_cpt_iv", theta, covariate_network=net, **base),
        "ude": PopulationModel(st, theta, covariates=wt, **base),
    }
