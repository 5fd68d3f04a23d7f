"""Score a model: per-sample metrics on a dataset view, and on a folder of real labelled images.

:func:`evaluate_view` is what the policies read after each cycle (one row per validation
sample, keyed by ``sample_id``); :func:`evaluate_real` is the paper's test on real images
(§3.2.3), with tiled inference so any image size works; :func:`render_overlay` draws a
prediction over its image for a person to look at (matplotlib's Agg canvas, no pyplot, so
no global backend state is touched).

On real grain images the grain columns describe *closed* grains
(:func:`loop.evaluate.grains.closed_grains`: a seeded watershed, so a small gap in a
predicted boundary does not merge two grains) and add the ASTM E112 statistics of
:data:`REAL_GRAIN_KEYS`; on views (synthetic, scored every cycle) the grain counts are
the cheaper connected components of :func:`loop.evaluate.metrics.segmentation_metrics`.
A pixel size for E112's grains/mm² and G comes from ``pixel_size_um`` or from the
folder's :data:`PIXEL_SIZE_FILE`.
"""

from __future__ import annotations

import json
import math
from collections import deque
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import nn

from generators.base import TASKS
from loop.evaluate import grains, infer
from loop.evaluate.metrics import (
    CLASSIFICATION_KEYS,
    DEFAULT_MIN_GRAIN_AREA,
    DEFAULT_TOLERANCE,
    SEGMENTATION_KEYS,
    EvaluationError,
    as_binary_mask,
    binary_cross_entropy,
    boundary_visibility,
    classification_metrics_batch,
    grain_count_rel_error,
    grain_size_distance,
    segmentation_metrics,
)
from loop.evaluate.real import RealDataError, RealFolder
from loop.evaluate.real_tiles import DEFAULT_MIN_CRACK_PX, classified_tiles

DEFAULT_THRESHOLD = 0.5
"""Boundary probability at or above which a pixel is predicted boundary."""

SEGMENTATION_COLUMNS = ("loss",) + SEGMENTATION_KEYS
"""Metric columns of a segmentation table (``loss`` = mean per-pixel BCE in nats)."""

REAL_GRAIN_KEYS = (
    "mean_grain_area_pred", "mean_grain_area_true", "mean_grain_area_rel_error",
    "mean_intercept_pred", "mean_intercept_true", "mean_intercept_rel_error",
    "boundary_intercept_pred", "boundary_intercept_true", "boundary_intercept_rel_error",
    "grains_per_mm2_pred", "grains_per_mm2_true", "astm_g_pred", "astm_g_true", "astm_g_abs_error",
)
"""Grain statistics added to a real segmentation table (:mod:`loop.evaluate.grains`, closed grains):
ASTM E112 mean grain area (px²), mean lineal intercept over a grid of test lines (px), each
from the prediction, the truth and their relative error; the same intercept counted on the
thresholded boundary map without closing grains (``boundary_intercept_*``,
:func:`loop.evaluate.grains.boundary_intercept`: gaps cost less, stray strokes count); grains
per mm² at 1x and the E112 grain-size number G (with ``|G_pred − G_true|``), NaN where the pixel size is unknown."""

REAL_IMAGE_KEYS = ("boundary_visibility",)
"""Columns of a real segmentation table that describe the image and its mask, not the model:
:func:`loop.evaluate.metrics.boundary_visibility` (about 1 where the boundary is not in the
image, so that no model can find it there)."""

REAL_SEGMENTATION_COLUMNS = SEGMENTATION_COLUMNS + REAL_GRAIN_KEYS + REAL_IMAGE_KEYS
"""Metric columns of a real segmentation table."""

PIXEL_SIZE_FILE = "pixel_size_um.json"
"""Optional file in a real folder: the pixel size in µm, one number for every image or
``{"NAME": µm, ...}`` per image (images left out have none), e.g. ``{"nist_steel_optical": 0.2252}``."""


def _metric_schema(columns: Sequence[str], leading: Sequence[tuple[str, pa.DataType]]) -> pa.Schema:
    return pa.schema([pa.field(n, t) for n, t in leading] + [pa.field(c, pa.float64()) for c in columns])


