"""Periodic Voronoi tessellation: ridges as scipy's Voronoi, centroids, tiling, Lloyd steps."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import Voronoi, cKDTree

from generators.tessellation import (
    TessellationError,
    cell_centroids,
    lloyd_relax,
    periodic_voronoi,
    random_points,
    tessellate,
    tile_periodic,
    voronoi_ridges,
)


def _cell_areas(seeds: np.ndarray, vertices: np.ndarray, ridge_points: np.ndarray,
                ridge_vertices: np.ndarray, n: int) -> np.ndarray:
    v1, v2 = vertices[ridge_vertices[:, 0]], vertices[ridge_vertices[:, 1]]
    areas = np.zeros(n)
    for side in (0, 1):
        s = seeds[ridge_points[:, side]]
        tri = 0.5 * np.abs((v1[:, 0] - s[:, 0]) * (v2[:, 1] - s[:, 1]) - (v1[:, 1] - s[:, 1]) * (v2[:, 0] - s[:, 0]))
        inside = ridge_points[:, side] < n
        np.add.at(areas, ridge_points[inside, side], tri[inside])
    return areas


def test_ridges_match_scipy_voronoi() -> None:
    points = np.random.default_rng(0).random((60, 2)) * 100
    vertices, ridge_points, ridge_vertices = voronoi_ridges(points)
    vor = Voronoi(points)
    finite = np.all(np.asarray(vor.ridge_vertices) >= 0, axis=1)
    ref = {}
    for (a, b), (i, j) in zip(vor.ridge_points[finite], np.asarray(vor.ridge_vertices)[finite]):
        ends = sorted([tuple(np.round(vor.vertices[i], 6)), tuple(np.round(vor.vertices[j], 6))])
        ref[(min(a, b), max(a, b))] = ends
    ours = {}
    for (a, b), (i, j) in zip(ridge_points, ridge_vertices):
        ours[(min(a, b), max(a, b))] = sorted([tuple(np.round(vertices[i], 6)), tuple(np.round(vertices[j], 6))])
    assert ours == ref


def test_centroids_match_a_fine_pixel_assignment() -> None:
    rng = np.random.default_rng(1)
    points = rng.random((100, 2)) * 100
    vertices, ridge_points, ridge_vertices = voronoi_ridges(points)
    # Cells well inside the point cloud are bounded; compare those with the mean of the
    # grid samples nearest to each seed.
    inner = np.flatnonzero(np.all((points > 25) & (points < 75), axis=1))
    centroids = cell_centroids(points, vertices, ridge_points, ridge_vertices, len(points))
    g = (np.arange(1000) + 0.5) * 0.1
    gx, gy = np.meshgrid(g, g)
    samples = np.stack([gx.ravel(), gy.ravel()], axis=1)
    owner = cKDTree(points).query(samples)[1]
    for i in inner:
        np.testing.assert_allclose(centroids[i], samples[owner == i].mean(axis=0), atol=0.1)
    assert len(inner) >= 5


def test_tiling_copies_across_the_border() -> None:
    points = np.random.default_rng(2).random((30, 2)) * 64
    tiled, owner = tile_periodic(points, 64, 20)
    assert np.array_equal(tiled[:30], points) and np.array_equal(owner[:30], np.arange(30))
    shift = (tiled - points[owner]) / 64
    assert np.allclose(shift, np.round(shift)) and set(np.unique(np.round(shift))) <= {-1.0, 0.0, 1.0}
    assert np.all((tiled >= -20) & (tiled < 84))
    # Every point within the margin of an edge has its copy on the other side.
    assert np.count_nonzero(owner == owner[np.argmin(points[:, 0])]) >= 2
    full, _ = tile_periodic(points, 64, 64)
    assert len(full) == 9 * 30


@pytest.mark.parametrize(("n", "iterations", "margin"), [(6, 0, 64.0), (40, 2, 40.0), (200, 1, 20.0)])
def test_central_cells_tile_the_torus(n: int, iterations: int, margin: float) -> None:
    tess = periodic_voronoi(np.random.default_rng(n), n, 64.0, iterations, margin)
    areas = _cell_areas(tess.seeds, tess.vertices, tess.ridge_points, tess.ridge_vertices, n)
    assert tess.n_base == n
    assert np.all(areas > 0)
    assert areas.sum() == pytest.approx(64.0 * 64.0, rel=1e-9)


def test_lloyd_steps_even_out_the_cells() -> None:
    size, n = 128.0, 150
    points = random_points(np.random.default_rng(5), n, size)

    def area_spread(p: np.ndarray) -> float:
        t = tessellate(p, size, size)
        areas = _cell_areas(t.seeds, t.vertices, t.ridge_points, t.ridge_vertices, n)
        return float(areas.std() / areas.mean())

    relaxed = lloyd_relax(points, size, 3, 40.0, 30.0)
    assert np.all((relaxed >= 0) & (relaxed < size))
    assert area_spread(relaxed) < 0.5 * area_spread(points)
    # Narrow margins give the same steps as the full 3x3 tiling.
    np.testing.assert_allclose(relaxed, lloyd_relax(points, size, 3, size), atol=1e-6)
    assert np.array_equal(lloyd_relax(points, size, 0, 10.0), points)


def test_bad_input() -> None:
    with pytest.raises(TessellationError, match="margin"):
        tile_periodic(np.zeros((3, 2)), 10.0, 0.0)
    with pytest.raises(TessellationError, match="n: expected at least 1"):
        random_points(np.random.default_rng(0), 0, 10.0)
    with pytest.raises(TessellationError, match="iterations"):
        periodic_voronoi(np.random.default_rng(0), 5, 10.0, -1, 10.0)
