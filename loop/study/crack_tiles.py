"""Real crack imagery as classifier tiles: tiling, tile labels, physical-tile groups, grouped splits.

The paper (§3.1.1) cut 128 × 128 px tiles from its chip images and classified the tiles; a
whole image shrunk to the classifier's input loses a crack a few pixels wide. So a real
labelled folder (``DIR/images`` + ``DIR/masks``, :class:`loop.evaluate.real.RealFolder`) is
cut into tiles of the model's input size at the images' own resolution:

* **Where and class.** Each image is cut into tiles and each tile gets its class (crack, no
  crack, or kept apart) as :mod:`loop.evaluate.real_tiles` says; an image smaller than a
  tile is padded there, or left out and counted here when padding is off.
* **Groups.** Images of one physical object (several exposures of one tile, repeated
  captures) must fall on one side of a train / val / test split, or the test set shows the
  model objects it has trained on. :func:`physical_groups` derives the groups from the file
  names (the documented rules there; one group per image for names that follow no rule).
* **Split.** :func:`grouped_split` deals whole groups to train / val / test, stratified by
  class: groups holding a crack tile and the other groups are apportioned separately, by
  their tiles, seeded.

Nothing here knows about magnetic tiles but :data:`CAPTURE_NAME`, one naming rule among the
grouping rules, which any dataset named that way gets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from loop.evaluate.real import RealFolder
from loop.evaluate.real_tiles import (
    CRACK,
    DEFAULT_MIN_CRACK_PX,
    KIND_NAMES,
    NO_CRACK,
    TilingError,
    classified_tiles,
)
from loop.train.data import ArrayView

if TYPE_CHECKING:
    from generators.crack_fit import CrackFit

DEFAULT_CAPTURE_GAP = 1500
"""Largest step between consecutive capture numbers inside one physical-tile group (see :func:`capture_groups`)."""

CAPTURE_NAME = re.compile(r"^(?P<series>.*?)exp(?P<exposure>\d+)_num_(?P<number>\d+)$")
"""Captures named ``<series>exp<exposure>_num_<number>`` (e.g. ``mt_exp3_num_116541``)."""

GROUP_RULES = ("auto", "capture", "image")
"""Named grouping rules (:func:`physical_groups`); anything else is taken as a regular expression."""

PARTS = ("train", "val", "test")


# --- groups -----------------------------------------------------------------------------------


def capture_groups(names: Sequence[str], max_gap: int = DEFAULT_CAPTURE_GAP) -> list[str] | None:
    """Physical-tile groups of captures named ``<series>exp<exposure>_num_<number>``; ``None`` if a name differs.

    The rule, read off the magnetic-tile data (``mt_exp1_num_10181`` ...): ``number`` counts
    the captures of a series in time and ``exposure`` is the lighting of the capture. One
    physical tile is photographed under several exposures in quick succession (numbers a few
    dozen apart, e.g. ``exp1_num_32128`` … ``exp6_num_32235``), and sometimes passes the
    camera again a little later (the crack tile ``exp5_num_85642`` … ``exp6_num_88201`` spans
    eight captures, steps of up to 1295). Exposure indices repeat within such runs, so they
    cannot separate tiles. Hence: within a series, captures sorted by number are chained
    while consecutive numbers differ by at most ``max_gap``; each chain is one group.

    The rule errs towards merging (two tiles captured close together share a group): that
    costs a little split granularity, never a leak. Group keys are ``<series>@<first
    number>``, in the order of ``names``.
    """
    parsed = [CAPTURE_NAME.match(Path(n).stem) for n in names]
    if not names or any(m is None for m in parsed):
        return None
    by_series: dict[str, list[tuple[int, int]]] = {}
    for i, m in enumerate(parsed):
        by_series.setdefault(m["series"], []).append((int(m["number"]), i))
    keys: list[str] = [""] * len(names)
    for series, items in by_series.items():
        items.sort()
        start = items[0][0]
        previous = start
        for number, i in items:
            if number - previous > max_gap:
                start = number
            keys[i] = f"{series}@{start}"
            previous = number
    return keys


def physical_groups(names: Sequence[str], rule: str = "auto",
                    max_gap: int = DEFAULT_CAPTURE_GAP) -> tuple[np.ndarray, str]:
    """Group ids (one int per name, 0.. in order of first appearance) and the rule in words.

    ``rule``:

    * ``"capture"`` — :func:`capture_groups` (every name must follow its pattern);
    * ``"image"`` — one group per image (for data whose images are independent);
    * ``"auto"`` — ``capture`` when every name follows its pattern, else ``image``;
    * anything else — a regular expression searched in each name (without suffix); names
      with the same match (its group ``key`` if it has one, else its first group, else the
      whole match) share a group, e.g. ``^(?P<key>.+)_exp\\d+$`` for ``tile7_exp1`` …
      ``tile7_exp4``. A name it does not match is an error.
    """
    names = [Path(n).stem for n in names]
    if rule in ("auto", "capture"):
        keys = capture_groups(names, max_gap)
        if keys is not None:
            described = (f"capture: names <series>exp<k>_num_<n>, capture numbers chained while consecutive "
                         f"ones differ by <= {max_gap}")
        elif rule == "capture":
            bad = next(n for n in names if CAPTURE_NAME.match(n) is None)
            raise TilingError(f"groups 'capture': name {bad!r} does not follow <series>exp<k>_num_<n>; "
                              f"use --groups image or a regular expression")
        else:
            keys, described = list(names), "image: one group per image (names follow no grouping rule)"
    elif rule == "image":
        keys, described = list(names), "image: one group per image"
    else:
        try:
            pattern = re.compile(rule)
        except re.error as exc:
            raise TilingError(f"groups: expected one of {', '.join(GROUP_RULES)} or a regular expression, "
                              f"got {rule!r} ({exc})") from None
        keys = []
        for n in names:
            m = pattern.search(n)
            if m is None:
                raise TilingError(f"groups {rule!r}: does not match image name {n!r}")
            keys.append(m["key"] if "key" in pattern.groupindex else (m.group(1) if pattern.groups else m.group(0)))
        described = f"regular expression {rule!r}: images with the same match share a group"
    ids: dict[str, int] = {}
    return np.asarray([ids.setdefault(k, len(ids)) for k in keys], dtype=np.int64), described


@dataclass(frozen=True)
class TileSet:
    """The tiles of a real folder: pixels, masks, kinds, where they come from and their groups.

    Per tile: ``images`` and ``masks`` (uint8, mask 0/1), ``crack_px``, ``kind``
    (:data:`CRACK`, :data:`NO_CRACK`, or kept apart: :data:`CLEAN_OF_CRACK_IMAGE`,
    :data:`FEW_CRACK_PX`), ``source`` (index into ``names``), ``group`` (physical group of
    its image) and ``position`` (y, x of its top-left corner in the image, padding aside).
    """

    images: np.ndarray
    masks: np.ndarray
    crack_px: np.ndarray
    kind: np.ndarray
    source: np.ndarray
    group: np.ndarray
    position: np.ndarray
    names: tuple[str, ...]
    size: int
    min_crack_px: int
    group_rule: str
    padded: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.kind)

    @property
    def usable(self) -> np.ndarray:
        """Indices of the tiles with a class (crack or no crack)."""
        return np.flatnonzero(self.kind >= 0)

    def view(self, indices: Sequence[int]) -> ArrayView:
        """The tiles at ``indices`` (usable ones) as a classification view; sample ids = tile indices."""
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) and (self.kind[idx] < 0).any():
            raise TilingError("view: a tile kept apart (no class) was asked for")
        return ArrayView(self.images[idx], self.kind[idx].astype(np.int64), idx)

    def tile_name(self, i: int) -> str:
        """``NAME@y,x``: the image and the tile's top-left corner."""
        y, x = self.position[i]
        return f"{self.names[self.source[i]]}@{y},{x}"

    def counts(self) -> dict[str, int]:
        """How many tiles of each kind, images, groups, padded and skipped images."""
        out = {KIND_NAMES[k].replace(" ", "_").replace(",", ""): int((self.kind == k).sum()) for k in KIND_NAMES}
        used = np.unique(self.source)
        out.update(images=len(self.names) - len(self.skipped), groups=int(len(np.unique(self.group))),
                   crack_groups=int(len(np.unique(self.group[self.kind == CRACK]))),
                   padded_images=len(self.padded), skipped_images=len(self.skipped), tiled_images=int(len(used)))
        return out


