"""A self-describing image store: sample ids and attributes per batch, consolidated metadata,
pandas-friendly tables, and runs made before all that still opening, reading and resuming."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import zarr
from storefakes import FakeGenerator, create_run, make_batch

from stores import RunStore
from stores.images import ZARR_DIR


def _zarr_json(run, *parts) -> dict:
    with open(os.path.join(run.uri, ZARR_DIR, *parts, "zarr.json")) as f:
        return json.load(f)


def test_a_batch_group_names_its_samples_and_says_what_it_is(run, generator) -> None:
    rows, images, masks = make_batch(generator, [7, 3, 9], cycle=2, split="val", size=20)
    run.write_batch(4, rows, images, masks)
    group = zarr.open_group(os.path.join(run.uri, ZARR_DIR, "b000004"), mode="r")
    assert group["sample_id"][:].tolist() == [7, 3, 9] and group["sample_id"].dtype == np.int64
    for name in ("sample_id", "image", "mask"):
        assert _zarr_json(run, "b000004", name)["dimension_names"][0] == "sample"
    assert _zarr_json(run, "b000004", "image")["dimension_names"] == ["sample", "y", "x"]
    attrs = dict(group.attrs)
    assert {k: attrs[k] for k in ("batch", "generator", "generator_version", "task", "cycle", "split", "policy",
                                  "size", "params")} == {
        "batch": 4, "generator": "fake", "generator_version": "0.1", "task": "segmentation", "cycle": 2,
        "split": "val", "policy": "random", "size": 20, "params": "params/b000004.parquet"}
    assert set(attrs["arrays"]) == {"sample_id", "image", "mask"} and "sample_id[i]" in attrs["description"]
    root = zarr.open_group(os.path.join(run.uri, ZARR_DIR), mode="r", use_consolidated=False)
    assert root.attrs["generator"] == "fake" and "bNNNNNN" in root.attrs["description"]


def test_a_mixed_or_classification_batch_says_so(tmp_path) -> None:
    gen = FakeGenerator("classification")
    store = create_run(tmp_path / "run", task="classification")
    rows, images, _ = make_batch(gen, [0, 1, 2])
    rows[2]["cycle"], rows[1]["split"] = 1, "val"
    store.write_batch(0, rows, images[:, :, :12].copy())
    attrs = zarr.open_group(os.path.join(store.uri, ZARR_DIR, "b000000"), mode="r").attrs
    assert attrs["cycle"] == [0, 1] and attrs["split"] == ["train", "val"] and attrs["size"] == [16, 12]
    assert set(attrs["arrays"]) == {"sample_id", "image"} and attrs["task"] == "classification"


def test_consolidated_metadata_lists_the_batches_when_refreshed(run, generator) -> None:
    run.write_batch(0, *make_batch(generator, [0, 1]))
    assert run.consolidate() == []  # nothing to describe anew: the batch was written described
    root_json = _zarr_json(run)
    assert set(root_json["consolidated_metadata"]["metadata"]) >= {"b000000", "b000000/sample_id", "b000000/image"}
    # Writing goes on under consolidated metadata; the next refresh lists the new batch.
    run.write_batch(1, *make_batch(generator, [2, 3]))
    assert list(zarr.open_group(os.path.join(run.uri, ZARR_DIR), mode="r").group_keys()) == ["b000000"]
    run.consolidate()
    root = zarr.open_group(os.path.join(run.uri, ZARR_DIR), mode="r")
    assert sorted(root.group_keys()) == ["b000000", "b000001"]
    assert root["b000001"]["sample_id"][:].tolist() == [2, 3]
    assert RunStore.open(run.uri).view()[3][0].shape == (16, 16)


def test_pandas_reads_nullable_ids_as_nullable_integers(run, generator) -> None:
    run.write_batch(0, *make_batch(generator, [0, 1]))
    rows, images, masks = make_batch(generator, [2, 3], cycle=1)
    rows[0]["parent_id"] = 1
    run.write_batch(1, rows, images, masks)
    df = pd.read_parquet(os.path.join(run.uri, "params"))
    assert str(df["parent_id"].dtype) == "Int64" and str(df["label"].dtype) == "Int64"
    assert df["parent_id"].tolist() == [pd.NA, pd.NA, 1, pd.NA]
    assert df["sample_id"].dtype == np.int64 and df["n_phases"].dtype == np.int64
    assert str(df["created_at"].dtype).startswith("datetime64")
    # The store itself reads the same typed table.
    assert RunStore.open(run.uri).params().schema == run.params_schema


def _make_old(run) -> None:
    """Turn ``run`` into one written before batches named their samples: no ``sample_id`` arrays,
    no attributes, no consolidated metadata, parameter fragments without pandas metadata."""
    root = os.path.join(run.uri, ZARR_DIR)
    bare = {"zarr_format": 3, "node_type": "group", "attributes": {}}
    for name in os.listdir(root):
        if name.startswith("b"):
            shutil.rmtree(os.path.join(root, name, "sample_id"))
            with open(os.path.join(root, name, "zarr.json"), "w") as f:
                json.dump(bare, f)
    with open(os.path.join(root, "zarr.json"), "w") as f:
        json.dump(bare, f)
    params = os.path.join(run.uri, "params")
    for name in os.listdir(params):
        path = os.path.join(params, name)
        table = pq.read_table(path)
        pq.write_table(table.replace_schema_metadata(None), path, compression="zstd")


def test_a_run_made_before_the_sample_ids_opens_reads_resumes_and_is_described(run, generator) -> None:
    written = {}
    for b, ids in enumerate([[0, 1, 2], [3, 4]]):
        written[b] = make_batch(generator, ids)
        run.write_batch(b, *written[b])
    _make_old(run)
    assert not os.path.exists(os.path.join(run.uri, ZARR_DIR, "b000000", "sample_id"))

    old = RunStore.open(run.uri, recover=True)  # as `loop resume` opens it
    assert old.recovered == [] and old.removed_files == []
    view = old.view()
    for i, (b, row) in enumerate([(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]):
        image, mask = view[i]
        assert np.array_equal(image, written[b][1][row]) and np.array_equal(mask, written[b][2][row])
    # Resuming writes new batches beside the old ones; the cycle's end describes the old ones.
    old.write_batch(2, *make_batch(generator, [5, 6], cycle=1))
    assert old.consolidate() == [0, 1]
    root = zarr.open_group(os.path.join(run.uri, ZARR_DIR), mode="r")
    assert sorted(root.group_keys()) == ["b000000", "b000001", "b000002"]
    assert root["b000000"]["sample_id"][:].tolist() == [0, 1, 2]
    assert root["b000001"].attrs["cycle"] == 0 and root["b000001"].attrs["size"] == 16
    assert root["b000002"].attrs["cycle"] == 1 and root.attrs["generator"] == "fake"
    assert old.consolidate() == []  # described once
    again = RunStore.open(run.uri)
    assert len(again.view()) == 7 and np.array_equal(again.view()[4][0], written[1][1][1])


def test_consolidating_a_run_whose_committed_batch_lost_its_images_names_it(run, generator) -> None:
    from stores import StoreError

    run.write_batch(0, *make_batch(generator, [0, 1]))
    shutil.rmtree(os.path.join(run.uri, ZARR_DIR, "b000000"))
    with pytest.raises(StoreError, match="batch 0 is committed but its image group is missing"):
        run.consolidate()
