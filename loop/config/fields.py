"""Checked fields of the frozen config dataclasses: the error, the checks, ``to_dict``/``from_dict``.

Every field is checked at construction and a bad value raises :class:`ConfigError` naming
the field, the value and what was expected. TOML has no null, so ``to_dict`` leaves out
fields whose value is ``None`` and ``from_dict`` takes a missing field as its default.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from loop.errors import InputError


class ConfigError(InputError):
    """A configuration field has a value it cannot take."""


def fail(field_name: str, value: Any, expected: str) -> ConfigError:
    """The error for field ``field_name`` holding ``value`` where ``expected`` was expected."""
    return ConfigError(f"{field_name}: expected {expected}, got {value!r}")


def check_int(field_name: str, value: Any, low: int, high: int) -> int:
    """``value`` when it is an integer in [low, high], else :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise fail(field_name, value, f"an integer in [{low}, {high}]")
    return value


def check_float(field_name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> float:
    """``value`` as a float when it is a finite number in the range, else :class:`ConfigError`."""
    ok = (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and (low < value if low_open else low <= value)
        and value <= high
    )
    if not ok:
        raise fail(field_name, value, f"a number in {'(' if low_open else '['}{low}, {high}]")
    return float(value)


def check_bool(field_name: str, value: Any) -> bool:
    """``value`` when it is a bool, else :class:`ConfigError`."""
    if not isinstance(value, bool):
        raise fail(field_name, value, "true or false")
    return value


def set_field(obj: Any, name: str, value: Any) -> None:
    """Set a field of a frozen dataclass (its own normalisation in ``__post_init__``)."""
    # Frozen dataclasses normalise their own fields (int -> float, list -> tuple) once, here.
    object.__setattr__(obj, name, value)


def plain(value: Any) -> Any:
    """Plain data (TOML-ready) of a config value: dicts for dataclasses and anything with ``to_dict``
    (a parameter space), lists for tuples."""
    if dataclasses.is_dataclass(value) or hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    return value


class DictFields:
    """``to_dict`` / ``from_dict`` for the frozen config dataclasses."""

    _nested: dict[str, Any] = {}
    _where = "config"

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (TOML-ready): lists for tuples, ``None`` fields left out."""
        return {
            f.name: plain(getattr(self, f.name))
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if getattr(self, f.name) is not None
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str | None = None):
        """Build from a ``to_dict`` form; unknown keys and bad values raise :class:`ConfigError`."""
        where = where or cls._where
        if not isinstance(data, Mapping):
            raise fail(where, data, "a table (mapping)")
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; expected some of {names}")
        kwargs = dict(data)
        for name, sub in cls._nested.items():
            if name in kwargs:
                kwargs[name] = sub(kwargs[name], where=f"{where}.{name}")
        return cls(**kwargs)
