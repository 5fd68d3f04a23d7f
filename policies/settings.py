"""Typing and checking of policy settings.

A setting reaches a policy's ``__init__`` either typed (``WorstPolicy(k=0.1)``) or as the
text of a spec (``worst:k=0.1`` gives ``k="0.1"``). These helpers accept both and raise
:class:`~policies.base.PolicyError` naming the policy, the setting, the value and what is
allowed. :func:`fmt` writes numbers back the same way for canonical names.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from policies.base import PolicyError

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _error(policy: str, key: str, value: Any, problem: str, expected: str) -> PolicyError:
    return PolicyError(f"policy {policy!r}: setting {key}={value} {problem}; expected {expected}")


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    return f"{'(' if low_open else '['}{fmt(low)}, {fmt(high)}{')' if high_open else ']'}"


def number(policy: str, key: str, value: Any, *, low: float, high: float,
           low_open: bool = False, high_open: bool = False) -> float:
    """Return ``value`` as a finite float inside the interval, or raise :class:`PolicyError`."""
    expected = f"a number in {_interval(low, high, low_open, high_open)}"
    if isinstance(value, (bool, np.bool_)):
        raise _error(policy, key, value, "is not a number", expected)
    try:
        x = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise _error(policy, key, value, "is not a number", expected) from None
    inside = (low < x if low_open else low <= x) and (x < high if high_open else x <= high)
    if not math.isfinite(x) or not inside:
        raise _error(policy, key, value, "is out of range", expected)
    return x


def integer(policy: str, key: str, value: Any, *, low: int, high: int | None = None) -> int:
    """Return ``value`` as an int in ``[low, high]`` (no upper bound if ``high`` is None)."""
    expected = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    if isinstance(value, (bool, np.bool_)):
        raise _error(policy, key, value, "is not an integer", expected)
    if isinstance(value, (int, np.integer)):
        i = int(value)
    else:
        try:
            i = int(value.strip()) if isinstance(value, str) else None
        except ValueError:
            i = None
        if i is None:
            raise _error(policy, key, value, "is not an integer", expected)
    if i < low or (high is not None and i > high):
        raise _error(policy, key, value, "is out of range", expected)
    return i


def boolean(policy: str, key: str, value: Any) -> bool:
    """Return ``value`` as a bool; text may be true/false, yes/no, on/off, 1/0."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _error(policy, key, value, "is not a boolean", "true or false")


def choice(policy: str, key: str, value: Any, options: Sequence[str]) -> str:
    """Return ``value`` as one of ``options``."""
    text = str(value).strip()
    if text not in options:
        raise _error(policy, key, value, "is not known", "one of " + ", ".join(options))
    return text


def names(policy: str, key: str, value: Any) -> tuple[str, ...]:
    """Return distinct, non-empty names from ``"a|b"`` text or a sequence of strings."""
    items = value.split("|") if isinstance(value, str) else list(value)
    out = tuple(str(v).strip() for v in items)
    expected = "names separated by '|', each once, e.g. color|thickness"
    if not out or any(not v for v in out):
        raise _error(policy, key, value, "has an empty name", expected)
    if len(set(out)) != len(out):
        raise _error(policy, key, value, "repeats a name", expected)
    return out


def fmt(x: float | int) -> str:
    """Short, round-trippable text of a setting value (``0.1``, ``10``, ``1``)."""
    if isinstance(x, (bool, np.bool_)):
        return "true" if x else "false"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text
