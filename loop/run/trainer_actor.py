"""The trainer as a Ray actor: one GPU when the cluster has one, else the CPU.

The actor receives small things only — a view spec, config dicts, checkpoint URIs — and
resolves the spec to a dataset view itself, so no image array crosses Ray. The default
resolver opens the run's store: ``stores.RunStore.open(spec["run"]).view(**spec["select"])``;
pass another (e.g. :func:`loop.bench.train.synthetic_view`) to use the trainer on its own.

    actor = TrainerActor.options(**trainer_actor_options(ray.cluster_resources())).remote()
    result = ray.get(actor.train.remote({"run": RUN, "select": {"split": "train"}},
                                        train_cfg.to_dict(), model_cfg.to_dict(), init, out))

:class:`Trainer` is the same class without Ray, for use in-process.

Progress: while ``train`` runs, its progress events (see :func:`loop.train.fit.train`) pile up
in the trainer, and :meth:`Trainer.progress` hands over those not yet taken. The actor is
threaded (``max_concurrency=2``) so that a ``progress`` call runs beside a long ``train`` call;
the driver polls it (:func:`follow_training`). Training calls still run one at a time.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from typing import Any, Callable, Mapping

import ray
import torch

from loop.config.training import ModelConfig, TrainConfig
from loop.train.fit import train
from loop.errors import InputError

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 2.0
"""Mid-epoch progress events: at most one per this many seconds (an epoch-end event always)."""
PROGRESS_BACKLOG = 10_000
"""Events kept for :meth:`Trainer.progress` when nobody takes them; older ones are dropped."""


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
    if event.get("kind", "epoch") != "epoch":
        return
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
        self._events: collections.deque[dict[str, Any]] = collections.deque(maxlen=PROGRESS_BACKLOG)
        self._training = threading.Lock()  # one training call at a time, even on a threaded actor

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
        progress_every_s: float | None = PROGRESS_EVERY_S,
        stage_checkpoint: str | None = None,
    ) -> dict[str, Any]:
        """Train on the view ``view_spec`` resolves to; return :meth:`TrainResult.to_dict` (checkpoint at ``out``).

        Progress events (epoch ends, and mid-epoch ones every ``progress_every_s`` seconds or
        none if ``None``) are logged and kept for :meth:`progress`; those of an earlier call
        that nobody took are dropped when this one starts. ``stage_checkpoint``: where the
        training keeps its stage checkpoint and resumes from it (see :func:`loop.train.fit.train`).
        """
        cfg = TrainConfig.from_dict(cfg_dict)
        model_cfg = ModelConfig.from_dict(model_cfg_dict)
        with self._training:
            self._events.clear()
            view = self.resolve(view_spec)
            result = train(view, cfg, model_cfg, init=init, out=out, progress=self._keep,
                           progress_every_s=progress_every_s, stage_checkpoint=stage_checkpoint)
        return result.to_dict()

    def _keep(self, event: dict[str, Any]) -> None:
        _log_progress(event)
        self._events.append(event)

    def progress(self) -> list[dict[str, Any]]:
        """The progress events of the running (or last) training call not taken yet, oldest first."""
        taken = []
        while True:
            try:
                taken.append(self._events.popleft())
            except IndexError:
                return taken


TrainerActor = ray.remote(max_concurrency=2)(Trainer)
""":class:`Trainer` as a threaded Ray actor: ``progress`` answers while ``train`` runs."""


def follow_training(actor: Any, args: tuple[Any, ...], on_event: Callable[[dict[str, Any]], None], *,
                    kwargs: Mapping[str, Any] | None = None, poll_s: float = 1.0) -> dict[str, Any]:
    """Call ``actor.train.remote(*args, **kwargs)`` and return its result, handing each progress
    event to ``on_event`` (in the caller's thread) while it runs, about every ``poll_s`` seconds.

    ``actor`` is a :data:`TrainerActor` handle. Every event of the call reaches ``on_event``
    before this returns; an error of ``train`` is raised here, as by ``ray.get``.
    """
    ref = actor.train.remote(*args, **dict(kwargs or {}))
    while True:
        ready, _ = ray.wait([ref], timeout=poll_s)
        # Events are taken after the wait, so once training is done the last take has them all.
        for event in ray.get(actor.progress.remote()):
            on_event(event)
        if ready:
            return ray.get(ref)
