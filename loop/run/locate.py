"""``loop locate``: where real micrographs sit in a run's parameter space.

The inverse model (:mod:`loop.train.inverse`) of the run's latest cycle is trained on the
run's ``train`` samples plus ``InverseConfig.renders`` fresh renders of its own space
(:mod:`loop.run.inverse_renders`), and scored on its held-out ``test`` samples (else ``val``),
unless ``RUN/checkpoints/inverse_cycle_NNN.pt`` exists, and saved there under the run lock.
An existing checkpoint is loaded as it is (one of the older CNN model too; delete it to
retrain). Then
each real image is located (tiles averaged, the ensemble's spread as uncertainty), and a
table and a plot are made: per dimension, a histogram of the run's train samples with the
real images' estimates as points with error bars, the held-out R² in the title. The report
(``locate.json`` + ``locate.png``) goes to ``RUN/reports/locate_cycle_NNN/`` under the run
lock, or to ``out`` when given.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import posixpath
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from generators.space import Dimension, LogRange, Integer, ParamSpace
from loop.errors import InputError
from loop.evaluate.real import SUFFIXES, load_grey_image
from loop.run.inverse_renders import RENDER_STREAM, render_for_inverse, rendered_targets, run_seed
from loop.run.lock import RunLock
from loop.run.names import (
    CHECKPOINTS, REPORTS, inverse_checkpoint_name, legacy_inverse_checkpoint_name, locate_report_name,
)
from loop.run.report_json import report_bytes
from loop.train.inverse import (
    CNN_ARCH, IDENTIFIABLE_R2, InverseConfig, InverseError, InverseResult, identifiable, load_inverse, save_inverse,
    target_dims, train_inverse,
)
from stores import RunStore

EDGE = 0.05
"""An estimate within this fraction of a dimension's range from either end sits at that edge."""
MAX_HELD_OUT = 500
"""At most this many held-out samples score the inverse model."""


def image_files(folder: str | os.PathLike[str], option: str = "--images") -> list[Path]:
    """The image files of ``folder`` (``folder/images`` when it is a real labelled folder), by name.

    Raises :class:`InputError`, naming ``option``, for a missing folder or one without images.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{option} {folder}: not a folder")
    where = root / "images" if (root / "images").is_dir() else root
    files = sorted(p for p in where.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SUFFIXES)
    if not files:
        raise InputError(f"{option} {folder}: no images ({', '.join(SUFFIXES)}) in {where}")
    return files


def _unit_to_value(dim: Dimension, u: np.ndarray) -> np.ndarray:
    """Unit-cube coordinates to the dimension's units, continuously (integers not rounded)."""
    u = np.clip(np.asarray(u, dtype=float), 0.0, 1.0)
    if isinstance(dim, LogRange):
        return np.exp(math.log(dim.low) + u * (math.log(dim.high) - math.log(dim.low)))
    if isinstance(dim, Integer):
        n = dim.high - dim.low + 1
        return np.clip(dim.low - 0.5 + u * n, dim.low, dim.high)
    return dim.low + u * (dim.high - dim.low)


def _read_split(store: RunStore, split: str, limit: int, seed: int, dims: list[str]) -> tuple[np.ndarray, np.ndarray, Any]:
    """``(images, unit targets, params table)`` of up to ``limit`` samples of ``split`` (a seeded subset beyond it)."""
    view = store.view(split=split)
    idx = np.arange(len(view))
    if len(idx) > limit:
        idx = np.sort(np.random.default_rng(seed).choice(len(idx), size=limit, replace=False))
    table = view.params.take(idx)
    images = [view[int(i)][0] for i in idx]
    render_sizes = [min(im.shape) for im in images]  # renders are square: the side before any crop
    shapes = {im.shape for im in images}
    if len(shapes) > 1:  # samples of several render sizes: crop all to the smallest
        h, w = min(s[0] for s in shapes), min(s[1] for s in shapes)
        images = [im[:h, :w] for im in images]
    rows = table.select(list(store.space.names)).to_pylist()
    generator = _code_generator(store)
    targets = np.zeros((len(rows), len(dims)))
    for size in set(render_sizes):  # targets as each render shows its parameters
        at = [k for k, s in enumerate(render_sizes) if s == size]
        targets[at] = rendered_targets(store.space, generator, [rows[k] for k in at], size, dims)
    return np.stack(images) if images else np.zeros((0, 1, 1), np.uint8), targets, table


