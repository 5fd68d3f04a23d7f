"""Vectorised 2-D Perlin ("improved") gradient noise on a regular grid.

The lattice hashing and the gradient set follow Ken Perlin's improved noise as implemented
by the ``noise`` package (``noise.pnoise2``), so with the same permutation table the values
agree with ``pnoise2`` up to float rounding. Instead of evaluating every pixel on its own,
the grid is separable: first each lattice row is interpolated along x for every column
(a small ``(lattice rows, W)`` array), then every image row blends two of those rows with
its y fade weights, which is one sparse-times-dense product for the whole image. The cost
is a few passes over the image whatever the wavelength.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from generators.base import GeneratorError

# The 2-D gradients of improved Perlin noise: the (x, y) part of the 16 cube-edge vectors.
_GRAD2 = np.array(
    [[1, 1], [-1, 1], [1, -1], [-1, -1], [1, 0], [-1, 0], [1, 0], [-1, 0],
     [0, 1], [0, -1], [0, 1], [0, -1], [1, 0], [-1, 0], [0, -1], [0, 1]],
    dtype=np.float64,
)


class PerlinError(GeneratorError):
    """Bad input to the Perlin noise functions."""


def random_permutation(rng: np.random.Generator) -> np.ndarray:
    """A random lattice hash table: a permutation of 0..255 drawn from ``rng``."""
    return rng.permutation(256).astype(np.int64)


def _check_permutation(perm: np.ndarray) -> np.ndarray:
    perm = np.asarray(perm)
    if perm.shape != (256,) or not np.array_equal(np.sort(perm), np.arange(256)):
        raise PerlinError(f"perm: expected a permutation of 0..255 (shape (256,)), got shape {perm.shape}")
    return np.concatenate([perm, perm]).astype(np.int64)


def lattice_gradients(i: np.ndarray, j: np.ndarray, perm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient vectors at the lattice nodes ``(i[col], j[row])``.

    Returns two ``(len(j), len(i))`` arrays, the x and y components, hashed as in
    ``noise.pnoise2``: ``perm[perm[perm[i] + j]]``, indices taken modulo 256.
    """
    p = _check_permutation(perm)
    h = p[p[p[np.asarray(i) & 255][None, :] + (np.asarray(j) & 255)[:, None]]] & 15
    g = _GRAD2[h]
    return g[..., 0], g[..., 1]


def _fade(f: np.ndarray) -> np.ndarray:
    return f * f * f * (f * (f * 6.0 - 15.0) + 10.0)


def perlin_grid(xs: np.ndarray, ys: np.ndarray, perm: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """Perlin noise at every point of the grid ``xs`` × ``ys``.

    Parameters
    ----------
    xs, ys : 1-D arrays of coordinates in lattice units (one lattice cell = one wavelength).
    perm : a permutation of 0..255 (the lattice hash table), e.g. :func:`random_permutation`.
    dtype : float type of the computation and of the result.

    Returns
    -------
    array of shape ``(len(ys), len(xs))``: ``out[r, c]`` is the noise at ``(xs[c], ys[r])``,
    in about [-1, 1].

    Examples
    --------
    >>> perm = random_permutation(np.random.default_rng(0))
    >>> perlin_grid(np.linspace(0, 4, 64), np.linspace(0, 4, 32), perm).shape
    (32, 64)
    """
    xs = np.asarray(xs, dtype=np.float64)
    ys = np.asarray(ys, dtype=np.float64)
    if xs.ndim != 1 or ys.ndim != 1 or xs.size == 0 or ys.size == 0:
        raise PerlinError(f"xs, ys: expected non-empty 1-D coordinate arrays, got shapes {xs.shape}, {ys.shape}")
    if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
        raise PerlinError("xs, ys: coordinates must be finite")
    i0, j0 = int(np.floor(xs.min())), int(np.floor(ys.min()))
    ni, nj = int(np.floor(xs.max())) - i0 + 2, int(np.floor(ys.max())) - j0 + 2
    gx, gy = lattice_gradients(np.arange(i0, i0 + ni), np.arange(j0, j0 + nj), perm)
    gx, gy = gx.astype(dtype), gy.astype(dtype)

    # Along x, per lattice row j and column c: the x-part of the two gradient dot
    # products blended by the x fade, and the blended y-gradient that multiplies dy.
    cx = np.floor(xs)
    fx = (xs - cx).astype(dtype)
    u = _fade(fx)
    ix = (cx - i0).astype(np.int64)
    along_x = gx[:, ix] * ((1 - u) * fx) + gx[:, ix + 1] * (u * (fx - 1))
    y_coef = gy[:, ix] * (1 - u) + gy[:, ix + 1] * u

    # Along y: each output row blends two lattice rows; a sparse (H, 2 nj) matrix with
    # four entries per row does the blend for the whole image in one product.
    cy = np.floor(ys)
    fy = (ys - cy).astype(dtype)
    v = _fade(fy)
    iy = (cy - j0).astype(np.int64)
    cols = np.stack([iy, iy + 1, nj + iy, nj + iy + 1], axis=1).ravel()
    vals = np.stack([1 - v, v, (1 - v) * fy, v * (fy - 1)], axis=1).ravel()
    indptr = np.arange(0, 4 * ys.size + 1, 4)
    blend_y = sparse.csr_matrix((vals, cols, indptr), shape=(ys.size, 2 * nj), dtype=dtype)
    return np.asarray(blend_y @ np.concatenate([along_x, y_coef]), dtype=dtype)


def perlin_image(rng: np.random.Generator, shape: tuple[int, int], wavelength: float) -> np.ndarray:
    """One octave of Perlin noise over an image, float32, with random hash table and phase.

    ``wavelength`` is the lattice spacing in pixels; pixel centres sit at ``index + 0.5``.
    """
    if not wavelength > 0:
        raise PerlinError(f"wavelength: expected a positive number of pixels, got {wavelength!r}")
    perm = random_permutation(rng)
    ox, oy = rng.random(2) * 256.0
    h, w = shape
    xs = ox + (np.arange(w) + 0.5) / wavelength
    ys = oy + (np.arange(h) + 0.5) / wavelength
    return perlin_grid(xs, ys, perm)
