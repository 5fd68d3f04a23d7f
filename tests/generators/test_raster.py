"""Rasterisation: scan-line label fill (exact, gap-free) and the boundary band mask."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from generators.raster import RasterError, band_mask, fill_labels, polylines
from generators.splines import sample_curves, spline_nodes
from generators.tessellation import periodic_voronoi

SIZE = 96


def _tessellation_curves(seed: int, n: int, displacement: float, k: int = 2, samples: int = 17):
    """Curves for every finite ridge of a periodic tessellation of [0, SIZE)², and the side labels."""
    tess = periodic_voronoi(np.random.default_rng(seed), n, float(SIZE), 1, float(SIZE))
    start = tess.vertices[tess.ridge_vertices[:, 0]]
    end = tess.vertices[tess.ridge_vertices[:, 1]]
    a, b = tess.ridge_points[:, 0], tess.ridge_points[:, 1]
    offsets = np.random.default_rng(seed + 1).uniform(-1, 1, (k, len(start)))
    curves = sample_curves(spline_nodes(start, end, tess.seeds[a], offsets, displacement), samples)
    chord, to_a = end - start, tess.seeds[a] - start
    a_left = chord[:, 0] * to_a[:, 1] - chord[:, 1] * to_a[:, 0] > 0
    left, right = np.where(a_left, a, b), np.where(a_left, b, a)
    return tess, curves, left, right


def _pixel_centres(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], axis=1)


def test_straight_boundaries_give_the_voronoi_labels() -> None:
    tess, curves, left, right = _tessellation_curves(0, 30, 0.0)
    labels = fill_labels(polylines(curves), left, right, (SIZE, SIZE))
    centres = _pixel_centres(SIZE, SIZE)
    dist, nearest = cKDTree(tess.seeds).query(centres, k=2)
    clear = (dist[:, 1] - dist[:, 0]) > 1e-6  # not on a ridge to float precision
    assert clear.mean() > 0.99
    assert np.array_equal(labels.ravel()[clear], nearest[clear, 0])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_curved_boundaries_leave_no_gaps_and_only_true_neighbours_touch(seed: int) -> None:
    tess, curves, left, right = _tessellation_curves(seed, 25, 0.9, k=3)
    labels = fill_labels(polylines(curves), left, right, (SIZE, SIZE))
    assert labels.dtype == np.int32 and labels.min() >= 0 and labels.max() < len(tess.seeds)
    # Each seed's pixel lies deep inside its own grain.
    for i, (x, y) in enumerate(tess.seeds[: tess.n_base]):
        assert labels[int(y), int(x)] == i
    # Pixels side by side with different labels belong to grains sharing a ridge.
    pairs = {(min(a, b), max(a, b)) for a, b in tess.ridge_points.tolist()}
    for axis in (0, 1):
        a = labels if axis == 0 else labels.T
        diff = a[:, 1:] != a[:, :-1]
        touching = {(min(p, q), max(p, q)) for p, q in zip(a[:, 1:][diff].tolist(), a[:, :-1][diff].tolist())}
        assert touching <= pairs


@pytest.mark.parametrize("thickness", [1.0, 2.5, 6.3])
def test_band_separates_every_pair_of_neighbouring_grains(thickness: float) -> None:
    _, curves, left, right = _tessellation_curves(4, 40, 0.9, k=3)
    lines = polylines(curves)
    labels = fill_labels(lines, left, right, (SIZE, SIZE))
    mask = band_mask(lines, thickness, (SIZE, SIZE)).astype(bool)
    for a, m in ((labels, mask), (labels.T, mask.T)):
        differ = a[:, 1:] != a[:, :-1]
        assert np.all(m[:, 1:][differ] | m[:, :-1][differ])


@pytest.mark.parametrize("angle_deg", [0.0, 17.0, 45.0, 62.0, 90.0, 133.0])
@pytest.mark.parametrize("thickness", [1.0, 3.7, 8.0])
def test_band_of_a_line_is_the_pixels_within_half_the_thickness(angle_deg: float, thickness: float) -> None:
    h, w = 40, 50
    centre = np.array([23.37, 18.81])
    direction = np.array([np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))])
    t = np.linspace(-100.0, 100.0, 9)[:, None, None]
    curve = centre + t * direction  # (9, 1, 2): a polyline well beyond the image both ways
    mask = band_mask(polylines(curve, junctions=np.zeros((0, 2))), thickness, (h, w))
    rel = _pixel_centres(h, w) - centre
    distance = np.abs(rel[:, 0] * direction[1] - rel[:, 1] * direction[0]).reshape(h, w)
    clear = np.abs(distance - thickness / 2) > 1e-6
    assert np.array_equal(mask.astype(bool)[clear], (distance <= thickness / 2)[clear])
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}


def test_junction_caps_are_discs() -> None:
    far = np.array([[[-50.0, -50.0]], [[-40.0, -50.0]]])  # a curve that never reaches the image
    junction = np.array([[20.3, 30.7]])
    mask = band_mask(polylines(far, junctions=junction), 7.0, (48, 40))
    distance = np.hypot(*(_pixel_centres(48, 40) - junction).T).reshape(48, 40)
    assert np.array_equal(mask.astype(bool), distance <= 3.5)


def test_rows_without_a_curve_on_their_left_are_an_error() -> None:
    inner = np.array([[[10.0, 2.0]], [[12.0, 30.0]]])  # crosses rows 2..29 inside the image only
    with pytest.raises(RasterError, match="rows"):
        fill_labels(polylines(inner), np.array([0]), np.array([1]), (32, 32))


def test_bad_input() -> None:
    with pytest.raises(RasterError, match="curves"):
        polylines(np.zeros((1, 3, 2)))
    with pytest.raises(RasterError, match="curves"):
        polylines([])
    with pytest.raises(RasterError, match="thickness"):
        band_mask(polylines(np.zeros((2, 1, 2))), 0.5, (8, 8))
