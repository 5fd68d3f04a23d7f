"""Per-sample metrics: pure numpy functions on one prediction and its truth.

Segmentation metrics compare two binary *boundary* masks of the same shape (1 = grain
boundary, 0 = grain interior): the paper's pixel error and intersection over union per
class and averaged (§2.2, §3.2.3), a boundary F1 score that forgives small displacements,
and the grain statistics materials scientists read (number of grains, grain-size
distribution). Classification metrics score one sample's logits against its class.

Conventions where a ratio has an empty denominator (both masks agree trivially):
IoU of a class absent from both masks is 1.0; boundary precision with no predicted
boundary is 1.0 and recall with no true boundary is 1.0 (so F1 is 1.0 only when both
are empty, 0.0 when exactly one is); the grain-size distance is NaN when exactly one
mask has no grain (there is no distribution to compare) and 0.0 when neither has.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage, special, stats
from loop.errors import InputError

DEFAULT_TOLERANCE = 2
"""Boundary F1 tolerance in pixels: a predicted boundary pixel this close to a true one is a hit."""

DEFAULT_MIN_GRAIN_AREA = 10
"""Connected regions smaller than this many pixels are not counted as grains (specks, gaps)."""

SEGMENTATION_KEYS = (
    "error", "iou_boundary", "iou_background", "miou", "iou",
    "boundary_precision", "boundary_recall", "boundary_f1",
    "grain_count_pred", "grain_count_true", "grain_count_rel_error", "grain_size_distance",
)
"""Keys of :func:`segmentation_metrics`, in order."""

CLASSIFICATION_KEYS = ("loss", "p_true", "error", "pred")
"""Keys of :func:`classification_metrics`, in order."""

# 4-connectivity: two grains touching only at a corner of a 1-px diagonal boundary stay apart.
_GRAIN_STRUCTURE = ndimage.generate_binary_structure(2, 1)


class EvaluationError(InputError):
    """Inputs to a metric, an inference or an evaluation are not what was expected."""


def as_binary_mask(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    """Return ``mask`` as a 2-D bool array, checking it holds only 0 and 1.

    Accepts bool or integer arrays with values in {0, 1}. A 0/255 mask or a float
    probability map is refused (threshold it first), because silently treating 255 or
    0.3 as "boundary" hides a bug upstream.
    """
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise EvaluationError(f"{name}: expected a 2-D H×W mask, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if not np.issubdtype(arr.dtype, np.integer):
        raise EvaluationError(f"{name}: expected a bool or integer 0/1 mask, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() > 1):
        raise EvaluationError(
            f"{name}: expected values in {{0, 1}}, got range [{arr.min()}, {arr.max()}]"
        )
    return arr.astype(bool)


def _pair(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = as_binary_mask(pred, "pred")
    t = as_binary_mask(true, "true")
    if p.shape != t.shape:
        raise EvaluationError(f"pred and true: shapes differ, {p.shape} vs {t.shape}")
    if p.size == 0:
        raise EvaluationError("pred and true: empty masks (0 pixels)")
    return p, t


def pixel_error(pred: np.ndarray, true: np.ndarray) -> float:
    """Fraction of pixels whose class differs between ``pred`` and ``true``."""
    p, t = _pair(pred, true)
    return float(np.count_nonzero(p != t) / p.size)


def _iou(p: np.ndarray, t: np.ndarray) -> float:
    union = np.count_nonzero(p | t)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(p & t) / union)


def iou_per_class(pred: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    """Intersection over union of the boundary class and of the background class.

    Returns ``(iou_boundary, iou_background)``; a class absent from both masks scores 1.0.
    """
    p, t = _pair(pred, true)
    return _iou(p, t), _iou(~p, ~t)


def mean_iou(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean of the per-class IoUs (boundary, background): the paper's IoU metric."""
    return float(np.mean(iou_per_class(pred, true)))


_DILATION_MAX_TOL = 8


def _within(mask: np.ndarray, tol: float) -> np.ndarray:
    """Pixels within Euclidean distance ``tol`` of a ``True`` pixel of ``mask`` (non-empty).

    For the usual few-pixel tolerance a dilation by the disk of radius ``tol`` is exactly
    ``distance_transform_edt(~mask) <= tol`` and about 4x faster on 512² masks; wide
    tolerances use the distance transform, whose cost does not grow with ``tol``.
    """
    if tol > _DILATION_MAX_TOL:
        return ndimage.distance_transform_edt(~mask) <= tol
    r = int(math.floor(tol))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return ndimage.binary_dilation(mask, structure=yy * yy + xx * xx <= tol * tol)


