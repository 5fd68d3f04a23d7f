"""Grain statistics as a metallographer reads them, from a boundary mask or probability map.

A predicted boundary map is rarely closed: a gap of a pixel or two joins two grains into
one connected region. :func:`closed_grains` closes such gaps by a *seeded watershed*:
seeds are the pixels farther than ``seed_distance`` from any boundary pixel (so a gap
narrower than about twice that distance separates two seeds), and the grains grow from
them over the boundary map, meeting on its ridges. The result is a label image that
covers the whole image (boundary pixels go to the nearest grain across the ridge).

From the labels, following ASTM E112 (planimetric and intercept procedures):

* :func:`equivalent_grain_count` — grains counted on the image frame as the test
  rectangle: 1 per grain inside, ½ per grain cut by an edge, ¼ per corner;
* :func:`mean_grain_area` — frame area / equivalent count (E112's Ā = 1 / N_A), px²;
* :func:`grains_per_mm2` and :func:`astm_grain_size_number` — N_A at 1x from a pixel
  size in µm, and G = 3.321928 log10(N_A) − 2.954;
* :func:`mean_intercept` — mean lineal intercept along a grid of horizontal and vertical
  test lines: total line length / number of boundary crossings, px.

:func:`boundary_intercept` counts the same test lines' crossings on the boundary map itself
(E112's intersection count P: each run of boundary pixels along a line is one crossing), with
no grains closed. A gap in a predicted boundary then loses only the crossings at the gap,
where with closed grains a gap wider than the watershed closes merges two grains and loses
the whole boundary between them; in exchange every false-positive stroke (a scratch, the
ring of an inclusion) counts, and a line through a triple junction counts one crossing where
E112 counts 1½, so on true masks it reads a few per cent longer than :func:`mean_intercept`.

:func:`label_statistics` bundles these for a label image and :func:`grain_statistics`
for a boundary map, as a :class:`GrainStatistics`. All functions take numpy arrays and
return numbers; bad input raises :class:`~loop.evaluate.metrics.EvaluationError` (one
line). Lengths are in pixels, areas in px².

Conventions worth knowing when comparing with other tools: the intercept counts the line
length through boundaries too (E112's ideal zero-width boundaries), so it is longer than
the mean *interior* run between two boundary pixels by about the boundary's width along
the line; and grains cut by the frame count in :func:`grain_count` like any other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from loop.evaluate.metrics import EvaluationError, as_binary_mask

DEFAULT_SEED_DISTANCE = 2.0
"""Seeds are interior pixels farther than this (px, Euclidean) from a boundary pixel: gaps up to 4 px wide close."""

DEFAULT_LINE_SPACING = 8
"""Spacing in px of the horizontal and of the vertical test lines of :func:`mean_intercept`."""

ASTM_G_SLOPE = 3.321928
ASTM_G_OFFSET = 2.954
"""ASTM E112 planimetric grain-size number: G = ASTM_G_SLOPE · log10(N_A) − ASTM_G_OFFSET, N_A in mm⁻² at 1x."""

_FOUR = ndimage.generate_binary_structure(2, 1)
_TIE_BREAK = 1e-6


def _boundary_map(boundary: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray | None]:
    """``(is_boundary, probabilities or None)`` of a 0/1 mask or a [0, 1] probability map, checked."""
    arr = np.asarray(boundary)
    if arr.ndim != 2 or arr.size == 0:
        raise EvaluationError(f"boundary: expected a non-empty 2-D H×W map, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        return as_binary_mask(arr, "boundary"), None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold < 1.0:
        raise EvaluationError(f"threshold: expected a probability in (0, 1), got {threshold!r}")
    if not np.all(np.isfinite(arr)):
        raise EvaluationError("boundary: a float map must be probabilities in [0, 1], got NaN or inf values")
    if arr.min() < 0.0 or arr.max() > 1.0:
        raise EvaluationError(
            f"boundary: a float map must be probabilities in [0, 1], got range [{arr.min():.4g}, {arr.max():.4g}]"
        )
    return arr >= threshold, arr.astype(np.float64)


def closed_grains(
    boundary: np.ndarray,
    threshold: float = 0.5,
    seed_distance: float = DEFAULT_SEED_DISTANCE,
) -> np.ndarray:
    """Label the grains of a boundary map, closing small gaps in its boundaries.

    Parameters
    ----------
    boundary : (H, W) array
        A boundary mask (bool or integer 0/1, 1 = boundary) or a boundary probability map
        (float in [0, 1]).
    threshold : float
        Probability at or above which a pixel of a float map is boundary (ignored for masks).
    seed_distance : float
        Seeds are the non-boundary pixels farther than this from every boundary pixel
        (Euclidean, px); each 4-connected group of seeds grows into one grain. A gap of
        up to ``2 * seed_distance`` px in a boundary does not join the grains on its two
        sides; a grain or a neck of a grain narrower than about that is absorbed by or
        split from its neighbours.

    Returns
    -------
    labels : (H, W) int32 array
        Grains numbered 1..n in the scan order of their seeds, covering the whole image:
        the watershed (``skimage.segmentation.watershed``) from the seeds over the
        probability map, or over a mask's signed distance to its boundary, gives each
        boundary pixel to the grain on its side of the ridge. All 0 when no pixel is a
        seed (everything is boundary); all 1 when there is no boundary.

    Examples
    --------
    >>> m = np.zeros((20, 20), np.uint8); m[:, 9:11] = 1; m[9:11, 9:11] = 0   # 2-px gap
    >>> int(closed_grains(m).max())
    2
    """
    if isinstance(seed_distance, bool) or not isinstance(seed_distance, (int, float)) \
            or not 0 <= seed_distance < math.inf:
        raise EvaluationError(f"seed_distance: expected a finite distance >= 0 in px, got {seed_distance!r}")
    is_boundary, prob = _boundary_map(boundary, threshold)
    if not is_boundary.any():
        return np.ones(is_boundary.shape, dtype=np.int32)
    if is_boundary.all():
        return np.zeros(is_boundary.shape, dtype=np.int32)
    to_boundary = ndimage.distance_transform_edt(~is_boundary)
    markers, n = ndimage.label(to_boundary > seed_distance, structure=_FOUR)
    if n == 0:
        return np.zeros(is_boundary.shape, dtype=np.int32)
    # Signed distance: ridges along the middle of thick boundaries, basins at grain centres.
    signed = ndimage.distance_transform_edt(is_boundary) - to_boundary
    # A probability map keeps its own ridges; its plateaus (a confident model saturates at
    # 1.0) are split along the middle by a millionth of the signed distance per pixel.
    elevation = signed if prob is None else prob + _TIE_BREAK * signed
    return watershed(elevation, markers, connectivity=1).astype(np.int32)


def _labels(labels: np.ndarray) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 2 or arr.size == 0:
        raise EvaluationError(f"labels: expected a non-empty 2-D H×W label image, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0:
        raise EvaluationError(f"labels: expected non-negative integer grain ids (0 = no grain), got dtype {arr.dtype}")
    return arr


def grain_count(labels: np.ndarray) -> int:
    """Number of distinct grain ids (> 0) in a label image, grains cut by the frame included."""
    ids = np.unique(_labels(labels))
    return int(np.count_nonzero(ids))


def equivalent_grain_count(labels: np.ndarray) -> float:
    """ASTM E112 planimetric count with the image frame as the test rectangle.

    A grain that does not touch the frame counts 1; one that touches an edge but holds no
    corner pixel counts ½; each corner pixel counts ¼ for its grain (so a grain over two
    corners counts ½ and one over the whole image 1). Pixels labelled 0 belong to no grain.

    Examples
    --------
    >>> lab = np.kron(np.arange(1, 10).reshape(3, 3), np.ones((4, 4), int))   # 3×3 blocks
    >>> equivalent_grain_count(lab)                                         # 1 + 4 × ½ + 4 × ¼
    4.0
    """
    lab = _labels(labels)
    frame = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    corners = np.array([lab[0, 0], lab[0, -1], lab[-1, 0], lab[-1, -1]])
    corner_ids = np.unique(corners)
    inside = grain_count(lab) - np.count_nonzero(frame)
    edge = np.count_nonzero(np.isin(frame, corner_ids, invert=True) & (frame > 0))
    return float(inside + 0.5 * edge + 0.25 * np.count_nonzero(corners))


def mean_grain_area(labels: np.ndarray) -> float:
    """ASTM E112 mean grain area in px²: the frame's area over :func:`equivalent_grain_count` (NaN without grains)."""
    lab = _labels(labels)
    n = equivalent_grain_count(lab)
    return float(lab.size / n) if n > 0 else math.nan


