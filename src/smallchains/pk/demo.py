"""The Theophylline demonstration: nlme's classic model by FOCE-I, and a UDE whose network
reshapes the elimination, fitted by MAP (Omega by EM) and compared by OFV and AIC.

Used by ``smallchains demo theophylline`` and ``make demo``.
"""

from __future__ import annotations

import os
import time

import numba
import numpy as np

from ..chain import SimpleChain
from ..layers import Dense
from ..ode.problem import UDE
from .models import CompartmentModel, Ratio
from .population import PopulationModel


def theophylline_classic(**overrides):
    """Pinheiro & Bates' model (fm2Theo.nlme): one compartment, first-order absorption, in
    ka, ke and CL (V = CL / ke), random effects on ka and CL, additive error.  ``overrides``
    replace any of its :class:`PopulationModel` arguments (e.g. ``eta=["ka"]``)."""
    args = dict(
        eta=["ka", "CL"],
        individual=lambda q: {"ka": q["ka"], "CL": q["CL"], "V": q["CL"] / q["ke"]},
        error="additive",
        sigma=0.5,
        omega_init=0.2,
    )
    args.update(overrides)
    return PopulationModel("one_cpt_oral", dict(ka=1.0, ke=0.1, CL=0.04), **args)


@numba.njit
def _theo_ude_rhs(du, u, pm, t, y):
    # pm = [ka, CL, V]; elimination CL * C * exp(NN(C)): the network reshapes clearance with
    # concentration (its output 0 is the classic linear model)
    c = u[1] / pm[2]
    du[0] = -pm[0] * u[0]
    du[1] = pm[0] * u[0] - pm[1] * c * np.exp(y[0])


@numba.njit
def _theo_ude_features(x, u, pm, t):
    x[0] = u[1] / pm[2] / 10.0  # concentration scaled to about [0, 1]


def theophylline_ude(hidden=8, seed=0):
    """The classic model with the elimination rate CL·C·exp(NN(C)), NN a 1->8->8->1 tanh chain."""
    from .. import tanh

    chain = SimpleChain(1, Dense(hidden, tanh), Dense(hidden, tanh), Dense(1))
    ude = UDE(
        _theo_ude_rhs,
        chain,
        n_states=2,
        params=["ka", "CL", "V"],
        features=_theo_ude_features,
        name="theophylline_nn_elimination",
    )
    st = CompartmentModel("one_cpt_oral_nn_elimination", ude, ["ka", "CL", "V"], ["depot", "central"], [Ratio(1, 2)])
    return PopulationModel(
        st,
        dict(ka=1.5, CL=0.04, V=0.5),
        eta=["ka", "CL"],
        error="additive",
        sigma=0.7,
        omega_init=[0.4, 0.03],
        weight_prior=1.0,
        seed=seed,
    )


def run(out=None, progress=True, say=print):
    """Fit both models to the Theophylline data; print the tables; write plots and fits to ``out``."""
    from ..pkdata import theophylline
    from . import plots
    from .fit import fit

    data = theophylline()
    say(f"data: {data}")
    t0 = time.perf_counter()
    classic = fit(theophylline_classic(), data, "foce", progress=progress)
    t_classic = time.perf_counter() - t0
    say(classic.summary())
    say(f"(FOCE-I fit: {t_classic:.1f} s; nlme, Pinheiro & Bates 2000: ka 1.57, ke 0.088, CL 0.040)")
    t0 = time.perf_counter()
    ude = fit(theophylline_ude(), data, "map", optimizer="adam+lbfgs", adam_steps=300, adam_lr=0.02, progress=progress)
    t_ude = time.perf_counter() - t0
    say(ude.summary())
    say(f"(UDE fit, {ude.model.n_weights} network weights: {t_ude:.1f} s; OFV by FOCE-I at the MAP estimates)")
    say(
        f"OFV classic {classic.ofv:.2f} vs UDE {ude.ofv:.2f}; AIC {classic.aic:.1f} vs {ude.aic:.1f} "
        f"({'the classic model' if classic.aic <= ude.aic else 'the UDE'} is preferred by AIC)"
    )
    if out is not None:
        os.makedirs(out, exist_ok=True)
        for name, r in (("classic", classic), ("ude", ude)):
            r.save(os.path.join(out, f"{name}.json"))
            plots.save_report(r, data, os.path.join(out, name), n_sim=100)
        say(f"fits and plots written to {out}")
    return classic, ude
