"""``loop evaluate``'s report: scores and overlays written into the run, under the run lock."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from loop.config.run import RunConfig, run_config_from
from loop.errors import InputError
from loop.run.lifecycle import start_run
from loop.run.lock import RunLock, RunLockedError
from loop.run.names import checkpoint_cycle, checkpoint_cycles
from loop.run.real_report import pick_checkpoint, score_real
from stores import RunStore


def _write_real_folder(root) -> str:
    """Two 80 × 96 px labelled images (larger than a smoke model's 64 px tile): two dark lines on grey."""
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for name in ("a", "b"):
        mask = np.zeros((80, 96), np.uint8)
        mask[40, :] = mask[:, 48] = 255
        image = np.where(mask > 0, 40, 180).astype(np.uint8) + rng.integers(0, 10, mask.shape, dtype=np.uint8)
        Image.fromarray(image).save(root / "images" / f"{name}.png")
        Image.fromarray(mask).save(root / "masks" / f"{name}.png")
    return str(root)


@pytest.fixture(scope="module")
def trained_run(ray_local, tmp_path_factory) -> str:
    """A smoke run (64 px training, so 64 px real tiles) that scored a real folder at cycle 0."""
    tmp = tmp_path_factory.mktemp("real_report")
    real = _write_real_folder(tmp / "real")
    config = RunConfig.for_preset("smoke", cycles=0, n_train=8, n_val=4, n_test=0, size=64, batch_size=4, workers=1,
                                  real=(f"lab={real}",))
    start_run(str(tmp / "run"), config, say=lambda line: None)
    return str(tmp / "run")


@pytest.fixture
def real_folder(tmp_path):
    return _write_real_folder(tmp_path / "real")


def test_checkpoint_names_parse_for_any_cycle_number() -> None:
    assert checkpoint_cycle("cycle_000.pt") == 0 and checkpoint_cycle("cycle_1000.pt") == 1000
    assert checkpoint_cycle("cycle_12345.pt") == 12345
    assert checkpoint_cycle("cycle_001.pt.sha256") is None and checkpoint_cycle("cycle_001.pt.tmp-x") is None
    assert checkpoint_cycle("cycle_007.safetensors") == 7 and checkpoint_cycle("cycle_007.stage.safetensors") is None


def test_scores_and_overlays_land_in_the_run(trained_run, real_folder) -> None:
    result, folder = score_real(trained_run, real_folder, tile=64, overlap=16)
    assert result["cycle"] == 0 and result["n_images"] == 2 and folder.endswith("reports/real_cycle_000")
    store = RunStore.open(trained_run)
    written = set(store.location.listdir("reports", "real_cycle_000"))
    assert {"scores.json", "a.png", "b.png"} <= written
    saved = json.loads(store.location.read_bytes("reports/real_cycle_000/scores.json"))
    assert saved["miou"] == pytest.approx(result["miou"]) and [r["name"] for r in saved["images"]] == ["a", "b"]


def test_a_missing_checkpoint_is_named(trained_run) -> None:
    store = RunStore.open(trained_run)
    assert checkpoint_cycles(store) == [0] and pick_checkpoint(store, None) == 0
    with pytest.raises(InputError, match=r"--checkpoint 3: run .* has checkpoints of cycles \[0\]"):
        pick_checkpoint(store, 3)
    with pytest.raises(InputError, match=r"--checkpoint best: run .* has no finished cycle scored on real validation"):
        pick_checkpoint(store, "best")  # a run without --real-val has no best there


def test_evaluate_names_a_bad_checkpoint_value(trained_run, real_folder) -> None:
    from click.testing import CliRunner

    from loop.cli import main

    result = CliRunner().invoke(main, ["evaluate", trained_run, "--real", real_folder, "--checkpoint", "last"])
    assert result.exit_code == 2
    assert "expected a cycle number >= 0 or 'best', got 'last'" in result.output


def test_evaluate_refuses_a_run_whose_lock_is_held(trained_run, real_folder) -> None:
    with RunLock(trained_run, what="a driver"):
        with pytest.raises(RunLockedError, match="a driver"):
            score_real(trained_run, real_folder, tile=64, overlap=16)


def test_a_checkpoint_replaced_with_its_digest_is_refused(trained_run, real_folder, tmp_path) -> None:
    import shutil

    from loop.train.checkpoints import CheckpointError, load_checkpoint, save_checkpoint

    run = str(tmp_path / "copy")
    shutil.copytree(trained_run, run)
    uri = RunStore.open(run).path("checkpoints", "cycle_000.safetensors")
    state, meta = load_checkpoint(uri)
    state = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}
    save_checkpoint(uri, state, meta)  # a new checkpoint and a matching .sha256
    with pytest.raises(CheckpointError, match="journal's trained event of cycle 0"):
        score_real(run, real_folder, tile=64, overlap=16)


def test_evaluate_tiles_real_images_as_the_run_did_unless_told_otherwise(trained_run, real_folder, tmp_path) -> None:
    import shutil
    import tomllib

    import tomli_w

    from loop.run.journal import Journal
    from loop.run.lifecycle import run_status

    store = RunStore.open(trained_run)
    assert run_config_from(store.config["run"]).real_tile == 64  # the smoke preset trains at 64 px
    event = Journal(store.path("journal.jsonl")).find("real_evaluated", cycle=0)
    assert event["tile"] == 64
    # `loop evaluate` with no --tile scores as the loop did: the same numbers as the run's own real scores.
    in_loop = run_status(trained_run)["cycles"][0]["real"]
    result, _ = score_real(trained_run, run_config_from(store.config["run"]).real[0][1])
    assert (result["tile"], result["overlap"]) == (64, 16)
    assert result["miou"] == pytest.approx(in_loop["miou"]) and result["error"] == pytest.approx(in_loop["error"])
    assert score_real(trained_run, real_folder, tile=96)[0]["overlap"] == 24  # a quarter of the tile given
    assert score_real(trained_run, real_folder, tile=96, overlap=8)[0]["overlap"] == 8
    # A run made before runs chose their tile was scored in 256 px tiles, and `loop evaluate` still is.
    old = tmp_path / "old"
    shutil.copytree(trained_run, old)
    data = tomllib.loads((old / "run.toml").read_text())
    del data["config"]["run"]["real_tile"]
    (old / "run.toml").write_text(tomli_w.dumps(data))
    assert score_real(str(old), real_folder)[0]["tile"] == 256


def test_evaluate_command_reports_its_tiles_and_names_a_bad_tile(trained_run, real_folder) -> None:
    from click.testing import CliRunner

    from loop.cli import main

    scored = CliRunner().invoke(main, ["evaluate", trained_run, "--real", real_folder, "--json"])
    assert scored.exit_code == 0, scored.output
    assert (json.loads(scored.output)["tile"], json.loads(scored.output)["overlap"]) == (64, 16)
    # Into a pipe or a log the table keeps every column whole (rich would squeeze it into 80 columns).
    table = CliRunner().invoke(main, ["evaluate", trained_run, "--real", real_folder])
    assert table.exit_code == 0, table.output
    assert "boundary_intercept_rel_error" in table.output and "…" not in table.output
    assert "64 px tiles overlapping 16 px" in table.output
    assert any(line.startswith("│ mean ± sd ") for line in table.output.splitlines())
    bad = CliRunner().invoke(main, ["evaluate", trained_run, "--real", real_folder, "--tile", "100"])
    assert bad.exit_code != 0 and "tile: expected a positive multiple of 32 px, got 100" in bad.output