def boundary_f1(pred: np.ndarray, true: np.ndarray, tol: float = DEFAULT_TOLERANCE) -> tuple[float, float, float]:
    """Boundary precision, recall and F1 with a distance tolerance of ``tol`` pixels.

    Precision is the fraction of predicted boundary pixels within Euclidean distance
    ``tol`` of a true boundary pixel; recall is the fraction of true boundary pixels
    within ``tol`` of a predicted one. Returns ``(precision, recall, f1)``.
    """
    if not (isinstance(tol, (int, float, np.integer, np.floating)) and tol >= 0):
        raise EvaluationError(f"tol: expected a distance >= 0 in pixels, got {tol!r}")
    p, t = _pair(pred, true)
    n_pred, n_true = np.count_nonzero(p), np.count_nonzero(t)
    if n_pred == 0 and n_true == 0:
        return 1.0, 1.0, 1.0
    precision = 1.0 if n_pred == 0 else (
        0.0 if n_true == 0 else float(np.count_nonzero(_within(t, tol)[p]) / n_pred)
    )
    recall = 1.0 if n_true == 0 else (
        0.0 if n_pred == 0 else float(np.count_nonzero(_within(p, tol)[t]) / n_true)
    )
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return precision, recall, float(f1)


def grain_labels(boundary: np.ndarray, min_area: int = DEFAULT_MIN_GRAIN_AREA) -> np.ndarray:
    """Label the grains of a boundary mask.

    Grains are the 4-connected components of the non-boundary region; components smaller
    than ``min_area`` pixels are dropped (label 0, like the boundary). Grains cut by the
    image border count like any other. Returns an int32 label image with grains numbered
    1..n in scan order. A gap in a boundary joins two grains here; for closed grains see
    :func:`loop.evaluate.grains.closed_grains`.
    """
    if isinstance(min_area, bool) or not isinstance(min_area, (int, np.integer)) or min_area < 1:
        raise EvaluationError(f"min_area: expected an integer >= 1 pixel, got {min_area!r}")
    b = as_binary_mask(boundary, "boundary")
    labels, n = ndimage.label(~b, structure=_GRAIN_STRUCTURE)
    if n == 0:
        return labels.astype(np.int32)
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    keep = areas >= min_area
    keep[0] = False
    # Renumber the kept components 1..k, dropped ones to 0.
    new_ids = np.zeros(n + 1, dtype=np.int32)
    new_ids[keep] = np.arange(1, np.count_nonzero(keep) + 1, dtype=np.int32)
    return new_ids[labels]


def grain_areas(boundary: np.ndarray, min_area: int = DEFAULT_MIN_GRAIN_AREA) -> np.ndarray:
    """Areas in pixels (int64) of the grains of a boundary mask, in label order."""
    labels = grain_labels(boundary, min_area)
    return np.bincount(labels.ravel())[1:].astype(np.int64)


def equivalent_diameters(areas: np.ndarray) -> np.ndarray:
    """Diameter of the circle of the same area, ``sqrt(4 A / pi)``, for each area."""
    return np.sqrt(4.0 * np.asarray(areas, dtype=np.float64) / math.pi)


def grain_count_rel_error(count_pred: int, count_true: int) -> float:
    """``|n_pred - n_true| / n_true`` (denominator at least 1, so no true grain is not a division by zero)."""
    return abs(int(count_pred) - int(count_true)) / max(int(count_true), 1)


def grain_size_distance(areas_pred: np.ndarray, areas_true: np.ndarray) -> float:
    """Distance between two grain-size distributions.

    The 1-D Wasserstein (earth mover's) distance between the distributions of the natural
    log of the equivalent diameters (``scipy.stats.wasserstein_distance``). On the log
    scale it is unitless and scale-free: predicted grains uniformly ``s`` times wider
    give ``|ln s|``. 0.0 when neither has a grain, NaN when exactly one has none.
    """
    a_p, a_t = np.asarray(areas_pred), np.asarray(areas_true)
    if a_p.size == 0 and a_t.size == 0:
        return 0.0
    if a_p.size == 0 or a_t.size == 0:
        return math.nan
    return float(stats.wasserstein_distance(
        np.log(equivalent_diameters(a_p)), np.log(equivalent_diameters(a_t))
    ))


def segmentation_metrics(
    pred: np.ndarray,
    true: np.ndarray,
    tol: float = DEFAULT_TOLERANCE,
    min_grain_area: int = DEFAULT_MIN_GRAIN_AREA,
) -> dict[str, float]:
    """All segmentation metrics of one predicted boundary mask against the truth.

    Parameters
    ----------
    pred, true : H×W bool or 0/1 integer arrays, 1 = boundary.
    tol : boundary F1 tolerance in pixels.
    min_grain_area : smallest region, in pixels, counted as a grain.

    Returns
    -------
    dict with the keys of :data:`SEGMENTATION_KEYS`: ``error`` (pixel error),
    ``iou_boundary``, ``iou_background``, ``miou`` and ``iou`` (the same mean IoU, the
    name the policies read), ``boundary_precision``, ``boundary_recall``,
    ``boundary_f1``, ``grain_count_pred``, ``grain_count_true``,
    ``grain_count_rel_error`` and ``grain_size_distance`` (Wasserstein distance of log
    equivalent diameters). All values are Python floats.
    """
    p, t = _pair(pred, true)
    iou_b, iou_bg = _iou(p, t), _iou(~p, ~t)
    precision, recall, f1 = boundary_f1(p, t, tol)
    areas_p, areas_t = grain_areas(p, min_grain_area), grain_areas(t, min_grain_area)
    miou = (iou_b + iou_bg) / 2
    return {
        "error": float(np.count_nonzero(p != t) / p.size),
        "iou_boundary": iou_b,
        "iou_background": iou_bg,
        "miou": miou,
        "iou": miou,
        "boundary_precision": precision,
        "boundary_recall": recall,
        "boundary_f1": f1,
        "grain_count_pred": float(areas_p.size),
        "grain_count_true": float(areas_t.size),
        "grain_count_rel_error": grain_count_rel_error(areas_p.size, areas_t.size),
        "grain_size_distance": grain_size_distance(areas_p, areas_t),
    }


