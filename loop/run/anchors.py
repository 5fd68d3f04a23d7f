"""Real validation images (``loop start --real-val DIR``): checked, digested, located and scored.

A run may be given a few real images to anchor its sampling on (the ``anchored`` policy,
:mod:`policies.anchored`). The folder is either a real labelled folder (``DIR/images`` +
``DIR/masks``, :class:`loop.evaluate.real.RealFolder`) or a folder of images only (any PNG/TIF,
also ``DIR/images`` alone). At ``loop start`` it is checked (every image readable and at least
the inverse model's input side; none of them one of the run's ``--real`` test images, by
content) and frozen in ``run.toml`` as an absolute path with :func:`real_val_digest`; a
resume refuses a folder whose files changed.

After a cycle's training and evaluation the driver, under the run lock, calls
:func:`estimate_anchors`: the run's inverse model of that cycle (``loop locate``'s,
:func:`loop.run.locate.inverse_model`, trained on the run's train samples unless saved) places
each image in the space (unit-cube estimate and ensemble spread per located dimension), and,
with masks, the cycle's model is scored on each image (``miou`` and ``error``, or a
classifier's ``loss`` and ``error``). The result is written once, atomically, as
``RUN/anchors/cycle_NNN.json`` (:func:`write_anchors`) and journaled with its digest
(``anchored`` event); a resume reads the file (:func:`read_anchors`, checked against that
digest) and never recomputes it, so the next cycle's proposals are the same. The policy sees
the file as :attr:`policies.PolicyView.anchors` (:func:`anchors_view_table`).
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from loop.errors import InputError
from loop.evaluate.real import RealDataError, RealFolder, load_grey_image
from loop.run.names import ANCHORS, anchors_name
from loop.train.inverse import InverseConfig
from policies.anchored import ANCHOR_SCORES, anchors_table

OPTION = "--real-val"


class RealValError(InputError):
    """The real validation folder cannot be used, or changed since the run began."""


@dataclass(frozen=True)
class RealValFolder:
    """The images of a real validation folder, and whether they have masks (``root`` then is a
    real labelled folder that :class:`RealFolder` reads)."""

    root: Path
    images: tuple[Path, ...]
    masks: tuple[Path, ...]

    @property
    def labelled(self) -> bool:
        """Whether every image has a mask."""
        return bool(self.masks)


def real_val_folder(folder: str) -> RealValFolder:
    """The images (and masks) of ``folder``; :class:`RealValError` for a missing or empty folder,
    a badly laid out labelled folder, or a URI (only local folders are read)."""
    from loop.run.locate import image_files

    if "://" in str(folder):
        raise RealValError(f"{OPTION} {folder}: expected a local folder")
    root = Path(folder)
    if not root.is_dir():
        raise RealValError(f"{OPTION} {folder}: not a folder")
    if (root / "masks").is_dir():
        try:
            labelled = RealFolder(root)
        except RealDataError as err:
            raise RealValError(f"{OPTION} {folder}: {err}") from None
        pairs = [labelled.paths(name) for name in labelled.names]
        return RealValFolder(root, tuple(p[0] for p in pairs), tuple(p[1] for p in pairs))
    return RealValFolder(root, tuple(image_files(root, OPTION)), ())


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def real_val_digest(folder: RealValFolder) -> str:
    """One SHA-256 (hex) over the names and bytes of the folder's images and masks."""
    h = hashlib.sha256()
    for path in (*folder.images, *folder.masks):
        h.update(f"{path.relative_to(folder.root).as_posix()}\0{_file_digest(path)}\0".encode())
    return h.hexdigest()


def check_real_val(folder: str, *, size: int, real: Sequence[tuple[str, str]] = (),
                   cfg: InverseConfig = InverseConfig()) -> str:
    """Check the real validation folder of a run rendering ``size``-px samples and return its digest.

    Every image must read as an image and have sides of at least the inverse model's input
    (``min(cfg.input_size, size)`` px); none may be an image of a ``real`` test group (same
    bytes): the real validation images are never the test images. Raises :class:`RealValError`
    naming the file.
    """
    found = real_val_folder(folder)
    side = min(cfg.input_size, size)
    for path in found.images:
        try:
            image = load_grey_image(path)
        except RealDataError as err:
            raise RealValError(f"{OPTION} {folder}: {err}") from None
        if min(image.shape) < side:
            raise RealValError(f"{OPTION} {folder}: {path.name} is {image.shape[1]}×{image.shape[0]} px, smaller than "
                               f"the inverse model's input of {side}×{side} px")
    mine = {_file_digest(p): p for p in found.images}
    for name, test_folder in real:
        try:
            test = RealFolder(test_folder)
        except RealDataError:
            continue  # the run's own check of its real groups names the problem
        for image_name in test.names:
            path = test.paths(image_name)[0]
            twin = mine.get(_file_digest(path))
            if twin is not None:
                raise RealValError(f"{OPTION} {folder}: {twin.name} is also an image of the real test group "
                                   f"{name!r} ({path}); the real validation images must not be test images")
    return real_val_digest(found)


