"""Stage checkpoints: a training killed mid-way resumes to the same weights as one never killed."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from loop.bench.train import synthetic_view
from loop.config.training import Stage, get_preset
from loop.train.checkpoints import load_checkpoint
from loop.train.fit import training_identity, effective_stages, train
from loop.train.stage_checkpoints import (
    StagePoint,
    from_plain,
    load_stage_checkpoint,
    remove_stage_checkpoint,
    save_stage_checkpoint,
    to_plain,
)

SMOKE = get_preset("smoke")
# Three steps an epoch; a head stage, then two epochs of all layers: kills land within an
# epoch, between epochs and between stages.
STAGES = (Stage(size=32, epochs=1, freeze_encoder=True, lr_max=3e-3, batch_size=4),
          Stage(size=32, epochs=2, freeze_encoder=False, lr_max=1e-3, batch_size=4))
CFG = dataclasses.replace(SMOKE.train, stages=STAGES, deterministic=True, seed=11)


class Killed(Exception):
    """Stands in for the trainer process dying."""


@pytest.fixture(scope="module")
def view():
    return synthetic_view({"task": "segmentation", "n": 12, "size": 32, "seed": 0})


@pytest.fixture(scope="module")
def uninterrupted(view):
    return train(view, CFG, SMOKE.model, device="cpu")


def _kill_at(stage: int, epoch: int, step: int):
    def progress(event):
        if (event["stage"], event["epoch"], event["step"]) == (stage, epoch, step):
            raise Killed()
    return progress


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> list[str]:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    return [k for k in sa if not torch.equal(sa[k], sb[k])]


@pytest.mark.parametrize("every_min, kill, resumed_at", [
    (0.0, (1, 0, 1), [1, 0, 0]),    # stage ends only: killed in stage 1, back to its start
    (1e-9, (1, 1, 1), [1, 1, 1]),   # one after every step: back to the step before, in the stage's 2nd epoch
])
def test_a_killed_training_resumes_to_the_same_weights(view, uninterrupted, tmp_path, every_min, kill, resumed_at):
    cfg = dataclasses.replace(CFG, stage_checkpoint_every_min=every_min)
    uri = str(tmp_path / "cycle_001.stage.safetensors")
    out = str(tmp_path / "cycle_001.safetensors")
    with pytest.raises(Killed):
        train(view, cfg, SMOKE.model, device="cpu", out=out, stage_checkpoint=uri, progress=_kill_at(*kill),
              progress_every_s=0)
    _, meta = load_checkpoint(uri)
    assert meta["kind"] == "stage" and meta["position"] == resumed_at
    assert ("optimizer" in meta) == (resumed_at[1:] != [0, 0])
    events = []
    resumed = train(view, cfg, SMOKE.model, device="cpu", out=out, stage_checkpoint=uri, progress=events.append)
    assert resumed.resumed_at == resumed_at and uninterrupted.resumed_at is None
    different = _same_weights(uninterrupted.model, resumed.model)
    print(f"resumed at {resumed_at}: {len(resumed.model.state_dict())} tensors, {len(different)} differ")
    assert different == []
    assert resumed.step_losses == uninterrupted.step_losses
    assert resumed.epoch_losses == uninterrupted.epoch_losses and resumed.epoch_stage == uninterrupted.epoch_stage
    assert resumed.n_images == uninterrupted.n_images
    # Only the epochs after the resume point are reported, and the schedule ends complete.
    assert [(e["stage"], e["epoch"]) for e in events][-1] == (1, 1) and events[-1]["fraction"] == 1
    assert remove_stage_checkpoint(uri) and not remove_stage_checkpoint(uri)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cycle_001.safetensors", "cycle_001.safetensors.sha256"]


def test_a_stage_checkpoint_of_another_training_or_damaged_is_not_used(view, tmp_path, caplog):
    uri = str(tmp_path / "s.safetensors")
    identity = training_identity(view, CFG, SMOKE.model, None, effective_stages(CFG, random_encoder=True))
    point = StagePoint(stage=1, epoch=0, step=0, model_state=torch.nn.Linear(2, 1).state_dict(),
                       stats={"epoch_losses": [0.5]}, torch_rng=torch.get_rng_state())
    save_stage_checkpoint(uri, point, identity)
    back = load_stage_checkpoint(uri, identity)
    assert (back.stage, back.epoch, back.step, back.optimizer, back.sampler_rng) == (1, 0, 0, None, None)
    assert torch.equal(back.torch_rng, point.torch_rng) and back.stats == {"epoch_losses": [0.5]}
    # The interval is not part of what is trained; the seed is.
    later = dataclasses.replace(CFG, stage_checkpoint_every_min=3.0)
    assert load_stage_checkpoint(uri, training_identity(view, later, SMOKE.model, None, later.stages)) is not None
    other = dataclasses.replace(CFG, seed=12)
    assert load_stage_checkpoint(uri, training_identity(view, other, SMOKE.model, None, other.stages)) is None
    assert "of another training" in caplog.text
    (tmp_path / "s.safetensors.sha256").write_text("0" * 64 + "  s.safetensors\n")  # killed between the two files
    assert load_stage_checkpoint(uri, identity) is None and "not usable" in caplog.text
    assert load_stage_checkpoint(str(tmp_path / "none.safetensors"), identity) is None


def test_optimizer_state_round_trips_through_plain_values():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    state = optimizer.state_dict()
    again = from_plain(to_plain(state))
    assert again["param_groups"][0]["betas"] == (0.9, 0.99) and set(again["state"]) == {0, 1}
    assert torch.equal(again["state"][1]["exp_avg"], state["state"][1]["exp_avg"])
    assert to_plain({"a": (1, 2)}) == {"a": {"__tuple__": [1, 2]}}
