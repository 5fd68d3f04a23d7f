"""Generators by name. ``loop`` and the policies look generators up here only.

A generator is registered with the options its constructor takes (the crack generator's
``exemplars`` folder; the grain generator takes none), so a run can name them in its config
and every process that renders for it builds the same generator (:func:`get_generator`).

A generator may have two hooks for a run's own parameter space (see :func:`fit_space`):
``check_space(space, source)`` raises unless it can render every parameter set of ``space``
(without it: :func:`generators.space.check_subspace` against its own space), and
``with_space(space, source)`` returns a generator of the same options that adopts ``space`` as
its own (completing and checking it), for a generator whose custom spaces may lie outside its
default one (the crack generator: a fitted space inside its hard limits).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from generators.base import Generator, GeneratorError
from generators.space import ParamSpace, check_subspace, complete_space

OPTION_KINDS = ("path", "text")
"""Kinds of generator options: a ``path`` (a local file or folder; a run config makes it absolute) or plain ``text``."""

_FACTORIES: dict[str, Callable[..., Generator]] = {}
_OPTIONS: dict[str, dict[str, str]] = {}


def register(name: str, factory: Callable[..., Generator], options: Mapping[str, str] | None = None) -> None:
    """Add a generator factory under ``name`` (one line per generator module). ``options``: the
    keyword arguments the factory takes, each with its kind (:data:`OPTION_KINDS`)."""
    if name in _FACTORIES:
        raise GeneratorError(f"generator {name!r} is already registered")
    bad = [kind for kind in (options or {}).values() if kind not in OPTION_KINDS]
    if bad:
        raise GeneratorError(f"generator {name!r}: option kind {bad[0]!r}; expected one of {', '.join(OPTION_KINDS)}")
    _FACTORIES[name] = factory
    _OPTIONS[name] = dict(options or {})


def available() -> list[str]:
    """Names of the registered generators, sorted."""
    return sorted(_FACTORIES)


def _factory(name: str) -> Callable[..., Generator]:
    try:
        return _FACTORIES[name]
    except KeyError:
        raise GeneratorError(f"unknown generator {name!r}; known: {', '.join(available()) or '(none)'}") from None


def generator_options(name: str) -> dict[str, str]:
    """The options the generator ``name`` takes, each with its kind (:data:`OPTION_KINDS`)."""
    _factory(name)
    return dict(_OPTIONS[name])


def unknown_option_message(name: str, option: str, where: str = "generator options") -> str:
    """The one line for ``option``, which the generator ``name`` does not take."""
    known = _OPTIONS.get(name, {})
    if not known:
        return f"{where}: the {name} generator takes no options (got {option!r})"
    return f"{where}: unknown option {option!r} for the {name} generator; known: {', '.join(known)}"


def get_generator(name: str, options: Mapping[str, Any] | None = None, space: ParamSpace | None = None, *,
                  space_source: str = "space") -> Generator:
    """A fresh instance of the generator registered as ``name``.

    ``options``: its constructor options (those it was registered with; ``None`` or empty =
    its defaults); an unknown one is a :class:`GeneratorError` naming it and the known ones.
    ``space``: a parameter space (a run's own) the generator must render: see :func:`fit_space`;
    one that does not fit is an error naming ``space_source`` and the dimension.
    """
    factory = _factory(name)
    options = dict(options or {})
    for option in options:
        if option not in _OPTIONS[name]:
            raise GeneratorError(unknown_option_message(name, option))
    generator = factory(**options)
    if space is not None:
        generator, _ = fit_space(generator, space, space_source)
    return generator


def check_space(generator: Generator, space: ParamSpace, source: str = "space") -> None:
    """Raise (naming ``source`` and the dimension) unless ``generator`` can render every parameter
    set of ``space``: its ``check_space`` hook, else :func:`check_subspace` against its own space."""
    hook = getattr(generator, "check_space", None)
    if hook is not None:
        hook(space, source)
    else:
        check_subspace(space, generator.space, source)


def fit_space(generator: Generator, space: ParamSpace, source: str = "space") -> tuple[Generator, ParamSpace]:
    """A generator that renders every parameter set of ``space``, and ``space`` completed.

    A generator with a ``with_space`` hook adopts ``space`` (completed and checked its way; the
    crack generator fills in dimensions a fitted space leaves out, such as ``texture``, and keeps
    it inside its hard limits): its space is the completed one. Any other generator is kept as it
    is; ``space`` is completed with its ``defaults`` (dimensions added to it after the space was
    written, :func:`complete_space`) and checked by :func:`check_space`.
    """
    adopt = getattr(generator, "with_space", None)
    if adopt is not None:
        adopted = adopt(space, source)
        return adopted, adopted.space
    space = complete_space(space, generator.space, getattr(generator, "defaults", {}))
    check_space(generator, space, source)
    return generator, space
