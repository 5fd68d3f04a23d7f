"""Generators by name. ``loop`` and the policies look generators up here only."""

from __future__ import annotations

from typing import Callable

from generators.base import Generator, GeneratorError

_FACTORIES: dict[str, Callable[[], Generator]] = {}


def register(name: str, factory: Callable[[], Generator]) -> None:
    """Add a generator factory under ``name`` (one line per generator module)."""
    if name in _FACTORIES:
        raise GeneratorError(f"generator {name!r} is already registered")
    _FACTORIES[name] = factory


def available() -> list[str]:
    """Names of the registered generators, sorted."""
    return sorted(_FACTORIES)


def get_generator(name: str) -> Generator:
    """Return a fresh instance of the generator registered as ``name``."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise GeneratorError(f"unknown generator {name!r}; known: {', '.join(available()) or '(none)'}") from None
    return factory()
