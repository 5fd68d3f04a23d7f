"""``loop experiment cracks``: splits, statistics, crack classifier training, the command end to end."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from generators.cracks import CrackGenerator
from loop.cli import main
from loop.config.training import Stage, get_preset
from loop.evaluate.scoring import evaluate_view
from loop.study.crack_experiment import (
    MODELS,
    ExperimentConfig,
    ExperimentError,
    base_schedule,
    seed_data,
    table1_summary,
    synthetic_view,
)
from loop.study.crack_tiles import PARTS, load_tiles
from loop.train.data import ArrayView
from loop.train.model import build_model
from loop.study.statistics import agresti_coull_interval, paired_t_test, t_interval
from loop.train.fit import train

EASY = {"crack_probability": 0.5, "segments_mean": 2.0, "segment_length": 0.3, "length_spread": 0.1,
        "bend_sigma": 20.0, "width": 0.04, "width_variation": 0.1, "roughness": 0.0, "centre_spread": 0.6,
        "intensity": 0.45,
        "texture": "gravel", "texture_scale": 1.0, "texture_mean": 0.6, "texture_contrast": 0.05,
        "shading": 0.0, "noise_sigma": 0.0, "blur_sigma": 0.0}


def write_real_folder(folder: Path, n_crack: int, n_clean: int, size: int = 64,
                      names: list[str] | None = None) -> Path:
    """A stand-in for a real crack folder: generated images, masks 0/255 (empty = no crack)."""
    gen = CrackGenerator()
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    names = names or [f"t{i:02d}" for i in range(n_crack + n_clean)]
    for i, name in enumerate(names):
        sample = gen.render({**EASY, "crack_probability": float(i < n_crack)}, i, size)
        Image.fromarray(sample.image).save(folder / "images" / f"{name}.png")
        Image.fromarray(sample.mask * 255).save(folder / "masks" / f"{name}.png")
    return folder


def test_seed_data_splits_by_group_balances_and_is_seeded(tmp_path) -> None:
    # Three exposures of each of 12 objects (4 cracked): the capture rule groups them.
    names = [f"s_exp{e}_num_{10_000 * k + 20 * e}" for k in range(12) for e in (1, 2, 3)]
    order = sorted(range(len(names)), key=lambda i: i // 3 >= 4)  # crack objects first
    real = write_real_folder(tmp_path / "real", n_crack=12, n_clean=24, names=[names[i] for i in order])
    tiles = load_tiles(real, 64)
    assert tiles.counts()["groups"] == 12 and tiles.counts()["crack_groups"] == 4
    config = ExperimentConfig(real_dir=str(real), preset="smoke")
    for seed in range(1, 40):
        data = seed_data(config, tiles, seed)
        sides = [set(tiles.group[data.split[p]].tolist()) for p in PARTS]
        assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
        for name in ("val", "test", "all"):
            labels = tiles.kind[data.evaluation[name]]
            assert labels.sum() * 2 == len(labels) > 0  # even classes in every evaluation set
        assert set(data.evaluation["test"].tolist()) <= set(data.split["test"].tolist())
        assert set(data.train.tolist()) <= set(data.split["train"].tolist())
        train_labels = tiles.kind[data.train]
        assert train_labels.sum() * 2 == len(train_labels)  # balanced by sampling
    again = seed_data(config, tiles, 1)
    assert np.array_equal(again.train, seed_data(config, tiles, 1).train)
    assert not np.array_equal(again.split["train"], seed_data(config, tiles, 2).split["train"]) or \
        not np.array_equal(again.train, seed_data(config, tiles, 2).train)


def test_every_stage_trains_at_the_tile_size() -> None:
    """No progressive resizing on tiles: shrinking a tile would thin its crack."""
    for preset, tile, size in (("cpu", None, 64), ("cpu", 128, 128), ("paper", None, 128), ("smoke", 96, 96)):
        _, schedule = base_schedule(ExperimentConfig(real_dir="x", preset=preset, tile_size=tile))
        assert {s.size for s in schedule.stages} == {size}
        assert [s.freeze_encoder for s in schedule.stages] == [True, False]  # the preset's head, then all layers


def test_bad_config() -> None:
    with pytest.raises(ExperimentError, match="fractions: expected three positive"):
        ExperimentConfig(real_dir="x", fractions=(0.5, 0.5))
    with pytest.raises(ValueError, match="preset: expected one of"):
        ExperimentConfig(real_dir="x", preset="huge")
    with pytest.raises(ExperimentError, match="exemplars: expected 'real', 'default' or a folder .*'/no/such'"):
        ExperimentConfig(real_dir="x", exemplars="/no/such")
    with pytest.raises(ExperimentError, match="space: expected 'fit', 'default' or a space file .*'nope.toml'"):
        ExperimentConfig(real_dir="x", space="nope.toml")
    with pytest.raises(ExperimentError, match="tile_size: expected a multiple of 32 px >= 32"):
        ExperimentConfig(real_dir="x", tile_size=100)
    with pytest.raises(ExperimentError, match="tile_stride: expected at most the tile size 64, got 200"):
        ExperimentConfig(real_dir="x", tile_stride=200)
    with pytest.raises(ExperimentError, match="min_crack_px: expected an integer >= 1"):
        ExperimentConfig(real_dir="x", min_crack_px=0)
    assert ExperimentConfig(real_dir="x").input_size == 64
    assert ExperimentConfig(real_dir="x", preset="paper").input_size == 128
    assert ExperimentConfig(real_dir="x", preset="smoke").input_size == 64
    assert ExperimentConfig(real_dir="x", tile_size=128).input_size == 128


def test_summary_uses_the_compare_statistics() -> None:
    rows = []
    for seed, (s, r, m) in enumerate([(0.5, 0.25, 0.25), (0.25, 0.5, 0.25), (0.75, 0.5, 0.0)], start=1):
        rates = {"synthetic": s, "real": r, "mixed": m}
        rows.append({"seed": seed, "n": {"test": 4, "all": 8},
                     "errors": {k: {"test": int(v * 4), "all": int(v * 8)} for k, v in rates.items()},
                     "error_rate": {k: {"test": v, "all": v} for k, v in rates.items()},
                     "synthetic_val_error_rate": 0.1})
    table = table1_summary(rows)
    cell = table["test"]["real"]
    assert cell["error_mean"] == pytest.approx(5 / 12)
    assert cell["error_sd"] == pytest.approx(np.std([0.25, 0.5, 0.5], ddof=1))
    assert (cell["ci_low"], cell["ci_high"]) == pytest.approx(agresti_coull_interval([0.25, 0.5, 0.5]))
    assert (cell["ci_pooled_low"], cell["ci_pooled_high"]) == pytest.approx(
        agresti_coull_interval([5 / 12], nobs=12))
    assert (cell["t_ci_low"], cell["t_ci_high"]) == pytest.approx(t_interval([0.25, 0.5, 0.5]))
    p_real_mixed = paired_t_test([0.25, 0.5, 0.5], [0.25, 0.25, 0.0]).p_value
    p_synthetic_real = paired_t_test([0.5, 0.25, 0.75], [0.25, 0.5, 0.5]).p_value
    assert table["test"]["real_vs_mixed"]["p_value"] == pytest.approx(p_real_mixed)
    assert table["test"]["synthetic_vs_real"]["p_value"] == pytest.approx(p_synthetic_real)
    # Holm over the two tests of an evaluation set.
    low, high = sorted([p_real_mixed, p_synthetic_real])
    holm = {low: min(1.0, 2 * low), high: min(1.0, max(2 * low, high))}
    assert table["test"]["real_vs_mixed"]["p_holm"] == pytest.approx(holm[p_real_mixed])
    assert table["test"]["synthetic_vs_real"]["p_holm"] == pytest.approx(holm[p_synthetic_real])
    assert table["n_seeds"] == 3 and set(MODELS) <= set(table["all"])


def test_classifier_training_on_crack_images_lowers_the_loss() -> None:
    gen = CrackGenerator(space=None)
    rows = [{**EASY, "crack_probability": float(i % 2)} for i in range(48)]
    seeds = range(48)
    samples = [gen.render(p, s, 64) for p, s in zip(rows, seeds)]
    view = ArrayView(np.stack([s.image for s in samples]), [s.label for s in samples])
    preset = get_preset("smoke", task="classification")
    cfg = dataclasses.replace(preset.train, stages=(Stage(size=64, epochs=6, freeze_encoder=False, lr_max=2e-3,
                                                          batch_size=8),), seed=3)
    before = evaluate_view(build_model(preset.model, seed=3), view, task="classification")
    result = train(view, cfg, preset.model, device="cpu")
    after = evaluate_view(result.model, view, task="classification")
    loss_before = float(np.mean(before.column("loss").to_numpy()))
    loss_after = float(np.mean(after.column("loss").to_numpy()))
    assert loss_after < 0.8 * loss_before, (loss_before, loss_after)
    assert result.epoch_losses[-1] < result.epoch_losses[0]


def test_synthetic_view_is_reproducible() -> None:
    gen = CrackGenerator()
    a, b = synthetic_view(gen, 6, 32, seed=4), synthetic_view(gen, 6, 32, seed=4)
    assert a.images.tobytes() == b.images.tobytes() and a.labels.tolist() == b.labels.tolist()
    c = synthetic_view(gen, 6, 32, seed=4, first_id=6)
    assert c.sample_ids.tolist() == list(range(6, 12)) and not np.array_equal(a.images, c.images)


def run_cli(*args: str):
    return CliRunner().invoke(main, list(args))


def test_experiment_command_end_to_end(tmp_path) -> None:
    # 96 px images cut into 64 px tiles (the smoke preset's input): four overlapping tiles each.
    real = write_real_folder(tmp_path / "real", n_crack=8, n_clean=10, size=96)
    out = tmp_path / "out"
    args = ["experiment", "cracks", "--real", str(real), "--seeds", "2", "--preset", "smoke", "--n-synthetic", "16",
            "--real-epochs", "1", "--out", str(out)]
    result = run_cli(*args, "--json")
    assert result.exit_code == 0, result.output
    table = json.loads(result.output)
    assert table["n_seeds"] == 2 and table["seeds"] == [1, 2]
    for where in ("test", "all"):
        for model in MODELS:
            cell = table[where][model]
            assert 0.0 <= cell["ci_low"] <= cell["error_mean"] <= cell["ci_high"] <= 1.0
        assert "p_value" in table[where]["real_vs_mixed"] and "p_holm" in table[where]["synthetic_vs_real"]
    assert table["tiles"]["no_crack"] == 40 and table["tiles"]["groups"] == 18  # one group per image (names t00..)
    seed1 = json.loads((out / "seed_001.json").read_text())
    tiles = load_tiles(real, 64)
    assert seed1["n"]["all"] == 2 * tiles.counts()["crack"] and seed1["n_crack"]["all"] == tiles.counts()["crack"]
    assert seed1["n"]["test"] == 2 * seed1["n_crack"]["test"] > 0
    assert seed1["n_train"] == 2 * seed1["n_train_crack"]
    for stages in seed1["schedules"].values():
        assert all(s["batch_size"] <= seed1["n_train"] for s in stages)
    assert all("real training split" in e for e in seed1["generator"]["exemplars"])  # textures from real tiles
    split = json.loads((out / "split_001.json").read_text())
    placed = [name for part in split["parts"].values() for group in part["groups"] for name in group]
    assert len(placed) == len(set(placed))  # every image (group) in one part only
    assert {t.split("@")[0] for t in split["evaluated"]["test"]} <= {n for g in split["parts"]["test"]["groups"]
                                                                     for n in g}
    assert not list(out.glob("*.safetensors*"))  # the synthetic model, fine-tuned from, is removed
    assert (out / "table1.md").read_text().startswith("| | | synthetic model | real model | mixed model |")

    again = run_cli(*args)
    assert again.exit_code == 0, again.output
    assert "seed 1: done before" in again.output and "synthetic model" in again.output

    changed = run_cli(*args[:-2], "--out", str(out), "--n-synthetic", "20")
    assert changed.exit_code == 1
    assert changed.output.strip().splitlines() == [
        f"loop: error: output folder {out}: holds an experiment with another configuration (differs in n_synthetic); "
        "use another --out"]


def test_experiment_needs_both_classes(tmp_path) -> None:
    real = write_real_folder(tmp_path / "real", n_crack=0, n_clean=4)
    result = run_cli("experiment", "cracks", "--real", str(real), "--seeds", "1", "--preset", "smoke",
                     "--out", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"loop: error: {real}: every mask is empty: no crack to learn from (a crack tile needs a mask with >= 20 "
        "crack pixels in it)"]


@pytest.mark.slow
def test_experiment_on_a_few_shared_real_cracks(shared_data, tmp_path) -> None:
    source = shared_data / "cracks"
    names = sorted(p.name for p in (source / "masks").iterdir())
    crack = [n for n in names if np.asarray(Image.open(source / "masks" / n)).any()][:8]
    clean = [n for n in names if n not in crack][:8]
    real = tmp_path / "real"
    for sub in ("images", "masks"):
        (real / sub).mkdir(parents=True)
        for n in crack + clean:
            shutil.copy(source / sub / n, real / sub / n)
    result = run_cli("experiment", "cracks", "--real", str(real), "--seeds", "2", "--preset", "smoke",
                     "--n-synthetic", "32", "--out", str(tmp_path / "out"), "--json")
    assert result.exit_code == 0, result.output
    table = json.loads(result.output)
    n_crack = load_tiles(real, 64).counts()["crack"]
    assert table["all"]["mixed"]["n_classifications"] == 2 * 2 * n_crack  # two seeds of balanced tiles
    assert table["tiles"]["group_rule"].startswith("capture")
