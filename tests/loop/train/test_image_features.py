"""The inverse model's image statistics: one finite number per name, and each answers to its parameter."""

from __future__ import annotations

import numpy as np
import pytest

from generators import get_generator
from loop.train.image_features import FEATURE_NAMES, image_features, tile_features

BASE = {
    "grain_diameter": 20.0, "lloyd_iterations": 1, "spline_points": 2, "spline_displacement": 0.3,
    "boundary_thickness": 2.0, "boundary_contrast": -0.3, "mean_grey": 0.5, "grain_contrast": 0.15,
    "perlin_amplitude": 0.05, "perlin_wavelength": 0.4, "noise_sigma": 0.02, "blur_sigma": 0.5,
    "illumination": 0.0, "inclusion_density": 0.0, "inclusion_size": 1.5, "scratch_count": 0,
    "scratch_contrast": 0.0, "boundary_fade": 0.0, "etch_texture": 0.0,
}


def _features(**change) -> dict[str, float]:
    image = get_generator("grains").render({**BASE, **change}, 11, 128).image
    return dict(zip(FEATURE_NAMES, tile_features(image / 255.0)))


@pytest.mark.parametrize("side", [128, 64, 16])
def test_one_finite_number_per_name(side) -> None:
    image = get_generator("grains").render(BASE, 3, 128).image[:side, :side] / 255.0
    values = tile_features(image)
    assert values.shape == (len(FEATURE_NAMES),) and np.isfinite(values).all()
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert np.isfinite(tile_features(np.full((32, 32), 0.5))).all()  # a flat tile too
    np.testing.assert_allclose(image_features(np.stack([image, image])), values)
    with pytest.raises(ValueError, match="at least 4×4"):
        tile_features(np.zeros((3, 8)))


def test_statistics_answer_to_their_parameters() -> None:
    base = _features()
    assert _features(noise_sigma=0.1, blur_sigma=0.0)["noise_wavelet"] > base["noise_wavelet"] + 1.0
    assert _features(blur_sigma=2.0)["spectrum_9"] < base["spectrum_9"] - 2.0
    assert _features(grain_diameter=40.0)["acf_length_50"] > base["acf_length_50"] + 0.3
    assert _features(mean_grey=0.8)["grey_mean"] == pytest.approx(base["grey_mean"] + 0.3, abs=0.03)
    # dark lines fill the black top-hat, bright ones the white one
    bright = _features(boundary_contrast=0.3)
    assert base["tophat_black_mean_5"] > bright["tophat_black_mean_5"] + 0.5
    assert bright["tophat_white_mean_5"] > base["tophat_white_mean_5"] + 0.5
    assert _features(illumination=0.3)["shading_quadratic_ptp"] > base["shading_quadratic_ptp"] + 1.0
