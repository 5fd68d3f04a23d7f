"""`loop locate`: real images placed in a run's parameter space, on a smoke-sized run made with the store API."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from generators import get_generator
from loop.cli import main
from stores import RunStore


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def _make_run(path, n_train: int = 16, n_test: int = 8, size: int = 64) -> str:
    """A grains run of cycle 0 (smoke-preset sizes: 16 train + 8 test at 64 px), written without Ray."""
    gen = get_generator("grains")
    run = str(path)
    store = RunStore.create(run, generator_name=gen.name, generator_version=gen.version, task=gen.task,
                            space=gen.space, config={"policy": "random", "seed": 1})
    params = gen.space.sample(np.random.default_rng(0), n_train + n_test)
    rows, images, masks = [], [], []
    for i, p in enumerate(params):
        sample = gen.render(p, 100 + i, size)
        rows.append({"sample_id": i, "cycle": 0, "split": "train" if i < n_train else "test", "policy": "random",
                     "parent_id": None, "seed": 100 + i, **p})
        images.append(sample.image)
        masks.append(sample.mask)
    store.write_batch(0, rows, np.stack(images), np.stack(masks))
    return run


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> str:
    return _make_run(tmp_path_factory.mktemp("locate") / "run")


@pytest.fixture
def real_folder(tmp_path):
    """A real labelled folder of 2 images (one colour, one 16-bit), larger than the model's input."""
    gen = get_generator("grains")
    (tmp_path / "real" / "images").mkdir(parents=True)
    (tmp_path / "real" / "masks").mkdir()
    a = gen.render(gen.space.sample(np.random.default_rng(1), 1)[0], 7, 96)
    Image.fromarray(np.repeat(a.image[..., None], 3, axis=2)).save(tmp_path / "real" / "images" / "a.png")
    Image.fromarray(a.mask * 255).save(tmp_path / "real" / "masks" / "a.png")
    b = gen.render(gen.space.sample(np.random.default_rng(2), 1)[0], 8, 80)
    Image.fromarray(b.image.astype(np.uint16) * 200).save(tmp_path / "real" / "images" / "b.tif")
    Image.fromarray(b.mask * 255).save(tmp_path / "real" / "masks" / "b.png")
    return tmp_path / "real"


