"""Unlabelled artefacts of real micrographs: uneven illumination, inclusions, polishing scratches.

Each function draws one kind of artefact from its own seeded numpy Generator onto a float32
grey image (0 black, 1 white) in place, or returns the field to add. None of them touches a
mask: these are the things a segmentation model must learn *not* to call a boundary. All are
vectorised: the per-artefact loops run over a handful of scratches, never over pixels.
"""

from __future__ import annotations

import math

import numpy as np

INCLUSION_SPREAD = (0.6, 1.4)
"""Each inclusion's diameter is the mean diameter times a factor uniform in this range."""

INCLUSION_DEPTH = (0.4, 0.9)
"""Each inclusion darkens the grey under its centre by a fraction uniform in this range."""

INCLUSION_EDGE = (1.0, 0.25)
"""Width (px) of an inclusion's soft edge: the first number plus the second times its radius."""

SCRATCH_WIDTH = (1.0, 2.0)
"""Each scratch's width (px) is uniform in this range."""

SCRATCH_STRENGTH = (0.5, 1.0)
"""Each scratch's grey shift is the scratch contrast times a factor uniform in this range (sign random)."""


def shading_profiles(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Uneven illumination as two float32 profiles: the field ``rows[:, None] + cols[None, :]`` spans [-1, 1].

    The field is a linear ramp in a random direction (oblique light) mixed with a random weight
    with a radial bowl about a random off-centre point (vignetting: darker, or brighter, towards
    the edges), centred and scaled so its extremes are exactly -1 and 1. Both parts are sums of a
    function of x and a function of y, so the image-sized field is never built (two broadcast
    additions apply it), and its extremes come from the profiles' own.
    """
    h, w = shape
    angle = rng.uniform(0.0, 2.0 * math.pi)
    mix = rng.random()
    sign = 1.0 if rng.random() < 0.5 else -1.0
    centre = rng.uniform(-0.5, 0.5, 2)
    u = (np.arange(w) + 0.5) * (2.0 / w) - 1.0
    v = (np.arange(h) + 0.5) * (2.0 / h) - 1.0
    cols = mix * math.cos(angle) * u + (1.0 - mix) * sign * (u - centre[0]) ** 2
    rows = mix * math.sin(angle) * v + (1.0 - mix) * sign * (v - centre[1]) ** 2
    low, high = cols.min() + rows.min(), cols.max() + rows.max()
    half = max(0.5 * (high - low), 1e-12)
    cols = (cols - 0.5 * (low + high)) / half
    rows = rows / half
    return rows.astype(np.float32), cols.astype(np.float32)


def add_shading(image: np.ndarray, rng: np.random.Generator, amplitude: float) -> None:
    """Add uneven illumination of peak ``amplitude`` grey to ``image`` (float32, in place).

    The field is :func:`shading_profiles` times ``amplitude``: a smooth shading whose wavelength
    is the image side, from ``-amplitude`` to ``+amplitude``.
    """
    rows, cols = shading_profiles(rng, image.shape)
    image += (cols * np.float32(amplitude))[None, :]
    image += (rows * np.float32(amplitude))[:, None]


def add_inclusions(image: np.ndarray, rng: np.random.Generator, density: float, diameter: float) -> int:
    """Darken ``image`` (float32, in place) with round soft-edged spots; return how many were drawn.

    The count is Poisson with mean ``density`` per 10⁴ px² of image; centres are uniform over
    the image (inside grains or on boundaries alike). Each spot has a diameter of ``diameter``
    px times a factor in :data:`INCLUSION_SPREAD` and multiplies the grey under it by
    ``1 - depth · profile``: the darkening is relative to the local grey, the profile 1 inside
    the disc falling linearly to 0 over a soft edge (:data:`INCLUSION_EDGE`), ``depth`` in
    :data:`INCLUSION_DEPTH`. Overlapping spots multiply.
    """
    h, w = image.shape
    k = int(rng.poisson(density * h * w / 1e4))
    if k == 0:
        return 0
    centre = rng.random((k, 2)) * np.array([w, h])
    radius = 0.5 * diameter * rng.uniform(*INCLUSION_SPREAD, size=k)
    depth = rng.uniform(*INCLUSION_DEPTH, size=k)
    edge = INCLUSION_EDGE[0] + INCLUSION_EDGE[1] * radius
    reach = int(math.ceil(float((radius + 0.5 * edge).max()))) + 1
    offsets = np.arange(-reach, reach + 1)
    # One (2 reach + 1)² patch of pixels around each centre, all spots at once.
    px = np.floor(centre[:, 0]).astype(np.int64)[:, None, None] + offsets[None, None, :]
    py = np.floor(centre[:, 1]).astype(np.int64)[:, None, None] + offsets[None, :, None]
    r = np.hypot(px + 0.5 - centre[:, 0, None, None], py + 0.5 - centre[:, 1, None, None])
    profile = np.clip((radius[:, None, None] - r) / edge[:, None, None] + 0.5, 0.0, 1.0)
    px, py = np.broadcast_arrays(px, py)
    keep = (profile > 0) & (px >= 0) & (px < w) & (py >= 0) & (py < h)
    factor = 1.0 - depth[:, None, None] * profile
    np.multiply.at(image.reshape(-1), py[keep] * w + px[keep], factor[keep].astype(np.float32))
    return k


def add_scratches(image: np.ndarray, rng: np.random.Generator, count: int, contrast: float) -> None:
    """Add ``count`` long straight antialiased lines across ``image`` (float32, in place).

    Each line passes through a uniform random point at a uniform random angle and crosses the
    whole image; it is :data:`SCRATCH_WIDTH` px wide and shifts the grey by ``± contrast``
    times a factor in :data:`SCRATCH_STRENGTH` (dark or bright at random), weighted by the
    fraction of each pixel the line covers (a box profile with a 1 px linear ramp).
    """
    h, w = image.shape
    for _ in range(count):
        cx, cy = rng.random(2) * np.array([w, h])
        angle = rng.uniform(0.0, math.pi)
        width = rng.uniform(*SCRATCH_WIDTH)
        shift = contrast * rng.uniform(*SCRATCH_STRENGTH) * (1.0 if rng.random() < 0.5 else -1.0)
        c, s = math.cos(angle), math.sin(angle)
        # Walk along the longer axis: one short run of pixels across the line per step.
        if abs(c) >= abs(s):
            view, along, across, slope, cos_ = image, cx, cy, s / c, abs(c)
        else:
            view, along, across, slope, cos_ = image.T, cy, cx, c / s, abs(s)
        n_across, n_along = view.shape
        steps = np.arange(n_along)
        centre = across + (steps + 0.5 - along) * slope
        reach = int(math.ceil(0.5 * width / cos_ + 1.0))
        rows = np.floor(centre).astype(np.int64)[:, None] + np.arange(-reach, reach + 1)[None, :]
        distance = np.abs(rows + 0.5 - centre[:, None]) * cos_
        cover = np.clip(0.5 * width + 0.5 - distance, 0.0, 1.0)
        cols = np.broadcast_to(steps[:, None], rows.shape)
        keep = (cover > 0) & (rows >= 0) & (rows < n_across)
        # (row, column) pairs are distinct within one line, so a plain fancy-index add is exact.
        view[rows[keep], cols[keep]] += (shift * cover[keep]).astype(np.float32)
