"""Schemes by name. A module under ``identifiers/`` registers its class with ``@register``; every module
of the package (schemes and the machinery beside them) is imported on first lookup, so adding a scheme means
adding one file."""
from __future__ import annotations

import importlib
import pkgutil

import identifiers
from identifiers.base import Scheme

_REGISTRY: dict[str, type[Scheme]] = {}


def register(name: str):
    """Class decorator registering a :class:`Scheme` subclass under ``name``."""

    def wrap(cls: type[Scheme]) -> type[Scheme]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"scheme '{name}' is registered twice ({_REGISTRY[name].__module__}, {cls.__module__})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def _discover() -> None:
    for module in pkgutil.iter_modules(identifiers.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"identifiers.{module.name}")


def schemes() -> dict[str, type[Scheme]]:
    """Every registered scheme, baselines first, then by paradigm and name."""
    _discover()
    order = {"baseline": 0, "sequence": 1, "embedding": 2, "set": 3}
    return dict(sorted(_REGISTRY.items(), key=lambda kv: (order.get(kv[1].paradigm, 9), kv[0])))


def get_scheme(name: str) -> type[Scheme]:
    """The scheme class registered as ``name``; ``KeyError`` lists the valid names."""
    available = schemes()
    if name not in available:
        raise KeyError(f"unknown identifier scheme '{name}'; choose from {', '.join(available)} or 'all'")
    return available[name]


def expand(names: str) -> list[str]:
    """Parse a comma-separated list of scheme names, where ``all`` means every registered scheme."""
    requested = [n.strip() for n in names.split(",") if n.strip()]
    for name in requested:
        if name != "all":
            get_scheme(name)
    return list(schemes()) if "all" in requested else list(dict.fromkeys(requested))