def load_tiles(real_dir: str | Path, size: int, *, min_crack_px: int = DEFAULT_MIN_CRACK_PX, pad: bool = True,
               stride: int | None = None, crack_image_negatives: bool = False, groups: str = "auto",
               capture_gap: int = DEFAULT_CAPTURE_GAP) -> TileSet:
    """Tile every pair of a real labelled folder (see the module docstring).

    Raises :class:`TilingError` (one line, naming the folder) when no image can be tiled,
    when no tile has ``min_crack_px`` crack pixels (every mask empty, or every crack too
    small), or when no image is crack-free; a folder without ``masks/`` raises
    :class:`~loop.evaluate.real.RealDataError`.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise TilingError(f"tile size: expected an integer >= 8 px, got {size!r}")
    if isinstance(min_crack_px, bool) or not isinstance(min_crack_px, int) or min_crack_px < 1:
        raise TilingError(f"min_crack_px: expected an integer >= 1, got {min_crack_px!r}")
    if stride is not None and (isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride <= size):
        raise TilingError(f"tile stride: expected an integer in [1, {size}] px, got {stride!r}")
    folder = RealFolder(real_dir)
    group_of, described = physical_groups(folder.names, groups, capture_gap)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("images", "masks", "crack_px", "kind", "source", "group",
                                                         "position")}
    padded, skipped, largest = [], [], (0, 0)
    any_crack_image = any_clean_image = False
    for i, pair in enumerate(folder):
        h, w = pair.image.shape
        largest = max(largest, (w, h), key=lambda s: s[0] * s[1])
        if h < size or w < size:
            if not pad:
                skipped.append(pair.name)
                continue
            padded.append(pair.name)
        tiles, masks, positions, crack_px, kinds = classified_tiles(
            pair.image, pair.mask, size, min_crack_px, pad=pad, stride=stride,
            crack_image_negatives=crack_image_negatives, source=pair.name)
        has_crack = bool(pair.mask.any())
        any_crack_image |= has_crack
        any_clean_image |= not has_crack
        for key, value in (("images", tiles), ("masks", masks), ("crack_px", crack_px),
                           ("kind", kinds),
                           ("source", np.full(len(tiles), i, np.int64)), ("group", np.full(len(tiles), group_of[i])),
                           ("position", positions)):
            parts[key].append(value)
    where = f"{real_dir}"
    if not parts["images"]:
        raise TilingError(f"{where}: a {size} px tile is larger than every image (largest {largest[0]}×{largest[1]} "
                          f"px) and padding is off; pad the images or use a smaller tile")
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    if not (arrays["kind"] == CRACK).any():
        if not any_crack_image:
            raise TilingError(f"{where}: every mask is empty: no crack to learn from (a crack tile needs a mask "
                              f"with >= {min_crack_px} crack pixels in it)")
        raise TilingError(f"{where}: no {size} px tile has >= {min_crack_px} crack pixels; lower min_crack_px "
                          f"(largest count {int(arrays['crack_px'].max())})")
    if not any_clean_image:
        raise TilingError(f"{where}: every image has a crack: no crack-free image for no-crack tiles")
    return TileSet(images=arrays["images"], masks=arrays["masks"], crack_px=arrays["crack_px"],
                   kind=arrays["kind"].astype(np.int8), source=arrays["source"], group=arrays["group"],
                   position=arrays["position"], names=tuple(folder.names), size=size, min_crack_px=min_crack_px,
                   group_rule=described, padded=tuple(padded), skipped=tuple(skipped),
                   settings={"size": size, "stride": stride or size, "min_crack_px": min_crack_px, "pad": pad,
                             "crack_image_negatives": crack_image_negatives, "groups": groups,
                             "capture_gap": capture_gap})


# --- fitting and exemplars ----------------------------------------------------------------------


def fit_tiles(tiles: TileSet, indices: Sequence[int] | None = None,
              rng: np.random.Generator | None = None) -> "CrackFit":
    """Fit the crack space (:func:`generators.crack_fit.fit_pairs`) on the crack tiles among ``indices`` (default all).

    As many no-crack tiles (a seeded draw) join them: they add the background's grey,
    contrast and shading, measured on surfaces without cracks too.
    """
    from generators.crack_fit import fit_pairs

    idx = np.arange(len(tiles)) if indices is None else np.asarray(indices, dtype=np.int64)
    rng = np.random.default_rng(0) if rng is None else rng
    positives = [int(i) for i in idx if tiles.kind[i] == CRACK]
    if not positives:
        raise TilingError("fit: no crack tile to fit the cracks on")
    negatives = rng.permutation([int(i) for i in idx if tiles.kind[i] == NO_CRACK])[:len(positives)].tolist()
    return fit_pairs(((tiles.tile_name(i), tiles.masks[i], tiles.images[i]) for i in positives + negatives),
                     where=f"{len(positives)} crack tiles")


def exemplar_tiles(tiles: TileSet, indices: Sequence[int] | None, limit: int,
                   rng: np.random.Generator) -> list[int]:
    """A seeded draw of at most ``limit`` no-crack tiles among ``indices`` (default all) with texture (not flat)."""
    idx = np.arange(len(tiles)) if indices is None else np.asarray(indices, dtype=np.int64)
    out = []
    for i in rng.permutation([int(i) for i in idx if tiles.kind[i] == NO_CRACK]):
        if int(tiles.images[i].max()) > int(tiles.images[i].min()):
            out.append(int(i))
            if len(out) == limit:
                break
    return out


def write_exemplar_tiles(tiles: TileSet, folder: str | Path, limit: int, rng: np.random.Generator) -> list[Path]:
    """Write :func:`exemplar_tiles` as PNGs (``NAME_y_x.png``) into ``folder``: a texture folder for the crack generator."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in exemplar_tiles(tiles, None, limit, rng):
        y, x = tiles.position[i]
        path = folder / f"{tiles.names[tiles.source[i]]}_{y}_{x}.png"
        Image.fromarray(tiles.images[i]).save(path)
        paths.append(path)
    return paths


