"""Realism artefacts of the grain generator (version 1.1): off = version 1.0's bytes; on = visible, not in the mask."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy import ndimage

from generators.artefacts import add_inclusions, add_scratches, add_shading, shading_profiles
from generators.grains import GrainGenerator, boundary_fade_field

GEN = GrainGenerator()
SPACE = GEN.space

NEW = ("illumination", "inclusion_density", "inclusion_size", "scratch_count", "scratch_contrast",
       "boundary_fade", "etch_texture")
"""The dimensions added in version 1.1."""

OFF = {"illumination": 0.0, "inclusion_density": 0.0, "inclusion_size": 3.0, "scratch_count": 0,
       "scratch_contrast": 0.0, "boundary_fade": 0.0, "etch_texture": 0.0}
"""Every artefact off (``inclusion_size`` only shapes inclusions, so any value will do)."""

# sha256 of image bytes + mask bytes rendered by version 1.0 (commit b9d5223, before the
# artefacts existed) for these parameters, seeds and sizes.
PINNED = [
    (dict(grain_diameter=40.0, lloyd_iterations=2, spline_points=2, spline_displacement=0.5, boundary_thickness=3.0,
          boundary_contrast=-0.3, mean_grey=0.6, grain_contrast=0.15, perlin_amplitude=0.1, perlin_wavelength=0.4,
          noise_sigma=0.04, blur_sigma=1.0), 7, 128,
     "d19dfd1b9f50f43e6e89a92d55453a43ab05c1d439f1c909fd4eed9ca52d4e5b"),
    (dict(grain_diameter=25.0, lloyd_iterations=0, spline_points=1, spline_displacement=0.0, boundary_thickness=1.5,
          boundary_contrast=0.0, mean_grey=0.4, grain_contrast=0.3, perlin_amplitude=0.0, perlin_wavelength=0.2,
          noise_sigma=0.0, blur_sigma=0.0), 123456789, 200,
     "1c27d5517ad741485cd3a96d3ba334c1f4c4c00d1b941e03625f8f144e5bee97"),
    (dict(grain_diameter=90.0, lloyd_iterations=3, spline_points=3, spline_displacement=0.9, boundary_thickness=8.0,
          boundary_contrast=0.45, mean_grey=0.8, grain_contrast=0.05, perlin_amplitude=0.25, perlin_wavelength=0.67,
          noise_sigma=0.12, blur_sigma=2.5), 0, 512,
     "3f5a746b7ccaf13fafb1eef07814a0ec312807a6477547dcef11dee15a20d455"),
]

BASE = dict(grain_diameter=50.0, lloyd_iterations=2, spline_points=2, spline_displacement=0.5, boundary_thickness=3.0,
            boundary_contrast=-0.3, mean_grey=0.55, grain_contrast=0.12, perlin_amplitude=0.03, perlin_wavelength=0.4,
            noise_sigma=0.0, blur_sigma=0.0, **OFF)
"""A plain optical micrograph without noise or blur, so differences are exactly the artefact."""


def _render(seed: int = 3, size: int = 256, **changes):
    sample = GEN.render({**BASE, **changes}, seed, size)
    return sample.image.astype(np.int32), sample.mask


def _digest(params: dict, seed: int, size: int) -> str:
    sample = GEN.render(params, seed, size)
    return hashlib.sha256(sample.image.tobytes() + sample.mask.tobytes()).hexdigest()


@pytest.mark.parametrize(("params", "seed", "size", "digest"), PINNED, ids=["128px", "200px-flat", "512px-bright"])
def test_all_artefacts_off_renders_the_bytes_of_version_1_0(params: dict, seed: int, size: int, digest: str) -> None:
    assert _digest({**params, **OFF}, seed, size) == digest


@pytest.mark.parametrize("size_value", [SPACE["inclusion_size"].low, SPACE["inclusion_size"].high])
def test_inclusion_size_alone_changes_nothing(size_value: float) -> None:
    params, seed, size, digest = PINNED[0]
    assert _digest({**params, **OFF, "inclusion_size": size_value}, seed, size) == digest


def test_new_dimensions_are_declared_with_off_in_range() -> None:
    assert GEN.version == "1.1"
    assert set(NEW) <= set(SPACE.names)
    assert SPACE.names[:12] == tuple(PINNED[0][0])  # the old dimensions keep their order
    for name in NEW:
        dim = SPACE[name]
        assert dim.description and dim.unit is not None
        if name != "inclusion_size":
            assert dim.low == 0 < dim.high, name
    assert (SPACE["illumination"].high, SPACE["inclusion_density"].high, SPACE["scratch_count"].high,
            SPACE["scratch_contrast"].high, SPACE["boundary_fade"].high, SPACE["etch_texture"].high) \
        == (0.3, 3.0, 6, 0.15, 1.0, 0.2)
    assert (SPACE["inclusion_size"].low, SPACE["inclusion_size"].high) == (1.5, 8.0)
    for name, bad in [("illumination", -0.1), ("boundary_fade", 1.5), ("scratch_count", 7), ("scratch_count", 2.5),
                      ("inclusion_size", 0.0), ("etch_texture", float("nan"))]:
        with pytest.raises(ValueError, match=name):
            GEN.render({**BASE, name: bad}, 0, 64)


def test_inclusions_are_dark_spots_mostly_off_the_boundaries_and_not_in_the_mask() -> None:
    plain, mask = _render()
    spotted, spotted_mask = _render(inclusion_density=3.0, inclusion_size=5.0)
    assert np.array_equal(mask, spotted_mask)
    changed = spotted != plain
    assert changed.any()
    assert np.all(spotted <= plain)  # only darker
    assert (plain - spotted)[changed].max() >= 0.3 * plain[changed].max()  # clearly visible
    assert mask[changed].mean() < 0.5  # most of it inside grains
    spots = ndimage.label(changed)[1]
    assert 5 <= spots <= 40  # about 3 per 10^4 px² of a 256² image (20), some merged or cut


def test_scratches_are_faint_straight_lines_not_in_the_mask() -> None:
    plain, mask = _render()
    scratched, scratched_mask = _render(scratch_count=3, scratch_contrast=0.15)
    assert np.array_equal(mask, scratched_mask)
    diff = scratched - plain
    changed = diff != 0
    assert 3 * 256 <= changed.sum() <= 3 * 256 * 5  # three lines across, 1-2 px wide (antialiased)
    # Faint: at most the scratch contrast, except where two lines cross.
    assert np.percentile(np.abs(diff[changed]), 95) <= round(0.15 * 255) + 1
    assert np.abs(diff).max() <= 3 * (round(0.15 * 255) + 1)
    assert mask[changed].mean() < 0.5
    # A line crosses the whole image: along its long axis nearly every row or column is touched.
    assert changed.any(axis=0).mean() > 0.9 or changed.any(axis=1).mean() > 0.9


def test_illumination_adds_low_frequency_shading_only() -> None:
    mild = dict(mean_grey=0.5, grain_contrast=0.05, boundary_contrast=-0.15)  # nothing clips at black or white
    plain, mask = _render(**mild)
    lit, lit_mask = _render(illumination=0.2, **mild)
    assert np.array_equal(mask, lit_mask)
    diff = (lit - plain).astype(float)
    assert diff.max() - diff.min() > 0.1 * 255  # a strong shading...
    # ...with no fine detail: the shift varies by at most ~1 grey per pixel step (plus rounding).
    assert np.abs(np.diff(diff, axis=0)).max() <= 3 and np.abs(np.diff(diff, axis=1)).max() <= 3
    # The 32 px block means (low frequencies) of the image spread much more.
    blocks = [img.reshape(8, 32, 8, 32).mean(axis=(1, 3)).std() for img in (plain, lit)]
    assert blocks[1] > 2 * blocks[0]


def test_boundary_fade_weakens_stretches_of_boundary_but_keeps_the_mask() -> None:
    flat = dict(perlin_amplitude=0.0)
    grains, mask = _render(boundary_contrast=0.0, **flat)
    lined, lined_mask = _render(**flat)
    faded, faded_mask = _render(boundary_fade=1.0, **flat)
    assert np.array_equal(mask, lined_mask) and np.array_equal(mask, faded_mask)
    on = mask == 1
    assert np.array_equal(faded[~on], grains[~on])  # only the boundary band changes
    contrast_lined = np.abs(lined - grains)[on]
    contrast_faded = np.abs(faded - grains)[on]
    assert np.all(contrast_faded <= contrast_lined)
    assert contrast_faded.mean() < 0.8 * contrast_lined.mean()
    assert (contrast_faded <= 2).mean() > 0.05  # some stretches vanish
    assert (contrast_faded >= 0.9 * contrast_lined).mean() > 0.05  # others stay
    half, _ = _render(boundary_fade=0.5, **flat)
    assert contrast_faded.mean() < np.abs(half - grains)[on].mean() < contrast_lined.mean()
    # Without a boundary contrast there is nothing to fade.
    assert np.array_equal(_render(boundary_contrast=0.0, boundary_fade=1.0, **flat)[0], grains)


def test_etch_texture_raises_the_variance_within_grains_only() -> None:
    flat = dict(perlin_amplitude=0.0)
    plain, mask = _render(**flat)
    etched, etched_mask = _render(etch_texture=0.2, **flat)
    assert np.array_equal(mask, etched_mask)
    regions, n = ndimage.label(mask == 0)
    index = np.arange(1, n + 1)
    var_plain = ndimage.variance(plain, regions, index)
    var_etched = ndimage.variance(etched, regions, index)
    assert np.all(np.asarray(var_plain) < 1.0)  # flat grains
    assert np.median(var_etched) > 50.0  # a sine of amplitude >= 0.04 · 255 has variance >= 52
    # Different grains get different gratings: the dominant direction of the gradient varies.
    gy, gx = np.gradient(etched.astype(float))
    angles = [np.angle(np.sum((gx[regions == i] + 1j * gy[regions == i]) ** 2)) for i in index
              if (regions == i).sum() > 400]
    assert np.std(angles) > 0.5


def test_every_artefact_on_is_deterministic_and_leaves_the_grains() -> None:
    on = dict(illumination=0.15, inclusion_density=1.5, inclusion_size=3.5, scratch_count=3, scratch_contrast=0.075,
              boundary_fade=0.5, etch_texture=0.1, noise_sigma=0.03, blur_sigma=1.0)
    a, mask_a = _render(seed=9, **on)
    b, mask_b = _render(seed=9, **on)
    _, mask_off = _render(seed=9, noise_sigma=0.03, blur_sigma=1.0)
    assert np.array_equal(a, b) and np.array_equal(mask_a, mask_b) and np.array_equal(mask_a, mask_off)
    assert not np.array_equal(a, _render(seed=10, **on)[0])


def test_each_artefact_has_its_own_stream() -> None:
    """Switching one artefact on leaves the others' realisations as they were."""
    spots, _ = _render(inclusion_density=3.0, inclusion_size=5.0)
    both, _ = _render(inclusion_density=3.0, inclusion_size=5.0, etch_texture=0.0001)
    # A tiny striation amplitude moves the grey by < 0.03 grey levels, so the spots stay put.
    assert np.abs(both - spots).max() <= 1