def _check_pixel_size(pixel_size_um: float) -> float:
    if isinstance(pixel_size_um, bool) or not isinstance(pixel_size_um, (int, float, np.integer, np.floating)) \
            or not 0 < pixel_size_um < math.inf:
        raise EvaluationError(f"pixel_size_um: expected a positive pixel size in µm, got {pixel_size_um!r}")
    return float(pixel_size_um)


def grains_per_mm2(labels: np.ndarray, pixel_size_um: float) -> float:
    """N_A of ASTM E112: equivalent grains per mm² at 1x, for pixels ``pixel_size_um`` µm wide."""
    pixel_mm = _check_pixel_size(pixel_size_um) / 1000.0
    lab = _labels(labels)
    return equivalent_grain_count(lab) / (lab.size * pixel_mm * pixel_mm)


def astm_grain_size_number(n_a: float) -> float:
    """ASTM E112 grain-size number from N_A in grains/mm² at 1x: ``3.321928 log10(N_A) − 2.954`` (NaN when N_A <= 0).

    Examples
    --------
    >>> round(astm_grain_size_number(10_000.0), 6)
    10.333712
    """
    n_a = float(n_a)
    return ASTM_G_SLOPE * math.log10(n_a) - ASTM_G_OFFSET if n_a > 0 else math.nan


