"""Reading for training: views, random access, views in worker processes, and the chunk reader."""

from __future__ import annotations

import multiprocessing
import os
import pickle
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
import zarr
from storefakes import FakeGenerator, create_run, make_batch

from stores import RunStore, StoreError
from stores.images import ZARR_DIR, ChunkReader, _Shard
from stores.location import Location


@pytest.fixture
def filled(run, generator):
    """A run with three batches: cycle 0 train, cycle 0 val, cycle 1 train (24 x 24 px)."""
    batches = {}
    for b, (cycle, split) in enumerate([(0, "train"), (0, "val"), (1, "train")]):
        batches[b] = make_batch(generator, [b * 10 + i for i in range(5)], cycle=cycle, split=split, size=24)
        run.write_batch(b, *batches[b])
    return run, batches


def test_view_gives_images_and_masks_by_index(filled):
    store, batches = filled
    view = store.view()
    assert len(view) == 15
    assert view.sample_ids.dtype == np.int64
    assert view.sample_ids.tolist() == [b * 10 + i for b in range(3) for i in range(5)]
    assert view.params["sample_id"].to_pylist() == view.sample_ids.tolist()
    for i in (0, 7, 14, -1):
        b, row = divmod(int(view.sample_ids[i]), 10)
        image, mask = view[i]
        assert image.dtype == np.uint8 and image.shape == (24, 24)
        assert np.array_equal(image, batches[b][1][row]) and np.array_equal(mask, batches[b][2][row])
    with pytest.raises(IndexError):
        view[15]


def test_view_filters_and_keeps_the_order_of_given_ids(filled):
    store, batches = filled
    assert store.view(split="train").sample_ids.tolist() == [0, 1, 2, 3, 4, 20, 21, 22, 23, 24]
    assert store.view(cycles=1).sample_ids.tolist() == [20, 21, 22, 23, 24]
    assert store.view(split="train", cycles=[0]).sample_ids.tolist() == [0, 1, 2, 3, 4]
    view = store.view(sample_ids=[23, 2, 11])
    assert view.sample_ids.tolist() == [23, 2, 11]
    assert view.params["sample_id"].to_pylist() == [23, 2, 11]
    assert np.array_equal(view[0][0], batches[2][1][3]) and np.array_equal(view[2][1], batches[1][2][1])
    with pytest.raises(StoreError, match=r"sample ids \[99\] are not committed"):
        store.view(sample_ids=[1, 99])
    with pytest.raises(StoreError, match=r"sample ids \[11\]"):
        store.view(split="train", sample_ids=[11])


def test_classification_view_gives_int_labels(tmp_path):
    gen = FakeGenerator("classification")
    store = create_run(tmp_path / "run", task="classification")
    rows, images, _ = make_batch(gen, [0, 1, 2, 3])
    store.write_batch(0, rows, images)
    view = store.view()
    for i, row in enumerate(rows):
        image, label = view[i]
        assert isinstance(label, int) and label == row["label"]
        assert np.array_equal(image, images[i])
        assert view.mask(i) is None  # this batch stored no masks
    # A classification batch may carry pixel masks too (the crack); the view gives them on request.
    rows, images, _ = make_batch(gen, [4, 5])
    masks = (images > 128).astype(np.uint8)
    store.write_batch(1, rows, images, masks)
    view = store.view(sample_ids=[5])
    assert isinstance(view[0][1], int) and np.array_equal(view.mask(0), masks[1])


def _image_of(view, i):
    return view[i][0]


def test_view_reads_in_worker_processes(filled):
    store, batches = filled
    view = store.view(split="train")
    view[0]  # opens the arrays in this process; each worker must open its own
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        images = list(pool.map(_image_of, [view] * len(view), range(len(view))))
    expected = np.concatenate([batches[0][1], batches[2][1]])
    assert np.array_equal(np.stack(images), expected)


def test_view_pickles_without_its_open_arrays(filled):
    store, batches = filled
    view = store.view(split="val")
    view[0]  # opens the arrays; pickling must leave them behind
    again = pickle.loads(pickle.dumps(view))
    assert again._reader is None
    assert np.array_equal(again[2][1], batches[1][2][2]) and len(again) == len(view)


def test_chunk_reader_matches_zarr_including_empty_chunks(run, generator):
    rows, images, masks = make_batch(generator, [0, 1, 2])
    masks[1] = 0  # an all-fill chunk is not stored in the shard
    run.write_batch(0, rows, images, masks)
    reader = ChunkReader(Location(run.uri))
    assert isinstance(reader._handle(0, "mask"), _Shard)
    arr = zarr.open_array(os.path.join(run.uri, ZARR_DIR, "b000000", "mask"), mode="r")
    assert arr.chunks == (1, 16, 16) and arr.shards == (3, 16, 16)
    for i in range(3):
        assert np.array_equal(reader.read(0, "mask", i), arr[i])
        assert np.array_equal(reader.read(0, "image", i), images[i])
    assert reader.read(0, "mask", 1).flags.writeable


def test_arrays_in_another_layout_are_read_through_zarr(run, generator):
    rows, images, masks = make_batch(generator, [0, 1])
    run.write_batch(0, rows, images, masks)
    # Rewrite the image array unsharded and uncompressed, as another tool might.
    group = zarr.open_group(os.path.join(run.uri, ZARR_DIR, "b000000"), mode="r+")
    other = images[::-1].copy()
    group.create_array("image", shape=other.shape, dtype="uint8", chunks=(1, 16, 16), compressors=None,
                       overwrite=True)[...] = other
    reader = ChunkReader(Location(run.uri))
    assert not isinstance(reader._handle(0, "image"), _Shard)
    assert np.array_equal(RunStore.open(run.uri).view()[0][0], other[0])


def test_a_damaged_shard_index_is_reported(run, generator):
    run.write_batch(0, *make_batch(generator, [0, 1]))
    shard = os.path.join(run.uri, ZARR_DIR, "b000000", "image", "c.0.0.0")
    with open(shard, "r+b") as f:
        f.seek(-10, os.SEEK_END)
        f.write(b"\xff")
    with pytest.raises(StoreError, match="shard index checksum"):
        RunStore.open(run.uri).view()[0]
