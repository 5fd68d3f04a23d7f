"""Synthetic grain micrographs and their boundary masks (paper §3.2.1).

Random seeds are relaxed by a few Lloyd steps and tessellated (periodic Voronoi); every
boundary segment becomes a cubic spline through randomly displaced control points; each
grain gets a grey level, a Perlin texture with wavelengths of 1/5 to 2/3 of a grain
diameter is added, and optionally each grain's own etch striations (a sine grating of
random orientation, period and phase). The boundary band is drawn from the mask itself (the
grey under it shifted by the boundary contrast, so image and mask agree pixel for pixel),
its contrast optionally faded along smooth random stretches (the mask keeps them). Then the
unlabelled artefacts of real micrographs (:mod:`generators.artefacts`): dark inclusions or
etch pits, faint polishing scratches and low-frequency uneven illumination, none of them in
the mask; then white noise and a Gaussian blur. Grey levels are fractions of the full range
(0 black, 1 white) until the final conversion to uint8.

Randomness comes from nine streams spawned from the sample seed: seeds, boundary curves,
grain greys and texture, pixel noise (the four of version 1.0, unchanged), then etch
striations, boundary fade, inclusions, scratches and illumination. So changing an appearance
parameter (grain contrast, boundary width or contrast, noise, blur, any artefact) keeps the
same grains, and each artefact is drawn only when its parameter is non-zero: with all of
them 0 an image is byte for byte what version 1.0 rendered.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from generators.artefacts import INCLUSION_SPREAD, SCRATCH_WIDTH, add_inclusions, add_scratches, add_shading
from generators.base import GeneratorError, Sample, StageClock, check_size
from generators.imaging import noise_blur_uint8
from generators.perlin import perlin_image
from generators.raster import Polylines, RasterError, band_mask, fill_labels, polylines
from generators.space import Continuous, Integer, LogRange, ParamSpace
from generators.splines import sample_curves, spline_nodes
from generators.tessellation import Tessellation, lloyd_relax, random_points, tessellate

MIN_GRAINS = 5
"""Fewest grains on the (periodic) image: large diameters are capped so this many fit."""

MAX_THICKNESS_FRACTION = 0.15
"""Boundary thickness is capped at this fraction of the grain diameter (thin grains stay open)."""

LLOYD_MARGINS = (2.0, 1.5)
"""Seeds are copied this many grain diameters across the border for the first Lloyd step
(random seeds leave wide gaps) and for the later ones (relaxed seeds are more even)."""

MARGIN = 2.0
"""Seeds are copied this many grain diameters across the border for the final tessellation,
so every cell touching the image is exact (if one is not, render falls back to the full
3x3 tiling)."""

MAX_SEGMENT = 4.0
"""Longest polyline segment (px) of a sampled boundary spline (a 4 px chord of a circle of
radius 20 px strays 0.1 px from it)."""

STRIATION_PERIOD = (0.1, 0.3)
"""Etch striation period of each grain: a fraction of the grain diameter uniform in this range."""

MIN_STRIATION_PERIOD = 3.0
"""Shortest striation period (px): finer gratings would alias on the pixel grid."""

STRIATION_STRENGTH = (0.2, 1.0)
"""Each grain's striation amplitude is the etch texture times a factor uniform in this range
(grains of some orientations etch strongly, others barely)."""

FADE_GAIN = 2.0
"""The boundary-fade field is ``clip(0.5 + FADE_GAIN · perlin, 0, 1)``: single-octave Perlin
(about ±0.25 typical) stretched so that stretches of boundary reach 0 and 1, not only 0.5."""

STAGES = ("tessellation", "splines", "raster", "mask", "texture", "artefacts", "noise_blur")
"""Names of the timed stages of :meth:`GrainGenerator.render`, in order."""

SPACE = ParamSpace([
    LogRange("grain_diameter", "px", "mean equivalent-circle grain diameter at the rendered size "
             f"(capped so that at least {MIN_GRAINS} grains fit)", 12.0, 160.0),
    Integer("lloyd_iterations", "", "Lloyd relaxation steps of the Voronoi seeds (more = rounder, more even grains)",
            0, 3),
    Integer("spline_points", "", "interior control points of the spline that replaces each boundary segment", 1, 3),
    Continuous("spline_displacement", "room",
               "largest sideways shift of a spline control point, as a fraction of its room: half its segment's "
               "length, less where neighbouring boundaries come close (so they never cross)", 0.0, 0.9),
    Continuous("boundary_thickness", "px",
               f"width of the boundary lines and of the mask (capped at {MAX_THICKNESS_FRACTION:g} grain diameters)",
               1.0, 10.0),
    Continuous("boundary_contrast", "grey",
               "boundary grey minus the grey of the grain under it: < 0 dark lines (optical), > 0 bright (SEM), "
               "0 none (orientation contrast only)", -0.6, 0.6),
    Continuous("mean_grey", "grey", "mean grain grey level (0 black, 1 white)", 0.1, 0.95),
    Continuous("grain_contrast", "grey", "grain-to-grain grey spread: grain greys are uniform in mean +- this",
               0.0, 0.35),
    Continuous("perlin_amplitude", "grey", "amplitude of the Perlin texture", 0.0, 0.25),
    Continuous("perlin_wavelength", "grain diameter", "Perlin texture wavelength, as a fraction of the grain diameter",
               0.2, 0.67),
    Continuous("noise_sigma", "grey", "standard deviation of the white (pixel) noise", 0.0, 0.12),
    Continuous("blur_sigma", "px", "standard deviation of the final Gaussian blur (0 = none)", 0.0, 2.5),
    Continuous("illumination", "grey", "peak grey of the low-frequency shading added to the image (a ramp in a "
               "random direction mixed with an off-centre vignetting bowl; 0 = even light)", 0.0, 0.3),
    Continuous("inclusion_density", "per 10^4 px²", "mean number of dark round inclusions / etch pits per 10^4 px² "
               "(anywhere in the image, not in the mask; 0 = none)", 0.0, 3.0),
    LogRange("inclusion_size", "px", f"mean diameter of the inclusions (each {INCLUSION_SPREAD[0]:g}-"
             f"{INCLUSION_SPREAD[1]:g} times it; no effect when inclusion_density is 0)", 1.5, 8.0),
    Integer("scratch_count", "", "straight polishing scratches across the image (not in the mask; 0 = none)", 0, 6),
    Continuous("scratch_contrast", "grey", f"largest grey shift of a {SCRATCH_WIDTH[0]:g}-{SCRATCH_WIDTH[1]:g} px "
               "scratch, dark or bright at random (0 = invisible)", 0.0, 0.15),
    Continuous("boundary_fade", "fraction", "largest fraction of the boundary contrast removed along smooth random "
               "stretches a grain diameter long (1 = some stretches vanish; still in the mask; 0 = even)", 0.0, 1.0),
    Continuous("etch_texture", "grey", "amplitude of each grain's own etch striations (random orientation, phase "
               f"and period {STRIATION_PERIOD[0]:g}-{STRIATION_PERIOD[1]:g} grain diameters; 0 = none)", 0.0, 0.2),
])

ARTEFACTS_OFF: dict[str, float | int] = {
    "illumination": 0.0, "inclusion_density": 0.0, "inclusion_size": 1.5, "scratch_count": 0,
    "scratch_contrast": 0.0, "boundary_fade": 0.0, "etch_texture": 0.0,
}
"""The dimensions added in version 1.1, at values that switch their features off: a parameter
set of version 1.0 with these added renders the bytes 1.0 rendered (``inclusion_size`` has no
effect without inclusions)."""


def grain_count(size: int, diameter: float) -> int:
    """Number of grains on a ``size``² image for a mean diameter: area / (π/4 · d²), at least MIN_GRAINS."""
    return max(MIN_GRAINS, int(round(size * size / (math.pi / 4.0 * diameter * diameter))))


def effective_diameter(size: int, diameter: float) -> float:
    """The mean diameter actually rendered: ``diameter``, or smaller where MIN_GRAINS forces it."""
    return size * math.sqrt(4.0 / (math.pi * grain_count(size, diameter)))


def effective_thickness(size: int, params: Mapping[str, Any]) -> float:
    """The boundary width actually rendered: ``boundary_thickness`` capped by the grain diameter."""
    cap = max(1.0, MAX_THICKNESS_FRACTION * effective_diameter(size, params["grain_diameter"]))
    return min(float(params["boundary_thickness"]), cap)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise GeneratorError(f"seed: expected a non-negative integer, got {seed!r}")
    return int(seed)


class GrainGenerator:
    """The grain-structure generator: Voronoi grains with spline boundaries (segmentation).

    ``render`` returns the micrograph (uint8) and its boundary mask (uint8, 1 = boundary).

    Examples
    --------
    >>> gen = GrainGenerator()
    >>> params = gen.space.sample(np.random.default_rng(0), 1)[0]
    >>> sample = gen.render(params, seed=1, size=64)
    >>> sample.image.shape, sample.mask.dtype
    ((64, 64), dtype('uint8'))
    """

    name = "grains"
    version = "1.1"
    task = "segmentation"
    space = SPACE
    defaults = ARTEFACTS_OFF
    """Values of dimensions a run's frozen space may lack, because they were added to the
    generator after the run began (see :func:`generators.space.complete_space`)."""

    def rendered_params(self, params: Mapping[str, Any], size: int) -> dict[str, Any]:
        """``params`` with grain diameter and boundary thickness as a ``size``-px render draws them
        (:func:`effective_diameter`, :func:`effective_thickness`: at least 5 grains fit, a line is
        at most 0.15 grain diameters wide)."""
        out = dict(params)
        if "grain_diameter" in out:
            out["grain_diameter"] = effective_diameter(size, float(out["grain_diameter"]))
            if "boundary_thickness" in out:
                out["boundary_thickness"] = effective_thickness(size, params)
        return out

    def render(self, params: Mapping[str, Any], seed: int, size: int,
               timings: dict[str, float] | None = None) -> Sample:
        """Render one ``size``×``size`` grain image and its boundary mask.

        ``timings``, when given, gets the seconds spent in each stage of :data:`STAGES`
        added to it (accumulated over calls).
        """
        p = self.space.validate(params)
        size = check_size(size)
        seed = _check_seed(seed)
        clock = StageClock(timings)
        # The first four streams are those of version 1.0 (spawn(n) starts with spawn(4)'s
        # children); each artefact has its own and draws only when its parameter is non-zero.
        (ss_tess, ss_curves, ss_texture, ss_noise,
         ss_striations, ss_fade, ss_inclusions, ss_scratches, ss_light) = np.random.SeedSequence(seed).spawn(9)
        shape = (size, size)
        n = grain_count(size, p["grain_diameter"])
        diameter = effective_diameter(size, p["grain_diameter"])
        thickness = effective_thickness(size, p)

        with clock("tessellation"):
            seeds = random_points(np.random.default_rng(ss_tess), n, size)
            seeds = lloyd_relax(seeds, size, p["lloyd_iterations"], *(min(size, m * diameter) for m in LLOYD_MARGINS))
        # A cell wider than the copied margin would leave rows without a curve left of
        # the image (the fill says so): then tessellate again with the full 3x3 tiling.
        for margin in (min(size, MARGIN * diameter), size):
            with clock("tessellation"):
                tess = tessellate(seeds, size, margin)
            with clock("splines"):
                lines, left, right = _ridge_curves(tess, np.random.default_rng(ss_curves), p, size, thickness)
            with clock("raster"):
                try:
                    labels = fill_labels(lines, left, right, shape)
                    break
                except RasterError:
                    if margin >= size:
                        raise

        with clock("mask"):
            mask = band_mask(lines, thickness, shape)

        with clock("texture"):
            rng_texture = np.random.default_rng(ss_texture)
            grey = p["mean_grey"] + p["grain_contrast"] * rng_texture.uniform(-1.0, 1.0, n)
            image = np.take(grey.astype(np.float32)[tess.owner], labels)
            if p["perlin_amplitude"] > 0:
                texture = perlin_image(rng_texture, shape, p["perlin_wavelength"] * diameter)
                texture *= np.float32(p["perlin_amplitude"])
                image += texture
            if p["etch_texture"] > 0:
                image += _striations(np.random.default_rng(ss_striations), labels, tess.owner, n, diameter,
                                     p["etch_texture"])
            # Boundaries are drawn from the mask itself: the grain's grey there plus the
            # boundary contrast (0 leaves them invisible, as in orientation-contrast images).
            contrast = np.float32(p["boundary_contrast"])
            if p["boundary_fade"] > 0 and p["boundary_contrast"] != 0:
                contrast = boundary_fade_field(np.random.default_rng(ss_fade), shape, diameter)
                contrast *= np.float32(-p["boundary_fade"] * p["boundary_contrast"])
                contrast += np.float32(p["boundary_contrast"])
            np.add(image, contrast, out=image, where=mask.view(bool))

        with clock("artefacts"):
            if p["inclusion_density"] > 0:
                add_inclusions(image, np.random.default_rng(ss_inclusions), p["inclusion_density"],
                               p["inclusion_size"])
            if p["scratch_count"] > 0 and p["scratch_contrast"] > 0:
                add_scratches(image, np.random.default_rng(ss_scratches), p["scratch_count"], p["scratch_contrast"])
            if p["illumination"] > 0:
                add_shading(image, np.random.default_rng(ss_light), p["illumination"])

        with clock("noise_blur"):
            out = noise_blur_uint8(image, p["noise_sigma"], p["blur_sigma"], ss_noise)
        return Sample(image=out, mask=mask)


def boundary_fade_field(rng: np.random.Generator, shape: tuple[int, int], diameter: float) -> np.ndarray:
    """The smooth field f in [0, 1] (float32) by which ``boundary_fade`` scales the boundary contrast down.

    Perlin noise with a lattice spacing of one grain ``diameter`` (px), mapped by
    ``clip(0.5 + FADE_GAIN · noise, 0, 1)``: along a boundary the contrast is multiplied by
    ``1 - boundary_fade · f``, so stretches about a grain diameter long fade or vanish.
    """
    field = perlin_image(rng, shape, diameter)
    field *= np.float32(FADE_GAIN)
    field += np.float32(0.5)
    return np.clip(field, 0.0, 1.0, out=field)


def _striations(rng: np.random.Generator, labels: np.ndarray, owner: np.ndarray, n: int, diameter: float,
                amplitude: float) -> np.ndarray:
    """Each grain's etch striations (float32 image): ``a_g · sin(k_g · (x, y) + φ_g)`` over its pixels.

    Per grain (all its periodic copies alike): a uniform orientation and phase, a period of
    :data:`STRIATION_PERIOD` grain diameters (at least :data:`MIN_STRIATION_PERIOD` px) and an
    amplitude of ``amplitude`` times a factor in :data:`STRIATION_STRENGTH`.
    """
    angle = rng.uniform(0.0, math.pi, n)
    period = np.maximum(MIN_STRIATION_PERIOD, diameter * rng.uniform(*STRIATION_PERIOD, n))
    phase = rng.uniform(0.0, 2.0 * math.pi, n)
    strength = amplitude * rng.uniform(*STRIATION_STRENGTH, n)
    k = 2.0 * math.pi / period
    # One per-label table (a grain cut by the border has several labels), gathered for all four
    # quantities in a single take: faster than four takes, and each result row is contiguous.
    table = np.stack([k * np.cos(angle), k * np.sin(angle), phase, strength]).astype(np.float32)[:, owner]
    kx, ky, phase_px, strength_px = np.take(table, labels.astype(np.intp), axis=1)
    h, w = labels.shape
    kx *= (np.arange(w, dtype=np.float32) + np.float32(0.5))[None, :]
    ky *= (np.arange(h, dtype=np.float32) + np.float32(0.5))[:, None]
    kx += ky
    kx += phase_px
    np.sin(kx, out=kx)
    kx *= strength_px
    return kx


def _ridge_curves(tess: Tessellation, rng: np.random.Generator, p: Mapping[str, Any], size: int,
                  thickness: float) -> tuple[Polylines, np.ndarray, np.ndarray]:
    """Spline curves of the ridges that matter for the image, and the grain on either side."""
    start = tess.vertices[tess.ridge_vertices[:, 0]]
    end = tess.vertices[tess.ridge_vertices[:, 1]]
    a, b = tess.ridge_points[:, 0], tess.ridge_points[:, 1]
    # A curve stays inside the kite of its ridge and the two seeds; its band reaches
    # half the thickness further. Keep everything left of the image too: the fill
    # needs the crossing just left of each row's first pixel.
    corners = np.stack([start, end, tess.seeds[a], tess.seeds[b]])
    lo, hi = corners.min(axis=0) - (0.5 * thickness + 1.0), corners.max(axis=0) + (0.5 * thickness + 1.0)
    keep = (lo[:, 0] <= size) & (lo[:, 1] <= size) & (hi[:, 1] >= 0)
    k = p["spline_points"]
    # Offsets are drawn for every ridge before choosing, so which ridges are drawn
    # (it depends on the thickness) does not change the curves.
    offsets = rng.uniform(-1.0, 1.0, size=(k, len(start)))[:, keep]
    start, end, a, b = start[keep], end[keep], a[keep], b[keep]
    length = np.hypot(*(end - start).T)
    # Polyline segments of at most MAX_SEGMENT px: curves are grouped by sample count,
    # the k + 1 intervals between nodes halved g times, so short curves are not drawn
    # with as many segments as the longest one.
    halvings = np.log2(np.maximum(length, 1e-9) / (MAX_SEGMENT * (k + 1)))
    group = np.clip(np.ceil(halvings), 0, 10).astype(np.int64)
    nodes = spline_nodes(start, end, tess.seeds[a], offsets, p["spline_displacement"])
    chord = end - start
    to_a = tess.seeds[a] - start
    a_left = chord[:, 0] * to_a[:, 1] - chord[:, 1] * to_a[:, 0] > 0
    left, right = np.where(a_left, a, b).astype(np.int32), np.where(a_left, b, a).astype(np.int32)
    junctions = tess.vertices[np.unique(tess.ridge_vertices[keep])]
    groups = np.unique(group)
    if len(groups) == 1:
        return polylines(sample_curves(nodes, (k + 1) * 2 ** int(groups[0]) + 1), junctions), left, right
    curves, order = [], []
    for g in groups:
        sel = np.flatnonzero(group == g)
        curves.append(sample_curves(nodes[:, sel], (k + 1) * 2 ** int(g) + 1))
        order.append(sel)
    order = np.concatenate(order)
    return polylines(curves, junctions), left[order], right[order]


