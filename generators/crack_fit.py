"""Fit the crack generator's distributions from a few labelled real crack masks (paper §3.1.1).

The paper measured "intensity, width, length of segments between points where the cracks
bend and angles at these positions, and the number of segments" on real cracks and used the
resulting distributions as the generator's parameters. :func:`fit_cracks` does that on a
folder of masks:

1. Each mask is binarised (non-zero = crack) and skeletonized
   (:func:`skimage.morphology.skeletonize`); every 8-connected skeleton piece of at least
   :data:`MIN_SKELETON_PX` pixels is one crack.
2. A crack's centreline is the longest path through its skeleton (geodesic between the two
   pixels farthest apart, :func:`scipy.sparse.csgraph.dijkstra`), simplified to a polyline
   by Douglas–Peucker (:func:`skimage.measure.approximate_polygon`, tolerance
   :data:`POLYGON_TOLERANCE_PX` plus half the crack's width). The polyline gives the number
   of segments, their lengths and the turn at each bend.
3. Widths along the centreline: every crack pixel is assigned to its nearest centreline
   pixel (distance-transform feature map); in windows of a few widths, width = assigned
   area / centreline length (unbiased at any orientation). With the image beside the
   mask, the widths are scaled to the width the image shows: the crack's summed darkness
   over its intensity and length (a hand-drawn mask is often wider than the crack).
4. With the images beside the masks (``DIR/images`` + ``DIR/masks``), the intensity is the
   median grey of a ring around the crack minus that of its centreline, and the
   background is measured on every image as the generator draws it: a plane (its mean
   grey and a linear shading ramp) plus a texture. Off the crack, the least-squares plane
   gives ``texture_mean`` (its mean) and ``shading`` (its rise from the centre to the
   edge along its steepest direction, the generator's ramp amplitude) and the sd of the
   rest gives ``texture_contrast``.

5. Where cracks sit: the centroid of each crack's pixels, as fractions of the mask's height
   and width. ``centre_spread`` (the side of the central square the generator puts a
   crack's midpoint in) is calibrated by simulation, as clipping at the image edge pulls a
   visible crack's centroid inwards: cracks are drawn from the fitted geometry at each
   value of :data:`CENTRE_GRID` (the same draws for every value) and the value whose mean
   centroid offset from the centre matches the real cracks' is interpolated
   (:func:`fit_centre_spread`); its bounds are that value ± half :data:`_MIN_SPAN`.

Each crack gives one estimate per distribution parameter (its segment count, its median
segment length, the sd of its log lengths, the rms of its turns, its median width, the sd
of its log widths, its intensity); a dimension's fitted bounds are the 10th–90th
percentiles of those estimates, widened to a minimum span and kept inside the generator's
hard limits. Lengths and widths are fractions of the mask's side (the geometric mean of
height and width), as in the generator. Dimensions that cannot be measured (texture,
blur, noise, crack probability) keep the generator's defaults; the ``texture`` dimension is
left out of the file so it fits any exemplar set.

To fit on tiles of a classifier's input size rather than on whole images (lengths and
widths are then fractions of the tile's side, as the generator renders a tile), pass the
tiles to :func:`fit_pairs`; ``loop fit-cracks DIR --tile-size N`` does so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra
from skimage.measure import approximate_polygon
from skimage.morphology import skeletonize

from generators.cracks import LIMITS, SPACE, TEXTURE_DIM, CrackSpaceError, crack_shape, rasterize_crack
from generators import space
from generators.space import Continuous, Dimension, LogRange, ParamSpace

MIN_SKELETON_PX = 8
"""Skeleton pieces shorter than this (px) are specks, not cracks."""

POLYGON_TOLERANCE_PX = 1.5
"""Douglas–Peucker tolerance (px) on top of half the crack's width: skeleton jitter is not a bend."""

DARKNESS_WIDTH_FACTOR = (0.25, 1.5)
"""Bounds of the image's crack width over the mask's (see :func:`_darkness_width_factor`)."""

MIN_INTENSITY_FOR_WIDTH = 0.02
"""Cracks fainter than this (grey) keep their mask's width: their darkness is mostly texture."""

CENTRE_GRID = np.linspace(0.0, 1.0, 11)
"""``centre_spread`` values simulated by :func:`fit_centre_spread`."""

CENTRE_DRAWS = 200
"""Simulated cracks per value of :data:`CENTRE_GRID`."""

CENTRE_SIZE = 96
"""Side (px) the calibration cracks are rasterised at (lengths and widths are fractions of it)."""

