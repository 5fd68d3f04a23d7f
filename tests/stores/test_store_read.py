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


def _chunk_span(run_uri: str, array: str, i: int) -> tuple[str, int, int]:
    """Shard file of ``array`` of batch 0, and where its sample ``i`` lies in it (offset, size)."""
    shard = os.path.join(run_uri, ZARR_DIR, "b000000", array, "c.0.0.0")
    n = zarr.open_array(os.path.join(run_uri, ZARR_DIR, "b000000", array), mode="r").shape[0]
    with open(shard, "rb") as f:
        f.seek(-(n * 16 + 4), os.SEEK_END)
        index = np.frombuffer(f.read(n * 16), dtype="<u8").reshape(n, 2)
    return shard, int(index[i, 0]), int(index[i, 1])


# Where 4 zeroed bytes decode without any zstd error, as wrong pixels (found by trying), and
# where zstd itself notices (the middle of the chunk).
@pytest.mark.parametrize(("array", "at"), [("image", 128), ("mask", 15), ("image", None)])
def test_zeroed_bytes_inside_a_chunk_are_an_error_naming_run_batch_array_and_sample(run, array, at):
    """4 zeroed bytes inside one zstd chunk used to decode as wrong pixels without any error."""
    gen = FakeGenerator()
    rows, images, masks = make_batch(gen, [10, 11, 12], size=64)
    run.write_batch(0, rows, images, masks)
    shard, offset, size = _chunk_span(run.uri, array, 1)
    with open(shard, "r+b") as f:
        f.seek(offset + (size // 2 if at is None else at))
        f.write(b"\0\0\0\0")
    view = RunStore.open(run.uri).view()
    assert np.array_equal(view[0][0], images[0]) and np.array_equal(view[2][1], masks[2])  # others intact
    with pytest.raises(StoreError) as err:
        view[1] if array == "image" else view.mask(1)
    text = str(err.value)
    assert run.uri in text and "batch 0" in text and f"array '{array}'" in text and "sample 11" in text
    assert "checksum" in text
    # zarr itself refuses the damaged chunk too: the checksum is in the array's codec chain.
    arr = zarr.open_array(os.path.join(run.uri, ZARR_DIR, "b000000", array), mode="r")
    assert arr[0].tolist() == (images if array == "image" else masks)[0].tolist()
    with pytest.raises(Exception, match="checksum"):
        arr[1]


def test_a_run_written_before_the_chunk_checksum_still_reads(run, generator):
    """Arrays of older runs have zstd chunks without their crc32c: read as before, unverified."""
    import numcodecs
    from zarr.codecs import ZstdCodec

    from stores.images import encode_shard

    rows, images, masks = make_batch(generator, [0, 1, 2])
    run.write_batch(0, rows, images, masks)
    group = zarr.open_group(os.path.join(run.uri, ZARR_DIR, "b000000"), mode="r+")
    for name, data in (("image", images), ("mask", masks)):
        arr = group.create_array(name, shape=data.shape, dtype="uint8", chunks=(1, 16, 16), shards=data.shape,
                                 compressors=ZstdCodec(level=1), fill_value=0, overwrite=True,
                                 chunk_key_encoding={"name": "default", "separator": "."})
        with open(os.path.join(run.uri, ZARR_DIR, "b000000", name, "c.0.0.0"), "wb") as f:
            f.write(encode_shard(data, numcodecs.Zstd(level=1)))
    reader = ChunkReader(Location(run.uri))
    handle = reader._handle(0, "image")
    assert isinstance(handle, _Shard) and handle.checksum is False
    view = RunStore.open(run.uri).view()
    for i in range(3):
        assert np.array_equal(view[i][0], images[i]) and np.array_equal(view[i][1], masks[i])
    # New batches of the same run carry the checksum.
    run.write_batch(1, *make_batch(generator, [3, 4]))
    assert ChunkReader(Location(run.uri))._handle(1, "mask").checksum is True


def test_a_missing_or_truncated_shard_is_an_error_naming_the_sample(run, generator):
    rows, images, masks = make_batch(generator, [5, 6, 7])
    run.write_batch(0, rows, images, masks)
    view = RunStore.open(run.uri).view()
    view[0]  # the index is read and cached; then the shard loses its tail
    shard = os.path.join(run.uri, ZARR_DIR, "b000000", "image", "c.0.0.0")
    _, offset, size = _chunk_span(run.uri, "image", 2)
    with open(shard, "r+b") as f:
        f.truncate(offset + size - 1)
    with pytest.raises(StoreError, match=r"batch 0, array 'image', sample 7 \(row 2 of the batch\): read"):
        view[2]
    os.remove(shard)
    with pytest.raises(StoreError, match=r"batch 0, array 'image', sample 6 .*is gone"):
        view[1]
    with pytest.raises(StoreError, match=r"batch 0, array 'image': its shard .* is missing"):
        RunStore.open(run.uri).view()[1]
