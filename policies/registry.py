"""Policies by name. The loop and the CLI find policies here only.

A spec is ``name[:key=value,...]``: ``random``, ``sobol:seed=3``,
``worst:k=0.1,m=10,radius=0.05,dims=color|thickness``, ``mix:worst10=0.7,random=0.3``.
An alias (``worst10``) stands for a whole spec and takes no settings of its own.
Adding a policy = one module + one ``register_policy`` line in ``policies/__init__.py``.
"""

from __future__ import annotations

import inspect
import re

from policies.base import Policy, PolicyError

_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_ALIAS = re.compile(r"[a-z][a-z0-9_]*(-[a-z0-9_]+)*\Z")  # an alias may have inner hyphens: near-random
_POLICIES: dict[str, type[Policy]] = {}
_ALIASES: dict[str, str] = {}


def register_policy(name: str, cls: type[Policy]) -> None:
    """Add the policy class ``cls`` under ``name`` (which must equal ``cls.kind``)."""
    if not (isinstance(cls, type) and issubclass(cls, Policy)):
        raise PolicyError(f"register_policy({name!r}): expected a Policy subclass, got {cls!r}")
    if not isinstance(name, str) or not _NAME.match(name):
        raise PolicyError(f"register_policy: name {name!r} must be lowercase letters, digits and _")
    if name != cls.kind:
        raise PolicyError(f"register_policy({name!r}): {cls.__name__}.kind is {cls.kind!r}; they must match")
    if name in _POLICIES or name in _ALIASES:
        raise PolicyError(f"policy {name!r} is already registered")
    _POLICIES[name] = cls


def register_alias(alias: str, spec: str) -> None:
    """Make ``alias`` stand for ``spec`` (checked now: it must build a policy)."""
    if not isinstance(alias, str) or not _ALIAS.match(alias):
        raise PolicyError(f"register_alias: alias {alias!r} must be lowercase letters, digits and _, "
                          "with inner hyphens allowed")
    if alias in _POLICIES or alias in _ALIASES:
        raise PolicyError(f"policy {alias!r} is already registered")
    get_policy(spec)
    _ALIASES[alias] = spec


def available_policies() -> list[str]:
    """Registered policy names and aliases, sorted."""
    return sorted([*_POLICIES, *_ALIASES])


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``"name:key=value,..."`` into the name and its settings (values as text)."""
    if not isinstance(spec, str) or not spec.strip():
        raise PolicyError(f"policy spec {spec!r}: expected name[:key=value,...], e.g. worst:k=0.1,m=10")
    name, sep, rest = spec.strip().partition(":")
    name = name.strip()
    found: dict[str, str] = {}
    if sep and not rest.strip():
        raise PolicyError(f"policy spec {spec!r}: nothing after ':'; expected key=value settings")
    for item in rest.split(",") if sep else []:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise PolicyError(f"policy spec {spec!r}: setting {item.strip()!r} is not key=value")
        if key in found:
            raise PolicyError(f"policy spec {spec!r}: setting {key!r} is given twice")
        found[key] = value.strip()
    return name, found


def get_policy(spec: str) -> Policy:
    """Build the policy a spec names, its settings typed and checked.

    Raises :class:`PolicyError` for an unknown name (listing the known ones), an unknown
    setting (listing the known ones), or a bad value (naming it and the allowed range).

    >>> get_policy("worst10").name
    'worst:k=0.1,m=10,radius=0.05'
    """
    name, found = parse_spec(spec)
    if name in _ALIASES:
        if found:
            raise PolicyError(
                f"policy spec {spec!r}: alias {name!r} (= {_ALIASES[name]}) takes no settings; "
                f"write the full spec instead"
            )
        return get_policy(_ALIASES[name])
    if name not in _POLICIES:
        raise PolicyError(f"unknown policy {name!r} in spec {spec!r}; known: {', '.join(available_policies())}")
    cls = _POLICIES[name]
    accepted = inspect.signature(cls).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        for key, value in found.items():
            if key not in accepted:
                raise PolicyError(
                    f"policy {name!r}: unknown setting {key}={value}; "
                    f"known settings: {', '.join(accepted) or '(none)'}"
                )
    return cls(**found)
