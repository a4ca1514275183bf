"""ODE solvers: compiled explicit Runge–Kutta methods with dense output, jumps and events.

``sc.solve(f, u0, tspan, p, solver=sc.Tsit5(), rtol=1e-6, atol=1e-6, saveat=ts, jumps=...)``.

Gradients: ``sc.gradient_function`` / ``sc.value_and_grad`` (``sensitivity.py``), a loss on a
:class:`~smallchains.ode.recording.Recording` (``recording.py``: the recorded forward solve, the
internal contract other smallchains packages drive the solver through), differentiated by a
sensitivity-method object (``sensitivities/``).
"""

from .integrate import (
    Jumps,
    MaxStepsError,
    NonFiniteStateError,
    ODESolution,
    ODESolveError,
    PIController,
    StepSizeUnderflowError,
    solve,
)
from .problem import UDE, NeuralODE, ODEFunction
from .sensitivity import (
    BacksolveAdjoint,
    DiscreteAdjoint,
    ForwardSensitivity,
    GradientFunction,
    InterpolatingAdjoint,
    SensitivityMethod,
    SquaredError,
    auto_sensitivity,
    gradient_function,
    value_and_grad,
)
from .tableau import BS3, DP5, RK4, ButcherTableau, Euler, Heun, Tsit5, Vern7

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
    "solve",
    "UDE",
    "DiscreteAdjoint",
    "GradientFunction",
    "SensitivityMethod",
    "SquaredError",
    "gradient_function",
    "value_and_grad",
    "BacksolveAdjoint",
    "ForwardSensitivity",
    "InterpolatingAdjoint",
    "auto_sensitivity",
]