QUANTILES = (0.1, 0.9)
"""Fitted bounds: these percentiles of the per-crack estimates."""

SUFFIXES = (".png", ".tif", ".tiff", ".bmp")
"""Mask and image files read (case-insensitive)."""

_MIN_SPAN = {  # smallest fitted span per dimension (absolute, or a ratio high/low for log ranges)
    "segments_mean": 1.0, "segment_length": 1.5, "length_spread": 0.1, "bend_sigma": 5.0,
    "width": 1.5, "width_variation": 0.1, "intensity": 0.04, "texture_mean": 0.05, "texture_contrast": 0.02,
    "shading": 0.04, "centre_spread": 0.2,
}


class CrackFitError(CrackSpaceError):
    """A mask folder or a mask cannot be used for fitting."""


@dataclass(frozen=True)
class CrackMeasure:
    """What was measured on one crack (lengths and widths as fractions of the mask's side)."""

    source: str
    segments: int
    segment_lengths: np.ndarray
    turns_deg: np.ndarray
    widths: np.ndarray
    intensity: float | None = None
    centroid: tuple[float, float] | None = None
    """Centroid of the crack's pixels (row, column) as fractions of the mask's height and width."""

    def estimates(self) -> dict[str, float]:
        """This crack's estimate of each distribution parameter it informs."""
        out = {
            "segments_mean": float(self.segments),
            "segment_length": float(np.median(self.segment_lengths)),
            "width": float(np.median(self.widths)),
            "width_variation": float(np.std(np.log(self.widths))),
        }
        if self.segments >= 2:
            out["length_spread"] = float(np.std(np.log(self.segment_lengths)))
            out["bend_sigma"] = float(np.sqrt(np.mean(self.turns_deg ** 2)))
        if self.intensity is not None:
            out["intensity"] = self.intensity
        return out


@dataclass
class CrackFit:
    """The result of :func:`fit_cracks`: the fitted space, the measurements and a summary.

    ``space`` has every crack dimension but ``texture`` (which the exemplars decide):
    :class:`~generators.cracks.CrackGenerator` fills that one in.
    """

    space: ParamSpace
    measures: list[CrackMeasure]
    n_masks: int
    n_empty: int
    fitted: dict[str, tuple[float, float]] = field(default_factory=dict)
    medians: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    background: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The space file's content: ``dimensions`` (``ParamSpace.to_dict()``) and a ``fit`` summary."""
        dims = [d.to_dict() for d in self.space]
        fit = {"n_masks": self.n_masks, "n_empty_masks": self.n_empty, "n_cracks": len(self.measures),
               "quantiles": list(QUANTILES), "fitted": sorted(self.fitted),
               "median": {k: float(v) for k, v in self.medians.items()},
               "n_estimates": dict(self.counts)}
        return {"dimensions": dims, "fit": fit}


def _longest_path(coords: np.ndarray) -> np.ndarray:
    """The pixel coordinates (row, col) along the longest geodesic path of an 8-connected skeleton piece."""
    index = {(int(r), int(c)): i for i, (r, c) in enumerate(coords)}
    rows, cols, weights = [], [], []
    for i, (r, c) in enumerate(coords):
        for dr, dc in ((0, 1), (1, -1), (1, 0), (1, 1)):
            j = index.get((int(r) + dr, int(c) + dc))
            if j is not None:
                rows.append(i)
                cols.append(j)
                weights.append(math.sqrt(2.0) if dr and dc else 1.0)
    n = len(coords)
    graph = coo_matrix((weights, (rows, cols)), shape=(n, n)).tocsr()
    far = int(np.argmax(np.where(np.isfinite(d := dijkstra(graph, directed=False, indices=0)), d, -1)))
    dist, pred = dijkstra(graph, directed=False, indices=far, return_predecessors=True)
    end = int(np.argmax(np.where(np.isfinite(dist), dist, -1)))
    path = [end]
    while path[-1] != far:
        path.append(int(pred[path[-1]]))
    return coords[np.asarray(path[::-1])]


