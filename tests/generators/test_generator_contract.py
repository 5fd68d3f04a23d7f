"""The generator contract (generators.testing) on every registered generator, and proof that registering is enough."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pytest

import generators
from generators import (
    Choice, Continuous, Generator, GeneratorError, Integer, ParamSpace, Sample, check_size, registry,
)
from generators.testing import GeneratorContract, contract_checks, run_contract


@pytest.fixture(scope="module", params=generators.available())
def registered_name(request: pytest.FixtureRequest) -> str:
    """Every name in the registry itself (not a hand-kept list)."""
    return request.param


class TestEveryRegisteredGenerator(GeneratorContract):
    """The whole contract, once per registered generator."""

    @pytest.fixture
    def generator(self, registered_name: str) -> Generator:
        """A fresh instance from the registry."""
        return generators.get_generator(registered_name)

    def test_registered_under_its_own_name(self, registered_name: str, generator: Generator) -> None:
        assert generator.name == registered_name


class ToyGenerator:
    """A tiny generator that keeps the contract: a grey disc on noise, its mask 1 inside.

    ``mode`` breaks it in one way, to show the contract notices.
    """

    name = "toy"
    version = "0"
    task = "segmentation"
    space = ParamSpace([
        Continuous("level", "grey", "grey of the disc", 0.1, 0.9),
        Integer("radius", "px", "radius of the disc", 4, 12),
        Choice("edge", "", "edge of the disc", ("soft", "hard")),
    ])

    def __init__(self, mode: str = "good"):
        self.mode = mode
        self._kept = np.random.default_rng(0)

    def render(self, params: Mapping[str, Any], seed: int, size: int) -> Sample:
        """Render one sample (see the class docstring)."""
        p = self.space.validate(params)
        size = check_size(size)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise GeneratorError(f"seed: expected a non-negative integer, got {seed!r}")
        # "stateful" draws from a Generator kept between calls: not a function of the seed.
        rng = self._kept if self.mode == "stateful" else np.random.default_rng(seed)
        centre = rng.uniform(0, size, 2)
        yy, xx = np.mgrid[:size, :size]
        mask = (np.hypot(yy - centre[0], xx - centre[1]) <= p["radius"]).astype(np.uint8)
        image = 0.5 + 0.05 * rng.standard_normal((size, size)) + (p["level"] - 0.5) * mask
        if p["edge"] == "soft":
            image = 0.5 * (image + np.roll(image, 1, axis=0))
        image = np.clip(image * 255 + 0.5, 0, 255)
        if self.mode == "mask255":
            mask = mask * np.uint8(255)
        return Sample(image=image if self.mode == "float" else image.astype(np.uint8), mask=mask)


@pytest.fixture
def toy_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """A private copy of the registry, so registering toys leaves the real one alone."""
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))


def test_registering_a_generator_is_enough_for_the_contract(toy_registry) -> None:
    generators.register("toy", ToyGenerator)
    assert "toy" in generators.available()  # what the registered_name fixture is parametrised from
    ran = run_contract(GeneratorContract(), generator=generators.get_generator("toy"))
    assert ran == contract_checks(GeneratorContract) and len(ran) >= 9

    class TestToy(GeneratorContract):
        generator_name = "toy"

    assert run_contract(TestToy(), generator=generators.get_generator(TestToy.generator_name)) == ran


@pytest.mark.parametrize("mode, failed", [
    ("stateful", ["test_same_bytes_for_same_params_seed_size"]),
    ("float", ["test_image_dtype_shape_and_mask", "image dtype is float64"]),
    ("mask255", ["test_renders_at_the_corners_of_the_space", "mask values [0, 255]"]),
])
def test_a_generator_that_breaks_the_contract_fails_it(toy_registry, mode: str, failed: list[str]) -> None:
    generators.register("toy", lambda: ToyGenerator(mode))
    with pytest.raises(AssertionError, match="contract check") as info:
        run_contract(GeneratorContract(), generator=generators.get_generator("toy"))
    for fragment in failed:
        assert fragment in str(info.value)
