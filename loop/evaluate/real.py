"""Real labelled images: a folder of image/mask pairs, checked and converted on load.

Layout (the one of ``../shared/data/grains`` and ``../shared/data/cracks``)::

    DIR/images/NAME.png|.tif|.tiff     the micrograph, any size
    DIR/masks/NAME.png|.tif|.tiff      its label, the same size

Pairs are matched by file name without suffix (``images/a.png`` pairs with
``masks/a.tif``). Hidden files (``.DS_Store`` ...) are ignored; any other file is an error.

Images: colour and palette images are converted to grey with PIL's ITU-R 601 luma;
16-bit, 32-bit and float images are stretched from their own min–max to uint8 (many
microscopes fill only 12 of 16 bits). Multi-page TIFFs: the first page.

Masks become uint8 0/1 boundary masks (1 = grain boundary or crack) by this rule:

* **binary** — at most 2 distinct values: the higher value is the boundary (0/255, 0/1,
  False/True). A one-valued mask is all boundary if its value is non-zero, else empty.
* **label image** — integer values (grain ids; colour masks count as ids, one per colour),
  at most one id per 16 pixels on average, and piecewise constant: at least 90 % of the
  pixels equal their right or down neighbour. Boundaries are the pixels with a
  4-neighbour of another id (``skimage.segmentation.find_boundaries``, mode ``thick``:
  2 px wide, one on each side); id 0 is a grain like any other.
* anything else (a grey photo, a float map, a JPEG-smoothed mask) is refused.

Every problem raises :class:`RealDataError` naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image
from skimage.segmentation import find_boundaries

from loop.evaluate.metrics import EvaluationError

SUFFIXES = (".png", ".tif", ".tiff")
"""File types read, for both images and masks (case-insensitive)."""

MIN_MEAN_LABEL_AREA = 16
"""A label image has at most one distinct id per this many pixels."""

MIN_PIECEWISE_CONSTANT = 0.9
"""A label image has at least this fraction of pixels equal to their right or down neighbour."""


class RealDataError(EvaluationError):
    """A real labelled folder or one of its files cannot be used."""


@dataclass(frozen=True)
class RealPair:
    """One real image with its boundary mask, as loaded from a folder."""

    name: str
    image: np.ndarray
    """uint8 H×W grey image."""
    mask: np.ndarray
    """uint8 H×W, 1 = boundary (or crack), 0 = background."""
    mask_kind: str
    """``"binary"`` or ``"labels"``: how the mask file was read."""
    image_path: Path
    mask_path: Path


def _open(path: Path) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise RealDataError(f"{path}: cannot be read as an image ({exc})") from exc
    return img


def _stretch_to_uint8(arr: np.ndarray) -> np.ndarray:
    a = arr.astype(np.float64)
    finite = np.isfinite(a)
    if not finite.any():
        return np.zeros(a.shape, dtype=np.uint8)
    lo, hi = a[finite].min(), a[finite].max()
    # Non-finite pixels (NaN from a float TIFF) become the darkest value.
    a = np.where(finite, a, lo)
    if hi == lo:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.round((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def load_grey_image(path: str | Path) -> np.ndarray:
    """Read an image file as grey uint8 H×W (see the module docstring for conversions)."""
    path = Path(path)
    img = _open(path)
    if img.mode == "1":
        return np.asarray(img, dtype=np.uint8) * np.uint8(255)
    if img.mode == "L":
        return np.asarray(img, dtype=np.uint8)
    if img.mode.startswith("I") or img.mode == "F":
        arr = np.asarray(img)
        if arr.ndim != 2:
            raise RealDataError(f"{path}: expected a 2-D image, got shape {arr.shape}")
        return _stretch_to_uint8(arr)
    return np.asarray(img.convert("L"), dtype=np.uint8)


def _mask_array(img: Image.Image, path: Path) -> np.ndarray:
    """Raw mask values: grey/palette values as they are, distinct colours as distinct ids."""
    if img.mode in ("RGB", "RGBA", "LA", "CMYK", "YCbCr"):
        rgb = np.asarray(img.convert("RGB")).astype(np.int64)
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            return rgb[..., 0]
        return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    arr = np.asarray(img)
    if arr.ndim != 2:
        raise RealDataError(f"{path}: expected a 2-D mask, got shape {arr.shape} (mode {img.mode})")
    return arr


def piecewise_constant_fraction(arr: np.ndarray) -> float:
    """Fraction of pixels equal to their right or down neighbour (the last row/column compare one way)."""
    same = np.zeros(arr.shape, dtype=bool)
    same[:, :-1] |= arr[:, :-1] == arr[:, 1:]
    same[:-1, :] |= arr[:-1, :] == arr[1:, :]
    if arr.shape[0] > 1 and arr.shape[1] > 1:
        # The bottom-right pixel has neither neighbour: compare it with its left one.
        same[-1, -1] = arr[-1, -1] == arr[-1, -2]
    return float(same.mean())


def mask_to_boundary(values: np.ndarray, source: str = "mask") -> tuple[np.ndarray, str]:
    """Turn raw mask values into a uint8 0/1 boundary mask by the module's rule.

    Returns ``(mask, kind)`` with kind ``"binary"`` or ``"labels"``; raises
    :class:`RealDataError` naming ``source`` when the values are neither.
    """
    arr = np.asarray(values)
    if arr.ndim != 2 or arr.size == 0:
        raise RealDataError(f"{source}: expected a non-empty 2-D mask, got shape {arr.shape}")
    uniques = np.unique(arr)
    if uniques.size == 1:
        return np.full(arr.shape, uniques[0] != 0, dtype=np.uint8), "binary"
    if uniques.size == 2:
        return (arr == uniques[1]).astype(np.uint8), "binary"
    is_integer = arr.dtype == bool or np.issubdtype(arr.dtype, np.integer)
    max_ids = arr.size / MIN_MEAN_LABEL_AREA
    constant = piecewise_constant_fraction(arr)
    if is_integer and uniques.size <= max_ids and constant >= MIN_PIECEWISE_CONSTANT:
        return find_boundaries(arr, connectivity=1, mode="thick").astype(np.uint8), "labels"
    raise RealDataError(
        f"{source}: mask is neither binary nor a label image: {uniques.size} distinct values "
        f"(dtype {arr.dtype}), {constant:.0%} of pixels equal a right/down neighbour; expected "
        f"<= 2 values (binary), or integer ids with <= {int(max_ids)} distinct values and "
        f">= {MIN_PIECEWISE_CONSTANT:.0%} piecewise constant (label image)"
    )


def load_boundary_mask(path: str | Path) -> tuple[np.ndarray, str]:
    """Read a mask file as a uint8 0/1 boundary mask; returns ``(mask, kind)``."""
    path = Path(path)
    return mask_to_boundary(_mask_array(_open(path), path), str(path))


def _listing(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise RealDataError(f"{folder}: folder not found (expected DIR/images/ and DIR/masks/ with NAME.png|.tif pairs)")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if not path.is_file() or path.suffix.lower() not in SUFFIXES:
            raise RealDataError(f"{path}: unsupported entry; expected files ending in {', '.join(SUFFIXES)}")
        if path.stem in found:
            raise RealDataError(f"{path}: same name as {found[path.stem]}; one file per name expected")
        found[path.stem] = path
    return found


class RealFolder:
    """The pairs of a real labelled folder, listed and checked up front, loaded on access.

    Construction checks the layout and the pairing (every image has a mask and every mask
    an image, at least one pair); ``folder[i]`` reads pair ``i`` and checks its sizes and
    mask. Pairs are in name order.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise RealDataError(f"{self.root}: real data folder not found")
        images = _listing(self.root / "images")
        masks = _listing(self.root / "masks")
        lonely_images = sorted(images.keys() - masks.keys())
        if lonely_images:
            name = lonely_images[0]
            raise RealDataError(f"{images[name]}: image without a mask (expected {self.root / 'masks' / name}.png|.tif)")
        lonely_masks = sorted(masks.keys() - images.keys())
        if lonely_masks:
            name = lonely_masks[0]
            raise RealDataError(f"{masks[name]}: mask without an image (expected {self.root / 'images' / name}.png|.tif)")
        if not images:
            raise RealDataError(f"{self.root}: no image/mask pairs in images/ and masks/")
        self.names: list[str] = sorted(images)
        self._images = images
        self._masks = masks

    def __len__(self) -> int:
        return len(self.names)

    def paths(self, name: str) -> tuple[Path, Path]:
        """The image file and the mask file of the pair called ``name``."""
        return self._images[name], self._masks[name]

    def __getitem__(self, i: int) -> RealPair:
        name = self.names[i]
        image_path, mask_path = self.paths(name)
        image = load_grey_image(image_path)
        mask, kind = load_boundary_mask(mask_path)
        if image.shape != mask.shape:
            raise RealDataError(
                f"{mask_path}: mask size {mask.shape[1]}×{mask.shape[0]} differs from image "
                f"{image_path} size {image.shape[1]}×{image.shape[0]} (width×height)"
            )
        return RealPair(name, image, mask, kind, image_path, mask_path)

    def __iter__(self) -> Iterator[RealPair]:
        return (self[i] for i in range(len(self)))


def load_real(root: str | Path) -> list[RealPair]:
    """Load and check every pair of a real labelled folder (see :class:`RealFolder`)."""
    return list(RealFolder(root))
