"""Boundary splines: through the end vertices, bounded offsets, inside their kites (no crossings)."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.path import Path

from generators.splines import SplineError, sample_curves, spline_basis, spline_nodes
from generators.tessellation import periodic_voronoi


def _ridges(seed: int = 0):
    tess = periodic_voronoi(np.random.default_rng(seed), 40, 100.0, 1, 100.0)
    start = tess.vertices[tess.ridge_vertices[:, 0]]
    end = tess.vertices[tess.ridge_vertices[:, 1]]
    return tess, start, end


@pytest.mark.parametrize(("k", "m"), [(0, 5), (1, 9), (3, 17), (3, 40)])
def test_basis_is_an_interpolating_partition_of_unity(k: int, m: int) -> None:
    basis = spline_basis(k, m)
    assert basis.shape == (m, k + 2)
    np.testing.assert_allclose(basis.sum(axis=1), 1.0, atol=1e-12)  # constants are reproduced
    t = np.linspace(0.0, 1.0, m)
    np.testing.assert_allclose(basis @ np.linspace(0.0, 1.0, k + 2), t, atol=1e-12)  # so are straight lines
    if (m - 1) % (k + 1) == 0:  # samples that fall on nodes give the node values
        step = (m - 1) // (k + 1)
        np.testing.assert_allclose(basis[::step], np.eye(k + 2), atol=1e-12)


def test_curves_run_from_start_to_end_and_are_straight_without_displacement() -> None:
    tess, start, end = _ridges()
    offsets = np.random.default_rng(1).uniform(-1, 1, (2, len(start)))
    seeds = tess.seeds[tess.ridge_points[:, 0]]
    curves = sample_curves(spline_nodes(start, end, seeds, offsets, 0.4), 13)
    assert curves.shape == (13, len(start), 2)
    assert np.array_equal(curves[0], start) and np.array_equal(curves[-1], end)
    straight = sample_curves(spline_nodes(start, end, seeds, offsets, 0.0), 13)
    t = np.linspace(0.0, 1.0, 13)[:, None, None]
    np.testing.assert_allclose(straight, start + t * (end - start), atol=1e-9)
    assert np.abs(curves - straight).max() > 0.5  # the displaced curves do bend


def test_control_points_move_sideways_within_their_room() -> None:
    tess, start, end = _ridges(2)
    offsets = np.ones((1, len(start)))  # the largest offset, to one side
    nodes = spline_nodes(start, end, tess.seeds[tess.ridge_points[:, 0]], offsets, 0.5)
    chord = end - start
    length = np.hypot(*chord.T)
    shift = nodes[1] - (start + 0.5 * chord)
    along = (shift * chord).sum(axis=1)
    np.testing.assert_allclose(along, 0.0, atol=1e-9)  # perpendicular to the ridge
    assert np.all(np.hypot(*shift.T) <= 0.5 * 0.5 * length + 1e-9)


@pytest.mark.parametrize("seed", [3, 4])
def test_curves_stay_inside_their_kites(seed: int) -> None:
    """Kites of different ridges do not overlap, so curves inside them never cross."""
    tess, start, end = _ridges(seed)
    rng = np.random.default_rng(seed)
    a, b = tess.ridge_points[:, 0], tess.ridge_points[:, 1]
    for k in (1, 2, 3):
        offsets = rng.choice([-1.0, 1.0], size=(k, len(start)))  # the extremes
        curves = sample_curves(spline_nodes(start, end, tess.seeds[a], offsets, 1.0), 41)
        for e in range(len(start)):
            kite = Path([start[e], tess.seeds[a[e]], end[e], tess.seeds[b[e]], start[e]])
            inside = kite.contains_points(curves[1:-1, e], radius=1e-6) | kite.contains_points(
                curves[1:-1, e], radius=-1e-6)
            assert inside.all(), f"ridge {e} leaves its kite with {k} control points"


def test_bad_input() -> None:
    z = np.zeros((3, 2))
    with pytest.raises(SplineError, match="start, end, seed_point"):
        spline_nodes(z, np.zeros((4, 2)), z, np.zeros((1, 3)), 0.1)
    with pytest.raises(SplineError, match="offsets"):
        spline_nodes(z, z, z, np.full((1, 3), 2.0), 0.1)
    with pytest.raises(SplineError, match="displacement"):
        spline_nodes(z, z, z, np.zeros((1, 3)), 1.1)
    with pytest.raises(SplineError, match="n_samples"):
        spline_basis(1, 1)
