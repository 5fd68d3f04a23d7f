"""Periodic Voronoi tessellations of random points, relaxed by Lloyd's algorithm.

The seeds live on a torus of side ``size``: every seed within ``margin`` of the square's
border is copied across it (the 3×3 tiling, cut to a margin), so cells at the border of
the image are whole cells of a wrapping tessellation, not cells clipped or stretched by
the border. The Voronoi diagram is read off scipy's Delaunay triangulation (its dual:
vertices are triangle circumcentres, ridges are triangle edges shared by two triangles),
which gives every ridge as flat arrays without the per-region Python lists of
``scipy.spatial.Voronoi`` and costs about half as much.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import Delaunay
from generators.base import GeneratorError


# The 3x3 tiling's offsets in units of the square's side, the original (0, 0) first.
_SHIFTS = np.array([(dx, dy) for dy in (0, -1, 1) for dx in (0, -1, 1)], dtype=np.float64)


class TessellationError(GeneratorError):
    """Bad input to the tessellation functions."""


@dataclass(frozen=True)
class Tessellation:
    """A Voronoi tessellation of tiled seeds.

    ``seeds`` (N, 2) are all seed positions (x, y) after tiling; ``owner`` (N,) the index
    of the base seed (0..n-1) each one copies, base seeds first. ``vertices`` (V, 2) are
    the Voronoi vertices; ridge ``k`` separates the cells of seeds ``ridge_points[k]`` and
    runs between vertices ``ridge_vertices[k]``. Only finite ridges are listed.
    """

    seeds: np.ndarray
    owner: np.ndarray
    vertices: np.ndarray
    ridge_points: np.ndarray
    ridge_vertices: np.ndarray

    @property
    def n_base(self) -> int:
        """Number of distinct seeds on the torus (grains)."""
        return int(self.owner.max()) + 1 if self.owner.size else 0


def random_points(rng: np.random.Generator, n: int, size: float) -> np.ndarray:
    """``n`` points drawn uniformly in the square [0, size)², as (n, 2) float64 (x, y)."""
    if n < 1:
        raise TessellationError(f"n: expected at least 1 point, got {n}")
    return rng.random((n, 2)) * size


def tile_periodic(points: np.ndarray, size: float, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Copy the points across the borders of [0, size)² into a band ``margin`` wide.

    Returns ``(tiled, owner)``: the original points first, then the copies that land in
    [-margin, size + margin)², and for each the index of the original it copies.
    """
    if not 0 < margin <= size:
        raise TessellationError(f"margin: expected 0 < margin <= size ({size}), got {margin}")
    n = len(points)
    tiled = (points[None, :, :] + _SHIFTS[:, None, :] * size).reshape(-1, 2)
    inside = (tiled >= -margin) & (tiled < size + margin)
    keep = inside[:, 0] & inside[:, 1]
    keep[:n] = True
    keep = np.flatnonzero(keep)
    return tiled[keep], keep % n


