"""The generator contract as a pytest test base: a new generator gets its tests by registering.

:class:`GeneratorContract` holds the checks every registered generator must pass — the
rules of :class:`generators.base.Generator` made executable, in the manner of zarr's
``StoreTests`` or segmentation-models-pytorch's ``BaseModelTester``. A test module
subclasses it (the class name starting with ``Test``) and supplies the ``generator``
fixture, or just sets :attr:`GeneratorContract.generator_name`::

    from generators.testing import GeneratorContract

    class TestMyGenerator(GeneratorContract):
        generator_name = "mine"          # as given to generators.register

``tests/generators/test_generator_contract.py`` parametrises the fixture over
:func:`generators.available`, so registering a generator is all it takes for the whole
contract to run on it. :func:`run_contract` runs the same checks without a pytest
session (on a toy generator in a test, or in a REPL while writing a generator).

This module imports :mod:`pytest`, which is a *test* dependency only: the ``generators``
package never imports this module, so installing synthloop does not need pytest; importing
``generators.testing`` does.

Every check renders small images (:attr:`GeneratorContract.size`, 64 px), so the whole
contract runs in about a second per generator (plus a generator's one-off set-up, such as
the crack generator's texture bank).
"""

from __future__ import annotations

import inspect
import itertools
from typing import Any, Callable, ClassVar

import numpy as np
import pytest

from generators.base import TASKS, Generator, GeneratorError, Sample
from generators.registry import get_generator
from generators.space import Choice, Integer, ParamSpace, ParamSpaceError

__all__ = ["GeneratorContract", "check_sample", "contract_checks", "run_contract"]

UNKNOWN_PARAMETER = "no_such_parameter"
"""A parameter name no generator declares; a parameter set holding it must be refused."""


def check_sample(generator: Generator, sample: Any, size: int, classes: int = 2) -> None:
    """Assert that ``sample`` is what ``generator.render(..., size=size)`` must return.

    The image is a ``size``×``size`` uint8 array. Segmentation: the mask is a uint8 array of
    the same shape holding only 0 and 1. Classification: the label is an ``int`` in
    ``[0, classes)`` and the mask is ``None`` or a uint8 array of the image's shape.
    """
    who = f"generator {getattr(generator, 'name', generator)!r}"
    assert isinstance(sample, Sample), f"{who}: render returned {type(sample).__name__}, expected Sample"
    image = sample.image
    assert isinstance(image, np.ndarray), f"{who}: image is {type(image).__name__}, expected a numpy array"
    assert image.dtype == np.uint8, f"{who}: image dtype is {image.dtype}, expected uint8"
    assert image.shape == (size, size), f"{who}: image shape is {image.shape}, expected {(size, size)}"
    mask = sample.mask
    if generator.task == "segmentation":
        assert isinstance(mask, np.ndarray), f"{who}: a segmentation sample needs a mask, got {mask!r}"
        assert mask.dtype == np.uint8, f"{who}: mask dtype is {mask.dtype}, expected uint8"
        assert mask.shape == (size, size), f"{who}: mask shape is {mask.shape}, expected {(size, size)}"
        values = set(np.unique(mask).tolist())
        assert values <= {0, 1}, f"{who}: mask values {sorted(values)}, expected only 0 and 1"
    else:
        label = sample.label
        assert isinstance(label, int) and not isinstance(label, bool), \
            f"{who}: label is {label!r} ({type(label).__name__}), expected an int"
        assert 0 <= label < classes, f"{who}: label {label} outside [0, {classes})"
        if mask is not None:
            assert isinstance(mask, np.ndarray) and mask.dtype == np.uint8, \
                f"{who}: mask must be None or a uint8 array, got {getattr(mask, 'dtype', type(mask).__name__)}"
            assert mask.shape == (size, size), f"{who}: mask shape is {mask.shape}, expected {(size, size)}"


