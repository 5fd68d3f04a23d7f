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