def _view_task(view: Any) -> str:
    """Task of a view: its ``task`` attribute when it has one, else from its first target
    (an H×W mask is segmentation, an integer class is classification)."""
    declared = getattr(view, "task", None)
    if declared is not None:
        return declared
    _, target = view[0]
    if isinstance(target, np.ndarray) and target.ndim == 2:
        return "segmentation"
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        return "classification"
    if isinstance(target, np.ndarray) and target.ndim == 0 and np.issubdtype(target.dtype, np.integer):
        return "classification"
    raise EvaluationError(
        f"view target: expected a uint8 H×W mask (segmentation) or an int class (classification), "
        f"got {type(target).__name__} {getattr(target, 'shape', '')}"
    )


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise EvaluationError(f"{name}: expected an integer >= 1, got {value!r}")
    return int(value)


def _check_threshold(threshold: Any) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold < 1.0:
        raise EvaluationError(f"threshold: expected a probability in (0, 1), got {threshold!r}")
    return float(threshold)


def check_settings(
    batch_size: int = 16,
    tile: int = 256,
    overlap: int = 64,
    threshold: float = DEFAULT_THRESHOLD,
    tol: float = DEFAULT_TOLERANCE,
    min_grain_area: int = DEFAULT_MIN_GRAIN_AREA,
) -> None:
    """Raise :class:`~loop.evaluate.metrics.EvaluationError` naming the first evaluation setting out of range."""
    _check_positive_int("batch_size", batch_size)
    infer.check_tiling(tile, overlap)
    _check_threshold(threshold)
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < float("inf"):
        raise EvaluationError(f"tol: expected a finite distance >= 0 in pixels, got {tol!r}")
    _check_positive_int("min_grain_area", min_grain_area)


def _logit_threshold(threshold: float) -> float:
    # sigmoid(z) >= t  <=>  z >= logit(t): threshold the logits, no probability map needed.
    return float(np.log(threshold / (1.0 - threshold)))


def _predicted_boundary(logits: np.ndarray, threshold: float) -> np.ndarray:
    return logits >= _logit_threshold(threshold)


def _segmentation_row(logits: np.ndarray, true: np.ndarray, threshold: float, tol: float,
                      min_grain_area: int) -> dict[str, float]:
    pred = _predicted_boundary(logits, threshold)
    row = {"loss": binary_cross_entropy(logits, true)}
    row.update(segmentation_metrics(pred, true, tol=tol, min_grain_area=min_grain_area))
    return row


def _real_grain_row(logits: np.ndarray, true: np.ndarray, threshold: float,
                    pixel_size_um: float | None) -> dict[str, float]:
    """Closed-grain columns of a real image: counts and size distance, and :data:`REAL_GRAIN_KEYS`."""
    labels_p = grains.closed_grains(infer.sigmoid(logits), threshold)
    labels_t = grains.closed_grains(true)
    line_p = grains.boundary_intercept(_predicted_boundary(logits, threshold))
    line_t = grains.boundary_intercept(true)
    p = grains.label_statistics(labels_p, pixel_size_um)
    t = grains.label_statistics(labels_t, pixel_size_um)
    return {
        "grain_count_pred": float(p.count),
        "grain_count_true": float(t.count),
        "grain_count_rel_error": grain_count_rel_error(p.count, t.count),
        "grain_size_distance": grain_size_distance(grains.label_areas(labels_p), grains.label_areas(labels_t)),
        "mean_grain_area_pred": p.mean_area,
        "mean_grain_area_true": t.mean_area,
        "mean_grain_area_rel_error": grains.relative_error(p.mean_area, t.mean_area),
        "mean_intercept_pred": p.mean_intercept,
        "mean_intercept_true": t.mean_intercept,
        "mean_intercept_rel_error": grains.relative_error(p.mean_intercept, t.mean_intercept),
        "boundary_intercept_pred": line_p,
        "boundary_intercept_true": line_t,
        "boundary_intercept_rel_error": grains.relative_error(line_p, line_t),
        "grains_per_mm2_pred": p.grains_per_mm2,
        "grains_per_mm2_true": t.grains_per_mm2,
        "astm_g_pred": p.astm_g,
        "astm_g_true": t.astm_g,
        "astm_g_abs_error": abs(p.astm_g - t.astm_g),
    }


