"""Stage checkpoints: a training's whole state between optimiser steps, so a killed training resumes.

A long schedule (the ``paper`` preset: 35 epochs in three stages) loses everything when its
trainer dies. Given a stage checkpoint URI (``stage_checkpoint`` of
:func:`loop.train.fit.train`), training writes one at each stage end and, within a stage,
every ``TrainConfig.stage_checkpoint_every_min`` minutes (at a step or epoch end), each
replacing the last; a new call of the same training resumes from it and ends with the same
weights, to the bit on the CPU, as a training that never stopped.

A stage checkpoint is a checkpoint (:mod:`loop.train.checkpoints`: safetensors, a digest
beside it, written durably, nothing pickled) of the model's state dict, with the metadata

==============================  =============================================================
``kind``                        ``"stage"``
``identity``                    what is trained (configs, stages, init checkpoint digest,
                                samples): a stage checkpoint of another training is not used
``position``                    ``[stage, epoch, step]``: optimiser steps done in that epoch
``stats``                       losses, image counts and seconds so far (plain values)
``rng``                         ``torch``: the global torch generator's state; ``sampler``:
                                the stage's shuffling generator at the start of ``epoch``
                                (uint8 tensors, as ``get_state`` gives them)
``optimizer``, ``scheduler``,   within a stage, their state dicts: tensors as tensors, and the
``scaler``                      tuples and integer keys that JSON lacks as
                                ``{"__tuple__": [...]}`` and ``{"__int_keys__": [[k, v], ...]}``
==============================  =============================================================

At a stage end (position ``[next stage, 0, 0]``) the next stage starts a fresh optimiser, so
the checkpoint has no optimiser state then. Whoever asked for stage checkpoints removes them
once the final checkpoint is recorded (a run's driver: after journaling the cycle's
``trained`` event, with :func:`remove_stage_checkpoint`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from loop.train.checkpoints import (
    CheckpointError,
    checkpoint_exists,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
)

log = logging.getLogger(__name__)

KIND = "stage"
_TUPLE = "__tuple__"
_INT_KEYS = "__int_keys__"


@dataclass
class StagePoint:
    """Where a training stands: the next optimiser step is step ``step + 1`` of epoch ``epoch``
    of stage ``stage``; ``optimizer``/``scheduler``/``scaler`` are ``None`` at a stage's start."""

    stage: int
    epoch: int
    step: int
    model_state: Mapping[str, torch.Tensor]
    stats: dict[str, Any]
    torch_rng: torch.Tensor
    sampler_rng: torch.Tensor | None = None
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None


def to_plain(value: Any) -> Any:
    """``value`` (an optimiser's or scheduler's state dict) with its tuples and integer-keyed
    dicts written as plain values (see the module docstring); tensors stay tensors."""
    if isinstance(value, tuple):
        return {_TUPLE: [to_plain(v) for v in value]}
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    if isinstance(value, Mapping):
        if all(isinstance(k, str) for k in value):
            return {k: to_plain(v) for k, v in value.items()}
        if all(isinstance(k, int) and not isinstance(k, bool) for k in value):
            return {_INT_KEYS: [[k, to_plain(v)] for k, v in value.items()]}
        raise CheckpointError(f"stage checkpoint: keys {list(value)[:5]!r}: expected all str or all int")
    return value


def from_plain(value: Any) -> Any:
    """The inverse of :func:`to_plain`."""
    if isinstance(value, list):
        return [from_plain(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {_TUPLE}:
            return tuple(from_plain(v) for v in value[_TUPLE])
        if set(value) == {_INT_KEYS}:
            return {int(k): from_plain(v) for k, v in value[_INT_KEYS]}
        return {k: from_plain(v) for k, v in value.items()}
    return value


def _normal(identity: Mapping[str, Any]) -> Any:
    """``identity`` as it reads back from a checkpoint's JSON metadata (tuples become lists)."""
    return json.loads(json.dumps(identity))


def save_stage_checkpoint(uri: str, point: StagePoint, identity: Mapping[str, Any]) -> str:
    """Write ``point`` of the training ``identity`` names to ``uri`` (replacing any); return its digest."""
    optional = {"optimizer": point.optimizer, "scheduler": point.scheduler, "scaler": point.scaler}
    meta = {
        "kind": KIND,
        "identity": _normal(identity),
        "position": [point.stage, point.epoch, point.step],
        "stats": point.stats,
        "rng": {"torch": point.torch_rng, **({"sampler": point.sampler_rng} if point.sampler_rng is not None else {})},
        **{k: to_plain(v) for k, v in optional.items() if v is not None},
    }
    return save_checkpoint(uri, point.model_state, meta)


def load_stage_checkpoint(uri: str, identity: Mapping[str, Any]) -> StagePoint | None:
    """The point saved at ``uri`` by the training ``identity`` names; ``None`` when there is none.

    A file that cannot be read or verified (e.g. a kill between writing it and its digest
    file), or one of another training, is not resumed from: it is logged and ``None``
    returned, and training starts over (then replaces it).
    """
    if not checkpoint_exists(uri):
        return None
    try:
        state, meta = load_checkpoint(uri)
        if meta.get("kind") != KIND:
            raise CheckpointError(f"stage checkpoint {uri}: kind {meta.get('kind')!r}, expected {KIND!r}")
        if meta.get("identity") != _normal(identity):
            log.warning("stage checkpoint %s: of another training (configs, init or samples differ); "
                        "training starts over", uri)
            return None
        stage, epoch, step = (int(v) for v in meta["position"])
        rng = meta["rng"]
        return StagePoint(
            stage=stage, epoch=epoch, step=step, model_state=state, stats=dict(meta["stats"]),
            torch_rng=rng["torch"], sampler_rng=rng.get("sampler"),
            optimizer=from_plain(meta["optimizer"]) if "optimizer" in meta else None,
            scheduler=from_plain(meta["scheduler"]) if "scheduler" in meta else None,
            scaler=from_plain(meta["scaler"]) if "scaler" in meta else None,
        )
    except (CheckpointError, KeyError, TypeError, ValueError) as exc:
        log.warning("stage checkpoint %s: not usable (%s); training starts over", uri, exc)
        return None


def remove_stage_checkpoint(uri: str) -> bool:
    """Delete the stage checkpoint at ``uri`` and its digest file; return whether there was one."""
    return remove_checkpoint(uri)
