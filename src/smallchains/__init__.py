"""smallchains: fast small neural networks on the CPU, for scientific machine learning.

Quick start::

    import numpy as np, smallchains as sc
    chain = sc.SimpleChain(4, sc.Dense(32, sc.tanh), sc.Dense(16, sc.tanh), sc.Dense(4))
    p = chain.init_params(seed=0)
    loss = sc.add_loss(chain, sc.SquaredLoss(Y))
    history = sc.train_unbatched(loss, X, p, sc.Adam(1e-3), epochs=10_000)
"""

import importlib

from . import datasets, kernels, ode
from ._errors import TrainingDivergedError
from ._warnings import (
    CompileCacheWarning,
    ConvergenceWarning,
    DataWarning,
    DoubtfulResultWarning,
    SmallchainsWarning,
)
from .chain import ChainKernels, SimpleChain
from .io import load, load_params, save
from .layers import (
    ACTIVATIONS,
    Activation,
    ActivationFunction,
    AvgPool,
    Conv,
    Conv1D,
    Dense,
    Dropout,
    Flatten,
    Layer,
    MaxPool,
)
from .losses import (
    AbsoluteLoss,
    ChainLoss,
    HuberLoss,
    L1Penalty,
    L2Penalty,
    LogitCrossEntropyLoss,
    SquaredLoss,
    accuracy_and_loss,
    add_loss,
    predict,
    predict_proba,
    valgrad,
)
from .ode import (
    BS3,
    DP5,
    RK4,
    UDE,
    BacksolveAdjoint,
    ButcherTableau,
    DiscreteAdjoint,
    Euler,
    ForwardSensitivity,
    GradientFunction,
    Heun,
    InterpolatingAdjoint,
    Jumps,
    MaxStepsError,
    NeuralODE,
    NonFiniteStateError,
    ODEFunction,
    ODESolution,
    ODESolveError,
    PIController,
    SquaredError,
    StepSizeUnderflowError,
    Tsit5,
    Vern7,
    gradient_function,
    solve,
    value_and_grad,
)
from .optimizers import SGD, Adam, AdamW, Optimizer, RMSProp
from .training import History, minimize, train_batched, train_unbatched

identity = ACTIVATIONS["identity"]
tanh = ACTIVATIONS["tanh"]
relu = ACTIVATIONS["relu"]
sigmoid = ACTIVATIONS["sigmoid"]
softplus = ACTIVATIONS["softplus"]
gelu = ACTIVATIONS["gelu"]
silu = ACTIVATIONS["silu"]
elu = ACTIVATIONS["elu"]
rbf = ACTIVATIONS["rbf"]

__version__ = "0.1.0"

# Imported on first use (``sc.pk``, ``sc.pkdata``): they bring in SciPy's optimizers and the
# population-fitting machinery, which a user of networks or ODEs alone does not pay for at import.
_LAZY = ("pk", "pkdata")


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module 'smallchains' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = [
    "BS3",
    "DP5",
    "RK4",
    "ButcherTableau",
    "Euler",
    "Heun",
    "Jumps",
    "MaxStepsError",
    "NeuralODE",
    "NonFiniteStateError",
    "ODEFunction",
    "ODESolution",
    "ODESolveError",
    "PIController",
    "StepSizeUnderflowError",
    "Tsit5",
    "Vern7",
    "ode",
    "solve",
    "UDE",
    "DiscreteAdjoint",
    "GradientFunction",
    "BacksolveAdjoint",
    "ForwardSensitivity",
    "InterpolatingAdjoint",
    "SquaredError",
    "gradient_function",
    "value_and_grad",
    "AbsoluteLoss",
    "Activation",
    "ActivationFunction",
    "AvgPool",
    "Conv",
    "Conv1D",
    "Dropout",
    "Flatten",
    "MaxPool",
    "Adam",
    "AdamW",
    "ChainKernels",
    "ChainLoss",
    "Dense",
    "History",
    "HuberLoss",
    "L1Penalty",
    "L2Penalty",
    "Layer",
    "LogitCrossEntropyLoss",
    "Optimizer",
    "RMSProp",
    "SGD",
    "SimpleChain",
    "SquaredLoss",
    "TrainingDivergedError",
    "accuracy_and_loss",
    "add_loss",
    "datasets",
    "elu",
    "gelu",
    "identity",
    "kernels",
    "minimize",
    "relu",
    "rbf",
    "sigmoid",
    "silu",
    "softplus",
    "tanh",
    "train_batched",
    "train_unbatched",
    "valgrad",
    "load",
    "load_params",
    "save",
    "predict",
    "predict_proba",
    "pk",
    "pkdata",
    "SmallchainsWarning",
    "CompileCacheWarning",
    "ConvergenceWarning",
    "DataWarning",
    "DoubtfulResultWarning",
]
