"""``Activation(f)``: an element-wise activation as a layer of its own (no parameters).

Its kernels are the activation kernels of ``smallchains._activations`` applied
by the interpreter (``_engine.block_forward``/``block_backward``): forward
``y = f(x)`` saving ``f'(x)``, pullback ``gx = g * f'(x)``.
"""

from __future__ import annotations

import numpy as np

from .._program import KIND_ACTIVATION
from ._base import ParameterFree, as_activation


class Activation(ParameterFree):
    """Apply ``f`` element-wise: ``sc.Activation(sc.relu)``.

    Equivalent to the ``activation`` argument of :class:`Dense`, which fuses the
    activation into the dense kernel and is what you usually want.
    """

    kind_name = "activation"

    def __init__(self, f):
        self.f = as_activation(f, "f")

    def output_size(self, nin):
        return nin

    def output_shape(self, in_shape):
        return tuple(in_shape)

    def program_fields(self, in_shape):
        return self.program_row(int(np.prod(in_shape)))

    def program_row(self, nin):
        return (KIND_ACTIVATION, nin, self.f.code, 0, 0)

    def describe(self):
        return {"kind": "Activation", "f": self.f.name}

    def __repr__(self):
        return f"Activation({self.f!r})"
