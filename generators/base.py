"""The generator contract: a pure function of ``(params, seed, size)``."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Protocol, runtime_checkable

import numpy as np

from generators.space import ParamSpace
from loop.errors import InputError

TASKS = ("segmentation", "classification")


@dataclass(frozen=True)
class Sample:
    """One rendered sample.

    ``image`` is uint8 H×W. For segmentation ``mask`` is uint8 H×W (1 = foreground, for
    grains the boundary); for classification ``label`` is the class index and ``mask`` may
    still carry a pixel mask (e.g. the crack) or be ``None``.
    """

    image: np.ndarray
    mask: np.ndarray | None = None
    label: int | None = None


@runtime_checkable
class Generator(Protocol):
    """What every registered generator provides.

    ``render`` must not touch any global random state: all randomness comes from
    ``numpy.random.default_rng(seed)`` (or generators spawned from it), so the same
    ``(params, seed, size)`` gives the same bytes on any machine.

    Optional hooks for a run's own parameter space, ``check_space(space, source)`` and
    ``with_space(space, source)``, are described in :mod:`generators.registry`; a generator
    that renders some values otherwise than drawn (a cap at a size) says so with
    ``rendered_params(params, size)`` (see :func:`rendered_params`).
    """

    name: str
    version: str
    task: str
    space: ParamSpace

    def render(self, params: Mapping[str, Any], seed: int, size: int) -> Sample:
        """Render one sample of ``size``×``size`` pixels."""
        ...


def rendered_params(generator: Any, params: Mapping[str, Any], size: int) -> dict[str, Any]:
    """``params`` as a ``size``-px render of ``generator`` shows them: its ``rendered_params``
    hook's answer when it has one (the grain generator caps grain diameter and boundary
    thickness at a size), else ``params`` unchanged. What an image can tell is the rendered
    value, so a model that reads parameters off images learns those."""
    hook = getattr(generator, "rendered_params", None)
    return dict(hook(params, size)) if hook is not None else dict(params)


class GeneratorError(InputError):
    """A generator was asked for something it cannot do (unknown name, bad size...)."""


def check_size(size: Any, low: int = 32, high: int = 4096) -> int:
    """Validate an image side length; return it as ``int``."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not low <= size <= high:
        raise GeneratorError(f"size: expected an integer in [{low}, {high}] px, got {size!r}")
    return int(size)


class StageClock:
    """Adds the wall time of named generator stages to a dict (or does nothing without one).

    ``with clock("texture"): ...`` — what ``render(..., timings=...)`` and ``loop bench generate`` use.
    """

    def __init__(self, timings: dict[str, float] | None):
        self._timings = timings

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        if self._timings is None:
            yield
            return
        t0 = time.perf_counter()
        yield
        self._timings[stage] = self._timings.get(stage, 0.0) + time.perf_counter() - t0
