"""Texture synthesis from exemplars: image quilting with minimum-error boundary cuts.

The paper (§3.1.1) grows each background texture from a small seed tile by adding patches
from a dictionary of real texture tiles that fit the already-filled boundary under a cost
function (exemplar-based inpainting). :func:`quilt` does this the way Efros & Freeman's
image quilting does (SIGGRAPH 2001): the canvas is filled in raster order with square
patches that overlap their left and upper neighbours; each new patch is one of the
dictionary patches whose sum of squared differences to the canvas over the overlap is
within ``tolerance`` of the best (chosen at random among those), and it is pasted along the
minimum-error cut through the overlap, so the seam runs where old and new agree.

The first patch is the seed tile, taken from a strip of the exemplar that the dictionary
does not contain (the bottom ``patch`` rows), so no texture starts with a dictionary patch.

Exemplars come from a folder of the user's images (:func:`load_exemplars`) or, out of the
box, from the texture photographs that scikit-image ships in its package
(:func:`default_exemplars`: ``brick``, ``gravel``, ``grass``; no download).

Speed: quilting a 384 px texture takes 0.1-0.3 s on one core, far too slow for each
sample. A :class:`TextureBank` therefore quilts, once per process and per bank side,
``BANK_TEXTURES`` large textures per exemplar (deterministically: texture ``k`` of an
exemplar is seeded by the exemplar's digest, the side and ``k``) and keeps them in memory;
a sample then only cuts a crop from one of them (which texture, where, mirrored how, at
what zoom: all drawn from the sample's generator). The same exemplars, crop parameters and
``rng`` state give the same bytes in any process.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image
from skimage.transform import resize
from generators.base import GeneratorError

PATCH = 32
"""Side of a quilting patch (px of the exemplar) and of the seed tile."""

OVERLAP = 8
"""Width of the overlap between neighbouring patches (px)."""

CANDIDATES = 2500
"""Dictionary patches per exemplar (random positions in its dictionary part)."""

TOLERANCE = 0.1
"""A new patch is drawn among the candidates whose overlap error is within this fraction of the best."""

BANK_TEXTURES = 2
"""Textures quilted per exemplar in a :class:`TextureBank`."""

BANK_MIN_SIDE = 384
"""Smallest side of a bank texture (px)."""

BANK_MAX_SIDE = 1024
"""Largest side of a bank texture; crops that would need more are taken smaller and zoomed."""

SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
"""Image files read from an exemplar folder (case-insensitive)."""

DEFAULT_EXEMPLARS = ("brick", "gravel", "grass")
"""scikit-image's bundled texture photographs used when no exemplar folder is given."""


class TextureError(GeneratorError):
    """An exemplar folder, an exemplar image or a texture request cannot be used."""


@dataclass(frozen=True)
class Exemplar:
    """A grey texture photograph that quilting draws patches from.

    ``image`` is float32 H×W in [0, 1]; ``digest`` is the SHA-256 (hex) of its shape and
    uint8 pixels, so bank textures are tied to the exact pixels they came from.
    """

    name: str
    image: np.ndarray
    source: str
    digest: str


def min_exemplar_side(patch: int = PATCH) -> int:
    """Smallest side an exemplar may have: a seed strip of ``patch`` rows plus a dictionary as tall."""
    return 2 * patch


def make_exemplar(name: str, image: np.ndarray, source: str, patch: int = PATCH) -> Exemplar:
    """Check a grey uint8 image and wrap it as an :class:`Exemplar` named ``name``."""
    arr = np.asarray(image)
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise TextureError(f"exemplar {source}: expected a grey uint8 H×W image, got dtype {arr.dtype} shape {arr.shape}")
    need = min_exemplar_side(patch)
    if min(arr.shape) < need:
        raise TextureError(
            f"exemplar {source}: {arr.shape[1]}×{arr.shape[0]} px is smaller than the {need}×{need} px needed "
            f"(twice the {patch} px patch: a seed strip plus the patch dictionary)"
        )
    if int(arr.max()) == int(arr.min()):
        raise TextureError(f"exemplar {source}: the image is one flat grey ({int(arr.min())}); a texture needs structure")
    digest = hashlib.sha256(np.asarray(arr.shape, np.int64).tobytes() + np.ascontiguousarray(arr).tobytes()).hexdigest()
    return Exemplar(name=name, image=arr.astype(np.float32) / np.float32(255.0), source=source, digest=digest)


