"""Fitting the crack distributions from masks: measurements, the round trip, files, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from scipy import ndimage

from generators.crack_fit import CrackFitError, centroid_offset, fit_cracks, measure_background, measure_mask, save_space_file
from generators.cracks import SPACE, CrackGenerator, CrackShape, crack_generator_from_file, load_space_file, rasterize_crack
from loop.cli import main

TRUTH = {"crack_probability": 1.0, "segments_mean": 3.0, "segment_length": 0.15, "length_spread": 0.2,
         "bend_sigma": 40.0, "width": 0.02, "width_variation": 0.1, "roughness": 0.0,
         "centre_spread": 0.6, "intensity": 0.3,
         "texture": "gravel", "texture_scale": 1.0, "texture_mean": 0.55, "texture_contrast": 0.03,
         "shading": 0.0, "noise_sigma": 0.0, "blur_sigma": 0.0}


def write_pairs(folder: Path, n: int, size: int = 128, **overrides) -> Path:
    """``n`` rendered crack samples as DIR/images/*.png and DIR/masks/*.png (0/255)."""
    gen = CrackGenerator()
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for seed in range(n):
        sample = gen.render({**TRUTH, **overrides}, seed, size)
        Image.fromarray(sample.image).save(folder / "images" / f"s{seed:03d}.png")
        Image.fromarray(sample.mask * 255).save(folder / "masks" / f"s{seed:03d}.png")
    return folder


def test_measure_a_known_crack() -> None:
    """Two straight segments of 50.99 and 62.64 px, 4 px wide, turning by 50.4°, darkened by 0.3."""
    vertices = np.array([[20.0, 30.0], [70.0, 40.0], [100.0, 95.0]])
    widths = np.full(3, 4.0)
    shape = CrackShape(vertices=vertices, widths=widths, path=vertices, path_widths=widths)
    coverage, mask = rasterize_crack(shape, 128)
    image = np.round(255 * (0.6 - 0.3 * coverage)).astype(np.uint8)
    [crack] = measure_mask(mask, image)
    assert crack.segments == 2
    # The centreline may be traced from either end; skeletons stop about half a width short of the tips.
    assert sorted(crack.segment_lengths * 128) == pytest.approx([50.99, 62.64], rel=0.1)
    assert abs(crack.turns_deg[0]) == pytest.approx(50.4, abs=6)
    assert np.median(crack.widths) * 128 == pytest.approx(4.0, rel=0.15)
    assert crack.intensity == pytest.approx(0.3, abs=0.02)


def test_a_generous_mask_keeps_the_width_the_image_shows() -> None:
    """A 2 px crack whose mask was drawn 3 px wider on each side: the image's darkness gives the 2 px back."""
    vertices = np.array([[20.0, 30.0], [70.0, 40.0], [100.0, 95.0]])
    widths = np.full(3, 2.0)
    shape = CrackShape(vertices=vertices, widths=widths, path=vertices, path_widths=widths)
    coverage, mask = rasterize_crack(shape, 128)
    image = np.round(255 * (0.6 - 0.3 * coverage)).astype(np.uint8)
    wide = ndimage.binary_dilation(mask, iterations=3).astype(np.uint8)
    [from_mask] = measure_mask(wide)
    [from_image] = measure_mask(wide, image)
    assert np.median(from_mask.widths) * 128 > 6.0
    assert np.median(from_image.widths) * 128 == pytest.approx(2.0, rel=0.2)
    assert from_image.intensity == pytest.approx(0.3, abs=0.02)


def test_background_is_measured_as_the_generator_draws_it() -> None:
    """Mean grey, a linear ramp (the generator's shading) and the texture's sd about it."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(-1.0, 1.0, 128)
    texture = 0.04 * rng.standard_normal((128, 128))
    grey = 0.5 + 0.1 * (0.6 * ramp[None, :] + 0.8 * ramp[:, None]) + texture
    mean, contrast, shading = measure_background(np.round(np.clip(grey, 0, 1) * 255).astype(np.uint8))
    assert mean == pytest.approx(0.5, abs=0.01)
    assert shading == pytest.approx(0.1, abs=0.01)
    assert contrast == pytest.approx(0.04, abs=0.003)


def test_fit_recovers_the_distributions_it_was_drawn_from(tmp_path) -> None:
    fit = fit_cracks(write_pairs(tmp_path / "real", 30))
    assert fit.n_masks == 30 and fit.n_empty == 0 and len(fit.measures) >= 30
    m = fit.medians
    assert m["segment_length"] == pytest.approx(0.15, rel=0.2)
    assert m["width"] == pytest.approx(0.02, rel=0.2)
    assert m["intensity"] == pytest.approx(0.3, abs=0.04)
    assert m["bend_sigma"] == pytest.approx(40.0, abs=15.0)
    assert m["texture_mean"] == pytest.approx(0.55, abs=0.05)
    # Bends below the polygon tolerance merge segments; cracks are partly outside the image.
    assert 1.0 <= m["segments_mean"] <= 3.0
    for name, (low, high) in fit.fitted.items():
        assert fit.space[name].low == low and fit.space[name].high == high
        assert low <= m[name] <= high or name == "segments_mean"
    assert m["texture_contrast"] == pytest.approx(0.03, abs=0.01)
    assert m["shading"] < 0.03  # drawn without shading
    assert m["centre_spread"] == pytest.approx(0.6, abs=0.1)
    assert "texture" not in fit.space.names
    assert fit.space["noise_sigma"] == SPACE["noise_sigma"]  # not measurable: the default


def test_cracks_running_out_of_the_image_are_placed_so(tmp_path) -> None:
    """Drawn anywhere (centre_spread 1): the simulated calibration gives the spread back, well
    apart from the centred cracks' 0.6."""
    fit = fit_cracks(write_pairs(tmp_path / "real", 30, centre_spread=1.0))
    assert fit.medians["centre_spread"] == pytest.approx(1.0, abs=0.1)
    assert centroid_offset([m.centroid for m in fit.measures]) > 0.15 + 0.05
    low, high = fit.fitted["centre_spread"]
    assert low < fit.medians["centre_spread"] <= high == 1.0  # the limit cuts the ±0.1 span


def test_masks_alone_fit_the_geometry_but_not_the_intensity(tmp_path) -> None:
    folder = write_pairs(tmp_path / "real", 8)
    fit = fit_cracks(folder / "masks")
    assert {"segment_length", "width"} <= set(fit.fitted)
    assert "intensity" not in fit.fitted and fit.space["intensity"] == SPACE["intensity"]


def test_space_file_round_trip_feeds_the_generator(tmp_path) -> None:
    fit = fit_cracks(write_pairs(tmp_path / "real", 8))
    path = save_space_file(fit, tmp_path / "out" / "space.toml")
    assert load_space_file(path) == fit.space
    gen = crack_generator_from_file(path)
    assert gen.space["width"] == fit.space["width"]
    assert gen.space["texture"] == SPACE["texture"]
    params = gen.space.sample(np.random.default_rng(0), 1)[0]
    assert fit.space["width"].low <= params["width"] <= fit.space["width"].high
    assert gen.render(params, 0, 64).image.shape == (64, 64)


def test_bad_mask_folders_are_named(tmp_path) -> None:
    with pytest.raises(CrackFitError, match="mask folder .*missing: not found"):
        fit_cracks(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CrackFitError, match=f"mask folder {empty}: no mask images in it"):
        fit_cracks(empty)
    blank = tmp_path / "blank"
    blank.mkdir()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(blank / "a.png")
    with pytest.raises(CrackFitError, match=f"mask folder {blank}: no crack in any of its 1 masks"):
        fit_cracks(blank)
    pairs = write_pairs(tmp_path / "pairs", 2)
    Image.fromarray(np.zeros((50, 64), np.uint8)).save(pairs / "images" / "s001.png")
    with pytest.raises(CrackFitError, match=r"s001.png: image size \(64, 50\) differs from mask"):
        fit_cracks(pairs)


def test_cli_fit_cracks_prints_and_saves(tmp_path) -> None:
    folder = write_pairs(tmp_path / "real", 6)
    out = tmp_path / "fitted.toml"
    result = CliRunner().invoke(main, ["fit-cracks", str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "crack space fitted on" in result.output and f"wrote {out}" in result.output
    assert load_space_file(out).names == tuple(n for n in SPACE.names if n != "texture")
    bad = CliRunner().invoke(main, ["fit-cracks", str(tmp_path / "nothing")])
    assert bad.exit_code == 1
    assert bad.output.strip().splitlines() == [f"loop: error: mask folder {tmp_path / 'nothing'}: not found"]


def test_cli_fit_cracks_on_tiles_writes_exemplars(tmp_path) -> None:
    folder = write_pairs(tmp_path / "real", 6, size=96)
    for seed in range(3):  # crack-free images beside the cracked ones
        sample = CrackGenerator().render({**TRUTH, "crack_probability": 0.0}, 100 + seed, 96)
        Image.fromarray(sample.image).save(folder / "images" / f"clean{seed}.png")
        Image.fromarray(sample.mask * 255).save(folder / "masks" / f"clean{seed}.png")
    out, exemplars = tmp_path / "tiles.toml", tmp_path / "exemplars"
    result = CliRunner().invoke(main, ["fit-cracks", str(folder), "--tile-size", "64", "--out", str(out),
                                       "--exemplars-out", str(exemplars), "--max-exemplars", "5", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["tiles"]["no_crack"] == 12 and data["tiles"]["exemplars_written"] == 5
    written = sorted(p.name for p in exemplars.iterdir())
    assert len(written) == 5 and all(n.startswith("clean") for n in written)
    gen = crack_generator_from_file(out, exemplars)
    assert len(gen.exemplars) == 5 and gen.render(gen.space.sample(np.random.default_rng(0), 1)[0], 0, 64)
    # Lengths are fractions of the 64 px tile now, not of the 96 px image.
    whole = fit_cracks(folder)
    assert load_space_file(out)["segment_length"] != whole.space["segment_length"]
    bad = CliRunner().invoke(main, ["fit-cracks", str(folder), "--exemplars-out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "give --tile-size too" in bad.output


@pytest.mark.slow
def test_fit_on_the_shared_real_cracks(shared_data, tmp_path) -> None:
    fit = fit_cracks(shared_data / "cracks")
    assert len(fit.measures) >= 20 and fit.n_empty > 0
    assert set(fit.fitted) >= {"segments_mean", "segment_length", "width", "intensity", "texture_mean"}
    gen = crack_generator_from_file(save_space_file(fit, tmp_path / "space.toml"))
    sample = gen.render({**gen.space.sample(np.random.default_rng(0), 1)[0], "crack_probability": 1.0}, 0, 128)
    assert sample.label == 1 and sample.mask.any()