def measure_mask(mask: np.ndarray, image: np.ndarray | None = None, source: str = "mask") -> list[CrackMeasure]:
    """Measure every crack of one mask (non-zero = crack); with its grey ``image``, the intensity too."""
    m = np.asarray(mask) > 0
    if m.ndim != 2:
        raise CrackFitError(f"{source}: expected a 2-D mask, got shape {m.shape}")
    if image is not None and np.shape(image) != m.shape:
        raise CrackFitError(f"{source}: image shape {np.shape(image)} differs from the mask's {m.shape}")
    if not m.any():
        return []
    side = math.sqrt(m.shape[0] * m.shape[1])
    skeleton = skeletonize(m)
    labels, n = ndimage.label(skeleton, structure=np.ones((3, 3)))
    components = ndimage.label(m, structure=np.ones((3, 3)))[0]
    out = []
    for k in range(1, n + 1):
        coords = np.argwhere(labels == k)
        if len(coords) < MIN_SKELETON_PX:
            continue
        path = _longest_path(coords)
        crack = components == components[tuple(path[len(path) // 2])]
        widths_px = _local_widths(crack, path)
        tolerance = POLYGON_TOLERANCE_PX + 0.5 * float(np.median(widths_px))
        poly = approximate_polygon(path.astype(float), tolerance=tolerance)
        steps = np.diff(poly, axis=0)
        lengths = np.hypot(steps[:, 0], steps[:, 1])
        keep = lengths > 0
        steps, lengths = steps[keep], lengths[keep]
        heading = np.arctan2(steps[:, 0], steps[:, 1])
        turns = np.degrees(np.angle(np.exp(1j * np.diff(heading))))
        intensity = None
        if image is not None:
            ring = ndimage.binary_dilation(crack, iterations=4) & ~ndimage.binary_dilation(m, iterations=1)
            if ring.any():
                grey = np.asarray(image, dtype=np.float64) / 255.0
                background = float(np.median(grey[ring]))
                intensity = float(background - np.median(grey[path[:, 0], path[:, 1]]))
                widths_px = widths_px * _darkness_width_factor(grey, crack, path, background, intensity,
                                                               float(np.median(widths_px)))
        out.append(CrackMeasure(source=source, segments=len(lengths), segment_lengths=lengths / side,
                                turns_deg=turns, widths=widths_px / side, intensity=intensity,
                                centroid=mask_centroid(crack)))
    return out


def _darkness_width_factor(grey: np.ndarray, crack: np.ndarray, path: np.ndarray, background: float,
                           intensity: float, mask_width: float) -> float:
    """How much wider (> 1) or narrower (< 1) the crack is in the image than in its mask.

    The generator darkens a pixel by ``intensity`` × the part of it the crack covers, so the
    darkness summed across the crack is ``intensity`` × its width. Summed over the crack
    and two pixels around it (below the ring's median grey) and divided by ``intensity`` ×
    its length, the darkness gives the width the image shows, which a mask drawn
    generously overstates. The factor is clipped to [:data:`DARKNESS_WIDTH_FACTOR`]; 1
    when the crack is too faint to measure.
    """
    if intensity < MIN_INTENSITY_FOR_WIDTH:
        return 1.0
    region = ndimage.binary_dilation(crack, iterations=2)
    darkness = float(np.sum(background - grey[region]))
    # The skeleton stops about half a width short of each tip.
    length = float(np.sum(np.hypot(*np.diff(path, axis=0).T))) + 1.0 + mask_width
    width = darkness / (intensity * length)
    if not math.isfinite(width) or width <= 0:
        return 1.0
    low, high = DARKNESS_WIDTH_FACTOR
    return float(np.clip(width / mask_width, low, high))


def _local_widths(crack: np.ndarray, path: np.ndarray) -> np.ndarray:
    """Crack width (px) along ``path`` in windows of a few widths: mask area nearest the window / its length.

    Area over length is unbiased for any orientation, where the distance transform along a
    diagonal band is off by up to a pixel.
    """
    on_path = np.zeros(crack.shape, dtype=bool)
    on_path[path[:, 0], path[:, 1]] = True
    order = np.zeros(crack.shape, dtype=np.int64)
    order[path[:, 0], path[:, 1]] = np.arange(len(path))
    _, (rows, cols) = ndimage.distance_transform_edt(~on_path, return_indices=True)
    nearest = order[rows[crack], cols[crack]]
    area = np.bincount(nearest, minlength=len(path)).astype(float)
    step = np.hypot(*np.diff(path, axis=0).T)
    # Each path pixel stands for half of each step beside it.
    length = np.concatenate([[0.0], step / 2]) + np.concatenate([step / 2, [0.0]])
    length[[0, -1]] += 0.5
    window = max(6.0, 2.0 * area.sum() / length.sum())
    chunk = np.floor(np.cumsum(length) / window).astype(np.int64)
    chunk_area, chunk_length = np.bincount(chunk, area), np.bincount(chunk, length)
    keep = chunk_length > 0
    if keep.sum() > 2:
        # The last window is usually a short stub: a poor estimate.
        keep[np.flatnonzero(keep)[-1]] &= chunk_length[keep][-1] >= window / 2
    return chunk_area[keep] / chunk_length[keep]


def measure_background(image: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, float, float]:
    """Mean grey, texture contrast and shading of the background off the crack, as the generator draws them.

    A least-squares plane ``a + b·x + c·y`` over the pixels off the crack (``x``, ``y`` from
    -1 at one edge to 1 at the other): the mean grey is the pixels' mean, the shading
    ``hypot(b, c)`` (the generator's ramp amplitude), the contrast the sd of the pixels
    about the plane.
    """
    grey = np.asarray(image, dtype=np.float64) / 255.0
    off = np.ones(grey.shape, bool) if mask is None else ~ndimage.binary_dilation(np.asarray(mask) > 0, iterations=2)
    if not off.any():
        off = np.ones(grey.shape, bool)
    rows, cols = np.nonzero(off)
    y = rows / max(grey.shape[0] - 1, 1) * 2.0 - 1.0
    x = cols / max(grey.shape[1] - 1, 1) * 2.0 - 1.0
    values = grey[rows, cols]
    design = np.stack([np.ones_like(x), x, y], axis=1)
    coef, *_ = np.linalg.lstsq(design, values, rcond=None)
    residual = values - design @ coef
    return float(values.mean()), float(residual.std()), float(math.hypot(coef[1], coef[2]))


def _files(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir())
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SUFFIXES}


def _read(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()
            return np.asarray(img.convert("L") if img.mode not in ("L", "1", "I", "I;16", "F") else img)
    except (OSError, SyntaxError, ValueError) as exc:
        raise CrackFitError(f"{path}: cannot be read as an image ({exc})") from exc


def _bounds(dim: Dimension, values: Sequence[float]) -> tuple[float, float]:
    lo_limit, hi_limit = LIMITS[dim.name]
    lo, hi = (float(np.quantile(values, q)) for q in QUANTILES)
    span = _MIN_SPAN[dim.name]
    if isinstance(dim, LogRange):
        lo = max(lo, lo_limit * 1.0001, 1e-6)
        hi = max(hi, lo)
        if hi / lo < span:
            centre = math.sqrt(lo * hi)
            lo, hi = centre / math.sqrt(span), centre * math.sqrt(span)
    elif hi - lo < span:
        centre = 0.5 * (lo + hi)
        lo, hi = centre - span / 2, centre + span / 2
    lo, hi = max(lo, lo_limit), min(hi, hi_limit)
    if not lo < hi:
        # Pushed against a limit: keep the minimum span on the inside.
        lo, hi = (hi_limit - span, hi_limit) if hi >= hi_limit else (lo_limit, lo_limit + span)
    return float(lo), float(hi)


def fit_cracks(folder: str | Path) -> CrackFit:
    """Fit the crack space from the masks in ``folder`` (or ``folder/masks``, with ``folder/images`` beside).

    Raises :class:`CrackFitError` naming the folder when it has no masks or no crack, and
    naming a file that cannot be read or whose image and mask sizes differ.
    """
    root = Path(folder)
    if not root.is_dir():
        raise CrackFitError(f"mask folder {root}: not found")
    mask_dir = root / "masks" if (root / "masks").is_dir() else root
    image_dir = root / "images" if mask_dir != root and (root / "images").is_dir() else None
    masks = _files(mask_dir)
    if not masks:
        raise CrackFitError(f"mask folder {mask_dir}: no mask images in it (expected files ending in {', '.join(SUFFIXES)})")
    images = _files(image_dir) if image_dir is not None else {}

    def pairs() -> Iterator[tuple[str, np.ndarray, np.ndarray | None]]:
        for name, path in masks.items():
            mask = _read(path)
            image = _read(images[name]) if name in images else None
            if image is not None and image.shape != mask.shape:
                raise CrackFitError(f"{images[name]}: image size {image.shape[::-1]} differs from mask {path} size "
                                    f"{mask.shape[::-1]} (width×height)")
            yield str(path), mask, image

    return fit_pairs(pairs(), where=f"mask folder {mask_dir}")


def fit_pairs(pairs: Iterable[tuple[str, np.ndarray, np.ndarray | None]], where: str = "masks") -> CrackFit:
    """Fit the crack space from ``(source, mask, image or None)`` triples (see the module docstring).

    Raises :class:`CrackFitError` naming ``where`` when there are no masks or no crack in them.
    """
    measures: list[CrackMeasure] = []
    background: dict[str, list[float]] = {"texture_mean": [], "texture_contrast": [], "shading": []}
    empty = n_masks = 0
    for source, mask, image in pairs:
        n_masks += 1
        if image is not None:
            if image.dtype != np.uint8:
                image = _to_uint8(image)
            mean, contrast, shading = measure_background(image, mask)
            background["texture_mean"].append(mean)
            background["texture_contrast"].append(contrast)
            background["shading"].append(shading)
        found = measure_mask(mask, image, source)
        empty += not found
        measures.extend(found)
    if not n_masks:
        raise CrackFitError(f"{where}: no masks to fit")
    if not measures:
        raise CrackFitError(f"{where}: no crack in any of its {n_masks} masks "
                            f"(a crack is a non-zero skeleton piece of at least {MIN_SKELETON_PX} px)")
    estimates: dict[str, list[float]] = {}
    for m in measures:
        for key, value in m.estimates().items():
            estimates.setdefault(key, []).append(value)
    estimates.update({k: v for k, v in background.items() if v})
    dims, fitted, medians, counts = [], {}, {}, {}
    for dim in SPACE:
        if dim.name == TEXTURE_DIM:
            continue  # the exemplars decide it; the generator fills it in
        values = estimates.get(dim.name)
        if not values:
            dims.append(dim)
            continue
        lo, hi = _bounds(dim, values)
        fitted[dim.name] = (lo, hi)
        medians[dim.name] = float(np.median(values))
        counts[dim.name] = len(values)
        kind = LogRange if isinstance(dim, LogRange) else Continuous
        dims.append(kind(dim.name, dim.unit, dim.description, lo, hi))
    centroids = [m.centroid for m in measures if m.centroid is not None]
    spread_dim = SPACE["centre_spread"]
    spread = fit_centre_spread(centroids, ParamSpace(dims))
    lo, hi = _bounds(spread_dim, [spread])
    fitted[spread_dim.name], medians[spread_dim.name], counts[spread_dim.name] = (lo, hi), spread, len(centroids)
    dims = [Continuous(d.name, d.unit, d.description, lo, hi) if d.name == spread_dim.name else d for d in dims]
    return CrackFit(space=ParamSpace(dims), measures=measures, n_masks=n_masks, n_empty=empty,
                    fitted=fitted, medians=medians, counts=counts, background=background)


def mask_centroid(mask: np.ndarray) -> tuple[float, float]:
    """Centroid (row, column) of a non-empty mask's pixels, as fractions of its height and width."""
    rows, cols = np.nonzero(mask)
    return float(rows.mean() + 0.5) / mask.shape[0], float(cols.mean() + 0.5) / mask.shape[1]


def centroid_offset(centroids: Sequence[tuple[float, float]]) -> float:
    """Mean distance of the centroids from the image centre along each axis (fractions of the side)."""
    return float(np.mean(np.abs(np.asarray(centroids, dtype=float) - 0.5)))


def fit_centre_spread(centroids: Sequence[tuple[float, float]], geometry: ParamSpace, seed: int = 0) -> float:
    """The ``centre_spread`` at which cracks drawn from ``geometry`` (a space with the crack
    shape's dimensions) show the mean centroid offset of ``centroids`` (see the module
    docstring, step 5); clipped to the grid's ends."""
    simulated = []
    for spread in CENTRE_GRID:
        rng = np.random.default_rng(seed)  # the same cracks at every spread, so the curve is smooth
        found = []
        for params in geometry.sample(rng, CENTRE_DRAWS):
            _, mask = rasterize_crack(crack_shape(rng, {**params, "centre_spread": float(spread)}, CENTRE_SIZE),
                                      CENTRE_SIZE)
            if mask.any():
                found.append(mask_centroid(mask))
        simulated.append(centroid_offset(found))
    curve = np.maximum.accumulate(np.asarray(simulated))
    return float(np.interp(centroid_offset(centroids), curve, CENTRE_GRID))


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    a = arr.astype(np.float64)
    lo, hi = float(a.min()), float(a.max())
    return np.zeros(a.shape, np.uint8) if hi == lo else np.round((a - lo) * 255.0 / (hi - lo)).astype(np.uint8)


def save_space_file(fit: CrackFit, path: str | Path) -> Path:
    """Write ``fit``'s space as TOML to ``path`` (readable by :func:`generators.cracks.load_space_file`)."""
    return space.save_space_file(fit.space, path, comment=(
        "Crack parameter space fitted by `loop fit-cracks`; dimensions as ParamSpace.to_dict().\n"
        "Use: generators.cracks.crack_generator_from_file(PATH) or `loop experiment cracks --space PATH`."),
        extra={"fit": fit.to_dict()["fit"]})