def _code_generator(store: RunStore) -> Any:
    """The run's generator as code (no options: only its :func:`generators.base.rendered_params` hook is asked)."""
    from generators import get_generator

    return get_generator(store.generator_name)


def latest_cycle(store: RunStore) -> int:
    """The run's latest cycle with samples; :class:`InputError` when it has none (or no train samples)."""
    params = store.params()
    if params.num_rows == 0:
        raise InputError(f"run {store.uri} has no samples; generate or start it first (`loop generate` / `loop start`)")
    if store.params(split="train").num_rows == 0:
        raise InputError(f"run {store.uri} has no train samples to learn the inverse model from")
    return int(max(params["cycle"].to_pylist()))


def inverse_model(store: RunStore, cycle: int, cfg: InverseConfig = InverseConfig(), *, device: str | None = None,
                  say: Callable[[str], None] | None = None, locked: bool = False) -> tuple[InverseResult, str, bool]:
    """``(ensemble, checkpoint URI, trained now)``: the run's inverse model of ``cycle``, trained
    and saved under the run lock unless it exists (``locked``: the caller holds the lock, e.g. the
    cycle driver)."""
    name = inverse_checkpoint_name(cycle)
    uri = store.path(CHECKPOINTS, name)
    if store.location.exists(CHECKPOINTS, name):
        return _loaded(uri, device, say), uri, False
    legacy = legacy_inverse_checkpoint_name(cycle)
    if store.location.exists(CHECKPOINTS, legacy):
        return _loaded(store.path(CHECKPOINTS, legacy), device, say), store.path(CHECKPOINTS, legacy), False
    with contextlib.nullcontext() if locked else RunLock(store.uri, what="loop locate"):
        if store.location.exists(CHECKPOINTS, name):  # another locate saved it meanwhile
            return _loaded(uri, device, say), uri, False
        dims = target_dims(store.space)
        if not dims:
            raise InverseError(f"run {store.uri}: its space has no dimension to locate (all fixed or choices)")
        images, targets, _ = _read_split(store, "train", cfg.max_samples, cfg.seed, dims)
        n_stored = len(images)
        rendered = _renders(store, cfg.renders_for(n_stored), min(images.shape[1:]), dims, say)
        if len(rendered[0]):
            h, w = min(images.shape[1], rendered[0].shape[1]), min(images.shape[2], rendered[0].shape[2])
            images = np.concatenate([images[:, :h, :w], rendered[0][:, :h, :w]])
            targets = np.concatenate([targets, rendered[1]])
        held_split = "test" if store.params(split="test").num_rows else "val"
        held = _read_split(store, held_split, MAX_HELD_OUT, cfg.seed + 1, dims)[:2]
        if say:
            say(f"training the inverse model ({cfg.model}) of cycle {cycle}: {cfg.members} members on {n_stored} "
                f"train samples of {store.uri} and {len(rendered[0])} fresh renders (scored on {len(held[0])} "
                f"{held_split} samples)")
        result = train_inverse(images, targets, dims, cfg, held_out=held if len(held[0]) else None,
                               held_out_split=held_split if len(held[0]) else None, device=device, progress=say)
        result.meta.update({"targets": "rendered", "n_stored": n_stored, "n_rendered": int(len(rendered[0])),
                            "render_seed": [run_seed(store), RENDER_STREAM],
                            "cycle": cycle, "run_space": store.space.to_dict()})
        store.location.makedirs(CHECKPOINTS)
        save_inverse(uri, result)
    return result, uri, True


