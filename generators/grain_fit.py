"""Fit the grain generator's parameter ranges from a few labelled real grain micrographs.

Each image and its boundary mask (uint8/bool, non-zero = grain boundary, as
:class:`loop.evaluate.real.RealFolder` loads them) give one estimate per parameter the
generator draws (:func:`measure_pair`); grey levels are fractions of 255, lengths pixels
of the image as it is (no rescaling):

* ``grain_diameter`` — the grains are the 4-connected components of ``mask == 0`` (specks
  under :data:`MIN_GRAIN_PX` px left out). The generator's parameter is the mean
  equivalent-circle diameter of its cells, boundaries included (``size² / n`` is the mean
  cell area). Each grain is grown over the boundary pixels nearest to it
  (:func:`skimage.segmentation.expand_labels`), and the image's value is the mean
  equivalent-circle diameter of the grown grains that do not touch the image border (all
  grains when every one does). Whole cells, not interiors: an interior is about one
  boundary thickness narrower than its cell.
* ``boundary_thickness`` — boundary area / skeleton length of the mask
  (:func:`skimage.morphology.skeletonize`; length counts a diagonal step as √2), corrected
  for the overlap of the bands at each skeleton junction (:data:`JUNCTION_OVERLAP`).
* ``mean_grey`` — the mean over grains of each grain's mean grey in its interior (pixels
  more than :data:`INTERIOR_PX` px from a boundary).
* ``grain_contrast`` — √3 × the sd of those per-grain means (grain greys are uniform in
  mean ± contrast, whose sd is contrast / √3), the pixel noise's share of the per-grain
  means' variance (``noise² / interior pixels``) taken off first.
* ``boundary_contrast`` — mean grey on the boundary pixels minus the mean grey of the grain
  pixels at most :data:`NEAR_PX` px from a boundary (the grains the band is drawn over).
* ``noise_sigma`` — white-noise sd: the image minus a 3×3 filtered copy of itself
  (Immerkær's kernel ``[[1,-2,1],[-2,4,-2],[1,-2,1]] / 4``, which cancels flat and linear
  grey, so grain greys and slow texture stay out) on pixels whose 3×3 window lies inside a
  grain interior; the kernel's sum of squares (36) gives the noise sd exactly for any
  noise distribution. Robust: residuals beyond :data:`OUTLIER_MADS` MADs of the median are
  dropped before the sd; the uint8 rounding's variance (1/12 grey level²) is taken off.
* ``perlin_amplitude`` — the within-grain grey sd in the interiors (per-grain means
  removed), less the noise, over :data:`PERLIN_WITHIN_SD` (the within-grain sd of the
  generator's Perlin texture per unit amplitude). Shading or uneven etching reads as texture:
  it is an upper bound on the Perlin amplitude. Measured on renders (3 of 256 px each, Perlin
  0, 0.05, 0.15): ``etch_texture`` e adds about 2e to the estimate when the Perlin is weak (0.2
  reads 0.42 at Perlin 0, 0.45 at 0.15), ``illumination`` 0.3 about 0.02–0.08; blur does not
  bias it. So on etched micrographs the fitted Perlin range sits high, and the inverse model of
  ``loop locate`` (which tells etch texture apart) places them at its low end.

A fitted dimension's bounds are the range of the per-image estimates (the
:data:`QUANTILES` percentiles from :data:`QUANTILE_MIN_IMAGES` images on), each end
widened by :data:`MARGIN` of its value or of the span, whichever is larger (at least
:data:`_MIN_MARGIN`), then clipped into the generator's bounds (an estimate beyond a bound
gives a fixed dimension at that bound). The other dimensions (Lloyd steps, splines,
Perlin wavelength, blur and any added later) copy the generator's exactly.

Micrographs of several kinds (dark-line optical, colour-etched, SEM) are fitted as groups
(:func:`fit_groups`): each group's ranges its own way, the space their union, so that a kind
with few images is not dropped as the outlier of the percentiles of the many. Images whose
estimates lie outside the fitted ranges are listed (:meth:`GrainFit.outside`).

Blur is not fitted: a blurred image reads as less noise, lower grain and boundary
contrast and a thicker visible boundary than its generator parameters; estimates are of
the image as seen, which is what the generator must reproduce only when blur is 0.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from scipy import ndimage
from skimage.measure import label
from skimage.morphology import skeletonize
from skimage.segmentation import expand_labels

from generators import grains
from generators import space
from generators.base import GeneratorError
from generators.space import ParamSpace

MIN_GRAIN_PX = 8
"""Grains (4-connected non-boundary components) smaller than this are specks, not grains."""

INTERIOR_PX = 3.0
"""Grain interiors: pixels more than this far (px) from a boundary pixel."""

NEAR_PX = 3.0
"""Boundary contrast compares the boundary with the grain pixels at most this far (px) from it."""

MIN_INTERIOR_PX = 9
"""A grain enters the grey statistics with at least this many interior pixels."""

JUNCTION_OVERLAP = 1.0
"""Boundary area missing at each skeleton junction, in width²: where bands meet they overlap
(and the skeleton spurs), so area / length reads about 9 % thin on renders of 3 px
boundaries between 40 px grains; with this, within about 2 % for widths of 1-10 px."""

SKELETON_PAD_PX = 32
"""The mask is extended this far (px) past the image border before skeletonizing (see :func:`_thickness`)."""

OUTLIER_MADS = 5.0
"""Noise residuals further than this many (normal-scaled) MADs from their median are dropped."""

PERLIN_WITHIN_SD = 0.22
"""Within-grain sd of the generator's Perlin texture per unit ``perlin_amplitude`` (interiors,
per-grain means removed), measured on renders: about 0.24 at a wavelength of 0.2 grain
diameters, 0.20 at 0.67, so the conversion is good to about ±10 %."""

QUANTILES = (0.1, 0.9)
"""With many images, a fitted range spans these percentiles of the per-image estimates."""

QUANTILE_MIN_IMAGES = 10
"""From this many images on, the percentiles; below, the full range of the estimates."""

MARGIN = 0.25
"""Each fitted end is widened by this fraction of its value or of the span, whichever is larger."""

FITTED = ("grain_diameter", "boundary_thickness", "boundary_contrast", "mean_grey", "grain_contrast",
          "perlin_amplitude", "noise_sigma")
"""The generator dimensions this module estimates, in the order of :class:`GrainMeasure`."""

_MIN_MARGIN = {  # smallest widening of each end, in the dimension's unit
    "grain_diameter": 2.0, "boundary_thickness": 0.5, "boundary_contrast": 0.02, "mean_grey": 0.02,
    "grain_contrast": 0.01, "perlin_amplitude": 0.005, "noise_sigma": 0.003,
}

_IMMERKAER = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])


class GrainFitError(GeneratorError):
    """An image/mask pair, or a set of them, cannot be used for fitting."""


@dataclass(frozen=True)
class GrainMeasure:
    """What was measured on one image: one estimate per fitted dimension and the grain counts."""

    source: str
    n_grains: int
    n_inner: int
    grain_diameter: float
    boundary_thickness: float
    boundary_contrast: float
    mean_grey: float
    grain_contrast: float
    perlin_amplitude: float
    noise_sigma: float

    def estimates(self) -> dict[str, float]:
        """This image's estimate of each dimension in :data:`FITTED`."""
        return {name: float(getattr(self, name)) for name in FITTED}