def _fingerprint(sample: Sample) -> tuple[bytes, bytes | None, int | None]:
    """The bytes a sample is judged equal by: image, mask (or None) and label."""
    mask = None if sample.mask is None else sample.mask.tobytes()
    return sample.image.tobytes(), mask, sample.label


def _global_random_state() -> tuple[Any, ...]:
    """numpy's legacy global random state, in a form that compares with ``==``."""
    state = np.random.get_state()
    return tuple(v.tobytes() if isinstance(v, np.ndarray) else v for v in state)


def _bad_values(dim: Any) -> list[Any]:
    """Values of the wrong type or outside the bounds of dimension ``dim``."""
    if isinstance(dim, Choice):
        return ["no-such-option", 3, None]
    span = dim.high - dim.low
    bad = [dim.high + span, dim.low - span, float("nan"), "0.5", None, True]
    if isinstance(dim, Integer):
        bad.append(dim.low + 0.5)
    return bad


class GeneratorContract:
    """Checks every generator must pass; subclass it in a test module to run them on one.

    Supply the generator by setting :attr:`generator_name` (a registered name) or by
    overriding the ``generator`` fixture (e.g. parametrised over the registry). The class
    attributes below tune the checks; each check is a ``test_*`` method taking only fixtures
    (``generator``), so :func:`run_contract` can call them directly too.
    """

    generator_name: ClassVar[str | None] = None
    """Registered name of the generator under test (or override the ``generator`` fixture)."""

    size: ClassVar[int] = 64
    """Side (px) of the images the checks render: small, so the contract runs in seconds."""

    min_size: ClassVar[int] = 32
    """Smallest side the generator must accept (and one less must be refused)."""

    max_size: ClassVar[int] = 4096
    """Largest side the generator must accept (one more must be refused; never rendered)."""

    seeds: ClassVar[tuple[int, ...]] = (0, 1, 2, 3)
    """Sample seeds the seed checks render."""

    random_corners: ClassVar[int] = 4
    """How many random corners of the unit cube are rendered besides all-zeros and all-ones."""

    classes: ClassVar[int] = 2
    """Number of classes of a classification generator, unless it declares ``classes`` itself."""

    contract_seed: ClassVar[int] = 20240611
    """Seed of the numpy Generator that draws the parameter sets and corners the checks use."""

    @pytest.fixture
    def generator(self) -> Generator:
        """The generator under test: ``get_generator(generator_name)``."""
        if self.generator_name is None:
            pytest.fail(f"{type(self).__name__}: set generator_name or override the 'generator' fixture")
        return get_generator(self.generator_name)

    # -- helpers ---------------------------------------------------------------------------

    def draw_params(self, generator: Generator, n: int, stream: int = 0) -> list[dict[str, Any]]:
        """``n`` parameter sets drawn uniformly from the space with a seeded numpy Generator."""
        rng = np.random.default_rng([self.contract_seed, stream])
        return generator.space.sample(rng, n)

    def n_classes(self, generator: Generator) -> int:
        """Number of classes a classification generator's labels range over."""
        return int(getattr(generator, "classes", self.classes))

    # -- the contract ----------------------------------------------------------------------

    def test_declares_the_protocol(self, generator: Generator) -> None:
        """name, version, task and space are declared with the right types."""
        assert isinstance(generator, Generator), f"{generator!r} lacks part of the Generator protocol"
        assert isinstance(generator.name, str) and generator.name, f"name must be a non-empty str: {generator.name!r}"
        assert isinstance(generator.version, str) and generator.version, \
            f"generator {generator.name!r}: version must be a non-empty str, got {generator.version!r}"
        assert generator.task in TASKS, f"generator {generator.name!r}: task {generator.task!r} not in {TASKS}"
        assert isinstance(generator.space, ParamSpace), \
            f"generator {generator.name!r}: space is {type(generator.space).__name__}, expected ParamSpace"

    def test_same_bytes_for_same_params_seed_size(self, generator: Generator) -> None:
        """Rendering is a pure function of (params, seed, size): same bytes every time.

        Also with another render in between (no state kept between calls) and with the
        parameters given in another key order.
        """
        first, other = self.draw_params(generator, 2, stream=1)
        a = generator.render(first, seed=5, size=self.size)
        generator.render(other, seed=6, size=self.size)
        b = generator.render(first, seed=5, size=self.size)
        reordered = dict(reversed(list(first.items())))
        c = generator.render(reordered, seed=5, size=self.size)
        assert a.image.tobytes() == b.image.tobytes(), f"generator {generator.name!r}: image bytes differ on re-render"
        mask_a, mask_b = (None if s.mask is None else s.mask.tobytes() for s in (a, b))
        assert mask_a == mask_b, f"generator {generator.name!r}: mask bytes differ on re-render"
        assert a.label == b.label, f"generator {generator.name!r}: label differs on re-render"
        assert _fingerprint(c) == _fingerprint(a), \
            f"generator {generator.name!r}: the order of the parameter keys changed the sample"

    def test_leaves_global_random_state_alone(self, generator: Generator) -> None:
        """render draws only from its seed: numpy's global random state is untouched."""
        (params,) = self.draw_params(generator, 1, stream=2)
        before = _global_random_state()
        generator.render(params, seed=1, size=self.size)
        assert _global_random_state() == before, \
            f"generator {generator.name!r}: render changed numpy's global random state"

    def test_different_seeds_usually_differ(self, generator: Generator) -> None:
        """The seed matters: for each parameter set, most seeds give different images."""
        pairs = same = 0
        for params in self.draw_params(generator, 3, stream=3):
            images = [generator.render(params, seed=s, size=self.size).image.tobytes() for s in self.seeds]
            assert len(set(images)) >= 2, \
                f"generator {generator.name!r}: seeds {self.seeds} all give the same image for {params}"
            for x, y in itertools.combinations(images, 2):
                pairs += 1
                same += x == y
        assert same <= pairs // 4, f"generator {generator.name!r}: {same} of {pairs} seed pairs give equal images"

    def test_image_dtype_shape_and_mask(self, generator: Generator) -> None:
        """uint8 image of (size, size); mask / label as the task requires (:func:`check_sample`)."""
        for params in self.draw_params(generator, 3, stream=4):
            for seed in self.seeds[:2]:
                sample = generator.render(params, seed=seed, size=self.size)
                check_sample(generator, sample, self.size, self.n_classes(generator))

    def test_renders_at_the_corners_of_the_space(self, generator: Generator) -> None:
        """The unit cube's all-zeros and all-ones corners and a few random corners render."""
        space = generator.space
        d = len(space)
        rng = np.random.default_rng([self.contract_seed, 5])
        corners = np.vstack([np.zeros((1, d)), np.ones((1, d)),
                             rng.integers(0, 2, size=(self.random_corners, d)).astype(float)])
        for corner, params in zip(corners, space.from_unit(corners)):
            assert space.validate(params) == params, f"from_unit({corner}) gave {params}, which does not validate"
            try:
                sample = generator.render(params, seed=0, size=self.size)
            except Exception as err:
                raise AssertionError(
                    f"generator {generator.name!r} fails at unit-cube corner {corner.astype(int).tolist()} "
                    f"({params}): {type(err).__name__}: {err}") from err
            check_sample(generator, sample, self.size, self.n_classes(generator))

    def test_bad_params_raise_naming_the_parameter(self, generator: Generator) -> None:
        """A missing, unknown, mistyped or out-of-bounds parameter raises ParamSpaceError naming it."""
        (good,) = self.draw_params(generator, 1, stream=6)
        cases: list[tuple[str, dict[str, Any]]] = [
            (UNKNOWN_PARAMETER, {**good, UNKNOWN_PARAMETER: 1.0})]
        for dim in generator.space:
            cases.append((dim.name, {k: v for k, v in good.items() if k != dim.name}))
            cases.extend((dim.name, {**good, dim.name: value}) for value in _bad_values(dim))
        for name, params in cases:
            with pytest.raises(ParamSpaceError) as info:
                generator.render(params, seed=0, size=self.size)
            assert repr(name) in str(info.value), \
                f"generator {generator.name!r}: the error for {params.get(name, '(missing)')!r} does not name " \
                f"{name!r}: {info.value}"

    def test_bad_seed_raises(self, generator: Generator) -> None:
        """A negative, boolean or non-integer seed raises GeneratorError naming the seed."""
        (params,) = self.draw_params(generator, 1, stream=7)
        for seed in (-1, True, 1.5, "3", None):
            with pytest.raises(GeneratorError, match="seed"):
                generator.render(params, seed=seed, size=self.size)

    def test_size_outside_the_limits_raises(self, generator: Generator) -> None:
        """A size below the minimum (or above the maximum, or not an int) raises GeneratorError; the minimum renders."""
        (params,) = self.draw_params(generator, 1, stream=8)
        for size in (self.min_size - 1, 0, -self.size, self.max_size + 1, float(self.size), str(self.size), True):
            with pytest.raises(GeneratorError, match="size"):
                generator.render(params, seed=0, size=size)
        sample = generator.render(params, seed=0, size=self.min_size)
        check_sample(generator, sample, self.min_size, self.n_classes(generator))


