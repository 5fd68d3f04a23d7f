"""Split a real labelled folder into a development half and a check half, by source micrograph.

Crops of one micrograph share its grains, its etching and its illumination: a model tuned
on one crop has seen the others. So the unit of the split is the *source*, the file name
with its crop coordinates removed (``tbm_10-256-512`` and ``tbm_10-0-768`` are both
source ``tbm_10``), and no source has files in both halves.

The split is stratified by *family*, the part of a source name before its first ``_``
(``tbm``, ``iron``, ``nist``), so each kind of micrograph is on both sides where it can be.
Families of a single source are pooled into one family for this purpose (two lone
micrographs go one to each half). Within a family, sources are taken in name order — or in
a seeded random order with ``seed`` — and the last ``round(n × check_fraction)`` of them
(at least one, at most ``n - 1``) form the check half.

The halves are written as two real folders, ``OUT/dev`` and ``OUT/check``, of symbolic
links to the original files (nothing is copied), with ``OUT/split.json`` listing which
source went where.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from loop.evaluate.real import RealDataError, RealFolder

CROP_SUFFIX = re.compile(r"(-\d+)+$")
"""Crop coordinates at the end of a file name (``-256-512``), removed to name the source."""

HALVES = ("dev", "check")
"""Names of the two halves, and of their folders under OUT."""

MANIFEST = "split.json"
"""The file under OUT recording the split."""


def source_of(name: str) -> str:
    """The source micrograph of a file name: the name without trailing ``-<int>`` crop coordinates."""
    return CROP_SUFFIX.sub("", name) or name


def family_of(source: str) -> str:
    """The family of a source: its name up to the first ``_`` (the whole name if none)."""
    return source.split("_", 1)[0]


@dataclass(frozen=True)
class RealSplit:
    """Which sources, and so which file names, each half holds."""

    dev: dict[str, list[str]] = field(default_factory=dict)
    """source -> file names (without suffix) in the development half."""
    check: dict[str, list[str]] = field(default_factory=dict)
    """source -> file names in the check half."""

    def names(self, half: str) -> list[str]:
        """All file names of one half (``"dev"`` or ``"check"``), sorted."""
        return sorted(n for names in getattr(self, half).values() for n in names)

    def to_dict(self) -> dict[str, dict[str, list[str]]]:
        """The split as plain JSON-able data."""
        return {"dev": self.dev, "check": self.check}


def _check_fraction(check_fraction: float) -> None:
    if isinstance(check_fraction, bool) or not isinstance(check_fraction, (int, float)) \
            or not 0.0 < check_fraction < 1.0:
        raise RealDataError(f"check_fraction: expected a number strictly between 0 and 1, got {check_fraction!r}")


def plan_split(names: list[str], check_fraction: float = 0.5, seed: int | None = None) -> RealSplit:
    """Assign file names to the dev and check halves by source, stratified by family.

    ``seed`` None takes sources in name order (the same split on every machine without a
    seed to agree on); an integer shuffles them within each family with
    ``numpy.random.default_rng(seed)``.
    """
    _check_fraction(check_fraction)
    by_source: dict[str, list[str]] = {}
    for name in sorted(names):
        by_source.setdefault(source_of(name), []).append(name)
    if len(by_source) < 2:
        raise RealDataError(f"cannot split {len(names)} file(s) from {len(by_source)} source(s) by source: "
                            "at least two source micrographs are needed")
    families: dict[str, list[str]] = {}
    for source in sorted(by_source):
        families.setdefault(family_of(source), []).append(source)
    lone = [sources[0] for sources in families.values() if len(sources) == 1]
    strata = [sources for sources in families.values() if len(sources) > 1]
    if lone:
        strata.append(sorted(lone))
    rng = None if seed is None else np.random.default_rng(seed)
    dev: dict[str, list[str]] = {}
    check: dict[str, list[str]] = {}
    for sources in strata:
        order = list(sources) if rng is None else [sources[i] for i in rng.permutation(len(sources))]
        n_check = min(max(round(len(order) * check_fraction), 1), len(order) - 1)
        for i, source in enumerate(order):
            (check if i >= len(order) - n_check else dev)[source] = by_source[source]
    return RealSplit(dict(sorted(dev.items())), dict(sorted(check.items())))


def write_split(src: str | Path, out: str | Path, check_fraction: float = 0.5, seed: int | None = None) -> RealSplit:
    """Split the real folder ``src`` into ``out/dev`` and ``out/check`` (symbolic links) and ``out/split.json``.

    Refuses an ``out`` that already holds either half, so an earlier split is never mixed
    with a new one.
    """
    folder = RealFolder(src)
    split = plan_split(folder.names, check_fraction, seed)
    out = Path(out)
    for half in HALVES:
        if (out / half).exists():
            raise RealDataError(f"{out / half}: already exists; choose a new OUT or remove the old split first")
    for half in HALVES:
        for kind in ("images", "masks"):
            (out / half / kind).mkdir(parents=True)
        for name in split.names(half):
            image, mask = folder.paths(name)
            (out / half / "images" / image.name).symlink_to(image.resolve())
            (out / half / "masks" / mask.name).symlink_to(mask.resolve())
    manifest = {"source": str(Path(src).resolve()), "check_fraction": check_fraction, "seed": seed, **split.to_dict()}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return split