@dataclass
class GrainFit:
    """The result of :func:`fit_pairs`: the fitted space (every generator dimension, in its
    order), the per-image measures and a summary."""

    space: ParamSpace
    measures: list[GrainMeasure]
    fitted: dict[str, tuple[float, float]] = field(default_factory=dict)
    medians: dict[str, float] = field(default_factory=dict)
    groups: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    """Per group of :func:`fit_groups` (name -> its own fitted ranges); empty for one set."""

    def outside(self) -> dict[str, dict[str, float]]:
        """The images with an estimate outside its fitted range: source -> {dimension: estimate}.
        With many images of one kind and a few of another, the few land here (the percentiles
        leave them out): fit the kinds as groups (:func:`fit_groups`). An estimate beyond the
        generator's own bounds counts only if the range misses it inside them (no space can
        hold it)."""
        out: dict[str, dict[str, float]] = {}
        for m in self.measures:
            beyond = {name: value for name, value in m.estimates().items()
                      if not self.fitted[name][0] <= float(np.clip(value, grains.SPACE[name].low,
                                                                   grains.SPACE[name].high)) <= self.fitted[name][1]}
            if beyond:
                out[m.source] = beyond
        return out

    def to_dict(self) -> dict[str, Any]:
        """The space file's content: ``dimensions`` (``ParamSpace.to_dict()``) and a ``fit`` summary."""
        dims = [d.to_dict() for d in self.space]
        n = len(self.measures)
        fit = {"n_images": n, "n_grains": sum(m.n_grains for m in self.measures),
               "bounds": (f"{QUANTILES[0]:g}-{QUANTILES[1]:g} quantiles" if n >= QUANTILE_MIN_IMAGES else "range")
               + f" of the per-image estimates, +-{MARGIN:g} of value or span, clipped to the generator's",
               "fitted": list(self.fitted), "median": {k: float(v) for k, v in self.medians.items()},
               "sources": [m.source for m in self.measures],
               "estimates": {k: [m.estimates()[k] for m in self.measures] for k in FITTED},
               "outside": self.outside()}
        if self.groups:
            fit["groups"] = {name: {k: list(v) for k, v in ranges.items()} for name, ranges in self.groups.items()}
            fit["bounds"] = "union of the groups' ranges, each: " + fit["bounds"]
        return {"dimensions": dims, "fit": fit}