def binary_cross_entropy(logits: np.ndarray, true: np.ndarray) -> float:
    """Mean per-pixel binary cross-entropy (nats) of boundary *logits* against a 0/1 mask.

    Computed from logits as ``mean(log(1 + exp(z)) - t z)``, which stays finite for
    confident predictions where a probability would round to 0 or 1.
    """
    t = as_binary_mask(true, "true")
    z = np.asarray(logits, dtype=np.float64)
    if z.shape != t.shape:
        raise EvaluationError(f"logits and true: shapes differ, {z.shape} vs {t.shape}")
    return float(np.mean(np.logaddexp(0.0, z) - np.where(t, z, 0.0)))


def classification_metrics_batch(logits: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample classification metrics for a batch.

    ``logits`` is (N, C), ``labels`` (N,) integer classes in [0, C). Returns arrays of
    length N: ``loss`` (cross-entropy in nats), ``p_true`` (softmax probability of the
    true class), ``error`` (1.0 when the arg-max class is wrong, else 0.0) and ``pred``
    (the arg-max class, as float).
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if z.ndim != 2 or z.shape[1] < 2:
        raise EvaluationError(f"logits: expected shape (N, C) with C >= 2, got {z.shape}")
    if y.shape != (z.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise EvaluationError(f"labels: expected {z.shape[0]} integer classes, got shape {y.shape} dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= z.shape[1]):
        raise EvaluationError(f"labels: expected classes in [0, {z.shape[1] - 1}], got range [{y.min()}, {y.max()}]")
    log_p = special.log_softmax(z, axis=1)
    log_p_true = log_p[np.arange(z.shape[0]), y]
    pred = np.argmax(z, axis=1)
    return {
        "loss": -log_p_true,
        "p_true": np.exp(log_p_true),
        "error": (pred != y).astype(np.float64),
        "pred": pred.astype(np.float64),
    }


def classification_metrics(logits: np.ndarray, label: int) -> dict[str, float]:
    """Classification metrics of one sample: ``loss``, ``p_true``, ``error`` (0/1), ``pred``.

    ``logits`` is the (C,) output of the model for the sample, ``label`` its true class.
    """
    z = np.asarray(logits)
    if z.ndim != 1:
        raise EvaluationError(f"logits: expected one sample's (C,) vector, got shape {z.shape}")
    batch = classification_metrics_batch(z[None, :], np.asarray([label]))
    return {key: float(batch[key][0]) for key in CLASSIFICATION_KEYS}


VISIBILITY_MARGIN = 3
"""Pixels farther than this from every boundary pixel are the interior :func:`boundary_visibility` compares with."""


def boundary_visibility(image: np.ndarray, true: np.ndarray, margin: int = VISIBILITY_MARGIN) -> float:
    """How much the true boundaries stand out in the image: a property of the sample, not of a model.

    The mean Sobel gradient magnitude of the (grey, 0..255) image on the boundary pixels and
    their one-pixel rim, divided by its mean over the interior (pixels farther than ``margin``
    from every boundary pixel). About 1 when the boundary is not in the image at all (no line,
    no grey step between the grains, or lost under noise and texture): a failure there is one
    no model can fix. NaN when the mask has no boundary pixel or no interior.
    """
    t = as_binary_mask(true, "true")
    if np.ndim(image) != 2 or np.shape(image) != t.shape:
        raise EvaluationError(f"image: expected a 2-D array of the mask's shape {t.shape}, got shape {np.shape(image)}")
    near = ndimage.binary_dilation(t, iterations=1)
    far = ~ndimage.binary_dilation(t, iterations=margin)
    if not t.any() or not far.any():
        return float("nan")
    grey = np.asarray(image, dtype=np.float64) / 255.0
    gradient = np.hypot(ndimage.sobel(grey, axis=0), ndimage.sobel(grey, axis=1))
    eps = 1e-6  # a flat image (no gradient anywhere) is as invisible as it gets: 1
    return float((gradient[near].mean() + eps) / (gradient[far].mean() + eps))