def _loaded(uri: str, device: str | None, say: Callable[[str], None] | None) -> InverseResult:
    """The saved inverse model at ``uri``; a line for ``say`` when it is the older CNN model."""
    result = load_inverse(uri, device=device or "cpu")
    if say and result.meta.get("arch", CNN_ARCH) == CNN_ARCH:
        say(f"inverse checkpoint {uri} holds the older CNN model (lower held-out R² than the feature model); "
            f"delete it and its .sha256 to retrain")
    return result


def _renders(store: RunStore, n: int, size: int, dims: list[str],
             say: Callable[[str], None] | None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`render_for_inverse`, or none (with a line for ``say``) when the run's generator cannot be
    rebuilt as it was (e.g. its exemplar folder changed): the stored samples still train the model."""
    try:
        return render_for_inverse(store, n, size, dims, say=say)
    except InputError as err:
        if say:
            say(f"inverse model: no fresh renders ({err}); training on the stored samples only")
        return np.zeros((0, size, size), np.uint8), np.zeros((0, len(dims)))


def locate(run: str, images_dir: str, *, out: str | None = None, cfg: InverseConfig = InverseConfig(),
           device: str | None = None, say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Locate the images of ``images_dir`` in ``run``'s parameter space; write the report; return it as plain data."""
    t0 = time.perf_counter()
    store = RunStore.open(run)
    files = image_files(images_dir)
    images = [load_grey_image(f) for f in files]
    cycle = latest_cycle(store)
    size = min(cfg.input_size, *store.view(split="train")[0][0].shape)
    for f, image in zip(files, images):
        if min(image.shape) < size:
            raise InverseError(f"{f}: {image.shape[1]}×{image.shape[0]} px is smaller than the inverse model's "
                               f"input of {size}×{size} px")
    result, uri, trained = inverse_model(store, cycle, cfg, device=device, say=say)
    meta = result.meta
    est, spread = result.model.predict(images, tiles=int(meta.get("config", {}).get("tiles", cfg.tiles)))
    space = store.space
    r2 = {d: meta.get("r2", {}).get(d) for d in result.model.dims}
    dims_out = []
    for j, name in enumerate(result.model.dims):
        dim = space[name]
        low_edge = int((est[:, j] < EDGE).sum())
        high_edge = int((est[:, j] > 1 - EDGE).sum())
        edge = ("low" if low_edge * 2 >= len(images) and low_edge >= high_edge else
                "high" if high_edge * 2 >= len(images) else None)
        dims_out.append({"name": name, "unit": dim.unit, "kind": dim.kind, "low": dim.low, "high": dim.high,
                         "r2": r2[name], "identifiable": r2[name] is not None and r2[name] >= IDENTIFIABLE_R2,
                         "edge": edge, "at_low_edge": low_edge, "at_high_edge": high_edge})
    rows = []
    for i, f in enumerate(files):
        values = space.from_unit(_full_unit(space, result.model.dims, est[i]))[0]
        estimates = {}
        for j, name in enumerate(result.model.dims):
            dim = space[name]
            lo, hi = _unit_to_value(dim, [est[i, j] - spread[i, j], est[i, j] + spread[i, j]])
            u = float(est[i, j])
            estimates[name] = {"value": values[name], "spread": float((hi - lo) / 2), "low": float(lo), "high": float(hi),
                               "unit_value": u, "unit_spread": float(spread[i, j]),
                               "edge": "low" if u < EDGE else "high" if u > 1 - EDGE else None}
        rows.append({"name": f.name, "path": str(f), "size": [int(images[i].shape[1]), int(images[i].shape[0])],
                     "estimates": estimates})
    report = {
        "run": store.uri, "cycle": cycle, "images_dir": str(images_dir), "n_images": len(files),
        "checkpoint": uri, "trained": trained, "input_size": int(result.model.input_size),
        "members": len(result.model.members), "r2_split": meta.get("r2_split"), "n_train": meta.get("n_train"),
        "model": meta.get("arch", CNN_ARCH), "n_rendered": meta.get("n_rendered", 0), "train_s": meta.get("train_s"),
        "identifiable_r2": IDENTIFIABLE_R2, "identifiable": identifiable(r2),
        "fixed": [d.name for d in space if d.name not in result.model.dims],
        "dimensions": dims_out, "images": rows,
    }
    png = plot_locations(store, report)
    report["wall_s"] = round(time.perf_counter() - t0, 2)
    report["out"] = _write_report(store, cycle, report, png, out)
    return report


def _full_unit(space: ParamSpace, dims: list[str], u: np.ndarray) -> np.ndarray:
    """A full unit-cube point: the estimated dimensions from ``u``, the others at 0.5."""
    full = np.full((1, len(space)), 0.5)
    for j, name in enumerate(dims):
        full[0, space.names.index(name)] = np.clip(u[j], 0.0, 1.0)
    return full


def _write_report(store: RunStore, cycle: int, report: dict[str, Any], png: bytes, out: str | None) -> str:
    data = report_bytes(report)
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "locate.json").write_bytes(data)
        (folder / "locate.png").write_bytes(png)
        return str(folder)
    folder = posixpath.join(REPORTS, locate_report_name(cycle))
    with RunLock(store.uri, what="loop locate"):
        store.location.write_bytes(posixpath.join(folder, "locate.json"), data)
        store.location.write_bytes(posixpath.join(folder, "locate.png"), png)
    return store.path(folder)


