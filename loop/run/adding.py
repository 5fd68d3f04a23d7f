"""``loop generate``: random samples added to a run's store, outside the cycles.

``loop generate`` holds the run's lock (:class:`loop.run.lock.RunLock`) for its whole duration,
as a driver does: it fails at once, naming the holder, while a driver or another ``generate``
holds it, and only under the lock does it recover what killed writers left behind. Its
sample ids and batch numbers continue after the run's committed ones and after every batch a
driver has planned (journaled), so a driver killed mid-cycle and resumed later still finds
its planned batch numbers and sample ids free.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

import generators
from loop.config.run import run_config_from
from loop.errors import InputError
from loop.run.driver import policy_view
from loop.run.generation import BatchPlan, next_ids, plan_batches, run_plans
from loop.run.journal import Journal
from loop.run.lock import LOCK_FILE, RunLock
from loop.run.names import JOURNAL
from loop.run.ray_session import ray_session
from policies import get_policy
from stores import RunStore, StoreError
from stores.location import Location

MADE_BY = "loop generate"
"""``made_by`` in the config of a run that ``loop generate`` created."""
LOCK_WHAT = "`loop generate`"
SPLITS = ("train", "val")


class NotACycleRun(InputError):
    """The run was made by ``loop generate``: it has samples but no cycles, journal or model."""


def check_cycle_run(store: RunStore, run: str | None = None) -> None:
    """Raise :class:`NotACycleRun` unless ``store`` is a run made by ``loop start`` (it has cycles).

    For ``loop status`` and ``loop resume``, before they read the run's cycle config.
    """
    if "run" in store.config:
        return
    made_by = "`loop generate`" if store.config.get("made_by", MADE_BY) == MADE_BY else "another tool"
    raise NotACycleRun(f"{run or store.uri} was made by {made_by}, it has no cycles; `loop show` and `loop query` "
                       "read its samples, `loop generate` adds to it, `loop start --run NEW` makes a run with cycles")


def open_or_create(run: str, generator: generators.Generator, config: dict[str, Any]) -> tuple[RunStore, bool]:
    """The store of ``run`` (recovered: the caller holds the run lock), made for ``generator``
    when it does not exist yet; and whether it was made now."""
    try:
        store = RunStore.open(run, recover=True)
    except StoreError:
        if RunStore.exists(run):
            raise
        store = RunStore.create(run, generator_name=generator.name, generator_version=generator.version,
                                task=generator.task, space=generator.space, config=config)
        return store, True
    if store.generator_name != generator.name:
        raise InputError(f"--generator {generator.name!r}: run {run} was made with generator {store.generator_name!r}")
    return store, False


def check_arguments(n: int, *, seed: int, split: str, batch_size: int, workers: int) -> None:
    """Raise :class:`InputError` (one line) on an argument ``loop generate`` cannot use, before
    anything is written."""
    for name, value, low in (("n", n, 1), ("seed", seed, 0), ("batch_size", batch_size, 1), ("workers", workers, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise InputError(f"--{name.replace('_', '-')}: expected an integer >= {low}, got {value!r}")
    if split not in SPLITS:
        raise InputError(f"--split: expected one of {', '.join(SPLITS)}, got {split!r}")


def add_random_samples(run: str, generator_name: str, n: int, *, size: int, seed: int, split: str = "train",
                       batch_size: int = 16, workers: int = 1, address: str | None = None,
                       on_done: Callable[[BatchPlan], None] | None = None) -> RunStore:
    """Draw ``n`` random parameter sets and render them into ``run`` (made if absent).

    Sample ids and batches continue after the run's last ones, as a cycle's would. With
    ``workers > 1`` the batches render as Ray tasks (``address``, or an embedded local Ray).
    Holds the run lock throughout (:class:`loop.run.lock.RunLockedError`, naming the holder,
    when another process holds it). A run this call made is removed again when it fails
    before committing anything. Returns the store.
    """
    generator = generators.get_generator(generator_name)
    generators.check_size(size)
    check_arguments(n, seed=seed, split=split, batch_size=batch_size, workers=workers)
    location = Location(run)
    made_folder = location.local and not os.path.isdir(location.root)
    if made_folder:
        os.makedirs(location.root)  # the lock file lives in it
    made_lock = not location.exists(LOCK_FILE)
    created = False
    try:
        with RunLock(run, what=LOCK_WHAT):
            store, created = open_or_create(run, generator, {"made_by": MADE_BY, "seed": seed, "size": size})
            try:
                _add(store, generator_name, n, size=size, seed=seed, split=split, batch_size=batch_size,
                     workers=workers, address=address, on_done=on_done)
                store.consolidate()  # images.zarr's consolidated metadata lists the new batches
            except BaseException:
                if created and not store.committed_batches():
                    _remove_new_run(location)
                raise
    finally:
        if made_lock and not RunStore.exists(run):
            _remove_made(location, made_folder)
    return RunStore.open(location.uri)


def _add(store: RunStore, generator_name: str, n: int, *, size: int, seed: int, split: str, batch_size: int,
         workers: int, address: str | None, on_done: Callable[[BatchPlan], None] | None) -> None:
    first_id, first_batch = next_ids(store)
    planned_id, planned_batch = after_planned(store)
    first_id, first_batch = max(first_id, planned_id), max(first_batch, planned_batch)
    proposals = get_policy("random").propose(policy_view(store, cycle=0), n, np.random.default_rng([seed, first_id]))
    plans = plan_batches(proposals=proposals, first_sample_id=first_id, first_batch=first_batch,
                         batch_size=batch_size, seed=seed, cycle=0, split=split, size=size)
    # A run made by `loop start` renders with its own generator options and space.
    run = run_config_from(store.config["run"]) if "run" in store.config else None
    built = dict(options=run.generator_options, space=run.space) if run else {}
    if workers > 1:
        with ray_session(address, num_cpus=None if address else workers):
            run_plans(store.uri, generator_name, plans, workers=workers, on_done=on_done, **built)
    else:
        run_plans(store.uri, generator_name, plans, workers=1, on_done=on_done, **built)


def after_planned(store: RunStore) -> tuple[int, int]:
    """The first sample id and batch number after every batch a driver journaled as planned,
    committed or not (0, 0 when the run has no journal)."""
    last_id = last_batch = -1
    for event in Journal(store.path(JOURNAL)).events():
        if event.get("event") != "planned":
            continue
        for plan in event.get("plans", []):
            last_batch = max(last_batch, int(plan["batch"]))
            last_id = max([last_id, *(int(i) for i in plan["sample_ids"])])
    return last_id + 1, last_batch + 1


def _remove_new_run(location: Location) -> None:
    """Undo :meth:`RunStore.create` of a run that got no batch: ``run.toml`` first (then it is no run)."""
    from stores.runfile import RUNFILE

    location.remove(RUNFILE)
    for folder in ("images.zarr", "params", "metrics"):
        location.remove_tree(folder)


def _remove_made(location: Location, folder: bool) -> None:
    """Remove the lock file this call made where no run came to be, and the folder it made
    (when nothing else is in it)."""
    location.remove(LOCK_FILE)
    if folder:
        try:
            os.rmdir(location.root)
        except OSError:
            pass