def default_exemplars() -> tuple[Exemplar, ...]:
    """``brick``, ``gravel`` and ``grass`` from scikit-image's bundled data (no download needed)."""
    import skimage.data

    return tuple(make_exemplar(name, getattr(skimage.data, name)(), f"skimage.data.{name}()")
                 for name in DEFAULT_EXEMPLARS)


def _read_grey(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                arr = np.asarray(img, dtype=np.float64)
                lo, hi = float(arr.min()), float(arr.max())
                scale = 255.0 / (hi - lo) if hi > lo else 0.0
                return np.round((arr - lo) * scale).astype(np.uint8)
            return np.asarray(img.convert("L"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as exc:
        raise TextureError(f"exemplar {path}: cannot be read as an image ({exc})") from exc


def load_exemplars(folder: str | Path, patch: int = PATCH) -> tuple[Exemplar, ...]:
    """Every image of ``folder`` (png, tif, jpg, bmp; hidden files and other files skipped) as an exemplar.

    Names are the file stems, in sorted order. Colour images are converted to grey, 16-bit
    and float images stretched from their own min–max. Raises :class:`TextureError` naming
    the folder when it is missing or holds no image, and naming the file when an image
    cannot be read or is smaller than :func:`min_exemplar_side`.
    """
    root = Path(folder)
    if not root.is_dir():
        raise TextureError(f"exemplar folder {root}: not found (expected a folder of texture images)")
    files = sorted(p for p in root.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SUFFIXES)
    if not files:
        raise TextureError(f"exemplar folder {root}: no images in it (expected files ending in {', '.join(SUFFIXES)})")
    stems = [p.stem for p in files]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise TextureError(f"exemplar folder {root}: two files named {dup[0]!r} (one image per name expected)")
    return tuple(make_exemplar(p.stem, _read_grey(p), str(p), patch) for p in files)


def exemplars_digest(exemplars: Sequence[Exemplar]) -> str:
    """One SHA-256 (hex) over the names and pixel digests of ``exemplars``."""
    h = hashlib.sha256()
    for ex in exemplars:
        h.update(ex.name.encode() + b"\0" + ex.digest.encode() + b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class Quilt:
    """A synthesized texture and where its patches were joined.

    ``texture`` is float32 side×side (the exemplar's grey scale); ``seams`` is a bool mask
    of the pixels just on the new side of every minimum-error cut (what a visible seam
    would be made of); ``grid`` a bool mask of the straight patch-grid lines a naive
    tiling would join along.
    """

    texture: np.ndarray
    seams: np.ndarray
    grid: np.ndarray


def _min_cut(error: np.ndarray) -> np.ndarray:
    """Column of the minimum-cost top-to-bottom path through ``error`` (rows × cols), per row.

    Dynamic programming as in image quilting: each cell adds the cheapest of its three
    upper neighbours; the path is traced back from the cheapest cell of the last row.
    """
    rows, cols = error.shape
    cost = np.full((rows, cols + 2), np.inf)
    cost[:, 1:-1] = error
    for r in range(1, rows):
        prev = cost[r - 1]
        cost[r, 1:-1] += np.minimum(np.minimum(prev[:-2], prev[1:-1]), prev[2:])
    path = np.empty(rows, dtype=np.int64)
    c = int(np.argmin(cost[-1, 1:-1])) + 1
    path[-1] = c - 1
    for r in range(rows - 2, -1, -1):
        row = cost[r]
        c = min((c - 1, c, c + 1), key=lambda k: (row[k], abs(k - c)))
        path[r] = c - 1
    return path


def _candidates(image: np.ndarray, patch: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` (or all, if fewer) distinct patches from the dictionary part of ``image`` (above its seed strip)."""
    dictionary = image[: image.shape[0] - patch]
    windows = sliding_window_view(dictionary, (patch, patch))
    total = windows.shape[0] * windows.shape[1]
    pick = rng.choice(total, size=min(n, total), replace=False)
    ys, xs = np.divmod(pick, windows.shape[1])
    return np.ascontiguousarray(windows[ys, xs], dtype=np.float32)


def quilt(
    exemplar: np.ndarray,
    side: int,
    rng: np.random.Generator,
    *,
    patch: int = PATCH,
    overlap: int = OVERLAP,
    n_candidates: int = CANDIDATES,
    tolerance: float = TOLERANCE,
) -> Quilt:
    """Grow a ``side``×``side`` texture from a seed tile of ``exemplar`` by image quilting.

    Parameters
    ----------
    exemplar : float H×W grey image; its bottom ``patch`` rows are the seed strip, the rest
        the patch dictionary (``n_candidates`` patches at random positions).
    side : output side in px (>= ``patch``).
    rng : the only source of randomness (seed tile position, candidates, patch choices).
    patch, overlap : patch side and overlap width (0 < overlap < patch / 2).
    tolerance : patches within ``(1 + tolerance)`` of the lowest overlap error are eligible.

    Returns
    -------
    :class:`Quilt` with the texture (float32, the exemplar's scale) and the seam masks.

    Examples
    --------
    >>> import skimage.data
    >>> q = quilt(skimage.data.brick() / 255.0, 64, np.random.default_rng(0))
    >>> q.texture.shape, q.texture.dtype
    ((64, 64), dtype('float32'))
    """
    image = np.asarray(exemplar, dtype=np.float32)
    if image.ndim != 2 or min(image.shape) < 2 * patch:
        raise TextureError(f"exemplar: expected a grey image of at least {2 * patch}×{2 * patch} px, got shape {image.shape}")
    if not 0 < overlap < patch / 2:
        raise TextureError(f"overlap: expected 0 < overlap < patch / 2 = {patch / 2}, got {overlap}")
    if isinstance(side, bool) or not isinstance(side, (int, np.integer)) or side < patch:
        raise TextureError(f"side: expected an integer >= the {patch} px patch, got {side!r}")
    step = patch - overlap
    n = max(1, math.ceil((side - overlap) / step))
    full = n * step + overlap
    canvas = np.zeros((full, full), dtype=np.float32)
    seams = np.zeros((full, full), dtype=bool)
    grid = np.zeros((full, full), dtype=bool)

    seed_y = image.shape[0] - patch
    seed_x = int(rng.integers(0, image.shape[1] - patch + 1))
    canvas[:patch, :patch] = image[seed_y:, seed_x:seed_x + patch]

    cands = _candidates(image, patch, n_candidates, rng)
    left = cands[:, :, :overlap].reshape(len(cands), -1)
    top = cands[:, :overlap, :].reshape(len(cands), -1)
    corner = cands[:, :overlap, :overlap].reshape(len(cands), -1)
    norms = [np.einsum("ij,ij->i", a, a) for a in (left, top, corner)]

    for i in range(n):
        for j in range(n):
            if i == 0 and j == 0:
                continue
            y, x = i * step, j * step
            window = canvas[y:y + patch, x:x + patch]
            error = np.zeros(len(cands), dtype=np.float32)
            parts = []
            if j > 0:
                parts.append((left, norms[0], window[:, :overlap].ravel(), 1.0))
            if i > 0:
                parts.append((top, norms[1], window[:overlap, :].ravel(), 1.0))
            if i > 0 and j > 0:
                # The corner is in both strips: count it once.
                parts.append((corner, norms[2], window[:overlap, :overlap].ravel(), -1.0))
            for mat, norm, target, sign in parts:
                # einsum, not matmul: a multi-threaded BLAS call per patch is slower on a busy machine.
                error += np.float32(sign) * (norm - 2.0 * np.einsum("ij,j->i", mat, target) + np.dot(target, target))
            best = float(error.min())
            eligible = np.flatnonzero(error <= best + tolerance * max(best, 0.0) + 1e-6)
            chosen = cands[int(rng.choice(eligible))]

            new = np.ones((patch, patch), dtype=bool)
            cut = np.zeros((patch, patch), dtype=bool)
            rows = np.arange(patch)
            if j > 0:
                path = _min_cut((chosen[:, :overlap] - window[:, :overlap]) ** 2)
                new &= np.arange(patch)[None, :] >= path[:, None]
                cut[rows, path] = True
                grid[y:y + patch, x] = True
            if i > 0:
                path = _min_cut(((chosen[:overlap, :] - window[:overlap, :]) ** 2).T)
                new &= np.arange(patch)[:, None] >= path[None, :]
                cut[path, rows] = True
                grid[y, x:x + patch] = True
            window[new] = chosen[new]
            seams[y:y + patch, x:x + patch] |= cut & new
    return Quilt(texture=canvas[:side, :side].copy(), seams=seams[:side, :side].copy(), grid=grid[:side, :side].copy())


def bank_side(size: int, max_zoom_out: float) -> int:
    """Side of the bank textures used for ``size`` px crops zoomed out by up to ``max_zoom_out``.

    Room for a crop of ``size * max_zoom_out`` px plus 64 px, rounded up to 64 px, within
    [:data:`BANK_MIN_SIDE`, :data:`BANK_MAX_SIDE`].
    """
    need = math.ceil((size * max_zoom_out + 64) / 64.0) * 64
    return int(min(BANK_MAX_SIDE, max(BANK_MIN_SIDE, need)))


class TextureBank:
    """Quilted textures of a set of exemplars, made once per side and then cropped per sample.

    ``textures(side)`` quilts :data:`BANK_TEXTURES` textures of every exemplar the first
    time a side is asked for (all exemplars at once, so one warm-up call makes every
    later crop cheap) and caches them, normalised to zero mean and unit standard
    deviation. Texture ``k`` of an exemplar is seeded by ``(exemplar digest, side, k)``
    only, so any process builds the same bank.
    """

    def __init__(self, exemplars: Sequence[Exemplar], n_textures: int = BANK_TEXTURES):
        if not exemplars:
            raise TextureError("exemplars: expected at least one exemplar, got none")
        names = [e.name for e in exemplars]
        if len(set(names)) != len(names):
            raise TextureError(f"exemplars: names must be distinct, got {names}")
        self.exemplars = tuple(exemplars)
        self.n_textures = int(n_textures)
        self._by_name = {e.name: e for e in self.exemplars}
        self._banks: dict[int, dict[str, tuple[np.ndarray, ...]]] = {}

    @property
    def names(self) -> tuple[str, ...]:
        """Exemplar names, in order."""
        return tuple(e.name for e in self.exemplars)

    def textures(self, side: int) -> dict[str, tuple[np.ndarray, ...]]:
        """The bank for ``side``: per exemplar name, its normalised float32 side×side textures."""
        bank = self._banks.get(side)
        if bank is None:
            bank = {e.name: tuple(_bank_texture(e, side, k) for k in range(self.n_textures)) for e in self.exemplars}
            self._banks[side] = bank
        return bank

    def crop(self, name: str, size: int, rng: np.random.Generator, *, zoom: float = 1.0,
             max_zoom_out: float = 2.0) -> np.ndarray:
        """A ``size``×``size`` float32 crop (zero mean, unit std on average) of exemplar ``name``'s textures.

        ``zoom`` > 1 magnifies the texture (a smaller crop is scaled up), < 1 shrinks it
        (down to ``1 / max_zoom_out``). Which texture, the crop position and one of four
        mirrorings (none, left–right, up–down, both: the texture's axes are kept) are drawn
        from ``rng``.
        """
        if name not in self._by_name:
            raise TextureError(f"texture {name!r}: unknown exemplar; known: {', '.join(self.names)}")
        side = bank_side(size, max_zoom_out)
        textures = self.textures(side)[name]
        src = int(min(side, max(4, round(size / zoom))))
        k = int(rng.integers(len(textures)))
        y, x = (int(v) for v in rng.integers(0, side - src + 1, size=2))
        flip = int(rng.integers(4))
        crop = textures[k][y:y + src, x:x + src]
        if flip & 1:
            crop = crop[:, ::-1]
        if flip & 2:
            crop = crop[::-1, :]
        if src != size:
            crop = resize(crop, (size, size), order=1, mode="reflect", anti_aliasing=src > size,
                          preserve_range=True).astype(np.float32)
        return np.ascontiguousarray(crop, dtype=np.float32)


def _bank_texture(exemplar: Exemplar, side: int, k: int) -> np.ndarray:
    seed = np.random.SeedSequence([int(exemplar.digest[:16], 16), side, k])
    texture = quilt(exemplar.image, side, np.random.default_rng(seed)).texture
    std = float(texture.std())
    return (texture - np.float32(texture.mean())) / np.float32(std if std > 0 else 1.0)