def pixel_sizes(folder: RealFolder, pixel_size_um: float | Mapping[str, float] | None = None) -> dict[str, float]:
    """Pixel size in µm of each image of ``folder`` that has one.

    ``pixel_size_um`` is one size for every image or a mapping from image name to size;
    ``None`` reads the folder's :data:`PIXEL_SIZE_FILE` when there is one. A name that is
    not an image of the folder, or a size that is not a positive number, is an error.
    """
    source = "pixel_size_um"
    if pixel_size_um is None:
        path = folder.root / PIXEL_SIZE_FILE
        if not path.is_file():
            return {}
        source = str(path)
        try:
            pixel_size_um = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise RealDataError(f"{path}: cannot be read as JSON ({exc})") from exc
    if isinstance(pixel_size_um, Mapping):
        sizes = dict(pixel_size_um)
        unknown = sorted(set(sizes) - set(folder.names), key=str)
        if unknown:
            raise RealDataError(f"{source}: {unknown[0]!r} is not an image of {folder.root}")
    else:
        sizes = {name: pixel_size_um for name in folder.names}
    for name, size in sizes.items():
        if isinstance(size, bool) or not isinstance(size, (int, float)) or not 0 < size < math.inf:
            raise RealDataError(f"{source}: pixel size of {name!r}: expected a positive number of µm, got {size!r}")
    return {name: float(size) for name, size in sizes.items()}


def evaluate_view(
    model: nn.Module,
    view: Any,
    device: Any = None,
    batch_size: int = 16,
    *,
    task: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    tol: float = DEFAULT_TOLERANCE,
    min_grain_area: int = DEFAULT_MIN_GRAIN_AREA,
    executor: Executor | None = None,
) -> pa.Table:
    """Per-sample metrics of ``model`` on a dataset view.

    Parameters
    ----------
    model : segmentation (logits (N, 1, H, W)) or classification (logits (N, C)) network.
    view : object with ``len(view)``, ``view.sample_ids`` and ``view[i] -> (image, target)``
        (uint8 H×W image; uint8 0/1 H×W mask or int class).
    device : torch device the model is on; ``None`` uses the device of its weights.
    batch_size : images per forward pass (consecutive samples of equal size are batched).
    task : ``"segmentation"`` or ``"classification"``; ``None`` takes ``view.task`` when the
        view has one, else reads it from the first target.
    threshold, tol, min_grain_area : see :func:`loop.evaluate.metrics.segmentation_metrics`.
    executor : where the per-sample segmentation metrics run, e.g. a process pool: they
        cost more CPU time than a GPU forward pass (about 10-30 ms per 512² sample), so
        with a GPU they run on other cores while the next batch is predicted. ``None``
        computes them in this thread.

    Returns
    -------
    pyarrow Table, one row per sample in view order: ``sample_id`` (int64), then float64
    ``loss`` and the :data:`~loop.evaluate.metrics.SEGMENTATION_KEYS` (segmentation) or the
    :data:`~loop.evaluate.metrics.CLASSIFICATION_KEYS` (classification).
    """
    batch_size = _check_positive_int("batch_size", batch_size)
    threshold = _check_threshold(threshold)
    n = len(view)
    sample_ids = np.asarray(view.sample_ids, dtype=np.int64)
    if sample_ids.shape != (n,):
        raise EvaluationError(f"view.sample_ids: expected {n} ids (one per sample), got shape {sample_ids.shape}")
    view_task = _view_task(view) if n or getattr(view, "task", None) is not None else None
    if task is None:
        if view_task is None:
            raise EvaluationError("view: empty and without a task attribute, so its task is unknown; pass task=")
        task = view_task
    if task not in TASKS:
        raise EvaluationError(f"task: expected one of {', '.join(TASKS)}, got {task!r}")
    if view_task is not None and view_task != task:
        raise EvaluationError(f"task: the model is scored for {task} but the view holds {view_task} targets")
    columns = SEGMENTATION_COLUMNS if task == "segmentation" else CLASSIFICATION_KEYS
    schema = _metric_schema(columns, [("sample_id", pa.int64())])
    dev = infer.model_device(model, device)

    logit_threshold = _logit_threshold(threshold)
    max_pending = 4 * batch_size
    pending: deque[tuple[dict[str, float], Future | dict[str, float]]] = deque()
    rows: list[dict[str, float]] = []

    def finish_one() -> None:
        head, metrics = pending.popleft()
        rows.append({**head, **(metrics.result() if isinstance(metrics, Future) else metrics)})

    def load(first: int) -> list[tuple[Any, Any]]:
        return [view[i] for i in range(first, min(first + batch_size, n))]

    # One background thread reads the next batch while the model runs on this one.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="evaluate-view-read") as reader:
        next_batch = reader.submit(load, 0) if n else None
        for start in range(0, n, batch_size):
            samples = next_batch.result()
            if start + batch_size < n:
                next_batch = reader.submit(load, start + batch_size)
            for group in _equal_size_runs(samples):
                images = np.stack([np.asarray(samples[j][0]) for j in group])
                if task == "classification":
                    labels = np.asarray([_class_label(samples[j][1], start + j) for j in group], dtype=np.int64)
                    logits = infer.predict_logits(model, images, dev, task)
                    metrics = classification_metrics_batch(logits, labels)
                    rows.extend({k: float(metrics[k][m]) for k in columns} for m in range(len(group)))
                    continue
                trues = [_view_mask(samples[j][1], images.shape[1:], start + j) for j in group]
                with torch.inference_mode():
                    z = infer.forward_logits(model, images, dev, task)
                    t = torch.from_numpy(np.stack(trues)).to(dev, dtype=torch.float32)
                    losses = F.binary_cross_entropy_with_logits(z, t, reduction="none").mean(dim=(1, 2))
                    preds = (z >= logit_threshold).cpu().numpy()
                    losses = losses.double().cpu().numpy()
                for pred, true, loss in zip(preds, trues, losses):
                    head = {"loss": float(loss)}
                    if executor is None:
                        pending.append((head, segmentation_metrics(pred, true, tol, min_grain_area)))
                    else:
                        pending.append((head, executor.submit(segmentation_metrics, pred, true, tol, min_grain_area)))
                while len(pending) > max_pending:
                    finish_one()
    while pending:
        finish_one()
    data: dict[str, Any] = {"sample_id": sample_ids}
    data.update({c: np.asarray([r[c] for r in rows], dtype=np.float64) for c in columns})
    return pa.table(data, schema=schema)


