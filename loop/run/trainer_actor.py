"""The trainer as a Ray actor: one GPU when the cluster has one, else the CPU.

The actor receives small things only — a view spec, config dicts, checkpoint URIs — and
resolves the spec to a dataset view itself, so no image array crosses Ray. The default
resolver opens the run's store: ``stores.RunStore.open(spec["run"]).view(**spec["select"])``;
pass another (e.g. :func:`loop.bench.train.synthetic_view`) to use the trainer on its own.

    actor = TrainerActor.options(**trainer_actor_options(ray.cluster_resources())).remote()
    result = ray.get(actor.train.remote({"run": RUN, "select": {"split": "train"}},
                                        train_cfg.to_dict(), model_cfg.to_dict(), init, out))

:class:`Trainer` is the same class without Ray, for use in-process.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Mapping

import ray
import torch

from loop.config.training import ModelConfig, TrainConfig
from loop.train.fit import train
from loop.errors import InputError

log = logging.getLogger(__name__)


def open_store_view(spec: Mapping[str, Any]) -> Any:
    """The default view resolver: ``{"run": URI, "select": {...}}`` -> the run store's view."""
    from stores import RunStore  # imported here: the trainer does not need the store otherwise

    if "run" not in spec:
        raise InputError(f"view_spec: expected a 'run' URI and an optional 'select' table, got keys {sorted(spec)}")
    return RunStore.open(spec["run"]).view(**dict(spec.get("select", {})))


def trainer_actor_options(cluster_resources: Mapping[str, float]) -> dict[str, Any]:
    """Ray actor options for the trainer: one GPU when the cluster has one, else one CPU slot.

    ``cluster_resources`` is ``ray.cluster_resources()``. On the CPU the actor still uses all
    the cores of its node for torch (see :class:`Trainer`): the loop trains between generation
    phases, not during them, so one reserved slot leaves the generator workers schedulable.
    """
    if float(cluster_resources.get("GPU", 0)) >= 1:
        return {"num_gpus": 1, "num_cpus": 1}
    return {"num_gpus": 0, "num_cpus": 1}


def _log_progress(event: dict[str, Any]) -> None:
    log.info(
        "train stage %d epoch %d/%d @%dpx: loss %.4f, %.1f images/s, data wait %.0f%%",
        event["stage"], event["epoch"] + 1, event["epochs"], event["size"], event["loss"],
        event["images_per_s"], 100 * event["data_wait_fraction"],
    )


class Trainer:
    """Fits or fine-tunes models on views that it resolves from small specs.

    ``view_resolver(spec) -> view`` turns a view spec into a dataset view (default:
    :func:`open_store_view`). ``num_threads`` sets torch's CPU threads; by default, without
    CUDA, all the cores this process may run on (Ray sets a 1-CPU actor to one thread).
    """

    def __init__(self, view_resolver: Callable[[Mapping[str, Any]], Any] | None = None, num_threads: int | None = None):
        self.resolve = view_resolver or open_store_view
        if num_threads is None and not torch.cuda.is_available():
            num_threads = len(os.sched_getaffinity(0))
        if num_threads:
            torch.set_num_threads(int(num_threads))

    def device(self) -> str:
        """The device this trainer trains on ("cuda" or "cpu")."""
        return "cuda" if torch.cuda.is_available() else "cpu"

    def train(
        self,
        view_spec: Mapping[str, Any],
        cfg_dict: Mapping[str, Any],
        model_cfg_dict: Mapping[str, Any],
        init: str | None = None,
        out: str | None = None,
    ) -> dict[str, Any]:
        """Train on the view ``view_spec`` resolves to; return :meth:`TrainResult.to_dict` (checkpoint at ``out``)."""
        cfg = TrainConfig.from_dict(cfg_dict)
        model_cfg = ModelConfig.from_dict(model_cfg_dict)
        view = self.resolve(view_spec)
        result = train(view, cfg, model_cfg, init=init, out=out, progress=_log_progress)
        return result.to_dict()


TrainerActor = ray.remote(Trainer)
