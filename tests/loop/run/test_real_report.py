"""``loop evaluate``'s report: scores and overlays written into the run, under the run lock."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from loop.config.run import RunConfig
from loop.errors import InputError
from loop.run.lifecycle import start_run
from loop.run.lock import RunLock, RunLockedError
from loop.run.names import checkpoint_cycle, checkpoint_cycles
from loop.run.real_report import pick_checkpoint, score_real
from stores import RunStore


@pytest.fixture(scope="module")
def trained_run(ray_local, tmp_path_factory) -> str:
    run = str(tmp_path_factory.mktemp("real_report") / "run")
    config = RunConfig.for_preset("smoke", cycles=0, n_train=8, n_val=4, n_test=0, size=64, batch_size=4, workers=1)
    start_run(run, config, say=lambda line: None)
    return run


@pytest.fixture
def real_folder(tmp_path):
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (tmp_path / "real" / sub).mkdir(parents=True)
    for name in ("a", "b"):
        mask = np.zeros((80, 96), np.uint8)
        mask[40, :] = mask[:, 48] = 255
        image = np.where(mask > 0, 40, 180).astype(np.uint8) + rng.integers(0, 10, mask.shape, dtype=np.uint8)
        Image.fromarray(image).save(tmp_path / "real" / "images" / f"{name}.png")
        Image.fromarray(mask).save(tmp_path / "real" / "masks" / f"{name}.png")
    return str(tmp_path / "real")


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