def contract_checks(contract: type | object) -> list[str]:
    """Names of the ``test_*`` methods of a contract class (or instance), in definition order."""
    cls = contract if isinstance(contract, type) else type(contract)
    names: list[str] = []
    for klass in reversed(cls.__mro__):
        names.extend(n for n in vars(klass) if n.startswith("test_") and callable(getattr(cls, n)) and n not in names)
    return names


def _cases(method: Callable[..., Any]) -> list[dict[str, Any]]:
    """Argument sets of a check: the product of its ``pytest.mark.parametrize`` marks (plain values only)."""
    cases: list[dict[str, Any]] = [{}]
    for mark in getattr(method, "pytestmark", []):
        if mark.name != "parametrize":
            continue
        argnames, argvalues = mark.args[0], mark.args[1]
        names = [a.strip() for a in argnames.split(",")] if isinstance(argnames, str) else list(argnames)
        rows = [dict(zip(names, (v,) if len(names) == 1 else tuple(v))) for v in argvalues]
        cases = [{**c, **r} for c in cases for r in rows]
    return cases


def run_contract(contract: object, **fixtures: Any) -> list[str]:
    """Run every check of ``contract`` (an instance of a contract class) outside pytest.

    Each ``test_*`` method is called with the ``fixtures`` its signature names (e.g.
    ``generator=...``), once per case of its ``parametrize`` marks. All checks run; if any
    fails, one :class:`AssertionError` lists every failed check and why. Returns the ids of
    the checks that ran, such as ``"test_bad_n_is_refused[n=-1]"``.
    """
    ran: list[str] = []
    failures: list[str] = []
    for name in contract_checks(contract):
        method = getattr(contract, name)
        wanted = [p for p in inspect.signature(method).parameters]
        for case in _cases(method):
            missing = [p for p in wanted if p not in case and p not in fixtures]
            if missing:
                raise TypeError(f"run_contract: check {name} needs fixture(s) {missing}; pass them as keywords")
            label = name + ("[" + ",".join(f"{k}={v!r}" for k, v in case.items()) + "]" if case else "")
            ran.append(label)
            try:
                method(**{p: case[p] if p in case else fixtures[p] for p in wanted})
            except (Exception, pytest.fail.Exception) as err:
                failures.append(f"{label}: {type(err).__name__}: {err}")
    if failures:
        raise AssertionError(f"{len(failures)} contract check(s) failed:\n" + "\n".join(failures))
    return ran
