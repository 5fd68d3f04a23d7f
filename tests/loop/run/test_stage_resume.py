"""A cycle whose training died resumes from its stage checkpoint when the driver redoes it
(issue 17, item 3): the same checkpoint as a training never stopped, and no stage checkpoint
left once the cycle's ``trained`` event is journaled."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch

import loop.train.fit as fit
from loop.config.run import RunConfig
from loop.config.training import Stage, get_preset
from loop.run.adding import add_random_samples
from loop.run.driver import CycleDriver
from loop.run.journal import Journal
from loop.run.trainer_actor import Trainer
from loop.train.checkpoints import load_checkpoint
from stores import RunStore

STAGES = (Stage(size=32, epochs=1, freeze_encoder=True, lr_max=3e-3, batch_size=4),
          Stage(size=32, epochs=1, freeze_encoder=False, lr_max=1e-3, batch_size=4))


class Killed(Exception):
    """Stands in for the trainer dying."""


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> str:
    """A run with cycle 0's samples generated and nothing trained."""
    run = str(tmp_path_factory.mktemp("stage_resume") / "run")
    add_random_samples(run, "grains", 8, size=32, seed=1, batch_size=4)
    store = add_random_samples(run, "grains", 2, size=32, seed=2, batch_size=2, split="val")
    Journal(store.path("journal.jsonl")).append("generated", cycle=0, samples=10, wall_s=0.0)
    return run


def _driver(run: str, lines: list[str]) -> CycleDriver:
    smoke = get_preset("smoke")
    preset = dataclasses.replace(smoke, train=dataclasses.replace(smoke.train, stages=STAGES, deterministic=True))
    store = RunStore.open(run)
    return CycleDriver(store, Journal(store.path("journal.jsonl")), RunConfig.for_preset("smoke", cycles=0, size=32),
                       preset, trainer=Trainer(num_threads=2), evaluator=None, workers=1, remote=False,
                       say=lines.append)


def test_a_training_killed_after_its_first_stage_resumes_to_the_same_checkpoint(generated, tmp_path,
                                                                                 monkeypatch) -> None:
    reference, killed = str(tmp_path / "reference"), str(tmp_path / "killed")
    shutil.copytree(generated, reference)
    shutil.copytree(generated, killed)
    _driver(reference, [])._train(0)

    save = fit._StageSaver.save

    def save_then_die(self, point):
        save(self, point)
        raise Killed()  # the trainer dies right after stage 0's checkpoint

    monkeypatch.setattr(fit._StageSaver, "save", save_then_die)
    with pytest.raises(Killed):
        _driver(killed, [])._train(0)
    monkeypatch.undo()
    folder = tmp_path / "killed" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["cycle_000.stage.safetensors",
                                                        "cycle_000.stage.safetensors.sha256"]

    lines: list[str] = []
    driver = _driver(killed, lines)  # `loop resume`: a new driver redoes the unfinished training
    driver._train(0)
    assert "  train: resumed from its stage checkpoint (stage 1, epoch 0, step 0)" in lines
    trained = driver.journal.find("trained", cycle=0)
    assert trained["checkpoint"] == "cycle_000.safetensors" and trained["resumed_at"] == [1, 0, 0]
    assert sorted(p.name for p in folder.iterdir()) == ["cycle_000.safetensors", "cycle_000.safetensors.sha256"]
    got, _ = load_checkpoint(str(folder / "cycle_000.safetensors"), digest=trained["digest"])
    want, _ = load_checkpoint(str(tmp_path / "reference" / "checkpoints" / "cycle_000.safetensors"))
    differ = [k for k in want if not torch.equal(got[k], want[k])]
    print(f"driver resume: {len(want)} tensors compared, {len(differ)} differ")
    assert list(got) == list(want) and differ == []