def test_artefact_helpers() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        rows, cols = shading_profiles(rng, (64, 96))
        assert rows.dtype == cols.dtype == np.float32 and rows.shape == (64,) and cols.shape == (96,)
        field = rows[:, None] + cols[None, :]
        assert field.min() == pytest.approx(-1.0, abs=1e-5) and field.max() == pytest.approx(1.0, abs=1e-5)
    flat = np.full((64, 96), 0.5, np.float32)
    add_shading(flat, np.random.default_rng(4), 0.2)
    assert flat.min() == pytest.approx(0.3, abs=1e-5) and flat.max() == pytest.approx(0.7, abs=1e-5)
    fade = boundary_fade_field(rng, (64, 64), 20.0)
    assert fade.dtype == np.float32 and 0.0 <= fade.min() and fade.max() <= 1.0 and fade.std() > 0.1
    image = np.full((100, 100), 0.5, np.float32)
    assert add_inclusions(image, rng, 0.0, 4.0) == 0 and np.all(image == 0.5)
    counts = [add_inclusions(np.full((100, 100), 0.5, np.float32), np.random.default_rng(s), 2.0, 4.0)
              for s in range(200)]
    assert abs(np.mean(counts) - 2.0) < 0.3  # Poisson, mean 2 per 10^4 px²
    add_inclusions(image, np.random.default_rng(1), 3.0, 8.0)
    assert image.min() < 0.5 * 0.6 + 1e-6 and image.max() == np.float32(0.5)
    image = np.full((50, 80), 0.5, np.float32)
    add_scratches(image, np.random.default_rng(2), 1, 0.1)
    assert 0 < np.abs(image - 0.5).max() <= 0.1 + 1e-6


@pytest.mark.parametrize(("params", "seed", "size", "digest"), PINNED[:2], ids=["128px", "200px-flat"])
def test_a_version_1_0_parameter_set_with_the_defaults_renders_as_1_0(params, seed, size, digest) -> None:
    from generators.grains import ARTEFACTS_OFF
    from generators.space import with_defaults

    assert set(ARTEFACTS_OFF) == set(NEW) and GEN.defaults is ARTEFACTS_OFF
    assert _digest(with_defaults(params, GEN.defaults), seed, size) == digest


def test_a_run_frozen_before_the_artefacts_renders_its_batches_as_1_0() -> None:
    from loop.run.generation import BatchPlan, render_plan

    params, seed, size, digest = PINNED[0]
    plan = BatchPlan(batch=0, cycle=0, split="train", size=size, sample_ids=(0,), seeds=(seed,), params=(params,),
                     parent_ids=(None,), policies=("random",))
    rows, images, masks = render_plan("grains", plan)
    assert hashlib.sha256(images[0].tobytes() + masks[0].tobytes()).hexdigest() == digest
    assert not set(NEW) & set(rows[0])  # the run's parameter table keeps its own columns
