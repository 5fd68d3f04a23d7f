"""Grain boundaries as cubic splines through randomly displaced control points.

Each straight Voronoi ridge becomes one curve: interior control points are spaced evenly
between its two end vertices and pushed sideways by a random fraction of the room there
(half the ridge length, less where the kite spanned by the ridge and its two seeds
narrows, so neighbouring curves never cross), and a natural cubic spline through the end vertices and the control
points is sampled into a polyline. One curve per ridge, used by both grains on either
side, so the grains share their boundary exactly; the end vertices are kept, so the
curves of a junction still meet.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.interpolate import CubicSpline
from generators.base import GeneratorError


class SplineError(GeneratorError):
    """Bad input to the boundary-curve functions."""


@lru_cache(maxsize=64)
def spline_basis(n_controls: int, n_samples: int) -> np.ndarray:
    """Weights that map spline nodes to samples: (n_samples, n_controls + 2), read-only.

    The nodes sit at parameters ``0, 1/(k+1), ..., 1`` (``k = n_controls``); the samples at
    ``n_samples`` even parameters from 0 to 1. A natural cubic spline is linear in its node
    values, so interpolating the identity gives the weights once for all curves.
    """
    if n_controls < 0 or n_samples < 2:
        raise SplineError(f"n_controls >= 0 and n_samples >= 2 expected, got {n_controls}, {n_samples}")
    nodes = np.linspace(0.0, 1.0, n_controls + 2)
    if n_controls == 0:
        # Two nodes: the natural spline is the straight line.
        t = np.linspace(0.0, 1.0, n_samples)
        basis = np.stack([1.0 - t, t], axis=1)
    else:
        basis = CubicSpline(nodes, np.eye(n_controls + 2), bc_type="natural")(np.linspace(0.0, 1.0, n_samples))
    basis.setflags(write=False)
    return basis


@lru_cache(maxsize=16)
def overshoot_bound(n_controls: int) -> float:
    """How far a spline can stray beyond the room of its control points, as a factor.

    For node offsets ``|d_i| <= w(t_i)`` with ``w`` any tent (concave, zero at both ends),
    the spline ``sum_i B_i(t) d_i`` satisfies ``|s(t)| <= bound * w(t)``, because
    ``w(t_i) / w(t) <= max(t_i / t, (1 - t_i) / (1 - t))``. Evaluated on a fine grid, with
    2 % to spare.
    """
    m = 4001
    t = np.linspace(0.0, 1.0, m)[1:-1, None]
    nodes = np.linspace(0.0, 1.0, n_controls + 2)[None, 1:-1]
    basis = np.abs(spline_basis(n_controls, m)[1:-1, 1:-1])
    ratio = np.maximum(nodes / t, (1.0 - nodes) / (1.0 - t))
    return 1.02 * float(np.max((basis * ratio).sum(axis=1), initial=1.0))


def spline_nodes(start: np.ndarray, end: np.ndarray, seed_point: np.ndarray, offsets: np.ndarray,
                 displacement: float) -> np.ndarray:
    """Spline nodes of E Voronoi ridges: (k + 2, E, 2), end vertices first and last.

    Parameters
    ----------
    start, end : (E, 2) end vertices of the ridges; the curves pass through them.
    seed_point : (E, 2) one of the two seeds either side of each ridge. The ridge lies on
        the perpendicular bisector of the two seeds, so they span a kite around it (the
        triangles seed-start-end on either side) and the kites of all ridges tile the
        plane without overlap.
    offsets : (k, E) random numbers in [-1, 1], one per interior control point; the k
        control points are evenly spaced along each ridge.
    displacement : largest sideways offset of a control point as a fraction of its room:
        half the ridge length, or less where the kite narrows (the kite's half-width
        divided by :func:`overshoot_bound`, so that the whole spline, not only its nodes,
        stays inside the kite, and curves never cross). A control point moves
        ``offsets * displacement * room``; ``displacement`` is at most 1.
    """
    start = np.asarray(start, dtype=np.float64)
    end = np.asarray(end, dtype=np.float64)
    seed_point = np.asarray(seed_point, dtype=np.float64)
    offsets = np.asarray(offsets, dtype=np.float64)
    if start.shape != end.shape or start.shape != seed_point.shape or start.ndim != 2 or start.shape[1] != 2:
        raise SplineError(f"start, end, seed_point: expected three (E, 2) arrays, got shapes "
                          f"{start.shape}, {end.shape}, {seed_point.shape}")
    if offsets.ndim != 2 or offsets.shape[1] != len(start) or np.any(np.abs(offsets) > 1):
        raise SplineError(f"offsets: expected a (k, {len(start)}) array of numbers in [-1, 1], "
                          f"got shape {offsets.shape}")
    if not 0 <= displacement <= 1:
        raise SplineError(f"displacement: expected a fraction in [0, 1], got {displacement!r}")
    n_controls = offsets.shape[0]
    chord = end - start
    rel = seed_point - start
    length = np.hypot(chord[:, 0], chord[:, 1])
    safe = np.maximum(length, 1e-12)  # a zero-length ridge gets zero room below
    unit_normal = np.stack([-chord[:, 1], chord[:, 0]], axis=1) / safe[:, None]
    # The seed's distance from the ridge line and where along the ridge it projects; the
    # kite's half-width rises linearly from each end vertex to that point.
    height = np.abs(chord[:, 0] * rel[:, 1] - chord[:, 1] * rel[:, 0]) / safe
    apex = (chord * rel).sum(axis=1) / (safe * safe)
    t = np.linspace(0.0, 1.0, n_controls + 2)[1:-1, None]
    kite = height * np.minimum(t / np.maximum(apex, 1e-12), (1.0 - t) / np.maximum(1.0 - apex, 1e-12))  # (k, E)
    room = np.minimum(kite / overshoot_bound(n_controls), 0.5 * length)
    shift = displacement * offsets * room
    controls = start[None] + t[:, :, None] * chord[None] + shift[:, :, None] * unit_normal[None]
    return np.concatenate([start[None], controls, end[None]], axis=0)


def sample_curves(nodes: np.ndarray, n_samples: int) -> np.ndarray:
    """Sample the natural cubic splines through ``nodes`` (K, E, 2): (n_samples, E, 2) polylines.

    The first and last samples are exactly the first and last nodes, so curves that
    share an end vertex meet at the very same point.
    """
    k2, e, _ = nodes.shape
    curves = (spline_basis(k2 - 2, n_samples) @ nodes.reshape(k2, 2 * e)).reshape(n_samples, e, 2)
    curves[0], curves[-1] = nodes[0], nodes[-1]
    return curves
