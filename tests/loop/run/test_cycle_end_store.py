"""A cycle's end refreshes the store's description (images.zarr's consolidated metadata), also
when a run made before batches named their samples resumes past the end of a cycle."""

from __future__ import annotations

import json
import os
import shutil

import zarr

from loop.config.run import RunConfig
from loop.run.adding import add_random_samples
from loop.run.driver import CycleDriver
from loop.run.journal import Journal
from stores import RunStore


def _strip_description(run: str) -> None:
    """Make ``run``'s images as a run made before the change wrote them: no ``sample_id`` arrays,
    no attributes, no consolidated metadata."""
    root = os.path.join(run, "images.zarr")
    bare = {"zarr_format": 3, "node_type": "group", "attributes": {}}
    for name in [n for n in os.listdir(root) if n.startswith("b")] + [""]:
        if name:
            shutil.rmtree(os.path.join(root, name, "sample_id"))
        with open(os.path.join(root, name, "zarr.json"), "w") as f:
            json.dump(bare, f)


def test_a_resumed_cycle_end_describes_an_old_runs_batches_and_consolidates(tmp_path) -> None:
    run = str(tmp_path / "run")
    add_random_samples(run, "grains", 4, size=32, seed=1, batch_size=2)
    store = add_random_samples(run, "grains", 2, size=32, seed=2, batch_size=2, split="val")
    _strip_description(run)
    with open(os.path.join(run, "images.zarr", "zarr.json")) as f:
        assert "consolidated_metadata" not in json.load(f)
    # Killed after cycle 0's evaluation, before its end: the resumed driver only ends the cycle.
    journal = Journal(store.path("journal.jsonl"))
    for event in ("generated", "trained", "evaluated"):
        journal.append(event, cycle=0)
    driver = CycleDriver(RunStore.open(run, recover=True), journal, RunConfig.for_preset("smoke", cycles=0), None,
                         trainer=None, evaluator=None, workers=1, remote=False, say=lambda line: None)
    driver.run(0)
    assert journal.find("cycle_done", cycle=0)
    root = zarr.open_group(os.path.join(run, "images.zarr"), mode="r")  # through the consolidated metadata
    assert sorted(root.group_keys()) == ["b000000", "b000001", "b000002"]
    assert root.attrs["generator"] == "grains"
    assert root["b000002"].attrs["split"] == "val" and root["b000002"].attrs["size"] == 32
    for batch, table in zip((0, 1, 2), (store.params().slice(0, 2), store.params().slice(2, 2),
                                        store.params().slice(4, 2))):
        assert root[f"b{batch:06d}"]["sample_id"][:].tolist() == table["sample_id"].to_pylist()
