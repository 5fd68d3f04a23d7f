"""A tiny fake generator and batch builders for the store tests (importable by spawned children)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from generators.base import Sample
from generators.space import Choice, Continuous, Integer, LogRange, ParamSpace

SPACE = ParamSpace([
    Continuous("boundary_thickness", "px", "width of grain boundaries", 0.5, 4.0),
    LogRange("grain_size", "um", "mean grain diameter", 1.0, 100.0),
    Integer("n_phases", "", "number of phases", 1, 3),
    Choice("texture", "", "surface texture", ("smooth", "rough", "striped")),
])


class FakeGenerator:
    """Deterministic little images from (params, seed, size); segmentation or classification."""

    name = "fake"
    version = "0.1"
    space = SPACE

    def __init__(self, task: str = "segmentation"):
        self.task = task

    def render(self, params: Mapping[str, Any], seed: int, size: int) -> Sample:
        rng = np.random.default_rng(seed)
        y, x = np.mgrid[0:size, 0:size]
        base = 40 * params["n_phases"] + 20 * np.sin(x / params["boundary_thickness"])
        image = np.clip(base + rng.normal(0, 10, (size, size)), 0, 255).astype(np.uint8)
        mask = (image > 90).astype(np.uint8)
        if self.task == "classification":
            return Sample(image=image, label=int(SPACE["texture"].options.index(params["texture"])))
        return Sample(image=image, mask=mask)


def seed_of(sample_id: int) -> int:
    """The seed the tests give a sample: derived from its id, so a read can be checked."""
    return 1000 + sample_id


def make_batch(generator: FakeGenerator, ids: list[int], *, cycle: int = 0, split: str = "train",
               size: int = 16, rng_seed: int = 0) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray | None]:
    """Rows, images and masks (None for classification) of a batch holding ``ids``."""
    params = generator.space.sample(np.random.default_rng(rng_seed + ids[0]), len(ids))
    rows, images, masks = [], [], []
    for sid, p in zip(ids, params):
        sample = generator.render(p, seed_of(sid), size)
        row = {"sample_id": sid, "cycle": cycle, "split": split, "policy": "random", "parent_id": None,
               "seed": seed_of(sid), **p}
        if sample.label is not None:
            row["label"] = sample.label
        rows.append(row)
        images.append(sample.image)
        masks.append(sample.mask)
    return rows, np.stack(images), (np.stack(masks) if generator.task == "segmentation" else None)


def create_run(uri: Any, task: str = "segmentation", config: Mapping[str, Any] | None = None):
    """A new empty run of the fake generator at ``uri``."""
    from stores import RunStore

    gen = FakeGenerator(task)
    return RunStore.create(uri, generator_name=gen.name, generator_version=gen.version, task=task,
                           space=gen.space, config=dict(config or {"policy": "random", "seed": 1}))


def write_batches(uri: str, batches: list[int], per_batch: int) -> None:
    """Open the run at ``uri`` and write ``batches`` (sample ids batch*per_batch + i). Child-process entry."""
    from stores import RunStore

    store = RunStore.open(uri)
    gen = FakeGenerator(store.task)
    for b in batches:
        rows, images, masks = make_batch(gen, [b * per_batch + i for i in range(per_batch)])
        store.write_batch(b, rows, images, masks)


def write_then_hang(uri: str, batch: int, per_batch: int, sentinel: str) -> None:
    """Write a batch's arrays, then signal ``sentinel`` and block before the commit (to be killed)."""
    import threading
    from pathlib import Path

    from stores.location import Location

    def hang(self: Location, rel: str, data: bytes) -> None:
        Path(sentinel).write_text("arrays written")
        threading.Event().wait()

    Location.commit_bytes = hang
    write_batches(uri, [batch], per_batch)


def _wait_file(path: str, timeout: float = 120.0) -> None:
    import os
    import time

    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.01)


def _record(result: str, outcome: dict[str, Any]) -> None:
    import json
    from pathlib import Path

    tmp = Path(result + ".tmp")
    tmp.write_text(json.dumps(outcome))
    tmp.rename(result)


def write_when_told(uri: str, batch: int, per_batch: int, rng_seed: int, reached: str, go: str, result: str) -> None:
    """Write and flush a batch's arrays, signal ``reached``, wait for ``go``, then go on (check the
    claim, commit); the outcome goes to
    ``result`` (``{"ok": true}`` or ``{"error": message}``). Child-process entry."""
    from pathlib import Path

    from stores import RunStore, StoreError
    from stores.location import Location

    real = Location.sync_tree

    def flush_then_wait(self: Location, rel: str) -> None:
        real(self, rel)
        if rel.startswith("images.zarr/"):
            Path(reached).write_text("arrays written")
            _wait_file(go)

    Location.sync_tree = flush_then_wait
    store = RunStore.open(uri)
    try:
        store.write_batch(batch, *make_batch(FakeGenerator(store.task), [batch * per_batch + i for i in range(per_batch)],
                                             rng_seed=rng_seed))
        _record(result, {"ok": True})
    except StoreError as exc:
        _record(result, {"error": str(exc)})


def write_after_slow_claim_reads(uri: str, batch: int, per_batch: int, rng_seed: int, go: str, result: str,
                                 delay: float) -> None:
    """Wait for ``go``, then write a batch; every read of a claim file is followed by ``delay``
    seconds (so two such writers both act on what they read before the other acts). Child entry."""
    import time

    from stores import RunStore, StoreError
    from stores.location import Location

    real = Location.read_bytes

    def slow_read(self: Location, *parts: str) -> bytes:
        data = real(self, *parts)
        if parts and str(parts[-1]).endswith(".claim"):
            time.sleep(delay)
        return data

    Location.read_bytes = slow_read
    store = RunStore.open(uri)
    rows = make_batch(FakeGenerator(store.task), [batch * per_batch + i for i in range(per_batch)], rng_seed=rng_seed)
    _wait_file(go)
    try:
        store.write_batch(batch, *rows)
        _record(result, {"ok": True})
    except StoreError as exc:
        _record(result, {"error": str(exc)})