def _check_spacing(spacing: int) -> None:
    if isinstance(spacing, bool) or not isinstance(spacing, (int, np.integer)) or spacing < 1:
        raise EvaluationError(f"spacing: expected an integer >= 1 px, got {spacing!r}")


def _test_lines(image: np.ndarray, spacing: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The test lines of :func:`line_intercepts` cut from ``image``: its rows, its columns
    (transposed, so each line is a row too) and their total length in px."""
    h, w = image.shape
    rows = image[spacing // 2::spacing, :]
    cols = image[:, spacing // 2::spacing].T
    return rows, cols, rows.shape[0] * w + cols.shape[0] * h


def line_intercepts(labels: np.ndarray, spacing: int = DEFAULT_LINE_SPACING) -> tuple[int, int]:
    """Total length (px) of a grid of test lines and the number of grain boundaries they cross.

    The lines are the rows ``spacing // 2, spacing // 2 + spacing, ...`` and the columns
    likewise, each as long as the image (a row W px, a column H px). A crossing is a
    pair of neighbouring pixels on a line with different labels.
    """
    _check_spacing(spacing)
    rows, cols, length = _test_lines(_labels(labels), spacing)
    crossings = sum(np.count_nonzero(lines[:, 1:] != lines[:, :-1]) for lines in (rows, cols))
    return int(length), int(crossings)


def mean_intercept(labels: np.ndarray, spacing: int = DEFAULT_LINE_SPACING) -> float:
    """Mean lineal intercept in px: test line length / boundary crossings (:func:`line_intercepts`).

    NaN when the lines cross no boundary (a single grain, or lines too sparse).

    Examples
    --------
    >>> yy, xx = np.indices((40, 40))
    >>> lab = (yy + 5) // 10 * 5 + (xx + 5) // 10 + 1    # a window on a grid of 10-px squares
    >>> mean_intercept(lab, spacing=8)                    # 10 lines of 40 px, 4 crossings each
    10.0
    """
    length, crossings = line_intercepts(labels, spacing)
    return length / crossings if crossings else math.nan


def boundary_intercept(boundary: np.ndarray, threshold: float = 0.5,
                       spacing: int = DEFAULT_LINE_SPACING) -> float:
    """Mean lineal intercept in px counted on a boundary map: test line length / runs of boundary pixels crossed.

    The test lines are those of :func:`line_intercepts`; on each, every maximal run of
    boundary pixels is one crossing. ``boundary`` is a 0/1 mask or a probability map
    thresholded at ``threshold``. NaN when no line meets a boundary pixel.

    Examples
    --------
    >>> m = np.zeros((40, 40), np.uint8); m[:, 9:11] = 1; m[:, 29:31] = 1   # two 2-px vertical boundaries
    >>> boundary_intercept(m, spacing=8)     # 5 rows of 40 px cross 2 each; the 5 columns cross none
    40.0
    """
    _check_spacing(spacing)
    is_boundary, _ = _boundary_map(boundary, threshold)
    rows, cols, length = _test_lines(is_boundary, spacing)
    # A run starts where a line's pixel is boundary and the one before it (or the frame) is not.
    crossings = sum(np.count_nonzero(lines[:, 0]) + np.count_nonzero(lines[:, 1:] & ~lines[:, :-1])
                    for lines in (rows, cols))
    return float(length / crossings) if crossings else math.nan


def relative_error(pred: float, true: float) -> float:
    """``|pred − true| / true``; NaN when either is NaN or infinite, or ``true`` is 0."""
    pred, true = float(pred), float(true)
    if not (math.isfinite(pred) and math.isfinite(true)) or true == 0:
        return math.nan
    return abs(pred - true) / abs(true)


@dataclass(frozen=True)
class GrainStatistics:
    """Grain statistics of one image (see the module docstring); NaN where undefined."""

    count: int
    """Closed grains, those cut by the frame included."""
    equivalent_count: float
    """ASTM E112 planimetric count: inside 1, cut by an edge ½, per corner ¼."""
    mean_area: float
    """Frame area / equivalent count, px²."""
    mean_intercept: float
    """Mean lineal intercept over the test-line grid, px."""
    grains_per_mm2: float
    """N_A at 1x; NaN without a pixel size."""
    astm_g: float
    """ASTM E112 grain-size number G from N_A; NaN without a pixel size."""


def label_areas(labels: np.ndarray) -> np.ndarray:
    """Areas in px² (int64) of the grains of a label image, in id order (ids absent from it skipped)."""
    counts = np.bincount(_labels(labels).ravel())[1:]
    return counts[counts > 0].astype(np.int64)


def label_statistics(
    labels: np.ndarray,
    pixel_size_um: float | None = None,
    *,
    line_spacing: int = DEFAULT_LINE_SPACING,
) -> GrainStatistics:
    """:class:`GrainStatistics` of a grain label image (0 = no grain).

    Parameters
    ----------
    labels : (H, W) non-negative integer array, e.g. from :func:`closed_grains`.
    pixel_size_um : pixel width in µm at the image's magnification; ``None`` leaves
        ``grains_per_mm2`` and ``astm_g`` NaN.
    line_spacing : see :func:`line_intercepts`.
    """
    lab = _labels(labels)
    n_a = grains_per_mm2(lab, pixel_size_um) if pixel_size_um is not None else math.nan
    return GrainStatistics(
        count=grain_count(lab),
        equivalent_count=equivalent_grain_count(lab),
        mean_area=mean_grain_area(lab),
        mean_intercept=mean_intercept(lab, line_spacing),
        grains_per_mm2=n_a,
        astm_g=astm_grain_size_number(n_a) if pixel_size_um is not None else math.nan,
    )


def grain_statistics(
    boundary: np.ndarray,
    pixel_size_um: float | None = None,
    *,
    threshold: float = 0.5,
    seed_distance: float = DEFAULT_SEED_DISTANCE,
    line_spacing: int = DEFAULT_LINE_SPACING,
) -> GrainStatistics:
    """:class:`GrainStatistics` of a boundary map: :func:`label_statistics` of its :func:`closed_grains`.

    Parameters
    ----------
    boundary : (H, W) boundary mask (0/1) or probability map (float in [0, 1]).
    pixel_size_um : pixel width in µm; ``None`` leaves ``grains_per_mm2`` and ``astm_g`` NaN.
    threshold, seed_distance : see :func:`closed_grains`.
    line_spacing : see :func:`line_intercepts`.

    Examples
    --------
    >>> m = np.zeros((40, 40), np.uint8); m[5::10, :] = 1; m[:, 5::10] = 1   # 10-px grid
    >>> s = grain_statistics(m, pixel_size_um=1.0)
    >>> s.count, s.equivalent_count, s.mean_area, s.mean_intercept, round(s.astm_g, 3)
    (25, 16.0, 100.0, 10.0, 10.334)
    """
    if pixel_size_um is not None:
        _check_pixel_size(pixel_size_um)
    return label_statistics(closed_grains(boundary, threshold, seed_distance), pixel_size_um,
                            line_spacing=line_spacing)
