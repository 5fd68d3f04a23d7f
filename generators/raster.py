"""Rasterise boundary polylines: a grain label image and a boundary band mask.

Pixel ``(r, c)`` covers ``[c, c+1) × [r, r+1)``; its centre is ``(c + 0.5, r + 0.5)``.

Labels are filled by one scan-line pass over all curves at once. The curves partition
the plane, so along an image row the label only changes where a curve crosses the row,
and each curve knows the grain on either side: at every crossing the label of the grain
on the +x side starts. Sorting the crossings of all rows and repeating each label up to
the next crossing fills the image without a per-grain loop, and a pixel belongs to
exactly one grain, so neighbouring grains can neither overlap nor leave a gap.

The boundary mask is the set of pixels whose centre lies within ``thickness / 2`` of a
curve: each segment's band is cut along the rows and along the columns it crosses (the
half-width along a cut is ``thickness / 2`` divided by the normal's component on it),
plus a disc at every junction so bands meet cleanly where curves end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from generators.base import GeneratorError


class RasterError(GeneratorError):
    """Bad input to the rasterisation functions, or curves that do not cover the image."""


@dataclass(frozen=True)
class Polylines:
    """Curves as flat segment arrays, shared by :func:`fill_labels` and :func:`band_mask`.

    Segment ``i`` runs from ``(x0[i], y0[i])`` to ``(x1[i], y1[i])`` and belongs to curve
    ``curve[i]``; ``junctions`` (J, 2) are the points where curves end and meet.
    """

    x0: np.ndarray
    y0: np.ndarray
    x1: np.ndarray
    y1: np.ndarray
    curve: np.ndarray
    junctions: np.ndarray
    _memo: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def crossings(self, along_rows: bool, n_lines: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where the segments cross the rows' (or columns') centre lines 0..n_lines-1.

        Returns (segment index, line index, x (or y) at the crossing); see
        :func:`_crossings`. Remembered, since the fill and the band use the same rows.
        """
        key = (along_rows, n_lines)
        if key not in self._memo:
            ends = (self.x0, self.y0, self.x1, self.y1) if along_rows else (self.y0, self.x0, self.y1, self.x1)
            self._memo[key] = _crossings(*ends, n_lines)
        return self._memo[key]


def polylines(curves: np.ndarray | Sequence[np.ndarray], junctions: np.ndarray | None = None) -> Polylines:
    """Flatten one (M, E, 2) array of sampled curves, or a list of them with different M.

    Curves are numbered through the list in order. ``junctions`` defaults to every
    curve's two end points; pass the distinct end vertices to skip the duplicates.
    """
    groups = [curves] if isinstance(curves, np.ndarray) else list(curves)
    p0, p1, curve, first = [], [], [], 0
    for c in groups:
        if c.ndim != 3 or c.shape[2] != 2 or c.shape[0] < 2:
            raise RasterError(f"curves: expected (M >= 2, E, 2) arrays, got shape {c.shape}")
        p0.append(c[:-1].reshape(-1, 2))
        p1.append(c[1:].reshape(-1, 2))
        curve.append(np.arange((c.shape[0] - 1) * c.shape[1]) % c.shape[1] + first)
        first += c.shape[1]
    if not groups:
        raise RasterError("curves: expected at least one group of curves, got none")
    a, b = np.concatenate(p0), np.concatenate(p1)
    if junctions is None:
        junctions = np.concatenate([c[i] for c in groups for i in (0, -1)])
    return Polylines(a[:, 0], a[:, 1], b[:, 0], b[:, 1], np.concatenate(curve), np.asarray(junctions, dtype=float))


