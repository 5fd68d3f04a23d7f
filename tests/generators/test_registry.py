"""The generator registry: lookup by name, clear errors."""

from __future__ import annotations

import pytest

import generators
from generators import GeneratorError, check_size, register


def test_unknown_generator_lists_known() -> None:
    with pytest.raises(GeneratorError) as info:
        generators.get_generator("nope")
    message = str(info.value)
    assert "unknown generator 'nope'" in message
    for name in generators.available():
        assert name in message


def test_registered_generators_follow_the_contract() -> None:
    for name in generators.available():
        gen = generators.get_generator(name)
        assert isinstance(gen, generators.Generator)
        assert gen.name == name and gen.task in generators.TASKS and gen.version


def test_double_registration_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from generators import registry

    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    register("test-only-dummy", lambda: None)
    with pytest.raises(GeneratorError, match="already registered"):
        register("test-only-dummy", lambda: None)


@pytest.mark.parametrize("size", [0, 16, 5000, 64.0, "128", True])
def test_bad_size(size) -> None:
    with pytest.raises(GeneratorError, match=r"size: expected an integer in \[32, 4096\] px"):
        check_size(size)


def test_options_and_spaces_per_generator(tmp_path) -> None:
    from dataclasses import replace

    from generators.cracks import SPACE as CRACKS
    from generators.grains import SPACE as GRAINS
    from generators.registry import fit_space, generator_options

    assert generator_options("grains") == {} and generator_options("cracks") == {"exemplars": "path"}
    with pytest.raises(GeneratorError, match=r"^generator options: the grains generator takes no options \(got 'x'\)$"):
        generators.get_generator("grains", {"x": "1"})
    with pytest.raises(GeneratorError, match=r"unknown option 'x' for the cracks generator; known: exemplars$"):
        generators.get_generator("cracks", {"x": "1"})
    # grains: checked against its own space (no hook), kept as it is; cracks: its limits, adopted.
    narrow = generators.ParamSpace([replace(d, high=d.low) if d.name == "noise_sigma" else d for d in GRAINS])
    grains, space = fit_space(generators.get_generator("grains"), narrow)
    assert grains.space == GRAINS and space == narrow
    wide = generators.ParamSpace([replace(d, high=0.3) if d.name == "width" else d for d in CRACKS])
    cracks = generators.get_generator("cracks", space=wide)
    assert cracks.space == wide and cracks.version == generators.get_generator("cracks").version
    with pytest.raises(generators.ParamSpaceError, match=r"^run.space: dimension 'noise_sigma' has bounds"):
        fit_space(generators.get_generator("grains"), generators.ParamSpace(
            [replace(d, high=d.high + 1.0) if d.name == "noise_sigma" else d for d in GRAINS]), "run.space")
