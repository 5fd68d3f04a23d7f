"""``loop evaluate``: a checkpoint of a run scored on real labelled images, kept in the run."""

from __future__ import annotations

import os
import posixpath
import tempfile
from typing import Any

from loop.config.run import real_overlap, run_config_from
from loop.errors import InputError
from loop.run.evaluator_actor import Evaluator
from loop.run.journal import Journal
from loop.run.lock import RunLock
from loop.run.driver import checked_checkpoint_uri
from loop.run.names import JOURNAL, REPORTS, checkpoint_cycles, real_report_name
from loop.run.report_json import report_bytes
from stores import RunStore


BEST = "best"
"""``--checkpoint best``: the finished cycle that scored best on the run's ``--real-val`` images."""


def pick_checkpoint(store: RunStore, cycle: int | str | None) -> int:
    """``cycle`` when the run has its checkpoint, the latest cycle when ``cycle`` is None, and for
    :data:`BEST` the finished cycle whose model scored best on the real validation images
    (:func:`loop.run.lifecycle.best_real_val`)."""
    have = checkpoint_cycles(store)
    if not have:
        raise InputError(f"run {store.uri} has no checkpoint yet; train it with `loop start` / `loop resume`")
    if cycle is None:
        return have[-1]
    if cycle == BEST:
        from loop.run.lifecycle import run_status

        best = run_status(store.uri)["best_real_val"]
        if best is None:
            raise InputError(f"--checkpoint best: run {store.uri} has no finished cycle scored on real validation "
                             "images; start a run with `--real-val DIR` (images with masks) to have one")
        cycle = best["cycle"]
    if cycle not in have:
        raise InputError(f"--checkpoint {cycle}: run {store.uri} has checkpoints of cycles {have}")
    return cycle


def score_real(run: str, real_dir: str, *, cycle: int | str | None = None, tile: int | None = None,
               overlap: int | None = None, pixel_size_um: float | None = None) -> tuple[dict[str, Any], str]:
    """Score cycle ``cycle``'s checkpoint (default: the latest; ``"best"``: the best on the run's
    real validation images) on ``real_dir``, in tiles of
    ``tile`` px overlapping by ``overlap`` px (default: the run's ``real_tile`` and a quarter of
    ``tile``, so that the run's own real scores and these agree).

    Writes ``RUN/reports/real_cycle_NNN/scores.json`` and one overlay per image (drawn on
    local disk, then written through the run's location, so object-store runs work alike).
    ``pixel_size_um`` (µm per pixel; else ``DIR/pixel_size_um.json``) adds grains/mm² and the
    ASTM E112 grain-size number G.
    Returns the scores and the report folder's URI.
    """
    store = RunStore.open(run)
    cycle = pick_checkpoint(store, cycle)
    if tile is None:
        tile = run_config_from(store.config["run"]).real_tile
    if overlap is None:
        overlap = real_overlap(tile)
    folder = posixpath.join(REPORTS, real_report_name(cycle))
    # Every process that writes into a run holds its lock: a running driver may write this folder too.
    uri = checked_checkpoint_uri(store, Journal(store.path(JOURNAL)), cycle)
    with RunLock(store.uri, what="loop evaluate"), tempfile.TemporaryDirectory() as tmp:
        result = Evaluator(tile=tile, overlap=overlap).evaluate_real(uri, real_dir,
                                                                     overlay_dir=tmp, pixel_size_um=pixel_size_um)
        for name in sorted(os.listdir(tmp)):
            with open(os.path.join(tmp, name), "rb") as fh:
                store.location.write_bytes(posixpath.join(folder, name), fh.read())
        result = {**result, "cycle": cycle}
        store.location.write_bytes(posixpath.join(folder, "scores.json"),
                                   report_bytes(result))
    return result, store.path(folder)