def plot_locations(store: RunStore, report: dict[str, Any], columns: int = 4) -> bytes:
    """PNG: one panel per located dimension, the train samples' histogram and each image's estimate ± spread."""
    from matplotlib.figure import Figure  # a Figure of its own (Agg canvas, no pyplot state)

    dims = report["dimensions"]
    train = store.params(split="train")
    n_img = len(report["images"])
    columns = max(1, min(columns, len(dims)))
    rows = math.ceil(len(dims) / columns)
    fig = Figure(figsize=(3.6 * columns, 2.6 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.ravel()[len(dims):]:
        ax.axis("off")
    for ax, d in zip(axes.ravel(), dims):
        values = np.asarray(train[d["name"]].to_pylist(), dtype=float)
        log = d["kind"] == "log"
        bins = (np.geomspace(d["low"], d["high"], 21) if log else
                np.arange(d["low"] - 0.5, d["high"] + 1.0) if d["kind"] == "integer" else
                np.linspace(d["low"], d["high"], 21))
        ax.hist(values, bins=bins, color="0.8", edgecolor="0.6")
        if log:
            ax.set_xscale("log")
        ax.set_yticks([])
        r2 = "n/a" if d["r2"] is None else f"{d['r2']:.2f}"
        ax.set_title(f"{d['name']}  R²={r2}" + (f"  [{d['edge']} edge]" if d["edge"] else ""), fontsize=8,
                     color="black" if d["identifiable"] else "0.45")
        ax.set_xlabel(d["unit"], fontsize=7)
        ax.tick_params(labelsize=6)
        twin = ax.twinx()
        for i, row in enumerate(report["images"]):
            e = row["estimates"][d["name"]]
            x = float(_unit_to_value_plain(d, e["unit_value"]))
            twin.errorbar([x], [i + 1], xerr=[[max(x - e["low"], 0.0)], [max(e["high"] - x, 0.0)]], fmt="o",
                          color=f"C{i % 10}", markersize=3, capsize=2, linewidth=1)
        twin.set_ylim(0, n_img + 1)
        twin.set_yticks([])
        ax.set_xlim(d["low"], d["high"]) if d["low"] < d["high"] else None
    fig.suptitle(f"{Path(report['run']).name} cycle {report['cycle']}: {n_img} images of {report['images_dir']} "
                 f"(grey: train samples; points: estimate ± ensemble spread; R² on {report['r2_split']})", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _unit_to_value_plain(d: dict[str, Any], u: float) -> float:
    """:func:`_unit_to_value` for a dimension's plain-data row."""
    u = min(max(u, 0.0), 1.0)
    if d["kind"] == "log":
        return math.exp(math.log(d["low"]) + u * (math.log(d["high"]) - math.log(d["low"])))
    if d["kind"] == "integer":
        return min(max(d["low"] - 0.5 + u * (d["high"] - d["low"] + 1), d["low"]), d["high"])
    return d["low"] + u * (d["high"] - d["low"])
