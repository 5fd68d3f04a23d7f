"""Fresh training samples for a run's inverse model: renders of the run's own space by its own generator.

A run stores a few hundred train samples (300 in the ``cpu`` preset), too few to learn the
map image -> parameters well; rendering more costs milliseconds per 128 px image. So
``loop locate`` adds ``InverseConfig.renders`` fresh samples, drawn uniformly from the run's
frozen space (``RUN/run.toml``) and rendered at the run's sample size by the generator the run
renders with (its name, ``run.generator_options`` and ``run.space``, as
:func:`loop.run.generation.run_generator` builds it). They are never written to the run.

Determinism: parameters and render seeds come from one numpy Generator seeded with the run
seed and the fixed stream id :data:`RENDER_STREAM`, so the same run gives the same renders
(and, with the same inverse config, the same model) every time.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np

from generators import Generator
from generators.base import rendered_params
from generators.space import with_defaults
from loop.config.run import run_config_from
from loop.run.generation import check_generator_build, run_generator

RENDER_STREAM = 0x1A7E_4E0D
"""Stream id mixed with the run seed for the renders' numpy Generator (other draws of a run use other streams)."""


def run_seed(store: Any) -> int:
    """The run's seed: ``run.seed`` of a run made by ``loop start``, else the config's ``seed`` (0 when none)."""
    config = store.config
    run = config.get("run") if isinstance(config.get("run"), dict) else None
    return int((run or config).get("seed", 0) or 0)


def run_render_generator(store: Any) -> Generator:
    """The generator the run renders with (its frozen name, options and space), checked against the
    data the run began with (:func:`loop.run.generation.check_generator_build`)."""
    if isinstance(store.config.get("run"), dict):
        config = run_config_from(store.config["run"])
        generator = run_generator(config.generator, config.generator_options, config.space)
    else:
        generator = run_generator(store.generator_name, None, store.space)
    check_generator_build(store, generator)
    return generator


def render_for_inverse(store: Any, n: int, size: int, dims: Sequence[str], *,
                       generator: Generator | None = None,
                       say: Callable[[str], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(images, targets)``: ``n`` fresh ``size``-px renders of ``store``'s space, uint8 (n, size, size),
    and their parameters of ``dims`` in unit-cube coordinates (n, len(dims))."""
    space = store.space
    if n <= 0:
        return np.zeros((0, size, size), np.uint8), np.zeros((0, len(dims)))
    generator = generator or run_render_generator(store)
    rng = np.random.default_rng([run_seed(store), RENDER_STREAM])
    params = space.sample(rng, n)
    seeds = rng.integers(0, 2**62, size=n)
    defaults = getattr(generator, "defaults", {})
    t0 = time.perf_counter()
    images = np.stack([generator.render(with_defaults(p, defaults), int(s), size).image
                       for p, s in zip(params, seeds)])
    if say is not None:
        say(f"inverse model: rendered {n} fresh samples of the run's space at {size} px, "
            f"{time.perf_counter() - t0:.0f} s")
    return images, rendered_targets(space, generator, params, size, dims)


def rendered_targets(space: Any, generator: Any, rows: Sequence[Any], size: int, dims: Sequence[str]) -> np.ndarray:
    """The inverse model's targets for samples of parameters ``rows`` rendered at ``size`` px: each
    row as the render shows it (:func:`generators.base.rendered_params`: a capped grain diameter or
    boundary thickness is learnt as drawn, not as asked for), in unit-cube coordinates of ``space``
    (clipped into [0, 1]), the columns of ``dims``."""
    shown = [rendered_params(generator, dict(row), size) for row in rows]
    cols = [space.names.index(d) for d in dims]
    unit = space.to_unit(shown) if shown else np.zeros((0, len(space.names)))
    return np.clip(unit[:, cols], 0.0, 1.0)
