"""Sensitivity methods: objects that turn a recorded forward solve into gradients.

Each method is one class acting on a :class:`smallchains.ode.recording.Recording` through the
protocol of :class:`~.base.SensitivityMethod` (what to record, where to save, how to pull a
cotangent back, how to form a loss's gradient).  Neither the recording nor
:class:`~smallchains.ode.sensitivity.GradientFunction` switches on the method's type:

===========================  =========================  ==========================================
module                       method                     what it does with the recording
===========================  =========================  ==========================================
``discrete``                 :class:`DiscreteAdjoint`   reverse pass through the recorded steps
``continuous``               :class:`InterpolatingAdjoint`, :class:`BacksolveAdjoint`
                                                        backward solve of the continuous adjoint
``forward``                  :class:`ForwardSensitivity`  one augmented forward solve, no pullback
===========================  =========================  ==========================================

Adding a method: subclass :class:`SensitivityMethod` (or :class:`ToleranceMethod`) in a new
module here, override the hooks it needs, and export it below and in ``smallchains.ode``.
"""

from .base import SensitivityMethod, ToleranceMethod
from .continuous import BacksolveAdjoint, InterpolatingAdjoint
from .discrete import DiscreteAdjoint
from .forward import ForwardSensitivity


def auto_sensitivity(n_states, n_params):
    """The automatic choice: :class:`DiscreteAdjoint`, whatever the size.

    SciML switches to forward mode below ~100 states plus parameters because its
    reverse mode carries a tape; here both are compiled and a vector-Jacobian product
    costs what n + m Jacobian-vector products cost (complex step), so the adjoint, which
    needs one per stage instead of n + m, is faster at every size measured
    (``benchmarks/sensitivity_choice.py``: n + m = 6: 60 against 97 us; 96: 3.6 against
    4.4 ms; a 252-weight neural ODE: 0.05 against 12 ms).
    """
    return DiscreteAdjoint()


__all__ = [
    "BacksolveAdjoint",
    "DiscreteAdjoint",
    "ForwardSensitivity",
    "InterpolatingAdjoint",
    "SensitivityMethod",
    "ToleranceMethod",
    "auto_sensitivity",
]
