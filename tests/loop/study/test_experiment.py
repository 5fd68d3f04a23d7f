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
    balanced_indices,
    stratified_split,
    table1_summary,
    synthetic_view,
)
from loop.train.data import ArrayView
from loop.train.model import build_model
from loop.study.statistics import agresti_coull_interval, paired_t_test
from loop.train.fit import train

EASY = {"crack_probability": 0.5, "segments_mean": 2.0, "segment_length": 0.3, "length_spread": 0.1,
        "bend_sigma": 20.0, "width": 0.04, "width_variation": 0.1, "roughness": 0.0, "intensity": 0.45,
        "texture": "gravel", "texture_scale": 1.0, "texture_mean": 0.6, "texture_contrast": 0.05,
        "shading": 0.0, "noise_sigma": 0.0, "blur_sigma": 0.0}


def write_real_folder(folder: Path, n_crack: int, n_clean: int, size: int = 96) -> Path:
    """A stand-in for a real crack folder: generated images, masks 0/255 (empty = no crack)."""
    gen = CrackGenerator()
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for i in range(n_crack + n_clean):
        sample = gen.render({**EASY, "crack_probability": float(i < n_crack)}, i, size)
        Image.fromarray(sample.image).save(folder / "images" / f"t{i:02d}.png")
        Image.fromarray(sample.mask * 255).save(folder / "masks" / f"t{i:02d}.png")
    return folder


def test_balanced_stratified_splits() -> None:
    labels = np.array([1] * 10 + [0] * 50)
    rng = np.random.default_rng(0)
    chosen = balanced_indices(labels, rng)
    assert len(chosen) == 20 and labels[chosen].sum() == 10
    split = stratified_split(chosen, labels, (0.7, 0.175, 0.125), rng)
    assert sorted(np.concatenate(list(split.values())).tolist()) == chosen.tolist()
    assert [len(split[k]) for k in ("train", "val", "test")] == [14, 4, 2]
    for part in split.values():
        assert labels[part].sum() * 2 == len(part)  # even classes in every part
    again = stratified_split(chosen, labels, (0.7, 0.175, 0.125), np.random.default_rng(0))
    other = stratified_split(chosen, labels, (0.7, 0.175, 0.125), np.random.default_rng(1))
    assert not all(np.array_equal(again[k], other[k]) for k in again)


def test_bad_config() -> None:
    with pytest.raises(ExperimentError, match="fractions: expected three positive"):
        ExperimentConfig(real_dir="x", fractions=(0.5, 0.5))
    with pytest.raises(ValueError, match="preset: expected one of"):
        ExperimentConfig(real_dir="x", preset="huge")
    with pytest.raises(ExperimentError, match="exemplars: expected 'real', 'default' or a folder .*'/no/such'"):
        ExperimentConfig(real_dir="x", exemplars="/no/such")
    with pytest.raises(ExperimentError, match="space: expected 'fit', 'default' or a space file .*'nope.toml'"):
        ExperimentConfig(real_dir="x", space="nope.toml")


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
    assert table["test"]["real_vs_mixed"]["p_value"] == pytest.approx(
        paired_t_test([0.25, 0.5, 0.5], [0.25, 0.25, 0.0]).p_value)
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
    real = write_real_folder(tmp_path / "real", n_crack=8, n_clean=10)
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
        assert "p_value" in table[where]["real_vs_mixed"]
    seed1 = json.loads((out / "seed_001.json").read_text())
    assert seed1["n"] == {"train": 12, "val": 2, "test": 2, "all": 16}
    assert seed1["n_crack"]["all"] == 8
    assert all(e.startswith("t") for e in seed1["generator"]["exemplars"])  # textures from the real no-crack images
    assert not list(out.glob("*.pt"))
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
    assert "needs images with and without a crack" in result.output


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
    assert table["all"]["mixed"]["n_classifications"] == 32