def _skeleton_length(skeleton: np.ndarray) -> float:
    """Length (px) of an 8-connected skeleton: orthogonal neighbour pairs count 1, diagonal
    pairs not already joined through an orthogonal neighbour √2, lone pixels 1."""
    s = skeleton
    horizontal = np.count_nonzero(s[:, :-1] & s[:, 1:])
    vertical = np.count_nonzero(s[:-1, :] & s[1:, :])
    a, b, c, d = s[:-1, :-1], s[:-1, 1:], s[1:, :-1], s[1:, 1:]
    diagonal = np.count_nonzero(a & d & ~b & ~c) + np.count_nonzero(b & c & ~a & ~d)
    lone = np.count_nonzero(s & (ndimage.convolve(s.astype(np.int32), np.ones((3, 3), np.int32),
                                                  mode="constant") == 1))
    return float(horizontal + vertical + math.sqrt(2.0) * diagonal + lone)


def _thickness(boundary: np.ndarray) -> float:
    """Boundary width (px): area over skeleton length, where bands meeting at a junction
    overlap by :data:`JUNCTION_OVERLAP` × width² (``area = t·L − c·J·t²``, solved for ``t``).

    The mask is extended past the image border (edge pixels repeated) before skeletonizing
    and the skeleton cut back: a band cut by the border keeps its skeleton to the border,
    where it would otherwise stop half a width short."""
    pad = SKELETON_PAD_PX
    skeleton = skeletonize(np.pad(boundary, pad, mode="edge"))[pad:-pad, pad:-pad]
    length = max(_skeleton_length(skeleton), 1.0)
    area = float(np.count_nonzero(boundary))
    neighbours = ndimage.convolve(skeleton.astype(np.int32), np.ones((3, 3), np.int32), mode="constant") - 1
    junctions = ndimage.label(skeleton & (neighbours >= 3), structure=np.ones((3, 3)))[1]
    plain = area / length
    c = JUNCTION_OVERLAP * junctions
    disc = length * length - 4.0 * c * area
    if c <= 0 or disc <= 0:
        return plain
    return float((length - math.sqrt(disc)) / (2.0 * c))


