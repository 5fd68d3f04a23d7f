"""Augmentation keeps image and mask aligned, draws only from the generator passed in."""

from __future__ import annotations

import numpy as np
import pytest

from loop.train.augment import (
    augment_pair, jitter_intensity, random_flip, random_rot90, random_rotate_zoom, random_stretch, resize_pair,
    rotate_zoom, to_unit_float,
)
from loop.config.fields import ConfigError
from loop.config.training import AugmentConfig

GEOMETRIC = AugmentConfig(flip=True, rot90=True, brightness=0.0, contrast=0.0, stretch=0.0)


def _noise_image(seed: int, size: int = 48) -> np.ndarray:
    return to_unit_float(np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8))


def _block_image(seed: int, size: int = 64, block: int = 8) -> np.ndarray:
    """Piecewise-constant blocks of 0.2 / 0.8 (for geometry that must visibly change)."""
    rng = np.random.default_rng(seed)
    cells = rng.random((size // block, size // block)) < 0.5
    return np.where(np.kron(cells, np.ones((block, block), bool)), 0.8, 0.2).astype(np.float32)


def _stripe_image(seed: int, size: int = 64, vertical: bool = True) -> np.ndarray:
    """Random-width stripes of 0.2 / 0.8 along one axis: bilinear resampling then stays 1-D, so
    thresholding the resampled image at 0.5 picks the nearest source pixel, as the mask does."""
    rng = np.random.default_rng(seed)
    widths = rng.integers(2, 8, size)
    profile = np.repeat(np.arange(size) % 2, widths)[:size]
    image = np.where(np.broadcast_to(profile, (size, size)), 0.8, 0.2).astype(np.float32)
    return image if vertical else image.T.copy()


@pytest.mark.parametrize("seed", range(8))
def test_flips_and_rotations_keep_the_threshold_mask_exact(seed):
    image = _noise_image(seed)
    mask = (image > 0.5).astype(np.uint8)
    out, out_mask = augment_pair(image, mask, np.random.default_rng(seed), GEOMETRIC)
    assert out.shape == image.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out_mask, (out > 0.5).astype(np.uint8))


def test_flips_and_rotations_do_change_the_image():
    image = _noise_image(0)
    changed = [
        not np.array_equal(augment_pair(image, None, np.random.default_rng(s), GEOMETRIC)[0], image) for s in range(8)
    ]
    assert sum(changed) >= 5  # the identity is drawn with probability 1/16


def test_all_eight_symmetries_are_reached():
    image = _noise_image(1, size=8)
    seen = set()
    for s in range(200):
        rng = np.random.default_rng(s)
        out, _ = random_rot90(*random_flip(image, None, rng), rng)
        seen.add(out.tobytes())
    assert len(seen) == 8


@pytest.mark.parametrize("vertical", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_stretch_keeps_the_threshold_mask_aligned(seed, vertical):
    image = _stripe_image(seed, vertical=vertical)
    mask = (image > 0.5).astype(np.uint8)
    out, out_mask = random_stretch(image, mask, np.random.default_rng(seed), 0.3)
    assert out.shape == image.shape and out_mask.shape == mask.shape and out_mask.dtype == np.uint8
    # Exactly half-way between a dark and a bright source pixel the threshold is a tie; elsewhere
    # the mask must equal the thresholded image pixel for pixel.
    decided = np.abs(out - 0.5) > 1e-4
    assert decided.mean() > 0.75
    np.testing.assert_array_equal(out_mask[decided], (out > 0.5)[decided])


def test_stretch_changes_the_geometry():
    image = _block_image(3)
    outs = [random_stretch(image, None, np.random.default_rng(s), 0.3)[0] for s in range(4)]
    assert all(np.abs(o - image).mean() > 0.01 for o in outs)
    assert random_stretch(image, None, np.random.default_rng(0), 0.0)[0] is image


@pytest.mark.parametrize("shape", [(48, 48), (40, 56)])
def test_rotate_zoom_at_right_angles_and_unit_zoom_is_exact(shape):
    image = to_unit_float(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8))
    mask = (image > 0.5).astype(np.uint8)
    out, out_mask = rotate_zoom(image, mask, 0.0, 1.0)
    np.testing.assert_allclose(out, image, atol=1e-5)
    np.testing.assert_array_equal(out_mask, mask)
    out, out_mask = rotate_zoom(image, mask, 180.0, 1.0)
    np.testing.assert_allclose(out, image[::-1, ::-1], atol=1e-5)
    np.testing.assert_array_equal(out_mask, mask[::-1, ::-1])
    if shape[0] == shape[1]:
        out, out_mask = rotate_zoom(image, mask, 90.0, 1.0)
        np.testing.assert_allclose(out, np.rot90(image), atol=1e-5)  # counter-clockwise as displayed
        np.testing.assert_array_equal(out_mask, np.rot90(mask))


def test_zoom_enlarges_about_the_centre():
    image = np.zeros((64, 64), np.float32)
    image[28:36, 28:36] = 1.0  # an 8-px square in the middle becomes a 16-px one
    out, _ = rotate_zoom(image, None, 0.0, 2.0)
    assert np.count_nonzero(out > 0.5) == 16 * 16 and out[24:40, 24:40].min() > 0.5


@pytest.mark.parametrize("seed", range(4))
def test_rotate_zoom_keeps_the_mask_on_its_image(seed):
    image = _block_image(seed)
    mask = (image > 0.5).astype(np.uint8)
    out, out_mask = random_rotate_zoom(image, mask, np.random.default_rng(seed), 180.0, 0.2)
    assert out.shape == image.shape and out_mask.dtype == np.uint8 and set(np.unique(out_mask)) <= {0, 1}
    assert np.abs(out - image).mean() > 0.05  # it moved
    decided = np.abs(out - 0.5) > 0.1  # off the block edges, where bilinear and nearest (nearly) agree
    assert decided.mean() > 0.8
    # At a block's corner a rotated sample point may be nearest a pixel of the other block: rare.
    assert np.mean(out_mask[decided] == (out > 0.5)[decided]) > 0.995


def test_rotate_and_zoom_off_draw_nothing():
    image = _noise_image(5)
    mask = (image > 0.5).astype(np.uint8)
    rng = np.random.default_rng(3)
    assert random_rotate_zoom(image, mask, rng, 0.0, 0.0) == (image, mask)
    assert rng.random() == np.random.default_rng(3).random()
    # The preset's augmentations give the bytes they gave before rotate and zoom existed.
    cfg = AugmentConfig()
    assert (cfg.rotate, cfg.zoom) == (0.0, 0.0)
    a = augment_pair(image, mask, np.random.default_rng(7), cfg)
    rng = np.random.default_rng(7)
    b = random_rot90(*random_flip(image, mask, rng), rng)
    b = random_stretch(*b, rng, cfg.stretch)
    np.testing.assert_array_equal(a[0], jitter_intensity(b[0], rng, cfg.brightness, cfg.contrast))
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("field, value", [("rotate", 181.0), ("rotate", -1.0), ("zoom", 0.6), ("zoom", True)])
def test_rotate_and_zoom_ranges_are_checked(field, value):
    with pytest.raises(ConfigError, match=f"augment.{field}"):
        AugmentConfig(**{field: value})


def test_intensity_jitter_touches_the_image_only():
    image = _noise_image(2)
    mask = (image > 0.5).astype(np.uint8)
    cfg = AugmentConfig(flip=False, rot90=False, brightness=0.2, contrast=0.3, stretch=0.0)
    out, out_mask = augment_pair(image, mask, np.random.default_rng(5), cfg)
    np.testing.assert_array_equal(out_mask, mask)
    assert not np.allclose(out, image)
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_array_equal(jitter_intensity(image, np.random.default_rng(0), 0.0, 0.0), image)


def test_same_generator_seed_same_result_and_seeds_differ():
    image = _noise_image(3)
    mask = (image > 0.5).astype(np.uint8)
    cfg = AugmentConfig()
    a = augment_pair(image, mask, np.random.default_rng(7), cfg)
    b = augment_pair(image, mask, np.random.default_rng(7), cfg)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    others = [augment_pair(image, mask, np.random.default_rng(s), cfg)[0] for s in range(8, 12)]
    assert not any(np.array_equal(a[0], o) for o in others)


def test_resize_shrinks_masks_to_boundary_fractions():
    image = _noise_image(4, size=128)
    mask = np.zeros((128, 128), np.float32)
    mask[:, 63:65] = 1.0  # a 2-px boundary
    small, small_mask = resize_pair(image, mask, 64)
    assert small.shape == small_mask.shape == (64, 64)
    assert small.min() >= 0.0 and small.max() <= 1.0
    assert small_mask.max() <= 1.0 and small_mask.sum() == pytest.approx(mask.sum() / 4)
    big, big_mask = resize_pair(image, mask, 256)
    assert big.shape == (256, 256) and set(np.unique(big_mask)) == {0.0, 1.0}
    same = resize_pair(image, mask, 128)
    assert same[0] is image and same[1] is mask


def test_to_unit_float_wants_uint8():
    assert to_unit_float(np.array([[0, 255]], np.uint8)).tolist() == [[0.0, 1.0]]
    with pytest.raises(ValueError, match="uint8"):
        to_unit_float(np.zeros((2, 2), np.float32))
