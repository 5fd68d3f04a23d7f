"""Forking a run: a new run that starts from a base run's cycle 0 with a policy of its own.

The paper fine-tunes every compared policy from one common start (§3.3). A fork is that
start made into a normal run directory: it holds the base run's cycle-0 samples (the
validation set, the initial training set and the held-out test set, same sample ids, batches
and bytes), the cycle-0 validation and test scores, the cycle-0 checkpoint and the journal's
cycle-0 events, and its
own ``run.toml`` whose run config differs from the base's only in ``policy`` and
``cycles``. ``loop resume FORK`` (or :func:`loop.run.lifecycle.resume_run`) then runs cycles 1..C;
``loop status`` reads it as any run.

The fork is built in a sibling staging location (``DEST.forking``) and moved to ``DEST``
at the end, so ``DEST`` is either absent or a complete fork; a staging folder left by a
killed fork is removed by the next one. On local disk every file and folder of the staging
location is fsynced before the move, and the parent folder after it. The base's cycle-0
checkpoint is checked (its bytes against its digest file and the digest its journal
recorded) before it is copied. File I/O goes through :class:`stores.location.Location`.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loop.run.journal import Journal
from loop.run.driver import TEST_SPLIT
from loop.run.names import CHECKPOINTS, JOURNAL, found_checkpoint_name, test_metrics_name, val_metrics_name
from loop.config.run import run_config_from
from policies import get_policy
from loop.errors import InputError
from stores.location import Location

STAGING_SUFFIX = ".forking"
# Journal events of a cycle that the driver looks up to skip finished steps.
CYCLE_EVENTS = ("planned", "generated", "trained", "evaluated", "test_evaluated", "real_evaluated",
                "real_val_evaluated", "anchored", "cycle_done")
# Columns a batch is written with (the store adds batch, generator, generator_version, created_at).
KEY_COLUMNS = ("sample_id", "cycle", "split", "policy", "parent_id", "seed", "label")


class ForkError(InputError):
    """A run cannot be forked as asked."""


def _parent_and_name(uri: str) -> tuple[Location, str]:
    """The :class:`Location` of the folder that holds ``uri`` and ``uri``'s name in it."""
    text = os.fspath(uri).rstrip("/")
    if "://" not in text:
        folder, name = os.path.split(os.path.abspath(text))
        return Location(folder), name
    folder, _, name = text.rpartition("/")
    if not name or folder.endswith(":/"):
        raise ForkError(f"fork destination {uri}: expected a folder inside a folder or bucket")
    return Location(folder), name