def test_locate_trains_once_writes_the_plot_and_json(smoke_run, real_folder, tmp_path) -> None:
    result = invoke("locate", smoke_run, "--images", str(real_folder))
    assert result.exit_code == 0, result.output
    assert "grain_diameter" in result.output and "a.png" in result.output and "b.tif" in result.output
    assert "identifiable (held-out test R² >= 0.5):" in result.output
    assert "trained and saved" in result.output
    run = RunStore.open(smoke_run)
    assert run.location.exists("checkpoints", "inverse_cycle_000.safetensors")
    assert run.location.exists("checkpoints", "inverse_cycle_000.safetensors.sha256")
    with Image.open(f"{smoke_run}/reports/locate_cycle_000/locate.png") as plot:
        assert plot.width > 600 and plot.height > 400

    # Second time: the checkpoint is loaded, not trained again; --json is one JSON object.
    out = tmp_path / "out"
    result = invoke("locate", smoke_run, "--images", str(real_folder / "images"), "--json", "--out", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["trained"] is False and report["cycle"] == 0 and report["n_images"] == 2
    assert report["r2_split"] == "test" and report["input_size"] == 64 and report["members"] == 3
    # the feature model, on the 16 stored train samples and 10 fresh renders per stored sample
    assert report["model"] == "features-mlp" and report["n_rendered"] == 160 and report["n_train"] == 176
    assert [r["name"] for r in report["images"]] == ["a.png", "b.tif"]
    names = [d["name"] for d in report["dimensions"]]
    assert "grain_diameter" in names and "mean_grey" in names
    space = RunStore.open(smoke_run).space
    for row in report["images"]:
        for name, e in row["estimates"].items():
            dim = space[name]
            assert dim.low <= e["value"] <= dim.high and e["spread"] >= 0 and e["low"] <= e["high"]
    assert set(report["identifiable"]) <= set(names)
    assert (out / "locate.png").exists() and json.loads((out / "locate.json").read_text())["n_images"] == 2

    # A run made before the inverse model was saved as .safetensors: its .pt file is read, not retrained.
    checkpoints = Path(smoke_run) / "checkpoints"
    for suffix in ("", ".sha256"):
        os.replace(checkpoints / f"inverse_cycle_000.safetensors{suffix}", checkpoints / f"inverse_cycle_000.pt{suffix}")
    try:
        result = invoke("locate", smoke_run, "--images", str(real_folder / "images"), "--json", "--out", str(out))
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["trained"] is False
        assert not (checkpoints / "inverse_cycle_000.safetensors").exists()
    finally:
        for suffix in ("", ".sha256"):
            os.replace(checkpoints / f"inverse_cycle_000.pt{suffix}", checkpoints / f"inverse_cycle_000.safetensors{suffix}")


def test_many_images_are_summarised_per_dimension(smoke_run, real_folder, tmp_path) -> None:
    many = tmp_path / "many"
    many.mkdir()
    for k in range(5):  # more than a column each would fit
        shutil.copy(real_folder / "images" / "a.png", many / f"m{k}.png")
    result = invoke("locate", smoke_run, "--images", str(many), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "median" in result.output and "10–90 %" in result.output and "m0.png" not in result.output
    report = json.loads((tmp_path / "out" / "locate.json").read_text())
    value = report["images"][0]["estimates"]["grain_diameter"]["value"]  # five copies: one estimate
    row = next(line for line in result.output.splitlines() if line.startswith("│ grain_diameter"))
    assert row.count(f"{value:.4g}") == 3  # median, and both ends of the 10-90 % range


def test_fresh_renders_are_the_runs_own_and_seeded(smoke_run) -> None:
    """Renders for the inverse model: the run's space and generator, the same for the same run."""
    from loop.run.inverse_renders import render_for_inverse, run_seed
    from loop.train.inverse import target_dims

    store = RunStore.open(smoke_run)
    dims = target_dims(store.space)
    images, targets = render_for_inverse(store, 3, 48, dims)
    again, same = render_for_inverse(store, 3, 48, dims)
    assert images.shape == (3, 48, 48) and images.dtype == np.uint8 and targets.shape == (3, len(dims))
    assert np.array_equal(images, again) and np.array_equal(targets, same)
    assert ((targets >= 0) & (targets <= 1)).all() and run_seed(store) == 1
    assert render_for_inverse(store, 0, 48, dims)[0].shape == (0, 48, 48)
    # The targets are the parameters as the 48 px renders show them: diameters and thicknesses capped.
    from generators import get_generator
    from generators.base import rendered_params
    from loop.run.inverse_renders import RENDER_STREAM

    params = store.space.sample(np.random.default_rng([run_seed(store), RENDER_STREAM]), 3)
    shown = [rendered_params(get_generator("grains"), p, 48) for p in params]
    expected = np.clip(store.space.to_unit(shown)[:, [store.space.names.index(d) for d in dims]], 0, 1)
    np.testing.assert_array_equal(targets, expected)


def _error_line(args: list[str]) -> str:
    # In process (the CLI's error boundary is the same); a subprocess per case re-imports torch.
    result = invoke(*args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("loop: error: "), result.output
    return lines[0]


def test_errors_are_one_line(smoke_run, tmp_path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no images (.png, .tif, .tiff)" in _error_line(["locate", smoke_run, "--images", str(empty)])

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"not a png")
    assert "x.png: cannot be read as an image" in _error_line(["locate", smoke_run, "--images", str(bad)])

    small = tmp_path / "small"
    small.mkdir()
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(small / "s.png")
    line = _error_line(["locate", smoke_run, "--images", str(small)])
    assert "s.png: 50×40 px is smaller than the inverse model's input of 64×64 px" in line

    assert "not a run" in _error_line(["locate", str(tmp_path / "nope"), "--images", str(small)])

    gen = get_generator("grains")
    RunStore.create(tmp_path / "bare", generator_name=gen.name, generator_version=gen.version, task=gen.task,
                    space=gen.space, config={"policy": "random", "seed": 1})
    assert "has no samples" in _error_line(["locate", str(tmp_path / "bare"), "--images", str(small)])