def measure_pair(image: np.ndarray, mask: np.ndarray, source: str = "image") -> GrainMeasure:
    """Estimate the fitted parameters on one grey ``image`` (uint8) and its boundary ``mask``.

    Raises :class:`GrainFitError` naming ``source`` when the shapes differ, the mask has no
    boundary or no grain (all boundary, or only specks under :data:`MIN_GRAIN_PX` px), or no
    grain has an interior to measure greys on.
    """
    image = np.asarray(image)
    boundary = np.asarray(mask) > 0
    if image.ndim != 2 or boundary.shape != image.shape:
        raise GrainFitError(f"{source}: expected a 2-D image and a mask of its size, got shapes "
                            f"{image.shape} and {boundary.shape}")
    if not boundary.any():
        raise GrainFitError(f"{source}: the mask has no boundary pixel (one grain or an unlabelled image)")
    labels = label(~boundary, connectivity=1)
    areas = np.bincount(labels.ravel())
    areas[0] = 0
    specks = areas < MIN_GRAIN_PX
    labels[specks[labels]] = 0
    grain_ids = np.flatnonzero(~specks)
    if len(grain_ids) < 1:
        raise GrainFitError(f"{source}: the mask has no grain (no region of {MIN_GRAIN_PX} px or more "
                            "outside the boundaries)")
    h, w = boundary.shape

    # Diameter: whole cells (grains grown over their nearest boundary pixels), inner ones.
    cells = expand_labels(labels, distance=max(h, w))
    cell_area = np.bincount(cells.ravel(), minlength=labels.max() + 1)[grain_ids].astype(float)
    edge = np.zeros(labels.max() + 1, bool)
    edge[np.concatenate([cells[0], cells[-1], cells[:, 0], cells[:, -1]])] = True
    inner = ~edge[grain_ids]
    diameters = np.sqrt(4.0 * cell_area / math.pi)
    diameter = float(np.mean(diameters[inner] if inner.any() else diameters))

    thickness = _thickness(boundary)

    grey = image.astype(np.float64)
    distance = ndimage.distance_transform_edt(~boundary)
    interior = (distance > INTERIOR_PX) & (labels > 0)

    # Noise: Immerkær residuals whose whole 3x3 window is interior, outliers dropped by MAD.
    window_inside = ndimage.binary_erosion(interior, np.ones((3, 3), bool), border_value=0)
    residual = ndimage.correlate(grey, _IMMERKAER, mode="reflect")[window_inside] / 6.0
    noise_var = 0.0
    if residual.size >= 2:
        centre = np.median(residual)
        mad = 1.4826 * np.median(np.abs(residual - centre))
        kept = residual[np.abs(residual - centre) <= OUTLIER_MADS * mad] if mad > 0 else residual
        noise_var = max(float(np.var(kept)) - 1.0 / 12.0, 0.0)

    # Per-grain interior means and the within-grain variance.
    ids = labels[interior]
    counts = np.bincount(ids, minlength=labels.max() + 1)
    sums = np.bincount(ids, grey[interior], minlength=labels.max() + 1)
    measured = np.flatnonzero(counts >= MIN_INTERIOR_PX)
    if len(measured) == 0:
        raise GrainFitError(f"{source}: no grain has {MIN_INTERIOR_PX} px more than {INTERIOR_PX:g} px from a "
                            "boundary to measure its grey on")
    means = sums[measured] / counts[measured]
    mean_grey = float(np.mean(means))
    spread = float(np.var(means, ddof=1)) if len(means) > 1 else 0.0
    spread = max(spread - noise_var * float(np.mean(1.0 / counts[measured])), 0.0)
    grain_contrast = math.sqrt(3.0 * spread)

    in_measured = np.zeros(labels.max() + 1, bool)
    in_measured[measured] = True
    sel = interior & in_measured[labels]
    per_grain_mean = np.zeros(labels.max() + 1)
    per_grain_mean[measured] = means
    within = float(np.mean((grey[sel] - per_grain_mean[labels[sel]]) ** 2))
    perlin = math.sqrt(max(within - noise_var, 0.0)) / PERLIN_WITHIN_SD

    near = (labels > 0) & (distance <= NEAR_PX)
    near_grey = float(grey[near].mean()) if near.any() else float(grey[labels > 0].mean())
    boundary_contrast = float(grey[boundary].mean()) - near_grey

    return GrainMeasure(source=source, n_grains=len(grain_ids), n_inner=int(inner.sum()),
                        grain_diameter=diameter, boundary_thickness=thickness,
                        boundary_contrast=boundary_contrast / 255.0, mean_grey=mean_grey / 255.0,
                        grain_contrast=grain_contrast / 255.0, perlin_amplitude=perlin / 255.0,
                        noise_sigma=math.sqrt(noise_var) / 255.0)


def _bounds(name: str, values: list[float], limit_low: float, limit_high: float) -> tuple[float, float]:
    """Fitted bounds from per-image estimates (see the module docstring)."""
    if len(values) >= QUANTILE_MIN_IMAGES:
        lo, hi = (float(np.quantile(values, q)) for q in QUANTILES)
    else:
        lo, hi = float(min(values)), float(max(values))
    span = hi - lo
    lo -= max(MARGIN * abs(lo), MARGIN * span, _MIN_MARGIN[name])
    hi += max(MARGIN * abs(hi), MARGIN * span, _MIN_MARGIN[name])
    lo, hi = max(lo, limit_low), min(hi, limit_high)
    if lo > hi:  # every estimate beyond one bound: fixed at that bound
        lo = hi = limit_high if lo >= limit_high else limit_low
    return float(lo), float(hi)