def fit_real_tiles(real_dir: str | Path, size: int, *, min_crack_px: int | None = None, pad: bool = True,
                   exemplars_out: str | Path | None = None, max_exemplars: int = 16,
                   seed: int = 0) -> tuple["CrackFit", dict[str, Any]]:
    """``loop fit-cracks DIR --tile-size N``: tile a real folder, fit on its tiles, optionally write exemplar tiles.

    Returns the fit and the tile counts (plus ``exemplars_written``).
    """
    tiles = load_tiles(real_dir, size, min_crack_px=DEFAULT_MIN_CRACK_PX if min_crack_px is None else min_crack_px,
                       pad=pad)
    rng = np.random.default_rng(seed)
    fit = fit_tiles(tiles, rng=rng)
    counts = tiles.counts()
    if exemplars_out is not None:
        counts["exemplars_written"] = len(write_exemplar_tiles(tiles, exemplars_out, max_exemplars, rng))
    return fit, counts


# --- splits ------------------------------------------------------------------------------------


def _deal(weights: np.ndarray, fractions: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Part index (0..len(fractions)-1) of each item: a seeded order, cut where the cumulated weights cross the fractions.

    An item goes to the part its weight's midpoint falls in, so parts get about their
    fraction of the total weight. With at least as many items as parts, no part is empty
    (an item is moved from the part with the most items).
    """
    n = len(weights)
    order = rng.permutation(n)
    w = np.asarray(weights, dtype=np.float64)[order]
    total = w.sum()
    mid = (np.cumsum(w) - w / 2) / (total if total > 0 else 1.0)
    bounds = np.cumsum(fractions) / float(sum(fractions))
    part_sorted = np.minimum(np.searchsorted(bounds, mid, side="right"), len(fractions) - 1)
    if n >= len(fractions):
        for p in range(len(fractions)):
            if not (part_sorted == p).any():
                donor = int(np.argmax(np.bincount(part_sorted, minlength=len(fractions))))
                members = np.flatnonzero(part_sorted == donor)
                # The donor's member nearest the empty part in the order keeps the parts contiguous.
                part_sorted[members[-1] if p > donor else members[0]] = p
    part = np.empty(n, dtype=np.int64)
    part[order] = part_sorted
    return part


def grouped_split(groups: np.ndarray, labels: np.ndarray, fractions: Sequence[float],
                  rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Indices (into ``groups``/``labels``) per part, every group whole on one side, stratified by class.

    Groups holding a crack tile (label 1) are dealt over the parts by their number of crack
    tiles, the other groups by their number of tiles (:func:`_deal`, ``fractions`` of
    train / val / test). Each part gets a group of each stratum when the stratum has at
    least three groups.
    """
    groups, labels = np.asarray(groups), np.asarray(labels)
    ids = np.unique(groups)
    crack_groups = np.unique(groups[labels == CRACK])
    part_of: dict[int, int] = {}
    for members, weigh_label in ((crack_groups, CRACK), (np.setdiff1d(ids, crack_groups), None)):
        if not len(members):
            continue
        weights = np.asarray([((groups == g) & ((labels == weigh_label) if weigh_label is not None else True)).sum()
                              for g in members])
        for g, p in zip(members, _deal(weights, fractions, rng)):
            part_of[int(g)] = int(p)
    part = np.asarray([part_of[int(g)] for g in groups], dtype=np.int64)
    return {name: np.flatnonzero(part == k) for k, name in enumerate(PARTS)}


def balanced_draw(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Positions with as many of each class as the rarest has (a seeded draw of the others), sorted."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    n = min(int((labels == c).sum()) for c in classes)
    picks = [rng.choice(np.flatnonzero(labels == c), size=n, replace=False) for c in classes]
    return np.sort(np.concatenate(picks))


def oversampled(labels: np.ndarray, rng: np.random.Generator, max_repeat: int) -> tuple[np.ndarray, int]:
    """Positions with the classes balanced by sampling, and the repeat ``r`` of the rarer class.

    The rarer class is repeated ``r = min(max_repeat, common // rare)`` times and the
    commoner one drawn down to ``r`` × the rarer's count (seeded); the order is shuffled.
    """
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        return rng.permutation(len(labels)), 1
    rare, common = classes[np.argmin(counts)], classes[np.argmax(counts)]
    n_rare, n_common = int(counts.min()), int(counts.max())
    repeat = max(1, min(int(max_repeat), n_common // n_rare))
    rare_idx = np.tile(np.flatnonzero(labels == rare), repeat)
    common_idx = rng.choice(np.flatnonzero(labels == common), size=min(n_common, n_rare * repeat), replace=False)
    return rng.permutation(np.concatenate([rare_idx, common_idx])), repeat