def _equal_size_runs(samples: Sequence[tuple[Any, Any]]) -> list[list[int]]:
    """Indices of ``samples`` in runs of consecutive equal image shapes (one forward pass each)."""
    runs: list[list[int]] = []
    for j, (image, _) in enumerate(samples):
        if runs and np.shape(samples[runs[-1][0]][0]) == np.shape(image):
            runs[-1].append(j)
        else:
            runs.append([j])
    return runs


def _view_mask(target: Any, shape: tuple[int, ...], index: int) -> np.ndarray:
    mask = as_binary_mask(target, f"view[{index}] mask")
    if mask.shape != tuple(shape):
        raise EvaluationError(f"view[{index}] mask: shape {mask.shape} differs from its image's {tuple(shape)}")
    return mask


def _class_label(target: Any, index: int) -> int:
    is_int = isinstance(target, (int, np.integer)) and not isinstance(target, bool)
    is_int_array = isinstance(target, np.ndarray) and target.ndim == 0 and np.issubdtype(target.dtype, np.integer)
    if not (is_int or is_int_array):
        raise EvaluationError(f"view[{index}] target: expected an int class label, got {type(target).__name__}")
    return int(target)


def summarize_metrics(table: pa.Table, columns: Sequence[str]) -> dict[str, Any]:
    """Mean and standard deviation of each metric column over the rows, ignoring NaNs.

    Keys: ``n_images``, each column's name (its mean) and ``<name>_std`` (population std).
    A column that is NaN in every row gives NaN.
    """
    summary: dict[str, Any] = {"n_images": int(table.num_rows)}
    for c in columns:
        values = table.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
        finite = values[~np.isnan(values)]
        summary[c] = float(finite.mean()) if finite.size else float("nan")
        summary[f"{c}_std"] = float(finite.std()) if finite.size else float("nan")
    return summary


