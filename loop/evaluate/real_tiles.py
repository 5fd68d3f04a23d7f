"""Real crack imagery cut into classifier tiles at its own resolution, and each tile's class.

A whole crack image shrunk to a classifier's input loses a crack a few pixels wide (the
paper, §3.1.1, cut 128 × 128 px tiles from its chip images), so real crack images are
classified tile by tile, at the size the classifier was trained at:

* **Where.** Along each axis of an image of length ``L`` the tiles start at
  ``ceil(L / stride)`` evenly spaced offsets from 0 to ``L - size`` (:func:`tile_starts`): the
  tiles cover the image, overlapping only as much as ``L`` is not a multiple of the stride
  (stride = size by default). An image smaller than a tile along an axis is padded by
  reflection (image and mask alike) when ``pad``, else refused.
* **Class.** A tile is ``crack`` (1) when its mask has at least ``min_crack_px`` crack pixels,
  ``no crack`` (0) when it comes from an image whose mask is empty. A tile of a crack image
  with no crack pixel (:data:`CLEAN_OF_CRACK_IMAGE`) is kept apart — the crack may sit just
  outside it, and a mask may miss faint cracks — unless ``crack_image_negatives``; a tile
  with some but fewer than ``min_crack_px`` crack pixels (:data:`FEW_CRACK_PX`, a crack
  grazing its border) is always kept apart.

:mod:`loop.study.crack_tiles` builds the experiment's tile sets, groups and splits on these;
:func:`loop.evaluate.scoring.evaluate_real` scores a crack classifier on real images with them.
"""

from __future__ import annotations

import math

import numpy as np

from loop.errors import InputError

DEFAULT_MIN_CRACK_PX = 20
"""A tile is a crack tile when its mask has at least this many crack pixels."""

CRACK = 1
NO_CRACK = 0
CLEAN_OF_CRACK_IMAGE = -1
"""A tile without a crack pixel cut from an image whose mask has a crack: kept apart by default."""
FEW_CRACK_PX = -2
"""A tile with some, but fewer than ``min_crack_px``, crack pixels: always kept apart."""

KIND_NAMES = {CRACK: "crack", NO_CRACK: "no crack", CLEAN_OF_CRACK_IMAGE: "crack image, no crack pixel",
              FEW_CRACK_PX: "too few crack pixels"}


class TilingError(InputError):
    """A real folder cannot be tiled as asked (no crack tile, no crack-free image, images too small, bad rule)."""


def tile_starts(length: int, size: int, stride: int | None = None) -> list[int]:
    """Start offsets of tiles of ``size`` along an axis of ``length`` >= ``size`` px.

    ``ceil((length - size) / stride) + 1`` tiles, evenly spaced from 0 to ``length - size``
    (rounded), so they cover the axis and overlap only where they must.

    >>> tile_starts(128, 128), tile_starts(300, 128), tile_starts(256, 128), tile_starts(300, 128, 64)
    ([0], [0, 86, 172], [0, 128], [0, 57, 115, 172])
    """
    stride = size if stride is None else stride
    if length < size:
        raise TilingError(f"tile_starts: axis of {length} px is shorter than a {size} px tile")
    n = math.ceil((length - size) / stride) + 1
    if n == 1:
        return [0]
    return [int(round(i * (length - size) / (n - 1))) for i in range(n)]


def tile_image(image: np.ndarray, mask: np.ndarray, size: int, *, pad: bool = True, stride: int | None = None,
               source: str = "image") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut ``image`` and its ``mask`` into ``size`` px tiles: ``(images (k,s,s), masks (k,s,s), positions (k,2) y,x)``.

    An image smaller than ``size`` along an axis is reflect-padded (image and mask alike)
    when ``pad``; otherwise a :class:`TilingError` naming ``source`` is raised.
    """
    image, mask = np.asarray(image), np.asarray(mask)
    if image.shape != mask.shape or image.ndim != 2:
        raise TilingError(f"{source}: expected a 2-D image and a mask of its size, got {image.shape} and {mask.shape}")
    height, width = image.shape
    if height < size or width < size:
        if not pad:
            raise TilingError(f"{source}: {width}×{height} px is smaller than a {size} px tile "
                              f"(pad it, or use a smaller tile)")
        widths = ((0, max(0, size - height)), (0, max(0, size - width)))
        image, mask = np.pad(image, widths, mode="reflect"), np.pad(mask, widths, mode="reflect")
        height, width = image.shape
    positions = [(y, x) for y in tile_starts(height, size, stride) for x in tile_starts(width, size, stride)]
    tiles = np.stack([image[y:y + size, x:x + size] for y, x in positions])
    masks = np.stack([mask[y:y + size, x:x + size] for y, x in positions])
    return tiles, masks, np.asarray(positions, dtype=np.int64)


def classified_tiles(image: np.ndarray, mask: np.ndarray, size: int, min_crack_px: int, *, pad: bool = True,
                     stride: int | None = None, crack_image_negatives: bool = False, source: str = "image"
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One image's tiles with their class: ``(images, masks (0/1 uint8), positions, crack_px, kinds)``
    (:func:`tile_image`, then :func:`tile_kinds` from each tile's crack pixel count)."""
    tiles, masks, positions = tile_image(image, mask, size, pad=pad, stride=stride, source=source)
    masks = (masks > 0).astype(np.uint8)
    crack_px = masks.reshape(len(masks), -1).sum(axis=1).astype(np.int64)
    kinds = tile_kinds(crack_px, bool(np.asarray(mask).any()), min_crack_px, crack_image_negatives)
    return tiles, masks, positions, crack_px, kinds


def tile_kinds(crack_px: np.ndarray, image_has_crack: bool, min_crack_px: int,
               crack_image_negatives: bool = False) -> np.ndarray:
    """The kind of each tile of one image from its crack pixel counts (see the module docstring)."""
    crack_px = np.asarray(crack_px)
    kinds = np.where(crack_px >= min_crack_px, CRACK, np.where(crack_px > 0, FEW_CRACK_PX, NO_CRACK))
    if image_has_crack and not crack_image_negatives:
        kinds = np.where(kinds == NO_CRACK, CLEAN_OF_CRACK_IMAGE, kinds)
    return kinds.astype(np.int8)
