"""The trainer actor: resource options, in-process use, and one training call through Ray."""

from __future__ import annotations

import numpy as np
import pytest

from loop.bench.train import synthetic_view
from loop.train.checkpoints import load_checkpoint
from loop.config.training import get_preset
from loop.run.trainer_actor import Trainer, TrainerActor, follow_training, open_store_view, trainer_actor_options

SMOKE = get_preset("smoke")
SPEC = {"task": "segmentation", "n": 8, "size": 64, "seed": 0}


def test_options_ask_for_a_gpu_only_when_the_cluster_has_one():
    assert trainer_actor_options({"CPU": 2.0}) == {"num_gpus": 0, "num_cpus": 1}
    assert trainer_actor_options({"CPU": 16.0, "GPU": 1.0})["num_gpus"] == 1
    assert trainer_actor_options({"CPU": 16.0, "GPU": 0.5})["num_gpus"] == 0


def test_default_resolver_wants_a_run():
    with pytest.raises(ValueError, match="'run' URI"):
        open_store_view({"select": {}})


def test_in_process_trainer_resolves_the_spec(tmp_path):
    seen = []

    def resolver(spec):
        seen.append(spec)
        return synthetic_view(spec)

    trainer = Trainer(view_resolver=resolver, num_threads=2)
    out = str(tmp_path / "c.pt")
    result = trainer.train(SPEC, SMOKE.train.to_dict(), SMOKE.model.to_dict(), None, out)
    assert seen == [SPEC]
    assert result["n_samples"] == 8 and len(result["epoch_losses"]) == 2 and "model" not in result
    _, meta = load_checkpoint(out)
    assert meta["result"]["epoch_losses"] == result["epoch_losses"] and result["digest"]
    assert trainer.device() == "cpu"
    # The progress events of the call wait to be taken, once.
    events = trainer.progress()
    assert [(e["stage"], e["epoch"]) for e in events if e["kind"] == "epoch"] == [(0, 0), (1, 0)]
    assert trainer.progress() == []


def test_actor_trains_through_ray(ray_local, tmp_path):
    ray = ray_local
    actor = TrainerActor.options(**trainer_actor_options(ray.cluster_resources())).remote(
        view_resolver=synthetic_view, num_threads=2
    )
    try:
        out = str(tmp_path / "ray.pt")
        # A progress event after every step: the actor answers `progress` while `train` runs.
        ref = actor.train.remote(SPEC, SMOKE.train.to_dict(), SMOKE.model.to_dict(), None, out, 0.0)
        during, events = [], []
        while not ray.wait([ref], timeout=0.05)[0]:
            taken = ray.get(actor.progress.remote(), timeout=60)
            events += taken
            during += taken if not ray.wait([ref], timeout=0)[0] else []
        result = ray.get(ref)
        events += ray.get(actor.progress.remote())
        assert during, "no progress event came while training ran"
        assert [e["kind"] for e in events] == ["batch", "epoch"] * 2
        first = result["step_losses"][0]
        seen = []
        again = follow_training(actor, (SPEC, SMOKE.train.to_dict(), SMOKE.model.to_dict(), out, None), seen.append,
                                poll_s=0.1)
    finally:
        ray.kill(actor)
    assert [(e["stage"], e["epoch"]) for e in seen if e["kind"] == "epoch"] == [(0, 0), (1, 0)]
    assert result["out"] == out and np.isfinite(result["epoch_losses"]).all()
    state, meta = load_checkpoint(out)
    assert meta["model"] == SMOKE.model.to_dict() and state
    # The fine-tune started from the checkpoint written by the first call.
    assert again["init"] == out and again["step_losses"][0] < first
