"""The estimation methods of :func:`smallchains.pk.fit`, one class each, and their registry.

============  =====================================================================
name          class
============  =====================================================================
individual    :class:`~.individual.Individual`: each subject alone (pooled fits)
pooled        :class:`~.pooled.Pooled`: naive pooled, no random effects
map           :class:`~.map.Map`: the joint posterior mode, Omega by EM
foce          :class:`~.foce.Foce`: FOCE-I (the default)
laplace       :class:`~.laplace.Laplace`: Laplace (FOCE-I with the exact Hessian)
saem          :class:`~.saem.Saem`: SAEM (Monolix's and nlmixr2's), OFV by FOCE-I
============  =====================================================================

Adding a method is adding one class: subclass :class:`EstimationMethod` (see
:mod:`.base` for the interface), give it a ``name``, decorate it with :func:`register`; then
``pk.fit(model, data, method=name)`` runs it::

    from smallchains.pk.methods import EstimationMethod, register

    @register
    class MyMethod(EstimationMethod):
        name = "mine"
        def run(self, P, x_init, opts, report): ...  # (self.minimize_free: the free entries, the bounds)
        def ofv(self, P, x, etas): ...
        def objective_gradient(self, P, x, etas): ...
"""

from __future__ import annotations

from .base import DECREMENT_TOL, GRADIENT_TOL, EstimationMethod, FitSetup, Progress, minimize

_REGISTRY: dict[str, type] = {}
_CANONICAL: list[str] = []


def register(cls):
    """Register an :class:`EstimationMethod` subclass under its ``name`` and ``aliases``
    (a class decorator; returns the class).  A name already taken by another class is a
    ValueError (re-registering the same class is allowed: a module reloaded)."""
    if not (isinstance(cls, type) and issubclass(cls, EstimationMethod)):
        raise TypeError(f"register() takes an EstimationMethod subclass, got {cls!r}")
    names = (cls.name, *cls.aliases)
    if not cls.name or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{cls.__name__} needs a non-empty string `name` (and string aliases)")
    for n in names:
        old = _REGISTRY.get(n)
        if old is not None and old.__qualname__ != cls.__qualname__:
            raise ValueError(f"the method name {n!r} is taken by {old.__module__}.{old.__qualname__}")
    for n in names:
        _REGISTRY[n] = cls
    if cls.name not in _CANONICAL:
        _CANONICAL.append(cls.name)
    return cls


def unregister(name):
    """Remove the method registered as ``name`` (with its aliases)."""
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ValueError(f"no method is registered as {name!r}")
    for n in [k for k, v in _REGISTRY.items() if v is cls]:
        del _REGISTRY[n]
    _CANONICAL.remove(cls.name)


def names():
    """The registered methods' public names (not their aliases), in registration order."""
    return tuple(_CANONICAL)


def get(name):
    """The class registered as ``name`` (a name or an alias); a ValueError otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"`method` must be one of {names()}, got {name!r}") from None


def has_random_effects(name):
    """Whether the method ``name`` estimates Omega and the random effects (False when unknown)."""
    cls = _REGISTRY.get(name)
    return bool(cls is not None and cls.random_effects)


# the built-in methods (each module registers its class)
from . import individual, pooled, map, foce, laplace, saem  # noqa: E402, F401, I001

__all__ = [
    "DECREMENT_TOL",
    "GRADIENT_TOL",
    "EstimationMethod",
    "FitSetup",
    "Progress",
    "minimize",
    "register",
    "unregister",
    "names",
    "get",
    "has_random_effects",
]
