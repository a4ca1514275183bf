"""The layer protocol shared by every layer kind.

A layer holds static configuration only (sizes, activation, flags); its
parameters live in the chain's flat parameter vector.  Each layer kind lives
in one file with its whole protocol:

* ``output_size(nin)``: the size of its output for an input of size ``nin``;
* ``num_params(nin)``: how many entries of the flat vector it owns;
* ``program_row(nin)``: its row of the layer program run by the kernels;
* ``init_params(view, nin, rng)``: fill its slice of the flat vector;
* ``param_views(view, nin)``: named views of its slice, for users;
* ``describe()``: a JSON-able description of the layer;
* its compiled forward, tangent and pullbacks (module-level kernels).
"""

from __future__ import annotations

import numpy as np

from .._activations import ACTIVATION_NAMES, reference, reference_derivative


class ActivationFunction:
    """An element-wise activation known to the compiled kernels.

    Instances are the module-level objects ``sc.tanh``, ``sc.relu`` ... Calling
    one on a NumPy array evaluates it in float64 with NumPy (a reference, not the
    compiled kernel)::

        >>> import smallchains as sc, numpy as np
        >>> float(sc.tanh(np.array(0.5)))
        0.46211715726000974
    """

    __slots__ = ("name", "code")

    def __init__(self, name: str):
        self.name = name
        self.code = ACTIVATION_NAMES.index(name)

    def __call__(self, x):
        return reference(self.code, np.asarray(x, dtype=np.float64))

    def derivative(self, x):
        """f'(x) in float64 (NumPy reference)."""
        return reference_derivative(self.code, np.asarray(x, dtype=np.float64))

    def __repr__(self):
        return f"sc.{self.name}"

    def __eq__(self, other):
        return isinstance(other, ActivationFunction) and other.code == self.code

    def __hash__(self):
        return hash(("ActivationFunction", self.code))


ACTIVATIONS = {name: ActivationFunction(name) for name in ACTIVATION_NAMES}


def as_activation(f, argname="activation") -> ActivationFunction:
    if isinstance(f, ActivationFunction):
        return f
    if isinstance(f, str) and f in ACTIVATIONS:
        return ACTIVATIONS[f]
    if f is None:
        return ACTIVATIONS["identity"]
    known = ", ".join(f"sc.{n}" for n in ACTIVATION_NAMES)
    raise TypeError(
        f"`{argname}` must be one of the compiled activations ({known}) or its name, got {f!r}; "
        "arbitrary Python functions cannot run inside the compiled kernels"
    )


class Layer:
    """Base class of the layer kinds (see the module docstring for the protocol)."""

    kind_name = "layer"

    def output_size(self, nin: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def num_params(self, nin: int) -> int:
        return 0

    def program_row(self, nin: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def init_params(self, view: np.ndarray, nin: int, rng: np.random.Generator) -> None:
        pass

    def param_views(self, view: np.ndarray, nin: int) -> tuple:
        return ()

    def describe(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def macs_per_sample(self, nin: int) -> int:
        return 0

    # Shape-aware protocol used by the chain (input shapes are tuples: (d,) for flat
    # features, (C, H, W) images, (C, L) sequences).  Flat layers only implement the
    # ``nin`` methods above; image layers override these.
    def output_shape(self, in_shape: tuple) -> tuple:
        return (self.output_size(_flat(in_shape, self)),)

    def num_params_shape(self, in_shape: tuple) -> int:
        return self.num_params(_flat(in_shape, self))

    def macs_per_sample_shape(self, in_shape: tuple) -> int:
        return self.macs_per_sample(_flat(in_shape, self))

    def program_fields(self, in_shape: tuple):
        return self.program_row(_flat(in_shape, self))

    def init_params_shape(self, view: np.ndarray, in_shape: tuple, rng: np.random.Generator) -> None:
        self.init_params(view, _flat(in_shape, self), rng)

    def param_views_shape(self, view: np.ndarray, in_shape: tuple) -> tuple:
        return self.param_views(view, _flat(in_shape, self))


class ParameterFree(Layer):
    """Base of layers without parameters that accept any input shape."""

    def num_params_shape(self, in_shape):
        return 0

    def macs_per_sample_shape(self, in_shape):
        return 0

    def init_params_shape(self, view, in_shape, rng):
        pass

    def param_views_shape(self, view, in_shape):
        return ()


def _flat(in_shape, layer):
    if len(in_shape) != 1:
        raise ValueError(f"{layer!r} needs flat input but receives shape {tuple(in_shape)}; put sc.Flatten() before it")
    return int(in_shape[0])