def fit_pairs(pairs: Iterable[tuple[str, np.ndarray, np.ndarray]], where: str = "images") -> GrainFit:
    """Fit the grain space from ``(source, image, mask)`` triples (see the module docstring).

    The space has exactly the dimensions of :data:`generators.grains.SPACE` (read at call
    time), in its order. Raises :class:`GrainFitError` naming ``where`` when there is no pair,
    and naming the source of a pair that cannot be measured.
    """
    measures = [measure_pair(_as_uint8(image), mask, source) for source, image, mask in pairs]
    if not measures:
        raise GrainFitError(f"{where}: no image/mask pairs to fit")
    limits = grains.SPACE
    dims, fitted, medians = [], {}, {}
    for dim in limits:
        if dim.name not in FITTED:
            dims.append(dim)
            continue
        values = [m.estimates()[dim.name] for m in measures]
        lo, hi = _bounds(dim.name, values, dim.low, dim.high)
        fitted[dim.name] = (lo, hi)
        medians[dim.name] = float(np.median(values))
        dims.append(dataclasses.replace(dim, low=lo, high=hi))
    fit = GrainFit(space=ParamSpace(dims), measures=measures, fitted=fitted, medians=medians)
    space.check_subspace(fit.space, limits, source=f"grain space fitted on {where}")
    return fit


def fit_groups(groups: Iterable[tuple[str, Iterable[tuple[str, np.ndarray, np.ndarray]]]]) -> GrainFit:
    """Fit each ``(name, pairs)`` group on its own (:func:`fit_pairs`) and return the union of
    their spaces: per fitted dimension the lowest low and the highest high, the medians over
    every image, the groups' own ranges in ``groups``. One group is that group's fit.
    Raises :class:`GrainFitError` naming a group without pairs or a name given twice."""
    fits: dict[str, GrainFit] = {}
    for name, pairs in groups:
        if name in fits:
            raise GrainFitError(f"group {name!r} is given twice; expected distinct folders")
        fits[name] = fit_pairs(pairs, where=name)
    if not fits:
        raise GrainFitError("no group of images to fit")
    if len(fits) == 1:
        return next(iter(fits.values()))
    measures = [m for fit in fits.values() for m in fit.measures]
    first = next(iter(fits.values()))
    dims, fitted, medians = [], {}, {}
    for dim in first.space:
        if dim.name not in first.fitted:
            dims.append(dim)
            continue
        lo = min(fit.fitted[dim.name][0] for fit in fits.values())
        hi = max(fit.fitted[dim.name][1] for fit in fits.values())
        fitted[dim.name] = (lo, hi)
        medians[dim.name] = float(np.median([m.estimates()[dim.name] for m in measures]))
        dims.append(dataclasses.replace(dim, low=lo, high=hi))
    union = GrainFit(space=ParamSpace(dims), measures=measures, fitted=fitted, medians=medians,
                     groups={name: dict(fit.fitted) for name, fit in fits.items()})
    space.check_subspace(union.space, grains.SPACE, source=f"grain space fitted on {', '.join(fits)}")
    return union


def _as_uint8(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype == np.uint8:
        return a
    a = a.astype(np.float64)
    lo, hi = float(a.min()), float(a.max())
    return np.zeros(a.shape, np.uint8) if hi == lo else np.round((a - lo) * 255.0 / (hi - lo)).astype(np.uint8)


def save_space_file(fit: GrainFit, path: str | Path) -> Path:
    """Write ``fit``'s space as TOML to ``path`` (readable by :func:`generators.space.load_space_file`),
    with the fit summary as its ``fit`` table."""
    return space.save_space_file(fit.space, path, comment=(
        "Grain parameter space fitted by `loop fit-grains`; dimensions as ParamSpace.to_dict().\n"
        "Use: `loop start --space PATH` / `loop compare --space PATH` (generators.space.load_space_file)."),
        extra={"fit": fit.to_dict()["fit"]})