def _expand(first: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For items with index runs ``first[i] .. first[i] + count[i] - 1``: (item index, index) pairs."""
    count = np.maximum(count, 0)
    item = np.repeat(np.arange(len(count)), count)
    starts = np.cumsum(count) - count
    return item, first[item] + (np.arange(item.size) - starts[item])


def _crossings(a0: np.ndarray, b0: np.ndarray, a1: np.ndarray, b1: np.ndarray,
               n_lines: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where segments cross the pixel-centre lines ``b = k + 0.5``, k in [0, n_lines).

    ``b`` is the scanned coordinate (y for rows), ``a`` the other. Half-open: a segment
    crosses line k when ``min(b0, b1) <= k + 0.5 < max(b0, b1)``, so a polyline crossing
    a line at a shared vertex counts once. Returns (segment index, k, a at the crossing).
    """
    lo, hi = np.minimum(b0, b1), np.maximum(b0, b1)
    first = np.clip(np.ceil(lo - 0.5), 0, n_lines).astype(np.int64)
    stop = np.clip(np.ceil(hi - 0.5), 0, n_lines).astype(np.int64)
    seg, k = _expand(first, stop - first)
    db = b1[seg] - b0[seg]
    a = a0[seg] + (k + 0.5 - b0[seg]) * (a1[seg] - a0[seg]) / db
    return seg, k, a


def fill_labels(lines: Polylines, left: np.ndarray, right: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Label image (int32) of the regions bounded by the curves.

    Parameters
    ----------
    lines : the curves (see :func:`polylines`); they must partition the plane around the image.
    left, right : (E,) labels of the regions on either side of each curve, seen walking
        from its first point to its last with x to the right and y down the rows
        (``left`` is where the cross product of the direction and the offset is > 0).
    shape : (rows, columns) of the image.

    Every row must be crossed by some curve (anywhere along it); the pixels left of a row's
    leftmost crossing get the label on that crossing's near side. Otherwise :class:`RasterError`.
    """
    h, w = shape
    left = np.asarray(left, dtype=np.int32)
    right = np.asarray(right, dtype=np.int32)
    y0, y1, edge = lines.y0, lines.y1, lines.curve
    seg, row, x = lines.crossings(True, h)
    # Moving towards -y (dy < 0) the +x side is the "left" side of the walk.
    upward = y1[seg] < y0[seg]
    label = np.where(upward, left[edge[seg]], right[edge[seg]])
    before = np.where(upward, right[edge[seg]], left[edge[seg]])
    # Sort by row, then x: one float key (about 10x faster than lexsort) whose row
    # stride exceeds the spread of x.
    x_min = x.min(initial=0.0)
    order = np.argsort(row * (x.max(initial=0.0) - x_min + 1.0) + (x - x_min))
    row, x, label, before = row[order], x[order], label[order], before[order]
    first = np.flatnonzero(np.r_[True, row[1:] != row[:-1]]) if row.size else np.zeros(0, np.int64)
    if first.size != h:
        missing = sorted(set(range(h)) - set(row[first].tolist()))
        raise RasterError(f"curves: rows {missing[:5]} are crossed by no curve")
    # Each row starts in the region on the near side of its leftmost crossing, wherever
    # that crossing lies: a span from pixel 0 that a crossing at or left of pixel 0 overrides.
    start = np.maximum(np.ceil(x - 0.5), 0).astype(np.int64)  # first pixel whose centre is past x
    row = np.insert(row, first, row[first])
    start = np.insert(start, first, 0)
    label = np.insert(label, first, before[first])
    inside = start < w
    row, start, label = row[inside], start[inside], label[inside]
    # Several crossings before the same pixel: the rightmost one decides.
    last = np.ones(row.size, dtype=bool)
    last[:-1] = (row[1:] != row[:-1]) | (start[1:] != start[:-1])
    row, start, label = row[last], start[last], label[last]
    row_first = np.ones(row.size, dtype=bool)
    row_first[1:] = row[1:] != row[:-1]
    stop = np.empty_like(start)
    stop[:-1] = np.where(row_first[1:], w, start[1:])
    stop[-1] = w
    return np.repeat(label, stop - start).reshape(h, w)


def _mark_spans(mask: np.ndarray, line: np.ndarray, lo: np.ndarray, hi: np.ndarray, along_rows: bool) -> None:
    """Set ``mask`` to 1 on the pixel runs ``lo..hi`` (inclusive) of rows (or columns) ``line``."""
    h, w = mask.shape
    n = w if along_rows else h
    visible = (lo <= n - 1) & (hi >= 0)
    line, lo, hi = line[visible], np.maximum(lo[visible], 0), np.minimum(hi[visible], n - 1)
    item, pos = _expand(lo, hi - lo + 1)
    flat = line[item] * w + pos if along_rows else pos * w + line[item]
    mask.reshape(-1)[flat] = 1


def band_mask(lines: Polylines, thickness: float, shape: tuple[int, int]) -> np.ndarray:
    """Boundary mask (uint8, 1 = boundary): pixels within ``thickness / 2`` of a curve.

    The curve ends get round caps (discs at ``lines.junctions``). ``thickness`` is in
    pixels and at least 1, which keeps the band closed: of two pixels side by side on
    either side of a curve, at least one is in the band (so 4-connected grains stay apart).
    """
    if not thickness >= 1.0:
        raise RasterError(f"thickness: expected at least 1 px, got {thickness!r}")
    h, w = shape
    mask = np.zeros(shape, dtype=np.uint8)
    half = 0.5 * thickness
    x0, y0, x1, y1 = lines.x0, lines.y0, lines.x1, lines.y1
    length = np.hypot(x1 - x0, y1 - y0)
    # Every segment is cut along the rows it crosses and along the columns it crosses:
    # the same crossings the label fill uses, so next to every label change the band
    # covers a pixel centre. Along a cut the band reaches ``half / |normal component|``
    # either side of the crossing, but not beyond the segment's extent plus ``half``.
    for along_rows in (True, False):
        a0, b0, a1, b1 = (x0, y0, x1, y1) if along_rows else (y0, x0, y1, x1)
        seg, line, a = lines.crossings(along_rows, h if along_rows else w)
        reach = half * length[seg] / np.abs(b1[seg] - b0[seg])
        lo = np.maximum(a - reach, np.minimum(a0[seg], a1[seg]) - half)
        hi = np.minimum(a + reach, np.maximum(a0[seg], a1[seg]) + half)
        _mark_spans(mask, line, np.ceil(lo - 0.5).astype(np.int64), np.floor(hi - 0.5).astype(np.int64), along_rows)
    _mark_discs(mask, lines.junctions, half)
    return mask


def _mark_discs(mask: np.ndarray, centres: np.ndarray, radius: float) -> None:
    """Set ``mask`` to 1 at pixels whose centre is within ``radius`` of one of ``centres``."""
    h, w = mask.shape
    reach = int(np.ceil(radius)) + 1
    x, y = centres[:, 0], centres[:, 1]
    near_image = (x > -reach) & (x < w + reach) & (y > -reach) & (y < h + reach)
    x, y = x[near_image, None], y[near_image, None]
    off = np.arange(-reach, reach + 1)
    cols = np.floor(x).astype(np.int64) + off  # (J, K)
    rows = np.floor(y).astype(np.int64) + off
    dx2 = np.where((cols >= 0) & (cols < w), (cols + 0.5 - x) ** 2, np.inf)
    dy2 = np.where((rows >= 0) & (rows < h), (rows + 0.5 - y) ** 2, np.inf)
    near = dy2[:, :, None] + dx2[:, None, :] <= radius * radius
    flat = rows[:, :, None] * w + cols[:, None, :]
    mask.reshape(-1)[flat[near]] = 1
