"""Fitting the grain generator's ranges from labelled images: measurements, bounds, files, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from generators import grains
from generators.grain_fit import FITTED, GrainFitError, fit_groups, fit_pairs, measure_pair, save_space_file
from generators.space import Choice, check_subspace, load_space_file
from loop.cli import main

TRUTH = {"grain_diameter": 40.0, "lloyd_iterations": 2, "spline_points": 2, "spline_displacement": 0.3,
         "boundary_thickness": 3.0, "boundary_contrast": -0.3, "mean_grey": 0.5, "grain_contrast": 0.2,
         "perlin_amplitude": 0.0, "perlin_wavelength": 0.4, "noise_sigma": 0.02, "blur_sigma": 0.0}

# Tolerances, from the sampling error of 4 renders of 256 px (about 40 grains each) and the
# measured biases of each estimator on such renders:
TOLERANCE = {
    "grain_diameter": 4.0,        # inner cells are a little smaller (big ones touch the border more): ~ -2 %
    "boundary_thickness": 0.3,    # junction-corrected area / skeleton length: within ~0.1 px at 2-10 px
    "boundary_contrast": 0.01,    # a difference of two means of thousands of pixels
    "mean_grey": 0.03,            # sd of the mean of ~160 uniform greys (sd 0.115): 0.009; 3 sd
    "grain_contrast": 0.03,       # sd of a sd of ~40 uniform greys per image, averaged over 4 images
    "perlin_amplitude": 0.01,     # none drawn: the residual texture read is under 0.01
    "noise_sigma": 0.002,         # tens of thousands of residuals; the kernel's scale is exact
}


def params(**overrides) -> dict:
    """TRUTH for every current grain dimension: dimensions added to SPACE later sit at their low
    bound (0 = off for the artefacts) or first option."""
    out = {d.name: (d.options[0] if isinstance(d, Choice) else d.low) for d in grains.SPACE}
    out.update(TRUTH)
    out.update(overrides)
    return out


def render_pairs(n: int, size: int = 256, **overrides) -> list[tuple[str, np.ndarray, np.ndarray]]:
    gen = grains.GrainGenerator()
    out = []
    for seed in range(n):
        sample = gen.render(params(**overrides), seed, size)
        out.append((f"s{seed}", sample.image, sample.mask))
    return out


def write_folder(folder: Path, pairs) -> Path:
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for name, image, mask in pairs:
        Image.fromarray(image).save(folder / "images" / f"{name}.png")
        Image.fromarray(mask * 255).save(folder / "masks" / f"{name}.png")
    return folder


def test_measures_recover_the_rendered_parameters() -> None:
    measures = [measure_pair(image, mask, name) for name, image, mask in render_pairs(4)]
    assert all(m.n_grains >= 30 and m.n_inner >= 10 for m in measures)
    mean = {k: float(np.mean([m.estimates()[k] for m in measures])) for k in FITTED}
    for name, tol in TOLERANCE.items():
        assert mean[name] == pytest.approx(TRUTH[name], abs=tol), name


@pytest.mark.parametrize("overrides", [
    {"grain_diameter": 80.0, "boundary_thickness": 8.0, "boundary_contrast": 0.25, "mean_grey": 0.3,
     "grain_contrast": 0.05, "noise_sigma": 0.05},
    {"grain_diameter": 20.0, "boundary_thickness": 1.5, "perlin_amplitude": 0.1, "noise_sigma": 0.0},
])
def test_measures_follow_other_settings(overrides) -> None:
    truth = {**TRUTH, **overrides}
    measures = [measure_pair(image, mask, name) for name, image, mask in render_pairs(3, **overrides)]
    mean = {k: float(np.mean([m.estimates()[k] for m in measures])) for k in FITTED}
    assert mean["grain_diameter"] == pytest.approx(truth["grain_diameter"], rel=0.1)
    assert mean["boundary_thickness"] == pytest.approx(truth["boundary_thickness"], rel=0.1)
    assert mean["boundary_contrast"] == pytest.approx(truth["boundary_contrast"], abs=0.01)
    assert mean["noise_sigma"] == pytest.approx(truth["noise_sigma"], abs=0.003)
    # PERLIN_WITHIN_SD is good to about 10 % over the wavelengths; the Perlin texture also
    # spreads the per-grain means a little.
    assert mean["perlin_amplitude"] == pytest.approx(truth["perlin_amplitude"], abs=0.015)
    assert mean["grain_contrast"] == pytest.approx(truth["grain_contrast"], abs=0.04)


def test_fit_bounds_cover_the_truth_inside_the_generator_space() -> None:
    fit = fit_pairs(render_pairs(4))
    assert fit.space.names == grains.SPACE.names
    check_subspace(fit.space, grains.SPACE)
    assert set(fit.fitted) == set(FITTED)
    for name in FITTED:
        dim = fit.space[name]
        assert (dim.low, dim.high) == fit.fitted[name]
        assert dim.kind == grains.SPACE[name].kind
        assert dim.low <= TRUTH[name] <= dim.high or name == "perlin_amplitude"
        assert dim.low <= fit.medians[name] <= dim.high
    # Widened by at least 25 % of the value: 40 px grains give at least [30, 50] px.
    assert fit.space["grain_diameter"].low <= 31 and fit.space["grain_diameter"].high >= 49
    # Clipped into the generator's bounds; not fitted: the generator's dimension exactly.
    assert fit.space["perlin_amplitude"].low == 0.0 and fit.space["noise_sigma"].low >= 0.0
    for name in set(grains.SPACE.names) - set(FITTED):
        assert fit.space[name] == grains.SPACE[name]


def test_estimates_beyond_the_generator_bounds_are_clipped() -> None:
    # 13 px grains with 1 px boundaries: the widened bounds are clipped at 12 px and 1 px.
    fit = fit_pairs(render_pairs(2, grain_diameter=13.0, boundary_thickness=1.0))
    assert fit.space["grain_diameter"].low == grains.SPACE["grain_diameter"].low
    assert fit.space["boundary_thickness"].low == grains.SPACE["boundary_thickness"].low
    check_subspace(fit.space, grains.SPACE)
    # Vertical boundaries 16 px wide between 64 px stripes of white, even grains: even widened
    # by 25 % the thickness is beyond 10 px, so it is fixed at 10; the grey clipped at 0.95.
    mask = np.zeros((160, 160), np.uint8)
    for x in (0, 80):
        mask[:, x + 32:x + 48] = 1
    image = np.where(mask > 0, 100, 255).astype(np.uint8)
    fit = fit_pairs([("stripes", image, mask)])
    assert fit.medians["boundary_thickness"] == pytest.approx(16.0, rel=0.05)
    assert fit.space["boundary_thickness"].low == fit.space["boundary_thickness"].high == 10.0
    assert fit.space["mean_grey"].high == 0.95 and fit.space["mean_grey"].low == pytest.approx(0.75)
    assert fit.space["grain_contrast"].low == 0.0 and fit.space["noise_sigma"].low == 0.0
    check_subspace(fit.space, grains.SPACE)


def test_space_file_round_trip(tmp_path) -> None:
    fit = fit_pairs(render_pairs(2))
    path = save_space_file(fit, tmp_path / "out" / "grains.toml")
    loaded = load_space_file(path)
    assert loaded == fit.space
    check_subspace(loaded, grains.SPACE, source=str(path))
    text = path.read_text()
    assert text.startswith("# Grain parameter space fitted by `loop fit-grains`")
    assert "[fit]" in text and "n_images = 2" in text
    params = loaded.sample(np.random.default_rng(0), 1)[0]
    assert grains.GrainGenerator().render(params, 0, 64).image.shape == (64, 64)


def test_a_kind_with_one_image_among_many_is_listed_outside_and_kept_by_groups() -> None:
    # Ten colour-etched-like renders (no boundary line, grain-to-grain steps) and one dark-line one.
    etched = [(f"etched{i}", image, mask) for i, (_, image, mask) in
              enumerate(render_pairs(10, size=128, boundary_contrast=0.0, grain_contrast=0.3, grain_diameter=30.0))]
    dark = [("dark", image, mask) for _, image, mask in
            render_pairs(1, size=128, boundary_contrast=-0.3, grain_contrast=0.02, grain_diameter=30.0)]
    pooled = fit_pairs(etched + dark)  # 11 images: percentiles, which leave the one dark image out
    assert pooled.fitted["boundary_contrast"][0] > -0.1
    assert set(pooled.outside()["dark"]) >= {"boundary_contrast", "grain_contrast"}
    assert "dark" in pooled.to_dict()["fit"]["outside"]

    both = fit_groups([("etched", etched), ("dark", dark)])
    assert "dark" not in both.outside() and len(both.measures) == 11  # the tails of the ten may still be
    for name in FITTED:  # the union of each group's own ranges
        lows, highs = zip(*(both.groups[g][name] for g in ("etched", "dark")))
        assert both.fitted[name] == (min(lows), max(highs)) == (both.space[name].low, both.space[name].high)
    assert both.fitted["boundary_contrast"][0] < -0.25 and both.fitted["boundary_contrast"][1] > -0.05
    check_subspace(both.space, grains.SPACE)
    summary = both.to_dict()["fit"]
    assert summary["bounds"].startswith("union of the groups' ranges") and set(summary["groups"]) == {"etched", "dark"}
    assert fit_groups([("dark", dark)]).fitted == fit_pairs(dark).fitted  # one group: its own fit
    with pytest.raises(GrainFitError, match="group 'dark' is given twice"):
        fit_groups([("dark", dark), ("dark", dark)])
    with pytest.raises(GrainFitError, match="^none: no image/mask pairs to fit"):
        fit_groups([("dark", dark), ("none", [])])


def test_an_estimate_beyond_the_generators_bounds_is_not_outside_a_range_that_reaches_them() -> None:
    import dataclasses

    fit = fit_pairs(render_pairs(2, size=128))
    brighter = dataclasses.replace(fit.measures[0], source="bright", mean_grey=0.99)  # the generator stops at 0.95
    at_limit = dataclasses.replace(fit, measures=[*fit.measures, brighter],
                                   fitted={**fit.fitted, "mean_grey": (0.4, grains.SPACE["mean_grey"].high)})
    assert "bright" not in at_limit.outside()
    short = dataclasses.replace(at_limit, fitted={**fit.fitted, "mean_grey": (0.4, 0.9)})
    assert short.outside()["bright"] == {"mean_grey": 0.99}


def test_bad_pairs_are_named() -> None:
    image, mask = render_pairs(1, size=64)[0][1:]
    with pytest.raises(GrainFitError, match="^x.png: the mask has no boundary pixel"):
        measure_pair(image, np.zeros_like(mask), "x.png")
    with pytest.raises(GrainFitError, match="^x.png: the mask has no grain"):
        measure_pair(image, np.ones_like(mask), "x.png")
    with pytest.raises(GrainFitError, match="^x.png: expected a 2-D image and a mask of its size"):
        measure_pair(image[:32], mask, "x.png")
    with pytest.raises(GrainFitError, match="^somewhere: no image/mask pairs to fit"):
        fit_pairs([], where="somewhere")


def test_cli_fit_grains_prints_and_saves(tmp_path) -> None:
    folder = write_folder(tmp_path / "real", render_pairs(3))
    out = tmp_path / "fitted.toml"
    result = CliRunner().invoke(main, ["fit-grains", str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "grain space fitted on" in result.output and "grain_diameter" in result.output
    assert f"3 images; wrote {out}" in result.output
    assert load_space_file(out).names == grains.SPACE.names

    as_json = CliRunner().invoke(main, ["fit-grains", str(folder), "--out", str(out), "--json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    assert data["out"] == str(out) and data["fit"]["n_images"] == 3
    assert [d["name"] for d in data["dimensions"]] == list(grains.SPACE.names)
    assert data["fit"]["median"]["grain_diameter"] == pytest.approx(40.0, abs=4.0)

    other = write_folder(tmp_path / "bright", render_pairs(2, boundary_contrast=0.3))
    two = CliRunner().invoke(main, ["fit-grains", str(folder), str(other), "--out", str(out), "--json"])
    assert two.exit_code == 0, two.output
    data = json.loads(two.output)
    assert data["fit"]["n_images"] == 5 and len(data["fit"]["groups"]) == 2
    contrast = next(d for d in data["dimensions"] if d["name"] == "boundary_contrast")
    assert contrast["low"] < -0.25 and contrast["high"] > 0.25


def test_cli_lists_the_images_outside_the_fitted_ranges(tmp_path) -> None:
    pairs = render_pairs(10, size=128) + [("bright", *render_pairs(1, size=128, boundary_contrast=0.3)[0][1:])]
    folder = write_folder(tmp_path / "real", pairs)
    result = CliRunner().invoke(main, ["fit-grains", str(folder), "--out", str(tmp_path / "s.toml")])
    assert result.exit_code == 0, result.output
    assert "1 of 11 images lie outside the fitted ranges: bright (boundary_contrast 0.3" in result.output
    assert "loop fit-grains DIR1 DIR2" in result.output


def one_error_line(args) -> str:
    result = CliRunner().invoke(main, ["fit-grains", *args])
    assert result.exit_code == 1, result.output
    [line] = result.output.strip().splitlines()
    assert line.startswith("loop: error: ")
    return line


def test_cli_bad_folders_are_one_line(tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "folder not found" in one_error_line([str(empty)])
    (empty / "images").mkdir()
    (empty / "masks").mkdir()
    assert "no image/mask pairs" in one_error_line([str(empty)])

    name, image, mask = render_pairs(1, size=64)[0]
    lonely = write_folder(tmp_path / "lonely", [(name, image, mask)])
    Image.fromarray(mask * 255).save(lonely / "masks" / "extra.png")
    assert "extra.png: mask without an image" in one_error_line([str(lonely)])

    blank = write_folder(tmp_path / "blank", [(name, image, np.zeros_like(mask))])
    assert "s0.png: the mask has no boundary pixel" in one_error_line([str(blank)])
    full = write_folder(tmp_path / "full", [(name, image, np.ones_like(mask))])
    assert "s0.png: the mask has no grain" in one_error_line([str(full)])
    assert not (tmp_path / "grain_space.toml").exists()
