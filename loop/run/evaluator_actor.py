"""The evaluator: scores a checkpoint on a run's dataset view or on a real labelled folder.

:class:`Evaluator` is a plain class (use it in-process, in a notebook or a test);
:data:`EvaluatorActor` is the same class as a Ray actor, for the loop driver::

    actor = EvaluatorActor.options(num_gpus=1).remote()        # or .remote() on CPU
    rows = ray.get(actor.evaluate.remote(run_uri, ckpt_uri, {"split": "val"}))

Construction holds only settings. The model of the last checkpoint evaluated is kept
(keyed by its URI and sha256 digest), so scoring several views with one checkpoint loads
it once, and a checkpoint rewritten under the same URI is reloaded.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Mapping

import ray
import torch
from torch import nn

from loop.train.device import resolve_device
from loop.evaluate.scoring import DEFAULT_THRESHOLD, check_settings, evaluate_real, evaluate_view
from loop.evaluate.metrics import DEFAULT_MIN_GRAIN_AREA, DEFAULT_TOLERANCE, EvaluationError


class Evaluator:
    """Per-sample metrics of checkpoints; see the module docstring.

    Parameters
    ----------
    device : torch device; ``None`` for CUDA when this process sees a GPU, else CPU.
    batch_size : images per forward pass on a view; tiles per pass on real images.
    tile, overlap : tiled inference on real images (:func:`loop.evaluate.infer.predict_image`).
    threshold, tol, min_grain_area : see :func:`loop.evaluate.metrics.segmentation_metrics`.
    num_threads : torch CPU threads; by default, without CUDA, all the cores this process
        may run on (Ray gives a 1-CPU actor one thread, too few to score a validation set).
    metric_workers : processes computing per-sample segmentation metrics while the model
        predicts the next batch; 0 computes them in this process. By default, with CUDA,
        one per core this process may run on but one (at most 16); without CUDA, 0 (torch
        already uses the cores). The pool starts on first use; :meth:`close` stops it.
    """

    def __init__(
        self,
        device: str | None = None,
        batch_size: int = 16,
        tile: int = 256,
        overlap: int = 64,
        threshold: float = DEFAULT_THRESHOLD,
        tol: float = DEFAULT_TOLERANCE,
        min_grain_area: int = DEFAULT_MIN_GRAIN_AREA,
        num_threads: int | None = None,
        metric_workers: int | None = None,
    ):
        check_settings(batch_size, tile, overlap, threshold, tol, min_grain_area)
        if metric_workers is not None and (
            isinstance(metric_workers, bool) or not isinstance(metric_workers, int) or metric_workers < 0
        ):
            raise EvaluationError(f"metric_workers: expected an integer >= 0, got {metric_workers!r}")
        self.device = resolve_device(device)
        cores = len(os.sched_getaffinity(0))
        if num_threads is None and self.device.type == "cpu":
            num_threads = cores
        if num_threads:
            torch.set_num_threads(int(num_threads))
        if metric_workers is None:
            metric_workers = min(16, cores - 1) if self.device.type == "cuda" else 0
        self.metric_workers = metric_workers
        self.batch_size = batch_size
        self.tile = tile
        self.overlap = overlap
        self.threshold = threshold
        self.tol = tol
        self.min_grain_area = min_grain_area
        self._pool: ProcessPoolExecutor | None = None
        self._cached: tuple[tuple[str, str], nn.Module, str, int | None] | None = None

    def _model(self, checkpoint_uri: str) -> tuple[nn.Module, str]:
        """The model saved at ``checkpoint_uri`` on this evaluator's device, and its task."""
        from loop.train.checkpoints import read_digest
        from loop.train.model import model_from_checkpoint

        key = (checkpoint_uri, read_digest(checkpoint_uri))
        if self._cached is None or self._cached[0] != key:
            self._cached = None  # free the old model before building the new one
            model, meta = model_from_checkpoint(checkpoint_uri, self.device)
            task = meta["model"].get("task", "segmentation")
            self._cached = (key, model, task, meta.get("input", {}).get("size"))
        return self._cached[1], self._cached[2]

    def evaluate(self, run_uri: str, checkpoint_uri: str, select: Mapping[str, Any] | None = None) -> list[dict]:
        """Per-sample metric rows of the checkpoint on ``RunStore.open(run_uri).view(**select)``.

        Each row is a dict with ``sample_id`` and the metric columns of
        :func:`loop.evaluate.scoring.evaluate_view`, in view order.
        """
        from stores import RunStore

        if select is not None and not isinstance(select, Mapping):
            raise EvaluationError(
                f"select: expected a mapping of view arguments (e.g. {{'split': 'val'}}), got {select!r}"
            )
        view = RunStore.open(run_uri).view(**dict(select or {}))
        model, task = self._model(checkpoint_uri)
        table = evaluate_view(
            model, view, self.device, self.batch_size, task=task,
            threshold=self.threshold, tol=self.tol, min_grain_area=self.min_grain_area,
            executor=self._metric_pool(),
        )
        return table.to_pylist()

    def evaluate_real(self, checkpoint_uri: str, real_dir: str, overlay_dir: str | None = None,
                      pixel_size_um: float | None = None, tile: int | None = None,
                      overlap: int | None = None) -> dict:
        """Score the checkpoint on a real labelled folder (:func:`loop.evaluate.scoring.evaluate_real`).

        Returns the summary (``task``, ``n_images``, each metric's mean and ``<metric>_std``)
        plus ``checkpoint``, ``real_dir``, ``tile``, ``overlap`` and ``images``: the per-image rows
        as dicts. With ``overlay_dir``, overlay pictures are written there; ``pixel_size_um`` (else
        the folder's ``pixel_size_um.json``) gives grains/mm² and the ASTM E112 G. ``tile`` and
        ``overlap`` (px) replace this evaluator's settings for this call (a run passes its own).
        """
        tile = self.tile if tile is None else tile
        overlap = self.overlap if overlap is None else overlap
        check_settings(self.batch_size, tile, overlap, self.threshold, self.tol, self.min_grain_area)
        model, task = self._model(checkpoint_uri)
        # A classifier sees real images at the size it was trained at (its last stage's).
        class_size = self._cached[3] if task == "classification" else None
        table, summary = evaluate_real(
            model, real_dir, self.device, task=task, tile=tile, overlap=overlap,
            batch_size=self.batch_size, threshold=self.threshold, tol=self.tol,
            min_grain_area=self.min_grain_area, overlay_dir=overlay_dir, class_size=class_size,
            pixel_size_um=pixel_size_um,
        )
        return {**summary, "checkpoint": checkpoint_uri, "real_dir": str(Path(real_dir)), "tile": tile,
                "overlap": overlap, "images": table.to_pylist()}

    def _metric_pool(self) -> ProcessPoolExecutor | None:
        if self.metric_workers and self._pool is None:
            # fork, as torch's DataLoader workers do: the children run numpy/scipy only,
            # never CUDA, and start without re-importing the (Ray worker's) main module.
            self._pool = ProcessPoolExecutor(self.metric_workers, mp_context=multiprocessing.get_context("fork"))
        return self._pool

    def close(self) -> None:
        """Stop the metric worker processes, if any were started (a later call starts them again)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def device_name(self) -> str:
        """The device this evaluator runs on, e.g. ``"cpu"`` or ``"cuda"`` (and the GPU's name)."""
        if self.device.type == "cuda":
            return f"cuda ({torch.cuda.get_device_name(self.device)})"
        return str(self.device)


EvaluatorActor = ray.remote(num_cpus=1)(Evaluator)
""":class:`Evaluator` as a Ray actor class; give it a GPU with ``.options(num_gpus=1)``."""