def _move(parent: Location, src: str, dst: str) -> None:
    """Rename folder ``src`` of ``parent`` to ``dst`` (locally one rename, made durable by an
    fsync of ``parent``; elsewhere the objects are moved one by one: ``Location`` has no move)."""
    if parent.local:
        os.rename(parent.join(src), parent.join(dst))
        fd = os.open(parent.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return
    parent.fs.mv(parent.join(src), parent.join(dst), recursive=True)


def fork_run(base: str, dest: str, *, policy: str, cycles: int, say: Callable[[str], None] = print) -> str:
    """Create run ``dest`` from cycle 0 of run ``base``, with ``policy`` for ``cycles`` adaptive cycles.

    Returns the new run's URI. ``dest`` must not hold a run; ``base`` must have finished
    cycle 0. Nothing is trained or generated: resume the fork to run its cycles.
    """
    from stores import RunStore

    get_policy(policy)
    if isinstance(cycles, bool) or not isinstance(cycles, int) or cycles < 0:
        raise ForkError(f"cycles: expected an integer >= 0, got {cycles!r}")
    if RunStore.exists(dest):
        raise ForkError(f"fork destination {dest}: already holds a run; expected a new location")
    source = RunStore.open(base)
    events = Journal(source.path(JOURNAL)).events()
    if not any(e["event"] == "cycle_done" and e.get("cycle") == 0 for e in events):
        raise ForkError(f"base run {base}: cycle 0 is not done; finish it (`loop resume {base}`) before forking")

    parent, name = _parent_and_name(dest)
    staging = name + STAGING_SUFFIX
    if parent.exists(staging):
        say(f"fork {dest}: removing the staging folder of an interrupted fork")
        parent.remove_tree(staging)
    if parent.exists(name):
        if parent.listdir(name):
            raise ForkError(f"fork destination {dest}: exists and is not empty; expected a new location")
        # An empty folder: the staging folder is moved into its place.
        if parent.local:
            os.rmdir(parent.join(name))
        else:
            parent.remove_tree(name)

    # No lock on the base: cycle 0's samples, scores and checkpoint never change once the
    # cycle is done, so several forks (and a driver adding cycles to the base) may read them at once.
    config = source.config
    config["run"] = run_config_from({**config["run"], "policy": policy, "cycles": cycles}).to_dict()
    config["fork"] = {"base": source.uri, "cycle": 0}
    fork = RunStore.create(parent.url(staging), generator_name=source.generator_name,
                           generator_version=source.generator_version, task=source.task,
                           space=source.space, config=config)
    n_samples = _copy_samples(source, fork)
    fork.consolidate()
    _copy_metrics(source, fork)
    trained = [e for e in events if e["event"] == "trained" and e.get("cycle") == 0]
    _copy_checkpoint(source, fork, found_checkpoint_name(source, 0, trained[-1].get("checkpoint") if trained else None),
                     trained[-1].get("digest") if trained else None)
    _copy_anchors(source, fork, events)
    journal = Journal(fork.path(JOURNAL))
    for event in events:
        if event["event"] in CYCLE_EVENTS and event.get("cycle") == 0:
            journal.append(event["event"], **{k: v for k, v in event.items() if k != "event"})
    journal.append("forked", base=source.uri, cycle=0, policy=policy, cycles=cycles)
    fork.location.sync_tree("")  # the whole fork is on disk before it appears under its name
    _move(parent, staging, name)
    say(f"forked {dest} from {source.uri}: cycle 0 ({n_samples} samples, checkpoint, scores), policy {policy}")
    return RunStore.open(dest).uri


def _copy_samples(source: Any, fork: Any) -> int:
    """Write every cycle-0 batch of ``source`` into ``fork`` under the same batch number."""
    view = source.view(cycles=0)
    params = view.params
    columns = [c for c in (*KEY_COLUMNS, *source.space.names) if c in params.column_names]
    batches = params["batch"].to_numpy()
    segmentation = source.task == "segmentation"
    for batch in np.unique(batches):
        index = np.flatnonzero(batches == batch)
        rows = params.select(columns).take(pa.array(index))
        images, masks = [], []
        for i in index:
            image, target = view[int(i)]
            images.append(image)
            if segmentation:
                masks.append(target)
        fork.write_batch(int(batch), rows, np.stack(images), np.stack(masks) if segmentation else None)
    return len(batches)


def _copy_metrics(source: Any, fork: Any) -> None:
    """Copy the cycle-0 scores: the validation scores, and the held-out test scores when the base
    has a test set, each into its own fragment as the driver writes them."""
    metrics = source.metrics()
    rows = metrics.filter(pc.equal(metrics["cycle"], 0))
    params = source.params()
    test_ids = params.filter(pc.equal(params["split"], TEST_SPLIT))["sample_id"].combine_chunks()
    is_test = pc.is_in(rows["sample_id"], value_set=test_ids)
    val, test = rows.filter(pc.invert(is_test)), rows.filter(is_test)
    if val.num_rows == 0:
        raise ForkError(f"base run {source.uri}: has no cycle-0 validation scores; expected the fragment "
                        f"{val_metrics_name(0)}")
    for name, part in ((val_metrics_name(0), val), (test_metrics_name(0), test)):
        if part.num_rows == 0:
            continue
        metric_columns = [c for c in part.column_names if c != "created_at"
                          and (c in ("sample_id", "cycle", "checkpoint") or pc.sum(pc.is_valid(part[c])).as_py())]
        fork.append_metrics(part.select(metric_columns), name=name)


def _copy_checkpoint(source: Any, fork: Any, name: str, recorded: str | None) -> None:
    """Copy the checkpoint and its digest, after checking the checkpoint's bytes against its
    digest file and ``recorded`` (the digest the base's journal recorded; ``None``: not
    journaled). A local checkpoint is hard-linked (checkpoints are replaced by rename, never
    rewritten in place, so the base's file cannot change under the fork)."""
    from loop.train.checkpoints import DIGEST_SUFFIX, read_digest, read_verified

    src_uri = source.path(CHECKPOINTS, name)
    if not source.location.exists(CHECKPOINTS, name):
        raise ForkError(f"base run {source.uri}: {src_uri} is missing; expected the cycle-0 checkpoint")
    data = read_verified(src_uri, recorded)
    digest = read_digest(src_uri)
    src, dst = source.location, fork.location
    dst.makedirs(CHECKPOINTS)
    rel = f"{CHECKPOINTS}/{name}"
    linked = False
    if src.local and dst.local:
        try:
            os.link(src.join(CHECKPOINTS, name), dst.join(rel))
            linked = True
        except OSError:
            pass  # another filesystem, or links not allowed: copy instead
    if not linked:
        dst.commit_bytes(rel, data)
    dst.commit_bytes(rel + DIGEST_SUFFIX, f"{digest}  {name}\n".encode())


def _copy_anchors(source: Any, fork: Any, events: list[dict[str, Any]]) -> None:
    """Copy the real validation images' cycle-0 estimates and scores (``--real-val``), checked
    against the digest the base's journal recorded, when the base has them."""
    from loop.run.anchors import anchors_path, read_anchors
    from loop.run.names import ANCHORS

    anchored = [e for e in events if e["event"] == "anchored" and e.get("cycle") == 0]
    if not anchored:
        return
    read_anchors(source, 0, anchored[-1]["digest"])  # the file the journal recorded
    fork.location.makedirs(ANCHORS)
    fork.location.commit_bytes(anchors_path(0), source.location.read_bytes(anchors_path(0)))
