"""How an inverse model sees an image: ``size``-px tiles on an even grid (both inverse models share this rule)."""

from __future__ import annotations

import math

import numpy as np

from loop.errors import InputError


class InverseError(InputError):
    """The inverse model cannot be trained on, or applied to, what it was given."""


def tile_grid(image: np.ndarray, size: int, tiles: int, where: str = "image") -> np.ndarray:
    """Up to ``tiles × tiles`` ``size``-px tiles of a uint8 H×W image on an even grid, as float32 in [0, 1]."""
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise InverseError(f"{where}: expected a uint8 H×W grey image, got {image.dtype} {image.shape}")
    h, w = image.shape
    if h < size or w < size:
        raise InverseError(f"{where}: {w}×{h} px is smaller than the inverse model's input of {size}×{size} px")
    ys = np.unique(np.linspace(0, h - size, min(tiles, math.ceil(h / size))).round().astype(int))
    xs = np.unique(np.linspace(0, w - size, min(tiles, math.ceil(w / size))).round().astype(int))
    out = np.stack([image[y:y + size, x:x + size] for y in ys for x in xs])
    return out.astype(np.float32) / np.float32(255.0)
