"""On-the-fly transforms of (image, mask) pairs: resizing and random augmentation.

Pure functions on numpy arrays. Images are float32 H×W in [0, 1] (see
:func:`to_unit_float`); masks are H×W arrays (uint8 or float32 soft masks) or ``None`` (a
classification sample: only the image is transformed). Every random draw comes from the
``numpy.random.Generator`` passed in. Geometric operations (flips, 90° rotations, rotation
by any angle and zoom, stretch/squish) move image and mask together; intensity jitter touches
the image only. An augmentation set to 0 draws nothing, so adding one that is off leaves the
draws, and the bytes, of the others as they were.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from loop.config.training import AugmentConfig
from loop.errors import InputError

Pair = tuple[np.ndarray, "np.ndarray | None"]


def to_unit_float(image: np.ndarray) -> np.ndarray:
    """A uint8 image as float32 in [0, 1]."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise InputError(f"image: expected uint8 H×W, got dtype {image.dtype}")
    return image.astype(np.float32) / np.float32(255.0)


def resize_pair(image: np.ndarray, mask: np.ndarray | None, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize to ``size``×``size``: bilinear (antialiased) image; the mask as its area fraction when shrinking.

    Shrinking a thin-boundary mask with nearest neighbours would drop boundary pixels, so a
    shrunk mask is the fraction of boundary in each output pixel (a soft float32 target);
    an enlarged mask uses nearest neighbours (values kept). Same size: returned unchanged.
    """
    h, w = image.shape
    if (h, w) == (size, size):
        return image, mask
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    out = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=size < max(h, w))
    image = out[0, 0].clamp_(0.0, 1.0).numpy()
    if mask is not None:
        m = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
        shrink = size < h or size < w
        m = F.interpolate(m, size=(size, size), mode="area" if shrink else "nearest-exact")
        mask = m[0, 0].numpy()
    return image, mask


def random_flip(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator) -> Pair:
    """Flip left-right and up-down, each with probability 1/2."""
    lr, ud = rng.random(2) < 0.5
    if lr:
        image = image[:, ::-1]
        mask = mask[:, ::-1] if mask is not None else None
    if ud:
        image = image[::-1, :]
        mask = mask[::-1, :] if mask is not None else None
    return image, mask


def random_rot90(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator) -> Pair:
    """Rotate by a random multiple of 90° (of 180° for a non-square image, to keep its shape)."""
    k = int(rng.integers(0, 4)) if image.shape[0] == image.shape[1] else 2 * int(rng.integers(0, 2))
    if k:
        image = np.rot90(image, k)
        mask = np.rot90(mask, k) if mask is not None else None
    return image, mask


def jitter_intensity(image: np.ndarray, rng: np.random.Generator, brightness: float, contrast: float) -> np.ndarray:
    """Scale contrast about the image mean by a factor in [1-c, 1+c], shift by [-b, b]; clip to [0, 1]."""
    factor = rng.uniform(1.0 - contrast, 1.0 + contrast) if contrast else 1.0
    shift = rng.uniform(-brightness, brightness) if brightness else 0.0
    offset = float(image.mean()) * (1.0 - factor) + shift
    return np.clip(image * np.float32(factor) + np.float32(offset), 0.0, 1.0).astype(np.float32)


def _crop_or_pad(a: np.ndarray, shape: tuple[int, int], offsets: tuple[int, int]) -> np.ndarray:
    out = a
    for axis, (n, off) in enumerate(zip(shape, offsets)):
        have = out.shape[axis]
        if have > n:
            out = np.take(out, np.arange(off, off + n), axis=axis)
        elif have < n:
            pad = [(0, 0), (0, 0)]
            pad[axis] = (off, n - have - off)
            # Reflection continues grains and boundaries across the edge for image and mask alike.
            out = np.pad(out, pad, mode="reflect" if have > 1 else "edge")
    return out


def _resample(a: np.ndarray, shape: tuple[int, int], mode: str) -> np.ndarray:
    # Bilinear (align_corners=False) and "nearest-exact" sample the same half-pixel grid, so a
    # resampled mask stays on its resampled image ("nearest" would shift it by up to a pixel).
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(t, size=shape, mode=mode, **kwargs)[0, 0].numpy()


def random_stretch(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, amount: float) -> Pair:
    """Stretch/squish each axis by a factor in [1-amount, 1+amount], then crop or pad back to the input shape.

    The image is resampled bilinearly, the mask with nearest neighbours; a crop takes a
    random window, a pad reflects the border by a random split; both act on image and mask alike.
    """
    if amount <= 0:
        return image, mask
    h, w = image.shape
    fy, fx = rng.uniform(1.0 - amount, 1.0 + amount, size=2)
    nh, nw = max(1, int(round(h * fy))), max(1, int(round(w * fx)))
    offsets = tuple(int(rng.integers(0, abs(n - m) + 1)) for n, m in ((nh, h), (nw, w)))
    image = _resample(image, (nh, nw), "bilinear")
    image = np.clip(_crop_or_pad(image, (h, w), offsets), 0.0, 1.0).astype(np.float32, copy=False)
    if mask is not None:
        mask = _resample(mask, (nh, nw), "nearest-exact").astype(mask.dtype, copy=False)
        mask = _crop_or_pad(mask, (h, w), offsets)
    return image, mask


def random_rotate_zoom(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator,
                       max_degrees: float, zoom: float) -> Pair:
    """Rotate by an angle drawn from [-max_degrees, max_degrees] and zoom by a factor drawn from
    [1 - zoom, 1 + zoom] (> 1 enlarges) about the centre, as one affine warp of the input shape.

    The image is sampled bilinearly, the mask with nearest neighbours on the same grid (so it
    stays on its image; a soft mask keeps its values); where the warp reaches outside the
    input, both reflect the border, continuing grains and boundaries as :func:`random_stretch` does.
    """
    if max_degrees <= 0 and zoom <= 0:
        return image, mask
    degrees = rng.uniform(-max_degrees, max_degrees) if max_degrees > 0 else 0.0
    factor = rng.uniform(1.0 - zoom, 1.0 + zoom) if zoom > 0 else 1.0
    return rotate_zoom(image, mask, degrees, factor)


def rotate_zoom(image: np.ndarray, mask: np.ndarray | None, degrees: float, factor: float) -> Pair:
    """Rotate by ``degrees`` (counter-clockwise as displayed, rows down) and zoom by ``factor``
    about the centre, keeping the input shape (see :func:`random_rotate_zoom`)."""
    h, w = image.shape
    angle = np.deg2rad(degrees)
    cos, sin = np.cos(angle) / factor, np.sin(angle) / factor
    # affine_grid maps output to input coordinates in [-1, 1] per axis; the aspect ratio keeps a
    # rotation of a non-square image a rotation (not a shear).
    theta = torch.tensor([[[cos, -sin * h / w, 0.0], [sin * w / h, cos, 0.0]]], dtype=torch.float32)
    grid = F.affine_grid(theta, [1, 1, h, w], align_corners=False)

    def warp(a: np.ndarray, mode: str) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]
        return F.grid_sample(t, grid, mode=mode, padding_mode="reflection", align_corners=False)[0, 0].numpy()

    image = np.clip(warp(image, "bilinear"), 0.0, 1.0).astype(np.float32, copy=False)
    if mask is not None:
        mask = warp(mask, "nearest").astype(mask.dtype, copy=False)
    return image, mask


def augment_pair(image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, cfg: AugmentConfig) -> Pair:
    """Apply the augmentations enabled in ``cfg``: flips, 90° rotation, rotation by any angle and
    zoom, stretch/squish, intensity jitter.

    Returns contiguous arrays of the input shape (square inputs; a non-square one keeps its
    shape because only 180° turns are drawn for it).
    """
    if cfg.flip:
        image, mask = random_flip(image, mask, rng)
    if cfg.rot90:
        image, mask = random_rot90(image, mask, rng)
    if cfg.rotate or cfg.zoom:
        image, mask = random_rotate_zoom(image, mask, rng, cfg.rotate, cfg.zoom)
    if cfg.stretch:
        image, mask = random_stretch(image, mask, rng, cfg.stretch)
    if cfg.brightness or cfg.contrast:
        image = jitter_intensity(image, rng, cfg.brightness, cfg.contrast)
    image = np.ascontiguousarray(image, dtype=np.float32)
    mask = np.ascontiguousarray(mask) if mask is not None else None
    return image, mask