def check_unchanged(folder: str, digest: str | None, where: str) -> None:
    """Raise :class:`RealValError` when ``folder``'s digest is not ``digest`` (its files changed)."""
    now = real_val_digest(real_val_folder(folder))
    if digest is not None and now != digest:
        raise RealValError(f"{where}: its {OPTION} folder {folder} changed since the run began (digest "
                           f"{digest[:12]}…, now {now[:12]}…); restore it, or start a new run")


Scorer = Callable[[str], list[dict[str, Any]]]
"""Scores the cycle's model on a real labelled folder: per-image rows with ``name`` (the file
stem) and metric columns (:meth:`loop.run.evaluator_actor.Evaluator.evaluate_real`'s ``images``)."""


def estimate_anchors(store: Any, cycle: int, folder: str, *, score: Scorer | None = None,
                     cfg: InverseConfig = InverseConfig(), device: str | None = None,
                     say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The anchors of cycle ``cycle`` as plain data: each real validation image located by the
    run's inverse model of that cycle (trained now unless saved; the caller holds the run lock)
    and, when the folder has masks and ``score`` is given, scored by the cycle's model."""
    from loop.run.locate import inverse_model

    found = real_val_folder(folder)
    images = [load_grey_image(p) for p in found.images]
    result, inverse_uri, trained = inverse_model(store, cycle, cfg, device=device, say=say, locked=True)
    tiles = int(result.meta.get("config", {}).get("tiles", cfg.tiles))
    unit, spread = result.model.predict(images, tiles=tiles)
    scores: dict[str, dict[str, Any]] = {}
    if found.labelled and score is not None:
        scores = per_image_scores(score(str(found.root)))
    rows = []
    for i, path in enumerate(found.images):
        scored = scores.get(path.stem, {})
        rows.append({
            "name": path.name,
            **{s: _number(scored.get(s)) for s in ANCHOR_SCORES},
            "unit": {d: float(unit[i, j]) for j, d in enumerate(result.model.dims)},
            "spread": {d: float(spread[i, j]) for j, d in enumerate(result.model.dims)},
        })
    return {"cycle": cycle, "real_val": str(found.root), "labelled": found.labelled,
            "inverse_checkpoint": posixpath.basename(inverse_uri), "inverse_trained": trained,
            "dims": list(result.model.dims), "r2": result.meta.get("r2", {}), "images": rows}


def per_image_scores(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each image's scores from scored rows: a row per image as it is, the rows of a tiled
    image (classification: an ``image`` column) averaged over its tiles."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(row.get("image", row["name"]), []).append(row)
    out = {}
    for name, group in grouped.items():
        known = {s: [x for x in (_number(r.get(s)) for r in group) if x is not None] for s in ANCHOR_SCORES}
        out[name] = {s: math.fsum(v) / len(v) for s, v in known.items() if v}
    return out


def _number(value: Any) -> float | None:
    """A finite score as a float, anything else (missing, NaN) as ``None``."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def anchors_path(cycle: int) -> str:
    """Where cycle ``cycle``'s anchors live, relative to the run."""
    return posixpath.join(ANCHORS, anchors_name(cycle))


def write_anchors(store: Any, cycle: int, data: dict[str, Any]) -> str:
    """Write cycle ``cycle``'s anchors once, atomically (never replacing a file); return their digest."""
    raw = json.dumps(data, indent=1, allow_nan=False).encode()
    store.location.makedirs(ANCHORS)
    store.location.commit_bytes(anchors_path(cycle), raw)
    return hashlib.sha256(raw).hexdigest()


def anchors_exist(store: Any, cycle: int) -> bool:
    """Whether cycle ``cycle``'s anchors were written."""
    return store.location.exists(ANCHORS, anchors_name(cycle))


def read_anchors(store: Any, cycle: int, digest: str | None = None) -> tuple[dict[str, Any], str]:
    """Cycle ``cycle``'s anchors and their digest; :class:`RealValError` when ``digest`` (the
    journaled one) is given and the file's differs."""
    raw = store.location.read_bytes(anchors_path(cycle))
    found = hashlib.sha256(raw).hexdigest()
    if digest is not None and found != digest:
        raise RealValError(f"run {store.uri}: {anchors_path(cycle)} is not the file the journal recorded "
                           f"(digest {found[:12]}…, journaled {digest[:12]}…); restore it")
    return json.loads(raw), found


def anchors_view_table(data: dict[str, Any]) -> Any:
    """The anchors as :attr:`policies.PolicyView.anchors` (:func:`policies.anchored.anchors_table`)."""
    rows, dims = data["images"], data["dims"]
    return anchors_table([r["name"] for r in rows], dims,
                         [[r["unit"][d] for d in dims] for r in rows],
                         [[r["spread"][d] for d in dims] for r in rows],
                         {s: [r.get(s) for r in rows] for s in ANCHOR_SCORES})


def anchors_summary(data: dict[str, Any]) -> dict[str, Any]:
    """What the journal keeps of the anchors: the image count and the mean of each score the images have."""
    out: dict[str, Any] = {"n_images": len(data["images"])}
    for s in ANCHOR_SCORES:
        values = [r[s] for r in data["images"] if r.get(s) is not None]
        if values:
            out[s] = sum(values) / len(values)
    return out
