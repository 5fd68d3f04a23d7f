"""The grain generator: contract, properties over the whole space, determinism, alignment, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from generators import Generator, GeneratorError, ParamSpaceError, get_generator
from generators.base import rendered_params
from generators.grains import (
    MAX_THICKNESS_FRACTION,
    MIN_GRAINS,
    STAGES,
    GrainGenerator,
    effective_diameter,
    effective_thickness,
    grain_count,
)

GEN = GrainGenerator()
SPACE = GEN.space


ARTEFACTS_OFF = {"illumination": 0.0, "inclusion_density": 0.0, "scratch_count": 0, "scratch_contrast": 0.0,
                 "boundary_fade": 0.0, "etch_texture": 0.0}
"""The realism artefacts of version 1.1 switched off (tests/generators/test_grain_artefacts.py covers them)."""


def _params(**overrides) -> dict:
    """A mid-space parameter set with the realism artefacts off and some values replaced."""
    p = SPACE.from_unit(np.full((1, len(SPACE)), 0.5))[0]
    p.update(ARTEFACTS_OFF)
    p.update(overrides)
    return SPACE.validate(p)


def _expected_visible_grains(size: int, diameter: float) -> float:
    # n grains of the periodic tessellation; grains cut by the image border show up in
    # two (or four) pieces, about (sqrt(n) + 1)^2 regions for n cells in a square.
    n = max(MIN_GRAINS, round(size * size / (math.pi / 4 * diameter * diameter)))
    return (math.sqrt(n) + 1) ** 2


def test_registered_and_declares_the_contract() -> None:
    gen = get_generator("grains")
    assert isinstance(gen, GrainGenerator) and isinstance(gen, Generator)
    assert (gen.name, gen.task) == ("grains", "segmentation") and gen.version
    names = set(gen.space.names)
    assert {"grain_diameter", "boundary_thickness", "lloyd_iterations", "spline_displacement",
            "boundary_contrast", "grain_contrast", "perlin_amplitude", "perlin_wavelength",
            "noise_sigma", "blur_sigma"} <= names
    for dim in gen.space:
        assert dim.description
    assert gen.space["grain_diameter"].unit == "px" and gen.space["boundary_thickness"].unit == "px"
    assert (gen.space["perlin_wavelength"].low, gen.space["perlin_wavelength"].high) == (0.2, 0.67)
    # Both dark (optical) and bright (SEM) boundaries, and none.
    assert gen.space["boundary_contrast"].low < 0 < gen.space["boundary_contrast"].high


def test_grain_count_and_caps() -> None:
    assert grain_count(512, 50.0) == round(512 * 512 / (math.pi / 4 * 2500))
    assert grain_count(64, 160.0) == MIN_GRAINS
    assert effective_diameter(512, 50.0) == pytest.approx(50.0, rel=0.01)
    assert effective_diameter(64, 160.0) < 64
    thick = _params(grain_diameter=12.0, boundary_thickness=10.0)
    assert effective_thickness(512, thick) == pytest.approx(MAX_THICKNESS_FRACTION * effective_diameter(512, 12.0))
    assert effective_thickness(512, _params(grain_diameter=100.0, boundary_thickness=4.0)) == 4.0


def test_rendered_params_are_the_capped_values_an_image_shows() -> None:
    gen = get_generator("grains")
    asked = _params(grain_diameter=160.0, boundary_thickness=10.0)
    shown = rendered_params(gen, asked, 64)
    assert shown["grain_diameter"] == effective_diameter(64, 160.0) < 64
    assert shown["boundary_thickness"] == effective_thickness(64, asked) < 10.0
    assert {k: v for k, v in shown.items() if k not in ("grain_diameter", "boundary_thickness")} == \
        {k: v for k, v in asked.items() if k not in ("grain_diameter", "boundary_thickness")}
    assert asked["grain_diameter"] == 160.0  # the caller's mapping is left alone
    # A generator without the hook renders what it is given.
    cracks = get_generator("cracks")
    drawn = cracks.space.sample(np.random.default_rng(0), 1)[0]
    assert rendered_params(cracks, drawn, 64) == drawn


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    unit=st.lists(st.floats(0.0, 1.0), min_size=len(SPACE), max_size=len(SPACE)),
    size=st.sampled_from([64, 96, 128, 200]),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_valid_parameters_give_a_sane_sample(unit: list[float], size: int, seed: int) -> None:
    params = SPACE.from_unit(np.array([unit]))[0]
    sample = GEN.render(params, seed, size)
    image, mask = sample.image, sample.mask
    assert image.dtype == np.uint8 and image.shape == (size, size)
    assert mask.dtype == np.uint8 and mask.shape == (size, size)
    assert set(np.unique(mask).tolist()) <= {0, 1}
    assert 0 < mask.mean() < 0.5
    _, grains = ndimage.label(mask == 0)
    expected = _expected_visible_grains(size, params["grain_diameter"])
    assert expected / 2 <= grains <= 2 * expected


def test_deterministic_and_seeded() -> None:
    p = _params()
    a, b = GEN.render(p, 7, 160), GEN.render(dict(p), 7, 160)
    assert a.image.tobytes() == b.image.tobytes() and a.mask.tobytes() == b.mask.tobytes()
    c = GEN.render(p, 8, 160)
    assert c.image.tobytes() != a.image.tobytes() and c.mask.tobytes() != a.mask.tobytes()
    assert np.array_equal(GEN.render(p, np.int64(7), np.int64(160)).image, a.image)


def test_deterministic_at_2048() -> None:
    p = _params(grain_diameter=30.0)
    a, b = GEN.render(p, 3, 2048), GEN.render(p, 3, 2048)
    assert a.image.shape == (2048, 2048)
    assert a.image.tobytes() == b.image.tobytes() and a.mask.tobytes() == b.mask.tobytes()


def test_boundary_pixels_carry_exactly_the_boundary_grey() -> None:
    p = _params(noise_sigma=0.0, blur_sigma=0.0, mean_grey=0.6, boundary_contrast=-0.45,
                grain_contrast=0.0, perlin_amplitude=0.0)
    s = GEN.render(p, 11, 128)
    on = s.mask == 1
    assert on.any() and (~on).any()
    assert np.all(s.image[on] == round(0.15 * 255))
    assert np.all(s.image[~on] == round(0.6 * 255))


@pytest.mark.parametrize("contrast", [-0.3, 0.25])
def test_boundaries_are_drawn_from_the_mask_over_the_grain_grey(contrast: float) -> None:
    textured = _params(noise_sigma=0.0, blur_sigma=0.0, mean_grey=0.5, grain_contrast=0.2, perlin_amplitude=0.2)
    plain = GEN.render({**textured, "boundary_contrast": 0.0}, 12, 128)
    lined = GEN.render({**textured, "boundary_contrast": contrast}, 12, 128)
    assert np.array_equal(plain.mask, lined.mask)
    on = lined.mask == 1
    assert np.array_equal(lined.image[~on], plain.image[~on])
    shift = lined.image[on].astype(int) - plain.image[on].astype(int)
    inside = (plain.image[on] > 80) & (plain.image[on] < 175)  # not clipped at black or white
    assert np.all(np.abs(shift[inside] - contrast * 255) <= 1)


def test_appearance_parameters_keep_the_structure() -> None:
    """What the policies perturb (grain colour, boundary width) leaves the grains in place."""
    base = _params(grain_diameter=40.0, boundary_thickness=2.0)
    thin = GEN.render(base, 5, 128).mask
    assert np.array_equal(GEN.render({**base, "grain_contrast": 0.05, "noise_sigma": 0.1}, 5, 128).mask, thin)
    thick = GEN.render({**base, "boundary_thickness": 5.0}, 5, 128).mask
    assert thick.sum() > 1.5 * thin.sum()
    assert np.all(thick[thin == 1] == 1)


def test_small_and_large_images_still_have_grains() -> None:
    tiny = GEN.render(_params(grain_diameter=160.0), 1, 64)
    assert ndimage.label(tiny.mask == 0)[1] >= MIN_GRAINS - 1
    fine = GEN.render(_params(grain_diameter=12.0, boundary_thickness=1.0), 1, 512)
    assert ndimage.label(fine.mask == 0)[1] > 1000


def test_timings_are_accumulated_per_stage() -> None:
    timings: dict[str, float] = {}
    GEN.render(_params(), 0, 64, timings=timings)
    first = dict(timings)
    GEN.render(_params(), 1, 64, timings=timings)
    assert set(STAGES) == set(timings)
    assert all(timings[k] > first[k] > 0 for k in STAGES)


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"colour": 1.0}, "colour"),
        ({"grain_diameter": None}, "grain_diameter"),
        ({"grain_diameter": 5.0}, "grain_diameter"),
        ({"boundary_thickness": 50.0}, "boundary_thickness"),
        ({"lloyd_iterations": 1.5}, "lloyd_iterations"),
        ({"blur_sigma": "wide"}, "blur_sigma"),
        ({"noise_sigma": float("nan")}, "noise_sigma"),
    ],
)
def test_bad_parameters_name_the_parameter(change: dict, name: str) -> None:
    params = _params()
    for key, value in change.items():
        if value is None:
            del params[key]
        else:
            params[key] = value
    with pytest.raises(ValueError, match=name) as info:
        GEN.render(params, 0, 64)
    assert isinstance(info.value, ParamSpaceError)


@pytest.mark.parametrize(("size", "seed", "name"), [(16, 0, "size"), (5000, 0, "size"), (64.0, 0, "size"),
                                                    (True, 0, "size"), ("64", 0, "size"), (64, -1, "seed"),
                                                    (64, 1.5, "seed"), (64, True, "seed")])
def test_bad_size_or_seed_names_it(size, seed, name: str) -> None:
    with pytest.raises(GeneratorError, match=name):
        GEN.render(_params(), seed, size)


def test_too_narrow_a_margin_falls_back_to_the_full_tiling(monkeypatch: pytest.MonkeyPatch) -> None:
    import generators.grains as grains

    monkeypatch.setattr(grains, "MARGIN", 0.2)  # cells reach further than the copied seeds
    sample = GEN.render(_params(grain_diameter=20.0, boundary_thickness=1.5), 4, 96)
    assert 0 < sample.mask.mean() < 0.5
    expected = _expected_visible_grains(96, 20.0)
    assert expected / 2 <= ndimage.label(sample.mask == 0)[1] <= 2 * expected


def test_rows_whose_first_crossing_is_inside_the_image_are_filled() -> None:
    """Regression: huge grains at 128 px left rows 76-80 with no crossing left of pixel 0."""
    params = {"grain_diameter": 126.45145309737171, "lloyd_iterations": 0, "spline_points": 3,
              "spline_displacement": 0.8556678232144148, "boundary_thickness": 6.4637596244370386,
              "boundary_contrast": 0.2219575828759286, "mean_grey": 0.7523877360060329,
              "grain_contrast": 0.08445220577863545, "perlin_amplitude": 0.0, "perlin_wavelength": 0.4052770669423602,
              "noise_sigma": 0.0, "blur_sigma": 0.0, **ARTEFACTS_OFF, "inclusion_size": 3.0}
    sample = GrainGenerator().render(params, 887463401, 128)
    # Without noise and blur each grain is flat: along every row, the grey changes only at boundary pixels.
    image, mask = sample.image.astype(int), sample.mask.astype(bool)
    steps = (np.diff(image, axis=1) != 0) & ~mask[:, 1:] & ~mask[:, :-1]
    assert not steps.any()
