"""Layer kinds: one file each, holding the whole layer protocol (see ``_base``)."""

from ._base import ACTIVATIONS, ActivationFunction, Layer
from .activation import Activation
from .dense import Dense

__all__ = ["ACTIVATIONS", "Activation", "ActivationFunction", "Dense", "Layer"]