def voronoi_ridges(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Finite Voronoi ridges of a point set, from its Delaunay triangulation.

    Returns ``(vertices, ridge_points, ridge_vertices)`` as in :class:`Tessellation`.
    """
    tri = Delaunay(points)
    simplices, neighbors = tri.simplices, tri.neighbors
    corners = points[simplices]
    a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
    # Circumcentres, relative to corner a for accuracy.
    ab, ac = b - a, c - a
    d = 2.0 * (ab[:, 0] * ac[:, 1] - ab[:, 1] * ac[:, 0])
    ab2, ac2 = (ab * ab).sum(1), (ac * ac).sum(1)
    ux = (ac[:, 1] * ab2 - ab[:, 1] * ac2) / d
    uy = (ab[:, 0] * ac2 - ac[:, 0] * ab2) / d
    vertices = a + np.stack([ux, uy], axis=1)
    # The edge opposite corner k of triangle t is shared with triangle neighbors[t, k];
    # listing it from the lower-numbered triangle gives each interior edge once.
    t, k = np.nonzero(neighbors > np.arange(len(simplices))[:, None])
    nb = neighbors[t, k]
    ridge_points = np.stack([simplices[t, (k + 1) % 3], simplices[t, (k + 2) % 3]], axis=1)
    ridge_vertices = np.stack([t, nb], axis=1)
    return vertices, ridge_points, ridge_vertices


def cell_centroids(seeds: np.ndarray, vertices: np.ndarray, ridge_points: np.ndarray,
                   ridge_vertices: np.ndarray, n: int) -> np.ndarray:
    """Centroids of the cells of seeds 0..n-1 (which must be bounded).

    Each ridge and the seed on either side span a triangle inside that seed's (convex)
    cell; the cell's centroid is the area-weighted mean of its triangles' centroids. A
    cell with no area keeps its seed.
    """
    v1, v2 = vertices[ridge_vertices[:, 0]], vertices[ridge_vertices[:, 1]]
    idx = ridge_points.T.ravel()  # side 0 of every ridge, then side 1
    inside = idx < n
    idx = idx[inside]
    s = seeds[idx]
    v1, v2 = np.concatenate([v1, v1])[inside], np.concatenate([v2, v2])[inside]
    area = 0.5 * np.abs((v1[:, 0] - s[:, 0]) * (v2[:, 1] - s[:, 1]) - (v1[:, 1] - s[:, 1]) * (v2[:, 0] - s[:, 0]))
    total = np.bincount(idx, weights=area, minlength=n)
    centre = (s + v1 + v2) * (area / 3.0)[:, None]
    cx = np.bincount(idx, weights=centre[:, 0], minlength=n)
    cy = np.bincount(idx, weights=centre[:, 1], minlength=n)
    out = seeds[:n].copy()
    ok = total > 0
    out[ok, 0] = cx[ok] / total[ok]
    out[ok, 1] = cy[ok] / total[ok]
    return out


def lloyd_relax(points: np.ndarray, size: float, iterations: int, margin: float,
                later_margin: float | None = None) -> np.ndarray:
    """Move each point to the centroid of its periodic Voronoi cell, ``iterations`` times.

    ``margin`` is how far seeds are copied across the border for the first step;
    ``later_margin`` (default ``margin``) for the following ones, which start from
    already relaxed, more even points whose neighbours are closer.
    """
    n = len(points)
    for step in range(iterations):
        tiled, _ = tile_periodic(points, size, margin if step == 0 or later_margin is None else later_margin)
        vertices, ridge_points, ridge_vertices = voronoi_ridges(tiled)
        points = np.mod(cell_centroids(tiled, vertices, ridge_points, ridge_vertices, n), size)
        points[points >= size] = 0.0  # np.mod(-tiny, size) rounds to size
    return points


def tessellate(points: np.ndarray, size: float, margin: float) -> Tessellation:
    """The periodic Voronoi tessellation of ``points`` on the torus [0, size)².

    ``margin`` is how far beyond the square the seeds are copied; a few mean grain
    diameters (or ``size``, the full 3×3 tiling) keeps every cell that reaches into the
    square exact.
    """
    tiled, owner = tile_periodic(points, size, margin)
    vertices, ridge_points, ridge_vertices = voronoi_ridges(tiled)
    return Tessellation(tiled, owner, vertices, ridge_points, ridge_vertices)


def periodic_voronoi(rng: np.random.Generator, n: int, size: float, iterations: int, margin: float,
                     lloyd_margin: float | None = None) -> Tessellation:
    """Random seeds on the torus [0, size)², relaxed ``iterations`` Lloyd steps, tessellated.

    ``margin`` is as in :func:`tessellate`; ``lloyd_margin`` (default ``margin``) is the
    same for the relaxation steps, which only need the cells of the seeds inside the square.
    """
    if iterations < 0:
        raise TessellationError(f"iterations: expected a non-negative integer, got {iterations}")
    points = random_points(rng, n, size)
    points = lloyd_relax(points, size, iterations, margin if lloyd_margin is None else lloyd_margin)
    return tessellate(points, size, margin)
