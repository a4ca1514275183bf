"""Layer kinds: one file each, holding the whole layer protocol (see ``_base``)."""

from ._base import ACTIVATIONS, ActivationFunction, Layer
from .activation import Activation
from .conv import Conv, Conv1D
from .dense import Dense
from .pool import AvgPool, Dropout, Flatten, MaxPool

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "ActivationFunction",
    "AvgPool",
    "Conv",
    "Conv1D",
    "Dense",
    "Dropout",
    "Flatten",
    "Layer",
    "MaxPool",
]