def evaluate_real(
    model: nn.Module,
    real_dir: str | Path,
    device: Any = None,
    *,
    task: str | None = None,
    tile: int = 256,
    overlap: int = 64,
    batch_size: int = 8,
    threshold: float = DEFAULT_THRESHOLD,
    tol: float = DEFAULT_TOLERANCE,
    min_grain_area: int = DEFAULT_MIN_GRAIN_AREA,
    class_size: int | None = None,
    min_crack_px: int = DEFAULT_MIN_CRACK_PX,
    overlay_dir: str | Path | None = None,
    pixel_size_um: float | Mapping[str, float] | None = None,
) -> tuple[pa.Table, dict[str, Any]]:
    """Score ``model`` on a real labelled folder (layout in :mod:`loop.evaluate.real`).

    Segmentation: each image of any size goes through :func:`loop.evaluate.infer.predict_image`
    (``tile``, ``overlap``, ``batch_size`` tiles per pass) and is scored like a view
    sample. Classification (e.g. cracks): with ``class_size`` (the size the classifier was
    trained at), each image is cut into tiles of that size at its own resolution and every
    tile with a class is classified (:mod:`loop.evaluate.real_tiles`: a tile is a crack with
    at least ``min_crack_px`` crack pixels, no crack when its image's mask is empty; the
    rest are left out), one row per tile named ``IMAGE@y,x``; without it, each image is
    classified whole, its label whether its mask has any foreground pixel. The summary adds
    :func:`class_rates` (the miss rate, the false-alarm rate and their mean, the balanced
    error: tiles of crack-free images far outnumber crack tiles). ``task=None`` reads the task from the
    model's output shape. With ``overlay_dir``, writes ``NAME.png`` overlays there
    (segmentation only). ``pixel_size_um`` (µm per pixel, one for all images or per image
    name; default: the folder's :data:`PIXEL_SIZE_FILE`, if any) gives the E112
    grains/mm² and G columns a value (see :func:`pixel_sizes`).

    Returns
    -------
    (table, summary): the table has one row per image in name order, ``name`` (string),
    ``height``, ``width`` (int64), then float64 metrics as in :func:`evaluate_view`
    (classification adds string ``image`` and int64 ``label``; segmentation adds float64 ``pixel_size_um``, NaN
    where unknown, before the metrics, and the closed-grain columns: the grain counts and
    size distance of closed grains, :data:`REAL_GRAIN_KEYS` and :data:`REAL_IMAGE_KEYS`); the summary is
    :func:`summarize_metrics` of the metric columns plus ``task``.
    """
    check_settings(batch_size, tile, overlap, threshold, tol, min_grain_area)
    if class_size is not None:
        class_size = _check_positive_int("class_size", class_size)
    min_crack_px = _check_positive_int("min_crack_px", min_crack_px)
    folder = RealFolder(real_dir)
    sizes = pixel_sizes(folder, pixel_size_um)
    dev = infer.model_device(model, device)
    task = task or infer.model_task(model, dev)
    if task not in TASKS:
        raise EvaluationError(f"task: expected one of {', '.join(TASKS)}, got {task!r}")
    out_dir = Path(overlay_dir) if overlay_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)

    names, heights, widths, labels, sources, rows = [], [], [], [], [], []
    if task == "segmentation":
        for pair in folder:
            names.append(pair.name)
            heights.append(pair.image.shape[0])
            widths.append(pair.image.shape[1])
            logits = infer.predict_image_logits(model, pair.image, tile=tile, overlap=overlap, device=dev,
                                                batch_size=batch_size)
            row = _segmentation_row(logits, pair.mask, threshold, tol, min_grain_area)
            row.update(_real_grain_row(logits, pair.mask, threshold, sizes.get(pair.name)))
            row["boundary_visibility"] = boundary_visibility(pair.image, pair.mask)
            rows.append(row)
            if out_dir is not None:
                render_overlay(pair.image, infer.sigmoid(logits), pair.mask, out_dir / f"{pair.name}.png",
                               threshold=threshold, title=pair.name)
    else:
        # As many pixels per pass as ``batch_size`` segmentation tiles: 64 px crack tiles go 16 times as many.
        per_pass = batch_size * max(1, (tile // class_size) ** 2) if class_size else batch_size
        for name, source, (height, width), label, row in _classify(model, folder, class_size, min_crack_px, dev,
                                                                   per_pass):
            names.append(name)
            sources.append(source)
            heights.append(height)
            widths.append(width)
            labels.append(label)
            rows.append(row)

    columns = REAL_SEGMENTATION_COLUMNS if task == "segmentation" else CLASSIFICATION_KEYS
    leading = [("name", pa.string()), ("height", pa.int64()), ("width", pa.int64())]
    data: dict[str, Any] = {"name": names, "height": heights, "width": widths}
    if task == "segmentation":
        leading.append(("pixel_size_um", pa.float64()))
        data["pixel_size_um"] = [sizes.get(name, math.nan) for name in names]
    if task == "classification":
        leading += [("image", pa.string()), ("label", pa.int64())]
        data.update(image=sources, label=labels)
    data.update({c: [r[c] for r in rows] for c in columns})
    table = pa.table(data, schema=_metric_schema(columns, leading))
    summary: dict[str, Any] = {"task": task}
    summary.update(summarize_metrics(table, columns))
    if task == "classification":
        summary.update(class_rates(table))
        if out_dir is not None:
            write_error_sheet(table, folder, class_size, min_crack_px, out_dir / ERROR_SHEET)
    return table, summary


def write_error_sheet(table: pa.Table, folder: RealFolder, class_size: int | None, min_crack_px: int,
                      path: Path, per_class: int = 12) -> Path | None:
    """A contact sheet (PNG at ``path``) of the worst-classified inputs of a classification
    table: up to ``per_class`` missed cracks and as many false alarms, highest loss first,
    each beside its mask; None (nothing written) when every input is right."""
    from loop.evaluate.contact_sheet import render_contact_sheet

    rows = table.select(["name", "image", "label", "error", "loss", "p_true"]).to_pylist()
    chosen = []
    for label in (1, 0):
        wrong = sorted((r for r in rows if r["label"] == label and r["error"] > 0), key=lambda r: -r["loss"])
        chosen += wrong[:per_class]
    if not chosen:
        return None
    wanted = {r["name"] for r in chosen}
    pixels: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for image_name in dict.fromkeys(r["image"] for r in chosen):
        pair = folder[folder.names.index(image_name)]
        pixels.update({name: (image, mask) for name, image, mask, _ in _class_inputs(pair, class_size, min_crack_px)
                       if name in wanted})
    captions = [(i, {"input": r["name"], "p_true": r["p_true"]}, "crack missed" if r["label"] else "false alarm")
                for i, r in enumerate(chosen)]
    png = render_contact_sheet([pixels[r["name"]][0] for r in chosen], [pixels[r["name"]][1] for r in chosen],
                               captions, columns=6)
    path.write_bytes(png)
    return path


ERROR_SHEET = "errors.png"
"""File a classifier's worst real inputs are drawn to (:func:`write_error_sheet`)."""


def _class_inputs(pair: Any, class_size: int | None, min_crack_px: int
                  ) -> list[tuple[str, np.ndarray, np.ndarray, int]]:
    """``(name, image, mask, label)`` of each input a classifier sees of one real pair: its
    tiles with a class at ``class_size``, or the whole image without one."""
    if class_size is None:
        return [(pair.name, pair.image, pair.mask, int(pair.mask.any()))]
    tiles, masks, positions, _, kinds = classified_tiles(pair.image, pair.mask, class_size, min_crack_px,
                                                         source=pair.name)
    return [(f"{pair.name}@{y},{x}", tile, mask, int(kind))
            for tile, mask, (y, x), kind in zip(tiles, masks, positions, kinds) if kind >= 0]


def _classify(model: nn.Module, folder: RealFolder, class_size: int | None, min_crack_px: int, device: Any,
              batch_size: int) -> list[tuple[str, str, tuple[int, int], int, dict[str, float]]]:
    """``(name, image name, (height, width), label, metrics)`` of every input of ``folder``
    (:func:`_class_inputs`, in order), classified in batches of ``batch_size`` same-size inputs."""
    out: list[tuple[str, str, tuple[int, int], int, dict[str, float]]] = []
    pending: list[tuple[str, str, np.ndarray, int]] = []

    def flush() -> None:
        metrics = classification_metrics_batch(
            infer.predict_logits(model, np.stack([p[2] for p in pending]), device, "classification"),
            np.asarray([p[3] for p in pending]))
        out.extend((name, source, image.shape, label, {k: float(metrics[k][i]) for k in CLASSIFICATION_KEYS})
                   for i, (name, source, image, label) in enumerate(pending))
        pending.clear()

    for pair in folder:
        for name, image, _, label in _class_inputs(pair, class_size, min_crack_px):
            if pending and (len(pending) == batch_size or image.shape != pending[0][2].shape):
                flush()
            pending.append((name, pair.name, image, label))
    if pending:
        flush()
    return out


def class_rates(table: pa.Table) -> dict[str, float]:
    """From a classification table's ``label`` and ``error`` columns: ``miss_rate`` (error over
    the crack inputs, label 1), ``false_alarm_rate`` (over label 0), their mean
    ``balanced_error`` (NaN where a class is absent) and the counts ``n_positive``, ``n_negative``."""
    labels = table.column("label").to_numpy(zero_copy_only=False)
    errors = table.column("error").to_numpy(zero_copy_only=False).astype(np.float64)
    miss = float(errors[labels == 1].mean()) if (labels == 1).any() else float("nan")
    false_alarm = float(errors[labels == 0].mean()) if (labels == 0).any() else float("nan")
    return {"miss_rate": miss, "false_alarm_rate": false_alarm, "balanced_error": 0.5 * (miss + false_alarm),
            "n_positive": int((labels == 1).sum()), "n_negative": int((labels == 0).sum())}


_TRUE_COLOUR = np.array([0.0, 0.85, 1.0])   # cyan: true boundary only
_PRED_COLOUR = np.array([1.0, 0.0, 1.0])    # magenta: predicted boundary only
_BOTH_COLOUR = np.array([1.0, 0.9, 0.0])    # yellow: both agree


def overlay_rgb(image: np.ndarray, pred: np.ndarray, true: np.ndarray, alpha: float = 0.75) -> np.ndarray:
    """RGB float image in [0, 1]: grey ``image`` with true-only, predicted-only and agreeing boundary pixels coloured."""
    grey = np.asarray(image, dtype=np.float64) / 255.0
    rgb = np.repeat(grey[..., None], 3, axis=2)
    p, t = as_binary_mask(pred, "pred"), as_binary_mask(true, "true")
    for sel, colour in ((t & ~p, _TRUE_COLOUR), (p & ~t, _PRED_COLOUR), (p & t, _BOTH_COLOUR)):
        rgb[sel] = (1 - alpha) * rgb[sel] + alpha * colour
    return rgb


def render_overlay(
    image: np.ndarray,
    prob_or_pred: np.ndarray,
    true_mask: np.ndarray,
    out_png: str | Path,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    title: str | None = None,
) -> Path:
    """Write a PNG: the image with boundaries coloured, beside the prediction.

    Over the image: true-only boundary pixels cyan, predicted-only magenta, both yellow.

    ``prob_or_pred`` is a float probability map (thresholded at ``threshold`` for the
    overlay; the right panel shows the probabilities) or a 0/1 / bool mask. Returns the path.
    """
    img = np.asarray(image)
    if img.ndim != 2 or img.dtype != np.uint8:
        raise EvaluationError(f"image: expected grey uint8 H×W, got dtype {img.dtype} shape {img.shape}")
    values = np.asarray(prob_or_pred)
    if values.shape != img.shape or np.shape(true_mask) != img.shape:
        raise EvaluationError(
            f"image, prediction and true mask: expected one shape, "
            f"got {img.shape}, {values.shape}, {np.shape(true_mask)}"
        )
    is_prob = np.issubdtype(values.dtype, np.floating)
    pred = values >= threshold if is_prob else as_binary_mask(values, "prediction")
    h, w = img.shape
    panel = 5.0
    fig = Figure(figsize=(2 * panel + 0.6, panel * h / w + 0.9), dpi=max(100, min(200, int(max(h, w) / panel))),
                 layout="constrained")
    FigureCanvasAgg(fig)
    ax_overlay, ax_pred = fig.subplots(1, 2)
    ax_overlay.imshow(overlay_rgb(img, pred, true_mask), interpolation="nearest")
    ax_overlay.set_title("boundaries over image")
    shown = ax_pred.imshow(values.astype(np.float32), cmap="magma", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax_pred.set_title("boundary probability" if is_prob else "predicted boundary")
    if is_prob:
        fig.colorbar(shown, ax=ax_pred, fraction=0.046, pad=0.02)
    for ax in (ax_overlay, ax_pred):
        ax.set_axis_off()
    fig.legend(handles=[Patch(color=_TRUE_COLOUR, label="true only"), Patch(color=_PRED_COLOUR, label="predicted only"),
                        Patch(color=_BOTH_COLOUR, label="both")], loc="lower center", ncol=3, frameon=False)
    if title:
        fig.suptitle(title)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out
